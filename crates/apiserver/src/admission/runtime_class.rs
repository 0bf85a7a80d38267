//! RuntimeClass (kube-apiserver's admission plugin): a new pod naming a
//! `spec.runtimeClassName` must name an existing RuntimeClass; the class's
//! `overhead.podFixed` becomes the pod's `spec.overhead` (a pod that brings a different one
//! is refused) and its `scheduling` is merged into the pod's node selector and tolerations.

use serde_json::{json, Map, Value};

use super::{Attributes, Operation};
use crate::handlers::Api;
use crate::kinds::{array_at, str_at, REGISTRY};
use crate::quantity::Quantity;
use crate::status::ApiResult;

/// Applies the pod's RuntimeClass to a pod being created.
pub(super) async fn mutate(api: &Api, attrs: &Attributes<'_>, obj: &mut Value) -> ApiResult<()> {
    if attrs.operation != Operation::Create
        || !attrs.subresource.is_empty()
        || !attrs.def.group.is_empty()
        || attrs.def.kind != "Pod"
    {
        return Ok(());
    }
    let name = str_at(obj, "/spec/runtimeClassName").to_owned();
    if name.is_empty() {
        return Ok(());
    }
    let Some(def) = REGISTRY.by_kind("node.k8s.io", "v1", "RuntimeClass") else {
        return Ok(());
    };
    // The server's mirror has every acknowledged RuntimeClass write.
    let Some(class) = api.reflector().get(def, "", &name) else {
        return Err(super::forbidden(
            attrs,
            obj,
            &format!("pod rejected: RuntimeClass \"{name}\" not found"),
        ));
    };
    apply(&class, obj).map_err(|why| super::forbidden(attrs, obj, &why))
}

/// Applies `class` to the pod `obj`; the reason the pod is rejected otherwise.
fn apply(class: &Value, obj: &mut Value) -> Result<(), String> {
    let spec = crate::kinds::object_mut(obj, "spec");
    let fixed = class
        .pointer("/overhead/podFixed")
        .and_then(Value::as_object)
        .filter(|f| !f.is_empty());
    let given = spec
        .get("overhead")
        .and_then(Value::as_object)
        .filter(|o| !o.is_empty());
    match (fixed, given) {
        (Some(fixed), Some(given)) if !same_resources(fixed, given) => {
            return Err(
                "pod rejected: Pod's Overhead doesn't match RuntimeClass's defined Overhead".into(),
            )
        }
        (Some(fixed), _) => {
            spec.insert("overhead".into(), Value::Object(fixed.clone()));
        }
        (None, Some(_)) => return Err(
            "pod rejected: Pod Overhead set without corresponding RuntimeClass defined Overhead"
                .into(),
        ),
        (None, None) => {}
    }
    if let Some(selector) = class
        .pointer("/scheduling/nodeSelector")
        .and_then(Value::as_object)
    {
        let pod_selector = spec.entry("nodeSelector").or_insert_with(|| json!({}));
        if !pod_selector.is_object() {
            *pod_selector = json!({});
        }
        let pod_selector = pod_selector.as_object_mut().expect("just made an object");
        for (key, value) in selector {
            match pod_selector.get(key) {
                Some(existing) if existing != value => {
                    return Err(format!(
                        "conflict: runtimeClass.scheduling.nodeSelector[{key}] = {}; pod.spec.nodeSelector[{key}] = {}",
                        value.as_str().unwrap_or(""),
                        existing.as_str().unwrap_or("")
                    ))
                }
                Some(_) => {}
                None => {
                    pod_selector.insert(key.clone(), value.clone());
                }
            }
        }
    }
    let tolerations = array_at(class, "/scheduling/tolerations");
    if !tolerations.is_empty() {
        let pod_tolerations = spec.entry("tolerations").or_insert_with(|| json!([]));
        if !pod_tolerations.is_array() {
            *pod_tolerations = json!([]);
        }
        let pod_tolerations = pod_tolerations.as_array_mut().expect("just made an array");
        for toleration in tolerations {
            if !pod_tolerations.contains(toleration) {
                pod_tolerations.push(toleration.clone());
            }
        }
    }
    Ok(())
}

/// Whether two resource lists hold the same quantities (`1000m` equals `1`).
fn same_resources(a: &Map<String, Value>, b: &Map<String, Value>) -> bool {
    let amount = |v: &Value| Quantity::from_json(v).map(|q| q.nanos());
    a.len() == b.len()
        && a.iter()
            .all(|(k, v)| b.get(k).is_some_and(|w| amount(v) == amount(w)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overhead_and_scheduling() {
        let class = json!({"handler": "runsc",
            "overhead": {"podFixed": {"cpu": "250m", "memory": "64Mi"}},
            "scheduling": {"nodeSelector": {"sandbox": "true"},
                "tolerations": [{"key": "sandbox", "operator": "Exists"}]}});
        let mut pod = json!({"spec": {"containers": [], "nodeSelector": {"zone": "a"}}});
        apply(&class, &mut pod).unwrap();
        assert_eq!(
            pod["spec"]["overhead"],
            json!({"cpu": "250m", "memory": "64Mi"})
        );
        assert_eq!(
            pod["spec"]["nodeSelector"],
            json!({"zone": "a", "sandbox": "true"})
        );
        assert_eq!(pod["spec"]["tolerations"].as_array().unwrap().len(), 1);
        // Applying again changes nothing (the same overhead, written differently, is fine).
        pod["spec"]["overhead"]["cpu"] = json!("0.25");
        apply(&class, &mut pod).unwrap();
        assert_eq!(pod["spec"]["tolerations"].as_array().unwrap().len(), 1);

        let mut other = json!({"spec": {"overhead": {"cpu": "1"}}});
        assert_eq!(
            apply(&class, &mut other).unwrap_err(),
            "pod rejected: Pod's Overhead doesn't match RuntimeClass's defined Overhead"
        );
        let mut conflict = json!({"spec": {"nodeSelector": {"sandbox": "false"}}});
        assert_eq!(
            apply(&class, &mut conflict).unwrap_err(),
            "conflict: runtimeClass.scheduling.nodeSelector[sandbox] = true; pod.spec.nodeSelector[sandbox] = false"
        );
        let plain = json!({"handler": "runc"});
        let mut with_overhead = json!({"spec": {"overhead": {"cpu": "1"}}});
        assert!(apply(&plain, &mut with_overhead).is_err());
    }
}
