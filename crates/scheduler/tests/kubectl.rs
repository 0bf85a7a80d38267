//! Behaviour checks with the real kubectl against a cluster of three simulated nodes.

use crate::common;

use std::time::Duration;

use common::Cluster;

const TIMEOUT: Duration = Duration::from_secs(60);

/// `kubectl create deployment`, falling back to an equivalent manifest when the server
/// cannot decode kubectl's protobuf for the kind.
fn create_deployment(c: &Cluster, name: &str, image: &str, replicas: u32) {
    let out = c.kubectl(&[
        "create",
        "deployment",
        name,
        &format!("--image={image}"),
        &format!("--replicas={replicas}"),
    ]);
    if out.status.success() {
        return;
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("protobuf"),
        "kubectl create deployment: {stderr}"
    );
    eprintln!("note: the server lacks protobuf for Deployments; creating with kubectl apply");
    let container = image.split([':', '/']).next().unwrap();
    c.apply(&format!(
        "apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, labels: {{app: {name}}}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      containers: [{{name: {container}, image: {image}}}]
"
    ));
}

fn available(c: &Cluster, deployment: &str) -> String {
    c.jsonpath(
        &["deployment", deployment],
        "{.status.availableReplicas}/{.spec.replicas}",
    )
}

#[test]
fn deployment_rolls_out_updates_scales_and_rolls_back() {
    let c = Cluster::start(3);
    create_deployment(&c, "web", "busybox", 3);
    c.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    // kubectl sent the Deployment as protobuf, which carries every field at its zero
    // value; as kube-apiserver, skiff keeps only the ones Go writes out.
    let stored = c.ok(&["get", "deployment", "web", "-o", "json"]);
    for field in ["\"stdin\"", "\"tty\"", "\"hostPID\"", "\"generation\": 0"] {
        assert!(!stored.contains(field), "{field} in {stored}");
    }
    assert_eq!(available(&c, "web"), "3/3");
    let running = c.ok(&["get", "pods", "-l", "app=web", "--no-headers"]);
    assert_eq!(
        running.lines().filter(|l| l.contains("Running")).count(),
        3,
        "{running}"
    );

    c.ok(&["set", "image", "deployment/web", "busybox=busybox:1.36"]);
    c.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    let replicasets = c.jsonpath(
        &["replicasets", "-l", "app=web"],
        "{range .items[*]}{.spec.template.spec.containers[0].image}={.spec.replicas} {end}",
    );
    let mut sets: Vec<&str> = replicasets.split_whitespace().collect();
    sets.sort();
    assert_eq!(sets, ["busybox:1.36=3", "busybox=0"], "{replicasets}");
    let history = c.ok(&["rollout", "history", "deployment/web"]);
    let revisions: Vec<&str> = history
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.parse::<u32>().is_ok())
        .collect();
    assert_eq!(revisions, ["1", "2"], "{history}");
    let images = c.jsonpath(
        &["pods", "-l", "app=web"],
        "{range .items[*]}{.spec.containers[0].image} {end}",
    );
    assert!(
        images.split_whitespace().all(|i| i == "busybox:1.36"),
        "{images}"
    );

    c.ok(&["rollout", "undo", "deployment/web"]);
    c.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    assert_eq!(
        c.jsonpath(
            &["deployment", "web"],
            "{.spec.template.spec.containers[0].image}"
        ),
        "busybox"
    );
    // The first ReplicaSet comes back as revision 3 (kubectl copied its template into
    // the Deployment); no third one is made.
    let replicasets = c.jsonpath(
        &["replicasets", "-l", "app=web"],
        "{range .items[*]}{.metadata.name} {end}",
    );
    assert_eq!(
        replicasets.split_whitespace().count(),
        2,
        "rollout undo made a new ReplicaSet: {replicasets}"
    );
    let history = c.ok(&["rollout", "history", "deployment/web"]);
    let revisions: Vec<&str> = history
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.parse::<u32>().is_ok())
        .collect();
    assert_eq!(revisions, ["2", "3"], "{history}");

    let scaled = c.kubectl(&["scale", "deployment/web", "--replicas=5"]);
    if !scaled.status.success() {
        eprintln!(
            "note: kubectl scale failed ({}); patching spec.replicas",
            String::from_utf8_lossy(&scaled.stderr).trim()
        );
        c.ok(&[
            "patch",
            "deployment/web",
            "--type=merge",
            "-p",
            r#"{"spec":{"replicas":5}}"#,
        ]);
    }
    c.wait_for("5 available replicas", TIMEOUT, || {
        available(&c, "web") == "5/5"
    });
    c.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
}

