//! `skiff controller-manager`: wiring to skiff-controllers, as a process of its own.

use anyhow::{Context as _, Result};
use skiff_controllers::connect::{connect, Target};
use skiff_controllers::ControllerManagerConfig;

use super::Context;
use crate::cli::ComponentArgs;

/// Runs the controllers against the server until interrupted.
pub fn controller_manager(ctx: &Context, args: ComponentArgs) -> Result<()> {
    let target = Target {
        kubeconfig: args.kubeconfig,
        root_kubeconfig: super::agent::root_kubeconfig(ctx),
        ..Default::default()
    };
    let runtime = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    runtime.block_on(async {
        let client = connect(&target).await?;
        tokio::select! {
            res = skiff_controllers::run(client, ControllerManagerConfig::default()) => res?,
            _ = tokio::signal::ctrl_c() => {}
        }
        Ok(())
    })
}
