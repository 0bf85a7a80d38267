//! Bootstrap tokens: short-lived bearer tokens stored as Secrets, with which a new node
//! joins the cluster (kubeadm's `token create` and `join --token`).
//!
//! A token `<id>.<secret>` (6 and 16 characters of `[a-z0-9]`) names the Secret
//! `bootstrap-token-<id>` in kube-system, of type `bootstrap.kubernetes.io/token`. The
//! authenticator accepts it, as kube-apiserver's bootstrap token authenticator does, when
//! that Secret holds the same `token-id` and `token-secret`, is not being deleted, has not
//! passed its `expiration` and is marked `usage-bootstrap-authentication: "true"`. The user
//! is `system:bootstrap:<id>`, in `system:bootstrappers` and the Secret's
//! `auth-extra-groups`. Anything else is answered as an unknown token (401).

use std::collections::BTreeSet;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde_json::{json, Map, Value};

use crate::authn::{UserInfo, AUTHENTICATED_GROUP};
use crate::kinds::{str_at, REGISTRY};
use crate::storage::Storage;

/// The namespace of bootstrap token Secrets.
pub const NAMESPACE: &str = "kube-system";
/// The name of a token's Secret is this prefix and the token id.
pub const SECRET_PREFIX: &str = "bootstrap-token-";
/// The type of bootstrap token Secrets.
pub const SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";
/// The user name of a token is this prefix and the token id.
pub const USER_PREFIX: &str = "system:bootstrap:";
/// Every bootstrap token user is in this group; extra groups must start with it and a colon.
pub const BOOTSTRAPPERS_GROUP: &str = "system:bootstrappers";
/// The extra group of tokens `skiff token create` makes by default; the default RBAC
/// policy lets it act as a node.
pub const DEFAULT_NODE_TOKEN_GROUP: &str = "system:bootstrappers:skiff:default-node-token";

/// The Secret's keys.
const TOKEN_ID: &str = "token-id";
const TOKEN_SECRET: &str = "token-secret";
const EXPIRATION: &str = "expiration";
const DESCRIPTION: &str = "description";
const EXTRA_GROUPS: &str = "auth-extra-groups";
const USAGE_PREFIX: &str = "usage-bootstrap-";
const USAGE_AUTHENTICATION: &str = "usage-bootstrap-authentication";

const ID_LEN: usize = 6;
const SECRET_LEN: usize = 16;
const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
/// The longest extra group name, after the `system:bootstrappers:` prefix.
const MAX_GROUP_SUFFIX: usize = 256;

/// Why a token or its Secret was refused (logged; the client only sees 401).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Rejection {
    /// The token is not `[a-z0-9]{6}.[a-z0-9]{16}`.
    #[error("a bootstrap token has the form [a-z0-9]{{6}}.[a-z0-9]{{16}}")]
    Malformed,
    /// There is no Secret for the token id.
    #[error("no secret {NAMESPACE}/{SECRET_PREFIX}{0}")]
    NotFound(String),
    /// The Secret is being deleted.
    #[error("secret {NAMESPACE}/{SECRET_PREFIX}{0} is being deleted")]
    Deleting(String),
    /// The Secret is not of the bootstrap token type.
    #[error("secret {NAMESPACE}/{SECRET_PREFIX}{0} is not of type {SECRET_TYPE}")]
    WrongType(String),
    /// The Secret's token-id or token-secret differ from the token's.
    #[error("secret {NAMESPACE}/{SECRET_PREFIX}{0} holds another token")]
    Mismatch(String),
    /// The Secret's expiration has passed (or cannot be read).
    #[error("bootstrap token {0} has expired")]
    Expired(String),
    /// The Secret does not allow authentication.
    #[error("bootstrap token {0} is not marked {USAGE_AUTHENTICATION}=true")]
    NotForAuthentication(String),
    /// An extra group is not a bootstrappers group.
    #[error("{0:?} is not a valid bootstrap group: it must start with {BOOTSTRAPPERS_GROUP}: and continue with [a-z0-9:-], ending in [a-z0-9]")]
    InvalidGroup(String),
}

/// A bootstrap token: the id names its Secret, the secret proves possession.
#[derive(Clone, PartialEq, Eq)]
pub struct BootstrapToken {
    /// The public part, `[a-z0-9]{6}`.
    pub id: String,
    /// The private part, `[a-z0-9]{16}`.
    pub secret: String,
}

impl std::fmt::Debug for BootstrapToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BootstrapToken")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Display for BootstrapToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.id, self.secret)
    }
}

