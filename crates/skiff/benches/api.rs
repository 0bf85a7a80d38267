//! API server benchmarks: `skiff server` (embedded store, then etcd) against etcd's own
//! put throughput, measured in one run on this machine.
//!
//! `cargo bench -p skiff --bench api`. Needs Debian's etcd-server for the etcd rows
//! (`/usr/bin/etcd`, or `ETCD_BIN`). `SKIFF_BENCH_PODS` (default 10000) sets how many pods
//! are stored, `SKIFF_BENCH_WATCHERS` (default 1000) the watchers of the fan-out case,
//! `SKIFF_BIN` another `skiff` binary to run as the server (A/B runs of two builds with one
//! bench executable), `SKIFF_BENCH_ETCD_BACKEND=0` skips the server on the etcd backend.
//! Prints a Markdown table; docs/benchmarks.md records the figures.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::sync::Semaphore;

const NAMESPACE: &str = "default";

fn skiff() -> PathBuf {
    std::env::var_os("SKIFF_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_skiff")))
}

/// CPU time (user + system) a process has used so far, in microseconds.
fn cpu_us(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name (which may hold spaces) start at its closing ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // SAFETY: sysconf only reads a configuration value.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    (ticks(11) + ticks(12)) / per_second * 1e6
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// A single-member etcd on loopback, killed on drop.
struct Etcd {
    child: Child,
    endpoint: String,
    _dir: tempfile::TempDir,
}

impl Etcd {
    fn start() -> Option<Etcd> {
        let binary = std::env::var_os("ETCD_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/bin/etcd"));
        if !binary.exists() {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let client = format!("http://127.0.0.1:{}", free_port());
        let peer = format!("http://127.0.0.1:{}", free_port());
        let child = Command::new(binary)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("default={peer}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        Some(Etcd {
            child,
            endpoint: client,
            _dir: dir,
        })
    }

    async fn client(&self) -> etcd_client::Client {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut c) = etcd_client::Client::connect([&self.endpoint], None).await {
                if c.status().await.is_ok() {
                    return c;
                }
            }
            assert!(Instant::now() < deadline, "etcd never became ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `skiff server` process on its own root and port, API only (no scheduler, controllers
/// or kubelet, so stored pods stay as written), killed on drop.
struct ApiServer {
    child: Child,
    root: tempfile::TempDir,
    base: String,
    client: reqwest::Client,
}

impl ApiServer {
    /// Starts the server and returns it with the time from spawn to a 200 from /readyz.
    async fn start(root: tempfile::TempDir, datastore: Option<&str>) -> (ApiServer, Duration) {
        let port = free_port();
        let mut cmd = Command::new(skiff());
        cmd.arg("--root")
            .arg(root.path())
            .args(["server", "--port", &port.to_string()])
            .args([
                "--disable-scheduler",
                "--disable-controller-manager",
                "--disable-kubelet",
            ]);
        if let Some(endpoint) = datastore {
            cmd.args(["--datastore-endpoint", endpoint]);
        }
        let started = Instant::now();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning skiff server");
        let base = format!("https://127.0.0.1:{port}");
        let ca_path = root.path().join("server/tls/ca.crt");
        // Poll for the CA (written at first start), then for /readyz.
        let mut probe: Option<reqwest::Client> = None;
        let ready = loop {
            if probe.is_none() {
                if let Ok(pem) = std::fs::read(&ca_path) {
                    if let Ok(ca) = reqwest::Certificate::from_pem(&pem) {
                        probe = reqwest::Client::builder()
                            .add_root_certificate(ca)
                            .build()
                            .ok();
                    }
                }
            }
            if let Some(c) = &probe {
                if let Ok(r) = c.get(format!("{base}/readyz")).send().await {
                    if r.status().is_success() {
                        break started.elapsed();
                    }
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "server never ready"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        let client = admin_client(root.path());
        (
            ApiServer {
                child,
                root,
                base,
                client,
            },
            ready,
        )
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn pods_url(&self) -> String {
        format!("{}/api/v1/namespaces/{NAMESPACE}/pods", self.base)
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = &self.root;
    }
}

/// A client authenticating with the admin certificate of the root's kubeconfig.
fn admin_client(root: &Path) -> reqwest::Client {
    let out = Command::new(skiff())
        .arg("--root")
        .arg(root)
        .arg("kubeconfig")
        .output()
        .expect("skiff kubeconfig");
    let kubeconfig = String::from_utf8_lossy(&out.stdout).to_string();
    let field = |name: &str| -> Vec<u8> {
        let line = kubeconfig
            .lines()
            .find_map(|l| l.trim().strip_prefix(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("{name} in kubeconfig"));
        BASE64.decode(line.trim()).unwrap()
    };
    let ca = reqwest::Certificate::from_pem(&field("certificate-authority-data")).unwrap();
    let mut identity = field("client-certificate-data");
    identity.extend_from_slice(b"\n");
    identity.extend_from_slice(&field("client-key-data"));
    reqwest::Client::builder()
        .add_root_certificate(ca)
        .identity(reqwest::Identity::from_pem(&identity).unwrap())
        .pool_max_idle_per_host(256)
        .build()
        .unwrap()
}

fn pod(name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "bench", "tier": "web"}},
        "spec": {
            "automountServiceAccountToken": false,
            "containers": [{
                "name": "web",
                "image": "busybox",
                "command": ["sleep", "3600"],
                "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
                "ports": [{"containerPort": 8080}]
            }]
        }
    })
}

/// Runs `total` operations over `clients` concurrent workers; returns operations/s.
async fn throughput<F, Fut>(total: usize, clients: usize, op: F) -> f64
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..clients {
        let op = op.clone();
        let next = next.clone();
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total {
                    break;
                }
                op(i).await;
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    total as f64 / started.elapsed().as_secs_f64()
}

struct ApiFigures {
    create_1: f64,
    create_64: f64,
    /// CPU time of the server and of this process per create over the 64-client phase (us).
    server_cpu_per_create: f64,
    bench_cpu_per_create: f64,
    get_1: f64,
    get_64: f64,
    list_ms: f64,
    list_page_ms: f64,
    rss_kib: u64,
    json_kib: u64,
}

/// Stores `pods` pods through the API (a tenth with one client, the rest with 64), then
/// measures gets and lists.
async fn api_figures(server: &ApiServer, pods: usize) -> ApiFigures {
    let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}});
    let _ = server
        .client
        .post(format!(
            "{}/api/v1/namespaces/{NAMESPACE}/serviceaccounts",
            server.base
        ))
        .json(&sa)
        .send()
        .await;
    let create = |offset: usize| {
        let client = server.client.clone();
        let url = server.pods_url();
        move |i: usize| {
            let client = client.clone();
            let url = url.clone();
            async move {
                let r = client
                    .post(&url)
                    .json(&pod(&format!("p{}", offset + i)))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
            }
        }
    };
    let single = pods / 10;
    let create_1 = throughput(single, 1, create(0)).await;
    let (server_cpu, bench_cpu) = (cpu_us(server.pid()), cpu_us(std::process::id()));
    let create_64 = throughput(pods - single, 64, create(single)).await;
    let creates = (pods - single) as f64;
    let server_cpu_per_create = (cpu_us(server.pid()) - server_cpu) / creates;
    let bench_cpu_per_create = (cpu_us(std::process::id()) - bench_cpu) / creates;
    let get = || {
        let client = server.client.clone();
        let url = server.pods_url();
        move |i: usize| {
            let client = client.clone();
            let url = format!("{url}/p{}", (i * 7919) % pods);
            async move {
                let r = client.get(&url).send().await.unwrap();
                assert!(r.status().is_success());
                r.bytes().await.unwrap();
            }
        }
    };
    let get_1 = throughput(pods / 5, 1, get()).await;
    let get_64 = throughput(pods, 64, get()).await;
    let mut lists = Vec::new();
    let mut json_bytes = 0;
    for _ in 0..5 {
        let started = Instant::now();
        let body = server
            .client
            .get(server.pods_url())
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        lists.push(started.elapsed().as_secs_f64() * 1000.0);
        let list: Value = serde_json::from_slice(&body).unwrap();
        let items = list["items"].as_array().unwrap();
        assert_eq!(items.len(), pods);
        json_bytes = items
            .iter()
            .map(|p| serde_json::to_vec(p).unwrap().len())
            .sum::<usize>();
    }
    let mut pages = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        let r = server
            .client
            .get(format!("{}?limit=500", server.pods_url()))
            .send()
            .await
            .unwrap();
        r.bytes().await.unwrap();
        pages.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    ApiFigures {
        create_1,
        create_64,
        server_cpu_per_create,
        bench_cpu_per_create,
        get_1,
        get_64,
        list_ms: median(lists),
        list_page_ms: median(pages),
        rss_kib: rss_kib(server.pid()),
        json_kib: (json_bytes / 1024) as u64,
    }
}

