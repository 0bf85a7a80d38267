//! The actions probes and lifecycle hooks run: a command in the container
//! (ExecSync), an HTTP GET or a TCP connect to the pod's IP. Blocking; callers run
//! them on blocking threads.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs as _};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, HTTPGetAction, TCPSocketAction};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::cri::CriError;
use crate::Runtime;

/// What an action runs against.
#[derive(Clone, Copy)]
pub struct Target<'a> {
    /// The runtime (for exec).
    pub runtime: &'a dyn Runtime,
    /// The container's runtime id.
    pub container_id: &'a str,
    /// Its spec (named ports).
    pub container: &'a Container,
    /// The pod's IP, the default host of HTTP and TCP actions.
    pub pod_ip: Option<&'a str>,
}

/// How an action went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It passed; the output, if any.
    Success(String),
    /// It failed; the message Kubernetes shows after `... probe failed: `.
    Failure(String),
}

impl Outcome {
    /// Whether it passed.
    pub fn ok(&self) -> bool {
        matches!(self, Outcome::Success(_))
    }
}

/// A port by number or by the name of one of the container's ports.
pub fn resolve_port(port: &IntOrString, container: &Container) -> Result<u16, String> {
    match port {
        IntOrString::Int(n) if (1..=65535).contains(n) => Ok(*n as u16),
        IntOrString::Int(n) => Err(format!("invalid port number: {n}")),
        IntOrString::String(s) => match s.parse::<u16>() {
            Ok(n) if n > 0 => Ok(n),
            _ => container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(s.as_str()))
                .map(|p| p.container_port as u16)
                .ok_or_else(|| format!("couldn't find port: {s} in {}", container.name)),
        },
    }
}

/// Runs `cmd` in the container: success on exit 0; the output (stdout then stderr) either way.
pub fn exec(target: &Target<'_>, cmd: &[String], timeout: Duration) -> Outcome {
    match target.runtime.exec_sync(target.container_id, cmd, timeout) {
        Ok(r) => {
            let mut out = String::from_utf8_lossy(&r.stdout).into_owned();
            out.push_str(&String::from_utf8_lossy(&r.stderr));
            if r.exit_code == 0 {
                Outcome::Success(out)
            } else {
                Outcome::Failure(out)
            }
        }
        Err(CriError::Timeout(_)) => {
            Outcome::Failure(format!("command {:?} timed out", cmd.join(" ")))
        }
        Err(e) => Outcome::Failure(e.to_string()),
    }
}

fn address(host: &str, port: u16) -> Result<SocketAddr, String> {
    (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("dial tcp {host}:{port}: {e}"))?
        .next()
        .ok_or_else(|| format!("dial tcp {host}:{port}: no address"))
}

fn dial(host: &str, port: u16, timeout: Duration) -> Result<TcpStream, String> {
    let addr = address(host, port)?;
    TcpStream::connect_timeout(&addr, timeout).map_err(|e| {
        let why = match e.kind() {
            std::io::ErrorKind::ConnectionRefused => "connect: connection refused".to_string(),
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => "i/o timeout".into(),
            _ => format!("connect: {e}"),
        };
        format!("dial tcp {addr}: {why}")
    })
}

/// Opens a TCP connection to the port: success when it connects.
pub fn tcp(target: &Target<'_>, action: &TCPSocketAction, timeout: Duration) -> Outcome {
    let port = match resolve_port(&action.port, target.container) {
        Ok(p) => p,
        Err(e) => return Outcome::Failure(e),
    };
    let host = action
        .host
        .clone()
        .filter(|h| !h.is_empty())
        .or(target.pod_ip.map(str::to_string))
        .unwrap_or_else(|| "127.0.0.1".into());
    match dial(&host, port, timeout) {
        Ok(_) => Outcome::Success(String::new()),
        Err(e) => Outcome::Failure(e),
    }
}

