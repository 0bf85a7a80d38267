//! apps/v1 workloads: Deployment, ReplicaSet, StatefulSet and DaemonSet, which share a
//! selector, a pod template and a status written by their controllers.

use serde_json::{json, Value};

use super::pod::{default_pod_spec, validate_pod_spec};
use super::{containers_and_images, int_at, object_mut, selector_string, set_default};
use crate::registry::Strategy;
use crate::table::{self, Column};
use crate::validation::FieldError;

/// Defaults and validation every workload shares.
fn default_workload(obj: &mut Value, replicas: bool) {
    let spec = object_mut(obj, "spec");
    if replicas {
        set_default(spec, "replicas", json!(1));
    }
    set_default(spec, "revisionHistoryLimit", json!(10));
    let template = spec.entry("template").or_insert_with(|| json!({}));
    default_pod_spec(object_mut(template, "spec"));
}

/// A `maxSurge` / `maxUnavailable` value: a non-negative integer or percentage; `None`
/// when it is not set (or not a number or string).
fn surge_or_unavailable(
    value: Option<&Value>,
    field: &str,
    errs: &mut Vec<FieldError>,
    at_most_100_percent: bool,
) -> Option<f64> {
    let value = value?;
    let (n, percent) = match value {
        Value::Number(n) => (n.as_f64().unwrap_or(-1.0), false),
        Value::String(s) => match s.strip_suffix('%').map(str::parse::<u32>) {
            Some(Ok(p)) => (f64::from(p), true),
            _ => {
                errs.push(FieldError::invalid(
                    field,
                    value.clone(),
                    "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')",
                ));
                return None;
            }
        },
        _ => return None,
    };
    if n < 0.0 {
        errs.push(FieldError::invalid(
            field,
            value.clone(),
            "must be greater than or equal to 0",
        ));
    } else if percent && at_most_100_percent && n > 100.0 {
        errs.push(FieldError::invalid(
            field,
            value.clone(),
            "must not be greater than 100%",
        ));
    }
    Some(n)
}

/// `rollingUpdate` of a Deployment (`spec.strategy`) or DaemonSet (`spec.updateStrategy`):
/// both bounds valid, and not both zero.
fn validate_rolling_update(obj: &Value, strategy: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let Some(rolling) = obj.pointer(&format!("/spec/{strategy}/rollingUpdate")) else {
        return errs;
    };
    let base = format!("spec.{strategy}.rollingUpdate");
    let unavailable = surge_or_unavailable(
        rolling.get("maxUnavailable"),
        &format!("{base}.maxUnavailable"),
        &mut errs,
        true,
    );
    let surge = surge_or_unavailable(
        rolling.get("maxSurge"),
        &format!("{base}.maxSurge"),
        &mut errs,
        strategy == "updateStrategy",
    );
    if unavailable == Some(0.0) && surge.unwrap_or(0.0) == 0.0 {
        errs.push(FieldError::invalid(
            format!("{base}.maxUnavailable"),
            rolling["maxUnavailable"].clone(),
            "may not be 0 when `maxSurge` is 0",
        ));
    }
    errs
}

fn validate_workload(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let selector = obj.pointer("/spec/selector");
    let match_labels = selector
        .and_then(|s| s.get("matchLabels"))
        .and_then(Value::as_object);
    let has_expressions = selector
        .and_then(|s| s.get("matchExpressions"))
        .and_then(Value::as_array)
        .is_some_and(|e| !e.is_empty());
    if selector.is_none() || (match_labels.is_none_or(|m| m.is_empty()) && !has_expressions) {
        errs.push(FieldError::required("spec.selector", ""));
        if selector.is_some() {
            errs.push(FieldError::invalid(
                "spec.selector",
                selector.cloned().unwrap_or_default(),
                "empty selector is invalid for deployment",
            ));
        }
    } else if let Some(match_labels) = match_labels {
        let labels = obj
            .pointer("/spec/template/metadata/labels")
            .and_then(Value::as_object);
        let matches = match_labels
            .iter()
            .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v));
        if !matches {
            errs.push(FieldError::invalid(
                "spec.template.metadata.labels",
                json!(labels.cloned().unwrap_or_default()),
                "`selector` does not match template `labels`",
            ));
        }
    }
    if int_at(obj, "/spec/replicas") < 0 {
        errs.push(FieldError::invalid(
            "spec.replicas",
            json!(int_at(obj, "/spec/replicas")),
            "must be greater than or equal to 0",
        ));
    }
    errs.extend(validate_pod_spec(
        obj.pointer("/spec/template/spec"),
        "spec.template.spec",
    ));
    errs
}

