//! Admission webhooks: MutatingWebhookConfiguration and ValidatingWebhookConfiguration,
//! called with an `admission.k8s.io/v1` AdmissionReview, as kube-apiserver's
//! `MutatingAdmissionWebhook` and `ValidatingAdmissionWebhook` plugins do.
//!
//! Mutating webhooks run one after another (configurations by name, then webhooks in
//! order), each seeing the object as the previous ones patched it; those with
//! `reinvocationPolicy: IfNeeded` run once more when a later webhook changed the object.
//! Validating webhooks run concurrently; the first refusal in configuration order wins.
//! `matchPolicy: Equivalent` is treated as `Exact` (skiff serves each resource in one
//! version); `matchConditions` (CEL) decide whether a selected webhook is called.

pub(crate) mod client;
mod config;
pub(super) mod review;
pub(super) mod rules;

use std::sync::Arc;

use futures::future::join_all;
use serde_json::{json, Value};

use super::{Attributes, Operation, Warnings};
use crate::handlers::Api;
use crate::kinds::REGISTRY;
use crate::status::{ApiError, ApiResult};
use config::{Flavor, Hook};
use review::Verdict;

/// Calls the matching mutating webhooks in order and applies their JSON patches.
pub(super) async fn mutate(
    api: &Api,
    attrs: &Attributes<'_>,
    obj: &mut Value,
    warnings: &mut Warnings,
) -> ApiResult<()> {
    if rules::exempt(attrs.def.group, attrs.def.kind) {
        return Ok(());
    }
    let hooks = config::load(api.storage(), api.reflector(), Flavor::Mutating).await?;
    if hooks.is_empty() {
        return Ok(());
    }
    let mut namespace = NamespaceLabels::default();
    // How many patches changed the object so far, and, for each webhook that asked to be
    // reinvoked, how many had when it last ran.
    let mut changes = 0usize;
    let mut reinvoke: Vec<(&Arc<Hook>, usize)> = Vec::new();
    for hook in &hooks {
        if !selects(api, hook, attrs, obj, &mut namespace).await? {
            continue;
        }
        if call_mutating(api, hook, attrs, obj, warnings).await? {
            changes += 1;
        }
        if hook.reinvoke {
            reinvoke.push((hook, changes));
        }
    }
    for (hook, seen) in reinvoke {
        if changes > seen
            && selects(api, hook, attrs, obj, &mut namespace).await?
            && call_mutating(api, hook, attrs, obj, warnings).await?
        {
            changes += 1;
        }
    }
    Ok(())
}

/// Calls the matching validating webhooks, concurrently.
pub(super) async fn validate(
    api: &Api,
    attrs: &Attributes<'_>,
    obj: &Value,
    warnings: &mut Warnings,
) -> ApiResult<()> {
    if rules::exempt(attrs.def.group, attrs.def.kind) {
        return Ok(());
    }
    let hooks = config::load(api.storage(), api.reflector(), Flavor::Validating).await?;
    if hooks.is_empty() {
        return Ok(());
    }
    let mut namespace = NamespaceLabels::default();
    let mut selected = Vec::new();
    for hook in &hooks {
        if selects(api, hook, attrs, obj, &mut namespace).await? {
            selected.push(hook);
        }
    }
    let object = (attrs.operation != Operation::Delete).then_some(obj);
    let verdicts = join_all(selected.iter().map(|hook| call(api, hook, attrs, object))).await;
    let mut refusal = None;
    for (hook, verdict) in selected.iter().zip(verdicts) {
        let err = match verdict {
            Ok(verdict) => {
                warnings.extend(verdict.warnings);
                (!verdict.allowed).then(|| review::denial(&hook.name, verdict.status.as_ref()))
            }
            Err(cause) => failed(hook, &cause),
        };
        if refusal.is_none() {
            refusal = err;
        }
    }
    refusal.map_or(Ok(()), Err)
}

