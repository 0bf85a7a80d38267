//! The real kubectl (oldest and newest on the machine) against a real skiff API server.

use crate::common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{fails, kubectls, ok, TestServer};

const POD: &str = "apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {app: web}
spec:
  containers:
  - name: nginx
    image: nginx:1.27
    ports: [{containerPort: 80}]
";

const DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: api
spec:
  replicas: 2
  selector:
    matchLabels: {app: api}
  template:
    metadata:
      labels: {app: api}
    spec:
      containers:
      - name: api
        image: IMAGE
";

const UNKNOWN_FIELD: &str = "apiVersion: v1
kind: Pod
metadata:
  name: typo
spec:
  containers:
  - name: c
    image: busybox
    imagePullPolicyy: Always
";

const BAD_YAML: &str = "apiVersion: v1
kind: Pod
metadata:
  name: x
  bad: [
";

const INVALID: &str = "apiVersion: v1
kind: Pod
metadata:
  name: Bad_Name
spec:
  containers:
  - image: busybox
";

fn scenario(kubectl: &Path) {
    scenario_on(TestServer::start(), kubectl);
}

fn scenario_on(s: TestServer, kubectl: &Path) {
    let k = |args: &[&str]| s.kubectl(kubectl, args);
    let v = kubectl.display().to_string();

    let version = ok(k(&["version"]), "kubectl version");
    assert!(
        version.contains("Server Version") && version.contains("1.37"),
        "{v}: {version}"
    );

    let resources = ok(k(&["api-resources"]), "api-resources");
    for expected in [
        "deployments",
        "deploy",
        "apps/v1",
        "configmaps",
        "namespaces",
    ] {
        assert!(
            resources.contains(expected),
            "{v}: api-resources lacks {expected}:\n{resources}"
        );
    }
    let versions = ok(k(&["api-versions"]), "api-versions");
    assert_eq!(
        versions.lines().collect::<Vec<_>>(),
        [
            "admissionregistration.k8s.io/v1",
            "apiextensions.k8s.io/v1",
            "apps/v1",
            "authentication.k8s.io/v1",
            "authorization.k8s.io/v1",
            "autoscaling/v1",
            "autoscaling/v2",
            "batch/v1",
            "certificates.k8s.io/v1",
            "coordination.k8s.io/v1",
            "discovery.k8s.io/v1",
            "events.k8s.io/v1",
            "flowcontrol.apiserver.k8s.io/v1",
            // Served by the API server as metrics-server serves it (resource metrics).
            "metrics.k8s.io/v1beta1",
            "networking.k8s.io/v1",
            "node.k8s.io/v1",
            "policy/v1",
            "rbac.authorization.k8s.io/v1",
            "scheduling.k8s.io/v1",
            "storage.k8s.io/v1",
            "v1"
        ],
        "{v}"
    );

    // The initial namespaces exist.
    let namespaces = ok(k(&["get", "namespaces", "-o", "name"]), "get ns");
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(
            namespaces.contains(&format!("namespace/{ns}")),
            "{v}: {namespaces}"
        );
    }

    // create -f, then get as a table, wide, yaml, json and jsonpath.
    let pod = s.write("pod.yaml", POD);
    let created = ok(k(&["create", "-f", pod.to_str().unwrap()]), "create -f pod");
    assert_eq!(created.trim(), "pod/web created", "{v}");
    let table = ok(k(&["get", "pods"]), "get pods");
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "READY", "STATUS", "RESTARTS", "AGE"],
        "{v}"
    );
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(&row[..4], ["web", "0/1", "Pending", "0"], "{v}");
    let wide = ok(k(&["get", "pods", "-o", "wide"]), "get pods -o wide");
    assert!(
        wide.contains("NOMINATED NODE") && wide.contains("READINESS GATES"),
        "{v}: {wide}"
    );
    let yaml = ok(k(&["get", "pod", "web", "-o", "yaml"]), "get -o yaml");
    assert!(
        yaml.contains("image: nginx:1.27") && yaml.contains("imagePullPolicy: IfNotPresent"),
        "{v}: {yaml}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&ok(k(&["get", "pod", "web", "-o", "json"]), "get -o json")).unwrap();
    assert_eq!(json["status"]["phase"], "Pending", "{v}");
    assert_eq!(
        json["metadata"]["uid"].as_str().map(str::len),
        Some(36),
        "{v}"
    );
    let image = ok(
        k(&[
            "get",
            "pod",
            "web",
            "-o",
            "jsonpath={.spec.containers[0].image}",
        ]),
        "jsonpath",
    );
    assert_eq!(image, "nginx:1.27", "{v}");

    // label, annotate and the three patch types.
    ok(k(&["label", "pod", "web", "tier=front"]), "label");
    let selected = ok(
        k(&["get", "pods", "-l", "tier=front", "-o", "name"]),
        "get -l",
    );
    assert_eq!(selected.trim(), "pod/web", "{v}");
    let unselected = ok(
        k(&["get", "pods", "-l", "tier=back", "-o", "name"]),
        "get -l none",
    );
    assert!(unselected.trim().is_empty(), "{v}: {unselected}");
    ok(k(&["annotate", "pod", "web", "owner=team-a"]), "annotate");
    ok(
        k(&[
            "patch",
            "pod",
            "web",
            "--type=merge",
            "-p",
            r#"{"metadata":{"labels":{"merged":"yes"}}}"#,
        ]),
        "merge patch",
    );
    ok(
        k(&[
            "patch",
            "pod",
            "web",
            "--type=json",
            "-p",
            r#"[{"op":"replace","path":"/metadata/annotations/owner","value":"team-b"}]"#,
        ]),
        "json patch",
    );
    ok(
        k(&[
            "patch",
            "pod",
            "web",
            "--type=strategic",
            "-p",
            r#"{"spec":{"containers":[{"name":"nginx","image":"nginx:1.28"}]}}"#,
        ]),
        "strategic patch",
    );
    let patched: serde_json::Value =
        serde_json::from_str(&ok(k(&["get", "pod", "web", "-o", "json"]), "get patched")).unwrap();
    assert_eq!(patched["metadata"]["labels"]["merged"], "yes", "{v}");
    assert_eq!(patched["metadata"]["labels"]["tier"], "front", "{v}");
    assert_eq!(patched["metadata"]["annotations"]["owner"], "team-b", "{v}");
    let containers = patched["spec"]["containers"].as_array().unwrap();
    assert_eq!(
        containers.len(),
        1,
        "{v}: strategic merge keeps the list merged by name"
    );
    assert_eq!(containers[0]["image"], "nginx:1.28", "{v}");
    assert_eq!(containers[0]["ports"][0]["containerPort"], 80, "{v}");

    // apply twice: the second apply is a strategic merge patch that bumps generation.
    let deployment = s.write("deploy.yaml", &DEPLOYMENT.replace("IMAGE", "api:v1"));
    let applied = ok(k(&["apply", "-f", deployment.to_str().unwrap()]), "apply 1");
    assert_eq!(applied.trim(), "deployment.apps/api created", "{v}");
    std::fs::write(&deployment, DEPLOYMENT.replace("IMAGE", "api:v2")).unwrap();
    let applied = ok(k(&["apply", "-f", deployment.to_str().unwrap()]), "apply 2");
    assert_eq!(applied.trim(), "deployment.apps/api configured", "{v}");
    let unchanged = ok(k(&["apply", "-f", deployment.to_str().unwrap()]), "apply 3");
    assert_eq!(unchanged.trim(), "deployment.apps/api unchanged", "{v}");
    let deployed = ok(
        k(&["get", "deploy", "api", "-o", "jsonpath={.spec.template.spec.containers[0].image} {.metadata.generation} {.spec.strategy.type}"]),
        "get deploy",
    );
    assert_eq!(deployed, "api:v2 2 RollingUpdate", "{v}");
    let deployments = ok(k(&["get", "deployments"]), "get deployments");
    assert!(
        deployments.starts_with("NAME") && deployments.contains("UP-TO-DATE"),
        "{v}: {deployments}"
    );

    // get -w sees a new object.
    let (tx, rx) = mpsc::channel();
    let mut watcher = Command::new(kubectl)
        .arg("--kubeconfig")
        .arg(&s.kubeconfig)
        .args(["get", "configmaps", "-w"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = watcher.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    std::thread::sleep(Duration::from_millis(700));
    ok(
        k(&["create", "configmap", "watched", "--from-literal=a=b"]),
        "create configmap (watched)",
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l.starts_with("watched")) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => panic!("{v}: get -w never showed the new configmap: {seen:?}"),
        }
    }
    let _ = watcher.kill();
    let _ = watcher.wait();

    // Imperative creates (protobuf bodies from kubectl's typed clients).
    assert_eq!(
        ok(k(&["create", "namespace", "team"]), "create ns").trim(),
        "namespace/team created",
        "{v}"
    );
    ok(
        k(&[
            "create",
            "configmap",
            "cfg",
            "-n",
            "team",
            "--from-literal=key=value",
        ]),
        "create configmap",
    );
    let value = ok(
        k(&[
            "get",
            "cm",
            "cfg",
            "-n",
            "team",
            "-o",
            "jsonpath={.data.key}",
        ]),
        "get cm",
    );
    assert_eq!(value, "value", "{v}");
    let missing = fails(
        k(&[
            "create",
            "configmap",
            "x",
            "-n",
            "nope",
            "--from-literal=a=b",
        ]),
        "create in missing ns",
    );
    assert!(
        missing.contains("namespaces \"nope\" not found"),
        "{v}: {missing}"
    );

    // explain reads OpenAPI v3.
    let explained = ok(k(&["explain", "pod.spec.containers"]), "explain");
    assert!(
        explained.contains("containers") && explained.contains("DESCRIPTION"),
        "{v}: {explained}"
    );
    assert!(explained.contains("image"), "{v}: {explained}");

    // Bad input: Kubernetes' messages, nothing stored.
    let typo = s.write("typo.yaml", UNKNOWN_FIELD);
    let err = fails(
        k(&["create", "-f", typo.to_str().unwrap()]),
        "unknown field",
    );
    assert!(
        err.contains(
            r#"strict decoding error: unknown field "spec.containers[0].imagePullPolicyy""#
        ),
        "{v}: {err}"
    );
    let err = fails(k(&["get", "pod", "typo"]), "get typo");
    assert!(err.contains(r#"pods "typo" not found"#), "{v}: {err}");
    let bad = s.write("bad.yaml", BAD_YAML);
    let err = fails(k(&["create", "-f", bad.to_str().unwrap()]), "bad yaml");
    assert!(err.contains("error converting YAML to JSON"), "{v}: {err}");
    let invalid = s.write("invalid.yaml", INVALID);
    let err = fails(
        k(&["create", "-f", invalid.to_str().unwrap()]),
        "invalid pod",
    );
    assert!(
        err.contains(r#"The Pod "Bad_Name" is invalid"#),
        "{v}: {err}"
    );
    assert!(
        err.contains("metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain"),
        "{v}: {err}"
    );
    assert!(
        err.contains("spec.containers[0].name: Required value"),
        "{v}: {err}"
    );
    let pods = ok(k(&["get", "pods", "-o", "name"]), "pods after bad input");
    assert_eq!(pods.trim(), "pod/web", "{v}");

    // A stale resourceVersion conflicts.
    let current = ok(
        k(&["get", "cm", "cfg", "-n", "team", "-o", "json"]),
        "get for replace",
    );
    let replace = s.write("replace.json", &current.replace("\"value\"", "\"v2\""));
    ok(k(&["replace", "-f", replace.to_str().unwrap()]), "replace");
    let err = fails(
        k(&["replace", "-f", replace.to_str().unwrap()]),
        "stale replace",
    );
    assert!(
        err.contains(r#"Operation cannot be fulfilled on configmaps "cfg": the object has been modified; please apply your changes to the latest version and try again"#),
        "{v}: {err}"
    );

    // delete.
    let deleted = ok(k(&["delete", "pod", "web"]), "delete");
    assert_eq!(deleted.trim(), "pod \"web\" deleted", "{v}");
    let err = fails(k(&["get", "pod", "web"]), "get deleted");
    assert!(err.contains(r#"pods "web" not found"#), "{v}: {err}");
}

#[test]
fn oldest_kubectl() {
    scenario(&kubectls()[0]);
}

#[test]
fn newest_kubectl() {
    let all = kubectls();
    scenario(all.last().unwrap());
}

#[test]
fn oldest_kubectl_on_etcd() {
    scenario_on(TestServer::start_on_etcd(), &kubectls()[0]);
}

#[test]
fn newest_kubectl_on_etcd() {
    let all = kubectls();
    scenario_on(TestServer::start_on_etcd(), all.last().unwrap());
}

#[test]
fn anonymous_requests_only_reach_health_and_version() {
    let s = TestServer::start();
    let curl = |path: &str| {
        let out = Command::new("curl")
            .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
            .arg(s.ca_path())
            .arg(format!("https://127.0.0.1:{}{path}", s.port))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    for path in ["/healthz", "/livez", "/readyz", "/version"] {
        assert_eq!(curl(path), "200", "{path}");
    }
    for path in ["/api", "/apis", "/api/v1/namespaces", "/openapi/v3"] {
        assert_eq!(curl(path), "401", "{path}");
    }
}

#[test]
fn aggregated_discovery_echoes_the_requested_version() {
    let s = TestServer::start();
    let tls = s.root.path().join("server/tls");
    for version in ["v2", "v2beta1"] {
        let accept = format!(
            "application/json;g=apidiscovery.k8s.io;v={version};as=APIGroupDiscoveryList,application/json"
        );
        let out = Command::new("curl")
            .args(["-sS", "-D", "-", "--cacert"])
            .arg(tls.join("ca.crt"))
            .arg("--cert")
            .arg(tls.join("admin.crt"))
            .arg("--key")
            .arg(tls.join("admin.key"))
            .args(["-H", &format!("Accept: {accept}")])
            .arg(format!("https://127.0.0.1:{}/apis", s.port))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.to_ascii_lowercase().contains(&format!(
                "content-type: application/json;g=apidiscovery.k8s.io;v={version};as=apigroupdiscoverylist"
            )),
            "{text}"
        );
        assert!(text.contains(r#""resource":"deployments""#), "{text}");
    }
}

/// Patches that name no resourceVersion never fail for racing each other: a lost
/// compare-and-swap is retried on the newer object, as kube-apiserver's patcher does.
#[test]
fn concurrent_patches_without_a_resource_version_all_apply() {
    let s = TestServer::start();
    let kubectl = kubectls().pop().unwrap();
    ok(
        s.kubectl(&kubectl, &["create", "configmap", "shared"]),
        "create",
    );
    let patchers: Vec<_> = (0..12)
        .map(|i| {
            Command::new(&kubectl)
                .arg("--kubeconfig")
                .arg(&s.kubeconfig)
                .args([
                    "patch",
                    "configmap",
                    "shared",
                    "--type=merge",
                    "-p",
                    &format!(r#"{{"data":{{"k{i}":"v{i}"}}}}"#),
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for patcher in patchers {
        let out = patcher.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let data = ok(
        s.kubectl(
            &kubectl,
            &["get", "configmap", "shared", "-o", "jsonpath={.data}"],
        ),
        "get",
    );
    let data: serde_json::Value = serde_json::from_str(&data).unwrap();
    assert_eq!(data.as_object().unwrap().len(), 12, "{data}");
    // A patch that names a stale resourceVersion still conflicts.
    let stale = fails(
        s.kubectl(
            &kubectl,
            &[
                "patch",
                "configmap",
                "shared",
                "--type=merge",
                "-p",
                r#"{"metadata":{"resourceVersion":"1"},"data":{"x":"y"}}"#,
            ],
        ),
        "stale patch",
    );
    assert!(stale.contains("the object has been modified"), "{stale}");
}
