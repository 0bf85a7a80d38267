//! Structural schemas: the OpenAPI v3 subset a CustomResourceDefinition version describes
//! its objects with, and the three things the API server does with one (as apiextensions'
//! `structuralschema` packages do): validating objects against it, pruning fields it does
//! not specify, and applying its defaults. [`check`] tells whether a schema is structural.
//!
//! Paths in errors are Kubernetes' field paths (`spec.replicas`, `spec.ports[0].name`).

use base64::Engine;
use serde_json::{json, Value};

use crate::validation::FieldError;

/// The root fields every object has, which the schema of a custom resource does not govern.
const ROOT_META: &[&str] = &["apiVersion", "kind", "metadata"];

fn flag(schema: &Value, name: &str) -> bool {
    schema.get(name).and_then(Value::as_bool).unwrap_or(false)
}

fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// The schema of the values of an object's unspecified keys, when it has one.
fn additional(schema: &Value) -> Option<&Value> {
    schema.get("additionalProperties").filter(|a| a.is_object())
}

/// Validates a whole custom object (its root fields but `apiVersion`, `kind`, `metadata`).
pub fn validate_object(schema: &Value, obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let Some(map) = obj.as_object() else {
        return errs;
    };
    let properties = schema.get("properties").and_then(Value::as_object);
    for required in schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        if !ROOT_META.contains(&required) && map.get(required).is_none_or(Value::is_null) {
            errs.push(FieldError::required(required, ""));
        }
    }
    for (key, value) in map {
        if ROOT_META.contains(&key.as_str()) {
            continue;
        }
        if let Some(s) = properties.and_then(|p| p.get(key)) {
            validate(s, value, key, &mut errs);
        }
    }
    errs
}

/// Validates `value`, found at `path`, against `schema`.
pub fn validate(schema: &Value, value: &Value, path: &str, errs: &mut Vec<FieldError>) {
    if value.is_null() {
        if !flag(schema, "nullable") && schema.get("type").is_some() {
            errs.push(type_error(path, schema_type(schema), "null"));
        }
        return;
    }
    if flag(schema, "x-kubernetes-int-or-string") {
        if !value.is_string() && !is_integer(value) {
            errs.push(type_error(path, "integer-or-string", type_name(value)));
            return;
        }
    } else if let Some(t) = schema.get("type").and_then(Value::as_str) {
        let ok = match t {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "integer" => is_integer(value),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            _ => true,
        };
        if !ok {
            errs.push(type_error(path, t, type_name(value)));
            return;
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
        if !allowed.contains(value) {
            let supported: Vec<String> = allowed
                .iter()
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                .collect();
            let supported: Vec<&str> = supported.iter().map(String::as_str).collect();
            errs.push(FieldError::not_supported(path, value.clone(), &supported));
        }
    }
    match value {
        Value::String(s) => validate_string(schema, s, path, errs),
        Value::Number(_) => validate_number(schema, value, path, errs),
        Value::Array(items) => {
            let count = items.len() as u64;
            if let Some(max) = schema.get("maxItems").and_then(Value::as_u64) {
                if count > max {
                    errs.push(FieldError::invalid(
                        path,
                        json!(count),
                        format!("{path} in body should have at most {max} items"),
                    ));
                }
            }
            if let Some(min) = schema.get("minItems").and_then(Value::as_u64) {
                if count < min {
                    errs.push(FieldError::invalid(
                        path,
                        json!(count),
                        format!("{path} in body should have at least {min} items"),
                    ));
                }
            }
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    validate(item_schema, item, &format!("{path}[{i}]"), errs);
                }
            }
        }
        Value::Object(map) => {
            if flag(schema, "x-kubernetes-embedded-resource") {
                for key in ["apiVersion", "kind"] {
                    if map
                        .get(key)
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .is_empty()
                    {
                        errs.push(FieldError::required(child(path, key), "must not be empty"));
                    }
                }
            }
            for required in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if map.get(required).is_none_or(Value::is_null) {
                    errs.push(FieldError::required(child(path, required), ""));
                }
            }
            let properties = schema.get("properties").and_then(Value::as_object);
            for (key, v) in map {
                let s = properties
                    .and_then(|p| p.get(key))
                    .or_else(|| additional(schema));
                if let Some(s) = s {
                    validate(s, v, &child(path, key), errs);
                }
            }
        }
        _ => {}
    }
}

