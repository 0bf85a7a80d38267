//! Subresources that are not the object itself: `scale` (autoscaling/v1 Scale over
//! `spec.replicas`), `pods/eviction` (policy/v1 Eviction, honouring PodDisruptionBudgets)
//! and `serviceaccounts/token` (TokenRequest).

use hyper::StatusCode;
use serde_json::{json, Value};

use super::objects::Ctx;
use super::Reply;
use crate::kinds::{str_at, REGISTRY};
use crate::patch::{self, PatchType, PATCH_MEDIA_TYPES};
use crate::selector::LabelSelector;
use crate::serviceaccount::ISSUER;
use crate::status::{ApiError, ApiResult};

/// The Scale of an object with replicas.
fn scale_of(ctx: &Ctx<'_>, obj: &Value) -> Value {
    let selector = match obj.pointer("/spec/selector") {
        // ReplicationControllers select with a plain map.
        Some(Value::Object(m))
            if !m.contains_key("matchLabels") && !m.contains_key("matchExpressions") =>
        {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(",")
        }
        other => crate::kinds::selector_string(other),
    };
    let mut metadata = json!({
        "name": str_at(obj, "/metadata/name"),
        "uid": str_at(obj, "/metadata/uid"),
        "resourceVersion": str_at(obj, "/metadata/resourceVersion"),
        "creationTimestamp": obj.pointer("/metadata/creationTimestamp").cloned().unwrap_or(Value::Null),
    });
    if ctx.def.namespaced {
        metadata["namespace"] = json!(str_at(obj, "/metadata/namespace"));
    }
    let mut status =
        json!({"replicas": obj.pointer("/status/replicas").and_then(Value::as_i64).unwrap_or(0)});
    if !selector.is_empty() {
        status["selector"] = json!(selector);
    }
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": metadata,
        "spec": {"replicas": obj.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(0)},
        "status": status,
    })
}

/// GET, PUT and PATCH of `<resource>/<name>/scale`.
pub(super) async fn scale(
    ctx: &Ctx<'_>,
    method: &str,
    body: &[u8],
    content_type: &str,
) -> ApiResult<Reply> {
    for _ in 0..8 {
        let (obj, revision) = ctx.load(&ctx.info.name).await?;
        let current = scale_of(ctx, &obj);
        let wanted: Value = match method {
            "GET" => return Ok(Reply::ok(current)),
            "PUT" => serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("couldn't decode Scale: {e}")))?,
            "PATCH" => {
                let kind = PatchType::from_content_type(content_type).ok_or_else(|| {
                    ApiError::unsupported_media_type(content_type, PATCH_MEDIA_TYPES)
                })?;
                patch::apply(
                    kind,
                    &current,
                    body,
                    ctx.api.schemas(),
                    "io.k8s.api.autoscaling.v1.Scale",
                )
                .map_err(|e| ApiError::bad_request(e.to_string()))?
            }
            _ => return Err(ApiError::method_not_supported()),
        };
        let precondition = str_at(&wanted, "/metadata/resourceVersion");
        if !precondition.is_empty() && precondition != revision.to_string() {
            return Err(ApiError::stale(ctx.def, &ctx.info.name));
        }
        let replicas = wanted
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        if replicas < 0 {
            return Err(ApiError::invalid(
                "Scale",
                "autoscaling",
                &ctx.info.name,
                &[crate::validation::FieldError::invalid(
                    "spec.replicas",
                    json!(replicas),
                    "must be greater than or equal to 0",
                )],
            ));
        }
        let mut updated = obj.clone();
        updated["spec"]["replicas"] = json!(replicas);
        match ctx.write_spec(obj, revision, updated).await {
            Ok(stored) => return Ok(Reply::ok(scale_of(ctx, &stored))),
            Err(err) if err.reason == "Conflict" && precondition.is_empty() => continue,
            Err(err) => return Err(err),
        }
    }
    Err(ApiError::stale(ctx.def, &ctx.info.name))
}