#[test]
fn recreate_and_paused_deployments() {
    let c = Cluster::start(2);
    c.apply(
        "apiVersion: apps/v1
kind: Deployment
metadata: {name: rec}
spec:
  replicas: 2
  strategy: {type: Recreate}
  selector: {matchLabels: {app: rec}}
  template:
    metadata: {labels: {app: rec}}
    spec:
      containers: [{name: c, image: busybox}]
",
    );
    c.ok(&["rollout", "status", "deployment/rec", "--timeout=60s"]);
    c.ok(&["rollout", "pause", "deployment/rec"]);
    c.ok(&["set", "image", "deployment/rec", "c=busybox:2"]);
    c.wait_for("the Paused condition", TIMEOUT, || {
        c.jsonpath(
            &["deployment", "rec"],
            "{.status.conditions[?(@.type=='Progressing')].reason}",
        ) == "DeploymentPaused"
    });
    // Paused: no new ReplicaSet.
    assert_eq!(
        c.ok(&["get", "rs", "-l", "app=rec", "-o", "name"])
            .lines()
            .count(),
        1
    );
    c.ok(&["rollout", "resume", "deployment/rec"]);
    c.ok(&["rollout", "status", "deployment/rec", "--timeout=60s"]);
    let sets = c.jsonpath(
        &["rs", "-l", "app=rec"],
        "{range .items[*]}{.spec.replicas} {end}",
    );
    let mut sets: Vec<&str> = sets.split_whitespace().collect();
    sets.sort();
    assert_eq!(sets, ["0", "2"]);
}

#[test]
fn placement_follows_node_selectors_and_tolerations() {
    let c = Cluster::start(3);
    c.ok(&["taint", "node", "sim-0", "dedicated=gpu:NoSchedule"]);
    c.ok(&["label", "node", "sim-1", "disk=ssd"]);
    c.apply(
        "apiVersion: v1
kind: Pod
metadata: {name: ssd}
spec:
  nodeSelector: {disk: ssd}
  containers: [{name: c, image: busybox}]
---
apiVersion: v1
kind: Pod
metadata: {name: tolerant}
spec:
  nodeSelector: {kubernetes.io/hostname: sim-0}
  tolerations: [{key: dedicated, operator: Equal, value: gpu, effect: NoSchedule}]
  containers: [{name: c, image: busybox}]
---
apiVersion: v1
kind: Pod
metadata: {name: intolerant}
spec:
  affinity:
    nodeAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
        nodeSelectorTerms:
        - matchExpressions: [{key: kubernetes.io/hostname, operator: In, values: [sim-0, sim-2]}]
  tolerations: []
  containers: [{name: c, image: busybox}]
",
    );
    c.wait_for("pods placed", TIMEOUT, || {
        c.jsonpath(&["pod", "ssd"], "{.spec.nodeName}") == "sim-1"
            && c.jsonpath(&["pod", "tolerant"], "{.spec.nodeName}") == "sim-0"
    });
    assert_eq!(
        c.jsonpath(&["pod", "intolerant"], "{.spec.nodeName}"),
        "sim-2"
    );
    c.wait_for("the pods running", TIMEOUT, || {
        c.jsonpath(&["pod", "ssd"], "{.status.phase}") == "Running"
            && c.jsonpath(&["pod", "ssd"], "{.status.podIP}")
                .starts_with("10.")
    });
}