fn selector_is_immutable(new: &Value, old: &Value) -> Vec<FieldError> {
    if new.pointer("/spec/selector") != old.pointer("/spec/selector") {
        return vec![FieldError::invalid(
            "spec.selector",
            new.pointer("/spec/selector").cloned().unwrap_or_default(),
            "field is immutable",
        )];
    }
    Vec::new()
}

fn wide_cells(obj: &Value, with_selector: bool) -> Vec<Value> {
    let (containers, images) = containers_and_images(obj.pointer("/spec/template/spec"));
    let mut cells = vec![json!(containers), json!(images)];
    if with_selector {
        cells.push(json!(selector_string(obj.pointer("/spec/selector"))));
    }
    cells
}

fn wide_columns(with_selector: bool) -> Vec<Column> {
    let mut cols = vec![
        Column::wide("Containers", "Names of each container in the template."),
        Column::wide(
            "Images",
            "Images referenced by each container in the template.",
        ),
    ];
    if with_selector {
        cols.push(Column::wide("Selector", "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment."));
    }
    cols
}

/// The strategy of `deployments`.
pub struct DeploymentStrategy;

impl Strategy for DeploymentStrategy {
    fn prepare_for_create(&self, obj: &mut Value) {
        obj["status"] = json!({});
    }

    fn default(&self, obj: &mut Value) {
        default_workload(obj, true);
        let spec = object_mut(obj, "spec");
        set_default(spec, "progressDeadlineSeconds", json!(600));
        let strategy = spec.entry("strategy").or_insert_with(|| json!({}));
        let strategy = object_mut_value(strategy);
        set_default(strategy, "type", json!("RollingUpdate"));
        if strategy.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
            let rolling = strategy.entry("rollingUpdate").or_insert_with(|| json!({}));
            let rolling = object_mut_value(rolling);
            set_default(rolling, "maxUnavailable", json!("25%"));
            set_default(rolling, "maxSurge", json!("25%"));
        }
    }

    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        let mut errs = validate_workload(obj);
        errs.extend(validate_rolling_update(obj, "strategy"));
        errs
    }

    fn validate_update(&self, new: &Value, old: &Value) -> Vec<FieldError> {
        selector_is_immutable(new, old)
    }

    fn columns(&self) -> Vec<Column> {
        let mut cols = vec![
            Column::name(),
            Column::text("Ready", "Number of the pod with ready state"),
            Column::integer("Up-to-date", "Total number of non-terminated pods targeted by this deployment that have the desired template spec."),
            Column::integer("Available", "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment."),
            Column::age(),
        ];
        cols.extend(wide_columns(true));
        cols
    }

    fn row(&self, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
        let mut cells = vec![
            table::name_cell(obj),
            json!(format!(
                "{}/{}",
                int_at(obj, "/status/readyReplicas"),
                int_at(obj, "/spec/replicas")
            )),
            json!(int_at(obj, "/status/updatedReplicas")),
            json!(int_at(obj, "/status/availableReplicas")),
            table::age_cell(obj, now),
        ];
        cells.extend(wide_cells(obj, true));
        cells
    }
}

/// The strategy of `replicasets`.
pub struct ReplicaSetStrategy;

