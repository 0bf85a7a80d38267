//! What pods reference in the API — ConfigMaps, Secrets, claims and volumes,
//! ServiceAccount tokens — behind one small trait, so environment and volume
//! logic unit-tests against an in-memory fake ([`crate::fake::FakeObjects`]).
//!
//! Calls are synchronous: pod syncs run on blocking threads, and the API
//! implementation drives its requests on the kubelet's tokio runtime.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolume, PersistentVolumeClaim, Secret, Service, ServiceAccount,
};

/// A failed read (anything but "not found", which is `Ok(None)`).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct ObjectError(pub String);

/// A token of a ServiceAccount, as TokenRequest returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// The JWT.
    pub token: String,
    /// When it expires.
    pub expires: DateTime<Utc>,
}

/// What a projected `serviceAccountToken` asks for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenSpec {
    /// The pod's namespace.
    pub namespace: String,
    /// The ServiceAccount.
    pub service_account: String,
    /// The audience (the API server's when empty).
    pub audience: Option<String>,
    /// Requested lifetime.
    pub expiration_seconds: i64,
    /// The pod the token is bound to.
    pub pod_name: String,
    /// Its UID.
    pub pod_uid: String,
}

/// Reads of the API objects pods reference.
pub trait ObjectSource: Send + Sync {
    /// A ConfigMap, `None` when it does not exist.
    fn config_map(&self, namespace: &str, name: &str) -> Result<Option<ConfigMap>, ObjectError>;
    /// A Secret, `None` when it does not exist.
    fn secret(&self, namespace: &str, name: &str) -> Result<Option<Secret>, ObjectError>;
    /// A PersistentVolumeClaim, `None` when it does not exist.
    fn claim(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<PersistentVolumeClaim>, ObjectError>;
    /// A PersistentVolume, `None` when it does not exist.
    fn volume(&self, name: &str) -> Result<Option<PersistentVolume>, ObjectError>;
    /// A token for `spec` (reused until 80% of its lifetime has passed, as the
    /// kubelet's token manager does).
    fn token(&self, spec: &TokenSpec) -> Result<Token, ObjectError>;
    /// A ServiceAccount (for its `imagePullSecrets`), `None` when it does not exist.
    fn service_account(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<ServiceAccount>, ObjectError> {
        let _ = (namespace, name);
        Ok(None)
    }
    /// The Services of a namespace (for containers' service environment variables).
    fn services(&self, namespace: &str) -> Result<Vec<Service>, ObjectError> {
        let _ = namespace;
        Ok(Vec::new())
    }
}

/// [`ObjectSource`] over the API server.
pub struct ApiObjects {
    client: kube::Client,
    handle: tokio::runtime::Handle,
    tokens: Mutex<HashMap<TokenSpec, (Token, DateTime<Utc>)>>,
}

impl ApiObjects {
    /// Reads through `client`, running requests on `handle`'s runtime.
    pub fn new(client: kube::Client, handle: tokio::runtime::Handle) -> ApiObjects {
        ApiObjects {
            client,
            handle,
            tokens: Mutex::new(HashMap::new()),
        }
    }

    fn get<K>(&self, api: kube::Api<K>, name: &str) -> Result<Option<K>, ObjectError>
    where
        K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        self.handle
            .block_on(api.get_opt(name))
            .map_err(|e| ObjectError(e.to_string()))
    }
}

/// Whether a token issued at `issued` and expiring at `expires` should be replaced:
/// past 80% of its lifetime, or older than a day (the kubelet's rule).
pub fn token_needs_refresh(
    issued: DateTime<Utc>,
    expires: DateTime<Utc>,
    now: DateTime<Utc>,
) -> bool {
    let life = expires - issued;
    now >= issued + life * 4 / 5 || now - issued > chrono::Duration::hours(24)
}

impl ObjectSource for ApiObjects {
    fn config_map(&self, namespace: &str, name: &str) -> Result<Option<ConfigMap>, ObjectError> {
        self.get(kube::Api::namespaced(self.client.clone(), namespace), name)
    }

    fn secret(&self, namespace: &str, name: &str) -> Result<Option<Secret>, ObjectError> {
        self.get(kube::Api::namespaced(self.client.clone(), namespace), name)
    }

    fn claim(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<PersistentVolumeClaim>, ObjectError> {
        self.get(kube::Api::namespaced(self.client.clone(), namespace), name)
    }

    fn volume(&self, name: &str) -> Result<Option<PersistentVolume>, ObjectError> {
        self.get(kube::Api::all(self.client.clone()), name)
    }

    fn service_account(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<ServiceAccount>, ObjectError> {
        self.get(kube::Api::namespaced(self.client.clone(), namespace), name)
    }

    fn services(&self, namespace: &str) -> Result<Vec<Service>, ObjectError> {
        let api: kube::Api<Service> = kube::Api::namespaced(self.client.clone(), namespace);
        self.handle
            .block_on(api.list(&kube::api::ListParams::default()))
            .map(|list| list.items)
            .map_err(|e| ObjectError(e.to_string()))
    }

    fn token(&self, spec: &TokenSpec) -> Result<Token, ObjectError> {
        use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
        let now = Utc::now();
        if let Some((t, issued)) = self.tokens.lock().unwrap().get(spec) {
            if !token_needs_refresh(*issued, t.expires, now) {
                return Ok(t.clone());
            }
        }
        let api: kube::Api<ServiceAccount> =
            kube::Api::namespaced(self.client.clone(), &spec.namespace);
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                audiences: Some(spec.audience.iter().cloned().collect()),
                expiration_seconds: Some(spec.expiration_seconds),
                bound_object_ref: Some(
                    k8s_openapi::api::authentication::v1::BoundObjectReference {
                        api_version: Some("v1".into()),
                        kind: Some("Pod".into()),
                        name: Some(spec.pod_name.clone()),
                        uid: Some(spec.pod_uid.clone()),
                    },
                ),
                ..Default::default()
            }),
            ..Default::default()
        };
        let reply = self
            .handle
            .block_on(api.create_token_request(
                &spec.service_account,
                &Default::default(),
                &request,
            ))
            .map_err(|e| ObjectError(e.to_string()))?;
        let status = reply
            .status
            .ok_or_else(|| ObjectError("TokenRequest returned no status".into()))?;
        let expires = status
            .expiration_timestamp
            .and_then(|t| DateTime::<Utc>::from_timestamp(t.0.as_second(), 0))
            .unwrap_or(now + chrono::Duration::seconds(spec.expiration_seconds));
        let token = Token {
            token: status.token.unwrap_or_default(),
            expires,
        };
        self.tokens
            .lock()
            .unwrap()
            .insert(spec.clone(), (token.clone(), now));
        Ok(token)
    }
}
