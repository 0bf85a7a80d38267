//! The kubelet's HTTPS API (the kubelet's `pkg/kubelet/server`), as the API server uses it
//! for `kubectl logs`, `exec`, `attach`, `port-forward` and `cp`:
//!
//! | path | what |
//! |---|---|
//! | `GET /containerLogs/{ns}/{pod}/{container}` | the container's log ([`logs`]) |
//! | `GET/POST /exec/{ns}/{pod}/{container}?command=..` | a command in the container ([`streaming`]) |
//! | `GET/POST /attach/{ns}/{pod}/{container}` | the container's own stdio |
//! | `GET/POST /portForward/{ns}/{pod}` | TCP connections to the pod's ports |
//! | `GET /metrics/resource` | cpu and memory of the node, pods, containers ([`crate::stats`]) |
//! | `GET /stats/summary` | the same figures as the Summary API's JSON |
//!
//! Trust: every request must present a client certificate signed by the cluster CA (the API
//! server's kubelet-client certificate); anonymous requests get 401. Clients are not told
//! apart further (the kubelet's `AlwaysAllow` authorization with x509 authentication). Like
//! a kubelet started without `--tls-cert-file`, the serving certificate is self-signed.

pub mod logs;
pub mod streaming;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, Client};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::cri::{self, ContainerStatus};
use crate::Runtime;

/// The kubelet's default HTTPS port (`--port`).
pub const DEFAULT_PORT: u16 = 10250;

/// The body of every response.
pub type Body = BoxBody<Bytes, std::io::Error>;

/// Why the kubelet's server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The TLS configuration was refused.
    #[error("configuring the kubelet's TLS: {0}")]
    Tls(String),
    /// The port could not be bound.
    #[error("listening on port {port}: {source}")]
    Bind {
        /// The port.
        port: u16,
        /// Why.
        source: std::io::Error,
    },
}

/// An error answered as plain text, as the kubelet answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The text.
    pub message: String,
}

impl HttpError {
    /// A 400 with `message`.
    pub fn bad_request(message: impl Into<String>) -> HttpError {
        HttpError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    /// A 404 with `message`.
    pub fn not_found(message: impl Into<String>) -> HttpError {
        HttpError {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
        }
    }

    /// A 500 with `message`.
    pub fn internal(message: impl Into<String>) -> HttpError {
        HttpError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: message.into(),
        }
    }

    fn into_response(self) -> Response<Body> {
        text(self.status, self.message)
    }
}

