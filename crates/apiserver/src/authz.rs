//! Authorization: may this user do this?
//!
//! An [`Authorizer`] sees the request's [`Attributes`] and allows, denies or has no opinion;
//! a [`Chain`] asks each in turn, like kube-apiserver's union authorizer, and denies when
//! none allowed. The server chains [`PublicInfo`] (the health and version endpoints
//! Kubernetes' `system:public-info-viewer` role opens to everyone), [`Masters`]
//! (`system:masters`, which kube-apiserver allows before consulting RBAC) and
//! [`node::NodeAuthorizer`] (kube-apiserver's `Node,RBAC`: the Node authorizer, over the
//! pod -> object relation of [`node_graph`], then [`crate::rbac::Rbac`]).

pub mod node;
pub mod node_graph;

use crate::authn::UserInfo;

/// The superuser group.
pub const MASTERS_GROUP: &str = "system:masters";

/// What a request wants to do.
#[derive(Clone, Debug)]
pub struct Attributes<'a> {
    /// Who asks.
    pub user: &'a UserInfo,
    /// The verb: get, list, watch, create, update, patch, delete, deletecollection for
    /// resources; the lowercase HTTP method for other paths.
    pub verb: &'a str,
    /// The resource request, or `None` for a non-resource path.
    pub resource: Option<ResourceAttributes<'a>>,
    /// The request path.
    pub path: &'a str,
}

/// The resource part of [`Attributes`].
#[derive(Clone, Debug)]
pub struct ResourceAttributes<'a> {
    /// API group.
    pub group: &'a str,
    /// Resource (plural).
    pub resource: &'a str,
    /// Subresource, or "".
    pub subresource: &'a str,
    /// Namespace, or "" for cluster-scoped requests.
    pub namespace: &'a str,
    /// Object name, or "".
    pub name: &'a str,
}

/// An authorizer's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Allowed.
    Allow,
    /// Denied, with a reason.
    Deny(String),
    /// No opinion: the next authorizer decides.
    NoOpinion,
}

/// Decides whether a request may proceed.
pub trait Authorizer: Send + Sync {
    /// Decides on one request.
    fn authorize(&self, attributes: &Attributes<'_>) -> Decision;
}

impl<T: Authorizer + ?Sized> Authorizer for std::sync::Arc<T> {
    fn authorize(&self, attributes: &Attributes<'_>) -> Decision {
        (**self).authorize(attributes)
    }
}

/// Asks each authorizer in turn; the first Allow or Deny wins, no opinion at all denies.
pub struct Chain(pub Vec<Box<dyn Authorizer>>);

impl Authorizer for Chain {
    fn authorize(&self, attributes: &Attributes<'_>) -> Decision {
        for authorizer in &self.0 {
            match authorizer.authorize(attributes) {
                Decision::NoOpinion => continue,
                decision => return decision,
            }
        }
        Decision::NoOpinion
    }
}

/// Allows members of `system:masters` everything.
pub struct Masters;

impl Authorizer for Masters {
    fn authorize(&self, attributes: &Attributes<'_>) -> Decision {
        if attributes.user.groups.iter().any(|g| g == MASTERS_GROUP) {
            Decision::Allow
        } else {
            Decision::NoOpinion
        }
    }
}

/// The paths anyone may GET: Kubernetes' `system:public-info-viewer` ClusterRole, bound to
/// `system:authenticated` and `system:unauthenticated`.
pub const PUBLIC_PATHS: &[&str] = &["/healthz", "/livez", "/readyz", "/version"];

/// Whether `path` is one of [`PUBLIC_PATHS`] (or below one, like `/readyz/ping`).
pub fn is_public_path(path: &str) -> bool {
    let path = path.trim_end_matches('/');
    PUBLIC_PATHS.iter().any(|p| {
        path == *p
            || path
                .strip_prefix(p)
                .is_some_and(|rest| rest.starts_with('/'))
    })
}

/// Allows GET of [`PUBLIC_PATHS`] to everyone.
pub struct PublicInfo;

impl Authorizer for PublicInfo {
    fn authorize(&self, attributes: &Attributes<'_>) -> Decision {
        if attributes.resource.is_none()
            && attributes.verb == "get"
            && is_public_path(attributes.path)
        {
            Decision::Allow
        } else {
            Decision::NoOpinion
        }
    }
}

/// The object a list or watch selects by `fieldSelector` (`metadata.name=X`, alone or
/// among other terms): authorizers see it as the request's name, as kube-apiserver's
/// RequestInfo does, so that a node may watch one Secret its pod uses and an RBAC rule
/// with `resourceNames` may allow listing it.
pub fn name_from_field_selector(selector: &str) -> Option<&str> {
    selector.split(',').find_map(|term| {
        let name = term
            .trim()
            .strip_prefix("metadata.name")?
            .trim_start()
            .strip_prefix('=')?;
        let name = name.strip_prefix('=').unwrap_or(name).trim();
        let valid = !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '%']);
        valid.then_some(name)
    })
}

