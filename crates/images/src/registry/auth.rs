//! Registry credentials: the auth file `login` writes, Docker's config.json, and
//! `WWW-Authenticate` challenges.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::RegistryError;

/// A username and password (or identity token) for a registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The username.
    pub username: String,
    /// The password or token.
    pub password: String,
}

impl Credentials {
    /// Credentials from a user and password.
    pub fn new(username: &str, password: &str) -> Self {
        Self {
            username: username.to_owned(),
            password: password.to_owned(),
        }
    }

    /// The `Authorization: Basic ...` header value.
    pub(crate) fn basic_header(&self) -> String {
        format!(
            "Basic {}",
            BASE64.encode(format!("{}:{}", self.username, self.password))
        )
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Credentials {{ username: {:?}, password: <redacted> }}",
            self.username
        )
    }
}

/// The file shape shared with Docker's config.json: `{"auths": {"host": {"auth": "b64"}}}`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct AuthFile {
    /// Entries by registry key (host[:port], or a URL for Docker Hub).
    #[serde(default)]
    pub auths: BTreeMap<String, AuthEntry>,
    /// Everything else in the file (kept when rewriting).
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// One `auths` entry.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct AuthEntry {
    /// base64 of `user:password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<String>,
    /// Plain username (podman and some tools write these instead of `auth`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Plain password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

impl AuthEntry {
    fn credentials(&self) -> Option<Credentials> {
        if let Some(auth) = &self.auth {
            let decoded = BASE64.decode(auth.trim()).ok()?;
            let s = String::from_utf8(decoded).ok()?;
            let (u, p) = s.split_once(':')?;
            return Some(Credentials::new(u, p));
        }
        Some(Credentials::new(
            self.username.as_deref()?,
            self.password.as_deref()?,
        ))
    }
}

/// The key Docker uses for Docker Hub in config.json.
const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

/// Reduces a config key (`https://host:5000/v2/`, `host:5000`) to the registry host.
fn key_host(key: &str) -> String {
    let k = key
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = k.split('/').next().unwrap_or(k);
    canonical_host(host)
}

/// Docker Hub has several names; everything else is compared as written.
fn canonical_host(host: &str) -> String {
    match host {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" | "docker.io" => {
            "docker.io".into()
        }
        h => h.to_owned(),
    }
}

impl AuthFile {
    /// Reads `path`; a missing file is empty.
    pub fn read(path: &Path) -> Result<Self, RegistryError> {
        match fs::read(path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| RegistryError::AuthFile {
                path: path.to_path_buf(),
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(RegistryError::AuthFile {
                path: path.to_path_buf(),
                reason: e.to_string(),
            }),
        }
    }

    /// Credentials for `registry` (host[:port] as in a reference), if any entry matches.
    pub fn get(&self, registry: &str) -> Option<Credentials> {
        let want = canonical_host(registry);
        self.auths
            .iter()
            .find(|(k, _)| key_host(k) == want)
            .and_then(|(_, e)| e.credentials())
    }

    /// Sets the entry for `registry`, replacing other spellings of the same host.
    pub fn set(&mut self, registry: &str, creds: &Credentials) {
        self.remove(registry);
        let key = if canonical_host(registry) == "docker.io" {
            DOCKER_HUB_KEY.to_owned()
        } else {
            registry.to_owned()
        };
        let auth = BASE64.encode(format!("{}:{}", creds.username, creds.password));
        self.auths.insert(
            key,
            AuthEntry {
                auth: Some(auth),
                ..Default::default()
            },
        );
    }

    /// Removes every entry for `registry`; true if one existed.
    pub fn remove(&mut self, registry: &str) -> bool {
        let want = canonical_host(registry);
        let before = self.auths.len();
        self.auths.retain(|k, _| key_host(k) != want);
        before != self.auths.len()
    }

    /// Writes the file atomically with mode 0600 (it holds passwords).
    pub fn write(&self, path: &Path) -> Result<(), RegistryError> {
        let err = |e: io::Error| RegistryError::AuthFile {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(err)?;
        }
        let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
        let res = (|| {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&serde_json::to_vec_pretty(self).unwrap_or_default())?;
            f.sync_all()?;
            fs::rename(&tmp, path)
        })();
        if res.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        res.map_err(err)
    }
}

/// Docker's own config: `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`.
pub fn docker_config_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker/config.json"))
}

