//! The CustomResourceDefinition kind: defaulting (names, conversion), validation as
//! apiextensions' `ValidateCustomResourceDefinition` (the subset skiff serves), the status
//! the API server maintains (accepted names, stored versions, conditions) and deletion
//! through the cleanup finalizer.

use serde_json::{json, Value};

use super::{structural, CLEANUP_FINALIZER};
use crate::kinds::{array_at, object_mut, set_default, str_at};
use crate::registry::Strategy;
use crate::table::Column;
use crate::validation::{self, FieldError};

/// The strategy of CustomResourceDefinitions.
pub struct CrdStrategy;

/// Sets condition `kind` of a CRD's status to `status`, keeping its transition time when
/// the status does not change; returns whether anything changed.
pub fn set_condition(
    crd: &mut Value,
    kind: &str,
    status: &str,
    reason: &str,
    message: &str,
) -> bool {
    let status_map = object_mut(crd, "status");
    let conditions = status_map.entry("conditions").or_insert_with(|| json!([]));
    if !conditions.is_array() {
        *conditions = json!([]);
    }
    let list = conditions.as_array_mut().expect("just made an array");
    let wanted = json!({
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": crate::handlers::now_rfc3339(),
    });
    match list.iter_mut().find(|c| str_at(c, "/type") == kind) {
        Some(existing) => {
            if str_at(existing, "/status") == status
                && str_at(existing, "/reason") == reason
                && str_at(existing, "/message") == message
            {
                return false;
            }
            let mut wanted = wanted;
            if str_at(existing, "/status") == status {
                wanted["lastTransitionTime"] = existing["lastTransitionTime"].clone();
            }
            *existing = wanted;
        }
        None => list.push(wanted),
    }
    true
}

/// Whether condition `kind` of a CRD is `True`.
pub fn condition_true(crd: &Value, kind: &str) -> bool {
    array_at(crd, "/status/conditions")
        .iter()
        .any(|c| str_at(c, "/type") == kind && str_at(c, "/status") == "True")
}

impl Strategy for CrdStrategy {
    fn prepare_for_create(&self, obj: &mut Value) {
        obj["status"] = json!({});
    }

    fn default(&self, obj: &mut Value) {
        let kind = str_at(obj, "/spec/names/kind").to_owned();
        let spec = object_mut(obj, "spec");
        let names = spec.entry("names").or_insert_with(|| json!({}));
        if let Some(names) = names.as_object_mut() {
            if !kind.is_empty() {
                set_default(names, "singular", json!(kind.to_ascii_lowercase()));
                set_default(names, "listKind", json!(format!("{kind}List")));
            }
        }
        let conversion = spec.entry("conversion").or_insert_with(|| json!({}));
        if let Some(conversion) = conversion.as_object_mut() {
            set_default(conversion, "strategy", json!("None"));
        }
        // What the API server itself maintains in status (the naming and established
        // controllers of apiextensions, done in line: names never conflict across CRDs
        // because a CRD's name is its plural and group).
        let names = obj.pointer("/spec/names").cloned().unwrap_or_default();
        let storage: Option<String> = array_at(obj, "/spec/versions")
            .iter()
            .find(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
            .map(|v| str_at(v, "/name").to_owned());
        let status = object_mut(obj, "status");
        status.insert("acceptedNames".into(), names);
        let stored = status.entry("storedVersions").or_insert_with(|| json!([]));
        if let (Some(list), Some(storage)) = (stored.as_array_mut(), storage) {
            if !list.iter().any(|v| v.as_str() == Some(storage.as_str())) {
                list.push(json!(storage));
            }
        }
        set_condition(
            obj,
            "NamesAccepted",
            "True",
            "NoConflicts",
            "no conflicts found",
        );
    }

    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        validate_crd(obj)
    }

