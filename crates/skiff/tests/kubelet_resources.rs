//! Container resources on the kubelet inside `skiff server`, driven by the real kubectl
//! 1.33: requests and limits in the containers' and pods' cgroup files (read on the
//! host through the container's pid), each pod in the cgroup level of its QoS class,
//! OOM kills reported as `OOMKilled` with exit code 137, and nothing of the kubelet's
//! left in the cgroup hierarchy once pods are deleted and the root is reset. Runs on
//! cgroup v1 (with or without a cgroup2 mount beside) and pure v2. Needs root.

use crate::common;

use std::path::{Path, PathBuf};

use common::cluster::Cluster;

const CGROUP_FS: &str = "/sys/fs/cgroup";

/// Whether the host has only the unified (v2) hierarchy.
fn unified() -> bool {
    Path::new(CGROUP_FS).join("cgroup.controllers").exists()
}

/// The directory of cgroup `path` in the hierarchy holding `controller`.
fn cgroup_dir(controller: &str, path: &str) -> PathBuf {
    let relative = path.trim_start_matches('/');
    if unified() {
        Path::new(CGROUP_FS).join(relative)
    } else {
        Path::new(CGROUP_FS).join(controller).join(relative)
    }
}

/// A cgroup file, trimmed.
fn read(controller: &str, path: &str, file: &str) -> String {
    let f = cgroup_dir(controller, path).join(file);
    std::fs::read_to_string(&f)
        .unwrap_or_else(|e| panic!("reading {}: {e}", f.display()))
        .trim()
        .to_string()
}

/// The cgroup of process `pid` for `controller`, from `/proc/PID/cgroup`.
fn cgroup_of(pid: u32, controller: &str) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    text.lines()
        .find_map(|line| {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            let mine = if unified() {
                controllers.is_empty()
            } else {
                controllers.split(',').any(|c| c == controller)
            };
            mine.then(|| path.to_string())
        })
        .unwrap_or_else(|| panic!("no {controller} cgroup for pid {pid}: {text}"))
}

/// The host pid of a pod's running container (its first instance).
fn pid_of(c: &Cluster, pod: &str, container: &str) -> u32 {
    let name = c.engine_name(pod, container, 0);
    let pid = c.skiff.ok(&["inspect", "-f", "{{.State.Pid}}", &name]);
    pid.trim()
        .parse()
        .unwrap_or_else(|_| panic!("pid of {name}: {pid:?}"))
}

/// The cpu and memory limits a cgroup shows, in cgroup v1 terms (v2's `cpu.weight`
/// becomes the shares given, when they convert to it): shares, quota (-1: none),
/// period and memory limit (None: unlimited).
#[derive(Debug, PartialEq, Eq)]
struct Limits {
    shares: u64,
    quota: i64,
    period: u64,
    memory: Option<u64>,
}

fn limits_of(path: &str, expected_shares: u64) -> Limits {
    if unified() {
        let weight: u64 = read("cpu", path, "cpu.weight").parse().unwrap();
        let max = read("cpu", path, "cpu.max");
        let (quota, period) = max.split_once(' ').unwrap();
        let memory = read("memory", path, "memory.max");
        Limits {
            shares: if weight == skiff_runtime::cgroups::cpu_weight_from_shares(expected_shares) {
                expected_shares
            } else {
                weight
            },
            quota: quota.parse().unwrap_or(-1),
            period: period.parse().unwrap(),
            memory: memory.parse().ok(),
        }
    } else {
        let memory: u64 = read("memory", path, "memory.limit_in_bytes")
            .parse()
            .unwrap();
        Limits {
            shares: read("cpu", path, "cpu.shares").parse().unwrap(),
            quota: read("cpu", path, "cpu.cfs_quota_us").parse().unwrap(),
            period: read("cpu", path, "cpu.cfs_period_us").parse().unwrap(),
            // v1 shows "unlimited" as the largest page-aligned number.
            memory: (memory < 1 << 62).then_some(memory),
        }
    }
}

/// Every hierarchy's directory of cgroup `path` that exists.
fn existing(path: &str) -> Vec<PathBuf> {
    let relative = path.trim_start_matches('/');
    if unified() {
        let d = Path::new(CGROUP_FS).join(relative);
        return if d.exists() { vec![d] } else { vec![] };
    }
    std::fs::read_dir(CGROUP_FS)
        .unwrap()
        .flatten()
        .map(|e| e.path().join(relative))
        .filter(|d| d.exists())
        .collect()
}

/// Waits until cgroup `path` is gone from every hierarchy.
fn wait_gone(path: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !existing(path).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "cgroup {path} is still there: {:?}",
            existing(path)
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// A pod of one busybox container with `resources` (YAML flow mappings).
fn pod(name: &str, restart: &str, command: &str, resources: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  restartPolicy: {restart}
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: busybox
    imagePullPolicy: Never
    command: ["sh", "-c", "{command}"]
    resources: {resources}
---
"#
    )
}

