//! ServiceAccounts: the tokens the server signs for them, and the pieces of Kubernetes that
//! make every namespace usable by pods:
//!
//! - [`TokenIssuer`]: ES256 JWTs (key `service-account.key` in the data dir) in the claim
//!   layout of Kubernetes' bound service account tokens, issued by TokenRequest and verified
//!   by the bearer-token authenticator;
//! - [`run_controller`]: the `default` ServiceAccount and the `kube-root-ca.crt` ConfigMap in
//!   every active namespace (kube-controller-manager's serviceaccount and
//!   root-ca-cert-publisher controllers), level-triggered on the reflector;
//! - [`admit_pod`]: the ServiceAccount admission plugin (default account, projected token
//!   volume).

use std::path::Path;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair as _, UnparsedPublicKey};
use serde_json::{json, Value};
use sha2::Digest;

use crate::authn::{UserInfo, AUTHENTICATED_GROUP};
use crate::cache::Reflector;
use crate::kinds::{array_at, object_mut, str_at, REGISTRY};
use crate::rbac::SERVICE_ACCOUNT_PREFIX;
use crate::status::{ApiError, ApiResult};
use crate::storage::Storage;

/// The issuer and default audience of tokens, as kube-apiserver's default.
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// Where pods find their token, CA and namespace.
pub const TOKEN_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The ConfigMap of the cluster CA in every namespace.
pub const ROOT_CA_CONFIGMAP: &str = "kube-root-ca.crt";
/// The group of all service accounts.
pub const SERVICE_ACCOUNTS_GROUP: &str = "system:serviceaccounts";

/// Why the token key could not be loaded or a token was refused.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The key file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The key could not be generated or parsed.
    #[error("service account signing key: {0}")]
    Key(String),
    /// A presented token is not one of ours, or no longer valid.
    #[error("invalid bearer token")]
    Invalid,
}

/// What a verified token says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenClaims {
    /// Namespace of the service account.
    pub namespace: String,
    /// Name of the service account.
    pub name: String,
    /// UID of the service account when issued.
    pub uid: String,
    /// Audiences.
    pub audiences: Vec<String>,
}

impl TokenClaims {
    /// The user the token authenticates as.
    pub fn user(&self) -> UserInfo {
        UserInfo {
            name: format!("{SERVICE_ACCOUNT_PREFIX}{}:{}", self.namespace, self.name),
            groups: vec![
                SERVICE_ACCOUNTS_GROUP.to_owned(),
                format!("{SERVICE_ACCOUNTS_GROUP}:{}", self.namespace),
                AUTHENTICATED_GROUP.to_owned(),
            ],
            uid: self.uid.clone(),
            ..UserInfo::default()
        }
    }
}

/// Signs and verifies service account tokens.
pub struct TokenIssuer {
    key: EcdsaKeyPair,
    key_id: String,
    rng: SystemRandom,
    /// Tokens verified lately, so that a client sending the same token on every request
    /// does not pay a signature check each time (kube-apiserver caches successful token
    /// authentications for 10 s the same way).
    verified: std::sync::Mutex<VerifiedTokens>,
}

/// Successfully verified tokens by SHA-256 of the token, with their expiry (Unix seconds)
/// and when they were verified.
type VerifiedTokens = std::collections::HashMap<[u8; 32], (TokenClaims, i64, std::time::Instant)>;

/// How long a verified token is trusted without checking its signature again.
const VERIFIED_TTL: std::time::Duration = std::time::Duration::from_secs(10);

