//! A Deployment of many replicas on simulated nodes, from create to all available.
//!
//! In this process: an API server on a free port, the ReplicaSet and Deployment
//! controllers, the scheduler and `BENCH_NODES` simulated nodes (which report their pods
//! Running and Ready once bound). Each run creates a Deployment of `BENCH_REPLICAS`
//! replicas in a fresh namespace and times it until a watch sees
//! `status.availableReplicas == BENCH_REPLICAS`; the Deployment is then deleted and the
//! namespace's pods removed before the next run. Prints every run and the median of
//! `BENCH_RUNS`.
//!
//! `cargo bench -p skiff-controllers --bench deployment` (100 nodes, 1,000 replicas, 3 runs).

use std::time::{Duration, Instant};

use futures::StreamExt as _;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::runtime::watcher;
use kube::Api;
use skiff_apiserver::{Server, ServerConfig};
use skiff_controllers::simulated_agent::{self, SimulatedAgentConfig};
use skiff_controllers::ControllerManagerConfig;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let nodes = env("BENCH_NODES", 100);
    let replicas = env("BENCH_REPLICAS", 1000);
    let runs = env("BENCH_RUNS", 3).max(1);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(run(nodes, replicas, runs));
    // The server's tasks are still running; leaving now spares a noisy shutdown.
    std::process::exit(0);
}

/// The 1-minute load average, to print beside a figure on a shared machine.
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_default()
}

async fn run(nodes: usize, replicas: usize, runs: usize) {
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
    let connect = || skiff_controllers::connect::from_kubeconfig(server.kubeconfig_path());
    let client = connect().await.unwrap();

    tokio::spawn(simulated_agent::run(
        connect().await.unwrap(),
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
    tokio::spawn(skiff_scheduler::run(
        connect().await.unwrap(),
        skiff_scheduler::SchedulerConfig::default(),
    ));
    tokio::spawn(skiff_controllers::run(
        connect().await.unwrap(),
        ControllerManagerConfig {
            controllers: vec!["replicaset".into(), "deployment".into()],
            ..Default::default()
        },
    ));

    let mut times = Vec::with_capacity(runs);
    for run in 0..runs {
        let namespace = format!("bench-{run}");
        let ns: Namespace =
            serde_json::from_value(serde_json::json!({"metadata": {"name": namespace}})).unwrap();
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap();
        let api: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
        let deployment: Deployment = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "bench"},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "bench"}},
                "template": {
                    "metadata": {"labels": {"app": "bench"}},
                    "spec": {"containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.10",
                        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}
                }
            }
        }))
        .unwrap();

        // Watch first, so the moment of availability cannot be missed.
        let config = watcher::Config::default().fields("metadata.name=bench");
        let mut events = watcher(api.clone(), config).boxed();
        let load_before = load();
        let start = Instant::now();
        api.create(&PostParams::default(), &deployment)
            .await
            .unwrap();
        while let Some(event) = events.next().await {
            let deployment = match event {
                Ok(watcher::Event::Apply(d) | watcher::Event::InitApply(d)) => d,
                _ => continue,
            };
            let available = deployment
                .status
                .as_ref()
                .and_then(|s| s.available_replicas)
                .unwrap_or(0);
            if available as usize >= replicas {
                break;
            }
        }
        let elapsed = start.elapsed();
        println!(
            "deployment: {replicas} replicas available on {nodes} nodes in {:.2}s \
             (load average {load_before} before, {} after)",
            elapsed.as_secs_f64(),
            load()
        );
        times.push(elapsed);

        // Clean up before the next run (no garbage collector runs here, so the
        // ReplicaSets go explicitly); give up waiting after a minute.
        api.delete("bench", &DeleteParams::default()).await.unwrap();
        let everything = ListParams::default();
        let now = DeleteParams::default().grace_period(0);
        let _ = Api::<ReplicaSet>::namespaced(client.clone(), &namespace)
            .delete_collection(&now, &everything)
            .await;
        let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
        let _ = pods.delete_collection(&now, &everything).await;
        let cleaning = Instant::now();
        while cleaning.elapsed() < Duration::from_secs(60)
            && pods
                .list(&everything)
                .await
                .map(|l| l.items.len())
                .unwrap_or(0)
                > 0
        {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    times.sort();
    println!(
        "deployment: median of {runs} runs: {:.2}s",
        times[runs / 2].as_secs_f64()
    );
}
