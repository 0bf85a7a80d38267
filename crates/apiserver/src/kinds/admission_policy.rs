//! admissionregistration.k8s.io/v1 ValidatingAdmissionPolicy and
//! ValidatingAdmissionPolicyBinding: defaults and validation as Kubernetes'
//! `pkg/apis/admissionregistration` does them (CEL expressions must compile), and the
//! printer columns of `kubectl get`. The policies are enforced by
//! `crate::admission::validating_policy`.

use serde_json::{json, Map, Value};

use super::printers::Printer;
use super::{array_at, object_mut, set_default, str_at};
use crate::expressions::compiled;
use crate::registry::Strategy;
use crate::table::{self, Column};
use crate::validation::FieldError;

/// The `reason`s a validation may give (the HTTP status of a denial).
pub(crate) const REASONS: &[&str] = &[
    "Unauthorized",
    "Forbidden",
    "Invalid",
    "RequestEntityTooLarge",
];

/// The strategy of `validatingadmissionpolicies`.
pub struct PolicyStrategy;

impl Strategy for PolicyStrategy {
    fn prepare_for_create(&self, obj: &mut Value) {
        if let Some(o) = obj.as_object_mut() {
            o.remove("status");
        }
    }

    fn default(&self, obj: &mut Value) {
        let spec = object_mut(obj, "spec");
        set_default(spec, "failurePolicy", json!("Fail"));
        if let Some(constraints) = spec
            .get_mut("matchConstraints")
            .and_then(Value::as_object_mut)
        {
            default_match_resources(constraints);
        }
    }

    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let Some(spec) = obj.get("spec") else {
            return vec![FieldError::required("spec", "")];
        };
        match spec.get("matchConstraints") {
            None | Some(Value::Null) => {
                errs.push(FieldError::required("spec.matchConstraints", ""));
            }
            Some(constraints) => {
                if array_at(constraints, "/resourceRules").is_empty() {
                    errs.push(FieldError::required(
                        "spec.matchConstraints.resourceRules",
                        "",
                    ));
                }
                validate_match_resources(constraints, "spec.matchConstraints", &mut errs);
            }
        }
        let failure = str_at(spec, "/failurePolicy");
        if !matches!(failure, "Fail" | "Ignore") {
            errs.push(FieldError::not_supported(
                "spec.failurePolicy",
                json!(failure),
                &["Fail", "Ignore"],
            ));
        }
        if let Some(param_kind) = spec.get("paramKind").filter(|p| !p.is_null()) {
            for field in ["apiVersion", "kind"] {
                if str_at(param_kind, &format!("/{field}")).is_empty() {
                    errs.push(FieldError::required(format!("spec.paramKind.{field}"), ""));
                }
            }
        }
        let validations = array_at(spec, "/validations");
        if validations.is_empty() && array_at(spec, "/auditAnnotations").is_empty() {
            errs.push(FieldError::required(
                "spec.validations",
                "validations or auditAnnotations must contain at least one item",
            ));
        }
        for (i, validation) in validations.iter().enumerate() {
            let at = format!("spec.validations[{i}]");
            check_expression(validation, "expression", &at, true, &mut errs);
            check_expression(validation, "messageExpression", &at, false, &mut errs);
            let reason = str_at(validation, "/reason");
            if !reason.is_empty() && !REASONS.contains(&reason) {
                errs.push(FieldError::not_supported(
                    format!("{at}.reason"),
                    json!(reason),
                    REASONS,
                ));
            }
        }
        for (i, annotation) in array_at(spec, "/auditAnnotations").iter().enumerate() {
            let at = format!("spec.auditAnnotations[{i}]");
            if str_at(annotation, "/key").is_empty() {
                errs.push(FieldError::required(format!("{at}.key"), ""));
            }
            check_expression(annotation, "valueExpression", &at, true, &mut errs);
        }
        validate_named_expressions(spec, "matchConditions", "expression", &mut errs);
        validate_named_expressions(spec, "variables", "expression", &mut errs);
        errs
    }

    fn columns(&self) -> Vec<Column> {
        POLICY_PRINTER.columns()
    }

    fn row(&self, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
        POLICY_PRINTER.row(obj, now)
    }
}

static POLICY_PRINTER: Printer = Printer {
    columns: &[
        Column::name(),
        Column::integer(
            "Validations",
            "Validations indicates the number of validation rules",
        ),
        Column::text(
            "ParamKind",
            "ParamKind specifies the kind of resources used to parameterize this policy",
        ),
        Column::age(),
    ],
    row: |obj, now| {
        let param_kind = match obj.pointer("/spec/paramKind") {
            Some(kind) if !kind.is_null() => {
                format!("{}/{}", str_at(kind, "/apiVersion"), str_at(kind, "/kind"))
            }
            _ => "<unset>".to_owned(),
        };
        vec![
            table::name_cell(obj),
            json!(array_at(obj, "/spec/validations").len()),
            json!(param_kind),
            table::age_cell(obj, now),
        ]
    },
};

