//! The kubelet's runtime interface, shaped like CRI's `RuntimeService` and
//! `ImageService` (k8s.io/cri-api), so pod workers never reach into the engine.
//!
//! Calls are synchronous (the engine is); the kubelet runs them on blocking threads.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

/// Label naming the pod's UID on every sandbox and container (as the kubelet sets it).
pub const POD_UID_LABEL: &str = "io.kubernetes.pod.uid";
/// Label naming the pod.
pub const POD_NAME_LABEL: &str = "io.kubernetes.pod.name";
/// Label naming the pod's namespace.
pub const POD_NAMESPACE_LABEL: &str = "io.kubernetes.pod.namespace";
/// Label naming the container in the pod spec.
pub const CONTAINER_NAME_LABEL: &str = "io.kubernetes.container.name";
/// Label holding the container's attempt (its restart count when it was created).
pub const ATTEMPT_LABEL: &str = "io.kubernetes.container.attempt";
/// Label naming the node whose kubelet made the sandbox (kubelets of several nodes
/// may share one engine).
pub const NODE_LABEL: &str = "dev.skiff.node";
/// Label telling sandboxes (`podsandbox`) from containers (`container`), as dockershim did.
pub const TYPE_LABEL: &str = "io.kubernetes.docker.type";

/// A runtime failure.
#[derive(Debug, thiserror::Error)]
pub enum CriError {
    /// The sandbox or container does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The image is not present and may not be pulled.
    #[error("image {0:?} not present")]
    ImageNotPresent(String),
    /// Pulling an image failed.
    #[error("pulling image {image:?}: {message}")]
    Pull {
        /// The image.
        image: String,
        /// Why.
        message: String,
    },
    /// Any other runtime failure.
    #[error("{0}")]
    Runtime(String),
    /// A command run with a timeout (`exec_sync`) did not finish in time.
    #[error("command timed out after {0:?}")]
    Timeout(std::time::Duration),
}

/// Result of runtime calls.
pub type Result<T, E = CriError> = std::result::Result<T, E>;

/// What `RunPodSandbox` needs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodSandboxConfig {
    /// Pod name.
    pub name: String,
    /// Pod namespace.
    pub namespace: String,
    /// Pod UID.
    pub uid: String,
    /// How many sandboxes this pod had before.
    pub attempt: u32,
    /// Hostname inside the pod (the pod's name, as Kubernetes sets it).
    pub hostname: String,
    /// An image present on the node whose filesystem is the pause process's root; the
    /// pause process itself is built into skiff and reads nothing from it.
    pub image: String,
    /// Labels (the pod-identifying ones are added by the runtime).
    pub labels: BTreeMap<String, String>,
    /// The pod's resolv.conf (CRI's `DNSConfig`); the runtime's default when `None`.
    pub dns: Option<DnsConfig>,
    /// The cgroup the sandbox's and its containers' cgroups go in (CRI's
    /// `LinuxPodSandboxConfig.cgroup_parent`: the pod's cgroup); the runtime's default
    /// when `None`.
    pub cgroup_parent: Option<String>,
}

/// CRI's `DNSConfig`: what the sandbox's resolv.conf says; its containers share it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsConfig {
    /// `nameserver` lines.
    pub servers: Vec<String>,
    /// The `search` list.
    pub searches: Vec<String>,
    /// `options`.
    pub options: Vec<String>,
}

/// Whether a sandbox's namespaces are held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SandboxState {
    /// The pause process runs; containers can join it.
    Ready,
    /// The pause process is gone.
    NotReady,
}

/// `PodSandboxStatus`.
#[derive(Debug, Clone, PartialEq)]
pub struct PodSandboxStatus {
    /// Sandbox id.
    pub id: String,
    /// Its state.
    pub state: SandboxState,
    /// The pod IP from the node's pod network.
    pub ip: Option<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
}

