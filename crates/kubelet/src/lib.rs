//! skiff's kubelet: registers its node, heartbeats through a Lease, watches the
//! pods bound to the node and runs them on a CRI-shaped runtime ([`cri`])
//! implemented by skiff's engine ([`engine_runtime`]).
//!
//! Layout follows the kubelet's managers: [`node`] (registration, lease),
//! [`pod_worker`] (level-triggered syncs), [`status`] (what is reported), [`server`] (the
//! kubelet API the API server proxies logs, exec, attach and port-forward to, and scrapes
//! [`stats`] from).
//! A sync builds each container from [`env`] and [`volumes`], runs [`hooks`], and
//! reads what the [`probes`] found; API reads go through [`objects`], [`events`] record
//! what happened. [`cgroups`] keeps each pod in a cgroup of its [`qos`] class.
//! [`bootstrap`] trades a bootstrap token for the node's client certificate (TLS bootstrap).

pub mod bootstrap;
pub mod cgroups;
pub mod cri;
pub mod dns;
pub mod engine_runtime;
pub mod env;
pub mod ephemeral;
pub mod etc_hosts;
pub mod events;
pub mod eviction;
pub mod fake;
pub mod hooks;
pub mod image_pull;
pub mod node;
pub mod objects;
pub mod pleg;
pub mod pod_worker;
pub mod probes;
pub mod pull_secrets;
pub mod qos;
pub mod restart_backoff;
pub mod security_context;
pub mod server;
pub mod static_pods;
pub mod stats;
pub mod status;
pub mod termination_message;
pub mod volumes;

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
    /// The kubelet API could not be served.
    #[error(transparent)]
    Server(#[from] server::ServerError),
}

/// How the kubelet runs.
#[derive(Debug, Clone)]
pub struct KubeletConfig {
    /// The node's name (the host name by default).
    pub node_name: String,
    /// Where the node's state lives (its disk is the ephemeral-storage capacity).
    pub root: std::path::PathBuf,
    /// The subnet pod IPs come from, registered as the node's `spec.podCIDR`; `None`
    /// waits for the node IPAM controller to assign one, then hands it to the runtime
    /// ([`cri::RuntimeService::update_runtime_config`]) before any pod starts.
    pub pod_cidr: Option<String>,
    /// The node's InternalIP (`--node-ip`); the address of the host's default route
    /// when `None`.
    pub node_ip: Option<String>,
    /// The port of the kubelet API ([`server::DEFAULT_PORT`] unless set).
    pub port: u16,
    /// The CA whose client certificates the kubelet API accepts (PEM); without it, the
    /// cluster CA is read from the `kube-root-ca.crt` ConfigMap of `kube-system`.
    pub client_ca_pem: Option<String>,
    /// The cluster DNS pods with `dnsPolicy: ClusterFirst` use (`--cluster-dns`); without
    /// it, they get the node's resolv.conf.
    pub cluster_dns: Option<dns::ClusterDns>,
    /// The cgroup the QoS levels and pod cgroups go below (`--cgroup-root`,
    /// [`cgroups::DEFAULT_CGROUP_ROOT`] by default); `None` leaves pods' containers in
    /// the runtime's default cgroup (`--cgroups-per-qos=false`).
    pub cgroup_root: Option<String>,
    /// The directory of static pod manifests ([`static_pods`]), created at start; `None`
    /// runs no static pods.
    pub static_pod_path: Option<std::path::PathBuf>,
    /// The most processes each pod may run (`--pod-max-pids`, `podPidsLimit`); `None`:
    /// no limit per pod (kubepods is limited to the node's `pid_max` either way).
    pub pod_max_pids: Option<i64>,
    /// The hard eviction thresholds (`--eviction-hard`; [`eviction::default_thresholds`]
    /// unless set, none turns node-pressure eviction off).
    pub eviction_hard: Vec<eviction::Threshold>,
}

