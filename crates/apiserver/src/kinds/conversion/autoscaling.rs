//! autoscaling/v1 HorizontalPodAutoscalers, stored as autoscaling/v2 ones
//! (`/registry/horizontalpodautoscalers/...`), as kube-apiserver stores them.
//!
//! v1 knows one metric, a CPU utilization target (`spec.targetCPUUtilizationPercentage`,
//! `status.currentCPUUtilizationPercentage`). What else a v2 object holds travels through v1
//! in the annotations Kubernetes uses for the round trip, in its shapes: the other metric
//! specs and every current metric as v1's (v2beta1-style) `MetricSpec`/`MetricStatus`
//! lists, the conditions as v1 `HorizontalPodAutoscalerCondition`s, and the behavior as
//! Kubernetes writes it (its internal type without JSON tags, so capitalized field names;
//! read back case-insensitively, as Go's decoder does). Reading through v1 sets them; writing
//! through v1 consumes them, so they never reach the store.

use serde_json::{json, Map, Value};

use crate::kinds::{object_mut, str_at};
use crate::registry::Conversion;

/// The metric specs v1 cannot express (`autoscaling.MetricSpecsAnnotation`).
pub(crate) const METRICS_ANNOTATION: &str = "autoscaling.alpha.kubernetes.io/metrics";
/// Every current metric (`autoscaling.MetricStatusesAnnotation`).
pub(crate) const CURRENT_METRICS_ANNOTATION: &str =
    "autoscaling.alpha.kubernetes.io/current-metrics";
/// The scaling behavior (`autoscaling.BehaviorSpecsAnnotation`).
pub(crate) const BEHAVIOR_ANNOTATION: &str = "autoscaling.alpha.kubernetes.io/behavior";
/// The status conditions (`autoscaling.HorizontalPodAutoscalerConditionsAnnotation`).
pub(crate) const CONDITIONS_ANNOTATION: &str = "autoscaling.alpha.kubernetes.io/conditions";

const ROUND_TRIP_ANNOTATIONS: [&str; 4] = [
    METRICS_ANNOTATION,
    CURRENT_METRICS_ANNOTATION,
    BEHAVIOR_ANNOTATION,
    CONDITIONS_ANNOTATION,
];

/// The CPU utilization a v1 autoscaler without any metric scales on: the controller's old
/// implicit default, which Kubernetes makes explicit when converting from v1.
const DEFAULT_CPU_UTILIZATION: i64 = 80;

/// The conversion of the autoscaling/v1 row.
pub(crate) static HPA_V1: HpaV1 = HpaV1;

/// autoscaling/v1 HorizontalPodAutoscaler <-> autoscaling/v2.
pub(crate) struct HpaV1;

impl Conversion for HpaV1 {
    fn storage_version(&self) -> &'static str {
        "autoscaling/v2"
    }

    fn to_served(&self, obj: &mut Value) {
        v2_to_v1(obj);
    }

    fn to_stored(&self, obj: &mut Value) {
        v1_to_v2(obj);
    }
}

/// One metric source type: its `type`, the field holding it, and the pairs of a v1 field and
/// the JSON pointer of the same value in the v2 source, for specs and for statuses.
struct Source {
    kind: &'static str,
    field: &'static str,
    spec: &'static [(&'static str, &'static str)],
    status: &'static [(&'static str, &'static str)],
}

