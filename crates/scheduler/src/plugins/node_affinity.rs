//! NodeAffinity: `spec.nodeSelector` and required node affinity terms filter; preferred
//! terms score by their weights.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{NodeSelectorTerm, Pod};

use super::helpers::term_matches;
use super::normalize;
use crate::framework::{
    CycleState, FilterPlugin, NodeInfo, NormalizeScorePlugin, Plugin, PreFilterPlugin, ScorePlugin,
    Status,
};

/// The plugin's name.
pub const NAME: &str = "NodeAffinity";
/// Rejection reason (`ErrReasonPod`).
pub const ERR_REASON: &str = "node(s) didn't match Pod's node affinity/selector";
/// Rejection reason when the terms name no node in common (`errReasonConflict`).
pub const ERR_REASON_CONFLICT: &str = "pod affinity terms conflict";

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

/// The only nodes the required terms allow, when every term names its nodes with
/// `matchFields: metadata.name In [...]` (as DaemonSet pods do): the union over the terms
/// (they are ORed) of the intersection within each (its requirements are ANDed). `None`
/// when some term does not restrict by name, so any node may match.
pub fn named_nodes(terms: &[NodeSelectorTerm]) -> Option<BTreeSet<String>> {
    let mut union = BTreeSet::new();
    for term in terms {
        let mut names: Option<BTreeSet<String>> = None;
        for r in term.match_fields.iter().flatten() {
            if r.key != "metadata.name" || r.operator != "In" {
                continue;
            }
            let listed: BTreeSet<String> = r.values.iter().flatten().cloned().collect();
            names = Some(match names {
                None => listed,
                Some(before) => before.intersection(&listed).cloned().collect(),
            });
        }
        union.extend(names?);
    }
    Some(union)
}

impl Plugin for NodeAffinity {
    fn name(&self) -> &'static str {
        NAME
    }
    fn as_pre_filter(&self) -> Option<&dyn PreFilterPlugin> {
        Some(self)
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

impl PreFilterPlugin for NodeAffinity {
    /// Skips Filter for pods without a node selector or required terms, and narrows the
    /// cycle to the named nodes (`PreFilterResult`), so a DaemonSet pod is filtered against
    /// its one node instead of every node of the cluster.
    fn pre_filter(&self, state: &mut CycleState, pod: &Pod, _: &[&NodeInfo]) -> Status {
        let spec = pod.spec.as_ref();
        let selector = spec
            .and_then(|s| s.node_selector.as_ref())
            .filter(|s| !s.is_empty());
        let required = spec
            .and_then(|s| s.affinity.as_ref())
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            });
        let Some(required) = required else {
            return if selector.is_some() {
                Status::success()
            } else {
                Status::skip()
            };
        };
        if required.node_selector_terms.is_empty() {
            return Status::success();
        }
        match named_nodes(&required.node_selector_terms) {
            None => {}
            Some(names) if names.is_empty() => return Status::unresolvable(ERR_REASON_CONFLICT),
            Some(names) => state.set_pre_filter_result(names),
        }
        Status::success()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::Code;
    use serde_json::{json, Value};

    fn pod(affinity: Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "d"},
            "spec": {"affinity": {"nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": affinity}}},
                "containers": [{"name": "c"}]}}))
        .unwrap()
    }

    fn names(pod: &Pod) -> (Code, Option<Vec<String>>) {
        let mut state = CycleState::default();
        let framework = crate::framework::Framework::new(vec![crate::framework::Enabled {
            plugin: std::sync::Arc::new(NodeAffinity),
            weight: 2,
        }]);
        let status = framework.run_pre_filter(&mut state, pod, &[]);
        let names = state
            .pre_filter_nodes()
            .map(|n| n.iter().cloned().collect());
        (status.code, names)
    }

    fn field(values: &[&str]) -> Value {
        json!({"key": "metadata.name", "operator": "In", "values": values})
    }

    #[test]
    fn pre_filter_narrows_to_the_nodes_named_by_match_fields() {
        // One DaemonSet-style term: only its node.
        let daemon = pod(json!([{"matchFields": [field(&["n7"])]}]));
        assert_eq!(names(&daemon), (Code::Success, Some(vec!["n7".to_owned()])));
        // Terms are ORed (union), requirements within a term ANDed (intersection).
        let two = pod(json!([
            {"matchFields": [field(&["a", "b"]), field(&["b", "c"])]},
            {"matchFields": [field(&["d"])]}]));
        assert_eq!(
            names(&two),
            (Code::Success, Some(vec!["b".to_owned(), "d".to_owned()]))
        );
        // A term without a name requirement lets any node match.
        let open = pod(json!([
            {"matchFields": [field(&["a"])]},
            {"matchExpressions": [{"key": "zone", "operator": "Exists"}]}]));
        assert_eq!(names(&open), (Code::Success, None));
        // Requirements naming disjoint nodes match nothing.
        let conflict = pod(json!([{"matchFields": [field(&["a"]), field(&["b"])]}]));
        assert_eq!(names(&conflict).0, Code::UnschedulableAndUnresolvable);
        // Nothing to check: Filter is skipped.
        let plain: Pod = serde_json::from_value(json!({"spec": {"containers": []}})).unwrap();
        assert_eq!(names(&plain), (Code::Success, None));
        let mut state = CycleState::default();
        assert_eq!(
            NodeAffinity.pre_filter(&mut state, &plain, &[]).code,
            Code::Skip
        );
    }
}
