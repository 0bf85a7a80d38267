//! The `pods/binding` subresource the scheduler binds pods with: JSON (kubectl's raw POST)
//! and protobuf (client-go's typed client) bodies, its conflicts and preconditions,
//! discovery, and its authorization as `create` on `pods/binding`.

use crate::common;

use std::path::Path;
use std::process::Command;

use common::{fails, kubectls, ok, TestServer};
use prost::Message;

const PODS: &str = "apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  containers: [{name: c, image: busybox}]
---
apiVersion: v1
kind: Pod
metadata: {name: proto}
spec:
  containers: [{name: c, image: busybox}]
";

/// A curl request as the admin (or with `token`), returning the status code and body.
fn curl(
    s: &TestServer,
    token: Option<&str>,
    path: &str,
    content_type: &str,
    body: &Path,
    accept: &str,
) -> (String, String) {
    let tls = s.root.path().join("server/tls");
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-w", "\n%{http_code}", "--cacert"])
        .arg(tls.join("ca.crt"));
    match token {
        Some(token) => {
            cmd.args(["-H", &format!("Authorization: Bearer {token}")]);
        }
        None => {
            cmd.arg("--cert")
                .arg(tls.join("admin.crt"))
                .arg("--key")
                .arg(tls.join("admin.key"));
        }
    }
    if !content_type.is_empty() {
        cmd.args(["-X", "POST", "-H", &format!("Content-Type: {content_type}")])
            .arg("--data-binary")
            .arg(format!("@{}", body.display()));
    }
    if !accept.is_empty() {
        cmd.args(["-H", &format!("Accept: {accept}")]);
    }
    let out = cmd
        .arg(format!("https://127.0.0.1:{}{path}", s.port))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.to_owned(), body.to_owned())
}

