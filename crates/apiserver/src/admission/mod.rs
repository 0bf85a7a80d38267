//! The admission chain: what kube-apiserver's admission plugins do between decoding a write
//! and storing it.
//!
//! Mutating plugins run first and may change the object (ServiceAccount, LimitRanger's
//! defaults, mutating webhooks); the object is then defaulted and validated by its strategy;
//! validating plugins run last and may only refuse (LimitRanger's bounds, Pod Security,
//! ResourceQuota, validating webhooks). NamespaceLifecycle lives in the generic handlers,
//! which already load the namespace.

mod limitrange;
mod podsecurity;
mod quota;
mod webhook;

use serde_json::Value;

use crate::authn::UserInfo;
use crate::handlers::Api;
use crate::registry::ResourceDef;
use crate::status::ApiResult;

pub use podsecurity::Level;

/// The operation being admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// A new object.
    Create,
    /// A changed object (update, patch, apply, or a status/scale write).
    Update,
    /// A deletion; `old` is the object being deleted.
    Delete,
}

impl Operation {
    /// The name admission reviews and webhook rules use (`CREATE`, `UPDATE`, `DELETE`).
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
        }
    }
}

/// What an admission plugin knows of a request.
#[derive(Debug)]
pub struct Attributes<'a> {
    /// The operation.
    pub operation: Operation,
    /// The resource written.
    pub def: &'static ResourceDef,
    /// The namespace ("" for cluster-scoped resources).
    pub namespace: &'a str,
    /// The object's name.
    pub name: &'a str,
    /// The subresource ("" for the main resource).
    pub subresource: &'a str,
    /// Who writes.
    pub user: &'a UserInfo,
    /// Whether the write is a dry run (plugins must not have side effects then).
    pub dry_run: bool,
    /// The stored object, for updates and deletions.
    pub old: Option<&'a Value>,
}

/// Warnings plugins attach to a response (Pod Security's `warn` mode, webhooks' warnings).
pub type Warnings = Vec<String>;

/// Runs the mutating plugins over `obj` (create and update).
pub(crate) async fn mutate(
    api: &Api,
    attrs: &Attributes<'_>,
    obj: &mut Value,
    warnings: &mut Warnings,
) -> ApiResult<()> {
    if attrs.operation == Operation::Create
        && attrs.subresource.is_empty()
        && attrs.def.group.is_empty()
        && attrs.def.kind == "Pod"
    {
        crate::serviceaccount::admit_pod(api.storage(), obj).await?;
    }
    limitrange::mutate(api, attrs, obj).await?;
    webhook::mutate(api, attrs, obj, warnings).await?;
    Ok(())
}

/// Runs the validating plugins over `obj` (for deletions, the object being deleted).
pub(crate) async fn validate(
    api: &Api,
    attrs: &Attributes<'_>,
    obj: &Value,
    warnings: &mut Warnings,
) -> ApiResult<()> {
    limitrange::validate(api, attrs, obj).await?;
    podsecurity::validate(api, attrs, obj, warnings).await?;
    webhook::validate(api, attrs, obj, warnings).await?;
    // Quota last: it charges usage, so only writes every other plugin accepted count.
    quota::admit(api, attrs, obj).await?;
    Ok(())
}
