//! Admission webhooks: MutatingWebhookConfiguration and ValidatingWebhookConfiguration,
//! called with an `admission.k8s.io/v1` AdmissionReview.

use serde_json::Value;

use super::{Attributes, Warnings};
use crate::handlers::Api;
use crate::status::ApiResult;

/// Calls the matching mutating webhooks in order and applies their JSON patches.
pub(super) async fn mutate(
    _api: &Api,
    _attrs: &Attributes<'_>,
    _obj: &mut Value,
    _warnings: &mut Warnings,
) -> ApiResult<()> {
    Ok(())
}

/// Calls the matching validating webhooks.
pub(super) async fn validate(
    _api: &Api,
    _attrs: &Attributes<'_>,
    _obj: &Value,
    _warnings: &mut Warnings,
) -> ApiResult<()> {
    Ok(())
}