    fn validate_update(&self, new: &Value, old: &Value) -> Vec<FieldError> {
        let mut errs = Vec::new();
        for (pointer, field) in [("/spec/scope", "spec.scope"), ("/spec/group", "spec.group")] {
            if str_at(new, pointer) != str_at(old, pointer) {
                errs.push(FieldError::invalid(
                    field,
                    json!(str_at(new, pointer)),
                    "field is immutable",
                ));
            }
        }
        errs
    }

    fn columns(&self) -> Vec<Column> {
        crate::kinds::printers::CREATED_AT.columns()
    }

    fn row(&self, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
        crate::kinds::printers::CREATED_AT.row(obj, now)
    }

    fn graceful_delete(&self, obj: &Value, _grace_period: Option<i64>) -> Option<i64> {
        // Only mark: the controller deletes the custom objects, then the CRD.
        obj.pointer("/metadata/deletionTimestamp")
            .is_none()
            .then_some(0)
    }

    fn on_mark_deleted(&self, obj: &mut Value) {
        let meta = object_mut(obj, "metadata");
        let finalizers = meta.entry("finalizers").or_insert_with(|| json!([]));
        if let Some(list) = finalizers.as_array_mut() {
            if !list.iter().any(|f| f.as_str() == Some(CLEANUP_FINALIZER)) {
                list.push(json!(CLEANUP_FINALIZER));
            }
        }
        set_condition(
            obj,
            "Terminating",
            "True",
            "InstanceDeletionInProgress",
            "CustomResource deletion is in progress",
        );
    }
}

