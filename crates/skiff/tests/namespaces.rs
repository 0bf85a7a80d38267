//! Namespace deletion and pod garbage collection end to end: the namespace controller
//! and the pod garbage collector of `skiff server` (run without a kubelet), driven by
//! the real kubectl 1.33.

use crate::common;

use std::io::Read as _;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::cluster::Cluster;

/// A namespaced custom resource, to prove deletion covers what discovery finds.
const WIDGET_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.com}
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        x-kubernetes-preserve-unknown-fields: true
"#;

/// Polls `f` until it returns true, for at most `secs` seconds.
fn eventually(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// Creates namespace `ns` and waits for its `default` ServiceAccount (pods need it).
fn create_namespace(cluster: &Cluster, ns: &str) {
    cluster.kubectl_ok(&["create", "namespace", ns]);
    eventually(30, "the default ServiceAccount", || {
        cluster
            .kubectl(&["-n", ns, "get", "serviceaccount", "default"])
            .status
            .success()
    });
}

/// The condition `type_` of namespace `ns` as `status reason message`.
fn namespace_condition(cluster: &Cluster, ns: &str, type_: &str) -> String {
    cluster.jsonpath(
        &format!("namespace/{ns}"),
        &format!(
            "{{.status.conditions[?(@.type==\"{type_}\")].status}} \
             {{.status.conditions[?(@.type==\"{type_}\")].reason}} \
             {{.status.conditions[?(@.type==\"{type_}\")].message}}"
        ),
    )
}

#[test]
fn deleting_a_namespace_deletes_all_its_content_then_the_namespace() {
    let (cluster, _server) = Cluster::start_control_plane(&[]);
    cluster.apply(WIDGET_CRD);
    cluster.kubectl_ok(&[
        "wait",
        "--for=condition=Established",
        "crd/widgets.example.com",
        "--timeout=30s",
    ]);
    create_namespace(&cluster, "doomed");
    let ns = ["-n", "doomed"];
    let create = |args: &[&str]| cluster.kubectl_ok(&[&ns[..], args].concat());
    create(&["create", "configmap", "settings", "--from-literal=a=b"]);
    create(&["create", "secret", "generic", "token", "--from-literal=t=x"]);
    create(&["create", "deployment", "web", "--image=busybox:latest"]);
    create(&["create", "service", "clusterip", "web", "--tcp=80:80"]);
    cluster.apply(
        "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: gear, namespace: doomed}\n",
    );
    eventually(30, "the deployment's pod", || {
        !cluster
            .kubectl_ok(&["-n", "doomed", "get", "pods", "-o", "name"])
            .is_empty()
    });
    // Another namespace's content stays.
    cluster.kubectl_ok(&["create", "configmap", "keep", "--from-literal=a=b"]);

    // kubectl waits until the namespace is gone.
    let out = cluster.kubectl(&["delete", "namespace", "doomed", "--timeout=60s"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = cluster.kubectl(&["get", "namespace", "doomed"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(r#"namespaces "doomed" not found"#),
        "{}",
        stderr(&out)
    );
    let left = cluster.kubectl_ok(&[
        "-n",
        "doomed",
        "get",
        "configmaps,secrets,serviceaccounts,deployments,replicasets,pods,services,widgets",
        "-o",
        "name",
    ]);
    assert_eq!(left, "");
    cluster.kubectl_ok(&["get", "configmap", "keep"]);
}

#[test]
fn deleting_a_namespace_waits_for_its_running_pods_to_terminate() {
    let (cluster, _server) = Cluster::start(&[]);
    create_namespace(&cluster, "busy");
    cluster.apply(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: sleeper, namespace: busy}\nspec:\n  \
         terminationGracePeriodSeconds: 3\n  containers:\n  - name: c\n    \
         image: busybox:latest\n    imagePullPolicy: Never\n    command: [sleep, \"3600\"]\n",
    );
    eventually(60, "the pod to run", || {
        cluster.kubectl_ok(&[
            "-n",
            "busy",
            "get",
            "pod",
            "sleeper",
            "-o",
            "jsonpath={.status.phase}",
        ]) == "Running"
    });
    let out = cluster.kubectl(&["delete", "namespace", "busy", "--timeout=90s"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = cluster.kubectl(&["get", "namespace", "busy"]);
    assert!(stderr(&out).contains("not found"), "{}", stderr(&out));
    assert!(
        !cluster.engine_containers().contains("sleeper"),
        "{}",
        cluster.engine_containers()
    );
}

#[test]
fn a_terminating_namespace_waits_for_its_contents_finalizers() {
    let (cluster, _server) = Cluster::start_control_plane(&[]);
    create_namespace(&cluster, "held");
    cluster.apply(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: pinned\n  namespace: held\n  \
         finalizers: [example.com/hold]\ndata: {a: b}\n",
    );
    cluster.kubectl_ok(&["delete", "namespace", "held", "--wait=false"]);
    eventually(30, "the NamespaceFinalizersRemaining condition", || {
        namespace_condition(&cluster, "held", "NamespaceFinalizersRemaining")
            == "True SomeFinalizersRemain Some content in the namespace has finalizers \
                remaining: example.com/hold in 1 resource instances"
    });
    assert_eq!(
        namespace_condition(&cluster, "held", "NamespaceContentRemaining"),
        "True SomeResourcesRemain Some resources are remaining: configmaps. has 1 resource \
         instances"
    );
    assert_eq!(
        namespace_condition(&cluster, "held", "NamespaceDeletionDiscoveryFailure"),
        "False ResourcesDiscovered All resources successfully discovered"
    );
    assert_eq!(
        namespace_condition(&cluster, "held", "NamespaceDeletionContentFailure"),
        "False ContentDeleted All content successfully deleted, may be waiting on finalization"
    );
    assert_eq!(
        cluster.jsonpath("namespace/held", "{.status.phase}"),
        "Terminating"
    );
    let json = cluster.kubectl_ok(&["get", "namespace", "held", "-o", "json"]);
    assert!(
        json.contains("NamespaceDeletionGroupVersionParsingFailure"),
        "{json}"
    );
    // The finalizer holds the namespace: it stays Terminating.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        cluster.jsonpath("namespace/held", "{.status.phase}"),
        "Terminating"
    );

    // Nothing new may be created in it.
    let out = cluster.kubectl(&["-n", "held", "create", "configmap", "late"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(
            "configmaps \"late\" is forbidden: unable to create new content in namespace held \
             because it is being terminated"
        ),
        "{}",
        stderr(&out)
    );

    cluster.kubectl_ok(&[
        "-n",
        "held",
        "patch",
        "configmap",
        "pinned",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);
    let out = cluster.kubectl(&["wait", "--for=delete", "namespace/held", "--timeout=60s"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn the_finalize_subresource_changes_only_spec_finalizers() {
    let (cluster, _server) = Cluster::start_control_plane(&[]);
    create_namespace(&cluster, "fin");
    let body = cluster.skiff.root.path().join("finalize.json");
    let put = |json: &str| {
        std::fs::write(&body, json).unwrap();
        cluster.kubectl(&[
            "replace",
            "--raw",
            "/api/v1/namespaces/fin/finalize",
            "-f",
            body.to_str().unwrap(),
        ])
    };
    let out = put(
        r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"fin","labels":{"x":"y"}},
            "spec":{"finalizers":["kubernetes","example.com/mine"]},"status":{"phase":"Terminating"}}"#,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        cluster.jsonpath("namespace/fin", "{.spec.finalizers}"),
        r#"["kubernetes","example.com/mine"]"#
    );
    assert_eq!(
        cluster.jsonpath("namespace/fin", "{.metadata.labels.x}"),
        ""
    );
    assert_eq!(
        cluster.jsonpath("namespace/fin", "{.status.phase}"),
        "Active"
    );

    let out = put(
        r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"fin"},
            "spec":{"finalizers":["mine"]}}"#,
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out)
            .contains("name is neither a standard finalizer name nor is it fully qualified"),
        "{}",
        stderr(&out)
    );

    // Deleting waits for both finalizers: the controller removes its own, the other is
    // removed through the subresource, and the namespace goes.
    cluster.kubectl_ok(&["delete", "namespace", "fin", "--wait=false"]);
    eventually(30, "the controller's finalizer to go", || {
        cluster.jsonpath("namespace/fin", "{.spec.finalizers}") == r#"["example.com/mine"]"#
    });
    assert_eq!(
        cluster.jsonpath("namespace/fin", "{.status.phase}"),
        "Terminating"
    );
    let out = put(
        r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"fin"},"spec":{"finalizers":[]}}"#,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = cluster.kubectl(&["get", "namespace", "fin"]);
    assert!(stderr(&out).contains("not found"), "{}", stderr(&out));
}

#[test]
fn pods_bound_to_nodes_that_do_not_exist_are_deleted() {
    let (cluster, _server) = Cluster::start_control_plane(&[]);
    // A node without a kubelet: its pods stay.
    cluster.apply("apiVersion: v1\nkind: Node\nmetadata: {name: present}\n");
    let pod = |name: &str, node: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  nodeName: {node}\n  \
             containers: [{{name: c, image: busybox:latest}}]\n"
        )
    };
    cluster.apply(&pod("kept", "present"));
    let mut watch = std::process::Command::new(&cluster.kubectl)
        .arg("--kubeconfig")
        .arg(&cluster.kubeconfig)
        .args([
            "get",
            "pods",
            "--watch",
            "--output-watch-events",
            "-o",
            "json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    cluster.apply(&pod("orphan", "ghost"));
    // Upstream quarantines a missing node for 40 s before its pods go.
    eventually(90, "the orphaned pod to be deleted", || {
        let out = cluster.kubectl(&["get", "pod", "orphan"]);
        !out.status.success() && stderr(&out).contains("not found")
    });
    cluster.kubectl_ok(&["get", "pod", "kept"]);
    watch.kill().unwrap();
    let mut events = String::new();
    watch
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut events)
        .unwrap();
    watch.wait().unwrap();
    // Marked Failed with the DisruptionTarget condition before being deleted.
    assert!(events.contains(r#""reason":"DeletionByPodGC""#), "{events}");
    assert!(
        events.contains(r#""message":"PodGC: node no longer exists""#),
        "{events}"
    );
    assert!(events.contains(r#""phase":"Failed""#), "{events}");
    assert!(events.contains(r#""type":"DELETED""#), "{events}");
}

#[test]
fn terminated_pods_beyond_the_threshold_are_deleted_oldest_first() {
    let (cluster, _server) = Cluster::start_control_plane(&["--terminated-pod-gc-threshold", "2"]);
    for name in ["p1", "p2", "p3", "p4"] {
        cluster.kubectl_ok(&["run", name, "--image=busybox:latest"]);
    }
    for name in ["p1", "p2", "p3"] {
        cluster.kubectl_ok(&[
            "patch",
            "pod",
            name,
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"phase":"Succeeded"}}"#,
        ]);
    }
    eventually(30, "the oldest terminated pod to be deleted", || {
        cluster.kubectl_ok(&["get", "pods", "-o", "name"]) == "pod/p2\npod/p3\npod/p4\n"
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        cluster.kubectl_ok(&["get", "pods", "-o", "name"]),
        "pod/p2\npod/p3\npod/p4\n"
    );
}