/// What `CreateContainer` needs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContainerConfig {
    /// Container name in the pod spec.
    pub name: String,
    /// Restart count this instance stands for.
    pub attempt: u32,
    /// Image reference.
    pub image: String,
    /// Replaces the image's ENTRYPOINT when not empty (`command`).
    pub command: Vec<String>,
    /// Replaces the image's CMD when not empty (`args`).
    pub args: Vec<String>,
    /// Working directory.
    pub working_dir: Option<String>,
    /// Environment, in order.
    pub envs: Vec<(String, String)>,
    /// Hostname (the pod's).
    pub hostname: String,
    /// Allocate a terminal.
    pub tty: bool,
    /// Keep stdin open.
    pub stdin: bool,
    /// Labels (the pod-identifying ones are added by the caller).
    pub labels: BTreeMap<String, String>,
    /// Bind mounts of the pod's volumes.
    pub mounts: Vec<Mount>,
    /// cgroup limits (CRI's `LinuxContainerConfig.resources`).
    pub resources: LinuxContainerResources,
    /// Users, capabilities, seccomp and the like (CRI's
    /// `LinuxContainerConfig.security_context`).
    pub security: LinuxContainerSecurityContext,
    /// The id of a container whose PID namespace this one joins (CRI's
    /// `NamespaceOption` with `pid: TARGET` and its `target_id`: an ephemeral container
    /// with `targetContainerName`); its own PID namespace when `None`.
    pub pid_target: Option<String>,
}

/// CRI's `LinuxContainerSecurityContext`: the container's process identity and
/// privileges, already merged from the pod's and the container's `securityContext`
/// ([`crate::security_context`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinuxContainerSecurityContext {
    /// The uid of the process; the image's USER when `None`.
    pub run_as_user: Option<i64>,
    /// The gid of the process; the user's primary group when `None`.
    pub run_as_group: Option<i64>,
    /// Supplementary groups added to the user's own (`supplementalGroups`, `fsGroup`).
    pub supplemental_groups: Vec<i64>,
    /// Mount the root filesystem read-only.
    pub readonly_rootfs: bool,
    /// All capabilities, no seccomp, no masked paths, the host's devices.
    pub privileged: bool,
    /// Capabilities added to the runtime's default set (`NET_ADMIN` or `CAP_NET_ADMIN`, `ALL`).
    pub add_capabilities: Vec<String>,
    /// Capabilities dropped from it (`ALL` empties it before additions).
    pub drop_capabilities: Vec<String>,
    /// Set no_new_privs: setuid binaries and file capabilities grant nothing.
    pub no_new_privs: bool,
    /// The seccomp filter.
    pub seccomp: SecurityProfile,
    /// Namespaced kernel parameters of the pod (`sysctls`).
    pub sysctls: Vec<(String, String)>,
}

/// CRI's `SecurityProfile` for seccomp.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum SecurityProfile {
    /// No filter: Kubernetes' default when no profile is set.
    #[default]
    Unconfined,
    /// The runtime's default profile.
    RuntimeDefault,
    /// A profile file on the node.
    Localhost(std::path::PathBuf),
}

/// CRI's `AuthConfig`: credentials for one pull.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct AuthConfig {
    /// User name.
    pub username: String,
    /// Password (or token).
    pub password: String,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// CRI's `LinuxContainerResources`: a container's cgroup limits; `None` leaves the
/// runtime's default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinuxContainerResources {
    /// CFS period in microseconds.
    pub cpu_period: Option<u64>,
    /// CFS quota in microseconds per period.
    pub cpu_quota: Option<i64>,
    /// Relative CPU weight in cgroup v1 shares (the runtime converts for cgroup v2).
    pub cpu_shares: Option<u64>,
    /// Memory limit in bytes.
    pub memory_limit_in_bytes: Option<i64>,
    /// Memory plus swap limit in bytes (equal to the memory limit: no swap).
    pub memory_swap_limit_in_bytes: Option<i64>,
}

/// CRI's `Mount`: a path of the node bind-mounted into a container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mount {
    /// Path inside the container.
    pub container_path: String,
    /// Path on the node.
    pub host_path: std::path::PathBuf,
    /// Mounted read-only.
    pub readonly: bool,
}

/// CRI's `ExecSyncResponse`: how a command run in a container ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecSyncResult {
    /// Its exit code.
    pub exit_code: i32,
    /// What it wrote to stdout.
    pub stdout: Vec<u8>,
    /// What it wrote to stderr.
    pub stderr: Vec<u8>,
}

/// CRI's `ContainerState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerState {
    /// Created, never started.
    Created,
    /// Its process runs.
    Running,
    /// Its process ended (or never could start).
    Exited,
    /// The runtime lost track of it.
    Unknown,
}

