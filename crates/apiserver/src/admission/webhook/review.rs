//! The `admission.k8s.io/v1` AdmissionReview: the request skiff sends and what it accepts
//! back.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde_json::{json, Map, Value};

use crate::admission::{Attributes, Operation};
use crate::status::ApiError;

/// The API version of the reviews sent (the only one skiff speaks).
const API_VERSION: &str = "admission.k8s.io/v1";

/// The AdmissionReview for one call: `object` is the object written (none for deletions),
/// `attrs.old` the stored one.
pub(in crate::admission) fn request(
    attrs: &Attributes<'_>,
    uid: &str,
    object: Option<&Value>,
) -> Value {
    let def = attrs.def;
    let kind = json!({"group": def.group, "version": def.version, "kind": def.kind});
    let resource = json!({"group": def.group, "version": def.version, "resource": def.plural});
    let options_kind = match attrs.operation {
        Operation::Create => "CreateOptions",
        Operation::Update => "UpdateOptions",
        Operation::Delete => "DeleteOptions",
    };
    let mut options = json!({"apiVersion": "meta.k8s.io/v1", "kind": options_kind});
    if attrs.dry_run {
        options["dryRun"] = json!(["All"]);
    }
    let mut request = Map::new();
    request.insert("uid".into(), json!(uid));
    request.insert("kind".into(), kind.clone());
    request.insert("resource".into(), resource.clone());
    request.insert("requestKind".into(), kind);
    request.insert("requestResource".into(), resource);
    if !attrs.subresource.is_empty() {
        request.insert("subResource".into(), json!(attrs.subresource));
        request.insert("requestSubResource".into(), json!(attrs.subresource));
    }
    if !attrs.name.is_empty() {
        request.insert("name".into(), json!(attrs.name));
    }
    // A Namespace's own requests carry its name as namespace, as in Kubernetes.
    let namespace = if def.group.is_empty() && def.kind == "Namespace" {
        attrs.name
    } else {
        attrs.namespace
    };
    if !namespace.is_empty() {
        request.insert("namespace".into(), json!(namespace));
    }
    request.insert("operation".into(), json!(attrs.operation.as_str()));
    request.insert("userInfo".into(), attrs.user.to_json());
    request.insert("object".into(), object.cloned().unwrap_or(Value::Null));
    request.insert(
        "oldObject".into(),
        attrs.old.cloned().unwrap_or(Value::Null),
    );
    request.insert("dryRun".into(), json!(attrs.dry_run));
    request.insert("options".into(), options);
    json!({"apiVersion": API_VERSION, "kind": "AdmissionReview", "request": request})
}

/// A webhook's answer.
#[derive(Debug, Default)]
pub(super) struct Verdict {
    /// Whether the request may proceed.
    pub allowed: bool,
    /// `response.status` (a `metav1.Status`), explaining a denial.
    pub status: Option<Value>,
    /// A decoded JSON Patch (`patchType: JSONPatch`).
    pub patch: Option<json_patch::Patch>,
    /// `response.warnings`.
    pub warnings: Vec<String>,
}

/// Reads the AdmissionReview a webhook returned for the request `uid`. Errors say what is
/// wrong with it (Kubernetes reports them as an invalid webhook response).
pub(super) fn response(body: &[u8], uid: &str) -> Result<Verdict, String> {
    let review: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let api_version = review
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    let kind = review.get("kind").and_then(Value::as_str).unwrap_or("");
    if api_version != API_VERSION || kind != "AdmissionReview" {
        return Err(format!(
            "expected webhook response of {API_VERSION}, Kind=AdmissionReview, got {api_version}, Kind={kind}"
        ));
    }
    let response = review
        .get("response")
        .filter(|r| r.is_object())
        .ok_or("webhook response was absent")?;
    let got = response.get("uid").and_then(Value::as_str).unwrap_or("");
    if got != uid {
        return Err(format!("expected response.uid=\"{uid}\", got \"{got}\""));
    }
    let patch = match (
        response.get("patch").and_then(Value::as_str),
        response.get("patchType").and_then(Value::as_str),
    ) {
        (None, None) => None,
        (Some(_), None) => {
            return Err("webhook returned response.patch but not response.patchType".into())
        }
        (None, Some(_)) => {
            return Err("webhook returned response.patchType but not response.patch".into())
        }
        (Some(patch), Some("JSONPatch")) => {
            let bytes = BASE64
                .decode(patch)
                .map_err(|e| format!("decoding response.patch: {e}"))?;
            Some(
                serde_json::from_slice(&bytes)
                    .map_err(|e| format!("decoding response.patch: {e}"))?,
            )
        }
        (Some(_), Some(other)) => {
            return Err(format!(
                "webhook returned invalid response.patchType of \"{other}\""
            ))
        }
    };
    Ok(Verdict {
        allowed: response
            .get("allowed")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        status: response.get("status").filter(|s| s.is_object()).cloned(),
        patch,
        warnings: response
            .get("warnings")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
    })
}

