//! Behaviours of Kubernetes' conformance tests for pods (test/e2e/common/node,
//! test/e2e/node, test/e2e/network/dns.go) that no other file proves, on the kubelet
//! inside `skiff server`, driven by the real kubectl 1.33: termination messages from the
//! file at `terminationMessagePath` (also for a non-root user at a custom path) or from
//! the log under `FallbackToLogsOnError`; `activeDeadlineSeconds`; invalid sysctl names
//! refused; immutable ConfigMaps; `envFrom` taking a ConfigMap's `data` but not its
//! `binaryData`; the cluster DNS's pod records (`<a-b-c-d>.<ns>.pod.cluster.local`);
//! volumes, environment, hooks, init containers and probes. Needs root.

use crate::common;

use common::cluster::Cluster;

/// A pod of one busybox container running `script`, with `extra` added to the
/// container (YAML lines indented for it) and `spec` to the pod's spec.
fn pod(name: &str, restart: &str, spec: &str, extra: &str, script: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  restartPolicy: {restart}
{spec}  containers:
  - name: c
    image: busybox
    imagePullPolicy: Never
    command: ["sh", "-c", {script:?}]
{extra}---
"#
    )
}

/// `state.terminated` of the pod's container, as `reason|exitCode|message`.
fn terminated(c: &Cluster, name: &str) -> String {
    c.jsonpath(
        &format!("pod/{name}"),
        "{.status.containerStatuses[0].state.terminated.reason}|{.status.containerStatuses[0].state.terminated.exitCode}|{.status.containerStatuses[0].state.terminated.message}",
    )
}

