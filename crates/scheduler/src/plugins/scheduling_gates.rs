//! SchedulingGates: a pod with `spec.schedulingGates` stays out of the active queue until
//! its gates are removed.

use k8s_openapi::api::core::v1::Pod;

use crate::framework::{Plugin, PreEnqueuePlugin, Status};

/// The plugin's name.
pub const NAME: &str = "SchedulingGates";

/// Holds gated pods back.
pub struct SchedulingGates;

impl Plugin for SchedulingGates {
    fn name(&self) -> &'static str {
        NAME
    }
    fn as_pre_enqueue(&self) -> Option<&dyn PreEnqueuePlugin> {
        Some(self)
    }
}

impl PreEnqueuePlugin for SchedulingGates {
    fn pre_enqueue(&self, pod: &Pod) -> Status {
        let gates: Vec<&str> = pod
            .spec
            .iter()
            .flat_map(|s| s.scheduling_gates.iter().flatten())
            .map(|g| g.name.as_str())
            .collect();
        if gates.is_empty() {
            Status::success()
        } else {
            Status::unresolvable(format!("waiting for scheduling gates: {gates:?}"))
        }
    }
}
