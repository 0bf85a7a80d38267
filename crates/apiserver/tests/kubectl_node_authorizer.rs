//! The Node authorizer with the real kubectl: a node (a client certificate for
//! `system:node:n1` in `system:nodes` from the cluster CA, and the same identity through
//! impersonation) reads a Secret (by get, or a list selecting its name) and a ConfigMap
//! only while a pod bound to it uses them, never another Secret, and keeps the static
//! node policy (pods, nodes, its Lease).

use crate::common;
use crate::kubectl_rbac::client_certificate;

use common::{as_user, eventually, fails, kubectls, ok, TestServer};

const OBJECTS: &str = "apiVersion: v1
kind: Secret
metadata: {name: used}
stringData: {password: s3cret}
---
apiVersion: v1
kind: Secret
metadata: {name: other}
stringData: {password: hidden}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {mode: fast}
";

const POD: &str = "apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  nodeName: n1
  containers:
  - name: web
    image: busybox
    envFrom: [{configMapRef: {name: settings}}]
    volumeMounts: [{name: creds, mountPath: /creds}]
  volumes:
  - name: creds
    secret: {secretName: used}
";

fn forbidden(node: &str, name: &str) -> String {
    format!(
        "secrets \"{name}\" is forbidden: User \"system:node:{node}\" cannot get resource \"secrets\" in API group \"\" in the namespace \"default\": no relationship found between node '{node}' and this object"
    )
}

#[test]
fn a_node_reads_only_the_secrets_of_its_pods() {
    let s = TestServer::start();
    let kubectl = kubectls().pop().unwrap();
    let admin = |args: &[&str]| s.kubectl(&kubectl, args);
    ok(
        s.kubectl_stdin(&kubectl, &["apply", "-f", "-"], Some(OBJECTS)),
        "create the objects",
    );
    let n1 = s.user_kubeconfig(
        "n1",
        &client_certificate(&s, "system:node:n1", &["system:nodes"]),
    );
    let node = |args: &[&str]| as_user(&kubectl, &n1, args);

    // No pod uses the Secret yet: even the node's RBAC role (bound to nobody) gives none.
    let err = fails(node(&["get", "secret", "used"]), "a secret before the pod");
    assert!(err.contains(&forbidden("n1", "used")), "{err}");
    let err = fails(node(&["get", "secrets"]), "listing secrets");
    assert!(err.contains("cannot list resource \"secrets\""), "{err}");

    // The pod bound to n1 uses `used` and `settings`.
    let mut created = s.kubectl_stdin(&kubectl, &["apply", "-f", "-"], Some(POD));
    for _ in 0..50 {
        if created.status.success() {
            break;
        }
        // The namespace's default ServiceAccount comes a moment after the server starts.
        std::thread::sleep(std::time::Duration::from_millis(100));
        created = s.kubectl_stdin(&kubectl, &["apply", "-f", "-"], Some(POD));
    }
    ok(created, "create the pod");
    eventually("the node reads its pod's secret", || {
        node(&["get", "secret", "used"]).status.success()
    });
    let password = ok(
        node(&["get", "secret", "used", "-o", "jsonpath={.data.password}"]),
        "the node reads the secret",
    );
    assert_eq!(password, "czNjcmV0");
    ok(
        node(&["get", "configmap", "settings"]),
        "the node reads the config map",
    );
    // A list or watch of that one Secret by name, as a kubelet's watch-based manager does.
    let listed = ok(
        node(&[
            "get",
            "secrets",
            "--field-selector",
            "metadata.name=used",
            "-o",
            "name",
        ]),
        "the node lists its secret by name",
    );
    assert_eq!(listed.trim(), "secret/used");
    let err = fails(node(&["get", "secret", "other"]), "another secret");
    assert!(err.contains(&forbidden("n1", "other")), "{err}");
    let err = fails(
        node(&["delete", "secret", "used"]),
        "the node deletes a secret",
    );
    assert!(err.contains("cannot delete resource \"secrets\""), "{err}");

    // Impersonation is authorized the same way.
    let as_node = |name: &str, secret: &str| {
        admin(&[
            &format!("--as=system:node:{name}"),
            "--as-group=system:nodes",
            "get",
            "secret",
            secret,
        ])
    };
    ok(as_node("n1", "used"), "impersonating n1");
    let err = fails(as_node("n2", "used"), "impersonating n2");
    assert!(err.contains(&forbidden("n2", "used")), "{err}");

    // The static node policy: pods and nodes everywhere, its own Lease only.
    ok(node(&["get", "pods", "-A"]), "the node lists pods");
    ok(node(&["get", "nodes"]), "the node lists nodes");
    let err = fails(
        node(&["get", "lease", "-n", "kube-node-lease", "n2"]),
        "another node's lease",
    );
    assert!(
        err.contains("can only access node lease with the same name as the requesting node"),
        "{err}"
    );
    let err = fails(
        node(&["get", "deployments"]),
        "deployments are no node's business",
    );
    assert!(
        err.contains("cannot list resource \"deployments\""),
        "{err}"
    );

    // Once the pod is gone, so is the access.
    ok(
        admin(&["delete", "pod", "web", "--grace-period=0", "--force"]),
        "delete the pod",
    );
    eventually("the node loses the secret", || {
        !node(&["get", "secret", "used"]).status.success()
    });
    let err = fails(node(&["get", "secret", "used"]), "the secret after the pod");
    assert!(err.contains(&forbidden("n1", "used")), "{err}");
    let err = fails(
        node(&["get", "configmap", "settings"]),
        "the config map after the pod",
    );
    assert!(
        err.contains("no relationship found between node 'n1' and this object"),
        "{err}"
    );
}
