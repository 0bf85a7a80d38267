//! The pod garbage collector (`pkg/controller/podgc`): removes the pods nothing else
//! will: terminated pods beyond `--terminated-pod-gc-threshold` (oldest first), pods
//! bound to nodes that no longer exist, pods being deleted that were never scheduled, and
//! pods being deleted on a node that is down and tainted out of service. Pods still
//! Pending or Running are first marked `Failed` (orphans with a `DisruptionTarget`
//! condition), then deleted with no grace period.
//!
//! As upstream, it sweeps its pod and node caches periodically rather than per pod: the
//! threshold is a property of all terminated pods together. A change in either cache
//! brings the next sweep forward, so it reacts within a second.

mod plan;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt as _};
use kube::{Api, Client, ResourceExt as _};
use serde_json::{json, Value};
use tokio::time::Instant;

pub use plan::OUT_OF_SERVICE_TAINT;

/// Settings of the pod garbage collector.
#[derive(Debug, Clone)]
pub struct PodGcConfig {
    /// How many terminated pods may exist before the oldest are deleted
    /// (`--terminated-pod-gc-threshold`); zero or less keeps them all.
    pub terminated_pod_gc_threshold: i32,
    /// How often the caches are swept when nothing changes (`gcCheckPeriod`).
    pub check_period: Duration,
    /// How long a node missing from the cache has to appear before its pods are deleted
    /// (`quarantineTime`).
    pub quarantine: Duration,
}

impl Default for PodGcConfig {
    /// kube-controller-manager's defaults: 12500 terminated pods, a sweep every 20 s, a
    /// 40 s quarantine.
    fn default() -> Self {
        PodGcConfig {
            terminated_pod_gc_threshold: 12500,
            check_period: Duration::from_secs(20),
            quarantine: Duration::from_secs(40),
        }
    }
}

/// How long after a cache change the next sweep runs (changes come in bursts).
const DEBOUNCE: Duration = Duration::from_secs(1);

/// The field manager of the pod garbage collector's status changes (upstream's).
const FIELD_MANAGER: &str = "PodGC";

/// How many pods are deleted at once.
const CONCURRENCY: usize = 16;

/// The DisruptionTarget condition of a pod deleted because its node is gone.
fn node_gone_condition() -> Value {
    json!({
        "type": "DisruptionTarget",
        "status": "True",
        "reason": "DeletionByPodGC",
        "message": "PodGC: node no longer exists",
        "lastTransitionTime": jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
    })
}

/// Runs the pod garbage collector until its watches end.
pub async fn run(client: Client, config: PodGcConfig) {
    let (pods, pod_writer) = reflector::store::<Pod>();
    let (nodes, node_writer) = reflector::store::<Node>();
    let pod_events = watcher(Api::<Pod>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .reflect(pod_writer)
        .map(drop);
    let node_events = watcher(Api::<Node>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .reflect(node_writer)
        .map(drop);
    let mut changes = futures::stream::select(pod_events, node_events).boxed();
    let ready = async {
        let _ = pods.wait_until_ready().await;
        let _ = nodes.wait_until_ready().await;
    };
    if !crate::sweep::until_ready(ready, &mut changes).await {
        return;
    }
    let mut gc = PodGc {
        client,
        threshold: config.terminated_pod_gc_threshold,
        quarantine: plan::Quarantine::new(config.quarantine),
    };
    loop {
        let next = gc.sweep(&pods, &nodes).await.min(config.check_period);
        if !crate::sweep::wait_for_next(next, DEBOUNCE, &mut changes).await {
            return;
        }
    }
}

struct PodGc {
    client: Client,
    threshold: i32,
    quarantine: plan::Quarantine,
}

impl PodGc {
    /// One pass over the caches; returns how soon a quarantine ends.
    async fn sweep(&mut self, pods: &Store<Pod>, nodes: &Store<Node>) -> Duration {
        let (pods, nodes) = (pods.state(), nodes.state());
        self.delete(plan::terminated_over_threshold(&pods, self.threshold), None)
            .await;
        self.delete(plan::terminating_out_of_service(&pods, &nodes), None)
            .await;

        let now = Instant::now();
        self.quarantine
            .observe(&plan::missing_nodes(&pods, &nodes), now.into_std());
        let mut gone = HashSet::new();
        let api: Api<Node> = Api::all(self.client.clone());
        for node in self.quarantine.expired(now.into_std()) {
            match api.get_opt(&node).await {
                Ok(None) => {
                    gone.insert(node);
                }
                Ok(Some(_)) => self.quarantine.release(&node),
                Err(e) => tracing::debug!("pod gc: reading node {node}: {e}"),
            }
        }
        self.delete(plan::orphaned(&pods, &gone), Some(node_gone_condition()))
            .await;

        self.delete(plan::unscheduled_terminating(&pods), None)
            .await;
        self.quarantine
            .next_expiry(Instant::now().into_std())
            .unwrap_or(self.quarantine.period())
    }

    /// Marks `pods` Failed (with `condition`) where they are not finished, and deletes
    /// them with no grace period.
    async fn delete(&self, pods: Vec<Arc<Pod>>, condition: Option<Value>) {
        futures::stream::iter(pods)
            .for_each_concurrent(CONCURRENCY, |pod| {
                let condition = condition.clone();
                async move {
                    if let Err(e) = self.mark_failed_and_delete(&pod, condition).await {
                        tracing::warn!(
                            "pod gc: deleting pod {}/{}: {e}",
                            pod.namespace().unwrap_or_default(),
                            pod.name_any()
                        );
                    }
                }
            })
            .await;
    }

    async fn mark_failed_and_delete(
        &self,
        pod: &Pod,
        condition: Option<Value>,
    ) -> Result<(), kube::Error> {
        let api: Api<Pod> =
            Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
        let name = pod.name_any();
        tracing::info!(
            "pod gc: force deleting pod {}/{name}",
            pod.namespace().unwrap_or_default()
        );
        let ignore_gone = |r: Result<(), kube::Error>| match r {
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            other => other,
        };
        if plan::needs_marking(pod) {
            // Conditions merge by type: the others stay.
            let mut status = json!({"phase": "Failed"});
            if let Some(condition) = condition {
                status["conditions"] = json!([condition]);
            }
            let patch = json!({"status": status});
            let pp = PatchParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..Default::default()
            };
            ignore_gone(
                api.patch_status(&name, &pp, &Patch::Strategic(&patch))
                    .await
                    .map(drop),
            )?;
        }
        let dp = crate::pod_util::force_delete_params(pod);
        ignore_gone(api.delete(&name, &dp).await.map(drop))
    }
}
