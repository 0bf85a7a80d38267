//! The resource metrics API, `metrics.k8s.io/v1beta1` (`NodeMetrics` as `nodes`,
//! `PodMetrics` as `pods`), served in-process the way metrics-server serves it behind an
//! APIService: every resolution period (`--metric-resolution`, 15s) each node's kubelet
//! is scraped for `/metrics/resource` (through the kubelet client the pod proxy uses),
//! cpu usage is the rate between a series' last two samples (their distance is the
//! `window`), memory the last working set; requests are answered from memory, joined
//! with the nodes' and pods' labels for selectors.
//!
//! Like metrics-server, a container or node appears only once it has two samples, a
//! container whose counter went back (it restarted) starts over, and what a scrape
//! did not return is forgotten.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde_json::{json, Value};

use crate::kinds::{str_at, REGISTRY};
use crate::request::{Query, RequestInfo};
use crate::selector::{FieldSelector, LabelSelector};
use crate::status::{ApiError, ApiResult};
use crate::storage::Storage;

/// The API group.
pub const GROUP: &str = "metrics.k8s.io";
/// Its one version.
pub const VERSION: &str = "v1beta1";
/// How often kubelets are scraped unless [`RESOLUTION_ENV`] says otherwise
/// (metrics-server's `--metric-resolution`).
pub const DEFAULT_RESOLUTION: Duration = Duration::from_secs(15);
/// Environment variable setting the resolution in seconds (`15` or `15s`).
pub const RESOLUTION_ENV: &str = "SKIFF_METRIC_RESOLUTION";

/// The resolution configured through [`RESOLUTION_ENV`].
pub fn resolution() -> Duration {
    std::env::var(RESOLUTION_ENV)
        .ok()
        .and_then(|v| v.trim_end_matches('s').parse::<u64>().ok())
        .filter(|s| *s > 0)
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_RESOLUTION)
}

/// One sample of a series: when, cumulative cpu seconds, working set bytes.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Point {
    /// Milliseconds since the epoch.
    pub timestamp_ms: i64,
    /// Cumulative cpu time, seconds.
    pub cpu_seconds: f64,
    /// Memory working set, bytes.
    pub memory_bytes: u64,
}

/// Usage as served: the cpu rate and memory at `timestamp_ms` over `window_ms`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    /// When the later sample was taken.
    pub timestamp_ms: i64,
    /// Between the two samples.
    pub window_ms: i64,
    /// cpu in nanocores.
    pub cpu_nanocores: u64,
    /// Memory working set, bytes.
    pub memory_bytes: u64,
}

/// The last two samples of a counter.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
struct Series {
    previous: Option<Point>,
    last: Point,
}

impl Series {
    /// The series after `point`: a newer sample moves the last one back; a counter that
    /// went down (a restart) starts over.
    fn next(old: Option<&Series>, point: Point) -> Series {
        match old {
            Some(s) if s.last.timestamp_ms == point.timestamp_ms => *s,
            Some(s)
                if s.last.timestamp_ms < point.timestamp_ms
                    && s.last.cpu_seconds <= point.cpu_seconds =>
            {
                Series {
                    previous: Some(s.last),
                    last: point,
                }
            }
            _ => Series {
                previous: None,
                last: point,
            },
        }
    }

    fn usage(&self) -> Option<Usage> {
        let previous = self.previous?;
        let window_ms = self.last.timestamp_ms - previous.timestamp_ms;
        if window_ms <= 0 {
            return None;
        }
        let cpu =
            (self.last.cpu_seconds - previous.cpu_seconds).max(0.0) / window_ms as f64 * 1e3 * 1e9;
        Some(Usage {
            timestamp_ms: self.last.timestamp_ms,
            window_ms,
            cpu_nanocores: cpu.round() as u64,
            memory_bytes: self.last.memory_bytes,
        })
    }
}

