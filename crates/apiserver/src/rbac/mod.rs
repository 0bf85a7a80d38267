//! Role-based access control: the RBAC authorizer over the cluster's Roles, ClusterRoles
//! and their bindings, as kube-apiserver's `rbac.RBACAuthorizer` decides.
//!
//! A request is allowed when some ClusterRoleBinding, or some RoleBinding in the request's
//! namespace, binds a subject matching the user to a role with a rule covering the request;
//! otherwise RBAC has no opinion (and the chain denies). The roles are read from a
//! [`Reflector`], so decisions never wait on the store. [`bootstrap`] holds the default
//! policy every cluster starts with.

pub mod bootstrap;

use std::sync::Arc;

use serde_json::{json, Value};

use crate::authn::UserInfo;
use crate::authz::{Attributes, Authorizer, Decision};
use crate::cache::Reflector;
use crate::kinds::{array_at, selector_string, str_at, RBAC, REGISTRY};
use crate::registry::ResourceDef;
use crate::selector::LabelSelector;
use crate::storage::Storage;

/// The service account user name prefix (`system:serviceaccount:<namespace>:<name>`).
pub const SERVICE_ACCOUNT_PREFIX: &str = "system:serviceaccount:";

/// The four RBAC resources, in the order the authorizer reads them.
pub fn rbac_defs() -> [&'static ResourceDef; 4] {
    let def = |kind| {
        REGISTRY
            .by_kind(RBAC, "v1", kind)
            .expect("RBAC kinds are registered")
    };
    [
        def("ClusterRole"),
        def("ClusterRoleBinding"),
        def("Role"),
        def("RoleBinding"),
    ]
}

/// The RBAC authorizer.
pub struct Rbac {
    cache: Arc<Reflector>,
}

impl std::fmt::Debug for Rbac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Rbac")
    }
}

/// What a rule is checked against: a resource request or a non-resource path.
#[derive(Clone, Copy, Debug)]
pub enum Request<'a> {
    /// A resource request.
    Resource {
        /// Verb.
        verb: &'a str,
        /// API group.
        group: &'a str,
        /// Resource.
        resource: &'a str,
        /// Subresource or "".
        subresource: &'a str,
        /// Name or "".
        name: &'a str,
    },
    /// A non-resource request.
    Path {
        /// Verb (`get`, `post`, ...).
        verb: &'a str,
        /// The path.
        path: &'a str,
    },
}

fn has(list: &[Value], wanted: &str) -> bool {
    list.iter().any(|v| v.as_str() == Some(wanted))
}

/// Whether one PolicyRule covers a request (`rbac.RuleAllows`).
pub fn rule_allows(rule: &Value, request: &Request<'_>) -> bool {
    let verbs = array_at(rule, "/verbs");
    match request {
        Request::Resource {
            verb,
            group,
            resource,
            subresource,
            name,
        } => {
            if !(has(verbs, verb) || has(verbs, "*")) {
                return false;
            }
            let groups = array_at(rule, "/apiGroups");
            if !(has(groups, group) || has(groups, "*")) {
                return false;
            }
            let resources = array_at(rule, "/resources");
            let combined = if subresource.is_empty() {
                resource.to_string()
            } else {
                format!("{resource}/{subresource}")
            };
            let resource_ok = has(resources, "*")
                || has(resources, &combined)
                || (!subresource.is_empty() && has(resources, &format!("*/{subresource}")));
            if !resource_ok {
                return false;
            }
            let names = array_at(rule, "/resourceNames");
            names.is_empty() || has(names, name)
        }
        Request::Path { verb, path } => {
            if !(has(verbs, verb) || has(verbs, "*")) {
                return false;
            }
            array_at(rule, "/nonResourceURLs")
                .iter()
                .filter_map(Value::as_str)
                .any(|url| {
                    url == "*"
                        || url == *path
                        || url
                            .strip_suffix('*')
                            .is_some_and(|prefix| path.starts_with(prefix))
                })
        }
    }
}

/// Whether a binding's subject is this user (`appliesToUser`); `namespace` is the
/// binding's, the default of ServiceAccount subjects.
fn subject_matches(subject: &Value, user: &UserInfo, namespace: &str) -> bool {
    let name = str_at(subject, "/name");
    match str_at(subject, "/kind") {
        "User" => user.name == name,
        "Group" => user.groups.iter().any(|g| g == name),
        "ServiceAccount" => {
            let ns = match str_at(subject, "/namespace") {
                "" => namespace,
                ns => ns,
            };
            user.name == format!("{SERVICE_ACCOUNT_PREFIX}{ns}:{name}")
        }
        _ => false,
    }
}

