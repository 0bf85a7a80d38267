//! `imagePullSecrets`: registry credentials from Secrets of type
//! `kubernetes.io/dockerconfigjson` and `kubernetes.io/dockercfg`, matched against an
//! image as Docker's config (and the kubelet's keyring) match them: by host (with `*`
//! wildcards per label), port and repository path prefix, most specific first.

use base64::Engine as _;
use k8s_openapi::api::core::v1::{Pod, Secret};

use crate::cri::AuthConfig;
use crate::objects::ObjectSource;

/// Docker Hub's names in config files; images without a registry belong to it.
const DOCKER_HUB_KEYS: &[&str] = &["index.docker.io", "registry-1.docker.io", "docker.io"];

/// One entry of a Docker config: where it applies and what it presents.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    /// Host (possibly with `*` labels), lower-case.
    host: String,
    /// Port, empty when the key has none.
    port: String,
    /// Path prefix of the repository, without leading or trailing `/`.
    path: String,
    auth: AuthConfig,
}

/// The credentials of a pod's pull secrets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Keyring {
    entries: Vec<Entry>,
}

impl Keyring {
    /// Adds the entries of a Docker config (`{"auths": {KEY: {...}}}` or the old
    /// `{KEY: {...}}`); entries without credentials are skipped.
    pub fn add_docker_config(&mut self, json: &[u8]) -> Result<(), String> {
        let value: serde_json::Value =
            serde_json::from_slice(json).map_err(|e| format!("invalid docker config: {e}"))?;
        let auths = value.get("auths").unwrap_or(&value);
        let Some(auths) = auths.as_object() else {
            return Err("invalid docker config: not an object".into());
        };
        for (key, entry) in auths {
            let Some(auth) = credentials(entry) else {
                continue;
            };
            let (host, port, path) = parse_key(key);
            self.entries.push(Entry {
                host,
                port,
                path,
                auth,
            });
        }
        Ok(())
    }

    /// Adds a pull secret's config; `Err` when it holds none.
    pub fn add_secret(&mut self, secret: &Secret) -> Result<(), String> {
        let data = secret.data.clone().unwrap_or_default();
        match (data.get(".dockerconfigjson"), data.get(".dockercfg")) {
            (Some(json), _) | (None, Some(json)) => self.add_docker_config(&json.0),
            (None, None) => Err(format!(
                "secret of type {:?} has no .dockerconfigjson or .dockercfg key",
                secret.type_.as_deref().unwrap_or("Opaque")
            )),
        }
    }

    /// Whether no credentials are known.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The credentials for `image` (a reference as the pod names it), most specific key
    /// first; empty when none match.
    pub fn lookup(&self, image: &str) -> Vec<AuthConfig> {
        let Ok(reference) = skiff_images::Reference::parse(image) else {
            return Vec::new();
        };
        let (host, port) = split_port(&reference.registry().to_ascii_lowercase());
        let repository = reference.repository();
        let mut found: Vec<&Entry> = self
            .entries
            .iter()
            .filter(|e| {
                host_matches(&e.host, &host)
                    && e.port == port
                    && (e.path.is_empty()
                        || repository == e.path
                        || repository.starts_with(&format!("{}/", e.path)))
            })
            .collect();
        // Longer keys are more specific (a path beats a bare host, a host beats `*`).
        found.sort_by_key(|e| {
            std::cmp::Reverse(
                e.host.len() + e.port.len() + e.path.len() - e.host.matches('*').count(),
            )
        });
        let mut out: Vec<AuthConfig> = Vec::new();
        for e in found {
            if !out.contains(&e.auth) {
                out.push(e.auth.clone());
            }
        }
        out
    }
}

