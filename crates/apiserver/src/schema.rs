//! The OpenAPI definitions of the served kinds, generated from k8s-openapi's schemas and
//! completed with what they lack: `x-kubernetes-group-version-kind` on each kind and the
//! strategic-merge-patch extensions (`x-kubernetes-patch-strategy`/`-merge-key`) of the
//! built-in types. One set of definitions serves the OpenAPI documents, unknown-field
//! detection (`fieldValidation`) and strategic merge patch.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use schemars::generate::SchemaSettings;
use serde_json::{json, Map, Value};

use crate::registry::{Registry, ResourceDef};

/// Prefix of every `$ref` in the definitions.
pub const REF_PREFIX: &str = "#/definitions/";

/// The patch strategy and merge key of fields of built-in types, as the Go structs declare
/// them in `patchStrategy`/`patchMergeKey` tags: (definition, field, strategy, merge key).
const PATCH_META: &[(&str, &str, &str, &str)] = &[
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "finalizers",
        "merge",
        "",
    ),
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "ownerReferences",
        "merge",
        "uid",
    ),
    ("io.k8s.api.core.v1.PodSpec", "containers", "merge", "name"),
    (
        "io.k8s.api.core.v1.PodSpec",
        "initContainers",
        "merge",
        "name",
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "ephemeralContainers",
        "merge",
        "name",
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "volumes",
        "merge,retainKeys",
        "name",
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "imagePullSecrets",
        "merge",
        "name",
    ),
    ("io.k8s.api.core.v1.PodSpec", "hostAliases", "merge", "ip"),
    (
        "io.k8s.api.core.v1.PodSpec",
        "topologySpreadConstraints",
        "merge",
        "topologyKey",
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "resourceClaims",
        "merge,retainKeys",
        "name",
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "schedulingGates",
        "merge",
        "name",
    ),
    ("io.k8s.api.core.v1.Container", "env", "merge", "name"),
    (
        "io.k8s.api.core.v1.Container",
        "ports",
        "merge",
        "containerPort",
    ),
    (
        "io.k8s.api.core.v1.Container",
        "volumeMounts",
        "merge",
        "mountPath",
    ),
    (
        "io.k8s.api.core.v1.Container",
        "volumeDevices",
        "merge",
        "devicePath",
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "env",
        "merge",
        "name",
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "volumeMounts",
        "merge",
        "mountPath",
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "volumeDevices",
        "merge",
        "devicePath",
    ),
    (
        "io.k8s.api.core.v1.PodStatus",
        "conditions",
        "merge",
        "type",
    ),
    ("io.k8s.api.core.v1.PodStatus", "podIPs", "merge", "ip"),
    ("io.k8s.api.core.v1.PodStatus", "hostIPs", "merge", "ip"),
    ("io.k8s.api.core.v1.ServiceSpec", "ports", "merge", "port"),
    (
        "io.k8s.api.core.v1.ServiceStatus",
        "conditions",
        "merge",
        "type",
    ),
    (
        "io.k8s.api.core.v1.ServiceAccount",
        "secrets",
        "merge",
        "name",
    ),
    ("io.k8s.api.core.v1.NodeSpec", "podCIDRs", "merge", ""),
    (
        "io.k8s.api.core.v1.NodeStatus",
        "conditions",
        "merge",
        "type",
    ),
    (
        "io.k8s.api.core.v1.NodeStatus",
        "addresses",
        "merge",
        "type",
    ),
    (
        "io.k8s.api.core.v1.NamespaceStatus",
        "conditions",
        "merge",
        "type",
    ),
    (
        "io.k8s.api.apps.v1.DeploymentSpec",
        "strategy",
        "retainKeys",
        "",
    ),
    (
        "io.k8s.api.apps.v1.DeploymentStatus",
        "conditions",
        "merge",
        "type",
    ),
    (
        "io.k8s.api.apps.v1.ReplicaSetStatus",
        "conditions",
        "merge",
        "type",
    ),
    (
        "io.k8s.api.apps.v1.StatefulSetStatus",
        "conditions",
        "merge",
        "type",
    ),
    (
        "io.k8s.api.apps.v1.DaemonSetStatus",
        "conditions",
        "merge",
        "type",
    ),
];