impl Strategy for ReplicaSetStrategy {
    fn prepare_for_create(&self, obj: &mut Value) {
        obj["status"] = json!({"replicas": 0});
    }

    fn default(&self, obj: &mut Value) {
        default_workload(obj, true);
        if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
            spec.remove("revisionHistoryLimit");
        }
    }

    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        validate_workload(obj)
    }

    fn validate_update(&self, new: &Value, old: &Value) -> Vec<FieldError> {
        selector_is_immutable(new, old)
    }

    fn columns(&self) -> Vec<Column> {
        let mut cols = vec![
            Column::name(),
            Column::integer("Desired", "Replicas is the number of desired replicas."),
            Column::integer(
                "Current",
                "Replicas is the most recently observed number of replicas.",
            ),
            Column::integer(
                "Ready",
                "The number of ready replicas for this replica set.",
            ),
            Column::age(),
        ];
        cols.extend(wide_columns(true));
        cols
    }

    fn row(&self, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
        let mut cells = vec![
            table::name_cell(obj),
            json!(int_at(obj, "/spec/replicas")),
            json!(int_at(obj, "/status/replicas")),
            json!(int_at(obj, "/status/readyReplicas")),
            table::age_cell(obj, now),
        ];
        cells.extend(wide_cells(obj, true));
        cells
    }
}

/// The strategy of `statefulsets`.
pub struct StatefulSetStrategy;

impl Strategy for StatefulSetStrategy {
    fn prepare_for_create(&self, obj: &mut Value) {
        obj["status"] = json!({"replicas": 0, "availableReplicas": 0});
    }

    fn default(&self, obj: &mut Value) {
        default_workload(obj, true);
        let spec = object_mut(obj, "spec");
        set_default(spec, "podManagementPolicy", json!("OrderedReady"));
        set_default(
            spec,
            "updateStrategy",
            json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}),
        );
        set_default(
            spec,
            "persistentVolumeClaimRetentionPolicy",
            json!({"whenDeleted": "Retain", "whenScaled": "Retain"}),
        );
    }

    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        validate_workload(obj)
    }

    fn validate_update(&self, new: &Value, old: &Value) -> Vec<FieldError> {
        selector_is_immutable(new, old)
    }

    fn columns(&self) -> Vec<Column> {
        let mut cols = vec![
            Column::name(),
            Column::text("Ready", "Number of the pod with ready state"),
            Column::age(),
        ];
        cols.extend(wide_columns(false));
        cols
    }

    fn row(&self, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
        let mut cells = vec![
            table::name_cell(obj),
            json!(format!(
                "{}/{}",
                int_at(obj, "/status/readyReplicas"),
                int_at(obj, "/spec/replicas")
            )),
            table::age_cell(obj, now),
        ];
        cells.extend(wide_cells(obj, false));
        cells
    }
}

/// The strategy of `daemonsets`.
pub struct DaemonSetStrategy;

impl Strategy for DaemonSetStrategy {
    fn prepare_for_create(&self, obj: &mut Value) {
        obj["status"] = json!({
            "currentNumberScheduled": 0, "desiredNumberScheduled": 0,
            "numberMisscheduled": 0, "numberReady": 0,
        });
    }

