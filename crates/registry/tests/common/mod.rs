//! Test harness: skiff's registry in-process on a free port, Debian's docker-registry as a
//! child process, the busybox fixture image, and skopeo. Everything lives in temp dirs and
//! stops on drop, so tests run in parallel.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use skiff_registry::{Config, Server};

/// Password of the `alice` user in [`Options::auth`] registries.
pub const PASSWORD: &str = "wonderland";

/// How to start a test registry.
#[derive(Default, Clone)]
pub struct Options {
    /// Require credentials (user `alice`, password [`PASSWORD`]).
    pub auth: bool,
    /// With `auth`, let anonymous clients pull.
    pub anonymous_pull: bool,
    /// Serve HTTPS with a self-signed certificate for 127.0.0.1 and localhost.
    pub tls: bool,
}

/// skiff's registry on its own runtime thread; stopped and joined on drop.
pub struct Registry {
    /// `127.0.0.1:PORT`.
    pub host: String,
    /// `http://127.0.0.1:PORT` or `https://...`.
    pub url: String,
    /// The storage directory.
    pub root: PathBuf,
    dir: tempfile::TempDir,
    options: Options,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Registry {
    /// A registry without auth or TLS.
    pub fn start() -> Self {
        Self::with(Options::default())
    }

    /// A registry with `options`, on a fresh storage directory.
    pub fn with(options: Options) -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self::on(dir, options, None)
    }

    /// Stops this registry and starts a new process-like instance on the same storage and
    /// port: what a crash and restart look like to the disk and to clients.
    pub fn restart(mut self) -> Self {
        let port: u16 = self.host.rsplit(':').next().unwrap().parse().unwrap();
        self.stop_server();
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        Self::on(dir, self.options.clone(), Some(port))
    }

    fn on(dir: tempfile::TempDir, options: Options, port: Option<u16>) -> Self {
        let root = dir.path().join("storage");
        let mut config = Config {
            addr: format!("127.0.0.1:{}", port.unwrap_or(0)).parse().unwrap(),
            root: root.clone(),
            tls: None,
            htpasswd: None,
            anonymous_pull: options.anonymous_pull,
        };
        if options.auth {
            let hash = bcrypt::hash(PASSWORD, 5)
                .unwrap()
                .replacen("$2b$", "$2y$", 1);
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, format!("alice:{hash}\n")).unwrap();
            config.htpasswd = Some(file);
        }
        if options.tls {
            let cert = rcgen::generate_simple_self_signed(vec![
                "127.0.0.1".to_string(),
                "localhost".to_string(),
            ])
            .unwrap();
            let (c, k) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
            std::fs::write(&c, cert.cert.pem()).unwrap();
            std::fs::write(&k, cert.signing_key.serialize_pem()).unwrap();
            config.tls = Some((c, k));
        }
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                // The port of a restarted registry may linger briefly in the kernel.
                let deadline = Instant::now() + Duration::from_secs(5);
                let server = loop {
                    match Server::bind(&config).await {
                        Ok(s) => break s,
                        Err(e) if Instant::now() > deadline => panic!("{e}"),
                        Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                };
                ready_tx.send((server.local_addr(), server.url())).unwrap();
                server
                    .serve(async {
                        let _ = stopped.await;
                    })
                    .await;
            });
        });
        let (addr, url) = ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("registry did not start");
        Registry {
            host: addr.to_string(),
            url,
            root,
            dir,
            options,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn stop_server(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// A reqwest client that accepts the test certificate.
    pub fn client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .build()
            .unwrap()
    }

    /// `URL/v2/<rest>`.
    pub fn v2(&self, rest: &str) -> String {
        format!("{}/v2/{rest}", self.url)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop_server();
    }
}

/// A free loopback port.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something listens on `port`.
pub fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on port {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Debian's docker-registry on a free loopback port, killed on drop.
pub struct DockerRegistry {
    /// `127.0.0.1:PORT`.
    pub host: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl DockerRegistry {
    /// Starts it with a temp storage directory and deletes enabled.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry is installed (apt-get install docker-registry)");
        wait_for_port(port);
        Self {
            host: format!("127.0.0.1:{port}"),
            child,
            _dir: dir,
        }
    }
}

impl Drop for DockerRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The busybox test image (`OCI layout tag busybox`, docker-archive, oci-archive), built
/// once per test run with umoci and skopeo; shared with skiff's own tests.
pub fn fixture_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let dir = tmp.join("busybox-image");
        let script =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/make-test-image.sh");
        // Several test binaries may build it at once; flock(1) serialises them.
        let status = Command::new("flock")
            .arg(tmp.join("busybox-image.lock"))
            .arg("sh")
            .arg("-c")
            .arg(format!(
                "[ -f '{0}/busybox-docker.tar' ] || sh '{1}' '{0}'",
                dir.display(),
                script.display()
            ))
            .status()
            .unwrap();
        assert!(status.success(), "building the test image failed");
        dir
    })
}

/// Runs skopeo with `args`.
pub fn skopeo(args: &[&str]) -> Output {
    Command::new("skopeo")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("skopeo is installed")
}

/// Runs skopeo, asserting success; returns stdout.
pub fn skopeo_ok(args: &[&str]) -> String {
    let out = skopeo(args);
    assert!(
        out.status.success(),
        "skopeo {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The manifest digest skopeo sees at `image` (a transport:reference).
pub fn skopeo_digest(image: &str, tls_verify: bool) -> String {
    let flag = format!("--tls-verify={tls_verify}");
    let mut args = vec!["inspect"];
    if image.starts_with("docker://") {
        args.push(&flag);
    }
    args.push(image);
    let out = skopeo_ok(&args);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["Digest"].as_str().unwrap().to_owned()
}