/// One kubelet's `/metrics/resource`, as parsed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeScrape {
    /// The node's own sample.
    pub node: Option<Point>,
    /// Containers' samples by (namespace, pod, container).
    pub containers: BTreeMap<(String, String, String), Point>,
}

/// Parses the kubelet's resource metrics (Prometheus text format, with timestamps).
pub fn parse_resource_metrics(text: &str) -> NodeScrape {
    let mut node = Point::default();
    let (mut node_cpu, mut node_memory) = (false, false);
    let mut containers: BTreeMap<(String, String, String), (Point, bool, bool)> = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, labels, value, timestamp)) = parse_sample(line) else {
            continue;
        };
        let label = |k: &str| labels.get(k).cloned().unwrap_or_default();
        match name.as_str() {
            "node_cpu_usage_seconds_total" => {
                node.cpu_seconds = value;
                node.timestamp_ms = timestamp;
                node_cpu = true;
            }
            "node_memory_working_set_bytes" => {
                node.memory_bytes = value.max(0.0) as u64;
                node_memory = true;
            }
            "container_cpu_usage_seconds_total" | "container_memory_working_set_bytes" => {
                let key = (label("namespace"), label("pod"), label("container"));
                let entry = containers.entry(key).or_default();
                if name.starts_with("container_cpu") {
                    entry.0.cpu_seconds = value;
                    entry.0.timestamp_ms = timestamp;
                    entry.1 = true;
                } else {
                    entry.0.memory_bytes = value.max(0.0) as u64;
                    entry.2 = true;
                }
            }
            _ => {}
        }
    }
    NodeScrape {
        node: (node_cpu && node_memory).then_some(node),
        containers: containers
            .into_iter()
            .filter(|(_, (_, cpu, memory))| *cpu && *memory)
            .map(|(k, (p, _, _))| (k, p))
            .collect(),
    }
}

/// `name{labels} value timestamp` (a missing timestamp is now).
fn parse_sample(line: &str) -> Option<(String, BTreeMap<String, String>, f64, i64)> {
    let name_end = line.find(['{', ' ']).unwrap_or(line.len());
    let name = line[..name_end].to_string();
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(body) = rest.strip_prefix('{') {
        let mut chars = body.char_indices();
        let mut key = String::new();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '}' => break i,
                ',' | ' ' => {}
                '=' => {
                    if chars.next()?.1 != '"' {
                        return None;
                    }
                    let mut value = String::new();
                    loop {
                        match chars.next()?.1 {
                            '"' => break,
                            '\\' => match chars.next()?.1 {
                                'n' => value.push('\n'),
                                other => value.push(other),
                            },
                            other => value.push(other),
                        }
                    }
                    labels.insert(std::mem::take(&mut key), value);
                }
                c => key.push(c),
            }
        };
        rest = &body[end + 1..];
    }
    let mut fields = rest.split_whitespace();
    let value: f64 = fields.next()?.parse().ok()?;
    let timestamp = match fields.next() {
        Some(t) => t.parse().ok()?,
        None => jiff::Timestamp::now().as_millisecond(),
    };
    Some((name, labels, value, timestamp))
}

/// What the scrapes found, kept between them.
#[derive(Debug, Default)]
struct Scraped {
    nodes: BTreeMap<String, Series>,
    /// (namespace, pod) -> container -> series.
    pods: BTreeMap<(String, String), BTreeMap<String, Series>>,
}

/// The metrics the API serves, updated by [`run`].
#[derive(Debug, Default)]
pub struct MetricsStore {
    scraped: RwLock<Scraped>,
}