/// The names of the pod's pull secrets: its own `imagePullSecrets`, or its
/// ServiceAccount's when it has none (what ServiceAccount admission would have copied).
pub fn secret_names(pod: &Pod, objects: &dyn ObjectSource) -> Vec<String> {
    let spec = pod.spec.clone().unwrap_or_default();
    let own: Vec<String> = spec
        .image_pull_secrets
        .iter()
        .flatten()
        .map(|r| r.name.clone())
        .filter(|n| !n.is_empty())
        .collect();
    if !own.is_empty() {
        return own;
    }
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let account = spec
        .service_account_name
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "default".into());
    match objects.service_account(namespace, &account) {
        Ok(Some(sa)) => sa
            .image_pull_secrets
            .iter()
            .flatten()
            .map(|r| r.name.clone())
            .filter(|n| !n.is_empty())
            .collect(),
        _ => Vec::new(),
    }
}

/// The pod's keyring; the second part says which secrets could not be used (the
/// kubelet warns and pulls with what it has).
pub fn keyring(pod: &Pod, objects: &dyn ObjectSource) -> (Keyring, Vec<String>) {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut ring = Keyring::default();
    let mut problems = Vec::new();
    for name in secret_names(pod, objects) {
        match objects.secret(namespace, &name) {
            Ok(Some(secret)) => {
                if let Err(e) = ring.add_secret(&secret) {
                    problems.push(format!("secret \"{namespace}/{name}\": {e}"));
                }
            }
            Ok(None) => problems.push(format!("secret \"{namespace}/{name}\" not found")),
            Err(e) => problems.push(format!("secret \"{namespace}/{name}\": {e}")),
        }
    }
    (ring, problems)
}

/// An entry's user and password: `auth` (base64 `user:password`) or the separate fields.
fn credentials(entry: &serde_json::Value) -> Option<AuthConfig> {
    let field = |k: &str| entry.get(k).and_then(|v| v.as_str()).unwrap_or_default();
    if !field("auth").is_empty() {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(field("auth").trim())
            .ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (username, password) = text.split_once(':')?;
        return Some(AuthConfig {
            username: username.into(),
            password: password.into(),
        });
    }
    if field("username").is_empty() && field("password").is_empty() {
        return None;
    }
    Some(AuthConfig {
        username: field("username").into(),
        password: field("password").into(),
    })
}

/// A config key (`https://host:port/path`, `host`, `*.example.com`) as host, port, path.
fn parse_key(key: &str) -> (String, String, String) {
    let rest = key
        .split_once("://")
        .map(|(_, r)| r)
        .unwrap_or(key)
        .to_ascii_lowercase();
    let (authority, path) = rest.split_once('/').unwrap_or((&rest, ""));
    let (host, port) = split_port(authority);
    // Docker Hub's config keys name its API (`https://index.docker.io/v1/`).
    if DOCKER_HUB_KEYS.contains(&host.as_str()) {
        return ("docker.io".into(), port, String::new());
    }
    (host, port, path.trim_matches('/').to_string())
}

fn split_port(authority: &str) -> (String, String) {
    match authority.rsplit_once(':') {
        Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
            (h.to_string(), p.to_string())
        }
        _ => (authority.to_string(), String::new()),
    }
}

/// Whether `pattern` (labels, each possibly `*` or with `*` in it) matches `host` label
/// by label.
fn host_matches(pattern: &str, host: &str) -> bool {
    let p: Vec<&str> = pattern.split('.').collect();
    let h: Vec<&str> = host.split('.').collect();
    p.len() == h.len() && p.iter().zip(&h).all(|(p, h)| label_matches(p, h))
}

