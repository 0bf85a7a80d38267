//! Server-side apply with the real kubectl: `apply --server-side` creates and merges,
//! managedFields record every writer (appliers and updaters), a conflicting apply fails with
//! Kubernetes' message and `--force-conflicts` takes the fields over.

use crate::common;

use std::path::Path;

use common::{fails, kubectls, ok, TestServer};

const FIRST: &str = "apiVersion: v1
kind: ConfigMap
metadata:
  name: app
  labels: {tier: web}
data: {a: '1', b: '2'}
";

const OTHER: &str = "apiVersion: v1
kind: ConfigMap
metadata: {name: app}
data: {a: '9'}
";

/// The first applier again, without the label and `a`.
const SECOND: &str = "apiVersion: v1
kind: ConfigMap
metadata: {name: app}
data: {b: '2'}
";

const DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: c, image: 'busybox:1'}]
";

/// Only the image of container `c`: merged into the list by the container's name.
const IMAGE: &str = "apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  template:
    spec:
      containers: [{name: c, image: 'busybox:2'}]
";

fn scenario(kubectl: &Path) {
    let s = TestServer::start();
    let first = s.write("first.yaml", FIRST);
    let other = s.write("other.yaml", OTHER);
    let second = s.write("second.yaml", SECOND);
    let apply = |file: &Path, extra: &[&str]| {
        let mut args = vec!["apply", "--server-side", "-f", file.to_str().unwrap()];
        args.extend_from_slice(extra);
        s.kubectl(kubectl, &args)
    };
    let get = |path: &str| {
        ok(
            s.kubectl(
                kubectl,
                &["get", "configmap", "app", "-o", &format!("jsonpath={path}")],
            ),
            "get configmap",
        )
    };
    let owner_of = |field: &str| {
        get(&format!(
            "{{.metadata.managedFields[?(@.fieldsV1.f:data.f:{field})].manager}}"
        ))
    };

    // Create by apply: the applier owns what it set.
    ok(apply(&first, &[]), "apply creates");
    assert_eq!(
        get("{.data.a} {.data.b} {.metadata.labels.tier}"),
        "1 2 web"
    );
    assert_eq!(get("{.metadata.managedFields[*].operation}"), "Apply");
    assert_eq!(owner_of("a"), "kubectl");

    // Another applier changing `a` conflicts with the first.
    let stderr = fails(
        apply(&other, &["--field-manager=other"]),
        "conflicting apply",
    );
    assert!(
        stderr.contains(r#"Apply failed with 1 conflict: conflict with "kubectl": .data.a"#),
        "{stderr}"
    );
    assert_eq!(get("{.data.a}"), "1");

    // Forced, it takes `a` over.
    ok(
        apply(&other, &["--field-manager=other", "--force-conflicts"]),
        "forced apply",
    );
    assert_eq!(get("{.data.a}"), "9");
    assert_eq!(owner_of("a"), "other");

    // The first applier drops the label (it alone owned it) but not `a` (now other's).
    ok(apply(&second, &[]), "apply without the label");
    assert_eq!(get("{.metadata.labels}"), "");
    assert_eq!(get("{.data.a} {.data.b}"), "9 2");

    // Updates are recorded too, and an applier conflicts with them.
    ok(
        s.kubectl(
            kubectl,
            &[
                "patch",
                "configmap",
                "app",
                "--type=merge",
                "-p",
                r#"{"data":{"b":"7"}}"#,
            ],
        ),
        "patch",
    );
    assert_eq!(owner_of("b"), "kubectl-patch");
    let stderr = fails(apply(&second, &[]), "apply over a patch");
    assert!(
        stderr.contains(
            r#"Apply failed with 1 conflict: conflict with "kubectl-patch" using v1: .data.b"#
        ),
        "{stderr}"
    );

    // Creates record their manager.
    ok(
        s.kubectl(
            kubectl,
            &["create", "configmap", "plain", "--from-literal=k=v"],
        ),
        "create configmap",
    );
    let managers = ok(
        s.kubectl(
            kubectl,
            &[
                "get",
                "configmap",
                "plain",
                "-o",
                "jsonpath={.metadata.managedFields[*].manager} {.metadata.managedFields[*].operation}",
            ],
        ),
        "get plain",
    );
    assert_eq!(managers, "kubectl-create Update");

    // Keyed lists: the conflict names the container; forced, only the image changes.
    let deployment = s.write("deployment.yaml", DEPLOYMENT);
    let image = s.write("image.yaml", IMAGE);
    ok(apply(&deployment, &[]), "apply deployment");
    let stderr = fails(apply(&image, &["--field-manager=ci"]), "image conflict");
    assert!(
        stderr.contains(
            r#"Apply failed with 1 conflict: conflict with "kubectl": .spec.template.spec.containers[name="c"].image"#
        ),
        "{stderr}"
    );
    ok(
        apply(&image, &["--field-manager=ci", "--force-conflicts"]),
        "forced image",
    );
    let out = ok(
        s.kubectl(
            kubectl,
            &[
                "get",
                "deployment",
                "web",
                "-o",
                "jsonpath={.spec.replicas} {.spec.template.spec.containers[*].image}",
            ],
        ),
        "get deployment",
    );
    assert_eq!(out, "1 busybox:2");

    // An object kubectl applied client-side moves to server-side apply: kubectl hands the
    // client-side applier's fields to its applier by patching managedFields, so changing
    // them server-side is no conflict.
    let client_side = s.write(
        "client-side.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: moved}\ndata: {k: '1'}\n",
    );
    ok(
        s.kubectl(kubectl, &["apply", "-f", client_side.to_str().unwrap()]),
        "client-side apply",
    );
    let server_side = s.write(
        "server-side.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: moved}\ndata: {k: '2'}\n",
    );
    ok(
        apply(&server_side, &[]),
        "server-side apply after client-side",
    );
    let out = ok(
        s.kubectl(
            kubectl,
            &["get", "configmap", "moved", "-o", "jsonpath={.data.k}"],
        ),
        "get moved",
    );
    assert_eq!(out, "2");
    let annotation = ok(
        s.kubectl(
            kubectl,
            &[
                "get",
                "configmap",
                "moved",
                "-o",
                r#"jsonpath={.metadata.annotations.kubectl\.kubernetes\.io/last-applied-configuration}"#,
            ],
        ),
        "get moved",
    );
    assert!(annotation.contains(r#""k":"2""#), "{annotation}");
}

#[test]
fn kubectl_server_side_apply_conflicts_and_force() {
    for kubectl in kubectls() {
        scenario(&kubectl);
    }
}

const DNS_SERVICE: &str = "apiVersion: v1
kind: Service
metadata:
  name: dns
spec:
  selector: {app: dns}
  ports:
  - {name: dns, port: 53, protocol: UDP}
  - {name: dns-tcp, port: 53, protocol: TCP}
";

#[test]
fn server_side_apply_tells_ports_apart_by_protocol() {
    // Service ports are keyed by port and protocol: applying twice keeps 53/UDP and 53/TCP
    // as two ports, each with its own name.
    let s = TestServer::start();
    let kubectl = kubectls().into_iter().next_back().unwrap();
    let file = s.write("dns.yaml", DNS_SERVICE);
    for _ in 0..2 {
        ok(
            s.kubectl(
                &kubectl,
                &["apply", "--server-side", "-f", file.to_str().unwrap()],
            ),
            "apply --server-side",
        );
    }
    let ports = ok(
        s.kubectl(
            &kubectl,
            &[
                "get",
                "service",
                "dns",
                "-o",
                "jsonpath={range .spec.ports[*]}{.name}/{.port}/{.protocol} {end}",
            ],
        ),
        "get ports",
    );
    assert_eq!(ports.trim(), "dns/53/UDP dns-tcp/53/TCP");
    let managed = ok(
        s.kubectl(
            &kubectl,
            &[
                "get",
                "service",
                "dns",
                "-o",
                "jsonpath={.metadata.managedFields}",
                "--show-managed-fields",
            ],
        ),
        "managed fields",
    );
    assert!(
        managed.contains(r#"k:{\"port\":53,\"protocol\":\"UDP\"}"#),
        "{managed}"
    );
}