const SOURCES: &[Source] = &[
    Source {
        kind: "Resource",
        field: "resource",
        spec: &[
            ("name", "/name"),
            ("targetAverageUtilization", "/target/averageUtilization"),
            ("targetAverageValue", "/target/averageValue"),
        ],
        status: &[
            ("name", "/name"),
            ("currentAverageUtilization", "/current/averageUtilization"),
            ("currentAverageValue", "/current/averageValue"),
        ],
    },
    Source {
        kind: "ContainerResource",
        field: "containerResource",
        spec: &[
            ("name", "/name"),
            ("container", "/container"),
            ("targetAverageUtilization", "/target/averageUtilization"),
            ("targetAverageValue", "/target/averageValue"),
        ],
        status: &[
            ("name", "/name"),
            ("container", "/container"),
            ("currentAverageUtilization", "/current/averageUtilization"),
            ("currentAverageValue", "/current/averageValue"),
        ],
    },
    Source {
        kind: "Pods",
        field: "pods",
        spec: &[
            ("metricName", "/metric/name"),
            ("targetAverageValue", "/target/averageValue"),
            ("selector", "/metric/selector"),
        ],
        status: &[
            ("metricName", "/metric/name"),
            ("currentAverageValue", "/current/averageValue"),
            ("selector", "/metric/selector"),
        ],
    },
    Source {
        kind: "Object",
        field: "object",
        spec: &[
            ("target", "/describedObject"),
            ("metricName", "/metric/name"),
            ("targetValue", "/target/value"),
            ("selector", "/metric/selector"),
            ("averageValue", "/target/averageValue"),
        ],
        status: &[
            ("target", "/describedObject"),
            ("metricName", "/metric/name"),
            ("currentValue", "/current/value"),
            ("selector", "/metric/selector"),
            ("averageValue", "/current/averageValue"),
        ],
    },
    Source {
        kind: "External",
        field: "external",
        spec: &[
            ("metricName", "/metric/name"),
            ("metricSelector", "/metric/selector"),
            ("targetValue", "/target/value"),
            ("targetAverageValue", "/target/averageValue"),
        ],
        status: &[
            ("metricName", "/metric/name"),
            ("metricSelector", "/metric/selector"),
            ("currentValue", "/current/value"),
            ("currentAverageValue", "/current/averageValue"),
        ],
    },
];

/// Whether a metric spec or status is about the CPU of the pods (a `Resource` one).
fn is_cpu(metric: &Value) -> bool {
    str_at(metric, "/type") == "Resource" && str_at(metric, "/resource/name") == "cpu"
}

fn present<'a>(obj: &'a Value, pointer: &str) -> Option<&'a Value> {
    obj.pointer(pointer).filter(|v| !v.is_null())
}

/// A v2 metric spec (`status`: metric status) as v1's round-trip shape.
fn metric_to_v1(metric: &Value, status: bool) -> Value {
    let kind = str_at(metric, "/type");
    let mut out = Map::new();
    out.insert("type".into(), json!(kind));
    if let Some(source) = SOURCES.iter().find(|s| s.kind == kind) {
        let v2 = metric.get(source.field).cloned().unwrap_or(Value::Null);
        let mut v1 = Map::new();
        for (field, pointer) in if status { source.status } else { source.spec } {
            if let Some(value) = present(&v2, pointer) {
                v1.insert((*field).into(), value.clone());
            }
        }
        out.insert(source.field.into(), Value::Object(v1));
    }
    Value::Object(out)
}

/// A metric spec (`status`: metric status) of v1's round-trip shape as v2's.
fn metric_to_v2(metric: &Value, status: bool) -> Value {
    let kind = str_at(metric, "/type");
    let mut out = json!({"type": kind});
    if let Some(source) = SOURCES.iter().find(|s| s.kind == kind) {
        let v1 = metric.get(source.field).cloned().unwrap_or(Value::Null);
        let mut v2 = json!({});
        for (field, pointer) in if status { source.status } else { source.spec } {
            if let Some(value) = v1.get(*field).filter(|v| !v.is_null()) {
                set_pointer(&mut v2, pointer, value.clone());
            }
        }
        if !status {
            let target = object_mut(&mut v2, "target");
            let has = |f: &str| target.get(f).is_some_and(|v| !v.is_null());
            // What v1's fields imply (Kubernetes' v1 conversion picks the same).
            let target_type = match kind {
                "Resource" | "ContainerResource" if has("averageUtilization") => "Utilization",
                "Object" if !has("averageValue") => "Value",
                "External" if has("value") => "Value",
                _ => "AverageValue",
            };
            target.insert("type".into(), json!(target_type));
        }
        out[source.field] = v2;
    }
    out
}

