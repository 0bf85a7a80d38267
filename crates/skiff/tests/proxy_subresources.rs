//! The API server's `proxy` subresources of pods, services and nodes, through the real
//! kubectl (`get --raw` with 1.33, `kubectl proxy` with 1.27) against `skiff server`
//! running a busybox httpd pod. Needs root; traffic stays on loopback and the cluster's
//! own bridge.

use crate::common;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::cluster::Cluster;

const WEB: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: web, labels: {app: web}}
spec:
  containers:
  - name: httpd
    image: busybox:latest
    imagePullPolicy: Never
    command: ["sh", "-c", "mkdir -p /w/sub && echo hello from $(hostname) > /w/index.html && echo deep > /w/sub/page.txt && exec httpd -f -p 8080 -h /w"]
    readinessProbe:
      tcpSocket: {port: 8080}
      periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: nobody}
spec:
  selector: {app: nobody}
  ports: [{name: http, port: 80}]
"#;

/// `GET path` on `127.0.0.1:port` over HTTP/1.0: (status line, body).
fn http_get(port: u16, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    (
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    )
}

#[test]
fn pods_services_and_nodes_are_reachable_through_the_api_server() {
    let (cluster, _server) = Cluster::start(&[]);
    cluster.apply(WEB);
    cluster.wait_until(
        "pod/web",
        "{.status.conditions[?(@.type==\"Ready\")].status}",
        90,
        |s| s == "True",
    );

    // pods/proxy with the port in the name, and a path below it.
    let page = cluster.kubectl_ok(&[
        "get",
        "--raw",
        "/api/v1/namespaces/default/pods/web:8080/proxy/",
    ]);
    assert_eq!(page.trim(), "hello from web");
    let deep = cluster.kubectl_ok(&[
        "get",
        "--raw",
        "/api/v1/namespaces/default/pods/web:8080/proxy/sub/page.txt",
    ]);
    assert_eq!(deep.trim(), "deep");

    // services/proxy by port name: a ready endpoint's target port. Endpoints may lag the
    // pod's readiness by a moment.
    let deadline = Instant::now() + Duration::from_secs(30);
    let via_service = loop {
        let out = cluster.kubectl(&[
            "get",
            "--raw",
            "/api/v1/namespaces/default/services/web:http/proxy/index.html",
        ]);
        if out.status.success() || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    assert!(
        via_service.status.success(),
        "{}",
        String::from_utf8_lossy(&via_service.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&via_service.stdout).trim(),
        "hello from web"
    );

    // A service without endpoints: 503 with Kubernetes' message.
    let none = cluster.kubectl(&[
        "get",
        "--raw",
        "/api/v1/namespaces/default/services/nobody:http/proxy/",
    ]);
    assert!(!none.status.success());
    let stderr = String::from_utf8_lossy(&none.stderr);
    assert!(
        stderr.contains("no endpoints available for service \\\"nobody\\\"")
            || stderr.contains("no endpoints available for service \"nobody\""),
        "{stderr}"
    );
    // A missing pod: NotFound.
    let missing = cluster.kubectl(&[
        "get",
        "--raw",
        "/api/v1/namespaces/default/pods/ghost:80/proxy/",
    ]);
    assert!(String::from_utf8_lossy(&missing.stderr).contains("NotFound"));

    // nodes/proxy reaches the kubelet's own API over its TLS.
    let healthz = cluster.kubectl_ok(&["get", "--raw", "/api/v1/nodes/node-a/proxy/healthz"]);
    assert_eq!(healthz.trim(), "ok");
    let summary = cluster.kubectl_ok(&["get", "--raw", "/api/v1/nodes/node-a/proxy/stats/summary"]);
    let summary: serde_json::Value = serde_json::from_str(&summary).unwrap();
    assert_eq!(summary["node"]["nodeName"], "node-a");

    // kubectl proxy (1.27) in front of the same subresources.
    let kubectl_127 = cluster.kubectl.parent().unwrap().join("kubectl.1.27");
    let mut proxy = Command::new(kubectl_127)
        .arg("--kubeconfig")
        .arg(&cluster.kubeconfig)
        .args(["proxy", "--port=0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    {
        use std::io::BufRead as _;
        let mut stdout = std::io::BufReader::new(proxy.stdout.as_mut().unwrap());
        stdout.read_line(&mut line).unwrap();
    }
    let port: u16 = line
        .trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("kubectl proxy said {line:?}"));
    let (status, body) = http_get(
        port,
        "/api/v1/namespaces/default/services/web:80/proxy/index.html",
    );
    let (pod_status, pod_body) = http_get(
        port,
        "/api/v1/namespaces/default/pods/web:8080/proxy/sub/page.txt",
    );
    let _ = proxy.kill();
    let _ = proxy.wait();
    assert!(status.contains("200"), "{status} {body}");
    assert_eq!(body.trim(), "hello from web");
    assert!(pod_status.contains("200"), "{pod_status} {pod_body}");
    assert_eq!(pod_body.trim(), "deep");
}
