//! `skiff server` killed with SIGKILL and started again on the same root: the pods keep
//! running, the kubelet takes their containers back, and the controllers create and
//! delete nothing (they decide only on filled caches). Needs root.

use crate::common;

use std::time::{Duration, Instant};

use common::cluster::Cluster;

const WORKLOADS: &str = "apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - {name: web, image: busybox, imagePullPolicy: Never, command: [httpd, -f, -p, '80', -h, /etc]}
---
apiVersion: v1
kind: Pod
metadata: {name: solo}
spec:
  containers:
  - {name: solo, image: busybox, imagePullPolicy: Never, command: [sleep, '3600']}
";

/// Every pod with its containers' IDs, start times and restart counts, one per line.
fn pods(c: &Cluster) -> String {
    c.jsonpath(
        "pods",
        "{range .items[*]}{.metadata.name} {.metadata.deletionTimestamp} {.status.containerStatuses[*].containerID} {.status.containerStatuses[*].state.running.startedAt} {.status.containerStatuses[*].restartCount}{\"\\n\"}{end}",
    )
}

#[test]
fn a_killed_server_comes_back_to_the_same_pods() {
    let (c, server) = Cluster::start(&[]);
    c.apply(WORKLOADS);
    c.kubectl_ok(&["rollout", "status", "deployment/web", "--timeout=90s"]);
    c.kubectl_ok(&["wait", "--for=condition=Ready", "pod/solo", "--timeout=60s"]);
    let before = pods(&c);
    assert_eq!(before.lines().count(), 3, "{before}");
    let replicasets = c.jsonpath("replicasets", "{.items[*].metadata.name}");

    drop(server); // SIGKILL: nothing is cleaned up or handed over.
    let _server = c.start_again();

    // For a while after the restart, while the controllers and the kubelet resync, the
    // pods stay exactly as they were: no pod is added or deleted, no container restarted.
    let until = Instant::now() + Duration::from_secs(12);
    while Instant::now() < until {
        assert_eq!(pods(&c), before, "the pods changed after the restart");
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(
        c.jsonpath("replicasets", "{.items[*].metadata.name}"),
        replicasets
    );
    assert_eq!(
        c.jsonpath("deployment/web", "{.status.collisionCount}"),
        "",
        "the Deployment's ReplicaSet was taken for a hash collision"
    );
    // The node's kubelet serves the pods it took back, and stops them when asked.
    let out = c.kubectl_ok(&["exec", "solo", "--", "cat", "/etc/hostname"]);
    assert_eq!(out.trim(), "solo");
    c.kubectl_ok(&["delete", "pod", "solo", "--timeout=60s"]);
    c.kubectl_ok(&["rollout", "status", "deployment/web", "--timeout=30s"]);
}