/// `ContainerStatus`.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerStatus {
    /// Container id.
    pub id: String,
    /// State.
    pub state: ContainerState,
    /// Image as named.
    pub image: String,
    /// Image id (`sha256:...`).
    pub image_ref: String,
    /// When created.
    pub created_at: DateTime<Utc>,
    /// When its process started.
    pub started_at: Option<DateTime<Utc>>,
    /// When its process ended.
    pub finished_at: Option<DateTime<Utc>>,
    /// Exit code, once exited.
    pub exit_code: i32,
    /// Why it exited: `Completed`, `Error`, `OOMKilled`, `ContainerCannotRun`.
    pub reason: String,
    /// Details (why it could not run).
    pub message: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
}

impl ContainerStatus {
    /// The container's name in the pod spec.
    pub fn name(&self) -> &str {
        self.labels
            .get(CONTAINER_NAME_LABEL)
            .map(String::as_str)
            .unwrap_or("")
    }

    /// The attempt this instance stands for.
    pub fn attempt(&self) -> u32 {
        self.labels
            .get(ATTEMPT_LABEL)
            .and_then(|a| a.parse().ok())
            .unwrap_or(0)
    }
}

/// CRI's `ContainerStats`: the cumulative cpu time and the memory working set of a
/// container, when they were read.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerStats {
    /// When the figures were read.
    pub timestamp: DateTime<Utc>,
    /// cpu time consumed since the container started, nanoseconds (`usage_core_nano_seconds`).
    pub cpu_usage_nanos: u64,
    /// Memory in use minus the inactive file cache, bytes (`working_set_bytes`).
    pub memory_working_set_bytes: u64,
}

/// CRI's `RuntimeService`: sandboxes and containers.
pub trait RuntimeService: Send + Sync {
    /// Gives the runtime the node's pod CIDR, the subnet sandboxes take their addresses
    /// from (CRI's `UpdateRuntimeConfig`); a runtime that picks its own ignores it.
    fn update_runtime_config(&self, pod_cidr: &str) -> Result<()> {
        let _ = pod_cidr;
        Ok(())
    }
    /// Creates and starts a sandbox holding the pod's namespaces; returns its id.
    fn run_pod_sandbox(&self, config: &PodSandboxConfig) -> Result<String>;
    /// Stops the sandbox's pause process (its containers must be stopped first).
    fn stop_pod_sandbox(&self, id: &str) -> Result<()>;
    /// Removes a stopped sandbox and releases its IP.
    fn remove_pod_sandbox(&self, id: &str) -> Result<()>;
    /// The sandbox's state and IP.
    fn pod_sandbox_status(&self, id: &str) -> Result<PodSandboxStatus>;
    /// Sandboxes whose labels include all of `labels`.
    fn list_pod_sandboxes(
        &self,
        labels: &BTreeMap<String, String>,
    ) -> Result<Vec<PodSandboxStatus>>;
    /// Creates a container joining the sandbox's namespaces; returns its id.
    fn create_container(&self, sandbox_id: &str, config: &ContainerConfig) -> Result<String>;
    /// Starts a created container.
    fn start_container(&self, id: &str) -> Result<()>;
    /// Stops a container: SIGTERM (its stop signal), `timeout` seconds, then SIGKILL.
    fn stop_container(&self, id: &str, timeout: u32) -> Result<()>;
    /// Removes a container.
    fn remove_container(&self, id: &str) -> Result<()>;
    /// The container's state.
    fn container_status(&self, id: &str) -> Result<ContainerStatus>;
    /// Containers (not sandboxes) whose labels include all of `labels`.
    fn list_containers(&self, labels: &BTreeMap<String, String>) -> Result<Vec<ContainerStatus>>;

    // --- ExecSync (probes and lifecycle hooks) ---

    /// Runs `cmd` in the running container and waits for it, at most `timeout`
    /// (CRI's `ExecSync`); [`CriError::Timeout`] when it takes longer.
    fn exec_sync(
        &self,
        id: &str,
        cmd: &[String],
        timeout: std::time::Duration,
    ) -> Result<ExecSyncResult>;

    /// The container's cpu and memory (`ContainerStats`); `None` when the runtime cannot
    /// tell (the container has no cgroup, or the runtime measures nothing).
    fn container_stats(&self, id: &str) -> Result<Option<ContainerStats>> {
        let _ = id;
        Ok(None)
    }

    // --- Streaming: CRI's Exec, Attach, PortForward and the container's log path. ---
    // CRI hands out a URL of the runtime's streaming server; skiff's kubelet serves the
    // streams itself, so these return the process's stdio instead. The defaults refuse,
    // for runtimes (the fake) that stream nothing.

