//! The `proxy` subresources of pods, services and nodes: kube-apiserver's way to reach
//! HTTP servers inside the cluster (`kubectl proxy`, `kubectl get --raw`, dashboards).
//!
//! `/api/v1/namespaces/NS/pods/[SCHEME:]NAME[:PORT]/proxy/PATH` goes to the pod's IP,
//! `/api/v1/namespaces/NS/services/[SCHEME:]NAME[:PORT]/proxy/PATH` to a ready endpoint of
//! the service's port (by port name or number), and `/api/v1/nodes/[SCHEME:]NAME[:PORT]/proxy/PATH`
//! to the node's kubelet (HTTPS with the API server's kubelet-client certificate) or another
//! port of the node. Any method, with the request's query and body; the answer comes back
//! as it is, except that hop-by-hop headers are dropped and an absolute `Location` is
//! rewritten to stay behind the proxy. Upgrades (WebSocket) are passed through.
//!
//! Trust, as in kube-apiserver: HTTPS backends' certificates are not verified, and the
//! caller's credentials are not forwarded.

use std::sync::Arc;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;

use super::node_proxy::{connect, insecure_client_config, kubelet_address, passed_body, splice};
use super::{Api, Reply, ReplyBody};
use crate::kinds::str_at;
use crate::request::RequestInfo;
use crate::status::{ApiError, ApiResult};

/// Headers that belong to one connection and are never forwarded (RFC 9110 §7.6.1), plus
/// the caller's credentials.
const DROPPED_REQUEST_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "proxy-connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "host",
];

/// Whether the request is for a `proxy` subresource this module serves.
pub(super) fn serves(info: &RequestInfo) -> bool {
    info.group.is_empty()
        && info.subresource == "proxy"
        && !info.name.is_empty()
        && matches!(info.resource.as_str(), "pods" | "services" | "nodes")
}

/// `[scheme:]name[:port]`, split as Kubernetes' `SplitSchemeNamePort` does.
#[derive(Debug, PartialEq, Eq)]
struct Target<'a> {
    scheme: &'a str,
    name: &'a str,
    port: &'a str,
}

fn split_target(id: &str) -> Option<Target<'_>> {
    let parts: Vec<&str> = id.split(':').collect();
    let target = match parts.as_slice() {
        [name] => Target {
            scheme: "",
            name,
            port: "",
        },
        [name, port] => Target {
            scheme: "",
            name,
            port,
        },
        [scheme, name, port] => Target { scheme, name, port },
        _ => return None,
    };
    if target.name.is_empty() || !matches!(target.scheme, "" | "http" | "https") {
        return None;
    }
    Some(target)
}

/// The path after `.../NAME/proxy` (with its leading slash, "" when there is none).
fn rest_of_path<'a>(path: &'a str, info: &RequestInfo) -> &'a str {
    // The proxy segment follows the resource and the name: find the resource segment
    // (after the namespace, if any) and skip two more.
    let segments: Vec<(usize, &str)> = path
        .match_indices('/')
        .map(|(i, _)| i)
        .zip(path.split('/').skip(1))
        .collect();
    let after_namespace = if info.namespace.is_empty() {
        0
    } else {
        segments
            .iter()
            .position(|(_, s)| *s == "namespaces")
            .map_or(0, |p| p + 2)
    };
    let Some(resource) = segments
        .iter()
        .skip(after_namespace)
        .position(|(_, s)| *s == info.resource)
        .map(|p| p + after_namespace)
    else {
        return "";
    };
    match segments.get(resource + 3) {
        Some((start, _)) => &path[*start..],
        None => "",
    }
}

/// Where a request goes.
struct Backend {
    scheme: &'static str,
    host: String,
    port: u16,
    /// Client TLS for `https`.
    tls: Option<Arc<rustls::ClientConfig>>,
}

fn unavailable(message: impl Into<String>) -> ApiError {
    ApiError::new(503, "ServiceUnavailable", message)
}

fn bad_target(id: &str) -> ApiError {
    ApiError::bad_request(format!("invalid request {id:?}"))
}

fn parse_port(port: &str, id: &str) -> ApiResult<u16> {
    port.parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| bad_target(id))
}

