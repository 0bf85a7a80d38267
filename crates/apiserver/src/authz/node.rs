//! The Node authorizer (kube-apiserver's `--authorization-mode=Node,RBAC`): a kubelet
//! authenticated as its node (`system:node:<name>` in `system:nodes`) may read the Secrets,
//! ConfigMaps, PersistentVolumeClaims, PersistentVolumes and ResourceClaims, and request
//! tokens of the ServiceAccounts, that pods bound to its node reference, and only those;
//! it may touch only its own Lease and CSINode. Everything else a node may do is the
//! static policy of the `system:node` ClusterRole, which Kubernetes binds to nobody and
//! leaves to this authorizer.
//!
//! Like Kubernetes' union of Node and RBAC, a request this authorizer does not allow still
//! goes to RBAC (a binding may grant a node more); when RBAC does not allow it either, the
//! request is denied with this authorizer's reason (`no relationship found between node
//! 'n1' and this object`).
//!
//! Two allowances go beyond Kubernetes because skiff's kubelet needs them: it reads the
//! ConfigMap `kube-root-ca.crt` (the cluster CA, public) to verify the API server's client
//! certificate, and a pod's ServiceAccount with the Secrets of its `imagePullSecrets`,
//! since skiff's ServiceAccount admission does not copy them into the pod.

use std::sync::Arc;

use serde_json::Value;

use super::node_graph::{NodeGraph, Referenced};
use super::{Attributes, Authorizer, Decision, ResourceAttributes};
use crate::authn::UserInfo;
use crate::cache::Reflector;
use crate::kinds::{array_at, str_at, REGISTRY};
use crate::rbac::{rule_allows, Request};

/// The nodes' group.
pub const NODES_GROUP: &str = "system:nodes";

/// The prefix of a node's user name.
pub const NODE_USER_PREFIX: &str = "system:node:";

/// The namespace of the nodes' Leases.
const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

/// The ConfigMap holding the cluster CA, published in every namespace.
const ROOT_CA_CONFIG_MAP: &str = "kube-root-ca.crt";

/// Whose node a user is: `Some(name)` for a member of `system:nodes` (an empty name when
/// the user name does not say which node), `None` for everyone else.
pub fn node_identity(user: &UserInfo) -> Option<&str> {
    if !user.groups.iter().any(|g| g == NODES_GROUP) {
        return None;
    }
    Some(user.name.strip_prefix(NODE_USER_PREFIX).unwrap_or(""))
}

/// The Node authorizer, followed by the authorizer a request it does not allow goes to.
pub struct NodeAuthorizer {
    graph: Arc<NodeGraph>,
    /// The mirror of ServiceAccounts, for their `imagePullSecrets`.
    reflector: Option<Arc<Reflector>>,
    /// The static node policy (the `system:node` ClusterRole's rules).
    rules: Vec<Value>,
    next: Box<dyn Authorizer>,
}

/// What this authorizer alone decides: allow, or no opinion with Kubernetes' reason.
type Verdict = Result<(), String>;

impl NodeAuthorizer {
    /// Decides by `graph` and the static `rules`, then asks `next` (RBAC).
    pub fn new(
        graph: Arc<NodeGraph>,
        reflector: Option<Arc<Reflector>>,
        rules: Vec<Value>,
        next: Box<dyn Authorizer>,
    ) -> NodeAuthorizer {
        NodeAuthorizer {
            graph,
            reflector,
            rules,
            next,
        }
    }

    /// This authorizer's verdict on a node's request; `None` when the user is no node.
    fn verdict(&self, attributes: &Attributes<'_>) -> Option<Verdict> {
        let node = node_identity(attributes.user)?;
        if node.is_empty() {
            return Some(Err(format!(
                "unknown node for user \"{}\"",
                attributes.user.name
            )));
        }
        let verb = attributes.verb;
        let Some(r) = &attributes.resource else {
            return Some(self.static_policy(attributes));
        };
        Some(match (r.group, r.resource) {
            ("", "secrets") => self.read_namespaced(node, Referenced::Secret, verb, r),
            ("", "configmaps") => self.read_namespaced(node, Referenced::ConfigMap, verb, r),
            ("", "persistentvolumeclaims") if r.subresource == "status" => {
                self.status_update(node, Referenced::Claim, verb, r)
            }
            ("", "persistentvolumeclaims") => self.get(node, verb, r, |name| {
                self.graph
                    .references(node, Referenced::Claim, r.namespace, name)
            }),
            ("", "persistentvolumes") => {
                self.get(node, verb, r, |name| self.graph.uses_volume(node, name))
            }
            ("resource.k8s.io", "resourceclaims") => self.get(node, verb, r, |name| {
                self.graph
                    .references(node, Referenced::ResourceClaim, r.namespace, name)
            }),
            ("", "serviceaccounts") => self.service_account(node, verb, r),
            ("coordination.k8s.io", "leases") => lease(node, verb, r),
            ("storage.k8s.io", "csinodes") => csi_node(node, verb, r),
            _ => self.static_policy(attributes),
        })
    }

