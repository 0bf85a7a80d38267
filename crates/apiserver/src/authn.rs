//! Authentication: who sent a request.
//!
//! Milestone 1 knows x509 client certificates, verified by the TLS layer against the cluster
//! CA: the user is the subject's CN and the groups its O values, as kube-apiserver's x509
//! authenticator does. Requests without a certificate are anonymous; [`crate::authz`] only
//! lets them reach the health and version endpoints.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use x509_parser::prelude::{FromDer, X509Certificate};

/// Every authenticated user is in this group.
pub const AUTHENTICATED_GROUP: &str = "system:authenticated";
/// Anonymous requests are in this group.
pub const UNAUTHENTICATED_GROUP: &str = "system:unauthenticated";
/// The user name of anonymous requests.
pub const ANONYMOUS_USER: &str = "system:anonymous";

/// Why a certificate did not yield a user.
#[derive(Debug, thiserror::Error)]
pub enum AuthnError {
    /// The certificate could not be parsed.
    #[error("parsing the client certificate: {0}")]
    Parse(String),
    /// The certificate's subject has no common name.
    #[error("the client certificate has no common name")]
    NoCommonName,
}

/// The authenticated identity of a request (`user.Info`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserInfo {
    /// User name.
    pub name: String,
    /// Groups, including `system:authenticated` or `system:unauthenticated`.
    pub groups: Vec<String>,
    /// A unique identifier of the user, or "" (service accounts: the account's uid).
    pub uid: String,
    /// Further attributes an authenticator (or an impersonating client) provided.
    pub extra: BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    /// The anonymous user.
    pub fn anonymous() -> UserInfo {
        UserInfo {
            name: ANONYMOUS_USER.to_owned(),
            groups: vec![UNAUTHENTICATED_GROUP.to_owned()],
            ..UserInfo::default()
        }
    }

    /// The user as the API writes it (`authentication.k8s.io/v1` UserInfo, in
    /// SelfSubjectReviews and AdmissionReviews): `uid` and `extra` only when set.
    pub fn to_json(&self) -> Value {
        let mut info = json!({"username": self.name, "groups": self.groups});
        if !self.uid.is_empty() {
            info["uid"] = json!(self.uid);
        }
        if !self.extra.is_empty() {
            info["extra"] = json!(self.extra);
        }
        info
    }

    /// Whether this is the anonymous user.
    pub fn is_anonymous(&self) -> bool {
        self.name == ANONYMOUS_USER
    }

    /// The user of a client certificate (DER) the TLS layer already verified.
    pub fn from_certificate(der: &[u8]) -> Result<UserInfo, AuthnError> {
        let (_, cert) =
            X509Certificate::from_der(der).map_err(|e| AuthnError::Parse(e.to_string()))?;
        let subject = cert.subject();
        let name = subject
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .ok_or(AuthnError::NoCommonName)?
            .to_owned();
        let mut groups: Vec<String> = subject
            .iter_organization()
            .filter_map(|o| o.as_str().ok())
            .map(str::to_owned)
            .collect();
        groups.push(AUTHENTICATED_GROUP.to_owned());
        Ok(UserInfo {
            name,
            groups,
            ..UserInfo::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_from_admin_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let pki = crate::pki::Pki::load_or_create(dir.path(), &[]).unwrap();
        let (_, pem) = x509_parser::pem::parse_x509_pem(pki.admin.cert_pem.as_bytes()).unwrap();
        let user = UserInfo::from_certificate(&pem.contents).unwrap();
        assert_eq!(user.name, "skiff-admin");
        assert_eq!(user.groups, ["system:masters", "system:authenticated"]);
    }
}
