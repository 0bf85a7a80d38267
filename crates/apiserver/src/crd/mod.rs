//! CustomResourceDefinitions, served as kube-apiserver's apiextensions server does: each
//! served version of an established CRD becomes a row of the [`Registry`] whose
//! [`CustomResource`] strategy prunes, defaults and validates objects against the version's
//! structural schema and prints its `additionalPrinterColumns`.
//!
//! - [`definition`]: the CustomResourceDefinition kind itself (defaulting, validation,
//!   status, the cleanup finalizer);
//! - [`structural`]: validation, pruning and defaulting against a structural schema;
//! - [`columns`]: printer columns and the JSONPath subset they use;
//! - [`conversion`]: conversion webhooks (`spec.conversion.strategy: Webhook`);
//! - [`controller`]: keeps the registry in step with the stored CRDs and deletes the objects
//!   of deleted ones.
//!
//! Rows are `&'static`, like the built-in table: each CRD generation leaks one set of rows
//! (bounded by CRD writes), so handlers hold them without reference counting.

pub mod columns;
pub mod controller;
pub mod conversion;
pub mod definition;
pub mod rules;
pub mod structural;

use schemars::{Schema, SchemaGenerator};
use serde_json::{json, Value};

use crate::kinds::{array_at, str_at};
use crate::protobuf::ProtobufError;
use crate::registry::{Registry, ResourceDef, Strategy, ALL_VERBS};
use crate::storage::Storage;
use crate::table::Column;
use crate::validation::FieldError;

pub use definition::CrdStrategy;

/// The API group of CustomResourceDefinitions.
pub const GROUP: &str = "apiextensions.k8s.io";

/// The finalizer a CRD carries while its custom objects are deleted.
pub const CLEANUP_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";

/// Where the scale subresource reads and writes, as `.spec.replicas`-style JSON paths.
#[derive(Clone, Debug, PartialEq)]
pub struct ScalePaths {
    /// `specReplicasPath`.
    pub spec_replicas: String,
    /// `statusReplicasPath`.
    pub status_replicas: String,
    /// `labelSelectorPath`, when given.
    pub label_selector: Option<String>,
}

/// One served version of a CustomResourceDefinition: its schema and presentation, and the
/// [`Strategy`] of its objects.
#[derive(Debug)]
pub struct CustomResource {
    /// The OpenAPI definition name (`com.example.v1.Widget`).
    pub definition: String,
    /// The `apiVersion` objects are stored in (the CRD's storage version).
    pub storage_api_version: String,
    /// The version's `openAPIV3Schema`.
    pub schema: Value,
    /// The table columns after Name (the printer columns, or Age when there are none).
    pub columns: Vec<columns::PrinterColumn>,
    /// The scale subresource's paths, when served.
    pub scale: Option<ScalePaths>,
    /// Whether the status subresource is served.
    pub status_subresource: bool,
    /// The conversion webhook (or what is wrong with its configuration), when the CRD's
    /// conversion strategy is `Webhook`; versions differ only in `apiVersion` otherwise.
    pub webhook: Option<std::sync::Arc<Result<conversion::Webhook, String>>>,
    /// The custom resources' kind.
    pub kind: &'static str,
}

impl CustomResource {
    /// Converts `obj` to `api_version` (an object without `apiVersion`, or already in that
    /// version, is left alone): through the conversion webhook, or by rewriting
    /// `apiVersion` (strategy `None`). The error is Kubernetes' message.
    pub fn convert(&self, obj: &mut Value, api_version: &str) -> Result<(), String> {
        self.convert_all(vec![obj], api_version)
    }

