//! `skiff agent --simulate N`: wiring to skiff-controllers' simulated agent.

use std::time::Duration;

use anyhow::{Context as _, Result};
use skiff_controllers::connect::{connect, Target};
use skiff_controllers::simulated_agent::{self, SimulatedAgentConfig};

use super::{absolute, Context};
use crate::cli::AgentArgs;

/// Where the local server of this root writes its admin kubeconfig.
pub fn root_kubeconfig(ctx: &Context) -> std::path::PathBuf {
    skiff_apiserver::kubeconfig_path(&absolute(&ctx.roots().data).join("server"))
}

/// Registers simulated nodes and serves them until interrupted.
pub fn agent(ctx: &Context, args: AgentArgs) -> Result<()> {
    let target = Target {
        kubeconfig: args.kubeconfig,
        server: args.server,
        token: args.token,
        root_kubeconfig: root_kubeconfig(ctx),
    };
    let config = SimulatedAgentConfig {
        nodes: args.simulate,
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