/// Sets the value at a JSON pointer of plain keys, creating the objects on the way.
fn set_pointer(obj: &mut Value, pointer: &str, value: Value) {
    let mut at = obj;
    let mut keys = pointer.trim_start_matches('/').split('/').peekable();
    while let Some(key) = keys.next() {
        let map = object_mut_root(at);
        if keys.peek().is_none() {
            map.insert(key.into(), value);
            return;
        }
        at = map.entry(key).or_insert_with(|| json!({}));
    }
}

/// `obj` as an object, made one when it is not.
fn object_mut_root(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.is_object() {
        *obj = json!({});
    }
    obj.as_object_mut().expect("just made an object")
}

/// Removes the round-trip annotations (and the annotations map, when that empties it);
/// returns their values by key.
fn take_round_trip_annotations(obj: &mut Value) -> Map<String, Value> {
    let mut taken = Map::new();
    let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) else {
        return taken;
    };
    if let Some(annotations) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
        for key in ROUND_TRIP_ANNOTATIONS {
            if let Some(value) = annotations.remove(key) {
                taken.insert(key.into(), value);
            }
        }
        if annotations.is_empty() && !taken.is_empty() {
            meta.remove("annotations");
        }
    }
    taken
}

/// The JSON value in a round-trip annotation; Kubernetes ignores ones that do not parse.
fn annotation_json(taken: &Map<String, Value>, key: &str) -> Option<Value> {
    serde_json::from_str(taken.get(key)?.as_str()?).ok()
}

fn annotation_list(taken: &Map<String, Value>, key: &str) -> Option<Vec<Value>> {
    match annotation_json(taken, key)? {
        Value::Array(items) => Some(items),
        _ => None,
    }
}

fn set_annotation(obj: &mut Value, key: &str, value: &Value) {
    let meta = object_mut(obj, "metadata");
    let annotations = meta.entry("annotations").or_insert_with(|| json!({}));
    object_mut_root(annotations).insert(key.into(), json!(value.to_string()));
}

/// Removes the array at `key` of an object (empty when absent).
fn take_array(obj: Option<&mut Map<String, Value>>, key: &str) -> Vec<Value> {
    match obj.and_then(|o| o.remove(key)) {
        Some(Value::Array(items)) => items,
        _ => Vec::new(),
    }
}

/// A v2 object (the stored version) as autoscaling/v1.
fn v2_to_v1(obj: &mut Value) {
    // Only what this conversion writes may be there: a v2 client's copies are dropped.
    take_round_trip_annotations(obj);
    obj["apiVersion"] = json!("autoscaling/v1");
    let spec = object_mut(obj, "spec");
    let metrics = take_array(Some(&mut *spec), "metrics");
    let behavior = spec.remove("behavior").filter(|b| !b.is_null());
    // The first CPU metric is v1's target, when it is a utilization.
    if let Some(percent) = metrics
        .iter()
        .find(|m| is_cpu(m))
        .and_then(|m| present(m, "/resource/target/averageUtilization"))
    {
        spec.insert("targetCPUUtilizationPercentage".into(), percent.clone());
    }
    let other: Vec<Value> = metrics
        .iter()
        .filter(|m| !(is_cpu(m) && present(m, "/resource/target/averageUtilization").is_some()))
        .map(|m| metric_to_v1(m, false))
        .collect();

    let status = obj.get_mut("status").and_then(Value::as_object_mut);
    let (current, conditions) = match status {
        Some(status) => {
            let current = take_array(Some(&mut *status), "currentMetrics");
            let conditions = take_array(Some(&mut *status), "conditions");
            for metric in current.iter().filter(|m| is_cpu(m)) {
                if let Some(percent) = present(metric, "/resource/current/averageUtilization") {
                    status.insert("currentCPUUtilizationPercentage".into(), percent.clone());
                }
            }
            (current, conditions)
        }
        None => (Vec::new(), Vec::new()),
    };

    if !other.is_empty() {
        set_annotation(obj, METRICS_ANNOTATION, &Value::Array(other));
    }
    if !current.is_empty() {
        // Every current metric, CPU too: v1's percentage alone loses the raw value.
        let current: Vec<Value> = current.iter().map(|m| metric_to_v1(m, true)).collect();
        set_annotation(obj, CURRENT_METRICS_ANNOTATION, &Value::Array(current));
    }
    if let Some(behavior) = behavior {
        set_annotation(obj, BEHAVIOR_ANNOTATION, &behavior_to_annotation(&behavior));
    }
    if !conditions.is_empty() {
        set_annotation(obj, CONDITIONS_ANNOTATION, &Value::Array(conditions));
    }
}