#[test]
fn kubelet_puts_resources_in_cgroups_and_reports_oom_kills() {
    let (c, server) = Cluster::start(&[]);
    let root = c.kubelet_cgroup_root();
    let kubepods = format!("{root}/kubepods");
    let sleep = "sleep 3600";
    // The shell doubles a string until the memory limit stops it.
    let hog = "a=0123456789abcdef; while true; do a=$a$a; done";
    let mut yaml = String::new();
    yaml += &pod(
        "guaranteed",
        "Always",
        sleep,
        "{limits: {cpu: 250m, memory: 64Mi}}",
    );
    yaml += &pod(
        "burstable",
        "Always",
        sleep,
        "{requests: {cpu: 100m, memory: 16Mi}, limits: {memory: 32Mi}}",
    );
    yaml += &pod("besteffort", "Always", sleep, "{}");
    yaml += &pod("oom", "Never", hog, "{limits: {memory: 32Mi}}");
    yaml += &pod("oom-restarted", "Always", hog, "{limits: {memory: 32Mi}}");
    c.apply(&yaml);

    // OOM kills: the terminated state, then (restarting) the last state.
    let terminated = "{.status.containerStatuses[0].state.terminated.reason} \
                      {.status.containerStatuses[0].state.terminated.exitCode}";
    c.wait_until("pod/oom", terminated, 90, |s| s == "OOMKilled 137");
    c.wait_for("pod/oom", "{.status.phase}", "Failed");
    let last = "{.status.containerStatuses[0].lastState.terminated.reason} \
                {.status.containerStatuses[0].lastState.terminated.exitCode}";
    c.wait_until("pod/oom-restarted", last, 90, |s| s == "OOMKilled 137");

    for p in ["guaranteed", "burstable", "besteffort"] {
        c.wait_for(&format!("pod/{p}"), "{.status.phase}", "Running");
    }
    let uid = |p: &str| c.jsonpath(&format!("pod/{p}"), "{.metadata.uid}");

    // The API server's QoS classes, and the cgroup levels that go with them: each
    // container in its pod's cgroup, the pod's in its class's level.
    let cases = [
        ("guaranteed", "Guaranteed", kubepods.clone()),
        ("burstable", "Burstable", format!("{kubepods}/burstable")),
        ("besteffort", "BestEffort", format!("{kubepods}/besteffort")),
    ];
    for (p, class, level) in &cases {
        assert_eq!(
            &c.jsonpath(&format!("pod/{p}"), "{.status.qosClass}"),
            class
        );
        let pid = pid_of(&c, p, "app");
        for controller in ["cpu", "memory"] {
            let container = cgroup_of(pid, controller);
            let (parent, _) = container.rsplit_once('/').unwrap();
            assert_eq!(
                parent,
                format!("{level}/pod{}", uid(p)),
                "{p}: {controller} cgroup {container}"
            );
        }
    }

    // Containers: shares from requests, a quota from cpu limits, memory limits.
    let container_limits = |p: &str, shares: u64| {
        let cgroup = cgroup_of(pid_of(&c, p, "app"), "cpu");
        let memory_cgroup = cgroup_of(pid_of(&c, p, "app"), "memory");
        assert_eq!(cgroup, memory_cgroup);
        limits_of(&cgroup, shares)
    };
    assert_eq!(
        container_limits("guaranteed", 256),
        Limits {
            shares: 256,
            quota: 25_000,
            period: 100_000,
            memory: Some(64 << 20)
        }
    );
    assert_eq!(
        container_limits("burstable", 102),
        Limits {
            shares: 102,
            quota: -1,
            period: 100_000,
            memory: Some(32 << 20)
        }
    );
    assert_eq!(
        container_limits("besteffort", 2),
        Limits {
            shares: 2,
            quota: -1,
            period: 100_000,
            memory: None
        }
    );

    // Pod cgroups: the sum of their containers' limits (one container each here).
    let pod_cgroup = |p: &str, level: &str| format!("{level}/pod{}", uid(p));
    assert_eq!(
        limits_of(&pod_cgroup("guaranteed", &kubepods), 256),
        Limits {
            shares: 256,
            quota: 25_000,
            period: 100_000,
            memory: Some(64 << 20)
        }
    );
    assert_eq!(
        limits_of(&pod_cgroup("burstable", &cases[1].2), 102),
        Limits {
            shares: 102,
            quota: -1,
            period: 100_000,
            memory: Some(32 << 20)
        }
    );
    // The QoS levels: BestEffort pods share the least; Burstable ones their requests
    // (100m of `burstable`; the OOM pods request no cpu, and `oom` has finished).
    assert_eq!(limits_of(&cases[2].2, 2).shares, 2);
    let burstable_shares = limits_of(&cases[1].2, 102).shares;
    assert_eq!(burstable_shares, 102);

    // A finished pod's cgroup goes; so do deleted pods'.
    wait_gone(&pod_cgroup("oom", &cases[1].2));
    let deleted: Vec<String> = cases
        .iter()
        .map(|(p, _, level)| pod_cgroup(p, level))
        .collect();
    c.kubectl_ok(&[
        "delete",
        "pod",
        "guaranteed",
        "burstable",
        "besteffort",
        "oom",
        "oom-restarted",
        "--wait",
    ]);
    for cgroup in &deleted {
        wait_gone(cgroup);
    }

    // `system reset` removes the rest: the QoS levels and the root the kubelet made.
    assert!(!existing(&kubepods).is_empty());
    drop(server);
    c.skiff.ok(&["system", "reset", "-f"]);
    assert!(existing(&root).is_empty(), "{:?}", existing(&root));
}
