//! rbac.authorization.k8s.io/v1 objects: Roles and ClusterRoles, RoleBindings and
//! ClusterRoleBindings (the authorizer reading them is [`crate::rbac`]).

use serde_json::{json, Value};

use super::printers::CREATED_AT;
use super::{array_at, str_at};
use crate::registry::Strategy;
use crate::table::{self, Column};
use crate::validation::FieldError;

/// The strategy of `roles` and `clusterroles`.
pub struct RoleStrategy;

impl Strategy for RoleStrategy {
    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        let cluster = str_at(obj, "/kind") == "ClusterRole";
        let mut errs = Vec::new();
        for (i, rule) in array_at(obj, "/rules").iter().enumerate() {
            if array_at(rule, "/verbs").is_empty() {
                errs.push(FieldError::required(
                    format!("rules[{i}].verbs"),
                    "verbs must contain at least one value",
                ));
            }
            let non_resource = !array_at(rule, "/nonResourceURLs").is_empty();
            if non_resource && !cluster {
                errs.push(FieldError::invalid(
                    format!("rules[{i}].nonResourceURLs"),
                    rule["nonResourceURLs"].clone(),
                    "namespaced rules cannot apply to non-resource URLs",
                ));
            }
            if !non_resource && array_at(rule, "/apiGroups").is_empty() {
                errs.push(FieldError::required(
                    format!("rules[{i}].apiGroups"),
                    "resource rules must supply at least one api group",
                ));
            }
        }
        errs
    }

    fn columns(&self) -> Vec<Column> {
        CREATED_AT.columns()
    }

    fn row(&self, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
        CREATED_AT.row(obj, now)
    }
}

/// The strategy of `rolebindings` and `clusterrolebindings`.
pub struct BindingStrategy;

impl Strategy for BindingStrategy {
    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        let cluster = str_at(obj, "/kind") == "ClusterRoleBinding";
        let mut errs = Vec::new();
        let kind = str_at(obj, "/roleRef/kind");
        let allowed: &[&str] = if cluster {
            &["ClusterRole"]
        } else {
            &["Role", "ClusterRole"]
        };
        if !allowed.contains(&kind) {
            errs.push(FieldError::not_supported(
                "roleRef.kind",
                json!(kind),
                allowed,
            ));
        }
        if str_at(obj, "/roleRef/apiGroup") != super::RBAC {
            errs.push(FieldError::not_supported(
                "roleRef.apiGroup",
                json!(str_at(obj, "/roleRef/apiGroup")),
                &[super::RBAC],
            ));
        }
        if str_at(obj, "/roleRef/name").is_empty() {
            errs.push(FieldError::required("roleRef.name", ""));
        }
        for (i, subject) in array_at(obj, "/subjects").iter().enumerate() {
            let kind = str_at(subject, "/kind");
            if !["User", "Group", "ServiceAccount"].contains(&kind) {
                errs.push(FieldError::not_supported(
                    format!("subjects[{i}].kind"),
                    json!(kind),
                    &["ServiceAccount", "User", "Group"],
                ));
            }
            if str_at(subject, "/name").is_empty() {
                errs.push(FieldError::required(format!("subjects[{i}].name"), ""));
            }
            if kind == "ServiceAccount" && cluster && str_at(subject, "/namespace").is_empty() {
                errs.push(FieldError::required(format!("subjects[{i}].namespace"), ""));
            }
        }
        errs
    }

    fn validate_update(&self, new: &Value, old: &Value) -> Vec<FieldError> {
        if new.get("roleRef") != old.get("roleRef") {
            return vec![FieldError::invalid(
                "roleRef",
                new.get("roleRef").cloned().unwrap_or_default(),
                "cannot change roleRef",
            )];
        }
        Vec::new()
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            Column::name(),
            Column::text(
                "Role",
                "Role is the name of the role this binding refers to.",
            ),
            Column::age(),
            Column::wide("Users", "Users in the binding"),
            Column::wide("Groups", "Groups in the binding"),
            Column::wide("ServiceAccounts", "ServiceAccounts in the binding"),
        ]
    }

    fn row(&self, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
        let subjects = |kind: &str| -> Value {
            let names: Vec<String> = array_at(obj, "/subjects")
                .iter()
                .filter(|s| str_at(s, "/kind") == kind)
                .map(|s| {
                    if kind == "ServiceAccount" {
                        format!("{}/{}", str_at(s, "/namespace"), str_at(s, "/name"))
                    } else {
                        str_at(s, "/name").to_owned()
                    }
                })
                .collect();
            json!(names.join(", "))
        };
        vec![
            table::name_cell(obj),
            json!(format!(
                "{}/{}",
                str_at(obj, "/roleRef/kind"),
                str_at(obj, "/roleRef/name")
            )),
            table::age_cell(obj, now),
            subjects("User"),
            subjects("Group"),
            subjects("ServiceAccount"),
        ]
    }
}
