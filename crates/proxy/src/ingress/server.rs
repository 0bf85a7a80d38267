//! The HTTP and HTTPS listeners: each request is routed through the current HTTPRoutes
//! ([`GatewayRoutes`]), then, when none matches, the current Ingress [`RoutingTable`], and
//! proxied to a pod over a pooled HTTP/1.1 client.
//!
//! Clients get HTTP/1.1 keep-alive; the `X-Forwarded-For/-Proto/-Host/-Port` and
//! `X-Real-Ip` headers are set (replaced, not appended: like ingress-nginx and
//! Traefik by default, a client's own are not trusted). No route is a 404, a route
//! without ready endpoints a 503, a pod that does not answer a 502, an HTTPRoute rule
//! whose backend does not resolve a 500.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue, HOST};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::routes::{Route, RoutingTable};
use super::tls::CertResolver;
use crate::gateway::routes::{Protocol, RequestView, RouteTable as GatewayRoutes, Routed};

/// Headers that belong to one connection, not forwarded either way (RFC 9110 7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

type Body = BoxBody<Bytes, hyper::Error>;

/// What the listeners share: the routing table (swapped whole on every change) and the
/// pooled client to the pods.
#[derive(Debug)]
pub struct Proxy {
    routes: RwLock<Arc<RoutingTable>>,
    gateway_routes: RwLock<Arc<GatewayRoutes>>,
    client: Client<HttpConnector, Incoming>,
}

