//! LimitRanger: defaults and bounds of LimitRange objects applied to pods and claims.
//!
//! As kube-apiserver's plugin: on pod creation, containers missing requests or limits get
//! the `Container` item's `defaultRequest`/`default` (recorded in the
//! `kubernetes.io/limit-ranger` annotation); then pods (per container and, for `Pod` items,
//! the pod's effective total) and claims must lie within `min`, `max` and
//! `maxLimitRequestRatio`, or the write is refused with every violation.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::{Attributes, Operation};
use crate::handlers::Api;
use crate::kinds::{array_at, str_at, REGISTRY};
use crate::quantity::Quantity;
use crate::status::ApiResult;

/// The annotation naming what LimitRanger set.
const ANNOTATION: &str = "kubernetes.io/limit-ranger";

/// Resource names to amounts (`corev1.ResourceList`).
pub(crate) type ResourceList = BTreeMap<String, Quantity>;

/// Applies the namespace's LimitRange defaults to a new pod's containers.
pub(super) async fn mutate(api: &Api, attrs: &Attributes<'_>, obj: &mut Value) -> ApiResult<()> {
    if !handles(attrs) || attrs.def.kind != "Pod" {
        return Ok(());
    }
    let ranges = limit_ranges(api, attrs.namespace).await?;
    let mut changed = false;
    for range in &ranges {
        changed |= default_pod(range, obj);
    }
    if changed {
        // The pod's QoS class was computed before the defaults; Kubernetes computes it after.
        obj["status"]["qosClass"] = json!(crate::kinds::qos_class(obj.get("spec")));
    }
    Ok(())
}

/// Refuses pods and claims outside the namespace's LimitRange bounds.
pub(super) async fn validate(api: &Api, attrs: &Attributes<'_>, obj: &Value) -> ApiResult<()> {
    if !handles(attrs) {
        return Ok(());
    }
    let ranges = limit_ranges(api, attrs.namespace).await?;
    for range in &ranges {
        let errors = match attrs.def.kind {
            "Pod" => validate_pod(range, obj),
            _ => validate_claim(range, obj),
        };
        if !errors.is_empty() {
            return Err(super::forbidden(attrs, obj, &aggregate(&errors)));
        }
    }
    Ok(())
}

/// Which writes the plugin looks at: pod creations (containers are immutable afterwards) and
/// claim writes, never subresources nor objects being deleted.
fn handles(attrs: &Attributes<'_>) -> bool {
    if !attrs.def.group.is_empty()
        || !attrs.subresource.is_empty()
        || attrs
            .old
            .is_some_and(|old| old.pointer("/metadata/deletionTimestamp").is_some())
    {
        return false;
    }
    matches!(
        (attrs.def.kind, attrs.operation),
        ("Pod", Operation::Create)
            | (
                "PersistentVolumeClaim",
                Operation::Create | Operation::Update
            )
    )
}

/// The namespace's LimitRanges, with the defaulting of their `Container` items applied.
async fn limit_ranges(api: &Api, namespace: &str) -> ApiResult<Vec<Vec<LimitItem>>> {
    let Some(def) = REGISTRY.by_kind("", "v1", "LimitRange") else {
        return Ok(Vec::new());
    };
    // From the server's mirror, which every acknowledged LimitRange write has reached.
    let ranges = api.reflector().list_in(def, Some(namespace));
    Ok(ranges.iter().map(|r| items_of(r)).collect())
}

/// One entry of a LimitRange's `spec.limits`.
#[derive(Clone, Debug, Default)]
struct LimitItem {
    kind: String,
    min: ResourceList,
    max: ResourceList,
    default: ResourceList,
    default_request: ResourceList,
    max_ratio: ResourceList,
}

/// The items of a LimitRange, defaulted as `SetDefaults_LimitRangeItem`: a `Container`
/// item's default limit falls back to its max, its default request to the default limit,
/// then to its min.
fn items_of(range: &Value) -> Vec<LimitItem> {
    array_at(range, "/spec/limits")
        .iter()
        .map(|item| {
            let mut item = LimitItem {
                kind: str_at(item, "/type").to_owned(),
                min: resource_list(item.get("min")),
                max: resource_list(item.get("max")),
                default: resource_list(item.get("default")),
                default_request: resource_list(item.get("defaultRequest")),
                max_ratio: resource_list(item.get("maxLimitRequestRatio")),
            };
            if item.kind == "Container" {
                for (k, v) in &item.max {
                    item.default.entry(k.clone()).or_insert(*v);
                }
                for (k, v) in item.default.iter().chain(&item.min) {
                    item.default_request.entry(k.clone()).or_insert(*v);
                }
            }
            item
        })
        .collect()
}

