//! The end-to-end harness: a real API server on its own temporary root and free port,
//! driven by the real kubectl binaries and the official Python client.

#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use skiff_apiserver::{Server, ServerConfig};

#[path = "../../../store/tests/support/etcd.rs"]
mod etcd;

pub use etcd::EtcdServer;

/// A running server; dropping it shuts the server (and its runtime) down.
pub struct TestServer {
    pub root: tempfile::TempDir,
    pub kubeconfig: PathBuf,
    pub port: u16,
    server: Option<Server>,
    runtime: Option<tokio::runtime::Runtime>,
    /// The etcd the server stores in, when not the embedded store.
    etcd: Option<EtcdServer>,
}

impl TestServer {
    /// Starts a server with the embedded store under a fresh temporary root, on a free port,
    /// and waits until /readyz answers.
    pub fn start() -> TestServer {
        TestServer::start_with(None)
    }

    /// Starts a server storing in a fresh etcd (Debian's etcd-server) on loopback.
    pub fn start_on_etcd() -> TestServer {
        TestServer::start_with(Some(EtcdServer::start()))
    }

    fn start_with(etcd: Option<EtcdServer>) -> TestServer {
        let root = tempfile::tempdir().expect("temporary root");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        if let Some(etcd) = &etcd {
            runtime.block_on(etcd.store());
        }
        let config = ServerConfig {
            data_dir: root.path().join("server"),
            bind_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 0,
            datastore_endpoints: etcd.iter().map(|e| e.endpoint().to_owned()).collect(),
            service_cidr: skiff_apiserver::DEFAULT_SERVICE_CIDR.parse().unwrap(),
            tls_sans: Vec::new(),
            advertise_address: None,
        };
        let server = runtime
            .block_on(Server::start(config))
            .expect("server starts");
        let port = server.local_addr().port();
        let kubeconfig = server.kubeconfig_path().to_path_buf();
        let test = TestServer {
            root,
            kubeconfig,
            port,
            server: Some(server),
            runtime: Some(runtime),
            etcd,
        };
        test.wait_ready();
        test
    }

    /// The server's CA, PEM.
    pub fn ca_path(&self) -> PathBuf {
        self.root.path().join("server/tls/ca.crt")
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = Command::new("curl")
                .args(["-sS", "--cacert"])
                .arg(self.ca_path())
                .arg(format!("https://127.0.0.1:{}/readyz", self.port))
                .output();
            if let Ok(out) = out {
                if out.status.success() && out.stdout == b"ok" {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "server never became ready");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs a kubectl binary against this server.
    pub fn kubectl(&self, kubectl: &Path, args: &[&str]) -> Output {
        self.kubectl_stdin(kubectl, args, None)
    }

    /// Runs kubectl with `stdin` piped in.
    pub fn kubectl_stdin(&self, kubectl: &Path, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new(kubectl);
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.root.path().join(format!(
                "kube-cache-{}",
                kubectl.file_name().unwrap().to_string_lossy()
            )))
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("kubectl runs");
        if let Some(input) = stdin {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
        }
        child.wait_with_output().expect("kubectl finishes")
    }

    /// A kubeconfig for `name` (credentials: the indented `user:` fields, e.g. a client
    /// certificate and key, or a token) next to the admin's, with the same server and CA.
    pub fn user_kubeconfig(&self, name: &str, credentials: &str) -> PathBuf {
        use base64::Engine as _;
        let admin = std::fs::read_to_string(&self.kubeconfig).unwrap();
        let server = admin
            .lines()
            .find_map(|l| l.trim().strip_prefix("server: "))
            .unwrap()
            .to_owned();
        let ca = base64::engine::general_purpose::STANDARD
            .encode(std::fs::read(self.ca_path()).unwrap());
        self.write(
            &format!("{name}.kubeconfig"),
            &format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: skiff\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\nusers:\n- name: {name}\n  user:\n{credentials}contexts:\n- name: {name}\n  context:\n    cluster: skiff\n    user: {name}\ncurrent-context: {name}\n"
            ),
        )
    }

    /// Writes a file under the temporary root and returns its path.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.root.path().join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let (Some(server), Some(runtime)) = (self.server.take(), self.runtime.take()) {
            runtime.block_on(server.stop());
            runtime.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

/// The kubectl binaries to test: the oldest and newest versioned ones beside the real
/// kubectl (`kubectl.1.27`, `kubectl.1.33`), or plain `kubectl`.
pub fn kubectls() -> Vec<PathBuf> {
    let found = Command::new("sh")
        .args(["-c", "readlink -f \"$(command -v kubectl)\""])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|p| !p.is_empty())
        .map(PathBuf::from);
    let Some(kubectl) = found else {
        panic!("kubectl is not installed");
    };
    let dir = kubectl.parent().unwrap().to_path_buf();
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let minor = name.strip_prefix("kubectl.1.")?.parse::<u32>().ok()?;
            Some((minor, e.path()))
        })
        .collect();
    versions.sort();
    match (versions.first(), versions.last()) {
        (Some(oldest), Some(newest)) if oldest.0 != newest.0 => {
            vec![oldest.1.clone(), newest.1.clone()]
        }
        (Some(only), _) => vec![only.1.clone()],
        _ => vec![kubectl],
    }
}

/// Stdout of a successful command, or a panic showing both streams.
pub fn ok(out: Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {stdout}\nstderr: {stderr}",
        out.status
    );
    stdout
}

/// Stderr of a failed command, or a panic when it succeeded.
pub fn fails(out: Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "{what} unexpectedly succeeded:\n{stdout}"
    );
    stderr
}

/// Runs `kubectl` with another user's kubeconfig.
pub fn as_user(kubectl: &Path, kubeconfig: &Path, args: &[&str]) -> Output {
    Command::new(kubectl)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .unwrap()
}

/// Retries `f` until it returns true, for 10 s (RBAC and controllers follow the store
/// within milliseconds, kubectl is a separate process).
pub fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs `script` (saved as `file`) with the official Python client against `server`'s
/// kubeconfig (its first argument); panics with `what` and the output unless it succeeds.
pub fn run_python(server: &TestServer, file: &str, script: &str, what: &str) -> String {
    let has = std::process::Command::new("python3")
        .args(["-c", "import kubernetes"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(has, "the Python client is missing: pip install kubernetes");
    let path = server.write(file, script);
    let out = std::process::Command::new("python3")
        .arg(&path)
        .arg(&server.kubeconfig)
        .output()
        .unwrap();
    ok(out, what)
}