impl std::str::FromStr for BootstrapToken {
    type Err = Rejection;

    fn from_str(token: &str) -> Result<BootstrapToken, Rejection> {
        let (id, secret) = token.split_once('.').ok_or(Rejection::Malformed)?;
        if !is_token_part(id, ID_LEN) || !is_token_part(secret, SECRET_LEN) {
            return Err(Rejection::Malformed);
        }
        Ok(BootstrapToken {
            id: id.to_owned(),
            secret: secret.to_owned(),
        })
    }
}

fn is_token_part(part: &str, len: usize) -> bool {
    part.len() == len && part.bytes().all(|b| ALPHABET.contains(&b))
}

/// Whether `id` is a token id (`[a-z0-9]{6}`).
pub fn is_token_id(id: &str) -> bool {
    is_token_part(id, ID_LEN)
}

/// The name of the Secret of token `id`.
pub fn secret_name(id: &str) -> String {
    format!("{SECRET_PREFIX}{id}")
}

impl BootstrapToken {
    /// A new random token, from the operating system's random source.
    pub fn generate() -> BootstrapToken {
        use rand::Rng;
        let mut rng = rand::rngs::OsRng;
        let mut part = |len| -> String {
            (0..len)
                .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
                .collect()
        };
        BootstrapToken {
            id: part(ID_LEN),
            secret: part(SECRET_LEN),
        }
    }

    /// The Secret that makes this token valid for authentication (`kubeadm token create`'s
    /// layout): expiring `ttl` after `now` (never with `None`), described by `description`,
    /// adding `groups` (each checked with [`validate_group`]).
    pub fn to_secret(
        &self,
        now: jiff::Timestamp,
        ttl: Option<Duration>,
        description: &str,
        groups: &[String],
    ) -> Result<Value, Rejection> {
        for group in groups {
            validate_group(group)?;
        }
        let mut data = Map::new();
        let mut put = |key: &str, value: &str| {
            data.insert(key.to_owned(), json!(BASE64.encode(value)));
        };
        put(TOKEN_ID, &self.id);
        put(TOKEN_SECRET, &self.secret);
        put(USAGE_AUTHENTICATION, "true");
        if let Some(ttl) = ttl {
            let expires = jiff::Timestamp::from_second(
                now.as_second()
                    .saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX)),
            )
            .unwrap_or(jiff::Timestamp::MAX);
            put(EXPIRATION, &expires.to_string());
        }
        if !description.is_empty() {
            put(DESCRIPTION, description);
        }
        if !groups.is_empty() {
            put(EXTRA_GROUPS, &groups.join(","));
        }
        Ok(json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": secret_name(&self.id), "namespace": NAMESPACE},
            "type": SECRET_TYPE,
            "data": data,
        }))
    }
}

/// Checks an extra group: `system:bootstrappers:` followed by `[a-z0-9:-]`, ending in
/// `[a-z0-9]`, at most 256 characters after the prefix.
pub fn validate_group(group: &str) -> Result<(), Rejection> {
    let invalid = || Rejection::InvalidGroup(group.to_owned());
    let suffix = group
        .strip_prefix(BOOTSTRAPPERS_GROUP)
        .and_then(|rest| rest.strip_prefix(':'))
        .ok_or_else(invalid)?;
    let valid = !suffix.is_empty()
        && suffix.len() <= MAX_GROUP_SUFFIX
        && suffix
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b':' || b == b'-')
        && suffix
            .bytes()
            .last()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    valid.then_some(()).ok_or_else(invalid)
}

/// A token's Secret, as `skiff token list` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenInfo {
    /// The token (the administrator who may read the Secret may see it, as in kubeadm).
    pub token: BootstrapToken,
    /// When it expires (`None`: never).
    pub expires: Option<jiff::Timestamp>,
    /// What it may be used for (`authentication`, `signing`, ...).
    pub usages: Vec<String>,
    /// The description.
    pub description: String,
    /// The extra groups.
    pub groups: Vec<String>,
}

