//! NodeRestriction: a kubelet that authenticates as its node (`system:node:<name>` in
//! `system:nodes`, the identity `skiff agent` gets through its TLS bootstrap) may only
//! write what belongs to its node, as kube-apiserver's plugin limits it:
//!
//! - its own Node object, without changing its taints or setting labels under
//!   `node-restriction.kubernetes.io/`;
//! - pods: create mirror pods bound to itself, update the status of and delete pods
//!   bound to itself;
//! - its own Lease in `kube-node-lease`.
//!
//! RBAC still decides what else a node may do; this plugin only narrows writes to the
//! node's own objects. Other users are not affected.

use serde_json::Value;

use super::{Attributes, Operation};
use crate::status::ApiResult;

/// The group of node identities.
const NODES_GROUP: &str = "system:nodes";
/// The prefix of node user names.
const NODE_USER_PREFIX: &str = "system:node:";
/// Labels only administrators may set on nodes.
const RESTRICTED_LABEL_PREFIX: &str = "node-restriction.kubernetes.io/";
/// The annotation marking a mirror pod.
const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// The node a user acts as, if it is a node identity.
fn node_of(user: &crate::authn::UserInfo) -> Option<&str> {
    let node = user.name.strip_prefix(NODE_USER_PREFIX)?;
    (user.groups.iter().any(|g| g == NODES_GROUP) && !node.is_empty()).then_some(node)
}

/// The write, as this plugin sees it.
#[derive(Debug, Clone, Copy)]
pub struct Write<'a> {
    /// The operation.
    pub operation: Operation,
    /// API group and kind.
    pub group: &'a str,
    /// Kind.
    pub kind: &'a str,
    /// Subresource ("" for the main resource).
    pub subresource: &'a str,
    /// Namespace.
    pub namespace: &'a str,
    /// The name in the request ("" on create).
    pub name: &'a str,
    /// The new object (the deleted one on delete).
    pub obj: &'a Value,
    /// The stored object, for updates and deletions.
    pub old: Option<&'a Value>,
}

