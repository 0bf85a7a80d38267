//! PodTopologySpread: `topologySpreadConstraints` with `DoNotSchedule` keep the skew of
//! matching pods across topology domains within `maxSkew`; `ScheduleAnyway` constraints
//! score nodes in emptier domains higher.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{Pod, TopologySpreadConstraint};

use super::helpers::selector_matches;
use super::node_affinity::required_matches;
use super::normalize;
use crate::framework::{
    CycleState, FilterPlugin, NodeInfo, NormalizeScorePlugin, Plugin, PreFilterPlugin,
    PreScorePlugin, ScorePlugin, Status,
};

/// The plugin's name.
pub const NAME: &str = "PodTopologySpread";
/// Rejection reason when the skew would grow too large (`ErrReasonConstraintsNotMatch`).
pub const ERR_REASON: &str = "node(s) didn't match pod topology spread constraints";
/// Rejection reason when the node lacks a topology key (`ErrReasonNodeLabelNotMatch`).
pub const ERR_REASON_MISSING_LABEL: &str =
    "node(s) didn't match pod topology spread constraints (missing required label)";

const SCORE_KEY: &str = "PodTopologySpread/score";

/// Spreads pods across topology domains.
pub struct PodTopologySpread;

/// Matching pods per domain value, for one constraint.
struct Counts {
    constraint: TopologySpreadConstraint,
    per_domain: HashMap<String, i64>,
    self_match: i64,
}

struct FilterState(Vec<Counts>);
struct ScoreState(Vec<Counts>);

fn constraints<'a>(pod: &'a Pod, when: &str) -> Vec<&'a TopologySpreadConstraint> {
    pod.spec
        .iter()
        .flat_map(|s| s.topology_spread_constraints.iter().flatten())
        .filter(|c| c.when_unsatisfiable == when)
        .collect()
}

fn count(pod: &Pod, constraints: &[&TopologySpreadConstraint], nodes: &[&NodeInfo]) -> Vec<Counts> {
    let empty = BTreeMap::new();
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("");
    let pod_labels = pod.metadata.labels.as_ref().unwrap_or(&empty);
    constraints
        .iter()
        .map(|c| {
            let mut per_domain: HashMap<String, i64> = HashMap::new();
            for node in nodes {
                let labels = node.labels().unwrap_or(&empty);
                let Some(domain) = labels.get(&c.topology_key) else {
                    continue;
                };
                // nodeAffinityPolicy defaults to Honor: only nodes the pod could land on count.
                if c.node_affinity_policy.as_deref() != Some("Ignore")
                    && !required_matches(pod, labels, node.name())
                {
                    continue;
                }
                let matching = node
                    .pods
                    .values()
                    .filter(|p| {
                        p.metadata.namespace.as_deref().unwrap_or("") == namespace
                            && p.metadata.deletion_timestamp.is_none()
                            && selector_matches(
                                c.label_selector.as_ref(),
                                p.metadata.labels.as_ref().unwrap_or(&empty),
                            )
                    })
                    .count() as i64;
                *per_domain.entry(domain.clone()).or_default() += matching;
            }
            Counts {
                constraint: (*c).clone(),
                per_domain,
                self_match: i64::from(selector_matches(c.label_selector.as_ref(), pod_labels)),
            }
        })
        .collect()
}

impl Plugin for PodTopologySpread {
    fn name(&self) -> &'static str {
        NAME
    }
    fn as_pre_filter(&self) -> Option<&dyn PreFilterPlugin> {
        Some(self)
    }
    fn as_filter(&self) -> Option<&dyn FilterPlugin> {
        Some(self)
    }
    fn as_pre_score(&self) -> Option<&dyn PreScorePlugin> {
        Some(self)
    }
    fn as_score(&self) -> Option<&dyn ScorePlugin> {
        Some(self)
    }
    fn as_normalize_score(&self) -> Option<&dyn NormalizeScorePlugin> {
        Some(self)
    }
}

impl PreFilterPlugin for PodTopologySpread {
    fn pre_filter(&self, state: &mut CycleState, pod: &Pod, nodes: &[&NodeInfo]) -> Status {
        let hard = constraints(pod, "DoNotSchedule");
        if hard.is_empty() {
            return Status::skip();
        }
        state.write(NAME, FilterState(count(pod, &hard, nodes)));
        Status::success()
    }
}

impl FilterPlugin for PodTopologySpread {
    fn filter(&self, state: &CycleState, _: &Pod, node: &NodeInfo) -> Status {
        let Some(FilterState(counts)) = state.read::<FilterState>(NAME) else {
            return Status::success();
        };
        let empty = BTreeMap::new();
        let labels = node.labels().unwrap_or(&empty);
        for c in counts {
            let Some(domain) = labels.get(&c.constraint.topology_key) else {
                return Status::unresolvable(ERR_REASON_MISSING_LABEL);
            };
            let min_match = c.per_domain.values().copied().min().unwrap_or(0);
            let here = c.per_domain.get(domain).copied().unwrap_or(0);
            if here + c.self_match - min_match > i64::from(c.constraint.max_skew) {
                return Status::unschedulable(ERR_REASON);
            }
        }
        Status::success()
    }
}

impl PreScorePlugin for PodTopologySpread {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &Pod,
        nodes: &[&NodeInfo],
        _all: &[&NodeInfo],
    ) -> Status {
        let soft = constraints(pod, "ScheduleAnyway");
        if soft.is_empty() {
            return Status::skip();
        }
        state.write(SCORE_KEY, ScoreState(count(pod, &soft, nodes)));
        Status::success()
    }
}

impl ScorePlugin for PodTopologySpread {
    fn score(&self, state: &CycleState, _: &Pod, node: &NodeInfo) -> Result<i64, Status> {
        let Some(ScoreState(counts)) = state.read::<ScoreState>(SCORE_KEY) else {
            return Ok(0);
        };
        let empty = BTreeMap::new();
        let labels = node.labels().unwrap_or(&empty);
        Ok(counts
            .iter()
            .filter_map(|c| labels.get(&c.constraint.topology_key).map(|d| (c, d)))
            .map(|(c, d)| c.per_domain.get(d).copied().unwrap_or(0))
            .sum())
    }
}

impl NormalizeScorePlugin for PodTopologySpread {
    fn normalize_score(&self, _: &CycleState, _: &Pod, scores: &mut [i64]) -> Status {
        // Fewer matching pods in the node's domains is better.
        normalize(scores, true);
        Status::success()
    }
}
