//! A whole control plane in one test process: the API server on a free port in a temporary
//! directory, the scheduler, the controllers and simulated nodes, all through the same
//! entry points `skiff server` and `skiff agent --simulate` call; the real kubectl drives it.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use skiff_apiserver::{Server, ServerConfig};
use skiff_controllers::simulated_agent::SimulatedAgentConfig;

/// The kubectl the tests drive: `kubectl.1.33` beside the kubectl on PATH when present.
pub fn kubectl_binary() -> PathBuf {
    let on_path = Command::new("sh")
        .args(["-c", "readlink -f \"$(command -v kubectl)\""])
        .output()
        .ok()
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .unwrap_or_else(|| PathBuf::from("kubectl"));
    let versioned = on_path.with_file_name("kubectl.1.33");
    if versioned.exists() {
        versioned
    } else {
        on_path
    }
}

/// A running cluster; dropping it stops everything.
pub struct Cluster {
    _dir: tempfile::TempDir,
    pub kubeconfig: PathBuf,
    runtime: tokio::runtime::Runtime,
    server: Option<Server>,
    nodes: std::cell::Cell<usize>,
}

impl Cluster {
    /// Starts a server with the scheduler, the controllers and `nodes` simulated nodes.
    pub fn start(nodes: usize) -> Cluster {
        if let Ok(filter) = std::env::var("SKIFF_TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_test_writer()
                .try_init();
        }
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let data_dir = dir.path().join("server");
        let server = runtime.block_on(async {
            let server = Server::start(ServerConfig {
                data_dir: data_dir.clone(),
                bind_address: "127.0.0.1".parse().unwrap(),
                port: 0,
                datastore_endpoints: Vec::new(),
                service_cidr: skiff_apiserver::DEFAULT_SERVICE_CIDR.parse().unwrap(),
                tls_sans: Vec::new(),
                advertise_address: None,
            })
            .await
            .unwrap();
            let client = skiff_controllers::connect::from_kubeconfig(server.kubeconfig_path())
                .await
                .unwrap();
            tokio::spawn(skiff_scheduler::run(
                client.clone(),
                skiff_scheduler::SchedulerConfig::default(),
            ));
            tokio::spawn(skiff_controllers::run(
                client.clone(),
                skiff_controllers::ControllerManagerConfig::default(),
            ));
            tokio::spawn(skiff_controllers::simulated_agent::run(
                client,
                SimulatedAgentConfig {
                    nodes,
                    cpu: "4".into(),
                    memory: "8Gi".into(),
                    ..Default::default()
                },
            ));
            server
        });
        let cluster = Cluster {
            kubeconfig: skiff_apiserver::kubeconfig_path(&data_dir),
            _dir: dir,
            runtime,
            server: Some(server),
            nodes: std::cell::Cell::new(nodes),
        };
        cluster.wait_for(
            &format!("{nodes} Ready nodes"),
            Duration::from_secs(30),
            || {
                let out = cluster.kubectl(&["get", "nodes", "--no-headers"]);
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .filter(|l| l.split_whitespace().nth(1) == Some("Ready"))
                    .count()
                    == nodes
            },
        );
        cluster
    }

    /// Adds `count` simulated nodes (named on from the existing ones) and waits until
    /// they are Ready.
    pub fn add_nodes(&self, count: usize) {
        let first = self.nodes.get();
        let kubeconfig = self.kubeconfig.clone();
        self.runtime.spawn(async move {
            let client = skiff_controllers::connect::from_kubeconfig(&kubeconfig)
                .await
                .unwrap();
            skiff_controllers::simulated_agent::run(
                client,
                SimulatedAgentConfig {
                    nodes: count,
                    first_index: first,
                    cpu: "4".into(),
                    memory: "8Gi".into(),
                    ..Default::default()
                },
            )
            .await
        });
        self.nodes.set(first + count);
        let total = first + count;
        self.wait_for(
            &format!("{total} Ready nodes"),
            Duration::from_secs(30),
            || {
                let out = self.kubectl(&["get", "nodes", "--no-headers"]);
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .filter(|l| l.split_whitespace().nth(1) == Some("Ready"))
                    .count()
                    == total
            },
        );
    }

    /// Runs kubectl against the cluster.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_stdin(args, None)
    }

    /// Runs kubectl with `stdin` piped in.
    pub fn kubectl_stdin(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new(kubectl_binary());
        cmd.arg("--kubeconfig").arg(&self.kubeconfig).args(args);
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("kubectl runs");
        if let Some(input) = stdin {
            use std::io::Write as _;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
        }
        child.wait_with_output().unwrap()
    }

    /// Runs kubectl, asserting success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Applies a manifest.
    pub fn apply(&self, yaml: &str) {
        let out = self.kubectl_stdin(&["apply", "-f", "-"], Some(yaml));
        assert!(
            out.status.success(),
            "kubectl apply failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `kubectl get ... -o jsonpath=...`.
    pub fn jsonpath(&self, what: &[&str], path: &str) -> String {
        let mut args = vec!["get"];
        args.extend_from_slice(what);
        let expr = format!("jsonpath={path}");
        args.extend(["-o", expr.as_str()]);
        String::from_utf8_lossy(&self.kubectl(&args).stdout).into_owned()
    }

    /// Polls `check` until it holds, failing the test after `timeout`.
    pub fn wait_for(&self, what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
        let start = Instant::now();
        while !check() {
            assert!(start.elapsed() < timeout, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            self.runtime.block_on(server.stop());
        }
    }
}
