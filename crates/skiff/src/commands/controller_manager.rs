//! `skiff controller-manager`: wiring to skiff-controllers, as a process of its own.

use anyhow::{Context as _, Result};
use skiff_controllers::connect::{connect, Target};
use skiff_controllers::nodeipam::{CidrSet, NodeIpamConfig};
use skiff_controllers::nodelifecycle::NodeLifecycleConfig;
use skiff_controllers::podautoscaler::PodAutoscalerConfig;
use skiff_controllers::podgc::PodGcConfig;
use skiff_controllers::servicelb::ServiceLbConfig;
use skiff_controllers::ControllerManagerConfig;

use super::Context;
use crate::cli::{ControllerArgs, ControllerManagerArgs};

/// The controllers' configuration from the command line.
pub(super) fn config(args: &ControllerArgs) -> Result<ControllerManagerConfig> {
    let cidrs = if args.allocate_node_cidrs {
        Some(
            CidrSet::new(args.cluster_cidr, args.node_cidr_mask_size)
                .with_context(|| format!("--cluster-cidr {}", args.cluster_cidr))?,
        )
    } else {
        None
    };
    Ok(ControllerManagerConfig {
        pod_gc: PodGcConfig {
            terminated_pod_gc_threshold: args.terminated_pod_gc_threshold,
            ..Default::default()
        },
        node_lifecycle: NodeLifecycleConfig {
            grace_period: args.node_monitor_grace_period,
            monitor_period: args.node_monitor_period,
        },
        pod_autoscaler: PodAutoscalerConfig {
            sync_period: args.horizontal_pod_autoscaler_sync_period,
            downscale_stabilization: args.horizontal_pod_autoscaler_downscale_stabilization,
            ..Default::default()
        },
        service_lb: ServiceLbConfig {
            pool: args.service_lb_pool.clone(),
        },
        node_ipam: NodeIpamConfig { cidrs },
        ..Default::default()
    })
}

/// Runs the controllers against the server until interrupted.
pub fn controller_manager(ctx: &Context, args: ControllerManagerArgs) -> Result<()> {
    let config = config(&args.controllers)?;
    let target = Target {
        kubeconfig: args.component.kubeconfig,
        root_kubeconfig: super::agent::root_kubeconfig(ctx),
        ..Default::default()
    };
    let runtime = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    runtime.block_on(async {
        let client = connect(&target).await?;
        tokio::select! {
            res = skiff_controllers::run(client, config) => res?,
            _ = tokio::signal::ctrl_c() => {}
        }
        Ok(())
    })
}
