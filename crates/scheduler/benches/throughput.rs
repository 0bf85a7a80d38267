//! Scheduler throughput end to end through the API, binding included, on simulated nodes:
//! kube-scheduler's `SchedulingBasic` shape (identical pods, 100m cpu and 500Mi each).
//!
//! An API server runs in this process on a free port; `BENCH_NODES` simulated nodes
//! register; `BENCH_PODS` pending pods are created; then the scheduler starts and the clock
//! runs until a separate watch has seen every pod bound. Heartbeats are slowed to one per
//! node per 5 minutes so they do not compete with the measurement.
//!
//! `cargo bench -p skiff-scheduler --bench throughput` (default 500 nodes, 1,000 pods);
//! `BENCH_NODES=5000 BENCH_PODS=10000 cargo bench -p skiff-scheduler --bench throughput`.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{ListParams, PostParams};
use kube::runtime::watcher;
use kube::Api;
use skiff_apiserver::{Server, ServerConfig};
use skiff_controllers::simulated_agent::{self, SimulatedAgentConfig};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let nodes = env("BENCH_NODES", 500);
    let pods = env("BENCH_PODS", 1000);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(run(nodes, pods));
}

async fn run(nodes: usize, pods: usize) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(ServerConfig {
        data_dir: dir.path().join("server"),
        bind_address: "127.0.0.1".parse().unwrap(),
        port: 0,
        datastore_endpoints: Vec::new(),
        service_cidr: skiff_apiserver::DEFAULT_SERVICE_CIDR.parse().unwrap(),
    })
    .await
    .unwrap();
    let client = skiff_controllers::connect::from_kubeconfig(server.kubeconfig_path())
        .await
        .unwrap();

    let started = Instant::now();
    tokio::spawn(simulated_agent::run(
        client.clone(),
        SimulatedAgentConfig {
            nodes,
            heartbeat: Duration::from_secs(300),
            ..Default::default()
        },
    ));
    let node_api: Api<Node> = Api::all(client.clone());
    while node_api
        .list(&ListParams::default())
        .await
        .map(|l| l.items.len())
        .unwrap_or(0)
        < nodes
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("{nodes} nodes registered in {:.1?}", started.elapsed());

    let pod_api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let template: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"generateName": "bench-", "labels": {"app": "bench"}},
        "spec": {"containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.10",
            "resources": {"requests": {"cpu": "100m", "memory": "500Mi"}}}]}
    }))
    .unwrap();
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

    // Count bound pods on an independent watch.
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut bound: HashSet<String> = HashSet::new();
        let mut done = Some(done_tx);
        let mut events =
            watcher(Api::<Pod>::all(client.clone()), watcher::Config::default()).boxed();
        while let Some(Ok(event)) = events.next().await {
            if let watcher::Event::Apply(p) | watcher::Event::InitApply(p) = event {
                if p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some() {
                    bound.insert(p.metadata.name.clone().unwrap_or_default());
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
    let start = Instant::now();
    tokio::spawn(skiff_scheduler::run(
        scheduler_client,
        skiff_scheduler::SchedulerConfig::default(),
    ));
    let end = done_rx.await.unwrap();
    let elapsed = end - start;
    println!(
        "scheduler throughput: {nodes} nodes, {pods} pods bound in {:.2}s = {:.0} pods/s",
        elapsed.as_secs_f64(),
        pods as f64 / elapsed.as_secs_f64()
    );
    server.stop().await;
}
