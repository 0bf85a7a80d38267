//! The scheduler's inter-pod affinity and preemption end to end: `skiff server` without a
//! kubelet, simulated nodes from `skiff agent --simulate N` labelled with zones, driven by
//! the real kubectl 1.33.

use crate::common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::cluster::{Cluster, ServerProcess};
use common::Skiff;

/// A control plane and `nodes` simulated nodes (`sim-0`, ...) of `cpu` cpus each, Ready.
fn cluster(nodes: usize, cpu: &str) -> (Cluster, ServerProcess, ServerProcess, Skiff) {
    let (c, server) = Cluster::start_control_plane(&[]);
    let agent_root = Skiff::new();
    let log = agent_root.root.path().join("agent.log");
    let agent = agent_root
        .cmd(&["agent", "--simulate", &nodes.to_string(), "--cpu", cpu])
        .args(["--heartbeat-interval", "1"])
        .arg("--kubeconfig")
        .arg(&c.kubeconfig)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let agent = ServerProcess(agent);
    for i in 0..nodes {
        c.wait_until(
            &format!("node/sim-{i}"),
            "{.status.conditions[?(@.type==\"Ready\")].status}",
            60,
            |s| s == "True",
        );
    }
    (c, server, agent, agent_root)
}

/// Polls `f` until it returns true, for at most `secs` seconds.
fn eventually(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The `PodScheduled` condition's message of a pod, once it has one.
fn unschedulable_message(c: &Cluster, pod: &str) -> String {
    c.wait_until(
        &format!("pod/{pod}"),
        "{.status.conditions[?(@.type==\"PodScheduled\")].message}",
        60,
        |m| !m.is_empty(),
    )
}

/// `name=node` of each pod with label `selector`, sorted by pod name.
fn placements(c: &Cluster, selector: &str) -> Vec<(String, String)> {
    let out = c.kubectl_ok(&[
        "get",
        "pods",
        "-l",
        selector,
        "-o",
        "jsonpath={range .items[*]}{.metadata.name}={.spec.nodeName}={.status.phase}{\"\\n\"}{end}",
    ]);
    let mut rows: Vec<(String, String)> = out
        .lines()
        .filter_map(|l| {
            let mut parts = l.split('=');
            let (name, node, phase) = (parts.next()?, parts.next()?, parts.next()?);
            Some((name.to_owned(), format!("{node}/{phase}")))
        })
        .collect();
    rows.sort();
    rows
}

const WEB: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      affinity:
        podAntiAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
          - topologyKey: kubernetes.io/hostname
            labelSelector: {matchLabels: {app: web}}
      containers:
      - {name: web, image: busybox}
"#;

#[test]
fn pod_affinity_and_anti_affinity_place_pods_by_topology() {
    let (c, _server, _agent, _root) = cluster(3, "4");
    // Zones: sim-0 and sim-1 in zone a, sim-2 alone in zone b.
    for (node, zone) in [("sim-0", "a"), ("sim-1", "a"), ("sim-2", "b")] {
        c.kubectl_ok(&[
            "label",
            "node",
            node,
            &format!("topology.kubernetes.io/zone={zone}"),
        ]);
    }

    // Required anti-affinity per hostname: one replica per node.
    c.apply(WEB);
    eventually(60, "3 web replicas running", || {
        let rows = placements(&c, "app=web");
        rows.len() == 3 && rows.iter().all(|(_, p)| p.ends_with("/Running"))
    });
    let mut nodes: Vec<String> = placements(&c, "app=web")
        .into_iter()
        .map(|(_, p)| p.split('/').next().unwrap().to_owned())
        .collect();
    nodes.sort();
    assert_eq!(nodes, ["sim-0", "sim-1", "sim-2"]);

    // A fourth replica has nowhere to go; everyone has the same priority.
    c.kubectl_ok(&["scale", "deployment/web", "--replicas=4"]);
    let mut pending = String::new();
    eventually(60, "a pending fourth replica", || {
        pending = c.jsonpath(
            "pods",
            "{.items[?(@.status.phase==\"Pending\")].metadata.name}",
        );
        !pending.is_empty()
    });
    assert_eq!(
        unschedulable_message(&c, &pending),
        "0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules. preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod."
    );
    let reason = c.jsonpath(
        &format!("pod/{pending}"),
        "{.status.conditions[?(@.type==\"PodScheduled\")].reason}",
    );
    assert_eq!(reason, "Unschedulable");
    c.kubectl_ok(&["delete", "deployment/web", "--wait=false"]);
    eventually(60, "web pods gone", || placements(&c, "app=web").is_empty());

    // Required affinity per zone: the client joins the cache's zone (sim-2 is zone b's
    // only node); a pod avoiding the cache's zone lands in zone a.
    c.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: cache, namespace: default, labels: {app: cache}}
spec:
  nodeSelector: {kubernetes.io/hostname: sim-2}
  containers: [{name: c, image: busybox}]
"#,
    );
    c.wait_for("pod/cache", "{.spec.nodeName}", "sim-2");
    c.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: default}
