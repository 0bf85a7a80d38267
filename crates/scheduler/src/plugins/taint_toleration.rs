//! TaintToleration: NoSchedule and NoExecute taints a pod does not tolerate rule a node out;
//! untolerated PreferNoSchedule taints lower its score.

use k8s_openapi::api::core::v1::{Pod, Taint, Toleration};

use super::helpers::{find_untolerated, tolerates};
use super::normalize;
use crate::framework::{
    CycleState, FilterPlugin, NodeInfo, NormalizeScorePlugin, Plugin, ScorePlugin, Status,
};

/// The plugin's name.
pub const NAME: &str = "TaintToleration";

/// Filters and scores by taints.
pub struct TaintToleration;

fn taints(node: &NodeInfo) -> &[Taint] {
    node.node
        .as_ref()
        .and_then(|n| n.spec.as_ref())
        .and_then(|s| s.taints.as_deref())
        .unwrap_or(&[])
}

fn tolerations(pod: &Pod) -> &[Toleration] {
    pod.spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or(&[])
}

impl Plugin for TaintToleration {
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

impl FilterPlugin for TaintToleration {
    fn filter(&self, _: &CycleState, pod: &Pod, node: &NodeInfo) -> Status {
        match find_untolerated(taints(node), tolerations(pod), &["NoSchedule", "NoExecute"]) {
            None => Status::success(),
            Some(t) => Status::unresolvable(format!(
                "node(s) had untolerated taint {{{}: {}}}",
                t.key,
                t.value.as_deref().unwrap_or("")
            )),
        }
    }
}

impl ScorePlugin for TaintToleration {
    fn score(&self, _: &CycleState, pod: &Pod, node: &NodeInfo) -> Result<i64, Status> {
        // Only tolerations that could apply to PreferNoSchedule count.
        let prefer: Vec<&Toleration> = tolerations(pod)
            .iter()
            .filter(|t| {
                matches!(
                    t.effect.as_deref(),
                    None | Some("") | Some("PreferNoSchedule")
                )
            })
            .collect();
        Ok(taints(node)
            .iter()
            .filter(|t| {
                t.effect == "PreferNoSchedule" && !prefer.iter().any(|tol| tolerates(tol, t))
            })
            .count() as i64)
    }
}

impl NormalizeScorePlugin for TaintToleration {
    fn normalize_score(&self, _: &CycleState, _: &Pod, scores: &mut [i64]) -> Status {
        normalize(scores, true);
        Status::success()
    }
}