fn str_at<'a>(obj: &'a Value, pointer: &str) -> &'a str {
    obj.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn restricted_labels(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|labels| {
            labels
                .iter()
                .filter(|(k, _)| k.starts_with(RESTRICTED_LABEL_PREFIX))
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default()
}

/// Why node `node` may not make `write`, or `None` when it may.
pub fn refuse(node: &str, write: &Write<'_>) -> Option<String> {
    let object_name = if write.name.is_empty() {
        str_at(write.obj, "/metadata/name")
    } else {
        write.name
    };
    match (write.group, write.kind) {
        ("", "Node") => {
            if object_name != node {
                return Some(format!(
                    "node \"{node}\" is not allowed to modify node \"{object_name}\""
                ));
            }
            if write.operation == Operation::Delete {
                return None;
            }
            let old = write.old.unwrap_or(&Value::Null);
            let added: Vec<String> = restricted_labels(write.obj)
                .into_iter()
                .filter(|l| !restricted_labels(old).contains(l))
                .collect();
            if !added.is_empty() {
                return Some(format!(
                    "is not allowed to modify labels: {}",
                    added.join(", ")
                ));
            }
            if write.operation == Operation::Update
                && write.subresource.is_empty()
                && write.obj.pointer("/spec/taints") != old.pointer("/spec/taints")
            {
                return Some(format!("node \"{node}\" is not allowed to modify taints"));
            }
            None
        }
        ("", "Pod") => {
            let bound = |pod: &Value| str_at(pod, "/spec/nodeName") == node;
            match (write.operation, write.subresource) {
                (Operation::Create, "") => {
                    let mirror = write
                        .obj
                        .pointer("/metadata/annotations")
                        .and_then(Value::as_object)
                        .is_some_and(|a| a.contains_key(MIRROR_ANNOTATION));
                    if !mirror {
                        return Some(format!(
                            "pod does not have \"{MIRROR_ANNOTATION}\" annotation, node \"{node}\" can only create mirror pods"
                        ));
                    }
                    (!bound(write.obj)).then(|| {
                        format!(
                            "node \"{node}\" can only create pods with spec.nodeName set to itself"
                        )
                    })
                }
                (Operation::Update, "status") => (!write.old.is_some_and(bound)).then(|| {
                    format!(
                        "node \"{node}\" can only update pod status for pods with spec.nodeName set to itself"
                    )
                }),
                (Operation::Delete, "") => {
                    let pod = write.old.unwrap_or(write.obj);
                    (!bound(pod)).then(|| {
                        format!(
                            "node \"{node}\" can only delete pods with spec.nodeName set to itself"
                        )
                    })
                }
                (Operation::Create, "eviction") => None,
                (operation, subresource) => Some(format!(
                    "unexpected operation {}{}, node \"{node}\" can only create and delete mirror pods and update the status of its pods",
                    operation.as_str(),
                    if subresource.is_empty() {
                        String::new()
                    } else {
                        format!(" of {subresource}")
                    }
                )),
            }
        }
        ("coordination.k8s.io", "Lease") if write.namespace == "kube-node-lease" => {
            (object_name != node).then(|| {
                "can only access node lease with the same name as the requesting node".to_string()
            })
        }
        _ => None,
    }
}

/// Refuses a node's write to what is not its own (403 Forbidden).
pub(super) fn validate(attrs: &Attributes<'_>, obj: &Value) -> ApiResult<()> {
    let Some(node) = node_of(attrs.user) else {
        return Ok(());
    };
    let write = Write {
        operation: attrs.operation,
        group: attrs.def.group,
        kind: attrs.def.kind,
        subresource: attrs.subresource,
        namespace: attrs.namespace,
        name: attrs.name,
        obj,
        old: attrs.old,
    };
    match refuse(node, &write) {
        Some(why) => Err(super::forbidden(attrs, obj, &why)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn write<'a>(
        operation: Operation,
        (group, kind): (&'a str, &'a str),
        subresource: &'a str,
        obj: &'a Value,
        old: Option<&'a Value>,
    ) -> Write<'a> {
        Write {
            operation,
            group,
            kind,
            subresource,
            namespace: "default",
            name: obj["metadata"]["name"].as_str().unwrap_or(""),
            obj,
            old,
        }
    }

    const NODE: (&str, &str) = ("", "Node");
    const POD: (&str, &str) = ("", "Pod");

    #[test]
    fn a_node_writes_only_its_own_node_object() {
        let mine = json!({"metadata": {"name": "b", "labels": {"x": "1"}}});
        let other = json!({"metadata": {"name": "a"}});
        assert_eq!(
            refuse(
                "b",
                &write(Operation::Update, NODE, "status", &mine, Some(&mine))
            ),
            None
        );
        assert_eq!(
            refuse(
                "b",
                &write(Operation::Update, NODE, "", &other, Some(&other))
            )
            .unwrap(),
            "node \"b\" is not allowed to modify node \"a\""
        );
        let tainted = json!({"metadata": {"name": "b"}, "spec": {"taints": [{"key": "k", "effect": "NoSchedule"}]}});
        assert_eq!(
            refuse(
                "b",
                &write(Operation::Update, NODE, "", &tainted, Some(&mine))
            )
            .unwrap(),
            "node \"b\" is not allowed to modify taints"
        );
        let labelled = json!({"metadata": {"name": "b", "labels": {"node-restriction.kubernetes.io/zone": "x"}}});
        assert!(refuse(
            "b",
            &write(Operation::Update, NODE, "", &labelled, Some(&mine))
        )
        .unwrap()
        .contains("node-restriction.kubernetes.io/zone=x"));
        assert_eq!(
            refuse("b", &write(Operation::Delete, NODE, "", &mine, Some(&mine))),
            None
        );
    }

    #[test]
    fn a_node_creates_only_its_mirror_pods_and_writes_only_its_pods() {
        let mirror = json!({"metadata": {"name": "web-b", "annotations": {MIRROR_ANNOTATION: "h"}}, "spec": {"nodeName": "b"}});
        assert_eq!(
            refuse("b", &write(Operation::Create, POD, "", &mirror, None)),
            None
        );
        let plain = json!({"metadata": {"name": "web"}, "spec": {"nodeName": "b"}});
        assert!(
            refuse("b", &write(Operation::Create, POD, "", &plain, None))
                .unwrap()
                .contains("can only create mirror pods")
        );
        let elsewhere = json!({"metadata": {"name": "web-a", "annotations": {MIRROR_ANNOTATION: "h"}}, "spec": {"nodeName": "a"}});
        assert!(
            refuse("b", &write(Operation::Create, POD, "", &elsewhere, None))
                .unwrap()
                .contains("spec.nodeName set to itself")
        );
        let on_a = json!({"metadata": {"name": "p"}, "spec": {"nodeName": "a"}});
        let on_b = json!({"metadata": {"name": "p"}, "spec": {"nodeName": "b"}});
        assert_eq!(
            refuse(
                "b",
                &write(Operation::Update, POD, "status", &on_b, Some(&on_b))
            ),
            None
        );
        assert!(refuse(
            "b",
            &write(Operation::Update, POD, "status", &on_a, Some(&on_a))
        )
        .is_some());
        assert_eq!(
            refuse("b", &write(Operation::Delete, POD, "", &on_b, Some(&on_b))),
            None
        );
        assert!(refuse("b", &write(Operation::Delete, POD, "", &on_a, Some(&on_a))).is_some());
        assert!(refuse("b", &write(Operation::Update, POD, "", &on_b, Some(&on_b))).is_some());
    }

    #[test]
    fn a_node_holds_only_its_own_lease() {
        let lease = ("coordination.k8s.io", "Lease");
        let mine = json!({"metadata": {"name": "b"}});
        let other = json!({"metadata": {"name": "a"}});
        let mut w = write(Operation::Update, lease, "", &mine, Some(&mine));
        w.namespace = "kube-node-lease";
        assert_eq!(refuse("b", &w), None);
        let mut w = write(Operation::Update, lease, "", &other, Some(&other));
        w.namespace = "kube-node-lease";
        assert!(refuse("b", &w).is_some());
    }
}