/// Validates a CustomResourceDefinition (`ValidateCustomResourceDefinition`, the parts skiff
/// serves).
pub fn validate_crd(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let group = str_at(obj, "/spec/group");
    let plural = str_at(obj, "/spec/names/plural");
    let name = str_at(obj, "/metadata/name");
    if name != format!("{plural}.{group}") {
        errs.push(FieldError::invalid(
            "metadata.name",
            json!(name),
            "must be spec.names.plural+\".\"+spec.group",
        ));
    }
    if group.is_empty() {
        errs.push(FieldError::required("spec.group", ""));
    } else {
        errs.extend(validation::errors_for(
            "spec.group",
            group,
            validation::dns1123_subdomain(group),
        ));
        if !group.contains('.') {
            errs.push(FieldError::invalid(
                "spec.group",
                json!(group),
                "should be a domain with at least one dot",
            ));
        }
    }
    match str_at(obj, "/spec/scope") {
        "Namespaced" | "Cluster" => {}
        "" => errs.push(FieldError::required("spec.scope", "")),
        other => errs.push(FieldError::not_supported(
            "spec.scope",
            json!(other),
            &["Cluster", "Namespaced"],
        )),
    }
    for (field, label) in [("plural", true), ("singular", true), ("kind", false)] {
        let value = str_at(obj, &format!("/spec/names/{field}"));
        let path = format!("spec.names.{field}");
        if value.is_empty() {
            errs.push(FieldError::required(path, ""));
        } else if label {
            errs.extend(validation::errors_for(
                &path,
                value,
                validation::dns1035_label(value),
            ));
        }
    }
    for (i, short) in array_at(obj, "/spec/names/shortNames").iter().enumerate() {
        let short = short.as_str().unwrap_or("");
        errs.extend(validation::errors_for(
            &format!("spec.names.shortNames[{i}]"),
            short,
            validation::dns1035_label(short),
        ));
    }
    errs.extend(super::conversion::validate(obj));
    let versions = array_at(obj, "/spec/versions");
    if versions.is_empty() {
        errs.push(FieldError::invalid(
            "spec.versions",
            json!(versions),
            "must have exactly one version marked as storage version",
        ));
        return errs;
    }
    let storage = versions
        .iter()
        .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        .count();
    if storage != 1 {
        errs.push(FieldError::invalid(
            "spec.versions",
            json!(versions),
            "must have exactly one version marked as storage version",
        ));
    }
    if !versions
        .iter()
        .any(|v| v.get("served").and_then(Value::as_bool) == Some(true))
    {
        errs.push(FieldError::invalid(
            "spec.versions",
            json!(versions),
            "must have at least one version marked as served",
        ));
    }
    let mut seen = Vec::new();
    for (i, version) in versions.iter().enumerate() {
        let path = format!("spec.versions[{i}]");
        let name = str_at(version, "/name");
        if name.is_empty() {
            errs.push(FieldError::required(format!("{path}.name"), ""));
        } else {
            errs.extend(validation::errors_for(
                &format!("{path}.name"),
                name,
                validation::dns1035_label(name),
            ));
        }
        if seen.contains(&name) {
            errs.push(FieldError::duplicate(format!("{path}.name"), json!(name)));
        }
        seen.push(name);
        match version.pointer("/schema/openAPIV3Schema") {
            None => errs.push(FieldError::required(
                format!("{path}.schema.openAPIV3Schema"),
                "schemas are required",
            )),
            Some(schema) => errs.extend(structural::check(
                schema,
                &format!("{path}.schema.openAPIV3Schema"),
            )),
        }
        if let Some(scale) = version.pointer("/subresources/scale") {
            let scale_path = format!("{path}.subresources.scale");
            for (key, required) in [
                ("specReplicasPath", true),
                ("statusReplicasPath", true),
                ("labelSelectorPath", false),
            ] {
                let value = str_at(scale, &format!("/{key}"));
                if value.is_empty() {
                    if required {
                        errs.push(FieldError::required(format!("{scale_path}.{key}"), ""));
                    }
                } else if !value.starts_with('.') || value.contains('[') {
                    errs.push(FieldError::invalid(
                        format!("{scale_path}.{key}"),
                        json!(value),
                        "should be a json path under .spec or .status",
                    ));
                }
            }
        }
        for (j, column) in array_at(version, "/additionalPrinterColumns")
            .iter()
            .enumerate()
        {
            let column_path = format!("{path}.additionalPrinterColumns[{j}]");
            if str_at(column, "/name").is_empty() {
                errs.push(FieldError::required(format!("{column_path}.name"), ""));
            }
            let kind = str_at(column, "/type");
            if !["integer", "number", "string", "boolean", "date"].contains(&kind) {
                errs.push(FieldError::not_supported(
                    format!("{column_path}.type"),
                    json!(kind),
                    &["boolean", "date", "integer", "number", "string"],
                ));
            }
            if str_at(column, "/jsonPath").is_empty() {
                errs.push(FieldError::required(format!("{column_path}.jsonPath"), ""));
            }
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crd() -> Value {
        json!({
            "metadata": {"name": "widgets.example.com"},
            "spec": {"group": "example.com", "scope": "Namespaced",
                "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
                "versions": [{"name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object"}}}]},
        })
    }

    #[test]
    fn accepts_a_valid_crd_and_fills_status() {
        let mut obj = crd();
        CrdStrategy.prepare_for_create(&mut obj);
        CrdStrategy.default(&mut obj);
        assert!(validate_crd(&obj).is_empty(), "{:?}", validate_crd(&obj));
        assert_eq!(obj["spec"]["names"]["listKind"], "WidgetList");
        assert_eq!(obj["status"]["storedVersions"], json!(["v1"]));
        assert!(condition_true(&obj, "NamesAccepted"));
    }

    #[test]
    fn rejects_what_kubernetes_rejects() {
        let mut obj = crd();
        obj["metadata"]["name"] = json!("widgets.other.com");
        obj["spec"]["scope"] = json!("Global");
        obj["spec"]["versions"][0]["storage"] = json!(false);
        obj["spec"]["versions"][0]["schema"] = json!({});
        let fields: Vec<String> = validate_crd(&obj).into_iter().map(|e| e.field).collect();
        assert_eq!(
            fields,
            vec![
                "metadata.name",
                "spec.scope",
                "spec.versions",
                "spec.versions[0].schema.openAPIV3Schema"
            ]
        );
    }
}
