//! ConfigMaps, Secrets and ServiceAccounts.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde_json::{json, Value};

use super::{array_at, object_mut, set_default, str_at, validate_data_keys};
use crate::registry::Strategy;
use crate::table::{self, Column};
use crate::validation::FieldError;

fn data_count(obj: &Value) -> usize {
    ["data", "binaryData"]
        .iter()
        .filter_map(|f| obj.get(*f).and_then(Value::as_object))
        .map(|m| m.len())
        .sum()
}

/// Once `old` is `immutable`, it stays so and `fields` keep their content
/// (`ValidateConfigMapUpdate`, `ValidateSecretUpdate`).
fn immutable_fields(new: &Value, old: &Value, fields: &[&str]) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if old.get("immutable") != Some(&json!(true)) {
        return errs;
    }
    let detail = "field is immutable when `immutable` is set";
    if new.get("immutable") != Some(&json!(true)) {
        errs.push(FieldError::forbidden("immutable", detail));
    }
    for field in fields {
        if new.get(*field) != old.get(*field) {
            errs.push(FieldError::forbidden(*field, detail));
        }
    }
    errs
}

/// The strategy of `configmaps`.
pub struct ConfigMapStrategy;

impl Strategy for ConfigMapStrategy {
    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        let mut errs = validate_data_keys(obj, "data");
        errs.extend(validate_data_keys(obj, "binaryData"));
        errs
    }

    fn validate_update(&self, new: &Value, old: &Value) -> Vec<FieldError> {
        immutable_fields(new, old, &["data", "binaryData"])
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            Column::name(),
            Column::integer("Data", "Data contains the configuration data."),
            Column::age(),
        ]
    }

    fn row(&self, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
        vec![
            table::name_cell(obj),
            json!(data_count(obj)),
            table::age_cell(obj, now),
        ]
    }
}

/// The strategy of `secrets`.
pub struct SecretStrategy;

impl Strategy for SecretStrategy {
    fn default(&self, obj: &mut Value) {
        // stringData is write-only: it is merged into data (base64) and never stored.
        let string_data = obj
            .as_object_mut()
            .and_then(|o| o.remove("stringData"))
            .and_then(|v| v.as_object().cloned());
        if let Some(string_data) = string_data {
            let data = object_mut(obj, "data");
            for (k, v) in string_data {
                data.insert(k, json!(BASE64.encode(v.as_str().unwrap_or("").as_bytes())));
            }
        }
        if let Some(o) = obj.as_object_mut() {
            set_default(o, "type", json!("Opaque"));
        }
    }

    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        validate_data_keys(obj, "data")
    }

    fn validate_update(&self, new: &Value, old: &Value) -> Vec<FieldError> {
        let mut errs = Vec::new();
        if str_at(new, "/type") != str_at(old, "/type") {
            errs.push(FieldError::invalid(
                "type",
                json!(str_at(new, "/type")),
                "field is immutable",
            ));
        }
        errs.extend(immutable_fields(new, old, &["data"]));
        errs
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            Column::name(),
            Column::text("Type", "The type of the secret"),
            Column::integer("Data", "The number of entries in the secret"),
            Column::age(),
        ]
    }

    fn row(&self, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
        vec![
            table::name_cell(obj),
            json!(str_at(obj, "/type")),
            json!(data_count(obj)),
            table::age_cell(obj, now),
        ]
    }
}

/// The strategy of `serviceaccounts`.
pub struct ServiceAccountStrategy;

impl Strategy for ServiceAccountStrategy {
    fn columns(&self) -> Vec<Column> {
        vec![
            Column::name(),
            Column::integer("Secrets", "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use."),
            Column::age(),
        ]
    }

    fn row(&self, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
        vec![
            table::name_cell(obj),
            json!(array_at(obj, "/secrets").len()),
            table::age_cell(obj, now),
        ]
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::registry::Strategy as _;

    #[test]
    fn immutable_config_maps_and_secrets_keep_their_data_and_stay_immutable() {
        let old = json!({"immutable": true, "data": {"a": "b"}, "binaryData": {"d": "3q0="}});
        let messages = |errs: Vec<crate::validation::FieldError>| -> Vec<String> {
            errs.iter().map(|e| e.to_string()).collect()
        };
        let cm = super::ConfigMapStrategy;
        assert!(cm.validate_update(&old, &old).is_empty());
        let mut new = old.clone();
        new["data"]["a"] = json!("c");
        new["binaryData"] = json!({});
        new["immutable"] = json!(false);
        assert_eq!(
            messages(cm.validate_update(&new, &old)),
            [
                "immutable: Forbidden: field is immutable when `immutable` is set",
                "data: Forbidden: field is immutable when `immutable` is set",
                "binaryData: Forbidden: field is immutable when `immutable` is set",
            ]
        );
        // A mutable one changes freely.
        let mut mutable = old.clone();
        mutable["immutable"] = json!(false);
        assert!(cm.validate_update(&new, &mutable).is_empty());
        let secret = super::SecretStrategy;
        let mut changed = old.clone();
        changed["data"]["a"] = json!("Yw==");
        assert_eq!(
            messages(secret.validate_update(&changed, &old)),
            ["data: Forbidden: field is immutable when `immutable` is set"]
        );
    }
}
