//! `skiff server` and `skiff kubeconfig`: wiring to the skiff-apiserver crate.

use anyhow::{Context as _, Result};
use skiff_apiserver::{read_kubeconfig, Server, ServerConfig};

use super::{absolute, Context};
use crate::cli::ServerArgs;

fn data_dir(ctx: &Context) -> std::path::PathBuf {
    absolute(&ctx.roots().data).join("server")
}

/// Runs the API server until SIGINT or SIGTERM.
pub fn server(ctx: &Context, args: ServerArgs) -> Result<()> {
    let (scheduler, controllers) = (!args.disable_scheduler, !args.disable_controller_manager);
    let service_cidr: skiff_apiserver::ServiceRanges = skiff_apiserver::ServiceRanges::new(
        args.service_cidr
            .parse()
            .with_context(|| format!("--service-cidr {}", args.service_cidr))?,
    );
    // The cluster DNS's Service address: the tenth of the range, as in k3s.
    let cluster_dns_ip = service_cidr
        .nth(10)
        .context("--service-cidr is too small for the cluster DNS address")?;
    // The kubelet of this host runs pods on the engine of the same root; the service
    // proxy and the cluster DNS serve them.
    let engine = if args.disable_kubelet {
        None
    } else {
        Some(std::sync::Arc::new(ctx.engine()?))
    };
    let kubelet = if let Some(engine) = &engine {
        let cri = skiff_kubelet::EngineRuntime::new(engine.clone(), None);
        let config = skiff_kubelet::KubeletConfig {
            node_name: args
                .node_name
                .clone()
                .unwrap_or_else(skiff_kubelet::hostname),
            root: absolute(&ctx.roots().data),
            pod_cidr: cri.pod_cidr(),
            node_ip: args.node_ip.map(|ip| ip.to_string()),
            port: args.kubelet_port,
            // Read once the server created its PKI.
            client_ca_pem: None,
            cluster_dns: Some(skiff_kubelet::dns::ClusterDns {
                servers: vec![cluster_dns_ip.to_string()],
                domain: args.cluster_domain.clone(),
            }),
            cgroup_root: Some(args.kubelet_cgroup_root.clone()),
            static_pod_path: Some(
                args.pod_manifest_path
                    .clone()
                    .unwrap_or_else(|| absolute(&ctx.roots().data).join("pod-manifests")),
            ),
            pod_max_pids: args.kubelet_limits.pod_max_pids(),
            eviction_hard: args.kubelet_limits.eviction_hard.0.clone(),
        };
        Some((std::sync::Arc::new(cri), config))
    } else {
        None
    };
    let local_node = kubelet.as_ref().map(|(_, c)| c.node_name.clone());
    let config = ServerConfig {
        data_dir: data_dir(ctx),
        bind_address: args.bind_address,
        port: args.port,
        datastore_endpoints: args.datastore_endpoint.clone(),
        service_cidr: service_cidr.cidr,
        // Agents dial the server at the node's address too.
        tls_sans: args
            .tls_san
            .iter()
            .cloned()
            .chain(args.node_ip.map(|ip| ip.to_string()))
            .collect(),
        advertise_address: args.node_ip.map(std::net::IpAddr::V4),
    };
    limit_allocator_arenas();
    let runtime = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    runtime.block_on(async {
        tokio::spawn(release_free_memory_periodically());
        let server = Server::start(config).await?;
        eprintln!(
            "skiff API server listening on https://{}; admin kubeconfig: {}",
            server.local_addr(),
            server.kubeconfig_path().display()
        );
        // The scheduler and the controllers are clients like any other, over the admin
        // kubeconfig; they stop with the runtime.
        if let Some((cri, mut config)) = kubelet {
            // The kubelet trusts the cluster CA's client certificates (the API server's).
            let ca = data_dir(ctx).join("tls/ca.crt");
            config.client_ca_pem = Some(
                std::fs::read_to_string(&ca)
                    .with_context(|| format!("reading {}", ca.display()))?,
            );
            let client =
                skiff_controllers::connect::from_kubeconfig(server.kubeconfig_path()).await?;
            tokio::spawn(async move {
                if let Err(e) = skiff_kubelet::run(client, cri, config).await {
                    tracing::error!("kubelet: {e}");
                }
            });
        }
        if let Some(engine) = &engine {
            let client =
                skiff_controllers::connect::from_kubeconfig(server.kubeconfig_path()).await?;
            start_services(&client, engine, &args, cluster_dns_ip)?;
            if let Some(node) = local_node.clone() {
                tokio::spawn(label_control_plane_node(client, node));
            }
        }
        if scheduler || controllers {
            let client =
                skiff_controllers::connect::from_kubeconfig(server.kubeconfig_path()).await?;
            if scheduler {
                let config = skiff_scheduler::SchedulerConfig::default();
                tokio::spawn(skiff_scheduler::run(client.clone(), config));
            }
            if controllers {
                // The local-path provisioner writes this host's filesystem: the volumes of
                // this server's own node live under its storage directory.
                let storage = skiff_controllers::localpath::LocalPathConfig {
                    storage_dir: args
                        .default_local_storage_path
                        .clone()
                        .map(|p| absolute(&p))
                        .unwrap_or_else(|| absolute(&ctx.roots().data).join("storage")),
                    local_node: local_node.clone(),
                };
                tokio::spawn(skiff_controllers::localpath::run(
                    client.clone(),
                    storage,
                    std::sync::Arc::new(skiff_controllers::localpath::HostDirs),
                ));
                let config = super::controller_manager::config(&args.controllers)?;
                tokio::spawn(skiff_controllers::run(client, config));
            }
        }
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
        server.stop().await;
        Ok(())
    })
}

