//! Which pods each of the pod garbage collector's sweeps removes, from the caches alone.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};

use crate::pod_util::{is_terminal, phase};

/// The taint an administrator puts on a node that is down for good
/// (`node.kubernetes.io/out-of-service`).
pub const OUT_OF_SERVICE_TAINT: &str = "node.kubernetes.io/out-of-service";

fn node_name(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or("")
}

/// Whether the kubelet evicted the pod (`PodIsEvicted`).
fn is_evicted(pod: &Pod) -> bool {
    phase(pod) == "Failed"
        && pod.status.as_ref().and_then(|s| s.reason.as_deref()) == Some("Evicted")
}

/// The terminated pods (`Succeeded` or `Failed`) beyond `threshold`, in deletion order:
/// evicted pods first, then the oldest by creation, then by name. A threshold of zero
/// or less keeps them all.
pub fn terminated_over_threshold(pods: &[Arc<Pod>], threshold: i32) -> Vec<Arc<Pod>> {
    let Ok(threshold) = usize::try_from(threshold) else {
        return Vec::new();
    };
    if threshold == 0 {
        return Vec::new();
    }
    let mut terminated: Vec<Arc<Pod>> = pods.iter().filter(|p| is_terminal(p)).cloned().collect();
    let excess = terminated.len().saturating_sub(threshold);
    if excess == 0 {
        return Vec::new();
    }
    terminated.sort_by_key(|p| {
        (
            !is_evicted(p),
            p.metadata.creation_timestamp.as_ref().map(|t| t.0),
            p.metadata.name.clone(),
        )
    });
    terminated.truncate(excess);
    terminated
}

/// Names of the nodes pods are bound to that the node cache does not have.
pub fn missing_nodes(pods: &[Arc<Pod>], nodes: &[Arc<Node>]) -> BTreeSet<String> {
    let known: HashSet<&str> = nodes
        .iter()
        .filter_map(|n| n.metadata.name.as_deref())
        .collect();
    pods.iter()
        .map(|p| node_name(p))
        .filter(|n| !n.is_empty() && !known.contains(n))
        .map(str::to_owned)
        .collect()
}

/// The pods bound to one of `gone` (orphans, `gcOrphaned`).
pub fn orphaned(pods: &[Arc<Pod>], gone: &HashSet<String>) -> Vec<Arc<Pod>> {
    pods.iter()
        .filter(|p| gone.contains(node_name(p)))
        .cloned()
        .collect()
}

/// Pods being deleted that were never scheduled: no kubelet will finish their deletion
/// (`gcUnscheduledTerminating`).
pub fn unscheduled_terminating(pods: &[Arc<Pod>]) -> Vec<Arc<Pod>> {
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_some() && node_name(p).is_empty())
        .cloned()
        .collect()
}

/// Pods being deleted on a node that is not Ready and is tainted out of service: its
/// kubelet will not finish their deletion (`gcTerminating`).
pub fn terminating_out_of_service(pods: &[Arc<Pod>], nodes: &[Arc<Node>]) -> Vec<Arc<Pod>> {
    let out_of_service: HashSet<&str> = nodes
        .iter()
        .filter(|n| {
            let ready = n
                .status
                .iter()
                .flat_map(|s| s.conditions.iter().flatten())
                .any(|c| c.type_ == "Ready" && c.status == "True");
            let tainted = n
                .spec
                .iter()
                .flat_map(|s| s.taints.iter().flatten())
                .any(|t| t.key == OUT_OF_SERVICE_TAINT);
            !ready && tainted
        })
        .filter_map(|n| n.metadata.name.as_deref())
        .collect();
    pods.iter()
        .filter(|p| {
            p.metadata.deletion_timestamp.is_some() && out_of_service.contains(node_name(p))
        })
        .cloned()
        .collect()
}

/// Whether deleting the pod first needs its status marked `Failed`: pods nobody else will
/// ever finish would otherwise stay Running or Pending.
pub fn needs_marking(pod: &Pod) -> bool {
    !is_terminal(pod)
}

/// Nodes missing from the cache, each with when it was first seen missing: a node is
/// given [`Quarantine::period`] to show up in the cache before a live read decides it is
/// gone (`quarantineTime`), so a cache that lags does not cost pods.
#[derive(Debug)]
pub struct Quarantine {
    period: Duration,
    since: HashMap<String, Instant>,
}

impl Quarantine {
    /// Quarantines missing nodes for `period`.
    pub fn new(period: Duration) -> Quarantine {
        Quarantine {
            period,
            since: HashMap::new(),
        }
    }

    /// The quarantine period.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// Records the nodes missing now; nodes no longer missing leave quarantine.
    pub fn observe(&mut self, missing: &BTreeSet<String>, now: Instant) {
        self.since.retain(|node, _| missing.contains(node));
        for node in missing {
            self.since.entry(node.clone()).or_insert(now);
        }
    }

    /// The nodes missing for the whole period.
    pub fn expired(&self, now: Instant) -> Vec<String> {
        let mut expired: Vec<String> = self
            .since
            .iter()
            .filter(|(_, since)| now.saturating_duration_since(**since) >= self.period)
            .map(|(node, _)| node.clone())
            .collect();
        expired.sort();
        expired
    }

    /// Takes a node out of quarantine (it exists after all); if it goes missing again
    /// its quarantine starts over.
    pub fn release(&mut self, node: &str) {
        self.since.remove(node);
    }

