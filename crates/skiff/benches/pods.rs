//! Kubelet benchmarks (issue 7): pod startup latency as the Kubernetes SLO measures it,
//! and the node's memory with 100 running pods.
//!
//! `cargo bench -p skiff --bench pods` (as root). Starts `skiff server` (API server,
//! scheduler, controllers and this host's kubelet) on a fresh root with the locally built
//! busybox image loaded, creates `SKIFF_BENCH_PODS` (default 100) pods at once through
//! the API (`busybox sleep 3600`, `imagePullPolicy: Never`), and takes for each pod the
//! time from the client sending its create to the watch showing all its containers
//! `running`. Then, with the pods running, sums the RSS and PSS of the processes skiff
//! itself runs on the node (the server with its kubelet, every `skiff shim`, every
//! sandbox's pause process), and reports the workloads apart. Prints Markdown;
//! docs/benchmarks.md records the figures.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use common::cluster::{free_port, kubectl_133, Cluster, ServerProcess};
use common::{unique_service_cidr, Skiff};
use futures::StreamExt;
use serde_json::{json, Value};

const NAMESPACE: &str = "default";
const LABEL: &str = "bench-pods";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(v: &[f64], p: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    // Nearest rank, as Kubernetes' density test reports its percentiles.
    let rank = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

/// The server (killed first on drop) and its root (`system reset -f` on drop, which removes
/// the containers, mounts, cgroups, bridges and nftables tables left).
struct Bench {
    server: Option<ServerProcess>,
    cluster: Cluster,
}

impl Drop for Bench {
    fn drop(&mut self) {
        // Keep the server's log for profiling before the root goes.
        let log = self.cluster.skiff.root.path().join("server.log");
        let _ = std::fs::copy(
            log,
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("pods-server.log"),
        );
        self.server.take();
    }
}

impl Bench {
    fn start() -> Bench {
        let skiff = Skiff::with_busybox();
        let name = skiff
            .root
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .to_string();
        let port = free_port().to_string();
        let kubelet_port = free_port().to_string();
        let service_cidr = unique_service_cidr();
        let log = std::fs::File::create(skiff.root.path().join("server.log")).unwrap();
        let mut cmd = skiff.cmd(&[
            "server",
            "--port",
            &port,
            "--node-name",
            "node-a",
            "--kubelet-port",
            &kubelet_port,
            "--service-cidr",
            &service_cidr,
        ]);
        cmd.env("SKIFF_KUBELET_CGROUP_ROOT", format!("/skiff-bench-{name}"));
        cmd.env("SKIFF_INGRESS_BIND_ADDRESS", "127.0.0.1");
        let child = cmd.stdout(Stdio::null()).stderr(log).spawn().unwrap();
        let kubeconfig = skiff.root.path().join("server/admin.kubeconfig");
        let bench = Bench {
            server: Some(ServerProcess(child)),
            cluster: Cluster {
                skiff,
                kubectl: kubectl_133(),
                kubeconfig,
                service_cidr,
            },
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if bench.cluster.kubeconfig.exists()
                && bench.cluster.jsonpath(
                    "node/node-a",
                    "{.status.conditions[?(@.type==\"Ready\")].status}",
                ) == "True"
                && bench
                    .cluster
                    .kubectl(&["get", "serviceaccount", "default", "-n", NAMESPACE])
                    .status
                    .success()
            {
                break;
            }
            assert!(Instant::now() < deadline, "node-a never became Ready");
            std::thread::sleep(Duration::from_millis(100));
        }
        bench
    }

    fn root(&self) -> &Path {
        self.cluster.skiff.root.path()
    }

    fn server_pid(&self) -> u32 {
        self.server.as_ref().unwrap().0.id()
    }

    fn cgroup_root(&self) -> String {
        let name = self.root().file_name().unwrap().to_string_lossy();
        format!("/skiff-bench-{name}")
    }
}

/// The CPU time (user + system) process `pid` has used so far, in seconds, from
/// `/proc/PID/stat` (all its threads; not its children, the shims are not reaped by it).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of stat(5), 12 and 13 after the name.
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz
}

