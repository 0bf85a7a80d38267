//! The admission plugins of CertificateSigningRequests, as kube-apiserver's:
//! - CertificateApproval: approving or denying through `/approval` needs the `approve`
//!   verb on the signer (`certificates.k8s.io/signers`, named `<signerName>` or
//!   `<domain>/*`);
//! - CertificateSigning: setting `status.certificate` needs the `sign` verb on the signer;
//! - CertificateSubjectRestriction: no `kubernetes.io/kube-apiserver-client` request for
//!   the `system:masters` group.

use serde_json::Value;

use super::{Attributes, Operation};
use crate::authz::{Attributes as AuthzAttributes, Decision, ResourceAttributes};
use crate::handlers::Api;
use crate::kinds::certificates::{parse_request, KUBE_APISERVER_CLIENT};
use crate::kinds::str_at;
use crate::status::ApiResult;

const GROUP: &str = "certificates.k8s.io";

/// Refuses the writes above.
pub(super) fn validate(api: &Api, attrs: &Attributes<'_>, obj: &Value) -> ApiResult<()> {
    if attrs.def.group != GROUP || attrs.def.kind != "CertificateSigningRequest" {
        return Ok(());
    }
    let signer = str_at(obj, "/spec/signerName");
    match (attrs.operation, attrs.subresource) {
        (Operation::Create, "") if signer == KUBE_APISERVER_CLIENT => {
            let masters = parse_request(obj)
                .map(|s| s.organizations.iter().any(|o| o == "system:masters"))
                .unwrap_or(false);
            if masters {
                return Err(super::forbidden(
                    attrs,
                    obj,
                    &format!("use of {KUBE_APISERVER_CLIENT} signer with system:masters group is not allowed"),
                ));
            }
        }
        (Operation::Update, "approval") if !may(api, attrs, "approve", signer) => {
            return Err(super::forbidden(
                attrs,
                obj,
                &format!("user not permitted to approve requests with signerName \"{signer}\""),
            ));
        }
        (Operation::Update, "status") => {
            let old = attrs
                .old
                .map(|o| str_at(o, "/status/certificate"))
                .unwrap_or("");
            let new = str_at(obj, "/status/certificate");
            if new != old && !may(api, attrs, "sign", signer) {
                return Err(super::forbidden(
                    attrs,
                    obj,
                    &format!("user not permitted to sign requests with signerName \"{signer}\""),
                ));
            }
        }
        _ => {}
    }
    Ok(())
}

/// Whether the writer may `verb` the signer, by its name or its domain's wildcard.
fn may(api: &Api, attrs: &Attributes<'_>, verb: &str, signer: &str) -> bool {
    let wildcard = signer
        .split_once('/')
        .map(|(domain, _)| format!("{domain}/*"))
        .unwrap_or_default();
    [signer, wildcard.as_str()].iter().any(|name| {
        let attributes = AuthzAttributes {
            user: attrs.user,
            verb,
            resource: Some(ResourceAttributes {
                group: GROUP,
                resource: "signers",
                subresource: "",
                namespace: "",
                name,
            }),
            path: "",
        };
        api.authorize(&attributes) == Decision::Allow
    })
}