impl Proxy {
    /// A proxy with an empty table.
    pub fn new() -> Arc<Proxy> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(256)
            .build(connector);
        Arc::new(Proxy {
            routes: RwLock::default(),
            gateway_routes: RwLock::default(),
            client,
        })
    }

    /// Replaces the routing table; requests already routed keep the old one.
    pub fn set_routes(&self, table: RoutingTable) {
        *self.routes.write().unwrap() = Arc::new(table);
    }

    fn routes(&self) -> Arc<RoutingTable> {
        self.routes.read().unwrap().clone()
    }

    /// Replaces the HTTPRoutes' table (the Gateway API controller's).
    pub fn set_gateway_routes(&self, table: GatewayRoutes) {
        *self.gateway_routes.write().unwrap() = Arc::new(table);
    }

    fn gateway_routes(&self) -> Arc<GatewayRoutes> {
        self.gateway_routes.read().unwrap().clone()
    }

    /// Serves plain HTTP on `listener` until the runtime stops.
    pub async fn serve_http(self: Arc<Self>, listener: TcpListener) {
        let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
        loop {
            let Ok((tcp, peer)) = listener.accept().await else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let proxy = self.clone();
            tokio::spawn(async move {
                proxy
                    .serve_connection(TokioIo::new(tcp), peer, "http", port)
                    .await;
            });
        }
    }

    /// Serves HTTPS on `listener`, certificates chosen by `resolver`, until the runtime
    /// stops.
    pub async fn serve_https(self: Arc<Self>, listener: TcpListener, resolver: Arc<CertResolver>) {
        let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_no_client_auth()
        .with_cert_resolver(resolver);
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(config));
        loop {
            let Ok((tcp, peer)) = listener.accept().await else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let (proxy, acceptor) = (self.clone(), acceptor.clone());
            tokio::spawn(async move {
                match acceptor.accept(tcp).await {
                    Ok(tls) => {
                        proxy
                            .serve_connection(TokioIo::new(tls), peer, "https", port)
                            .await
                    }
                    Err(e) => tracing::debug!("ingress: TLS handshake from {peer}: {e}"),
                }
            });
        }
    }

    async fn serve_connection<I>(
        self: Arc<Self>,
        io: I,
        peer: SocketAddr,
        scheme: &'static str,
        port: u16,
    ) where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let service = service_fn(move |req| {
            let proxy = self.clone();
            async move { Ok::<_, Infallible>(proxy.handle(req, peer, scheme, port).await) }
        });
        if let Err(e) = hyper::server::conn::http1::Builder::new()
            .serve_connection(io, service)
            .await
        {
            tracing::debug!("ingress: connection from {peer}: {e}");
        }
    }

    /// Routes and forwards one request.
    pub async fn handle(
        &self,
        mut req: Request<Incoming>,
        peer: SocketAddr,
        scheme: &'static str,
        port: u16,
    ) -> Response<Body> {
        let host = req
            .headers()
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_owned)
            .or_else(|| req.uri().authority().map(|a| a.to_string()))
            .unwrap_or_default();
        let gateway = self.gateway_routes();
        let routed = if gateway.is_empty() {
            Routed::NoMatch
        } else {
            gateway.route(&RequestView {
                protocol: if scheme == "https" {
                    Protocol::Https
                } else {
                    Protocol::Http
                },
                host: &host,
                method: req.method().as_str(),
                path: req.uri().path(),
                query: req.uri().query(),
                headers: req.headers(),
            })
        };
        let backend = match routed {
            Routed::Backend(b) => b,
            Routed::Invalid => {
                return text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "500 internal server error\n",
                )
            }
            Routed::NoMatch => match self.routes().route(&host, req.uri().path()) {
                Route::Backend(b) => b,
                Route::NotFound => return text(StatusCode::NOT_FOUND, "404 page not found\n"),
            },
        };
        let Some(endpoint) = backend.pick() else {
            return text(StatusCode::SERVICE_UNAVAILABLE, "no available server\n");
        };
        let path = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let Ok(uri) = format!("http://{endpoint}{path}").parse() else {
            return text(StatusCode::BAD_REQUEST, "bad request path\n");
        };
        *req.uri_mut() = uri;
        *req.version_mut() = hyper::Version::HTTP_11;
        let headers = req.headers_mut();
        for name in HOP_BY_HOP {
            headers.remove(name);
        }
        let client_ip = peer.ip().to_string();
        let set = |h: &mut hyper::HeaderMap, name: &'static str, value: &str| {
            if let Ok(v) = HeaderValue::from_str(value) {
                h.insert(HeaderName::from_static(name), v);
            }
        };
        set(headers, "x-forwarded-for", &client_ip);
        set(headers, "x-real-ip", &client_ip);
        set(headers, "x-forwarded-proto", scheme);
        set(headers, "x-forwarded-host", &host);
        set(headers, "x-forwarded-port", &port.to_string());
        match self.client.request(req).await {
            Ok(resp) => {
                let (mut parts, body) = resp.into_parts();
                for name in HOP_BY_HOP {
                    parts.headers.remove(name);
                }
                Response::from_parts(parts, body.boxed())
            }
            Err(e) => {
                tracing::debug!("ingress: {} ({endpoint}): {e}", backend.name);
                text(StatusCode::BAD_GATEWAY, "bad gateway\n")
            }
        }
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut resp = Response::new(
        Full::new(Bytes::from_static(body.as_bytes()))
            .map_err(|never| match never {})
            .boxed(),
    );
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingress::routes::{Backend, PathType};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// A backend on loopback answering with the request's forwarding headers.
    async fn echo_backend() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let service = service_fn(|req: Request<Incoming>| async move {
                        let mut body = String::new();
                        for (k, v) in req.headers() {
                            if k.as_str().starts_with("x-") || k == HOST {
                                body.push_str(&format!("{k}: {}\n", v.to_str().unwrap()));
                            }
                        }
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        addr
    }

    async fn get(addr: SocketAddr, host: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!(
            "GET /app HTTP/1.1\r\nHost: {host}\r\nX-Forwarded-For: 6.6.6.6\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn forwards_with_headers_404_and_503() {
        let backend = echo_backend().await;
        let mut table = RoutingTable::default();
        table.host_mut("a.test").add(
            "/",
            PathType::Prefix,
            Arc::new(Backend::new("ns/a:80", vec![backend])),
        );
        table.host_mut("empty.test").add(
            "/",
            PathType::Prefix,
            Arc::new(Backend::new("ns/e:80", vec![])),
        );
        let proxy = Proxy::new();
        proxy.set_routes(table);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(proxy.serve_http(listener));

        let ok = get(addr, "a.test").await;
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(ok.contains("host: a.test\n"), "{ok}");
        // The client's own X-Forwarded-For is replaced.
        assert!(ok.contains("x-forwarded-for: 127.0.0.1\n"), "{ok}");
        assert!(ok.contains("x-real-ip: 127.0.0.1\n"), "{ok}");
        assert!(ok.contains("x-forwarded-proto: http\n"), "{ok}");
        assert!(ok.contains("x-forwarded-host: a.test\n"), "{ok}");
        assert!(
            ok.contains(&format!("x-forwarded-port: {}\n", addr.port())),
            "{ok}"
        );
        let none = get(addr, "b.test").await;
        assert!(none.starts_with("HTTP/1.1 404"), "{none}");
        let empty = get(addr, "empty.test").await;
        assert!(empty.starts_with("HTTP/1.1 503"), "{empty}");
    }

    #[tokio::test]
    async fn http_routes_first_then_ingress_rules_and_500() {
        use crate::gateway::routes::{Action, Match, Origin, WeightedBackend};
        let backend = echo_backend().await;
        let mut ingress = RoutingTable::default();
        ingress.host_mut("").add(
            "/",
            PathType::Prefix,
            Arc::new(Backend::new("ns/ingress:80", vec![])),
        );
        let weighted = |name: &str, endpoints: Vec<SocketAddr>, resolved| {
            Arc::new(Action::new(vec![WeightedBackend {
                backend: Arc::new(Backend::new(name, endpoints)),
                weight: 1,
                resolved,
            }]))
        };
        let mut gateway = GatewayRoutes::default();
        gateway.add(
            Protocol::Http,
            "a.test",
            Match::any(),
            weighted("ns/a:80", vec![backend], true),
            Origin::default(),
        );
        gateway.add(
            Protocol::Http,
            "broken.test",
            Match::any(),
            weighted("ns/missing:80", vec![], false),
            Origin::default(),
        );
        let proxy = Proxy::new();
        proxy.set_routes(ingress);
        proxy.set_gateway_routes(gateway.finish());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(proxy.serve_http(listener));

        let ok = get(addr, "a.test").await;
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(ok.contains("host: a.test\n"), "{ok}");
        // No HTTPRoute for the host: the Ingress rule (without endpoints: 503).
        let other = get(addr, "other.test").await;
        assert!(other.starts_with("HTTP/1.1 503"), "{other}");
        let broken = get(addr, "broken.test").await;
        assert!(broken.starts_with("HTTP/1.1 500"), "{broken}");
    }
}
