//! The HTTPS side of a webhook call: where a `clientConfig` points (a URL, or a Service
//! reached through its endpoints), TLS verified against the configuration's `caBundle`,
//! and one JSON POST per call.
//!
//! Kubernetes dials a Service's cluster IP; skiff has no service proxy in the API server's
//! path, so a Service reference is resolved to one of its ready endpoint addresses (from
//! its Endpoints, else its EndpointSlices), while TLS still verifies the name
//! `<service>.<namespace>.svc`, as Kubernetes does.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::Uri;
use hyper_util::rt::TokioIo;
use rand::seq::SliceRandom;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::kinds::{array_at, str_at, REGISTRY};
use crate::storage::Storage;

/// The largest webhook response read.
const MAX_RESPONSE_BYTES: usize = 3 * 1024 * 1024;

/// A webhook's `clientConfig`, ready to call.
pub(crate) struct Client {
    target: Target,
    tls: TlsConnector,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

/// Where the webhook listens.
#[derive(Debug)]
enum Target {
    /// `clientConfig.url`: `https://host[:port]/path`.
    Url {
        /// Host as written (a DNS name or an IP address, without brackets).
        host: String,
        port: u16,
        /// Path and query, `/` at least.
        path_and_query: String,
    },
    /// `clientConfig.service`.
    Service {
        namespace: String,
        name: String,
        port: u16,
        path: String,
    },
}

impl Client {
    /// The client for a `clientConfig`; the error says what is wrong with it.
    pub fn from_json(config: &Value) -> Result<Client, String> {
        let target = match (
            config.get("url").and_then(Value::as_str),
            config.get("service"),
        ) {
            (Some(url), None) => url_target(url)?,
            (None, Some(service)) => Target::Service {
                namespace: str_at(service, "/namespace").to_owned(),
                name: str_at(service, "/name").to_owned(),
                port: match service.get("port").and_then(Value::as_i64) {
                    None => 443,
                    Some(port) => u16::try_from(port)
                        .ok()
                        .filter(|p| *p > 0)
                        .ok_or_else(|| format!("invalid service port {port}"))?,
                },
                path: match str_at(service, "/path") {
                    "" => "/".to_owned(),
                    path => path.to_owned(),
                },
            },
            _ => {
                return Err(
                    "exactly one of clientConfig.url and clientConfig.service must be set"
                        .to_owned(),
                )
            }
        };
        let ca_bundle = match config.get("caBundle").and_then(Value::as_str) {
            Some(encoded) => BASE64
                .decode(encoded)
                .map_err(|e| format!("decoding clientConfig.caBundle: {e}"))?,
            None => Vec::new(),
        };
        Ok(Client {
            target,
            tls: TlsConnector::from(Arc::new(tls_config(&ca_bundle)?)),
        })
    }

    /// The URL as Kubernetes reports it in errors, with the `timeout` query it adds.
    pub fn url(&self, timeout: Duration) -> String {
        let timeout = format!("timeout={}s", timeout.as_secs());
        match &self.target {
            Target::Url {
                host,
                port,
                path_and_query,
            } => {
                let sep = if path_and_query.contains('?') {
                    '&'
                } else {
                    '?'
                };
                let host = if host.contains(':') {
                    format!("[{host}]")
                } else {
                    host.clone()
                };
                format!("https://{host}:{port}{path_and_query}{sep}{timeout}")
            }
            Target::Service {
                namespace,
                name,
                port,
                path,
            } => format!("https://{name}.{namespace}.svc:{port}{path}?{timeout}"),
        }
    }

    /// POSTs `body` (JSON) and returns the response body; the whole exchange is bounded by
    /// `timeout`. Errors read as Go's `Post "<url>": <cause>`, which is what users of
    /// kube-apiserver see.
    pub async fn post(
        &self,
        storage: &Storage,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, String> {
        let url = self.url(timeout);
        match tokio::time::timeout(timeout, self.exchange(storage, &url, body)).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(Failure::Transport(cause))) => Err(format!("Post \"{url}\": {cause}")),
            Ok(Err(Failure::Status(message))) => Err(message),
            Err(_) => Err(format!("Post \"{url}\": context deadline exceeded")),
        }
    }