/// A JSON resource list; malformed quantities (refused by validation) are skipped.
pub(crate) fn resource_list(value: Option<&Value>) -> ResourceList {
    value
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), Quantity::from_json(v)?)))
                .collect()
        })
        .unwrap_or_default()
}

/// Sets missing requests and limits of every container from one LimitRange; returns
/// whether anything was set (`mergePodResourceRequirements`).
fn default_pod(items: &[LimitItem], pod: &mut Value) -> bool {
    let mut requests = ResourceList::new();
    let mut limits = ResourceList::new();
    for item in items.iter().filter(|i| i.kind == "Container") {
        requests.extend(item.default_request.clone());
        limits.extend(item.default.clone());
    }
    if requests.is_empty() && limits.is_empty() {
        return false;
    }
    let mut notes: Vec<String> = Vec::new();
    for (list, what) in [
        ("containers", "container"),
        ("initContainers", "init container"),
    ] {
        let Some(containers) = pod
            .pointer_mut(&format!("/spec/{list}"))
            .and_then(Value::as_array_mut)
        else {
            continue;
        };
        for container in containers {
            let name = str_at(container, "/name").to_owned();
            let set_requests = fill(container, "requests", &requests);
            let set_limits = fill(container, "limits", &limits);
            if !set_requests.is_empty() {
                notes.push(format!(
                    "{} request for {what} {name}",
                    set_requests.join(", ")
                ));
            }
            if !set_limits.is_empty() {
                notes.push(format!("{} limit for {what} {name}", set_limits.join(", ")));
            }
        }
    }
    if notes.is_empty() {
        return false;
    }
    let meta = crate::kinds::object_mut(pod, "metadata");
    let annotations = meta
        .entry("annotations")
        .or_insert_with(|| json!({}))
        .as_object_mut();
    if let Some(annotations) = annotations {
        annotations.insert(
            ANNOTATION.into(),
            json!(format!("LimitRanger plugin set: {}", notes.join("; "))),
        );
    }
    true
}

/// Adds the `defaults` a container's `resources.<field>` lacks; returns the names set, sorted.
fn fill(container: &mut Value, field: &str, defaults: &ResourceList) -> Vec<String> {
    let mut set = Vec::new();
    if defaults.is_empty() {
        return set;
    }
    let resources = crate::kinds::object_mut(container, "resources");
    let list = resources.entry(field).or_insert_with(|| json!({}));
    if !list.is_object() {
        *list = json!({});
    }
    let Some(list) = list.as_object_mut() else {
        return set;
    };
    for (name, value) in defaults {
        if !list.contains_key(name) {
            list.insert(name.clone(), json!(value.canonical()));
            set.push(name.clone());
        }
    }
    if list.is_empty() {
        resources.remove(field);
    }
    set
}

/// The violations of a pod against one LimitRange (`PodValidateLimitFunc`).
fn validate_pod(items: &[LimitItem], pod: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    for item in items {
        match item.kind.as_str() {
            "Container" => {
                for list in ["/spec/containers", "/spec/initContainers"] {
                    for container in array_at(pod, list) {
                        let requests = resource_list(container.pointer("/resources/requests"));
                        let limits = resource_list(container.pointer("/resources/limits"));
                        check_bounds(item, &requests, &limits, &mut errors);
                    }
                }
            }
            "Pod" => {
                let spec = pod.get("spec").unwrap_or(&Value::Null);
                let requests = effective(spec, "requests");
                let limits = effective(spec, "limits");
                check_bounds(item, &requests, &limits, &mut errors);
            }
            _ => {}
        }
    }
    errors
}

