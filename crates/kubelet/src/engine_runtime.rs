//! The CRI-shaped runtime over skiff's engine: a sandbox is an engine container
//! running the built-in pause process on the node's pod network; a pod's
//! containers are engine containers joining its namespaces.

use std::collections::BTreeMap;
use std::sync::Arc;

use skiff_engine::{Container, CreateOptions, CreateRequest, Engine, EngineError};
use skiff_runtime::ContainerStatus as EngineStatus;

use crate::cri::{
    self, ContainerConfig, ContainerState, ContainerStatus, CriError, ExecRequest, ImageService,
    PodSandboxConfig, PodSandboxStatus, Result, RuntimeService, SandboxState, StreamingProcess,
};

/// Value of [`cri::TYPE_LABEL`] on sandboxes.
const SANDBOX_TYPE: &str = "podsandbox";
/// Value of [`cri::TYPE_LABEL`] on containers.
const CONTAINER_TYPE: &str = "container";

/// The engine as the kubelet's runtime.
#[derive(Clone)]
pub struct EngineRuntime {
    engine: Arc<Engine>,
    /// The network sandboxes join (the node's pod network).
    network: Option<String>,
}

impl EngineRuntime {
    /// Wraps `engine`; sandboxes join `network` (the engine's default network when `None`).
    pub fn new(engine: Arc<Engine>, network: Option<String>) -> EngineRuntime {
        // Pods start in bursts: one check of the nftables table per second serves
        // all their attaches (each would otherwise run `nft` under the rules lock).
        engine
            .networking()
            .set_rules_recheck(std::time::Duration::from_secs(1));
        EngineRuntime { engine, network }
    }

    /// The pod network's subnet, the node's pod CIDR (created on first use).
    pub fn pod_cidr(&self) -> Option<String> {
        let name = match &self.network {
            Some(n) => n.clone(),
            None => skiff_engine::networks::NetworkMode::parse(None)
                .network()?
                .to_string(),
        };
        match self.engine.networking().network(&name) {
            Ok(n) => Some(n.subnet.to_string()),
            Err(e) => {
                tracing::warn!("pod network {name}: {e}");
                None
            }
        }
    }

    fn list_typed(&self, kind: &str, wanted: &BTreeMap<String, String>) -> Result<Vec<Container>> {
        // Filtered on the records, so only the matches' state files are read.
        self.engine
            .list_matching(|r| {
                let labels = &r.request.labels;
                labels.get(cri::TYPE_LABEL).map(String::as_str) == Some(kind)
                    && cri::matches(labels, wanted)
            })
            .map_err(err)
    }

    fn sandbox_status(&self, c: &Container) -> PodSandboxStatus {
        let ip = c.record.network.network().and_then(|n| {
            self.engine
                .networking()
                .attachment(n, &c.record.id)
                .ok()
                .flatten()
                .map(|a| a.ip.to_string())
        });
        PodSandboxStatus {
            id: c.record.id.clone(),
            state: if c.is_running() {
                SandboxState::Ready
            } else {
                SandboxState::NotReady
            },
            ip,
            created_at: c.record.created,
            labels: c.record.request.labels.clone(),
        }
    }
}

fn err(e: EngineError) -> CriError {
    match e {
        EngineError::NoSuchContainer(id) => CriError::NotFound(format!("container {id}")),
        other => CriError::Runtime(other.to_string()),
    }
}

/// Engine names are unique; these follow the kubelet's `k8s_<container>_<pod>_<ns>_<uid>_<attempt>`.
fn engine_name(container: &str, pod: &PodSandboxConfigRef<'_>, attempt: u32) -> String {
    format!(
        "k8s_{container}_{}_{}_{}_{attempt}",
        pod.name, pod.namespace, pod.uid
    )
}

struct PodSandboxConfigRef<'a> {
    name: &'a str,
    namespace: &'a str,
    uid: &'a str,
}

/// A uid or gid of the pod spec as the kernel's.
fn id_number(what: &str, id: i64) -> Result<u32> {
    u32::try_from(id).map_err(|_| CriError::Runtime(format!("invalid {what} {id}")))
}

