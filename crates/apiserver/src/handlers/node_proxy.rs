//! The pod subresources served by the pod's kubelet: `pods/log` (GET), `pods/exec`,
//! `pods/attach` and `pods/portforward` (GET or POST with an Upgrade). As kube-apiserver
//! does, the server picks the container (Kubernetes' defaulting and messages), finds the
//! node's kubelet (its InternalIP and `daemonEndpoints.kubeletEndpoint.Port`), connects
//! with its kubelet-client certificate and passes the kubelet's answer through: a log as a
//! stream, an upgraded connection (SPDY or WebSocket) byte for byte in both directions,
//! without looking at its frames.
//!
//! Trust: like kube-apiserver without `--kubelet-certificate-authority`, the kubelet's
//! (self-signed) serving certificate is not verified; the kubelet verifies the API server.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::Value;

use super::{Api, Reply, ReplyBody};
use crate::authn::UserInfo;
use crate::authz::{self, Attributes, Decision, ResourceAttributes};
use crate::kinds::str_at;
use crate::pki::Pki;
use crate::request::RequestInfo;
use crate::status::{ApiError, ApiResult};

/// The kubelet's port when the node does not say (`--port`'s default).
const DEFAULT_KUBELET_PORT: u64 = 10250;

/// Headers of an upgrade request the kubelet needs to answer it.
const UPGRADE_HEADERS: &[&str] = &[
    "connection",
    "upgrade",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "sec-websocket-extensions",
    "x-stream-protocol-version",
];

/// Whether the request is for a subresource served by the pod's kubelet.
pub(super) fn serves(info: &RequestInfo) -> bool {
    info.group.is_empty()
        && info.resource == "pods"
        && !info.name.is_empty()
        && matches!(
            info.subresource.as_str(),
            "log" | "exec" | "attach" | "portforward"
        )
}

/// The TLS the API server speaks to kubelets: its kubelet-client certificate, and no
/// verification of the kubelet's self-signed serving certificate.
pub fn kubelet_client_config(pki: &Pki) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = CertificateDer::pem_slice_iter(pki.kubelet_client.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let key = PrivateKeyDer::from_pem_slice(pki.kubelet_client.key_pem.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(UnverifiedKubelet(provider)))
        .with_client_auth_cert(certs, key)
        .map_err(|e| e.to_string())?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// TLS to in-cluster HTTPS servers behind the proxy subresources: no client certificate,
/// and, as kube-apiserver's proxy, no verification of the server's certificate.
pub(super) fn insecure_client_config() -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(UnverifiedKubelet(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Accepts any kubelet serving certificate (signatures are still checked).
#[derive(Debug)]
struct UnverifiedKubelet(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for UnverifiedKubelet {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The container a request is for: the one named, or the only one; Kubernetes' messages
/// otherwise.
pub(super) fn pick_container(pod: &Value, requested: &str) -> ApiResult<String> {
    let name = str_at(pod, "/metadata/name");
    let names = |field: &str| -> Vec<String> {
        pod.pointer(&format!("/spec/{field}"))
            .and_then(Value::as_array)
            .map(|cs| cs.iter().map(|c| str_at(c, "/name").to_string()).collect())
            .unwrap_or_default()
    };
    let (containers, init, ephemeral) = (
        names("containers"),
        names("initContainers"),
        names("ephemeralContainers"),
    );
    if requested.is_empty() {
        if containers.len() == 1 {
            return Ok(containers[0].clone());
        }
        let mut message = format!(
            "a container name must be specified for pod {name}, choose one of: [{}]",
            containers.join(" ")
        );
        if !init.is_empty() {
            message.push_str(&format!(
                " or one of the init containers: [{}]",
                init.join(" ")
            ));
        }
        if !ephemeral.is_empty() {
            message.push_str(&format!(
                " or one of the ephemeral containers: [{}]",
                ephemeral.join(" ")
            ));
        }
        return Err(ApiError::bad_request(message));
    }
    if [&containers, &init, &ephemeral]
        .iter()
        .any(|list| list.iter().any(|c| c == requested))
    {
        return Ok(requested.to_string());
    }
    Err(ApiError::bad_request(format!(
        "container {requested} is not valid for pod {name}"
    )))
}

/// The `host:port` of the node's kubelet.
pub(super) fn kubelet_address(node: &Value) -> Option<(String, u16)> {
    let addresses = node.pointer("/status/addresses")?.as_array()?;
    let address = ["InternalIP", "ExternalIP", "Hostname"]
        .iter()
        .find_map(|kind| {
            addresses
                .iter()
                .find(|a| str_at(a, "/type") == *kind)
                .map(|a| str_at(a, "/address").to_string())
        })?;
    let port = node
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_u64)
        .filter(|p| *p > 0)
        .unwrap_or(DEFAULT_KUBELET_PORT);
    Some((address, u16::try_from(port).ok()?))
}

/// A byte stream to a backend: TCP, or TLS over it.
pub(super) trait Stream:
    tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send
{
}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for T {}

/// Connects to `host:port` (10 s at most), speaking TLS over `tls` when given.
pub(super) async fn connect(
    tls: Option<Arc<rustls::ClientConfig>>,
    host: &str,
    port: u16,
) -> Result<Box<dyn Stream>, String> {
    let tcp = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tokio::net::TcpStream::connect((host, port)),
    )
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())?;
    let _ = tcp.set_nodelay(true);
    let Some(tls) = tls else {
        return Ok(Box::new(tcp));
    };
    let server_name = match host.parse::<std::net::IpAddr>() {
        Ok(ip) => ServerName::IpAddress(ip.into()),
        Err(_) => ServerName::try_from(host.to_string()).map_err(|e| e.to_string())?,
    };
    let tls = tokio_rustls::TlsConnector::from(tls)
        .connect(server_name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Box::new(tls))
}

/// An HTTP/1.1 connection to the kubelet at `host:port` over `tls` (upgrades allowed).
async fn dial(
    tls: Arc<rustls::ClientConfig>,
    host: &str,
    port: u16,
) -> Result<hyper::client::conn::http1::SendRequest<Empty<Bytes>>, String> {
    let stream = connect(Some(tls), host, port).await?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        if let Err(e) = connection.with_upgrades().await {
            tracing::debug!("kubelet connection: {e}");
        }
    });
    Ok(sender)
}

