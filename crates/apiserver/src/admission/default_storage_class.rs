//! DefaultStorageClass: a new claim that names no class gets the cluster's default one, as
//! kube-apiserver's admission plugin does (`storageClassName: ""` explicitly asks for no
//! class and is kept). With several defaults the newest wins.

use serde_json::{json, Value};

use super::{Attributes, Operation};
use crate::handlers::Api;
use crate::kinds::{str_at, REGISTRY};
use crate::status::ApiResult;

/// The annotations that mark a default class.
const DEFAULT_ANNOTATIONS: [&str; 2] = [
    "storageclass.kubernetes.io/is-default-class",
    "storageclass.beta.kubernetes.io/is-default-class",
];

/// Sets `spec.storageClassName` of a new claim without one to the default class.
pub(super) async fn mutate(api: &Api, attrs: &Attributes<'_>, obj: &mut Value) -> ApiResult<()> {
    if attrs.operation != Operation::Create
        || !attrs.subresource.is_empty()
        || !attrs.def.group.is_empty()
        || attrs.def.kind != "PersistentVolumeClaim"
    {
        return Ok(());
    }
    let named = obj
        .pointer("/spec/storageClassName")
        .is_some_and(|c| !c.is_null())
        || obj
            .pointer("/metadata/annotations/volume.beta.kubernetes.io~1storage-class")
            .is_some();
    if named {
        return Ok(());
    }
    let Some(def) = REGISTRY.by_kind("storage.k8s.io", "v1", "StorageClass") else {
        return Ok(());
    };
    let classes = super::list_all(api.storage(), def, "").await?;
    if let Some(class) = default_class(&classes) {
        if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
            spec.insert("storageClassName".into(), json!(class));
        }
    }
    Ok(())
}

/// The name of the newest class marked default (`GetDefaultClass`).
fn default_class(classes: &[Value]) -> Option<String> {
    classes
        .iter()
        .filter(|c| {
            DEFAULT_ANNOTATIONS.iter().any(|a| {
                c.pointer(&format!("/metadata/annotations/{}", a.replace('/', "~1")))
                    .and_then(Value::as_str)
                    == Some("true")
            })
        })
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

    #[test]
    fn the_newest_default_class_wins() {
        let class = |name: &str, default: &str, created: &str| {
            json!({"metadata": {"name": name, "creationTimestamp": created,
                "annotations": {"storageclass.kubernetes.io/is-default-class": default}}})
        };
        let classes = [
            class("old", "true", "2024-01-01T00:00:00Z"),
            class("new", "true", "2025-01-01T00:00:00Z"),
            class("newest-not-default", "false", "2026-01-01T00:00:00Z"),
        ];
        assert_eq!(default_class(&classes).as_deref(), Some("new"));
        assert_eq!(default_class(&classes[2..]), None);
    }
}