/// Environment variable setting how often pods' API-data volumes are refreshed, in
/// seconds (the kubelet's `--sync-frequency`; [`pod_worker::DEFAULT_SYNC_FREQUENCY`]
/// when unset).
pub const SYNC_FREQUENCY_ENV: &str = "SKIFF_KUBELET_SYNC_FREQUENCY";

fn sync_frequency() -> Duration {
    std::env::var(SYNC_FREQUENCY_ENV)
        .ok()
        .and_then(|v| v.trim_end_matches('s').parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(pod_worker::DEFAULT_SYNC_FREQUENCY)
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
    let ip = config.node_ip.clone().unwrap_or_else(node::host_ip);
    let cap = node::Capacity::of_host(&config.root);
    let port = config.port;
    // The kubelet API first: the node advertises its port.
    let client_ca = match config.client_ca_pem.clone() {
        Some(pem) => pem,
        None => cluster_ca(&client).await,
    };
    let tls = server::tls_config(&client_ca, &[name.clone(), ip.clone()])?;
    let cgroups = pod_cgroups(&config, &cap);
    let pressure = Arc::new(eviction::Pressure::new(
        eviction::PRESSURE_TRANSITION_PERIOD,
    ));
    let state = Arc::new(server::State {
        runtime: runtime.clone(),
        client: client.clone(),
        node_name: name.clone(),
        pod_cgroups: cgroups.clone(),
        host: Arc::new(stats::ProcHost),
    });
    // Pods still run without it (another kubelet on this host may hold the port).
    if let Err(e) = server::start(port, tls, state).await {
        tracing::error!("kubelet API: {e}; logs, exec and port-forward will not work");
    }
    // The server may still be starting: retry registration for a while.
    let mut attempt = 0;
    loop {
        match node::register(
            &client,
            &name,
            &ip,
            port,
            &cap,
            config.pod_cidr.as_deref(),
            &pressure,
        )
        .await
        {
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
        let (client, name) = (client.clone(), name.clone());
        let status = node::node_status(&name, &ip, port, &cap, &pressure);
        async move { node::record_startup_events(&client, &name, &status).await }
    });
    if config.pod_cidr.is_none() {
        let cidr = node::wait_for_pod_cidr(&client, &name).await;
        let runtime = runtime.clone();
        let applied =
            tokio::task::spawn_blocking(move || runtime.update_runtime_config(&cidr)).await;
        match applied {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!("the pod network of node {name}: {e}"),
            Err(e) => tracing::error!("the pod network of node {name}: {e}"),
        }
    }
    tokio::spawn({
        let (client, name, ip, cap) = (client.clone(), name.clone(), ip.clone(), cap.clone());
        let pod_cidr = config.pod_cidr.clone();
        let pressure = pressure.clone();
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
                        if let Err(e) = node::register(&client, &name, &ip, port, &cap, pod_cidr.as_deref(), &pressure).await {
                            tracing::warn!("posting the status of node {name}: {e}");
                        }
                    }
                }
            }
        }
    });
    if let Some(dir) = config.static_pod_path.clone() {
        if let Err(e) = std::fs::create_dir_all(&dir) {
            tracing::warn!("creating the static pod directory {}: {e}", dir.display());
        }
        tokio::spawn(static_pods::run(client.clone(), dir, name.clone()));
    }
    let node = pod_worker::NodeRef {
        name: name.clone(),
        ip: Some(ip),
        capacity: Some(cap.clone()),
    };
    let handle = tokio::runtime::Handle::current();
    let services = pod_worker::Services {
        runtime: runtime.clone(),
        objects: Arc::new(objects::ApiObjects::new(client.clone(), handle.clone())),
        mounter: Arc::new(volumes::KernelMounter),
        events: Arc::new(events::ApiEvents::new(
            client.clone(),
            handle.clone(),
            name.clone(),
        )),
        handle: Some(handle),
    };
    let worker = pod_worker::Worker::new(
        services,
        node.clone(),
        volumes::pods_dir(&config.root),
        sync_frequency(),
    )
    .with_cluster_dns(config.cluster_dns.clone())
    .with_cgroups(cgroups)
    .with_pressure(pressure.clone());
    let ctx = Arc::new(pod_worker::Ctx {
        runtime,
        client: client.clone(),
        node,
        worker: Arc::new(worker),
    });
    if !config.eviction_hard.is_empty() {
        let manager = eviction::Manager {
            thresholds: config.eviction_hard.clone(),
            observer: Arc::new(eviction::HostObserver {
                nodefs: config.root.clone(),
                imagefs: config.root.clone(),
            }),
            pressure,
        };
        tokio::spawn(eviction::run(manager, ctx.clone(), name.clone()));
    }
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
    .reconcile_on(relist(ctx.clone()))
    .run(pod_worker::reconcile, pod_worker::error_policy, ctx)
    .for_each(|_| async {})
    .await;
    Err(Error::WatchEnded)
}