    /// [`CustomResource::convert`] for several objects (a list): one webhook call for all.
    pub fn convert_all(&self, objects: Vec<&mut Value>, api_version: &str) -> Result<(), String> {
        let mut objects: Vec<&mut Value> = objects
            .into_iter()
            .filter(|o| {
                o.get("apiVersion")
                    .is_some_and(|v| v.as_str() != Some(api_version))
            })
            .collect();
        let Some(first) = objects.first() else {
            return Ok(());
        };
        match self.webhook.as_deref() {
            None => {
                for obj in objects {
                    obj["apiVersion"] = Value::String(api_version.to_owned());
                }
                Ok(())
            }
            Some(Ok(webhook)) => webhook.convert_all(&mut objects, api_version),
            Some(Err(problem)) => Err(format!(
                "conversion webhook for {}, Kind={} failed: {problem}",
                str_at(first, "/apiVersion"),
                self.kind
            )),
        }
    }

    /// The fields of `obj` this version's schema would prune, with Kubernetes' paths: what
    /// `fieldValidation` reports as unknown (metadata is checked as ObjectMeta elsewhere).
    pub fn unknown_fields(&self, obj: &Value) -> Vec<String> {
        let mut copy = obj.clone();
        structural::prune_object(&self.schema, &mut copy)
    }

    /// The OpenAPI definition of the kind for the documents and for field tracking: the
    /// schema with the object's `apiVersion`, `kind` and `metadata`.
    pub fn openapi_definition(&self, def: &ResourceDef) -> Value {
        let mut schema = self.schema.clone();
        if !schema.is_object() {
            schema = json!({"type": "object"});
        }
        let properties = crate::kinds::object_mut(&mut schema, "properties");
        properties.insert(
            "apiVersion".into(),
            json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."}),
        );
        properties.insert(
            "kind".into(),
            json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents."}),
        );
        properties.insert(
            "metadata".into(),
            json!({"$ref": format!("{}io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", crate::schema::REF_PREFIX), "description": "Standard object's metadata."}),
        );
        schema["x-kubernetes-group-version-kind"] =
            json!([{"group": def.group, "kind": def.kind, "version": def.version}]);
        schema
    }
}

impl Strategy for CustomResource {
    fn prepare_for_create(&self, obj: &mut Value) {
        if self.status_subresource {
            if let Some(map) = obj.as_object_mut() {
                map.remove("status");
            }
        }
    }

    fn default(&self, obj: &mut Value) {
        structural::prune_object(&self.schema, obj);
        structural::apply_defaults(&self.schema, obj);
    }

    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        let mut errs = structural::validate_object(&self.schema, obj);
        errs.extend(rules::validate(&self.schema, obj));
        errs
    }

    fn validate_update(&self, new: &Value, old: &Value) -> Vec<FieldError> {
        rules::validate_update(&self.schema, new, old)
    }

    fn columns(&self) -> Vec<Column> {
        std::iter::once(Column::name())
            .chain(self.columns.iter().map(|c| c.column.clone()))
            .collect()
    }

    fn row(&self, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
        std::iter::once(crate::table::name_cell(obj))
            .chain(self.columns.iter().map(|c| c.cell(obj, now)))
            .collect()
    }
}

/// The `normalize` of custom objects: any JSON object (the schema does the rest).
fn object_only(obj: Value) -> Result<Value, String> {
    if obj.is_object() {
        Ok(obj)
    } else {
        Err("expected an object".into())
    }
}

/// The `schema` of custom rows: their definitions come from [`CustomResource`].
fn no_schema(_: &mut SchemaGenerator) -> Schema {
    Schema::default()
}

fn no_schema_name() -> String {
    String::new()
}

/// Custom objects are JSON (or YAML) only, as in Kubernetes.
fn no_protobuf(_: &[u8]) -> Result<Value, ProtobufError> {
    Err(ProtobufError::Unsupported("custom resources".into()))
}

fn leak(s: &str) -> &'static str {
    Box::leak(s.to_owned().into_boxed_str())
}

fn leak_all(values: &[Value]) -> &'static [&'static str] {
    let strs: Vec<&'static str> = values.iter().filter_map(Value::as_str).map(leak).collect();
    Box::leak(strs.into_boxed_slice())
}

