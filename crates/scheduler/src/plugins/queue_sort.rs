//! PrioritySort: higher `spec.priority` first, then the pod that waited longest.

use crate::framework::{Plugin, QueueSortPlugin, QueuedPodInfo};

/// The plugin's name.
pub const NAME: &str = "PrioritySort";

/// Orders the active queue by priority, then by queue time.
pub struct PrioritySort;

fn priority(info: &QueuedPodInfo) -> i32 {
    info.pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
}

impl Plugin for PrioritySort {
    fn name(&self) -> &'static str {
        NAME
    }
    fn as_queue_sort(&self) -> Option<&dyn QueueSortPlugin> {
        Some(self)
    }
}

impl QueueSortPlugin for PrioritySort {
    fn less(&self, a: &QueuedPodInfo, b: &QueuedPodInfo) -> bool {
        let (pa, pb) = (priority(a), priority(b));
        pa > pb || (pa == pb && a.timestamp < b.timestamp)
    }
}
