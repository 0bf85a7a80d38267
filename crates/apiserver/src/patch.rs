//! The three patch formats of `kubectl patch` and `kubectl apply`: JSON patch (RFC 6902),
//! JSON merge patch (RFC 7386) and strategic merge patch, whose list semantics come from the
//! `x-kubernetes-patch-strategy`/`-merge-key` extensions of the schema.
//!
//! Strategic merge patch directives handled, as `k8s.io/apimachinery/pkg/util/strategicpatch`
//! defines them: `$patch: replace|delete|merge` in maps and list elements,
//! `$deleteFromPrimitiveList/<field>`, `$setElementOrder/<field>` and `$retainKeys`.

use serde_json::{Map, Value};

use crate::schema::{patch_meta, Schemas};

/// The patch formats, by request Content-Type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchType {
    /// `application/json-patch+json`.
    Json,
    /// `application/merge-patch+json`.
    Merge,
    /// `application/strategic-merge-patch+json`.
    StrategicMerge,
}

/// The media types of the supported patch formats.
pub const PATCH_MEDIA_TYPES: &[&str] = &[
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
];

impl PatchType {
    /// The patch type of a Content-Type, if supported.
    pub fn from_content_type(content_type: &str) -> Option<PatchType> {
        match content_type.split(';').next().unwrap_or("").trim() {
            "application/json-patch+json" => Some(PatchType::Json),
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/strategic-merge-patch+json" => Some(PatchType::StrategicMerge),
            _ => None,
        }
    }
}

/// Why a patch could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    /// The patch body is not valid for its format.
    #[error("{0}")]
    Malformed(String),
    /// A JSON patch operation failed (test failed, path missing).
    #[error("{0}")]
    Apply(String),
}

/// Applies `patch` of type `kind` to `current`, for objects of definition `root`.
pub fn apply(
    kind: PatchType,
    current: &Value,
    patch: &[u8],
    schemas: &Schemas,
    root: &str,
) -> Result<Value, PatchError> {
    match kind {
        PatchType::Json => {
            let ops: json_patch::Patch = serde_json::from_slice(patch)
                .map_err(|e| PatchError::Malformed(format!("error decoding patch: {e}")))?;
            let mut doc = current.clone();
            json_patch::patch(&mut doc, &ops).map_err(|e| PatchError::Apply(e.to_string()))?;
            Ok(doc)
        }
        PatchType::Merge => {
            let patch: Value = serde_json::from_slice(patch)
                .map_err(|e| PatchError::Malformed(format!("error decoding patch: {e}")))?;
            if !patch.is_object() {
                return Err(PatchError::Malformed(
                    "json: cannot unmarshal non-object into merge patch".into(),
                ));
            }
            let mut doc = current.clone();
            json_patch::merge(&mut doc, &patch);
            Ok(doc)
        }
        PatchType::StrategicMerge => {
            let patch: Value = serde_json::from_slice(patch)
                .map_err(|e| PatchError::Malformed(format!("error decoding patch: {e}")))?;
            let Value::Object(patch) = patch else {
                return Err(PatchError::Malformed(
                    "unable to find api field in struct: strategic merge patch must be an object"
                        .into(),
                ));
            };
            let schema = schemas.definition(root).cloned().unwrap_or(Value::Null);
            let merged = merge_map(
                current.as_object().cloned().unwrap_or_default(),
                patch,
                &schema,
                schemas,
            )?;
            Ok(Value::Object(merged.unwrap_or_default()))
        }
    }
}

