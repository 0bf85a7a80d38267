//! Simulated nodes, as kwok makes them: Node objects with capacity and a Ready condition,
//! heartbeats (a Lease in `kube-node-lease` when the server serves coordination.k8s.io,
//! else the Ready condition's `lastHeartbeatTime`), and pods bound to them reported
//! Running and Ready with an IP from the node's fake pod CIDR, without running anything.
//! Pods being deleted on a simulated node are removed at once, as a kubelet would after
//! stopping their containers. Containers can say how they would exit ([`exit`]), so Jobs
//! run to completion or failure on simulated nodes.

pub mod exit;
mod pods;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::controller::Controller;
use kube::runtime::watcher;
use kube::{Api, Client};
use serde_json::json;

/// A failure of the simulated agent.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Registering a node failed.
    #[error("registering simulated node {node}: {source}")]
    Register {
        /// The node.
        node: String,
        /// The API error.
        source: kube::Error,
    },
    /// The pod watch ended.
    #[error("the simulated agent's pod watch ended")]
    WatchEnded,
}

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimulatedAgentConfig {
    /// How many nodes.
    pub nodes: usize,
    /// Node names are this prefix and an index.
    pub name_prefix: String,
    /// Index of the first node (several agents can share a cluster).
    pub first_index: usize,
    /// CPU capacity of each node.
    pub cpu: String,
    /// Memory capacity of each node.
    pub memory: String,
    /// Pod capacity of each node.
    pub pods: String,
    /// How often each node heartbeats (the kubelet renews its Lease every 10s).
    pub heartbeat: Duration,
    /// How many pod status updates run at once.
    pub concurrency: u16,
}

impl Default for SimulatedAgentConfig {
    fn default() -> Self {
        SimulatedAgentConfig {
            nodes: 1,
            name_prefix: "sim-".into(),
            first_index: 0,
            cpu: "32".into(),
            memory: "256Gi".into(),
            pods: "110".into(),
            heartbeat: Duration::from_secs(10),
            concurrency: 64,
        }
    }
}

/// The fake per-node pod CIDR of node `index`: `10.<hi>.<lo>.0/24` above 10.64.0.0.
pub fn pod_cidr(index: usize) -> (u8, u8) {
    let n = index + 64 * 256;
    (((n >> 8) & 0xff) as u8, (n & 0xff) as u8)
}

fn node_object(config: &SimulatedAgentConfig, index: usize) -> Node {
    let name = format!("{}{index}", config.name_prefix);
    let (hi, lo) = pod_cidr(index);
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "simulated",
            },
            "annotations": {"node.alpha.kubernetes.io/ttl": "0", "skiff.dev/simulated": "true"},
        },
        "spec": {"podCIDR": format!("10.{hi}.{lo}.0/24"), "podCIDRs": [format!("10.{hi}.{lo}.0/24")]},
    }))
    .expect("a valid node")
}

fn node_status(config: &SimulatedAgentConfig, index: usize) -> serde_json::Value {
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let resources = json!({"cpu": config.cpu, "memory": config.memory, "pods": config.pods,
        "ephemeral-storage": "100Gi"});
    let condition = |type_: &str, status: &str, reason: &str, message: &str| {
        json!({"type": type_, "status": status, "reason": reason, "message": message,
            "lastHeartbeatTime": now, "lastTransitionTime": now})
    };
    let (hi, lo) = pod_cidr(index);
    json!({"status": {
        "capacity": resources,
        "allocatable": resources,
        "phase": "Running",
        "conditions": [
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            condition("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
        ],
        "addresses": [
            {"type": "InternalIP", "address": format!("10.{hi}.{lo}.1")},
            {"type": "Hostname", "address": format!("{}{index}", config.name_prefix)},
        ],
        "nodeInfo": {
            "machineID": "", "systemUUID": "", "bootID": "",
            "kernelVersion": "simulated", "osImage": "skiff simulated node",
            "containerRuntimeVersion": "skiff://simulated",
            "kubeletVersion": "v1.33.0-skiff", "kubeProxyVersion": "",
            "operatingSystem": "linux", "architecture": "amd64",
        },
    }})
}

/// Creates (or takes over) one node and reports its status.
async fn register(
    client: &Client,
    config: &SimulatedAgentConfig,
    index: usize,
) -> Result<(), Error> {
    let node = node_object(config, index);
    let name = node.metadata.name.clone().unwrap_or_default();
    let api: Api<Node> = Api::all(client.clone());
    let err = |source| Error::Register {
        node: name.clone(),
        source,
    };
    match api.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => return Err(err(e)),
    }
    api.patch_status(
        &name,
        &PatchParams::default(),
        &Patch::Merge(node_status(config, index)),
    )
    .await
    .map_err(err)?;
    Ok(())
}