spec:
  affinity:
    podAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
      - topologyKey: topology.kubernetes.io/zone
        labelSelector: {matchLabels: {app: cache}}
  containers: [{name: c, image: busybox}]
---
apiVersion: v1
kind: Pod
metadata: {name: loner, namespace: default}
spec:
  affinity:
    podAntiAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
      - topologyKey: topology.kubernetes.io/zone
        labelSelector: {matchLabels: {app: cache}}
  containers: [{name: c, image: busybox}]
---
apiVersion: v1
kind: Pod
metadata: {name: orphan, namespace: default}
spec:
  affinity:
    podAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
      - topologyKey: topology.kubernetes.io/zone
        labelSelector: {matchLabels: {app: nothing}}
  containers: [{name: c, image: busybox}]
"#,
    );
    c.wait_for(
        "pod/client",
        "{.spec.nodeName}/{.status.phase}",
        "sim-2/Running",
    );
    let loner = c.wait_until("pod/loner", "{.spec.nodeName}", 60, |n| !n.is_empty());
    assert!(loner == "sim-0" || loner == "sim-1", "{loner}");
    // Nothing matches the orphan's term and it does not match it itself: no node will do,
    // and evicting pods cannot change that.
    assert_eq!(
        unschedulable_message(&c, "orphan"),
        "0/3 nodes are available: 3 node(s) didn't match pod affinity rules. preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."
    );

    // A labelled pod appearing in zone a lets the orphan follow it there.
    c.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: target, namespace: default, labels: {app: nothing}}
spec:
  nodeSelector: {kubernetes.io/hostname: sim-0}
  containers: [{name: c, image: busybox}]
"#,
    );
    let orphan = c.wait_until("pod/orphan", "{.spec.nodeName}", 60, |n| !n.is_empty());
    assert!(orphan == "sim-0" || orphan == "sim-1", "{orphan}");
}

/// PriorityClasses and a Deployment of low-priority pods filling two 2-cpu nodes (the
/// Priority admission plugin turns each pod's class into its priority).
const LOW_FILLERS: &str = r#"
apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata: {name: low}
value: 100
---
apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata: {name: high}
value: 1000
---
apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata: {name: high-polite}
value: 1000
preemptionPolicy: Never
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: filler, namespace: default}
spec:
  replicas: 4
  selector: {matchLabels: {app: filler}}
  template:
    metadata: {labels: {app: filler}}
    spec:
      priorityClassName: low
      containers:
      - name: c
        image: busybox
        resources: {requests: {cpu: "1"}}
"#;

#[test]
fn a_high_priority_pod_preempts_lower_priority_pods() {
    let (c, _server, _agent, _root) = cluster(2, "2");
    c.apply(LOW_FILLERS);
    eventually(60, "4 fillers running", || {
        let rows = placements(&c, "app=filler");
        rows.len() == 4 && rows.iter().all(|(_, p)| p.ends_with("/Running"))
    });
    let before: Vec<String> = placements(&c, "app=filler")
        .into_iter()
        .map(|(n, _)| n)
        .collect();

    c.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: vip, namespace: default}
spec:
  priorityClassName: high
  containers:
  - name: c
    image: busybox
    resources: {requests: {cpu: "2"}}
"#,
    );
    let node = c.wait_until("pod/vip", "{.spec.nodeName}/{.status.phase}", 60, |s| {
        s.ends_with("/Running")
    });
    let node = node.split('/').next().unwrap().to_owned();
    // It was nominated to the node whose pods it preempted.
    assert_eq!(c.jsonpath("pod/vip", "{.status.nominatedNodeName}"), node);
    let uid = c.jsonpath("pod/vip", "{.metadata.uid}");
    // Both fillers of that node are gone (replaced by new, pending ones), each with
    // kube-scheduler's event.
    let mut events = String::new();
    eventually(20, "two Preempted events", || {
        events = c.jsonpath(
            "events",
            "{range .items[?(@.reason==\"Preempted\")]}{.involvedObject.name} {.message}{\"\\n\"}{end}",
        );
        events.lines().count() >= 2
    });
    let victims: Vec<&str> = events.lines().collect();
    assert_eq!(victims.len(), 2, "{events}");
    for line in &victims {
        let (victim, message) = line.split_once(' ').unwrap();
        assert!(before.iter().any(|b| b == victim), "{line}");
        assert_eq!(message, format!("Preempted by pod {uid} on node {node}"));
        let gone = c.kubectl(&["get", "pod", victim]);
        assert!(!gone.status.success(), "{victim} still exists");
    }
    // The replacements stay pending: the room is the preemptor's.
    eventually(30, "two pending replacements", || {
        let rows = placements(&c, "app=filler");
        rows.len() == 4 && rows.iter().filter(|(_, p)| p == "/Pending").count() == 2
    });
    let running_on_node = placements(&c, "app=filler")
        .iter()
        .filter(|(_, p)| p.starts_with(&format!("{node}/")))
        .count();
    assert_eq!(running_on_node, 0);

    // preemptionPolicy: Never waits even with the higher priority.
    c.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: polite, namespace: default}
