//! The node lifecycle controller (`pkg/controller/nodelifecycle`) with its NoExecute taint
//! manager (`pkg/controller/tainteviction`).
//!
//! A node whose kubelet stops heartbeating (its Lease in `kube-node-lease` and its status)
//! for longer than the grace period gets its kubelet-owned conditions set Unknown, the
//! `node.kubernetes.io/unreachable` taints (NoSchedule and NoExecute), and its pods marked
//! not Ready; a node reporting Ready=False gets the `node.kubernetes.io/not-ready` taints;
//! both go once it is Ready again. Pods on a node with a NoExecute taint they do not
//! tolerate are deleted, at once or when their `tolerationSeconds` run out, after a
//! `DisruptionTarget` condition says why.
//!
//! Like the pod garbage collector it sweeps its caches: every monitor period, on any
//! change (debounced), and when the next scheduled eviction is due. Each sweep compares
//! what should be with what is, so repeating one changes nothing.

mod plan;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt as _};
use kube::{Api, Client, ResourceExt as _};
use serde_json::json;
use tokio::time::Instant;

pub use plan::{NOT_READY_TAINT, UNREACHABLE_TAINT};

/// Settings of the node lifecycle controller.
#[derive(Debug, Clone)]
pub struct NodeLifecycleConfig {
    /// How long a node may go without a heartbeat before it counts as unreachable
    /// (`--node-monitor-grace-period`).
    pub grace_period: Duration,
    /// How often nodes are checked when nothing changes (`--node-monitor-period`).
    pub monitor_period: Duration,
}

impl Default for NodeLifecycleConfig {
    /// kube-controller-manager's defaults: 40 s of grace, a check every 5 s.
    fn default() -> Self {
        NodeLifecycleConfig {
            grace_period: Duration::from_secs(40),
            monitor_period: Duration::from_secs(5),
        }
    }
}

/// The namespace of the nodes' Leases.
const LEASE_NAMESPACE: &str = "kube-node-lease";

/// How long after a cache change the next sweep runs.
const DEBOUNCE: Duration = Duration::from_millis(300);

/// The field manager of this controller's changes.
const FIELD_MANAGER: &str = "node-controller";

/// How many pods are changed at once.
const CONCURRENCY: usize = 16;

fn now_string() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn ignore_gone<T>(r: Result<T, kube::Error>) -> Result<(), kube::Error> {
    match r {
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        other => other.map(drop),
    }
}