async fn object(api: &Api, kind: &str, namespace: &str, name: &str) -> ApiResult<Value> {
    let def = api
        .registry
        .by_kind("", "v1", kind)
        .ok_or_else(ApiError::path_not_found)?;
    Ok(api
        .storage
        .get(def, namespace, name)
        .await?
        .ok_or_else(|| ApiError::not_found(def, name))?
        .0)
}

impl Backend {
    /// `host:port` in the target's scheme (HTTPS without client certificate).
    fn new(target: &Target<'_>, host: String, port: u16) -> ApiResult<Backend> {
        let https = target.scheme == "https";
        let tls = if https {
            Some(Arc::new(
                insecure_client_config().map_err(ApiError::internal)?,
            ))
        } else {
            None
        };
        Ok(Backend {
            scheme: if https { "https" } else { "http" },
            host,
            port,
            tls,
        })
    }
}

async fn pod_backend(api: &Api, namespace: &str, target: &Target<'_>) -> ApiResult<Backend> {
    let pod = object(api, "Pod", namespace, target.name).await?;
    let ip = str_at(&pod, "/status/podIP");
    if ip.is_empty() {
        return Err(unavailable(format!(
            "pod {} does not have an IP address",
            target.name
        )));
    }
    let port = match target.port {
        "" if target.scheme == "https" => 443,
        "" => 80,
        port => parse_port(port, &format!("{}:{}", target.name, port))?,
    };
    Backend::new(target, ip.to_string(), port)
}

/// The address and port of a ready endpoint of the service's port named or numbered
/// `port` (any port when empty); the first ready address rotates with time so that
/// repeated requests spread over the endpoints.
fn pick_endpoint(service: &Value, endpoints: &Value, port: &str) -> Result<(String, u16), String> {
    let name = str_at(service, "/metadata/name");
    let no_endpoints = || format!("no endpoints available for service \"{name}\"");
    let ports = service
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let service_port = ports
        .iter()
        .find(|p| {
            port.is_empty()
                || str_at(p, "/name") == port
                || p.get("port").and_then(Value::as_u64).map(|n| n.to_string())
                    == Some(port.to_string())
        })
        .ok_or_else(|| format!("no service port {port:?} found for service \"{name}\""))?;
    let port_name = str_at(service_port, "/name");
    let mut candidates = Vec::new();
    for subset in endpoints
        .get("subsets")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(endpoint_port) = subset
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|p| str_at(p, "/name") == port_name)
            .and_then(|p| p.get("port").and_then(Value::as_u64))
            .and_then(|p| u16::try_from(p).ok())
        else {
            continue;
        };
        for address in subset
            .get("addresses")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let ip = str_at(address, "/ip");
            if !ip.is_empty() {
                candidates.push((ip.to_string(), endpoint_port));
            }
        }
    }
    if candidates.is_empty() {
        return Err(no_endpoints());
    }
    let spin = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as usize);
    Ok(candidates.swap_remove(spin % candidates.len()))
}

async fn service_backend(api: &Api, namespace: &str, target: &Target<'_>) -> ApiResult<Backend> {
    let service = object(api, "Service", namespace, target.name).await?;
    if str_at(&service, "/spec/type") == "ExternalName" {
        return Err(ApiError::bad_request(format!(
            "service {} is of type ExternalName and cannot be proxied",
            target.name
        )));
    }
    let endpoints = object(api, "Endpoints", namespace, target.name)
        .await
        .unwrap_or(Value::Null);
    let (host, port) = pick_endpoint(&service, &endpoints, target.port).map_err(unavailable)?;
    Backend::new(target, host, port)
}

async fn node_backend(api: &Api, target: &Target<'_>) -> ApiResult<Backend> {
    let node = object(api, "Node", "", target.name).await?;
    let (host, kubelet_port) = kubelet_address(&node)
        .ok_or_else(|| unavailable(format!("node {} has no address", target.name)))?;
    let port = match target.port {
        "" => kubelet_port,
        port => parse_port(port, &format!("{}:{}", target.name, port))?,
    };
    // The kubelet's own port speaks HTTPS and wants the API server's client certificate.
    if port == kubelet_port && target.scheme != "http" {
        let tls = api.kubelet_client.clone().ok_or_else(|| {
            ApiError::internal("the API server has no kubelet client certificate")
        })?;
        return Ok(Backend {
            scheme: "https",
            host,
            port,
            tls: Some(tls),
        });
    }
    Backend::new(target, host, port)
}

