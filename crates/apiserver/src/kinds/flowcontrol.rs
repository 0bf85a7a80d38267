//! flowcontrol.apiserver.k8s.io/v1 (API Priority and Fairness): FlowSchema and
//! PriorityLevelConfiguration, served with Kubernetes' defaults, validation and printer
//! columns, and the configuration objects kube-apiserver creates at start
//! ([`bootstrap_objects`]). skiff stores and serves them; it does not queue requests by them.

use serde_json::{json, Map, Value};

use super::printers::Printer;
use super::{array_at, int_at, object_mut, set_default, str_at};
use crate::registry::Strategy;
use crate::table::{self, Column};
use crate::validation::FieldError;

/// The API group of the kinds.
pub const GROUP: &str = "flowcontrol.apiserver.k8s.io";

/// The API version of the kinds.
const API_VERSION: &str = "flowcontrol.apiserver.k8s.io/v1";

/// The annotation marking configuration objects the server keeps up to date.
const AUTO_UPDATE: &str = "apf.kubernetes.io/autoupdate-spec";

/// The strategy of `flowschemas`.
pub struct FlowSchemaStrategy;

impl Strategy for FlowSchemaStrategy {
    fn prepare_for_create(&self, obj: &mut Value) {
        obj["status"] = json!({});
    }

    fn default(&self, obj: &mut Value) {
        set_default(object_mut(obj, "spec"), "matchingPrecedence", json!(1000));
    }

    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        let mut errs = Vec::new();
        if str_at(obj, "/spec/priorityLevelConfiguration/name").is_empty() {
            errs.push(FieldError::required(
                "spec.priorityLevelConfiguration.name",
                "must reference a priority level",
            ));
        }
        let precedence = int_at(obj, "/spec/matchingPrecedence");
        if !(1..=10000).contains(&precedence) {
            errs.push(FieldError::invalid(
                "spec.matchingPrecedence",
                json!(precedence),
                "must be between 1 and 10000, inclusive",
            ));
        }
        let method = str_at(obj, "/spec/distinguisherMethod/type");
        if obj
            .pointer("/spec/distinguisherMethod")
            .is_some_and(|m| !m.is_null())
            && !matches!(method, "ByUser" | "ByNamespace")
        {
            errs.push(FieldError::not_supported(
                "spec.distinguisherMethod.type",
                json!(method),
                &["ByNamespace", "ByUser"],
            ));
        }
        for (i, rule) in array_at(obj, "/spec/rules").iter().enumerate() {
            let at = format!("spec.rules[{i}]");
            let subjects = array_at(rule, "/subjects");
            if subjects.is_empty() {
                errs.push(FieldError::required(
                    format!("{at}.subjects"),
                    "subjects must contain at least one value",
                ));
            }
            for (j, subject) in subjects.iter().enumerate() {
                let kind = str_at(subject, "/kind");
                if !matches!(kind, "User" | "Group" | "ServiceAccount") {
                    errs.push(FieldError::not_supported(
                        format!("{at}.subjects[{j}].kind"),
                        json!(kind),
                        &["Group", "ServiceAccount", "User"],
                    ));
                }
            }
            if array_at(rule, "/resourceRules").is_empty()
                && array_at(rule, "/nonResourceRules").is_empty()
            {
                errs.push(FieldError::required(
                    at,
                    "at least one of resourceRules and nonResourceRules has to be non-empty",
                ));
            }
        }
        errs
    }

    fn columns(&self) -> Vec<Column> {
        FLOW_SCHEMA_PRINTER.columns()
    }

    fn row(&self, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
        FLOW_SCHEMA_PRINTER.row(obj, now)
    }
}

