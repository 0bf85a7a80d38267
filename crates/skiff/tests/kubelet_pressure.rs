//! The kubelet's pid limits and node-pressure eviction inside `skiff server`, driven by
//! the real kubectl 1.33: `--pod-max-pids` in the pod cgroup's `pids.max` caps a pod
//! that forks too much; an `--eviction-hard` threshold that is always crossed raises
//! MemoryPressure, taints the node `node.kubernetes.io/memory-pressure:NoSchedule` and
//! evicts a BestEffort pod before a Guaranteed one, each `Failed` with reason `Evicted`.
//! Needs root.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::cluster::Cluster;

/// The directory of cgroup `path` in the hierarchy of `controller` (v1) or the unified one.
fn cgroup_dir(controller: &str, path: &str) -> PathBuf {
    let fs = Path::new("/sys/fs/cgroup");
    let relative = path.trim_start_matches('/');
    if fs.join("cgroup.controllers").exists() {
        fs.join(relative)
    } else {
        fs.join(controller).join(relative)
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
        .trim()
        .to_string()
}

#[test]
fn pod_max_pids_caps_a_pod_that_forks_too_much() {
    let (c, _server) = Cluster::start(&[("SKIFF_KUBELET_POD_MAX_PIDS", "20")]);
    // 50 sleeps in a child shell, which gives up at the first failed fork; the rest
    // uses shell builtins only, which need no process.
    let script = "sh -c 'for i in $(seq 50); do sleep 600 & done' 2>/tmp/err; \
                  n=0; for p in /proc/[0-9]*; do n=$((n+1)); done; \
                  read -r e < /tmp/err; echo \"processes=$n\"; echo \"error=$e\"; exec sleep 3600";
    c.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: forker\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: app\n    image: busybox\n    imagePullPolicy: Never\n    command: [\"sh\", \"-c\", {script:?}]\n"
    ));
    c.wait_for("pod/forker", "{.status.phase}", "Running");
    let log = c.wait_for_log("forker", "app", "error=");
    let processes: u32 = log
        .lines()
        .find_map(|l| l.strip_prefix("processes="))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("{log:?}"));
    assert!(
        (2..20).contains(&processes),
        "at most 20 processes in the pod, the sandbox's among them: {log:?}"
    );
    assert!(log.contains("fork"), "a fork failed: {log:?}");

    let uid = c.jsonpath("pod/forker", "{.metadata.uid}");
    let kubepods = format!("{}/kubepods", c.kubelet_cgroup_root());
    let pod = cgroup_dir("pids", &format!("{kubepods}/besteffort/pod{uid}"));
    assert_eq!(read(&pod.join("pids.max")), "20");
    let current: u32 = read(&pod.join("pids.current")).parse().unwrap();
    assert!(
        (processes..=20).contains(&current),
        "pids.current {current}"
    );
    // All pods together: the node's pids.
    let pid_max = read(Path::new("/proc/sys/kernel/pid_max"));
    assert_eq!(
        read(&cgroup_dir("pids", &kubepods).join("pids.max")),
        pid_max
    );
}

fn pod(name: &str, resources: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  terminationGracePeriodSeconds: 1\n  tolerations:\n  - key: node.kubernetes.io/memory-pressure\n    operator: Exists\n    effect: NoSchedule\n  containers:\n  - name: app\n    image: busybox\n    imagePullPolicy: Never\n    command: [\"sleep\", \"3600\"]\n    resources: {resources}\n---\n"
    )
}

#[test]
fn memory_pressure_taints_the_node_and_evicts_best_effort_pods_first() {
    let (c, _server) = Cluster::start_with(&["--eviction-hard", "memory.available<1000Ti"], &[]);
    let condition = "{.status.conditions[?(@.type==\"MemoryPressure\")].status} \
                     {.status.conditions[?(@.type==\"MemoryPressure\")].reason}";
    c.wait_until("node/node-a", condition, 60, |s| {
        s == "True KubeletHasInsufficientMemory"
    });
    assert_eq!(
        c.jsonpath(
            "node/node-a",
            "{.status.conditions[?(@.type==\"DiskPressure\")].status}"
        ),
        "False"
    );
    c.wait_until("node/node-a", "{.spec.taints[*].key}", 60, |s| {
        s.split(' ')
            .any(|k| k == "node.kubernetes.io/memory-pressure")
    });
    assert_eq!(
        c.jsonpath(
            "node/node-a",
            "{.spec.taints[?(@.key==\"node.kubernetes.io/memory-pressure\")].effect}"
        ),
        "NoSchedule"
    );

    // Both at once: the next pass evicts the BestEffort pod, a later one the other.
    c.apply(&(pod("guaranteed", "{limits: {cpu: 100m, memory: 64Mi}}") + &pod("besteffort", "{}")));
    let deadline = Instant::now() + Duration::from_secs(90);
    while c.jsonpath("pod/besteffort", "{.status.phase}") != "Failed" {
        assert_ne!(
            c.jsonpath("pod/guaranteed", "{.status.phase}"),
            "Failed",
            "the Guaranteed pod went first"
        );
        assert!(
            Instant::now() < deadline,
            "{}",
            c.kubectl_ok(&["get", "pod", "besteffort", "-o", "yaml"])
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_ne!(c.jsonpath("pod/guaranteed", "{.status.phase}"), "Failed");
    assert_eq!(c.jsonpath("pod/besteffort", "{.status.reason}"), "Evicted");
    assert_eq!(
        c.jsonpath(
            "pod/besteffort",
            "{.status.conditions[?(@.type==\"DisruptionTarget\")].reason}"
        ),
        "TerminationByKubelet"
    );
    let message = c.jsonpath("pod/besteffort", "{.status.message}");
    assert!(
        message.starts_with(
            "The node was low on resource: memory. Threshold quantity: 1000Ti, available: "
        ),
        "{message}"
    );
    let events = c.kubectl_ok(&[
        "get",
        "events",
        "-o",
        "jsonpath={range .items[*]}{.involvedObject.name} {.reason} {.type}{\"\\n\"}{end}",
    ]);
    assert!(
        events.lines().any(|l| l == "besteffort Evicted Warning"),
        "{events}"
    );
    // Its containers stopped and stay stopped.
    c.wait_until(
        "pod/besteffort",
        "{.status.containerStatuses[0].state.terminated.exitCode}",
        30,
        |s| !s.is_empty(),
    );
    // The Guaranteed pod follows while the pressure lasts.
    c.wait_for("pod/guaranteed", "{.status.reason}", "Evicted");
    assert_eq!(c.jsonpath("pod/guaranteed", "{.status.phase}"), "Failed");
    assert_eq!(c.jsonpath("pod/besteffort", "{.status.phase}"), "Failed");

    // Admission under memory pressure: a BestEffort pod that does not tolerate it (bound
    // here directly, as the scheduler would not place it) fails without starting.
    c.apply(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: refused\nspec:\n  nodeName: node-a\n  containers:\n  - name: app\n    image: busybox\n    imagePullPolicy: Never\n    command: [\"sleep\", \"3600\"]\n",
    );
    c.wait_for("pod/refused", "{.status.phase}", "Failed");
    assert_eq!(
        c.jsonpath("pod/refused", "{.status.reason} {.status.message}"),
        "Evicted The node was low on resource: [MemoryPressure]. "
    );
    assert_eq!(
        c.jsonpath(
            "pod/refused",
            "{.status.containerStatuses[0].state.waiting.reason}"
        ),
        "ContainerCreating"
    );
}
