//! CEL validation rules of CustomResourceDefinitions (`x-kubernetes-validations`), as
//! apiextensions-apiserver evaluates them: each rule of a schema node sees the node's value
//! as `self`; a rule that mentions `oldSelf` is a transition rule, checked on updates only
//! and only where the old object has a value at that place. A rule that is false (or cannot
//! be evaluated) is a field error at the node's path (plus the rule's `fieldPath`) with the
//! rule's `message`, its `messageExpression`'s result, or `failed rule: <rule>`.
//!
//! Rules are compiled (`crate::expressions`) when the CRD is written ([`check`]) and
//! again, from a small cache, when objects are validated.

use cel::{Context, Value as Cel};
use serde_json::{json, Value};

use crate::expressions::{compiled, to_cel};
use crate::validation::FieldError;

/// Whether a rule compares with the old value (a transition rule).
fn is_transition(rule: &str) -> bool {
    rule.contains("oldSelf")
}

/// Checks, when a CRD is written, that every rule of `schema` (at `path`) compiles.
pub fn check(schema: &Value, path: &str, errs: &mut Vec<FieldError>) {
    for (i, rule) in rules_of(schema).iter().enumerate() {
        let at = format!("{path}.x-kubernetes-validations[{i}]");
        let text = rule.get("rule").and_then(Value::as_str).unwrap_or("");
        if text.trim().is_empty() {
            errs.push(FieldError::required(format!("{at}.rule"), ""));
            continue;
        }
        if let Err(e) = compiled(text) {
            errs.push(FieldError::invalid(
                format!("{at}.rule"),
                json!(text),
                format!("compilation failed: {e}"),
            ));
        }
        if let Some(expr) = rule.get("messageExpression").and_then(Value::as_str) {
            if let Err(e) = compiled(expr) {
                errs.push(FieldError::invalid(
                    format!("{at}.messageExpression"),
                    json!(expr),
                    format!("messageExpression compilation failed: {e}"),
                ));
            }
        }
    }
}

fn rules_of(schema: &Value) -> &[Value] {
    schema
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// Which rules a pass evaluates.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// Rules without `oldSelf` (creates and updates).
    Plain,
    /// Rules with `oldSelf` (updates, where an old value exists).
    Transition,
}

/// The errors of the rules without `oldSelf` for the object `obj`.
pub fn validate(schema: &Value, obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    walk(schema, obj, None, "", Pass::Plain, &mut errs);
    errs
}

/// The errors of the transition rules for an update of `old` to `new`.
pub fn validate_update(schema: &Value, new: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    walk(schema, new, Some(old), "", Pass::Transition, &mut errs);
    errs
}

fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn walk(
    schema: &Value,
    value: &Value,
    old: Option<&Value>,
    path: &str,
    pass: Pass,
    errs: &mut Vec<FieldError>,
) {
    if value.is_null() {
        return;
    }
    for rule in rules_of(schema) {
        let text = rule.get("rule").and_then(Value::as_str).unwrap_or("");
        let transition = is_transition(text);
        let old_value = old.filter(|o| !o.is_null());
        match (pass, transition, old_value) {
            (Pass::Plain, false, _) | (Pass::Transition, true, Some(_)) => {}
            _ => continue,
        }
        if let Some(error) = evaluate(rule, text, schema, value, old_value, path) {
            errs.push(error);
        }
    }
    match value {
        Value::Object(map) => {
            let properties = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            for (key, v) in map {
                let Some(s) = properties.and_then(|p| p.get(key)).or(additional) else {
                    continue;
                };
                let o = old.and_then(|o| o.get(key));
                walk(s, v, o, &child(path, key), pass, errs);
            }
        }
        Value::Array(items) => {
            let Some(item_schema) = schema.get("items") else {
                return;
            };
            let keys: Vec<&str> = schema
                .get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .map(|k| k.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let list_type = schema
                .get("x-kubernetes-list-type")
                .and_then(Value::as_str)
                .unwrap_or("atomic");
            for (i, item) in items.iter().enumerate() {
                // Old items correlate only in map lists (by their keys) and sets (by value).
                let o = old
                    .and_then(Value::as_array)
                    .and_then(|olds| match list_type {
                        "map" if !keys.is_empty() => olds
                            .iter()
                            .find(|o| keys.iter().all(|k| o.get(k) == item.get(k))),
                        "set" => olds.iter().find(|o| *o == item),
                        _ => None,
                    });
                walk(item_schema, item, o, &format!("{path}[{i}]"), pass, errs);
            }
        }
        _ => {}
    }
}

/// Evaluates one rule; the field error when it fails.
fn evaluate(
    rule: &Value,
    text: &str,
    schema: &Value,
    value: &Value,
    old: Option<&Value>,
    path: &str,
) -> Option<FieldError> {
    let mut context = Context::default();
    context.add_variable_from_value("self", to_cel(value, Some(schema)));
    if let Some(old) = old {
        context.add_variable_from_value("oldSelf", to_cel(old, Some(schema)));
    }
    let outcome = compiled(text).and_then(|program| {
        program
            .execute(&context)
            .map_err(|e| format!("{e} evaluating rule: {text}"))
    });
    let message = match outcome {
        Ok(Cel::Bool(true)) => return None,
        Ok(Cel::Bool(false)) => message_of(rule, text, &context),
        Ok(other) => format!("rule did not evaluate to a boolean ({other:?}): {text}"),
        Err(e) => e,
    };
    let field = match rule.get("fieldPath").and_then(Value::as_str) {
        Some(extra) if !extra.is_empty() => {
            format!(
                "{path}{}",
                if path.is_empty() {
                    extra.trim_start_matches('.')
                } else {
                    extra
                }
            )
        }
        _ => path.to_owned(),
    };
    let shown = json!(schema
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("object"));
    Some(
        match rule.get("reason").and_then(Value::as_str).unwrap_or("") {
            "FieldValueForbidden" => FieldError::forbidden(field, message),
            "FieldValueRequired" => FieldError::required(field, message),
            "FieldValueDuplicate" => FieldError::duplicate(field, shown),
            _ => FieldError::invalid(field, shown, message),
        },
    )
}

fn message_of(rule: &Value, text: &str, context: &Context) -> String {
    if let Some(expr) = rule.get("messageExpression").and_then(Value::as_str) {
        if let Ok(Cel::String(s)) =
            compiled(expr).and_then(|p| p.execute(context).map_err(|e| e.to_string()))
        {
            if !s.trim().is_empty() {
                return s.to_string();
            }
        }
    }
    match rule.get("message").and_then(Value::as_str) {
        Some(m) if !m.is_empty() => m.to_owned(),
        _ => format!("failed rule: {text}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Value {
        json!({"type": "object", "properties": {"spec": {
            "type": "object",
            "x-kubernetes-validations": [
                {"rule": "self.replicas <= self.maxReplicas",
                 "message": "replicas must not exceed maxReplicas"},
                {"rule": "!has(self.image) || self.image.startsWith('registry.local/')",
                 "messageExpression": "'image ' + self.image + ' is not from the local registry'",
                 "fieldPath": ".image"},
                {"rule": "self.mode == oldSelf.mode", "message": "mode is immutable"},
            ],
            "properties": {
                "replicas": {"type": "integer"},
                "maxReplicas": {"type": "integer"},
                "ratio": {"type": "number", "x-kubernetes-validations": [{"rule": "self < 1.5"}]},
                "image": {"type": "string"},
                "mode": {"type": "string"},
                "ports": {"type": "array", "x-kubernetes-list-type": "map",
                    "x-kubernetes-list-map-keys": ["name"],
                    "items": {"type": "object", "x-kubernetes-validations": [
                        {"rule": "self.port > 1024 || self.name == 'http'"},
                        {"rule": "self.port == oldSelf.port", "reason": "FieldValueForbidden",
                         "message": "port may not change"}],
                        "properties": {"name": {"type": "string"}, "port": {"type": "integer"}}}},
            },
        }}})
    }

    fn fields(errs: &[FieldError]) -> Vec<(String, String)> {
        errs.iter()
            .map(|e| (e.field.clone(), e.detail.clone()))
            .collect()
    }

    #[test]
    fn rules_without_old_self_check_every_write() {
        let ok = json!({"spec": {"replicas": 2, "maxReplicas": 3, "ratio": 1,
            "image": "registry.local/app", "mode": "a",
            "ports": [{"name": "http", "port": 80}]}});
        assert!(validate(&schema(), &ok).is_empty());
        let bad = json!({"spec": {"replicas": 5, "maxReplicas": 3, "ratio": 2,
            "image": "docker.io/app", "ports": [{"name": "db", "port": 80}]}});
        assert_eq!(
            fields(&validate(&schema(), &bad)),
            vec![
                ("spec".into(), "replicas must not exceed maxReplicas".into()),
                (
                    "spec.image".into(),
                    "image docker.io/app is not from the local registry".into()
                ),
                (
                    "spec.ports[0]".into(),
                    "failed rule: self.port > 1024 || self.name == 'http'".into()
                ),
                ("spec.ratio".into(), "failed rule: self < 1.5".into()),
            ]
        );
    }

    #[test]
    fn transition_rules_compare_with_the_old_object_on_updates_only() {
        let old = json!({"spec": {"replicas": 1, "maxReplicas": 1, "mode": "a",
            "ports": [{"name": "http", "port": 80}]}});
        let new = json!({"spec": {"replicas": 1, "maxReplicas": 1, "mode": "b",
            "ports": [{"name": "http", "port": 81}, {"name": "extra", "port": 2000}]}});
        // Creating with any mode is fine.
        assert!(validate(&schema(), &new).is_empty());
        let errs = validate_update(&schema(), &new, &old);
        assert_eq!(
            fields(&errs),
            vec![
                ("spec".into(), "mode is immutable".into()),
                ("spec.ports[0]".into(), "port may not change".into()),
            ]
        );
        assert!(matches!(
            errs[1].kind,
            crate::validation::FieldErrorKind::Forbidden
        ));
    }

    #[test]
    fn rules_that_do_not_compile_are_refused_with_the_crd() {
        let mut errs = Vec::new();
        check(
            &json!({"x-kubernetes-validations": [{"rule": "self.a +"}, {"rule": "self.a > 1"}]}),
            "spec.validation.openAPIV3Schema",
            &mut errs,
        );
        assert_eq!(errs.len(), 1);
        assert_eq!(
            errs[0].field,
            "spec.validation.openAPIV3Schema.x-kubernetes-validations[0].rule"
        );
        assert!(errs[0].detail.starts_with("compilation failed: "));
    }
}
