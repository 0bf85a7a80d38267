//! Ephemeral containers with the real `kubectl debug` (1.27 and 1.33): the
//! `pods/ephemeralcontainers` subresource and its validation, the kubelet starting the
//! debug container in the pod's sandbox with the target's PID namespace, its status in
//! `status.ephemeralContainerStatuses`, attaching (`debug -it`), and that it is never
//! restarted. Needs root.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::cluster::{kubectl_133, Cluster};

/// The oldest and the newest kubectl.
const KUBECTLS: &[&str] = &["1.27", "1.33"];

/// `kubectl.1.VERSION`, beside kubectl 1.33.
fn kubectl(version: &str) -> PathBuf {
    kubectl_133()
        .parent()
        .unwrap()
        .join(format!("kubectl.{version}"))
}

fn run(c: &Cluster, version: &str, args: &[&str]) -> Output {
    Command::new(kubectl(version))
        .arg("--kubeconfig")
        .arg(&c.kubeconfig)
        .args(args)
        .output()
        .unwrap()
}

fn ok(c: &Cluster, version: &str, args: &[&str]) -> String {
    let out = run(c, version, args);
    assert!(
        out.status.success(),
        "kubectl {version} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Runs kubectl `args` on a pseudo-terminal (`script`), typing `input` after 3 s; the
/// terminal's output.
fn in_terminal(c: &Cluster, version: &str, args: &str, input: &[u8]) -> String {
    let cmd = format!(
        "stty rows 30 cols 100; {} --kubeconfig {} {args}",
        kubectl(version).display(),
        c.kubeconfig.display()
    );
    let mut child = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(3));
        let _ = stdin.write_all(&input);
        std::thread::sleep(Duration::from_secs(30));
    });
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The state of ephemeral container `name` of pod `pod` (`{"running": ...}` ...).
fn ephemeral_status(c: &Cluster, pod: &str, name: &str, field: &str) -> String {
    c.jsonpath(
        &format!("pod/{pod}"),
        &format!("{{.status.ephemeralContainerStatuses[?(@.name==\"{name}\")]{field}}}"),
    )
}

#[test]
fn kubectl_debug_adds_a_container_sharing_the_targets_processes() {
    let (c, _server) = Cluster::start(&[]);
    c.apply(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: target\nspec:\n  containers:\n  - name: app\n    image: busybox\n    imagePullPolicy: Never\n    command: [\"sh\", \"-c\", \"echo app-up; sleep 3600\"]\n",
    );
    c.wait_for("pod/target", "{.status.phase}", "Running");

    for v in KUBECTLS {
        let name = format!("dbg-{}", v.replace('.', ""));
        // Non-interactive: the command runs in the target's PID namespace and ends.
        ok(
            &c,
            v,
            &[
                "debug",
                "target",
                "--image=busybox",
                "--image-pull-policy=Never",
                "--target=app",
                &format!("--container={name}"),
                "--",
                "sh",
                "-c",
                "ps; hostname",
            ],
        );
        c.wait_until(
            "pod/target",
            "{.status.ephemeralContainerStatuses[*].name}",
            60,
            |s| s.split(' ').any(|n| n == name),
        );
        c.wait_until(
            "pod/target",
            "{.status.ephemeralContainerStatuses}",
            60,
            |_| ephemeral_status(&c, "target", &name, ".state.terminated.exitCode") == "0",
        );
        let log = c.kubectl_ok(&["logs", "target", "-c", &name]);
        assert!(
            log.contains("sleep 3600"),
            "{v}: the target's processes are visible: {log:?}"
        );
        assert!(log.contains("target"), "{v}: the pod's hostname: {log:?}");
        // The pod itself is untouched.
        assert_eq!(c.jsonpath("pod/target", "{.status.phase}"), "Running");
        assert_eq!(
            c.jsonpath("pod/target", "{.status.containerStatuses[0].restartCount}"),
            "0"
        );
    }

    // Never restarted: the exited container stays the same instance.
    let first = ephemeral_status(&c, "target", "dbg-133", ".containerID");
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        ephemeral_status(&c, "target", "dbg-133", ".containerID"),
        first
    );
    assert_eq!(
        ephemeral_status(&c, "target", "dbg-133", ".restartCount"),
        "0"
    );

    // Interactive: `debug -it` waits for the container and attaches to its terminal.
    for v in KUBECTLS {
        let name = format!("shell-{}", v.replace('.', ""));
        let out = in_terminal(
            &c,
            v,
            &format!(
                "debug -it target --image=busybox --image-pull-policy=Never --target=app --container={name} -- sh"
            ),
            b"echo debug-$((40+2))\rexit\r",
        );
        assert!(out.contains("debug-42"), "{v}: {out:?}");
        c.wait_until(
            "pod/target",
            "{.status.ephemeralContainerStatuses}",
            60,
            |_| ephemeral_status(&c, "target", &name, ".state.terminated.exitCode") == "0",
        );
    }
}

