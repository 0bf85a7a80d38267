//! Conversion webhooks of CustomResourceDefinitions (`spec.conversion.strategy: Webhook`):
//! objects move between served versions through `ConversionReview`s POSTed to the CRD's
//! `clientConfig`, as kube-apiserver's apiextensions server does.
//!
//! The API server converts whenever an object is not in the version wanted: reads (get,
//! list, watch) of a version other than the one an object is stored in, and writes of a
//! version other than the storage version. An object already in the wanted version never
//! reaches the webhook. What the webhook returns is checked as Kubernetes checks it (one
//! object per object sent, the wanted `apiVersion`, the same kind, metadata only changed in
//! labels and annotations) and a failure fails the request with Kubernetes' message
//! `conversion webhook for <group>/<version>, Kind=<kind> failed: <cause>`.
//!
//! Conversions run inside the registry's synchronous [`crate::registry::ResourceDef`]
//! conversion hooks, so a call is made on a short-lived thread of its own (with its own
//! current-thread runtime) while the calling task waits: every caller keeps working
//! unchanged whatever runtime it runs on.

use std::time::Duration;

use serde_json::{json, Value};

use crate::admission::webhook::client::Client;
use crate::kinds::{array_at, str_at};
use crate::storage::Storage;
use crate::validation::FieldError;

/// How long kube-apiserver waits for a conversion webhook.
const TIMEOUT: Duration = Duration::from_secs(30);

/// The ConversionReview versions skiff speaks (the same shape in both).
const REVIEW_VERSIONS: &[&str] = &["v1", "v1beta1"];

/// A CRD's conversion webhook, ready to call.
pub struct Webhook {
    client: Client,
    /// The store, for resolving a `clientConfig.service` to an endpoint.
    storage: Option<Storage>,
    /// The `apiVersion` of the ConversionReviews sent (`apiextensions.k8s.io/v1`).
    review_api_version: String,
    /// The custom resources' kind.
    kind: String,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("client", &self.client)
            .field("review_api_version", &self.review_api_version)
            .finish_non_exhaustive()
    }
}

impl Webhook {
    /// The webhook of a CRD with `strategy: Webhook`, `None` for other strategies; the
    /// error says what is wrong with its configuration (calls then fail with it).
    pub fn of_crd(crd: &Value, storage: Option<Storage>) -> Option<Result<Webhook, String>> {
        if str_at(crd, "/spec/conversion/strategy") != "Webhook" {
            return None;
        }
        let kind = str_at(crd, "/spec/names/kind").to_owned();
        Some(
            review_version(crd)
                .and_then(|version| {
                    let config = crd
                        .pointer("/spec/conversion/webhook/clientConfig")
                        .ok_or_else(|| {
                            "spec.conversion.webhook.clientConfig is missing".to_owned()
                        })?;
                    Ok((version, Client::from_json(config)?))
                })
                .map(|(version, client)| Webhook {
                    client,
                    storage,
                    review_api_version: format!("{}/{version}", super::GROUP),
                    kind,
                }),
        )
    }

    /// Converts `obj` to `api_version` through the webhook, waiting for its answer.
    pub fn convert(&self, obj: &mut Value, api_version: &str) -> Result<(), String> {
        self.convert_all(&mut [obj], api_version)
    }

    /// Converts `objects` (none of them in `api_version` yet) to `api_version` in one
    /// ConversionReview, as kube-apiserver converts a list; all or none are converted.
    pub fn convert_all(&self, objects: &mut [&mut Value], api_version: &str) -> Result<(), String> {
        let Some(first) = objects.first() else {
            return Ok(());
        };
        let from = format!("{}, Kind={}", str_at(first, "/apiVersion"), self.kind);
        let sent: Vec<&Value> = objects.iter().map(|o| &**o).collect();
        let converted = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|e| e.to_string())?;
                    runtime.block_on(self.review(&sent, api_version))
                })
                .join()
                .unwrap_or_else(|_| Err("the conversion panicked".to_owned()))
        })
        .map_err(|cause| format!("conversion webhook for {from} failed: {cause}"))?;
        for (obj, converted) in objects.iter_mut().zip(converted) {
            **obj = converted;
        }
        Ok(())
    }

    /// One ConversionReview; the converted objects, each with the metadata of the one sent
    /// but the webhook's labels and annotations.
    async fn review(&self, objects: &[&Value], api_version: &str) -> Result<Vec<Value>, String> {
        let uid = uuid::Uuid::new_v4().to_string();
        let review = json!({
            "apiVersion": self.review_api_version,
            "kind": "ConversionReview",
            "request": {"uid": uid, "desiredAPIVersion": api_version, "objects": objects},
        });
        let body = serde_json::to_vec(&review).map_err(|e| e.to_string())?;
        let storage = match &self.storage {
            Some(storage) => storage.clone(),
            None => return Err("no store to resolve the webhook's service".to_owned()),
        };
        let answer = self.client.post(&storage, body, TIMEOUT).await?;
        let answer: Value = serde_json::from_slice(&answer)
            .map_err(|e| format!("invalid ConversionReview response: {e}"))?;
        check_response(&answer, &uid, objects, api_version)
    }
}