/// The generated definitions, keyed by definition name.
#[derive(Debug)]
pub struct Schemas {
    definitions: BTreeMap<String, Value>,
}

impl Schemas {
    /// Generates the definitions of every kind in `registry`, with their lists and the
    /// meta types the API paths refer to.
    pub fn generate(registry: &Registry) -> Schemas {
        let mut settings = SchemaSettings::draft07();
        settings.definitions_path = "/definitions".into();
        settings.meta_schema = None;
        let mut generator = settings.into_generator();
        let builtin: Vec<_> = registry
            .all()
            .into_iter()
            .filter(|d| d.custom.is_none())
            .collect();
        for def in &builtin {
            (def.schema)(&mut generator);
        }
        generator.subschema_for::<meta::Status>();
        generator.subschema_for::<meta::DeleteOptions>();
        generator.subschema_for::<meta::WatchEvent<serde_json::Value>>();
        generator.subschema_for::<meta::ListMeta>();
        generator.subschema_for::<meta::Patch>();
        generator.subschema_for::<k8s_openapi::api::autoscaling::v1::Scale>();
        generator.subschema_for::<k8s_openapi::api::core::v1::Binding>();
        generator.subschema_for::<k8s_openapi::api::policy::v1::Eviction>();
        generator.subschema_for::<k8s_openapi::api::authentication::v1::TokenRequest>();
        let mut definitions: BTreeMap<String, Value> =
            generator.take_definitions(true).into_iter().collect();

        for def in &builtin {
            let name = (def.schema_name)();
            let gvk = json!([{"group": def.group, "kind": def.kind, "version": def.version}]);
            if let Some(Value::Object(schema)) = definitions.get_mut(&name) {
                schema.insert("x-kubernetes-group-version-kind".into(), gvk);
            }
            definitions.insert(format!("{name}List"), list_definition(def, &name));
        }
        if let Some(Value::Object(status)) =
            definitions.get_mut("io.k8s.apimachinery.pkg.apis.meta.v1.Status")
        {
            status.insert(
                "x-kubernetes-group-version-kind".into(),
                json!([{"group": "", "kind": "Status", "version": "v1"}]),
            );
        }

        for (definition, field, strategy, key) in PATCH_META {
            let Some(property) = definitions
                .get_mut(*definition)
                .and_then(|d| d.get_mut("properties"))
                .and_then(|p| p.get_mut(*field))
                .and_then(Value::as_object_mut)
            else {
                continue;
            };
            property.insert("x-kubernetes-patch-strategy".into(), json!(strategy));
            if !key.is_empty() {
                property.insert("x-kubernetes-patch-merge-key".into(), json!(key));
                property.insert("x-kubernetes-list-type".into(), json!("map"));
                property.insert("x-kubernetes-list-map-keys".into(), json!([key]));
            }
        }
        for (definition, field, keys) in LIST_MAP_KEYS {
            if let Some(property) = definitions
                .get_mut(*definition)
                .and_then(|d| d.get_mut("properties"))
                .and_then(|p| p.get_mut(*field))
                .and_then(Value::as_object_mut)
            {
                property.insert("x-kubernetes-list-map-keys".into(), json!(keys));
            }
        }
        Schemas { definitions }
    }

    /// These definitions plus those of the custom resources `defs` (their kinds and lists).
    pub fn with_custom(&self, defs: &[&ResourceDef]) -> Schemas {
        let mut definitions = self.definitions.clone();
        for def in defs {
            let Some(custom) = def.custom else { continue };
            let name = def.definition_name();
            definitions.insert(name.clone(), custom.openapi_definition(def));
            definitions.insert(format!("{name}List"), list_definition(def, &name));
        }
        Schemas { definitions }
    }

    /// Every definition.
    pub fn definitions(&self) -> &BTreeMap<String, Value> {
        &self.definitions
    }