/// The `ephemeralcontainers` subresource of pod `p`.
const SUBRESOURCE: &str = "/api/v1/namespaces/default/pods/p/ephemeralcontainers";

#[test]
fn the_ephemeralcontainers_subresource_only_adds_valid_containers() {
    let (c, _server) = Cluster::start(&[]);
    c.apply(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - name: app\n    image: busybox\n    imagePullPolicy: Never\n    command: [\"sleep\", \"3600\"]\n",
    );
    let raw = c.kubectl_ok(&["get", "--raw", SUBRESOURCE]);
    let pod: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(pod["kind"], "Pod");
    assert_eq!(pod["metadata"]["name"], "p");

    // PUT through the subresource (`kubectl patch --subresource` takes only status and
    // scale; `kubectl debug` PATCHes, above and in the other test): the pod as read,
    // with `ephemeral` as its ephemeral containers and `labels`.
    let put = |ephemeral: serde_json::Value, labels: serde_json::Value| -> (bool, String) {
        let raw = c.kubectl_ok(&["get", "--raw", SUBRESOURCE]);
        let mut pod: serde_json::Value = serde_json::from_str(&raw).unwrap();
        pod["spec"]["ephemeralContainers"] = ephemeral;
        pod["metadata"]["labels"] = labels;
        // Unconditional: the kubelet may have written the status since.
        pod["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("resourceVersion");
        let file = c.skiff.root.path().join("ephemeral.json");
        std::fs::write(&file, pod.to_string()).unwrap();
        let out = c.kubectl(&[
            "replace",
            "--raw",
            SUBRESOURCE,
            "-f",
            file.to_str().unwrap(),
        ]);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let none = serde_json::json!(null);
    // Ports, probes and resources are refused; the target must exist.
    let (done, err) = put(
        serde_json::json!([{"name": "bad", "image": "busybox", "ports": [{"containerPort": 80}],
            "readinessProbe": {"exec": {"command": ["true"]}},
            "resources": {"limits": {"cpu": "1"}}}]),
        none.clone(),
    );
    assert!(!done);
    for field in ["ports", "readinessProbe", "resources"] {
        assert!(
            err.contains(&format!(
                "spec.ephemeralContainers[0].{field}: Forbidden: cannot be set for an Ephemeral Container"
            )),
            "{err}"
        );
    }
    let (done, err) = put(
        serde_json::json!([{"name": "bad", "image": "busybox", "targetContainerName": "nothere"}]),
        none.clone(),
    );
    assert!(
        !done && err.contains("spec.ephemeralContainers[0].targetContainerName"),
        "{err}"
    );
    // Names are unique among all the pod's containers.
    let (done, err) = put(
        serde_json::json!([{"name": "app", "image": "busybox"}]),
        none.clone(),
    );
    assert!(
        !done && err.contains("spec.ephemeralContainers[0].name: Duplicate value: \"app\""),
        "{err}"
    );
    // An addition is taken (and nothing else of the pod); changing or removing it
    // afterwards is not.
    let dbg = |seconds: &str| {
        serde_json::json!([{"name": "dbg", "image": "busybox", "imagePullPolicy": "Never",
            "command": ["sleep", seconds]}])
    };
    let (done, err) = put(dbg("1"), serde_json::json!({"sneaky": "yes"}));
    assert!(done, "{err}");
    assert_eq!(
        c.jsonpath("pod/p", "{.spec.ephemeralContainers[*].name}"),
        "dbg"
    );
    assert_eq!(c.jsonpath("pod/p", "{.metadata.labels.sneaky}"), "");
    let (done, err) = put(dbg("2"), none.clone());
    assert!(
        !done && err.contains("existing ephemeral containers \"dbg\" may not be changed"),
        "{err}"
    );
    let (done, err) = put(serde_json::json!([]), none.clone());
    assert!(
        !done && err.contains("existing ephemeral containers \"dbg\" may not be removed"),
        "{err}"
    );
    // An update of the pod itself leaves them alone.
    c.kubectl_ok(&[
        "patch",
        "pod",
        "p",
        "--type=merge",
        "-p",
        r#"{"spec":{"ephemeralContainers":null}}"#,
    ]);
    assert_eq!(
        c.jsonpath("pod/p", "{.spec.ephemeralContainers[*].name}"),
        "dbg"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while ephemeral_status(&c, "p", "dbg", ".state.terminated.reason") != "Completed" {
        assert!(
            Instant::now() < deadline,
            "{}",
            c.kubectl_ok(&["get", "pod", "p", "-o", "yaml"])
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}