/// A Binding as client-go's typed client sends it: `k8s\0` + runtime.Unknown.
fn protobuf_binding(pod: &str, uid: &str, node: &str) -> Vec<u8> {
    use k8s_pb::api::core::v1 as core;
    use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
    let binding = core::Binding {
        metadata: Some(meta::ObjectMeta {
            name: Some(pod.into()),
            namespace: Some("default".into()),
            uid: Some(uid.into()),
            ..Default::default()
        }),
        target: Some(core::ObjectReference {
            kind: Some("Node".into()),
            name: Some(node.into()),
            ..Default::default()
        }),
    };
    let unknown = k8s_pb::apimachinery::pkg::runtime::Unknown {
        type_meta: Some(k8s_pb::apimachinery::pkg::runtime::TypeMeta {
            api_version: Some("v1".into()),
            kind: Some("Binding".into()),
        }),
        raw: Some(binding.encode_to_vec()),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    let mut body = b"k8s\0".to_vec();
    body.extend(unknown.encode_to_vec());
    body
}

fn binding(
    s: &TestServer,
    kubectl: &Path,
    pod: &str,
    node: &str,
    uid: &str,
) -> std::process::Output {
    let file = s.write(
        &format!("binding-{pod}-{node}.json"),
        &format!(
            r#"{{"apiVersion":"v1","kind":"Binding","metadata":{{"name":"{pod}","uid":"{uid}"}},"target":{{"kind":"Node","name":"{node}"}}}}"#
        ),
    );
    s.kubectl(
        kubectl,
        &[
            "create",
            "--raw",
            &format!("/api/v1/namespaces/default/pods/{pod}/binding"),
            "-f",
            file.to_str().unwrap(),
        ],
    )
}

fn scenario(kubectl: &Path) {
    let s = TestServer::start();
    let pods = s.write("pods.yaml", PODS);
    ok(
        s.kubectl(kubectl, &["create", "-f", pods.to_str().unwrap()]),
        "create pods",
    );
    let jsonpath = |pod: &str, path: &str| {
        ok(
            s.kubectl(
                kubectl,
                &["get", "pod", pod, "-o", &format!("jsonpath={path}")],
            ),
            "get pod",
        )
    };

    // A uid precondition that does not match leaves the pod unbound.
    let stderr = fails(
        binding(&s, kubectl, "web", "node1", "not-the-uid"),
        "stale uid",
    );
    assert!(
        stderr.contains("Precondition failed: UID in precondition: not-the-uid"),
        "{stderr}"
    );
    assert_eq!(jsonpath("web", "{.spec.nodeName}"), "");

    // JSON binding: nodeName and PodScheduled=True in one write.
    let uid = jsonpath("web", "{.metadata.uid}");
    let out = ok(binding(&s, kubectl, "web", "node1", &uid), "bind web");
    assert!(out.contains(r#""status":"Success""#), "{out}");
    assert_eq!(jsonpath("web", "{.spec.nodeName}"), "node1");
    assert_eq!(
        jsonpath(
            "web",
            r#"{.status.conditions[?(@.type=="PodScheduled")].status}"#
        ),
        "True"
    );

    // Already bound: Kubernetes' conflict.
    let stderr = fails(binding(&s, kubectl, "web", "node2", ""), "rebind");
    assert!(
        stderr.contains(
            r#"Operation cannot be fulfilled on pods/binding "web": pod web is already assigned to node "node1""#
        ),
        "{stderr}"
    );
    // Gone: 404 naming the pod.
    let stderr = fails(binding(&s, kubectl, "ghost", "node1", ""), "bind ghost");
    assert!(stderr.contains("NotFound"), "{stderr}");

    // Protobuf body, as client-go's typed client sends it.
    let uid = jsonpath("proto", "{.metadata.uid}");
    let body = s.root.path().join("binding.pb");
    std::fs::write(&body, protobuf_binding("proto", &uid, "node2")).unwrap();
    let (code, text) = curl(
        &s,
        None,
        "/api/v1/namespaces/default/pods/proto/binding",
        "application/vnd.kubernetes.protobuf",
        &body,
        "application/json",
    );
    assert_eq!(code, "201", "{text}");
    assert_eq!(jsonpath("proto", "{.spec.nodeName}"), "node2");

    // Discovery, legacy and aggregated.
    let (_, legacy) = curl(&s, None, "/api/v1", "", &body, "application/json");
    assert!(
        legacy.contains(r#"{"kind":"Binding","name":"pods/binding","namespaced":true,"singularName":"","verbs":["create"]}"#),
        "{legacy}"
    );
    let (_, aggregated) = curl(
        &s,
        None,
        "/api",
        "",
        &body,
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList",
    );
    assert!(
        aggregated.contains(r#"{"responseKind":{"group":"","kind":"Binding","version":"v1"},"subresource":"binding","verbs":["create"]}"#),
        "{aggregated}"
    );

    // Authorized as create on pods/binding: a service account without that right is denied.
    ok(
        s.kubectl(kubectl, &["create", "serviceaccount", "nobody"]),
        "create serviceaccount",
    );
    let token = ok(
        s.kubectl(kubectl, &["create", "token", "nobody"]),
        "create token",
    );
    let json = s.write(
        "binding.json",
        r#"{"apiVersion":"v1","kind":"Binding","metadata":{"name":"web"},"target":{"name":"node1"}}"#,
    );
    let (code, text) = curl(
        &s,
        Some(token.trim()),
        "/api/v1/namespaces/default/pods/web/binding",
        "application/json",
        &json,
        "application/json",
    );
    assert_eq!(code, "403", "{text}");
    assert!(
        text.contains(r#"User \"system:serviceaccount:default:nobody\" cannot create resource \"pods/binding\" in API group \"\" in the namespace \"default\""#),
        "{text}"
    );
}

#[test]
fn pods_bind_through_the_binding_subresource() {
    for kubectl in kubectls() {
        scenario(&kubectl);
    }
}

/// Discovery lists the pod subresources the kubelet serves through the API server, with
/// Kubernetes' kinds and verbs (clients such as `kubectl auth can-i create pods/exec` and
/// conformance's discovery checks rely on them).
#[test]
fn discovery_lists_the_pod_streaming_subresources() {
    let s = TestServer::start();
    let kubectl = &kubectls()[0];
    let raw = ok(
        s.kubectl(kubectl, &["get", "--raw", "/api/v1"]),
        "get /api/v1",
    );
    let list: serde_json::Value = serde_json::from_str(&raw).unwrap();
    let find = |name: &str| {
        list["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("{name} missing from /api/v1"))
            .clone()
    };
    for (name, kind, verbs) in [
        ("pods/attach", "PodAttachOptions", vec!["create", "get"]),
        ("pods/exec", "PodExecOptions", vec!["create", "get"]),
        ("pods/log", "Pod", vec!["get"]),
        (
            "pods/portforward",
            "PodPortForwardOptions",
            vec!["create", "get"],
        ),
    ] {
        let r = find(name);
        assert_eq!(r["kind"], kind, "{r}");
        assert_eq!(r["verbs"], serde_json::json!(verbs), "{r}");
        assert_eq!(r["namespaced"], true, "{r}");
    }
}