/// An autoscaling/v1 object as v2 (the stored version), with v2's defaults for metrics.
fn v1_to_v2(obj: &mut Value) {
    let taken = take_round_trip_annotations(obj);
    obj["apiVersion"] = json!("autoscaling/v2");
    let spec = object_mut(obj, "spec");
    let mut metrics: Vec<Value> = annotation_list(&taken, METRICS_ANNOTATION)
        .unwrap_or_default()
        .iter()
        .map(|m| metric_to_v2(m, false))
        .collect();
    if let Some(percent) = spec
        .remove("targetCPUUtilizationPercentage")
        .filter(|p| !p.is_null())
    {
        metrics.push(cpu_utilization(percent));
    }
    if metrics.is_empty() {
        metrics.push(cpu_utilization(json!(DEFAULT_CPU_UTILIZATION)));
    }
    spec.insert("metrics".into(), Value::Array(metrics));
    if let Some(behavior) =
        annotation_json(&taken, BEHAVIOR_ANNOTATION).and_then(|b| behavior_from_annotation(&b))
    {
        spec.insert("behavior".into(), behavior);
    }

    let cpu = obj
        .get_mut("status")
        .and_then(Value::as_object_mut)
        .and_then(|s| s.remove("currentCPUUtilizationPercentage"))
        .filter(|c| !c.is_null());
    let current = match annotation_list(&taken, CURRENT_METRICS_ANNOTATION) {
        Some(list) => list.iter().map(|m| metric_to_v2(m, true)).collect(),
        None => cpu
            .map(|percent| {
                vec![json!({"type": "Resource", "resource": {"name": "cpu",
                    "current": {"averageUtilization": percent}}})]
            })
            .unwrap_or_default(),
    };
    let conditions = annotation_list(&taken, CONDITIONS_ANNOTATION).unwrap_or_default();
    if !current.is_empty() {
        object_mut(obj, "status").insert("currentMetrics".into(), Value::Array(current));
    }
    if !conditions.is_empty() {
        object_mut(obj, "status").insert("conditions".into(), Value::Array(conditions));
    }
}

/// A v2 metric targeting an average CPU utilization of `percent`.
fn cpu_utilization(percent: Value) -> Value {
    json!({"type": "Resource", "resource": {"name": "cpu",
        "target": {"type": "Utilization", "averageUtilization": percent}}})
}

/// The fields of scaling rules and of a scaling policy: v2's name, the annotation's.
const RULES_FIELDS: [(&str, &str); 3] = [
    ("stabilizationWindowSeconds", "StabilizationWindowSeconds"),
    ("selectPolicy", "SelectPolicy"),
    ("policies", "Policies"),
];
const POLICY_FIELDS: [(&str, &str); 3] = [
    ("type", "Type"),
    ("value", "Value"),
    ("periodSeconds", "PeriodSeconds"),
];