/// POST `pods/<name>/eviction`: deletes the pod unless a PodDisruptionBudget forbids it.
pub(super) async fn evict(ctx: &Ctx<'_>, body: &[u8]) -> ApiResult<Reply> {
    let eviction: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("couldn't decode Eviction: {e}")))?;
    let name = str_at(&eviction, "/metadata/name");
    if !name.is_empty() && name != ctx.info.name {
        return Err(ApiError::bad_request(
            "name in URL does not match name in Eviction object",
        ));
    }
    let (pod, _) = ctx.load(&ctx.info.name).await?;
    let terminal = matches!(str_at(&pod, "/status/phase"), "Succeeded" | "Failed");
    if !terminal && pod.pointer("/metadata/deletionTimestamp").is_none() {
        let pdbs = REGISTRY
            .by_kind("policy", "v1", "PodDisruptionBudget")
            .ok_or_else(|| ApiError::internal("poddisruptionbudgets are not served"))?;
        let prefix = crate::storage::Storage::prefix(pdbs, Some(&ctx.info.namespace));
        let page = ctx.api.storage().list(&prefix, None, None, None).await?;
        for (_, pdb) in page.items {
            let Some(selector) = pdb.pointer("/spec/selector") else {
                continue;
            };
            let Ok(selector) = LabelSelector::parse(&crate::kinds::selector_string(Some(selector)))
            else {
                continue;
            };
            if !selector.matches(&pod) {
                continue;
            }
            if pdb
                .pointer("/status/disruptionsAllowed")
                .and_then(Value::as_i64)
                .unwrap_or(0)
                <= 0
            {
                return Err(ApiError::new(
                    429,
                    "TooManyRequests",
                    "Cannot evict pod as it would violate the pod's disruption budget.",
                )
                .with_details(json!({"causes": [{
                    "reason": "DisruptionBudget",
                    "message": format!(
                        "The disruption budget {} needs {} healthy pods and has {} currently",
                        str_at(&pdb, "/metadata/name"),
                        pdb.pointer("/status/desiredHealthy").and_then(Value::as_i64).unwrap_or(0),
                        pdb.pointer("/status/currentHealthy").and_then(Value::as_i64).unwrap_or(0),
                    ),
                }]})));
            }
        }
    }
    let options = eviction
        .get("deleteOptions")
        .cloned()
        .unwrap_or_else(|| json!({}));
    ctx.delete_one(&ctx.info.name, &options).await?;
    Ok(Reply::json(
        StatusCode::CREATED,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}),
    ))
}

/// POST `serviceaccounts/<name>/token`: a TokenRequest answered with a signed token.
pub(super) async fn token_request(ctx: &Ctx<'_>, body: &[u8]) -> ApiResult<Reply> {
    let mut request: Value = if body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("couldn't decode TokenRequest: {e}")))?
    };
    let (sa, _) = ctx.load(&ctx.info.name).await?;
    let spec = crate::kinds::object_mut(&mut request, "spec");
    let audiences: Vec<String> = spec
        .get("audiences")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .filter(|a: &Vec<String>| !a.is_empty())
        .unwrap_or_else(|| vec![ISSUER.to_owned()]);
    let expiration = spec
        .get("expirationSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(3600);
    if expiration < 600 {
        return Err(ApiError::invalid(
            "TokenRequest",
            "authentication.k8s.io",
            &ctx.info.name,
            &[crate::validation::FieldError::invalid(
                "spec.expirationSeconds",
                json!(expiration),
                "may not specify a duration less than 10 minutes",
            )],
        ));
    }
    spec.insert("audiences".into(), json!(audiences));
    spec.insert("expirationSeconds".into(), json!(expiration));
    let bound = spec.get("boundObjectRef").filter(|b| !b.is_null()).cloned();
    let (token, expires) = ctx
        .api
        .tokens
        .issue(&sa, &audiences, expiration, bound.as_ref())
        .map_err(ApiError::internal)?;
    let meta_ns = str_at(&sa, "/metadata/namespace").to_owned();
    request["kind"] = json!("TokenRequest");
    request["apiVersion"] = json!("authentication.k8s.io/v1");
    request["metadata"] =
        json!({"name": ctx.info.name, "namespace": meta_ns, "creationTimestamp": null});
    request["status"] = json!({
        "token": token,
        "expirationTimestamp": expires.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
    });
    Ok(Reply::json(StatusCode::CREATED, request))
}

/// A subresource as discovery lists it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Subresource {
    /// The resource it belongs to (core group).
    pub resource: &'static str,
    /// Its name.
    pub name: &'static str,
    /// Group of the kind it accepts and answers.
    pub group: &'static str,
    /// Version of that kind.
    pub version: &'static str,
    /// The kind.
    pub kind: &'static str,
    /// Its verbs.
    pub verbs: &'static [&'static str],
}

/// The subresources of core resources besides status and scale.
pub(super) const EXTRA_SUBRESOURCES: &[Subresource] = &[
    Subresource {
        resource: "pods",
        name: "eviction",
        group: "policy",
        version: "v1",
        kind: "Eviction",
        verbs: &["create"],
    },
    Subresource {
        resource: "serviceaccounts",
        name: "token",
        group: "authentication.k8s.io",
        version: "v1",
        kind: "TokenRequest",
        verbs: &["create"],
    },
];

/// Whether `resource` serves the extra subresource `sub`.
pub(super) fn serves(group: &str, resource: &str, sub: &str) -> bool {
    group.is_empty()
        && EXTRA_SUBRESOURCES
            .iter()
            .any(|s| s.resource == resource && s.name == sub)
}