/// etcd's own puts of pod-sized values: (1 client, 64 clients) puts/s.
async fn etcd_puts(etcd: &Etcd, pods: usize) -> (f64, f64) {
    let value = serde_json::to_vec(&pod("p-0000000")).unwrap();
    let client = etcd.client().await;
    let put = |prefix: &'static str| {
        let client = client.clone();
        let value = value.clone();
        move |i: usize| {
            let mut client = client.clone();
            let value = value.clone();
            async move {
                client
                    .put(format!("/bench/{prefix}/p{i}"), value, None)
                    .await
                    .unwrap();
            }
        }
    };
    let single = pods / 10;
    let one = throughput(single, 1, put("one")).await;
    let many = throughput(pods - single, 64, put("many")).await;
    (one, many)
}

/// Watch fan-out through the API: `watchers` watches of configmaps, then `events` creates
/// spaced 20 ms apart; each delivery's latency is its receive time minus the create's send
/// time. Returns (p50, p99) in ms and the share of deliveries received.
async fn watch_fanout(server: &ApiServer, watchers: usize, events: usize) -> (f64, f64, f64) {
    let url = format!(
        "{}/api/v1/namespaces/{NAMESPACE}/configmaps?watch=true&labelSelector=fanout%3Dyes",
        server.base
    );
    let origin = Instant::now();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, f64)>();
    let connected = Arc::new(Semaphore::new(0));
    let mut tasks = Vec::new();
    for _ in 0..watchers {
        let client = server.client.clone();
        let url = url.clone();
        let tx = tx.clone();
        let connected = connected.clone();
        tasks.push(tokio::spawn(async move {
            let response = client.get(&url).send().await.unwrap();
            assert!(response.status().is_success());
            connected.add_permits(1);
            let mut stream = response.bytes_stream();
            let mut buf = Vec::new();
            while let Some(Ok(chunk)) = stream.next().await {
                let at = origin.elapsed().as_secs_f64() * 1000.0;
                buf.extend_from_slice(&chunk);
                while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=nl).collect();
                    if let Ok(event) = serde_json::from_slice::<Value>(&line) {
                        if event["type"] == "ADDED" {
                            let name = event["object"]["metadata"]["name"]
                                .as_str()
                                .unwrap_or("")
                                .to_owned();
                            let _ = tx.send((name, at));
                        }
                    }
                }
            }
        }));
    }
    drop(tx);
    let _ = connected.acquire_many(watchers as u32).await.unwrap();
    let mut sent = std::collections::HashMap::new();
    for i in 0..events {
        let name = format!("fan{i}");
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "labels": {"fanout": "yes"}}, "data": {"i": i.to_string()}});
        sent.insert(name, origin.elapsed().as_secs_f64() * 1000.0);
        let r = server
            .client
            .post(format!(
                "{}/api/v1/namespaces/{NAMESPACE}/configmaps",
                server.base
            ))
            .json(&cm)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let expected = watchers * events;
    let mut latencies = Vec::with_capacity(expected);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while latencies.len() < expected {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some((name, at))) => {
                if let Some(sent_at) = sent.get(&name) {
                    latencies.push(at - sent_at);
                }
            }
            _ => break,
        }
    }
    for t in tasks {
        t.abort();
    }
    let received = latencies.len() as f64 / expected as f64;
    (
        percentile(latencies.clone(), 0.5),
        percentile(latencies, 0.99),
        received,
    )
}