/// A v2 behavior as the annotation holds it (unset fields as null, as Go writes them).
fn behavior_to_annotation(behavior: &Value) -> Value {
    let rules = |rules: Option<&Value>| -> Value {
        let Some(rules) = rules.filter(|r| !r.is_null()) else {
            return Value::Null;
        };
        let mut out = Map::new();
        for (v2, annotation) in RULES_FIELDS {
            let value = match (v2, rules.get(v2)) {
                ("policies", Some(Value::Array(policies))) => policies
                    .iter()
                    .map(|p| rename_fields(p, &POLICY_FIELDS, false))
                    .collect(),
                (_, value) => value.cloned().unwrap_or(Value::Null),
            };
            out.insert(annotation.into(), value);
        }
        if let Some(tolerance) = rules.get("tolerance").filter(|t| !t.is_null()) {
            out.insert("Tolerance".into(), tolerance.clone());
        }
        Value::Object(out)
    };
    json!({"ScaleUp": rules(behavior.get("scaleUp")), "ScaleDown": rules(behavior.get("scaleDown"))})
}

/// The behavior in an annotation as v2's; `None` when it sets nothing.
fn behavior_from_annotation(annotation: &Value) -> Option<Value> {
    let rules = |rules: &Value| -> Value {
        let mut out = rename_fields(rules, &RULES_FIELDS, true);
        if let Some(policies) = out.get_mut("policies").and_then(Value::as_array_mut) {
            for policy in policies {
                *policy = rename_fields(policy, &POLICY_FIELDS, true);
            }
        }
        if let Some(tolerance) = field_ignoring_case(rules, "tolerance") {
            out["tolerance"] = tolerance.clone();
        }
        out
    };
    let mut out = Map::new();
    for direction in ["scaleUp", "scaleDown"] {
        if let Some(r) = field_ignoring_case(annotation, direction) {
            out.insert(direction.into(), rules(r));
        }
    }
    (!out.is_empty()).then_some(Value::Object(out))
}

/// The non-null field `name` of an object, matched ignoring case (as Go decodes JSON).
fn field_ignoring_case<'a>(obj: &'a Value, name: &str) -> Option<&'a Value> {
    obj.as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
        .filter(|v| !v.is_null())
}