    fn static_policy(&self, attributes: &Attributes<'_>) -> Verdict {
        let request = match &attributes.resource {
            Some(r) => Request::Resource {
                verb: attributes.verb,
                group: r.group,
                resource: r.resource,
                subresource: r.subresource,
                name: r.name,
            },
            None => Request::Path {
                verb: attributes.verb,
                path: attributes.path,
            },
        };
        if self.rules.iter().any(|rule| rule_allows(rule, &request)) {
            Ok(())
        } else {
            Err(String::new())
        }
    }

    /// Secrets and ConfigMaps: get, list or watch one referenced object.
    fn read_namespaced(
        &self,
        node: &str,
        kind: Referenced,
        verb: &str,
        r: &ResourceAttributes<'_>,
    ) -> Verdict {
        if !matches!(verb, "get" | "list" | "watch") {
            return Err("can only read resources of this type".into());
        }
        if !r.subresource.is_empty() {
            return Err("cannot read subresource".into());
        }
        if r.namespace.is_empty() {
            return Err("can only read namespaced object of this type".into());
        }
        related(node, r.name, |name| match kind {
            Referenced::ConfigMap if name == ROOT_CA_CONFIG_MAP && verb == "get" => true,
            Referenced::Secret => {
                self.graph.references(node, kind, r.namespace, name)
                    || self.pull_secret_of_service_account(node, r.namespace, name)
            }
            _ => self.graph.references(node, kind, r.namespace, name),
        })
    }

    /// Whether `secret` is an `imagePullSecrets` entry of a ServiceAccount of a pod bound
    /// to `node`.
    fn pull_secret_of_service_account(&self, node: &str, namespace: &str, secret: &str) -> bool {
        let (Some(reflector), Some(def)) = (
            &self.reflector,
            REGISTRY.by_kind("", "v1", "ServiceAccount"),
        ) else {
            return false;
        };
        self.graph
            .referenced(node, Referenced::ServiceAccount, namespace)
            .iter()
            .filter_map(|account| reflector.get(def, namespace, account))
            .any(|account| {
                array_at(&account, "/imagePullSecrets")
                    .iter()
                    .any(|s| str_at(s, "/name") == secret)
            })
    }

    fn get(
        &self,
        node: &str,
        verb: &str,
        r: &ResourceAttributes<'_>,
        has_path: impl Fn(&str) -> bool,
    ) -> Verdict {
        if verb != "get" {
            return Err("can only get individual resources of this type".into());
        }
        if !r.subresource.is_empty() {
            return Err("cannot get subresource".into());
        }
        related(node, r.name, has_path)
    }

    fn status_update(
        &self,
        node: &str,
        kind: Referenced,
        verb: &str,
        r: &ResourceAttributes<'_>,
    ) -> Verdict {
        if !matches!(verb, "update" | "patch") {
            return Err("can only get/update/patch this type".into());
        }
        related(node, r.name, |name| {
            self.graph.references(node, kind, r.namespace, name)
        })
    }

    /// TokenRequests for the ServiceAccounts of the node's pods (and, for skiff's kubelet,
    /// reading those ServiceAccounts).
    fn service_account(&self, node: &str, verb: &str, r: &ResourceAttributes<'_>) -> Verdict {
        let referenced = |name: &str| {
            self.graph
                .references(node, Referenced::ServiceAccount, r.namespace, name)
        };
        if verb == "get" && r.subresource.is_empty() {
            return related(node, r.name, referenced);
        }
        if verb != "create" || r.name.is_empty() {
            return Err("can only create tokens for individual service accounts".into());
        }
        if r.subresource != "token" {
            return Err("can only create token subresource of serviceaccount".into());
        }
        related(node, r.name, referenced)
    }
}

