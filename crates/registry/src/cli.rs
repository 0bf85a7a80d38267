//! `skiff registry`: the flags, and running the server until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Args;

use crate::server::{Config, Server};
use crate::Error;

/// Run an OCI distribution registry.
#[derive(Debug, Clone, Args)]
pub struct RegistryArgs {
    /// Address to listen on (port 0 picks a free port, printed at start).
    #[arg(long, default_value = "127.0.0.1:5000")]
    pub addr: SocketAddr,
    /// Storage directory [default: DATA-ROOT/registry].
    #[arg(long, value_name = "DIR")]
    pub root_dir: Option<PathBuf>,
    /// PEM certificate chain to serve HTTPS (with --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key to serve HTTPS (with --tls-cert).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// htpasswd file with bcrypt entries (`htpasswd -B`): require Basic or bearer auth.
    #[arg(long, value_name = "FILE")]
    pub htpasswd: Option<PathBuf>,
    /// With --htpasswd, let clients without credentials pull.
    #[arg(long, requires = "htpasswd")]
    pub anonymous_pull: bool,
}

impl RegistryArgs {
    /// The server configuration; `default_root` when `--root-dir` is not given.
    pub fn config(&self, default_root: &Path) -> Config {
        Config {
            addr: self.addr,
            root: self
                .root_dir
                .clone()
                .unwrap_or_else(|| default_root.to_path_buf()),
            tls: self.tls_cert.clone().zip(self.tls_key.clone()),
            htpasswd: self.htpasswd.clone(),
            anonymous_pull: self.anonymous_pull,
        }
    }
}

/// Runs the registry in the foreground until SIGINT or SIGTERM.
///
/// Prints `listening on URL` on stdout once the port is bound, so scripts (and tests) can
/// start it with `--addr 127.0.0.1:0` and read the port.
pub fn run(args: &RegistryArgs, default_root: &Path) -> Result<(), Error> {
    let config = args.config(default_root);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    rt.block_on(async {
        let server = Server::bind(&config).await?;
        println!("listening on {}", server.url());
        tracing::info!(root = %config.root.display(), "registry storage");
        server.serve(shutdown_signal()).await;
        Ok(())
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