    /// The container's CRI-format log file (`ContainerStatus.log_path`).
    fn container_log_path(&self, id: &str) -> Result<std::path::PathBuf> {
        Err(CriError::Runtime(format!(
            "container {id}: this runtime keeps no logs"
        )))
    }

    /// Runs a command in the running container `id` (`Exec`).
    fn exec(&self, id: &str, request: &ExecRequest) -> Result<StreamingProcess> {
        let _ = request;
        Err(CriError::Runtime(format!(
            "container {id}: this runtime cannot exec"
        )))
    }

    /// Attaches to the running container `id`'s own stdio (`Attach`).
    fn attach(&self, id: &str, request: &AttachRequest) -> Result<StreamingProcess> {
        let _ = request;
        Err(CriError::Runtime(format!(
            "container {id}: this runtime cannot attach"
        )))
    }

    /// Connects to `port` on the loopback of the sandbox's network namespace (`PortForward`).
    fn port_forward(&self, sandbox_id: &str, port: u16) -> Result<std::net::TcpStream> {
        let _ = port;
        Err(CriError::Runtime(format!(
            "sandbox {sandbox_id}: this runtime cannot forward ports"
        )))
    }
}

/// What `Exec` runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecRequest {
    /// argv.
    pub command: Vec<String>,
    /// Whether the caller sends stdin.
    pub stdin: bool,
    /// Whether the command gets a terminal (its stderr then goes to the terminal too).
    pub tty: bool,
}

/// What `Attach` connects to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AttachRequest {
    /// Whether the caller sends stdin.
    pub stdin: bool,
    /// The container's `stdinOnce`: its stdin closes when this session's does; otherwise
    /// it stays open for the next session.
    pub stdin_once: bool,
    /// Whether the container has a terminal.
    pub tty: bool,
}

/// A byte stream read from a process.
pub type ProcessOutput = Box<dyn tokio::io::AsyncRead + Send + Unpin>;
/// A byte stream written to a process.
pub type ProcessInput = Box<dyn tokio::io::AsyncWrite + Send + Unpin>;

/// The stdio of an exec'd command or an attached container, as the kubelet streams it.
pub struct StreamingProcess {
    /// Its stdin when asked for; shutting it down closes the process's stdin.
    pub stdin: Option<ProcessInput>,
    /// Its stdout (the terminal with a tty).
    pub stdout: ProcessOutput,
    /// Its stderr (none with a tty).
    pub stderr: Option<ProcessOutput>,
    /// Sets its terminal's size (columns, rows); none without a tty.
    pub resize: Option<Box<dyn Fn(u16, u16) + Send + Sync>>,
    /// Resolves to its exit code (128+signal when killed).
    pub exit: futures::future::BoxFuture<'static, Result<i32>>,
}

impl std::fmt::Debug for StreamingProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamingProcess")
            .field("stdin", &self.stdin.is_some())
            .field("stderr", &self.stderr.is_some())
            .field("tty", &self.resize.is_some())
            .finish_non_exhaustive()
    }
}

/// CRI's `ImageService`.
pub trait ImageService: Send + Sync {
    /// The image's id when present on the node.
    fn image_status(&self, image: &str) -> Result<Option<String>>;
    /// Pulls the image, with `auth` when given (else anonymously); returns its id.
    fn pull_image(&self, image: &str, auth: Option<&AuthConfig>) -> Result<String>;
    /// The image's configured user (`USER`, as `user[:group]`; empty for root), as
    /// `ImageStatus` reports its uid or username; `None` when the image is not present.
    fn image_user(&self, image: &str) -> Result<Option<String>> {
        let _ = image;
        Ok(None)
    }
}

/// Labels naming one pod.
pub fn pod_labels(name: &str, namespace: &str, uid: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (POD_NAME_LABEL.to_string(), name.to_string()),
        (POD_NAMESPACE_LABEL.to_string(), namespace.to_string()),
        (POD_UID_LABEL.to_string(), uid.to_string()),
    ])
}

/// Whether `labels` include every pair of `wanted`.
pub fn matches(labels: &BTreeMap<String, String>, wanted: &BTreeMap<String, String>) -> bool {
    wanted.iter().all(|(k, v)| labels.get(k) == Some(v))
}