/// Allowed when `name` is given and related to the node.
fn related(node: &str, name: &str, has_path: impl Fn(&str) -> bool) -> Verdict {
    if name.is_empty() {
        return Err("No Object name found".into());
    }
    if has_path(name) {
        Ok(())
    } else {
        Err(format!(
            "no relationship found between node '{node}' and this object"
        ))
    }
}

/// A node's own Lease in `kube-node-lease` (the name is unknown on create, where
/// NodeRestriction checks it).
fn lease(node: &str, verb: &str, r: &ResourceAttributes<'_>) -> Verdict {
    if !matches!(verb, "get" | "create" | "update" | "patch" | "delete") {
        return Err("can only get, create, update, patch, or delete a node lease".into());
    }
    if r.namespace != NODE_LEASE_NAMESPACE {
        return Err(format!(
            "can only access leases in the \"{NODE_LEASE_NAMESPACE}\" system namespace"
        ));
    }
    if verb != "create" && r.name != node {
        return Err("can only access node lease with the same name as the requesting node".into());
    }
    Ok(())
}

/// A node's own CSINode.
fn csi_node(node: &str, verb: &str, r: &ResourceAttributes<'_>) -> Verdict {
    if !matches!(verb, "get" | "create" | "update" | "patch" | "delete") {
        return Err("can only get, create, update, patch, or delete a CSINode".into());
    }
    if !r.subresource.is_empty() {
        return Err("cannot authorize CSINode subresources".into());
    }
    if verb != "create" && r.name != node {
        return Err("can only access CSINode with the same name as the requesting node".into());
    }
    Ok(())
}

