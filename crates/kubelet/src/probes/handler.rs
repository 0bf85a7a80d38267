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
    if scheme.eq_ignore_ascii_case("HTTPS") {
        return Outcome::Failure(format!(
            "Get {url:?}: HTTPS probes are not supported by this kubelet"
        ));
    }
    match http_status(&host, port, &path, action, timeout) {
        Ok((code, body)) if (200..400).contains(&code) => Outcome::Success(body),
        Ok((code, _)) => Outcome::Failure(format!("HTTP probe failed with statuscode: {code}")),
        Err(e) => Outcome::Failure(format!("Get {url:?}: {e}")),
    }
}

fn http_status(
    host: &str,
    port: u16,
    path: &str,
    action: &HTTPGetAction,
    timeout: Duration,
) -> Result<(u16, String), String> {
    let deadline_msg = "context deadline exceeded (Client.Timeout exceeded while awaiting headers)";
    let mut stream = dial(host, port, timeout)?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|_| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| e.to_string())?;
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
}