/// The ConversionReview version to send: the first of `conversionReviewVersions` skiff
/// speaks.
fn review_version(crd: &Value) -> Result<&'static str, String> {
    let wanted = array_at(crd, "/spec/conversion/webhook/conversionReviewVersions");
    wanted
        .iter()
        .filter_map(Value::as_str)
        .find_map(|v| REVIEW_VERSIONS.iter().find(|known| **known == v).copied())
        .ok_or_else(|| {
            format!(
                "no supported conversionReviewVersions in {}, the server accepts {}",
                Value::Array(wanted.to_vec()),
                REVIEW_VERSIONS.join(", ")
            )
        })
}

/// Checks a ConversionReview response and restores the objects' metadata.
fn check_response(
    answer: &Value,
    uid: &str,
    originals: &[&Value],
    api_version: &str,
) -> Result<Vec<Value>, String> {
    let response = answer
        .get("response")
        .filter(|r| r.is_object())
        .ok_or_else(|| "no response provided".to_owned())?;
    let got_uid = str_at(response, "/uid");
    if got_uid != uid {
        return Err(format!("expected response uid {uid:?}, got {got_uid:?}"));
    }
    let status = str_at(response, "/result/status");
    if status != "Success" {
        return Err(match str_at(response, "/result/message") {
            "" => format!("conversion failed with status {status:?}"),
            message => message.to_owned(),
        });
    }
    let converted = array_at(response, "/convertedObjects");
    if converted.len() != originals.len() {
        return Err(format!(
            "expected {} converted objects, got {}",
            originals.len(),
            converted.len()
        ));
    }
    originals
        .iter()
        .zip(converted)
        .enumerate()
        .map(|(i, (original, converted))| restore(i, original, converted.clone(), api_version))
        .collect()
}

/// Checks one converted object; it keeps the original's metadata but for labels and
/// annotations, whatever the webhook sent back.
fn restore(
    i: usize,
    original: &Value,
    mut converted: Value,
    api_version: &str,
) -> Result<Value, String> {
    let got_version = str_at(&converted, "/apiVersion");
    if got_version != api_version {
        return Err(format!(
            "invalid converted object at index {i}: invalid groupVersion (expected {api_version}, received {got_version})"
        ));
    }
    let (kind, got_kind) = (str_at(original, "/kind"), str_at(&converted, "/kind"));
    if got_kind != kind {
        return Err(format!(
            "invalid converted object at index {i}: invalid kind (expected {kind}, received {got_kind})"
        ));
    }
    let mut metadata = original
        .get("metadata")
        .cloned()
        .unwrap_or_else(|| json!({}));
    for field in ["labels", "annotations"] {
        if let Some(meta) = metadata.as_object_mut() {
            match converted.pointer(&format!("/metadata/{field}")) {
                Some(value) if !value.is_null() => {
                    if !value
                        .as_object()
                        .is_some_and(|m| m.values().all(Value::is_string))
                    {
                        return Err(format!(
                            "invalid converted object at index {i}: invalid metadata.{field}"
                        ));
                    }
                    meta.insert(field.into(), value.clone());
                }
                _ => {
                    meta.remove(field);
                }
            }
        }
    }
    converted["metadata"] = metadata;
    Ok(converted)
}

/// Validation of `spec.conversion`, as apiextensions validates it.
pub fn validate(crd: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let webhook = crd
        .pointer("/spec/conversion/webhook")
        .filter(|w| !w.is_null());
    match str_at(crd, "/spec/conversion/strategy") {
        "" | "None" => {
            if webhook.is_some() {
                errs.push(FieldError::forbidden(
                    "spec.conversion.webhook",
                    "should not be set when strategy is not set to Webhook",
                ));
            }
        }
        "Webhook" => {
            let Some(webhook) = webhook else {
                errs.push(FieldError::required(
                    "spec.conversion.webhook",
                    "required when strategy is set to Webhook",
                ));
                return errs;
            };
            match webhook.get("clientConfig").filter(|c| c.is_object()) {
                None => errs.push(FieldError::required(
                    "spec.conversion.webhook.clientConfig",
                    "required when strategy is set to Webhook",
                )),
                Some(config) => errs.extend(validate_client_config(config)),
            }
            let field = "spec.conversion.webhook.conversionReviewVersions";
            let versions = array_at(webhook, "/conversionReviewVersions");
            if versions.is_empty() {
                errs.push(FieldError::required(field, ""));
            } else {
                let mut seen = Vec::new();
                for (i, v) in versions.iter().enumerate() {
                    if seen.contains(&v) {
                        errs.push(FieldError::invalid(
                            format!("{field}[{i}]"),
                            v.clone(),
                            "duplicate version",
                        ));
                    }
                    seen.push(v);
                }
                if review_version(crd).is_err() {
                    errs.push(FieldError::invalid(
                        field,
                        Value::Array(versions.to_vec()),
                        "must include at least one of v1, v1beta1",
                    ));
                }
            }
        }
        other => errs.push(FieldError::not_supported(
            "spec.conversion.strategy",
            json!(other),
            &["None", "Webhook"],
        )),
    }
    errs
}

