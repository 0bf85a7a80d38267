//! The CertificateSigningRequest approver (kube-controller-manager's `csrapproving`): a
//! kubelet client request ([`approver`]) whose requester may `create`
//! `certificatesigningrequests/nodeclient` (or `selfnodeclient`, renewing its own node's
//! certificate), as a SubjectAccessReview through the API answers, is approved with
//! reason `AutoApproved`; the API server's signer then issues it. Anything else is left
//! for an administrator (`kubectl certificate approve`).
//!
//! Level-triggered: every pending request in the watch cache is looked at; approved,
//! denied, failed and issued ones are done.

pub mod approver;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::PostParams;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt as _};

/// A failure to approve a request (retried).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The SubjectAccessReview or the approval failed.
    #[error("certificatesigningrequest {name}: {source}")]
    Api {
        /// The request.
        name: String,
        /// The API error.
        source: kube::Error,
    },
}

/// Approves kubelet client requests until the watch ends.
pub async fn run(client: Client) {
    let csrs = Api::<CertificateSigningRequest>::all(client.clone());
    Controller::new(csrs, watcher::Config::default())
        .run(reconcile, error_policy, Arc::new(client))
        .for_each(|_| async {})
        .await;
}

fn error_policy(_: Arc<CertificateSigningRequest>, err: &Error, _: Arc<Client>) -> Action {
    tracing::warn!("{err}");
    Action::requeue(Duration::from_secs(5))
}

/// Whether the request needs no more decisions: approved, denied or failed, or issued.
fn decided(csr: &CertificateSigningRequest) -> bool {
    let status = csr.status.as_ref();
    status.is_some_and(|s| s.certificate.as_ref().is_some_and(|c| !c.0.is_empty()))
        || status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| matches!(c.type_.as_str(), "Approved" | "Denied" | "Failed"))
            })
}

async fn reconcile(
    csr: Arc<CertificateSigningRequest>,
    client: Arc<Client>,
) -> Result<Action, Error> {
    if decided(&csr) {
        return Ok(Action::await_change());
    }
    let spec = &csr.spec;
    let request = match approver::decode(&spec.request.0) {
        Ok(r) => r,
        Err(e) => {
            // A request nobody can sign waits for an administrator to deny it.
            tracing::debug!("certificatesigningrequest {}: {e}", csr.name_any());
            return Ok(Action::await_change());
        }
    };
    let usages = spec.usages.clone().unwrap_or_default();
    let requester = spec.username.clone().unwrap_or_default();
    let api_err = |source| Error::Api {
        name: csr.name_any(),
        source,
    };
    for subresource in
        approver::permissions_to_check(&spec.signer_name, &request, &usages, &requester)
    {
        if !authorized(&client, &csr, subresource)
            .await
            .map_err(api_err)?
        {
            continue;
        }
        approve(&client, &csr, approver::approval_message(subresource))
            .await
            .map_err(api_err)?;
        tracing::info!("approved certificatesigningrequest {}", csr.name_any());
        break;
    }
    Ok(Action::await_change())
}

/// Whether the requester may `create` `certificatesigningrequests/<subresource>`.
async fn authorized(
    client: &Client,
    csr: &CertificateSigningRequest,
    subresource: &str,
) -> Result<bool, kube::Error> {
    let spec = &csr.spec;
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: spec.username.clone(),
            uid: spec.uid.clone(),
            groups: spec.groups.clone(),
            extra: spec.extra.clone(),
            resource_attributes: Some(ResourceAttributes {
                group: Some("certificates.k8s.io".into()),
                resource: Some("certificatesigningrequests".into()),
                subresource: Some(subresource.into()),
                verb: Some("create".into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let answer = Api::<SubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}

/// Adds the `Approved` condition through the `approval` subresource.
async fn approve(
    client: &Client,
    csr: &CertificateSigningRequest,
    message: &str,
) -> Result<(), kube::Error> {
    let mut approved = csr.clone();
    approved.metadata.managed_fields = None;
    let now = Time(jiff::Timestamp::now());
    approved
        .status
        .get_or_insert_with(Default::default)
        .conditions
        .get_or_insert_with(Vec::new)
        .push(CertificateSigningRequestCondition {
            type_: "Approved".into(),
            status: "True".into(),
            reason: Some("AutoApproved".into()),
            message: Some(message.into()),
            last_update_time: Some(now.clone()),
            last_transition_time: Some(now),
        });
    Api::<CertificateSigningRequest>::all(client.clone())
        .replace_subresource(
            "approval",
            &csr.name_any(),
            &PostParams::default(),
            &approved,
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::certificates::v1::CertificateSigningRequestStatus;
    use k8s_openapi::ByteString;

    fn with_status(status: CertificateSigningRequestStatus) -> CertificateSigningRequest {
        CertificateSigningRequest {
            status: Some(status),
            ..Default::default()
        }
    }

    fn condition(type_: &str) -> CertificateSigningRequestCondition {
        CertificateSigningRequestCondition {
            type_: type_.into(),
            status: "True".into(),
            ..Default::default()
        }
    }

    #[test]
    fn only_undecided_requests_are_looked_at() {
        assert!(!decided(&CertificateSigningRequest::default()));
        for t in ["Approved", "Denied", "Failed"] {
            assert!(decided(&with_status(CertificateSigningRequestStatus {
                conditions: Some(vec![condition(t)]),
                ..Default::default()
            })));
        }
        assert!(decided(&with_status(CertificateSigningRequestStatus {
            certificate: Some(ByteString(b"PEM".to_vec())),
            ..Default::default()
        })));
    }
}
