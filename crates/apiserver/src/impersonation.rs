//! User impersonation (`kubectl --as`, `--as-group`, `--as-uid`): a request carrying
//! `Impersonate-*` headers acts as another user, once its sender is authorized to
//! `impersonate` that user, each of the groups, the uid and every extra value (Kubernetes'
//! `WithImpersonation` filter). Everything after (authorization, admission, reviews) sees
//! only the impersonated user.

use std::collections::BTreeMap;

use hyper::HeaderMap;

use crate::authn::{UserInfo, ANONYMOUS_USER, AUTHENTICATED_GROUP, UNAUTHENTICATED_GROUP};
use crate::authz::{forbidden_message, Attributes, Authorizer, Decision, ResourceAttributes};
use crate::rbac::SERVICE_ACCOUNT_PREFIX;
use crate::serviceaccount::SERVICE_ACCOUNTS_GROUP;
use crate::status::{ApiError, ApiResult};

/// The user to act as.
pub const USER_HEADER: &str = "impersonate-user";
/// A group to act in (repeatable).
pub const GROUP_HEADER: &str = "impersonate-group";
/// The uid to act with.
pub const UID_HEADER: &str = "impersonate-uid";
/// `Impersonate-Extra-<key>`: an extra value (repeatable); the key is percent-encoded.
pub const EXTRA_HEADER_PREFIX: &str = "impersonate-extra-";

/// The API group of the uid and extra impersonation checks.
const AUTHENTICATION_GROUP: &str = "authentication.k8s.io";

/// What a request asks to act as.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Impersonation {
    /// The user name (`system:serviceaccount:<ns>:<name>` for a service account).
    pub user: String,
    /// The groups, as given (none: a service account's own groups).
    pub groups: Vec<String>,
    /// The uid, or "".
    pub uid: String,
    /// The extra values by key.
    pub extra: BTreeMap<String, Vec<String>>,
}

/// One thing the sender must be allowed to impersonate.
struct Check {
    group: &'static str,
    resource: &'static str,
    subresource: String,
    namespace: String,
    name: String,
}

impl Impersonation {
    /// The impersonation the headers ask for; `None` without any `Impersonate-*` header.
    /// Groups, uid or extras without a user are a bad request.
    pub fn from_headers(headers: &HeaderMap) -> ApiResult<Option<Impersonation>> {
        let values = |name: &str| -> Vec<String> {
            headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .map(str::to_owned)
                .collect()
        };
        let mut asked = Vec::new();
        let user = values(USER_HEADER).into_iter().next();
        let groups = values(GROUP_HEADER);
        asked.extend(groups.iter().map(|g| format!("group {g:?}")));
        let uid = values(UID_HEADER).into_iter().next();
        asked.extend(uid.iter().map(|u| format!("uid {u:?}")));
        let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, value) in headers {
            // Header names arrive lowercase.
            let Some(key) = name.as_str().strip_prefix(EXTRA_HEADER_PREFIX) else {
                continue;
            };
            let Ok(value) = value.to_str() else { continue };
            let key = unescape_extra_key(key);
            asked.push(format!("extra {key}={value:?}"));
            extra.entry(key).or_default().push(value.to_owned());
        }
        match user {
            Some(user) => Ok(Some(Impersonation {
                user,
                groups,
                uid: uid.unwrap_or_default(),
                extra,
            })),
            None if asked.is_empty() => Ok(None),
            None => Err(ApiError::bad_request(format!(
                "requested [{}] without impersonating a user",
                asked.join(" ")
            ))),
        }
    }

    /// The user the request acts as, when `requester` may impersonate everything asked
    /// (`impersonate` on users or serviceaccounts, groups, uids and userextras/<key>);
    /// otherwise Forbidden, naming the first thing it may not impersonate.
    pub fn authorize(
        self,
        requester: &UserInfo,
        authorizer: &dyn Authorizer,
        path: &str,
    ) -> ApiResult<UserInfo> {
        let service_account = self
            .user
            .strip_prefix(SERVICE_ACCOUNT_PREFIX)
            .and_then(|rest| rest.split_once(':'));
        for check in self.checks(service_account) {
            let attributes = Attributes {
                user: requester,
                verb: "impersonate",
                resource: Some(ResourceAttributes {
                    group: check.group,
                    resource: check.resource,
                    subresource: &check.subresource,
                    namespace: &check.namespace,
                    name: &check.name,
                }),
                path,
            };
            let reason = match authorizer.authorize(&attributes) {
                Decision::Allow => continue,
                Decision::Deny(reason) => reason,
                Decision::NoOpinion => String::new(),
            };
            return Err(ApiError::forbidden(forbidden_message(&attributes, &reason)));
        }
        let mut groups = self.groups;
        if let (Some((namespace, _)), true) = (service_account, groups.is_empty()) {
            groups = vec![
                SERVICE_ACCOUNTS_GROUP.to_owned(),
                format!("{SERVICE_ACCOUNTS_GROUP}:{namespace}"),
            ];
        }
        let implied = if self.user == ANONYMOUS_USER {
            UNAUTHENTICATED_GROUP
        } else {
            AUTHENTICATED_GROUP
        };
        if !groups.iter().any(|g| g == implied) {
            groups.push(implied.to_owned());
        }
        Ok(UserInfo {
            name: self.user,
            groups,
            uid: self.uid,
            extra: self.extra,
        })
    }

    /// What must be authorized, in Kubernetes' order: the user, groups, extras, uid.
    fn checks(&self, service_account: Option<(&str, &str)>) -> Vec<Check> {
        let check = |group, resource, subresource: &str, namespace: &str, name: &str| Check {
            group,
            resource,
            subresource: subresource.to_owned(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        };
        let mut checks = vec![match service_account {
            Some((namespace, name)) => check("", "serviceaccounts", "", namespace, name),
            None => check("", "users", "", "", &self.user),
        }];
        checks.extend(self.groups.iter().map(|g| check("", "groups", "", "", g)));
        for (key, values) in &self.extra {
            checks.extend(
                values
                    .iter()
                    .map(|v| check(AUTHENTICATION_GROUP, "userextras", key, "", v)),
            );
        }
        if !self.uid.is_empty() {
            checks.push(check(AUTHENTICATION_GROUP, "uids", "", "", &self.uid));
        }
        checks
    }
}

