//! The Gateway API on the built-in ingress proxy end to end: the CRDs skiff installs, a
//! Gateway with an HTTP and an HTTPS listener, HTTPRoutes by hostname, path (prefix and
//! exact), header and weights to two busybox httpd Deployments, route and Gateway
//! statuses, a missing backend; and the DefaultIngressClass admission. Driven by the real
//! kubectl 1.33 and curl against `skiff server`; the listeners are on 127.0.0.1.

use crate::common;

use std::time::{Duration, Instant};

use common::cluster::Cluster;
use common::web::{curl, eventually, free_low_port, get, tls_secret, TWO_APPS as APPS};

/// Shaped like the Gateway API's own examples (upstream's `http-routing` and
/// `tls-basic`), with the fields the CRDs default left out.
const GATEWAY: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: web}
spec:
  gatewayClassName: skiff
  listeners:
  - name: http
    protocol: HTTP
    port: 80
  - name: https
    protocol: HTTPS
    port: 443
    hostname: secure.example.test
    tls:
      mode: Terminate
      certificateRefs:
      - kind: Secret
        group: ""
        name: secure-tls
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: route-a}
spec:
  parentRefs:
  - name: web
    sectionName: http
  hostnames: ["a.example.test"]
  rules:
  - matches:
    - path: {type: PathPrefix, value: /}
    backendRefs:
    - name: app-a
      port: 80
  - matches:
    - path: {type: Exact, value: /exact/}
    backendRefs:
    - name: app-b
      port: 80
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: route-b}
spec:
  parentRefs: [{name: web, sectionName: http}]
  hostnames: ["b.example.test"]
  rules:
  - matches:
    - headers: [{name: x-split, value: "yes"}]
    backendRefs:
    - {name: app-a, port: 80, weight: 1}
    - {name: app-b, port: 80, weight: 1}
  - backendRefs: [{name: app-b, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: HTTPRoute
metadata: {name: secure}
spec:
  parentRefs: [{name: web, sectionName: https}]
  rules:
  - backendRefs: [{name: app-a, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: broken}
spec:
  parentRefs: [{name: web}]
  hostnames: ["broken.example.test"]
  rules:
  - backendRefs: [{name: no-such-service, port: 80}]
"#;

const ACCEPTED: &str = "{.status.parents[0].conditions[?(@.type==\"Accepted\")].status}";
const RESOLVED_REASON: &str = "{.status.parents[0].conditions[?(@.type==\"ResolvedRefs\")].reason}";

#[test]
fn gateway_routes_by_host_path_header_weight_tls_and_status() {
    let (http, https) = (free_low_port(), free_low_port());
    let (http_s, https_s) = (http.to_string(), https.to_string());
    let (c, _server) = Cluster::start(&[
        ("SKIFF_INGRESS_HTTP_PORT", &http_s),
        ("SKIFF_INGRESS_HTTPS_PORT", &https_s),
    ]);

    // The three CRDs, served, and skiff's GatewayClass, accepted.
    eventually(30, "the Gateway API CRDs", || {
        let crds = c.kubectl_ok(&["get", "crd", "-o", "name"]);
        ["gatewayclasses", "gateways", "httproutes"]
            .iter()
            .all(|p| crds.contains(&format!("{p}.gateway.networking.k8s.io")))
    });
    c.wait_until(
        "gatewayclass/skiff",
        "{.status.conditions[?(@.type==\"Accepted\")].status}",
        60,
        |s| s == "True",
    );
    assert_eq!(
        c.jsonpath("gatewayclass/skiff", "{.spec.controllerName}"),
        "skiff.dev/gateway-controller"
    );
    let classes = c.kubectl_ok(&["get", "gatewayclass"]);
    assert!(
        classes.contains("CONTROLLER") && classes.contains("skiff.dev/gateway-controller"),
        "{classes}"
    );

    // The HTTPS listener's certificate, made by openssl, stored by kubectl.
    let crt = tls_secret(&c, "secure-tls", "secure.example.test");

    c.apply(APPS);
    c.apply(GATEWAY);

    let mut last = (0, String::new());
    let deadline = Instant::now() + Duration::from_secs(120);
    while last != (200, "page-of-a".into()) {
        assert!(
            Instant::now() < deadline,
            "a.example.test through the gateway: {last:?}\n{}\n{}",
            c.kubectl_ok(&["get", "pods,endpointslices,gateway,httproute", "-o", "wide"]),
            c.kubectl_ok(&["get", "gateway,httproute", "-o", "yaml"]),
        );
        std::thread::sleep(Duration::from_millis(500));
        last = get(http, "a.example.test", "/", &[]);
    }
    eventually(60, "b.example.test through the gateway", || {
        get(http, "b.example.test", "/", &[]) == (200, "page-of-b".into())
    });
    // The exact path goes to b; below it, the prefix rule's a (which has no such file).
    assert_eq!(
        get(http, "a.example.test", "/exact/", &[]),
        (200, "page-of-b".into())
    );
    assert_eq!(
        get(http, "a.example.test", "/index.html", &[]).1,
        "page-of-a"
    );
    // A host no route names: 404 (nor any Ingress).
    assert_eq!(get(http, "c.example.test", "/", &[]).0, 404);
    // The header match splits between a and b by weight (1:1, in turn; a rebuild of the
    // table between two requests restarts the turn, so only both being seen is certain).
    let split: Vec<String> = (0..10)
        .map(|_| get(http, "b.example.test", "/", &["x-split: yes"]).1)
        .collect();
    assert!(split.iter().any(|b| b == "page-of-a"), "{split:?}");
    assert!(split.iter().any(|b| b == "page-of-b"), "{split:?}");
    assert!(
        split.iter().all(|b| b == "page-of-a" || b == "page-of-b"),
        "{split:?}"
    );

    // HTTPS by SNI with the Secret's certificate, verified against it.
    let crt_path = crt.display().to_string();
    let resolve = format!("secure.example.test:{https}:127.0.0.1");
    let url = format!("https://secure.example.test:{https}/");
    eventually(30, "secure.example.test over TLS", || {
        curl(&["--cacert", &crt_path, "--resolve", &resolve, &url]) == (200, "page-of-a".into())
    });
    // The HTTPS listener's routes are not on the HTTP listener.
    assert_eq!(get(http, "secure.example.test", "/", &[]).0, 404);

    // Statuses.
    for route in ["route-a", "route-b", "secure"] {
        c.wait_until(&format!("httproute/{route}"), ACCEPTED, 30, |s| s == "True");
        assert_eq!(
            c.jsonpath(&format!("httproute/{route}"), RESOLVED_REASON),
            "ResolvedRefs"
        );
    }
    c.wait_until("httproute/broken", RESOLVED_REASON, 30, |s| {
        s == "BackendNotFound"
    });
    assert_eq!(c.jsonpath("httproute/broken", ACCEPTED), "True");
    assert_eq!(
        c.jsonpath("httproute/broken", "{.status.parents[0].controllerName}"),
        "skiff.dev/gateway-controller"
    );
    assert_eq!(get(http, "broken.example.test", "/", &[]).0, 500);
    c.wait_until(
        "gateway/web",
        "{.status.conditions[?(@.type==\"Programmed\")].status}",
        30,
        |s| s == "True",
    );
    assert_eq!(
        c.jsonpath("gateway/web", "{.status.addresses[0].value}"),
        "127.0.0.1"
    );
    assert_eq!(
        c.jsonpath("gateway/web", "{.status.listeners[*].attachedRoutes}"),
        "3 1"
    );
    // Statuses are written once, not on every round their own writes start.
    let versions = || {
        [
            "gateway/web",
            "httproute/route-a",
            "httproute/broken",
            "gatewayclass/skiff",
        ]
        .map(|o| c.jsonpath(o, "{.metadata.resourceVersion}"))
    };
    let before = versions();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(versions(), before);
    let table = c.kubectl_ok(&["get", "gateway", "web"]);
    assert!(
        table.contains("127.0.0.1") && table.contains("True") && table.contains("skiff"),
        "{table}"
    );

    // Routes follow edits without a restart: `kubectl apply` of the edited manifest
    // (a merge patch of each object) points the broken route at app-b.
    c.apply(&GATEWAY.replace("no-such-service", "app-b"));
    c.wait_until("httproute/broken", RESOLVED_REASON, 30, |s| {
        s == "ResolvedRefs"
    });
    eventually(60, "broken.example.test after the edit", || {
        get(http, "broken.example.test", "/", &[]) == (200, "page-of-b".into())
    });
}

#[test]
fn ingress_without_a_class_gets_the_newest_default_class() {
    let (c, _server) = Cluster::start_control_plane(&[]);
    c.apply(
        r#"
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata:
  name: first
  annotations: {ingressclass.kubernetes.io/is-default-class: "true"}
spec: {controller: example.com/first}
"#,
    );
    let ingress = |name: &str, class: &str| {
        format!(
            r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: {name}}}
spec:
  {class}
  defaultBackend: {{service: {{name: web, port: {{number: 80}}}}}}
"#
        )
    };
    c.apply(&ingress("plain", ""));
    assert_eq!(
        c.jsonpath("ingress/plain", "{.spec.ingressClassName}"),
        "first"
    );
    // A class named explicitly stays.
    c.apply(&ingress("named", "ingressClassName: other"));
    assert_eq!(
        c.jsonpath("ingress/named", "{.spec.ingressClassName}"),
        "other"
    );
    // Two defaults: the newest wins (creation timestamps have one-second resolution).
    std::thread::sleep(Duration::from_millis(1100));
    c.apply(
        r#"
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata:
  name: second
  annotations: {ingressclass.kubernetes.io/is-default-class: "true"}
spec: {controller: example.com/second}
"#,
    );
    c.apply(&ingress("later", ""));
    assert_eq!(
        c.jsonpath("ingress/later", "{.spec.ingressClassName}"),
        "second"
    );
    // An existing Ingress is not changed by admission on update.
    c.kubectl_ok(&["label", "ingress", "plain", "touched=yes"]);
    assert_eq!(
        c.jsonpath("ingress/plain", "{.spec.ingressClassName}"),
        "first"
    );
}