#[test]
fn unschedulable_pods_get_the_condition_and_an_event() {
    let c = Cluster::start(3);
    c.ok(&["taint", "node", "sim-0", "k=v:NoSchedule"]);
    c.apply(
        "apiVersion: v1
kind: Pod
metadata: {name: big}
spec:
  containers:
  - name: c
    image: busybox
    resources: {requests: {cpu: '6'}}
",
    );
    let expected = "0/3 nodes are available: 1 node(s) had untolerated taint {k: v}, 2 Insufficient cpu. preemption: 0/3 nodes are available: 1 Preemption is not helpful for scheduling, 2 No preemption victims found for incoming pod.";
    let condition = "{.status.conditions[?(@.type=='PodScheduled')]}";
    c.wait_for("the PodScheduled condition", TIMEOUT, || {
        c.jsonpath(&["pod", "big"], condition)
            .contains("Unschedulable")
    });
    let status = c.jsonpath(
        &["pod", "big"],
        "{.status.conditions[?(@.type=='PodScheduled')].status}",
    );
    assert_eq!(status, "False");
    let message = c.jsonpath(
        &["pod", "big"],
        "{.status.conditions[?(@.type=='PodScheduled')].message}",
    );
    assert_eq!(message, expected);
    c.wait_for("the FailedScheduling event", TIMEOUT, || {
        c.ok(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=big",
        ])
        .contains("FailedScheduling")
    });
    let events = c.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=big",
    ]);
    assert!(events.contains(expected), "{events}");

    // A node with room appears: the pod leaves the unschedulable queue and is bound.
    c.ok(&["taint", "node", "sim-0", "k=v:NoSchedule-"]);
    c.apply(
        "apiVersion: v1
kind: Pod
metadata: {name: elsewhere}
spec:
  schedulerName: other-scheduler
  containers: [{name: c, image: busybox}]
",
    );
    c.ok(&["label", "node", "sim-0", "changed=yes"]);
    std::thread::sleep(Duration::from_secs(2));
    // Still too big for 4-cpu nodes, but the message now counts three Insufficient cpu.
    c.wait_for("the updated message", TIMEOUT, || {
        c.jsonpath(
            &["pod", "big"],
            "{.status.conditions[?(@.type=='PodScheduled')].message}",
        )
        .starts_with("0/3 nodes are available: 3 Insufficient cpu.")
    });
    // Pods for another scheduler are left alone.
    assert_eq!(c.jsonpath(&["pod", "elsewhere"], "{.spec.nodeName}"), "");
    assert_eq!(
        c.jsonpath(&["pod", "elsewhere"], "{.status.conditions}"),
        ""
    );
}

#[test]
fn deleting_a_deployment_collects_its_replicasets_and_pods() {
    let c = Cluster::start(2);
    create_deployment(&c, "gc", "busybox", 2);
    c.ok(&["rollout", "status", "deployment/gc", "--timeout=60s"]);
    assert_eq!(
        c.ok(&["get", "rs", "-l", "app=gc", "-o", "name"])
            .lines()
            .count(),
        1
    );
    c.ok(&["delete", "deployment", "gc"]);
    c.wait_for("replicasets and pods collected", TIMEOUT, || {
        c.ok(&["get", "rs,pods", "-l", "app=gc", "-o", "name"])
            .trim()
            .is_empty()
    });
}

#[test]
fn cascade_foreground_and_orphan_deletion() {
    let c = Cluster::start(2);
    create_deployment(&c, "fg", "busybox", 2);
    c.ok(&["rollout", "status", "deployment/fg", "--timeout=60s"]);
    // Foreground: kubectl waits until the dependents are gone, then the owner.
    c.ok(&[
        "delete",
        "deployment",
        "fg",
        "--cascade=foreground",
        "--timeout=60s",
    ]);
    assert!(c
        .ok(&["get", "rs", "-l", "app=fg", "-o", "name"])
        .trim()
        .is_empty());
    c.wait_for("pods collected", TIMEOUT, || {
        c.ok(&["get", "pods", "-l", "app=fg", "-o", "name"])
            .trim()
            .is_empty()
    });

    create_deployment(&c, "orph", "busybox", 2);
    c.ok(&["rollout", "status", "deployment/orph", "--timeout=60s"]);
    // Orphan: the ReplicaSet and its pods stay, without the reference to the deployment.
    c.ok(&[
        "delete",
        "deployment",
        "orph",
        "--cascade=orphan",
        "--timeout=60s",
    ]);
    let owners = c.ok(&[
        "get",
        "rs",
        "-l",
        "app=orph",
        "-o",
        "jsonpath={.items[*].metadata.ownerReferences}",
    ]);
    assert!(!owners.contains("Deployment"), "{owners}");
    assert_eq!(
        c.ok(&["get", "rs", "-l", "app=orph", "-o", "name"])
            .lines()
            .count(),
        1
    );
}
