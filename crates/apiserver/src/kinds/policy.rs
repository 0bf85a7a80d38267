//! Policy kinds: ResourceQuota, HorizontalPodAutoscaler, PodDisruptionBudget,
//! PriorityClass and the admission webhook configurations.

use serde_json::{json, Value};

use super::printers::scalar_or_none;
use super::{array_at, int_at, object_mut, set_default, str_at};
use crate::registry::Strategy;
use crate::table::{self, Column};
use crate::validation::FieldError;

/// The strategy of `resourcequotas`.
pub struct ResourceQuotaStrategy;

impl Strategy for ResourceQuotaStrategy {
    fn prepare_for_create(&self, obj: &mut Value) {
        obj["status"] = json!({});
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            Column::name(),
            Column::age(),
            Column::text("Request", "Request represents a minimum amount of cpu/memory that a container may consume."),
            Column::text("Limit", "Limits control the maximum amount of cpu/memory that a container may use independent of contention on the node."),
        ]
    }

    fn row(&self, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
        let mut requests = Vec::new();
        let mut limits = Vec::new();
        if let Some(hard) = obj
            .pointer("/status/hard")
            .or_else(|| obj.pointer("/spec/hard"))
            .and_then(Value::as_object)
        {
            let mut keys: Vec<&String> = hard.keys().collect();
            keys.sort();
            for key in keys {
                let used = obj
                    .pointer(&format!(
                        "/status/used/{}",
                        key.replace('~', "~0").replace('/', "~1")
                    ))
                    .and_then(Value::as_str)
                    .unwrap_or("0");
                let entry = format!("{key}: {used}/{}", hard[key].as_str().unwrap_or(""));
                if key.starts_with("limits.") {
                    limits.push(entry);
                } else {
                    requests.push(entry);
                }
            }
        }
        vec![
            table::name_cell(obj),
            table::age_cell(obj, now),
            json!(requests.join(", ")),
            json!(limits.join(", ")),
        ]
    }
}

/// The strategy of `horizontalpodautoscalers` (v1 and v2).
pub struct HpaStrategy;

impl Strategy for HpaStrategy {
    fn prepare_for_create(&self, obj: &mut Value) {
        obj["status"] = json!({"currentReplicas": 0, "desiredReplicas": 0});
    }

    fn default(&self, obj: &mut Value) {
        let v2 = str_at(obj, "/apiVersion") == "autoscaling/v2";
        let spec = object_mut(obj, "spec");
        set_default(spec, "minReplicas", json!(1));
        if v2
            && spec
                .get("metrics")
                .and_then(Value::as_array)
                .is_none_or(|m| m.is_empty())
        {
            spec.insert(
                "metrics".into(),
                json!([{"type": "Resource", "resource": {"name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": 80}}}]),
            );
        }
    }

    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        let mut errs = Vec::new();
        if int_at(obj, "/spec/maxReplicas") < 1 {
            errs.push(FieldError::invalid(
                "spec.maxReplicas",
                json!(int_at(obj, "/spec/maxReplicas")),
                "must be greater than or equal to 1",
            ));
        }
        if int_at(obj, "/spec/minReplicas") > int_at(obj, "/spec/maxReplicas") {
            errs.push(FieldError::invalid(
                "spec.maxReplicas",
                json!(int_at(obj, "/spec/maxReplicas")),
                "must be greater than or equal to `minReplicas`",
            ));
        }
        errs
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            Column::name(),
            Column::text("Reference", "Reference to the object the autoscaler scales"),
            Column::text("Targets", "Current and target values of the metrics the autoscaler scales on"),
            Column::text("MinPods", "Lower limit for the number of pods that can be set by the autoscaler, default 1."),
            Column::integer("MaxPods", "Upper limit for the number of pods that can be set by the autoscaler; cannot be smaller than MinReplicas."),
            Column::integer("Replicas", "Current number of replicas of pods managed by this autoscaler."),
            Column::age(),
        ]
    }

    fn row(&self, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
        let reference = format!(
            "{}/{}",
            str_at(obj, "/spec/scaleTargetRef/kind"),
            str_at(obj, "/spec/scaleTargetRef/name")
        );
        vec![
            table::name_cell(obj),
            json!(reference),
            json!(hpa_targets(obj)),
            json!(obj
                .pointer("/spec/minReplicas")
                .and_then(Value::as_i64)
                .map_or("<unset>".to_owned(), |m| m.to_string())),
            json!(int_at(obj, "/spec/maxReplicas")),
            json!(int_at(obj, "/status/currentReplicas")),
            table::age_cell(obj, now),
        ]
    }
}