fn check_bounds(
    item: &LimitItem,
    requests: &ResourceList,
    limits: &ResourceList,
    errors: &mut Vec<String>,
) {
    let kind = item.kind.as_str();
    for (name, enforced) in &item.min {
        errors.extend(min_constraint(kind, name, enforced, requests, limits));
    }
    for (name, enforced) in &item.max {
        errors.extend(max_constraint(kind, name, enforced, requests, limits));
    }
    for (name, enforced) in &item.max_ratio {
        errors.extend(ratio_constraint(kind, name, enforced, requests, limits));
    }
}

/// The violations of a claim against one LimitRange: its storage request within min and
/// max (`PersistentVolumeClaimValidateLimitFunc`; a claim's limits are not user input).
fn validate_claim(items: &[LimitItem], claim: &Value) -> Vec<String> {
    let requests = resource_list(claim.pointer("/spec/resources/requests"));
    let mut errors = Vec::new();
    for item in items.iter().filter(|i| i.kind == "PersistentVolumeClaim") {
        for (name, enforced) in &item.min {
            errors.extend(min_constraint(
                &item.kind,
                name,
                enforced,
                &requests,
                &ResourceList::new(),
            ));
        }
        for (name, enforced) in &item.max {
            let request = requests.get(name);
            match request {
                None => errors.push(format!(
                    "maximum {name} usage per {} is {enforced}.  No request is specified",
                    item.kind
                )),
                Some(request) if compared(request) > compared(enforced) => errors.push(format!(
                    "maximum {name} usage per {} is {enforced}, but request is {request}",
                    item.kind
                )),
                Some(_) => {}
            }
        }
    }
    errors
}

/// The value Kubernetes compares: thousandths, rounded up (precise enough for any quantity
/// an i128 holds, where Kubernetes falls back to whole units only beyond int64 millis).
fn compared(q: &Quantity) -> i128 {
    let nanos = q.nanos();
    nanos.div_euclid(1_000_000) + i128::from(nanos.rem_euclid(1_000_000) != 0)
}

fn min_constraint(
    kind: &str,
    name: &str,
    enforced: &Quantity,
    requests: &ResourceList,
    limits: &ResourceList,
) -> Option<String> {
    let Some(request) = requests.get(name) else {
        return Some(format!(
            "minimum {name} usage per {kind} is {enforced}.  No request is specified"
        ));
    };
    if compared(request) < compared(enforced) {
        return Some(format!(
            "minimum {name} usage per {kind} is {enforced}, but request is {request}"
        ));
    }
    match limits.get(name) {
        Some(limit) if compared(limit) < compared(enforced) => Some(format!(
            "minimum {name} usage per {kind} is {enforced}, but limit is {limit}"
        )),
        _ => None,
    }
}

fn max_constraint(
    kind: &str,
    name: &str,
    enforced: &Quantity,
    requests: &ResourceList,
    limits: &ResourceList,
) -> Option<String> {
    let Some(limit) = limits.get(name) else {
        return Some(format!(
            "maximum {name} usage per {kind} is {enforced}.  No limit is specified"
        ));
    };
    if compared(limit) > compared(enforced) {
        return Some(format!(
            "maximum {name} usage per {kind} is {enforced}, but limit is {limit}"
        ));
    }
    match requests.get(name) {
        Some(request) if compared(request) > compared(enforced) => Some(format!(
            "maximum {name} usage per {kind} is {enforced}, but request is {request}"
        )),
        _ => None,
    }
}

fn ratio_constraint(
    kind: &str,
    name: &str,
    enforced: &Quantity,
    requests: &ResourceList,
    limits: &ResourceList,
) -> Option<String> {
    let request = requests.get(name).map(compared).unwrap_or(0);
    if request == 0 {
        return Some(format!(
            "{name} max limit to request ratio per {kind} is {enforced}, but no request is specified or request is 0"
        ));
    }
    let limit = limits.get(name).map(compared).unwrap_or(0);
    if limit == 0 {
        return Some(format!(
            "{name} max limit to request ratio per {kind} is {enforced}, but no limit is specified or limit is 0"
        ));
    }
    let observed = limit as f64 / request as f64;
    if observed * 1000.0 > compared(enforced) as f64 {
        return Some(format!(
            "{name} max limit to request ratio per {kind} is {enforced}, but provided ratio is {observed:.6}"
        ));
    }
    None
}

