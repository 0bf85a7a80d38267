//! Subresources that are not the object itself: `scale` (autoscaling/v1 Scale over
//! `spec.replicas`), `pods/binding` (the scheduler's Binding of a pod to a node),
//! `pods/eviction` (policy/v1 Eviction, honouring PodDisruptionBudgets),
//! `serviceaccounts/token` (TokenRequest) and `namespaces/finalize` (the namespace
//! controller's removal of its `kubernetes` finalizer).

use hyper::StatusCode;
use serde_json::{json, Value};

use super::objects::{Ctx, MAX_RETRIES};
use super::Reply;
use crate::crd::ScalePaths;
use crate::kinds::{str_at, REGISTRY};
use crate::patch::{self, PatchType, PATCH_MEDIA_TYPES};
use crate::selector::LabelSelector;
use crate::serviceaccount::ISSUER;
use crate::status::{ApiError, ApiResult};
use crate::validation::FieldError;

/// Where the scale subresource of `ctx`'s resource reads and writes: a custom resource's
/// declared paths, else `.spec.replicas`, `.status.replicas` and `.spec.selector`.
fn scale_paths(ctx: &Ctx<'_>) -> Option<&'static ScalePaths> {
    ctx.def.custom.and_then(|c| c.scale.as_ref())
}

/// The JSON pointer of a simple `.a.b` path.
fn pointer_of(path: &str) -> String {
    path.replace('.', "/")
}

/// The Scale of an object with replicas.
fn scale_of(ctx: &Ctx<'_>, obj: &Value) -> Value {
    let (spec_replicas, status_replicas) = match scale_paths(ctx) {
        Some(paths) => (
            pointer_of(&paths.spec_replicas),
            pointer_of(&paths.status_replicas),
        ),
        None => ("/spec/replicas".to_owned(), "/status/replicas".to_owned()),
    };
    let selector = match scale_paths(ctx) {
        Some(paths) => paths
            .label_selector
            .as_deref()
            .map(|p| str_at(obj, &pointer_of(p)).to_owned())
            .unwrap_or_default(),
        None => builtin_selector(obj),
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
        json!({"replicas": obj.pointer(&status_replicas).and_then(Value::as_i64).unwrap_or(0)});
    if !selector.is_empty() {
        status["selector"] = json!(selector);
    }
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": metadata,
        "spec": {"replicas": obj.pointer(&spec_replicas).and_then(Value::as_i64).unwrap_or(0)},
        "status": status,
    })
}

/// The label selector of a built-in workload as a string.
fn builtin_selector(obj: &Value) -> String {
    match obj.pointer("/spec/selector") {
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
    }
}

/// GET, PUT and PATCH of `<resource>/<name>/scale`.
pub(super) async fn scale(
    ctx: &Ctx<'_>,
    method: &str,
    body: &[u8],
    content_type: &str,
) -> ApiResult<Reply> {
    for _ in 0..MAX_RETRIES {
        let (obj, revision) = ctx.load_for_write(&ctx.info.name).await?;
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
                    &ctx.api.schemas(),
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
        match scale_paths(ctx) {
            Some(paths) => set_at(&mut updated, &paths.spec_replicas, json!(replicas)),
            None => updated["spec"]["replicas"] = json!(replicas),
        }
        match ctx.write_spec(obj, revision, updated).await {
            Ok(stored) => return Ok(Reply::ok(scale_of(ctx, &stored))),
            Err(err) if err.reason == "Conflict" && precondition.is_empty() => continue,
            Err(err) => return Err(err),
        }
    }
    Err(ApiError::stale(ctx.def, &ctx.info.name))
}

/// Sets the value at a simple `.a.b` path, creating the objects on the way.
fn set_at(obj: &mut Value, path: &str, value: Value) {
    let mut current = obj;
    let keys: Vec<&str> = path.split('.').filter(|k| !k.is_empty()).collect();
    let Some((last, parents)) = keys.split_last() else {
        return;
    };
    for key in parents {
        if !current.is_object() {
            *current = json!({});
        }
        current = current
            .as_object_mut()
            .expect("just made an object")
            .entry(*key)
            .or_insert_with(|| json!({}));
    }
    if !current.is_object() {
        *current = json!({});
    }
    current[*last] = value;
}

