//! `skiff agent`: a kubelet for this host (wiring to skiff-kubelet), or with
//! `--simulate N` skiff-controllers' simulated agent.

use std::time::Duration;

use anyhow::{Context as _, Result};
use skiff_controllers::connect::{connect, ServerTrust, Target};
use skiff_controllers::simulated_agent::{self, SimulatedAgentConfig};

use super::{absolute, Context};
use crate::cli::AgentArgs;

/// Where the local server of this root writes its admin kubeconfig.
pub fn root_kubeconfig(ctx: &Context) -> std::path::PathBuf {
    skiff_apiserver::kubeconfig_path(&absolute(&ctx.roots().data).join("server"))
}

/// Registers simulated nodes and serves them until interrupted.
pub fn agent(ctx: &Context, args: AgentArgs) -> Result<()> {
    let trust = server_trust(&args)?;
    let target = Target {
        kubeconfig: args.kubeconfig,
        server: args.server,
        token: args.token,
        trust,
        root_kubeconfig: root_kubeconfig(ctx),
    };
    let Some(nodes) = args.simulate else {
        let network = NodeNetwork {
            node_ip: args.node_ip,
            pod_cidr: args.pod_cidr,
            cluster_dns: args.cluster_dns,
            cluster_domain: args.cluster_domain.clone(),
        };
        return kubelet(
            ctx,
            &target,
            args.node_name,
            args.kubelet_port,
            args.kubelet_cgroup_root,
            args.pod_manifest_path,
            &args.kubelet_limits,
            &network,
        );
    };
    let config = SimulatedAgentConfig {
        nodes,
        name_prefix: args.node_name_prefix,
        first_index: args.first_index,
        cpu: args.cpu,
        memory: args.memory,
        pods: args.max_pods,
        heartbeat: Duration::from_secs(args.heartbeat_interval.max(1)),
        ..Default::default()
    };
    let runtime = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    runtime.block_on(async {
        let client = connect(&target).await?;
        eprintln!("skiff agent: simulating {} node(s)", config.nodes);
        tokio::select! {
            res = simulated_agent::run(client, config) => res?,
            _ = tokio::signal::ctrl_c() => {}
        }
        Ok(())
    })
}

/// How to check --server's certificate: the CA of --ca-cert, or the CA the server presents
/// if its key has the --discovery-token-ca-cert-hash pin (clap requires one of them, or
/// --insecure-skip-tls-verify, with --server).
fn server_trust(args: &AgentArgs) -> Result<ServerTrust> {
    use skiff_apiserver::ca_pin;
    if let Some(path) = &args.ca_cert {
        let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let certs = ca_pin::certificates_of_pem(&pem)
            .with_context(|| format!("--ca-cert {}", path.display()))?;
        return Ok(ServerTrust::RootCertificates(certs));
    }
    if let (Some(pin), Some(server)) = (&args.ca_cert_hash, &args.server) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the tokio runtime")?;
        let ca = runtime.block_on(ca_pin::discover_ca(server, pin))?;
        return Ok(ServerTrust::RootCertificates(vec![ca]));
    }
    Ok(ServerTrust::Unverified)
}

/// The engine network an agent's pods join: its subnet is the node's pod CIDR.
pub const POD_NETWORK: &str = "pods";

/// How an agent's node joins the cluster's networks.
struct NodeNetwork {
    node_ip: Option<std::net::Ipv4Addr>,
    pod_cidr: Option<ipnet::Ipv4Net>,
    cluster_dns: Option<std::net::Ipv4Addr>,
    cluster_domain: String,
}