/// The API server's address and a client with the admin certificate of the kubeconfig.
fn admin_client(kubeconfig: &Path) -> (String, reqwest::Client) {
    let text = std::fs::read_to_string(kubeconfig).unwrap();
    let field = |name: &str| -> String {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("{name} in kubeconfig"))
            .trim()
            .to_string()
    };
    let decode = |name: &str| BASE64.decode(field(name)).unwrap();
    let ca = reqwest::Certificate::from_pem(&decode("certificate-authority-data")).unwrap();
    let mut identity = decode("client-certificate-data");
    identity.extend_from_slice(b"\n");
    identity.extend_from_slice(&decode("client-key-data"));
    let client = reqwest::Client::builder()
        .add_root_certificate(ca)
        .identity(reqwest::Identity::from_pem(&identity).unwrap())
        .pool_max_idle_per_host(256)
        .build()
        .unwrap();
    (field("server"), client)
}

fn pod(name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": LABEL}},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "containers": [{
                "name": "sleep",
                "image": "busybox",
                "imagePullPolicy": "Never",
                "command": ["sleep", "3600"]
            }]
        }
    })
}

/// When the watch first saw each step of a pod's startup.
#[derive(Default, Clone, Copy)]
struct Timeline {
    sent: Option<Instant>,
    acked: Option<Instant>,
    scheduled: Option<Instant>,
    /// The kubelet's first status (containers waiting in ContainerCreating).
    kubelet: Option<Instant>,
    running: Option<Instant>,
}

type Timelines = Arc<Mutex<HashMap<String, Timeline>>>;

fn all_running(pod: &Value) -> bool {
    let want = pod["spec"]["containers"].as_array().map_or(0, |c| c.len());
    let statuses = pod["status"]["containerStatuses"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    want > 0 && statuses.len() == want && statuses.iter().all(|s| s["state"]["running"].is_object())
}

/// Watches the bench's pods from `rv`, recording each pod's steps until `n` run.
async fn watch(
    base: String,
    client: reqwest::Client,
    rv: String,
    n: usize,
    timelines: Timelines,
) -> usize {
    let url = format!(
        "{base}/api/v1/namespaces/{NAMESPACE}/pods?watch=true&labelSelector=app%3D{LABEL}\
         &resourceVersion={rv}&allowWatchBookmarks=false"
    );
    let resp = client.get(url).send().await.unwrap();
    assert!(resp.status().is_success(), "watch: {}", resp.status());
    let mut stream = resp.bytes_stream();
    let mut buf = Vec::new();
    let mut running = HashSet::new();
    while running.len() < n {
        let Some(chunk) = stream.next().await else {
            panic!("watch ended with {} of {n} pods running", running.len());
        };
        let now = Instant::now();
        buf.extend_from_slice(&chunk.unwrap());
        while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            let Ok(event) = serde_json::from_slice::<Value>(&line) else {
                continue;
            };
            let pod = &event["object"];
            let Some(name) = pod["metadata"]["name"].as_str() else {
                continue;
            };
            let mut t = timelines.lock().unwrap();
            let t = t.entry(name.to_string()).or_default();
            if t.scheduled.is_none() && pod["spec"]["nodeName"].is_string() {
                t.scheduled = Some(now);
            }
            if t.kubelet.is_none() && pod["status"]["containerStatuses"].is_array() {
                t.kubelet = Some(now);
            }
            if t.running.is_none() && all_running(pod) {
                t.running = Some(now);
                running.insert(name.to_string());
            }
        }
    }
    running.len()
}

struct Usage {
    rss_kib: u64,
    pss_kib: u64,
    count: usize,
}

impl Usage {
    fn add(&mut self, pid: u32) {
        self.rss_kib += status_kib(pid, "VmRSS:");
        self.pss_kib += rollup_kib(pid, "Pss:");
        self.count += 1;
    }
}

fn status_kib(pid: u32, key: &str) -> u64 {
    kib_field(&format!("/proc/{pid}/status"), key)
}

fn rollup_kib(pid: u32, key: &str) -> u64 {
    kib_field(&format!("/proc/{pid}/smaps_rollup"), key)
}

