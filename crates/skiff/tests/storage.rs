//! Persistent storage end to end through the real kubectl 1.33: the default `local-path`
//! StorageClass, DefaultStorageClass admission, WaitForFirstConsumer scheduling with
//! the local-path provisioner (PV pinned to the node, data under ROOT/storage, removed
//! with the claim), a hand-made hostPath PV bound by a matching claim and released under
//! Retain, and a StatefulSet's volumeClaimTemplates keeping data across a pod restart.
//! Needs root.

use crate::common;

use std::time::{Duration, Instant};

use common::cluster::Cluster;

/// Waits until `check` holds for the output of `kubectl get ARGS` (60 s).
fn wait_get(c: &Cluster, args: &[&str], check: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = c.kubectl(args);
        let got = String::from_utf8_lossy(&out.stdout).to_string();
        if check(&got) {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "kubectl {args:?}: {got}\n{}\n{}",
            c.kubectl_ok(&["get", "pv,pvc,pods", "-A", "-o", "wide"]),
            c.kubectl_ok(&["get", "events", "-A"])
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn local_path_provisioning_and_static_binding() {
    let (c, _server) = Cluster::start(&[]);
    let root = c.skiff.root.path().to_path_buf();

    // The default class exists and kubectl marks it.
    let classes = wait_get(&c, &["get", "storageclass"], |o| o.contains("local-path"));
    assert!(classes.contains("local-path (default)"), "{classes}");
    assert!(classes.contains("rancher.io/local-path"), "{classes}");
    assert!(classes.contains("WaitForFirstConsumer"), "{classes}");

    // A claim without a class gets the default one, and waits for its first consumer.
    c.apply(
        r#"apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: data
spec:
  accessModes: [ReadWriteOnce]
  resources:
    requests:
      storage: 64Mi
"#,
    );
    assert_eq!(
        c.jsonpath("pvc/data", "{.spec.storageClassName}"),
        "local-path"
    );
    wait_get(
        &c,
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=data",
        ],
        |o| o.contains("WaitForFirstConsumer"),
    );
    assert_eq!(c.jsonpath("pvc/data", "{.status.phase}"), "Pending");

    // A pod with a missing claim is unschedulable with Kubernetes' message.
    c.apply(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: orphan
spec:
  containers:
  - name: app
    image: busybox
    imagePullPolicy: Never
    command: ["sleep", "3600"]
  volumes:
  - name: data
    persistentVolumeClaim:
      claimName: nosuch
"#,
    );
    c.wait_until(
        "pod/orphan",
        "{.status.conditions[?(@.type==\"PodScheduled\")].message}",
        60,
        |m| m.contains("persistentvolumeclaim \"nosuch\" not found"),
    );

    c.apply(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: writer
spec:
  containers:
  - name: app
    image: busybox
    imagePullPolicy: Never
    command: ["sh", "-c", "echo hello > /data/file; sleep 3600"]
    volumeMounts:
    - name: data
      mountPath: /data
  volumes:
  - name: data
    persistentVolumeClaim:
      claimName: data
"#,
    );
    c.wait_for("pvc/data", "{.status.phase}", "Bound");
    let pv = c.jsonpath("pvc/data", "{.spec.volumeName}");
    assert!(pv.starts_with("pvc-"), "{pv}");
    assert_eq!(
        c.jsonpath(
            &format!("pv/{pv}"),
            "{.spec.nodeAffinity.required.nodeSelectorTerms[0].matchExpressions[0].values[0]}"
        ),
        "node-a"
    );
    assert_eq!(c.jsonpath(&format!("pv/{pv}"), "{.status.phase}"), "Bound");
    assert_eq!(
        c.jsonpath(
            "pvc/data",
            "{.metadata.annotations.volume\\.kubernetes\\.io/selected-node}"
        ),
        "node-a"
    );
    c.wait_for("pod/writer", "{.status.phase}", "Running");
    let file = root.join("storage").join(&pv).join("file");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::read_to_string(&file).ok().as_deref() != Some("hello\n") {
        assert!(
            Instant::now() < deadline,
            "{} never written",
            file.display()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let events = c.kubectl_ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=data",
    ]);
    assert!(events.contains("ProvisioningSucceeded"), "{events}");

    // Both are protected: the claim while a pod uses it, the volume while it is bound.
    assert_eq!(
        c.jsonpath("pvc/data", "{.metadata.finalizers}"),
        r#"["kubernetes.io/pvc-protection"]"#
    );
    assert_eq!(
        c.jsonpath(&format!("pv/{pv}"), "{.metadata.finalizers}"),
        r#"["kubernetes.io/pv-protection"]"#
    );
    c.kubectl_ok(&["delete", "pvc", "data", "--wait=false"]);
    std::thread::sleep(Duration::from_secs(2));
    let row = c.kubectl_ok(&["get", "pvc", "data", "--no-headers"]);
    assert!(row.contains("Terminating"), "{row}");
    assert_eq!(c.jsonpath("pod/writer", "{.status.phase}"), "Running");

    // Deleting the pod releases the claim, which goes, and with it the volume and its
    // data (reclaim Delete).
    c.kubectl_ok(&["delete", "pod", "writer", "--grace-period=1"]);
    wait_get(&c, &["get", "pvc", "-o", "name"], |o| {
        !o.contains("persistentvolumeclaim/data")
    });
    wait_get(&c, &["get", "pv", "-o", "name"], |o| !o.contains(&pv));
    let deadline = Instant::now() + Duration::from_secs(30);
    while root.join("storage").join(&pv).exists() {
        assert!(Instant::now() < deadline, "the volume's directory stayed");
        std::thread::sleep(Duration::from_millis(200));
    }

    // A hand-made hostPath volume is bound by a matching claim and Released after it.
    let manual = root.join("manual-pv");
    c.apply(&format!(
        r#"apiVersion: v1
kind: PersistentVolume
metadata:
  name: manual
  labels:
    tier: gold
spec:
  capacity:
    storage: 1Gi
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: manual
  hostPath:
    path: {}
    type: DirectoryOrCreate
---
apiVersion: v1
kind: PersistentVolume
metadata:
  name: too-small
  labels:
    tier: gold
spec:
  capacity:
    storage: 10Mi
  accessModes: [ReadWriteOnce]
  storageClassName: manual
  hostPath:
    path: /nonexistent
"#,
        manual.display()
    ));
    c.wait_for("pv/manual", "{.status.phase}", "Available");
    c.apply(
        r#"apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: static
spec:
  storageClassName: manual
  accessModes: [ReadWriteOnce]
  selector:
    matchLabels:
      tier: gold
  resources:
    requests:
      storage: 500Mi
"#,
    );
    c.wait_for("pvc/static", "{.status.phase}", "Bound");
    assert_eq!(c.jsonpath("pvc/static", "{.spec.volumeName}"), "manual");
    assert_eq!(
        c.jsonpath("pvc/static", "{.status.capacity.storage}"),
        "1Gi"
    );
    assert_eq!(c.jsonpath("pv/manual", "{.spec.claimRef.name}"), "static");
    assert_eq!(c.jsonpath("pv/too-small", "{.status.phase}"), "Available");
    let pvc_table = c.kubectl_ok(&["get", "pvc", "static"]);
    assert!(
        pvc_table.contains("Bound") && pvc_table.contains("manual"),
        "{pvc_table}"
    );
    c.kubectl_ok(&["delete", "pvc", "static"]);
    c.wait_for("pv/manual", "{.status.phase}", "Released");
    c.kubectl_ok(&["delete", "pod", "orphan", "--grace-period=0", "--force"]);
}

#[test]
fn statefulset_claims_keep_their_data() {
    let (c, _server) = Cluster::start(&[]);
    c.apply(
        r#"apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: web
spec:
  serviceName: web
  replicas: 2
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: app
        image: busybox
        imagePullPolicy: Never
        command: ["sh", "-c", "[ -f /data/first ] || hostname > /data/first; sleep 3600"]
        volumeMounts:
        - name: data
          mountPath: /data
  volumeClaimTemplates:
  - metadata:
      name: data
    spec:
      accessModes: [ReadWriteOnce]
      resources:
        requests:
          storage: 16Mi
"#,
    );
    for i in 0..2 {
        c.wait_for(&format!("pvc/data-web-{i}"), "{.status.phase}", "Bound");
        c.wait_for(&format!("pod/web-{i}"), "{.status.phase}", "Running");
    }
    let read = |pod: &str| {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = c.kubectl(&["exec", pod, "--", "cat", "/data/first"]);
            let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            if out.status.success() && !text.is_empty() {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "{pod}: /data/first never written: {text:?}, {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    };
    assert_eq!(read("web-0"), "web-0");
    let uid = c.jsonpath("pod/web-0", "{.metadata.uid}");
    c.kubectl_ok(&["delete", "pod", "web-0"]);
    c.wait_until("pod/web-0", "{.metadata.uid}", 90, |u| {
        !u.is_empty() && u != uid
    });
    c.wait_for("pod/web-0", "{.status.phase}", "Running");
    // The new pod mounts the same claim and sees what its predecessor wrote.
    assert_eq!(read("web-0"), "web-0");
    assert_ne!(
        c.jsonpath("pvc/data-web-0", "{.spec.volumeName}"),
        c.jsonpath("pvc/data-web-1", "{.spec.volumeName}")
    );
}