/// POST `pods/<name>/binding`: assigns a pending pod to a node, setting `spec.nodeName`
/// and the `PodScheduled=True` condition in one write (Kubernetes' `BindingREST`).
pub(super) async fn bind(ctx: &Ctx<'_>, body: &[u8]) -> ApiResult<Reply> {
    let binding: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("couldn't decode Binding: {e}")))?;
    let name = &ctx.info.name;
    let given = str_at(&binding, "/metadata/name");
    if !given.is_empty() && given != name {
        return Err(ApiError::bad_request(
            "name in URL does not match name in Binding object",
        ));
    }
    let namespace = str_at(&binding, "/metadata/namespace");
    if !namespace.is_empty() && namespace != ctx.info.namespace {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    // ValidatePodBinding's errors reach the client as a plain error: 500, no reason.
    let mut errs = Vec::new();
    let kind = str_at(&binding, "/target/kind");
    if !kind.is_empty() && kind != "Node" {
        errs.push(FieldError::not_supported(
            "target.kind",
            json!(kind),
            &["Node", "<empty>"],
        ));
    }
    let node = str_at(&binding, "/target/name");
    if node.is_empty() {
        errs.push(FieldError::required("target.name", ""));
    }
    if !errs.is_empty() {
        let all: Vec<String> = errs.iter().map(ToString::to_string).collect();
        let message = match all.as_slice() {
            [one] => one.clone(),
            many => format!("[{}]", many.join(", ")),
        };
        return Err(ApiError::new(500, "", message));
    }
    let uid = str_at(&binding, "/metadata/uid");
    let resource_version = str_at(&binding, "/metadata/resourceVersion");
    let annotations = binding
        .pointer("/metadata/annotations")
        .and_then(Value::as_object);
    let dry_run = ctx.query.get("dryRun") == Some("All");
    // Failures of the update itself are conflicts on pods/binding.
    let refused = |why: String| {
        ApiError::new(
            409,
            "Conflict",
            format!("Operation cannot be fulfilled on pods/binding \"{name}\": {why}"),
        )
        .with_details(json!({"name": name, "kind": "pods/binding"}))
    };
    for _ in 0..MAX_RETRIES {
        let (pod, revision) = ctx.load_for_write(name).await?;
        let actual_uid = str_at(&pod, "/metadata/uid");
        if !uid.is_empty() && uid != actual_uid {
            return Err(ApiError::conflict(
                ctx.def,
                name,
                &format!(
                "Precondition failed: UID in precondition: {uid}, UID in object meta: {actual_uid}"
            ),
            ));
        }
        if !resource_version.is_empty() && resource_version != revision.to_string() {
            return Err(ApiError::conflict(ctx.def, name, &format!(
                "Precondition failed: ResourceVersion in precondition: {resource_version}, ResourceVersion in object meta: {revision}"
            )));
        }
        if pod.pointer("/metadata/deletionTimestamp").is_some() {
            return Err(refused(format!(
                "pod {name} is being deleted, cannot be assigned to a host"
            )));
        }
        let assigned = str_at(&pod, "/spec/nodeName");
        if !assigned.is_empty() {
            return Err(refused(format!(
                "pod {name} is already assigned to node \"{assigned}\""
            )));
        }
        if !crate::kinds::array_at(&pod, "/spec/schedulingGates").is_empty() {
            return Err(refused(format!(
                "pod {name} has non-empty .spec.schedulingGates"
            )));
        }
        let mut bound = pod.clone();
        bound["spec"]["nodeName"] = json!(node);
        if let Some(annotations) = annotations {
            let own = crate::kinds::object_mut(&mut bound["metadata"], "annotations");
            for (k, v) in annotations {
                own.insert(k.clone(), v.clone());
            }
        }
        set_pod_scheduled(&mut bound);
        if dry_run {
            break;
        }
        match ctx
            .api
            .storage()
            .update(ctx.def, &ctx.info.namespace, name, bound.clone(), revision)
            .await
        {
            Ok(_) => break,
            Err(err) if err.reason == "Conflict" && resource_version.is_empty() => continue,
            Err(err) => return Err(err),
        }
    }
    Ok(Reply::json(
        StatusCode::CREATED,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    ))
}

