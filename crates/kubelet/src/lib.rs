//! skiff's kubelet: registers its node, heartbeats through a Lease, watches the
//! pods bound to the node and runs them on a CRI-shaped runtime ([`cri`])
//! implemented by skiff's engine ([`engine_runtime`]).
//!
//! Layout follows the kubelet's managers: [`node`] (registration, lease),
//! [`pod_worker`] (level-triggered syncs), [`status`] (what is reported).

pub mod cri;
pub mod engine_runtime;
pub mod fake;
pub mod node;
pub mod pod_worker;
pub mod status;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::controller::Controller;
use kube::runtime::watcher;
use kube::{Api, Client};

pub use engine_runtime::EngineRuntime;

/// Both halves of the runtime interface.
pub trait Runtime: cri::RuntimeService + cri::ImageService {}
impl<T: cri::RuntimeService + cri::ImageService> Runtime for T {}

/// How often containers of pods gone from the API are looked for (the kubelet's
/// housekeeping period is 2s; orphans are rare here, so less often).
pub const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(10);

/// A kubelet failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Registering the node failed.
    #[error("registering node {node}: {source}")]
    Register {
        /// The node.
        node: String,
        /// The API error.
        source: kube::Error,
    },
    /// The pod watch ended.
    #[error("the kubelet's pod watch ended")]
    WatchEnded,
}

/// How the kubelet runs.
#[derive(Debug, Clone)]
pub struct KubeletConfig {
    /// The node's name (the host name by default).
    pub node_name: String,
    /// Where the node's state lives (its disk is the ephemeral-storage capacity).
    pub root: std::path::PathBuf,
    /// The subnet pod IPs come from (`spec.podCIDR`).
    pub pod_cidr: Option<String>,
}

/// The host's name, as the kubelet names its node by default.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_lowercase())
        .unwrap_or_else(|_| "localhost".into())
}

/// Registers the node, then heartbeats and runs its pods until the watch ends.
pub async fn run(
    client: Client,
    runtime: Arc<dyn Runtime>,
    config: KubeletConfig,
) -> Result<(), Error> {
    let name = config.node_name.clone();
    let ip = node::host_ip();
    let cap = node::Capacity::of_host(&config.root);
    // The server may still be starting: retry registration for a while.
    let mut attempt = 0;
    loop {
        match node::register(&client, &name, &ip, &cap, config.pod_cidr.as_deref()).await {
            Ok(()) => break,
            Err(e) if attempt < 30 => {
                tracing::debug!("registering node {name}: {e}");
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(source) => return Err(Error::Register { node: name, source }),
        }
    }
    tokio::spawn({
        let (client, name, ip, cap) = (client.clone(), name.clone(), ip.clone(), cap.clone());
        let pod_cidr = config.pod_cidr.clone();
        async move {
            let mut lease = tokio::time::interval(node::LEASE_RENEW_INTERVAL);
            let mut status = tokio::time::interval(node::STATUS_REPORT_INTERVAL);
            loop {
                tokio::select! {
                    _ = lease.tick() => {
                        if let Err(e) = node::renew_lease(&client, &name).await {
                            tracing::warn!("renewing the lease of node {name}: {e}");
                        }
                    }
                    _ = status.tick() => {
                        if let Err(e) = node::register(&client, &name, &ip, &cap, pod_cidr.as_deref()).await {
                            tracing::warn!("posting the status of node {name}: {e}");
                        }
                    }
                }
            }
        }
    });
    let ctx = Arc::new(pod_worker::Ctx {
        runtime,
        client: client.clone(),
        node: pod_worker::NodeRef {
            name: name.clone(),
            ip: Some(ip),
        },
    });
    tokio::spawn({
        let ctx = ctx.clone();
        async move {
            let mut tick = tokio::time::interval(HOUSEKEEPING_INTERVAL);
            loop {
                tick.tick().await;
                if let Err(e) = pod_worker::remove_orphans(&ctx).await {
                    tracing::warn!("removing containers of deleted pods: {e}");
                }
            }
        }
    });
    let pods: Api<Pod> = Api::all(client);
    Controller::new(
        pods,
        watcher::Config::default().fields(&format!("spec.nodeName={name}")),
    )
    .run(pod_worker::reconcile, pod_worker::error_policy, ctx)
    .for_each(|_| async {})
    .await;
    Err(Error::WatchEnded)
}