impl MetricsStore {
    /// Takes in one round of scrapes (`None` for a node whose kubelet did not answer):
    /// what a round did not return is forgotten.
    pub fn record(&self, round: &BTreeMap<String, Option<NodeScrape>>) {
        let mut scraped = self.scraped.write().unwrap_or_else(|e| e.into_inner());
        let mut nodes = BTreeMap::new();
        let mut pods: BTreeMap<(String, String), BTreeMap<String, Series>> = BTreeMap::new();
        for (name, scrape) in round {
            let Some(scrape) = scrape else { continue };
            if let Some(point) = scrape.node {
                nodes.insert(name.clone(), Series::next(scraped.nodes.get(name), point));
            }
            for ((ns, pod, container), point) in &scrape.containers {
                let key = (ns.clone(), pod.clone());
                let old = scraped.pods.get(&key).and_then(|c| c.get(container));
                pods.entry(key)
                    .or_default()
                    .insert(container.clone(), Series::next(old, *point));
            }
        }
        *scraped = Scraped { nodes, pods };
    }

    /// The node's usage, once it has two samples.
    pub fn node(&self, name: &str) -> Option<Usage> {
        let scraped = self.scraped.read().unwrap_or_else(|e| e.into_inner());
        scraped.nodes.get(name)?.usage()
    }

    /// The pod's containers' usage, once every one of them has two samples (the
    /// earliest timestamp and the widest window of its containers).
    pub fn pod(&self, namespace: &str, name: &str) -> Option<(Usage, Vec<(String, Usage)>)> {
        let scraped = self.scraped.read().unwrap_or_else(|e| e.into_inner());
        let containers = scraped
            .pods
            .get(&(namespace.to_string(), name.to_string()))?;
        let usages: Vec<(String, Usage)> = containers
            .iter()
            .map(|(c, s)| s.usage().map(|u| (c.clone(), u)))
            .collect::<Option<_>>()?;
        let pod = Usage {
            timestamp_ms: usages.iter().map(|(_, u)| u.timestamp_ms).min()?,
            window_ms: usages.iter().map(|(_, u)| u.window_ms).max()?,
            cpu_nanocores: usages.iter().map(|(_, u)| u.cpu_nanocores).sum(),
            memory_bytes: usages.iter().map(|(_, u)| u.memory_bytes).sum(),
        };
        Some((pod, usages))
    }
}

/// Scrapes every node's kubelet every `resolution`, forever.
pub async fn run(
    storage: Storage,
    kubelet_tls: Arc<rustls::ClientConfig>,
    store: Arc<MetricsStore>,
    resolution: Duration,
) {
    let Some(nodes_def) = REGISTRY.by_kind("", "v1", "Node") else {
        return;
    };
    let mut tick = tokio::time::interval(resolution);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let nodes = match storage
            .list(&Storage::prefix(nodes_def, None), None, None, None)
            .await
        {
            Ok(page) => page.items,
            Err(e) => {
                tracing::warn!("listing nodes to scrape: {e:?}");
                continue;
            }
        };
        let scrapes = nodes.into_iter().map(|(_, node)| {
            let tls = kubelet_tls.clone();
            async move {
                let name = str_at(&node, "/metadata/name").to_string();
                let scrape = tokio::time::timeout(
                    resolution,
                    crate::handlers::kubelet_get(tls, &node, "/metrics/resource"),
                )
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r);
                match scrape {
                    Ok(body) => (
                        name,
                        Some(parse_resource_metrics(&String::from_utf8_lossy(&body))),
                    ),
                    Err(e) => {
                        tracing::debug!("scraping the kubelet of node {name}: {e}");
                        (name, None)
                    }
                }
            }
        });
        let round: BTreeMap<String, Option<NodeScrape>> = futures::future::join_all(scrapes)
            .await
            .into_iter()
            .collect();
        store.record(&round);
    }
}

// --- Serving -------------------------------------------------------------------------

/// `cpu` as Kubernetes prints a quantity of nanocores (`250m`, `1`, `1234n`).
fn cpu_quantity(nanocores: u64) -> String {
    for (divisor, suffix) in [(1_000_000_000, ""), (1_000_000, "m"), (1_000, "u")] {
        if nanocores % divisor == 0 {
            return format!("{}{suffix}", nanocores / divisor);
        }
    }
    format!("{nanocores}n")
}

