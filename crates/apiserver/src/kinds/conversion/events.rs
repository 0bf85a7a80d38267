//! events.k8s.io/v1 Events, stored as core/v1 Events (`/registry/events/...`): the newer API
//! renames the older one's fields and marks the ones it keeps only for compatibility
//! `deprecated*`, as Kubernetes' events/v1 conversion does.

use serde_json::{json, Value};

use super::rename;
use crate::registry::Conversion;

/// core/v1 field, events.k8s.io/v1 field.
const FIELDS: &[(&str, &str)] = &[
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("source", "deprecatedSource"),
    ("reportingComponent", "reportingController"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
];

/// The conversion of the events.k8s.io/v1 row.
pub(crate) static EVENTS_V1: EventsV1 = EventsV1;

/// events.k8s.io/v1 Event <-> core/v1 Event. The fields both share (`reason`, `action`,
/// `type`, `related`, `series`, `eventTime`, `reportingInstance`, metadata) keep their names.
pub(crate) struct EventsV1;

impl Conversion for EventsV1 {
    fn storage_version(&self) -> &'static str {
        "v1"
    }

    fn to_served(&self, obj: &mut Value) {
        if let Some(map) = obj.as_object_mut() {
            for (core, events) in FIELDS {
                rename(map, core, events);
            }
        }
        obj["apiVersion"] = json!("events.k8s.io/v1");
    }

    fn to_stored(&self, obj: &mut Value) {
        if let Some(map) = obj.as_object_mut() {
            for (core, events) in FIELDS {
                rename(map, events, core);
            }
        }
        obj["apiVersion"] = json!("v1");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn core_event() -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": "web.1", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "web", "namespace": "default", "uid": "u1"},
            "reason": "Started",
            "message": "Started container c",
            "source": {"component": "kubelet", "host": "node-1"},
            "firstTimestamp": "2024-01-01T00:00:00Z",
            "lastTimestamp": "2024-01-01T00:01:00Z",
            "count": 3,
            "type": "Normal",
            "eventTime": "2024-01-01T00:00:00.000000Z",
            "series": {"count": 3, "lastObservedTime": "2024-01-01T00:01:00.000000Z"},
            "action": "Start",
            "related": {"kind": "Node", "name": "node-1"},
            "reportingComponent": "kubelet",
            "reportingInstance": "node-1",
        })
    }

    #[test]
    fn core_event_reads_as_events_v1_and_back() {
        let mut obj = core_event();
        EVENTS_V1.to_served(&mut obj);
        assert_eq!(
            obj,
            json!({
                "apiVersion": "events.k8s.io/v1",
                "kind": "Event",
                "metadata": {"name": "web.1", "namespace": "default"},
                "regarding": {"kind": "Pod", "name": "web", "namespace": "default", "uid": "u1"},
                "reason": "Started",
                "note": "Started container c",
                "deprecatedSource": {"component": "kubelet", "host": "node-1"},
                "deprecatedFirstTimestamp": "2024-01-01T00:00:00Z",
                "deprecatedLastTimestamp": "2024-01-01T00:01:00Z",
                "deprecatedCount": 3,
                "type": "Normal",
                "eventTime": "2024-01-01T00:00:00.000000Z",
                "series": {"count": 3, "lastObservedTime": "2024-01-01T00:01:00.000000Z"},
                "action": "Start",
                "related": {"kind": "Node", "name": "node-1"},
                "reportingController": "kubelet",
                "reportingInstance": "node-1",
            })
        );
        EVENTS_V1.to_stored(&mut obj);
        assert_eq!(obj, core_event());
    }

    #[test]
    fn absent_fields_stay_absent() {
        let mut obj = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "e"}, "note": "hi", "regarding": null});
        EVENTS_V1.to_stored(&mut obj);
        assert_eq!(
            obj,
            json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e"}, "message": "hi"})
        );
    }
}