/// Most tokens remembered; the memory is cleared when it is full.
const VERIFIED_MAX: usize = 4096;

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl TokenIssuer {
    /// Loads the signing key from `path` (PKCS#8 PEM), creating it on first start.
    pub fn load_or_create(path: &Path) -> Result<TokenIssuer, TokenError> {
        let io = |source| TokenError::Io {
            path: path.to_path_buf(),
            source,
        };
        let pem = match std::fs::read_to_string(path) {
            Ok(pem) => pem,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = rcgen::KeyPair::generate().map_err(|e| TokenError::Key(e.to_string()))?;
                let pem = key.serialize_pem();
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(io)?;
                }
                write_private(path, &pem).map_err(io)?;
                pem
            }
            Err(e) => return Err(io(e)),
        };
        let key = rcgen::KeyPair::from_pem(&pem).map_err(|e| TokenError::Key(e.to_string()))?;
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &key.serialize_der(),
            &rng,
        )
        .map_err(|e| TokenError::Key(e.to_string()))?;
        // Like kube-apiserver, the key id is a hash of the public key.
        let key_id = B64URL.encode(sha2::Sha256::digest(key.public_key().as_ref()));
        Ok(TokenIssuer {
            key,
            key_id,
            rng,
            verified: Default::default(),
        })
    }

    /// The OpenID provider configuration served at `/.well-known/openid-configuration`
    /// (kube-apiserver's ServiceAccountIssuerDiscovery), so that other parties can verify
    /// the tokens.
    pub fn openid_configuration(&self) -> Value {
        serde_json::json!({
            "issuer": ISSUER,
            "jwks_uri": format!("{ISSUER}/openid/v1/jwks"),
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
        })
    }

    /// The public key as a JSON Web Key Set (`/openid/v1/jwks`).
    pub fn jwks(&self) -> Value {
        // An uncompressed P-256 point: 0x04, then x and y of 32 bytes each.
        let point = self.key.public_key().as_ref();
        let (x, y) = point[1..].split_at(32);
        serde_json::json!({"keys": [{
            "use": "sig",
            "kty": "EC",
            "kid": self.key_id,
            "crv": "P-256",
            "alg": "ES256",
            "x": B64URL.encode(x),
            "y": B64URL.encode(y),
        }]})
    }

    /// Issues a token for a service account, valid for `expiration_seconds`, optionally
    /// bound to an object (`{"kind", "name", "uid"}`).
    pub fn issue(
        &self,
        service_account: &Value,
        audiences: &[String],
        expiration_seconds: i64,
        bound: Option<&Value>,
    ) -> Result<(String, jiff::Timestamp), TokenError> {
        let now = jiff::Timestamp::now();
        let exp = now.as_second() + expiration_seconds;
        let namespace = str_at(service_account, "/metadata/namespace");
        let name = str_at(service_account, "/metadata/name");
        let mut k8s = json!({
            "namespace": namespace,
            "serviceaccount": {"name": name, "uid": str_at(service_account, "/metadata/uid")},
        });
        if let Some(bound) = bound {
            let key = str_at(bound, "/kind").to_ascii_lowercase();
            if !key.is_empty() {
                k8s[key] = json!({"name": str_at(bound, "/name"), "uid": str_at(bound, "/uid")});
            }
        }
        let claims = json!({
            "aud": audiences,
            "exp": exp,
            "iat": now.as_second(),
            "nbf": now.as_second(),
            "iss": ISSUER,
            "jti": uuid::Uuid::new_v4().to_string(),
            "sub": format!("{SERVICE_ACCOUNT_PREFIX}{namespace}:{name}"),
            "kubernetes.io": k8s,
        });
        let header = json!({"alg": "ES256", "kid": self.key_id, "typ": "JWT"});
        let signing_input = format!(
            "{}.{}",
            B64URL.encode(header.to_string()),
            B64URL.encode(claims.to_string())
        );
        let signature = self
            .key
            .sign(&self.rng, signing_input.as_bytes())
            .map_err(|e| TokenError::Key(e.to_string()))?;
        let expires =
            jiff::Timestamp::from_second(exp).map_err(|e| TokenError::Key(e.to_string()))?;
        Ok((
            format!("{signing_input}.{}", B64URL.encode(signature.as_ref())),
            expires,
        ))
    }

    /// Verifies a token's signature, issuer and lifetime; a token verified in the last
    /// [`VERIFIED_TTL`] is not checked again until it expires.
    pub fn verify(&self, token: &str) -> Result<TokenClaims, TokenError> {
        use sha2::Digest as _;
        let digest: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        let now = jiff::Timestamp::now().as_second();
        {
            let verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((claims, exp, at)) = verified.get(&digest) {
                if *exp >= now && at.elapsed() < VERIFIED_TTL {
                    return Ok(claims.clone());
                }
            }
        }
        let (claims, exp) = self.verify_signed(token)?;
        let mut verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        if verified.len() >= VERIFIED_MAX {
            verified.clear();
        }
        verified.insert(digest, (claims.clone(), exp, std::time::Instant::now()));
        Ok(claims)
    }

    /// Checks a token's signature, issuer and lifetime; its claims and expiry.
    fn verify_signed(&self, token: &str) -> Result<(TokenClaims, i64), TokenError> {
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Invalid);
        };
        let sig = B64URL.decode(sig).map_err(|_| TokenError::Invalid)?;
        UnparsedPublicKey::new(
            &signature::ECDSA_P256_SHA256_FIXED,
            self.key.public_key().as_ref(),
        )
        .verify(format!("{header}.{payload}").as_bytes(), &sig)
        .map_err(|_| TokenError::Invalid)?;
        let claims: Value = B64URL
            .decode(payload)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(TokenError::Invalid)?;
        let now = jiff::Timestamp::now().as_second();
        let exp = claims.get("exp").and_then(Value::as_i64).unwrap_or(0);
        if claims.get("iss").and_then(Value::as_str) != Some(ISSUER) || exp < now {
            return Err(TokenError::Invalid);
        }
        let audiences = match claims.get("aud") {
            Some(Value::String(a)) => vec![a.clone()],
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            _ => Vec::new(),
        };
        let claims = TokenClaims {
            namespace: str_at(&claims, "/kubernetes.io/namespace").to_owned(),
            name: str_at(&claims, "/kubernetes.io/serviceaccount/name").to_owned(),
            uid: str_at(&claims, "/kubernetes.io/serviceaccount/uid").to_owned(),
            audiences,
        };
        Ok((claims, exp))
    }
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()
}

