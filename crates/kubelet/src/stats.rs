//! Resource usage of the node, its pods and their containers (the kubelet's
//! `pkg/kubelet/stats`, CRI stats provider): what `/metrics/resource` and `/stats/summary`
//! serve and metrics-server (here, the API server's `metrics.k8s.io`) scrapes.
//!
//! Figures are cumulative cpu time and the memory working set (usage minus the inactive
//! file cache, as cAdvisor defines it); a rate is the scraper's job, from two samples.
//! - a container: its runtime's `ContainerStats` (its own cgroup, v1 or v2);
//! - a pod: its pod cgroup when the kubelet keeps one ([`PodCgroups`]), otherwise the sum
//!   of its containers;
//! - the node: the host ([`HostStats`]; `/proc/stat` and `/proc/meminfo`, which read the
//!   same on cgroup v1 and v2, where the root cgroup has no memory usage file).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::cgroups::PodCgroups;
use crate::cri::{self, ContainerState, ContainerStats, RuntimeService};

/// One reading of cpu and memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// When it was read.
    pub timestamp: DateTime<Utc>,
    /// Cumulative cpu time, nanoseconds.
    pub cpu_usage_nanos: u64,
    /// Memory working set, bytes.
    pub memory_working_set_bytes: u64,
}

impl From<&ContainerStats> for Sample {
    fn from(s: &ContainerStats) -> Sample {
        Sample {
            timestamp: s.timestamp,
            cpu_usage_nanos: s.cpu_usage_nanos,
            memory_working_set_bytes: s.memory_working_set_bytes,
        }
    }
}

/// A running container's usage.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerUsage {
    /// The container's name in the pod spec.
    pub name: String,
    /// When its process started.
    pub start_time: Option<DateTime<Utc>>,
    /// Its usage.
    pub sample: Sample,
}

/// A pod's usage and its running containers'.
#[derive(Debug, Clone, PartialEq)]
pub struct PodUsage {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID.
    pub uid: String,
    /// The pod's own figures.
    pub sample: Sample,
    /// Its running containers, by name.
    pub containers: Vec<ContainerUsage>,
}

/// Everything measured in one pass.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// The node's name.
    pub node_name: String,
    /// The node's usage, when the host could be read.
    pub node: Option<Sample>,
    /// Pods with at least one running container, sorted by namespace and name.
    pub pods: Vec<PodUsage>,
    /// Whether some container's figures could not be read.
    pub scrape_error: bool,
}

/// The host's own figures, behind a trait so that summaries are tested without a host.
pub trait HostStats: Send + Sync {
    /// The node's cumulative cpu time and memory working set.
    fn node(&self) -> Option<Sample>;
}

/// The host as `/proc` shows it.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProcHost;

impl HostStats for ProcHost {
    fn node(&self) -> Option<Sample> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
        // SAFETY: sysconf reads a constant of the C library; no memory is involved.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        Some(Sample {
            timestamp: Utc::now(),
            cpu_usage_nanos: cpu_nanos_from_proc_stat(&stat, u64::try_from(ticks).ok()?)?,
            memory_working_set_bytes: working_set_from_meminfo(&meminfo)?,
        })
    }
}

/// The cpu time spent outside idle and iowait in `/proc/stat`'s `cpu` line, nanoseconds.
pub fn cpu_nanos_from_proc_stat(stat: &str, ticks_per_second: u64) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is within user).
    let busy: u64 = [0, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|i| fields.get(*i))
        .sum();
    (ticks_per_second > 0).then(|| busy.saturating_mul(1_000_000_000 / ticks_per_second))
}

/// The node's working set from `/proc/meminfo`: memory in use (total minus free) minus
/// the inactive file cache, bytes.
pub fn working_set_from_meminfo(meminfo: &str) -> Option<u64> {
    let field = |name: &str| -> Option<u64> {
        meminfo.lines().find_map(|l| {
            let rest = l.strip_prefix(name)?.strip_prefix(':')?;
            rest.split_whitespace().next()?.parse::<u64>().ok()
        })
    };
    let kib = field("MemTotal")?
        .saturating_sub(field("MemFree")?)
        .saturating_sub(field("Inactive(file)").unwrap_or(0));
    Some(kib.saturating_mul(1024))
}

