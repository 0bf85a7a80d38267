//! node.k8s.io/v1 RuntimeClass: cluster-scoped, naming the CRI handler pods of the class
//! run with, their fixed overhead and where they may be scheduled. Validation follows
//! Kubernetes' `pkg/apis/node/validation`; the RuntimeClass admission plugin
//! (`crate::admission::runtime_class`) applies a class to pods.

use serde_json::{json, Value};

use super::printers::Printer;
use super::{array_at, str_at, validate_labels};
use crate::quantity::Quantity;
use crate::registry::Strategy;
use crate::table::{self, Column};
use crate::validation::{self, FieldError};

/// The strategy of `runtimeclasses`.
pub struct RuntimeClassStrategy;

impl Strategy for RuntimeClassStrategy {
    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let handler = str_at(obj, "/handler");
        if handler.is_empty() {
            errs.push(FieldError::required("handler", ""));
        } else {
            errs.extend(validation::errors_for(
                "handler",
                handler,
                validation::dns1123_label(handler),
            ));
        }
        if let Some(fixed) = obj.pointer("/overhead/podFixed").and_then(Value::as_object) {
            for (resource, value) in fixed {
                let field = format!("overhead.podFixed[{resource}]");
                match Quantity::from_json(value) {
                    None => errs.push(FieldError::invalid(
                        field,
                        value.clone(),
                        "must be a valid quantity",
                    )),
                    Some(q) if q.is_negative() => errs.push(FieldError::invalid(
                        field,
                        value.clone(),
                        "must be greater than or equal to 0",
                    )),
                    Some(_) => {}
                }
            }
        }
        errs.extend(validate_labels(
            obj.pointer("/scheduling/nodeSelector"),
            "scheduling.nodeSelector",
        ));
        for (i, toleration) in array_at(obj, "/scheduling/tolerations").iter().enumerate() {
            let operator = str_at(toleration, "/operator");
            if !matches!(operator, "" | "Equal" | "Exists") {
                errs.push(FieldError::not_supported(
                    format!("scheduling.tolerations[{i}].operator"),
                    json!(operator),
                    &["Equal", "Exists"],
                ));
            }
            if operator == "Exists" && !str_at(toleration, "/value").is_empty() {
                errs.push(FieldError::invalid(
                    format!("scheduling.tolerations[{i}].operator"),
                    json!(operator),
                    "value must be empty when `operator` is 'Exists'",
                ));
            }
        }
        errs
    }

    fn validate_update(&self, new: &Value, old: &Value) -> Vec<FieldError> {
        if new.get("handler") != old.get("handler") {
            return vec![FieldError::invalid(
                "handler",
                new.get("handler").cloned().unwrap_or(Value::Null),
                "field is immutable",
            )];
        }
        Vec::new()
    }

    fn columns(&self) -> Vec<Column> {
        PRINTER.columns()
    }

    fn row(&self, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
        PRINTER.row(obj, now)
    }
}

static PRINTER: Printer = Printer {
    columns: &[
        Column::name(),
        Column::text("Handler", "Handler specifies the underlying runtime and configuration that the CRI implementation will use to handle pods of this class"),
        Column::age(),
    ],
    row: |obj, now| {
        vec![
            table::name_cell(obj),
            json!(str_at(obj, "/handler")),
            table::age_cell(obj, now),
        ]
    },
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handler_overhead_and_scheduling() {
        let ok = json!({
            "metadata": {"name": "gvisor"}, "handler": "runsc",
            "overhead": {"podFixed": {"cpu": "250m", "memory": "64Mi"}},
            "scheduling": {"nodeSelector": {"sandbox": "true"},
                "tolerations": [{"key": "sandbox", "operator": "Exists"}]},
        });
        assert!(RuntimeClassStrategy.validate(&ok).is_empty());
        let bad = json!({
            "metadata": {"name": "x"}, "handler": "Run_SC",
            "overhead": {"podFixed": {"cpu": "-1"}},
        });
        let fields: Vec<String> = RuntimeClassStrategy
            .validate(&bad)
            .into_iter()
            .map(|e| e.to_string())
            .collect();
        assert_eq!(fields.len(), 2, "{fields:?}");
        assert!(fields[0].starts_with("handler: Invalid value: \"Run_SC\""));
        assert_eq!(
            fields[1],
            "overhead.podFixed[cpu]: Invalid value: \"-1\": must be greater than or equal to 0"
        );
        let changed = json!({"handler": "runc"});
        assert_eq!(
            RuntimeClassStrategy.validate_update(&changed, &ok)[0].to_string(),
            "handler: Invalid value: \"runc\": field is immutable"
        );
    }
}
