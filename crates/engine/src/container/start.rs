//! `skiff start`: hand a created container to a new shim.

use std::os::unix::net::UnixStream;

use std::io::Write;

use skiff_runtime::attach::{encode, FrameKind};
use skiff_runtime::shim::{self, ShimConfig, ShimReport, SpawnError};

use super::Container;
use crate::rootfs::Overlay;
use crate::{Engine, EngineError, Result};

/// How `start` should connect the caller.
#[derive(Debug, Clone, Copy, Default)]
pub struct StartOptions {
    /// Attach before the process starts, so no output is missed (foreground `run`).
    pub attach: bool,
}

/// A started container, with the attach stream when one was requested.
pub struct Started {
    /// The container as it is now.
    pub container: Container,
    /// Connected attach socket (see `skiff_runtime::attach`).
    pub attach: Option<UnixStream>,
}

impl Engine {
    /// Joins the container's network (CNI ADD) through its init's namespace,
    /// and writes its address into its /etc/hosts.
    fn join_network(&self, container: &Container, pid: i32) -> Result<()> {
        let Some(network) = container.record.network.network() else {
            return Ok(());
        };
        let record = &container.record;
        let request = skiff_network::AttachRequest {
            network: network.to_string(),
            container_id: record.id.clone(),
            netns: std::path::PathBuf::from(format!("/proc/{pid}/ns/net")),
            interface: "eth0".into(),
            name: Some(record.name.clone()),
            aliases: record.request.network_aliases.clone(),
            ports: record.ports.clone(),
            ip: None,
        };
        let attachment = self
            .networking
            .attach(&request)
            .map_err(crate::networks::network_error)?;
        // Rewrite in place: the file is bind-mounted, a rename would not show.
        let hosts = format!(
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{}\t{}\n",
            attachment.ip, record.spec.hostname
        );
        std::fs::write(self.files(&record.id).hosts(), hosts)
            .map_err(EngineError::io("writing hosts"))?;
        Ok(())
    }

    /// Leaves the container's network (CNI DEL); idempotent.
    pub(crate) fn leave_network(&self, record: &super::ContainerRecord) {
        if let Some(network) = record.network.network() {
            if let Err(e) = self.networking.detach(network, &record.id) {
                tracing::warn!(container = %record.id, "leaving network {network}: {e}");
            }
        }
    }

    /// The spec to run, with the namespaces of `namespaces_of` joined (their
    /// holder's pid changes when it restarts, so this is resolved at each start).
    fn joined_spec(&self, record: &super::ContainerRecord) -> Result<skiff_runtime::ContainerSpec> {
        let mut spec = record.spec.clone();
        if let Some(holder) = &record.namespaces_of {
            let holder = self.find(holder)?;
            let skiff_runtime::ContainerStatus::Running { pid } = holder.status else {
                return Err(EngineError::InvalidArgument(format!(
                    "cannot join the namespaces of container {}: it is not running",
                    holder.record.name
                )));
            };
            let ns = |kind: &str| {
                skiff_runtime::NamespaceMode::Path(format!("/proc/{pid}/ns/{kind}").into())
            };
            spec.network = ns("net");
            spec.ipc = ns("ipc");
            spec.uts = ns("uts");
        }
        if let Some(target) = &record.pid_namespace_of {
            let target = self.find(target)?;
            let skiff_runtime::ContainerStatus::Running { pid } = target.status else {
                return Err(EngineError::InvalidArgument(format!(
                    "cannot join the PID namespace of container {}: it is not running",
                    target.record.name
                )));
            };
            spec.pid = skiff_runtime::NamespaceMode::Path(format!("/proc/{pid}/ns/pid").into());
        }
        Ok(spec)
    }