/// The engine's `--security-opt` values for a CRI security context: seccomp (the
/// engine's default profile is `RuntimeDefault`) and no_new_privs.
fn security_opts(sc: &cri::LinuxContainerSecurityContext) -> Result<Vec<String>> {
    let seccomp = match &sc.seccomp {
        cri::SecurityProfile::Unconfined => Some("seccomp=unconfined".to_string()),
        cri::SecurityProfile::RuntimeDefault => None,
        cri::SecurityProfile::Localhost(path) => {
            let path = path.display().to_string();
            if !std::path::Path::new(&path).is_file() {
                return Err(CriError::Runtime(format!(
                    "failed to generate seccomp spec opts: cannot load seccomp profile \"{path}\": no such file"
                )));
            }
            Some(format!("seccomp={path}"))
        }
    };
    Ok(seccomp
        .into_iter()
        .chain([format!("no-new-privileges={}", sc.no_new_privs)])
        .collect())
}

/// A pull failure as the kubelet reports it: authentication failures carry the
/// registry's status.
fn pull_message(e: &skiff_images::RegistryError) -> String {
    use skiff_images::RegistryError as E;
    match e {
        E::AuthRequired { .. } | E::AuthFailed { .. } => format!("401 Unauthorized: {e}"),
        E::Denied { .. } => format!("403 Forbidden: {e}"),
        _ => e.to_string(),
    }
}

/// A CRI mount as the engine's `-v HOST:DEST[:ro]`.
fn bind_spec(m: &cri::Mount) -> Result<String> {
    let host = m.host_path.display().to_string();
    if host.contains(':') || m.container_path.contains(':') {
        return Err(CriError::Runtime(format!(
            "mount {host} -> {}: paths with ':' are not supported",
            m.container_path
        )));
    }
    let ro = if m.readonly { ":ro" } else { "" };
    Ok(format!("{host}:{}{ro}", m.container_path))
}

fn container_status(c: &Container) -> ContainerStatus {
    let (state, exit_code, finished_at, reason, message) = match &c.status {
        EngineStatus::Created => (
            ContainerState::Created,
            0,
            None,
            String::new(),
            String::new(),
        ),
        EngineStatus::Running { .. } => (
            ContainerState::Running,
            0,
            None,
            String::new(),
            String::new(),
        ),
        EngineStatus::Exited(e) => (
            ContainerState::Exited,
            e.exit_code,
            Some(e.finished_at),
            e.reason().to_string(),
            e.error.clone().unwrap_or_default(),
        ),
        EngineStatus::Dead => (
            ContainerState::Unknown,
            0,
            None,
            String::new(),
            String::new(),
        ),
    };
    ContainerStatus {
        id: c.record.id.clone(),
        state,
        image: c.record.image.clone(),
        image_ref: c.record.image_id.clone(),
        created_at: c.record.created,
        started_at: c.started_at,
        finished_at,
        exit_code,
        reason,
        message,
        labels: c.record.request.labels.clone(),
    }
}

impl RuntimeService for EngineRuntime {
    fn update_runtime_config(&self, pod_cidr: &str) -> Result<()> {
        match &self.network {
            Some(name) => self.engine.ensure_pod_network(name, pod_cidr).map_err(err),
            // The engine's default network has its own subnet, registered as the node's.
            None => Ok(()),
        }
    }

    fn run_pod_sandbox(&self, config: &PodSandboxConfig) -> Result<String> {
        let mut labels = config.labels.clone();
        labels.extend(cri::pod_labels(
            &config.name,
            &config.namespace,
            &config.uid,
        ));
        labels.insert(cri::TYPE_LABEL.into(), SANDBOX_TYPE.into());
        labels.insert(cri::ATTEMPT_LABEL.into(), config.attempt.to_string());
        let pod = PodSandboxConfigRef {
            name: &config.name,
            namespace: &config.namespace,
            uid: &config.uid,
        };
        let req = CreateRequest {
            image: config.image.clone(),
            name: Some(engine_name("POD", &pod, config.attempt)),
            hostname: Some(config.hostname.clone()),
            network: self.network.clone(),
            labels,
            dns: config.dns.as_ref().map(|d| skiff_engine::DnsSettings {
                nameservers: d.servers.clone(),
                searches: d.searches.clone(),
                options: d.options.clone(),
            }),
            // The pause process exits at SIGTERM at once.
            stop_timeout: Some(2),
            cgroup_parent: config.cgroup_parent.clone(),
            // The sandbox runs nothing but the pause loop: no seccomp filter to compile
            // for it, as containerd runs a sandbox without a pod-level seccomp profile
            // unconfined.
            security_opt: vec!["seccomp=unconfined".into()],
            ..Default::default()
        };
        let opts = CreateOptions {
            pause: true,
            ..Default::default()
        };
        let _span = tracing::debug_span!("run_pod_sandbox", pod = %config.name).entered();
        let record = self.engine.create_with(&req, &opts).map_err(err)?;
        if let Err(e) = self.engine.start(&record.id, Default::default()) {
            let _ = self.engine.remove(&record.id, true, false);
            return Err(err(e));
        }
        Ok(record.id)
    }