/// The headers of a response passed back: hop-by-hop ones dropped.
fn is_hop_by_hop(name: &HeaderName, upgrade: bool) -> bool {
    match name.as_str() {
        "connection" | "upgrade" => !upgrade,
        "keep-alive" | "proxy-connection" | "te" | "trailer" | "transfer-encoding" => true,
        _ => false,
    }
}

/// Serves `pods/proxy`, `services/proxy` and `nodes/proxy`.
pub(super) async fn proxy(
    api: &Api,
    request: Request<Incoming>,
    info: &RequestInfo,
) -> ApiResult<Reply> {
    let target = split_target(&info.name).ok_or_else(|| bad_target(&info.name))?;
    let backend = match info.resource.as_str() {
        "pods" => pod_backend(api, &info.namespace, &target).await?,
        "services" => service_backend(api, &info.namespace, &target).await?,
        _ => node_backend(api, &target).await?,
    };
    let raw_path = request.uri().path().to_string();
    let rest = rest_of_path(&raw_path, info);
    let proxy_prefix = &raw_path[..raw_path.len() - rest.len()];
    let mut path = if rest.is_empty() { "/" } else { rest }.to_string();
    if let Some(query) = request.uri().query() {
        path.push('?');
        path.push_str(query);
    }

    let (host, port) = (backend.host.clone(), backend.port);
    let describe = format!("{}://{}:{}", backend.scheme, host, port);
    let stream = connect(backend.tls, &host, port)
        .await
        .map_err(|e| unavailable(format!("error trying to reach {describe}: {e}")))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| unavailable(format!("error trying to reach {describe}: {e}")))?;
    tokio::spawn(async move {
        if let Err(e) = connection.with_upgrades().await {
            tracing::debug!("proxied connection: {e}");
        }
    });

    let upgrade = request.headers().contains_key(hyper::header::UPGRADE);
    let mut outgoing = Request::builder()
        .method(request.method().clone())
        .uri(path)
        .header(hyper::header::HOST, format!("{host}:{port}"));
    for (name, value) in request.headers() {
        let dropped = DROPPED_REQUEST_HEADERS.contains(&name.as_str())
            || name.as_str().starts_with("impersonate-")
            || (!upgrade && matches!(name.as_str(), "connection" | "upgrade"));
        if !dropped {
            outgoing = outgoing.header(name, value);
        }
    }
    let (mut parts, body) = request.into_parts();
    let client_upgrade = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
    let outgoing = outgoing.body(body).map_err(ApiError::internal)?;
    let mut response = sender
        .send_request(outgoing)
        .await
        .map_err(|e| unavailable(format!("error trying to reach {describe}: {e}")))?;
    let status = response.status();

    let mut reply = Response::new(super::full(Bytes::new()));
    *reply.status_mut() = status;
    for (name, value) in response.headers() {
        if is_hop_by_hop(name, status == StatusCode::SWITCHING_PROTOCOLS) {
            continue;
        }
        if name == hyper::header::LOCATION {
            if let Some(location) = rewrite_location(value, proxy_prefix) {
                reply.headers_mut().append(name, location);
                continue;
            }
        }
        reply.headers_mut().append(name, value.clone());
    }
    if status == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(from_client) = client_upgrade.filter(|_| upgrade) {
            splice(from_client, hyper::upgrade::on(&mut response));
        }
        return Ok(passed_through(status, reply));
    }
    *reply.body_mut() = passed_body(response.into_body());
    Ok(passed_through(status, reply))
}

fn passed_through(status: StatusCode, response: Response<super::Body>) -> Reply {
    Reply {
        status,
        body: ReplyBody::Response(response),
        content_type: String::new(),
        warnings: Vec::new(),
    }
}

