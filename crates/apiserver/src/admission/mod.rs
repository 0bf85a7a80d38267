//! The admission chain: what kube-apiserver's admission plugins do between decoding a write
//! and storing it.
//!
//! Mutating plugins run first and may change the object (ServiceAccount, Priority,
//! RuntimeClass, DefaultStorageClass, DefaultIngressClass, LimitRanger's defaults, mutating
//! webhooks); the object is then defaulted and validated by its strategy; validating plugins
//! run last and may only refuse (LimitRanger's bounds, Pod Security,
//! ValidatingAdmissionPolicy, validating webhooks, ResourceQuota). NamespaceLifecycle lives in the generic handlers,
//! which already load the namespace.

mod certificates;
mod default_ingress_class;
mod default_storage_class;
mod limitrange;
pub mod node_restriction;
mod podsecurity;
mod priority;
mod quota;
mod runtime_class;
pub mod storage_protection;
mod validating_policy;
pub(crate) mod webhook;

use serde_json::Value;

use crate::authn::UserInfo;
use crate::handlers::Api;
use crate::registry::ResourceDef;
use crate::status::ApiResult;

pub use podsecurity::Level;
pub use quota::run_controller as run_quota_controller;

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
        crate::serviceaccount::admit_pod(api.storage(), api.reflector(), obj).await?;
    }
    priority::mutate(api, attrs, obj).await?;
    runtime_class::mutate(api, attrs, obj).await?;
    default_storage_class::mutate(api, attrs, obj).await?;
    storage_protection::mutate(attrs, obj);
    default_ingress_class::mutate(api, attrs, obj).await?;
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
    node_restriction::validate(attrs, obj)?;
    limitrange::validate(api, attrs, obj).await?;
    certificates::validate(api, attrs, obj)?;
    podsecurity::validate(api, attrs, obj, warnings).await?;
    validating_policy::validate(api, attrs, obj, warnings).await?;
    webhook::validate(api, attrs, obj, warnings).await?;
    // Quota last: it charges usage, so only writes every other plugin accepted count.
    quota::admit(api, attrs, obj).await?;
    Ok(())
}

/// The 403 a plugin refuses a write with, as `admission.NewForbidden`:
/// `pods "p" is forbidden: <why>`.
pub(crate) fn forbidden(attrs: &Attributes<'_>, obj: &Value, why: &str) -> crate::status::ApiError {
    let meta = |field: &str| {
        obj.pointer(&format!("/metadata/{field}"))
            .and_then(Value::as_str)
            .unwrap_or("")
    };
    let name = [attrs.name, meta("name"), meta("generateName")]
        .into_iter()
        .find(|n| !n.is_empty())
        .unwrap_or("Unknown");
    crate::status::ApiError::forbidden(format!(
        "{} \"{name}\" is forbidden: {why}",
        attrs.def.qualified()
    ))
    .with_details(
        serde_json::json!({"name": name, "group": attrs.def.group, "kind": attrs.def.plural}),
    )
}

/// Every stored object of `def` in `namespace` (in all namespaces when "").
pub(crate) async fn list_all(
    storage: &crate::storage::Storage,
    def: &ResourceDef,
    namespace: &str,
) -> ApiResult<Vec<Value>> {
    let namespace = Some(namespace).filter(|ns| !ns.is_empty());
    let prefix = crate::storage::Storage::prefix(def, namespace);
    let mut items = Vec::new();
    let mut after: Option<String> = None;
    let mut revision = None;
    loop {
        let page = storage
            .list(&prefix, revision, Some(500), after.as_deref())
            .await?;
        revision = Some(page.revision);
        after = page.items.last().map(|(key, _)| key.clone());
        items.extend(page.items.into_iter().map(|(_, mut obj)| {
            def.to_served(&mut obj);
            obj
        }));
        if !page.more || after.is_none() {
            return Ok(items);
        }
    }
}
