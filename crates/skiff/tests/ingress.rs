//! The built-in Ingress controller end to end: two busybox httpd Deployments behind
//! Services, an Ingress routing by host and path, a TLS host whose Secret comes from
//! `kubectl create secret tls`, driven by the real kubectl 1.33 and curl against
//! `skiff server`. Needs root; the listeners are on 127.0.0.1.

use crate::common;

use std::time::{Duration, Instant};

use common::cluster::Cluster;
use common::web::{curl, eventually, free_low_port, get, tls_secret, TWO_APPS as APPS};

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
    let crt = tls_secret(&c, "secure-tls", "secure.example.test");

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
        last = get(http, "a.example.test", "/", &[]);
    }
    eventually(60, "b.example.test/b through the ingress", || {
        get(http, "b.example.test", "/b/", &[]) == (200, "page-of-b".into())
    });
    assert_eq!(get(http, "b.example.test", "/", &[]).0, 404);
    assert_eq!(get(http, "unknown.example.test", "/", &[]).0, 404);
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
        get(http, "a.example.test", "/", &[]).0 == 503
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
        get(http, "a.example.test", "/", &[]) == (200, "page-of-b".into())
    });
}
