//! NodeAffinity: `spec.nodeSelector` and required node affinity terms filter; preferred
//! terms score by their weights.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;

use super::helpers::term_matches;
use super::normalize;
use crate::framework::{
    CycleState, FilterPlugin, NodeInfo, NormalizeScorePlugin, Plugin, ScorePlugin, Status,
};

/// The plugin's name.
pub const NAME: &str = "NodeAffinity";
/// Rejection reason (`ErrReasonPod`).
pub const ERR_REASON: &str = "node(s) didn't match Pod's node affinity/selector";

/// Filters and scores by node labels.
pub struct NodeAffinity;

/// Whether the node satisfies the pod's nodeSelector and required affinity
/// (`RequiredNodeAffinity.Match`); the DaemonSet controller will use this too.
pub fn required_matches(pod: &Pod, labels: &BTreeMap<String, String>, node_name: &str) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return true;
    };
    let selector_ok = spec
        .node_selector
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    if !selector_ok {
        return false;
    }
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    match required {
        None => true,
        Some(selector) => selector
            .node_selector_terms
            .iter()
            .any(|t| term_matches(t, labels, node_name)),
    }
}

impl Plugin for NodeAffinity {
    fn name(&self) -> &'static str {
        NAME
    }
    fn as_filter(&self) -> Option<&dyn FilterPlugin> {
        Some(self)
    }
    fn as_score(&self) -> Option<&dyn ScorePlugin> {
        Some(self)
    }
    fn as_normalize_score(&self) -> Option<&dyn NormalizeScorePlugin> {
        Some(self)
    }
}

impl FilterPlugin for NodeAffinity {
    fn filter(&self, _: &CycleState, pod: &Pod, node: &NodeInfo) -> Status {
        let empty = BTreeMap::new();
        if required_matches(pod, node.labels().unwrap_or(&empty), node.name()) {
            Status::success()
        } else {
            Status::unresolvable(ERR_REASON)
        }
    }
}

impl ScorePlugin for NodeAffinity {
    fn score(&self, _: &CycleState, pod: &Pod, node: &NodeInfo) -> Result<i64, Status> {
        let empty = BTreeMap::new();
        let labels = node.labels().unwrap_or(&empty);
        let preferred = pod
            .spec
            .as_ref()
            .and_then(|s| s.affinity.as_ref())
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            });
        Ok(preferred
            .into_iter()
            .flatten()
            .filter(|t| term_matches(&t.preference, labels, node.name()))
            .map(|t| i64::from(t.weight))
            .sum())
    }
}

impl NormalizeScorePlugin for NodeAffinity {
    fn normalize_score(&self, _: &CycleState, _: &Pod, scores: &mut [i64]) -> Status {
        normalize(scores, false);
        Status::success()
    }
}