fn validate_string(schema: &Value, s: &str, path: &str, errs: &mut Vec<FieldError>) {
    let length = s.chars().count() as u64;
    if let Some(max) = schema.get("maxLength").and_then(Value::as_u64) {
        if length > max {
            errs.push(FieldError::invalid(
                path,
                json!(s),
                format!("{path} in body should be at most {max} chars long"),
            ));
        }
    }
    if let Some(min) = schema.get("minLength").and_then(Value::as_u64) {
        if length < min {
            errs.push(FieldError::invalid(
                path,
                json!(s),
                format!("{path} in body should be at least {min} chars long"),
            ));
        }
    }
    if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
        // An invalid pattern was refused when the CRD was written.
        if regex::Regex::new(pattern).is_ok_and(|re| !re.is_match(s)) {
            errs.push(FieldError::invalid(
                path,
                json!(s),
                format!("{path} in body should match '{pattern}'"),
            ));
        }
    }
    if let Some(format) = schema.get("format").and_then(Value::as_str) {
        if !format_ok(format, s) {
            errs.push(FieldError::invalid(
                path,
                json!(s),
                format!("{path} in body must be of type {format}: {}", json!(s)),
            ));
        }
    }
}

/// The string formats Kubernetes checks (the common ones); others are accepted.
fn format_ok(format: &str, s: &str) -> bool {
    match format {
        "date-time" | "datetime" => s.parse::<jiff::Timestamp>().is_ok(),
        "date" => s.parse::<jiff::civil::Date>().is_ok() && s.len() == 10,
        "byte" => base64::engine::general_purpose::STANDARD.decode(s).is_ok(),
        "uuid" => uuid::Uuid::parse_str(s).is_ok() && s.len() == 36,
        "ipv4" => s.parse::<std::net::Ipv4Addr>().is_ok(),
        "ipv6" => s.parse::<std::net::Ipv6Addr>().is_ok(),
        _ => true,
    }
}

fn validate_number(schema: &Value, value: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let Some(n) = value.as_f64() else { return };
    if let Some(max) = schema.get("maximum").and_then(Value::as_f64) {
        let exclusive = flag(schema, "exclusiveMaximum");
        if n > max || (exclusive && n == max) {
            let relation = if exclusive {
                "less than"
            } else {
                "less than or equal to"
            };
            errs.push(FieldError::invalid(
                path,
                value.clone(),
                format!("{path} in body should be {relation} {}", schema["maximum"]),
            ));
        }
    }
    if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
        let exclusive = flag(schema, "exclusiveMinimum");
        if n < min || (exclusive && n == min) {
            let relation = if exclusive {
                "greater than"
            } else {
                "greater than or equal to"
            };
            errs.push(FieldError::invalid(
                path,
                value.clone(),
                format!("{path} in body should be {relation} {}", schema["minimum"]),
            ));
        }
    }
    if let Some(format) = schema.get("format").and_then(Value::as_str) {
        let range = match format {
            "int32" => Some((f64::from(i32::MIN), f64::from(i32::MAX))),
            _ => None,
        };
        if range.is_some_and(|(lo, hi)| n < lo || n > hi) {
            errs.push(FieldError::invalid(
                path,
                value.clone(),
                format!("{path} in body must be of type {format}: \"{value}\""),
            ));
        }
    }
}

fn is_integer(value: &Value) -> bool {
    value.is_i64() || value.is_u64() || value.as_f64().is_some_and(|f| f.fract() == 0.0)
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) if is_integer(value) => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn schema_type(schema: &Value) -> &str {
    schema.get("type").and_then(Value::as_str).unwrap_or("")
}

fn type_error(path: &str, expected: &str, actual: &str) -> FieldError {
    FieldError::invalid(
        path,
        json!(actual),
        format!("{path} in body must be of type {expected}: \"{actual}\""),
    )
}

/// Removes the fields of a whole custom object its schema does not specify (but the root
/// `apiVersion`, `kind` and `metadata`); returns their paths, which are what
/// `fieldValidation=Strict` reports as unknown.
pub fn prune_object(schema: &Value, obj: &mut Value) -> Vec<String> {
    let mut pruned = Vec::new();
    let Some(map) = obj.as_object_mut() else {
        return pruned;
    };
    let preserve = flag(schema, "x-kubernetes-preserve-unknown-fields");
    let properties = schema.get("properties").and_then(Value::as_object);
    map.retain(|key, value| {
        if ROOT_META.contains(&key.as_str()) {
            return true;
        }
        match properties.and_then(|p| p.get(key)) {
            Some(s) => {
                prune(s, value, key, &mut pruned);
                true
            }
            None if preserve => true,
            None => {
                pruned.push(key.clone());
                false
            }
        }
    });
    pruned
}

