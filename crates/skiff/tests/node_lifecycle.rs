//! The node lifecycle controller end to end: `skiff server` without a kubelet and a short
//! grace period, one simulated node from `skiff agent --simulate 1`, driven by the real
//! kubectl 1.33. Killing the agent leaves the node unreachable: Ready turns Unknown, the
//! unreachable taints come, pods turn not Ready, and a pod that tolerates the taint for
//! only a few seconds is evicted and replaced by its Deployment. Back, the node loses the
//! taints.

use crate::common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::cluster::{Cluster, ServerProcess};
use common::Skiff;

/// A Deployment whose pod tolerates an unreachable node for 2 seconds only.
const DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      tolerations:
      - {key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 2}
      containers:
      - {name: web, image: busybox}
"#;

/// A pod with the API server's default tolerations only (300 s).
const PATIENT: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: patient, namespace: default}
spec:
  containers:
  - {name: c, image: busybox}
"#;

/// Polls `f` until it returns true, for at most `secs` seconds.
fn eventually(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

const READY: &str = "{.status.conditions[?(@.type==\"Ready\")].status}";
const TAINTS: &str = "{range .spec.taints[*]}{.key}:{.effect} {end}";

#[test]
fn an_unreachable_node_is_tainted_and_its_intolerant_pods_are_evicted() {
    let (c, _server) = Cluster::start_control_plane(&[
        "--node-monitor-grace-period",
        "4s",
        "--node-monitor-period",
        "1s",
    ]);
    let agent_root = Skiff::new();
    let log = agent_root.root.path().join("agent.log");
    let agent = agent_root
        .cmd(&["agent", "--simulate", "1", "--heartbeat-interval", "1"])
        .arg("--kubeconfig")
        .arg(&c.kubeconfig)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut agent = ServerProcess(agent);
    eventually(60, "sim-0 Ready", || {
        c.jsonpath("node/sim-0", READY) == "True"
    });

    // While its Lease is renewed, the node stays Ready and untainted past the grace period.
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(
        c.jsonpath("node/sim-0", READY),
        "True",
        "agent log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert_eq!(c.jsonpath("node/sim-0", TAINTS), "");

    c.apply(DEPLOYMENT);
    c.apply(PATIENT);
    let pod_of = || {
        c.jsonpath(
            "pods",
            "{.items[?(@.metadata.labels.app==\"web\")].metadata.name}",
        )
    };
    eventually(60, "the web pod running on sim-0", || {
        let name = pod_of();
        !name.is_empty()
            && !name.contains(' ')
            && c.jsonpath(&format!("pod/{name}"), "{.spec.nodeName}/{.status.phase}")
                == "sim-0/Running"
    });
    let first = pod_of();
    eventually(60, "patient running", || {
        c.jsonpath("pod/patient", "{.status.phase}") == "Running"
    });
    // The API server added the 300 s tolerations to the pod without any.
    let tolerations = c.jsonpath(
        "pod/patient",
        "{range .spec.tolerations[*]}{.key}={.tolerationSeconds} {end}",
    );
    assert!(
        tolerations.contains("node.kubernetes.io/unreachable=300")
            && tolerations.contains("node.kubernetes.io/not-ready=300"),
        "{tolerations}"
    );

    // The agent dies: no more heartbeats.
    let _ = agent.0.kill();
    let _ = agent.0.wait();
    eventually(30, "sim-0 Ready=Unknown", || {
        c.jsonpath("node/sim-0", READY) == "Unknown"
    });
    let ready = c.jsonpath(
        "node/sim-0",
        "{.status.conditions[?(@.type==\"Ready\")].reason}/{.status.conditions[?(@.type==\"Ready\")].message}",
    );
    assert_eq!(
        ready,
        "NodeStatusUnknown/Kubelet stopped posting node status."
    );
    let memory = c.jsonpath(
        "node/sim-0",
        "{.status.conditions[?(@.type==\"MemoryPressure\")].status}",
    );
    assert_eq!(memory, "Unknown");
    eventually(30, "the unreachable taints", || {
        let taints = c.jsonpath("node/sim-0", TAINTS);
        taints.contains("node.kubernetes.io/unreachable:NoExecute")
            && taints.contains("node.kubernetes.io/unreachable:NoSchedule")
    });
    assert!(!c
        .kubectl_ok(&["get", "node", "sim-0", "-o", "yaml"])
        .contains("not-ready"));

    // The pod tolerating 2 s is deleted (it stays Terminating: nobody runs it any more),
    // with the reason on it, and the Deployment replaces it.
    eventually(30, "the web pod evicted", || {
        let out = c.kubectl(&[
            "get",
            "pod",
            &first,
            "-o",
            "jsonpath={.metadata.deletionTimestamp}",
        ]);
        !out.status.success() || !String::from_utf8_lossy(&out.stdout).is_empty()
    });
    if c.kubectl(&["get", "pod", &first]).status.success() {
        let reason = c.jsonpath(
            &format!("pod/{first}"),
            "{.status.conditions[?(@.type==\"DisruptionTarget\")].reason}",
        );
        assert_eq!(reason, "DeletionByTaintManager");
    }
    eventually(30, "a replacement web pod", || {
        pod_of().split(' ').any(|p| !p.is_empty() && p != first)
    });

    // The pod tolerating 300 s stays, not Ready.
    eventually(30, "patient not ready", || {
        c.jsonpath("pod/patient", READY) == "False"
    });
    assert_eq!(
        c.jsonpath("pod/patient", "{.metadata.deletionTimestamp}"),
        ""
    );

    // Idempotent: the taints are there once each.
    let taints = c.jsonpath("node/sim-0", TAINTS);
    assert_eq!(
        taints.matches("unreachable:NoExecute").count(),
        1,
        "{taints}"
    );

    // The agent comes back: the node is Ready again and the taints go.
    let agent = agent_root
        .cmd(&["agent", "--simulate", "1", "--heartbeat-interval", "1"])
        .arg("--kubeconfig")
        .arg(&c.kubeconfig)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let _agent = ServerProcess(agent);
    eventually(30, "sim-0 Ready again", || {
        c.jsonpath("node/sim-0", READY) == "True"
    });
    eventually(30, "the taints removed", || {
        c.jsonpath("node/sim-0", TAINTS).is_empty()
    });
}

/// A NoExecute taint added without `timeAdded` (as the Python client and most clients
/// send it): a pod that tolerates it for a few seconds is evicted once they have run out,
/// counted from when the taint appeared, and a pod that tolerates it for ever stays.
#[test]
fn toleration_seconds_of_a_taint_run_out_and_the_pod_is_evicted() {
    let (c, _server) = Cluster::start_control_plane(&[]);
    let agent_root = Skiff::new();
    let agent = agent_root
        .cmd(&["agent", "--simulate", "1", "--heartbeat-interval", "1"])
        .arg("--kubeconfig")
        .arg(&c.kubeconfig)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _agent = ServerProcess(agent);
    eventually(60, "sim-0 Ready", || {
        c.jsonpath("node/sim-0", READY) == "True"
    });
    c.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: brief, namespace: default}
spec:
  tolerations:
  - {key: maintenance, operator: Exists, effect: NoExecute, tolerationSeconds: 6}
  containers:
  - {name: c, image: busybox}
---
apiVersion: v1
kind: Pod
metadata: {name: steady, namespace: default}
spec:
  tolerations:
  - {key: maintenance, operator: Exists, effect: NoExecute}
  containers:
  - {name: c, image: busybox}
"#,
    );
    for pod in ["brief", "steady"] {
        eventually(60, &format!("{pod} running"), || {
            c.jsonpath(&format!("pod/{pod}"), "{.status.phase}") == "Running"
        });
    }
    c.kubectl_ok(&[
        "patch",
        "node",
        "sim-0",
        "--type=merge",
        "-p",
        r#"{"spec":{"taints":[{"key":"maintenance","value":"now","effect":"NoExecute"}]}}"#,
    ]);
    let tainted = Instant::now();
    eventually(40, "brief evicted", || {
        !c.kubectl(&["get", "pod", "brief"]).status.success()
            || !c
                .jsonpath("pod/brief", "{.metadata.deletionTimestamp}")
                .is_empty()
    });
    let after = tainted.elapsed();
    assert!(after >= Duration::from_secs(5), "evicted after {after:?}");
    assert_eq!(
        c.jsonpath("pod/steady", "{.metadata.deletionTimestamp}"),
        ""
    );
}