/// The cluster IP of the `kube-dns` Service, which the server creates at start (retried
/// for a while: the agent may come up first).
async fn discover_cluster_dns(client: &kube::Client) -> Option<String> {
    use k8s_openapi::api::core::v1::Service;
    let api: kube::Api<Service> = kube::Api::namespaced(client.clone(), "kube-system");
    for _ in 0..60 {
        if let Ok(service) = api.get("kube-dns").await {
            if let Some(ip) = service.spec.and_then(|s| s.cluster_ip) {
                return Some(ip);
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    None
}

/// The target the kubelet connects with: after a TLS bootstrap (`--server` and a bootstrap
/// `--token`), the node's own client certificate in `ROOT/agent/kubelet.kubeconfig`,
/// requested with the token unless the file holds one valid for another hour; otherwise
/// (a kubeconfig, or another kind of token) `target` unchanged.
async fn node_credentials(target: &Target, root: &std::path::Path, node: &str) -> Result<Target> {
    use skiff_apiserver::bootstrap_token::BootstrapToken;
    use skiff_kubelet::bootstrap;
    let (None, Some(server), Some(token)) = (&target.kubeconfig, &target.server, &target.token)
    else {
        return Ok(target.clone());
    };
    if token.parse::<BootstrapToken>().is_err() {
        return Ok(target.clone());
    }
    let path = bootstrap::kubeconfig_path(root);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    if !bootstrap::has_valid_certificate(&path, now, Duration::from_secs(3600)) {
        eprintln!("skiff agent: requesting a client certificate for node {node}");
        let client = connect(target).await?;
        let credentials =
            bootstrap::request_client_certificate(client, node, Duration::from_secs(900)).await?;
        let ca = match &target.trust {
            ServerTrust::RootCertificates(certs) => Some(certs.as_slice()),
            ServerTrust::Unverified => None,
        };
        bootstrap::write_kubeconfig(
            &path,
            &bootstrap::kubeconfig(server, ca, node, &credentials),
        )?;
        eprintln!("skiff agent: wrote {}", path.display());
    }
    Ok(Target {
        kubeconfig: Some(path),
        ..target.clone()
    })
}

/// Runs a kubelet for this host against the target server until interrupted, with the
/// node's service proxy, NetworkPolicy enforcement and routes to the other nodes' pods.
#[allow(clippy::too_many_arguments)]
fn kubelet(
    ctx: &Context,
    target: &Target,
    node_name: Option<String>,
    port: u16,
    cgroup_root: String,
    pod_manifest_path: Option<std::path::PathBuf>,
    limits: &crate::cli::KubeletLimitArgs,
    network: &NodeNetwork,
) -> Result<()> {
    let engine = std::sync::Arc::new(ctx.engine()?);
    // The node's pods get a network of their own, whose subnet is the node's pod CIDR
    // (given here, or assigned by the server once the node registered).
    let cri = skiff_kubelet::EngineRuntime::new(engine.clone(), Some(POD_NETWORK.into()));
    if let Some(cidr) = &network.pod_cidr {
        engine
            .ensure_pod_network(POD_NETWORK, &cidr.to_string())
            .with_context(|| format!("--pod-cidr {cidr}"))?;
    }
    let mut config = skiff_kubelet::KubeletConfig {
        node_name: node_name.unwrap_or_else(skiff_kubelet::hostname),
        root: absolute(&ctx.roots().data),
        pod_cidr: network.pod_cidr.map(|c| c.to_string()),
        node_ip: network.node_ip.map(|ip| ip.to_string()),
        port,
        // The cluster CA, from the API.
        client_ca_pem: None,
        cluster_dns: None,
        cgroup_root: Some(cgroup_root),
        static_pod_path: Some(
            pod_manifest_path.unwrap_or_else(|| absolute(&ctx.roots().data).join("pod-manifests")),
        ),
        pod_max_pids: limits.pod_max_pids(),
        eviction_hard: limits.eviction_hard.0.clone(),
    };
    let runtime = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    runtime.block_on(async {
        let target = node_credentials(target, &config.root, &config.node_name).await?;
        let client = connect(&target).await?;
        let cri = std::sync::Arc::new(cri);
        let dns = match network.cluster_dns {
            Some(ip) => Some(ip.to_string()),
            None => discover_cluster_dns(&client).await,
        };
        match dns {
            Some(ip) => {
                config.cluster_dns = Some(skiff_kubelet::dns::ClusterDns {
                    servers: vec![ip],
                    domain: network.cluster_domain.clone(),
                })
            }
            None => eprintln!(
                "skiff agent: no kube-dns Service found; pods get this host's resolv.conf \
                 (see --cluster-dns)"
            ),
        }
        super::server::start_node_networking(&client, &engine, &config.node_name, "skiff agent")?;
        eprintln!("skiff agent: kubelet of node {}", config.node_name);
        tokio::select! {
            res = skiff_kubelet::run(client, cri, config) => res?,
            _ = tokio::signal::ctrl_c() => {}
        }
        Ok(())
    })
}