    fn stop_pod_sandbox(&self, id: &str) -> Result<()> {
        self.engine.stop(id, Some(2)).map(drop).map_err(err)
    }

    fn remove_pod_sandbox(&self, id: &str) -> Result<()> {
        self.engine.remove(id, true, false).map(drop).map_err(err)
    }

    fn pod_sandbox_status(&self, id: &str) -> Result<PodSandboxStatus> {
        let c = self.engine.find(id).map_err(err)?;
        Ok(self.sandbox_status(&c))
    }

    fn list_pod_sandboxes(
        &self,
        labels: &BTreeMap<String, String>,
    ) -> Result<Vec<PodSandboxStatus>> {
        Ok(self
            .list_typed(SANDBOX_TYPE, labels)?
            .iter()
            .map(|c| self.sandbox_status(c))
            .collect())
    }

    fn create_container(&self, sandbox_id: &str, config: &ContainerConfig) -> Result<String> {
        let _span = tracing::debug_span!("create_container", container = %config.name).entered();
        let sandbox = self.engine.find(sandbox_id).map_err(err)?;
        let sl = &sandbox.record.request.labels;
        let get = |k: &str| sl.get(k).cloned().unwrap_or_default();
        let (name, namespace, uid) = (
            get(cri::POD_NAME_LABEL),
            get(cri::POD_NAMESPACE_LABEL),
            get(cri::POD_UID_LABEL),
        );
        let mut labels = config.labels.clone();
        labels.extend(cri::pod_labels(&name, &namespace, &uid));
        labels.insert(cri::TYPE_LABEL.into(), CONTAINER_TYPE.into());
        labels.insert(cri::CONTAINER_NAME_LABEL.into(), config.name.clone());
        labels.insert(cri::ATTEMPT_LABEL.into(), config.attempt.to_string());
        // Kubernetes: `command` replaces ENTRYPOINT (and drops CMD), `args` replaces CMD.
        let (entrypoint, command) = match config.command.split_first() {
            Some((first, rest)) => {
                let mut command = rest.to_vec();
                command.extend(config.args.iter().cloned());
                (Some(first.clone()), command)
            }
            None => (None, config.args.clone()),
        };
        let pod = PodSandboxConfigRef {
            name: &name,
            namespace: &namespace,
            uid: &uid,
        };
        let sc = &config.security;
        let req = CreateRequest {
            image: config.image.clone(),
            name: Some(engine_name(&config.name, &pod, config.attempt)),
            entrypoint,
            command,
            env: config
                .envs
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect(),
            workdir: config.working_dir.clone(),
            hostname: Some(config.hostname.clone()),
            tty: config.tty,
            interactive: config.stdin,
            labels,
            volumes: config.mounts.iter().map(bind_spec).collect::<Result<_>>()?,
            memory: config.resources.memory_limit_in_bytes,
            memory_swap: config.resources.memory_swap_limit_in_bytes,
            cpu_shares: config.resources.cpu_shares,
            cpu_quota: config.resources.cpu_quota,
            cpu_period: config.resources.cpu_period,
            // A pod's containers share the cgroup parent of its sandbox (the pod's
            // cgroup), as containerd places them.
            cgroup_parent: sandbox.record.request.cgroup_parent.clone(),
            user: self.process_user(&config.image, sc)?,
            read_only: sc.readonly_rootfs,
            privileged: sc.privileged,
            cap_add: sc.add_capabilities.clone(),
            cap_drop: sc.drop_capabilities.clone(),
            security_opt: security_opts(sc)?,
            ..Default::default()
        };
        let opts = CreateOptions {
            namespaces_of: Some(sandbox.record.id.clone()),
            pid_namespace_of: config.pid_target.clone(),
            group_add: sc
                .supplemental_groups
                .iter()
                .map(|g| id_number("supplemental group", *g))
                .collect::<Result<_>>()?,
            sysctls: sc.sysctls.clone(),
            ..Default::default()
        };
        Ok(self.engine.create_with(&req, &opts).map_err(err)?.id)
    }

