//! Priority (kube-apiserver's admission plugin): a new pod's `spec.priority` and
//! `spec.preemptionPolicy` come from its PriorityClass, or from the class marked
//! `globalDefault` when it names none (priority 0 without one). An unknown class, or a
//! priority or policy in the pod that disagrees with the class, is refused.

use serde_json::{json, Value};

use super::{Attributes, Operation};
use crate::handlers::Api;
use crate::kinds::{str_at, REGISTRY};
use crate::status::ApiResult;

const DEFAULT_POLICY: &str = "PreemptLowerPriority";

/// Resolves the pod's priority class into its priority and preemption policy.
pub(super) async fn mutate(api: &Api, attrs: &Attributes<'_>, obj: &mut Value) -> ApiResult<()> {
    if attrs.operation != Operation::Create
        || !attrs.subresource.is_empty()
        || !attrs.def.group.is_empty()
        || attrs.def.kind != "Pod"
    {
        return Ok(());
    }
    let Some(def) = REGISTRY.by_kind("scheduling.k8s.io", "v1", "PriorityClass") else {
        return Ok(());
    };
    let named = str_at(obj, "/spec/priorityClassName").to_owned();
    // The server's mirror (every acknowledged PriorityClass write has reached it): no
    // store read per pod.
    let class = if named.is_empty() {
        let classes: Vec<Value> = api
            .reflector()
            .list(def)
            .iter()
            .map(|c| Value::clone(c))
            .collect();
        global_default(&classes)
    } else {
        match api.reflector().get(def, "", &named) {
            Some(class) => Some(Value::clone(&class)),
            None => {
                return Err(super::forbidden(
                    attrs,
                    obj,
                    &format!("no PriorityClass with name {named} was found"),
                ))
            }
        }
    };
    let (name, priority, policy) = match &class {
        Some(class) => (
            str_at(class, "/metadata/name").to_owned(),
            class.get("value").and_then(Value::as_i64).unwrap_or(0),
            match str_at(class, "/preemptionPolicy") {
                "" => DEFAULT_POLICY.to_owned(),
                p => p.to_owned(),
            },
        ),
        None => (String::new(), 0, DEFAULT_POLICY.to_owned()),
    };
    if let Some(given) = obj.pointer("/spec/priority").and_then(Value::as_i64) {
        if given != priority {
            return Err(super::forbidden(
                attrs,
                obj,
                &format!("the integer value of priority ({given}) must not be provided in pod spec; priority admission controller computed {priority} from the given PriorityClass name"),
            ));
        }
    }
    let given_policy = str_at(obj, "/spec/preemptionPolicy");
    if !given_policy.is_empty() && given_policy != policy {
        return Err(super::forbidden(
            attrs,
            obj,
            &format!("the string value of PreemptionPolicy ({given_policy}) must not be provided in pod spec; priority admission controller computed {policy} from the given PriorityClass name"),
        ));
    }
    let spec = crate::kinds::object_mut(obj, "spec");
    if !name.is_empty() {
        spec.insert("priorityClassName".into(), json!(name));
    }
    spec.insert("priority".into(), json!(priority));
    spec.insert("preemptionPolicy".into(), json!(policy));
    Ok(())
}

/// The class marked `globalDefault` (the lowest-valued if several, as Kubernetes picks).
fn global_default(classes: &[Value]) -> Option<Value> {
    classes
        .iter()
        .filter(|c| c.get("globalDefault").and_then(Value::as_bool) == Some(true))
        .min_by_key(|c| c.get("value").and_then(Value::as_i64).unwrap_or(0))
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lowest_global_default_wins() {
        let classes = vec![
            json!({"metadata": {"name": "a"}, "value": 10, "globalDefault": true}),
            json!({"metadata": {"name": "b"}, "value": 5, "globalDefault": true}),
            json!({"metadata": {"name": "c"}, "value": 1}),
        ];
        assert_eq!(global_default(&classes).unwrap()["metadata"]["name"], "b");
        assert!(global_default(&classes[2..]).is_none());
    }
}