    fn default(&self, obj: &mut Value) {
        default_workload(obj, false);
        let spec = object_mut(obj, "spec");
        let strategy = spec.entry("updateStrategy").or_insert_with(|| json!({}));
        let strategy = object_mut_value(strategy);
        set_default(strategy, "type", json!("RollingUpdate"));
        if strategy.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
            let rolling = strategy.entry("rollingUpdate").or_insert_with(|| json!({}));
            let rolling = object_mut_value(rolling);
            set_default(rolling, "maxUnavailable", json!(1));
            set_default(rolling, "maxSurge", json!(0));
        }
    }

    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        let mut errs = validate_workload(obj);
        errs.extend(validate_rolling_update(obj, "updateStrategy"));
        errs
    }

    fn validate_update(&self, new: &Value, old: &Value) -> Vec<FieldError> {
        selector_is_immutable(new, old)
    }

    fn columns(&self) -> Vec<Column> {
        let mut cols = vec![
            Column::name(),
            Column::integer("Desired", "The total number of nodes that should be running the daemon pod (including nodes correctly running the daemon pod)."),
            Column::integer("Current", "The number of nodes that are running at least 1 daemon pod and are supposed to run the daemon pod."),
            Column::integer("Ready", "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and ready."),
            Column::integer("Up-to-date", "The total number of nodes that are running updated daemon pod"),
            Column::integer("Available", "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and available (ready for at least spec.minReadySeconds)"),
            Column::text("Node Selector", "NodeSelector is a selector which must be true for the pod to fit on a node. Selector which must match a node's labels for the pod to be scheduled on that node."),
            Column::age(),
        ];
        cols.extend(wide_columns(true));
        cols
    }

    fn row(&self, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
        let node_selector = obj
            .pointer("/spec/template/spec/nodeSelector")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default();
        let mut cells = vec![
            table::name_cell(obj),
            json!(int_at(obj, "/status/desiredNumberScheduled")),
            json!(int_at(obj, "/status/currentNumberScheduled")),
            json!(int_at(obj, "/status/numberReady")),
            json!(int_at(obj, "/status/updatedNumberScheduled")),
            json!(int_at(obj, "/status/numberAvailable")),
            super::or_none(node_selector),
            table::age_cell(obj, now),
        ];
        cells.extend(wide_cells(obj, true));
        cells
    }
}

fn object_mut_value(v: &mut Value) -> &mut serde_json::Map<String, Value> {
    if !v.is_object() {
        *v = json!({});
    }
    v.as_object_mut().expect("just made an object")
}

/// The strategy of `replicationcontrollers`: a ReplicaSet with a map selector.
pub struct ReplicationControllerStrategy;

impl Strategy for ReplicationControllerStrategy {
    fn prepare_for_create(&self, obj: &mut Value) {
        obj["status"] = json!({"replicas": 0});
    }

    fn default(&self, obj: &mut Value) {
        let template_labels = obj
            .pointer("/spec/template/metadata/labels")
            .cloned()
            .filter(|l| l.as_object().is_some_and(|m| !m.is_empty()));
        if let Some(labels) = template_labels {
            set_default(object_mut(obj, "spec"), "selector", labels.clone());
            set_default(object_mut(obj, "metadata"), "labels", labels);
        }
        let spec = object_mut(obj, "spec");
        set_default(spec, "replicas", json!(1));
        if let Some(template) = spec.get_mut("template") {
            default_pod_spec(object_mut(template, "spec"));
        }
    }

    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let selector = obj.pointer("/spec/selector").and_then(Value::as_object);
        match selector {
            None => errs.push(FieldError::required("spec.selector", "")),
            Some(selector) => {
                let labels = obj
                    .pointer("/spec/template/metadata/labels")
                    .and_then(Value::as_object);
                if !selector
                    .iter()
                    .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
                {
                    errs.push(FieldError::invalid(
                        "spec.template.metadata.labels",
                        json!(labels.cloned().unwrap_or_default()),
                        "`selector` does not match template `labels`",
                    ));
                }
            }
        }
        errs.extend(validate_pod_spec(
            obj.pointer("/spec/template/spec"),
            "spec.template.spec",
        ));
        errs
    }

    fn columns(&self) -> Vec<Column> {
        ReplicaSetStrategy.columns()
    }

    fn row(&self, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
        let mut cells = ReplicaSetStrategy.row(obj, now);
        if let Some(last) = cells.last_mut() {
            let selector: Vec<String> = obj
                .pointer("/spec/selector")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect();
            *last = json!(selector.join(","));
        }
        cells
    }
}