/// Whether the server serves Leases (coordination.k8s.io/v1).
async fn serves_leases(client: &Client) -> bool {
    let api: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    api.list(&kube::api::ListParams::default().limit(1))
        .await
        .is_ok()
}

/// One heartbeat of one node.
async fn heartbeat(client: &Client, config: &SimulatedAgentConfig, index: usize, leases: bool) {
    let name = format!("{}{index}", config.name_prefix);
    let result = if leases {
        let api: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some("kube-node-lease".into()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(name.clone()),
                lease_duration_seconds: Some(40),
                renew_time: Some(MicroTime(jiff::Timestamp::now())),
                ..Default::default()
            }),
        };
        let renew = json!({"spec": {"holderIdentity": name, "leaseDurationSeconds": 40,
            "renewTime": lease.spec.as_ref().and_then(|s| s.renew_time.clone())}});
        match api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&renew))
            .await
        {
            Err(kube::Error::Api(s)) if s.code == 404 => {
                api.create(&PostParams::default(), &lease).await.map(drop)
            }
            other => other.map(drop),
        }
    } else {
        let api: Api<Node> = Api::all(client.clone());
        api.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(node_status(config, index)),
        )
        .await
        .map(drop)
    };
    if let Err(e) = result {
        tracing::debug!("heartbeat of {name}: {e}");
    }
}

/// Registers the nodes, then heartbeats and reports their pods until the watch ends.
pub async fn run(client: Client, config: SimulatedAgentConfig) -> Result<(), Error> {
    let config = Arc::new(config);
    let indexes: Vec<usize> = (config.first_index..config.first_index + config.nodes).collect();
    let results: Vec<Result<(), Error>> = futures::stream::iter(indexes.clone())
        .map(|i| {
            let client = client.clone();
            let config = config.clone();
            async move { register(&client, &config, i).await }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    results.into_iter().collect::<Result<Vec<()>, Error>>()?;
    let leases = serves_leases(&client).await;
    if !leases {
        tracing::info!(
            "the server has no Lease API; simulated nodes heartbeat through their status"
        );
    }
    tokio::spawn({
        let client = client.clone();
        let config = config.clone();
        async move {
            let mut tick = tokio::time::interval(config.heartbeat);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                futures::stream::iter(indexes.clone())
                    .for_each_concurrent(16, |i| {
                        let client = client.clone();
                        let config = config.clone();
                        async move { heartbeat(&client, &config, i, leases).await }
                    })
                    .await;
            }
        }
    });
    let names: HashSet<String> = (config.first_index..config.first_index + config.nodes)
        .map(|i| format!("{}{i}", config.name_prefix))
        .collect();
    let ctx = Arc::new(pods::Ctx {
        client: client.clone(),
        nodes: names,
        cidrs: (config.first_index..config.first_index + config.nodes)
            .map(|i| (format!("{}{i}", config.name_prefix), pod_cidr(i)))
            .collect::<BTreeMap<_, _>>(),
        next_ip: Default::default(),
    });
    Controller::new(
        Api::<Pod>::all(client),
        watcher::Config::default().any_semantic(),
    )
    .with_config(kube::runtime::controller::Config::default().concurrency(config.concurrency))
    .run(pods::reconcile, pods::error_policy, ctx)
    .for_each(|_| async {})
    .await;
    Err(Error::WatchEnded)
}