/// The Forbidden message of a denied request, in Kubernetes' words.
pub fn forbidden_message(attributes: &Attributes<'_>, reason: &str) -> String {
    let user = &attributes.user.name;
    let mut message = match &attributes.resource {
        Some(r) => {
            let what = if r.subresource.is_empty() {
                format!("resource \"{}\"", r.resource)
            } else {
                format!("resource \"{}/{}\"", r.resource, r.subresource)
            };
            let head = if r.name.is_empty() {
                qualified(r.group, r.resource)
            } else {
                format!("{} \"{}\"", qualified(r.group, r.resource), r.name)
            };
            let scope = if r.namespace.is_empty() {
                " at the cluster scope".to_owned()
            } else {
                format!(" in the namespace \"{}\"", r.namespace)
            };
            format!(
                "{head} is forbidden: User \"{user}\" cannot {} {what} in API group \"{}\"{scope}",
                attributes.verb, r.group
            )
        }
        None => format!(
            "forbidden: User \"{user}\" cannot {} path \"{}\"",
            attributes.verb, attributes.path
        ),
    };
    if !reason.is_empty() {
        message.push_str(": ");
        message.push_str(reason);
    }
    message
}

fn qualified(group: &str, resource: &str) -> String {
    if group.is_empty() {
        resource.to_owned()
    } else {
        format!("{resource}.{group}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain() -> Chain {
        Chain(vec![Box::new(PublicInfo), Box::new(Masters)])
    }

    #[test]
    fn masters_may_do_anything_others_only_public_paths() {
        let admin = UserInfo {
            name: "a".into(),
            groups: vec![MASTERS_GROUP.into()],
            ..UserInfo::default()
        };
        let bob = UserInfo {
            name: "bob".into(),
            groups: vec!["system:authenticated".into()],
            ..UserInfo::default()
        };
        let delete_pod = |user| Attributes {
            user,
            verb: "delete",
            resource: Some(ResourceAttributes {
                group: "",
                resource: "pods",
                subresource: "",
                namespace: "default",
                name: "x",
            }),
            path: "/api/v1/namespaces/default/pods/x",
        };
        assert_eq!(chain().authorize(&delete_pod(&admin)), Decision::Allow);
        assert_eq!(chain().authorize(&delete_pod(&bob)), Decision::NoOpinion);
        assert_eq!(
            forbidden_message(&delete_pod(&bob), ""),
            "pods \"x\" is forbidden: User \"bob\" cannot delete resource \"pods\" in API group \"\" in the namespace \"default\""
        );
        let anon = UserInfo::anonymous();
        let readyz = Attributes {
            user: &anon,
            verb: "get",
            resource: None,
            path: "/readyz",
        };
        assert_eq!(chain().authorize(&readyz), Decision::Allow);
    }

    #[test]
    fn a_field_selector_on_the_name_names_the_object() {
        assert_eq!(name_from_field_selector("metadata.name=x"), Some("x"));
        assert_eq!(
            name_from_field_selector("type=Opaque,metadata.name==x"),
            Some("x")
        );
        assert_eq!(name_from_field_selector("metadata.name!=x"), None);
        assert_eq!(name_from_field_selector("metadata.namespace=x"), None);
        assert_eq!(name_from_field_selector("metadata.name=a/b"), None);
        assert_eq!(name_from_field_selector(""), None);
    }
}