static FLOW_SCHEMA_PRINTER: Printer = Printer {
    columns: &[
        Column::name(),
        Column::text("PriorityLevel", "Name of the FlowSchema's priority level"),
        Column::integer(
            "MatchingPrecedence",
            "Matching precedence of the FlowSchema",
        ),
        Column::text(
            "DistinguisherMethod",
            "The FlowSchema's distinguisher method",
        ),
        Column::age(),
        Column::text(
            "MissingPL",
            "Whether the priority level referenced by the FlowSchema exists",
        ),
    ],
    row: |obj, now| {
        let method = match str_at(obj, "/spec/distinguisherMethod/type") {
            "" => "<none>",
            method => method,
        };
        let missing = array_at(obj, "/status/conditions")
            .iter()
            .find(|c| str_at(c, "/type") == "Dangling")
            .map_or("?", |c| str_at(c, "/status"));
        vec![
            table::name_cell(obj),
            json!(str_at(obj, "/spec/priorityLevelConfiguration/name")),
            json!(int_at(obj, "/spec/matchingPrecedence")),
            json!(method),
            table::age_cell(obj, now),
            json!(missing),
        ]
    },
};

/// The strategy of `prioritylevelconfigurations`.
pub struct PriorityLevelStrategy;

impl Strategy for PriorityLevelStrategy {
    fn prepare_for_create(&self, obj: &mut Value) {
        obj["status"] = json!({});
    }

    fn default(&self, obj: &mut Value) {
        let spec = object_mut(obj, "spec");
        match spec.get("type").and_then(Value::as_str) {
            Some("Exempt") => {
                let exempt = entry_object(spec, "exempt");
                set_default(exempt, "nominalConcurrencyShares", json!(0));
                set_default(exempt, "lendablePercent", json!(0));
            }
            Some("Limited") => {
                let limited = entry_object(spec, "limited");
                set_default(limited, "nominalConcurrencyShares", json!(30));
                set_default(limited, "lendablePercent", json!(0));
                let response = entry_object(limited, "limitResponse");
                set_default(response, "type", json!("Reject"));
                if response.get("type").and_then(Value::as_str) == Some("Queue") {
                    let queuing = entry_object(response, "queuing");
                    set_default(queuing, "queues", json!(64));
                    set_default(queuing, "handSize", json!(8));
                    set_default(queuing, "queueLengthLimit", json!(50));
                }
            }
            _ => {}
        }
    }

    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let kind = str_at(obj, "/spec/type");
        match kind {
            "Exempt" => {
                if obj.pointer("/spec/limited").is_some_and(|l| !l.is_null()) {
                    errs.push(FieldError::forbidden(
                        "spec.limited",
                        "must be nil if the type is not Limited",
                    ));
                }
            }
            "Limited" => {
                if obj.pointer("/spec/exempt").is_some_and(|e| !e.is_null()) {
                    errs.push(FieldError::forbidden(
                        "spec.exempt",
                        "must be nil if the type is Limited",
                    ));
                }
                let lendable = int_at(obj, "/spec/limited/lendablePercent");
                if !(0..=100).contains(&lendable) {
                    errs.push(FieldError::invalid(
                        "spec.limited.lendablePercent",
                        json!(lendable),
                        "must be between 0 and 100, inclusive",
                    ));
                }
                let response = str_at(obj, "/spec/limited/limitResponse/type");
                if !matches!(response, "Queue" | "Reject") {
                    errs.push(FieldError::not_supported(
                        "spec.limited.limitResponse.type",
                        json!(response),
                        &["Queue", "Reject"],
                    ));
                }
                if response == "Queue" {
                    let queuing = "/spec/limited/limitResponse/queuing";
                    let queues = int_at(obj, &format!("{queuing}/queues"));
                    let hand = int_at(obj, &format!("{queuing}/handSize"));
                    if queues <= 0 {
                        errs.push(FieldError::invalid(
                            "spec.limited.limitResponse.queuing.queues",
                            json!(queues),
                            "must be positive",
                        ));
                    }
                    if hand <= 0 || hand > queues {
                        errs.push(FieldError::invalid(
                            "spec.limited.limitResponse.queuing.handSize",
                            json!(hand),
                            format!("should not be greater than queues ({queues})"),
                        ));
                    }
                }
            }
            other => errs.push(FieldError::not_supported(
                "spec.type",
                json!(other),
                &["Exempt", "Limited"],
            )),
        }
        errs
    }

    fn columns(&self) -> Vec<Column> {
        PRIORITY_LEVEL_PRINTER.columns()
    }

    fn row(&self, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
        PRIORITY_LEVEL_PRINTER.row(obj, now)
    }
}