fn kib_field(path: &str, key: &str) -> u64 {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn ppid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: split after the last ')'.
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// The node's memory split by who runs it: (server, shims, pause processes, other
/// processes below the shims (the workloads)).
fn node_memory(server: u32, root: &Path) -> [Usage; 4] {
    let root = root.to_string_lossy().to_string();
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort();
    let shims: HashSet<u32> = pids
        .iter()
        .copied()
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).to_string())
                .collect();
            args.iter().any(|a| a == "shim") && args.iter().any(|a| a.starts_with(&root))
        })
        .collect();
    let mut usage = [0, 1, 2, 3].map(|_| Usage {
        rss_kib: 0,
        pss_kib: 0,
        count: 0,
    });
    usage[0].add(server);
    for &pid in &pids {
        // A sandbox's pause process is its shim's clone (same command line): by name.
        if shims.contains(&pid) && comm(pid) != "pause" {
            usage[1].add(pid);
            continue;
        }
        // Walk up to a shim: the container's first process and its children.
        let mut up = ppid(pid);
        let mut depth = 0;
        while let Some(p) = up {
            if shims.contains(&p) {
                let class = if comm(pid) == "pause" { 2 } else { 3 };
                usage[class].add(pid);
                break;
            }
            if p <= 1 || depth > 16 {
                break;
            }
            up = ppid(p);
            depth += 1;
        }
    }
    usage
}