/// The pods whose runtime state or probes changed, from a [`pleg::Pleg`] relisting the
/// runtime every [`pleg::RELIST_PERIOD`] (on a blocking thread: the runtime reads files).
fn relist(
    ctx: Arc<pod_worker::Ctx>,
) -> impl futures::Stream<Item = kube::runtime::reflector::ObjectRef<Pod>> {
    let (tx, rx) = futures::channel::mpsc::unbounded();
    tokio::spawn(async move {
        let mut pleg = Some(pleg::Pleg::default());
        let mut tick = tokio::time::interval(pleg::RELIST_PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let (worker, mut state) = (ctx.worker.clone(), pleg.take().unwrap_or_default());
            let relisted = tokio::task::spawn_blocking(move || {
                let changed = state.relist(worker.runtime(), |uid| worker.probe_states(uid));
                (state, changed)
            })
            .await;
            let changed = match relisted {
                Ok((state, changed)) => {
                    pleg = Some(state);
                    changed
                }
                Err(e) => {
                    tracing::warn!("relisting the runtime: {e}");
                    continue;
                }
            };
            match changed {
                Ok(pods) => {
                    for p in pods {
                        let pod =
                            kube::runtime::reflector::ObjectRef::new(&p.name).within(&p.namespace);
                        if tx.unbounded_send(pod).is_err() {
                            return;
                        }
                    }
                }
                Err(e) => tracing::warn!("relisting the runtime: {e}"),
            }
        }
    });
    rx
}

/// The QoS levels below the configured cgroup root, created now; `None` when not
/// configured, or when the host refuses them (pods then run without pod cgroups).
fn pod_cgroups(config: &KubeletConfig, cap: &node::Capacity) -> Option<Arc<cgroups::PodCgroups>> {
    let root = config.cgroup_root.as_deref()?;
    let allocatable = cgroups::resources::Amounts {
        cpu: cap.cpu.saturating_mul(1000) as i64,
        memory: cap.memory_kib.saturating_mul(1024) as i64,
    };
    // All pods together may use the node's pids (the allocatable pids, nothing reserved).
    let pid_max = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok());
    let pod_cgroups = cgroups::PodCgroups::new(
        Arc::new(skiff_runtime::cgroups::CgroupFs::host()),
        root,
        allocatable,
        &cgroups::kubelet_dir(&config.root),
    )
    .with_pids_limits(config.pod_max_pids, pid_max);
    match pod_cgroups.ensure_qos() {
        Ok(()) => Some(Arc::new(pod_cgroups)),
        Err(e) => {
            tracing::error!(
                "creating the QoS cgroups below {root}: {e}; pods run without pod cgroups"
            );
            None
        }
    }
}

/// The cluster CA as the API publishes it (`kube-root-ca.crt`), waiting for it to appear.
async fn cluster_ca(client: &Client) -> String {
    use k8s_openapi::api::core::v1::ConfigMap;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "kube-system");
    loop {
        match api.get_opt("kube-root-ca.crt").await {
            Ok(Some(cm)) => {
                if let Some(ca) = cm.data.and_then(|mut d| d.remove("ca.crt")) {
                    return ca;
                }
            }
            Ok(None) => {}
            Err(e) => tracing::debug!("reading the cluster CA: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
