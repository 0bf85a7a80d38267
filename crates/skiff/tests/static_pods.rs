//! Static pods through the real kubectl 1.33: a manifest dropped into the server's
//! `ROOT/pod-manifests` runs as the mirror pod `<name>-node-a` (bound, owned by the Node,
//! annotated as Kubernetes' kubelet does), comes back when deleted through the API, is
//! replaced when the file changes and goes away with the file. Needs root.

use crate::common;

use common::cluster::Cluster;

const STATIC: &str = "apiVersion: v1
kind: Pod
metadata:
  name: static-web
  labels: {tier: static}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: sh
    image: busybox:latest
    imagePullPolicy: Never
    command: [\"sh\", \"-c\", \"echo version-one; sleep 3600\"]
";

#[test]
fn static_pods_run_from_files_with_mirror_pods() {
    let (cluster, _server) = Cluster::start(&[]);
    let dir = cluster.skiff.root.path().join("pod-manifests");
    std::fs::create_dir_all(&dir).unwrap();
    // A broken manifest beside it changes nothing.
    std::fs::write(dir.join("broken.yaml"), "kind: [").unwrap();
    std::fs::write(dir.join("web.yaml"), STATIC).unwrap();

    let pod = "pod/static-web-node-a";
    cluster.wait_until(pod, "{.status.phase}", 90, |p| p == "Running");
    let annotations = cluster.jsonpath(pod, "{.metadata.annotations}");
    let annotations: serde_json::Value = serde_json::from_str(&annotations).unwrap();
    assert_eq!(annotations["kubernetes.io/config.source"], "file");
    let hash = annotations["kubernetes.io/config.mirror"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(annotations["kubernetes.io/config.hash"], hash.as_str());
    assert_eq!(
        cluster.jsonpath(
            pod,
            "{.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name}"
        ),
        "Node/node-a"
    );
    assert_eq!(cluster.jsonpath(pod, "{.spec.nodeName}"), "node-a");
    // No service account token is mounted into a mirror pod.
    assert_eq!(cluster.jsonpath(pod, "{.spec.serviceAccountName}"), "");
    cluster.wait_until(pod, "{.status.containerStatuses[0].ready}", 30, |r| {
        r == "true"
    });
    let logs = cluster.kubectl_ok(&["logs", "static-web-node-a"]);
    assert_eq!(logs.trim(), "version-one");

    // Deleted through the API, the mirror pod comes back (a new object).
    let uid = cluster.jsonpath(pod, "{.metadata.uid}");
    cluster.kubectl_ok(&["delete", "pod", "static-web-node-a", "--wait=false"]);
    cluster.wait_until(pod, "{.metadata.uid}/{.status.phase}", 90, |s| {
        !s.starts_with(&uid) && s.ends_with("/Running") && !s.starts_with('/')
    });

    // A changed file replaces the pod.
    std::fs::write(
        dir.join("web.yaml"),
        STATIC.replace("version-one", "version-two"),
    )
    .unwrap();
    cluster.wait_until(
        pod,
        "{.metadata.annotations.kubernetes\\.io/config\\.mirror}",
        90,
        |h| !h.is_empty() && h != hash,
    );
    cluster.wait_until(pod, "{.status.phase}", 90, |p| p == "Running");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let out = cluster.kubectl(&["logs", "static-web-node-a"]);
        if String::from_utf8_lossy(&out.stdout).trim() == "version-two" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{out:?}");
        std::thread::sleep(std::time::Duration::from_millis(500));
    }

    // The file removed, the pod goes.
    std::fs::remove_file(dir.join("web.yaml")).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    while cluster.kubectl(&["get", pod]).status.success() {
        assert!(
            std::time::Instant::now() < deadline,
            "the mirror pod stayed"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}
