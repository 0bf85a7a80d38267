//! Which kubelet client certificate requests the approver may approve, and under which
//! permission: kube-controller-manager's `csrapproving` recognizers, as pure functions of
//! the decoded request and its requester.
//!
//! A request is a kubelet client request when its signer is
//! `kubernetes.io/kube-apiserver-client-kubelet`, its subject is `CN=system:node:<name>,
//! O=system:nodes`, it names no subject alternative names, and its usages are
//! `digital signature` and `client auth`, with `key encipherment` allowed. The requester
//! then needs `create` on `certificatesigningrequests/selfnodeclient` when the request is
//! for its own node (renewal), else on `certificatesigningrequests/nodeclient` (a bootstrap
//! token asking for a node's first certificate).

use x509_parser::extensions::ParsedExtension;
use x509_parser::prelude::FromDer as _;

/// The signer of kubelets' client certificates.
pub const KUBELET_CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";
/// The prefix of a node's user name.
pub const NODE_USER_PREFIX: &str = "system:node:";
/// The nodes' group.
pub const NODES_GROUP: &str = "system:nodes";

/// The subresource a requester renewing its own node's certificate needs `create` on.
pub const SELF_NODE_CLIENT: &str = "selfnodeclient";
/// The subresource a requester asking for any node's certificate needs `create` on.
pub const NODE_CLIENT: &str = "nodeclient";

/// Why a request's PEM could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// No `CERTIFICATE REQUEST` PEM block.
    #[error("spec.request holds no PEM block: {0}")]
    Pem(String),
    /// The block is not a PKCS#10 request.
    #[error("spec.request is not a certificate request: {0}")]
    Request(String),
}

/// What the approver reads from a PKCS#10 request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DecodedRequest {
    /// The subject's common names.
    pub common_names: Vec<String>,
    /// The subject's organizations.
    pub organizations: Vec<String>,
    /// Whether it asks for subject alternative names (DNS, IP, email or URI).
    pub has_subject_alt_names: bool,
}

/// Decodes `spec.request` (PEM).
pub fn decode(pem: &[u8]) -> Result<DecodedRequest, DecodeError> {
    let (_, block) =
        x509_parser::pem::parse_x509_pem(pem).map_err(|e| DecodeError::Pem(e.to_string()))?;
    if block.label != "CERTIFICATE REQUEST" {
        return Err(DecodeError::Pem(format!("block {:?}", block.label)));
    }
    let (_, csr) =
        x509_parser::certification_request::X509CertificationRequest::from_der(&block.contents)
            .map_err(|e| DecodeError::Request(e.to_string()))?;
    let subject = &csr.certification_request_info.subject;
    let has_subject_alt_names = csr.requested_extensions().is_some_and(|mut exts| {
        exts.any(|e| matches!(e, ParsedExtension::SubjectAlternativeName(san) if !san.general_names.is_empty()))
    });
    Ok(DecodedRequest {
        common_names: subject
            .iter_common_name()
            .filter_map(|a| a.as_str().ok().map(str::to_string))
            .collect(),
        organizations: subject
            .iter_organization()
            .filter_map(|a| a.as_str().ok().map(str::to_string))
            .collect(),
        has_subject_alt_names,
    })
}

/// Why a request is not a kubelet client request.
pub fn kubelet_client_problem(
    signer: &str,
    request: &DecodedRequest,
    usages: &[String],
) -> Option<String> {
    if signer != KUBELET_CLIENT_SIGNER {
        return Some(format!("signerName is {signer:?}"));
    }
    if request.organizations != [NODES_GROUP] {
        return Some(format!(
            "organization must be [\"{NODES_GROUP}\"], not {:?}",
            request.organizations
        ));
    }
    if request.has_subject_alt_names {
        return Some("subject alternative names are not allowed".into());
    }
    match request.common_names.as_slice() {
        [cn] if cn.starts_with(NODE_USER_PREFIX) && cn.len() > NODE_USER_PREFIX.len() => {}
        cns => {
            return Some(format!(
                "common name must be system:node:<name>, not {cns:?}"
            ))
        }
    }
    let allowed = ["digital signature", "key encipherment", "client auth"];
    if let Some(u) = usages.iter().find(|u| !allowed.contains(&u.as_str())) {
        return Some(format!("usage {u:?} is not allowed"));
    }
    for required in ["digital signature", "client auth"] {
        if !usages.iter().any(|u| u == required) {
            return Some(format!("usage {required:?} is required"));
        }
    }
    None
}

/// The subresources of `certificatesigningrequests` whose `create` permission would let
/// the approver approve this request, in the order to ask: `selfnodeclient` when
/// `requester` is the node the certificate names, then `nodeclient`; empty when the
/// request is no kubelet client request.
pub fn permissions_to_check(
    signer: &str,
    request: &DecodedRequest,
    usages: &[String],
    requester: &str,
) -> Vec<&'static str> {
    if kubelet_client_problem(signer, request, usages).is_some() {
        return Vec::new();
    }
    let mut subresources = Vec::new();
    if request.common_names.first().map(String::as_str) == Some(requester) {
        subresources.push(SELF_NODE_CLIENT);
    }
    subresources.push(NODE_CLIENT);
    subresources
}