/// Merges a patch map into an original map; `None` means "delete this map".
fn merge_map(
    mut original: Map<String, Value>,
    mut patch: Map<String, Value>,
    schema: &Value,
    schemas: &Schemas,
) -> Result<Option<Map<String, Value>>, PatchError> {
    match patch.remove("$patch").as_ref().and_then(Value::as_str) {
        Some("delete") => return Ok(None),
        Some("replace") => return Ok(Some(strip_directives(patch))),
        Some("merge") | None => {}
        Some(other) => {
            return Err(PatchError::Malformed(format!(
                "Unknown patch type: {other} in map"
            )))
        }
    }
    let retain_keys = patch.remove("$retainKeys");

    // Directives addressing list fields are applied with their list.
    let mut element_orders: Map<String, Value> = Map::new();
    let mut primitive_deletes: Map<String, Value> = Map::new();
    for key in patch.keys().cloned().collect::<Vec<_>>() {
        if let Some(field) = key.strip_prefix("$setElementOrder/") {
            element_orders.insert(field.to_owned(), patch.remove(&key).unwrap_or_default());
        } else if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/") {
            primitive_deletes.insert(field.to_owned(), patch.remove(&key).unwrap_or_default());
        }
    }

    for (field, deletions) in &primitive_deletes {
        if let Some(Value::Array(items)) = original.get_mut(field) {
            let deletions = deletions.as_array().cloned().unwrap_or_default();
            items.retain(|v| !deletions.contains(v));
        }
    }

    let touched: Vec<String> = patch.keys().cloned().collect();
    for (key, patch_value) in patch {
        let property = schemas
            .property(schema, &key)
            .cloned()
            .unwrap_or(Value::Null);
        let property_schema = schemas.resolve(&property).clone();
        if patch_value.is_null() {
            original.remove(&key);
            continue;
        }
        let merged = match (original.remove(&key), patch_value) {
            (Some(Value::Object(o)), Value::Object(p)) => {
                let child_schema = if property_schema.get("properties").is_some() {
                    property_schema.clone()
                } else {
                    property_schema
                        .get("additionalProperties")
                        .cloned()
                        .map(|a| {
                            // A map of values: merge each entry by its own schema.
                            serde_json::json!({"additionalProperties": a})
                        })
                        .unwrap_or(Value::Null)
                };
                if child_schema.get("additionalProperties").is_some() {
                    Some(Value::Object(merge_plain_map(o, p)))
                } else {
                    merge_map(o, p, &child_schema, schemas)?.map(Value::Object)
                }
            }
            (Some(Value::Array(o)), Value::Array(p)) => {
                let (strategies, merge_key) = patch_meta(&property);
                if strategies.contains(&"merge") {
                    let items_schema = property_schema.get("items").cloned().unwrap_or(Value::Null);
                    Some(Value::Array(merge_list(
                        o,
                        p,
                        merge_key,
                        element_orders.get(&key),
                        &items_schema,
                        schemas,
                    )?))
                } else {
                    Some(Value::Array(strip_list(p)))
                }
            }
            (None, Value::Object(p)) => {
                let child_schema = property_schema.clone();
                merge_map(Map::new(), p, &child_schema, schemas)?.map(Value::Object)
            }
            (None, Value::Array(p)) => {
                let (strategies, merge_key) = patch_meta(&property);
                if strategies.contains(&"merge") {
                    let items_schema = property_schema.get("items").cloned().unwrap_or(Value::Null);
                    Some(Value::Array(merge_list(
                        Vec::new(),
                        p,
                        merge_key,
                        element_orders.get(&key),
                        &items_schema,
                        schemas,
                    )?))
                } else {
                    Some(Value::Array(strip_list(p)))
                }
            }
            (_, p) => Some(p),
        };
        if let Some(v) = merged {
            original.insert(key, v);
        }
    }

    // `$setElementOrder` for a list the patch did not otherwise touch only reorders it.
    for (field, order) in &element_orders {
        if touched.contains(field) {
            continue;
        }
        let property = schemas
            .property(schema, field)
            .cloned()
            .unwrap_or(Value::Null);
        if let (Some(Value::Array(list)), (_, Some(merge_key))) =
            (original.get_mut(field), patch_meta(&property))
        {
            *list = reorder(std::mem::take(list), merge_key, order);
        }
    }
    if let Some(Value::Array(keys)) = retain_keys {
        let keep: Vec<&str> = keys.iter().filter_map(Value::as_str).collect();
        original.retain(|k, _| keep.contains(&k.as_str()));
    }
    Ok(Some(original))
}

/// Merges maps without a schema of their own (labels, annotations, data): RFC 7386.
fn merge_plain_map(
    mut original: Map<String, Value>,
    patch: Map<String, Value>,
) -> Map<String, Value> {
    for (k, v) in patch {
        if v.is_null() {
            original.remove(&k);
        } else {
            original.insert(k, v);
        }
    }
    original
}

