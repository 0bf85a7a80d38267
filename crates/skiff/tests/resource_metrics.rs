//! Resource metrics and autoscaling on `skiff server`, with the real kubectl: the
//! kubelet's `/metrics/resource` scraped into `metrics.k8s.io`, read by `kubectl top`
//! (1.33 and 1.27), and a HorizontalPodAutoscaler made by `kubectl autoscale` scaling a
//! Deployment whose pod burns cpu. Needs root (pods run in containers).

use crate::common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::cluster::{free_port, Cluster, ServerProcess};

/// A cluster scraping every 2s, syncing HPAs every 3s and stabilizing scale-downs over
/// 10s, with its kubelet API on a port of its own (tests run side by side).
fn cluster() -> (Cluster, ServerProcess) {
    let kubelet_port = free_port().to_string();
    Cluster::start_with(
        &[
            "--kubelet-port",
            &kubelet_port,
            "--horizontal-pod-autoscaler-sync-period",
            "3s",
            "--horizontal-pod-autoscaler-downscale-stabilization",
            "10s",
        ],
        &[("SKIFF_METRIC_RESOLUTION", "2")],
    )
}

fn kubectl_127() -> PathBuf {
    common::cluster::kubectl_133().with_file_name("kubectl.1.27")
}

/// A pod spinning on cpu under a 300m limit, and an idle one.
const PODS: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: burner, labels: {app: burner}}
spec:
  containers:
  - name: spin
    image: busybox
    imagePullPolicy: Never
    command: ["sh", "-c", "while :; do :; done"]
    resources:
      requests: {cpu: 100m, memory: 16Mi}
      limits: {cpu: 300m, memory: 64Mi}
---
apiVersion: v1
kind: Pod
metadata: {name: idle, labels: {app: idle}}
spec:
  containers:
  - name: sleep
    image: busybox
    imagePullPolicy: Never
    command: ["sleep", "3600"]
"#;

/// Millicores in kubectl top's CPU column (`250m`, `1`).
fn millicores(text: &str) -> u64 {
    match text.strip_suffix('m') {
        Some(m) => m.parse().unwrap(),
        None => text.parse::<u64>().unwrap() * 1000,
    }
}

/// Bytes in kubectl top's MEMORY column (`12Mi`, `900Ki`).
fn bytes(text: &str) -> u64 {
    for (suffix, factor) in [("Ki", 1u64 << 10), ("Mi", 1 << 20), ("Gi", 1 << 30)] {
        if let Some(n) = text.strip_suffix(suffix) {
            return n.parse::<u64>().unwrap() * factor;
        }
    }
    text.parse().unwrap()
}

