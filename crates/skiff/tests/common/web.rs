//! HTTP helpers of the Ingress and Gateway tests: two busybox httpd apps behind Services,
//! curl against the proxy's listeners on 127.0.0.1, and a free port for them.

#![allow(dead_code)]

use std::process::Command;
use std::time::{Duration, Instant};

/// Two Deployments and Services: `app-a` serves `page-of-a` on port 80; `app-b` serves
/// `page-of-b` at `/`, `/b/` and `/exact/` on 8080, behind Service port 80 named `http`.
pub const TWO_APPS: &str = r#"
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
        command: ["sh", "-c", "mkdir -p /www/b /www/exact && for d in /www /www/b /www/exact; do echo page-of-b > $d/index.html; done && exec httpd -f -p 8080 -h /www"]
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

/// A port below the ephemeral range (and the node port range) that is free now.
pub fn free_low_port() -> u16 {
    let mut seed = std::process::id() as u64 * 104729
        + std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos() as u64;
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

/// `curl ARGS`: (HTTP status, body without its final newline); status 0 when curl failed.
pub fn curl(args: &[&str]) -> (u16, String) {
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

/// `GET path` on the proxy at `port` with `Host: host` and the `extra` headers.
pub fn get(port: u16, host: &str, path: &str, extra: &[&str]) -> (u16, String) {
    let mut args = vec!["-H".to_owned(), format!("Host: {host}")];
    for h in extra {
        args.extend(["-H".to_owned(), h.to_string()]);
    }
    args.push(format!("http://127.0.0.1:{port}{path}"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    curl(&args)
}

/// Polls `f` until it returns true, for at most `secs` seconds.
pub fn eventually(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// A self-signed certificate for `host` made by openssl under the cluster's root, stored
/// by kubectl as the TLS Secret `name`; the certificate's path.
pub fn tls_secret(c: &super::cluster::Cluster, name: &str, host: &str) -> std::path::PathBuf {
    let dir = c.skiff.root.path();
    let (crt, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    let out = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", &format!("/CN={host}")])
        .args(["-addext", &format!("subjectAltName=DNS:{host}")])
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
        name,
        &format!("--cert={}", crt.display()),
        &format!("--key={}", key.display()),
    ]);
    crt
}
