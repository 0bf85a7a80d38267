//! Scheduler throughput end to end through the API, binding included, on simulated nodes,
//! in the shapes of kube-scheduler's `scheduler_perf` workloads (`BENCH_CASE`):
//!
//! - `basic` (default): `SchedulingBasic`, identical pods of 100m cpu and 500Mi;
//!   defaults 500 nodes, 1,000 pods.
//! - `daemonset`: `SchedulingDaemonset`, pods as the DaemonSet controller makes them (no
//!   requests, required node affinity `matchFields metadata.name In [node]`), all aimed at
//!   one named node among `BENCH_NODES` others the scheduler must filter out; defaults
//!   15,000 nodes (+1), 30,000 pods.
//! - `spread`: `TopologySpreading`, nodes labelled `topology.kubernetes.io/zone` in three
//!   zones, `BENCH_INIT_PODS` basic pods already on the nodes, then pods with a
//!   `DoNotSchedule` zone spread constraint (maxSkew 5, as upstream's template); defaults
//!   5,000 nodes, 5,000 initial pods, 2,000 measured pods.
//!
//! An API server runs in this process on a free port; the simulated nodes register; the
//! initial pods are created already bound (`spec.nodeName`, round robin), the measured pods
//! pending; then the scheduler starts and the clock runs until a separate watch has seen
//! every measured pod bound. Heartbeats are slowed to one per node per 5 minutes so they do
//! not compete with the measurement.
//!
//! `cargo bench -p skiff-scheduler --bench throughput`;
//! `BENCH_NODES=5000 BENCH_PODS=10000 cargo bench -p skiff-scheduler --bench throughput`;
//! `BENCH_CASE=daemonset cargo bench -p skiff-scheduler --bench throughput`;
//! `BENCH_CASE=spread cargo bench -p skiff-scheduler --bench throughput`.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::Api;
use skiff_apiserver::{Server, ServerConfig};
use skiff_controllers::simulated_agent::{self, SimulatedAgentConfig};

/// The label that marks measured pods (initial pods do not carry it).
const MEASURED: &str = "bench-phase";

/// Which `scheduler_perf` workload to imitate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    /// `SchedulingBasic`.
    Basic,
    /// `SchedulingDaemonset`.
    Daemonset,
    /// `TopologySpreading`.
    Spread,
}

/// The sizes of one run.
#[derive(Debug, Clone, Copy)]
struct Params {
    case: Case,
    /// Simulated nodes (for `daemonset`, besides the one target node).
    nodes: usize,
    /// Pods bound before the scheduler starts.
    init_pods: usize,
    /// Pods the scheduler binds while the clock runs.
    pods: usize,
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let case = match std::env::var("BENCH_CASE").as_deref() {
        Ok("daemonset") => Case::Daemonset,
        Ok("spread") => Case::Spread,
        Ok("basic") | Err(_) => Case::Basic,
        Ok(other) => panic!("unknown BENCH_CASE {other:?}: basic, daemonset or spread"),
    };
    let (nodes, init_pods, pods) = match case {
        Case::Basic => (500, 0, 1000),
        Case::Daemonset => (15_000, 0, 30_000),
        Case::Spread => (5000, 5000, 2000),
    };
    let params = Params {
        case,
        nodes: env("BENCH_NODES", nodes),
        init_pods: env("BENCH_INIT_PODS", init_pods),
        pods: env("BENCH_PODS", pods),
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(run(params));
    // The server's tasks are still running; leaving now spares a noisy shutdown.
    std::process::exit(0);
}

/// The measured pod of `case`; `target` is the daemonset case's node.
fn measured_pod(case: Case, target: &str) -> Pod {
    let resources = serde_json::json!({"requests": {"cpu": "100m", "memory": "500Mi"}});
    let pod = match case {
        Case::Basic => serde_json::json!({
            "metadata": {"generateName": "bench-", "labels": {MEASURED: "measure"}},
            "spec": {"containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.10",
                "resources": resources}]}
        }),
        Case::Daemonset => serde_json::json!({
            "metadata": {"generateName": "daemonset-", "labels": {MEASURED: "measure"}},
            "spec": {
                "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                    {"nodeSelectorTerms": [{"matchFields": [
                        {"key": "metadata.name", "operator": "In", "values": [target]}]}]}}},
                "containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.10"}]
            }
        }),
        Case::Spread => serde_json::json!({
            "metadata": {"generateName": "spreading-pod-",
                "labels": {MEASURED: "measure", "color": "blue"}},
            "spec": {
                "topologySpreadConstraints": [{"maxSkew": 5,
                    "topologyKey": "topology.kubernetes.io/zone",
                    "whenUnsatisfiable": "DoNotSchedule",
                    "labelSelector": {"matchLabels": {"color": "blue"}}}],
                "containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.10",
                    "ports": [{"containerPort": 80}], "resources": resources}]
            }
        }),
    };
    serde_json::from_value(pod).unwrap()
}

/// The 1-minute load average, to print beside a figure on a shared machine.
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_default()
}

