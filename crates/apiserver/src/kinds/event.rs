//! core/v1 Events, as `kubectl get events` prints them.

use serde_json::{json, Value};

use super::{int_at, str_at};
use crate::registry::Strategy;
use crate::table::{self, Column};

/// The strategy of `events`.
pub struct EventStrategy;

impl Strategy for EventStrategy {
    fn columns(&self) -> Vec<Column> {
        vec![
            Column::text("Last Seen", "Time when last this event was observed"),
            Column::text("Type", "Type of this event (Normal, Warning), new types could be added in the future."),
            Column::text("Reason", "This should be a short, machine understandable string that gives the reason for the transition into the object's current status."),
            Column::text("Object", "The object that this event is about."),
            Column::wide("Subobject", "The subobject (field path) that this event is about."),
            Column::wide("Source", "The component reporting this event."),
            Column::text("Message", "A human-readable description of the status of this operation."),
            Column::wide("First Seen", "The time at which the event was first recorded."),
            Column::wide("Count", "The number of times this event has occurred."),
            Column {
                priority: 1,
                ..Column::name()
            },
        ]
    }

    fn row(&self, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
        let last = obj
            .get("lastTimestamp")
            .filter(|v| !v.is_null())
            .or_else(|| obj.get("eventTime"))
            .or_else(|| obj.pointer("/metadata/creationTimestamp"));
        let first = obj
            .get("firstTimestamp")
            .filter(|v| !v.is_null())
            .or_else(|| obj.get("eventTime"));
        let kind = str_at(obj, "/involvedObject/kind").to_ascii_lowercase();
        let source = match str_at(obj, "/source/component") {
            "" => str_at(obj, "/reportingComponent").to_owned(),
            c => match str_at(obj, "/source/host") {
                "" => c.to_owned(),
                h => format!("{c}, {h}"),
            },
        };
        vec![
            json!(table::age_of(last, now)),
            json!(str_at(obj, "/type")),
            json!(str_at(obj, "/reason")),
            json!(format!("{kind}/{}", str_at(obj, "/involvedObject/name"))),
            json!(str_at(obj, "/involvedObject/fieldPath")),
            json!(source),
            json!(str_at(obj, "/message").trim()),
            json!(table::age_of(first, now)),
            json!(int_at(obj, "/count").max(1)),
            table::name_cell(obj),
        ]
    }
}

/// The strategy of events.k8s.io/v1 `events` (`regarding`, `note`, `series`).
pub struct EventV1Strategy;

impl Strategy for EventV1Strategy {
    fn columns(&self) -> Vec<Column> {
        EventStrategy.columns()
    }

    fn row(&self, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
        let last = obj
            .pointer("/series/lastObservedTime")
            .or_else(|| obj.get("deprecatedLastTimestamp").filter(|v| !v.is_null()))
            .or_else(|| obj.get("eventTime").filter(|v| !v.is_null()))
            .or_else(|| obj.pointer("/metadata/creationTimestamp"));
        let first = obj
            .get("deprecatedFirstTimestamp")
            .filter(|v| !v.is_null())
            .or_else(|| obj.get("eventTime"));
        let kind = str_at(obj, "/regarding/kind").to_ascii_lowercase();
        let count = obj
            .pointer("/series/count")
            .and_then(Value::as_i64)
            .unwrap_or_else(|| int_at(obj, "/deprecatedCount"));
        vec![
            json!(table::age_of(last, now)),
            json!(str_at(obj, "/type")),
            json!(str_at(obj, "/reason")),
            json!(format!("{kind}/{}", str_at(obj, "/regarding/name"))),
            json!(str_at(obj, "/regarding/fieldPath")),
            json!(str_at(obj, "/reportingController")),
            json!(str_at(obj, "/note").trim()),
            json!(table::age_of(first, now)),
            json!(count.max(1)),
            table::name_cell(obj),
        ]
    }
}
