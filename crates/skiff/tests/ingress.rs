//! The built-in Ingress controller end to end: two busybox httpd Deployments behind
//! Services, an Ingress routing by host and path, a TLS host whose Secret comes from
//! `kubectl create secret tls`, driven by the real kubectl 1.33 and curl against
//! `skiff server`. Needs root; the listeners are on 127.0.0.1.

use crate::common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::cluster::Cluster;

const APPS: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: app-a}
spec:
  replicas: 1
  selector: {matchLabels: {app: a}}
  template:
    metadata: {labels: {app: a}}
    spec:
      containers:
      - name: httpd
        image: busybox:latest
        imagePullPolicy: Never
        command: ["sh", "-c", "mkdir -p /www && echo page-of-a > /www/index.html && exec httpd -f -p 80 -h /www"]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: app-b}
spec:
  replicas: 1
  selector: {matchLabels: {app: b}}
  template:
    metadata: {labels: {app: b}}
    spec:
      containers:
      - name: httpd
        image: busybox:latest
        imagePullPolicy: Never
        command: ["sh", "-c", "mkdir -p /www/b && echo page-of-b > /www/index.html && echo page-of-b > /www/b/index.html && exec httpd -f -p 8080 -h /www"]
---
apiVersion: v1
kind: Service
metadata: {name: app-a}
spec:
  selector: {app: a}
  ports: [{port: 80, targetPort: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: app-b}
spec:
  selector: {app: b}
  ports: [{name: http, port: 80, targetPort: 8080}]
"#;

const INGRESS: &str = r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web}
spec:
  tls:
  - hosts: [secure.example.test]
    secretName: secure-tls
  rules:
  - host: a.example.test
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: app-a, port: {number: 80}}}}
  - host: b.example.test
    http:
      paths:
      - {path: /b, pathType: Prefix, backend: {service: {name: app-b, port: {name: http}}}}
  - host: secure.example.test
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: app-a, port: {number: 80}}}}
"#;

/// A port below the ephemeral range (and the node port range) that is free now.
fn free_low_port() -> u16 {
    let mut seed = std::process::id() as u64 * 7919 + Instant::now().elapsed().as_nanos() as u64;
    loop {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let port = 20000 + (seed >> 33) as u16 % 9000;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// `curl ARGS`: (HTTP status, body without its final newline); status 0 when curl
/// failed.
fn curl(args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "5", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    let code = if out.status.success() {
        code.trim().parse().unwrap_or(0)
    } else {
        0
    };
    (code, body.trim_end().to_owned())
}

fn get(port: u16, host: &str, path: &str) -> (u16, String) {
    curl(&[
        "-H",
        &format!("Host: {host}"),
        &format!("http://127.0.0.1:{port}{path}"),
    ])
}

/// Polls `f` until it returns true, for at most `secs` seconds.
fn eventually(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn ingress_hosts_paths_tls_status_and_503() {
    let (http, https) = (free_low_port(), free_low_port());
    let (http_s, https_s) = (http.to_string(), https.to_string());
    let (c, _server) = Cluster::start(&[
        ("SKIFF_INGRESS_HTTP_PORT", &http_s),
        ("SKIFF_INGRESS_HTTPS_PORT", &https_s),
    ]);

    // The default class exists once the server is up.
    eventually(30, "IngressClass skiff", || {
        c.jsonpath("ingressclass/skiff", "{.spec.controller}") == "skiff.dev/ingress"
    });
    assert_eq!(
        c.jsonpath(
            "ingressclass/skiff",
            "{.metadata.annotations.ingressclass\\.kubernetes\\.io/is-default-class}"
        ),
        "true"
    );

    // A certificate for the TLS host, made by openssl, stored by kubectl.
    let dir = c.skiff.root.path();
    let (crt, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    let out = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=secure.example.test"])
        .args(["-addext", "subjectAltName=DNS:secure.example.test"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    c.kubectl_ok(&[
        "create",
        "secret",
        "tls",
        "secure-tls",
        &format!("--cert={}", crt.display()),
        &format!("--key={}", key.display()),
    ]);

    c.apply(APPS);
    c.apply(INGRESS);

    // Host a -> app a; host b with /b -> app b; b without a matching path -> 404.
    let mut last = (0, String::new());
    let deadline = Instant::now() + Duration::from_secs(120);
    while last != (200, "page-of-a".into()) {
        assert!(
            Instant::now() < deadline,
            "a.example.test through the ingress: {last:?}\n{}\n{}",
            c.kubectl_ok(&["get", "pods,endpointslices,ingress", "-o", "wide"]),
            std::fs::read_to_string(c.skiff.root.path().join("server.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(500));
        last = get(http, "a.example.test", "/");
    }
    eventually(60, "b.example.test/b through the ingress", || {
        get(http, "b.example.test", "/b/") == (200, "page-of-b".into())
    });
    assert_eq!(get(http, "b.example.test", "/").0, 404);
    assert_eq!(get(http, "unknown.example.test", "/").0, 404);
    // Keep-alive: curl reuses one connection for two URLs.
    let (code, body) = curl(&[
        "-H",
        "Host: a.example.test",
        &format!("http://127.0.0.1:{http}/"),
        &format!("http://127.0.0.1:{http}/index.html"),
    ]);
    assert_eq!(code, 200);
    assert_eq!(body.matches("page-of-a").count(), 2, "{body}");

    // HTTPS by SNI with the Secret's certificate, verified against it.
    let (cacert, resolve) = ("--cacert", "--resolve");
    let crt_path = crt.display().to_string();
    let secure = format!("secure.example.test:{https}:127.0.0.1");
    let url = format!("https://secure.example.test:{https}/");
    eventually(30, "secure.example.test over TLS", || {
        curl(&[cacert, &crt_path, resolve, &secure, &url]) == (200, "page-of-a".into())
    });
    // Another name gets the self-signed default: not trusted by that CA, served with -k.
    let other = format!("a.example.test:{https}:127.0.0.1");
    let other_url = format!("https://a.example.test:{https}/");
    assert_eq!(curl(&[cacert, &crt_path, resolve, &other, &other_url]).0, 0);
    assert_eq!(
        curl(&["-k", resolve, &other, &other_url]),
        (200, "page-of-a".into())
    );

    // The status shows the node's address (the listeners' 127.0.0.1), as does kubectl.
    c.wait_until(
        "ingress/web",
        "{.status.loadBalancer.ingress[0].ip}",
        30,
        |ip| ip == "127.0.0.1",
    );
    let table = c.kubectl_ok(&["get", "ingress", "web"]);
    assert!(
        table.contains("ADDRESS") && table.contains("127.0.0.1"),
        "{table}"
    );
    assert!(table.contains("80, 443"), "{table}");

    // No ready endpoint: 503; back with a replica.
    c.kubectl_ok(&["scale", "deployment", "app-a", "--replicas=0"]);
    eventually(90, "503 once app-a has no endpoints", || {
        get(http, "a.example.test", "/").0 == 503
    });
    // Routes follow edits of the Ingress without a restart: host a now goes to app b.
    c.kubectl_ok(&[
        "patch",
        "ingress",
        "web",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/spec/rules/0/http/paths/0/backend/service","value":{"name":"app-b","port":{"number":80}}}]"#,
    ]);
    eventually(30, "a.example.test to app b after the edit", || {
        get(http, "a.example.test", "/") == (200, "page-of-b".into())
    });
}
