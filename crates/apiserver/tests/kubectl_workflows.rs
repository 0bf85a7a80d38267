//! The kubectl workflows of daily use that the other suites do not drive: applying a
//! directory and a kustomization, custom columns, describe, the three patch types on a
//! built-in kind, `kubectl edit`, and `wait --for=delete`. Oldest and newest kubectl, on
//! the embedded store and on etcd.

use crate::common;

use std::path::Path;
use std::process::Command;

use common::{fails, kubectls, ok, TestServer};

const DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: httpd
        image: busybox
        command: [httpd, -f, -p, '80']
";

const SERVICE: &str = "apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
  - port: 80
";

const KUSTOMIZATION: &str = "namePrefix: team-
commonLabels:
  owner: team
resources:
- settings.yaml
configMapGenerator:
- name: generated
  literals:
  - mode=fast
";

const SETTINGS: &str = "apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
data:
  level: debug
";

fn workflows(s: TestServer, kubectl: &Path) {
    let k = |args: &[&str]| s.kubectl(kubectl, args);
    let v = kubectl.display().to_string();

    // apply -f DIR: every manifest in it.
    let dir = s.root.path().join("manifests");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("deployment.yaml"), DEPLOYMENT).unwrap();
    std::fs::write(dir.join("service.yaml"), SERVICE).unwrap();
    let applied = ok(k(&["apply", "-f", dir.to_str().unwrap()]), "apply -f dir");
    assert!(
        applied.contains("deployment.apps/web created"),
        "{v}: {applied}"
    );
    assert!(applied.contains("service/web created"), "{v}: {applied}");

    // apply -k: kustomize runs in kubectl; the server sees the generated objects.
    let base = s.root.path().join("overlay");
    std::fs::create_dir_all(&base).unwrap();
    std::fs::write(base.join("kustomization.yaml"), KUSTOMIZATION).unwrap();
    std::fs::write(base.join("settings.yaml"), SETTINGS).unwrap();
    let applied = ok(k(&["apply", "-k", base.to_str().unwrap()]), "apply -k");
    assert!(
        applied.contains("configmap/team-settings created"),
        "{v}: {applied}"
    );
    let generated = ok(
        k(&["get", "configmaps", "-l", "owner=team", "-o", "name"]),
        "get generated",
    );
    assert!(
        generated.contains("configmap/team-settings"),
        "{v}: {generated}"
    );
    assert!(
        generated.contains("configmap/team-generated-"),
        "{v}: the generated name carries its content hash: {generated}"
    );

    // Custom columns.
    let columns = ok(
        k(&[
            "get",
            "deployment",
            "web",
            "-o",
            "custom-columns=NAME:.metadata.name,REPLICAS:.spec.replicas,IMAGE:.spec.template.spec.containers[0].image",
        ]),
        "custom-columns",
    );
    let lines: Vec<Vec<&str>> = columns
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines,
        vec![
            vec!["NAME", "REPLICAS", "IMAGE"],
            vec!["web", "2", "busybox"]
        ],
        "{v}"
    );

    // describe: the built-in describers read the object and its events.
    let described = ok(k(&["describe", "service", "web"]), "describe service");
    assert!(described.contains("Name:"), "{v}: {described}");
    assert!(
        described
            .lines()
            .any(|l| l.starts_with("Selector:") && l.trim_end().ends_with("app=web")),
        "{v}: {described}"
    );
    assert!(described.contains("Port:"), "{v}: {described}");

    // The three patch types on a built-in kind.
    ok(
        k(&["create", "configmap", "patched", "--from-literal=a=1"]),
        "create",
    );
    ok(
        k(&[
            "patch",
            "configmap",
            "patched",
            "--type",
            "merge",
            "-p",
            r#"{"data":{"b":"2"}}"#,
        ]),
        "merge patch",
    );
    ok(
        k(&[
            "patch",
            "configmap",
            "patched",
            "--type",
            "json",
            "-p",
            r#"[{"op":"replace","path":"/data/a","value":"10"},{"op":"remove","path":"/data/b"}]"#,
        ]),
        "json patch",
    );
    ok(
        k(&[
            "patch",
            "configmap",
            "patched",
            "-p",
            r#"{"data":{"c":"3"}}"#,
        ]),
        "strategic patch",
    );
    let data = ok(
        k(&["get", "configmap", "patched", "-o", "jsonpath={.data}"]),
        "get data",
    );
    let data: serde_json::Value = serde_json::from_str(&data).unwrap();
    assert_eq!(data, serde_json::json!({"a": "10", "c": "3"}), "{v}");
    // A JSON patch whose test fails changes nothing.
    let err = fails(
        k(&[
            "patch",
            "configmap",
            "patched",
            "--type",
            "json",
            "-p",
            r#"[{"op":"test","path":"/data/a","value":"0"},{"op":"remove","path":"/data/a"}]"#,
        ]),
        "failing json patch",
    );
    assert!(err.contains("/data/a"), "{v}: {err}");
    let a = ok(
        k(&["get", "configmap", "patched", "-o", "jsonpath={.data.a}"]),
        "get a",
    );
    assert_eq!(a, "10", "{v}");

    // kubectl edit: the editor is a sed script, as a user's editor would change the file.
    let edited = Command::new(kubectl)
        .arg("--kubeconfig")
        .arg(&s.kubeconfig)
        .arg("--cache-dir")
        .arg(s.root.path().join("edit-cache"))
        .args(["edit", "configmap", "patched"])
        // Only the data line: the uid or a timestamp may contain "10" too.
        .env("KUBE_EDITOR", r#"sed -i 's/^  a: "10"$/  a: "11"/'"#)
        .output()
        .unwrap();
    let out = ok(edited, "kubectl edit");
    assert!(out.contains("configmap/patched edited"), "{v}: {out}");
    let a = ok(
        k(&["get", "configmap", "patched", "-o", "jsonpath={.data.a}"]),
        "get a",
    );
    assert_eq!(a, "11", "{v}");

    // wait --for=delete returns once the object is gone.
    ok(
        k(&["delete", "configmap", "patched", "--wait=false"]),
        "delete",
    );
    ok(
        k(&["wait", "--for=delete", "configmap/patched", "--timeout=20s"]),
        "wait for delete",
    );
    let err = fails(k(&["get", "configmap", "patched"]), "get deleted");
    assert!(
        err.contains(r#"configmaps "patched" not found"#),
        "{v}: {err}"
    );
}

#[test]
fn oldest_kubectl() {
    workflows(TestServer::start(), &kubectls()[0]);
}

#[test]
fn newest_kubectl() {
    workflows(TestServer::start(), kubectls().last().unwrap());
}

#[test]
fn newest_kubectl_on_etcd() {
    workflows(TestServer::start_on_etcd(), kubectls().last().unwrap());
}