async fn run(params: Params) {
    let Params {
        case,
        nodes,
        init_pods,
        pods,
    } = params;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(ServerConfig {
        data_dir: dir.path().join("server"),
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

    let started = Instant::now();
    let agent = SimulatedAgentConfig {
        nodes,
        heartbeat: Duration::from_secs(300),
        ..Default::default()
    };
    // The daemonset case's target node, after the others, with room for every pod.
    let target = format!("{}{nodes}", agent.name_prefix);
    let total_nodes = if case == Case::Daemonset {
        tokio::spawn(simulated_agent::run(
            client.clone(),
            SimulatedAgentConfig {
                nodes: 1,
                first_index: nodes,
                pods: (pods + 10).to_string(),
                heartbeat: Duration::from_secs(300),
                ..Default::default()
            },
        ));
        nodes + 1
    } else {
        nodes
    };
    let name_prefix = agent.name_prefix.clone();
    tokio::spawn(simulated_agent::run(client.clone(), agent));
    let node_api: Api<Node> = Api::all(client.clone());
    while node_api
        .list(&ListParams::default())
        .await
        .map(|l| l.items.len())
        .unwrap_or(0)
        < total_nodes
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "{total_nodes} nodes registered in {:.1?}",
        started.elapsed()
    );

    if case == Case::Spread {
        let labelled = Instant::now();
        futures::stream::iter(0..nodes)
            .for_each_concurrent(32, |i| {
                let api = node_api.clone();
                let name = format!("{name_prefix}{i}");
                let zone = format!("moon-{}", i % 3 + 1);
                async move {
                    let patch = serde_json::json!({"metadata": {"labels":
                        {"topology.kubernetes.io/zone": zone}}});
                    api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                        .unwrap();
                }
            })
            .await;
        eprintln!(
            "{nodes} nodes labelled with zones in {:.1?}",
            labelled.elapsed()
        );
    }

    let pod_api: Api<Pod> = Api::namespaced(client.clone(), "default");
    if init_pods > 0 {
        let created = Instant::now();
        futures::stream::iter(0..init_pods)
            .for_each_concurrent(32, |i| {
                let api = pod_api.clone();
                let pod: Pod = serde_json::from_value(serde_json::json!({
                    "metadata": {"generateName": "init-"},
                    "spec": {"nodeName": format!("{name_prefix}{}", i % nodes),
                        "containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.10",
                        "resources": {"requests": {"cpu": "100m", "memory": "500Mi"}}}]}
                }))
                .unwrap();
                async move {
                    api.create(&PostParams::default(), &pod).await.unwrap();
                }
            })
            .await;
        eprintln!(
            "{init_pods} initial pods created bound in {:.1?}",
            created.elapsed()
        );
    }

    let template = measured_pod(case, &target);
    let created = Instant::now();
    futures::stream::iter(0..pods)
        .for_each_concurrent(32, |_| {
            let api = pod_api.clone();
            let pod = template.clone();
            async move {
                api.create(&PostParams::default(), &pod).await.unwrap();
            }
        })
        .await;
    eprintln!("{pods} pods created in {:.1?}", created.elapsed());

    // Count bound measured pods on an independent watch.
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let (first_tx, first_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut bound: HashSet<String> = HashSet::new();
        let mut done = Some(done_tx);
        let mut first = Some(first_tx);
        let config = watcher::Config::default().labels(&format!("{MEASURED}=measure"));
        let mut events = watcher(Api::<Pod>::all(client.clone()), config).boxed();
        while let Some(Ok(event)) = events.next().await {
            if let watcher::Event::Apply(p) | watcher::Event::InitApply(p) = event {
                if p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some() {
                    bound.insert(p.metadata.name.clone().unwrap_or_default());
                    if let Some(tx) = first.take() {
                        let _ = tx.send(Instant::now());
                    }
                }
            }
            if bound.len() >= pods {
                if let Some(tx) = done.take() {
                    let _ = tx.send(Instant::now());
                }
            }
        }
    });
    let scheduler_client = skiff_controllers::connect::from_kubeconfig(server.kubeconfig_path())
        .await
        .unwrap();
    let load_before = load();
    let start = Instant::now();
    tokio::spawn(skiff_scheduler::run(
        scheduler_client,
        skiff_scheduler::SchedulerConfig::default(),
    ));
    let end = done_rx.await.unwrap();
    let elapsed = end - start;
    // How long the scheduler took to start (its first lists) before the first binding.
    let first = first_rx.await.map(|t| t - start).unwrap_or_default();
    println!(
        "scheduler throughput ({case:?}): {total_nodes} nodes, {init_pods} initial pods, \
         {pods} pods bound in {:.2}s = {:.0} pods/s (load average {load_before} before, {} after)",
        elapsed.as_secs_f64(),
        pods as f64 / elapsed.as_secs_f64(),
        load(),
    );
    println!(
        "first pod bound {:.2}s after the scheduler started; {:.0} pods/s from then on",
        first.as_secs_f64(),
        (pods - 1) as f64 / (elapsed - first).as_secs_f64().max(1e-3),
    );
    if case == Case::Spread {
        print_spread(&client_for(&server).await, &name_prefix).await;
    }
}

async fn client_for(server: &Server) -> kube::Client {
    skiff_controllers::connect::from_kubeconfig(server.kubeconfig_path())
        .await
        .unwrap()
}

/// Prints how many measured pods each zone got, so a run that ignored the constraint shows.
async fn print_spread(client: &kube::Client, name_prefix: &str) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let list = pods
        .list(&ListParams::default().labels(&format!("{MEASURED}=measure")))
        .await
        .unwrap();
    let mut zones = [0usize; 3];
    for pod in list.items {
        let node = pod.spec.and_then(|s| s.node_name).unwrap_or_default();
        if let Some(i) = node
            .strip_prefix(name_prefix)
            .and_then(|i| i.parse::<usize>().ok())
        {
            zones[i % 3] += 1;
        }
    }
    println!(
        "measured pods per zone: moon-1 {}, moon-2 {}, moon-3 {}",
        zones[0], zones[1], zones[2]
    );
}