    fn start_container(&self, id: &str) -> Result<()> {
        self.engine
            .start(id, Default::default())
            .map(drop)
            .map_err(err)
    }

    fn stop_container(&self, id: &str, timeout: u32) -> Result<()> {
        self.engine.stop(id, Some(timeout)).map(drop).map_err(err)
    }

    fn remove_container(&self, id: &str) -> Result<()> {
        self.engine.remove(id, true, false).map(drop).map_err(err)
    }

    fn container_status(&self, id: &str) -> Result<ContainerStatus> {
        Ok(container_status(&self.engine.find(id).map_err(err)?))
    }

    fn list_containers(&self, labels: &BTreeMap<String, String>) -> Result<Vec<ContainerStatus>> {
        Ok(self
            .list_typed(CONTAINER_TYPE, labels)?
            .iter()
            .map(container_status)
            .collect())
    }

    fn container_stats(&self, id: &str) -> Result<Option<cri::ContainerStats>> {
        let c = self.engine.find(id).map_err(err)?;
        // The container's own cgroup, as the shim created it from the OCI spec.
        let reader = skiff_runtime::cgroups::CgroupReader::new(&c.record.spec.cgroup_path);
        if !reader.exists() {
            return Ok(None);
        }
        let usage = reader.usage();
        Ok(Some(cri::ContainerStats {
            timestamp: chrono::Utc::now(),
            cpu_usage_nanos: usage.cpu_nanos,
            memory_working_set_bytes: usage.memory_bytes,
        }))
    }

    // ExecSync: implemented in the `exec_sync` block at the end of this file.

    fn exec_sync(
        &self,
        id: &str,
        cmd: &[String],
        timeout: std::time::Duration,
    ) -> Result<cri::ExecSyncResult> {
        exec_sync::run(&self.engine, id, cmd, timeout)
    }

    // Streaming: implemented in the block at the end of this file.

    fn container_log_path(&self, id: &str) -> Result<std::path::PathBuf> {
        self.engine.log_path(id).map_err(err)
    }

    fn exec(&self, id: &str, request: &ExecRequest) -> Result<StreamingProcess> {
        self.stream_exec(id, request)
    }

    fn attach(&self, id: &str, request: &cri::AttachRequest) -> Result<StreamingProcess> {
        self.stream_attach(id, *request)
    }

    fn port_forward(&self, sandbox_id: &str, port: u16) -> Result<std::net::TcpStream> {
        self.connect_in_sandbox(sandbox_id, port)
    }
}

impl ImageService for EngineRuntime {
    fn image_status(&self, image: &str) -> Result<Option<String>> {
        Ok(self
            .engine
            .images()
            .resolve(image)
            .ok()
            .map(|r| r.id.to_string()))
    }

    fn pull_image(&self, image: &str, auth: Option<&cri::AuthConfig>) -> Result<String> {
        let fail = |message: String| CriError::Pull {
            image: image.to_string(),
            message,
        };
        let reference = skiff_images::Reference::parse(image).map_err(|e| fail(e.to_string()))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| fail(e.to_string()))?;
        let host = reference.registry();
        let host = host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host);
        let opts = skiff_images::PullOptions {
            // Registries on loopback may speak plain HTTP, as Docker allows for 127.0.0.0/8.
            insecure: host == "localhost" || host.starts_with("127.") || host == "[::1]",
            credentials: auth.map(|a| skiff_images::Credentials::new(&a.username, &a.password)),
            ..Default::default()
        };
        let record = rt
            .block_on(skiff_images::pull(
                self.engine.images(),
                &reference,
                &opts,
                &skiff_images::NoProgress,
            ))
            .map_err(|e| fail(pull_message(&e)))?;
        Ok(record.id.to_string())
    }

    fn image_user(&self, image: &str) -> Result<Option<String>> {
        let Ok(record) = self.engine.images().resolve(image) else {
            return Ok(None);
        };
        let config = self
            .engine
            .images()
            .config(&record)
            .map_err(|e| CriError::Runtime(format!("image {image}: {e}")))?;
        Ok(Some(
            config
                .config()
                .as_ref()
                .and_then(|c| c.user().clone())
                .unwrap_or_default(),
        ))
    }
}