#[test]
fn termination_messages_deadlines_sysctls_env_from_and_pod_dns() {
    let (c, _server) = Cluster::start(&[]);
    let mut yaml = String::from(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\ndata:\n  DATA_1: value-1\nbinaryData:\n  DUMP: 3q2+7w==\n---\n",
    );
    yaml += &pod(
        "tm-file",
        "Never",
        "",
        "",
        "echo -n DONE > /dev/termination-log",
    );
    yaml += &pod(
        "tm-nonroot",
        "Never",
        "",
        "    terminationMessagePath: /dev/termination-custom-log\n    securityContext:\n      runAsUser: 1000\n",
        "echo -n DONE > /dev/termination-custom-log",
    );
    yaml += &pod(
        "tm-log-fail",
        "Never",
        "",
        "    terminationMessagePolicy: FallbackToLogsOnError\n",
        "echo DONE; exit 1",
    );
    yaml += &pod(
        "tm-log-ok",
        "Never",
        "",
        "    terminationMessagePolicy: FallbackToLogsOnError\n",
        "echo DONE",
    );
    yaml += &pod(
        "deadline",
        "Always",
        "  activeDeadlineSeconds: 4\n",
        "",
        "sleep 3600",
    );
    yaml += &pod(
        "env-from",
        "Never",
        "",
        "    envFrom:\n    - configMapRef:\n        name: cfg\n",
        "env",
    );
    yaml += &pod("dns", "Always", "", "", "sleep 3600");
    yaml += &pod(
        "sysctl",
        "Never",
        "  securityContext:\n    sysctls:\n    - {name: kernel.shm_rmid_forced, value: \"1\"}\n",
        "",
        "sysctl kernel.shm_rmid_forced",
    );
    c.apply(&yaml);

    // Invalid sysctl names are refused by name; valid ones (safe or not) are not named.
    let bad = pod(
        "bad-sysctls",
        "Never",
        "  securityContext:\n    sysctls:\n    - {name: foo-, value: bar}\n    - {name: kernel.shmmax, value: \"100000000\"}\n    - {name: safe-and-unsafe, value: \"100000000\"}\n    - {name: bar.., value: \"42\"}\n",
        "",
        "true",
    );
    let path = c.skiff.root.path().join("bad-sysctls.yaml");
    std::fs::write(&path, bad).unwrap();
    let out = c.kubectl(&["create", "-f", path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "invalid sysctls were accepted");
    assert!(
        stderr.contains("Invalid value: \"foo-\"") && stderr.contains("Invalid value: \"bar..\""),
        "{stderr}"
    );
    assert!(
        !stderr.contains("kernel.shmmax") && !stderr.contains("safe-and-unsafe"),
        "{stderr}"
    );

    // A ConfigMap key may not be empty.
    let path = c.skiff.root.path().join("empty-key.json");
    let empty_key = r#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "empty-key"}, "data": {"": "v"}}"#;
    std::fs::write(&path, empty_key).unwrap();
    let out = c.kubectl(&["create", "-f", path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("a valid config key must consist of"),
        "{stderr}"
    );

    // An immutable ConfigMap keeps its data.
    c.kubectl_ok(&["create", "configmap", "frozen", "--from-literal=a=b"]);
    c.kubectl_ok(&[
        "patch",
        "configmap",
        "frozen",
        "-p",
        r#"{"immutable": true}"#,
    ]);
    let out = c.kubectl(&[
        "patch",
        "configmap",
        "frozen",
        "-p",
        r#"{"data": {"a": "c"}}"#,
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("field is immutable when `immutable` is set"),
        "{stderr}"
    );

    // A pod's sysctls are set in its namespaces.
    c.wait_until("pod/sysctl", "{.status.phase}", 60, |p| p == "Succeeded");
    assert_eq!(
        c.kubectl_ok(&["logs", "sysctl"]).trim(),
        "kernel.shm_rmid_forced = 1"
    );

    // Termination messages: the file's content, or the log's tail after a failure.
    assert_eq!(
        c.wait_until("pod/tm-file", "{.status.phase}", 60, |p| p == "Succeeded"),
        "Succeeded"
    );
    assert_eq!(terminated(&c, "tm-file"), "Completed|0|DONE");
    c.wait_until("pod/tm-nonroot", "{.status.phase}", 60, |p| {
        p == "Succeeded" || p == "Failed"
    });
    assert_eq!(terminated(&c, "tm-nonroot"), "Completed|0|DONE");
    c.wait_until("pod/tm-log-fail", "{.status.phase}", 60, |p| p == "Failed");
    assert_eq!(terminated(&c, "tm-log-fail"), "Error|1|DONE\n");
    c.wait_until("pod/tm-log-ok", "{.status.phase}", 60, |p| p == "Succeeded");
    assert_eq!(terminated(&c, "tm-log-ok"), "Completed|0|");

    // envFrom: data, not binaryData.
    c.wait_until("pod/env-from", "{.status.phase}", 60, |p| p == "Succeeded");
    let env = c.kubectl_ok(&["logs", "env-from"]);
    assert!(env.lines().any(|l| l == "DATA_1=value-1"), "{env}");
    assert!(!env.contains("DUMP="), "{env}");

    // The cluster DNS answers a pod's dashed address under `pod`.
    let ip = c.wait_until("pod/dns", "{.status.podIP}", 60, |ip| !ip.is_empty());
    c.wait_for("pod/dns", "{.status.phase}", "Running");
    let qname = format!("{}.default.pod.cluster.local", ip.replace('.', "-"));
    let answer = c.kubectl_ok(&["exec", "dns", "--", "nslookup", "-type=A", &qname]);
    assert!(
        answer.contains(&format!("Address: {ip}")),
        "{qname}: {answer}"
    );

    // activeDeadlineSeconds: the kubelet stops the pod and fails it.
    c.wait_until("pod/deadline", "{.status.phase}", 60, |p| p == "Failed");
    assert_eq!(
        c.jsonpath("pod/deadline", "{.status.reason}|{.status.message}"),
        "DeadlineExceeded|Pod was active on the node longer than the specified deadline"
    );
    let events = c.kubectl_ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=deadline",
        "-o",
        "jsonpath={.items[*].reason}",
    ]);
    assert!(events.contains("DeadlineExceeded"), "{events}");
}

/// The pods of [`volumes_env_hooks_init_containers_and_probes`]; `{HANDLER}` stands for
/// the hook handler's address.
const PODS: &str = r#"apiVersion: v1
kind: ConfigMap
metadata: {name: cm}
data: {data-1: value-1, data-2: value-2}
binaryData: {dump.bin: 3q2+7w==}
---
apiVersion: v1
kind: Secret
metadata: {name: sec}
stringData: {data-1: secret-1, DATA_2: secret-2}
---
apiVersion: v1
kind: Pod
metadata: {name: volumes, labels: {tier: test}, annotations: {builder: bar}}
spec:
  restartPolicy: Never
  securityContext: {runAsUser: 1000, fsGroup: 1001}
  containers:
  - name: c
    image: busybox
    imagePullPolicy: Never
    resources: {requests: {cpu: 250m, memory: 32Mi}, limits: {cpu: 1250m, memory: 64Mi}}
    command: [sh, -c, 'for f in /cm/data-1 /cm400/data-1 /mapped/path/to/data-2 /sec/data-1 /proj/s1 /proj/c2 /proj/name /dapi/name; do echo "$f $(stat -L -c "%a %g" $f) $(cat $f)"; done; od -An -tx1 /cm/dump.bin; echo "projected cpu=$(cat /proj/cpu) mem=$(cat /proj/mem)"; echo "cpu=$(cat /dapi/cpu) mem=$(cat /dapi/mem) labels=$(cat /dapi/labels) annotations=$(cat /dapi/annotations)"; umask 0; echo x > /mem/f; echo "mem $(stat -c %a /mem) $(stat -c %a /mem/f) $(grep " /mem " /proc/mounts | cut -d" " -f3)"; echo "disk $(stat -c %a /disk)"; echo "sub $(cat /sub-cm) $(cat /sub-sec) $(cat /sub-dapi)"; echo hi > /expr/f; ls /disk']
    env: [{name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}]
    volumeMounts:
    - {name: cm, mountPath: /cm}
    - {name: cm400, mountPath: /cm400}
    - {name: mapped, mountPath: /mapped}
    - {name: sec, mountPath: /sec}
    - {name: proj, mountPath: /proj}
    - {name: dapi, mountPath: /dapi}
    - {name: mem, mountPath: /mem}
    - {name: disk, mountPath: /disk}
    - {name: disk, mountPath: /expr, subPathExpr: $(POD_NAME)}
    - {name: cm, mountPath: /sub-cm, subPath: data-1}
    - {name: sec, mountPath: /sub-sec, subPath: data-1}
    - {name: dapi, mountPath: /sub-dapi, subPath: name}
  volumes:
  - {name: cm, configMap: {name: cm}}
  - {name: cm400, configMap: {name: cm, defaultMode: 0400}}
  - {name: mapped, configMap: {name: cm, items: [{key: data-2, path: path/to/data-2, mode: 0400}]}}
  - {name: sec, secret: {secretName: sec, defaultMode: 0440}}
  - name: proj
    projected:
      sources:
      - secret: {name: sec, items: [{key: data-1, path: s1}]}
      - configMap: {name: cm, items: [{key: data-2, path: c2}]}
      - downwardAPI:
          items:
          - {path: name, fieldRef: {fieldPath: metadata.name}}
          - {path: cpu, resourceFieldRef: {containerName: c, resource: requests.cpu, divisor: 1m}}
          - {path: mem, resourceFieldRef: {containerName: c, resource: limits.memory}}
  - name: dapi
    downwardAPI:
      items:
      - {path: name, fieldRef: {fieldPath: metadata.name}}
      - {path: labels, fieldRef: {fieldPath: metadata.labels}}
      - {path: annotations, fieldRef: {fieldPath: "metadata.annotations['builder']"}}
      - {path: cpu, resourceFieldRef: {containerName: c, resource: limits.cpu, divisor: 1m}}
      - {path: mem, resourceFieldRef: {containerName: c, resource: requests.memory, divisor: 1Mi}}
  - {name: mem, emptyDir: {medium: Memory}}
  - {name: disk, emptyDir: {}}
---
apiVersion: v1
kind: Pod
metadata: {name: env}
spec:
  restartPolicy: OnFailure
  containers:
  - name: c
    image: busybox
    imagePullPolicy: Never
    command: [sh, -c, 'env | sort; echo "CMD $0 ARGS $*"', $(FOO)]
    args: ['$(FOOBAR)', '$$(FOOBAR)', '$(NOPE)']
    env:
    - {name: FOO, value: foo-value}
    - {name: FOOBAR, value: '$(FOO);;$(FOO)'}
    - {name: CM, valueFrom: {configMapKeyRef: {name: cm, key: data-1}}}
    - {name: SEC, valueFrom: {secretKeyRef: {name: sec, key: data-1}}}
    - {name: CPU_LIMIT, valueFrom: {resourceFieldRef: {resource: limits.cpu}}}
    - {name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
    - {name: HOST_IP, valueFrom: {fieldRef: {fieldPath: status.hostIP}}}
    - {name: POD_UID, valueFrom: {fieldRef: {fieldPath: metadata.uid}}}
    - {name: POD_NAMESPACE, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}
    envFrom: [{prefix: p_, secretRef: {name: sec}}]
---
apiVersion: v1
kind: Pod
metadata: {name: abs-subpath}
spec:
  restartPolicy: Never
  containers:
  - name: c
    image: busybox
    imagePullPolicy: Never
    command: ['true']
    env: [{name: ABS, value: /tmp}]
    volumeMounts: [{name: v, mountPath: /v, subPathExpr: $(ABS)}]
  volumes: [{name: v, emptyDir: {}}]
---
apiVersion: v1
kind: Pod
metadata: {name: init-fails}
spec:
  restartPolicy: Never
  initContainers:
  - {name: init1, image: busybox, imagePullPolicy: Never, command: ['false']}
  - {name: init2, image: busybox, imagePullPolicy: Never, command: ['true']}
  containers:
  - {name: run1, image: busybox, imagePullPolicy: Never, command: ['true']}
---
apiVersion: v1
kind: Pod
metadata: {name: init-ok}
spec:
  initContainers:
  - {name: init1, image: busybox, imagePullPolicy: Never, command: ['true']}
  - {name: init2, image: busybox, imagePullPolicy: Never, command: ['true']}
  containers:
  - {name: run1, image: busybox, imagePullPolicy: Never, command: [sleep, '3600']}
---
apiVersion: v1
kind: Pod
metadata: {name: never-ready}
spec:
  containers:
  - name: c
    image: busybox
    imagePullPolicy: Never
    command: [sleep, '3600']
    readinessProbe: {exec: {command: ['false']}, periodSeconds: 1}
---
apiVersion: v1
kind: Pod
metadata: {name: hooks}
spec:
  terminationGracePeriodSeconds: 3
  containers:
  - name: exec
    image: busybox
    imagePullPolicy: Never
    command: [sleep, '3600']
    lifecycle:
      postStart: {exec: {command: [wget, -qO-, 'http://{HANDLER}:8080/echo/?poststart-exec']}}
      preStop: {exec: {command: [wget, -qO-, 'http://{HANDLER}:8080/echo/?prestop-exec']}}
  - name: http
    image: busybox
    imagePullPolicy: Never
    command: [sleep, '3600']
    lifecycle:
      postStart: {httpGet: {host: '{HANDLER}', port: 8080, path: '/echo/?poststart-http'}}
      preStop: {httpGet: {host: '{HANDLER}', port: 8080, path: '/echo/?prestop-http'}}
"#;

/// The behaviours of the storage (configMap, secret, projected, downwardAPI, emptyDir
/// volumes, subPath, subPathExpr), environment (expansion, ConfigMap, Secret, downward
/// API), lifecycle hook, init container and probe conformance tests, in one cluster.
#[test]
fn volumes_env_hooks_init_containers_and_probes() {
    let (c, _server) = Cluster::start(&[]);
    // The hooks' handler: httpd logging each request's URL.
    c.apply(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: handler
spec:
  containers:
  - name: c
    image: busybox
    imagePullPolicy: Never
    command: ["sh", "-c", "mkdir -p /w/echo && echo ok > /w/echo/index.html && exec httpd -f -vv -p 8080 -h /w 2>&1"]
"#,
    );
    let handler = c.wait_until("pod/handler", "{.status.podIP}", 60, |ip| !ip.is_empty());
    c.wait_for("pod/handler", "{.status.phase}", "Running");
    c.apply(&PODS.replace("{HANDLER}", &handler));

    c.wait_until("pod/volumes", "{.status.phase}", 60, |p| p == "Succeeded");
    let log = c.kubectl_ok(&["logs", "volumes"]);
    for line in [
        "/cm/data-1 644 1001 value-1",
        "/cm400/data-1 440 1001 value-1",
        "/mapped/path/to/data-2 440 1001 value-2",
        "/sec/data-1 440 1001 secret-1",
        "/proj/s1 644 1001 secret-1",
        "/proj/c2 644 1001 value-2",
        "/proj/name 644 1001 volumes",
        "/dapi/name 644 1001 volumes",
        " de ad be ef",
        "projected cpu=250 mem=67108864",
        "cpu=1250 mem=32 labels=tier=\"test\" annotations=bar",
        "mem 2777 666 tmpfs",
        "disk 2777",
        "sub value-1 secret-1 volumes",
        "volumes",
    ] {
        assert!(log.lines().any(|l| l == line), "{line:?} not in\n{log}");
    }

    c.wait_until("pod/env", "{.status.phase}", 60, |p| p == "Succeeded");
    let env = c.kubectl_ok(&["logs", "env"]);
    let ip = c.jsonpath("pod/env", "{.status.podIP}");
    let host_ip = c.jsonpath("pod/env", "{.status.hostIP}");
    let uid = c.jsonpath("pod/env", "{.metadata.uid}");
    let node_cpu = c.jsonpath("node/node-a", "{.status.allocatable.cpu}");
    for line in [
        "FOOBAR=foo-value;;foo-value".to_string(),
        "CM=value-1".into(),
        "SEC=secret-1".into(),
        "p_DATA_2=secret-2".into(),
        format!("CPU_LIMIT={node_cpu}"),
        format!("POD_IP={ip}"),
        format!("HOST_IP={host_ip}"),
        format!("POD_UID={uid}"),
        "POD_NAMESPACE=default".into(),
        "CMD foo-value ARGS foo-value;;foo-value $(FOOBAR) $(NOPE)".into(),
    ] {
        assert!(env.lines().any(|l| l == line), "{line:?} not in\n{env}");
    }
    assert_eq!(
        c.jsonpath("pod/env", "{.status.containerStatuses[0].restartCount}"),
        "0"
    );

    // An absolute subPathExpr never starts.
    c.wait_until(
        "pod/abs-subpath",
        "{.status.containerStatuses[0].state.waiting.reason}",
        60,
        |r| r == "CreateContainerConfigError",
    );

    // A failed init container fails a Never pod without starting the app; passing ones
    // start it.
    c.wait_until("pod/init-fails", "{.status.phase}", 60, |p| p == "Failed");
    assert_eq!(
        c.jsonpath("pod/init-fails", "{.status.containerStatuses[0].state.waiting.reason}|{.status.conditions[?(@.type==\"Initialized\")].reason}"),
        "PodInitializing|ContainersNotInitialized"
    );
    c.wait_for("pod/init-ok", "{.status.phase}", "Running");
    assert_eq!(
        c.jsonpath(
            "pod/init-ok",
            "{.status.initContainerStatuses[*].state.terminated.reason}"
        ),
        "Completed Completed"
    );

    // The hooks reached the handler, postStart at once, preStop on deletion.
    c.wait_for("pod/hooks", "{.status.phase}", "Running");
    c.kubectl_ok(&["delete", "pod", "hooks"]);
    let handled = c.kubectl_ok(&["logs", "handler"]);
    let urls = handled.lines().filter(|l| l.contains("url:/echo/")).count();
    assert_eq!(urls, 4, "{handled}");

    // A failing readiness probe never makes the pod ready, nor restarts it.
    assert_eq!(
        c.jsonpath("pod/never-ready", "{.status.phase}|{.status.containerStatuses[0].ready}|{.status.containerStatuses[0].restartCount}"),
        "Running|false|0"
    );
}