/// How a binding allowed a request, in the words of Kubernetes' RBAC reason.
fn describe(binding: &Value, role_kind: &str, role_name: &str, subject: &Value) -> String {
    let binding_kind = str_at(binding, "/kind");
    let binding_name = str_at(binding, "/metadata/name");
    let namespace = str_at(binding, "/metadata/namespace");
    let binding_text = if namespace.is_empty() {
        format!("{binding_kind} \"{binding_name}\"")
    } else {
        format!("{binding_kind} \"{binding_name}/{namespace}\"")
    };
    let subject_text = match str_at(subject, "/kind") {
        "ServiceAccount" => format!(
            "ServiceAccount \"{}/{}\"",
            str_at(subject, "/name"),
            match str_at(subject, "/namespace") {
                "" => namespace,
                ns => ns,
            }
        ),
        kind => format!("{kind} \"{}\"", str_at(subject, "/name")),
    };
    format!("RBAC: allowed by {binding_text} of {role_kind} \"{role_name}\" to {subject_text}")
}

impl Rbac {
    /// An authorizer over the roles and bindings mirrored by `cache`.
    pub fn new(cache: Arc<Reflector>) -> Rbac {
        Rbac { cache }
    }

    /// The rules of a binding's roleRef (a Role in `namespace`, or a ClusterRole).
    fn role_rules(&self, binding: &Value, namespace: &str) -> Vec<Value> {
        let [cluster_roles, _, roles, _] = rbac_defs();
        let name = str_at(binding, "/roleRef/name");
        let role = match str_at(binding, "/roleRef/kind") {
            "ClusterRole" => self.cache.get(cluster_roles, "", name),
            "Role" => self.cache.get(roles, namespace, name),
            _ => None,
        };
        role.map(|r| array_at(&r, "/rules").to_vec())
            .unwrap_or_default()
    }

    /// Visits every rule that applies to `user` in `namespace` ("" for cluster-wide rules
    /// only) with the binding and subject that grant it; stops when `visit` returns true.
    fn visit_rules(
        &self,
        user: &UserInfo,
        namespace: &str,
        mut visit: impl FnMut(&Value, &Value, &Value) -> bool,
    ) -> bool {
        let [_, cluster_bindings, _, bindings] = rbac_defs();
        let mut scopes = vec![self.cache.list(cluster_bindings)];
        if !namespace.is_empty() {
            scopes.push(self.cache.list_in(bindings, Some(namespace)));
        }
        for binding in scopes.iter().flatten() {
            let binding_ns = str_at(binding, "/metadata/namespace");
            let Some(subject) = array_at(binding, "/subjects")
                .iter()
                .find(|s| subject_matches(s, user, binding_ns))
            else {
                continue;
            };
            for rule in self.role_rules(binding, binding_ns) {
                if visit(binding, subject, &rule) {
                    return true;
                }
            }
        }
        false
    }

    /// Decides a request for `user` in `namespace`: Some(reason) when allowed.
    pub fn allows(
        &self,
        user: &UserInfo,
        namespace: &str,
        request: &Request<'_>,
    ) -> Option<String> {
        let mut reason = None;
        self.visit_rules(user, namespace, |binding, subject, rule| {
            if rule_allows(rule, request) {
                reason = Some(describe(
                    binding,
                    str_at(binding, "/roleRef/kind"),
                    str_at(binding, "/roleRef/name"),
                    subject,
                ));
                true
            } else {
                false
            }
        });
        reason
    }

    /// Every rule `user` holds in `namespace`, split into resource and non-resource rules
    /// (SelfSubjectRulesReview).
    pub fn rules_for(&self, user: &UserInfo, namespace: &str) -> (Vec<Value>, Vec<Value>) {
        let mut resource_rules: Vec<Value> = Vec::new();
        let mut non_resource_rules: Vec<Value> = Vec::new();
        self.visit_rules(user, namespace, |_, _, rule| {
            if array_at(rule, "/nonResourceURLs").is_empty() {
                let mut r = json!({"verbs": rule["verbs"], "apiGroups": rule.get("apiGroups").cloned().unwrap_or(json!([])),
                    "resources": rule.get("resources").cloned().unwrap_or(json!([]))});
                if let Some(names) = rule.get("resourceNames").filter(|n| !n.is_null()) {
                    r["resourceNames"] = names.clone();
                }
                if !resource_rules.contains(&r) {
                    resource_rules.push(r);
                }
            } else {
                let r = json!({"verbs": rule["verbs"], "nonResourceURLs": rule["nonResourceURLs"]});
                if !non_resource_rules.contains(&r) {
                    non_resource_rules.push(r);
                }
            }
            false
        });
        (resource_rules, non_resource_rules)
    }
}