/// An extra key from its header name: percent-decoded (keys like `example.com/scopes` cannot
/// be header names as they are), kept as sent when that fails, as Kubernetes does.
fn unescape_extra_key(encoded: &str) -> String {
    let bytes = encoded.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = encoded
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match hex {
                Some(byte) => {
                    out.push(byte);
                    i += 3;
                    continue;
                }
                None => return encoded.to_owned(),
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|_| encoded.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authz::MASTERS_GROUP;
    use hyper::header::HeaderValue;

    /// Allows `impersonate` of what is listed (`resource/name`), to user "admin" only.
    struct Allowed(&'static [&'static str]);

    impl Authorizer for Allowed {
        fn authorize(&self, attributes: &Attributes<'_>) -> Decision {
            let r = attributes.resource.as_ref().unwrap();
            let what = if r.subresource.is_empty() {
                format!("{}/{}", r.resource, r.name)
            } else {
                format!("{}/{}/{}", r.resource, r.subresource, r.name)
            };
            if attributes.user.name == "admin" && self.0.contains(&what.as_str()) {
                Decision::Allow
            } else {
                Decision::NoOpinion
            }
        }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_static(value));
        }
        headers
    }

    fn user(name: &str) -> UserInfo {
        UserInfo {
            name: name.into(),
            groups: vec![MASTERS_GROUP.into(), AUTHENTICATED_GROUP.into()],
            ..UserInfo::default()
        }
    }

    #[test]
    fn no_headers_no_impersonation() {
        assert_eq!(Impersonation::from_headers(&headers(&[])).unwrap(), None);
    }

    #[test]
    fn groups_without_a_user_are_a_bad_request() {
        let err =
            Impersonation::from_headers(&headers(&[("impersonate-group", "devs")])).unwrap_err();
        assert_eq!(err.code, 400);
        assert!(
            err.message.contains("without impersonating a user"),
            "{}",
            err.message
        );
    }

    #[test]
    fn impersonated_user_gets_groups_uid_extra_and_system_authenticated() {
        let asked = Impersonation::from_headers(&headers(&[
            ("impersonate-user", "jane"),
            ("impersonate-group", "devs"),
            ("impersonate-uid", "1234"),
            ("impersonate-extra-example.com%2fscopes", "view"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(asked.extra["example.com/scopes"], ["view"]);
        let allowed = Allowed(&[
            "users/jane",
            "groups/devs",
            "uids/1234",
            "userextras/example.com/scopes/view",
        ]);
        let jane = asked.authorize(&user("admin"), &allowed, "/api").unwrap();
        assert_eq!(jane.name, "jane");
        assert_eq!(jane.groups, ["devs", AUTHENTICATED_GROUP]);
        assert_eq!(jane.uid, "1234");
        assert_eq!(jane.extra["example.com/scopes"], ["view"]);
    }

    #[test]
    fn forbidden_in_kubernetes_words() {
        let asked = Impersonation::from_headers(&headers(&[("impersonate-user", "jane")]))
            .unwrap()
            .unwrap();
        let err = asked
            .authorize(&user("bob"), &Allowed(&["users/jane"]), "/api")
            .unwrap_err();
        assert_eq!(err.code, 403);
        assert_eq!(
            err.message,
            "users \"jane\" is forbidden: User \"bob\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope"
        );
        // Allowed the user but not the group.
        let asked = Impersonation::from_headers(&headers(&[
            ("impersonate-user", "jane"),
            ("impersonate-group", "admins"),
        ]))
        .unwrap()
        .unwrap();
        let err = asked
            .authorize(&user("admin"), &Allowed(&["users/jane"]), "/api")
            .unwrap_err();
        assert!(
            err.message.starts_with("groups \"admins\" is forbidden"),
            "{}",
            err.message
        );
    }

    #[test]
    fn service_accounts_are_impersonated_in_their_namespace_with_their_groups() {
        let asked = Impersonation::from_headers(&headers(&[(
            "impersonate-user",
            "system:serviceaccount:team:robot",
        )]))
        .unwrap()
        .unwrap();
        let err = asked
            .clone()
            .authorize(&user("bob"), &Allowed(&[]), "/api")
            .unwrap_err();
        assert_eq!(
            err.message,
            "serviceaccounts \"robot\" is forbidden: User \"bob\" cannot impersonate resource \"serviceaccounts\" in API group \"\" in the namespace \"team\""
        );
        let robot = asked
            .authorize(&user("admin"), &Allowed(&["serviceaccounts/robot"]), "/api")
            .unwrap();
        assert_eq!(
            robot.groups,
            [
                "system:serviceaccounts",
                "system:serviceaccounts:team",
                AUTHENTICATED_GROUP
            ]
        );
    }

    #[test]
    fn extra_keys_that_do_not_decode_are_kept() {
        assert_eq!(unescape_extra_key("a%2Fb"), "a/b");
        assert_eq!(unescape_extra_key("a%zz"), "a%zz");
    }
}