    /// How long until the next node's quarantine ends, if one has yet to.
    pub fn next_expiry(&self, now: Instant) -> Option<Duration> {
        self.since
            .values()
            .map(|since| *since + self.period)
            .filter(|end| *end > now)
            .map(|end| end - now)
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(value: serde_json::Value) -> Arc<Pod> {
        Arc::new(serde_json::from_value(value).unwrap())
    }

    fn terminated(name: &str, created: &str, phase: &str, reason: Option<&str>) -> Arc<Pod> {
        pod(json!({
            "metadata": {"name": name, "namespace": "default", "creationTimestamp": created},
            "status": {"phase": phase, "reason": reason},
        }))
    }

    fn names(pods: &[Arc<Pod>]) -> Vec<&str> {
        pods.iter()
            .map(|p| p.metadata.name.as_deref().unwrap())
            .collect()
    }

    #[test]
    fn terminated_pods_beyond_the_threshold_go_evicted_then_oldest_first() {
        let pods = vec![
            terminated("new", "2025-01-03T00:00:00Z", "Succeeded", None),
            terminated("old", "2025-01-01T00:00:00Z", "Failed", None),
            terminated("evicted", "2025-01-04T00:00:00Z", "Failed", Some("Evicted")),
            terminated("b-mid", "2025-01-02T00:00:00Z", "Succeeded", None),
            terminated("a-mid", "2025-01-02T00:00:00Z", "Succeeded", None),
            terminated("running", "2024-01-01T00:00:00Z", "Running", None),
        ];
        assert_eq!(
            names(&terminated_over_threshold(&pods, 2)),
            ["evicted", "old", "a-mid"]
        );
        assert!(terminated_over_threshold(&pods, 5).is_empty());
        assert!(terminated_over_threshold(&pods, 0).is_empty());
        assert!(terminated_over_threshold(&pods, -1).is_empty());
    }

    #[test]
    fn pods_on_missing_nodes_and_unscheduled_terminating_pods_are_found() {
        let nodes: Vec<Arc<Node>> = vec![Arc::new(
            serde_json::from_value(json!({"metadata": {"name": "here"}})).unwrap(),
        )];
        let pods = vec![
            pod(json!({"metadata": {"name": "a"}, "spec": {"nodeName": "here", "containers": []}})),
            pod(
                json!({"metadata": {"name": "b"}, "spec": {"nodeName": "ghost", "containers": []}}),
            ),
            pod(json!({"metadata": {"name": "c"}, "spec": {"containers": []}})),
            pod(
                json!({"metadata": {"name": "d", "deletionTimestamp": "2025-01-01T00:00:00Z"},
                "spec": {"containers": []}}),
            ),
        ];
        let missing = missing_nodes(&pods, &nodes);
        assert_eq!(missing, BTreeSet::from(["ghost".to_owned()]));
        let gone = HashSet::from(["ghost".to_owned()]);
        assert_eq!(names(&orphaned(&pods, &gone)), ["b"]);
        assert_eq!(names(&unscheduled_terminating(&pods)), ["d"]);
        assert!(needs_marking(&pods[1]));
    }

    #[test]
    fn terminating_pods_on_out_of_service_nodes_that_are_not_ready_are_found() {
        let node = |name: &str, ready: &str, tainted: bool| -> Arc<Node> {
            let taints = if tainted {
                json!([{"key": OUT_OF_SERVICE_TAINT, "effect": "NoExecute"}])
            } else {
                json!([])
            };
            Arc::new(
                serde_json::from_value(json!({
                    "metadata": {"name": name},
                    "spec": {"taints": taints},
                    "status": {"conditions": [{"type": "Ready", "status": ready}]},
                }))
                .unwrap(),
            )
        };
        let nodes = vec![
            node("down", "False", true),
            node("ready", "True", true),
            node("untainted", "Unknown", false),
        ];
        let terminating = |name: &str, on: &str| {
            pod(
                json!({"metadata": {"name": name, "deletionTimestamp": "2025-01-01T00:00:00Z"},
                "spec": {"nodeName": on, "containers": []}}),
            )
        };
        let pods = vec![
            terminating("a", "down"),
            terminating("b", "ready"),
            terminating("c", "untainted"),
            pod(json!({"metadata": {"name": "d"}, "spec": {"nodeName": "down", "containers": []}})),
        ];
        assert_eq!(names(&terminating_out_of_service(&pods, &nodes)), ["a"]);
    }

    #[test]
    fn missing_nodes_are_quarantined_before_they_count_as_gone() {
        let start = Instant::now();
        let mut quarantine = Quarantine::new(Duration::from_secs(40));
        let ghost = BTreeSet::from(["ghost".to_owned()]);
        quarantine.observe(&ghost, start);
        assert!(quarantine.expired(start).is_empty());
        assert_eq!(quarantine.next_expiry(start), Some(Duration::from_secs(40)));
        let later = start + Duration::from_secs(30);
        quarantine.observe(&ghost, later);
        assert_eq!(quarantine.next_expiry(later), Some(Duration::from_secs(10)));
        let end = start + Duration::from_secs(40);
        assert_eq!(quarantine.expired(end), ["ghost"]);
        assert_eq!(quarantine.next_expiry(end), None);
        // Found after all: a later absence starts over.
        quarantine.release("ghost");
        quarantine.observe(&ghost, end);
        assert!(quarantine.expired(end).is_empty());
        // No pods on it any more: out of quarantine.
        quarantine.observe(&BTreeSet::new(), end);
        assert_eq!(quarantine.next_expiry(end), None);
    }
}