static PRIORITY_LEVEL_PRINTER: Printer = Printer {
    columns: &[
        Column::name(),
        Column::text("Type", "Type of the priority level"),
        Column::text(
            "NominalConcurrencyShares",
            "NominalConcurrencyShares of the priority level",
        ),
        Column::text("Queues", "Number of queues"),
        Column::text("HandSize", "Hand size of the priority level"),
        Column::text(
            "QueueLengthLimit",
            "Length limit of the priority level's queues",
        ),
        Column::age(),
    ],
    row: |obj, now| {
        let limited = obj.pointer("/spec/limited");
        let field = |pointer: &str| match limited.and_then(|l| l.pointer(pointer)) {
            Some(v) if !v.is_null() => json!(v.to_string()),
            _ => json!("<none>"),
        };
        vec![
            table::name_cell(obj),
            json!(str_at(obj, "/spec/type")),
            field("/nominalConcurrencyShares"),
            field("/limitResponse/queuing/queues"),
            field("/limitResponse/queuing/handSize"),
            field("/limitResponse/queuing/queueLengthLimit"),
            table::age_cell(obj, now),
        ]
    },
};

/// The object under `key` of `map`, created when absent (or not an object).
fn entry_object<'a>(map: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    let entry = map.entry(key.to_owned()).or_insert_with(|| json!({}));
    if !entry.is_object() {
        *entry = json!({});
    }
    entry.as_object_mut().expect("just made an object")
}

/// A priority level limited to `shares` of the server's concurrency, lending `lendable`
/// percent of it, queuing in `queues` queues (`hand` per flow) or rejecting when 0.
fn limited(name: &str, shares: i64, lendable: i64, queues: i64, hand: i64) -> Value {
    let response = if queues == 0 {
        json!({"type": "Reject"})
    } else {
        json!({"type": "Queue",
            "queuing": {"queues": queues, "handSize": hand, "queueLengthLimit": 50}})
    };
    json!({
        "apiVersion": API_VERSION, "kind": "PriorityLevelConfiguration",
        "metadata": {"name": name, "annotations": {AUTO_UPDATE: "true"}},
        "spec": {"type": "Limited", "limited": {
            "nominalConcurrencyShares": shares, "lendablePercent": lendable,
            "limitResponse": response}},
    })
}

/// Every request of `subjects` (resource and non-resource) to the level `level`.
fn flow_schema(
    name: &str,
    level: &str,
    precedence: i64,
    method: Option<&str>,
    subjects: Value,
    all_requests: bool,
) -> Value {
    let mut rule = json!({"subjects": subjects,
        "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"],
            "clusterScope": true, "namespaces": ["*"]}]});
    if all_requests {
        rule["nonResourceRules"] = json!([{"verbs": ["*"], "nonResourceURLs": ["*"]}]);
    }
    let mut spec = json!({"priorityLevelConfiguration": {"name": level},
        "matchingPrecedence": precedence, "rules": [rule]});
    if let Some(method) = method {
        spec["distinguisherMethod"] = json!({"type": method});
    }
    json!({
        "apiVersion": API_VERSION, "kind": "FlowSchema",
        "metadata": {"name": name, "annotations": {AUTO_UPDATE: "true"}},
        "spec": spec,
    })
}

fn groups(names: &[&str]) -> Value {
    json!(names
        .iter()
        .map(|g| json!({"kind": "Group", "group": {"name": g}}))
        .collect::<Vec<_>>())
}

fn users(names: &[&str]) -> Value {
    json!(names
        .iter()
        .map(|u| json!({"kind": "User", "user": {"name": u}}))
        .collect::<Vec<_>>())
}

