//! Server-side printing: the `meta.k8s.io/v1` Table that `kubectl get` asks for, with the
//! columns Kubernetes' printers define (priority 0 columns by default, priority 1 with
//! `-o wide`).

use serde_json::{json, Value};

/// One printer column.
#[derive(Clone, Debug)]
pub struct Column {
    /// Header (kubectl upper-cases it).
    pub name: &'static str,
    /// OpenAPI type: string, integer, number, boolean, date.
    pub kind: &'static str,
    /// OpenAPI format (`name` for the Name column).
    pub format: &'static str,
    /// Description.
    pub description: &'static str,
    /// 0: shown by default; 1: only with `-o wide`.
    pub priority: u8,
}

impl Column {
    /// A string column shown by default.
    pub const fn text(name: &'static str, description: &'static str) -> Column {
        Column {
            name,
            kind: "string",
            format: "",
            description,
            priority: 0,
        }
    }

    /// A string column shown only with `-o wide`.
    pub const fn wide(name: &'static str, description: &'static str) -> Column {
        Column {
            name,
            kind: "string",
            format: "",
            description,
            priority: 1,
        }
    }

    /// An integer column shown by default.
    pub const fn integer(name: &'static str, description: &'static str) -> Column {
        Column {
            name,
            kind: "integer",
            format: "",
            description,
            priority: 0,
        }
    }

    /// A date column shown by default (`Created At`).
    pub const fn date(name: &'static str, description: &'static str) -> Column {
        Column {
            name,
            kind: "date",
            format: "",
            description,
            priority: 0,
        }
    }

    /// The Name column.
    pub const fn name() -> Column {
        Column {
            name: "Name",
            kind: "string",
            format: "name",
            description: "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated.",
            priority: 0,
        }
    }

    /// The Age column.
    pub const fn age() -> Column {
        Column::text(
            "Age",
            "CreationTimestamp is a timestamp representing the server time when this object was created.",
        )
    }

    fn definition(&self) -> Value {
        json!({
            "name": self.name,
            "type": self.kind,
            "format": self.format,
            "description": self.description,
            "priority": self.priority,
        })
    }
}

/// What a Table row carries besides its cells (`includeObject`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IncludeObject {
    /// No object.
    None,
    /// The object's metadata, as PartialObjectMetadata (the default).
    Metadata,
    /// The whole object.
    Object,
}

impl IncludeObject {
    /// Parses the `includeObject` query parameter.
    pub fn parse(value: Option<&str>) -> IncludeObject {
        match value {
            Some("None") => IncludeObject::None,
            Some("Object") => IncludeObject::Object,
            _ => IncludeObject::Metadata,
        }
    }
}

/// Builds a Table of `objects` with the given columns and row function.
pub fn build(
    columns: &[Column],
    objects: &[Value],
    row: impl Fn(&Value) -> Vec<Value>,
    include: IncludeObject,
    list_meta: Value,
) -> Value {
    let rows: Vec<Value> = objects
        .iter()
        .map(|obj| {
            let mut r = json!({"cells": row(obj)});
            match include {
                IncludeObject::None => {}
                IncludeObject::Metadata => r["object"] = partial_metadata(obj),
                IncludeObject::Object => r["object"] = obj.clone(),
            }
            r
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": columns.iter().map(Column::definition).collect::<Vec<_>>(),
        "rows": rows,
    })
}

/// The PartialObjectMetadata form of an object.
pub fn partial_metadata(obj: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

/// The Name cell.
pub fn name_cell(obj: &Value) -> Value {
    json!(obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or(""))
}

/// The Age cell, from creationTimestamp.
pub fn age_cell(obj: &Value, now: jiff::Timestamp) -> Value {
    json!(age_of(obj.pointer("/metadata/creationTimestamp"), now))
}

/// "How long ago" for a timestamp value, or `<unknown>`.
pub fn age_of(timestamp: Option<&Value>, now: jiff::Timestamp) -> String {
    match timestamp
        .and_then(Value::as_str)
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
    {
        Some(t) => human_duration(now.as_second() - t.as_second()),
        None => "<unknown>".to_owned(),
    }
}

/// Formats a duration in seconds the way kubectl's AGE column does: precise when recent,
/// coarser as it grows (`45s`, `3m20s`, `15m`, `5h3m`, `20h`, `3d4h`, `40d`, `2y3d`).
pub fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".to_owned();
    }
    let seconds = seconds.max(0);
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    let days = hours / 24;
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{days}d")
        } else {
            format!("{days}d{h}h")
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{days}d");
    }
    let years = days / 365;
    if hours < 24 * 365 * 8 {
        let d = days % 365;
        return if d == 0 {
            format!("{years}y")
        } else {
            format!("{years}y{d}d")
        };
    }
    format!("{years}y")
}

#[cfg(test)]
mod tests {
    use super::human_duration;

    #[test]
    fn ages_read_like_kubectl() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(119), "119s");
        assert_eq!(human_duration(200), "3m20s");
        assert_eq!(human_duration(900), "15m");
        assert_eq!(human_duration(5 * 3600 + 180), "5h3m");
        assert_eq!(human_duration(20 * 3600), "20h");
        assert_eq!(human_duration(3 * 86400 + 4 * 3600), "3d4h");
        assert_eq!(human_duration(40 * 86400), "40d");
    }
}
