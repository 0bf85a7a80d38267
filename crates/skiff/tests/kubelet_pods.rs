//! Pod specs on the kubelet inside `skiff server`, driven by the real kubectl 1.33:
//! environment from ConfigMaps, Secrets and the downward API; volumes (configMap
//! updated live, emptyDir shared by a sidecar, the ServiceAccount's projected token,
//! hostPath); probes (liveness restarts, readiness flips Ready); preStop hooks.
//! Needs root.

use crate::common;

use std::time::{Duration, Instant};

use common::cluster::Cluster;

fn events_of(c: &Cluster, pod: &str) -> String {
    c.kubectl_ok(&[
        "get",
        "events",
        "--field-selector",
        &format!("involvedObject.name={pod}"),
        "-o",
        "jsonpath={range .items[*]}{.reason}: {.message}{\"\\n\"}{end}",
    ])
}

#[test]
fn kubelet_runs_pod_specs() {
    // Volumes of ConfigMaps are refreshed every 3 s instead of every minute.
    let (c, _server) = Cluster::start(&[("SKIFF_KUBELET_SYNC_FREQUENCY", "3")]);
    let root = c.skiff.root.path().to_path_buf();
    let host_dir = root.join("prestop");

    c.apply(
        r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: cfg
data:
  color: blue
  size: large
---
apiVersion: v1
kind: Secret
metadata:
  name: sec
stringData:
  password: hunter2
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: live
data:
  key: one
"#,
    );
    // Every pod of this test, created at once so their waits overlap.
    c.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: env
  labels:
    app: web
spec:
  containers:
  - name: app
    image: busybox
    imagePullPolicy: Never
    command: ["sh", "-c", "echo COLOR=$COLOR PW=$PW POD=$POD NS=$NS IP=$IP NODE=$NODE APP=$APP MEM=$MEM CFG_size=$CFG_size EXPANDED=$(COLOR); sleep 3600"]
    resources:
      limits:
        memory: 64Mi
    envFrom:
    - configMapRef:
        name: cfg
      prefix: CFG_
    env:
    - name: COLOR
      valueFrom:
        configMapKeyRef: {{name: cfg, key: color}}
    - name: PW
      valueFrom:
        secretKeyRef: {{name: sec, key: password}}
    - name: POD
      valueFrom:
        fieldRef: {{fieldPath: metadata.name}}
    - name: NS
      valueFrom:
        fieldRef: {{fieldPath: metadata.namespace}}
    - name: IP
      valueFrom:
        fieldRef: {{fieldPath: status.podIP}}
    - name: NODE
      valueFrom:
        fieldRef: {{fieldPath: spec.nodeName}}
    - name: APP
      valueFrom:
        fieldRef: {{fieldPath: "metadata.labels['app']"}}
    - name: MEM
      valueFrom:
        resourceFieldRef: {{resource: limits.memory, divisor: 1Mi}}
---
apiVersion: v1
kind: Pod
metadata:
  name: waiter
spec:
  containers:
  - name: app
    image: busybox
    imagePullPolicy: Never
    command: ["sh", "-c", "echo LATE=$LATE; sleep 3600"]
    env:
    - name: LATE
      valueFrom:
        configMapKeyRef: {{name: late, key: k}}
---
apiVersion: v1
kind: Pod
metadata:
  name: vol
spec:
  containers:
  - name: app
    image: busybox
    imagePullPolicy: Never
    command: ["sleep", "3600"]
    volumeMounts:
    - name: live
      mountPath: /cfg
    - name: live
      mountPath: /pinned
      subPath: key
  volumes:
  - name: live
    configMap:
      name: live
---
apiVersion: v1
kind: Pod
metadata:
  name: sidecar
spec:
  containers:
  - name: reader
    image: busybox
    imagePullPolicy: Never
    command: ["sh", "-c", "until [ -f /shared/msg ]; do sleep 0.2; done; echo READ=$(cat /shared/msg); sleep 3600"]
    volumeMounts:
    - name: shared
      mountPath: /shared
  - name: writer
    image: busybox
    imagePullPolicy: Never
    command: ["sh", "-c", "echo from-sidecar > /out/msg.tmp; mv /out/msg.tmp /out/msg; sleep 3600"]
    volumeMounts:
    - name: shared
      mountPath: /out
  volumes:
  - name: shared
    emptyDir: {{}}
---
apiVersion: v1
kind: Pod
metadata:
  name: liveness
spec:
  containers:
  - name: app
    image: busybox
    imagePullPolicy: Never
    command: ["sh", "-c", "touch /tmp/healthy; sleep 4; rm /tmp/healthy; sleep 3600"]
    livenessProbe:
      exec:
        command: ["cat", "/tmp/healthy"]
      periodSeconds: 1
      failureThreshold: 2
---
apiVersion: v1
kind: Pod
metadata:
  name: readiness
spec:
  containers:
  - name: web
    image: busybox
    imagePullPolicy: Never
    command: ["sh", "-c", "mkdir -p /www; exec httpd -f -p 8080 -h /www"]
    ports:
    - name: http
      containerPort: 8080
    readinessProbe:
      httpGet:
        path: /ready
        port: http
      periodSeconds: 1
---
apiVersion: v1
kind: Pod
metadata:
  name: prestop
spec:
  terminationGracePeriodSeconds: 20
  containers:
  - name: app
    image: busybox
    imagePullPolicy: Never
    command: ["sh", "-c", "trap 'echo TERM >> /host/log; exit 0' TERM; echo started >> /host/log; while true; do sleep 1; done"]
    lifecycle:
      preStop:
        exec:
          command: ["sh", "-c", "echo preStop >> /host/log"]
    volumeMounts:
    - name: host
      mountPath: /host
  volumes:
  - name: host
    hostPath:
      path: {host}
      type: DirectoryOrCreate
"#,
        host = host_dir.display()
    ));

    // Environment: ConfigMap, Secret, envFrom with a prefix, the downward API, $(VAR).
    c.wait_for("pod/env", "{.status.phase}", "Running");
    let ip = c.jsonpath("pod/env", "{.status.podIP}");
    let log = c.wait_for_log("env", "app", "COLOR=");
    assert_eq!(
        log.trim(),
        format!("COLOR=blue PW=hunter2 POD=env NS=default IP={ip} NODE=node-a APP=web MEM=64 CFG_size=large EXPANDED=blue")
    );

    // The ServiceAccount admission's projected volume: token, ca.crt, namespace.
    let sa = "/var/run/secrets/kubernetes.io/serviceaccount";
    let read = |pod: &str, container: &str, path: &str| {
        let out = c.exec(pod, container, &["cat", path]);
        assert!(
            out.status.success(),
            "cat {path} in {pod}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    assert_eq!(read("env", "app", &format!("{sa}/namespace")), "default");
    assert!(read("env", "app", &format!("{sa}/ca.crt")).starts_with("-----BEGIN CERTIFICATE-----"));
    let token = read("env", "app", &format!("{sa}/token"));
    assert_eq!(token.split('.').count(), 3, "not a JWT: {token:?}");
    // The token authenticates as the pod's ServiceAccount.
    let server = c.kubectl_ok(&[
        "config",
        "view",
        "--minify",
        "-o",
        "jsonpath={.clusters[0].cluster.server}",
    ]);
    let out = std::process::Command::new(&c.kubectl)
        .args([
            "--server",
            &server,
            "--insecure-skip-tls-verify",
            "--token",
            &token,
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "system:serviceaccount:default:default",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let uid = c.jsonpath("pod/env", "{.metadata.uid}");
    let pod_dir = root.join("kubelet/pods").join(&uid);
    assert!(pod_dir.join("volumes/kubernetes.io~projected").is_dir());

    // A missing ConfigMap: CreateContainerConfigError, until it is created.
    let waiting = "{.status.containerStatuses[0].state.waiting";
    c.wait_for(
        "pod/waiter",
        &format!("{waiting}.reason}}"),
        "CreateContainerConfigError",
    );
    assert_eq!(
        c.jsonpath("pod/waiter", &format!("{waiting}.message}}")),
        "configmap \"late\" not found"
    );
    assert!(events_of(&c, "waiter").contains("Failed: Error: configmap \"late\" not found"));
    c.apply("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: late\ndata:\n  other: x\n");
    c.wait_until("pod/waiter", &format!("{waiting}.message}}"), 30, |m| {
        m == "couldn't find key k in ConfigMap default/late"
    });
    c.apply("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: late\ndata:\n  k: arrived\n");
    c.wait_for("pod/waiter", "{.status.phase}", "Running");
    c.wait_for_log("waiter", "app", "LATE=arrived");

    // emptyDir shared by two containers.
    c.wait_for_log("sidecar", "reader", "READ=from-sidecar");

    // A configMap volume follows the ConfigMap; a subPath mount of it does not.
    c.wait_for("pod/vol", "{.status.phase}", "Running");
    assert_eq!(read("vol", "app", "/cfg/key"), "one");
    assert_eq!(read("vol", "app", "/pinned"), "one");
    let ro = c.exec("vol", "app", &["sh", "-c", "echo x > /cfg/new"]);
    assert!(!ro.status.success(), "configMap volumes are read-only");
    c.apply("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: live\ndata:\n  key: two\n");
    let deadline = Instant::now() + Duration::from_secs(70);
    while read("vol", "app", "/cfg/key") != "two" {
        assert!(
            Instant::now() < deadline,
            "the configMap volume was never updated"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(read("vol", "app", "/pinned"), "one");

    // Readiness over HTTP to the pod IP: not Ready until /ready answers, then Ready,
    // and not Ready again when it stops answering.
    c.wait_for("pod/readiness", "{.status.phase}", "Running");
    std::thread::sleep(Duration::from_secs(2));
    let ready = "{.status.conditions[?(@.type==\"Ready\")].status}";
    assert_eq!(c.jsonpath("pod/readiness", ready), "False");
    assert_eq!(
        c.jsonpath("pod/readiness", "{.status.containerStatuses[0].ready}"),
        "false"
    );
    assert_eq!(
        c.jsonpath(
            "pod/readiness",
            "{.status.conditions[?(@.type==\"ContainersReady\")].status}"
        ),
        "False"
    );
    assert!(events_of(&c, "readiness")
        .contains("Unhealthy: Readiness probe failed: HTTP probe failed with statuscode: 404"));
    assert!(c
        .exec("readiness", "web", &["touch", "/www/ready"])
        .status
        .success());
    c.wait_for("pod/readiness", ready, "True");
    assert_eq!(
        c.jsonpath("pod/readiness", "{.status.containerStatuses[0].ready}"),
        "true"
    );
    assert!(c
        .exec("readiness", "web", &["rm", "/www/ready"])
        .status
        .success());
    c.wait_for("pod/readiness", ready, "False");
    assert_eq!(
        c.jsonpath(
            "pod/readiness",
            "{.status.containerStatuses[0].restartCount}"
        ),
        "0"
    );

    // Liveness: the probe fails twice after 4 s, the container is killed and restarted.
    c.wait_until(
        "pod/liveness",
        "{.status.containerStatuses[0].restartCount}",
        90,
        |n| n.parse::<u32>().is_ok_and(|n| n >= 1),
    );
    let events = events_of(&c, "liveness");
    assert!(events.contains("Unhealthy: Liveness probe failed: cat: can't open '/tmp/healthy': No such file or directory"), "{events}");
    assert!(
        events.contains("Killing: Container app failed liveness probe, will be restarted"),
        "{events}"
    );
    assert_eq!(
        c.jsonpath(
            "pod/liveness",
            "{.status.containerStatuses[0].lastState.terminated.exitCode}"
        ),
        "137"
    );

    // preStop runs before the container gets SIGTERM.
    c.wait_for("pod/prestop", "{.status.phase}", "Running");
    let log = host_dir.join("log");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::read_to_string(&log).unwrap_or_default() != "started\n" {
        assert!(Instant::now() < deadline, "the prestop pod never started");
        std::thread::sleep(Duration::from_millis(200));
    }
    c.kubectl_ok(&["delete", "pod", "prestop", "--timeout=60s"]);
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "started\npreStop\nTERM\n"
    );

    // Deleting a pod removes its volumes from the node.
    c.kubectl_ok(&["delete", "pod", "env", "--grace-period=1", "--timeout=60s"]);
    assert!(!pod_dir.exists(), "{} remains", pod_dir.display());
    c.kubectl_ok(&[
        "delete",
        "pods",
        "--all",
        "--grace-period=1",
        "--timeout=90s",
    ]);
    let pods = std::fs::read_dir(root.join("kubelet/pods"))
        .unwrap()
        .count();
    assert_eq!(
        pods, 0,
        "pod directories remain after their pods were deleted"
    );
}

/// A pod's host name and `/etc/hosts` as the kubelet makes them: `spec.hostname`, the
/// subdomain's fully qualified name beside the pod's address, `hostAliases`, and the
/// headless Service of the subdomain resolving the name in the cluster DNS.
#[test]
fn pods_get_their_host_names_and_managed_hosts_files() {
    let (c, _server) = Cluster::start(&[]);
    c.apply(
        "apiVersion: v1
kind: Service
metadata: {name: sub}
spec:
  clusterIP: None
  selector: {app: named}
  ports: [{port: 80}]
---
apiVersion: v1
kind: Pod
metadata: {name: named, labels: {app: named}}
spec:
  hostname: host1
  subdomain: sub
  hostAliases: [{ip: 10.1.2.3, hostnames: [foo.local, bar.local]}]
  containers:
  - {name: c, image: busybox, imagePullPolicy: Never, command: [sleep, '3600']}
---
apiVersion: v1
kind: Pod
metadata: {name: fqdn}
spec:
  hostname: host2
  subdomain: sub
  setHostnameAsFQDN: true
  containers:
  - {name: c, image: busybox, imagePullPolicy: Never, command: [sleep, '3600']}
---
apiVersion: v1
kind: Pod
metadata: {name: plain}
spec:
  containers:
  - {name: c, image: busybox, imagePullPolicy: Never, command: [sleep, '3600']}
",
    );
    for pod in ["named", "fqdn", "plain"] {
        c.kubectl_ok(&[
            "wait",
            "--for=condition=Ready",
            &format!("pod/{pod}"),
            "--timeout=60s",
        ]);
    }
    let exec = |pod: &str, cmd: &[&str]| {
        let mut args = vec!["exec", pod, "--"];
        args.extend_from_slice(cmd);
        c.kubectl_ok(&args)
    };
    assert_eq!(exec("named", &["hostname"]).trim(), "host1");
    assert_eq!(
        exec("fqdn", &["hostname"]).trim(),
        "host2.sub.default.svc.cluster.local"
    );
    assert_eq!(exec("plain", &["hostname"]).trim(), "plain");

    let ip = c.jsonpath("pod/named", "{.status.podIP}");
    let hosts = exec("named", &["cat", "/etc/hosts"]);
    assert!(
        hosts.starts_with("# Kubernetes-managed hosts file.\n"),
        "{hosts}"
    );
    assert!(
        hosts.contains(&format!(
            "{ip}\thost1.sub.default.svc.cluster.local\thost1\n"
        )),
        "{hosts}"
    );
    assert!(
        hosts.contains("# Entries added by HostAliases.\n10.1.2.3\tfoo.local\tbar.local\n"),
        "{hosts}"
    );
    let plain_ip = c.jsonpath("pod/plain", "{.status.podIP}");
    let hosts = exec("plain", &["cat", "/etc/hosts"]);
    assert!(hosts.contains(&format!("{plain_ip}\tplain\n")), "{hosts}");

    // The subdomain's headless Service names the pod in the cluster DNS.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = c.kubectl(&[
            "exec",
            "plain",
            "--",
            "nslookup",
            "host1.sub.default.svc.cluster.local",
        ]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        if text.contains(&format!("Address: {ip}")) {
            break;
        }
        assert!(Instant::now() < deadline, "{text}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Native sidecars (init containers with `restartPolicy: Always`): they start in order
/// with the init containers, run beside the app containers (counted in READY), and are
/// stopped once the app containers are done, so the pod completes.
#[test]
fn sidecars_run_beside_the_app_and_stop_when_it_is_done() {
    let (c, _server) = Cluster::start(&[]);
    c.apply(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: side
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 5
  initContainers:
  - name: setup
    image: busybox
    imagePullPolicy: Never
    command: ["sh", "-c", "echo set-up > /shared/init"]
    volumeMounts: [{name: shared, mountPath: /shared}]
  - name: logger
    image: busybox
    imagePullPolicy: Never
    restartPolicy: Always
    command: ["sh", "-c", "trap 'echo logger-stopped; exit 0' TERM; while true; do sleep 1; done"]
    volumeMounts: [{name: shared, mountPath: /shared}]
  containers:
  - name: main
    image: busybox
    imagePullPolicy: Never
    command: ["sh", "-c", "cat /shared/init; sleep 8"]
    volumeMounts: [{name: shared, mountPath: /shared}]
  volumes:
  - name: shared
    emptyDir: {}
"#,
    );
    // The app container starts once the sidecar runs, which kubectl counts.
    c.wait_for_log("side", "main", "set-up");
    c.wait_until("pod/side", "{.status.phase}", 30, |p| p == "Running");
    let row = c.kubectl_ok(&["get", "pod", "side", "--no-headers"]);
    let columns: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(columns[1..3], ["2/2", "Running"], "{row}");
    assert_eq!(
        c.jsonpath("pod/side", "{.status.initContainerStatuses[1].started}"),
        "true"
    );
    // The app finishes: the sidecar gets its SIGTERM and the pod succeeds.
    c.wait_until("pod/side", "{.status.phase}", 60, |p| p == "Succeeded");
    assert_eq!(
        c.jsonpath(
            "pod/side",
            "{.status.initContainerStatuses[1].state.terminated.exitCode}"
        ),
        "0"
    );
    c.wait_for_log("side", "logger", "logger-stopped");
}
