//! Prometheus metrics of the API server, served at `/metrics` in the text exposition
//! format Prometheus scrapes, with kube-apiserver's metric and label names so existing
//! dashboards and alerts apply.

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::request::RequestInfo;

/// The labels of a request counter (`apiserver_request_total`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    verb: String,
    group: String,
    version: String,
    resource: String,
    subresource: String,
    scope: String,
    component: String,
    code: String,
}

/// The labels of a latency histogram (`apiserver_request_duration_seconds`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LatencyLabels {
    verb: String,
    group: String,
    version: String,
    resource: String,
    subresource: String,
    scope: String,
    component: String,
}

/// The labels of a stored-object gauge (`apiserver_storage_objects`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResourceLabels {
    resource: String,
}

/// Request latency buckets, as kube-apiserver's (seconds).
const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0,
    10.0, 15.0, 20.0, 30.0, 45.0, 60.0,
];

/// The server's metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<LatencyLabels, Histogram>,
    inflight: Family<Vec<(String, String)>, Gauge>,
    objects: Family<ResourceLabels, Gauge>,
    resident_memory: Gauge,
    /// Serialises encoding (the registry is read while gauges are refreshed).
    encoding: Mutex<()>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "apiserver_request",
            "Counter of apiserver requests broken out for each verb, dry run value, group, version, resource, scope, component, and HTTP response code",
            requests.clone(),
        );
        let latency = Family::<LatencyLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(LATENCY_BUCKETS.iter().copied())
        });
        registry.register(
            "apiserver_request_duration_seconds",
            "Response latency distribution in seconds for each verb, group, version, resource, subresource, scope and component",
            latency.clone(),
        );
        let inflight = Family::<Vec<(String, String)>, Gauge>::default();
        registry.register(
            "apiserver_current_inflight_requests",
            "Maximal number of currently used inflight request limit of this apiserver per request kind in last second",
            inflight.clone(),
        );
        let objects = Family::<ResourceLabels, Gauge>::default();
        registry.register(
            "apiserver_storage_objects",
            "Number of stored objects at the time of last check split by kind",
            objects.clone(),
        );
        let resident_memory = Gauge::default();
        registry.register(
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            resident_memory.clone(),
        );
        let start_time: Gauge = Gauge::default();
        registry.register(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds",
            start_time.clone(),
        );
        start_time.set(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0),
        );
        Metrics {
            registry,
            requests,
            latency,
            inflight,
            objects,
            resident_memory,
            encoding: Mutex::new(()),
        }
    }

    /// Counts a request that is starting; the guard counts it done when dropped.
    pub fn start(&self, mutating: bool) -> Inflight<'_> {
        let kind = if mutating { "mutating" } else { "readOnly" };
        let gauge = self
            .inflight
            .get_or_create(&vec![("request_kind".to_owned(), kind.to_owned())])
            .clone();
        gauge.inc();
        Inflight {
            gauge,
            _metrics: self,
        }
    }

    /// Records a served request: its attributes, HTTP code and latency (watches count when
    /// their stream starts, as kube-apiserver reports them separately).
    pub fn observe(&self, info: &RequestInfo, code: u16, elapsed: Duration) {
        let verb = kubernetes_verb(info);
        let scope = if !info.is_resource {
            ""
        } else if !info.name.is_empty() {
            "resource"
        } else if !info.namespace.is_empty() {
            "namespace"
        } else {
            "cluster"
        };
        let latency = LatencyLabels {
            verb: verb.clone(),
            group: info.group.clone(),
            version: info.version.clone(),
            resource: info.resource.clone(),
            subresource: info.subresource.clone(),
            scope: scope.to_owned(),
            component: "apiserver".to_owned(),
        };
        self.requests
            .get_or_create(&RequestLabels {
                verb: latency.verb.clone(),
                group: latency.group.clone(),
                version: latency.version.clone(),
                resource: latency.resource.clone(),
                subresource: latency.subresource.clone(),
                scope: latency.scope.clone(),
                component: latency.component.clone(),
                code: code.to_string(),
            })
            .inc();
        if verb != "WATCH" {
            self.latency
                .get_or_create(&latency)
                .observe(elapsed.as_secs_f64());
        }
    }

    /// Sets the number of stored objects of a resource (`pods`, `deployments.apps`).
    pub fn set_stored_objects(&self, resource: &str, count: u64) {
        self.objects
            .get_or_create(&ResourceLabels {
                resource: resource.to_owned(),
            })
            .set(count as i64);
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let _guard = self.encoding.lock().unwrap_or_else(|e| e.into_inner());
        self.resident_memory.set(resident_memory_bytes() as i64);
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            return String::new();
        }
        to_prometheus_text(&out)
    }
}

/// A request in flight; counted done when dropped.
pub struct Inflight<'a> {
    gauge: Gauge,
    _metrics: &'a Metrics,
}

impl Drop for Inflight<'_> {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// OpenMetrics text as Prometheus' classic text format (what kube-apiserver serves): a
/// counter's HELP and TYPE name its `_total` samples, and no `# EOF` terminator.
fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: Vec<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" {
            continue;
        }
        let header = ["# HELP ", "# TYPE "].into_iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(&name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        out.push_str(header.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

/// The verb kube-apiserver reports: the HTTP method for writes (POST, PUT, PATCH, DELETE),
/// GET, LIST and WATCH for reads.
fn kubernetes_verb(info: &RequestInfo) -> String {
    if !info.is_resource {
        return "GET".to_owned();
    }
    match info.verb.as_str() {
        "create" => "POST",
        "update" => "PUT",
        "patch" => "PATCH",
        "delete" | "deletecollection" => "DELETE",
        other => return other.to_ascii_uppercase(),
    }
    .to_owned()
}

/// This process's resident set size.
fn resident_memory_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map(|pages| pages * 4096)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::Query;

    #[test]
    fn requests_are_counted_with_kubernetes_labels() {
        let metrics = Metrics::new();
        let info = RequestInfo::parse("GET", "/api/v1/namespaces/default/pods", &Query::default());
        metrics.observe(&info, 200, Duration::from_millis(3));
        metrics.observe(&info, 200, Duration::from_millis(4));
        metrics.set_stored_objects("pods", 7);
        let text = metrics.render();
        assert!(
            text.contains(
                r#"apiserver_request_total{verb="LIST",group="",version="v1",resource="pods",subresource="",scope="namespace",component="apiserver",code="200"} 2"#
            ),
            "{text}"
        );
        assert!(
            text.contains("apiserver_request_duration_seconds_bucket{"),
            "{text}"
        );
        assert!(
            text.contains(r#"apiserver_storage_objects{resource="pods"} 7"#),
            "{text}"
        );
        assert!(text.contains("process_resident_memory_bytes "), "{text}");
        assert!(!text.contains("# EOF"), "{text}");
        assert!(
            text.contains("# TYPE apiserver_request_total counter\n"),
            "{text}"
        );
    }
}