impl EngineRuntime {
    /// The engine's `--user` for a security context: `runAsUser[:runAsGroup]`, or the
    /// image's user with `runAsGroup`; `None` leaves the image's.
    fn process_user(
        &self,
        image: &str,
        sc: &cri::LinuxContainerSecurityContext,
    ) -> Result<Option<String>> {
        let group = sc
            .run_as_group
            .map(|g| id_number("runAsGroup", g))
            .transpose()?;
        let user = match sc.run_as_user {
            Some(u) => id_number("runAsUser", u)?.to_string(),
            None if group.is_none() => return Ok(None),
            None => {
                let image_user = self.image_user(image)?.unwrap_or_default();
                match image_user.split(':').next().unwrap_or_default() {
                    "" => "0".to_string(),
                    u => u.to_string(),
                }
            }
        };
        Ok(Some(match group {
            Some(g) => format!("{user}:{g}"),
            None => user,
        }))
    }
}

// --- Streaming: exec, attach and port-forward over the engine. ---
//
// Exec runs `skiff exec` as a child process: libcontainer's tenant builder forks and must
// start from a single-threaded process, which the kubelet (inside a tokio runtime) is not.
// Attach speaks the shim's attach-socket protocol. Port-forward connects from a thread that
// entered the sandbox's network namespace.

impl EngineRuntime {
    fn running(&self, id: &str) -> Result<Container> {
        let c = self.engine.find(id).map_err(err)?;
        if !c.is_running() {
            return Err(CriError::Runtime(format!(
                "container {} is not running",
                c.record.name
            )));
        }
        Ok(c)
    }