/// Measures the node, its pods and their running containers.
pub fn summarize(
    node_name: &str,
    runtime: &dyn RuntimeService,
    pod_cgroups: Option<&PodCgroups>,
    host: &dyn HostStats,
) -> Summary {
    let mut scrape_error = false;
    let containers = match runtime.list_containers(&BTreeMap::new()) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("listing containers for their usage: {e}");
            scrape_error = true;
            Vec::new()
        }
    };
    let mut pods: BTreeMap<(String, String), PodUsage> = BTreeMap::new();
    for c in containers
        .iter()
        .filter(|c| c.state == ContainerState::Running)
    {
        let stats = match runtime.container_stats(&c.id) {
            Ok(Some(stats)) => stats,
            Ok(None) => continue,
            Err(e) => {
                tracing::debug!("usage of container {}: {e}", c.id);
                scrape_error = true;
                continue;
            }
        };
        let label = |k: &str| c.labels.get(k).cloned().unwrap_or_default();
        let (namespace, name) = (label(cri::POD_NAMESPACE_LABEL), label(cri::POD_NAME_LABEL));
        if name.is_empty() {
            continue;
        }
        let sample = Sample::from(&stats);
        let pod = pods
            .entry((namespace.clone(), name.clone()))
            .or_insert_with(|| PodUsage {
                namespace,
                name,
                uid: label(cri::POD_UID_LABEL),
                sample: Sample {
                    timestamp: sample.timestamp,
                    cpu_usage_nanos: 0,
                    memory_working_set_bytes: 0,
                },
                containers: Vec::new(),
            });
        pod.containers.push(ContainerUsage {
            name: c.name().to_string(),
            start_time: c.started_at,
            sample,
        });
    }
    for pod in pods.values_mut() {
        pod.containers.sort_by(|a, b| a.name.cmp(&b.name));
        let own = pod_cgroups.and_then(|p| p.pod_usage(&pod.uid));
        pod.sample = match own {
            Some(usage) => Sample {
                timestamp: Utc::now(),
                cpu_usage_nanos: usage.cpu_nanos,
                memory_working_set_bytes: usage.memory_bytes,
            },
            None => Sample {
                timestamp: pod
                    .containers
                    .iter()
                    .map(|c| c.sample.timestamp)
                    .max()
                    .unwrap_or_else(Utc::now),
                cpu_usage_nanos: pod
                    .containers
                    .iter()
                    .map(|c| c.sample.cpu_usage_nanos)
                    .sum(),
                memory_working_set_bytes: pod
                    .containers
                    .iter()
                    .map(|c| c.sample.memory_working_set_bytes)
                    .sum(),
            },
        };
    }
    Summary {
        node_name: node_name.to_string(),
        node: host.node(),
        pods: pods.into_values().collect(),
        scrape_error,
    }
}

/// A label value in the text format: backslash, quote and newline escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn seconds(nanos: u64) -> f64 {
    nanos as f64 / 1e9
}

/// `/metrics/resource`: the kubelet's resource metrics in the Prometheus text format, each
/// sample with the time it was read (milliseconds). Written by hand: per-sample timestamps,
/// which scrapers need to compute rates, are not something prometheus-client encodes.
pub fn resource_metrics_text(summary: &Summary) -> String {
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, samples: Vec<(String, String, i64)>| {
        let _ = writeln!(out, "# HELP {name} [STABLE] {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, value, ts) in samples {
            let _ = writeln!(out, "{name}{labels} {value} {ts}");
        }
    };
    let container_labels = |pod: &PodUsage, c: &ContainerUsage| {
        format!(
            "{{container=\"{}\",namespace=\"{}\",pod=\"{}\"}}",
            escape(&c.name),
            escape(&pod.namespace),
            escape(&pod.name)
        )
    };
    let pod_labels = |pod: &PodUsage| {
        format!(
            "{{namespace=\"{}\",pod=\"{}\"}}",
            escape(&pod.namespace),
            escape(&pod.name)
        )
    };
    let per_container = |f: &dyn Fn(&ContainerUsage) -> Option<String>| {
        summary
            .pods
            .iter()
            .flat_map(|p| p.containers.iter().map(move |c| (p, c)))
            .filter_map(|(p, c)| {
                f(c).map(|v| {
                    (
                        container_labels(p, c),
                        v,
                        c.sample.timestamp.timestamp_millis(),
                    )
                })
            })
            .collect::<Vec<_>>()
    };
    family(
        "container_cpu_usage_seconds_total",
        "counter",
        "Cumulative cpu time consumed by the container in core-seconds",
        per_container(&|c| Some(seconds(c.sample.cpu_usage_nanos).to_string())),
    );
    family(
        "container_memory_working_set_bytes",
        "gauge",
        "Current working set of the container in bytes",
        per_container(&|c| Some(c.sample.memory_working_set_bytes.to_string())),
    );
    family(
        "container_start_time_seconds",
        "gauge",
        "Start time of the container since unix epoch in seconds",
        per_container(&|c| c.start_time.map(|t| t.timestamp().to_string())),
    );
    let node: Vec<_> = summary.node.iter().collect();
    family(
        "node_cpu_usage_seconds_total",
        "counter",
        "Cumulative cpu time consumed by the node in core-seconds",
        node.iter()
            .map(|n| {
                let v = seconds(n.cpu_usage_nanos).to_string();
                (String::new(), v, n.timestamp.timestamp_millis())
            })
            .collect(),
    );
    family(
        "node_memory_working_set_bytes",
        "gauge",
        "Current working set of the node in bytes",
        node.iter()
            .map(|n| {
                let v = n.memory_working_set_bytes.to_string();
                (String::new(), v, n.timestamp.timestamp_millis())
            })
            .collect(),
    );
    let per_pod = |f: &dyn Fn(&Sample) -> String| {
        summary
            .pods
            .iter()
            .map(|p| {
                (
                    pod_labels(p),
                    f(&p.sample),
                    p.sample.timestamp.timestamp_millis(),
                )
            })
            .collect::<Vec<_>>()
    };
    family(
        "pod_cpu_usage_seconds_total",
        "counter",
        "Cumulative cpu time consumed by the pod in core-seconds",
        per_pod(&|s| seconds(s.cpu_usage_nanos).to_string()),
    );
    family(
        "pod_memory_working_set_bytes",
        "gauge",
        "Current working set of the pod in bytes",
        per_pod(&|s| s.memory_working_set_bytes.to_string()),
    );
    let _ = writeln!(
        out,
        "# HELP resource_scrape_error [STABLE] 1 if there was an error while getting container metrics, 0 otherwise"
    );
    let _ = writeln!(out, "# TYPE resource_scrape_error gauge");
    let _ = writeln!(
        out,
        "resource_scrape_error {}",
        u8::from(summary.scrape_error)
    );
    out
}

