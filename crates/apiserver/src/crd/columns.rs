//! `additionalPrinterColumns`: the `kubectl get` columns of a custom resource, each a
//! JSONPath into the object. As Kubernetes' CRD table convertor: Name first, then the
//! printer columns, or only Age when a version declares none; `date` cells print as ages.

use serde_json::{json, Value};

use crate::kinds::str_at;
use crate::table::{self, Column};

/// One printer column: its table header and where its value is.
#[derive(Clone, Debug)]
pub struct PrinterColumn {
    /// The header.
    pub column: Column,
    /// The simple JSONPath of the value (`.spec.replicas`).
    pub json_path: String,
}

fn leak(s: &str) -> &'static str {
    Box::leak(s.to_owned().into_boxed_str())
}

/// The columns of a version from its `additionalPrinterColumns`.
pub fn for_version(printer_columns: &[Value]) -> Vec<PrinterColumn> {
    if printer_columns.is_empty() {
        return vec![PrinterColumn {
            column: Column {
                name: "Age",
                kind: "date",
                format: "",
                description: crate::kinds::printers::CREATED_AT_DESCRIPTION,
                priority: 0,
            },
            json_path: ".metadata.creationTimestamp".into(),
        }];
    }
    printer_columns
        .iter()
        .map(|c| PrinterColumn {
            column: Column {
                name: leak(str_at(c, "/name")),
                kind: leak(str_at(c, "/type")),
                format: leak(str_at(c, "/format")),
                description: leak(str_at(c, "/description")),
                priority: c
                    .get("priority")
                    .and_then(Value::as_u64)
                    .map_or(0, |p| p.min(u64::from(u8::MAX)) as u8),
            },
            json_path: str_at(c, "/jsonPath").to_owned(),
        })
        .collect()
}

impl PrinterColumn {
    /// The cell of `obj`: null when the path finds nothing (kubectl prints `<none>`).
    pub fn cell(&self, obj: &Value, now: jiff::Timestamp) -> Value {
        let Some(value) = find(obj, &self.json_path) else {
            return Value::Null;
        };
        match self.column.kind {
            "date" => json!(table::age_of(Some(value), now)),
            "integer" => match value.as_f64() {
                Some(f) if value.is_f64() => json!(f as i64),
                _ => value.clone(),
            },
            "number" | "boolean" => value.clone(),
            _ => match value {
                Value::String(s) => json!(s),
                other => json!(other.to_string()),
            },
        }
    }
}

/// The value at a simple JSONPath: `.a.b`, `.a[0]`, `.a[?(@.type=="Ready")].status`, with
/// or without the surrounding `{}` and leading `$`.
pub fn find<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    let path = path.trim();
    let path = path
        .strip_prefix('{')
        .and_then(|p| p.strip_suffix('}'))
        .unwrap_or(path);
    let path = path.strip_prefix('$').unwrap_or(path);
    let mut current = obj;
    let mut rest = path;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('.') {
            let end = after.find(['.', '[']).unwrap_or(after.len());
            let key = &after[..end];
            if !key.is_empty() {
                current = current.get(key)?;
            }
            rest = &after[end..];
        } else if let Some(after) = rest.strip_prefix('[') {
            let end = after.find(']')?;
            let selector = &after[..end];
            rest = &after[end + 1..];
            current = select(current, selector)?;
        } else {
            return None;
        }
    }
    Some(current)
}

/// One bracket selector: an index, a quoted key, or an equality filter.
fn select<'a>(value: &'a Value, selector: &str) -> Option<&'a Value> {
    if let Some(filter) = selector
        .strip_prefix("?(@.")
        .and_then(|f| f.strip_suffix(')'))
    {
        let (field, wanted) = filter.split_once("==")?;
        let wanted = wanted.trim().trim_matches(|c| c == '"' || c == '\'');
        return value.as_array()?.iter().find(|item| {
            find(item, &format!(".{}", field.trim())).is_some_and(|v| match v {
                Value::String(s) => s == wanted,
                other => serde_json::from_str::<Value>(wanted).is_ok_and(|w| &w == other),
            })
        });
    }
    if let Ok(index) = selector.parse::<usize>() {
        return value.as_array()?.get(index);
    }
    value.get(selector.trim_matches(|c| c == '"' || c == '\''))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_simple_json_paths() {
        let obj = json!({"spec": {"replicas": 3, "ports": [{"name": "a"}, {"name": "b"}]},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        assert_eq!(find(&obj, ".spec.replicas"), Some(&json!(3)));
        assert_eq!(find(&obj, "{.spec.ports[1].name}"), Some(&json!("b")));
        assert_eq!(
            find(&obj, ".status.conditions[?(@.type==\"Ready\")].status"),
            Some(&json!("True"))
        );
        assert_eq!(find(&obj, ".spec.missing"), None);
    }

    #[test]
    fn cells_follow_the_column_type() {
        let columns = for_version(&[
            json!({"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"}),
            json!({"name": "Image", "type": "string", "jsonPath": ".spec.image"}),
        ]);
        let obj = json!({"spec": {"replicas": 2}});
        let now = jiff::Timestamp::now();
        assert_eq!(columns[0].cell(&obj, now), json!(2));
        assert_eq!(columns[1].cell(&obj, now), Value::Null);
        let age = for_version(&[]);
        assert_eq!(age[0].column.name, "Age");
    }
}