/// GETs `path` from the kubelet of `node` over `tls` (the resource metrics scraper); the
/// body of a 200, or why there is none.
pub(crate) async fn kubelet_get(
    tls: Arc<rustls::ClientConfig>,
    node: &Value,
    path: &str,
) -> Result<Bytes, String> {
    let (host, port) = kubelet_address(node).ok_or("the node has no address")?;
    let mut sender = dial(tls, &host, port)
        .await
        .map_err(|e| format!("dialing the kubelet at {host}:{port}: {e}"))?;
    let request = Request::builder()
        .uri(path)
        .header(hyper::header::HOST, format!("{host}:{port}"))
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    if !status.is_success() {
        return Err(format!(
            "the kubelet at {host}:{port} answered {status}: {}",
            String::from_utf8_lossy(&body).trim()
        ));
    }
    Ok(body)
}

/// Copies bytes both ways between two upgraded connections once both are upgraded.
pub(super) fn splice(
    from_client: hyper::upgrade::OnUpgrade,
    from_backend: hyper::upgrade::OnUpgrade,
) {
    tokio::spawn(async move {
        match tokio::try_join!(from_client, from_backend) {
            Ok((client, backend)) => {
                let (mut client, mut backend) = (TokioIo::new(client), TokioIo::new(backend));
                let _ = tokio::io::copy_bidirectional(&mut client, &mut backend).await;
            }
            Err(e) => tracing::debug!("proxied upgrade: {e}"),
        }
    });
}

/// A backend's body passed on, ending at its end (or at an error reading from it).
pub(super) fn passed_body(body: Incoming) -> super::Body {
    let stream = futures::stream::unfold(body, |mut body| async move {
        loop {
            match body.frame().await? {
                Ok(frame) => match frame.into_data() {
                    Ok(data) => return Some((Ok(Frame::data(data)), body)),
                    Err(_) => continue,
                },
                Err(_) => return None,
            }
        }
    });
    StreamBody::new(stream).boxed()
}