/// The Targets cell: `cpu: <unknown>/80%` per metric, as kubectl prints it.
fn hpa_targets(obj: &Value) -> String {
    if let Some(percent) = obj
        .pointer("/spec/targetCPUUtilizationPercentage")
        .and_then(Value::as_i64)
    {
        let current = obj
            .pointer("/status/currentCPUUtilizationPercentage")
            .and_then(Value::as_i64)
            .map_or("<unknown>".to_owned(), |c| format!("{c}%"));
        return format!("cpu: {current}/{percent}%");
    }
    let metrics = array_at(obj, "/spec/metrics");
    if metrics.is_empty() {
        return "<none>".into();
    }
    let current_metrics = array_at(obj, "/status/currentMetrics");
    let parts: Vec<String> = metrics
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let (name, target) = match str_at(m, "/type") {
                "Resource" => (str_at(m, "/resource/name"), m.pointer("/resource/target")),
                "ContainerResource" => (
                    str_at(m, "/containerResource/name"),
                    m.pointer("/containerResource/target"),
                ),
                "Pods" => (str_at(m, "/pods/metric/name"), m.pointer("/pods/target")),
                "Object" => (
                    str_at(m, "/object/metric/name"),
                    m.pointer("/object/target"),
                ),
                _ => (
                    str_at(m, "/external/metric/name"),
                    m.pointer("/external/target"),
                ),
            };
            let target = target.cloned().unwrap_or_default();
            let wanted = match target.get("averageUtilization").and_then(Value::as_i64) {
                Some(u) => format!("{u}%"),
                None => target
                    .get("averageValue")
                    .or_else(|| target.get("value"))
                    .map(|v| {
                        v.as_str()
                            .map(str::to_owned)
                            .unwrap_or_else(|| v.to_string())
                    })
                    .unwrap_or_default(),
            };
            // The status entry of the same index and type, as kubectl's printer pairs them.
            let status = current_metrics
                .get(i)
                .filter(|c| str_at(c, "/type") == str_at(m, "/type"));
            let current = status
                .and_then(|c| {
                    let key = match str_at(c, "/type") {
                        "Resource" => "resource",
                        "ContainerResource" => "containerResource",
                        "Pods" => "pods",
                        "Object" => "object",
                        _ => "external",
                    };
                    let current = c.get(key)?.get("current")?;
                    if target.get("averageUtilization").is_some() {
                        let u = current.get("averageUtilization")?.as_i64()?;
                        return Some(format!("{u}%"));
                    }
                    current
                        .get("averageValue")
                        .or_else(|| current.get("value"))
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                })
                .unwrap_or_else(|| "<unknown>".to_owned());
            format!("{name}: {current}/{wanted}")
        })
        .collect();
    parts.join(", ")
}

/// The strategy of `poddisruptionbudgets`.
pub struct PdbStrategy;