/// The memory charged to the kubelet's cgroup root (all pod cgroups), in KiB.
fn cgroup_kib(cgroup_root: &str) -> Option<u64> {
    for file in [
        format!("/sys/fs/cgroup{cgroup_root}/memory.current"),
        format!("/sys/fs/cgroup/memory{cgroup_root}/memory.usage_in_bytes"),
    ] {
        if let Ok(v) = std::fs::read_to_string(file) {
            return v.trim().parse::<u64>().ok().map(|b| b / 1024);
        }
    }
    None
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n = env_usize("SKIFF_BENCH_PODS", 100);
    let bench = Bench::start();
    let (base, client) = admin_client(&bench.cluster.kubeconfig);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let pods_url = format!("{base}/api/v1/namespaces/{NAMESPACE}/pods");

    // The image is present (loaded, pull policy Never): check it, and warm the node with
    // one pod (network, cgroup parents) that is deleted before the measured run.
    let images = bench.cluster.skiff.ok(&["images"]);
    assert!(
        images.contains("busybox"),
        "busybox image missing: {images}"
    );
    rt.block_on(async {
        let r = client
            .post(&pods_url)
            .json(&pod("warm-up"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
    });
    bench
        .cluster
        .wait_until("pod/warm-up", "{.status.phase}", 60, |p| p == "Running");
    bench.cluster.kubectl_ok(&[
        "delete",
        "pod",
        "warm-up",
        "--grace-period=0",
        "--force",
        "--wait=true",
    ]);

    let timelines: Timelines = Arc::default();
    let cpu_before = cpu_seconds(bench.server_pid());
    let wall = Instant::now();
    let running = rt.block_on(async {
        let list: Value = client
            .get(format!("{pods_url}?labelSelector=app%3D{LABEL}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let rv = list["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .to_string();
        let watcher = tokio::spawn(watch(
            base.clone(),
            client.clone(),
            rv,
            n,
            timelines.clone(),
        ));
        // The watch is established before the creates (its response headers came back).
        tokio::time::sleep(Duration::from_millis(200)).await;
        let creates: Vec<_> = (0..n)
            .map(|i| {
                let client = client.clone();
                let url = pods_url.clone();
                let timelines = timelines.clone();
                tokio::spawn(async move {
                    let name = format!("pod-{i:03}");
                    let body = pod(&name);
                    let sent = Instant::now();
                    timelines
                        .lock()
                        .unwrap()
                        .entry(name.clone())
                        .or_default()
                        .sent = Some(sent);
                    let r = client.post(&url).json(&body).send().await.unwrap();
                    let acked = Instant::now();
                    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
                    timelines.lock().unwrap().get_mut(&name).unwrap().acked = Some(acked);
                })
            })
            .collect();
        for c in creates {
            c.await.unwrap();
        }
        tokio::time::timeout(Duration::from_secs(300), watcher)
            .await
            .expect("pods not all running after 300 s")
            .unwrap()
    });
    let all_running_s = wall.elapsed().as_secs_f64();
    let server_cpu_s = cpu_seconds(bench.server_pid()) - cpu_before;
    assert_eq!(running, n);

    let timelines = timelines.lock().unwrap().clone();
    let step = |from: fn(&Timeline) -> Option<Instant>, to: fn(&Timeline) -> Option<Instant>| {
        timelines
            .values()
            .filter_map(|t| Some(to(t)?.saturating_duration_since(from(t)?).as_secs_f64()))
            .collect::<Vec<f64>>()
    };
    let startup = step(|t| t.sent, |t| t.running);
    assert_eq!(startup.len(), n);
    let rows = [
        ("create sent -> all containers running (SLO)", startup),
        (
            "create sent -> create acknowledged",
            step(|t| t.sent, |t| t.acked),
        ),
        (
            "create sent -> scheduled (nodeName)",
            step(|t| t.sent, |t| t.scheduled),
        ),
        (
            "scheduled -> kubelet's first status",
            step(|t| t.scheduled, |t| t.kubelet),
        ),
        (
            "kubelet's first status -> running",
            step(|t| t.kubelet, |t| t.running),
        ),
    ];
    println!("\n### Pod startup, {n} pods created at once on one node\n");
    println!("| step | p50 | p90 | p99 | max |");
    println!("|---|---|---|---|---|");
    for (label, v) in &rows {
        let ms = |p: f64| format!("{:.0} ms", percentile(v, p) * 1000.0);
        println!(
            "| {label} | {} | {} | {} | {} |",
            ms(0.5),
            ms(0.9),
            ms(0.99),
            ms(1.0)
        );
    }
    println!("\nall {n} pods running {all_running_s:.2} s after the first create");
    println!("server CPU from the first create to all running: {server_cpu_s:.1} s");

    // Memory with the pods running, once the node has settled.
    let settle_cpu = cpu_seconds(bench.server_pid());
    std::thread::sleep(Duration::from_secs(10));
    println!(
        "server CPU while the {n} pods run (10 s, nothing changing): {:.2} s",
        cpu_seconds(bench.server_pid()) - settle_cpu
    );
    let [server, shims, pause, workloads] = node_memory(bench.server_pid(), bench.root());
    let skiff_rss = server.rss_kib + shims.rss_kib + pause.rss_kib;
    let skiff_pss = server.pss_kib + shims.pss_kib + pause.pss_kib;
    println!("\n### Node memory with {n} running pods\n");
    println!("| processes | count | RSS | PSS |");
    println!("|---|---|---|---|");
    for (label, u) in [
        (
            "skiff server (API server, scheduler, controllers, kubelet, proxy)",
            &server,
        ),
        ("skiff shim (one per container and sandbox)", &shims),
        ("pause (one per pod sandbox)", &pause),
    ] {
        println!(
            "| {label} | {} | {:.1} MiB | {:.1} MiB |",
            u.count,
            mib(u.rss_kib),
            mib(u.pss_kib)
        );
    }
    println!(
        "| **skiff total** | {} | **{:.1} MiB** | **{:.1} MiB** |",
        server.count + shims.count + pause.count,
        mib(skiff_rss),
        mib(skiff_pss)
    );
    println!(
        "| workloads (busybox sleep, not counted above) | {} | {:.1} MiB | {:.1} MiB |",
        workloads.count,
        mib(workloads.rss_kib),
        mib(workloads.pss_kib)
    );
    if let Some(kib) = cgroup_kib(&bench.cgroup_root()) {
        println!(
            "\nmemory charged to the kubelet's cgroup root {} (pods, page cache included): {:.1} MiB",
            bench.cgroup_root(),
            mib(kib)
        );
    }
    assert_eq!(pause.count, n, "one pause process per pod");

    // Teardown through the API: delete all the pods and wait until they are gone.
    let deleted = Instant::now();
    bench.cluster.kubectl_ok(&[
        "delete",
        "pods",
        "-l",
        &format!("app={LABEL}"),
        "--grace-period=0",
        "--force",
        "--wait=false",
    ]);
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let left =
            bench
                .cluster
                .kubectl_ok(&["get", "pods", "-l", &format!("app={LABEL}"), "-o", "name"]);
        if left.trim().is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "pods left after 300 s: {left}");
        std::thread::sleep(Duration::from_millis(250));
    }
    println!(
        "\nall {n} pods deleted from the API {:.2} s after the delete",
        deleted.elapsed().as_secs_f64()
    );
    drop(bench);
}
