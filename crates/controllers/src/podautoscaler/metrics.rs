//! Where the autoscaler reads pods' resource usage: the resource metrics API
//! (`metrics.k8s.io/v1beta1` PodMetrics), behind [`MetricsSource`] so that the controller's
//! decisions are tested without a cluster.

use std::collections::BTreeMap;

use futures::future::BoxFuture;
use kube::api::{ApiResource, DynamicObject, ListParams};
use kube::{Api, Client};
use serde_json::Value;

use super::replicas::PodMetric;

/// Reads pods' usage of a resource.
pub trait MetricsSource: Send + Sync {
    /// The usage of `resource` (milli-units, summed over each pod's containers) of the
    /// pods of `namespace` matching the label `selector`, by pod name.
    fn pod_metrics<'a>(
        &'a self,
        namespace: &'a str,
        selector: &'a str,
        resource: &'a str,
    ) -> BoxFuture<'a, Result<BTreeMap<String, PodMetric>, String>>;
}

/// The resource metrics API of the cluster.
#[derive(Clone)]
pub struct ResourceMetricsApi {
    client: Client,
}

impl ResourceMetricsApi {
    /// Reads through `client`.
    pub fn new(client: Client) -> ResourceMetricsApi {
        ResourceMetricsApi { client }
    }
}

impl MetricsSource for ResourceMetricsApi {
    fn pod_metrics<'a>(
        &'a self,
        namespace: &'a str,
        selector: &'a str,
        resource: &'a str,
    ) -> BoxFuture<'a, Result<BTreeMap<String, PodMetric>, String>> {
        Box::pin(async move {
            let resource_type = ApiResource {
                group: "metrics.k8s.io".into(),
                version: "v1beta1".into(),
                api_version: "metrics.k8s.io/v1beta1".into(),
                kind: "PodMetrics".into(),
                plural: "pods".into(),
            };
            let api: Api<DynamicObject> =
                Api::namespaced_with(self.client.clone(), namespace, &resource_type);
            let list = api
                .list(&ListParams::default().labels(selector))
                .await
                .map_err(|e| format!("unable to fetch metrics from resource metrics API: {e}"))?;
            let list = serde_json::to_value(&list).map_err(|e| e.to_string())?;
            Ok(parse_pod_metrics(&list, resource))
        })
    }
}

/// A Go duration (`15s`, `15.5s`, `1m0.5s`, `500ms`) in whole seconds.
fn go_duration_secs(text: &str) -> i64 {
    let mut total = 0.0;
    let mut number = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            number.push(c);
            continue;
        }
        let mut unit = c.to_string();
        if c == 'm' && chars.peek() == Some(&'s') {
            unit.push(chars.next().unwrap_or('s'));
        }
        let n: f64 = number.parse().unwrap_or(0.0);
        number.clear();
        total += n * match unit.as_str() {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            _ => 0.0,
        };
    }
    total.round() as i64
}

/// Each pod's usage of `resource` in a `PodMetricsList`, summed over its containers.
pub fn parse_pod_metrics(list: &Value, resource: &str) -> BTreeMap<String, PodMetric> {
    let items = list
        .get("items")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    items
        .iter()
        .filter_map(|item| {
            let name = item.pointer("/metadata/name")?.as_str()?.to_string();
            let timestamp = item
                .get("timestamp")
                .and_then(Value::as_str)
                .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                .map(|t| t.as_second())
                .unwrap_or(0);
            let window = go_duration_secs(item.get("window").and_then(Value::as_str).unwrap_or(""));
            let containers = item.get("containers").and_then(Value::as_array)?;
            let value = containers
                .iter()
                .filter_map(|c| c.pointer(&format!("/usage/{resource}"))?.as_str())
                .map(skiff_quantity::milli)
                .sum();
            Some((
                name,
                PodMetric {
                    value,
                    timestamp,
                    window,
                },
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_metrics_are_summed_over_containers() {
        let list = serde_json::json!({"items": [
            {"metadata": {"name": "a"}, "timestamp": "2026-01-01T00:00:10Z", "window": "15.5s",
             "containers": [
                {"name": "x", "usage": {"cpu": "250m", "memory": "1Mi"}},
                {"name": "y", "usage": {"cpu": "1500000n", "memory": "1Ki"}}]},
        ]});
        let cpu = parse_pod_metrics(&list, "cpu");
        assert_eq!(cpu["a"].value, 252);
        assert_eq!(cpu["a"].window, 16);
        assert_eq!(cpu["a"].timestamp, 1_767_225_610);
        assert_eq!(parse_pod_metrics(&list, "memory")["a"].value, 1_049_600_000);
        assert_eq!(go_duration_secs("1m0.5s"), 61);
        assert_eq!(go_duration_secs("500ms"), 1);
    }
}