/// Bytes as Kubernetes prints a binary quantity (`64Mi`, `1000`).
fn memory_quantity(bytes: u64) -> String {
    let mut value = bytes;
    for suffix in ["Ki", "Mi", "Gi", "Ti", "Pi"] {
        if value == 0 || value % 1024 != 0 {
            break;
        }
        value /= 1024;
        if value % 1024 != 0 || suffix == "Pi" {
            return format!("{value}{suffix}");
        }
    }
    bytes.to_string()
}

/// A window as Go prints a duration (`15.003s`, `1m0.5s`).
fn go_duration(ms: i64) -> String {
    let (minutes, ms) = (ms / 60_000, ms % 60_000);
    let fraction = format!("{:03}", ms % 1000);
    let fraction = fraction.trim_end_matches('0');
    let seconds = if fraction.is_empty() {
        format!("{}s", ms / 1000)
    } else {
        format!("{}.{fraction}s", ms / 1000)
    };
    if minutes > 0 {
        format!("{minutes}m{seconds}")
    } else {
        seconds
    }
}

fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

fn usage_json(u: &Usage) -> Value {
    json!({"cpu": cpu_quantity(u.cpu_nanocores), "memory": memory_quantity(u.memory_bytes)})
}

/// The metadata metrics-server gives a metrics object: the object's name, namespace and
/// labels, created now.
fn metadata(obj: &Value) -> Value {
    let mut meta = json!({
        "name": str_at(obj, "/metadata/name"),
        "creationTimestamp": crate::handlers::now_rfc3339(),
    });
    let namespace = str_at(obj, "/metadata/namespace");
    if !namespace.is_empty() {
        meta["namespace"] = json!(namespace);
    }
    if let Some(labels) = obj.pointer("/metadata/labels") {
        meta["labels"] = labels.clone();
    }
    meta
}

fn node_metrics(store: &MetricsStore, node: &Value) -> Option<Value> {
    let usage = store.node(str_at(node, "/metadata/name"))?;
    Some(json!({
        "kind": "NodeMetrics",
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "metadata": metadata(node),
        "timestamp": rfc3339(usage.timestamp_ms),
        "window": go_duration(usage.window_ms),
        "usage": usage_json(&usage),
    }))
}

fn pod_metrics(store: &MetricsStore, pod: &Value) -> Option<Value> {
    let (usage, containers) = store.pod(
        str_at(pod, "/metadata/namespace"),
        str_at(pod, "/metadata/name"),
    )?;
    let containers: Vec<Value> = containers
        .iter()
        .map(|(name, u)| json!({"name": name, "usage": usage_json(u)}))
        .collect();
    Some(json!({
        "kind": "PodMetrics",
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "metadata": metadata(pod),
        "timestamp": rfc3339(usage.timestamp_ms),
        "window": go_duration(usage.window_ms),
        "containers": containers,
    }))
}

fn not_found(resource: &str, name: &str) -> ApiError {
    ApiError::new(
        404,
        "NotFound",
        format!("{resource}.{GROUP} \"{name}\" not found"),
    )
    .with_details(json!({"name": name, "group": GROUP, "kind": resource}))
}