/// Labels the server's own node as a control-plane node once its kubelet registered it
/// (`kubectl get nodes` shows the role), as kubeadm and k3s do; the kubelet itself may
/// not set `node-role.kubernetes.io/` labels (NodeRestriction).
async fn label_control_plane_node(client: kube::Client, node: String) {
    use kube::api::{Api, Patch, PatchParams};
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client);
    let labels = serde_json::json!({"metadata": {"labels": {
        "node-role.kubernetes.io/control-plane": "true",
    }}});
    loop {
        match nodes
            .patch(&node, &PatchParams::default(), &Patch::Merge(&labels))
            .await
        {
            Ok(_) => return,
            Err(e) => tracing::debug!("labelling node {node}: {e}"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// Starts what every node runs besides its kubelet, on the engine's networking: the
/// service proxy (this root's service table), NetworkPolicy enforcement for the node's
/// pods, and the routes to the other nodes' pods. Returns the Service caches they share.
pub(super) fn start_node_networking(
    client: &kube::Client,
    engine: &skiff_engine::Engine,
    node: &str,
    what: &str,
) -> Result<skiff_proxy::Caches> {
    let networking = engine.networking();
    let caches = skiff_proxy::Caches::start(client);
    let proxy = skiff_network::service_proxy::ServiceProxy::new(
        &networking.config().service_table(),
        // In-process (libnftables): a change of the table costs less than starting `nft`.
        std::sync::Arc::new(skiff_network::nft::NftCli::in_process()),
    )?;
    tokio::spawn(skiff_proxy::proxy::run(
        caches.clone(),
        proxy,
        node.to_string(),
    ));

    // NetworkPolicies of this node's pods; bridged pod-to-pod traffic reaches the
    // policy chain only through br_netfilter.
    use skiff_network::network_policy::{ensure_bridge_netfilter, PolicyEnforcer};
    match ensure_bridge_netfilter(&skiff_network::sysctl::ProcSysctl) {
        Ok(true) => eprintln!("{what}: turned on net.bridge.bridge-nf-call-iptables"),
        Ok(false) => {}
        Err(e) => eprintln!(
            "{what}: {e}; NetworkPolicies cannot filter traffic between pods of \
             this node without the br_netfilter module"
        ),
    }
    let enforcer = PolicyEnforcer::new(
        &networking.config().policy_table(),
        std::sync::Arc::new(skiff_network::nft::NftCli::default()),
    )?;
    tokio::spawn(skiff_proxy::network_policy::run(
        client.clone(),
        node.to_string(),
        enforcer,
    ));

    // Pods of other nodes: a route to each node's pod CIDR, and no NAT on the way.
    let pod_network = skiff_network::pod_routes::PodNetwork::new(
        &networking.config().pod_network_table(),
        networking
            .config()
            .state_root
            .join(skiff_network::pod_routes::STATE_FILE),
        std::sync::Arc::new(skiff_network::pod_routes::KernelRouteTable),
        std::sync::Arc::new(skiff_network::nft::NftCli::default()),
    )?;
    tokio::spawn(skiff_proxy::pod_network::run(
        client.clone(),
        node.to_string(),
        pod_network,
    ));
    Ok(caches)
}

/// Starts the node's networking ([`start_node_networking`]) and the cluster DNS (on the
/// pod network's gateway), and makes the `kube-dns` Service lead to it.
fn start_services(
    client: &kube::Client,
    engine: &skiff_engine::Engine,
    args: &ServerArgs,
    cluster_dns_ip: std::net::Ipv4Addr,
) -> Result<()> {
    let networking = engine.networking();
    // This node's name, as its kubelet registers it.
    let node = args
        .node_name
        .clone()
        .unwrap_or_else(skiff_kubelet::hostname);
    let caches = start_node_networking(client, engine, &node, "skiff server")?;
    warn_of_shared_service_range(&networking.config().service_table(), cluster_dns_ip);

    let gateway = networking
        .network(skiff_network::DEFAULT_NETWORK)
        .context("the pod network")?
        .gateway;
    let listen = std::net::SocketAddrV4::new(gateway, args.cluster_dns_port);
    let upstreams = if args.cluster_dns_upstream.is_empty() {
        skiff_network::dns::upstreams_from_resolv_conf(
            &std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
        )
    } else {
        args.cluster_dns_upstream.clone()
    };
    let dns = skiff_proxy::dns::ClusterDns::bind(
        listen,
        skiff_proxy::dns::DnsConfig {
            domain: args.cluster_domain.clone(),
            upstreams,
            timeout: std::time::Duration::from_secs(2),
        },
    )?;
    tokio::spawn(dns.serve(Some(caches.clone())));
    if !args.disable_ingress {
        start_ingress(client, caches, args);
    }
    let client = client.clone();
    tokio::spawn(async move {
        // The API may still be warming up (RBAC caches): retry until it takes them.
        loop {
            match skiff_proxy::dns::ensure_service(&client, cluster_dns_ip, listen).await {
                Ok(()) => break,
                Err(e) => tracing::debug!("{e}"),
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    });
    Ok(())
}

/// Says so when another skiff root's service table on this host routes this cluster's
/// DNS address: the newest table's DNAT wins, so pods of both clusters would reach
/// whichever server started last.
fn warn_of_shared_service_range(own_table: &str, cluster_dns_ip: std::net::Ipv4Addr) {
    let nft = skiff_network::nft::NftCli::default();
    let others =
        skiff_network::service_proxy::other_tables_routing(&nft, own_table, cluster_dns_ip)
            .unwrap_or_default();
    if !others.is_empty() {
        eprintln!(
            "skiff server: warning: nftables table(s) {} of another skiff root on this host \
             already route {cluster_dns_ip}, this cluster's DNS address: the pods of both \
             clusters will reach whichever server programmed its Services last. Give each \
             server its own --service-cidr (or remove the other root's state with `skiff \
             --root DIR system reset`).",
            others.join(", ")
        );
    }
}

/// Starts the built-in Ingress controller; a port that cannot be bound (another
/// proxy holds :80) is logged, and the server goes on without it.
fn start_ingress(client: &kube::Client, caches: skiff_proxy::Caches, args: &ServerArgs) {
    let bind = args.ingress_bind_address;
    // The address Ingresses show: the one listened on, or this host's when all are.
    let address = if bind.is_unspecified() {
        skiff_kubelet::node::host_ip()
            .parse()
            .unwrap_or(std::net::Ipv4Addr::LOCALHOST.into())
    } else {
        bind
    };
    let config = skiff_proxy::ingress::IngressConfig {
        http: std::net::SocketAddr::new(bind, args.ingress_http_port),
        https: std::net::SocketAddr::new(bind, args.ingress_https_port),
        address,
    };
    let client = client.clone();
    tokio::spawn(async move {
        if let Err(e) = skiff_proxy::ingress::start(client, caches, config).await {
            tracing::error!("{e} (the Ingress controller is off; see --disable-ingress)");
        }
    });
}

/// Prints the admin kubeconfig.
pub fn kubeconfig(ctx: &Context) -> Result<()> {
    print!("{}", read_kubeconfig(&data_dir(ctx))?);
    Ok(())
}

/// glibc gives each thread that allocates under contention an arena of its own, and keeps
/// what is freed in each: with many request threads the server's memory grows with the
/// thread count rather than with what it holds. Two arenas keep it close to the live data.
///
/// glibc also raises its mmap threshold to the size of the largest block freed (up to
/// 32 MiB) and its trim threshold to twice that: after one full list of 10,000 pods, the
/// response buffers of later requests came from the heaps and up to 64 MiB freed at their
/// tops stayed resident. Fixed thresholds keep large buffers in their own mappings, returned
/// when freed, and give back a heap's free top above 1 MiB (server RSS with 10,000 pods in
/// `cargo bench -p skiff --bench api`: 82.4 -> 64.5 MiB in one A/B run).
fn limit_allocator_arenas() {
    // SAFETY: mallopt only tunes the allocator; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    }
}

/// Blocks at least this large get their own mapping (glibc's initial default, kept fixed).
const MMAP_THRESHOLD: libc::c_int = 128 * 1024;
/// A heap gives free memory at its top back once there is this much.
const TRIM_THRESHOLD: libc::c_int = 1024 * 1024;

/// Returns the allocator's free pages to the system every 30 s, so memory freed after a
/// burst (a large list, many watchers leaving) leaves the server's RSS.
async fn release_free_memory_periodically() {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(30));
    loop {
        tick.tick().await;
        // SAFETY: malloc_trim only releases free memory; live allocations are untouched.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}
