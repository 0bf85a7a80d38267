//! Namespaces: the `kubernetes` finalizer, the Active/Terminating phase and the
//! `kubernetes.io/metadata.name` label every namespace carries.

use serde_json::{json, Value};

use super::{array_at, object_mut, set_default, str_at};
use crate::registry::Strategy;
use crate::table::{self, Column};
use crate::validation;

/// The namespaces that exist from the start, as in every Kubernetes cluster.
pub const INITIAL_NAMESPACES: &[&str] =
    &["default", "kube-system", "kube-public", "kube-node-lease"];

/// The strategy of `namespaces`.
pub struct NamespaceStrategy;

impl Strategy for NamespaceStrategy {
    fn prepare_for_create(&self, obj: &mut Value) {
        obj["status"] = json!({"phase": "Active"});
    }

    fn prepare_for_update(&self, old: &Value, new: &mut Value) {
        // Only the `finalize` subresource changes spec.finalizers.
        let finalizers = old
            .pointer("/spec/finalizers")
            .cloned()
            .unwrap_or_else(|| json!([]));
        object_mut(new, "spec").insert("finalizers".into(), finalizers);
    }

    fn default(&self, obj: &mut Value) {
        let name = str_at(obj, "/metadata/name").to_owned();
        // NamespaceDefaultLabelName: the label always equals the name.
        object_mut(object_mut_value(obj, "metadata"), "labels")
            .insert("kubernetes.io/metadata.name".into(), json!(name));
        set_default(object_mut(obj, "spec"), "finalizers", json!(["kubernetes"]));
        set_default(object_mut(obj, "status"), "phase", json!("Active"));
    }

    fn validate_name(&self, name: &str) -> Vec<String> {
        validation::dns1123_label(name)
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            Column::name(),
            Column::text("Status", "The status of the namespace"),
            Column::age(),
        ]
    }

    fn row(&self, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
        vec![
            table::name_cell(obj),
            json!(str_at(obj, "/status/phase")),
            table::age_cell(obj, now),
        ]
    }

    fn graceful_delete(&self, obj: &Value, _grace_period: Option<i64>) -> Option<i64> {
        // The namespace controller empties the namespace, then removes the `kubernetes`
        // finalizer; until then the namespace is only marked.
        (!array_at(obj, "/spec/finalizers").is_empty()).then_some(0)
    }

    fn on_mark_deleted(&self, obj: &mut Value) {
        object_mut(obj, "status").insert("phase".into(), json!("Terminating"));
    }
}

fn object_mut_value<'a>(obj: &'a mut Value, key: &str) -> &'a mut Value {
    object_mut(obj, key);
    &mut obj[key]
}