/// Credentials for `registry`: explicit ones, then skiff's auth file, then Docker's config.
pub fn find_credentials(
    registry: &str,
    explicit: Option<&Credentials>,
    auth_file: Option<&Path>,
) -> Option<Credentials> {
    if let Some(c) = explicit {
        return Some(c.clone());
    }
    let files = auth_file
        .map(Path::to_path_buf)
        .into_iter()
        .chain(docker_config_path());
    for f in files {
        // An unreadable file is not fatal here: fall through to the next source.
        if let Some(c) = AuthFile::read(&f).ok().and_then(|a| a.get(registry)) {
            return Some(c);
        }
    }
    None
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// `Basic realm=...`
    Basic,
    /// `Bearer realm=...,service=...,scope=...`
    Bearer {
        /// Token endpoint URL.
        realm: String,
        /// The `service` parameter to pass back.
        service: Option<String>,
        /// The scope the registry suggested.
        scope: Option<String>,
    },
}

/// Parses the first challenge of a `WWW-Authenticate` header value.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    let params = parse_params(rest);
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Some(Challenge::Basic),
        "bearer" => Some(Challenge::Bearer {
            realm: params.get("realm")?.clone(),
            service: params.get("service").cloned(),
            scope: params.get("scope").cloned(),
        }),
        _ => None,
    }
}

/// `key="quoted, value",key2=token` into a map (keys lowercased).
fn parse_params(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String =
            std::iter::from_fn(|| chars.next_if(|c| *c != '=' && *c != ',')).collect();
        if key.is_empty() {
            break;
        }
        if chars.next_if_eq(&'=').is_none() {
            continue;
        }
        let mut value = String::new();
        if chars.next_if_eq(&'"').is_some() {
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            value = std::iter::from_fn(|| chars.next_if(|c| *c != ','))
                .collect::<String>()
                .trim()
                .to_owned();
        }
        out.insert(key.trim().to_ascii_lowercase(), value);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_challenges() {
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull,push""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/busybox:pull,push".into()),
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(
            parse_challenge("bearer realm=http://x/t"),
            Some(Challenge::Bearer {
                realm: "http://x/t".into(),
                service: None,
                scope: None
            })
        );
        assert_eq!(parse_challenge("Bearer service=x"), None);
        assert_eq!(parse_challenge("Negotiate abc"), None);
    }

    #[test]
    fn auth_file_round_trip_and_docker_keys() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("auth.json");
        let mut f = AuthFile::read(&path).unwrap();
        f.set("localhost:5000", &Credentials::new("alice", "s3cr:et"));
        f.set("docker.io", &Credentials::new("bob", "pw"));
        f.write(&path).unwrap();
        let mode =
            std::os::unix::fs::PermissionsExt::mode(&fs::metadata(&path).unwrap().permissions());
        assert_eq!(mode & 0o777, 0o600);
        let f = AuthFile::read(&path).unwrap();
        assert_eq!(
            f.get("localhost:5000"),
            Some(Credentials::new("alice", "s3cr:et"))
        );
        assert_eq!(f.get("docker.io").unwrap().username, "bob");
        assert!(f.auths.contains_key(DOCKER_HUB_KEY));
        assert_eq!(f.get("localhost:5001"), None);

        let docker: AuthFile = serde_json::from_str(
            r#"{"auths":{"https://quay.io/v2/":{"auth":"dTpw"},"r.io":{"username":"x","password":"y"}},"credsStore":"desktop"}"#,
        )
        .unwrap();
        assert_eq!(docker.get("quay.io"), Some(Credentials::new("u", "p")));
        assert_eq!(docker.get("r.io"), Some(Credentials::new("x", "y")));
        assert!(serde_json::to_string(&docker)
            .unwrap()
            .contains("credsStore"));
        assert!(!format!("{:?}", Credentials::new("u", "hunter2")).contains("hunter2"));
    }

    #[test]
    fn explicit_credentials_win_then_auth_file() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("auth.json");
        let mut f = AuthFile::default();
        f.set("r:1", &Credentials::new("file", "pw"));
        f.write(&path).unwrap();
        let explicit = Credentials::new("flag", "pw");
        assert_eq!(
            find_credentials("r:1", Some(&explicit), Some(&path)),
            Some(explicit)
        );
        assert_eq!(
            find_credentials("r:1", None, Some(&path)).unwrap().username,
            "file"
        );
    }
}