/// The OpenAPI definition name of a custom kind: the group reversed, then version and kind
/// (`widgets.example.com` v1 -> `com.example.v1.Widget`).
pub fn definition_name(group: &str, version: &str, kind: &str) -> String {
    let reversed: Vec<&str> = group.split('.').rev().collect();
    format!("{}.{version}.{kind}", reversed.join("."))
}

/// Kubernetes' ordering of versions: GA before beta before alpha, higher numbers first,
/// then versions that do not look like Kubernetes versions, alphabetically.
pub fn version_priority(a: &str, b: &str) -> std::cmp::Ordering {
    fn parse(v: &str) -> Option<(u8, u64, u64)> {
        let rest = v.strip_prefix('v')?;
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let major: u64 = rest[..digits].parse().ok()?;
        let tail = &rest[digits..];
        if tail.is_empty() {
            return Some((2, major, 0));
        }
        for (stage, prefix) in [(1u8, "beta"), (0u8, "alpha")] {
            if let Some(n) = tail.strip_prefix(prefix) {
                return Some((stage, major, n.parse().ok()?));
            }
        }
        None
    }
    match (parse(a), parse(b)) {
        (Some(x), Some(y)) => y.cmp(&x),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.cmp(b),
    }
}

/// The rows a CRD serves: one per served version, in priority order. Empty for CRDs being
/// deleted. `store` resolves a conversion webhook's Service.
pub fn resource_defs(crd: &Value, store: Option<&Storage>) -> Vec<&'static ResourceDef> {
    if crd.pointer("/metadata/deletionTimestamp").is_some() {
        return Vec::new();
    }
    let group = str_at(crd, "/spec/group");
    let names = crd.pointer("/spec/names").cloned().unwrap_or_default();
    let kind = str_at(&names, "/kind");
    let plural = str_at(&names, "/plural");
    if group.is_empty() || kind.is_empty() || plural.is_empty() {
        return Vec::new();
    }
    let singular = match str_at(&names, "/singular") {
        "" => kind.to_ascii_lowercase(),
        s => s.to_owned(),
    };
    let versions = array_at(crd, "/spec/versions");
    let Some(storage) = versions
        .iter()
        .find(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
    else {
        return Vec::new();
    };
    let storage_api_version = format!("{group}/{}", str_at(storage, "/name"));
    let (group, kind, plural) = (leak(group), leak(kind), leak(plural));
    let singular = leak(&singular);
    let short_names = leak_all(array_at(&names, "/shortNames"));
    let categories = leak_all(array_at(&names, "/categories"));
    let storage_prefix = leak(&format!("{group}/{plural}"));
    let namespaced = str_at(crd, "/spec/scope") != "Cluster";
    let webhook = conversion::Webhook::of_crd(crd, store.cloned()).map(std::sync::Arc::new);
    let mut served: Vec<&Value> = versions
        .iter()
        .filter(|v| v.get("served").and_then(Value::as_bool) == Some(true))
        .collect();
    served.sort_by(|a, b| version_priority(str_at(a, "/name"), str_at(b, "/name")));
    served
        .into_iter()
        .map(|v| {
            let version = leak(str_at(v, "/name"));
            let scale = v.pointer("/subresources/scale").map(|s| ScalePaths {
                spec_replicas: str_at(s, "/specReplicasPath").to_owned(),
                status_replicas: str_at(s, "/statusReplicasPath").to_owned(),
                label_selector: Some(str_at(s, "/labelSelectorPath"))
                    .filter(|p| !p.is_empty())
                    .map(str::to_owned),
            });
            let status_subresource = v.pointer("/subresources/status").is_some();
            let custom: &'static CustomResource = Box::leak(Box::new(CustomResource {
                definition: definition_name(group, version, kind),
                storage_api_version: storage_api_version.clone(),
                schema: v
                    .pointer("/schema/openAPIV3Schema")
                    .cloned()
                    .unwrap_or_else(
                        || json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
                    ),
                columns: columns::for_version(array_at(v, "/additionalPrinterColumns")),
                scale: scale.clone(),
                status_subresource,
                webhook: webhook.clone(),
                kind,
            }));
            let def: &'static ResourceDef = Box::leak(Box::new(ResourceDef {
                group,
                version,
                kind,
                plural,
                singular,
                short_names,
                namespaced,
                verbs: ALL_VERBS,
                categories,
                status_subresource,
                storage_prefix,
                generation: true,
                delete_returns_object: false,
                selectable_fields: &[],
                normalize: object_only,
                schema: no_schema,
                schema_name: no_schema_name,
                strategy: custom,
                scale_subresource: scale.is_some(),
                protobuf: no_protobuf,
                custom: Some(custom),
                conversion: None,
            }));
            def
        })
        .collect()
}