/// Sets the pod's `PodScheduled` condition to True, keeping its transition time when it
/// already was (podutil's `UpdatePodCondition`).
fn set_pod_scheduled(pod: &mut Value) {
    let status = crate::kinds::object_mut(pod, "status");
    let conditions = status.entry("conditions").or_insert_with(|| json!([]));
    if !conditions.is_array() {
        *conditions = json!([]);
    }
    let Some(conditions) = conditions.as_array_mut() else {
        return;
    };
    let existing = conditions
        .iter()
        .position(|c| c.get("type").and_then(Value::as_str) == Some("PodScheduled"));
    let mut since = json!(super::now_rfc3339());
    if let Some(i) = existing {
        if conditions[i].get("status").and_then(Value::as_str) == Some("True") {
            since = conditions[i]
                .get("lastTransitionTime")
                .cloned()
                .unwrap_or(since);
        }
    }
    let condition = json!({
        "type": "PodScheduled",
        "status": "True",
        "lastProbeTime": null,
        "lastTransitionTime": since,
    });
    match existing {
        Some(i) => conditions[i] = condition,
        None => conditions.push(condition),
    }
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
        let matching: Vec<Value> = page
            .items
            .into_iter()
            .map(|(_, pdb)| pdb)
            .filter(|pdb| {
                pdb.pointer("/spec/selector")
                    .and_then(|s| {
                        LabelSelector::parse(&crate::kinds::selector_string(Some(s))).ok()
                    })
                    .is_some_and(|selector| selector.matches(&pod))
            })
            .collect();
        if matching.len() > 1 {
            return Err(ApiError::internal(
                "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
            ));
        }
        if let Some(mut pdb) = matching.into_iter().next() {
            let refuse = |pdb: &Value| {
                ApiError::new(
                    429,
                    "TooManyRequests",
                    "Cannot evict pod as it would violate the pod's disruption budget.",
                )
                .with_details(json!({"causes": [{
                    "reason": "DisruptionBudget",
                    "message": format!(
                        "The disruption budget {} needs {} healthy pods and has {} currently",
                        str_at(pdb, "/metadata/name"),
                        pdb.pointer("/status/desiredHealthy").and_then(Value::as_i64).unwrap_or(0),
                        pdb.pointer("/status/currentHealthy").and_then(Value::as_i64).unwrap_or(0),
                    ),
                }]}))
            };
            let allowed = pdb
                .pointer("/status/disruptionsAllowed")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            if allowed <= 0 {
                return Err(refuse(&pdb));
            }
            // Spend one disruption and record the pod, in one compare-and-swap, so that
            // concurrent evictions (`kubectl drain`) cannot overspend the budget; the
            // disruption controller counts the pod as gone until it is.
            let revision: i64 = str_at(&pdb, "/metadata/resourceVersion")
                .parse()
                .unwrap_or(0);
            let name = str_at(&pdb, "/metadata/name").to_owned();
            let status = crate::kinds::object_mut(&mut pdb, "status");
            status.insert("disruptionsAllowed".into(), json!(allowed - 1));
            let disrupted = status.entry("disruptedPods").or_insert_with(|| json!({}));
            if let Some(map) = disrupted.as_object_mut() {
                map.insert(ctx.info.name.clone(), json!(super::now_rfc3339()));
            }
            match ctx
                .api
                .storage()
                .update(pdbs, &ctx.info.namespace, &name, pdb.clone(), revision)
                .await
            {
                Ok(_) => {}
                Err(e) if e.code == 409 => {
                    return Err(ApiError::new(
                        429,
                        "TooManyRequests",
                        "the disruption budget changed during the eviction; please try again",
                    ))
                }
                Err(e) => return Err(e),
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

/// Finalizers a namespace may carry without a domain: `kubernetes` (the namespace
/// controller's) and the garbage collector's (`standardFinalizers`).
const STANDARD_FINALIZERS: &[&str] = &["kubernetes", "orphan", "foregroundDeletion"];

/// PUT `namespaces/<name>/finalize`: replaces `spec.finalizers` and nothing else, as the
/// namespace registry's FinalizeREST does; a namespace being deleted whose finalizers are
/// all gone is removed (`ShouldDeleteNamespaceDuringUpdate`).
pub(super) async fn finalize(ctx: &Ctx<'_>, body: &[u8]) -> ApiResult<Reply> {
    let requested: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("couldn't decode Namespace: {e}")))?;
    let name = str_at(&requested, "/metadata/name");
    if name != ctx.info.name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({name}) does not match the name on the URL ({})",
            ctx.info.name
        )));
    }
    let finalizers = match requested.pointer("/spec/finalizers") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(list)) => list.clone(),
        Some(_) => return Err(ApiError::bad_request("spec.finalizers must be a list")),
    };
    let mut errs = Vec::new();
    for (i, finalizer) in finalizers.iter().enumerate() {
        let field = format!("spec.finalizers[{i}]");
        let f = finalizer.as_str().unwrap_or("");
        errs.extend(crate::validation::errors_for(
            &field,
            f,
            crate::validation::qualified_name(f),
        ));
        if !f.contains('/') && !STANDARD_FINALIZERS.contains(&f) {
            errs.push(FieldError::invalid(
                field,
                json!(f),
                "name is neither a standard finalizer name nor is it fully qualified",
            ));
        }
    }
    if !errs.is_empty() {
        return Err(ApiError::invalid("Namespace", "", &ctx.info.name, &errs));
    }
    let precondition = str_at(&requested, "/metadata/resourceVersion").to_owned();
    for _ in 0..MAX_RETRIES {
        let (old, revision) = ctx.load_for_write(&ctx.info.name).await?;
        if !precondition.is_empty() && precondition != revision.to_string() {
            return Err(ApiError::stale(ctx.def, &ctx.info.name));
        }
        let mut new = old.clone();
        crate::kinds::object_mut(&mut new, "spec").insert("finalizers".into(), json!(finalizers));
        match ctx.write_spec(old, revision, new).await {
            // Changed meanwhile: without a precondition, finalize the newer version.
            Err(err) if err.code == 409 && err.reason == "Conflict" && precondition.is_empty() => {}
            result => return result.map(Reply::ok),
        }
    }
    Err(ApiError::stale(ctx.def, &ctx.info.name))
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

