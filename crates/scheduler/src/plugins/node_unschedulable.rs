//! NodeUnschedulable: cordoned nodes (`spec.unschedulable`) take only pods tolerating the
//! `node.kubernetes.io/unschedulable:NoSchedule` taint.

use k8s_openapi::api::core::v1::{Pod, Taint};

use super::helpers::tolerates;
use crate::framework::{CycleState, FilterPlugin, NodeInfo, Plugin, Status};

/// The plugin's name.
pub const NAME: &str = "NodeUnschedulable";
/// Rejection reason (`ErrReasonUnschedulable`).
pub const ERR_REASON: &str = "node(s) were unschedulable";

/// Filters cordoned nodes.
pub struct NodeUnschedulable;

impl Plugin for NodeUnschedulable {
    fn name(&self) -> &'static str {
        NAME
    }
    fn as_filter(&self) -> Option<&dyn FilterPlugin> {
        Some(self)
    }
}

impl FilterPlugin for NodeUnschedulable {
    fn filter(&self, _: &CycleState, pod: &Pod, node: &NodeInfo) -> Status {
        let cordoned = node
            .node
            .as_ref()
            .and_then(|n| n.spec.as_ref())
            .and_then(|s| s.unschedulable)
            .unwrap_or(false);
        if !cordoned {
            return Status::success();
        }
        let taint = Taint {
            key: "node.kubernetes.io/unschedulable".into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        };
        let tolerated = pod
            .spec
            .iter()
            .flat_map(|s| s.tolerations.iter().flatten())
            .any(|t| tolerates(t, &taint));
        if tolerated {
            Status::success()
        } else {
            Status::unresolvable(ERR_REASON)
        }
    }
}