/// The strategy of `controllerrevisions`.
pub struct ControllerRevisionStrategy;

impl Strategy for ControllerRevisionStrategy {
    fn columns(&self) -> Vec<Column> {
        vec![
            Column::name(),
            Column::text("Controller", "Controller of the object"),
            Column::integer(
                "Revision",
                "Revision indicates the revision of the state represented by Data.",
            ),
            Column::age(),
        ]
    }

    fn row(&self, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
        let controller = super::array_at(obj, "/metadata/ownerReferences")
            .iter()
            .find(|r| r.get("controller") == Some(&json!(true)))
            .map(|r| {
                let group = super::str_at(r, "/apiVersion")
                    .rsplit_once('/')
                    .map(|(g, _)| g)
                    .unwrap_or("");
                let kind = super::str_at(r, "/kind").to_ascii_lowercase();
                let kind = if group.is_empty() {
                    kind
                } else {
                    format!("{kind}.{group}")
                };
                format!("{kind}/{}", super::str_at(r, "/name"))
            })
            .unwrap_or_else(|| "<none>".to_owned());
        vec![
            table::name_cell(obj),
            json!(controller),
            json!(int_at(obj, "/revision")),
            table::age_cell(obj, now),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(strategy: &dyn Strategy, obj: Value) -> Vec<String> {
        let mut obj = obj;
        strategy.default(&mut obj);
        strategy
            .validate(&obj)
            .iter()
            .map(|e| format!("{}: {}", e.field, e.detail))
            .collect()
    }

    fn workload(kind: &str, strategy: Value) -> Value {
        let key = if kind == "DaemonSet" {
            "updateStrategy"
        } else {
            "strategy"
        };
        json!({"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": "w"},
            "spec": {"selector": {"matchLabels": {"a": "b"}}, key: strategy,
                "template": {"metadata": {"labels": {"a": "b"}},
                    "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}})
    }

    #[test]
    fn rolling_updates_may_not_stand_still() {
        let both_zero = json!({"type": "RollingUpdate",
            "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "0%"}});
        assert_eq!(
            errors(
                &DeploymentStrategy,
                workload("Deployment", both_zero.clone())
            ),
            ["spec.strategy.rollingUpdate.maxUnavailable: may not be 0 when `maxSurge` is 0"]
        );
        assert_eq!(
            errors(&DaemonSetStrategy, workload("DaemonSet", both_zero)),
            ["spec.updateStrategy.rollingUpdate.maxUnavailable: may not be 0 when `maxSurge` is 0"]
        );
        let bad = json!({"type": "RollingUpdate",
            "rollingUpdate": {"maxUnavailable": "150%", "maxSurge": -1}});
        assert_eq!(
            errors(&DeploymentStrategy, workload("Deployment", bad)),
            [
                "spec.strategy.rollingUpdate.maxUnavailable: must not be greater than 100%",
                "spec.strategy.rollingUpdate.maxSurge: must be greater than or equal to 0"
            ]
        );
        // A Deployment may surge past 100%; a DaemonSet may not.
        let surge = json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "200%"}});
        assert!(errors(&DeploymentStrategy, workload("Deployment", surge.clone())).is_empty());
        assert_eq!(
            errors(&DaemonSetStrategy, workload("DaemonSet", surge)).len(),
            1
        );
    }

    #[test]
    fn a_daemon_set_rolling_update_gets_both_defaults() {
        let mut ds = workload("DaemonSet", json!({"rollingUpdate": {"maxSurge": 1}}));
        DaemonSetStrategy.default(&mut ds);
        assert_eq!(
            ds["spec"]["updateStrategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1}})
        );
        let mut ds = workload("DaemonSet", json!({"type": "OnDelete"}));
        DaemonSetStrategy.default(&mut ds);
        assert_eq!(ds["spec"]["updateStrategy"], json!({"type": "OnDelete"}));
    }
}