/// The configuration kube-apiserver creates at start, as (kind, object): the mandatory
/// `exempt` and `catch-all` objects of both kinds, then the suggested levels and schemas.
pub fn bootstrap_objects() -> Vec<(&'static str, Value)> {
    let mut levels = vec![
        json!({
            "apiVersion": API_VERSION, "kind": "PriorityLevelConfiguration",
            "metadata": {"name": "exempt", "annotations": {AUTO_UPDATE: "true"}},
            "spec": {"type": "Exempt", "exempt": {"nominalConcurrencyShares": 0, "lendablePercent": 0}},
        }),
        limited("catch-all", 5, 0, 0, 0),
    ];
    levels.extend([
        limited("system", 30, 33, 64, 6),
        limited("node-high", 40, 25, 64, 6),
        limited("leader-election", 10, 0, 16, 4),
        limited("workload-high", 40, 50, 128, 6),
        limited("workload-low", 100, 90, 128, 6),
        limited("global-default", 20, 50, 128, 6),
    ]);
    let everyone = groups(&["system:authenticated", "system:unauthenticated"]);
    let schemas = vec![
        flow_schema(
            "exempt",
            "exempt",
            1,
            None,
            groups(&["system:masters"]),
            true,
        ),
        flow_schema(
            "catch-all",
            "catch-all",
            10000,
            Some("ByUser"),
            everyone.clone(),
            true,
        ),
        flow_schema(
            "system-leader-election",
            "leader-election",
            100,
            Some("ByUser"),
            users(&["system:kube-controller-manager", "system:kube-scheduler"]),
            false,
        ),
        flow_schema(
            "system-node-high",
            "node-high",
            400,
            Some("ByUser"),
            groups(&["system:nodes"]),
            false,
        ),
        flow_schema(
            "system-nodes",
            "system",
            500,
            Some("ByUser"),
            groups(&["system:nodes"]),
            true,
        ),
        flow_schema(
            "kube-controller-manager",
            "workload-high",
            800,
            Some("ByNamespace"),
            users(&["system:kube-controller-manager"]),
            true,
        ),
        flow_schema(
            "kube-scheduler",
            "workload-high",
            800,
            Some("ByNamespace"),
            users(&["system:kube-scheduler"]),
            true,
        ),
        flow_schema(
            "service-accounts",
            "workload-low",
            9000,
            Some("ByUser"),
            groups(&["system:serviceaccounts"]),
            true,
        ),
        flow_schema(
            "global-default",
            "global-default",
            9900,
            Some("ByUser"),
            everyone,
            true,
        ),
    ];
    levels
        .into_iter()
        .map(|l| ("PriorityLevelConfiguration", l))
        .chain(schemas.into_iter().map(|s| ("FlowSchema", s)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_objects_are_valid() {
        let objects = bootstrap_objects();
        for name in ["exempt", "catch-all"] {
            for kind in ["FlowSchema", "PriorityLevelConfiguration"] {
                assert!(
                    objects
                        .iter()
                        .any(|(k, o)| *k == kind && o["metadata"]["name"] == name),
                    "{kind} {name}"
                );
            }
        }
        for (kind, mut obj) in objects {
            let strategy: &dyn Strategy = if kind == "FlowSchema" {
                &FlowSchemaStrategy
            } else {
                &PriorityLevelStrategy
            };
            strategy.default(&mut obj);
            assert_eq!(strategy.validate(&obj), Vec::new(), "{obj}");
        }
    }

    #[test]
    fn limited_defaults() {
        let mut obj = json!({"spec": {"type": "Limited",
            "limited": {"limitResponse": {"type": "Queue"}}}});
        PriorityLevelStrategy.default(&mut obj);
        let limited = &obj["spec"]["limited"];
        assert_eq!(limited["nominalConcurrencyShares"], 30);
        assert_eq!(limited["limitResponse"]["queuing"]["handSize"], 8);
        assert!(PriorityLevelStrategy.validate(&obj).is_empty());
        let mut bad = json!({"spec": {"type": "Other"}});
        PriorityLevelStrategy.default(&mut bad);
        assert_eq!(
            PriorityLevelStrategy.validate(&bad)[0].to_string(),
            "spec.type: Unsupported value: \"Other\": supported values: \"Exempt\", \"Limited\""
        );
    }
}
