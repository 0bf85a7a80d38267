//! Transient containers: one process run to completion over a root filesystem the caller
//! prepared and owns (an image builder's RUN step), with its output streamed back.
//!
//! Unlike [`Engine::create`], nothing is recorded under `containers/`, so these never show
//! in `ps`, and the rootfs is neither mounted nor removed here: the caller keeps the
//! overlay's upper dir as the step's filesystem change.

use std::path::{Path, PathBuf};

use rand::RngCore;
use skiff_runtime::attach::{pump_output, AttachSink};
use skiff_runtime::shim::{self, ShimConfig, SpawnError};
use skiff_runtime::{ContainerSpec, ExitStatus, Mount, NamespaceMode};

use crate::{users, Engine, EngineError, Result};

/// What to run in a transient container.
#[derive(Debug, Clone, Default)]
pub struct TransientRequest {
    /// The mounted root filesystem.
    pub rootfs: PathBuf,
    /// argv.
    pub args: Vec<String>,
    /// Environment as `KEY=value` (PATH included by the caller).
    pub env: Vec<String>,
    /// Absolute working directory (created in the rootfs when missing).
    pub cwd: String,
    /// User spec (`name`, `uid[:gid]`), resolved against the rootfs's /etc/passwd.
    pub user: String,
    /// Extra bind mounts (cache, secret and bind mounts of a build step).
    pub mounts: Vec<Mount>,
    /// Share the host's network namespace; otherwise a private one with only loopback.
    pub host_network: bool,
}

impl Engine {
    /// Runs `req` in a new container, sends its stdout/stderr to `sink` as they arrive and
    /// returns its exit status once it ended.
    pub fn run_transient(
        &self,
        req: &TransientRequest,
        sink: &mut dyn AttachSink,
    ) -> Result<ExitStatus> {
        let mut bytes = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut bytes);
        let id = hex::encode(bytes);
        let dir = self.roots.run.join("t").join(&id[..12]);
        std::fs::create_dir_all(&dir)
            .map_err(EngineError::io(format!("creating {}", dir.display())))?;
        let result = self.run_transient_in(&id, &dir, req, sink);
        let _ = std::fs::remove_dir_all(&dir);
        result
    }

    fn run_transient_in(
        &self,
        id: &str,
        dir: &Path,
        req: &TransientRequest,
        sink: &mut dyn AttachSink,
    ) -> Result<ExitStatus> {
        let user = users::resolve(&req.rootfs, &req.user)?;
        if !req.cwd.starts_with('/') {
            return Err(EngineError::InvalidArgument(format!(
                "the working directory '{}' is invalid, it needs to be an absolute path",
                req.cwd
            )));
        }
        let mut mounts = req.mounts.clone();
        // Name resolution files only where the image has them: creating mount points
        // would leave empty files in the caller's upper dir.
        let hosts = dir.join("hosts");
        std::fs::write(
            &hosts,
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
        )
        .map_err(EngineError::io("writing hosts"))?;
        let resolv = dir.join("resolv.conf");
        std::fs::copy("/etc/resolv.conf", &resolv)
            .or_else(|_| std::fs::write(&resolv, "").map(|_| 0))
            .map_err(EngineError::io("writing resolv.conf"))?;
        for (source, dest) in [(hosts, "etc/hosts"), (resolv, "etc/resolv.conf")] {
            if req.rootfs.join(dest).is_file() {
                mounts.push(Mount {
                    source,
                    destination: format!("/{dest}"),
                    readonly: false,
                    tmpfs: false,
                });
            }
        }
        let spec = ContainerSpec {
            id: id.to_string(),
            rootfs: req.rootfs.clone(),
            args: req.args.clone(),
            env: req.env.clone(),
            cwd: req.cwd.clone(),
            user,
            hostname: id[..12].to_string(),
            mounts,
            network: if req.host_network {
                NamespaceMode::Host
            } else {
                NamespaceMode::Private
            },
            cgroup_path: format!("/skiff/{id}"),
            ..Default::default()
        };
        let bundle = dir.join("bundle");
        spec.write_bundle(&bundle)?;
        std::fs::create_dir_all(self.roots.runtime_state())
            .map_err(EngineError::io("creating runtime state dir"))?;
        let attach_socket = dir.join("attach.sock");
        let config = ShimConfig {
            id: id.to_string(),
            bundle,
            state_root: self.roots.runtime_state(),
            log_path: dir.join("container.log"),
            exit_path: dir.join("exit.json"),
            state_path: dir.join("shim.json"),
            attach_socket: attach_socket.clone(),
            stdin: false,
            terminal: false,
            wait_for_attach: true,
            init: false,
            cgroup_path: spec.cgroup_path.clone(),
            exit_command: Vec::new(),
            shim_log: dir.join("shim.log"),
            health: None,
            health_path: PathBuf::new(),
            health_exec: Vec::new(),
        };
        let start_failed = |e: SpawnError| {
            let message = e.to_string();
            EngineError::StartFailed {
                exit_code: shim::exit_code_for_error(&message),
                message,
            }
        };
        let mut handle = shim::spawn(
            &self.skiff_exe,
            &self.global_args,
            &config,
            &dir.join("shim-config.json"),
        )
        .map_err(start_failed)?;
        handle.next_report().map_err(start_failed)?;
        let mut stream = std::os::unix::net::UnixStream::connect(&attach_socket)
            .map_err(EngineError::io("attaching to the container"))?;
        // The shim holds the container until its first client says `Start`.
        std::io::Write::write_all(
            &mut stream,
            &skiff_runtime::attach::encode(skiff_runtime::attach::FrameKind::Start, &[]),
        )
        .map_err(EngineError::io("starting the container"))?;
        handle.next_report().map_err(start_failed)?;
        let status = pump_output(&mut stream, sink)
            .map_err(EngineError::io("reading the container's output"))?;
        match status {
            Some(s) => Ok(s),
            // The shim went away without an exit frame: read what it recorded.
            None => skiff_runtime::status::read_json::<ExitStatus>(&config.exit_path)
                .ok()
                .flatten()
                .ok_or_else(|| EngineError::StartFailed {
                    message: format!(
                        "the container ended without an exit status (see {})",
                        config.shim_log.display()
                    ),
                    exit_code: 125,
                }),
        }
    }
}