impl Authorizer for NodeAuthorizer {
    fn authorize(&self, attributes: &Attributes<'_>) -> Decision {
        match self.verdict(attributes) {
            Some(Ok(())) => Decision::Allow,
            None => self.next.authorize(attributes),
            Some(Err(reason)) => match self.next.authorize(attributes) {
                Decision::NoOpinion if !reason.is_empty() => Decision::Deny(reason),
                decision => decision,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authz::{forbidden_message, Masters};
    use serde_json::json;

    fn node_user(name: &str) -> UserInfo {
        UserInfo {
            name: format!("{NODE_USER_PREFIX}{name}"),
            groups: vec![NODES_GROUP.into(), "system:authenticated".into()],
            ..UserInfo::default()
        }
    }

    fn authorizer() -> NodeAuthorizer {
        let graph = Arc::new(NodeGraph::new());
        graph.set_pod(
            "pods/default/web",
            &json!({"metadata": {"name": "web", "namespace": "default"},
                "spec": {"nodeName": "n1", "serviceAccountName": "robot",
                    "containers": [{"name": "c", "envFrom": [{"configMapRef": {"name": "settings"}}]}],
                    "volumes": [{"name": "s", "secret": {"secretName": "used"}},
                                {"name": "d", "persistentVolumeClaim": {"claimName": "data"}}]}}),
        );
        graph.set_claim(
            "pvc/default/data",
            &json!({"metadata": {"name": "data", "namespace": "default"},
                "spec": {"volumeName": "pv-1"}}),
        );
        NodeAuthorizer::new(
            graph,
            None,
            crate::rbac::bootstrap::node_rules(),
            Box::new(Masters),
        )
    }

    fn decide(
        authz: &NodeAuthorizer,
        user: &UserInfo,
        verb: &str,
        (group, resource, subresource): (&str, &str, &str),
        namespace: &str,
        name: &str,
    ) -> (Decision, String) {
        let attributes = Attributes {
            user,
            verb,
            resource: Some(ResourceAttributes {
                group,
                resource,
                subresource,
                namespace,
                name,
            }),
            path: "/",
        };
        let decision = authz.authorize(&attributes);
        let message = match &decision {
            Decision::Deny(reason) => forbidden_message(&attributes, reason),
            _ => String::new(),
        };
        (decision, message)
    }

    const SECRETS: (&str, &str, &str) = ("", "secrets", "");

    #[test]
    fn a_node_reads_only_what_its_pods_reference() {
        let authz = authorizer();
        let n1 = node_user("n1");
        let n2 = node_user("n2");
        assert_eq!(
            decide(&authz, &n1, "get", SECRETS, "default", "used").0,
            Decision::Allow
        );
        let (decision, message) = decide(&authz, &n1, "get", SECRETS, "default", "x");
        assert!(matches!(decision, Decision::Deny(_)));
        assert_eq!(
            message,
            "secrets \"x\" is forbidden: User \"system:node:n1\" cannot get resource \"secrets\" in API group \"\" in the namespace \"default\": no relationship found between node 'n1' and this object"
        );
        assert!(matches!(
            decide(&authz, &n2, "get", SECRETS, "default", "used").0,
            Decision::Deny(_)
        ));
        assert!(matches!(
            decide(&authz, &n1, "get", SECRETS, "other", "used").0,
            Decision::Deny(_)
        ));
        // No listing every Secret, no writes.
        assert!(matches!(
            decide(&authz, &n1, "list", SECRETS, "default", "").0,
            Decision::Deny(r) if r == "No Object name found"
        ));
        assert!(matches!(
            decide(&authz, &n1, "update", SECRETS, "default", "used").0,
            Decision::Deny(r) if r == "can only read resources of this type"
        ));
        let configmaps = ("", "configmaps", "");
        assert_eq!(
            decide(&authz, &n1, "get", configmaps, "default", "settings").0,
            Decision::Allow
        );
        assert_eq!(
            decide(
                &authz,
                &n1,
                "get",
                configmaps,
                "kube-system",
                ROOT_CA_CONFIG_MAP
            )
            .0,
            Decision::Allow
        );
        let claims = ("", "persistentvolumeclaims", "");
        assert_eq!(
            decide(&authz, &n1, "get", claims, "default", "data").0,
            Decision::Allow
        );
        let volumes = ("", "persistentvolumes", "");
        assert_eq!(
            decide(&authz, &n1, "get", volumes, "", "pv-1").0,
            Decision::Allow
        );
        assert!(matches!(
            decide(&authz, &n2, "get", volumes, "", "pv-1").0,
            Decision::Deny(_)
        ));
        let token = ("", "serviceaccounts", "token");
        assert_eq!(
            decide(&authz, &n1, "create", token, "default", "robot").0,
            Decision::Allow
        );
        assert!(matches!(
            decide(&authz, &n1, "create", token, "default", "default").0,
            Decision::Deny(_)
        ));
    }

    #[test]
    fn leases_static_policy_and_other_users() {
        let authz = authorizer();
        let n1 = node_user("n1");
        let leases = ("coordination.k8s.io", "leases", "");
        assert_eq!(
            decide(&authz, &n1, "update", leases, NODE_LEASE_NAMESPACE, "n1").0,
            Decision::Allow
        );
        assert!(matches!(
            decide(&authz, &n1, "update", leases, NODE_LEASE_NAMESPACE, "n2").0,
            Decision::Deny(r) if r.contains("same name as the requesting node")
        ));
        // The static policy: pods and nodes, not deployments.
        assert_eq!(
            decide(&authz, &n1, "watch", ("", "pods", ""), "", "").0,
            Decision::Allow
        );
        assert_eq!(
            decide(&authz, &n1, "patch", ("", "nodes", "status"), "", "n1").0,
            Decision::Allow
        );
        assert_eq!(
            decide(
                &authz,
                &n1,
                "get",
                ("apps", "deployments", ""),
                "default",
                "d"
            )
            .0,
            Decision::NoOpinion
        );
        // Not nodes: the next authorizer alone decides.
        let bob = UserInfo {
            name: "bob".into(),
            groups: vec!["system:authenticated".into()],
            ..UserInfo::default()
        };
        assert_eq!(
            decide(&authz, &bob, "watch", ("", "pods", ""), "", "").0,
            Decision::NoOpinion
        );
        // A node that RBAC (here: the masters group) allows more keeps it.
        let mut admin_node = node_user("n1");
        admin_node.groups.push(super::super::MASTERS_GROUP.into());
        assert_eq!(
            decide(&authz, &admin_node, "get", SECRETS, "default", "x").0,
            Decision::Allow
        );
        // A member of system:nodes without a node name.
        let nameless = UserInfo {
            name: "kubelet".into(),
            groups: vec![NODES_GROUP.into()],
            ..UserInfo::default()
        };
        assert!(matches!(
            decide(&authz, &nameless, "get", SECRETS, "default", "used").0,
            Decision::Deny(r) if r == "unknown node for user \"kubelet\""
        ));
    }
}