/// Removes what `schema` does not specify from `value` (at `path`), recording the paths.
pub fn prune(schema: &Value, value: &mut Value, path: &str, pruned: &mut Vec<String>) {
    let preserve = flag(schema, "x-kubernetes-preserve-unknown-fields");
    match value {
        Value::Object(map) => {
            let embedded = flag(schema, "x-kubernetes-embedded-resource");
            let properties = schema.get("properties").and_then(Value::as_object);
            let additional = additional(schema);
            map.retain(|key, v| {
                let child_path = child(path, key);
                if embedded && ROOT_META.contains(&key.as_str()) {
                    return true;
                }
                match properties.and_then(|p| p.get(key)).or(additional) {
                    Some(s) => {
                        prune(s, v, &child_path, pruned);
                        true
                    }
                    None if preserve
                        || schema.get("additionalProperties") == Some(&Value::Bool(true)) =>
                    {
                        true
                    }
                    None => {
                        pruned.push(child_path);
                        false
                    }
                }
            });
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    prune(item_schema, item, &format!("{path}[{i}]"), pruned);
                }
            }
        }
        _ => {}
    }
}

/// Applies the schema's defaults to `value`: a missing (or null, when not nullable) property
/// with a `default` gets it, recursively through objects, maps and arrays.
pub fn apply_defaults(schema: &Value, value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
                for (key, s) in properties {
                    let Some(default) = s.get("default") else {
                        continue;
                    };
                    let missing = match map.get(key) {
                        None => true,
                        Some(Value::Null) => !flag(s, "nullable"),
                        Some(_) => false,
                    };
                    if missing {
                        map.insert(key.clone(), default.clone());
                    }
                }
                for (key, v) in map.iter_mut() {
                    if let Some(s) = properties.get(key) {
                        apply_defaults(s, v);
                    }
                }
            } else if let Some(s) = additional(schema) {
                map.values_mut().for_each(|v| apply_defaults(s, v));
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                items.iter_mut().for_each(|v| apply_defaults(s, v));
            }
        }
        _ => {}
    }
}

/// Checks that `schema` (at `path`, e.g. `spec.versions[0].schema.openAPIV3Schema`) is
/// structural: every node has a type (unless it preserves unknown fields or is
/// int-or-string), no `$ref`, no `properties` beside `additionalProperties`, valid patterns,
/// and defaults that validate.
pub fn check(schema: &Value, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if schema_type(schema) != "object" {
        errs.push(FieldError::invalid(
            format!("{path}.type"),
            json!(schema_type(schema)),
            "must be object at the root",
        ));
    }
    check_node(schema, path, "", &mut errs);
    errs
}