fn stats_json(s: &Sample) -> (Value, Value) {
    let time = s
        .timestamp
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    (
        json!({"time": time, "usageCoreNanoSeconds": s.cpu_usage_nanos}),
        json!({"time": time, "workingSetBytes": s.memory_working_set_bytes}),
    )
}

/// `/stats/summary`: the Summary API's cpu and memory figures (`stats.k8s.io/v1alpha1`).
pub fn summary_json(summary: &Summary) -> Value {
    let mut node = json!({"nodeName": summary.node_name});
    if let Some(n) = &summary.node {
        let (cpu, memory) = stats_json(n);
        node["cpu"] = cpu;
        node["memory"] = memory;
    }
    let pods: Vec<Value> = summary
        .pods
        .iter()
        .map(|p| {
            let (cpu, memory) = stats_json(&p.sample);
            let containers: Vec<Value> = p
                .containers
                .iter()
                .map(|c| {
                    let (cpu, memory) = stats_json(&c.sample);
                    let mut v = json!({"name": c.name, "cpu": cpu, "memory": memory});
                    if let Some(t) = c.start_time {
                        v["startTime"] =
                            json!(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
                    }
                    v
                })
                .collect();
            json!({
                "podRef": {"name": p.name, "namespace": p.namespace, "uid": p.uid},
                "cpu": cpu,
                "memory": memory,
                "containers": containers,
            })
        })
        .collect();
    json!({"node": node, "pods": pods})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cri::{ContainerConfig, PodSandboxConfig};
    use crate::fake::{FakeCgroups, FakeRuntime};
    use std::sync::Arc;

    struct FixedHost(Option<Sample>);
    impl HostStats for FixedHost {
        fn node(&self) -> Option<Sample> {
            self.0
        }
    }

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap()
    }

    /// A running container `name` of pod `ns/pod` with these figures; its id.
    fn running(rt: &FakeRuntime, ns: &str, pod: &str, uid: &str, name: &str) -> String {
        let sandbox = rt
            .run_pod_sandbox(&PodSandboxConfig {
                name: pod.into(),
                namespace: ns.into(),
                uid: uid.into(),
                ..Default::default()
            })
            .unwrap();
        let id = rt
            .create_container(
                &sandbox,
                &ContainerConfig {
                    name: name.into(),
                    image: "busybox".into(),
                    labels: cri::pod_labels(pod, ns, uid),
                    ..Default::default()
                },
            )
            .unwrap();
        rt.start_container(&id).unwrap();
        id
    }

    fn stats(ts: i64, cpu: u64, mem: u64) -> ContainerStats {
        ContainerStats {
            timestamp: at(ts),
            cpu_usage_nanos: cpu,
            memory_working_set_bytes: mem,
        }
    }

    #[test]
    fn proc_files_give_the_nodes_cpu_time_and_working_set() {
        let stat = "cpu  100 20 30 1000 50 5 5 10 0 0\ncpu0 1 2 3 4\n";
        // user+nice+system+irq+softirq+steal = 170 ticks of 10ms.
        assert_eq!(cpu_nanos_from_proc_stat(stat, 100), Some(1_700_000_000));
        let meminfo = "MemTotal:  1000 kB\nMemFree:  300 kB\nInactive(file):  200 kB\n";
        assert_eq!(working_set_from_meminfo(meminfo), Some(500 * 1024));
        assert_eq!(working_set_from_meminfo("MemFree: 1 kB\n"), None);
    }

    #[test]
    fn pods_sum_their_containers_without_a_pod_cgroup() {
        let rt = FakeRuntime::default();
        let a = running(&rt, "default", "web", "u1", "app");
        let b = running(&rt, "default", "web", "u1", "sidecar");
        let c = running(&rt, "kube-system", "dns", "u2", "dns");
        rt.set_stats(&a, stats(100, 2_000_000_000, 10 << 20));
        rt.set_stats(&b, stats(101, 500_000_000, 5 << 20));
        // A container the runtime cannot measure is left out, not reported as zero.
        let _ = c;
        let node = Sample {
            timestamp: at(102),
            cpu_usage_nanos: 9_000_000_000,
            memory_working_set_bytes: 1 << 30,
        };
        let summary = summarize("n1", &rt, None, &FixedHost(Some(node)));
        assert_eq!(summary.pods.len(), 1);
        let web = &summary.pods[0];
        assert_eq!(
            (web.namespace.as_str(), web.name.as_str()),
            ("default", "web")
        );
        assert_eq!(web.sample.cpu_usage_nanos, 2_500_000_000);
        assert_eq!(web.sample.memory_working_set_bytes, 15 << 20);
        assert_eq!(web.sample.timestamp, at(101));
        assert_eq!(
            web.containers
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>(),
            vec!["app", "sidecar"]
        );

        let text = resource_metrics_text(&summary);
        assert!(text.contains(
            "container_cpu_usage_seconds_total{container=\"app\",namespace=\"default\",pod=\"web\"} 2 100000\n"
        ), "{text}");
        assert!(text.contains(
            "container_memory_working_set_bytes{container=\"sidecar\",namespace=\"default\",pod=\"web\"} 5242880 101000\n"
        ));
        assert!(text.contains("node_cpu_usage_seconds_total 9 102000\n"));
        assert!(text.contains("node_memory_working_set_bytes 1073741824 102000\n"));
        assert!(text.contains(
            "pod_cpu_usage_seconds_total{namespace=\"default\",pod=\"web\"} 2.5 101000\n"
        ));
        assert!(text.contains("# TYPE pod_memory_working_set_bytes gauge\n"));
        assert!(text.contains("resource_scrape_error 0\n"));

        let json = summary_json(&summary);
        assert_eq!(json["node"]["nodeName"], "n1");
        assert_eq!(
            json["pods"][0]["cpu"]["usageCoreNanoSeconds"],
            2_500_000_000u64
        );
        assert_eq!(
            json["pods"][0]["containers"][1]["memory"]["workingSetBytes"],
            5u64 << 20
        );
    }

    #[test]
    fn a_pod_cgroup_gives_the_pods_own_figures() {
        let dir = tempfile::tempdir().unwrap();
        let tree = Arc::new(FakeCgroups::default());
        let cgroups = PodCgroups::new(
            tree.clone(),
            "/t",
            crate::cgroups::resources::Amounts {
                cpu: 1000,
                memory: 1 << 30,
            },
            dir.path(),
        );
        let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "u1"},
            "spec": {"containers": [{"name": "app"}]},
        }))
        .unwrap();
        let path = cgroups.ensure_pod(&pod).unwrap();
        tree.set_usage(
            &path,
            skiff_runtime::cgroups::Usage {
                memory_bytes: 7 << 20,
                cpu_nanos: 3_000_000_000,
                pids: 2,
            },
        );
        let rt = FakeRuntime::default();
        let a = running(&rt, "default", "web", "u1", "app");
        rt.set_stats(&a, stats(100, 1_000_000_000, 1 << 20));
        let summary = summarize("n1", &rt, Some(&cgroups), &FixedHost(None));
        assert_eq!(summary.pods[0].sample.cpu_usage_nanos, 3_000_000_000);
        assert_eq!(summary.pods[0].sample.memory_working_set_bytes, 7 << 20);
        let text = resource_metrics_text(&summary);
        // No host figures: no node samples, the families are still described.
        assert!(text.contains("# TYPE node_cpu_usage_seconds_total counter\n"));
        assert!(!text.contains("\nnode_cpu_usage_seconds_total "));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