impl Authorizer for Rbac {
    fn authorize(&self, attributes: &Attributes<'_>) -> Decision {
        let (namespace, request) = match &attributes.resource {
            Some(r) => (
                r.namespace,
                Request::Resource {
                    verb: attributes.verb,
                    group: r.group,
                    resource: r.resource,
                    subresource: r.subresource,
                    name: r.name,
                },
            ),
            None => (
                "",
                Request::Path {
                    verb: attributes.verb,
                    path: attributes.path,
                },
            ),
        };
        match self.allows(attributes.user, namespace, &request) {
            Some(_) => Decision::Allow,
            None => Decision::NoOpinion,
        }
    }
}

/// The ClusterRole aggregation controller: keeps the rules of every ClusterRole with an
/// `aggregationRule` equal to the union of the rules of the ClusterRoles its selectors
/// match (as kube-controller-manager's clusterrole-aggregation controller); runs until the
/// runtime ends.
pub async fn run_aggregation(storage: Storage, cache: Arc<Reflector>) {
    let mut changes = cache.changes();
    loop {
        aggregate(&storage, &cache).await;
        if changes.changed().await.is_err() {
            return;
        }
    }
}

async fn aggregate(storage: &Storage, cache: &Reflector) {
    let [cluster_roles, ..] = rbac_defs();
    let roles = cache.list(cluster_roles);
    for role in roles
        .iter()
        .filter(|r| r.get("aggregationRule").is_some_and(Value::is_object))
    {
        let name = str_at(role, "/metadata/name");
        let selectors: Vec<LabelSelector> = array_at(role, "/aggregationRule/clusterRoleSelectors")
            .iter()
            .filter_map(|s| LabelSelector::parse(&selector_string(Some(s))).ok())
            .collect();
        let mut rules: Vec<Value> = Vec::new();
        for other in &roles {
            if str_at(other, "/metadata/name") == name
                || !selectors.iter().any(|s| !s.is_empty() && s.matches(other))
            {
                continue;
            }
            for rule in array_at(other, "/rules") {
                if !rules.contains(rule) {
                    rules.push(rule.clone());
                }
            }
        }
        if array_at(role, "/rules") == rules.as_slice() {
            continue;
        }
        let mut updated = Value::clone(role);
        updated["rules"] = json!(rules);
        let revision = str_at(role, "/metadata/resourceVersion")
            .parse()
            .unwrap_or(0);
        if let Err(err) = storage
            .update(cluster_roles, "", name, updated, revision)
            .await
        {
            // A conflict means a newer version is on its way through the reflector.
            tracing::debug!(%name, "aggregating cluster role: {}", err.message);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_match_like_kubernetes() {
        let rule =
            json!({"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list"]});
        let get = |resource, subresource, verb| Request::Resource {
            verb,
            group: "",
            resource,
            subresource,
            name: "x",
        };
        assert!(rule_allows(&rule, &get("pods", "", "get")));
        assert!(rule_allows(&rule, &get("pods", "log", "get")));
        assert!(!rule_allows(&rule, &get("pods", "exec", "get")));
        assert!(!rule_allows(&rule, &get("pods", "", "delete")));
        let star = json!({"apiGroups": ["*"], "resources": ["*/scale"], "verbs": ["*"]});
        assert!(rule_allows(&star, &get("deployments", "scale", "update")));
        let named = json!({"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["a"], "verbs": ["get"]});
        assert!(!rule_allows(&named, &get("configmaps", "", "get")));
        let urls = json!({"nonResourceURLs": ["/apis/*", "/version"], "verbs": ["get"]});
        assert!(rule_allows(
            &urls,
            &Request::Path {
                verb: "get",
                path: "/apis/apps/v1"
            }
        ));
        assert!(!rule_allows(
            &urls,
            &Request::Path {
                verb: "get",
                path: "/metrics"
            }
        ));
    }

    #[test]
    fn service_account_subjects_default_to_the_binding_namespace() {
        let user = UserInfo {
            name: "system:serviceaccount:team:robot".into(),
            groups: vec![],
            ..UserInfo::default()
        };
        let subject = json!({"kind": "ServiceAccount", "name": "robot"});
        assert!(subject_matches(&subject, &user, "team"));
        assert!(!subject_matches(&subject, &user, "other"));
    }
}