impl Strategy for PdbStrategy {
    fn prepare_for_create(&self, obj: &mut Value) {
        obj["status"] = json!({"currentHealthy": 0, "desiredHealthy": 0, "disruptionsAllowed": 0, "expectedPods": 0});
    }

    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        if obj.pointer("/spec/minAvailable").is_some()
            && obj.pointer("/spec/maxUnavailable").is_some()
        {
            return vec![FieldError::invalid(
                "spec",
                obj.get("spec").cloned().unwrap_or_default(),
                "minAvailable and maxUnavailable cannot be both set",
            )];
        }
        Vec::new()
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            Column::name(),
            Column::text(
                "Min Available",
                "The minimum number of pods that must be available.",
            ),
            Column::text(
                "Max Unavailable",
                "The maximum number of pods that may be unavailable.",
            ),
            Column::integer(
                "Allowed Disruptions",
                "Calculated number of pods that may be disrupted at this time.",
            ),
            Column::age(),
        ]
    }

    fn row(&self, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
        let or_na = |v: Option<&Value>| match v {
            Some(Value::String(s)) => json!(s),
            Some(v) if !v.is_null() => json!(v.to_string()),
            _ => json!("N/A"),
        };
        vec![
            table::name_cell(obj),
            or_na(obj.pointer("/spec/minAvailable")),
            or_na(obj.pointer("/spec/maxUnavailable")),
            json!(int_at(obj, "/status/disruptionsAllowed")),
            table::age_cell(obj, now),
        ]
    }
}

/// The priority classes every cluster has: (name, value, description).
pub const SYSTEM_PRIORITY_CLASSES: &[(&str, i64, &str)] = &[
    (
        "system-node-critical",
        2_000_001_000,
        "Used for system critical pods that must not be moved from their current node.",
    ),
    (
        "system-cluster-critical",
        2_000_000_000,
        "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary.",
    ),
];

/// The strategy of `priorityclasses`.
pub struct PriorityClassStrategy;

impl Strategy for PriorityClassStrategy {
    fn default(&self, obj: &mut Value) {
        if let Some(o) = obj.as_object_mut() {
            set_default(o, "preemptionPolicy", json!("PreemptLowerPriority"));
        }
    }

    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        let name = str_at(obj, "/metadata/name");
        let value = int_at(obj, "/value");
        let system = SYSTEM_PRIORITY_CLASSES
            .iter()
            .any(|(n, v, _)| *n == name && *v == value);
        if name.starts_with("system-") && !system {
            return vec![FieldError::forbidden(
                "metadata.name",
                "priority class names with 'system-' prefix are reserved for system use only",
            )];
        }
        if value > 1_000_000_000 && !system {
            return vec![FieldError::forbidden(
                "value",
                "maximum allowed value of a user defined priority is 1000000000",
            )];
        }
        Vec::new()
    }

    fn validate_update(&self, new: &Value, old: &Value) -> Vec<FieldError> {
        if new.get("value") != old.get("value") {
            return vec![FieldError::forbidden(
                "value",
                "may not be changed in an update.",
            )];
        }
        Vec::new()
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            Column::name(),
            Column::integer("Value", "The priority value of the priority class."),
            Column { kind: "boolean", ..Column::text("Global-Default", "Whether this priority class is the default for pods without a priority class name.") },
            Column::age(),
            Column::text("PreemptionPolicy", "PreemptionPolicy is the Policy for preempting pods with lower priority."),
        ]
    }

    fn row(&self, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
        vec![
            table::name_cell(obj),
            json!(int_at(obj, "/value")),
            json!(obj
                .get("globalDefault")
                .and_then(Value::as_bool)
                .unwrap_or(false)),
            table::age_cell(obj, now),
            scalar_or_none(obj.get("preemptionPolicy")),
        ]
    }
}

/// The strategy of `mutatingwebhookconfigurations` and `validatingwebhookconfigurations`.
pub struct WebhookConfigurationStrategy;

