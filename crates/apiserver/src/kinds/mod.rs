//! The served kinds: the registry table and each kind's strategy (defaulting, validation,
//! printer columns), following the behaviour of Kubernetes' `pkg/registry/*/strategy.go`,
//! `pkg/apis/*/v1/defaults.go` and `pkg/printers/internalversion`.

mod config;
mod event;
mod namespace;
mod node;
mod pod;
mod service;
mod workloads;

use k8s_openapi::api::apps::v1 as apps;
use k8s_openapi::api::core::v1 as core;
use serde_json::{json, Map, Value};

use crate::registry::{normalize, schema, schema_name, Registry, ResourceDef, ALL_VERBS};
use crate::validation::{self, FieldError};

pub use namespace::INITIAL_NAMESPACES;

/// One row of the registry table for a typed kind.
macro_rules! resource {
    ($ty:ty, $group:expr, $kind:expr, $plural:expr, $singular:expr, namespaced: $ns:expr,
     short: $short:expr, categories: $cats:expr, status: $status:expr, prefix: $prefix:expr,
     generation: $generation:expr, delete_returns_object: $dro:expr, fields: $fields:expr,
     strategy: $strategy:expr) => {
        ResourceDef {
            group: $group,
            version: "v1",
            kind: $kind,
            plural: $plural,
            singular: $singular,
            short_names: $short,
            namespaced: $ns,
            verbs: ALL_VERBS,
            categories: $cats,
            status_subresource: $status,
            storage_prefix: $prefix,
            generation: $generation,
            delete_returns_object: $dro,
            selectable_fields: $fields,
            normalize: normalize::<$ty>,
            schema: schema::<$ty>,
            schema_name: schema_name::<$ty>,
            strategy: $strategy,
        }
    };
}

/// Every resource skiff serves.
pub static RESOURCES: &[ResourceDef] = &[
    resource!(core::Namespace, "", "Namespace", "namespaces", "namespace", namespaced: false,
        short: &["ns"], categories: &[], status: true, prefix: "namespaces",
        generation: false, delete_returns_object: true, fields: &["status.phase"],
        strategy: &namespace::NamespaceStrategy),
    resource!(core::Pod, "", "Pod", "pods", "pod", namespaced: true,
        short: &["po"], categories: &["all"], status: true, prefix: "pods",
        generation: true, delete_returns_object: true,
        fields: &["spec.nodeName", "spec.restartPolicy", "spec.schedulerName",
            "spec.serviceAccountName", "spec.hostNetwork", "status.phase", "status.podIP",
            "status.nominatedNodeName"],
        strategy: &pod::PodStrategy),
    resource!(core::Service, "", "Service", "services", "service", namespaced: true,
        short: &["svc"], categories: &["all"], status: true, prefix: "services/specs",
        generation: false, delete_returns_object: true, fields: &[],
        strategy: &service::ServiceStrategy),
    resource!(core::Endpoints, "", "Endpoints", "endpoints", "endpoints", namespaced: true,
        short: &["ep"], categories: &[], status: false, prefix: "services/endpoints",
        generation: false, delete_returns_object: false, fields: &[],
        strategy: &service::EndpointsStrategy),
    resource!(core::ConfigMap, "", "ConfigMap", "configmaps", "configmap", namespaced: true,
        short: &["cm"], categories: &[], status: false, prefix: "configmaps",
        generation: false, delete_returns_object: false, fields: &[],
        strategy: &config::ConfigMapStrategy),
    resource!(core::Secret, "", "Secret", "secrets", "secret", namespaced: true,
        short: &[], categories: &[], status: false, prefix: "secrets",
        generation: false, delete_returns_object: false, fields: &["type"],
        strategy: &config::SecretStrategy),
    resource!(core::ServiceAccount, "", "ServiceAccount", "serviceaccounts", "serviceaccount",
        namespaced: true, short: &["sa"], categories: &[], status: false,
        prefix: "serviceaccounts", generation: false, delete_returns_object: true, fields: &[],
        strategy: &config::ServiceAccountStrategy),
    resource!(core::Node, "", "Node", "nodes", "node", namespaced: false,
        short: &["no"], categories: &[], status: true, prefix: "minions",
        generation: false, delete_returns_object: false, fields: &["spec.unschedulable"],
        strategy: &node::NodeStrategy),
    resource!(core::Event, "", "Event", "events", "event", namespaced: true,
        short: &["ev"], categories: &[], status: false, prefix: "events",
        generation: false, delete_returns_object: false,
        fields: &["involvedObject.kind", "involvedObject.namespace", "involvedObject.name",
            "involvedObject.uid", "involvedObject.apiVersion", "involvedObject.resourceVersion",
            "involvedObject.fieldPath", "reason", "reportingComponent", "source", "type"],
        strategy: &event::EventStrategy),
    resource!(apps::Deployment, "apps", "Deployment", "deployments", "deployment",
        namespaced: true, short: &["deploy"], categories: &["all"], status: true,
        prefix: "deployments", generation: true, delete_returns_object: false, fields: &[],
        strategy: &workloads::DeploymentStrategy),
    resource!(apps::ReplicaSet, "apps", "ReplicaSet", "replicasets", "replicaset",
        namespaced: true, short: &["rs"], categories: &["all"], status: true,
        prefix: "replicasets", generation: true, delete_returns_object: false,
        fields: &["status.replicas"], strategy: &workloads::ReplicaSetStrategy),
    resource!(apps::StatefulSet, "apps", "StatefulSet", "statefulsets", "statefulset",
        namespaced: true, short: &["sts"], categories: &["all"], status: true,
        prefix: "statefulsets", generation: true, delete_returns_object: false, fields: &[],
        strategy: &workloads::StatefulSetStrategy),
    resource!(apps::DaemonSet, "apps", "DaemonSet", "daemonsets", "daemonset",
        namespaced: true, short: &["ds"], categories: &["all"], status: true,
        prefix: "daemonsets", generation: true, delete_returns_object: false, fields: &[],
        strategy: &workloads::DaemonSetStrategy),
];