    async fn exchange(
        &self,
        storage: &Storage,
        url: &str,
        body: Vec<u8>,
    ) -> Result<Vec<u8>, Failure> {
        let (server_name, tcp) = match &self.target {
            Target::Url { host, port, .. } => {
                let tcp = TcpStream::connect((host.as_str(), *port))
                    .await
                    .map_err(|e| dial_error(&format!("{host}:{port}"), &e))?;
                (host.clone(), tcp)
            }
            Target::Service {
                namespace,
                name,
                port,
                ..
            } => {
                let addr = resolve_service(storage, namespace, name, *port)
                    .await
                    .map_err(Failure::Transport)?;
                let tcp = TcpStream::connect(addr)
                    .await
                    .map_err(|e| dial_error(&addr.to_string(), &e))?;
                (format!("{name}.{namespace}.svc"), tcp)
            }
        };
        let name = ServerName::try_from(server_name.clone())
            .map_err(|e| Failure::Transport(format!("invalid server name {server_name}: {e}")))?;
        let tls = self
            .tls
            .connect(name, tcp)
            .await
            .map_err(|e| Failure::Transport(tls_error(&e)))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| Failure::Transport(e.to_string()))?;
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!("webhook connection: {err}");
            }
        });
        let uri: Uri = url
            .parse()
            .map_err(|e| Failure::Transport(format!("invalid URL: {e}")))?;
        let authority = uri
            .authority()
            .map(|a| a.as_str().to_owned())
            .unwrap_or_default();
        let path = uri
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| "/".to_owned());
        let request = hyper::Request::post(path)
            .header(hyper::header::HOST, authority)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(hyper::header::ACCEPT, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| Failure::Transport(e.to_string()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| Failure::Transport(e.to_string()))?;
        let status = response.status();
        let bytes = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| Failure::Transport(format!("reading the response: {e}")))?
            .to_bytes();
        if !status.is_success() {
            // What client-go's REST client says of an error status without a Status body.
            let text = String::from_utf8_lossy(&bytes);
            let text = text.trim();
            return Err(Failure::Status(if text.is_empty() {
                format!(
                    "the server responded with the status code {} but did not return more information",
                    status.as_u16()
                )
            } else {
                let short: String = text.chars().take(256).collect();
                format!("an error on the server (\"{short}\") has prevented the request from succeeding")
            }));
        }
        Ok(bytes.to_vec())
    }
}

/// Why an exchange failed.
enum Failure {
    /// The request never got an answer (reported with the URL).
    Transport(String),
    /// The webhook answered with an error status.
    Status(String),
}

/// A connection error as Go's dialer words it (`dial tcp 127.0.0.1:1: connect: connection
/// refused`).
fn dial_error(addr: &str, err: &std::io::Error) -> Failure {
    let cause = match err.kind() {
        std::io::ErrorKind::ConnectionRefused => "connect: connection refused".to_owned(),
        _ => err.to_string(),
    };
    Failure::Transport(format!("dial tcp {addr}: {cause}"))
}

fn tls_error(err: &std::io::Error) -> String {
    match err
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::InvalidCertificate(cause)) => {
            format!("tls: failed to verify certificate: {cause:?}")
        }
        Some(other) => format!("tls: {other}"),
        None => format!("tls: {err}"),
    }
}

fn url_target(url: &str) -> Result<Target, String> {
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("invalid clientConfig.url {url:?}: {e}"))?;
    if uri.scheme_str() != Some("https") {
        return Err(format!(
            "clientConfig.url {url:?} must use the https scheme"
        ));
    }
    let host = uri
        .host()
        .ok_or_else(|| format!("clientConfig.url {url:?} has no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    Ok(Target::Url {
        host,
        port: uri.port_u16().unwrap_or(443),
        path_and_query: uri
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "/".to_owned()),
    })
}