/// The strategy of `validatingadmissionpolicybindings`.
pub struct BindingStrategy;

impl Strategy for BindingStrategy {
    fn default(&self, obj: &mut Value) {
        let spec = object_mut(obj, "spec");
        if let Some(resources) = spec
            .get_mut("matchResources")
            .and_then(Value::as_object_mut)
        {
            default_match_resources(resources);
        }
    }

    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let spec = obj.get("spec").unwrap_or(&Value::Null);
        if str_at(spec, "/policyName").is_empty() {
            errs.push(FieldError::required("spec.policyName", ""));
        }
        let actions: Vec<&str> = array_at(spec, "/validationActions")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        if actions.is_empty() {
            errs.push(FieldError::required(
                "spec.validationActions",
                "at least one validation action is required",
            ));
        }
        for (i, action) in actions.iter().enumerate() {
            let at = format!("spec.validationActions[{i}]");
            if !matches!(*action, "Deny" | "Warn" | "Audit") {
                errs.push(FieldError::not_supported(
                    at,
                    json!(action),
                    &["Audit", "Deny", "Warn"],
                ));
            } else if actions[..i].contains(action) {
                errs.push(FieldError::duplicate(at, json!(action)));
            }
        }
        if actions.contains(&"Deny") && actions.contains(&"Warn") {
            errs.push(FieldError::invalid(
                "spec.validationActions",
                json!(actions),
                "must not contain both Deny and Warn (repeating the same validation failure information in the API response and headers serves no purpose)",
            ));
        }
        if let Some(param_ref) = spec.get("paramRef").filter(|p| !p.is_null()) {
            let named = !str_at(param_ref, "/name").is_empty();
            let selected = param_ref.get("selector").is_some_and(|s| !s.is_null());
            if named == selected {
                errs.push(FieldError::forbidden(
                    "spec.paramRef",
                    "one of name or selector must be specified",
                ));
            }
            let action = str_at(param_ref, "/parameterNotFoundAction");
            if action.is_empty() {
                errs.push(FieldError::required(
                    "spec.paramRef.parameterNotFoundAction",
                    "",
                ));
            } else if !matches!(action, "Allow" | "Deny") {
                errs.push(FieldError::not_supported(
                    "spec.paramRef.parameterNotFoundAction",
                    json!(action),
                    &["Allow", "Deny"],
                ));
            }
        }
        if let Some(resources) = spec.get("matchResources").filter(|m| !m.is_null()) {
            validate_match_resources(resources, "spec.matchResources", &mut errs);
        }
        errs
    }

    fn columns(&self) -> Vec<Column> {
        BINDING_PRINTER.columns()
    }

    fn row(&self, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
        BINDING_PRINTER.row(obj, now)
    }
}

static BINDING_PRINTER: Printer = Printer {
    columns: &[
        Column::name(),
        Column::text(
            "PolicyName",
            "PolicyName indicates the policy definition which the policy binding binded to",
        ),
        Column::text(
            "ParamRef",
            "ParamRef indicates the param resource which sets the configration param",
        ),
        Column::age(),
    ],
    row: |obj, now| {
        let param_ref = match obj.pointer("/spec/paramRef") {
            Some(r) if !r.is_null() => {
                let name = match str_at(r, "/name") {
                    "" => "*",
                    name => name,
                };
                match str_at(r, "/namespace") {
                    "" => name.to_owned(),
                    ns => format!("{ns}/{name}"),
                }
            }
            _ => "<unset>".to_owned(),
        };
        vec![
            table::name_cell(obj),
            json!(str_at(obj, "/spec/policyName")),
            json!(param_ref),
            table::age_cell(obj, now),
        ]
    },
};

/// `MatchResources` defaults: every namespace and object, `matchPolicy: Equivalent`, rules
/// of every scope.
fn default_match_resources(resources: &mut Map<String, Value>) {
    set_default(resources, "namespaceSelector", json!({}));
    set_default(resources, "objectSelector", json!({}));
    set_default(resources, "matchPolicy", json!("Equivalent"));
    for field in ["resourceRules", "excludeResourceRules"] {
        if let Some(rules) = resources.get_mut(field).and_then(Value::as_array_mut) {
            for rule in rules.iter_mut().filter_map(Value::as_object_mut) {
                set_default(rule, "scope", json!("*"));
            }
        }
    }
}

