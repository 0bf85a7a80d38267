//! skiff's kube-controller-manager and the simulated node agent.
//!
//! Every controller is level-triggered over the `kube` crate's runtime: reflectors fill
//! caches from watches, changes enqueue the owning object's key, and a reconcile compares
//! desired with actual state and returns when to look again; nothing sleeps in a loop and
//! cached objects are never mutated.
//!
//! - [`replicaset`] (ReplicaSets and ReplicationControllers), [`deployment`], [`garbage_collector`], [`job`], [`ttl_after_finished`],
//!   [`endpoints`], [`endpointslice`], [`endpointslicemirroring`], [`daemonset`], [`statefulset`], [`cronjob`],
//!   [`namespace`], [`podgc`], [`nodelifecycle`], [`persistentvolume`], [`podautoscaler`],
//!   [`disruption`] (PodDisruptionBudget status),
//!   [`servicelb`] (addresses for LoadBalancer Services, from a pool or the nodes'),
//!   [`nodeipam`] (a pod CIDR for every node, from the cluster CIDR),
//!   [`storage_protection`] (the pvc- and pv-protection finalizers),
//!   [`certificates`] (`csrapproving`: approves kubelet client certificate requests):
//!   the controllers,
//!   registered under kube-controller-manager's names;
//! - [`localpath`]: the local-path volume provisioner (started by `skiff server`, which
//!   knows the node's filesystem);
//! - [`simulated_agent`]: kwok-style nodes that run no containers;
//! - [`connect`]: how a component finds the API server; [`events`]: Event recording;
//!   [`controller_ref`]: adopting and releasing pods by selector.

pub mod cache_sync;
pub mod certificates;
pub mod connect;
pub mod controller_ref;
pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod disruption;
pub mod endpoints;
pub mod endpointslice;
pub mod endpointslicemirroring;
pub mod events;
pub mod garbage_collector;
pub mod history;
pub mod job;
pub mod localpath;
pub mod namespace;
pub mod nodeipam;
pub mod nodelifecycle;
pub mod persistentvolume;
pub mod pod_util;
pub mod podautoscaler;
pub mod podgc;
pub mod replicaset;
pub mod servicelb;
pub mod simulated_agent;
pub mod statefulset;
pub mod storage_protection;
pub mod sweep;
pub mod ttl_after_finished;

use kube::Client;

/// Starts one controller that runs until its watches end.
type Loop = fn(Client) -> futures::future::BoxFuture<'static, ()>;

/// Which controllers [`run`] starts.
#[derive(Debug, Clone, Default)]
pub struct ControllerManagerConfig {
    /// Controller names to run (`replicaset`, `deployment`, `garbagecollector`, `job`,
    /// `ttl-after-finished`, `cronjob`, `daemonset`, `statefulset`, `endpoint`,
    /// `endpointslice`, `namespace`, `podgc`, `nodelifecycle`, `persistentvolume-binder`,
    /// `horizontalpodautoscaling`, `service-lb-controller`, `disruption`, `nodeipam`, `pvc-protection` (with `pv-protection`),
    /// `csrapproving`);
    /// empty means all.
    pub controllers: Vec<String>,
    /// Settings of the pod garbage collector.
    pub pod_gc: podgc::PodGcConfig,
    /// Settings of the node lifecycle controller.
    pub node_lifecycle: nodelifecycle::NodeLifecycleConfig,
    /// Settings of the HorizontalPodAutoscaler controller.
    pub pod_autoscaler: podautoscaler::PodAutoscalerConfig,
    /// Settings of the service load-balancer controller.
    pub service_lb: servicelb::ServiceLbConfig,
    /// Settings of the node IPAM controller (pod CIDRs for nodes).
    pub node_ipam: nodeipam::NodeIpamConfig,
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
    // The controllers that run until their watches end.
    let loops: &[(&'static str, Loop)] = &[
        ("replicaset", |c| Box::pin(replicaset::run(c))),
        ("replicationcontroller", |c| {
            Box::pin(replicaset::run_replication_controllers(c))
        }),
        ("deployment", |c| Box::pin(deployment::run(c))),
        ("job", |c| Box::pin(job::run(c))),
        ("ttl-after-finished", |c| {
            Box::pin(ttl_after_finished::run(c))
        }),
        ("endpoint", |c| Box::pin(endpoints::run(c))),
        ("endpointslice", |c| Box::pin(endpointslice::run(c))),
        ("endpointslicemirroring", |c| {
            Box::pin(endpointslicemirroring::run(c))
        }),
        ("daemonset", |c| Box::pin(daemonset::run(c))),
        ("statefulset", |c| Box::pin(statefulset::run(c))),
        ("cronjob", |c| Box::pin(cronjob::run(c))),
        ("namespace", |c| Box::pin(namespace::run(c))),
        ("disruption", |c| Box::pin(disruption::run(c))),
        ("persistentvolume-binder", |c| {
            Box::pin(persistentvolume::run(c))
        }),
        ("csrapproving", |c| Box::pin(certificates::run(c))),
    ];
    for &(name, start) in loops {
        if enabled(name) {
            let run = start(client.clone());
            tasks.spawn(async move {
                run.await;
                Err(Error::Stopped(name))
            });
        }
    }
    if enabled("podgc") {
        let run = podgc::run(client.clone(), config.pod_gc.clone());
        tasks.spawn(async move {
            run.await;
            Err(Error::Stopped("podgc"))
        });
    }
    if enabled("nodelifecycle") {
        let run = nodelifecycle::run(client.clone(), config.node_lifecycle.clone());
        tasks.spawn(async move {
            run.await;
            Err(Error::Stopped("nodelifecycle"))
        });
    }
    if enabled("horizontalpodautoscaling") {
        let run = podautoscaler::run(client.clone(), config.pod_autoscaler.clone());
        tasks.spawn(async move {
            run.await;
            Err(Error::Stopped("horizontalpodautoscaling"))
        });
    }
    if enabled("service-lb-controller") {
        let run = servicelb::run(client.clone(), config.service_lb.clone());
        tasks.spawn(async move {
            run.await;
            Err(Error::Stopped("service-lb-controller"))
        });
    }
    let client_for_protection = client.clone();
    if enabled("nodeipam") {
        let run = nodeipam::run(client.clone(), config.node_ipam.clone());
        tasks.spawn(async move {
            run.await;
            Err(Error::Stopped("nodeipam"))
        });
    }
    if enabled("pvc-protection") {
        tasks.spawn(async move {
            storage_protection::run(client_for_protection).await;
            Err(Error::Stopped("pvc-protection"))
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
