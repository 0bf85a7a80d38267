//! NodeResourcesFit: the pod's requests must fit in what the node has left; scoring
//! prefers the least (default) or the most allocated nodes.

use k8s_openapi::api::core::v1::Pod;

use crate::framework::{
    non_zero_requests, pod_requests, CycleState, FilterPlugin, NodeInfo, Plugin, PreFilterPlugin,
    Resource, ScorePlugin, Status, MAX_NODE_SCORE,
};

/// The plugin's name.
pub const NAME: &str = "NodeResourcesFit";

/// How NodeResourcesFit scores (`ScoringStrategyType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ScoringStrategy {
    /// Prefer nodes with the most free capacity after placing the pod (spreads).
    #[default]
    LeastAllocated,
    /// Prefer nodes with the least free capacity (packs).
    MostAllocated,
}

/// Filters on free resources and scores by allocation.
pub struct NodeResourcesFit {
    /// The scoring strategy.
    pub strategy: ScoringStrategy,
}

struct PreFilterState(Resource);

/// The reasons a node cannot hold `request` (`Too many pods`, `Insufficient cpu`, ...).
pub fn insufficient(request: &Resource, node: &NodeInfo) -> Vec<String> {
    let mut reasons = Vec::new();
    if node.pods.len() as i64 + 1 > node.allocatable.allowed_pods {
        reasons.push("Too many pods".to_owned());
    }
    let free = |alloc: i64, used: i64| alloc - used;
    if request.milli_cpu > 0
        && request.milli_cpu > free(node.allocatable.milli_cpu, node.requested.milli_cpu)
    {
        reasons.push("Insufficient cpu".to_owned());
    }
    if request.memory > 0 && request.memory > free(node.allocatable.memory, node.requested.memory) {
        reasons.push("Insufficient memory".to_owned());
    }
    if request.ephemeral_storage > 0
        && request.ephemeral_storage
            > free(
                node.allocatable.ephemeral_storage,
                node.requested.ephemeral_storage,
            )
    {
        reasons.push("Insufficient ephemeral-storage".to_owned());
    }
    for (name, amount) in &request.scalar {
        let alloc = node.allocatable.scalar.get(name).copied().unwrap_or(0);
        let used = node.requested.scalar.get(name).copied().unwrap_or(0);
        if *amount > 0 && *amount > alloc - used {
            reasons.push(format!("Insufficient {name}"));
        }
    }
    reasons
}

/// `(requested, allocatable)` of cpu and memory after adding the pod, with scoring defaults.
pub fn scoring_pairs(pod: &Pod, node: &NodeInfo) -> [(i64, i64); 2] {
    let own = non_zero_requests(pod);
    [
        (
            node.non_zero_requested.milli_cpu + own.milli_cpu,
            node.allocatable.milli_cpu,
        ),
        (
            node.non_zero_requested.memory + own.memory,
            node.allocatable.memory,
        ),
    ]
}

impl Plugin for NodeResourcesFit {
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
}

impl PreFilterPlugin for NodeResourcesFit {
    fn pre_filter(&self, state: &mut CycleState, pod: &Pod, _: &[&NodeInfo]) -> Status {
        state.write(NAME, PreFilterState(pod_requests(pod)));
        Status::success()
    }
}

impl FilterPlugin for NodeResourcesFit {
    fn filter(&self, state: &CycleState, pod: &Pod, node: &NodeInfo) -> Status {
        let computed;
        let request = match state.read::<PreFilterState>(NAME) {
            Some(PreFilterState(r)) => r,
            None => {
                computed = pod_requests(pod);
                &computed
            }
        };
        let reasons = insufficient(request, node);
        if reasons.is_empty() {
            Status::success()
        } else {
            Status {
                code: crate::framework::Code::Unschedulable,
                reasons,
                plugin: NAME,
            }
        }
    }
}

impl ScorePlugin for NodeResourcesFit {
    fn score(&self, _: &CycleState, pod: &Pod, node: &NodeInfo) -> Result<i64, Status> {
        // Both resources weigh 1, as in the default `resources` of the scoring strategy.
        let pairs = scoring_pairs(pod, node);
        let mut total = 0;
        for (requested, allocatable) in pairs {
            if allocatable == 0 || requested > allocatable {
                continue;
            }
            total += match self.strategy {
                ScoringStrategy::LeastAllocated => {
                    (allocatable - requested) * MAX_NODE_SCORE / allocatable
                }
                ScoringStrategy::MostAllocated => requested * MAX_NODE_SCORE / allocatable,
            };
        }
        Ok(total / pairs.len() as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn node(cpu: &str, pods: &str) -> NodeInfo {
        let mut info = NodeInfo::default();
        info.set_node(Arc::new(
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "n"},
                "status": {"allocatable": {"cpu": cpu, "memory": "1Gi", "pods": pods}}}))
            .unwrap(),
        ));
        info
    }

    fn pod(cpu: &str) -> Pod {
        serde_json::from_value(serde_json::json!({"spec": {"containers": [
            {"name": "c", "resources": {"requests": {"cpu": cpu}}}]}}))
        .unwrap()
    }

    #[test]
    fn filter_reports_insufficient_resources_and_pod_count() {
        let fit = NodeResourcesFit {
            strategy: ScoringStrategy::LeastAllocated,
        };
        let state = CycleState::default();
        assert!(fit.filter(&state, &pod("1"), &node("2", "10")).is_success());
        let status = fit.filter(&state, &pod("3"), &node("2", "0"));
        assert_eq!(status.reasons, vec!["Too many pods", "Insufficient cpu"]);
    }

    #[test]
    fn least_and_most_allocated_rank_opposite_ways() {
        let (empty, busy) = (node("4", "10"), {
            let mut n = node("4", "10");
            n.add_pod("a/b", Arc::new(pod("2")));
            n
        });
        let state = CycleState::default();
        let least = NodeResourcesFit {
            strategy: ScoringStrategy::LeastAllocated,
        };
        let most = NodeResourcesFit {
            strategy: ScoringStrategy::MostAllocated,
        };
        let p = pod("1");
        assert!(least.score(&state, &p, &empty).unwrap() > least.score(&state, &p, &busy).unwrap());
        assert!(most.score(&state, &p, &empty).unwrap() < most.score(&state, &p, &busy).unwrap());
    }
}
