//! The kubelet inside `skiff server`, driven by the real kubectl 1.33: pods run on
//! skiff's engine in a sandbox holding their namespaces, report Kubernetes' status,
//! and are stopped and removed when deleted. Needs root.

use crate::common;

use std::time::{Duration, Instant};

use common::cluster::{Cluster, ServerProcess};

fn start() -> (Cluster, ServerProcess) {
    Cluster::start(&[])
}

#[test]
fn kubelet_runs_pods_on_the_engine() {
    let (c, _server) = start();

    // The node: capacity from the host, addresses, a Lease heartbeat.
    assert!(!c
        .jsonpath("node/node-a", "{.status.capacity.cpu}")
        .is_empty());
    assert!(c
        .jsonpath("node/node-a", "{.status.allocatable.memory}")
        .ends_with("Ki"));
    assert!(!c
        .jsonpath(
            "node/node-a",
            "{.status.addresses[?(@.type==\"InternalIP\")].address}"
        )
        .is_empty());
    let deadline = Instant::now() + Duration::from_secs(20);
    while c
        .jsonpath("lease/node-a", "{.spec.holderIdentity}")
        .is_empty()
    {
        let out = c.kubectl(&[
            "get",
            "lease",
            "node-a",
            "-n",
            "kube-node-lease",
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ]);
        if String::from_utf8_lossy(&out.stdout) == "node-a" {
            break;
        }
        assert!(Instant::now() < deadline, "no Lease for node-a");
        std::thread::sleep(Duration::from_millis(200));
    }

    assert_eq!(
        c.jsonpath("node/node-a", "{.spec.podCIDR}"),
        c.skiff.subnet()
    );
    // The server's own node is a control-plane node.
    c.wait_until("node/node-a", "{.metadata.labels}", 20, |l| {
        l.contains(r#""node-role.kubernetes.io/control-plane":"true""#)
    });
    // The kubelet recorded its start on the node, as `kubectl describe node` shows it.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let described = c.kubectl_ok(&["describe", "node", "node-a"]);
        let events = described.split("Events:").nth(1).unwrap_or_default();
        if events.contains("Starting kubelet.")
            && events.contains("Node node-a status is now: NodeReady")
        {
            break;
        }
        assert!(Instant::now() < deadline, "no node events: {described}");
        std::thread::sleep(Duration::from_millis(200));
    }

    // A container that fails is restarted after a back-off (checked at the end).
    c.apply(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: crash
spec:
  containers:
  - name: crash
    image: busybox
    imagePullPolicy: Never
    command: ["sh", "-c", "exit 3"]
"#,
    );

    // A pod reaches Running and Ready with an IP from the node's pod network.
    c.apply(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: busybox
spec:
  containers:
  - name: busybox
    image: busybox
    imagePullPolicy: Never
    command: ["sh", "-c", "echo hi; sleep 3600"]
"#,
    );
    c.wait_for("pod/busybox", "{.status.phase}", "Running");
    c.wait_for(
        "pod/busybox",
        "{.status.conditions[?(@.type==\"Ready\")].status}",
        "True",
    );
    let ip = c.jsonpath("pod/busybox", "{.status.podIP}");
    let subnet = c.skiff.subnet();
    let prefix = subnet.trim_end_matches("0/24");
    assert!(ip.starts_with(prefix), "pod IP {ip:?} not in {subnet}");
    assert_eq!(c.jsonpath("pod/busybox", "{.status.podIPs[0].ip}"), ip);
    assert!(!c.jsonpath("pod/busybox", "{.status.hostIP}").is_empty());
    assert!(!c.jsonpath("pod/busybox", "{.status.startTime}").is_empty());
    assert_eq!(
        c.jsonpath("pod/busybox", "{.status.qosClass}"),
        "BestEffort"
    );
    assert_eq!(
        c.jsonpath("pod/busybox", "{.status.containerStatuses[0].ready}"),
        "true"
    );
    assert_eq!(
        c.jsonpath("pod/busybox", "{.status.containerStatuses[0].restartCount}"),
        "0"
    );
    assert!(c
        .jsonpath("pod/busybox", "{.status.containerStatuses[0].containerID}")
        .starts_with("skiff://"));
    assert!(!c
        .jsonpath(
            "pod/busybox",
            "{.status.containerStatuses[0].state.running.startedAt}"
        )
        .is_empty());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !c.container_log("busybox", "busybox").contains("hi") {
        assert!(Instant::now() < deadline, "busybox never printed hi");
        std::thread::sleep(Duration::from_millis(100));
    }

    // Two containers of a pod share the sandbox's network namespace: localhost.
    c.apply(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: pair
spec:
  containers:
  - name: server
    image: busybox
    imagePullPolicy: Never
    command: ["sh", "-c", "echo from-server > /tmp/index.html; exec httpd -f -p 8080 -h /tmp"]
  - name: client
    image: busybox
    imagePullPolicy: Never
    command: ["sh", "-c", "until wget -q -O /tmp/got http://127.0.0.1:8080/index.html; do sleep 0.2; done; cat /tmp/got; sleep 3600"]
"#,
    );
    c.wait_for("pod/pair", "{.status.phase}", "Running");
    c.wait_for(
        "pod/pair",
        "{.status.conditions[?(@.type==\"ContainersReady\")].status}",
        "True",
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !c.container_log("pair", "client").contains("from-server") {
        assert!(
            Instant::now() < deadline,
            "the client never reached the server on localhost"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // A pod whose container exits 0 with restartPolicy Never: Succeeded, Completed.
    c.apply(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: done
spec:
  restartPolicy: Never
  containers:
  - name: once
    image: busybox
    imagePullPolicy: Never
    command: ["true"]
"#,
    );
    c.wait_for("pod/done", "{.status.phase}", "Succeeded");
    assert_eq!(
        c.jsonpath(
            "pod/done",
            "{.status.containerStatuses[0].state.terminated.reason}"
        ),
        "Completed"
    );
    assert_eq!(
        c.jsonpath(
            "pod/done",
            "{.status.containerStatuses[0].state.terminated.exitCode}"
        ),
        "0"
    );
    assert_eq!(
        c.jsonpath(
            "pod/done",
            "{.status.conditions[?(@.type==\"Ready\")].reason}"
        ),
        "PodCompleted"
    );

    // Deleting a pod stops its containers (SIGTERM, the grace period, SIGKILL: this
    // shell ignores SIGTERM as PID 1) and then removes the object.
    let uid = c.jsonpath("pod/busybox", "{.metadata.uid}");
    assert!(c.engine_containers().contains(&uid));
    let started = Instant::now();
    c.kubectl_ok(&[
        "delete",
        "pod",
        "busybox",
        "--grace-period=2",
        "--timeout=60s",
    ]);
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "deleted before the grace period"
    );
    let gone = c.kubectl(&["get", "pod", "busybox"]);
    assert!(!gone.status.success());
    assert!(String::from_utf8_lossy(&gone.stderr).contains("NotFound"));
    assert!(
        !c.engine_containers().contains(&uid),
        "containers of the deleted pod remain"
    );
    // The other pods are untouched.
    assert_eq!(c.jsonpath("pod/pair", "{.status.phase}"), "Running");

    // As the kubelet does: the first exit restarts at once, the next ones wait in
    // CrashLoopBackOff, 10 s, then 20 s, ...
    let crash = "{.status.containerStatuses[0]";
    c.wait_for(
        "pod/crash",
        &format!("{crash}.lastState.terminated.exitCode}}"),
        "3",
    );
    assert_eq!(
        c.jsonpath(
            "pod/crash",
            &format!("{crash}.lastState.terminated.reason}}")
        ),
        "Error"
    );
    // While it backs off, the delay shown matches the restarts so far (the test's
    // earlier steps take a while, so read both at once).
    c.wait_until(
        "pod/crash",
        &format!("{crash}.state.waiting.reason}}"),
        60,
        |got| got == "CrashLoopBackOff",
    );
    let got = c.jsonpath(
        "pod/crash",
        &format!("{crash}.restartCount}} {crash}.state.waiting.message}}"),
    );
    let (restarts, message) = got.split_once(' ').unwrap();
    let restarts: u32 = restarts.parse().unwrap();
    assert!(restarts >= 1, "{got}");
    let delay = (10u32 << (restarts - 1).min(5)).min(300);
    assert!(
        message.starts_with(&format!(
            "back-off {delay}s restarting failed container=crash pod=crash_default("
        )),
        "{got}"
    );
    assert_eq!(c.jsonpath("pod/crash", "{.status.phase}"), "Running");
    // `kubectl describe` shows why, with the events the kubelet sends: the image found
    // on the node, and a warning per back-off (not one per sync while it lasts).
    let events = |reason: &str| {
        c.kubectl_ok(&[
            "get",
            "events",
            "--field-selector",
            &format!("involvedObject.name=crash,reason={reason}"),
            "-o",
            "jsonpath={range .items[*]}{.type} {.count} {.message}{\"\\n\"}{end}",
        ])
    };
    let backoff = events("BackOff");
    assert!(
        backoff.starts_with("Warning ")
            && backoff
                .contains(" Back-off restarting failed container crash in pod crash_default("),
        "{backoff}"
    );
    let count: u32 = backoff.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(
        count <= 3,
        "one BackOff event per back-off period: {backoff}"
    );
    assert!(
        events("Pulled").contains("Container image \"busybox\" already present on machine"),
        "{}",
        events("Pulled")
    );

    // A pod removed without the kubelet (force deletion) has its containers cleaned up.
    let uid = c.jsonpath("pod/pair", "{.metadata.uid}");
    c.kubectl_ok(&["delete", "pod", "pair", "--grace-period=0", "--force"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while c.engine_containers().contains(&uid) {
        assert!(
            Instant::now() < deadline,
            "containers of a force-deleted pod remain"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
