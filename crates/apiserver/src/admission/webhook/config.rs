//! Webhook configurations, read from storage on every admitted request (so a request sees
//! every configuration written before it) and parsed once per stored version.
//!
//! The read is one range over the configurations' prefix; what is costly to derive from a
//! configuration (TLS roots, selectors) is kept per store key and reused while the stored
//! bytes are unchanged.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use super::client::Client;
use super::rules::Rule;
use crate::cache::Reflector;
use crate::kinds::{array_at, selector_string, str_at, REGISTRY};
use crate::selector::LabelSelector;
use crate::status::{ApiError, ApiResult};
use crate::storage::Storage;

/// The API group of webhook configurations.
const GROUP: &str = "admissionregistration.k8s.io";

/// Parsed configurations kept at most (across every server of the process).
const CACHE_LIMIT: usize = 512;

/// Which of the two configuration kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Flavor {
    /// MutatingWebhookConfiguration.
    Mutating,
    /// ValidatingWebhookConfiguration.
    Validating,
}

impl Flavor {
    fn kind(self) -> &'static str {
        match self {
            Flavor::Mutating => "MutatingWebhookConfiguration",
            Flavor::Validating => "ValidatingWebhookConfiguration",
        }
    }
}

/// One webhook of a configuration.
#[derive(Debug)]
pub(super) struct Hook {
    /// The webhook's name, which errors quote.
    pub name: String,
    /// `rules`; a request must match one.
    pub rules: Vec<Rule>,
    /// `namespaceSelector`.
    pub namespace_selector: LabelSelector,
    /// `objectSelector`.
    pub object_selector: LabelSelector,
    /// `failurePolicy: Ignore`: a failed call lets the request through.
    pub ignore_failures: bool,
    /// `sideEffects` is `None` or `NoneOnDryRun`: the webhook may see dry runs.
    pub dry_run_safe: bool,
    /// `timeoutSeconds` (default 10, at most 30).
    pub timeout: Duration,
    /// `reinvocationPolicy: IfNeeded` (mutating webhooks).
    pub reinvoke: bool,
    /// `matchConditions`: (name, CEL expression); all must hold for the webhook to be
    /// called.
    pub match_conditions: Vec<(String, String)>,
    /// How to call it, or why it cannot be called (reported as a failed call, under the
    /// failure policy).
    pub client: Result<Client, String>,
}

impl Hook {
    /// A webhook from its JSON form.
    pub fn from_json(webhook: &Value, flavor: Flavor) -> Hook {
        let selector = |field: &str| {
            LabelSelector::parse(&selector_string(webhook.get(field)))
                .map_err(|e| format!("invalid {field}: {e}"))
        };
        let selectors = selector("namespaceSelector")
            .and_then(|namespace| Ok((namespace, selector("objectSelector")?)));
        let accepts_v1 = array_at(webhook, "/admissionReviewVersions")
            .iter()
            .any(|v| v.as_str() == Some("v1"));
        let client = match &selectors {
            Err(e) => Err(e.clone()),
            Ok(_) if !accepts_v1 => {
                Err("webhook does not accept known AdmissionReview versions".to_owned())
            }
            Ok(_) => Client::from_json(webhook.get("clientConfig").unwrap_or(&Value::Null)),
        };
        let (namespace_selector, object_selector) = selectors.unwrap_or_default();
        let timeout = webhook
            .get("timeoutSeconds")
            .and_then(Value::as_u64)
            .unwrap_or(10)
            .clamp(1, 30);
        Hook {
            name: str_at(webhook, "/name").to_owned(),
            rules: array_at(webhook, "/rules")
                .iter()
                .map(Rule::from_json)
                .collect(),
            namespace_selector,
            object_selector,
            ignore_failures: str_at(webhook, "/failurePolicy") == "Ignore",
            dry_run_safe: matches!(str_at(webhook, "/sideEffects"), "None" | "NoneOnDryRun"),
            timeout: Duration::from_secs(timeout),
            reinvoke: flavor == Flavor::Mutating
                && str_at(webhook, "/reinvocationPolicy") == "IfNeeded",
            match_conditions: array_at(webhook, "/matchConditions")
                .iter()
                .map(|c| {
                    (
                        str_at(c, "/name").to_owned(),
                        str_at(c, "/expression").to_owned(),
                    )
                })
                .collect(),
            client,
        }
    }
}