/// An aggregate of error messages as `utilerrors.NewAggregate` prints it: one alone,
/// several (duplicates dropped) in brackets.
fn aggregate(errors: &[String]) -> String {
    let mut seen: Vec<&str> = Vec::new();
    for e in errors {
        if !seen.contains(&e.as_str()) {
            seen.push(e);
        }
    }
    if seen.len() == 1 {
        seen[0].to_owned()
    } else {
        format!("[{}]", seen.join(", "))
    }
}

/// The effective requests or limits of a pod spec: the containers' sum (with restartable
/// init containers, which run alongside) or the largest init container step, whichever is
/// larger per resource (`PodRequests`/`PodLimits` without overhead).
pub(crate) fn effective(spec: &Value, field: &str) -> ResourceList {
    let of = |c: &Value| resource_list(c.pointer(&format!("/resources/{field}")));
    let mut total = ResourceList::new();
    for c in array_at(spec, "/containers") {
        add_into(&mut total, &of(c));
    }
    let mut sidecars = ResourceList::new();
    let mut init_peak = ResourceList::new();
    for c in array_at(spec, "/initContainers") {
        let step = if str_at(c, "/restartPolicy") == "Always" {
            add_into(&mut total, &of(c));
            add_into(&mut sidecars, &of(c));
            sidecars.clone()
        } else {
            let mut step = of(c);
            add_into(&mut step, &sidecars);
            step
        };
        max_into(&mut init_peak, &step);
    }
    max_into(&mut total, &init_peak);
    total
}

/// Adds `other` into `list` per resource.
pub(crate) fn add_into(list: &mut ResourceList, other: &ResourceList) {
    for (k, v) in other {
        let sum = list.get(k).map_or(*v, |have| have.add(v));
        list.insert(k.clone(), sum);
    }
}

