//! skiff's kube-controller-manager and the simulated node agent.
//!
//! Every controller is level-triggered over the `kube` crate's runtime: reflectors fill
//! caches from watches, changes enqueue the owning object's key, and a reconcile compares
//! desired with actual state and returns when to look again; nothing sleeps in a loop and
//! cached objects are never mutated.
//!
//! - [`replicaset`], [`deployment`], [`garbage_collector`]: the controllers;
//! - [`simulated_agent`]: kwok-style nodes that run no containers;
//! - [`connect`]: how a component finds the API server; [`events`]: Event recording.

pub mod connect;
pub mod deployment;
pub mod events;
pub mod garbage_collector;
pub mod pod_util;
pub mod replicaset;
pub mod simulated_agent;

use kube::Client;

/// Which controllers [`run`] starts.
#[derive(Debug, Clone, Default)]
pub struct ControllerManagerConfig {
    /// Controller names to run (`replicaset`, `deployment`, `garbagecollector`); empty
    /// means all.
    pub controllers: Vec<String>,
}

/// Why the controller manager stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A controller's watches ended.
    #[error("controller {0} stopped")]
    Stopped(&'static str),
    /// The garbage collector failed to start.
    #[error(transparent)]
    GarbageCollector(#[from] garbage_collector::Error),
}

/// Runs the configured controllers until one of them stops.
pub async fn run(client: Client, config: ControllerManagerConfig) -> Result<(), Error> {
    let enabled =
        |name: &str| config.controllers.is_empty() || config.controllers.iter().any(|c| c == name);
    let mut tasks = tokio::task::JoinSet::new();
    if enabled("replicaset") {
        let c = client.clone();
        tasks.spawn(async move {
            replicaset::run(c).await;
            Err(Error::Stopped("replicaset"))
        });
    }
    if enabled("deployment") {
        let c = client.clone();
        tasks.spawn(async move {
            deployment::run(c).await;
            Err(Error::Stopped("deployment"))
        });
    }
    if enabled("garbagecollector") {
        let c = client.clone();
        tasks.spawn(async move {
            garbage_collector::run(c).await?;
            Err(Error::Stopped("garbagecollector"))
        });
    }
    match tasks.join_next().await {
        Some(Ok(result)) => result,
        Some(Err(e)) => panic!("a controller panicked: {e}"),
        None => Ok(()),
    }
}