fn validate_match_resources(resources: &Value, at: &str, errs: &mut Vec<FieldError>) {
    let policy = str_at(resources, "/matchPolicy");
    if !policy.is_empty() && !matches!(policy, "Exact" | "Equivalent") {
        errs.push(FieldError::not_supported(
            format!("{at}.matchPolicy"),
            json!(policy),
            &["Equivalent", "Exact"],
        ));
    }
    for field in ["resourceRules", "excludeResourceRules"] {
        for (i, rule) in array_at(resources, &format!("/{field}")).iter().enumerate() {
            let rule_at = format!("{at}.{field}[{i}]");
            for list in ["operations", "apiGroups", "apiVersions", "resources"] {
                if array_at(rule, &format!("/{list}")).is_empty() {
                    errs.push(FieldError::required(format!("{rule_at}.{list}"), ""));
                }
            }
            for (j, op) in array_at(rule, "/operations").iter().enumerate() {
                let op = op.as_str().unwrap_or("");
                if !matches!(op, "*" | "CREATE" | "UPDATE" | "DELETE" | "CONNECT") {
                    errs.push(FieldError::not_supported(
                        format!("{rule_at}.operations[{j}]"),
                        json!(op),
                        &["*", "CONNECT", "CREATE", "DELETE", "UPDATE"],
                    ));
                }
            }
            let scope = str_at(rule, "/scope");
            if !matches!(scope, "" | "*" | "Cluster" | "Namespaced") {
                errs.push(FieldError::not_supported(
                    format!("{rule_at}.scope"),
                    json!(scope),
                    &["*", "Cluster", "Namespaced"],
                ));
            }
        }
    }
    for field in ["namespaceSelector", "objectSelector"] {
        let selector = super::selector_string(resources.get(field));
        if let Err(e) = crate::selector::LabelSelector::parse(&selector) {
            errs.push(FieldError::invalid(
                format!("{at}.{field}"),
                json!(selector),
                e.to_string(),
            ));
        }
    }
}

/// `matchConditions` or `variables`: each a unique `name` and a compiling expression.
fn validate_named_expressions(spec: &Value, list: &str, field: &str, errs: &mut Vec<FieldError>) {
    let items = array_at(spec, &format!("/{list}"));
    for (i, item) in items.iter().enumerate() {
        let at = format!("spec.{list}[{i}]");
        let name = str_at(item, "/name");
        if name.is_empty() {
            errs.push(FieldError::required(format!("{at}.name"), ""));
        } else if items[..i].iter().any(|o| str_at(o, "/name") == name) {
            errs.push(FieldError::duplicate(format!("{at}.name"), json!(name)));
        }
        check_expression(item, field, &at, true, errs);
    }
}

/// Checks that `item[field]` compiles (and is present when `required`).
fn check_expression(
    item: &Value,
    field: &str,
    at: &str,
    required: bool,
    errs: &mut Vec<FieldError>,
) {
    let text = str_at(item, &format!("/{field}"));
    if text.trim().is_empty() {
        if required {
            errs.push(FieldError::required(format!("{at}.{field}"), ""));
        }
        return;
    }
    if let Err(e) = compiled(text) {
        errs.push(FieldError::invalid(
            format!("{at}.{field}"),
            json!(text),
            format!("compilation failed: {e}"),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(spec: Value) -> Value {
        let mut obj = json!({"metadata": {"name": "p"}, "spec": spec});
        PolicyStrategy.default(&mut obj);
        obj
    }

    #[test]
    fn policy_defaults_and_validation() {
        let obj = policy(json!({
            "matchConstraints": {"resourceRules": [{
                "operations": ["CREATE"], "apiGroups": ["apps"], "apiVersions": ["v1"],
                "resources": ["deployments"],
            }]},
            "validations": [{"expression": "object.spec.replicas <= 5"}],
        }));
        assert_eq!(obj["spec"]["failurePolicy"], "Fail");
        assert_eq!(obj["spec"]["matchConstraints"]["matchPolicy"], "Equivalent");
        assert_eq!(
            obj["spec"]["matchConstraints"]["resourceRules"][0]["scope"],
            "*"
        );
        assert!(PolicyStrategy.validate(&obj).is_empty());

        let bad = policy(json!({
            "validations": [{"expression": "object.spec.replicas <=", "reason": "Teapot"}],
        }));
        let fields: Vec<String> = PolicyStrategy
            .validate(&bad)
            .iter()
            .map(|e| e.field.clone())
            .collect();
        assert_eq!(
            fields,
            [
                "spec.matchConstraints",
                "spec.validations[0].expression",
                "spec.validations[0].reason"
            ]
        );
    }

    #[test]
    fn binding_validation() {
        let binding = |spec: Value| json!({"metadata": {"name": "b"}, "spec": spec});
        let ok = binding(json!({"policyName": "p", "validationActions": ["Deny", "Audit"]}));
        assert!(BindingStrategy.validate(&ok).is_empty());
        let errs = BindingStrategy.validate(&binding(json!({
            "validationActions": ["Deny", "Warn", "Deny"],
            "paramRef": {"name": "x", "selector": {}},
        })));
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.policyName",
                "spec.validationActions[2]",
                "spec.validationActions",
                "spec.paramRef",
                "spec.paramRef.parameterNotFoundAction"
            ]
        );
    }
}