    fn stream_exec(&self, id: &str, request: &ExecRequest) -> Result<StreamingProcess> {
        use std::process::Stdio;
        let c = self.running(id)?;
        let mut cmd = tokio::process::Command::new(self.engine.skiff_exe());
        cmd.args(self.engine.global_args()).arg("exec");
        if request.stdin {
            cmd.arg("-i");
        }
        if request.tty {
            cmd.arg("-t");
        }
        cmd.arg("--").arg(&c.record.id).args(&request.command);
        let io = |e: std::io::Error| CriError::Runtime(format!("exec in {}: {e}", c.record.name));
        if !request.tty {
            cmd.stdin(if request.stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
            let mut child = cmd.spawn().map_err(io)?;
            let stdin = child.stdin.take().map(|s| Box::new(s) as cri::ProcessInput);
            let stdout = Box::new(child.stdout.take().expect("piped stdout"));
            let stderr = Box::new(child.stderr.take().expect("piped stderr"));
            return Ok(StreamingProcess {
                stdin,
                stdout,
                stderr: Some(stderr),
                resize: None,
                exit: Box::pin(async move { wait_child(child).await }),
            });
        }
        // A terminal: `skiff exec -t` runs on the slave side of a pty of ours (as its
        // controlling terminal, so resizing our master side signals it SIGWINCH).
        let (master, slave) = open_pty().map_err(io)?;
        let dup = |fd: &std::os::fd::OwnedFd| fd.try_clone().map_err(io);
        cmd.stdin(Stdio::from(dup(&slave)?))
            .stdout(Stdio::from(dup(&slave)?))
            .stderr(Stdio::from(slave));
        // SAFETY: only async-signal-safe calls (setsid, ioctl) between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(io)?;
        // Our copy of the slave went with `cmd`'s stdio once spawned.
        drop(cmd);
        let resize_fd = dup(&master)?;
        let writer = tokio::fs::File::from_std(std::fs::File::from(dup(&master)?));
        let reader = tokio::fs::File::from_std(std::fs::File::from(master));
        Ok(StreamingProcess {
            stdin: request.stdin.then(|| Box::new(writer) as cri::ProcessInput),
            stdout: Box::new(PtyReader(reader)),
            stderr: None,
            resize: Some(Box::new(move |cols, rows| {
                set_window_size(&resize_fd, cols, rows)
            })),
            exit: Box::pin(async move { wait_child(child).await }),
        })
    }

    fn stream_attach(
        &self,
        id: &str,
        cri::AttachRequest {
            stdin,
            stdin_once,
            tty,
        }: cri::AttachRequest,
    ) -> Result<StreamingProcess> {
        use skiff_runtime::attach::{encode, Decoder, FrameKind};
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let c = self.running(id)?;
        let socket = self
            .engine
            .roots()
            .container_run(&c.record.id)
            .join("attach.sock");
        let io = |e: std::io::Error| CriError::Runtime(format!("attach to {}: {e}", c.record.name));
        let stream = std::os::unix::net::UnixStream::connect(&socket).map_err(io)?;
        stream.set_nonblocking(true).map_err(io)?;
        let stream = tokio::net::UnixStream::from_std(stream).map_err(io)?;
        let (mut from_shim, mut to_shim) = stream.into_split();

        // Frames to the shim (stdin, resizes) go through one writer task.
        let (frames, mut frames_rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
        tokio::spawn(async move {
            while let Some(frame) = frames_rx.recv().await {
                if to_shim.write_all(&frame).await.is_err() {
                    break;
                }
            }
        });

        // Output frames are split into the two output streams; the exit frame ends them.
        let (mut stdout_w, stdout_r) = tokio::io::duplex(64 * 1024);
        let (mut stderr_w, stderr_r) = tokio::io::duplex(64 * 1024);
        let (exit_tx, exit_rx) = tokio::sync::oneshot::channel::<i32>();
        tokio::spawn(async move {
            let mut decoder = Decoder::default();
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                let n = match from_shim.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                decoder.push(&buf[..n]);
                while let Ok(Some((kind, payload))) = decoder.next_frame() {
                    let ok = match kind {
                        FrameKind::Stdout => stdout_w.write_all(&payload).await.is_ok(),
                        FrameKind::Stderr if tty => stdout_w.write_all(&payload).await.is_ok(),
                        FrameKind::Stderr => stderr_w.write_all(&payload).await.is_ok(),
                        FrameKind::Exit => {
                            let code =
                                serde_json::from_slice::<skiff_runtime::ExitStatus>(&payload)
                                    .map(|s| s.exit_code)
                                    .unwrap_or(0);
                            let _ = exit_tx.send(code);
                            return;
                        }
                        _ => true,
                    };
                    if !ok {
                        return;
                    }
                }
            }
        });

        // Stdin: what the caller writes becomes stdin frames. When the caller's stdin ends
        // (or the session does), the container's stdin closes with `stdinOnce` and stays
        // open otherwise; the connection to the shim stays up either way until the
        // session ends (its output goes on after the caller's stdin ended).
        let stdin = if stdin {
            let (writer, mut reader) = tokio::io::duplex(64 * 1024);
            let frames = frames.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 32 * 1024];
                loop {
                    match reader.read(&mut buf).await {
                        Ok(0) => {
                            if stdin_once {
                                let _ = frames.send(encode(FrameKind::CloseStdin, &[]));
                            }
                            break;
                        }
                        Ok(n) => {
                            if frames.send(encode(FrameKind::Stdin, &buf[..n])).is_err() {
                                break;
                            }
                        }
                        Err(_) => break,
                    }
                }
            });
            Some(Box::new(writer) as cri::ProcessInput)
        } else {
            None
        };
        let name = c.record.name.clone();
        let connection = frames.clone();
        Ok(StreamingProcess {
            stdin,
            stdout: Box::new(stdout_r),
            stderr: (!tty).then(|| Box::new(stderr_r) as cri::ProcessOutput),
            resize: tty.then(|| {
                Box::new(move |cols: u16, rows: u16| {
                    let mut payload = rows.to_be_bytes().to_vec();
                    payload.extend_from_slice(&cols.to_be_bytes());
                    let _ = frames.send(encode(FrameKind::Resize, &payload));
                }) as Box<dyn Fn(u16, u16) + Send + Sync>
            }),
            exit: Box::pin(async move {
                // Held until the session ends: the last sender keeps the shim connection.
                let _connection = connection;
                exit_rx.await.map_err(|_| {
                    CriError::Runtime(format!("lost the attach connection to {name}'s shim"))
                })
            }),
        })
    }

    fn connect_in_sandbox(&self, sandbox_id: &str, port: u16) -> Result<std::net::TcpStream> {
        use std::os::fd::AsRawFd;
        let c = self.engine.find(sandbox_id).map_err(err)?;
        let EngineStatus::Running { pid } = c.status else {
            return Err(CriError::Runtime(format!(
                "sandbox {} is not running",
                c.record.name
            )));
        };
        let netns = std::fs::File::open(format!("/proc/{pid}/ns/net")).map_err(|e| {
            CriError::Runtime(format!(
                "network namespace of sandbox {}: {e}",
                c.record.name
            ))
        })?;
        // A thread of our own enters the namespace (setns changes only the calling
        // thread); the socket stays in the namespace it was created in.
        std::thread::spawn(move || {
            // SAFETY: setns on a valid namespace fd, affecting only this short-lived thread.
            if unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            std::net::TcpStream::connect_timeout(
                &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
                std::time::Duration::from_secs(5),
            )
        })
        .join()
        .map_err(|_| CriError::Runtime("port-forward thread panicked".into()))?
        .map_err(|e| {
            CriError::Runtime(format!(
                "failed to connect to localhost:{port} inside namespace \"{sandbox_id}\": {e}"
            ))
        })
    }
}