    /// One definition by name.
    pub fn definition(&self, name: &str) -> Option<&Value> {
        self.definitions.get(name)
    }

    /// Follows `$ref` (also inside a single-element `allOf`) to the schema it names.
    pub fn resolve<'a>(&'a self, schema: &'a Value) -> &'a Value {
        let mut current = schema;
        for _ in 0..16 {
            let target = referenced_definition(current).and_then(|name| self.definitions.get(name));
            match target {
                Some(next) => current = next,
                None => break,
            }
        }
        current
    }

    /// The schema of property `name` of an object schema, with the property's own
    /// extensions (which sit beside its `$ref`) preserved in the returned pair.
    pub fn property<'a>(&'a self, schema: &'a Value, name: &str) -> Option<&'a Value> {
        self.resolve(schema).get("properties")?.get(name)
    }

    /// The fields of `obj` that the schema of definition `root` does not know, as
    /// Kubernetes reports them (`spec.containers[0].foo`).
    pub fn unknown_fields(&self, root: &str, obj: &Value) -> Vec<String> {
        let mut unknown = Vec::new();
        if let Some(schema) = self.definitions.get(root) {
            self.walk_unknown(schema, obj, "", &mut unknown);
        }
        unknown
    }

    fn walk_unknown(&self, schema: &Value, value: &Value, path: &str, out: &mut Vec<String>) {
        let schema = self.resolve(schema);
        if schema.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true)) {
            return;
        }
        match value {
            Value::Object(map) => {
                if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
                    for (key, child) in map {
                        let child_path = if path.is_empty() {
                            key.clone()
                        } else {
                            format!("{path}.{key}")
                        };
                        match properties.get(key) {
                            Some(s) => self.walk_unknown(s, child, &child_path, out),
                            None => out.push(child_path),
                        }
                    }
                } else if let Some(additional) =
                    schema.get("additionalProperties").filter(|a| a.is_object())
                {
                    for (key, child) in map {
                        self.walk_unknown(additional, child, &format!("{path}.{key}"), out);
                    }
                }
            }
            Value::Array(items) => {
                if let Some(item_schema) = schema.get("items") {
                    for (i, item) in items.iter().enumerate() {
                        self.walk_unknown(item_schema, item, &format!("{path}[{i}]"), out);
                    }
                }
            }
            _ => {}
        }
    }
}

/// The name of the definition a schema refers to by `$ref` (bare or in a one-element
/// `allOf`, as k8s-openapi's schemas write a property with a description of its own).
pub fn referenced_definition(schema: &Value) -> Option<&str> {
    schema
        .get("$ref")
        .or_else(|| {
            schema
                .get("allOf")
                .and_then(Value::as_array)
                .filter(|a| a.len() == 1)
                .and_then(|a| a[0].get("$ref"))
        })
        .and_then(Value::as_str)?
        .strip_prefix(REF_PREFIX)
}

/// The definition of the list kind of `def`, whose items are definition `name`.
fn list_definition(def: &ResourceDef, name: &str) -> Value {
    json!({
        "description": format!("{}List is a list of {}.", def.kind, def.kind),
        "type": "object",
        "required": ["items"],
        "properties": {
            "apiVersion": {"description": "APIVersion defines the versioned schema of this representation of an object.", "type": "string"},
            "kind": {"description": "Kind is a string value representing the REST resource this object represents.", "type": "string"},
            "items": {"description": format!("List of {}.", def.plural), "type": "array", "items": {"$ref": format!("{REF_PREFIX}{name}")}},
            "metadata": {"$ref": format!("{REF_PREFIX}io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta"), "description": "Standard list metadata."},
        },
        "x-kubernetes-group-version-kind": [{"group": def.group, "kind": def.list_kind(), "version": def.version}],
    })
}

/// The patch strategy of a property schema: (strategies, merge key).
pub fn patch_meta(property: &Value) -> (Vec<&str>, Option<&str>) {
    let strategies = property
        .get("x-kubernetes-patch-strategy")
        .and_then(Value::as_str)
        .map(|s| s.split(',').collect())
        .unwrap_or_default();
    let key = property
        .get("x-kubernetes-patch-merge-key")
        .and_then(Value::as_str);
    (strategies, key)
}