/// A TLS client trusting only the certificates of `ca_bundle` (PEM). Without a bundle no
/// server verifies: skiff does not read the system's trust store.
fn tls_config(ca_bundle: &[u8]) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_bundle) {
        let cert = cert.map_err(|e| format!("reading clientConfig.caBundle: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("reading clientConfig.caBundle: {e}"))?;
    }
    if !ca_bundle.is_empty() && roots.is_empty() {
        return Err("clientConfig.caBundle holds no PEM certificate".to_owned());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// One ready address of Service `namespace/name` for its port `port`: the Service's port
/// entry gives the port's name, the Endpoints (or EndpointSlices) of that name give
/// addresses and the target port.
async fn resolve_service(
    storage: &Storage,
    namespace: &str,
    name: &str,
    port: u16,
) -> Result<SocketAddr, String> {
    let def = |kind: &str, group: &str| {
        REGISTRY
            .by_kind(group, "v1", kind)
            .ok_or_else(|| format!("{kind} is not served"))
    };
    let service = storage
        .get(def("Service", "")?, namespace, name)
        .await
        .map_err(|e| e.message)?
        .ok_or_else(|| format!("service \"{name}\" not found"))?
        .0;
    let port_name = array_at(&service, "/spec/ports")
        .iter()
        .find(|p| p.get("port").and_then(Value::as_i64) == Some(i64::from(port)))
        .map(|p| str_at(p, "/name").to_owned())
        .ok_or_else(|| format!("no service port {port} found for service \"{name}\""))?;
    let mut candidates = Vec::new();
    if let Some((endpoints, _)) = storage
        .get(def("Endpoints", "")?, namespace, name)
        .await
        .map_err(|e| e.message)?
    {
        for subset in array_at(&endpoints, "/subsets") {
            let Some(target) = named_port(array_at(subset, "/ports"), &port_name) else {
                continue;
            };
            for address in array_at(subset, "/addresses") {
                if let Ok(ip) = str_at(address, "/ip").parse() {
                    candidates.push(SocketAddr::new(ip, target));
                }
            }
        }
    }
    if candidates.is_empty() {
        let slices = def("EndpointSlice", "discovery.k8s.io")?;
        let page = storage
            .list(&Storage::prefix(slices, Some(namespace)), None, None, None)
            .await
            .map_err(|e| e.message)?;
        for (_, slice) in page.items {
            if str_at(&slice, "/metadata/labels/kubernetes.io~1service-name") != name {
                continue;
            }
            let Some(target) = named_port(array_at(&slice, "/ports"), &port_name) else {
                continue;
            };
            for endpoint in array_at(&slice, "/endpoints") {
                if endpoint.pointer("/conditions/ready") == Some(&Value::Bool(false)) {
                    continue;
                }
                if let Some(ip) = array_at(endpoint, "/addresses")
                    .first()
                    .and_then(Value::as_str)
                    .and_then(|a| a.parse().ok())
                {
                    candidates.push(SocketAddr::new(ip, target));
                }
            }
        }
    }
    candidates
        .choose(&mut rand::thread_rng())
        .copied()
        .ok_or_else(|| format!("no endpoints available for service \"{name}\""))
}

/// The number of the endpoint port called `name` (endpoint ports carry the names of the
/// Service's ports; a single unnamed port matches an unnamed Service port).
fn named_port(ports: &[Value], name: &str) -> Option<u16> {
    ports
        .iter()
        .find(|p| str_at(p, "/name") == name)
        .and_then(|p| p.get("port").and_then(Value::as_u64))
        .and_then(|p| u16::try_from(p).ok())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn urls_as_reported() {
        let client = Client::from_json(&json!({"url": "https://127.0.0.1:8443/mutate"})).unwrap();
        assert_eq!(
            client.url(Duration::from_secs(10)),
            "https://127.0.0.1:8443/mutate?timeout=10s"
        );
        let client = Client::from_json(&json!({"url": "https://hooks.example.com/v?x=1"})).unwrap();
        assert_eq!(
            client.url(Duration::from_secs(5)),
            "https://hooks.example.com:443/v?x=1&timeout=5s"
        );
        let client = Client::from_json(
            &json!({"service": {"namespace": "ns", "name": "hooks", "path": "/validate"}}),
        )
        .unwrap();
        assert_eq!(
            client.url(Duration::from_secs(30)),
            "https://hooks.ns.svc:443/validate?timeout=30s"
        );
    }

    #[test]
    fn bad_client_configs() {
        let err = |config: Value| Client::from_json(&config).unwrap_err();
        assert!(err(json!({"url": "http://127.0.0.1/x"})).contains("https"));
        assert!(err(json!({})).contains("exactly one"));
        assert!(err(json!({"url": "https://a/", "caBundle": "!!"})).contains("caBundle"));
        assert!(
            err(json!({"url": "https://a/", "caBundle": BASE64.encode("junk")}))
                .contains("no PEM certificate")
        );
    }
}
