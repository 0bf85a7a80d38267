//! NetworkPolicies end to end: the real kubectl 1.33 against `skiff server`, busybox
//! pods on this node, and the node's policy table deciding who reaches whom. Needs
//! root. Traffic goes only between the test's own pods on its own bridge.

use crate::common;

use std::time::{Duration, Instant};

use common::cluster::Cluster;

const PODS: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: np-other}
---
apiVersion: v1
kind: Pod
metadata: {name: server, labels: {app: web}}
spec:
  containers:
  - name: httpd
    image: busybox:latest
    imagePullPolicy: Never
    command: ["httpd", "-f", "-p", "80", "-h", "/var/www"]
---
apiVersion: v1
kind: Pod
metadata: {name: client, labels: {role: client}}
spec:
  containers:
  - {name: sh, image: "busybox:latest", imagePullPolicy: Never, command: ["sleep", "3600"]}
---
apiVersion: v1
kind: Pod
metadata: {name: stranger, labels: {role: stranger}}
spec:
  containers:
  - {name: sh, image: "busybox:latest", imagePullPolicy: Never, command: ["sleep", "3600"]}
---
apiVersion: v1
kind: Pod
metadata: {name: visitor, namespace: np-other}
spec:
  containers:
  - {name: sh, image: "busybox:latest", imagePullPolicy: Never, command: ["sleep", "3600"]}
"#;

const DENY_INGRESS: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: default-deny}
spec:
  podSelector: {}
  policyTypes: [Ingress]
"#;

const ALLOW_CLIENTS: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-clients}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from:
    - podSelector: {matchLabels: {role: client}}
    ports: [{protocol: TCP, port: 80}]
"#;

const ALLOW_OTHER_NS: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-np-other}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: np-other}}
"#;

const DENY_EGRESS: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: client-deny-egress}
spec:
  podSelector: {matchLabels: {role: client}}
  policyTypes: [Egress]
"#;

/// Whether `pod` (in `ns`) gets the server's page within 5 s.
fn reaches(c: &Cluster, ns: &str, pod: &str, server_ip: &str) -> bool {
    let uid = c.jsonpath_in(ns, &format!("pod/{pod}"), "{.metadata.uid}");
    let name = format!("k8s_sh_{pod}_{ns}_{uid}_0");
    let out = c.skiff.run(&[
        "exec",
        &name,
        "sh",
        "-c",
        &format!("timeout 5 wget -qO- http://{server_ip}"),
    ]);
    out.status.success() && !out.stdout.is_empty()
}

/// Polls until `pod` reaches (or not) the server, at most 30 s.
fn expect(c: &Cluster, ns: &str, pod: &str, ip: &str, want: bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while reaches(c, ns, pod, ip) != want {
        assert!(
            Instant::now() < deadline,
            "{ns}/{pod} {} the server",
            if want {
                "never reached"
            } else {
                "still reaches"
            }
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

trait InNamespace {
    fn jsonpath_in(&self, ns: &str, object: &str, path: &str) -> String;
}

impl InNamespace for Cluster {
    fn jsonpath_in(&self, ns: &str, object: &str, path: &str) -> String {
        let out = self.kubectl(&["get", "-n", ns, object, "-o", &format!("jsonpath={path}")]);
        String::from_utf8_lossy(&out.stdout).to_string()
    }
}

/// Removes the test's namespace even when an assertion failed (the root, its pods and
/// tables go with the cluster's `system reset`).
struct Cleanup<'a>(&'a Cluster);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let _ = self
            .0
            .kubectl(&["delete", "networkpolicy", "--all", "--wait=false"]);
        let _ = self
            .0
            .kubectl(&["delete", "namespace", "np-other", "--wait=false"]);
    }
}

#[test]
fn network_policies_isolate_pods_and_deleting_them_restores_traffic() {
    let (c, server) = Cluster::start(&[]);
    let _cleanup = Cleanup(&c);
    c.apply(PODS);
    for pod in ["server", "client", "stranger"] {
        c.wait_for(&format!("pod/{pod}"), "{.status.phase}", "Running");
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while c.jsonpath_in("np-other", "pod/visitor", "{.status.phase}") != "Running" {
        assert!(Instant::now() < deadline, "np-other/visitor never ran");
        std::thread::sleep(Duration::from_millis(250));
    }
    let ip = c.jsonpath("pod/server", "{.status.podIP}");
    assert!(!ip.is_empty());

    // No policy: everyone reaches the server.
    expect(&c, "default", "client", &ip, true);
    expect(&c, "default", "stranger", &ip, true);
    expect(&c, "np-other", "visitor", &ip, true);

    // Default deny for ingress in the namespace: nobody does.
    c.apply(DENY_INGRESS);
    expect(&c, "default", "client", &ip, false);
    expect(&c, "default", "stranger", &ip, false);
    expect(&c, "np-other", "visitor", &ip, false);

    // Pods labelled role=client, on port 80: only the client.
    c.apply(ALLOW_CLIENTS);
    expect(&c, "default", "client", &ip, true);
    expect(&c, "default", "stranger", &ip, false);
    expect(&c, "np-other", "visitor", &ip, false);

    // Every pod of namespace np-other.
    c.apply(ALLOW_OTHER_NS);
    expect(&c, "np-other", "visitor", &ip, true);
    expect(&c, "default", "stranger", &ip, false);

    // The client's own egress denied: it no longer gets out.
    c.apply(DENY_EGRESS);
    expect(&c, "default", "client", &ip, false);
    expect(&c, "np-other", "visitor", &ip, true);

    // All policies gone: traffic as before.
    c.kubectl_ok(&["delete", "networkpolicy", "--all"]);
    expect(&c, "default", "client", &ip, true);
    expect(&c, "default", "stranger", &ip, true);
    expect(&c, "np-other", "visitor", &ip, true);
    drop(server);
}
