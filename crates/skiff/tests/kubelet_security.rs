//! The kubelet's securityContext and imagePullSecrets through the real kubectl 1.33:
//! users and groups, runAsNonRoot, a read-only root filesystem, capabilities,
//! no_new_privs and seccomp as the processes see them (`id`, /proc/self/status), a pod of
//! a namespace enforcing the restricted Pod Security level, and pulls from a registry
//! with basic auth with and without the pull secret. Needs root.

use crate::common;

use std::io::BufRead as _;
use std::process::{Child, Command, Stdio};

use common::cluster::Cluster;
use common::Skiff;

/// A field of /proc/self/status as a pod logged it (`NoNewPrivs`, `CapEff`, `Seccomp`).
fn status_field(log: &str, field: &str) -> String {
    log.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in {log:?}"))
        .trim()
        .to_string()
}

/// Whether capability bit `bit` is in the hexadecimal set `hex`.
fn has_cap(hex: &str, bit: u32) -> bool {
    u64::from_str_radix(hex, 16).unwrap() & (1 << bit) != 0
}

const CAP_CHOWN: u32 = 0;
const CAP_NET_ADMIN: u32 = 12;

/// The pod's log once it has some (a finished pod's, so complete then).
fn logs(c: &Cluster, pod: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let log = c.kubectl_ok(&["logs", pod]);
        if !log.is_empty() {
            return log;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{pod} logged nothing\n{}",
            c.kubectl_ok(&["get", "pod", pod, "-o", "yaml"])
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}

fn waiting(c: &Cluster, pod: &str) -> (String, String) {
    let got = c.jsonpath(
        &format!("pod/{pod}"),
        "{.status.containerStatuses[0].state.waiting.reason}|{.status.containerStatuses[0].state.waiting.message}",
    );
    let (r, m) = got.split_once('|').unwrap_or((&got, ""));
    (r.to_string(), m.to_string())
}

#[test]
fn security_context_reaches_the_containers_processes() {
    let (c, _server) = Cluster::start(&[]);
    c.apply(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: ids
spec:
  restartPolicy: Never
  securityContext:
    runAsUser: 1000
    runAsGroup: 3000
    supplementalGroups: [4000]
    fsGroup: 2000
  volumes:
  - name: scratch
    emptyDir: {}
  containers:
  - name: app
    image: busybox
    imagePullPolicy: Never
    securityContext:
      readOnlyRootFilesystem: true
    volumeMounts:
    - {name: scratch, mountPath: /scratch}
    command: ["sh", "-c", "id; touch /x 2>/dev/null && echo rootfs-writable || echo rootfs-read-only; touch /scratch/f && echo scratch-writable; stat -c 'scratch-group=%g' /scratch/f"]
---
apiVersion: v1
kind: Pod
metadata:
  name: nonroot
spec:
  containers:
  - name: app
    image: busybox
    imagePullPolicy: Never
    command: ["sleep", "3600"]
    securityContext:
      runAsNonRoot: true
---
apiVersion: v1
kind: Pod
metadata:
  name: defaults
spec:
  restartPolicy: Never
  containers:
  - name: app
    image: busybox
    imagePullPolicy: Never
    command: ["sh", "-c", "grep -E '^(NoNewPrivs|Seccomp|CapEff):' /proc/self/status"]
---
apiVersion: v1
kind: Pod
metadata:
  name: dropped
spec:
  restartPolicy: Never
  containers:
  - name: app
    image: busybox
    imagePullPolicy: Never
    securityContext:
      allowPrivilegeEscalation: false
      capabilities:
        drop: [ALL]
    command: ["sh", "-c", "grep -E '^(NoNewPrivs|Seccomp|CapEff):' /proc/self/status; touch /tmp/f; chown 1 /tmp/f 2>/dev/null && echo chown-allowed || echo chown-denied"]
---
apiVersion: v1
kind: Pod
metadata:
  name: netadmin
spec:
  restartPolicy: Never
  containers:
  - name: app
    image: busybox
    imagePullPolicy: Never
    securityContext:
      capabilities:
        add: [NET_ADMIN]
      seccompProfile:
        type: RuntimeDefault
    command: ["sh", "-c", "grep -E '^(NoNewPrivs|Seccomp|CapEff):' /proc/self/status; ip link set lo mtu 1280 && echo mtu-set"]
---
apiVersion: v1
kind: Pod
metadata:
  name: never
spec:
  containers:
  - name: app
    image: skiff.test/absent:1
    imagePullPolicy: Never
"#,
    );

    // A Namespace enforcing the restricted level admits a fully restricted pod, which runs.
    c.apply(
        r#"apiVersion: v1
kind: Namespace
metadata:
  name: locked
  labels:
    pod-security.kubernetes.io/enforce: restricted
"#,
    );
    let restricted = r#"apiVersion: v1
kind: Pod
metadata:
  name: restricted
  namespace: locked
spec:
  restartPolicy: Never
  securityContext:
    runAsNonRoot: true
    runAsUser: 1000
    seccompProfile:
      type: RuntimeDefault
  containers:
  - name: app
    image: busybox
    imagePullPolicy: Never
    command: ["sh", "-c", "id -u; grep -E '^(NoNewPrivs|Seccomp|CapEff):' /proc/self/status"]
    securityContext:
      allowPrivilegeEscalation: false
      capabilities:
        drop: [ALL]
"#;
    // Without its securityContext the same pod is refused by admission.
    let loose = restricted
        .replace("name: restricted", "name: loose")
        .replace("      allowPrivilegeEscalation: false\n", "");
    let mut child = Command::new(&c.kubectl)
        .arg("--kubeconfig")
        .arg(&c.kubeconfig)
        .args(["apply", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(loose.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("violates PodSecurity \"restricted:"),
        "{err}"
    );
    c.apply(restricted);

    for pod in ["ids", "defaults", "dropped", "netadmin"] {
        c.wait_until(&format!("pod/{pod}"), "{.status.phase}", 60, |p| {
            p == "Succeeded" || p == "Failed"
        });
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let phase = c.kubectl_ok(&[
            "get",
            "-n",
            "locked",
            "pod/restricted",
            "-o",
            "jsonpath={.status.phase}",
        ]);
        if phase == "Succeeded" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "restricted: {phase}\n{}",
            c.kubectl_ok(&["get", "-n", "locked", "pod/restricted", "-o", "yaml"])
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    }

    // runAsUser/runAsGroup, supplementalGroups and fsGroup: the process's ids.
    let ids = logs(&c, "ids");
    let id_line = ids.lines().next().unwrap_or_default();
    // busybox's `id` names uid 1000 (the image's `app`), not gid 3000.
    assert!(
        id_line.starts_with("uid=1000(app) gid=3000 groups="),
        "{ids}"
    );
    let groups = id_line.split("groups=").nth(1).unwrap();
    assert!(groups.contains("2000") && groups.contains("4000"), "{ids}");
    // readOnlyRootFilesystem: the root is read-only, the emptyDir is not, and the file
    // made in it belongs to the fsGroup (the directory is setgid).
    assert!(ids.contains("rootfs-read-only"), "{ids}");
    assert!(ids.contains("scratch-writable"), "{ids}");
    assert!(ids.contains("scratch-group=2000"), "{ids}");
    assert_eq!(c.jsonpath("pod/ids", "{.status.phase}"), "Succeeded");

    // runAsNonRoot with busybox (root): not created, with the kubelet's message.
    c.wait_until(
        "pod/nonroot",
        "{.status.containerStatuses[0].state.waiting.reason}",
        60,
        |r| r == "CreateContainerConfigError",
    );
    let uid = c.jsonpath("pod/nonroot", "{.metadata.uid}");
    assert_eq!(
        waiting(&c, "nonroot").1,
        format!("container has runAsNonRoot and image will run as root (pod: \"nonroot_default({uid})\", container: app)")
    );
    assert!(!c.engine_containers().contains("k8s_app_nonroot_"));

    // Kubernetes' defaults: escalation allowed, no seccomp filter, the runtime's caps.
    let defaults = logs(&c, "defaults");
    assert_eq!(status_field(&defaults, "NoNewPrivs"), "0", "{defaults}");
    assert_eq!(status_field(&defaults, "Seccomp"), "0", "{defaults}");
    let caps = status_field(&defaults, "CapEff");
    assert!(
        has_cap(&caps, CAP_CHOWN) && !has_cap(&caps, CAP_NET_ADMIN),
        "{caps}"
    );

    // drop ALL and allowPrivilegeEscalation: false.
    let dropped = logs(&c, "dropped");
    assert_eq!(
        status_field(&dropped, "CapEff"),
        "0000000000000000",
        "{dropped}"
    );
    assert_eq!(status_field(&dropped, "NoNewPrivs"), "1", "{dropped}");
    assert!(dropped.contains("chown-denied"), "{dropped}");

    // add NET_ADMIN (and RuntimeDefault: the runtime's filter).
    let netadmin = logs(&c, "netadmin");
    assert!(
        has_cap(&status_field(&netadmin, "CapEff"), CAP_NET_ADMIN),
        "{netadmin}"
    );
    assert_eq!(status_field(&netadmin, "Seccomp"), "2", "{netadmin}");
    assert!(netadmin.contains("mtu-set"), "{netadmin}");

    // The restricted pod: non-root, no capabilities, no_new_privs, seccomp filtered.
    let r = c.kubectl_ok(&["logs", "-n", "locked", "restricted"]);
    assert_eq!(r.lines().next(), Some("1000"), "{r}");
    assert_eq!(status_field(&r, "CapEff"), "0000000000000000", "{r}");
    assert_eq!(status_field(&r, "NoNewPrivs"), "1", "{r}");
    assert_eq!(status_field(&r, "Seccomp"), "2", "{r}");

    // imagePullPolicy Never with a missing image.
    c.wait_until(
        "pod/never",
        "{.status.containerStatuses[0].state.waiting.reason}",
        60,
        |r| r == "ErrImageNeverPull",
    );
    assert_eq!(
        waiting(&c, "never").1,
        "Container image \"skiff.test/absent:1\" is not present with pull policy of Never"
    );
}

/// `skiff registry` with an htpasswd file on a free loopback port, killed on drop.
struct AuthRegistry {
    child: Child,
    addr: String,
    _skiff: Skiff,
}

/// The user of [`AuthRegistry`].
const USER: &str = "alice";
/// Her password.
const PASSWORD: &str = "s3cret-pw";
/// `htpasswd -nbB alice s3cret-pw` (bcrypt).
const HTPASSWD: &str = "alice:$2y$05$wWbt3XVlHJhMvLNNn/0qK.QM30/Y/IlHUwSngMTrWGWSyMr9vJzXK\n";

impl AuthRegistry {
    fn start() -> AuthRegistry {
        let skiff = Skiff::with_busybox();
        let htpasswd = skiff.root.path().join("htpasswd");
        std::fs::write(&htpasswd, HTPASSWD).unwrap();
        let mut child = skiff
            .cmd(&["registry", "--addr", "127.0.0.1:0", "--htpasswd"])
            .arg(&htpasswd)
            .arg("--root-dir")
            .arg(skiff.root.path().join("registry-data"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("{line}"))
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        AuthRegistry {
            child,
            addr,
            _skiff: skiff,
        }
    }

    /// Pushes the registry's own busybox as `name`.
    fn push_busybox(&self, name: &str) -> String {
        let image = format!("{}/{name}", self.addr);
        self._skiff.ok(&["tag", "busybox", &image]);
        self._skiff.ok(&[
            "push",
            "--insecure",
            "--creds",
            &format!("{USER}:{PASSWORD}"),
            &image,
        ]);
        image
    }
}

impl Drop for AuthRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn image_pull_secrets_authenticate_pulls_from_a_registry_with_basic_auth() {
    let registry = AuthRegistry::start();
    let image = registry.push_busybox("team/busybox:1");
    let (c, _server) = Cluster::start(&[]);
    c.kubectl_ok(&[
        "create",
        "secret",
        "docker-registry",
        "regcred",
        &format!("--docker-server={}", registry.addr),
        &format!("--docker-username={USER}"),
        &format!("--docker-password={PASSWORD}"),
    ]);
    c.kubectl_ok(&[
        "create",
        "secret",
        "docker-registry",
        "wrongcred",
        &format!("--docker-server={}", registry.addr),
        &format!("--docker-username={USER}"),
        "--docker-password=not-her-password",
    ]);
    // A ServiceAccount whose pods get its pull secret.
    c.kubectl_ok(&["create", "serviceaccount", "puller"]);
    c.kubectl_ok(&[
        "patch",
        "serviceaccount",
        "puller",
        "-p",
        r#"{"imagePullSecrets":[{"name":"regcred"}]}"#,
    ]);
    let pod = |name: &str, extra: &str| {
        format!(
            r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  restartPolicy: Never
{extra}  containers:
  - name: app
    image: {image}
    imagePullPolicy: Always
    command: ["echo", "pulled {name}"]
---
"#
        )
    };
    c.apply(&format!(
        "{}{}{}{}",
        pod("anonymous", ""),
        pod("wrong", "  imagePullSecrets:\n  - name: wrongcred\n"),
        pod("with-secret", "  imagePullSecrets:\n  - name: regcred\n"),
        pod("via-account", "  serviceAccountName: puller\n"),
    ));

    for name in ["with-secret", "via-account"] {
        c.wait_until(&format!("pod/{name}"), "{.status.phase}", 90, |p| {
            p == "Succeeded"
        });
        assert_eq!(logs(&c, name).trim(), format!("pulled {name}"));
    }
    // Without credentials, or with wrong ones: ErrImagePull (its events), then the
    // back-off, with the registry's 401, though the image is now on the node (Always).
    for name in ["anonymous", "wrong"] {
        c.wait_until(
            &format!("pod/{name}"),
            "{.status.containerStatuses[0].state.waiting.reason}",
            90,
            |r| r == "ImagePullBackOff",
        );
        let (reason, message) = waiting(&c, name);
        assert_eq!(reason, "ImagePullBackOff");
        assert!(
            message.starts_with(&format!("Back-off pulling image \"{image}\"")),
            "{message}"
        );
        assert!(message.contains("401 Unauthorized"), "{message}");
        let events = c.kubectl_ok(&[
            "get",
            "events",
            "--field-selector",
            &format!("involvedObject.name={name}"),
            "-o",
            "jsonpath={range .items[*]}{.reason}: {.message}{\"\\n\"}{end}",
        ]);
        assert!(
            events.contains(&format!("Failed: Failed to pull image \"{image}\""))
                && events.contains("401 Unauthorized")
                && events.contains("Failed: Error: ErrImagePull")
                && events.contains(&format!("BackOff: Back-off pulling image \"{image}\"")),
            "{events}"
        );
        assert_eq!(
            c.jsonpath(&format!("pod/{name}"), "{.status.phase}"),
            "Pending"
        );
    }
}
