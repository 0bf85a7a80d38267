//! Which requests a webhook's `rules` select: operations, API groups and versions,
//! resources with their subresources, and scope, as `admissionregistration.k8s.io/v1`
//! defines `RuleWithOperations`.

use serde_json::Value;

use crate::admission::Operation;
use crate::kinds::array_at;

/// One `RuleWithOperations`; every list may hold `*`.
#[derive(Clone, Debug, Default, PartialEq)]
pub(in crate::admission) struct Rule {
    operations: Vec<String>,
    groups: Vec<String>,
    versions: Vec<String>,
    /// `pods`, `pods/status`, `pods/*`, `*`, `*/status`, `*/*`.
    resources: Vec<String>,
    scope: Scope,
}

/// A rule's `scope`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(in crate::admission) enum Scope {
    /// `*` (the default): every resource.
    #[default]
    All,
    /// `Cluster`: cluster-scoped resources only (Namespaces among them).
    Cluster,
    /// `Namespaced`: namespaced resources only.
    Namespaced,
}

/// What a rule is matched against.
#[derive(Clone, Copy, Debug)]
pub(in crate::admission) struct Request<'a> {
    /// The operation.
    pub operation: Operation,
    /// API group of the resource.
    pub group: &'a str,
    /// API version of the resource.
    pub version: &'a str,
    /// Plural resource name.
    pub resource: &'a str,
    /// Subresource, "" for the main resource.
    pub subresource: &'a str,
    /// Whether the resource is namespaced.
    pub namespaced: bool,
}

impl Rule {
    /// A rule from its JSON form (`operations`, `apiGroups`, `apiVersions`, `resources`,
    /// `scope`).
    pub fn from_json(rule: &Value) -> Rule {
        let strings = |field: &str| -> Vec<String> {
            array_at(rule, field)
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        };
        Rule {
            operations: strings("/operations"),
            groups: strings("/apiGroups"),
            versions: strings("/apiVersions"),
            resources: strings("/resources"),
            scope: match rule.get("scope").and_then(Value::as_str) {
                Some("Cluster") => Scope::Cluster,
                Some("Namespaced") => Scope::Namespaced,
                _ => Scope::All,
            },
        }
    }

    /// Whether the rule selects `request`.
    pub fn matches(&self, request: &Request<'_>) -> bool {
        let listed = |list: &[String], value: &str| list.iter().any(|x| x == "*" || x == value);
        listed(&self.operations, request.operation.as_str())
            && listed(&self.groups, request.group)
            && listed(&self.versions, request.version)
            && self.resource_matches(request.resource, request.subresource)
            && match self.scope {
                Scope::All => true,
                Scope::Cluster => !request.namespaced,
                Scope::Namespaced => request.namespaced,
            }
    }

    /// `pods` selects only the main resource, `pods/status` only that subresource,
    /// `pods/*` the resource and all its subresources, `*` every main resource, `*/*`
    /// everything.
    fn resource_matches(&self, resource: &str, subresource: &str) -> bool {
        self.resources.iter().any(|entry| {
            let (res, sub) = entry.split_once('/').unwrap_or((entry, ""));
            (res == "*" || res == resource) && (sub == "*" || sub == subresource)
        })
    }
}

/// Whether a request is never sent to webhooks (nor to admission policies), whatever the
/// rules say: writes of admissionregistration's own kinds (so a broken webhook or policy
/// cannot lock its own fix out, as Kubernetes exempts them) and the review kinds that are
/// answered, not stored.
pub(in crate::admission) fn exempt(group: &str, kind: &str) -> bool {
    group == "admissionregistration.k8s.io"
        || (matches!(group, "authentication.k8s.io" | "authorization.k8s.io")
            && kind.ends_with("Review"))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pods(operation: Operation, subresource: &'static str) -> Request<'static> {
        Request {
            operation,
            group: "",
            version: "v1",
            resource: "pods",
            subresource,
            namespaced: true,
        }
    }

    fn rule(resources: &[&str]) -> Rule {
        Rule::from_json(&json!({
            "operations": ["CREATE", "UPDATE"],
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "resources": resources,
        }))
    }

    #[test]
    fn operations_groups_and_versions() {
        let r = rule(&["pods"]);
        assert!(r.matches(&pods(Operation::Create, "")));
        assert!(r.matches(&pods(Operation::Update, "")));
        assert!(!r.matches(&pods(Operation::Delete, "")));
        let all_ops = Rule::from_json(&json!({
            "operations": ["*"], "apiGroups": ["*"], "apiVersions": ["*"], "resources": ["pods"],
        }));
        assert!(all_ops.matches(&pods(Operation::Delete, "")));
        let apps = Request {
            group: "apps",
            resource: "deployments",
            ..pods(Operation::Create, "")
        };
        assert!(!rule(&["deployments"]).matches(&apps));
        let v2 = Request {
            version: "v2",
            ..pods(Operation::Create, "")
        };
        assert!(!r.matches(&v2));
        // An empty list selects nothing.
        let empty = Rule::from_json(&json!({"resources": ["pods"]}));
        assert!(!empty.matches(&pods(Operation::Create, "")));
    }

    #[test]
    fn resources_and_subresources() {
        let main = pods(Operation::Update, "");
        let status = pods(Operation::Update, "status");
        assert!(rule(&["pods"]).matches(&main));
        assert!(!rule(&["pods"]).matches(&status));
        assert!(!rule(&["pods/status"]).matches(&main));
        assert!(rule(&["pods/status"]).matches(&status));
        assert!(!rule(&["pods/binding"]).matches(&status));
        assert!(rule(&["pods/*"]).matches(&main));
        assert!(rule(&["pods/*"]).matches(&status));
        assert!(rule(&["*"]).matches(&main));
        assert!(!rule(&["*"]).matches(&status));
        assert!(rule(&["*/status"]).matches(&status));
        assert!(!rule(&["*/status"]).matches(&main));
        assert!(rule(&["*/*"]).matches(&main));
        assert!(rule(&["*/*"]).matches(&status));
        assert!(!rule(&["configmaps"]).matches(&main));
        assert!(rule(&["configmaps", "pods"]).matches(&main));
    }

    #[test]
    fn scope() {
        let scoped = |scope: &str| {
            Rule::from_json(&json!({
                "operations": ["*"], "apiGroups": ["*"], "apiVersions": ["*"],
                "resources": ["*"], "scope": scope,
            }))
        };
        let namespace = Request {
            resource: "namespaces",
            namespaced: false,
            ..pods(Operation::Create, "")
        };
        let pod = pods(Operation::Create, "");
        assert!(scoped("*").matches(&pod) && scoped("*").matches(&namespace));
        assert!(scoped("Namespaced").matches(&pod));
        assert!(!scoped("Namespaced").matches(&namespace));
        assert!(scoped("Cluster").matches(&namespace));
        assert!(!scoped("Cluster").matches(&pod));
    }

    #[test]
    fn exemptions() {
        assert!(exempt(
            "admissionregistration.k8s.io",
            "ValidatingWebhookConfiguration"
        ));
        assert!(exempt("authorization.k8s.io", "SubjectAccessReview"));
        assert!(!exempt("", "Pod"));
        assert!(!exempt("apps", "Deployment"));
    }
}