/// Serves a request below `/apis/metrics.k8s.io/v1beta1` (already authorized).
pub async fn serve(
    store: &MetricsStore,
    storage: &Storage,
    info: &RequestInfo,
    query: &Query,
) -> ApiResult<Value> {
    let (kind, namespaced) = match info.resource.as_str() {
        "nodes" => ("Node", false),
        "pods" => ("Pod", true),
        _ => return Err(ApiError::path_not_found()),
    };
    if info.version != VERSION || !info.subresource.is_empty() {
        return Err(ApiError::path_not_found());
    }
    if !namespaced && !info.namespace.is_empty() {
        return Err(ApiError::path_not_found());
    }
    let def = REGISTRY
        .by_kind("", "v1", kind)
        .ok_or_else(ApiError::path_not_found)?;
    let metrics = |obj: &Value| {
        if namespaced {
            pod_metrics(store, obj)
        } else {
            node_metrics(store, obj)
        }
    };
    match info.verb.as_str() {
        "get" => {
            if namespaced && info.namespace.is_empty() {
                return Err(ApiError::path_not_found());
            }
            let obj = storage
                .get(def, &info.namespace, &info.name)
                .await?
                .map(|(o, _)| o);
            obj.as_ref()
                .and_then(metrics)
                .ok_or_else(|| not_found(&info.resource, &info.name))
        }
        "list" => {
            let labels = LabelSelector::parse(query.get("labelSelector").unwrap_or(""))
                .map_err(|e| ApiError::bad_request(e.to_string()))?;
            let fields = FieldSelector::parse(query.get("fieldSelector").unwrap_or(""), &[])
                .map_err(|e| ApiError::bad_request(e.to_string()))?;
            let namespace = (!info.namespace.is_empty()).then_some(info.namespace.as_str());
            let page = storage
                .list(&Storage::prefix(def, namespace), None, None, None)
                .await?;
            let items: Vec<Value> = page
                .items
                .iter()
                .map(|(_, obj)| obj)
                .filter(|obj| labels.matches(obj) && fields.matches(obj))
                .filter_map(metrics)
                .collect();
            Ok(json!({
                "kind": format!("{kind}MetricsList"),
                "apiVersion": format!("{GROUP}/{VERSION}"),
                "metadata": {},
                "items": items,
            }))
        }
        _ => Err(ApiError::method_not_supported()),
    }
}

// --- Discovery -----------------------------------------------------------------------

/// The group in `/apis` (`APIGroup`).
pub fn api_group() -> Value {
    let version = json!({"groupVersion": format!("{GROUP}/{VERSION}"), "version": VERSION});
    json!({"name": GROUP, "versions": [version], "preferredVersion": version})
}

/// `/apis/metrics.k8s.io/v1beta1` (`APIResourceList`).
pub fn resource_list() -> Value {
    let resource = |name: &str, singular: &str, namespaced: bool, kind: &str| {
        json!({"name": name, "singularName": singular, "namespaced": namespaced,
               "kind": kind, "verbs": ["get", "list"]})
    };
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": format!("{GROUP}/{VERSION}"),
        "resources": [
            resource("nodes", "", false, "NodeMetrics"),
            resource("pods", "", true, "PodMetrics"),
        ],
    })
}