spec:
  priorityClassName: high-polite
  containers:
  - name: c
    image: busybox
    resources: {requests: {cpu: "1"}}
"#,
    );
    assert_eq!(
        unschedulable_message(&c, "polite"),
        "0/2 nodes are available: 2 Insufficient cpu. preemption: not eligible due to preemptionPolicy=Never."
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(c.jsonpath("pod/polite", "{.status.phase}"), "Pending");
    assert_eq!(c.jsonpath("pod/polite", "{.spec.nodeName}"), "");
    assert_eq!(
        placements(&c, "app=filler")
            .iter()
            .filter(|(_, p)| p.ends_with("/Running"))
            .count(),
        2
    );
}

const BUDGETED: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: api, namespace: default}
spec:
  replicas: 3
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec:
      containers:
      - {name: api, image: busybox}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: api, namespace: default}
spec:
  maxUnavailable: 1
  selector: {matchLabels: {app: api}}
"#;

/// The disruption controller keeps the budget's status, and `kubectl drain` evicts
/// through it: refused while no disruption is allowed, then the node empties one allowed
/// eviction at a time as the Deployment's replacements become ready elsewhere.
#[test]
fn drain_honours_a_pod_disruption_budget() {
    let (c, _server, _agent, _root) = cluster(3, "4");
    c.apply(BUDGETED);
    c.wait_until(
        "pdb/api",
        "{.status.expectedPods}/{.status.currentHealthy}/{.status.disruptionsAllowed}",
        90,
        |s| s == "3/3/1",
    );
    assert_eq!(
        c.jsonpath(
            "pdb/api",
            "{.status.conditions[?(@.type==\"DisruptionAllowed\")].reason}"
        ),
        "SufficientPods"
    );
    let table = c.kubectl_ok(&["get", "pdb", "api"]);
    assert!(table.contains("ALLOWED DISRUPTIONS"), "{table}");

    // One pod may go; a second eviction right after is refused until a replacement is
    // ready (the first is counted as disrupted meanwhile).
    let pods: Vec<String> = c
        .kubectl_ok(&[
            "get",
            "pods",
            "-l",
            "app=api",
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ])
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    assert_eq!(pods.len(), 3);
    let evict = |pod: &str| {
        let body = format!(
            r#"{{"apiVersion":"policy/v1","kind":"Eviction","metadata":{{"name":"{pod}","namespace":"default"}}}}"#
        );
        let path = c.skiff.root.path().join(format!("evict-{pod}.json"));
        std::fs::write(&path, body).unwrap();
        c.kubectl(&[
            "create",
            "--raw",
            &format!("/api/v1/namespaces/default/pods/{pod}/eviction"),
            "-f",
            path.to_str().unwrap(),
        ])
    };
    // With every node cordoned the replacement stays Pending, so the budget stays spent.
    c.kubectl_ok(&["cordon", "sim-0", "sim-1", "sim-2"]);
    let first = evict(&pods[0]);
    assert!(first.status.success(), "{first:?}");
    let second = evict(&pods[1]);
    assert!(
        !second.status.success(),
        "a second eviction overspent the budget"
    );
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("disruption budget"),
        "{second:?}"
    );

    c.kubectl_ok(&["uncordon", "sim-0", "sim-1", "sim-2"]);

    // kubectl drain of a node with a pod completes once the replacement is ready.
    c.wait_until(
        "pdb/api",
        "{.status.currentHealthy}/{.status.disruptionsAllowed}",
        90,
        |s| s == "3/1",
    );
    let node = c.jsonpath(&format!("pod/{}", pods[1]), "{.spec.nodeName}");
    let out = c.kubectl(&["drain", &node, "--ignore-daemonsets", "--timeout=90s"]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("node/{node} drained")));
    c.wait_until("deployment/api", "{.status.readyReplicas}", 90, |r| {
        r == "3"
    });
    let on_node = placements(&c, "app=api")
        .iter()
        .filter(|(_, p)| p.starts_with(&format!("{node}/")))
        .count();
    assert_eq!(on_node, 0);
}