/// `GET`s the URL: success on a status from 200 to 399, as the kubelet's prober.
pub fn http_get(target: &Target<'_>, action: &HTTPGetAction, timeout: Duration) -> Outcome {
    let port = match resolve_port(&action.port, target.container) {
        Ok(p) => p,
        Err(e) => return Outcome::Failure(e),
    };
    let host = action
        .host
        .clone()
        .filter(|h| !h.is_empty())
        .or(target.pod_ip.map(str::to_string))
        .unwrap_or_else(|| "127.0.0.1".into());
    let scheme = action.scheme.as_deref().unwrap_or("HTTP");
    let mut path = action.path.clone().unwrap_or_default();
    if !path.starts_with('/') {
        path.insert(0, '/');
    }
    let url = format!("{}://{host}:{port}{path}", scheme.to_lowercase());
    let https = scheme.eq_ignore_ascii_case("HTTPS");
    match http_status(&host, port, &path, action, timeout, https) {
        Ok((code, body)) if (200..400).contains(&code) => Outcome::Success(body),
        Ok((code, _)) => Outcome::Failure(format!("HTTP probe failed with statuscode: {code}")),
        Err(e) => Outcome::Failure(format!("Get {url:?}: {e}")),
    }
}

/// A byte stream to the probed server: TCP, or TLS over it.
trait Stream: std::io::Read + std::io::Write {}
impl<T: std::io::Read + std::io::Write> Stream for T {}