/// The group's entry in the aggregated discovery of `/apis`.
pub fn aggregated_discovery_item() -> Value {
    let resource = |name: &str, scope: &str, kind: &str| {
        json!({
            "resource": name,
            "responseKind": {"group": GROUP, "version": VERSION, "kind": kind},
            "scope": scope,
            "verbs": ["get", "list"],
        })
    };
    json!({
        "metadata": {"name": GROUP, "creationTimestamp": null},
        "versions": [{
            "version": VERSION,
            "resources": [
                resource("nodes", "Cluster", "NodeMetrics"),
                resource("pods", "Namespaced", "PodMetrics"),
            ],
            "freshness": "Current",
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRAPE: &str = r#"# HELP container_cpu_usage_seconds_total [STABLE] Cumulative cpu time
# TYPE container_cpu_usage_seconds_total counter
container_cpu_usage_seconds_total{container="app",namespace="default",pod="web"} 10 1000000
container_memory_working_set_bytes{container="app",namespace="default",pod="web"} 1048576 1000000
container_cpu_usage_seconds_total{container="odd\"name",namespace="default",pod="web"} 1 1000000
container_memory_working_set_bytes{container="odd\"name",namespace="default",pod="web"} 2048 1000000
node_cpu_usage_seconds_total 100 1000500
node_memory_working_set_bytes 2147483648 1000500
resource_scrape_error 0
"#;

    #[test]
    fn the_kubelets_text_is_parsed() {
        let scrape = parse_resource_metrics(SCRAPE);
        assert_eq!(
            scrape.node,
            Some(Point {
                timestamp_ms: 1_000_500,
                cpu_seconds: 100.0,
                memory_bytes: 2 << 30
            })
        );
        let key = |c: &str| ("default".to_string(), "web".to_string(), c.to_string());
        assert_eq!(scrape.containers[&key("app")].memory_bytes, 1 << 20);
        assert_eq!(scrape.containers[&key("odd\"name")].cpu_seconds, 1.0);
    }

    fn round(node: &str, scrape: NodeScrape) -> BTreeMap<String, Option<NodeScrape>> {
        BTreeMap::from([(node.to_string(), Some(scrape))])
    }

    fn scrape_at(ms: i64, cpu: f64, memory: u64) -> NodeScrape {
        NodeScrape {
            node: Some(Point {
                timestamp_ms: ms,
                cpu_seconds: cpu * 4.0,
                memory_bytes: memory * 8,
            }),
            containers: BTreeMap::from([(
                ("default".into(), "web".into(), "app".into()),
                Point {
                    timestamp_ms: ms,
                    cpu_seconds: cpu,
                    memory_bytes: memory,
                },
            )]),
        }
    }

    #[test]
    fn cpu_is_the_rate_between_two_samples() {
        let store = MetricsStore::default();
        store.record(&round("n1", scrape_at(10_000, 1.0, 100)));
        // One sample: no rate yet.
        assert_eq!(store.node("n1"), None);
        assert_eq!(store.pod("default", "web"), None);
        // 0.5 cpu-seconds over 2 seconds: 250m.
        store.record(&round("n1", scrape_at(12_000, 1.5, 4096)));
        let (pod, containers) = store.pod("default", "web").unwrap();
        assert_eq!(pod.cpu_nanocores, 250_000_000);
        assert_eq!(pod.window_ms, 2_000);
        assert_eq!(pod.timestamp_ms, 12_000);
        assert_eq!(containers[0].1.memory_bytes, 4096);
        assert_eq!(store.node("n1").unwrap().cpu_nanocores, 1_000_000_000);
        // A counter that went back (the container restarted) starts over.
        store.record(&round("n1", scrape_at(14_000, 0.1, 4096)));
        assert_eq!(store.pod("default", "web"), None);
        // A node that did not answer is forgotten with its pods.
        store.record(&BTreeMap::from([("n1".to_string(), None)]));
        assert_eq!(store.node("n1"), None);
    }

    #[test]
    fn quantities_and_windows_print_as_kubernetes_does() {
        assert_eq!(cpu_quantity(250_000_000), "250m");
        assert_eq!(cpu_quantity(2_000_000_000), "2");
        assert_eq!(cpu_quantity(1_234), "1234n");
        assert_eq!(cpu_quantity(0), "0");
        assert_eq!(memory_quantity(64 << 20), "64Mi");
        assert_eq!(memory_quantity(1536), "1536");
        assert_eq!(memory_quantity(3 << 10), "3Ki");
        assert_eq!(memory_quantity(0), "0");
        assert_eq!(go_duration(15_000), "15s");
        assert_eq!(go_duration(15_120), "15.12s");
        assert_eq!(go_duration(60_500), "1m0.5s");
    }

    #[test]
    fn discovery_lists_both_resources() {
        assert_eq!(resource_list()["resources"][1]["kind"], "PodMetrics");
        assert_eq!(api_group()["preferredVersion"]["version"], VERSION);
        assert_eq!(
            aggregated_discovery_item()["versions"][0]["resources"][0]["scope"],
            "Cluster"
        );
    }
}
