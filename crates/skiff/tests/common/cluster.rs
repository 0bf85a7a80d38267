//! A `skiff server` (API server, scheduler, controllers and this host's kubelet) on a
//! fresh root, driven by the real kubectl 1.33.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::{unique_service_cidr, Skiff};

/// A `skiff server` process, killed on drop.
pub struct ServerProcess(pub Child);

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The kubelet cgroup root of the cluster on `skiff`'s root: unique to the test.
fn kubelet_cgroup_root(skiff: &Skiff) -> String {
    let name = skiff.root.path().file_name().unwrap().to_string_lossy();
    format!("/skiff-test-{name}")
}

/// The `--service-cidr` of a server started with `args`, and whether the test chose it;
/// otherwise a range of the cluster's own (see [`unique_service_cidr`]).
fn service_cidr_of(args: &[&str]) -> (String, bool) {
    match args.iter().position(|a| *a == "--service-cidr") {
        Some(at) => (args[at + 1].to_string(), true),
        None => (unique_service_cidr(), false),
    }
}

/// `ROOT/server.log`, appended to: where the server's warnings and errors go.
fn server_log(skiff: &Skiff) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(skiff.root.path().join("server.log"))
        .unwrap()
}

/// kubectl 1.33, installed beside the default kubectl.
pub fn kubectl_133() -> PathBuf {
    let out = Command::new("sh")
        .args(["-c", "readlink -f \"$(command -v kubectl)\""])
        .output()
        .unwrap();
    let default = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    default.parent().unwrap().join("kubectl.1.33")
}

/// The server's root and a kubectl pointed at it.
pub struct Cluster {
    /// The root (also the engine's).
    pub skiff: Skiff,
    /// kubectl.
    pub kubectl: PathBuf,
    /// The admin kubeconfig.
    pub kubeconfig: PathBuf,
    /// `--service-cidr`: one of this cluster's own unless the test chose one.
    pub service_cidr: String,
}

impl Cluster {
    /// Starts `skiff server` with node `node-a` and `env` set, and waits for the node
    /// to be Ready. Keep the process alive as long as the cluster. Its stderr goes to
    /// `ROOT/server.log` ([`Cluster::server_log`]).
    pub fn start(env: &[(&str, &str)]) -> (Cluster, ServerProcess) {
        Cluster::start_with(&[], env)
    }

    /// [`Cluster::start`] with `args` added to `skiff server`'s.
    pub fn start_with(args: &[&str], env: &[(&str, &str)]) -> (Cluster, ServerProcess) {
        let skiff = Skiff::with_busybox();
        let port = free_port().to_string();
        let (service_cidr, chosen) = service_cidr_of(args);
        let mut all = vec!["server", "--port", &port, "--node-name", "node-a"];
        if !chosen {
            all.extend(["--service-cidr", service_cidr.as_str()]);
        }
        // Each cluster's kubelet API on a port of its own (logs, exec, metrics), unless
        // the test chose one.
        let kubelet_port = free_port().to_string();
        if !args.contains(&"--kubelet-port") {
            all.extend(["--kubelet-port", kubelet_port.as_str()]);
        }
        all.extend_from_slice(args);
        let mut cmd = skiff.cmd(&all);
        // The kubelet's cgroups of each test apart from every other's, removed with the
        // root by `system reset`.
        cmd.env("SKIFF_KUBELET_CGROUP_ROOT", kubelet_cgroup_root(&skiff));
        // The Ingress controller's listeners stay on loopback (tests pick their ports).
        cmd.env("SKIFF_INGRESS_BIND_ADDRESS", "127.0.0.1");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(server_log(&skiff))
            .spawn()
            .unwrap();
        Cluster::when_ready(
            skiff,
            child,
            service_cidr,
            "node-a never became Ready",
            |cluster| {
                cluster.jsonpath(
                    "node/node-a",
                    "{.status.conditions[?(@.type==\"Ready\")].status}",
                ) == "True"
            },
        )
    }