/// Keeps a `default` ServiceAccount and the `kube-root-ca.crt` ConfigMap in every active
/// namespace; runs until the runtime ends.
pub async fn run_controller(storage: Storage, cache: Arc<Reflector>, ca_pem: String) {
    let mut changes = cache.changes();
    loop {
        reconcile(&storage, &cache, &ca_pem).await;
        if changes.changed().await.is_err() {
            return;
        }
    }
}

async fn reconcile(storage: &Storage, cache: &Reflector, ca_pem: &str) {
    let def = |kind| {
        REGISTRY
            .by_kind("", "v1", kind)
            .expect("core kinds are registered")
    };
    let (namespaces, accounts, configmaps) =
        (def("Namespace"), def("ServiceAccount"), def("ConfigMap"));
    for ns in cache.list(namespaces) {
        if ns.pointer("/metadata/deletionTimestamp").is_some() {
            continue;
        }
        let namespace = str_at(&ns, "/metadata/name");
        if cache.get(accounts, namespace, "default").is_none() {
            let sa = json!({
                "apiVersion": "v1", "kind": "ServiceAccount",
                "metadata": new_metadata("default", namespace),
            });
            create_quietly(storage, accounts, namespace, "default", &sa).await;
        }
        let wanted = json!({"ca.crt": ca_pem});
        match cache.get(configmaps, namespace, ROOT_CA_CONFIGMAP) {
            Some(cm) if cm.get("data") == Some(&wanted) => {}
            Some(cm) => {
                let mut cm = Value::clone(&cm);
                let revision = str_at(&cm, "/metadata/resourceVersion")
                    .parse()
                    .unwrap_or(0);
                cm["data"] = wanted;
                let _ = storage
                    .update(configmaps, namespace, ROOT_CA_CONFIGMAP, cm, revision)
                    .await;
            }
            None => {
                let mut meta = new_metadata(ROOT_CA_CONFIGMAP, namespace);
                meta["annotations"] = json!({"kubernetes.io/description": "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters."});
                let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": wanted});
                create_quietly(storage, configmaps, namespace, ROOT_CA_CONFIGMAP, &cm).await;
            }
        }
    }
}