/// Runs the node lifecycle controller until its watches end.
pub async fn run(client: Client, config: NodeLifecycleConfig) {
    let (pods, pod_writer) = reflector::store::<Pod>();
    let (nodes, node_writer) = reflector::store::<Node>();
    let (leases, lease_writer) = reflector::store::<Lease>();
    let pod_events = watcher(Api::<Pod>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .reflect(pod_writer)
        .map(drop);
    let node_events = watcher(Api::<Node>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .reflect(node_writer)
        .map(drop);
    let lease_events = watcher(
        Api::<Lease>::namespaced(client.clone(), LEASE_NAMESPACE),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(lease_writer)
    .map(drop);
    let mut changes = futures::stream::select(
        futures::stream::select(pod_events, node_events),
        lease_events,
    )
    .boxed();
    let ready = async {
        let _ = pods.wait_until_ready().await;
        let _ = nodes.wait_until_ready().await;
        let _ = leases.wait_until_ready().await;
    };
    if !crate::sweep::until_ready(ready, &mut changes).await {
        return;
    }
    let mut controller = NodeLifecycle {
        client,
        heartbeats: plan::Heartbeats::new(config.grace_period),
        taint_clock: plan::TaintClock::default(),
    };
    loop {
        let next = controller
            .sweep(&pods, &nodes, &leases)
            .await
            .min(config.monitor_period);
        if !crate::sweep::wait_for_next(next, DEBOUNCE, &mut changes).await {
            return;
        }
    }
}

struct NodeLifecycle {
    client: Client,
    heartbeats: plan::Heartbeats,
    /// When undated NoExecute taints were first seen.
    taint_clock: plan::TaintClock,
}

impl NodeLifecycle {
    /// One pass over the caches; returns how soon something is due.
    async fn sweep(
        &mut self,
        pods: &Store<Pod>,
        nodes: &Store<Node>,
        leases: &Store<Lease>,
    ) -> Duration {
        let (pods, nodes, leases) = (pods.state(), nodes.state(), leases.state());
        let leases: HashMap<String, Arc<Lease>> =
            leases.into_iter().map(|l| (l.name_any(), l)).collect();
        let now = Instant::now().into_std();
        let names: HashSet<String> = nodes.iter().map(|n| n.name_any()).collect();
        self.heartbeats.retain(&names);
        for node in &nodes {
            let name = node.name_any();
            let signature = plan::heartbeat_signature(node, leases.get(&name).map(|l| &**l));
            self.heartbeats.observe(&name, signature, now);
        }
        for node in &nodes {
            match self.monitor(node, &pods, now).await {
                Ok(()) => {}
                // Changed meanwhile: the watch brings the new version and another sweep.
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    tracing::debug!("node lifecycle: node {} changed meanwhile", node.name_any());
                }
                Err(e) => tracing::warn!("node lifecycle: node {}: {e}", node.name_any()),
            }
        }
        let at = jiff::Timestamp::now();
        self.taint_clock.observe(&nodes, at);
        let (due, next_eviction) = plan::evictions(&pods, &nodes, &self.taint_clock, at);
        self.evict(due).await;
        [self.heartbeats.next_expiry(now), next_eviction]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(Duration::MAX)
    }

    /// Brings one node's conditions, taints and (when unreachable) pods in line.
    async fn monitor(
        &self,
        node: &Node,
        pods: &[Arc<Pod>],
        now: std::time::Instant,
    ) -> Result<(), kube::Error> {
        let name = node.name_any();
        let api: Api<Node> = Api::all(self.client.clone());
        let pp = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        let stamp = jiff::Timestamp::now();
        let stale = self.heartbeats.is_stale(&name, now);
        let mut resource_version = node.metadata.resource_version.clone();
        let ready = if stale {
            let conditions = plan::unknown_conditions(node, stamp);
            if !conditions.is_empty() {
                tracing::info!("node lifecycle: node {name} stopped posting status");
                let patch = json!({"status": {"conditions": conditions}});
                let patched = api
                    .patch_status(&name, &pp, &Patch::Strategic(&patch))
                    .await?;
                // The taints below are computed from the same spec, which this left alone.
                resource_version = patched.metadata.resource_version;
            }
            Some("Unknown")
        } else {
            plan::ready_status(node)
        };
        if let Some(taints) = plan::desired_taints(node, ready, stamp) {
            tracing::info!(
                "node lifecycle: node {name} Ready={} now has taints {:?}",
                ready.unwrap_or(""),
                taints
                    .iter()
                    .map(|t| format!("{}:{}", t.key, t.effect))
                    .collect::<Vec<_>>()
            );
            // The whole list, guarded by the resource version it was computed from.
            let patch = json!({
                "metadata": {"resourceVersion": resource_version},
                "spec": {"taints": taints},
            });
            api.patch(&name, &pp, &Patch::Merge(&patch)).await?;
        }
        if stale {
            self.mark_not_ready(plan::pods_to_mark_not_ready(pods, &name))
                .await;
        }
        Ok(())
    }

    /// Sets the pods' Ready condition False.
    async fn mark_not_ready(&self, pods: Vec<Arc<Pod>>) {
        futures::stream::iter(pods)
            .for_each_concurrent(CONCURRENCY, |pod| async move {
                let api: Api<Pod> =
                    Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
                let patch = json!({"status": {"conditions": [{
                    "type": "Ready", "status": "False", "lastTransitionTime": now_string(),
                }]}});
                let pp = PatchParams {
                    field_manager: Some(FIELD_MANAGER.into()),
                    ..Default::default()
                };
                let result = api
                    .patch_status(&pod.name_any(), &pp, &Patch::Strategic(&patch))
                    .await;
                if let Err(e) = ignore_gone(result) {
                    tracing::warn!(
                        "node lifecycle: marking pod {} not ready: {e}",
                        pod.name_any()
                    );
                }
            })
            .await;
    }

    /// Deletes the pods, each first with a `DisruptionTarget` condition.
    async fn evict(&self, pods: Vec<Arc<Pod>>) {
        futures::stream::iter(pods)
            .for_each_concurrent(CONCURRENCY, |pod| async move {
                if let Err(e) = self.evict_one(&pod).await {
                    tracing::warn!(
                        "taint eviction: deleting pod {}/{}: {e}",
                        pod.namespace().unwrap_or_default(),
                        pod.name_any()
                    );
                }
            })
            .await;
    }

    async fn evict_one(&self, pod: &Pod) -> Result<(), kube::Error> {
        let namespace = pod.namespace().unwrap_or_default();
        let name = pod.name_any();
        tracing::info!("taint eviction: deleting pod {namespace}/{name}");
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
        let patch = json!({"status": {"conditions": [{
            "type": "DisruptionTarget",
            "status": "True",
            "reason": "DeletionByTaintManager",
            "message": "Evicted by the taint manager: the node has a NoExecute taint the pod does not tolerate (any longer)",
            "lastTransitionTime": now_string(),
        }]}});
        let pp = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        ignore_gone(
            api.patch_status(&name, &pp, &Patch::Strategic(&patch))
                .await,
        )?;
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: pod.metadata.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        };
        ignore_gone(api.delete(&name, &dp).await)
    }
}