fn check_node(schema: &Value, path: &str, role: &str, errs: &mut Vec<FieldError>) {
    let Some(map) = schema.as_object() else {
        errs.push(FieldError::invalid(
            path,
            schema.clone(),
            "must be a schema",
        ));
        return;
    };
    if map.contains_key("$ref") {
        errs.push(FieldError::forbidden(
            format!("{path}.$ref"),
            "$ref is not supported in structural schemas",
        ));
    }
    let int_or_string = flag(schema, "x-kubernetes-int-or-string");
    let preserve = flag(schema, "x-kubernetes-preserve-unknown-fields");
    let t = schema_type(schema);
    if t.is_empty() && !int_or_string && !preserve && !role.is_empty() {
        errs.push(FieldError::required(
            format!("{path}.type"),
            format!("must not be empty for specified {role}"),
        ));
    }
    if !t.is_empty() && !["object", "array", "string", "integer", "number", "boolean"].contains(&t)
    {
        errs.push(FieldError::not_supported(
            format!("{path}.type"),
            json!(t),
            &["array", "boolean", "integer", "number", "object", "string"],
        ));
    }
    if int_or_string && !t.is_empty() {
        errs.push(FieldError::forbidden(
            format!("{path}.type"),
            "must be empty if x-kubernetes-int-or-string is true",
        ));
    }
    if map.contains_key("properties") && additional(schema).is_some() {
        errs.push(FieldError::forbidden(
            format!("{path}.additionalProperties"),
            "additionalProperties and properties are mutual exclusive",
        ));
    }
    if t == "array" && !map.contains_key("items") {
        errs.push(FieldError::required(
            format!("{path}.items"),
            "must be specified",
        ));
    }
    if let Some(pattern) = map.get("pattern").and_then(Value::as_str) {
        if let Err(e) = regex::Regex::new(pattern) {
            errs.push(FieldError::invalid(
                format!("{path}.pattern"),
                json!(pattern),
                format!("must be a valid regular expression: {e}"),
            ));
        }
    }
    if let Some(default) = map.get("default") {
        validate(schema, default, &format!("{path}.default"), errs);
    }
    super::rules::check(schema, path, errs);
    if let Some(properties) = map.get("properties").and_then(Value::as_object) {
        for (name, s) in properties {
            check_node(
                s,
                &format!("{path}.properties[{name}]"),
                "object fields",
                errs,
            );
        }
    }
    if let Some(s) = additional(schema) {
        check_node(
            s,
            &format!("{path}.additionalProperties"),
            "object fields",
            errs,
        );
    }
    if let Some(items) = map.get("items") {
        check_node(items, &format!("{path}.items"), "array items", errs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "required": ["image"],
                    "properties": {
                        "image": {"type": "string", "minLength": 1, "pattern": "^[a-z]"},
                        "replicas": {"type": "integer", "minimum": 0, "maximum": 10, "default": 1},
                        "color": {"type": "string", "enum": ["red", "blue"]},
                        "port": {"x-kubernetes-int-or-string": true},
                        "tags": {"type": "array", "maxItems": 2, "items": {"type": "string"}},
                        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                        "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                        "note": {"type": "string", "nullable": true},
                    },
                },
                "status": {"type": "object", "properties": {"replicas": {"type": "integer"}}},
            },
        })
    }

    fn fields(errs: &[FieldError]) -> Vec<String> {
        errs.iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn accepts_a_valid_object() {
        let obj = json!({"apiVersion": "x/v1", "kind": "W", "metadata": {"name": "a"},
            "spec": {"image": "nginx", "replicas": 3, "color": "red", "port": "http",
                     "tags": ["a"], "labels": {"a": "b"}, "free": {"x": {"y": 1}}, "note": null}});
        assert!(validate_object(&schema(), &obj).is_empty());
    }

    #[test]
    fn reports_kubernetes_field_paths() {
        let obj = json!({"spec": {"replicas": 20, "color": "pink", "port": 1.5,
            "tags": ["a", "b", "c"], "labels": {"a": 1}, "image": "Nginx"}});
        let errs = fields(&validate_object(&schema(), &obj));
        assert_eq!(
            errs,
            vec![
                "spec.color: Unsupported value: \"pink\": supported values: \"red\", \"blue\"",
                "spec.image: Invalid value: \"Nginx\": spec.image in body should match '^[a-z]'",
                "spec.labels.a: Invalid value: \"integer\": spec.labels.a in body must be of type string: \"integer\"",
                "spec.port: Invalid value: \"number\": spec.port in body must be of type integer-or-string: \"number\"",
                "spec.replicas: Invalid value: 20: spec.replicas in body should be less than or equal to 10",
                "spec.tags: Invalid value: 3: spec.tags in body should have at most 2 items",
            ]
        );
        let errs = fields(&validate_object(
            &schema(),
            &json!({"spec": {"replicas": "x"}}),
        ));
        assert_eq!(
            errs,
            vec![
                "spec.image: Required value",
                "spec.replicas: Invalid value: \"string\": spec.replicas in body must be of type integer: \"string\"",
            ]
        );
    }

    #[test]
    fn prunes_unknown_fields_but_preserves_where_asked() {
        let mut obj = json!({"apiVersion": "x/v1", "kind": "W", "metadata": {"name": "a", "labels": {}},
            "extra": 1,
            "spec": {"image": "i", "bogus": true, "free": {"anything": [1]}, "tags": ["a"],
                     "labels": {"k": "v"}}});
        let pruned = prune_object(&schema(), &mut obj);
        assert_eq!(pruned, vec!["extra", "spec.bogus"]);
        assert_eq!(
            obj,
            json!({"apiVersion": "x/v1", "kind": "W", "metadata": {"name": "a", "labels": {}},
                "spec": {"image": "i", "free": {"anything": [1]}, "tags": ["a"], "labels": {"k": "v"}}})
        );
    }

    #[test]
    fn applies_defaults_inside_present_objects() {
        let mut obj = json!({"spec": {"image": "i"}});
        apply_defaults(&schema(), &mut obj);
        assert_eq!(obj["spec"]["replicas"], 1);
        let mut without_spec = json!({});
        apply_defaults(&schema(), &mut without_spec);
        assert_eq!(without_spec, json!({}));
    }

    #[test]
    fn structural_check_requires_types_and_valid_defaults() {
        let bad = json!({"type": "object", "properties": {
            "spec": {"properties": {"a": {"type": "integer", "default": "x"}}},
            "list": {"type": "array"},
        }});
        let errs = fields(&check(&bad, "s"));
        assert_eq!(
            errs,
            vec![
                "s.properties[list].items: Required value: must be specified",
                "s.properties[spec].type: Required value: must not be empty for specified object fields",
                "s.properties[spec].properties[a].default: Invalid value: \"string\": s.properties[spec].properties[a].default in body must be of type integer: \"string\"",
            ]
        );
        assert!(check(&schema(), "s").is_empty());
    }
}