fn new_metadata(name: &str, namespace: &str) -> Value {
    json!({
        "name": name,
        "namespace": namespace,
        "uid": uuid::Uuid::new_v4().to_string(),
        "creationTimestamp": crate::handlers::now_rfc3339(),
    })
}

async fn create_quietly(
    storage: &Storage,
    def: &crate::registry::ResourceDef,
    namespace: &str,
    name: &str,
    obj: &Value,
) {
    match storage.create(def, namespace, name, obj.clone()).await {
        Ok(_) => {}
        Err(e) if e.reason == "AlreadyExists" => {}
        Err(e) => tracing::warn!(%namespace, %name, "creating {}: {}", def.kind, e.message),
    }
}

/// The ServiceAccount admission plugin for a new pod: defaults `serviceAccountName`, checks
/// the account exists, and mounts the projected token volume in every container.
pub async fn admit_pod(storage: &Storage, cache: &Reflector, pod: &mut Value) -> ApiResult<()> {
    // Mirror pods of static pods run from the node's files: no account, no token.
    if pod
        .pointer("/metadata/annotations/kubernetes.io~1config.mirror")
        .is_some()
    {
        return Ok(());
    }
    let namespace = str_at(pod, "/metadata/namespace").to_owned();
    let name = str_at(pod, "/metadata/name").to_owned();
    let spec = object_mut(pod, "spec");
    let account = match spec.get("serviceAccountName").and_then(Value::as_str) {
        Some(a) if !a.is_empty() => a.to_owned(),
        _ => match spec.get("serviceAccount").and_then(Value::as_str) {
            Some(a) if !a.is_empty() => a.to_owned(),
            _ => "default".to_owned(),
        },
    };
    spec.insert("serviceAccountName".into(), json!(account));
    spec.insert("serviceAccount".into(), json!(account));
    let def = REGISTRY
        .by_kind("", "v1", "ServiceAccount")
        .ok_or_else(|| ApiError::internal("serviceaccounts are not served"))?;
    // The mirror first (no store round trip); the store when the account is newer than it.
    let found = match cache.get(def, &namespace, &account) {
        Some(sa) => Some(sa),
        None => storage
            .get(def, &namespace, &account)
            .await?
            .map(|(sa, _)| std::sync::Arc::new(sa)),
    };
    let Some(sa) = found else {
        let pods = REGISTRY
            .by_kind("", "v1", "Pod")
            .ok_or_else(|| ApiError::internal("pods are not served"))?;
        return Err(ApiError::forbidden(format!(
            "{} \"{name}\" is forbidden: error looking up service account {namespace}/{account}: serviceaccount \"{account}\" not found",
            pods.qualified()
        )));
    };
    let automount = spec
        .get("automountServiceAccountToken")
        .and_then(Value::as_bool)
        .or_else(|| {
            sa.get("automountServiceAccountToken")
                .and_then(Value::as_bool)
        })
        .unwrap_or(true);
    if !automount {
        return Ok(());
    }
    let mounted = |spec: &serde_json::Map<String, Value>| {
        ["containers", "initContainers"].iter().any(|list| {
            spec.get(*list)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .any(|c| {
                    array_at(c, "/volumeMounts")
                        .iter()
                        .any(|m| str_at(m, "/mountPath") == TOKEN_MOUNT_PATH)
                })
        })
    };
    if mounted(spec) {
        return Ok(());
    }
    let volume_name = format!("kube-api-access-{}", crate::handlers::random_suffix());
    let volume = json!({
        "name": volume_name,
        "projected": {
            "defaultMode": 420,
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": ROOT_CA_CONFIGMAP, "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
            ],
        },
    });
    match spec.get_mut("volumes").and_then(Value::as_array_mut) {
        Some(volumes) => volumes.push(volume),
        None => {
            spec.insert("volumes".into(), json!([volume]));
        }
    }
    for list in ["containers", "initContainers"] {
        for container in spec
            .get_mut(list)
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            let mount =
                json!({"name": volume_name, "readOnly": true, "mountPath": TOKEN_MOUNT_PATH});
            match container
                .get_mut("volumeMounts")
                .and_then(Value::as_array_mut)
            {
                Some(mounts) => mounts.push(mount),
                None => container["volumeMounts"] = json!([mount]),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_tokens_verify_and_tampered_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let issuer = TokenIssuer::load_or_create(&dir.path().join("sa.key")).unwrap();
        let sa = json!({"metadata": {"name": "robot", "namespace": "team", "uid": "u1"}});
        let (token, _) = issuer.issue(&sa, &[ISSUER.to_owned()], 600, None).unwrap();
        let claims = issuer.verify(&token).unwrap();
        assert_eq!(claims.user().name, "system:serviceaccount:team:robot");
        assert_eq!(claims.uid, "u1");
        let again = TokenIssuer::load_or_create(&dir.path().join("sa.key")).unwrap();
        assert!(again.verify(&token).is_ok(), "the key persists");
        let mut tampered = token.clone();
        tampered.insert(token.find('.').unwrap() + 3, 'x');
        assert!(issuer.verify(&tampered).is_err());
        let (expired, _) = issuer.issue(&sa, &[], -10, None).unwrap();
        assert!(issuer.verify(&expired).is_err());
    }

    #[test]
    fn the_published_key_verifies_issued_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let issuer = TokenIssuer::load_or_create(&dir.path().join("sa.key")).unwrap();
        let sa = serde_json::json!({"metadata": {"namespace": "ns", "name": "sa", "uid": "u"}});
        let (token, _) = issuer.issue(&sa, &[ISSUER.to_owned()], 600, None).unwrap();
        let jwks = issuer.jwks();
        let key = &jwks["keys"][0];
        assert_eq!(key["kid"], issuer.key_id.as_str());
        let mut point = vec![4u8];
        point.extend(B64URL.decode(key["x"].as_str().unwrap()).unwrap());
        point.extend(B64URL.decode(key["y"].as_str().unwrap()).unwrap());
        let (signed, sig) = token.rsplit_once('.').unwrap();
        let header: Value =
            serde_json::from_slice(&B64URL.decode(signed.split('.').next().unwrap()).unwrap())
                .unwrap();
        assert_eq!(header["kid"], key["kid"]);
        UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, &point)
            .verify(signed.as_bytes(), &B64URL.decode(sig).unwrap())
            .expect("the JWKS key verifies the token");
        assert_eq!(
            issuer.openid_configuration()["jwks_uri"],
            format!("{ISSUER}/openid/v1/jwks")
        );
    }

    #[test]
    fn a_remembered_token_still_expires() {
        let dir = tempfile::tempdir().unwrap();
        let issuer = TokenIssuer::load_or_create(&dir.path().join("sa.key")).unwrap();
        let sa = json!({"metadata": {"name": "robot", "namespace": "team", "uid": "u1"}});
        let (token, _) = issuer.issue(&sa, &[], 1, None).unwrap();
        let first = issuer.verify(&token).unwrap();
        assert_eq!(issuer.verify(&token).unwrap(), first, "served from memory");
        assert_eq!(issuer.verified.lock().unwrap().len(), 1);
        std::thread::sleep(std::time::Duration::from_millis(2100));
        assert!(issuer.verify(&token).is_err(), "expired while remembered");
    }
}
