//! Registry client: pull and push over the OCI distribution protocol, and login.

pub mod auth;
pub mod client;
mod pull;
mod push;

use std::path::{Path, PathBuf};

pub use auth::{AuthFile, Credentials};
pub use client::Client;
pub use pull::pull;
pub use push::push;

use crate::digest::Digest;
use crate::manifest::{ManifestError, Platform};

use crate::store::StoreError;

/// Errors from talking to a registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The registry could not be reached at all.
    #[error("cannot reach registry {registry}: {detail}{hint}")]
    Unreachable {
        /// host[:port].
        registry: String,
        /// Transport error chain.
        detail: String,
        /// What to try (e.g. pass --insecure).
        hint: String,
    },
    /// A transport or protocol error.
    #[error("registry {registry}: {detail}")]
    Http {
        /// host[:port].
        registry: String,
        /// What went wrong.
        detail: String,
    },
    /// The registry wants credentials and none were found.
    #[error("registry {registry} requires authentication: run `skiff login {registry}` or pass credentials")]
    AuthRequired {
        /// host[:port].
        registry: String,
    },
    /// The registry rejected the credentials.
    #[error("authentication to registry {registry} failed: invalid username or password (run `skiff login {registry}` again)")]
    AuthFailed {
        /// host[:port].
        registry: String,
    },
    /// Access to a repository was denied.
    #[error("access to {what} on {registry} denied: check the name, or log in with `skiff login {registry}`")]
    Denied {
        /// The thing accessed.
        what: String,
        /// host[:port].
        registry: String,
    },
    /// The manifest (tag or digest) does not exist.
    #[error("manifest unknown: {0}")]
    ManifestUnknown(String),
    /// The repository does not exist.
    #[error("repository unknown: {0}")]
    NameUnknown(String),
    /// Any other error response.
    #[error("registry error for {what}: {status} {code} {message}")]
    Registry {
        /// The thing accessed.
        what: String,
        /// HTTP status.
        status: u16,
        /// The distribution error code.
        code: String,
        /// The registry's message.
        message: String,
    },
    /// Content does not match its digest.
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        /// Which content.
        what: String,
        /// The announced digest.
        expected: Digest,
        /// What arrived.
        actual: Digest,
    },
    /// An index has no manifest for the wanted platform.
    #[error("no matching manifest for {platform} in the manifest list of {reference} (available: {available}); pass --platform to choose one")]
    NoMatchingPlatform {
        /// The reference pulled.
        reference: String,
        /// The platform wanted (`os/arch[/variant]`).
        platform: String,
        /// The platforms listed.
        available: String,
    },
    /// A URL from the registry (realm, Location) is invalid.
    #[error("invalid URL from registry: {0:?}")]
    InvalidUrl(String),
    /// The auth file cannot be read or written.
    #[error("auth file {path}: {reason}")]
    AuthFile {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A manifest is invalid or unsupported.
    #[error("{reference}: {source}")]
    Manifest {
        /// The reference.
        reference: String,
        /// What is wrong.
        #[source]
        source: ManifestError,
    },
    /// The local store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Options for [`pull`].
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// The platform to pick from an index; the host's when `None`.
    pub platform: Option<Platform>,
    /// Allow plain HTTP and unverified TLS.
    pub insecure: bool,
    /// Credentials overriding the auth files.
    pub credentials: Option<Credentials>,
    /// skiff's auth file; `<data-root>/auth.json` (see `ImageStore::auth_file`) when `None`.
    pub auth_file: Option<PathBuf>,
}

/// Options for [`push`].
#[derive(Debug, Clone, Default)]
pub struct PushOptions {
    /// Allow plain HTTP and unverified TLS.
    pub insecure: bool,
    /// Credentials overriding the auth files.
    pub credentials: Option<Credentials>,
    /// skiff's auth file; `<data-root>/auth.json` when `None`.
    pub auth_file: Option<PathBuf>,
}

/// Checks `credentials` against `registry` and stores them in `auth_file` (`docker login`).
pub async fn login(
    auth_file: &Path,
    registry: &str,
    credentials: &Credentials,
    insecure: bool,
) -> Result<(), RegistryError> {
    let registry = canonical_registry(registry);
    Client::connect(&registry, "", "pull", Some(credentials.clone()), insecure).await?;
    let mut file = AuthFile::read(auth_file)?;
    file.set(&registry, credentials);
    file.write(auth_file)
}

/// Forgets the credentials for `registry`; true if there were any (`docker logout`).
pub fn logout(auth_file: &Path, registry: &str) -> Result<bool, RegistryError> {
    let registry = canonical_registry(registry);
    let mut file = AuthFile::read(auth_file)?;
    let removed = file.remove(&registry);
    if removed {
        file.write(auth_file)?;
    }
    Ok(removed)
}

/// `https://host/v2/` or `host` into the registry name used in references.
fn canonical_registry(registry: &str) -> String {
    let r = registry
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = r.split('/').next().unwrap_or(r);
    match host {
        "index.docker.io" | "registry-1.docker.io" | "" => {
            crate::reference::DEFAULT_REGISTRY.to_owned()
        }
        h => h.to_owned(),
    }
}

/// A reqwest error with its sources, which carry the useful part (connection refused, TLS).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let msg = inner.to_string();
        if !s.contains(&msg) {
            s.push_str(": ");
            s.push_str(&msg);
        }
        src = inner.source();
    }
    s
}
