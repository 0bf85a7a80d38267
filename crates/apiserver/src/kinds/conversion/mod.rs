//! Conversions of built-in kinds served in more than one version but stored once, as
//! kube-apiserver stores them: autoscaling/v1 HorizontalPodAutoscalers in autoscaling/v2,
//! events.k8s.io/v1 Events as core/v1 Events. Each is a [`crate::registry::Conversion`] of
//! the row serving the other version.

mod autoscaling;
mod events;

pub(crate) use autoscaling::HPA_V1;
pub(crate) use events::EVENTS_V1;

use serde_json::{Map, Value};

/// Moves `from` to `to` in `map` (dropping any `to` already there), when present.
fn rename(map: &mut Map<String, Value>, from: &str, to: &str) {
    let value = map.remove(from);
    map.remove(to);
    if let Some(value) = value.filter(|v| !v.is_null()) {
        map.insert(to.to_owned(), value);
    }
}