/// A `Location` naming a path on the backend, as a path behind the proxy.
fn rewrite_location(value: &HeaderValue, proxy_prefix: &str) -> Option<HeaderValue> {
    let location = value.to_str().ok()?;
    let path = if location.starts_with('/') {
        location
    } else {
        // `http://backend/x`: only the path is kept.
        let after_scheme = location.split_once("://")?.1;
        after_scheme.find('/').map(|i| &after_scheme[i..])?
    };
    HeaderValue::from_str(&format!("{}{}", proxy_prefix.trim_end_matches('/'), path)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn targets_split_as_kubernetes_does() {
        let t = |scheme, name, port| Some(Target { scheme, name, port });
        assert_eq!(split_target("web"), t("", "web", ""));
        assert_eq!(split_target("web:8080"), t("", "web", "8080"));
        assert_eq!(split_target("https:web:443"), t("https", "web", "443"));
        assert_eq!(split_target("https:web:"), t("https", "web", ""));
        assert_eq!(split_target("ftp:web:21"), None);
        assert_eq!(split_target("a:b:c:d"), None);
        assert_eq!(split_target(":80"), None);
    }

    #[test]
    fn the_path_after_proxy_is_forwarded() {
        let info = |ns: &str, resource: &str, name: &str| RequestInfo {
            namespace: ns.into(),
            resource: resource.into(),
            name: name.into(),
            subresource: "proxy".into(),
            ..RequestInfo::default()
        };
        let pods = info("default", "pods", "web:80");
        assert_eq!(
            rest_of_path("/api/v1/namespaces/default/pods/web:80/proxy/a/b/", &pods),
            "/a/b/"
        );
        assert_eq!(
            rest_of_path("/api/v1/namespaces/default/pods/web:80/proxy", &pods),
            ""
        );
        // A namespace named like the resource does not confuse it.
        let odd = info("pods", "pods", "p");
        assert_eq!(
            rest_of_path("/api/v1/namespaces/pods/pods/p/proxy/x", &odd),
            "/x"
        );
        let nodes = info("", "nodes", "n1");
        assert_eq!(
            rest_of_path("/api/v1/nodes/n1/proxy/stats/summary", &nodes),
            "/stats/summary"
        );
    }

    #[test]
    fn services_pick_ready_endpoints_of_the_named_port() {
        let service = json!({"metadata": {"name": "web"}, "spec": {"ports": [
            {"name": "http", "port": 80}, {"name": "metrics", "port": 9090}]}});
        let endpoints = json!({"subsets": [{
            "addresses": [{"ip": "10.42.0.7"}],
            "notReadyAddresses": [{"ip": "10.42.0.8"}],
            "ports": [{"name": "http", "port": 8080}, {"name": "metrics", "port": 9100}]}]});
        assert_eq!(
            pick_endpoint(&service, &endpoints, "http").unwrap(),
            ("10.42.0.7".to_string(), 8080)
        );
        assert_eq!(
            pick_endpoint(&service, &endpoints, "9090").unwrap(),
            ("10.42.0.7".to_string(), 9100)
        );
        assert_eq!(
            pick_endpoint(&service, &endpoints, "").unwrap(),
            ("10.42.0.7".to_string(), 8080)
        );
        assert!(pick_endpoint(&service, &endpoints, "nope")
            .unwrap_err()
            .contains("no service port"));
        assert_eq!(
            pick_endpoint(&service, &Value::Null, "http").unwrap_err(),
            "no endpoints available for service \"web\""
        );
    }

    #[test]
    fn locations_stay_behind_the_proxy() {
        let prefix = "/api/v1/namespaces/default/services/web/proxy/";
        let rewritten = |l: &str| {
            rewrite_location(&HeaderValue::from_str(l).unwrap(), prefix)
                .map(|v| v.to_str().unwrap().to_string())
        };
        assert_eq!(
            rewritten("/login").as_deref(),
            Some("/api/v1/namespaces/default/services/web/proxy/login")
        );
        assert_eq!(
            rewritten("http://10.42.0.7:8080/x?y=1").as_deref(),
            Some("/api/v1/namespaces/default/services/web/proxy/x?y=1")
        );
    }
}
