//! Pod Security Admission: the privileged, baseline and restricted Pod Security Standards,
//! chosen per namespace by its `pod-security.kubernetes.io/*` labels.

use serde_json::Value;

use super::{Attributes, Warnings};
use crate::handlers::Api;
use crate::status::ApiResult;

/// A Pod Security Standards level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Unrestricted.
    Privileged,
    /// Prevents known privilege escalations.
    Baseline,
    /// Hardened best practice.
    Restricted,
}

/// Refuses (enforce) or warns about (warn) pods violating their namespace's level.
pub(super) async fn validate(
    _api: &Api,
    _attrs: &Attributes<'_>,
    _obj: &Value,
    _warnings: &mut Warnings,
) -> ApiResult<()> {
    Ok(())
}