    /// Starts a created or exited container; a running one is left alone.
    pub fn start(&self, name_or_id: &str, opts: StartOptions) -> Result<Started> {
        let _span = tracing::debug_span!("engine.start", container = name_or_id).entered();
        let began = std::time::Instant::now();
        let container = self.find(name_or_id)?;
        if container.is_running() {
            return Ok(Started {
                container,
                attach: None,
            });
        }
        let id = container.record.id.clone();
        let files = self.files(&id);
        // The previous shim may still be removing the old cgroup and state.
        if let Ok(Some(old)) =
            skiff_runtime::status::read_json::<skiff_runtime::shim::ShimState>(&files.shim_state())
        {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while skiff_runtime::kill::process_alive(old.shim_pid)
                && std::time::Instant::now() < deadline
            {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
        // A restart forgets the previous run.
        for stale in [files.exit(), files.shim_state()] {
            let _ = std::fs::remove_file(stale);
        }
        let overlay = Overlay {
            base: self.roots.overlay(&id),
        };
        let image_layers = match self.images.resolve(&container.record.image_id) {
            Ok(image) => self.images.layer_dirs(&image)?,
            Err(e) => return Err(e.into()),
        };
        overlay
            .mount(self.mounter.as_ref(), &image_layers)
            .map_err(EngineError::io("mounting the container's root filesystem"))?;
        self.joined_spec(&container.record)?
            .write_bundle(&files.bundle())?;

        let run_dir = self.roots.container_run(&id);
        std::fs::create_dir_all(&run_dir)
            .map_err(EngineError::io(format!("creating {}", run_dir.display())))?;
        std::fs::create_dir_all(self.roots.runtime_state())
            .map_err(EngineError::io("creating runtime state dir"))?;
        // libcontainer refuses to create over leftovers of a run that died.
        let _ = std::fs::remove_dir_all(self.roots.runtime_state().join(&id));

        let mut exit_command = vec![self.skiff_exe.display().to_string()];
        exit_command.extend(self.global_args.iter().cloned());
        exit_command.extend(["container-cleanup".to_string(), id.clone()]);
        let attach_socket = run_dir.join("attach.sock");
        let config = ShimConfig {
            id: id.clone(),
            bundle: files.bundle(),
            state_root: self.roots.runtime_state(),
            log_path: files.log(),
            exit_path: files.exit(),
            state_path: files.shim_state(),
            attach_socket: attach_socket.clone(),
            stdin: container.record.request.interactive,
            terminal: container.record.request.tty,
            // Networking is set up between create and start: hold the container.
            wait_for_attach: opts.attach || container.record.network.network().is_some(),
            init: container.record.spec.init,
            cgroup_path: container.record.spec.cgroup_path.clone(),
            exit_command,
            shim_log: files.shim_log(),
            health: container.record.health.clone(),
            health_path: files.health(),
            health_exec: {
                let mut exec = vec![self.skiff_exe.display().to_string()];
                exec.extend(self.global_args.iter().cloned());
                exec.extend(["exec".to_string(), id.clone()]);
                exec
            },
        };
        let _ = std::fs::remove_file(files.health());
        let start_failed = |e: SpawnError| {
            let message = e.to_string();
            EngineError::StartFailed {
                exit_code: shim::exit_code_for_error(&message),
                message,
            }
        };
        tracing::debug!(elapsed = ?began.elapsed(), "bundle written");
        let mut handle = shim::spawn(
            &self.skiff_exe,
            &self.global_args,
            &config,
            &files.shim_config(),
        )
        .map_err(start_failed)?;
        let report = handle.next_report().map_err(start_failed)?;
        let mut attach = None;
        tracing::debug!(elapsed = ?began.elapsed(), "shim reported");
        if let ShimReport::Created { pid } = report {
            if config.wait_for_attach {
                let mut stream = UnixStream::connect(&attach_socket)
                    .map_err(EngineError::io("attaching to the container"))?;
                let joined = self.join_network(&container, pid);
                tracing::debug!(elapsed = ?began.elapsed(), "network joined");
                if joined.is_err() {
                    // Never start a container whose network is half set up.
                    let _ =
                        skiff_runtime::kill::signal_process(pid, nix::sys::signal::Signal::SIGKILL);
                }
                let _ = stream.write_all(&encode(FrameKind::Start, &[]));
                if let Err(e) = joined {
                    let _ = handle.next_report();
                    self.leave_network(&container.record);
                    return Err(e);
                }
                if opts.attach {
                    attach = Some(stream);
                }
            }
            handle.next_report().map_err(start_failed)?;
        }
        tracing::debug!(elapsed = ?began.elapsed(), "started");
        Ok(Started {
            container: self.find(&id)?,
            attach,
        })
    }
}
