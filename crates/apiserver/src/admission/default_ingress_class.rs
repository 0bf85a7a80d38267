//! DefaultIngressClass: a new Ingress that names no class gets the cluster's default
//! IngressClass, as kube-apiserver's admission plugin does. An Ingress with the legacy
//! `kubernetes.io/ingress.class` annotation keeps it and gets no `spec.ingressClassName`.
//! With several default classes the newest wins.

use serde_json::{json, Value};

use super::{Attributes, Operation};
use crate::handlers::Api;
use crate::kinds::{str_at, REGISTRY};
use crate::status::ApiResult;

/// The annotation that marks the default IngressClass.
const DEFAULT_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";
/// The deprecated annotation naming an Ingress's class.
const LEGACY_CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";

/// Sets `spec.ingressClassName` of a new Ingress without a class to the default class.
pub(super) async fn mutate(api: &Api, attrs: &Attributes<'_>, obj: &mut Value) -> ApiResult<()> {
    if attrs.operation != Operation::Create
        || !attrs.subresource.is_empty()
        || attrs.def.group != "networking.k8s.io"
        || attrs.def.kind != "Ingress"
        || has_class(obj)
    {
        return Ok(());
    }
    let Some(def) = REGISTRY.by_kind("networking.k8s.io", "v1", "IngressClass") else {
        return Ok(());
    };
    let classes = super::list_all(api.storage(), def, "").await?;
    if let Some(class) = default_class(&classes) {
        set_class(obj, &class);
    }
    Ok(())
}

/// Whether the Ingress names a class, in its spec or by the legacy annotation.
fn has_class(obj: &Value) -> bool {
    obj.pointer("/spec/ingressClassName")
        .is_some_and(|c| !c.is_null())
        || obj
            .pointer(&format!(
                "/metadata/annotations/{}",
                LEGACY_CLASS_ANNOTATION.replace('/', "~1")
            ))
            .is_some()
}

fn set_class(obj: &mut Value, class: &str) {
    let Some(root) = obj.as_object_mut() else {
        return;
    };
    let spec = root.entry("spec").or_insert_with(|| json!({}));
    if let Some(spec) = spec.as_object_mut() {
        spec.insert("ingressClassName".into(), json!(class));
    }
}

/// The name of the newest IngressClass marked default (`GetDefaultClass`).
fn default_class(classes: &[Value]) -> Option<String> {
    let pointer = format!(
        "/metadata/annotations/{}",
        DEFAULT_ANNOTATION.replace('/', "~1")
    );
    classes
        .iter()
        .filter(|c| c.pointer(&pointer).and_then(Value::as_str) == Some("true"))
        .max_by(|a, b| {
            str_at(a, "/metadata/creationTimestamp")
                .cmp(str_at(b, "/metadata/creationTimestamp"))
                .then_with(|| str_at(b, "/metadata/name").cmp(str_at(a, "/metadata/name")))
        })
        .map(|c| str_at(c, "/metadata/name").to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(name: &str, default: &str, created: &str) -> Value {
        json!({"metadata": {"name": name, "creationTimestamp": created,
            "annotations": {DEFAULT_ANNOTATION: default}}})
    }

    #[test]
    fn the_newest_default_class_wins() {
        let classes = [
            class("old", "true", "2024-01-01T00:00:00Z"),
            class("new", "true", "2025-01-01T00:00:00Z"),
            class("newest-not-default", "false", "2026-01-01T00:00:00Z"),
        ];
        assert_eq!(default_class(&classes).as_deref(), Some("new"));
        assert_eq!(default_class(&classes[2..]), None);
        assert_eq!(default_class(&[]), None);
    }

    #[test]
    fn only_ingresses_without_a_class_are_changed() {
        assert!(!has_class(&json!({"metadata": {"name": "i"}})));
        assert!(!has_class(
            &json!({"metadata": {"name": "i"}, "spec": {"ingressClassName": null}})
        ));
        assert!(has_class(
            &json!({"metadata": {"name": "i"}, "spec": {"ingressClassName": "nginx"}})
        ));
        assert!(has_class(&json!({"metadata": {"name": "i",
            "annotations": {LEGACY_CLASS_ANNOTATION: "nginx"}}, "spec": {}})));
        let mut no_spec = json!({"metadata": {"name": "i"}});
        set_class(&mut no_spec, "skiff");
        assert_eq!(no_spec["spec"]["ingressClassName"], "skiff");
        let mut with_rules = json!({"metadata": {"name": "i"}, "spec": {"rules": []}});
        set_class(&mut with_rules, "skiff");
        assert_eq!(
            with_rules["spec"],
            json!({"rules": [], "ingressClassName": "skiff"})
        );
    }
}