/// Lists whose items server-side apply tells apart by more fields than the strategic merge
/// key: a port is the same port only with the same protocol (53/TCP and 53/UDP are two).
const LIST_MAP_KEYS: &[(&str, &str, &[&str])] = &[
    (
        "io.k8s.api.core.v1.ServiceSpec",
        "ports",
        &["port", "protocol"],
    ),
    (
        "io.k8s.api.core.v1.Container",
        "ports",
        &["containerPort", "protocol"],
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "ports",
        &["containerPort", "protocol"],
    ),
];

/// The fields identifying an item of a `map` list for server-side apply
/// (`x-kubernetes-list-map-keys`, else the strategic merge key).
pub fn list_map_keys(property: &Value) -> Option<Vec<&str>> {
    if let Some(keys) = property
        .get("x-kubernetes-list-map-keys")
        .and_then(Value::as_array)
    {
        let keys: Vec<&str> = keys.iter().filter_map(Value::as_str).collect();
        if !keys.is_empty() {
            return Some(keys);
        }
    }
    patch_meta(property).1.map(|k| vec![k])
}

/// The value of a list-map key of `item`, with the API's default for a key left out
/// (`protocol` is TCP), so an applied item without it matches the defaulted live one.
pub fn list_map_key_value(item: &Value, key: &str) -> Value {
    match item.get(key) {
        Some(v) if !v.is_null() => v.clone(),
        _ if key == "protocol" => Value::String("TCP".into()),
        _ => Value::Null,
    }
}

/// Rewrites every `$ref` from `#/definitions/` to `prefix` (OpenAPI v3 uses
/// `#/components/schemas/`).
pub fn rewrite_refs(value: &mut Value, prefix: &str) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get_mut("$ref") {
                if let Some(name) = r.strip_prefix(REF_PREFIX) {
                    *r = format!("{prefix}{name}");
                }
            }
            for child in map.values_mut() {
                rewrite_refs(child, prefix);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| rewrite_refs(v, prefix)),
        _ => {}
    }
}

/// The names of the definitions `value` refers to, transitively, starting from `roots`.
pub fn closure(schemas: &Schemas, roots: impl IntoIterator<Item = String>) -> Map<String, Value> {
    let mut out = Map::new();
    let mut pending: Vec<String> = roots.into_iter().collect();
    while let Some(name) = pending.pop() {
        if out.contains_key(&name) {
            continue;
        }
        let Some(schema) = schemas.definition(&name) else {
            continue;
        };
        collect_refs(schema, &mut pending);
        out.insert(name, schema.clone());
    }
    out
}

fn collect_refs(value: &Value, into: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(name) = map
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|r| r.strip_prefix(REF_PREFIX))
            {
                into.push(name.to_owned());
            }
            map.values().for_each(|v| collect_refs(v, into));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, into)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::REGISTRY;

    #[test]
    fn finds_unknown_fields_with_kubernetes_paths() {
        let schemas = Schemas::generate(&REGISTRY);
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "x", "labels": {"a": "b"}, "bogus": 1},
            "spec": {"containers": [{"name": "c", "image": "i", "imagePullPolicyy": "x"}]},
        });
        let unknown = schemas.unknown_fields("io.k8s.api.core.v1.Pod", &pod);
        assert_eq!(
            unknown,
            vec!["metadata.bogus", "spec.containers[0].imagePullPolicyy"]
        );
    }

    #[test]
    fn carries_patch_extensions_and_gvk() {
        let schemas = Schemas::generate(&REGISTRY);
        let spec = schemas.definition("io.k8s.api.core.v1.PodSpec").unwrap();
        let containers = schemas.property(spec, "containers").unwrap();
        assert_eq!(patch_meta(containers), (vec!["merge"], Some("name")));
        let pod = schemas.definition("io.k8s.api.core.v1.Pod").unwrap();
        assert_eq!(pod["x-kubernetes-group-version-kind"][0]["kind"], "Pod");
    }
}
