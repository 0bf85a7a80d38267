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
        return kubelet(
            ctx,
            &target,
            args.node_name,
            args.kubelet_port,
            args.kubelet_cgroup_root,
            args.pod_manifest_path,
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

/// Runs a kubelet for this host against the target server until interrupted.
fn kubelet(
    ctx: &Context,
    target: &Target,
    node_name: Option<String>,
    port: u16,
    cgroup_root: String,
    pod_manifest_path: Option<std::path::PathBuf>,
) -> Result<()> {
    let cri = skiff_kubelet::EngineRuntime::new(std::sync::Arc::new(ctx.engine()?), None);
    let config = skiff_kubelet::KubeletConfig {
        node_name: node_name.unwrap_or_else(skiff_kubelet::hostname),
        root: absolute(&ctx.roots().data),
        pod_cidr: cri.pod_cidr(),
        port,
        // The cluster CA, from the API.
        client_ca_pem: None,
        cluster_dns: None,
        cgroup_root: Some(cgroup_root),
        static_pod_path: Some(
            pod_manifest_path.unwrap_or_else(|| absolute(&ctx.roots().data).join("pod-manifests")),
        ),
    };
    let runtime = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    runtime.block_on(async {
        let client = connect(target).await?;
        let cri = std::sync::Arc::new(cri);
        eprintln!("skiff agent: kubelet of node {}", config.node_name);
        tokio::select! {
            res = skiff_kubelet::run(client, cri, config) => res?,
            _ = tokio::signal::ctrl_c() => {}
        }
        Ok(())
    })
}
