//! Prometheus metrics at `/metrics`, read with the real kubectl (`kubectl get --raw`).

use crate::common;

use common::{kubectls, ok, TestServer};

/// The value of the sample whose line starts with `prefix`.
fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn metrics_count_requests_and_stored_objects() {
    let s = TestServer::start();
    let kubectl = kubectls().into_iter().next_back().unwrap();
    for name in ["m1", "m2", "m3"] {
        ok(
            s.kubectl(
                &kubectl,
                &["create", "configmap", name, "--from-literal=a=b"],
            ),
            "create configmap",
        );
    }
    let text = ok(
        s.kubectl(&kubectl, &["get", "--raw", "/metrics"]),
        "metrics",
    );
    let created = sample(
        &text,
        r#"apiserver_request_total{verb="POST",group="",version="v1",resource="configmaps",subresource="",scope="namespace",component="apiserver",code="201"}"#,
    );
    assert_eq!(created, Some(3.0), "{text}");
    // kube-root-ca.crt is published in every namespace, so at least 4 in default.
    let stored = sample(&text, r#"apiserver_storage_objects{resource="configmaps"}"#);
    assert!(stored.is_some_and(|n| n >= 4.0), "{stored:?}");
    assert!(
        text.contains("# TYPE apiserver_request_duration_seconds histogram"),
        "{text}"
    );
    assert!(
        sample(&text, "process_resident_memory_bytes").is_some_and(|b| b > 1e6),
        "{text}"
    );
}