impl TokenInfo {
    /// The token a Secret describes, if it is a bootstrap token Secret.
    pub fn from_secret(secret: &Value) -> Option<TokenInfo> {
        if str_at(secret, "/type") != SECRET_TYPE {
            return None;
        }
        let data = secret.get("data")?;
        let token = format!(
            "{}.{}",
            data_value(data, TOKEN_ID),
            data_value(data, TOKEN_SECRET)
        )
        .parse()
        .ok()?;
        let expires = data_value(data, EXPIRATION);
        let mut usages: Vec<String> = data
            .as_object()?
            .keys()
            .filter(|k| data_value(data, k) == "true")
            .filter_map(|k| k.strip_prefix(USAGE_PREFIX))
            .map(str::to_owned)
            .collect();
        usages.sort();
        Some(TokenInfo {
            token,
            expires: (!expires.is_empty()).then(|| expires.parse().unwrap_or(jiff::Timestamp::MIN)),
            usages,
            description: data_value(data, DESCRIPTION),
            groups: split_groups(&data_value(data, EXTRA_GROUPS)),
        })
    }
}

/// A value of a Secret's `data` (base64 in the API), or "" when absent or undecodable.
fn data_value(data: &Value, key: &str) -> String {
    data.get(key)
        .and_then(Value::as_str)
        .and_then(|v| BASE64.decode(v).ok())
        .and_then(|v| String::from_utf8(v).ok())
        .unwrap_or_default()
}

fn split_groups(groups: &str) -> Vec<String> {
    if groups.is_empty() {
        return Vec::new();
    }
    groups.split(',').map(str::to_owned).collect()
}

/// Whether constant-time equal: the time taken must not tell how much of a guess matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The user `token` authenticates as, given its Secret (`None`: there is none) at `now`.
pub fn check(
    token: &BootstrapToken,
    secret: Option<&Value>,
    now: jiff::Timestamp,
) -> Result<UserInfo, Rejection> {
    let id = &token.id;
    let secret = secret.ok_or_else(|| Rejection::NotFound(id.clone()))?;
    if secret.pointer("/metadata/deletionTimestamp").is_some() {
        return Err(Rejection::Deleting(id.clone()));
    }
    let data = secret
        .get("data")
        .filter(|d| d.is_object() && str_at(secret, "/type") == SECRET_TYPE)
        .ok_or_else(|| Rejection::WrongType(id.clone()))?;
    if !constant_time_eq(
        data_value(data, TOKEN_SECRET).as_bytes(),
        token.secret.as_bytes(),
    ) || data_value(data, TOKEN_ID) != *id
    {
        return Err(Rejection::Mismatch(id.clone()));
    }
    let expiration = data_value(data, EXPIRATION);
    if !expiration.is_empty() {
        // An unreadable expiration counts as passed, as in Kubernetes.
        match expiration.parse::<jiff::Timestamp>() {
            Ok(expires) if expires > now => {}
            _ => return Err(Rejection::Expired(id.clone())),
        }
    }
    if data_value(data, USAGE_AUTHENTICATION) != "true" {
        return Err(Rejection::NotForAuthentication(id.clone()));
    }
    let mut groups = BTreeSet::from([BOOTSTRAPPERS_GROUP.to_owned()]);
    for group in split_groups(&data_value(data, EXTRA_GROUPS)) {
        validate_group(&group)?;
        groups.insert(group);
    }
    let mut groups: Vec<String> = groups.into_iter().collect();
    groups.push(AUTHENTICATED_GROUP.to_owned());
    Ok(UserInfo {
        name: format!("{USER_PREFIX}{id}"),
        groups,
        ..UserInfo::default()
    })
}