    /// The cluster of the server `child` on `skiff`'s root, once its kubeconfig exists and
    /// `ready` holds (panicking with `never` after 30 s).
    fn when_ready(
        skiff: Skiff,
        child: Child,
        service_cidr: String,
        never: &str,
        ready: impl Fn(&Cluster) -> bool,
    ) -> (Cluster, ServerProcess) {
        let server = ServerProcess(child);
        let kubeconfig = skiff.root.path().join("server/admin.kubeconfig");
        let cluster = Cluster {
            skiff,
            kubectl: kubectl_133(),
            kubeconfig,
            service_cidr,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !cluster.kubeconfig.exists() || !ready(&cluster) {
            assert!(Instant::now() < deadline, "{never}");
            std::thread::sleep(Duration::from_millis(100));
        }
        (cluster, server)
    }

    /// Starts `skiff server --disable-kubelet` (no node, no containers) with `args` added,
    /// and waits until the API answers. The server's log is `ROOT/server.log`.
    pub fn start_control_plane(args: &[&str]) -> (Cluster, ServerProcess) {
        let skiff = Skiff::new();
        let port = free_port().to_string();
        let (service_cidr, chosen) = service_cidr_of(args);
        let mut all = vec!["server", "--port", &port, "--disable-kubelet"];
        if !chosen {
            all.extend(["--service-cidr", service_cidr.as_str()]);
        }
        all.extend_from_slice(args);
        let child = skiff
            .cmd(&all)
            .stdout(Stdio::null())
            .stderr(server_log(&skiff))
            .spawn()
            .unwrap();
        Cluster::when_ready(
            skiff,
            child,
            service_cidr,
            "skiff server never answered",
            |cluster| {
                cluster
                    .kubectl(&["get", "serviceaccount", "default", "-n", "default"])
                    .status
                    .success()
            },
        )
    }

    /// Starts `skiff server` again on this cluster's root and port (after the first one
    /// was killed), as [`Cluster::start`] did, and waits until the API answers.
    pub fn start_again(&self) -> ServerProcess {
        let kubeconfig = std::fs::read_to_string(&self.kubeconfig).unwrap();
        let port = kubeconfig
            .lines()
            .find_map(|l| l.trim().strip_prefix("server: https://127.0.0.1:"))
            .expect("the kubeconfig's server URL")
            .trim()
            .to_string();
        let kubelet_port = free_port().to_string();
        let child = self
            .skiff
            .cmd(&[
                "server",
                "--port",
                &port,
                "--node-name",
                "node-a",
                "--kubelet-port",
                &kubelet_port,
                "--service-cidr",
                &self.service_cidr,
            ])
            .env(
                "SKIFF_KUBELET_CGROUP_ROOT",
                kubelet_cgroup_root(&self.skiff),
            )
            .env("SKIFF_INGRESS_BIND_ADDRESS", "127.0.0.1")
            .stdout(Stdio::null())
            .stderr(server_log(&self.skiff))
            .spawn()
            .unwrap();
        let server = ServerProcess(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.kubectl(&["get", "--raw", "/readyz"]).status.success() {
            assert!(Instant::now() < deadline, "skiff server never came back");
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    /// The cgroup the kubelet keeps its QoS levels and pod cgroups below.
    pub fn kubelet_cgroup_root(&self) -> String {
        kubelet_cgroup_root(&self.skiff)
    }

    /// Runs kubectl.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        Command::new(&self.kubectl)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .output()
            .unwrap()
    }

    /// Runs kubectl, asserting success; returns stdout.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// `kubectl apply -f -` of `yaml`.
    pub fn apply(&self, yaml: &str) {
        let mut child = Command::new(&self.kubectl)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["apply", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(yaml.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// What the server wrote to its stderr so far.
    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.skiff.root.path().join("server.log")).unwrap_or_default()
    }

    /// `kubectl get OBJECT -o jsonpath=PATH`.
    pub fn jsonpath(&self, object: &str, path: &str) -> String {
        let out = self.kubectl(&["get", object, "-o", &format!("jsonpath={path}")]);
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// Polls until `check` holds for `path` of `object`, at most `secs` seconds.
    pub fn wait_until(
        &self,
        object: &str,
        path: &str,
        secs: u64,
        check: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let got = self.jsonpath(object, path);
            if check(&got) {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{object} {path}: {got:?}\n{}\n{}",
                self.kubectl_ok(&["get", object, "-o", "yaml"]),
                self.kubectl_ok(&["get", "events"])
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Polls `path` of `object` until it equals `want` (60 s).
    pub fn wait_for(&self, object: &str, path: &str, want: &str) {
        self.wait_until(object, path, 60, |got| got == want);
    }

    /// The engine name of instance `attempt` of a pod's container.
    pub fn engine_name(&self, pod: &str, container: &str, attempt: u32) -> String {
        let uid = self.jsonpath(&format!("pod/{pod}"), "{.metadata.uid}");
        format!("k8s_{container}_{pod}_default_{uid}_{attempt}")
    }

    /// The engine's log of the first instance of a pod's container.
    pub fn container_log(&self, pod: &str, container: &str) -> String {
        let out = self
            .skiff
            .run(&["logs", &self.engine_name(pod, container, 0)]);
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// Waits until the container's log contains `want`; returns the log.
    pub fn wait_for_log(&self, pod: &str, container: &str, want: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let log = self.container_log(pod, container);
            if log.contains(want) {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "{pod}/{container} never logged {want:?}; log: {log:?}\n{}",
                self.kubectl_ok(&["get", "pod", pod, "-o", "yaml"])
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Runs a command in the first instance of a pod's container (through the engine).
    pub fn exec(&self, pod: &str, container: &str, cmd: &[&str]) -> Output {
        let name = self.engine_name(pod, container, 0);
        let mut args = vec!["exec", name.as_str()];
        args.extend_from_slice(cmd);
        self.skiff.run(&args)
    }

    /// The names of the engine's containers.
    pub fn engine_containers(&self) -> String {
        self.skiff.ok(&["ps", "-a", "--format", "{{.Names}}"])
    }
}
