//! DefaultPreemption (PostFilter): when no node fits, works out on which nodes evicting
//! lower-priority pods would help. Evicting victims is not implemented yet, so it only
//! produces kube-scheduler's `preemption: ...` message.

use k8s_openapi::api::core::v1::Pod;

use crate::framework::{
    Code, CycleState, Diagnosis, FitError, Framework, NodeInfo, Plugin, PostFilterPlugin, Status,
};

/// The plugin's name.
pub const NAME: &str = "DefaultPreemption";
/// Status of a node where the pod was rejected for reasons eviction cannot change.
pub const NOT_HELPFUL: &str = "Preemption is not helpful for scheduling";
/// Status of a node without lower-priority pods.
pub const NO_VICTIMS: &str = "No preemption victims found for incoming pod";

/// Dry-runs preemption.
pub struct DefaultPreemption {
    /// The filters to re-run with victims removed (the profile without PostFilter plugins).
    pub filters: Framework,
}

fn priority(pod: &Pod) -> i32 {
    pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
}

impl Plugin for DefaultPreemption {
    fn name(&self) -> &'static str {
        NAME
    }
    fn as_post_filter(&self) -> Option<&dyn PostFilterPlugin> {
        Some(self)
    }
}

impl PostFilterPlugin for DefaultPreemption {
    fn post_filter(
        &self,
        state: &CycleState,
        pod: &Pod,
        nodes: &[&NodeInfo],
        diagnosis: &Diagnosis,
    ) -> (Option<String>, Status) {
        let spec = pod.spec.as_ref();
        if spec.and_then(|s| s.preemption_policy.as_deref()) == Some("Never") {
            return (
                None,
                Status::unschedulable("preemption: not eligible due to preemptionPolicy=Never."),
            );
        }
        let mut statuses = Vec::new();
        let mut candidates = 0;
        for node in nodes {
            let rejected = diagnosis
                .node_statuses
                .iter()
                .find(|(name, _)| name == node.name())
                .map(|(_, s)| s);
            if rejected.is_some_and(|s| s.code == Code::UnschedulableAndUnresolvable)
                || !diagnosis.pre_filter_msg.is_empty()
            {
                statuses.push((node.name().to_owned(), Status::unresolvable(NOT_HELPFUL)));
                continue;
            }
            let mut without_victims = (*node).clone();
            let victims: Vec<String> = node
                .pods
                .iter()
                .filter(|(_, p)| priority(p) < priority(pod))
                .map(|(k, _)| k.clone())
                .collect();
            if victims.is_empty() {
                statuses.push((node.name().to_owned(), Status::unresolvable(NO_VICTIMS)));
                continue;
            }
            for key in &victims {
                without_victims.remove_pod(key);
            }
            let status = self.filters.run_filter(state, pod, &without_victims);
            if status.is_success() {
                candidates += 1;
            } else {
                statuses.push((node.name().to_owned(), status));
            }
        }
        if candidates > 0 {
            return (
                None,
                Status::unschedulable(format!(
                    "preemption: evicting victims on {candidates} node(s) would help, but preemption is not implemented yet"
                )),
            );
        }
        let fit = FitError {
            num_all_nodes: statuses.len(),
            diagnosis: Diagnosis {
                node_statuses: statuses,
                ..Default::default()
            },
        };
        (None, Status::unschedulable(format!("preemption: {fit}")))
    }
}