/// The CustomResourceDefinition row of the built-in table.
pub fn crd_def() -> &'static ResourceDef {
    crate::kinds::REGISTRY
        .by_kind(GROUP, "v1", "CustomResourceDefinition")
        .expect("CustomResourceDefinitions are served")
}

/// Serves what `crds` define, replacing the registry's custom rows; `cache` keeps the rows
/// of CRDs whose spec did not change (by uid and generation), so nothing leaks again.
pub fn serve(
    registry: &Registry,
    crds: &[std::sync::Arc<Value>],
    cache: &mut controller::RowCache,
    storage: &Storage,
) {
    let mut defs = Vec::new();
    let mut live = std::collections::HashSet::new();
    for crd in crds {
        let key = (
            str_at(crd, "/metadata/uid").to_owned(),
            crd.pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(0),
            crd.pointer("/metadata/deletionTimestamp").is_some(),
        );
        live.insert(key.clone());
        let rows = cache
            .entry(key)
            .or_insert_with(|| resource_defs(crd, Some(storage)))
            .clone();
        defs.extend(rows);
    }
    cache.retain(|key, _| live.contains(key));
    defs.sort_by(|a, b| a.group.cmp(b.group).then(a.plural.cmp(b.plural)));
    registry.set_custom(defs);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_versions_as_kubernetes() {
        let mut versions = vec!["v1alpha1", "v1", "foo", "v2beta1", "v1beta2", "v2", "bar"];
        versions.sort_by(|a, b| version_priority(a, b));
        assert_eq!(
            versions,
            vec!["v2", "v1", "v2beta1", "v1beta2", "v1alpha1", "bar", "foo"]
        );
    }

    #[test]
    fn builds_one_row_per_served_version() {
        let crd = json!({
            "metadata": {"name": "widgets.example.com", "uid": "u"},
            "spec": {"group": "example.com", "scope": "Namespaced",
                "names": {"kind": "Widget", "plural": "widgets", "shortNames": ["wd"]},
                "versions": [
                    {"name": "v1beta1", "served": true, "storage": false},
                    {"name": "v1", "served": true, "storage": true,
                     "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas"}}},
                    {"name": "v0", "served": false, "storage": false},
                ]},
        });
        let defs = resource_defs(&crd, None);
        let versions: Vec<&str> = defs.iter().map(|d| d.version).collect();
        assert_eq!(versions, vec!["v1", "v1beta1"]);
        assert_eq!(defs[0].storage_prefix, "example.com/widgets");
        assert_eq!(defs[0].singular, "widget");
        assert!(defs[0].status_subresource && defs[0].scale_subresource);
        assert!(!defs[1].status_subresource);
        assert_eq!(defs[0].short_names, &["wd"]);
        let mut obj = json!({"apiVersion": "example.com/v1beta1"});
        defs[1].to_stored(&mut obj);
        assert_eq!(obj["apiVersion"], "example.com/v1");
        defs[1].to_served(&mut obj);
        assert_eq!(obj["apiVersion"], "example.com/v1beta1");
        assert_eq!(
            defs[0].definition_name(),
            "com.example.v1.Widget".to_owned()
        );
    }
}