/// The user a bearer token authenticates as, if it is a valid bootstrap token. The Secret is
/// read from the store (Secrets are not mirrored; the store decrypts them).
pub async fn authenticate(storage: &Storage, token: &BootstrapToken) -> Option<UserInfo> {
    let def = REGISTRY.by_kind("", "v1", "Secret")?;
    let secret = match storage.get(def, NAMESPACE, &secret_name(&token.id)).await {
        Ok(found) => found.map(|(secret, _)| secret),
        Err(err) => {
            tracing::warn!(id = %token.id, "reading a bootstrap token's secret: {}", err.message);
            return None;
        }
    };
    check(token, secret.as_ref(), jiff::Timestamp::now())
        .inspect_err(|rejection| tracing::debug!("bootstrap token refused: {rejection}"))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> BootstrapToken {
        "abcdef.0123456789abcdef".parse().unwrap()
    }

    fn now() -> jiff::Timestamp {
        "2030-01-01T00:00:00Z".parse().unwrap()
    }

    fn secret(extra: &[(&str, &str)]) -> Value {
        let mut secret = token()
            .to_secret(
                now(),
                Some(Duration::from_secs(3600)),
                "",
                &[DEFAULT_NODE_TOKEN_GROUP.to_owned()],
            )
            .unwrap();
        for (k, v) in extra {
            secret["data"][*k] = json!(BASE64.encode(v));
        }
        secret
    }

    #[test]
    fn parses_only_the_token_form() {
        assert_eq!(token().to_string(), "abcdef.0123456789abcdef");
        for bad in [
            "abcdef0123456789abcdef",
            "abcde.0123456789abcdef",
            "ABCDEF.0123456789abcdef",
            "abcdef.0123456789abcdeff",
            "abcdef.0123456789abcde_",
            "eyJhbGciOi.eyJhdWQiOls.sig",
        ] {
            assert_eq!(
                bad.parse::<BootstrapToken>(),
                Err(Rejection::Malformed),
                "{bad}"
            );
        }
        let generated = BootstrapToken::generate();
        assert_eq!(
            generated.to_string().parse::<BootstrapToken>(),
            Ok(generated)
        );
    }

    #[test]
    fn a_valid_secret_authenticates_as_the_bootstrap_user() {
        let user = check(&token(), Some(&secret(&[])), now()).unwrap();
        assert_eq!(user.name, "system:bootstrap:abcdef");
        assert_eq!(
            user.groups,
            [
                "system:bootstrappers",
                DEFAULT_NODE_TOKEN_GROUP,
                "system:authenticated"
            ]
        );
    }

    #[test]
    fn invalid_secrets_are_refused() {
        let id = || "abcdef".to_owned();
        let wrong: BootstrapToken = "abcdef.0123456789abcdee".parse().unwrap();
        assert_eq!(
            check(&wrong, Some(&secret(&[])), now()),
            Err(Rejection::Mismatch(id()))
        );
        assert_eq!(check(&token(), None, now()), Err(Rejection::NotFound(id())));
        let later = "2030-01-01T01:00:00Z".parse().unwrap();
        assert_eq!(
            check(&token(), Some(&secret(&[])), later),
            Err(Rejection::Expired(id()))
        );
        assert_eq!(
            check(&token(), Some(&secret(&[(EXPIRATION, "soon")])), now()),
            Err(Rejection::Expired(id()))
        );
        assert_eq!(
            check(
                &token(),
                Some(&secret(&[(USAGE_AUTHENTICATION, "false")])),
                now()
            ),
            Err(Rejection::NotForAuthentication(id()))
        );
        assert_eq!(
            check(&token(), Some(&secret(&[(TOKEN_ID, "zzzzzz")])), now()),
            Err(Rejection::Mismatch(id()))
        );
        let mut opaque = secret(&[]);
        opaque["type"] = json!("Opaque");
        assert_eq!(
            check(&token(), Some(&opaque), now()),
            Err(Rejection::WrongType(id()))
        );
        assert_eq!(
            check(
                &token(),
                Some(&secret(&[(EXTRA_GROUPS, "system:masters")])),
                now()
            ),
            Err(Rejection::InvalidGroup("system:masters".into()))
        );
        let mut deleting = secret(&[]);
        deleting["metadata"]["deletionTimestamp"] = json!("2030-01-01T00:00:00Z");
        assert_eq!(
            check(&token(), Some(&deleting), now()),
            Err(Rejection::Deleting(id()))
        );
    }

    #[test]
    fn groups_are_validated() {
        assert!(validate_group(DEFAULT_NODE_TOKEN_GROUP).is_ok());
        for bad in [
            "system:bootstrappers",
            "system:bootstrappers:",
            "system:bootstrappers:x-",
            "system:bootstrappers:X",
            "system:nodes",
        ] {
            assert!(validate_group(bad).is_err(), "{bad}");
        }
        assert!(token()
            .to_secret(now(), None, "", &["system:masters".into()])
            .is_err());
    }

    #[test]
    fn secrets_list_as_tokens() {
        let info =
            TokenInfo::from_secret(&token().to_secret(now(), None, "join", &[]).unwrap()).unwrap();
        assert_eq!(
            info,
            TokenInfo {
                token: token(),
                expires: None,
                usages: vec!["authentication".into()],
                description: "join".into(),
                groups: Vec::new(),
            }
        );
        let info = TokenInfo::from_secret(&secret(&[])).unwrap();
        assert_eq!(info.expires, Some("2030-01-01T01:00:00Z".parse().unwrap()));
        assert_eq!(info.groups, [DEFAULT_NODE_TOKEN_GROUP]);
        assert!(TokenInfo::from_secret(&json!({"type": "Opaque", "data": {}})).is_none());
    }
}
