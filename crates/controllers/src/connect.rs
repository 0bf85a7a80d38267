//! How components find the API server: a kubeconfig file, a URL and bearer token, or the
//! admin kubeconfig a local `skiff server` wrote into the same `--root`.

use std::path::{Path, PathBuf};

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

/// A failure to build a client.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The kubeconfig could not be read or used.
    #[error("reading kubeconfig {path}: {source}")]
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: kube::config::KubeconfigError,
    },
    /// The server URL is malformed.
    #[error("invalid server URL {url:?}: {message}")]
    Url {
        /// The URL given.
        url: String,
        /// Why it is invalid.
        message: String,
    },
    /// The client could not be built.
    #[error("building the API client: {0}")]
    Client(#[from] kube::Error),
    /// Nothing says where the server is.
    #[error("no API server found: {root_kubeconfig} does not exist; start `skiff server` with the same --root, or pass --server and --token, or --kubeconfig")]
    NoServer {
        /// Where the local server's kubeconfig would be.
        root_kubeconfig: PathBuf,
    },
}

/// Where a component connects to.
#[derive(Debug, Clone, Default)]
pub struct Target {
    /// An explicit kubeconfig file.
    pub kubeconfig: Option<PathBuf>,
    /// An explicit server URL (with `token`).
    pub server: Option<String>,
    /// A bearer token for `server`.
    pub token: Option<String>,
    /// How `server`'s certificate is checked.
    pub trust: ServerTrust,
    /// The local server's admin kubeconfig (`DIR/server/admin.kubeconfig`), used when
    /// nothing explicit is given.
    pub root_kubeconfig: PathBuf,
}

/// How a client given only a URL checks the server's certificate.
#[derive(Debug, Clone, Default)]
pub enum ServerTrust {
    /// Not at all (`--insecure-skip-tls-verify`): whoever is in between can read the token.
    #[default]
    Unverified,
    /// It must be issued by one of these CA certificates (DER).
    RootCertificates(Vec<Vec<u8>>),
}

/// A client from a kubeconfig file (its current context).
pub async fn from_kubeconfig(path: &Path) -> Result<Client, ConnectError> {
    let err = |source| ConnectError::Kubeconfig {
        path: path.to_owned(),
        source,
    };
    let kubeconfig = Kubeconfig::read_from(path).map_err(err)?;
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(err)?;
    identify(&mut config);
    Ok(Client::try_from(config)?)
}

/// Names skiff in every request's User-Agent, as client-go names its binary: the API
/// server's default field manager is what comes before the first `/` (`skiff`), so the
/// objects skiff's components write show who manages their fields.
fn identify(config: &mut Config) {
    let agent = format!(
        "skiff/v{} ({}/{})",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::OS,
        std::env::consts::ARCH
    );
    if let Ok(value) = http::HeaderValue::from_str(&agent) {
        config.headers.push((http::header::USER_AGENT, value));
    }
}

/// A client for `target`: the explicit kubeconfig, else the URL and token (the server's
/// certificate checked as `trust` says), else the local server's kubeconfig.
pub async fn connect(target: &Target) -> Result<Client, ConnectError> {
    if let Some(path) = &target.kubeconfig {
        return from_kubeconfig(path).await;
    }
    if let Some(url) = &target.server {
        let uri = url
            .parse()
            .map_err(|e: http::uri::InvalidUri| ConnectError::Url {
                url: url.clone(),
                message: e.to_string(),
            })?;
        let mut config = Config::new(uri);
        match &target.trust {
            ServerTrust::Unverified => config.accept_invalid_certs = true,
            ServerTrust::RootCertificates(certs) => config.root_cert = Some(certs.clone()),
        }
        config.auth_info.token = target.token.clone().map(Into::into);
        identify(&mut config);
        return Ok(Client::try_from(config)?);
    }
    if target.root_kubeconfig.exists() {
        return from_kubeconfig(&target.root_kubeconfig).await;
    }
    Err(ConnectError::NoServer {
        root_kubeconfig: target.root_kubeconfig.clone(),
    })
}
