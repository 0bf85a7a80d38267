//! The listening side: binds the address, optionally wraps connections in TLS, and serves
//! HTTP/1.1 and HTTP/2 (ALPN) with the registry router until told to stop.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::auth::{Authenticator, Htpasswd, HtpasswdError};
use crate::core::Registry;
use crate::http::{router, AppState};
use crate::storage::{FsStorage, StorageError};

/// Errors from starting the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The certificate or key cannot be loaded.
    #[error("TLS certificate {cert} / key {key}: {reason}")]
    Tls {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The storage directory cannot be opened.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The htpasswd file cannot be read.
    #[error(transparent)]
    Htpasswd(#[from] HtpasswdError),
}

/// How to run a registry.
#[derive(Debug, Clone)]
pub struct Config {
    /// The address to listen on (port 0 picks a free one).
    pub addr: SocketAddr,
    /// The storage directory.
    pub root: PathBuf,
    /// Certificate chain and private key (PEM) to serve HTTPS; plain HTTP when `None`.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// htpasswd file (bcrypt) enabling authentication.
    pub htpasswd: Option<PathBuf>,
    /// Let clients without credentials pull when authentication is on.
    pub anonymous_pull: bool,
}

/// A bound, not yet serving, registry.
pub struct Server {
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    state: AppState,
}

fn tls_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, ServerError> {
    let err = |reason: String| ServerError::Tls {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| err(format!("reading the certificate: {e}")))?;
    if certs.is_empty() {
        return Err(err("no certificate in the file".into()));
    }
    let key =
        PrivateKeyDer::from_pem_file(key).map_err(|e| err(format!("reading the key: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| err(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| err(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

impl Server {
    /// Opens the storage, loads TLS and htpasswd files and binds the address.
    pub async fn bind(config: &Config) -> Result<Self, ServerError> {
        let storage = FsStorage::open(&config.root)?;
        let tls = config
            .tls
            .as_ref()
            .map(|(cert, key)| tls_acceptor(cert, key))
            .transpose()?;
        let auth = config
            .htpasswd
            .as_deref()
            .map(Htpasswd::read)
            .transpose()?
            .map(|users| Arc::new(Authenticator::new(users, config.anonymous_pull)));
        let listener =
            TcpListener::bind(config.addr)
                .await
                .map_err(|source| ServerError::Bind {
                    addr: config.addr,
                    source,
                })?;
        Ok(Self {
            listener,
            state: AppState {
                registry: Arc::new(Registry::new(Arc::new(storage))),
                auth,
                tls: tls.is_some(),
            },
            tls,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The base URL clients use (`http://` or `https://` plus the address).
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.local_addr())
    }

    /// Serves until `shutdown` completes; connections in flight are dropped with the runtime.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        let app = router(self.state);
        tokio::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of descriptors and the like: keep serving the others.
                        tracing::warn!(error = %e, "accept failed");
                        continue;
                    }
                },
                () = &mut shutdown => return,
            };
            let _ = stream.set_nodelay(true);
            let service = TowerToHyperService::new(app.clone());
            let tls = self.tls.clone();
            tokio::spawn(async move {
                let builder = auto::Builder::new(TokioExecutor::new());
                let result = match tls {
                    None => {
                        builder
                            .serve_connection(TokioIo::new(stream), service)
                            .await
                    }
                    Some(acceptor) => match acceptor.accept(stream).await {
                        Ok(tls) => builder.serve_connection(TokioIo::new(tls), service).await,
                        Err(e) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                    },
                };
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
            });
        }
    }
}