fn main() {
    let pods = env_usize("SKIFF_BENCH_PODS", 10_000);
    let watchers = env_usize("SKIFF_BENCH_WATCHERS", 1000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        // Cold start: first start on an empty root (creates the CA, certificates, store),
        // then restarts of the same root.
        let mut first = Vec::new();
        let mut again = Vec::new();
        for _ in 0..7 {
            let root = tempfile::tempdir().unwrap();
            let path = root.path().to_path_buf();
            let (mut server, ready) = ApiServer::start(root, None).await;
            first.push(ready.as_secs_f64() * 1000.0);
            let _ = server.child.kill();
            let _ = server.child.wait();
            let root = std::mem::replace(&mut server.root, tempfile::tempdir().unwrap());
            drop(server);
            let (server, ready) = ApiServer::start(root, None).await;
            again.push(ready.as_secs_f64() * 1000.0);
            drop(server);
            let _ = path;
        }
        println!("| benchmark | embedded | etcd backend | etcd raw puts |");
        println!("|---|---|---|---|");
        println!(
            "| `skiff server` spawn to /readyz, first start (median ms) | {:.1} | - | - |",
            median(first)
        );
        println!(
            "| `skiff server` spawn to /readyz, restart (median ms) | {:.1} | - | - |",
            median(again)
        );

        let (embedded_server, _) = ApiServer::start(tempfile::tempdir().unwrap(), None).await;
        let embedded = api_figures(&embedded_server, pods).await;
        let (p50, p99, received) = watch_fanout(&embedded_server, watchers, 50).await;
        drop(embedded_server);

        let etcd = Etcd::start();
        let etcd_backend = std::env::var("SKIFF_BENCH_ETCD_BACKEND").map_or(true, |v| v != "0");
        let (etcd_api, etcd_raw) = match &etcd {
            Some(etcd) => {
                let raw = etcd_puts(etcd, pods).await;
                let figures = if etcd_backend {
                    let (server, _) =
                        ApiServer::start(tempfile::tempdir().unwrap(), Some(&etcd.endpoint))
                            .await;
                    let figures = api_figures(&server, pods).await;
                    drop(server);
                    Some(figures)
                } else {
                    None
                };
                (figures, Some(raw))
            }
            None => (None, None),
        };
        let cell = |f: Option<f64>| f.map_or("-".to_owned(), |v| format!("{v:.0}"));
        println!(
            "| pod creates/s, 1 client | {:.0} | {} | {} |",
            embedded.create_1,
            cell(etcd_api.as_ref().map(|f| f.create_1)),
            cell(etcd_raw.map(|r| r.0))
        );
        println!(
            "| pod creates/s, 64 clients | {:.0} | {} | {} |",
            embedded.create_64,
            cell(etcd_api.as_ref().map(|f| f.create_64)),
            cell(etcd_raw.map(|r| r.1))
        );
        println!(
            "| server / bench CPU per create, 64 clients (us) | {:.0} / {:.0} | {} | - |",
            embedded.server_cpu_per_create,
            embedded.bench_cpu_per_create,
            etcd_api.as_ref().map_or("-".to_owned(), |f| format!(
                "{:.0} / {:.0}",
                f.server_cpu_per_create, f.bench_cpu_per_create
            ))
        );
        println!(
            "| pod gets/s, 1 client ({pods} stored) | {:.0} | {} | - |",
            embedded.get_1,
            cell(etcd_api.as_ref().map(|f| f.get_1))
        );
        println!(
            "| pod gets/s, 64 clients | {:.0} | {} | - |",
            embedded.get_64,
            cell(etcd_api.as_ref().map(|f| f.get_64))
        );
        println!(
            "| list of all {pods} pods (median ms) | {:.0} | {} | - |",
            embedded.list_ms,
            cell(etcd_api.as_ref().map(|f| f.list_ms))
        );
        println!(
            "| list, first page of 500 (median ms) | {:.1} | {} | - |",
            embedded.list_page_ms,
            etcd_api
                .as_ref()
                .map_or("-".to_owned(), |f| format!("{:.1}", f.list_page_ms))
        );
        println!(
            "| server RSS with {pods} pods (MiB) vs goal 3x JSON ({} MiB) + 30 MiB | {:.1} (goal {:.1}) | {} | - |",
            embedded.json_kib / 1024,
            embedded.rss_kib as f64 / 1024.0,
            3.0 * embedded.json_kib as f64 / 1024.0 + 30.0,
            etcd_api
                .as_ref()
                .map_or("-".to_owned(), |f| format!("{:.1}", f.rss_kib as f64 / 1024.0))
        );
        println!(
            "| watch fan-out, {watchers} watchers x 50 events: p50 / p99 delivery (ms), share delivered | {p50:.1} / {p99:.1}, {:.1}% | - | - |",
            received * 100.0
        );
    });
}