fn validate_client_config(config: &Value) -> Vec<FieldError> {
    let field = "spec.conversion.webhook.clientConfig";
    let mut errs = Vec::new();
    match (config.get("url"), config.get("service")) {
        (Some(url), None) => {
            let url = url.as_str().unwrap_or("");
            if !url.starts_with("https://") {
                errs.push(FieldError::invalid(
                    format!("{field}.url"),
                    json!(url),
                    "'https' is the only allowed URL scheme",
                ));
            }
        }
        (None, Some(service)) => {
            for part in ["name", "namespace"] {
                if str_at(service, &format!("/{part}")).is_empty() {
                    errs.push(FieldError::required(format!("{field}.service.{part}"), ""));
                }
            }
        }
        _ => errs.push(FieldError::required(
            field,
            "exactly one of url or service is required",
        )),
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crd(conversion: Value) -> Value {
        json!({"spec": {"group": "example.com", "names": {"kind": "Widget"},
            "conversion": conversion}})
    }

    #[test]
    fn validates_the_webhook_configuration() {
        let fine = crd(json!({"strategy": "Webhook", "webhook": {
            "clientConfig": {"url": "https://127.0.0.1:9443/convert"},
            "conversionReviewVersions": ["v2", "v1"]}}));
        assert!(validate(&fine).is_empty(), "{:?}", validate(&fine));
        assert_eq!(review_version(&fine), Ok("v1"));
        let missing = crd(json!({"strategy": "Webhook"}));
        assert_eq!(
            validate(&missing)[0].to_string(),
            "spec.conversion.webhook: Required value: required when strategy is set to Webhook"
        );
        let unknown = crd(json!({"strategy": "Webhook", "webhook": {
            "clientConfig": {"url": "http://x/convert"},
            "conversionReviewVersions": ["v9"]}}));
        let messages: Vec<String> = validate(&unknown).iter().map(|e| e.to_string()).collect();
        assert_eq!(messages.len(), 2, "{messages:?}");
        assert!(messages[0].contains("'https' is the only allowed URL scheme"));
        assert!(messages[1].contains("must include at least one of v1, v1beta1"));
        let stray =
            crd(json!({"strategy": "None", "webhook": {"conversionReviewVersions": ["v1"]}}));
        assert!(validate(&stray)[0]
            .to_string()
            .contains("should not be set"));
    }

    #[test]
    fn checks_responses_as_kubernetes() {
        let original = json!({"apiVersion": "example.com/v1", "kind": "Widget",
            "metadata": {"name": "w", "uid": "u1", "labels": {"a": "1"}}, "spec": {"size": 1}});
        let answer = |converted: Value, status: &str| {
            json!({"response": {"uid": "r1", "result": {"status": status, "message": "no way"},
                "convertedObjects": [converted]}})
        };
        let good = json!({"apiVersion": "example.com/v2", "kind": "Widget",
            "metadata": {"name": "renamed", "uid": "other", "labels": {"b": "2"}},
            "spec": {"length": 1}});
        let converted = check_response(
            &answer(good.clone(), "Success"),
            "r1",
            &[&original],
            "example.com/v2",
        )
        .unwrap()
        .remove(0);
        assert_eq!(converted["spec"], json!({"length": 1}));
        assert_eq!(
            converted["metadata"],
            json!({"name": "w", "uid": "u1", "labels": {"b": "2"}})
        );
        assert_eq!(
            check_response(
                &answer(good.clone(), "Success"),
                "r2",
                &[&original],
                "example.com/v2"
            )
            .unwrap_err(),
            "expected response uid \"r2\", got \"r1\""
        );
        assert_eq!(
            check_response(
                &answer(good.clone(), "Failure"),
                "r1",
                &[&original],
                "example.com/v2"
            )
            .unwrap_err(),
            "no way"
        );
        // One converted object for each sent.
        assert_eq!(
            check_response(
                &answer(good.clone(), "Success"),
                "r1",
                &[&original, &original],
                "example.com/v2"
            )
            .unwrap_err(),
            "expected 2 converted objects, got 1"
        );
        assert!(check_response(
            &answer(good, "Success"),
            "r1",
            &[&original],
            "example.com/v3"
        )
        .unwrap_err()
        .contains("invalid groupVersion (expected example.com/v3, received example.com/v2)"));
    }
}