/// Runs kubectl `args` until it succeeds and `check` accepts its output (90 s).
fn poll(c: &Cluster, kubectl: &PathBuf, args: &[&str], check: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let out = Command::new(kubectl)
            .arg("--kubeconfig")
            .arg(&c.kubeconfig)
            .args(args)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        if out.status.success() && check(&stdout) {
            return stdout;
        }
        assert!(
            Instant::now() < deadline,
            "kubectl {args:?}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The row of `name` in a `kubectl top` table, split in columns.
fn row(table: &str, name: &str) -> Option<Vec<String>> {
    table
        .lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .find(|cols| cols.iter().any(|c| c == name))
}

#[test]
fn kubectl_top_reports_a_busy_pods_cpu_and_memory() {
    let (c, _server) = cluster();
    c.apply(PODS);
    c.wait_for("pod/burner", "{.status.phase}", "Running");
    c.wait_for("pod/idle", "{.status.phase}", "Running");

    // The burner uses about its limit once two scrapes have seen it.
    let kubectl = c.kubectl.clone();
    let table = poll(&c, &kubectl, &["top", "pod", "burner"], |out| {
        row(out, "burner").is_some_and(|r| millicores(&r[1]) >= 150)
    });
    let burner = row(&table, "burner").unwrap();
    assert!(
        millicores(&burner[1]) <= 400,
        "over the 300m limit: {table}"
    );

    // Every namespace, per container: the idle pod is there and nearly idle.
    let all = poll(
        &c,
        &kubectl,
        &["top", "pods", "-A", "--containers"],
        |out| row(out, "idle").is_some() && row(out, "burner").is_some(),
    );
    assert!(all.lines().next().unwrap().contains("NAMESPACE"), "{all}");
    let spin = row(&all, "spin").unwrap();
    assert_eq!(&spin[..3], &["default", "burner", "spin"], "{all}");
    let idle = row(&all, "idle").unwrap();
    assert!(millicores(&idle[3]) < 50, "the idle pod is busy: {all}");

    // The node: the burner's cpu at least, some memory, percentages of allocatable.
    let nodes = c.kubectl_ok(&["top", "nodes"]);
    let node = row(&nodes, "node-a").unwrap_or_else(|| panic!("{nodes}"));
    assert!(millicores(&node[1]) >= 150, "{nodes}");
    assert!(node[2].ends_with('%') && node[4].ends_with('%'), "{nodes}");
    assert!(bytes(&node[3]) > 0, "{nodes}");

    // The raw API: a PodMetrics with its window, selected by label; discovery lists it.
    let raw = c.kubectl_ok(&[
        "get",
        "--raw",
        "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods?labelSelector=app%3Dburner",
    ]);
    let list: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(list["kind"], "PodMetricsList");
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{raw}");
    assert_eq!(list["items"][0]["metadata"]["labels"]["app"], "burner");
    assert!(list["items"][0]["window"].as_str().unwrap().ends_with('s'));
    // A shell's working set: more than nothing, far less than its 64Mi limit (kubectl top
    // rounds it to Mi).
    let memory = bytes(
        list["items"][0]["containers"][0]["usage"]["memory"]
            .as_str()
            .unwrap(),
    );
    assert!(memory > 0 && memory < 64 << 20, "memory: {raw}");
    let resources = c.kubectl_ok(&["api-resources", "--api-group", "metrics.k8s.io"]);
    assert!(
        resources.contains("PodMetrics") && resources.contains("NodeMetrics"),
        "{resources}"
    );
    let missing = c.kubectl(&["get", "--raw", "/apis/metrics.k8s.io/v1beta1/nodes/nowhere"]);
    assert!(!missing.status.success());

    // kubectl 1.27 reads the same API.
    let old = poll(&c, &kubectl_127(), &["top", "pod", "burner"], |out| {
        row(out, "burner").is_some()
    });
    assert!(millicores(&row(&old, "burner").unwrap()[1]) >= 150, "{old}");

    // The view role can read metrics; a user without it cannot.
    let can = |user: &str| {
        c.kubectl(&["auth", "can-i", "list", "pods.metrics.k8s.io", "--as", user])
            .stdout
    };
    c.kubectl_ok(&[
        "create",
        "rolebinding",
        "viewer",
        "--clusterrole=view",
        "--user=viewer",
    ]);
    assert_eq!(String::from_utf8_lossy(&can("viewer")).trim(), "yes");
    assert_eq!(String::from_utf8_lossy(&can("stranger")).trim(), "no");
}

/// A Deployment of one cpu-burning pod requesting 100m.
const DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: burn}
spec:
  replicas: 1
  selector: {matchLabels: {app: burn}}
  template:
    metadata: {labels: {app: burn}}
    spec:
      containers:
      - name: spin
        image: busybox
        imagePullPolicy: Never
        command: ["sh", "-c", "while :; do :; done"]
        resources:
          requests: {cpu: 100m}
          limits: {cpu: 200m}
"#;

#[test]
fn kubectl_autoscale_scales_a_busy_deployment_up() {
    let (c, _server) = cluster();
    c.apply(DEPLOYMENT);
    c.wait_for("deployment/burn", "{.status.readyReplicas}", "1");
    c.kubectl_ok(&[
        "autoscale",
        "deployment",
        "burn",
        "--cpu-percent=50",
        "--min=1",
        "--max=3",
    ]);

    // ~200% of the request against 50%: ceil(1 * 4) = 4, held to --max=3.
    c.wait_until("deployment/burn", "{.spec.replicas}", 120, |r| r == "3");
    let kubectl = c.kubectl.clone();
    let table = poll(&c, &kubectl, &["get", "hpa", "burn"], |out| {
        out.contains("/50%") && !out.contains("<unknown>")
    });
    let cols = row(&table, "burn").unwrap();
    // NAME REFERENCE TARGETS(cpu: 190%/50%) MINPODS MAXPODS REPLICAS AGE
    let targets = cols.iter().find(|c| c.ends_with("/50%")).unwrap();
    let current: u64 = targets.split('%').next().unwrap().parse().unwrap();
    assert!(current > 50, "{table}");
    assert!(
        table.contains("cpu: "),
        "kubectl 1.33 names the resource: {table}"
    );
    assert_eq!(
        c.jsonpath(
            "hpa/burn",
            "{.status.conditions[?(@.type==\"ScalingActive\")].reason}"
        ),
        "ValidMetricFound"
    );
    let limited = c.jsonpath(
        "hpa/burn",
        "{.status.conditions[?(@.type==\"ScalingLimited\")].reason}",
    );
    assert!(
        ["TooManyReplicas", "ScaleUpLimit", "DesiredWithinRange"].contains(&limited.as_str()),
        "{limited}"
    );
    assert!(!c.jsonpath("hpa/burn", "{.status.lastScaleTime}").is_empty());
    let events = c.kubectl_ok(&[
        "get",
        "events",
        "--field-selector",
        "reason=SuccessfulRescale",
    ]);
    assert!(
        events.contains("New size: 3") || events.contains("New size:"),
        "{events}"
    );
    // The same object through autoscaling/v1.
    let v1 = c.jsonpath(
        "horizontalpodautoscalers.v1.autoscaling/burn",
        "{.status.currentCPUUtilizationPercentage}",
    );
    assert!(v1.parse::<u64>().unwrap_or(0) > 50, "{v1:?}");
    // kubectl 1.27 reads the same table.
    let old = poll(&c, &kubectl_127(), &["get", "hpa", "burn"], |out| {
        out.contains("/50%")
    });
    assert!(row(&old, "burn").is_some(), "{old}");

    // A target far above the load: ceil(3 * 200% / 1000%) = 1, once the 3 of the
    // stabilization window have aged out.
    c.kubectl_ok(&[
        "patch",
        "hpa",
        "burn",
        "--type=merge",
        "-p",
        r#"{"spec":{"metrics":[{"type":"Resource","resource":{"name":"cpu","target":{"type":"Utilization","averageUtilization":1000}}}]}}"#,
    ]);
    c.wait_until("deployment/burn", "{.spec.replicas}", 90, |r| r == "1");
    let events = c.kubectl_ok(&[
        "get",
        "events",
        "--field-selector",
        "reason=SuccessfulRescale",
    ]);
    assert!(events.contains("All metrics below target"), "{events}");
}