/// The approval's message, as kube-controller-manager words it.
pub fn approval_message(subresource: &str) -> &'static str {
    if subresource == SELF_NODE_CLIENT {
        "Auto approving self kubelet client certificate after SubjectAccessReview."
    } else {
        "Auto approving kubelet client certificate after SubjectAccessReview."
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pem(cn: &str, orgs: &[&str], sans: &[&str]) -> String {
        let mut params =
            rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        for org in orgs {
            params
                .distinguished_name
                .push(rcgen::DnType::OrganizationName, *org);
        }
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        params.serialize_request(&key).unwrap().pem().unwrap()
    }

    fn usages(u: &[&str]) -> Vec<String> {
        u.iter().map(|s| s.to_string()).collect()
    }

    const CLIENT: &[&str] = &["digital signature", "key encipherment", "client auth"];

    #[test]
    fn decodes_subject_and_alt_names() {
        let req = decode(pem("system:node:a", &[NODES_GROUP], &[]).as_bytes()).unwrap();
        assert_eq!(req.common_names, ["system:node:a"]);
        assert_eq!(req.organizations, [NODES_GROUP]);
        assert!(!req.has_subject_alt_names);
        let req = decode(pem("system:node:a", &[NODES_GROUP], &["a.example"]).as_bytes()).unwrap();
        assert!(req.has_subject_alt_names);
        assert!(decode(b"not pem").is_err());
    }

    #[test]
    fn a_bootstrap_token_needs_nodeclient_and_a_node_selfnodeclient_first() {
        let req = decode(pem("system:node:a", &[NODES_GROUP], &[]).as_bytes()).unwrap();
        let u = usages(CLIENT);
        assert_eq!(
            permissions_to_check(KUBELET_CLIENT_SIGNER, &req, &u, "system:bootstrap:abcdef"),
            [NODE_CLIENT]
        );
        assert_eq!(
            permissions_to_check(KUBELET_CLIENT_SIGNER, &req, &u, "system:node:a"),
            [SELF_NODE_CLIENT, NODE_CLIENT]
        );
        // Key encipherment is optional.
        let u = usages(&["digital signature", "client auth"]);
        assert_eq!(
            permissions_to_check(KUBELET_CLIENT_SIGNER, &req, &u, "system:node:b"),
            [NODE_CLIENT]
        );
    }

    #[test]
    fn anything_but_a_kubelet_client_request_is_left_alone() {
        let good = decode(pem("system:node:a", &[NODES_GROUP], &[]).as_bytes()).unwrap();
        let u = usages(CLIENT);
        let cases: Vec<(&str, DecodedRequest, Vec<String>)> = vec![
            (
                "kubernetes.io/kube-apiserver-client",
                good.clone(),
                u.clone(),
            ),
            (
                KUBELET_CLIENT_SIGNER,
                decode(pem("system:node:a", &["system:masters"], &[]).as_bytes()).unwrap(),
                u.clone(),
            ),
            (
                KUBELET_CLIENT_SIGNER,
                decode(pem("system:node:a", &[NODES_GROUP, "system:masters"], &[]).as_bytes())
                    .unwrap(),
                u.clone(),
            ),
            (
                KUBELET_CLIENT_SIGNER,
                decode(pem("admin", &[NODES_GROUP], &[]).as_bytes()).unwrap(),
                u.clone(),
            ),
            (
                KUBELET_CLIENT_SIGNER,
                decode(pem("system:node:", &[NODES_GROUP], &[]).as_bytes()).unwrap(),
                u.clone(),
            ),
            (
                KUBELET_CLIENT_SIGNER,
                decode(pem("system:node:a", &[NODES_GROUP], &["a"]).as_bytes()).unwrap(),
                u.clone(),
            ),
            (
                KUBELET_CLIENT_SIGNER,
                good.clone(),
                usages(&["digital signature", "client auth", "server auth"]),
            ),
            (
                KUBELET_CLIENT_SIGNER,
                good.clone(),
                usages(&["client auth"]),
            ),
            (
                KUBELET_CLIENT_SIGNER,
                good.clone(),
                usages(&["digital signature"]),
            ),
        ];
        for (signer, req, u) in cases {
            assert!(
                kubelet_client_problem(signer, &req, &u).is_some(),
                "{signer} {req:?} {u:?}"
            );
            assert!(permissions_to_check(signer, &req, &u, "system:node:a").is_empty());
        }
        assert_eq!(
            kubelet_client_problem(KUBELET_CLIENT_SIGNER, &good, &u),
            None
        );
    }
}