/// Serves `pods/{log,exec,attach,portforward}` by proxying to the kubelet.
pub(super) async fn proxy(
    api: &Api,
    mut request: Request<Incoming>,
    info: &RequestInfo,
    user: &UserInfo,
) -> ApiResult<Reply> {
    let method = request.method().clone();
    let subresource = info.subresource.as_str();
    let connect = subresource != "log";
    if !(method == hyper::Method::GET || (connect && method == hyper::Method::POST)) {
        return Err(ApiError::method_not_supported());
    }
    if connect && method == hyper::Method::GET {
        // A GET upgrade to exec, attach or port-forward acts as creating it (Kubernetes'
        // AuthorizePodWebsocketUpgradeCreatePermission): `get` alone is not enough.
        let attributes = Attributes {
            user,
            verb: "create",
            resource: Some(ResourceAttributes {
                group: "",
                resource: "pods",
                subresource,
                namespace: &info.namespace,
                name: &info.name,
            }),
            path: request.uri().path(),
        };
        match api.authorizer.authorize(&attributes) {
            Decision::Allow => {}
            Decision::Deny(reason) => {
                return Err(ApiError::forbidden(authz::forbidden_message(
                    &attributes,
                    &reason,
                )))
            }
            Decision::NoOpinion => {
                return Err(ApiError::forbidden(authz::forbidden_message(
                    &attributes,
                    "",
                )))
            }
        }
    }
    let pods = api
        .registry
        .by_kind("", "v1", "Pod")
        .ok_or_else(ApiError::path_not_found)?;
    let (pod, _) = api
        .storage
        .get(pods, &info.namespace, &info.name)
        .await?
        .ok_or_else(|| ApiError::not_found(pods, &info.name))?;
    let query: Vec<(String, String)> =
        form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let requested = query
        .iter()
        .rev()
        .find(|(k, _)| k == "container")
        .map(|(_, v)| v.as_str())
        .unwrap_or("");
    let container = if subresource == "portforward" {
        String::new()
    } else {
        pick_container(&pod, requested)?
    };
    let node_name = str_at(&pod, "/spec/nodeName");
    if node_name.is_empty() {
        return Err(ApiError::bad_request(format!(
            "pod {} does not have a host assigned",
            info.name
        )));
    }
    let nodes = api
        .registry
        .by_kind("", "v1", "Node")
        .ok_or_else(ApiError::path_not_found)?;
    let (node, _) = api
        .storage
        .get(nodes, "", node_name)
        .await?
        .ok_or_else(|| ApiError::not_found(nodes, node_name))?;
    let (host, port) = kubelet_address(&node).ok_or_else(|| {
        ApiError::new(
            503,
            "ServiceUnavailable",
            format!("node {node_name} has no address"),
        )
    })?;
    let tls = api
        .kubelet_client
        .clone()
        .ok_or_else(|| ApiError::internal("the API server has no kubelet client certificate"))?;

    let kubelet_query: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(query.iter().filter(|(k, _)| k != "container"))
        .finish();
    let (ns, pod_name) = (&info.namespace, &info.name);
    let path = match subresource {
        "log" => format!("/containerLogs/{ns}/{pod_name}/{container}"),
        "exec" => format!("/exec/{ns}/{pod_name}/{container}"),
        "attach" => format!("/attach/{ns}/{pod_name}/{container}"),
        _ => format!("/portForward/{ns}/{pod_name}"),
    };
    let uri = if kubelet_query.is_empty() {
        path
    } else {
        format!("{path}?{kubelet_query}")
    };

    let unavailable = |e: &dyn std::fmt::Display| {
        ApiError::new(
            503,
            "ServiceUnavailable",
            format!("error dialing the kubelet of node {node_name} at {host}:{port}: {e}"),
        )
    };
    let mut sender = dial(tls, &host, port).await.map_err(|e| unavailable(&e))?;

    let mut outgoing = Request::builder()
        .method(method)
        .uri(uri)
        .header(hyper::header::HOST, format!("{host}:{port}"));
    for name in UPGRADE_HEADERS {
        for value in request.headers().get_all(*name) {
            outgoing = outgoing.header(*name, value.clone());
        }
    }
    let outgoing = outgoing
        .body(Empty::<Bytes>::new())
        .map_err(ApiError::internal)?;
    let mut response = sender
        .send_request(outgoing)
        .await
        .map_err(|e| unavailable(&e))?;
    let status = response.status();

    if status == StatusCode::SWITCHING_PROTOCOLS {
        splice(
            hyper::upgrade::on(&mut request),
            hyper::upgrade::on(&mut response),
        );
        let mut reply = Response::new(super::full(Bytes::new()));
        *reply.status_mut() = status;
        *reply.headers_mut() = response.headers().clone();
        return Ok(Reply {
            status,
            body: ReplyBody::Response(reply),
            content_type: String::new(),
            warnings: Vec::new(),
        });
    }
    if !status.is_success() {
        // The kubelet's text becomes the Status message (the streamer's response check).
        let body = response
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let message = String::from_utf8_lossy(&body).trim().to_string();
        let (code, reason) = match status.as_u16() {
            400 => (400, "BadRequest"),
            401 | 403 => (403, "Forbidden"),
            404 => (404, "NotFound"),
            _ => (500, "InternalError"),
        };
        return Err(ApiError::new(code, reason, message));
    }
    let content_type = response
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("text/plain")
        .to_string();
    Ok(Reply {
        status: StatusCode::OK,
        body: ReplyBody::Stream(passed_body(response.into_body())),
        content_type,
        warnings: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn containers_are_picked_as_kubernetes_does() {
        let pod = json!({"metadata": {"name": "p"},
            "spec": {"containers": [{"name": "a"}, {"name": "b"}], "initContainers": [{"name": "i"}]}});
        assert_eq!(
            pick_container(&pod, "").unwrap_err().message,
            "a container name must be specified for pod p, choose one of: [a b] or one of the init containers: [i]"
        );
        assert_eq!(pick_container(&pod, "b").unwrap(), "b");
        assert_eq!(pick_container(&pod, "i").unwrap(), "i");
        assert_eq!(
            pick_container(&pod, "x").unwrap_err().message,
            "container x is not valid for pod p"
        );
        let single = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "only"}]}});
        assert_eq!(pick_container(&single, "").unwrap(), "only");
    }

    #[test]
    fn kubelet_address_from_the_node() {
        let node = json!({"status": {"addresses": [{"type": "Hostname", "address": "n"},
            {"type": "InternalIP", "address": "10.0.0.5"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 12345}}}});
        assert_eq!(
            kubelet_address(&node),
            Some(("10.0.0.5".to_string(), 12345))
        );
        let bare =
            json!({"status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.5"}]}});
        assert_eq!(kubelet_address(&bare).unwrap().1, 10250);
    }
}
