//! NodePorts: a pod's host ports must be free on the node.

use k8s_openapi::api::core::v1::Pod;

use crate::framework::{
    pod_host_ports, CycleState, FilterPlugin, HostPort, NodeInfo, Plugin, PreFilterPlugin, Status,
};

/// The plugin's name.
pub const NAME: &str = "NodePorts";
/// Rejection reason (`ErrReason`).
pub const ERR_REASON: &str = "node(s) didn't have free ports for the requested pod ports";

/// Filters on host port conflicts.
pub struct NodePorts;

struct WantedPorts(Vec<HostPort>);

fn conflicts(a: &HostPort, b: &HostPort) -> bool {
    a.1 == b.1 && a.2 == b.2 && (a.0 == b.0 || a.0 == "0.0.0.0" || b.0 == "0.0.0.0")
}

impl Plugin for NodePorts {
    fn name(&self) -> &'static str {
        NAME
    }
    fn as_pre_filter(&self) -> Option<&dyn PreFilterPlugin> {
        Some(self)
    }
    fn as_filter(&self) -> Option<&dyn FilterPlugin> {
        Some(self)
    }
}

impl PreFilterPlugin for NodePorts {
    fn pre_filter(&self, state: &mut CycleState, pod: &Pod, _: &[&NodeInfo]) -> Status {
        let ports = pod_host_ports(pod);
        if ports.is_empty() {
            return Status::skip();
        }
        state.write(NAME, WantedPorts(ports));
        Status::success()
    }
}

impl FilterPlugin for NodePorts {
    fn filter(&self, state: &CycleState, _: &Pod, node: &NodeInfo) -> Status {
        let Some(WantedPorts(wanted)) = state.read::<WantedPorts>(NAME) else {
            return Status::success();
        };
        if wanted
            .iter()
            .any(|w| node.used_ports.iter().any(|u| conflicts(w, u)))
        {
            Status::unschedulable(ERR_REASON)
        } else {
            Status::success()
        }
    }
}