fn http_status(
    host: &str,
    port: u16,
    path: &str,
    action: &HTTPGetAction,
    timeout: Duration,
    https: bool,
) -> Result<(u16, String), String> {
    let deadline_msg = "context deadline exceeded (Client.Timeout exceeded while awaiting headers)";
    let tcp = dial(host, port, timeout)?;
    tcp.set_read_timeout(Some(timeout))
        .and_then(|_| tcp.set_write_timeout(Some(timeout)))
        .map_err(|e| e.to_string())?;
    let mut stream: Box<dyn Stream> = if https {
        Box::new(tls(tcp, host)?)
    } else {
        Box::new(tcp)
    };
    let headers = action.http_headers.clone().unwrap_or_default();
    let has = |name: &str| headers.iter().any(|h| h.name.eq_ignore_ascii_case(name));
    let mut request = format!("GET {path} HTTP/1.1\r\n");
    if !has("Host") {
        request.push_str(&format!("Host: {host}:{port}\r\n"));
    }
    if !has("User-Agent") {
        request.push_str("User-Agent: kube-probe/1.33\r\n");
    }
    if !has("Accept") {
        request.push_str("Accept: */*\r\n");
    }
    for h in &headers {
        request.push_str(&format!("{}: {}\r\n", h.name, h.value));
    }
    request.push_str("Connection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .map_err(|_| deadline_msg.to_string())?;
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    // The status line and a little of the body are enough.
    while response.len() < 10 * 1024 {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => response.extend_from_slice(&buf[..n]),
            Err(_) if response.windows(4).any(|w| w == b"\r\n\r\n") => break,
            Err(_) => return Err(deadline_msg.into()),
        }
    }
    let text = String::from_utf8_lossy(&response);
    let status_line = text.lines().next().unwrap_or("");
    let code = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| format!("malformed HTTP response {status_line:?}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}

/// TLS over `tcp` for an HTTPS probe: as the kubelet's prober, the server's certificate
/// is not verified (probes check liveness, not identity).
fn tls(
    tcp: TcpStream,
    host: &str,
) -> Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>, String> {
    use std::sync::Arc;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    let name = match host.parse::<std::net::IpAddr>() {
        Ok(ip) => rustls::pki_types::ServerName::IpAddress(ip.into()),
        Err(_) => {
            rustls::pki_types::ServerName::try_from(host.to_string()).map_err(|e| e.to_string())?
        }
    };
    let connection =
        rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
    Ok(rustls::StreamOwned::new(connection, tcp))
}

/// Accepts any server certificate (signatures are still checked).
#[derive(Debug)]
struct AnyCertificate(std::sync::Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
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
        cert: &rustls::pki_types::CertificateDer<'_>,
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

/// Calls the gRPC Health Checking Protocol's `grpc.health.v1.Health/Check` for `service`
/// over plaintext HTTP/2: success when the answer is `SERVING`.
pub fn grpc(target: &Target<'_>, port: i32, service: &str, timeout: Duration) -> Outcome {
    let host = target.pod_ip.unwrap_or("127.0.0.1").to_string();
    let Ok(port) = u16::try_from(port) else {
        return Outcome::Failure(format!("invalid port number: {port}"));
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return Outcome::Failure(e.to_string()),
    };
    let address = format!("{host}:{port}");
    let call = grpc_check(host.clone(), port, service.to_string());
    match runtime.block_on(async { tokio::time::timeout(timeout, call).await }) {
        Err(_) => Outcome::Failure(format!(
            "timeout: health rpc did not complete within {}s",
            timeout.as_secs()
        )),
        Ok(Err(e)) => Outcome::Failure(format!(
            "error: failed to connect service {address:?} within {}s: {e}",
            timeout.as_secs()
        )),
        Ok(Ok(1)) => Outcome::Success(String::new()),
        Ok(Ok(status)) => Outcome::Failure(format!(
            "service unhealthy (responded with {:?})",
            match status {
                2 => "NOT_SERVING",
                3 => "SERVICE_UNKNOWN",
                _ => "UNKNOWN",
            }
        )),
    }
}

/// One Health/Check call; the response's `status` field.
async fn grpc_check(host: String, port: u16, service: String) -> Result<u64, String> {
    use http_body_util::BodyExt as _;
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    // HealthCheckRequest { string service = 1; }, in a gRPC length-prefixed frame.
    let mut message = Vec::new();
    if !service.is_empty() {
        message.push(0x0a);
        push_varint(&mut message, service.len() as u64);
        message.extend_from_slice(service.as_bytes());
    }
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(&message);
    let request = hyper::Request::post(format!("http://{host}:{port}/grpc.health.v1.Health/Check"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("user-agent", "kube-probe/1.33")
        .body(http_body_util::Full::new(bytes::Bytes::from(frame)))
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let headers = response.headers().clone();
    let collected = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let grpc_status = trailers
        .get("grpc-status")
        .or_else(|| headers.get("grpc-status"))
        .and_then(|v| v.to_str().ok())
        .unwrap_or("0")
        .to_string();
    if grpc_status != "0" {
        let message = trailers
            .get("grpc-message")
            .or_else(|| headers.get("grpc-message"))
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        return Err(format!("rpc error: code = {grpc_status} desc = {message}"));
    }
    let data = collected.to_bytes();
    // HealthCheckResponse { ServingStatus status = 1; } after the 5-byte frame header.
    let body = data.get(5..).unwrap_or_default();
    Ok(read_status(body))
}

fn push_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Field 1 (varint) of a HealthCheckResponse; 0 (UNKNOWN) when absent.
fn read_status(message: &[u8]) -> u64 {
    let mut i = 0;
    while i < message.len() {
        let key = message[i];
        i += 1;
        let (mut value, mut shift) = (0u64, 0);
        while i < message.len() {
            let b = message[i];
            i += 1;
            value |= u64::from(b & 0x7f) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                break;
            }
        }
        if key == 0x08 {
            return value;
        }
        if key & 0x07 != 0 {
            return 0;
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::FakeRuntime;

    fn container() -> Container {
        serde_json::from_value(serde_json::json!({"name": "app",
            "ports": [{"name": "http", "containerPort": 8080}]}))
        .unwrap()
    }

    #[test]
    fn ports_resolve_by_number_and_name() {
        let c = container();
        assert_eq!(resolve_port(&IntOrString::Int(81), &c), Ok(81));
        assert_eq!(
            resolve_port(&IntOrString::String("http".into()), &c),
            Ok(8080)
        );
        assert!(resolve_port(&IntOrString::String("nope".into()), &c).is_err());
    }

    #[test]
    fn http_and_tcp_against_a_local_server() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for (i, s) in listener.incoming().enumerate() {
                let mut s = s.unwrap();
                let mut buf = [0u8; 1024];
                let n = s.read(&mut buf).unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                let status = if req.contains("X-Probe: yes") && i == 0 {
                    "200 OK"
                } else {
                    "500 Internal Server Error"
                };
                let _ = s.write_all(
                    format!("HTTP/1.1 {status}\r\nContent-Length: 2\r\n\r\nok").as_bytes(),
                );
            }
        });
        let rt = FakeRuntime::default();
        let c = container();
        let target = Target {
            runtime: &rt,
            container_id: "x",
            container: &c,
            pod_ip: Some("127.0.0.1"),
        };
        let action: HTTPGetAction = serde_json::from_value(serde_json::json!({
            "path": "/healthz", "port": port, "httpHeaders": [{"name": "X-Probe", "value": "yes"}]}))
        .unwrap();
        let t = Duration::from_secs(2);
        assert_eq!(http_get(&target, &action, t), Outcome::Success("ok".into()));
        assert_eq!(
            http_get(&target, &action, t),
            Outcome::Failure("HTTP probe failed with statuscode: 500".into())
        );
        let tcp_action: TCPSocketAction =
            serde_json::from_value(serde_json::json!({"port": port})).unwrap();
        assert!(tcp(&target, &tcp_action, t).ok());
        // Nothing listens on port 1.
        let closed: TCPSocketAction =
            serde_json::from_value(serde_json::json!({"port": 1})).unwrap();
        assert_eq!(
            tcp(&target, &closed, t),
            Outcome::Failure("dial tcp 127.0.0.1:1: connect: connection refused".into())
        );
    }

    fn target<'a>(rt: &'a FakeRuntime, c: &'a Container) -> Target<'a> {
        Target {
            runtime: rt,
            container_id: "x",
            container: c,
            pod_ip: Some("127.0.0.1"),
        }
    }

    /// A TLS server on 127.0.0.1 with a self-signed certificate answering `status`.
    fn https_server(status: &'static str) -> u16 {
        use std::sync::Arc;
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
            )
            .unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let config = Arc::new(config);
            for s in listener.incoming().flatten() {
                let conn = rustls::ServerConnection::new(config.clone()).unwrap();
                let mut tls = rustls::StreamOwned::new(conn, s);
                let mut buf = [0u8; 1024];
                let _ = tls.read(&mut buf);
                let _ = tls.write_all(
                    format!("HTTP/1.1 {status}\r\nContent-Length: 2\r\n\r\nok").as_bytes(),
                );
                let _ = tls.flush();
            }
        });
        port
    }

    #[test]
    fn https_probes_skip_certificate_checks() {
        let (rt, c) = (FakeRuntime::default(), container());
        let port = https_server("200 OK");
        let action: HTTPGetAction = serde_json::from_value(serde_json::json!({
            "path": "/healthz", "port": port, "scheme": "HTTPS"}))
        .unwrap();
        assert_eq!(
            http_get(&target(&rt, &c), &action, Duration::from_secs(2)),
            Outcome::Success("ok".into())
        );
        let failing = https_server("503 Service Unavailable");
        let action: HTTPGetAction = serde_json::from_value(serde_json::json!({
            "port": failing, "scheme": "HTTPS"}))
        .unwrap();
        assert_eq!(
            http_get(&target(&rt, &c), &action, Duration::from_secs(2)),
            Outcome::Failure("HTTP probe failed with statuscode: 503".into())
        );
    }

    /// A gRPC health server over plaintext HTTP/2 answering `status` for every service.
    fn grpc_server(status: u8) -> u16 {
        use http_body_util::StreamBody;
        use hyper::body::Frame;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    let (tcp, _) = listener.accept().await.unwrap();
                    let service = hyper::service::service_fn(move |_req| async move {
                        let mut trailers = hyper::HeaderMap::new();
                        trailers.insert("grpc-status", "0".parse().unwrap());
                        let frames: Vec<Result<Frame<bytes::Bytes>, std::convert::Infallible>> = vec![
                            Ok(Frame::data(bytes::Bytes::from(vec![0, 0, 0, 0, 2, 0x08, status]))),
                            Ok(Frame::trailers(trailers)),
                        ];
                        let body = StreamBody::new(futures::stream::iter(frames));
                        Ok::<_, std::convert::Infallible>(
                            hyper::Response::builder()
                                .header("content-type", "application/grpc")
                                .body(body)
                                .unwrap(),
                        )
                    });
                    tokio::spawn(
                        hyper::server::conn::http2::Builder::new(
                            hyper_util::rt::TokioExecutor::new(),
                        )
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), service),
                    );
                }
            });
        });
        port
    }

    #[test]
    fn grpc_probes_call_the_health_service() {
        let (rt, c) = (FakeRuntime::default(), container());
        let t = Duration::from_secs(2);
        let serving = grpc_server(1);
        assert!(grpc(&target(&rt, &c), i32::from(serving), "", t).ok());
        let not_serving = grpc_server(2);
        assert_eq!(
            grpc(&target(&rt, &c), i32::from(not_serving), "db", t),
            Outcome::Failure("service unhealthy (responded with \"NOT_SERVING\")".into())
        );
        // Nothing listens on port 1.
        assert!(!grpc(&target(&rt, &c), 1, "", t).ok());
        let mut encoded = Vec::new();
        push_varint(&mut encoded, 300);
        assert_eq!(encoded, vec![0xac, 0x02]);
        assert_eq!(read_status(&[0x08, 0x02]), 2);
    }
}