/// The error a denial becomes: the webhook's status code when it is an error code (else
/// 403), its reason, and `admission webhook "<name>" denied the request: <message>`.
pub(super) fn denial(webhook: &str, status: Option<&Value>) -> ApiError {
    let field = |name: &str| {
        status
            .and_then(|s| s.get(name))
            .and_then(Value::as_str)
            .unwrap_or("")
    };
    let denied = format!("admission webhook \"{webhook}\" denied the request");
    let message = match (field("message"), field("reason")) {
        ("", "") => format!("{denied} without explanation"),
        ("", reason) => format!("{denied}: {reason}"),
        (message, _) => format!("{denied}: {message}"),
    };
    let code = status
        .and_then(|s| s.get("code"))
        .and_then(Value::as_u64)
        .and_then(|c| u16::try_from(c).ok())
        .filter(|c| (400..600).contains(c))
        .unwrap_or(403);
    let mut err = ApiError::new(code, status_reason(field("reason")), message);
    if let Some(details) = status
        .and_then(|s| s.get("details"))
        .filter(|d| d.is_object())
    {
        err = err.with_details(details.clone());
    }
    err
}

/// The `metav1.StatusReason` named `reason`; reasons outside Kubernetes' list become "",
/// because errors carry their reason as a static string.
fn status_reason(reason: &str) -> &'static str {
    const KNOWN: &[&str] = &[
        "Unauthorized",
        "Forbidden",
        "NotFound",
        "AlreadyExists",
        "Conflict",
        "Gone",
        "Invalid",
        "ServerTimeout",
        "StoreReadError",
        "Timeout",
        "TooManyRequests",
        "BadRequest",
        "MethodNotAllowed",
        "NotAcceptable",
        "RequestEntityTooLarge",
        "UnsupportedMediaType",
        "InternalError",
        "Expired",
        "ServiceUnavailable",
    ];
    KNOWN.iter().find(|k| **k == reason).copied().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn review(response: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response,
        }))
        .unwrap()
    }

    #[test]
    fn reads_allowed_patch_and_warnings() {
        let patch = BASE64.encode(r#"[{"op":"add","path":"/metadata/labels","value":{"a":"b"}}]"#);
        let verdict = response(
            &review(json!({
                "uid": "u1", "allowed": true, "patchType": "JSONPatch", "patch": patch,
                "warnings": ["careful"],
            })),
            "u1",
        )
        .unwrap();
        assert!(verdict.allowed);
        assert_eq!(verdict.patch.unwrap().0.len(), 1);
        assert_eq!(verdict.warnings, ["careful"]);
    }

    #[test]
    fn rejects_malformed_responses() {
        let err = |body: Vec<u8>| response(&body, "u1").unwrap_err();
        assert_eq!(
            err(review(json!({"uid": "u2", "allowed": true}))),
            "expected response.uid=\"u1\", got \"u2\""
        );
        assert_eq!(
            err(b"{\"apiVersion\":\"admission.k8s.io/v1beta1\",\"kind\":\"AdmissionReview\"}".to_vec()),
            "expected webhook response of admission.k8s.io/v1, Kind=AdmissionReview, got admission.k8s.io/v1beta1, Kind=AdmissionReview"
        );
        assert_eq!(err(review(json!(null))), "webhook response was absent");
        assert!(err(review(
            json!({"uid": "u1", "allowed": true, "patch": "W10="})
        ))
        .contains("not response.patchType"));
        assert!(err(review(
            json!({"uid": "u1", "allowed": true, "patch": "W10=", "patchType": "Merge"})
        ))
        .contains("invalid response.patchType"));
    }

    #[test]
    fn denials() {
        let err = denial(
            "deny.example.com",
            Some(&json!({"message": "no way", "code": 200})),
        );
        assert_eq!(err.code, 403);
        assert_eq!(err.reason, "");
        assert_eq!(
            err.message,
            "admission webhook \"deny.example.com\" denied the request: no way"
        );
        let err = denial("d", Some(&json!({"reason": "Invalid", "code": 422})));
        assert_eq!((err.code, err.reason), (422, "Invalid"));
        assert_eq!(
            err.message,
            "admission webhook \"d\" denied the request: Invalid"
        );
        let err = denial("d", None);
        assert_eq!(
            err.message,
            "admission webhook \"d\" denied the request without explanation"
        );
    }
}