/// The registry of [`RESOURCES`].
pub static REGISTRY: Registry = Registry::new(RESOURCES);

/// The string at a JSON pointer, or "".
pub(crate) fn str_at<'a>(obj: &'a Value, pointer: &str) -> &'a str {
    obj.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// The integer at a JSON pointer, or 0.
pub(crate) fn int_at(obj: &Value, pointer: &str) -> i64 {
    obj.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

/// The array at a JSON pointer, or an empty slice.
pub(crate) fn array_at<'a>(obj: &'a Value, pointer: &str) -> &'a [Value] {
    obj.pointer(pointer)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// The object under `key` of `obj`, created when absent (or not an object).
pub(crate) fn object_mut<'a>(obj: &'a mut Value, key: &str) -> &'a mut Map<String, Value> {
    if !obj.is_object() {
        *obj = json!({});
    }
    let map = obj.as_object_mut().expect("just made an object");
    let entry = map.entry(key.to_owned()).or_insert_with(|| json!({}));
    if !entry.is_object() {
        *entry = json!({});
    }
    entry.as_object_mut().expect("just made an object")
}

/// Sets `key` to `value` unless already present (and not null).
pub(crate) fn set_default(map: &mut Map<String, Value>, key: &str, value: Value) {
    match map.get(key) {
        Some(v) if !v.is_null() => {}
        _ => {
            map.insert(key.to_owned(), value);
        }
    }
}

/// `<none>` for empty strings, as kubectl prints them.
pub(crate) fn or_none(s: impl Into<String>) -> Value {
    let s = s.into();
    json!(if s.is_empty() { "<none>".to_owned() } else { s })
}

/// A label selector (`matchLabels` and `matchExpressions`) as kubectl prints it.
pub(crate) fn selector_string(selector: Option<&Value>) -> String {
    let Some(selector) = selector else {
        return String::new();
    };
    let mut parts: Vec<String> = Vec::new();
    if let Some(labels) = selector.get("matchLabels").and_then(Value::as_object) {
        parts.extend(
            labels
                .iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))),
        );
    }
    for expr in selector
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let key = str_at(expr, "/key");
        let values: Vec<&str> = array_at(expr, "/values")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        parts.push(match str_at(expr, "/operator") {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_owned(),
            "DoesNotExist" => format!("!{key}"),
            other => format!("{key} {other}"),
        });
    }
    parts.join(",")
}

/// Comma-separated container names and images of a pod spec, for `-o wide`.
pub(crate) fn containers_and_images(pod_spec: Option<&Value>) -> (String, String) {
    let containers = pod_spec
        .and_then(|s| s.get("containers"))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let names: Vec<&str> = containers.iter().map(|c| str_at(c, "/name")).collect();
    let images: Vec<&str> = containers.iter().map(|c| str_at(c, "/image")).collect();
    (names.join(","), images.join(","))
}

/// Validates the keys of a ConfigMap's or Secret's `data`/`binaryData`.
pub(crate) fn validate_data_keys(obj: &Value, field: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if let Some(map) = obj.get(field).and_then(Value::as_object) {
        for key in map.keys() {
            let ok = !key.is_empty()
                && key.len() <= 253
                && key
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'.');
            if !ok {
                errs.push(FieldError::invalid(
                    format!("{field}[{key}]"),
                    json!(key),
                    "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
                ));
            }
        }
    }
    errs
}

/// Validates labels (qualified-name keys, label values) at `field`.
pub(crate) fn validate_labels(labels: Option<&Value>, field: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if let Some(map) = labels.and_then(Value::as_object) {
        for (key, value) in map {
            errs.extend(validation::errors_for(
                field,
                key,
                validation::qualified_name(key),
            ));
            let value = value.as_str().unwrap_or("");
            errs.extend(validation::errors_for(
                field,
                value,
                validation::label_value(value),
            ));
        }
    }
    errs
}
