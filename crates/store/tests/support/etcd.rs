//! Starts a real etcd (Debian's `/usr/bin/etcd`, or `$ETCD_BIN`) per test on loopback.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use skiff_store::{EtcdStore, Store};

/// A single-member etcd cluster in a temporary data dir, killed on drop.
pub struct EtcdServer {
    child: Child,
    endpoint: String,
    dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("binding a loopback port")
        .local_addr()
        .unwrap()
        .port()
}

impl EtcdServer {
    /// Starts etcd; panics (failing the test) when the binary is missing.
    pub fn start() -> EtcdServer {
        let binary = std::env::var_os("ETCD_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/bin/etcd"));
        assert!(
            binary.exists(),
            "{} not found: install Debian's etcd-server (apt-get install etcd-server) or set ETCD_BIN",
            binary.display()
        );
        let dir = tempfile::tempdir().unwrap();
        let client = format!("http://127.0.0.1:{}", free_port());
        let peer = format!("http://127.0.0.1:{}", free_port());
        let log = std::fs::File::create(dir.path().join("etcd.log")).unwrap();
        let child = Command::new(binary)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("default={peer}")])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting etcd");
        EtcdServer {
            child,
            endpoint: client,
            dir,
        }
    }

    /// The client URL, e.g. `http://127.0.0.1:41234`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// etcd's data directory, for tests that inspect raw bytes on disk.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Connects once etcd answers, within 30 s.
    pub async fn store(&self) -> EtcdStore {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let attempt = async {
                let store = EtcdStore::connect(&[self.endpoint.as_str()]).await?;
                store.current_revision().await?;
                Ok::<_, skiff_store::StoreError>(store)
            };
            match tokio::time::timeout(Duration::from_secs(5), attempt).await {
                Ok(Ok(store)) => return store,
                result if Instant::now() > deadline => {
                    let log = std::fs::read_to_string(self.dir.path().join("etcd.log"));
                    panic!(
                        "etcd did not come up: {result:?}\n{}",
                        log.unwrap_or_default()
                    );
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every regular file under `dir`, for raw-byte searches.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}