impl Strategy for WebhookConfigurationStrategy {
    fn default(&self, obj: &mut Value) {
        let mutating = str_at(obj, "/kind") == "MutatingWebhookConfiguration";
        if let Some(webhooks) = obj.get_mut("webhooks").and_then(Value::as_array_mut) {
            for webhook in webhooks {
                let Some(w) = webhook.as_object_mut() else {
                    continue;
                };
                set_default(w, "failurePolicy", json!("Fail"));
                set_default(w, "matchPolicy", json!("Equivalent"));
                set_default(w, "namespaceSelector", json!({}));
                set_default(w, "objectSelector", json!({}));
                set_default(w, "timeoutSeconds", json!(10));
                if mutating {
                    set_default(w, "reinvocationPolicy", json!("Never"));
                }
                if let Some(rules) = w.get_mut("rules").and_then(Value::as_array_mut) {
                    for rule in rules.iter_mut().filter_map(Value::as_object_mut) {
                        set_default(rule, "scope", json!("*"));
                    }
                }
                if let Some(service) = w
                    .get_mut("clientConfig")
                    .and_then(|c| c.get_mut("service"))
                    .and_then(Value::as_object_mut)
                {
                    set_default(service, "port", json!(443));
                }
            }
        }
    }

    /// Each webhook's `matchConditions`: unique names and expressions that compile
    /// (`ValidateMutatingWebhookConfiguration`'s part a user meets first).
    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        let mut errs = Vec::new();
        for (i, webhook) in array_at(obj, "/webhooks").iter().enumerate() {
            let conditions = array_at(webhook, "/matchConditions");
            for (j, condition) in conditions.iter().enumerate() {
                let at = format!("webhooks[{i}].matchConditions[{j}]");
                let name = str_at(condition, "/name");
                if name.is_empty() {
                    errs.push(FieldError::required(format!("{at}.name"), ""));
                } else if conditions[..j].iter().any(|c| str_at(c, "/name") == name) {
                    errs.push(FieldError::duplicate(format!("{at}.name"), json!(name)));
                }
                let expression = str_at(condition, "/expression");
                if expression.trim().is_empty() {
                    errs.push(FieldError::required(format!("{at}.expression"), ""));
                } else if let Err(e) = crate::expressions::compiled(expression) {
                    errs.push(FieldError::invalid(
                        format!("{at}.expression"),
                        json!(expression),
                        format!("compilation failed: {e}"),
                    ));
                }
            }
        }
        errs
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            Column::name(),
            Column::integer(
                "Webhooks",
                "Webhooks indicates the number of webhooks registered in this configuration",
            ),
            Column::age(),
        ]
    }

    fn row(&self, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
        vec![
            table::name_cell(obj),
            json!(array_at(obj, "/webhooks").len()),
            table::age_cell(obj, now),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_match_conditions_must_compile() {
        let config = |expression: &str| {
            json!({"kind": "ValidatingWebhookConfiguration", "webhooks": [{"name": "w",
                "matchConditions": [{"name": "invalid-expression-1", "expression": expression}]}]})
        };
        let errs = WebhookConfigurationStrategy.validate(&config("... [] bad expression"));
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].field, "webhooks[0].matchConditions[0].expression");
        assert!(errs[0].detail.contains("compilation failed"), "{errs:?}");
        let ok = config("object.metadata.name != 'skip-me'");
        assert!(WebhookConfigurationStrategy.validate(&ok).is_empty());
    }

    #[test]
    fn hpa_targets_pair_each_metric_with_its_current_value() {
        let mut hpa = json!({
            "apiVersion": "autoscaling/v2",
            "spec": {"metrics": [
                {"type": "Resource", "resource": {"name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": 50}}},
                {"type": "Resource", "resource": {"name": "memory",
                    "target": {"type": "AverageValue", "averageValue": "100Mi"}}},
            ]},
        });
        assert_eq!(
            hpa_targets(&hpa),
            "cpu: <unknown>/50%, memory: <unknown>/100Mi"
        );
        hpa["status"] = json!({"currentMetrics": [
            {"type": "Resource", "resource": {"name": "cpu",
                "current": {"averageUtilization": 250, "averageValue": "250m"}}},
            {"type": "Resource", "resource": {"name": "memory",
                "current": {"averageValue": "20Mi"}}},
        ]});
        assert_eq!(hpa_targets(&hpa), "cpu: 250%/50%, memory: 20Mi/100Mi");
    }
}