/// Waits for a child; its exit code, or 128+signal.
async fn wait_child(mut child: tokio::process::Child) -> Result<i32> {
    use std::os::unix::process::ExitStatusExt as _;
    let status = child
        .wait()
        .await
        .map_err(|e| CriError::Runtime(format!("waiting for exec: {e}")))?;
    Ok(status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}

/// A new pseudo-terminal: (master, slave).
fn open_pty() -> std::io::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    use std::os::fd::FromRawFd;
    let (mut master, mut slave) = (-1, -1);
    // SAFETY: openpty writes two fds into the integers we own; the other arguments may be null.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: openpty succeeded: both fds are open and ours alone.
    Ok(unsafe {
        (
            std::os::fd::OwnedFd::from_raw_fd(master),
            std::os::fd::OwnedFd::from_raw_fd(slave),
        )
    })
}

/// Sets a terminal's size.
fn set_window_size(fd: &std::os::fd::OwnedFd, cols: u16, rows: u16) {
    use std::os::fd::AsRawFd;
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads the winsize we own from a valid terminal fd.
    unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
}

/// A pty master read as a stream: EIO (the slave side closed) is the end of the stream.
struct PtyReader(tokio::fs::File);

impl tokio::io::AsyncRead for PtyReader {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match std::pin::Pin::new(&mut self.0).poll_read(cx, buf) {
            std::task::Poll::Ready(Err(e)) if e.raw_os_error() == Some(libc::EIO) => {
                std::task::Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

// --- ExecSync (probes and lifecycle hooks) ---------------------------------------
//
// A process forks into the container's namespaces only while single-threaded, so the
// kubelet (a threaded server) runs `skiff exec` as a child process, as the shim does
// for health checks, and collects its output and exit code.
mod exec_sync {
    use std::io::Read as _;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    use skiff_engine::Engine;

    use crate::cri::{CriError, ExecSyncResult, Result};

    /// Output kept per stream (CRI caps ExecSync output at 16 MiB; probes need less).
    const MAX_OUTPUT: u64 = 1 << 20;

    pub(super) fn run(
        engine: &Engine,
        id: &str,
        cmd: &[String],
        timeout: Duration,
    ) -> Result<ExecSyncResult> {
        if cmd.is_empty() {
            return Err(CriError::Runtime("exec: no command".into()));
        }
        let mut child = Command::new(engine.skiff_exe())
            .args(engine.global_args())
            .arg("exec")
            .arg(id)
            .args(cmd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| CriError::Runtime(format!("running skiff exec: {e}")))?;
        // Readers hand their output over a channel: a process the command left behind
        // may hold the pipes open, and must not hold the caller too.
        let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                if let Some(p) = pipe {
                    let _ = p.take(MAX_OUTPUT).read_to_end(&mut buf);
                }
                let _ = tx.send(buf);
            });
            rx
        };
        let out = drain(child.stdout.take().map(|p| Box::new(p) as _));
        let err = drain(child.stderr.take().map(|p| Box::new(p) as _));
        let deadline = Instant::now() + timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(CriError::Timeout(timeout));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => return Err(CriError::Runtime(format!("waiting for skiff exec: {e}"))),
            }
        };
        let grace = Duration::from_millis(500);
        Ok(ExecSyncResult {
            exit_code: status.code().unwrap_or(-1),
            stdout: out.recv_timeout(grace).unwrap_or_default(),
            stderr: err.recv_timeout(grace).unwrap_or_default(),
        })
    }
}