/// The subresources of core resources besides status and scale, as discovery lists them.
pub(super) const EXTRA_SUBRESOURCES: &[Subresource] = &[
    Subresource {
        resource: "pods",
        name: "binding",
        group: "",
        version: "v1",
        kind: "Binding",
        verbs: &["create"],
    },
    // Only spec.ephemeralContainers changes through it (`kubectl debug`).
    Subresource {
        resource: "pods",
        name: "ephemeralcontainers",
        group: "",
        version: "v1",
        kind: "Pod",
        verbs: &["get", "patch", "update"],
    },
    Subresource {
        resource: "pods",
        name: "eviction",
        group: "policy",
        version: "v1",
        kind: "Eviction",
        verbs: &["create"],
    },
    // Served by the pod's kubelet through the API server (`node_proxy`).
    Subresource {
        resource: "pods",
        name: "attach",
        group: "",
        version: "v1",
        kind: "PodAttachOptions",
        verbs: &["create", "get"],
    },
    Subresource {
        resource: "pods",
        name: "exec",
        group: "",
        version: "v1",
        kind: "PodExecOptions",
        verbs: &["create", "get"],
    },
    Subresource {
        resource: "pods",
        name: "log",
        group: "",
        version: "v1",
        kind: "Pod",
        verbs: &["get"],
    },
    Subresource {
        resource: "pods",
        name: "portforward",
        group: "",
        version: "v1",
        kind: "PodPortForwardOptions",
        verbs: &["create", "get"],
    },
    Subresource {
        resource: "pods",
        name: "proxy",
        group: "",
        version: "v1",
        kind: "PodProxyOptions",
        verbs: &["create", "delete", "get", "patch", "update"],
    },
    Subresource {
        resource: "services",
        name: "proxy",
        group: "",
        version: "v1",
        kind: "ServiceProxyOptions",
        verbs: &["create", "delete", "get", "patch", "update"],
    },
    Subresource {
        resource: "nodes",
        name: "proxy",
        group: "",
        version: "v1",
        kind: "NodeProxyOptions",
        verbs: &["create", "delete", "get", "patch", "update"],
    },
    // certificates.k8s.io: only the approval conditions change through it.
    Subresource {
        resource: "certificatesigningrequests",
        name: "approval",
        group: "certificates.k8s.io",
        version: "v1",
        kind: "CertificateSigningRequest",
        verbs: &["get", "patch", "update"],
    },
    Subresource {
        resource: "namespaces",
        name: "finalize",
        group: "",
        version: "v1",
        kind: "Namespace",
        verbs: &["update"],
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

/// The verbs of the extra subresource `sub` of `resource`, if it serves one.
pub(super) fn verbs_of(group: &str, resource: &str, sub: &str) -> Option<&'static [&'static str]> {
    EXTRA_SUBRESOURCES
        .iter()
        .find(|s| (group.is_empty() || s.group == group) && s.resource == resource && s.name == sub)
        .map(|s| s.verbs)
}
