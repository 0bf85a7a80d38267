//! Fields kube-apiserver never writes out at their zero value.
//!
//! kube-apiserver decodes every request into Go structs and encodes what it stores from
//! them: a field that is not a pointer and is tagged `omitempty` disappears when it holds
//! its zero value (`false`, `0`, `""`, an empty list or map), whether the client left it
//! out or sent it. So `tty: false` in a manifest, or the `stdin: false` and
//! `hostPID: false` every protobuf body from client-go carries (`kubectl create
//! deployment`), are not in the stored object, while `readOnlyRootFilesystem: false`
//! (a pointer) is. skiff's objects are JSON values, so it drops those fields itself,
//! from the table in `omitted_fields.txt` (generated from the Go types by
//! `tools/omitted_fields.py`). Without it such objects differ from kube-apiserver's, and a
//! Deployment rolled back to a ReplicaSet (`kubectl rollout undo`) no longer matches that
//! ReplicaSet's template.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde_json::Value;

use crate::schema::{referenced_definition, Schemas};

/// The generated table: a definition name, then its fields, per line.
const TABLE: &str = include_str!("omitted_fields.txt");

/// The fields of definition `name` that are dropped at their zero value.
fn fields_of(name: &str) -> Option<&'static [&'static str]> {
    static BY_DEFINITION: OnceLock<HashMap<&'static str, Vec<&'static str>>> = OnceLock::new();
    BY_DEFINITION
        .get_or_init(|| {
            TABLE
                .lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| {
                    let mut words = l.split_whitespace();
                    Some((words.next()?, words.collect()))
                })
                .collect()
        })
        .get(name)
        .map(Vec::as_slice)
}

/// Whether `value` is what Go decodes to a zero value.
fn is_zero(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(items) => items.is_empty(),
        Value::Object(map) => map.is_empty(),
    }
}

/// Drops from `obj`, an object of definition `root`, and from everything nested in it,
/// the fields kube-apiserver would not write out at their zero value.
pub fn drop_zero_fields(schemas: &Schemas, root: &str, obj: &mut Value) {
    walk_definition(schemas, root, obj);
}

fn walk_definition(schemas: &Schemas, name: &str, value: &mut Value) {
    if let (Some(fields), Value::Object(map)) = (fields_of(name), &mut *value) {
        map.retain(|key, v| !(fields.contains(&key.as_str()) && is_zero(v)));
    }
    if let Some(schema) = schemas.definition(name) {
        walk(schemas, schema, value);
    }
}

fn walk(schemas: &Schemas, schema: &Value, value: &mut Value) {
    if let Some(name) = referenced_definition(schema) {
        return walk_definition(schemas, name, value);
    }
    match value {
        Value::Object(map) => {
            if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
                for (key, child) in map.iter_mut() {
                    if let Some(s) = properties.get(key) {
                        walk(schemas, s, child);
                    }
                }
            } else if let Some(additional) =
                schema.get("additionalProperties").filter(|a| a.is_object())
            {
                for child in map.values_mut() {
                    walk(schemas, additional, child);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for item in items {
                    walk(schemas, item_schema, item);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_table_knows_the_pod_fields_go_omits_and_not_the_pointers() {
        let container = fields_of("io.k8s.api.core.v1.Container").unwrap();
        assert!(container.contains(&"stdin") && container.contains(&"tty"));
        let pod = fields_of("io.k8s.api.core.v1.PodSpec").unwrap();
        assert!(pod.contains(&"hostPID") && pod.contains(&"hostNetwork"));
        // Pointers keep their zero values: they say something.
        assert!(!pod.contains(&"automountServiceAccountToken"));
        let claim = fields_of("io.k8s.api.core.v1.PersistentVolumeClaimSpec").unwrap();
        assert!(!claim.contains(&"storageClassName"));
        let meta = fields_of("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta").unwrap();
        assert!(meta.contains(&"generation"));
    }

    #[test]
    fn zero_values_of_non_pointer_fields_are_dropped_at_every_depth() {
        let schemas = Schemas::generate(&crate::kinds::REGISTRY);
        let mut deployment = json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "labels": {}},
            "spec": {
                "paused": false,
                "replicas": 0,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"generation": 0, "labels": {"app": "web"}},
                    "spec": {
                        "hostPID": false,
                        "hostNetwork": true,
                        "automountServiceAccountToken": false,
                        "containers": [{
                            "name": "c",
                            "image": "busybox",
                            "stdin": false,
                            "tty": false,
                            "env": [{"name": "EMPTY", "value": ""}],
                            "securityContext": {"readOnlyRootFilesystem": false},
                            "ports": [{"containerPort": 80, "hostPort": 0}],
                        }],
                    },
                },
            },
        });
        drop_zero_fields(&schemas, "io.k8s.api.apps.v1.Deployment", &mut deployment);
        assert_eq!(
            deployment,
            json!({
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "web"},
                "spec": {
                    // A pointer: 0 replicas is what was asked for.
                    "replicas": 0,
                    "selector": {"matchLabels": {"app": "web"}},
                    "template": {
                        "metadata": {"labels": {"app": "web"}},
                        "spec": {
                            "hostNetwork": true,
                            "automountServiceAccountToken": false,
                            "containers": [{
                                "name": "c",
                                "image": "busybox",
                                "env": [{"name": "EMPTY"}],
                                "securityContext": {"readOnlyRootFilesystem": false},
                                "ports": [{"containerPort": 80}],
                            }],
                        },
                    },
                },
            })
        );
    }
}
