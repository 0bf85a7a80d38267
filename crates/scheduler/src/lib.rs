//! skiff's kube-scheduler.
//!
//! Layers, each using only those above it:
//! - [`framework`]: the extension points as traits, node accounting, the failure message;
//! - [`plugins`]: the in-tree plugins, one module each, and the registry table;
//! - [`queue`] and [`cache`]: the active/backoff/unschedulable queues and the node/pod cache;
//! - [`api`]: the writes to the API server (binding, conditions, Events) behind a trait;
//! - [`scheduler`]: the loop tying them together; [`run`] wires it to watches.

pub mod api;
pub mod cache;
pub mod framework;
pub mod plugins;
pub mod queue;
pub mod scheduler;

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::runtime::watcher;
use kube::{Api, Client};
use tokio::sync::mpsc;

pub use plugins::ScoringStrategy;

/// The default `schedulerName`.
pub const DEFAULT_SCHEDULER_NAME: &str = "default-scheduler";

/// One scheduling profile: a `schedulerName` and how it scores.
#[derive(Debug, Clone)]
pub struct Profile {
    /// Pods with this `spec.schedulerName` are scheduled by this profile.
    pub scheduler_name: String,
    /// NodeResourcesFit's scoring strategy.
    pub scoring: ScoringStrategy,
}

/// Configuration of [`run`].
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// The profiles; pods naming another scheduler are left alone.
    pub profiles: Vec<Profile>,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            profiles: vec![Profile {
                scheduler_name: DEFAULT_SCHEDULER_NAME.into(),
                scoring: ScoringStrategy::LeastAllocated,
            }],
        }
    }
}

/// Why the scheduler stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No profile configured.
    #[error("the scheduler needs at least one profile")]
    NoProfiles,
    /// The watches ended (the client was dropped).
    #[error("the pod and node watches ended")]
    WatchEnded,
}

/// Runs the scheduler against the API server behind `client` until the task is dropped.
pub async fn run(client: Client, config: SchedulerConfig) -> Result<(), Error> {
    if config.profiles.is_empty() {
        return Err(Error::NoProfiles);
    }
    let component = config.profiles[0].scheduler_name.clone();
    let api: Arc<dyn api::ClusterApi> = Arc::new(api::KubeApi::new(client.clone(), component));
    let (volumes, mut volume_changes) =
        plugins::volume_binding::CachedVolumes::start(client.clone());
    let (budgets, budget_changes) =
        plugins::default_preemption::CachedBudgets::start(client.clone());
    let (namespaces, namespace_changes) =
        plugins::inter_pod_affinity::CachedNamespaces::start(client.clone());
    let profiles: HashMap<String, framework::Framework> = config
        .profiles
        .iter()
        .map(|p| {
            let handle = plugins::Handle {
                api: api.clone(),
                scoring: p.scoring,
                volumes: volumes.clone(),
                budgets: budgets.clone(),
                namespaces: namespaces.clone(),
            };
            (
                p.scheduler_name.clone(),
                plugins::default_framework(&handle),
            )
        })
        .collect();
    let (tx, rx) = mpsc::unbounded_channel();
    let scheduler = scheduler::Scheduler::new(profiles, api, tx.clone());
    let pods = watch(Api::<Pod>::all(client.clone()), tx.clone(), |e| {
        scheduler::Input::Pod(Box::new(e))
    });
    let nodes = watch(Api::<Node>::all(client), tx.clone(), |e| {
        scheduler::Input::Node(Box::new(e))
    });
    let volumes = async move {
        while volume_changes.next().await.is_some() {
            if tx.send(scheduler::Input::VolumesChanged).is_err() {
                return;
            }
        }
    };
    // Budget and namespace changes need no retry: budgets only steer the choice of
    // victims, and namespaces matter only with the pods added to them.
    let budgets = futures::stream::select(budget_changes, namespace_changes).for_each(|_| async {});
    tokio::select! {
        _ = scheduler.run(rx) => {}
        _ = budgets => {}
        _ = pods => {}
        _ = nodes => {}
        _ = volumes => {}
    }
    Err(Error::WatchEnded)
}

/// Feeds a resource's watch events into the scheduler's channel, retrying with backoff.
async fn watch<K>(
    api: Api<K>,
    tx: mpsc::UnboundedSender<scheduler::Input>,
    wrap: fn(watcher::Event<K>) -> scheduler::Input,
) where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    K::DynamicType: Default,
{
    use kube::runtime::WatchStreamExt as _;
    let mut events = watcher(api, watcher::Config::default().any_semantic())
        .default_backoff()
        .boxed();
    while let Some(event) = events.next().await {
        match event {
            Ok(event) => {
                if tx.send(wrap(event)).is_err() {
                    return;
                }
            }
            Err(e) => tracing::warn!("scheduler watch: {e}"),
        }
    }
}