/// A glob of one label: `*` matches any run of characters.
fn label_matches(pattern: &str, label: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == label,
        Some((head, tail)) => {
            let Some(rest) = label.strip_prefix(head) else {
                return false;
            };
            (0..=rest.len())
                .filter(|&i| rest.is_char_boundary(i))
                .any(|i| label_matches(tail, &rest[i..]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(u: &str) -> AuthConfig {
        AuthConfig {
            username: u.into(),
            password: "pw".into(),
        }
    }

    fn ring(json: serde_json::Value) -> Keyring {
        let mut r = Keyring::default();
        r.add_docker_config(json.to_string().as_bytes()).unwrap();
        r
    }

    #[test]
    fn hosts_ports_and_paths_match_like_docker() {
        let encoded = base64::engine::general_purpose::STANDARD.encode("alice:pw");
        let r = ring(serde_json::json!({"auths": {
            "127.0.0.1:5000": {"auth": encoded},
            "https://registry.example.com/team": {"username": "team", "password": "pw"},
            "registry.example.com": {"username": "any", "password": "pw"},
            "*.corp.io": {"username": "wild", "password": "pw"},
            "https://index.docker.io/v1/": {"username": "hub", "password": "pw"}
        }}));
        assert_eq!(r.lookup("127.0.0.1:5000/app:1"), vec![auth("alice")]);
        assert!(
            r.lookup("127.0.0.1:5001/app:1").is_empty(),
            "ports must match"
        );
        assert!(r.lookup("127.0.0.1/app:1").is_empty());
        assert_eq!(
            r.lookup("registry.example.com/team/app"),
            vec![auth("team"), auth("any")]
        );
        assert_eq!(
            r.lookup("registry.example.com/teamx/app"),
            vec![auth("any")]
        );
        assert_eq!(r.lookup("eu.corp.io/x"), vec![auth("wild")]);
        assert!(r.lookup("a.eu.corp.io/x").is_empty(), "one label per *");
        assert_eq!(r.lookup("busybox"), vec![auth("hub")]);
        assert_eq!(r.lookup("docker.io/library/nginx:1"), vec![auth("hub")]);
    }

    #[test]
    fn both_secret_types_are_read() {
        let mut r = Keyring::default();
        let json = |v: serde_json::Value| k8s_openapi::ByteString(v.to_string().into_bytes());
        let new: Secret = Secret {
            type_: Some("kubernetes.io/dockerconfigjson".into()),
            data: Some(
                [(
                    ".dockerconfigjson".to_string(),
                    json(
                        serde_json::json!({"auths": {"r.io": {"username": "a", "password": "pw"}}}),
                    ),
                )]
                .into(),
            ),
            ..Default::default()
        };
        let old: Secret = Secret {
            type_: Some("kubernetes.io/dockercfg".into()),
            data: Some(
                [(
                    ".dockercfg".to_string(),
                    json(serde_json::json!({"old.io": {"username": "b", "password": "pw"}})),
                )]
                .into(),
            ),
            ..Default::default()
        };
        r.add_secret(&new).unwrap();
        r.add_secret(&old).unwrap();
        assert_eq!(r.lookup("r.io/x"), vec![auth("a")]);
        assert_eq!(r.lookup("old.io/x"), vec![auth("b")]);
        assert!(r.add_secret(&Secret::default()).is_err());
    }

    #[test]
    fn the_service_accounts_secrets_apply_when_the_pod_names_none() {
        let objects = crate::fake::FakeObjects::default();
        objects.put_service_account(
            "default",
            "builder",
            serde_json::json!({"imagePullSecrets": [{"name": "from-sa"}]}),
        );
        let pod = |spec: serde_json::Value| -> Pod {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "p", "namespace": "default"}, "spec": spec
            }))
            .unwrap()
        };
        let sa_only = pod(serde_json::json!({"serviceAccountName": "builder", "containers": []}));
        assert_eq!(
            secret_names(&sa_only, &objects),
            vec!["from-sa".to_string()]
        );
        let own = pod(serde_json::json!({
            "serviceAccountName": "builder", "imagePullSecrets": [{"name": "mine"}],
            "containers": []
        }));
        assert_eq!(secret_names(&own, &objects), vec!["mine".to_string()]);
        let (ring, problems) = keyring(&own, &objects);
        assert!(ring.is_empty());
        assert_eq!(
            problems,
            vec!["secret \"default/mine\" not found".to_string()]
        );
    }
}
