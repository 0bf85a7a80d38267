//! Printer helpers shared by kinds whose `kubectl get` columns are simple: a [`Printer`]
//! strategy from static columns and a row function, and the cells several printers share.

use serde_json::{json, Value};

use super::{array_at, str_at};
use crate::registry::Strategy;
use crate::table::{self, Column};

/// A strategy with only printer columns: static columns and a row function.
pub struct Printer {
    /// The columns (Name first).
    pub columns: &'static [Column],
    /// The cells of one object.
    pub row: fn(&Value, jiff::Timestamp) -> Vec<Value>,
}

impl Strategy for Printer {
    fn columns(&self) -> Vec<Column> {
        self.columns.to_vec()
    }

    fn row(&self, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
        (self.row)(obj, now)
    }
}

/// The description of Kubernetes' `Created At` column.
pub const CREATED_AT_DESCRIPTION: &str =
    "CreationTimestamp is a timestamp representing the server time when this object was created.";

/// Name and `Created At`: the columns of kinds without a printer of their own (Kubernetes'
/// default table convertor) and of LimitRange, Role and ClusterRole.
pub static CREATED_AT: Printer = Printer {
    columns: &[
        Column::name(),
        Column::date("Created At", CREATED_AT_DESCRIPTION),
    ],
    row: |obj, _| {
        vec![
            table::name_cell(obj),
            obj.pointer("/metadata/creationTimestamp")
                .cloned()
                .unwrap_or(Value::Null),
        ]
    },
};

/// A list of strings joined by commas, `<none>` when empty.
pub(crate) fn joined(obj: &Value, pointer: &str) -> Value {
    let items: Vec<&str> = array_at(obj, pointer)
        .iter()
        .filter_map(Value::as_str)
        .collect();
    super::or_none(items.join(","))
}

/// A string at a pointer, `<none>` when empty.
pub(crate) fn text_or_none(obj: &Value, pointer: &str) -> Value {
    super::or_none(str_at(obj, pointer))
}

/// A value as kubectl prints scalars: strings bare, numbers as numbers, missing as `<none>`.
pub(crate) fn scalar_or_none(value: Option<&Value>) -> Value {
    match value {
        None | Some(Value::Null) => json!("<none>"),
        Some(Value::String(s)) => super::or_none(s.clone()),
        Some(v) => json!(v.to_string()),
    }
}