/// Parsed webhooks by store key, with the stored bytes they were parsed from.
type Cache = BTreeMap<String, (Vec<u8>, Arc<[Arc<Hook>]>)>;

static CACHE: Mutex<Cache> = Mutex::new(BTreeMap::new());

/// The webhooks of every configuration of `flavor`, in configuration name order, then in
/// their order within the configuration.
pub(super) async fn load(
    storage: &Storage,
    mirror: &Reflector,
    flavor: Flavor,
) -> ApiResult<Vec<Arc<Hook>>> {
    let Some(def) = REGISTRY.by_kind(GROUP, "v1", flavor.kind()) else {
        return Ok(Vec::new());
    };
    // Most clusters have no webhooks: the server's mirror (which every acknowledged
    // configuration write has reached) tells without a store read.
    if mirror.list(def).is_empty() {
        return Ok(Vec::new());
    }
    let prefix = Storage::prefix(def, None);
    let mut hooks = Vec::new();
    let mut start: Option<String> = None;
    let mut revision = None;
    loop {
        let range = storage
            .store()
            .range(&prefix, revision, Some(500), start.as_deref())
            .await?;
        revision = Some(range.revision);
        for kv in &range.kvs {
            hooks.extend(parsed(&kv.key, &kv.value, flavor)?.iter().cloned());
            start = Some(kv.key.clone());
        }
        if !range.more {
            return Ok(hooks);
        }
    }
}

/// The webhooks of the configuration stored under `key` as `value`, parsed once.
fn parsed(key: &str, value: &[u8], flavor: Flavor) -> ApiResult<Arc<[Arc<Hook>]>> {
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((bytes, hooks)) = cache.get(key) {
        if bytes == value {
            return Ok(hooks.clone());
        }
    }
    let config: Value = serde_json::from_slice(value)
        .map_err(|e| ApiError::internal(format!("decoding {key}: {e}")))?;
    let hooks: Arc<[Arc<Hook>]> = array_at(&config, "/webhooks")
        .iter()
        .map(|w| Arc::new(Hook::from_json(w, flavor)))
        .collect();
    if cache.len() >= CACHE_LIMIT {
        cache.clear();
    }
    cache.insert(key.to_owned(), (value.to_vec(), hooks.clone()));
    Ok(hooks)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn defaults_and_policies() {
        let hook = Hook::from_json(
            &json!({
                "name": "a.example.com",
                "admissionReviewVersions": ["v1beta1", "v1"],
                "sideEffects": "None",
                "clientConfig": {"url": "https://127.0.0.1:1/"},
                "failurePolicy": "Ignore",
                "reinvocationPolicy": "IfNeeded",
                "timeoutSeconds": 99,
                "objectSelector": {"matchExpressions": [{"key": "skip", "operator": "DoesNotExist"}]},
            }),
            Flavor::Mutating,
        );
        assert!(hook.ignore_failures && hook.dry_run_safe && hook.reinvoke);
        assert_eq!(hook.timeout, Duration::from_secs(30));
        assert!(hook.client.is_ok());
        assert!(hook.object_selector.matches(&json!({"metadata": {}})));
        assert!(!hook
            .object_selector
            .matches(&json!({"metadata": {"labels": {"skip": "1"}}})));

        let hook = Hook::from_json(
            &json!({
                "name": "b", "admissionReviewVersions": ["v1beta1"], "sideEffects": "Some",
                "clientConfig": {"url": "https://127.0.0.1:1/"},
                "reinvocationPolicy": "IfNeeded",
            }),
            Flavor::Validating,
        );
        assert!(!hook.ignore_failures && !hook.dry_run_safe && !hook.reinvoke);
        assert_eq!(hook.timeout, Duration::from_secs(10));
        assert_eq!(
            hook.client.unwrap_err(),
            "webhook does not accept known AdmissionReview versions"
        );
    }
}