/// Whether `hook` is to be called for this request: its rules, then its selectors. Refuses
/// a dry run the webhook cannot take.
async fn selects(
    api: &Api,
    hook: &Hook,
    attrs: &Attributes<'_>,
    obj: &Value,
    namespace: &mut NamespaceLabels,
) -> ApiResult<bool> {
    let def = attrs.def;
    let request = rules::Request {
        operation: attrs.operation,
        group: def.group,
        version: def.version,
        resource: def.plural,
        subresource: attrs.subresource,
        namespaced: def.namespaced,
    };
    if !hook.rules.iter().any(|rule| rule.matches(&request)) {
        return Ok(false);
    }
    let object_matches = hook.object_selector.is_empty()
        || hook.object_selector.matches(obj)
        || attrs
            .old
            .is_some_and(|old| hook.object_selector.matches(old));
    if !object_matches {
        return Ok(false);
    }
    if !hook.namespace_selector.is_empty() {
        let labels_of = if def.group.is_empty() && def.kind == "Namespace" {
            // A Namespace is selected by its own labels.
            Some(obj)
        } else if def.namespaced {
            Some(namespace.get(api, attrs.namespace).await?)
        } else {
            // Other cluster-scoped objects have no namespace to select by.
            None
        };
        if labels_of.is_some_and(|ns| !hook.namespace_selector.matches(ns)) {
            return Ok(false);
        }
    }
    if !hook.match_conditions.is_empty() {
        // `object` is null for deletions, `oldObject` for creations, as in the request.
        let review = review::request(attrs, "", None);
        let request = &review["request"];
        let object = if attrs.operation == Operation::Delete {
            &Value::Null
        } else {
            obj
        };
        let old = attrs.old.unwrap_or(&Value::Null);
        let variables = [("object", object), ("oldObject", old), ("request", request)];
        for (name, expression) in &hook.match_conditions {
            match crate::expressions::evaluate_bool(expression, &variables) {
                Ok(true) => {}
                Ok(false) => return Ok(false),
                // An error counts as a failed call: refused, or skipped under `Ignore`.
                Err(e) => {
                    return match failed(
                        hook,
                        &format!("failed to evaluate match condition {name:?}: {e}"),
                    ) {
                        Some(err) => Err(err),
                        None => Ok(false),
                    }
                }
            }
        }
    }
    if attrs.dry_run && !hook.dry_run_safe {
        return Err(ApiError::bad_request(format!(
            "admission webhook \"{}\" does not support dry run",
            hook.name
        )));
    }
    Ok(true)
}

/// The request's namespace, read once per request when a selector needs it.
#[derive(Default)]
struct NamespaceLabels {
    namespace: Option<Value>,
}

impl NamespaceLabels {
    async fn get(&mut self, api: &Api, name: &str) -> ApiResult<&Value> {
        let namespace = match self.namespace.take() {
            Some(namespace) => namespace,
            None => {
                let stored = match REGISTRY.by_kind("", "v1", "Namespace") {
                    Some(def) => api.storage().get(def, "", name).await?.map(|(ns, _)| ns),
                    None => None,
                };
                // A namespace that is gone has no labels.
                stored.unwrap_or_else(|| json!({}))
            }
        };
        Ok(self.namespace.insert(namespace))
    }
}

/// Calls one mutating webhook and applies its patch to `obj`; returns whether the object
/// changed.
async fn call_mutating(
    api: &Api,
    hook: &Hook,
    attrs: &Attributes<'_>,
    obj: &mut Value,
    warnings: &mut Warnings,
) -> ApiResult<bool> {
    let verdict = match call(api, hook, attrs, Some(obj)).await {
        Ok(verdict) => verdict,
        Err(cause) => return failed(hook, &cause).map_or(Ok(false), Err),
    };
    warnings.extend(verdict.warnings);
    if !verdict.allowed {
        return Err(review::denial(&hook.name, verdict.status.as_ref()));
    }
    let Some(patch) = verdict.patch else {
        return Ok(false);
    };
    let patch_error = |e: &dyn std::fmt::Display| {
        ApiError::internal(format!(
            "admission webhook \"{}\" returned a patch that cannot be applied: {e}",
            hook.name
        ))
    };
    let mut patched = obj.clone();
    json_patch::patch(&mut patched, &patch).map_err(|e| patch_error(&e))?;
    for field in ["apiVersion", "kind"] {
        if patched.get(field) != obj.get(field) {
            return Err(patch_error(&format!("it changes {field}")));
        }
    }
    // Decode into the kind and back, as Kubernetes decodes a patched object: ill-typed
    // values fail, unknown fields are dropped.
    let patched = (attrs.def.normalize)(patched).map_err(|e| patch_error(&e))?;
    if patched == *obj {
        return Ok(false);
    }
    *obj = patched;
    Ok(true)
}

/// One call: sends the review, reads the verdict. The error is the cause of a failed call
/// (Kubernetes' `failed calling webhook` reasons).
async fn call(
    api: &Api,
    hook: &Hook,
    attrs: &Attributes<'_>,
    object: Option<&Value>,
) -> Result<Verdict, String> {
    let client = hook.client.as_ref().map_err(Clone::clone)?;
    let uid = uuid::Uuid::new_v4().to_string();
    let body = serde_json::to_vec(&review::request(attrs, &uid, object))
        .map_err(|e| format!("encoding the AdmissionReview: {e}"))?;
    let response = client
        .post(api.storage(), body, hook.timeout)
        .await
        .map_err(|e| format!("failed to call webhook: {e}"))?;
    review::response(&response, &uid).map_err(|e| format!("received invalid webhook response: {e}"))
}

/// What a failed call means under the webhook's failure policy: `Fail` refuses the
/// request with an internal error, `Ignore` lets it through.
fn failed(hook: &Hook, cause: &str) -> Option<ApiError> {
    let message = format!("failed calling webhook \"{}\": {cause}", hook.name);
    if hook.ignore_failures {
        tracing::warn!("{message} (failurePolicy Ignore: request admitted)");
        None
    } else {
        Some(ApiError::internal(message))
    }
}