/// A plain-text response.
pub(crate) fn text(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    let mut response = Response::new(full(message.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

pub(crate) fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

/// What the handlers share: the runtime, the API (for pods' specs and statuses), and
/// where usage is read.
pub struct State {
    /// The container runtime.
    pub runtime: Arc<dyn Runtime>,
    /// The API client.
    pub client: Client,
    /// The node's name.
    pub node_name: String,
    /// The pods' cgroups, when the kubelet keeps them (pods' own usage).
    pub pod_cgroups: Option<Arc<crate::cgroups::PodCgroups>>,
    /// The host's usage.
    pub host: Arc<dyn crate::stats::HostStats>,
}

impl State {
    /// Measures the node and its pods (file reads: off the async threads).
    async fn summary(self: &Arc<Self>) -> Result<crate::stats::Summary, HttpError> {
        let state = self.clone();
        tokio::task::spawn_blocking(move || {
            crate::stats::summarize(
                &state.node_name,
                state.runtime.as_ref(),
                state.pod_cgroups.as_deref(),
                state.host.as_ref(),
            )
        })
        .await
        .map_err(|e| HttpError::internal(format!("measuring usage: {e}")))
    }
}

impl State {
    /// The pod, from the API.
    pub async fn pod(&self, namespace: &str, name: &str) -> Result<Pod, HttpError> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        match api.get_opt(name).await {
            Ok(Some(pod)) => Ok(pod),
            Ok(None) => Err(HttpError::not_found(format!("pod \"{name}\" not found"))),
            Err(e) => Err(HttpError::internal(format!(
                "getting pod {namespace}/{name}: {e}"
            ))),
        }
    }

    /// The instances of one container of the pod on this node, newest first.
    pub fn instances(&self, pod: &Pod, container: &str) -> Result<Vec<ContainerStatus>, HttpError> {
        let meta = &pod.metadata;
        let mut labels = cri::pod_labels(
            meta.name.as_deref().unwrap_or(""),
            meta.namespace.as_deref().unwrap_or(""),
            meta.uid.as_deref().unwrap_or(""),
        );
        labels.insert(cri::CONTAINER_NAME_LABEL.into(), container.into());
        let mut found = self
            .runtime
            .list_containers(&labels)
            .map_err(|e| HttpError::internal(e.to_string()))?;
        found.sort_by_key(|c| std::cmp::Reverse((c.attempt(), c.created_at)));
        Ok(found)
    }

    /// The running instance of the container, for exec and attach.
    pub fn running_container(&self, pod: &Pod, container: &str) -> Result<String, HttpError> {
        self.instances(pod, container)?
            .into_iter()
            .find(|c| c.state == cri::ContainerState::Running)
            .map(|c| c.id)
            .ok_or_else(|| HttpError::not_found(format!("container not found (\"{container}\")")))
    }

    /// The pod's ready sandbox, for port-forward.
    pub fn sandbox(&self, pod: &Pod) -> Result<String, HttpError> {
        let meta = &pod.metadata;
        let labels = cri::pod_labels(
            meta.name.as_deref().unwrap_or(""),
            meta.namespace.as_deref().unwrap_or(""),
            meta.uid.as_deref().unwrap_or(""),
        );
        self.runtime
            .list_pod_sandboxes(&labels)
            .map_err(|e| HttpError::internal(e.to_string()))?
            .into_iter()
            .find(|s| s.state == cri::SandboxState::Ready)
            .map(|s| s.id)
            .ok_or_else(|| {
                HttpError::not_found(format!(
                    "pod {} has no running sandbox",
                    meta.name.as_deref().unwrap_or("")
                ))
            })
    }
}

/// The kubelet's TLS: a self-signed serving certificate for `names` (the node's name and
/// address), client certificates verified against `client_ca_pem` (optional at the TLS
/// level, so that anonymous requests get a 401 rather than a failed handshake).
pub fn tls_config(
    client_ca_pem: &str,
    names: &[String],
) -> Result<rustls::ServerConfig, ServerError> {
    let tls = |e: &dyn std::fmt::Display| ServerError::Tls(e.to_string());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(client_ca_pem.as_bytes()) {
        roots.add(ca.map_err(|e| tls(&e))?).map_err(|e| tls(&e))?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .map_err(|e| tls(&e))?;
    let certified = rcgen::generate_simple_self_signed(names.to_vec()).map_err(|e| tls(&e))?;
    let cert = certified.cert.der().clone();
    let key = PrivateKeyDer::from_pem_slice(certified.signing_key.serialize_pem().as_bytes())
        .map_err(|e| tls(&e))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls(&e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![cert], key)
        .map_err(|e| tls(&e))?;
    // Streaming upgrades (SPDY, WebSocket) are HTTP/1.1.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Binds `0.0.0.0:port` and serves the kubelet API in the background.
pub async fn start(
    port: u16,
    tls: rustls::ServerConfig,
    state: Arc<State>,
) -> Result<tokio::task::JoinHandle<()>, ServerError> {
    let listener = TcpListener::bind(("0.0.0.0", port))
        .await
        .map_err(|source| ServerError::Bind { port, source })?;
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    Ok(tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            tokio::spawn(serve_connection(state.clone(), acceptor.clone(), tcp));
        }
    }))
}

async fn serve_connection(state: Arc<State>, acceptor: TlsAcceptor, tcp: tokio::net::TcpStream) {
    let tls = match acceptor.accept(tcp).await {
        Ok(tls) => tls,
        Err(e) => {
            tracing::debug!("kubelet TLS handshake failed: {e}");
            return;
        }
    };
    let authenticated = tls
        .get_ref()
        .1
        .peer_certificates()
        .is_some_and(|certs| !certs.is_empty());
    let service = service_fn(move |request| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(route(state, request, authenticated).await) }
    });
    if let Err(e) = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(tls), service)
        .with_upgrades()
        .await
    {
        tracing::debug!("kubelet connection ended: {e}");
    }
}

/// Decoded query parameters, repeated ones kept in order (`command=a&command=b`).
#[derive(Debug, Clone, Default)]
pub struct Query(Vec<(String, String)>);

impl Query {
    /// Parses a query string.
    pub fn parse(query: Option<&str>) -> Query {
        Query(
            form_urlencoded::parse(query.unwrap_or("").as_bytes())
                .into_owned()
                .collect(),
        )
    }

    /// The last value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `key`, in order.
    pub fn all(&self, key: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Whether `key` is `true` or `1`.
    pub fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true" | "1"))
    }
}

async fn route(
    state: Arc<State>,
    request: Request<Incoming>,
    authenticated: bool,
) -> Response<Body> {
    if !authenticated {
        return text(StatusCode::UNAUTHORIZED, "Unauthorized");
    }
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let query = Query::parse(request.uri().query());
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let get = method == hyper::Method::GET;
    let get_or_post = get || method == hyper::Method::POST;
    let result = match parts.as_slice() {
        ["healthz"] if get => Ok(text(StatusCode::OK, "ok")),
        ["metrics", "resource"] if get => state.summary().await.map(|s| {
            let mut response = text(StatusCode::OK, crate::stats::resource_metrics_text(&s));
            response.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }),
        ["stats", "summary"] if get => state.summary().await.map(|s| {
            let body = crate::stats::summary_json(&s).to_string();
            let mut response = text(StatusCode::OK, body);
            response.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("application/json"),
            );
            response
        }),
        ["containerLogs", ns, pod, container] if get => {
            logs::serve(&state, ns, pod, container, &query).await
        }
        ["exec", ns, pod, container] if get_or_post => {
            let target = streaming::Target::container(ns, pod, container);
            streaming::exec(state.clone(), request, target, &query).await
        }
        ["attach", ns, pod, container] if get_or_post => {
            let target = streaming::Target::container(ns, pod, container);
            streaming::attach(state.clone(), request, target, &query).await
        }
        ["portForward", ns, pod] if get_or_post => {
            let target = streaming::Target::container(ns, pod, "");
            streaming::port_forward(state.clone(), request, target, &query).await
        }
        _ => Err(HttpError::not_found("404 page not found")),
    };
    result.unwrap_or_else(HttpError::into_response)
}