/// Merges a list with the `merge` strategy: by merge key for maps, as a set for primitives.
fn merge_list(
    mut original: Vec<Value>,
    patch: Vec<Value>,
    merge_key: Option<&str>,
    order: Option<&Value>,
    items_schema: &Value,
    schemas: &Schemas,
) -> Result<Vec<Value>, PatchError> {
    let Some(merge_key) = merge_key else {
        // A set of primitives: union, keeping the original order.
        for item in patch {
            if !original.contains(&item) {
                original.push(item);
            }
        }
        return Ok(original);
    };
    if patch
        .iter()
        .any(|p| p.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        return Ok(strip_list(
            patch
                .into_iter()
                .filter(|p| p.get("$patch").is_none())
                .collect(),
        ));
    }
    let mut patched_keys: Vec<Value> = Vec::new();
    for item in patch {
        let Value::Object(mut item) = item else {
            return Err(PatchError::Malformed(format!(
                "merging list by key {merge_key:?}: element is not an object"
            )));
        };
        let key = item.get(merge_key).cloned().ok_or_else(|| {
            PatchError::Malformed(format!(
                "map: {item:?} does not contain declared merge key: {merge_key}"
            ))
        })?;
        let position = original.iter().position(|o| o.get(merge_key) == Some(&key));
        if item.get("$patch").and_then(Value::as_str) == Some("delete") {
            if let Some(i) = position {
                original.remove(i);
            }
            continue;
        }
        item.remove("$patch");
        patched_keys.push(key);
        match position {
            Some(i) => {
                let existing = std::mem::take(&mut original[i]);
                let merged = merge_map(
                    existing.as_object().cloned().unwrap_or_default(),
                    item,
                    items_schema,
                    schemas,
                )?;
                original[i] = Value::Object(merged.unwrap_or_default());
            }
            None => {
                let merged = merge_map(Map::new(), item, items_schema, schemas)?;
                original.push(Value::Object(merged.unwrap_or_default()));
            }
        }
    }
    Ok(match order {
        Some(order) => reorder(original, merge_key, order),
        None => original,
    })
}

/// Puts the elements named in a `$setElementOrder` list first, in that order; the others
/// keep their relative order after them.
fn reorder(mut list: Vec<Value>, merge_key: &str, order: &Value) -> Vec<Value> {
    let wanted: Vec<&Value> = order
        .as_array()
        .map(|o| o.iter().filter_map(|e| e.get(merge_key)).collect())
        .unwrap_or_default();
    let mut ordered: Vec<Value> = Vec::with_capacity(list.len());
    for key in wanted {
        if let Some(i) = list.iter().position(|o| o.get(merge_key) == Some(key)) {
            ordered.push(list.remove(i));
        }
    }
    ordered.extend(list);
    ordered
}

fn strip_directives(mut map: Map<String, Value>) -> Map<String, Value> {
    map.retain(|k, _| !k.starts_with('$'));
    map
}

fn strip_list(items: Vec<Value>) -> Vec<Value> {
    items
        .into_iter()
        .map(|v| match v {
            Value::Object(m) => Value::Object(strip_directives(m)),
            other => other,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::kinds::REGISTRY;

    fn smp(current: Value, patch: Value) -> Value {
        let schemas = Schemas::generate(&REGISTRY);
        apply(
            PatchType::StrategicMerge,
            &current,
            patch.to_string().as_bytes(),
            &schemas,
            "io.k8s.api.core.v1.Pod",
        )
        .unwrap()
    }

    #[test]
    fn strategic_merge_merges_containers_by_name() {
        let pod = json!({"metadata": {"labels": {"a": "1", "b": "2"}},
            "spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]}});
        let out = smp(
            pod,
            json!({"metadata": {"labels": {"b": null, "c": "3"}},
                "spec": {"containers": [{"name": "b", "image": "z"}, {"name": "c", "image": "w"}]}}),
        );
        assert_eq!(out["metadata"]["labels"], json!({"a": "1", "c": "3"}));
        let images: Vec<&str> = out["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["image"].as_str().unwrap())
            .collect();
        assert_eq!(images, ["x", "z", "w"]);
    }

    #[test]
    fn strategic_merge_directives() {
        let pod = json!({"metadata": {"finalizers": ["a", "b"]},
            "spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}],
                     "tolerations": [{"key": "k"}]}});
        let out = smp(
            pod,
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"], "finalizers": ["c"]},
                "spec": {"$setElementOrder/containers": [{"name": "b"}, {"name": "a"}],
                         "containers": [{"name": "a", "$patch": "delete"}],
                         "tolerations": [{"key": "t"}]}}),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["b", "c"]));
        assert_eq!(
            out["spec"]["containers"],
            json!([{"name": "b", "image": "y"}])
        );
        assert_eq!(out["spec"]["tolerations"], json!([{"key": "t"}]));
    }
}