/// Renames `fields` (v2 name, annotation name) of `obj`: to the annotation's names, or back
/// (`from_annotation`, matching any case and skipping nulls).
fn rename_fields(obj: &Value, fields: &[(&str, &str)], from_annotation: bool) -> Value {
    let mut out = Map::new();
    for (v2, annotation) in fields {
        if from_annotation {
            if let Some(value) = field_ignoring_case(obj, v2) {
                out.insert((*v2).into(), value.clone());
            }
        } else {
            out.insert(
                (*annotation).into(),
                obj.get(*v2).cloned().unwrap_or(Value::Null),
            );
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(spec: Value, status: Value) -> Value {
        json!({
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": spec,
            "status": status,
        })
    }

    fn target() -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"})
    }

    #[test]
    fn cpu_target_is_v1s_percentage() {
        let stored = v2(
            json!({"scaleTargetRef": target(), "minReplicas": 1, "maxReplicas": 5,
                "metrics": [cpu_utilization(json!(60))]}),
            json!({"currentReplicas": 2, "desiredReplicas": 3, "observedGeneration": 4,
                "lastScaleTime": "2024-01-01T00:00:00Z",
                "currentMetrics": [{"type": "Resource", "resource": {"name": "cpu",
                    "current": {"averageUtilization": 42, "averageValue": "120m"}}}]}),
        );
        let mut obj = stored.clone();
        HPA_V1.to_served(&mut obj);
        assert_eq!(obj["apiVersion"], "autoscaling/v1");
        assert_eq!(
            obj["spec"],
            json!({"scaleTargetRef": target(), "minReplicas": 1, "maxReplicas": 5,
                "targetCPUUtilizationPercentage": 60})
        );
        assert_eq!(
            obj["status"],
            json!({"currentReplicas": 2, "desiredReplicas": 3, "observedGeneration": 4,
                "lastScaleTime": "2024-01-01T00:00:00Z", "currentCPUUtilizationPercentage": 42})
        );
        let annotations = obj["metadata"]["annotations"].as_object().unwrap();
        assert_eq!(annotations.len(), 1, "{annotations:?}");
        let current: Value =
            serde_json::from_str(annotations[CURRENT_METRICS_ANNOTATION].as_str().unwrap())
                .unwrap();
        assert_eq!(
            current,
            json!([{"type": "Resource", "resource": {"name": "cpu",
                "currentAverageUtilization": 42, "currentAverageValue": "120m"}}])
        );
        HPA_V1.to_stored(&mut obj);
        assert_eq!(obj, stored);
    }

    #[test]
    fn metrics_v1_cannot_express_survive_a_v1_round_trip() {
        let selector = json!({"matchLabels": {"queue": "jobs"}});
        let stored = v2(
            json!({
                "scaleTargetRef": target(), "minReplicas": 2, "maxReplicas": 10,
                "metrics": [
                    {"type": "Pods", "pods": {"metric": {"name": "rps", "selector": selector},
                        "target": {"type": "AverageValue", "averageValue": "10"}}},
                    {"type": "Object", "object": {
                        "describedObject": {"apiVersion": "v1", "kind": "Service", "name": "front"},
                        "metric": {"name": "hits"},
                        "target": {"type": "Value", "value": "2k"}}},
                    {"type": "External", "external": {"metric": {"name": "queue", "selector": selector},
                        "target": {"type": "AverageValue", "averageValue": "30"}}},
                    {"type": "ContainerResource", "containerResource": {"name": "memory",
                        "container": "app", "target": {"type": "AverageValue", "averageValue": "1Gi"}}},
                    {"type": "Resource", "resource": {"name": "memory",
                        "target": {"type": "Utilization", "averageUtilization": 70}}},
                    cpu_utilization(json!(50)),
                ],
                "behavior": {
                    "scaleUp": {"stabilizationWindowSeconds": 0, "selectPolicy": "Max",
                        "policies": [{"type": "Pods", "value": 4, "periodSeconds": 15}]},
                    "scaleDown": {"policies": [{"type": "Percent", "value": 10, "periodSeconds": 60}]},
                },
            }),
            json!({
                "currentReplicas": 3, "desiredReplicas": 3,
                "currentMetrics": [
                    {"type": "Pods", "pods": {"metric": {"name": "rps"}, "current": {"averageValue": "8"}}},
                    {"type": "External", "external": {"metric": {"name": "queue"},
                        "current": {"value": "12", "averageValue": "4"}}},
                ],
                "conditions": [{"type": "AbleToScale", "status": "True",
                    "lastTransitionTime": "2024-01-01T00:00:00Z", "reason": "ReadyForNewScale",
                    "message": "recommended size matches current size"}],
            }),
        );
        let mut obj = stored.clone();
        HPA_V1.to_served(&mut obj);
        assert_eq!(obj["spec"]["targetCPUUtilizationPercentage"], 50);
        assert!(obj["spec"].get("metrics").is_none());
        assert!(obj["status"]
            .get("currentCPUUtilizationPercentage")
            .is_none());
        let annotation = |key: &str| -> Value {
            serde_json::from_str(obj["metadata"]["annotations"][key].as_str().unwrap()).unwrap()
        };
        let metrics = annotation(METRICS_ANNOTATION);
        assert_eq!(metrics.as_array().unwrap().len(), 5);
        assert_eq!(
            metrics[0],
            json!({"type": "Pods", "pods": {"metricName": "rps", "targetAverageValue": "10",
                "selector": selector}})
        );
        assert_eq!(
            metrics[1],
            json!({"type": "Object", "object": {"metricName": "hits", "targetValue": "2k",
                "target": {"apiVersion": "v1", "kind": "Service", "name": "front"}}})
        );
        assert_eq!(
            metrics[2],
            json!({"type": "External", "external": {"metricName": "queue",
                "metricSelector": selector, "targetAverageValue": "30"}})
        );
        assert_eq!(
            metrics[4],
            json!({"type": "Resource", "resource": {"name": "memory", "targetAverageUtilization": 70}})
        );
        assert_eq!(
            annotation(BEHAVIOR_ANNOTATION),
            json!({
                "ScaleUp": {"StabilizationWindowSeconds": 0, "SelectPolicy": "Max",
                    "Policies": [{"Type": "Pods", "Value": 4, "PeriodSeconds": 15}]},
                "ScaleDown": {"StabilizationWindowSeconds": null, "SelectPolicy": null,
                    "Policies": [{"Type": "Percent", "Value": 10, "PeriodSeconds": 60}]},
            })
        );
        assert_eq!(
            annotation(CURRENT_METRICS_ANNOTATION)[1],
            json!({"type": "External", "external": {"metricName": "queue",
                "currentValue": "12", "currentAverageValue": "4"}})
        );
        assert_eq!(
            annotation(CONDITIONS_ANNOTATION),
            stored["status"]["conditions"]
        );
        HPA_V1.to_stored(&mut obj);
        assert_eq!(obj, stored);
    }

    #[test]
    fn v1_without_target_defaults_to_80_percent() {
        let mut obj = json!({
            "apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web", "annotations": {"team": "a"}},
            "spec": {"scaleTargetRef": target(), "maxReplicas": 3},
            "status": {"currentReplicas": 1, "desiredReplicas": 1,
                "currentCPUUtilizationPercentage": 30},
        });
        HPA_V1.to_stored(&mut obj);
        assert_eq!(obj["apiVersion"], "autoscaling/v2");
        assert_eq!(obj["metadata"]["annotations"], json!({"team": "a"}));
        assert_eq!(obj["spec"]["metrics"], json!([cpu_utilization(json!(80))]));
        assert_eq!(
            obj["status"]["currentMetrics"],
            json!([{"type": "Resource", "resource": {"name": "cpu",
                "current": {"averageUtilization": 30}}}])
        );
        assert!(obj["status"]
            .get("currentCPUUtilizationPercentage")
            .is_none());
    }

    #[test]
    fn annotations_are_read_as_kubernetes_writes_them() {
        let mut obj = json!({
            "apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web", "annotations": {
                METRICS_ANNOTATION: r#"[{"type":"Object","object":{"target":{"kind":"Service","name":"s","apiVersion":"v1"},"metricName":"hits","targetValue":"0","averageValue":"5"}}]"#,
                BEHAVIOR_ANNOTATION: r#"{"ScaleUp":null,"ScaleDown":{"StabilizationWindowSeconds":60,"SelectPolicy":null,"Policies":null}}"#,
                CONDITIONS_ANNOTATION: "not json",
            }},
            "spec": {"scaleTargetRef": target(), "maxReplicas": 3},
        });
        HPA_V1.to_stored(&mut obj);
        assert!(obj["metadata"].get("annotations").is_none());
        assert_eq!(
            obj["spec"]["metrics"],
            json!([{"type": "Object", "object": {
                "describedObject": {"kind": "Service", "name": "s", "apiVersion": "v1"},
                "metric": {"name": "hits"},
                "target": {"type": "AverageValue", "value": "0", "averageValue": "5"}}}])
        );
        assert_eq!(
            obj["spec"]["behavior"],
            json!({"scaleDown": {"stabilizationWindowSeconds": 60}})
        );
        assert!(obj.get("status").is_none());
    }

    #[test]
    fn a_v2_clients_round_trip_annotations_are_not_trusted() {
        let mut obj = v2(
            json!({"scaleTargetRef": target(), "maxReplicas": 3,
                "metrics": [cpu_utilization(json!(70))]}),
            json!({"desiredReplicas": 1}),
        );
        obj["metadata"]["annotations"] = json!({METRICS_ANNOTATION: "[]"});
        HPA_V1.to_served(&mut obj);
        assert!(obj["metadata"].get("annotations").is_none());
        assert_eq!(obj["spec"]["targetCPUUtilizationPercentage"], 70);
    }
}
