//! PodTopologySpread: `topologySpreadConstraints` with `DoNotSchedule` keep the skew of
//! matching pods across topology domains within `maxSkew`; `ScheduleAnyway` constraints
//! score nodes in emptier domains higher.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;

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
#[derive(Default)]
pub struct PodTopologySpread {
    /// Matching pods per node, remembered from earlier cycles: each cycle recounts only
    /// the nodes whose pods changed since, instead of every pod in the cluster.
    matching: Mutex<MatchMemo>,
}

/// How many pods each node holds that match one `(namespace, labelSelector)`, by the
/// node's [`NodeInfo::generation`] (a new generation is a changed node, counted again).
#[derive(Default)]
struct MatchMemo(HashMap<String, HashMap<u64, i64>>);

/// Different selectors remembered at most; past that the memo starts over.
const MEMO_SELECTORS: usize = 64;

/// Matching pods per domain value, for one constraint.
struct Counts {
    constraint: TopologySpreadConstraint,
    per_domain: HashMap<String, i64>,
    /// The smallest count of any domain, computed once rather than per filtered node.
    min_match: i64,
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

/// Pods on `node` in `namespace` that `selector` matches and that are not terminating.
fn matching_on(
    node: &NodeInfo,
    namespace: &str,
    selector: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
) -> i64 {
    let empty = BTreeMap::new();
    node.pods
        .values()
        .filter(|p| {
            p.metadata.namespace.as_deref().unwrap_or("") == namespace
                && p.metadata.deletion_timestamp.is_none()
                && selector_matches(selector, p.metadata.labels.as_ref().unwrap_or(&empty))
        })
        .count() as i64
}

impl MatchMemo {
    /// Matching pods per domain of `constraint` over `nodes` that have every key of
    /// `constraints` (`nodeLabelsMatchSpreadConstraints`) and, unless the constraint's
    /// `nodeAffinityPolicy` is `Ignore`, that the pod's required node affinity admits.
    /// Domains without matching pods count 0, so they pull the minimum down.
    fn per_domain(
        &mut self,
        pod: &Pod,
        constraint: &TopologySpreadConstraint,
        constraints: &[&TopologySpreadConstraint],
        nodes: &[&NodeInfo],
    ) -> HashMap<String, i64> {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("");
        let selector = constraint.label_selector.as_ref();
        let key = format!(
            "{namespace}/{}",
            serde_json::to_string(&selector).unwrap_or_default()
        );
        if self.0.len() >= MEMO_SELECTORS && !self.0.contains_key(&key) {
            self.0.clear();
        }
        let memo = self.0.entry(key).or_default();
        let honor_affinity = constraint.node_affinity_policy.as_deref() != Some("Ignore");
        let mut per_domain: HashMap<&str, i64> = HashMap::new();
        for node in nodes {
            let Some(labels) = node.labels() else {
                continue;
            };
            let Some(domain) = labels.get(&constraint.topology_key) else {
                continue;
            };
            if constraints.len() > 1
                && !constraints
                    .iter()
                    .all(|c| labels.contains_key(&c.topology_key))
            {
                continue;
            }
            if honor_affinity && !required_matches(pod, labels, node.name()) {
                continue;
            }
            // Generation 0 is a node built without the accounting methods: never reused.
            let matching = match memo.get(&node.generation) {
                Some(n) if node.generation != 0 => *n,
                _ => {
                    let n = matching_on(node, namespace, selector);
                    if node.generation != 0 {
                        memo.insert(node.generation, n);
                    }
                    n
                }
            };
            *per_domain.entry(domain.as_str()).or_default() += matching;
        }
        // Generations of changed nodes go stale; drop them once they outnumber the live.
        if memo.len() > 2 * nodes.len() + 1024 {
            let live: HashSet<u64> = nodes.iter().map(|n| n.generation).collect();
            memo.retain(|generation, _| live.contains(generation));
        }
        per_domain
            .into_iter()
            .map(|(domain, n)| (domain.to_owned(), n))
            .collect()
    }
}

impl PodTopologySpread {
    fn count(
        &self,
        pod: &Pod,
        constraints: &[&TopologySpreadConstraint],
        nodes: &[&NodeInfo],
    ) -> Vec<Counts> {
        let empty = BTreeMap::new();
        let pod_labels = pod.metadata.labels.as_ref().unwrap_or(&empty);
        let mut memo = self.matching.lock().unwrap_or_else(|e| e.into_inner());
        constraints
            .iter()
            .map(|c| {
                let per_domain = memo.per_domain(pod, c, constraints, nodes);
                Counts {
                    constraint: (*c).clone(),
                    min_match: per_domain.values().copied().min().unwrap_or(0),
                    per_domain,
                    self_match: i64::from(selector_matches(c.label_selector.as_ref(), pod_labels)),
                }
            })
            .collect()
    }
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
        state.write(NAME, FilterState(self.count(pod, &hard, nodes)));
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
            let here = c.per_domain.get(domain).copied().unwrap_or(0);
            if here + c.self_match - c.min_match > i64::from(c.constraint.max_skew) {
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
        state.write(SCORE_KEY, ScoreState(self.count(pod, &soft, nodes)));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::Code;
    use k8s_openapi::api::core::v1::Node;
    use serde_json::json;
    use std::sync::Arc;

    fn node(name: &str, zone: &str, blue_pods: usize) -> NodeInfo {
        let mut info = NodeInfo::default();
        info.set_node(Arc::new(
            serde_json::from_value::<Node>(json!({"metadata": {"name": name,
                "labels": {"zone": zone}}}))
            .unwrap(),
        ));
        for i in 0..blue_pods {
            add(&mut info, &format!("{name}-{i}"), "blue");
        }
        info
    }

    fn add(info: &mut NodeInfo, name: &str, color: &str) {
        let pod: Pod = serde_json::from_value(json!({"metadata": {"name": name,
            "namespace": "d", "labels": {"color": color}},
            "spec": {"nodeName": info.name(), "containers": [{"name": "c"}]}}))
        .unwrap();
        info.add_pod(&format!("d/{name}"), Arc::new(pod));
    }

    fn spreading_pod() -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "new", "namespace": "d",
            "labels": {"color": "blue"}},
            "spec": {"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone",
                "whenUnsatisfiable": "DoNotSchedule",
                "labelSelector": {"matchLabels": {"color": "blue"}}}],
                "containers": [{"name": "c"}]}}))
        .unwrap()
    }

    fn domains(plugin: &PodTopologySpread, nodes: &[&NodeInfo]) -> BTreeMap<String, i64> {
        let pod = spreading_pod();
        let hard = constraints(&pod, "DoNotSchedule");
        let counts = plugin.count(&pod, &hard, nodes);
        counts[0].per_domain.clone().into_iter().collect()
    }

    #[test]
    fn counts_matching_pods_per_domain_and_filters_by_skew() {
        let (a, mut b, c) = (node("a", "z1", 2), node("b", "z2", 1), node("c", "z1", 0));
        add(&mut b, "red", "red");
        let plugin = PodTopologySpread::default();
        assert_eq!(
            domains(&plugin, &[&a, &b, &c]),
            BTreeMap::from([("z1".to_owned(), 2), ("z2".to_owned(), 1)])
        );
        let pod = spreading_pod();
        let mut state = CycleState::default();
        assert!(plugin
            .pre_filter(&mut state, &pod, &[&a, &b, &c])
            .is_success());
        // z1 has 2, z2 has 1: one more in z1 makes the skew 2 > maxSkew 1.
        assert_eq!(plugin.filter(&state, &pod, &a).code, Code::Unschedulable);
        assert!(plugin.filter(&state, &pod, &b).is_success());
    }

    #[test]
    fn only_nodes_whose_pods_changed_are_counted_again() {
        let (mut a, b) = (node("a", "z1", 2), node("b", "z2", 1));
        let plugin = PodTopologySpread::default();
        assert_eq!(domains(&plugin, &[&a, &b])["z1"], 2);
        // The same generation is the same node state: its count is remembered, so a pod
        // slipped in behind the accounting methods' back is not seen...
        let hidden = a.pods.values().next().unwrap().clone();
        a.pods.insert("d/hidden".into(), hidden);
        assert_eq!(domains(&plugin, &[&a, &b])["z1"], 2);
        // ...while a pod added properly gives the node a new generation, counted anew.
        add(&mut a, "third", "blue");
        assert_eq!(domains(&plugin, &[&a, &b])["z1"], 4);
        a.remove_pod("d/third");
        assert_eq!(domains(&plugin, &[&a, &b])["z1"], 3);
        assert_eq!(domains(&plugin, &[&a, &b])["z2"], 1);
    }
}