fn max_into(list: &mut ResourceList, other: &ResourceList) {
    for (k, v) in other {
        if list.get(k).is_none_or(|have| v > have) {
            list.insert(k.clone(), *v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(limits: Value) -> Vec<LimitItem> {
        items_of(&json!({"spec": {"limits": limits}}))
    }

    fn pod(containers: Value) -> Value {
        json!({"metadata": {"name": "p"}, "spec": {"containers": containers}})
    }

    #[test]
    fn defaults_missing_requests_and_limits_and_annotates() {
        let items = range(json!([{"type": "Container",
            "default": {"cpu": "500m", "memory": "128Mi"},
            "defaultRequest": {"cpu": "250m"}}]));
        let mut p = pod(json!([
            {"name": "x"},
            {"name": "y", "resources": {"requests": {"cpu": "100m"}, "limits": {"cpu": "1"}}},
        ]));
        assert!(default_pod(&items, &mut p));
        assert_eq!(
            p.pointer("/spec/containers/0/resources").unwrap(),
            &json!({"requests": {"cpu": "250m", "memory": "128Mi"}, "limits": {"cpu": "500m", "memory": "128Mi"}})
        );
        assert_eq!(
            p.pointer("/spec/containers/1/resources").unwrap(),
            &json!({"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "128Mi"}})
        );
        assert_eq!(
            p["metadata"]["annotations"][ANNOTATION],
            "LimitRanger plugin set: cpu, memory request for container x; cpu, memory limit for container x; \
             memory request for container y; memory limit for container y"
        );
    }

    #[test]
    fn init_containers_are_named_as_such_and_nothing_set_means_no_annotation() {
        let items = range(json!([{"type": "Container", "defaultRequest": {"cpu": "1"}}]));
        let mut p = json!({"spec": {"containers": [{"name": "a", "resources": {"requests": {"cpu": "2"}}}],
            "initContainers": [{"name": "i"}]}});
        assert!(default_pod(&items, &mut p));
        assert_eq!(
            p["metadata"]["annotations"][ANNOTATION],
            "LimitRanger plugin set: cpu request for init container i"
        );
        let mut full = pod(json!([{"name": "a", "resources": {"requests": {"cpu": "2"}}}]));
        assert!(!default_pod(&items, &mut full));
        assert!(full["metadata"].get("annotations").is_none());
    }

    #[test]
    fn container_items_default_from_max_and_min() {
        let items =
            range(json!([{"type": "Container", "max": {"cpu": "2"}, "min": {"memory": "1Gi"}}]));
        assert_eq!(items[0].default["cpu"].canonical(), "2");
        assert_eq!(items[0].default_request["cpu"].canonical(), "2");
        assert_eq!(items[0].default_request["memory"].canonical(), "1Gi");
        assert!(!items[0].default.contains_key("memory"));
    }

    #[test]
    fn reports_max_min_and_ratio_violations_as_kubernetes() {
        let items = range(
            json!([{"type": "Container", "max": {"cpu": "500m"}, "min": {"memory": "64Mi"},
            "maxLimitRequestRatio": {"cpu": "2"}}]),
        );
        let p = pod(json!([{"name": "c", "resources": {
            "requests": {"cpu": "250m", "memory": "32Mi"}, "limits": {"cpu": "1", "memory": "32Mi"}}}]));
        assert_eq!(
            validate_pod(&items, &p),
            vec![
                "minimum memory usage per Container is 64Mi, but request is 32Mi",
                "maximum cpu usage per Container is 500m, but limit is 1",
                "cpu max limit to request ratio per Container is 2, but provided ratio is 4.000000",
            ]
        );
        let none = pod(json!([{"name": "c"}]));
        assert_eq!(
            validate_pod(
                &range(json!([{"type": "Pod", "max": {"cpu": "1"}, "min": {"cpu": "1m"}}])),
                &none
            ),
            vec![
                "minimum cpu usage per Pod is 1m.  No request is specified",
                "maximum cpu usage per Pod is 1.  No limit is specified",
            ]
        );
        let ok = pod(json!([{"name": "c", "resources": {
            "requests": {"cpu": "500m", "memory": "64Mi"}, "limits": {"cpu": "1000m", "memory": "64Mi"}}}]));
        assert_eq!(
            validate_pod(
                &range(
                    json!([{"type": "Container", "max": {"cpu": "1"}, "min": {"memory": "64Mi"},
                "maxLimitRequestRatio": {"cpu": "2"}}])
                ),
                &ok
            ),
            Vec::<String>::new()
        );
    }

    #[test]
    fn pod_items_bound_the_effective_total() {
        let items = range(json!([{"type": "Pod", "max": {"cpu": "1"}}]));
        let p = pod(json!([
            {"name": "a", "resources": {"limits": {"cpu": "600m"}}},
            {"name": "b", "resources": {"limits": {"cpu": "600m"}}},
        ]));
        assert_eq!(
            validate_pod(&items, &p),
            vec!["maximum cpu usage per Pod is 1, but limit is 1200m"]
        );
    }

    #[test]
    fn claims_are_bounded_by_their_storage_request() {
        let items = range(
            json!([{"type": "PersistentVolumeClaim", "min": {"storage": "1Gi"}, "max": {"storage": "2Gi"}}]),
        );
        let claim = |size: &str| json!({"spec": {"resources": {"requests": {"storage": size}}}});
        assert_eq!(
            validate_claim(&items, &claim("3Gi")),
            vec!["maximum storage usage per PersistentVolumeClaim is 2Gi, but request is 3Gi"]
        );
        assert_eq!(
            validate_claim(&items, &claim("512Mi")),
            vec!["minimum storage usage per PersistentVolumeClaim is 1Gi, but request is 512Mi"]
        );
        assert!(validate_claim(&items, &claim("1536Mi")).is_empty());
    }

    #[test]
    fn aggregates_like_utilerrors() {
        assert_eq!(aggregate(&["a".into()]), "a");
        assert_eq!(aggregate(&["a".into(), "a".into()]), "a");
        assert_eq!(aggregate(&["a".into(), "b".into()]), "[a, b]");
    }

    #[test]
    fn effective_requests_take_the_larger_of_containers_and_init_steps() {
        let spec = json!({
            "containers": [{"resources": {"requests": {"cpu": "100m"}}}, {"resources": {"requests": {"cpu": "200m", "memory": "1Gi"}}}],
            "initContainers": [
                {"resources": {"requests": {"cpu": "1"}}},
                {"restartPolicy": "Always", "resources": {"requests": {"cpu": "50m"}}},
                {"resources": {"requests": {"memory": "2Gi"}}},
            ],
        });
        let r = effective(&spec, "requests");
        assert_eq!(r["cpu"].canonical(), "1");
        assert_eq!(r["memory"].canonical(), "2Gi");
    }
}
