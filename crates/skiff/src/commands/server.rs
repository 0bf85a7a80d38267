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
    // The kubelet of this host runs pods on the engine of the same root.
    let kubelet = if args.disable_kubelet {
        None
    } else {
        let cri = skiff_kubelet::EngineRuntime::new(std::sync::Arc::new(ctx.engine()?), None);
        let config = skiff_kubelet::KubeletConfig {
            node_name: args
                .node_name
                .clone()
                .unwrap_or_else(skiff_kubelet::hostname),
            root: absolute(&ctx.roots().data),
            pod_cidr: cri.pod_cidr(),
        };
        Some((std::sync::Arc::new(cri), config))
    };
    let config = ServerConfig {
        data_dir: data_dir(ctx),
        bind_address: args.bind_address,
        port: args.port,
        datastore_endpoints: args.datastore_endpoint,
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
        if let Some((cri, config)) = kubelet {
            let client =
                skiff_controllers::connect::from_kubeconfig(server.kubeconfig_path()).await?;
            tokio::spawn(async move {
                if let Err(e) = skiff_kubelet::run(client, cri, config).await {
                    tracing::error!("kubelet: {e}");
                }
            });
        }
        if scheduler || controllers {
            let client =
                skiff_controllers::connect::from_kubeconfig(server.kubeconfig_path()).await?;
            if scheduler {
                let config = skiff_scheduler::SchedulerConfig::default();
                tokio::spawn(skiff_scheduler::run(client.clone(), config));
            }
            if controllers {
                let config = skiff_controllers::ControllerManagerConfig::default();
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

/// Prints the admin kubeconfig.
pub fn kubeconfig(ctx: &Context) -> Result<()> {
    print!("{}", read_kubeconfig(&data_dir(ctx))?);
    Ok(())
}

/// glibc gives each thread that allocates under contention an arena of its own, and keeps
/// what is freed in each: with many request threads the server's memory grows with the
/// thread count rather than with what it holds. Two arenas keep it close to the live data.
fn limit_allocator_arenas() {
    // SAFETY: mallopt only tunes the allocator; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

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
