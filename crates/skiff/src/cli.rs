//! The command line, as Docker users know it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// skiff: Kubernetes and its container engine in one binary.
#[derive(Debug, Parser)]
#[command(name = "skiff", version, about, propagate_version = true)]
pub struct Cli {
    /// State root: data in DIR, runtime state in DIR/run (default /var/lib/skiff and /run/skiff).
    #[arg(long, global = true, env = "SKIFF_ROOT", value_name = "DIR")]
    pub root: Option<PathBuf>,

    /// Log level for diagnostics on stderr (error, warn, info, debug, trace).
    #[arg(
        long,
        global = true,
        env = "SKIFF_LOG",
        default_value = "warn,libcontainer=off,libcgroups=off"
    )]
    pub log_level: String,

    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// All commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create and run a new container from an image.
    Run(RunArgs),
    /// Create a new container without starting it.
    Create(RunArgs),
    /// Start one or more stopped containers.
    Start(StartArgs),
    /// List containers.
    Ps(PsArgs),
    /// Fetch the logs of a container.
    Logs(LogsArgs),
    /// Stop one or more running containers.
    Stop(StopArgs),
    /// Restart one or more containers.
    Restart(StopArgs),
    /// Kill one or more running containers.
    Kill(KillArgs),
    /// Remove one or more containers.
    Rm(RmArgs),
    /// Execute a command in a running container.
    Exec(ExecArgs),
    /// Attach to a running container's output (and input with -i).
    Attach(AttachArgs),
    /// Block until containers stop, then print their exit codes.
    Wait(NamesArgs),
    /// Display detailed information on containers or images.
    Inspect(InspectArgs),
    /// List port mappings or a specific mapping for the container.
    Port(PortArgs),
    /// List images.
    Images(ImagesArgs),
    /// Download an image from a registry.
    Pull(PullArgs),
    /// Upload an image to a registry.
    Push(PushArgs),
    /// Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE.
    Tag(TagArgs),
    /// Remove one or more images.
    Rmi(RmiArgs),
    /// Load images from a tar archive (docker-archive or OCI archive).
    Load(LoadArgs),
    /// Save images to a tar archive.
    Save(SaveArgs),
    /// Show the history of an image.
    History(HistoryArgs),
    /// Build an image from a Dockerfile.
    Build(BuildArgs),
    /// Manage the build cache.
    #[command(subcommand)]
    Builder(BuilderCommand),
    /// Log in to a registry.
    Login(LoginArgs),
    /// Run an OCI distribution registry (storage in DATA-ROOT/registry by default).
    Registry(skiff_registry::cli::RegistryArgs),
    /// Manage volumes.
    #[command(subcommand)]
    Volume(VolumeCommand),
    /// Manage networks.
    #[command(subcommand)]
    Network(NetworkCommand),
    /// Manage skiff itself.
    #[command(subcommand)]
    System(SystemCommand),
    /// Run the Kubernetes API server (HTTPS; writes DIR/server/admin.kubeconfig).
    Server(ServerArgs),
    /// Print the admin kubeconfig of the API server.
    Kubeconfig,
    /// Run a kubelet for this host against a server (simulated nodes with --simulate).
    Agent(AgentArgs),
    /// Manage bootstrap tokens, with which `skiff agent --token` joins nodes.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Run the scheduler against an API server.
    Scheduler(ComponentArgs),
    /// Run the controller manager against an API server.
    #[command(name = "controller-manager")]
    ControllerManager(ControllerManagerArgs),
    /// Run a container's shim (internal).
    #[command(hide = true)]
    Shim {
        /// Shim configuration file.
        config: PathBuf,
    },
    /// Clean up after a container exited (internal; the shim's exit command).
    #[command(hide = true, name = "container-cleanup")]
    ContainerCleanup {
        /// Container id.
        id: String,
    },
}

/// `run` and `create`.
#[derive(Debug, Args)]
#[command(disable_help_flag = true)]
pub struct RunArgs {
    /// Print help (-h is --hostname, as in Docker).
    #[arg(long, action = clap::ArgAction::Help)]
    pub help: Option<bool>,
    /// Run in the background and print the container id.
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Remove the container when it exits.
    #[arg(long)]
    pub rm: bool,
    /// Keep stdin open.
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Allocate a pseudo-terminal.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Container name.
    #[arg(long)]
    pub name: Option<String>,
    /// Set environment variables (KEY=value, or KEY to pass the caller's value).
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Read environment variables from a file.
    #[arg(long = "env-file", value_name = "FILE")]
    pub env_file: Vec<PathBuf>,
    /// Bind mount or volume: [NAME|/HOST:]/PATH[:ro|rw].
    #[arg(short = 'v', long = "volume")]
    pub volume: Vec<String>,
    /// Mount a tmpfs at this path.
    #[arg(long)]
    pub tmpfs: Vec<String>,
    /// Working directory inside the container.
    #[arg(short = 'w', long = "workdir")]
    pub workdir: Option<String>,
    /// Overwrite the image's entrypoint.
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// User name or uid, with an optional group: user[:group].
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// Memory limit (e.g. 64m, 1g).
    #[arg(short = 'm', long)]
    pub memory: Option<String>,
    /// Memory plus swap limit; -1 for unlimited swap.
    #[arg(long = "memory-swap", allow_hyphen_values = true)]
    pub memory_swap: Option<String>,
    /// Number of CPUs (fractional, e.g. 0.5).
    #[arg(long)]
    pub cpus: Option<f64>,
    /// CPU shares (relative weight).
    #[arg(short = 'c', long = "cpu-shares")]
    pub cpu_shares: Option<u64>,
    /// Limit the number of processes (-1 for unlimited).
    #[arg(long = "pids-limit", allow_hyphen_values = true)]
    pub pids_limit: Option<i64>,
    /// Mount the root filesystem read-only.
    #[arg(long = "read-only")]
    pub read_only: bool,
    /// Add Linux capabilities.
    #[arg(long = "cap-add")]
    pub cap_add: Vec<String>,
    /// Drop Linux capabilities.
    #[arg(long = "cap-drop")]
    pub cap_drop: Vec<String>,
    /// Security options: seccomp=unconfined|PROFILE.json, no-new-privileges[=false].
    #[arg(long = "security-opt")]
    pub security_opt: Vec<String>,
    /// Give extended privileges to this container.
    #[arg(long)]
    pub privileged: bool,
    /// Run an init inside the container that forwards signals and reaps processes.
    #[arg(long)]
    pub init: bool,
    /// Container host name.
    #[arg(short = 'h', long)]
    pub hostname: Option<String>,
    /// Network: bridge (default), host, none, or a network's name.
    #[arg(long = "network", alias = "net")]
    pub network: Option<String>,
    /// Publish a container's port(s) to the host: [HOSTIP:][HOSTPORT[-END]:]CONTAINERPORT[-END][/tcp|udp]
    /// (without a host port: a free one).
    #[arg(short = 'p', long = "publish")]
    pub publish: Vec<String>,
    /// Publish all exposed ports to free host ports.
    #[arg(short = 'P', long = "publish-all")]
    pub publish_all: bool,
    /// Expose a port or a range of ports: PORT[-END][/tcp|udp].
    #[arg(long)]
    pub expose: Vec<String>,
    /// Another name for the container on a user network's DNS.
    #[arg(long = "network-alias")]
    pub network_alias: Vec<String>,
    /// Set metadata (KEY=VALUE).
    #[arg(short = 'l', long = "label")]
    pub label: Vec<String>,
    /// Signal to stop the container.
    #[arg(long = "stop-signal")]
    pub stop_signal: Option<String>,
    /// Seconds to wait before killing the container on stop.
    #[arg(long = "stop-timeout")]
    pub stop_timeout: Option<u32>,
    /// Command to run to check health (replaces the image's HEALTHCHECK).
    #[arg(long = "health-cmd")]
    pub health_cmd: Option<String>,
    /// Time between health checks (e.g. 30s, 1m30s).
    #[arg(long = "health-interval")]
    pub health_interval: Option<String>,
    /// Maximum time a health check may take.
    #[arg(long = "health-timeout")]
    pub health_timeout: Option<String>,
    /// Start period during which failures do not count.
    #[arg(long = "health-start-period")]
    pub health_start_period: Option<String>,
    /// Consecutive failures needed to report unhealthy.
    #[arg(long = "health-retries")]
    pub health_retries: Option<u32>,
    /// Disable any container-specified HEALTHCHECK.
    #[arg(long = "no-healthcheck")]
    pub no_healthcheck: bool,
    /// Allow plain HTTP when the image must be pulled.
    #[arg(long)]
    pub insecure: bool,
    /// IMAGE, then the command and its arguments.
    #[arg(
        required = true,
        trailing_var_arg = true,
        value_name = "IMAGE [COMMAND [ARG...]]"
    )]
    pub args: Vec<String>,
}

/// `start`.
#[derive(Debug, Args)]
pub struct StartArgs {
    /// Attach stdout/stderr and wait for the container.
    #[arg(short = 'a', long)]
    pub attach: bool,
    /// Containers.
    #[arg(required = true)]
    pub containers: Vec<String>,
}

/// `ps`.
#[derive(Debug, Args)]
pub struct PsArgs {
    /// Show all containers (default shows just running).
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Only display container ids.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Don't truncate output.
    #[arg(long = "no-trunc")]
    pub no_trunc: bool,
    /// Go template format, e.g. '{{.ID}} {{.Names}}' or 'table {{.Names}}\t{{.Status}}'.
    #[arg(long)]
    pub format: Option<String>,
    /// Show only the latest created container.
    #[arg(short = 'l', long)]
    pub latest: bool,
}

/// `logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Follow log output.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Number of lines to show from the end ("all" for everything).
    #[arg(short = 'n', long, default_value = "all")]
    pub tail: String,
    /// Show timestamps.
    #[arg(short = 't', long)]
    pub timestamps: bool,
    /// Container.
    pub container: String,
}

/// `stop` and `restart`.
#[derive(Debug, Args)]
pub struct StopArgs {
    /// Seconds to wait before killing the container.
    #[arg(short = 't', long = "time", alias = "timeout")]
    pub time: Option<u32>,
    /// Containers.
    #[arg(required = true)]
    pub containers: Vec<String>,
}

/// `kill`.
#[derive(Debug, Args)]
pub struct KillArgs {
    /// Signal to send.
    #[arg(short = 's', long, default_value = "KILL")]
    pub signal: String,
    /// Containers.
    #[arg(required = true)]
    pub containers: Vec<String>,
}

/// `rm`.
#[derive(Debug, Args)]
pub struct RmArgs {
    /// Force the removal of a running container (SIGKILL).
    #[arg(short = 'f', long)]
    pub force: bool,
    /// Remove anonymous volumes of the container.
    #[arg(short = 'v', long)]
    pub volumes: bool,
    /// Containers.
    #[arg(required = true)]
    pub containers: Vec<String>,
}

/// `exec`.
#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Keep stdin open.
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Allocate a pseudo-terminal.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Detached mode: run the command in the background.
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Set environment variables.
    #[arg(short = 'e', long = "env")]
    pub env: Vec<String>,
    /// Working directory inside the container.
    #[arg(short = 'w', long = "workdir")]
    pub workdir: Option<String>,
    /// User name or uid[:group].
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// CONTAINER, then the command and its arguments.
    #[arg(required = true, num_args = 2.., trailing_var_arg = true, value_name = "CONTAINER COMMAND [ARG...]")]
    pub args: Vec<String>,
}

/// `attach`.
#[derive(Debug, Args)]
pub struct AttachArgs {
    /// Do not attach stdin.
    #[arg(long = "no-stdin")]
    pub no_stdin: bool,
    /// Container.
    pub container: String,
}

/// Commands taking a list of names.
#[derive(Debug, Args)]
pub struct NamesArgs {
    /// Containers.
    #[arg(required = true)]
    pub containers: Vec<String>,
}

/// `inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Format the output using a Go template.
    #[arg(short = 'f', long)]
    pub format: Option<String>,
    /// Only inspect objects of this type (container, image, volume).
    #[arg(long = "type")]
    pub kind: Option<String>,
    /// Names or ids.
    #[arg(required = true)]
    pub names: Vec<String>,
}

/// `images`.
#[derive(Debug, Args)]
pub struct ImagesArgs {
    /// Only show image ids.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Show digests.
    #[arg(long)]
    pub digests: bool,
    /// Don't truncate output.
    #[arg(long = "no-trunc")]
    pub no_trunc: bool,
    /// Go template format.
    #[arg(long)]
    pub format: Option<String>,
    /// Show only images of this repository.
    pub repository: Option<String>,
}

/// `pull`.
#[derive(Debug, Args)]
pub struct PullArgs {
    /// Allow plain HTTP and unverified TLS to the registry.
    #[arg(long, alias = "tls-verify-false")]
    pub insecure: bool,
    /// Platform (os/arch[/variant]) to select from a multi-platform image.
    #[arg(long)]
    pub platform: Option<String>,
    /// Credentials USER:PASSWORD.
    #[arg(long)]
    pub creds: Option<String>,
    /// Suppress progress output.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Image reference.
    pub image: String,
}

/// `push`.
#[derive(Debug, Args)]
pub struct PushArgs {
    /// Allow plain HTTP and unverified TLS to the registry.
    #[arg(long)]
    pub insecure: bool,
    /// Credentials USER:PASSWORD.
    #[arg(long)]
    pub creds: Option<String>,
    /// Suppress progress output.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Image to push.
    pub image: String,
    /// Destination reference (defaults to the image's own name).
    pub destination: Option<String>,
}

/// `tag`.
#[derive(Debug, Args)]
pub struct TagArgs {
    /// Existing image.
    pub source: String,
    /// New name.
    pub target: String,
}

/// `rmi`.
#[derive(Debug, Args)]
pub struct RmiArgs {
    /// Force removal.
    #[arg(short = 'f', long)]
    pub force: bool,
    /// Images.
    #[arg(required = true)]
    pub images: Vec<String>,
}

/// `load`.
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Read from a tar archive file instead of stdin.
    #[arg(short = 'i', long)]
    pub input: Option<PathBuf>,
    /// Suppress the load output.
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

/// `save`.
#[derive(Debug, Args)]
pub struct SaveArgs {
    /// Write to a file instead of stdout.
    #[arg(short = 'o', long)]
    pub output: Option<PathBuf>,
    /// Archive format: docker-archive or oci-archive.
    #[arg(long, default_value = "docker-archive")]
    pub format: String,
    /// Images.
    #[arg(required = true)]
    pub images: Vec<String>,
}

/// `history`.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Don't truncate output.
    #[arg(long = "no-trunc")]
    pub no_trunc: bool,
    /// Only show image ids.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Image.
    pub image: String,
}

/// `login`.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// Username.
    #[arg(short = 'u', long)]
    pub username: Option<String>,
    /// Password (prefer --password-stdin).
    #[arg(short = 'p', long)]
    pub password: Option<String>,
    /// Read the password from stdin.
    #[arg(long = "password-stdin")]
    pub password_stdin: bool,
    /// Allow plain HTTP to the registry.
    #[arg(long)]
    pub insecure: bool,
    /// Registry host[:port].
    pub registry: String,
}

/// `volume ...`.
#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    /// Create a volume.
    Create {
        /// Set metadata (KEY=VALUE).
        #[arg(short = 'l', long = "label")]
        label: Vec<String>,
        /// Volume name (generated when absent).
        name: Option<String>,
    },
    /// List volumes.
    #[command(alias = "list")]
    Ls {
        /// Only display volume names.
        #[arg(short = 'q', long)]
        quiet: bool,
    },
    /// Remove one or more volumes.
    Rm {
        /// Force the removal.
        #[arg(short = 'f', long)]
        force: bool,
        /// Volumes.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Display detailed information on volumes.
    Inspect {
        /// Volumes.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove unused anonymous volumes (all unused with -a).
    Prune {
        /// Remove all unused volumes, not just anonymous ones.
        #[arg(short = 'a', long)]
        all: bool,
        /// Do not prompt for confirmation.
        #[arg(short = 'f', long)]
        force: bool,
    },
}

/// `port`.
#[derive(Debug, Args)]
pub struct PortArgs {
    /// Container name or id.
    pub container: String,
    /// Only this port: PRIVATE_PORT[/tcp|udp].
    #[arg(value_name = "PRIVATE_PORT[/PROTO]")]
    pub port: Option<String>,
}

/// `network ...`.
#[derive(Debug, Subcommand)]
pub enum NetworkCommand {
    /// Create a network (isolated, with DNS between its containers).
    Create {
        /// Subnet in CIDR form (a free /24 from 10.89.0.0/16 when absent).
        #[arg(long)]
        subnet: Option<String>,
        /// Gateway address (the subnet's first address when absent).
        #[arg(long)]
        gateway: Option<String>,
        /// Restrict external access: no outbound traffic, no published ports.
        #[arg(long)]
        internal: bool,
        /// Network name.
        name: String,
    },
    /// List networks.
    #[command(alias = "list")]
    Ls {
        /// Only display network names.
        #[arg(short = 'q', long)]
        quiet: bool,
    },
    /// Remove one or more networks.
    #[command(alias = "remove")]
    Rm {
        /// Networks.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Display detailed information on networks.
    Inspect {
        /// Networks.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Serve a network's embedded DNS on inherited sockets (internal).
    #[command(hide = true, name = "dns-serve")]
    DnsServe,
}

/// `system ...`.
#[derive(Debug, Subcommand)]
pub enum SystemCommand {
    /// Remove stopped containers, dangling images and (with --volumes) unused volumes.
    Prune {
        /// Remove all unused images, not just dangling ones.
        #[arg(short = 'a', long)]
        all: bool,
        /// Also prune anonymous volumes.
        #[arg(long)]
        volumes: bool,
        /// Do not prompt for confirmation.
        #[arg(short = 'f', long)]
        force: bool,
    },
    /// Show disk usage.
    Df,
    /// Remove all containers, volumes and networks (with their bridges and
    /// firewall rules) of this root, and the cgroups its kubelet made; images stay.
    Reset {
        /// Do not prompt for confirmation.
        #[arg(short = 'f', long)]
        force: bool,
    },
}

/// `server`.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Address to listen on.
    #[arg(long = "bind-address", default_value = "127.0.0.1")]
    pub bind_address: std::net::IpAddr,
    /// HTTPS port (0 picks a free one).
    #[arg(long, default_value_t = 6443)]
    pub port: u16,
    /// Another host name or address the serving certificate covers (repeatable, or
    /// comma-separated), e.g. the address agents join through.
    #[arg(long = "tls-san", value_name = "NAME", value_delimiter = ',')]
    pub tls_san: Vec<String>,
    /// etcd endpoints (comma-separated, e.g. http://127.0.0.1:2379); the embedded store
    /// under DIR/server/db when absent.
    #[arg(long = "datastore-endpoint", value_delimiter = ',')]
    pub datastore_endpoint: Vec<String>,
    /// Do not run the scheduler inside the server (run `skiff scheduler` instead).
    #[arg(long = "disable-scheduler")]
    pub disable_scheduler: bool,
    /// Do not run the controllers inside the server (run `skiff controller-manager`).
    #[arg(long = "disable-controller-manager")]
    pub disable_controller_manager: bool,
    /// Do not run a kubelet for this host inside the server (its node runs no pods).
    #[arg(long = "disable-kubelet")]
    pub disable_kubelet: bool,
    /// Name of this host's node (default: the host name).
    #[arg(long = "node-name")]
    pub node_name: Option<String>,
    /// This node's address (its InternalIP), through which the other nodes reach its
    /// pods (default: the address of the host's default route).
    #[arg(long = "node-ip", value_name = "IP")]
    pub node_ip: Option<std::net::Ipv4Addr>,
    /// Port of this host's kubelet API (logs, exec, attach, port-forward).
    #[arg(long = "kubelet-port", default_value_t = skiff_kubelet::server::DEFAULT_PORT)]
    pub kubelet_port: u16,
    /// The cgroup below which this host's kubelet puts its QoS levels and the pods'
    /// cgroups (`ROOT/kubepods/burstable/pod<uid>/...`; the kubelet's --cgroup-root).
    #[arg(
        long = "kubelet-cgroup-root",
        env = "SKIFF_KUBELET_CGROUP_ROOT",
        default_value = skiff_kubelet::cgroups::DEFAULT_CGROUP_ROOT
    )]
    pub kubelet_cgroup_root: String,
    /// Directory of static pod manifests (one Pod per *.yaml, *.yml or *.json file): the
    /// kubelet runs each and shows it as a mirror pod `<name>-<node>` (the kubelet's
    /// --pod-manifest-path); DIR/pod-manifests when absent.
    #[arg(long = "pod-manifest-path", value_name = "DIR")]
    pub pod_manifest_path: Option<std::path::PathBuf>,
    /// Pid limits and node-pressure eviction of this host's kubelet.
    #[command(flatten)]
    pub kubelet_limits: KubeletLimitArgs,
    /// Directory of the volumes the local-path provisioner creates on this node (k3s's
    /// flag); DIR/storage when absent.
    #[arg(long = "default-local-storage-path")]
    pub default_local_storage_path: Option<std::path::PathBuf>,
    /// Range Services' cluster IPs come from (the first is the `kubernetes` Service's, the
    /// tenth the cluster DNS's).
    #[arg(long = "service-cidr", default_value = skiff_apiserver::DEFAULT_SERVICE_CIDR)]
    pub service_cidr: String,
    /// The cluster domain Services are named under.
    #[arg(long = "cluster-domain", default_value = skiff_proxy::DEFAULT_CLUSTER_DOMAIN)]
    pub cluster_domain: String,
    /// Port the cluster DNS listens on, on the pod network's gateway (the `kube-dns`
    /// Service's port 53 leads there).
    #[arg(long = "cluster-dns-port", default_value_t = 53)]
    pub cluster_dns_port: u16,
    /// Where the cluster DNS forwards other names (ADDR:PORT, comma-separated; default:
    /// the nameservers of /etc/resolv.conf).
    #[arg(long = "cluster-dns-upstream", value_delimiter = ',')]
    pub cluster_dns_upstream: Vec<std::net::SocketAddr>,
    /// Do not run the built-in Ingress controller (k3s: `--disable traefik`).
    #[arg(long = "disable-ingress", env = "SKIFF_DISABLE_INGRESS")]
    pub disable_ingress: bool,
    /// Address the Ingress controller listens on.
    #[arg(
        long = "ingress-bind-address",
        env = "SKIFF_INGRESS_BIND_ADDRESS",
        default_value = "0.0.0.0"
    )]
    pub ingress_bind_address: std::net::IpAddr,
    /// Port of the Ingress controller's HTTP listener.
    #[arg(
        long = "ingress-http-port",
        env = "SKIFF_INGRESS_HTTP_PORT",
        default_value_t = 80
    )]
    pub ingress_http_port: u16,
    /// Port of the Ingress controller's HTTPS listener.
    #[arg(
        long = "ingress-https-port",
        env = "SKIFF_INGRESS_HTTPS_PORT",
        default_value_t = 443
    )]
    pub ingress_https_port: u16,
    /// Settings of the controllers the server runs.
    #[command(flatten)]
    pub controllers: ControllerArgs,
}

/// The kubelet's pid limits and node-pressure eviction (`server` and `agent`).
#[derive(Debug, Args)]
pub struct KubeletLimitArgs {
    /// The most processes each pod may run, applied to its cgroup's pids.max (the
    /// kubelet's --pod-max-pids; -1: no limit).
    #[arg(
        long = "pod-max-pids",
        env = "SKIFF_KUBELET_POD_MAX_PIDS",
        default_value_t = -1,
        allow_negative_numbers = true
    )]
    pub pod_max_pids: i64,
    /// Hard eviction thresholds, SIGNAL<QUANTITY or SIGNAL<PERCENT% separated by commas
    /// (the kubelet's --eviction-hard; signals: memory.available, nodefs.available,
    /// imagefs.available, pid.available; an empty value turns eviction off).
    #[arg(
        long = "eviction-hard",
        env = "SKIFF_KUBELET_EVICTION_HARD",
        default_value = "memory.available<100Mi,nodefs.available<10%,imagefs.available<15%",
        value_parser = parse_eviction_hard
    )]
    pub eviction_hard: EvictionThresholds,
}

/// Parsed `--eviction-hard`.
#[derive(Debug, Clone)]
pub struct EvictionThresholds(pub Vec<skiff_kubelet::eviction::Threshold>);

fn parse_eviction_hard(s: &str) -> Result<EvictionThresholds, String> {
    skiff_kubelet::eviction::parse_thresholds(s)
        .map(EvictionThresholds)
        .map_err(|e| e.to_string())
}

impl KubeletLimitArgs {
    /// `--pod-max-pids` as the kubelet takes it (`None`: no limit).
    pub fn pod_max_pids(&self) -> Option<i64> {
        (self.pod_max_pids > 0).then_some(self.pod_max_pids)
    }
}

/// `agent`.
#[derive(Debug, Args)]
#[command(group(
    clap::ArgGroup::new("trust").args(["ca_cert", "ca_cert_hash", "insecure_skip_tls_verify"])
))]
pub struct AgentArgs {
    /// Register N simulated nodes that run no containers and report their pods Running
    /// (without it, run a kubelet for this host on the engine of --root).
    #[arg(long, value_name = "N")]
    pub simulate: Option<usize>,
    /// Name of this host's node when not simulating (default: the host name).
    #[arg(long = "node-name", conflicts_with = "simulate")]
    pub node_name: Option<String>,
    /// This node's address (its InternalIP), through which the other nodes reach its
    /// pods (default: the address of the host's default route).
    #[arg(long = "node-ip", value_name = "IP", conflicts_with = "simulate")]
    pub node_ip: Option<std::net::Ipv4Addr>,
    /// This node's pod subnet (the kubelet's --pod-cidr); without it the node waits for
    /// the server to assign one from its --cluster-cidr.
    #[arg(long = "pod-cidr", value_name = "CIDR", conflicts_with = "simulate")]
    pub pod_cidr: Option<ipnet::Ipv4Net>,
    /// The cluster DNS address pods use (default: the `kube-dns` Service's cluster IP).
    #[arg(long = "cluster-dns", value_name = "IP", conflicts_with = "simulate")]
    pub cluster_dns: Option<std::net::Ipv4Addr>,
    /// The cluster domain Services are named under.
    #[arg(long = "cluster-domain", default_value = skiff_proxy::DEFAULT_CLUSTER_DOMAIN)]
    pub cluster_domain: String,
    /// Port of the kubelet API (logs, exec, attach, port-forward) when not simulating.
    #[arg(long = "kubelet-port", default_value_t = skiff_kubelet::server::DEFAULT_PORT)]
    pub kubelet_port: u16,
    /// The cgroup below which this host's kubelet puts its QoS levels and the pods'
    /// cgroups (`ROOT/kubepods/burstable/pod<uid>/...`; the kubelet's --cgroup-root).
    #[arg(
        long = "kubelet-cgroup-root",
        env = "SKIFF_KUBELET_CGROUP_ROOT",
        default_value = skiff_kubelet::cgroups::DEFAULT_CGROUP_ROOT
    )]
    pub kubelet_cgroup_root: String,
    /// Directory of static pod manifests (one Pod per *.yaml, *.yml or *.json file): the
    /// kubelet runs each and shows it as a mirror pod `<name>-<node>` (the kubelet's
    /// --pod-manifest-path); DIR/pod-manifests when absent.
    #[arg(
        long = "pod-manifest-path",
        value_name = "DIR",
        conflicts_with = "simulate"
    )]
    pub pod_manifest_path: Option<std::path::PathBuf>,
    /// Pid limits and node-pressure eviction of this host's kubelet.
    #[command(flatten)]
    pub kubelet_limits: KubeletLimitArgs,
    /// API server URL (default: the local server of the same --root); needs --token and
    /// one of --ca-cert, --discovery-token-ca-cert-hash, --insecure-skip-tls-verify.
    #[arg(long, requires = "token", requires = "trust")]
    pub server: Option<String>,
    /// Bearer token for --server: a bootstrap token of `skiff token create` (which the
    /// agent trades for its node's client certificate, kept in ROOT/agent/kubelet.kubeconfig),
    /// or another token the server accepts (used as it is).
    #[arg(long)]
    pub token: Option<String>,
    /// Trust --server's certificate when this CA (PEM file; the server's
    /// DIR/server/tls/ca.crt) issued it.
    #[arg(long = "ca-cert", value_name = "FILE", requires = "server")]
    pub ca_cert: Option<PathBuf>,
    /// Trust --server's certificate when the CA it presents has this public key hash
    /// (sha256:HEX, as `skiff token create --print-join-command` prints).
    #[arg(
        long = "discovery-token-ca-cert-hash",
        value_name = "sha256:HEX",
        requires = "server"
    )]
    pub ca_cert_hash: Option<String>,
    /// Do not check --server's certificate (anyone in between can read the token).
    #[arg(long = "insecure-skip-tls-verify", requires = "server")]
    pub insecure_skip_tls_verify: bool,
    /// Kubeconfig to use instead of --server/--token.
    #[arg(long, conflicts_with = "server")]
    pub kubeconfig: Option<PathBuf>,
    /// Prefix of the simulated nodes' names.
    #[arg(long = "node-name-prefix", default_value = "sim-")]
    pub node_name_prefix: String,
    /// Index of the first simulated node.
    #[arg(long = "first-index", default_value_t = 0)]
    pub first_index: usize,
    /// CPU capacity of each simulated node.
    #[arg(long, default_value = "32")]
    pub cpu: String,
    /// Memory capacity of each simulated node.
    #[arg(long, default_value = "256Gi")]
    pub memory: String,
    /// Pod capacity of each simulated node.
    #[arg(long = "max-pods", default_value = "110")]
    pub max_pods: String,
    /// Seconds between heartbeats of each node.
    #[arg(long = "heartbeat-interval", default_value_t = 10)]
    pub heartbeat_interval: u64,
}

/// `scheduler` and `controller-manager`.
#[derive(Debug, Args)]
pub struct ComponentArgs {
    /// Kubeconfig of the API server (default: the local server of the same --root).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
}

/// `controller-manager`.
#[derive(Debug, Args)]
pub struct ControllerManagerArgs {
    /// Where the API server is.
    #[command(flatten)]
    pub component: ComponentArgs,
    /// Settings of the controllers.
    #[command(flatten)]
    pub controllers: ControllerArgs,
}

/// Settings of the controllers, for `controller-manager` and `server`.
#[derive(Debug, Args)]
pub struct ControllerArgs {
    /// How many terminated pods may exist before the pod garbage collector deletes the
    /// oldest (0 keeps them all).
    #[arg(
        long = "terminated-pod-gc-threshold",
        default_value_t = skiff_controllers::podgc::PodGcConfig::default().terminated_pod_gc_threshold
    )]
    pub terminated_pod_gc_threshold: i32,
    /// How long a node may go without a heartbeat (Lease or status) before it counts as
    /// unreachable: seconds, or with a unit (`40s`, `2m`, `500ms`).
    #[arg(long = "node-monitor-grace-period", value_name = "DURATION", default_value = "40s", value_parser = parse_duration)]
    pub node_monitor_grace_period: std::time::Duration,
    /// How often the node lifecycle controller checks nodes when nothing changes.
    #[arg(long = "node-monitor-period", value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub node_monitor_period: std::time::Duration,
    /// How often the HorizontalPodAutoscaler controller syncs each HPA.
    #[arg(long = "horizontal-pod-autoscaler-sync-period", value_name = "DURATION", default_value = "15s", value_parser = parse_duration)]
    pub horizontal_pod_autoscaler_sync_period: std::time::Duration,
    /// How long an HPA without a scale-down behavior keeps the highest recent
    /// recommendation before scaling down.
    #[arg(
        long = "horizontal-pod-autoscaler-downscale-stabilization",
        value_name = "DURATION",
        default_value = "5m",
        value_parser = parse_duration
    )]
    pub horizontal_pod_autoscaler_downscale_stabilization: std::time::Duration,
    /// Addresses for Services of type LoadBalancer, one per Service (comma-separated IPv4
    /// CIDRs, ranges A.B.C.D-E.F.G.H, or addresses); without it every such Service shows
    /// the InternalIP addresses of the Ready nodes, as k3s's servicelb does.
    #[arg(long = "service-lb-pool", value_name = "CIDRS", value_parser = parse_service_lb_pool)]
    pub service_lb_pool: Option<skiff_controllers::servicelb::Pool>,
    /// The pod addresses of the whole cluster: each node without a pod CIDR of its own
    /// gets a block of it (see --node-cidr-mask-size), which its kubelet uses for its pods
    /// and every other node routes to.
    #[arg(
        long = "cluster-cidr",
        value_name = "CIDR",
        default_value = "10.42.0.0/16"
    )]
    pub cluster_cidr: ipnet::Ipv4Net,
    /// The prefix length of each node's block of --cluster-cidr.
    #[arg(
        long = "node-cidr-mask-size",
        value_name = "BITS",
        default_value_t = 24
    )]
    pub node_cidr_mask_size: u8,
    /// Whether nodes get pod CIDRs from --cluster-cidr.
    #[arg(long = "allocate-node-cidrs", value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    pub allocate_node_cidrs: bool,
}

fn parse_service_lb_pool(s: &str) -> Result<skiff_controllers::servicelb::Pool, String> {
    s.parse()
        .map_err(|e: skiff_controllers::servicelb::PoolError| e.to_string())
}

/// A duration of seconds (`40`), or with a unit (`ms`, `s`, `m`, `h`).
fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("not a duration: {s:?}"))?;
    let millis = match unit {
        "ms" => n,
        "" | "s" => n.saturating_mul(1000),
        "m" => n.saturating_mul(60_000),
        "h" => n.saturating_mul(3_600_000),
        _ => return Err(format!("not a duration: {s:?} (units: ms, s, m, h)")),
    };
    Ok(std::time::Duration::from_millis(millis))
}

/// `token ...`: bootstrap tokens, as `kubeadm token` manages them.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a bootstrap token and print it (TOKEN, or a random one).
    Create(TokenCreateArgs),
    /// List bootstrap tokens.
    #[command(alias = "ls")]
    List(ComponentArgs),
    /// Delete bootstrap tokens (by id, or whole tokens).
    #[command(alias = "rm")]
    Delete {
        /// Token ids ([a-z0-9]{6}) or tokens (ID.SECRET).
        #[arg(required = true, value_name = "TOKEN_ID")]
        ids: Vec<String>,
        /// Server to talk to.
        #[command(flatten)]
        server: ComponentArgs,
    },
}

/// `token create`.
#[derive(Debug, Args)]
pub struct TokenCreateArgs {
    /// The token to create ([a-z0-9]{6}.[a-z0-9]{16}); a random one when absent.
    pub token: Option<String>,
    /// How long the token is valid (e.g. 24h, 1h30m, 90s); 0 never expires.
    #[arg(long, default_value = "24h")]
    pub ttl: String,
    /// A description shown by `skiff token list`.
    #[arg(long, default_value = "")]
    pub description: String,
    /// Extra groups of the token's user (comma-separated, each system:bootstrappers:...).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = skiff_apiserver::bootstrap_token::DEFAULT_NODE_TOKEN_GROUP
    )]
    pub groups: Vec<String>,
    /// Print the whole `skiff agent` command that joins a node with the token.
    #[arg(long = "print-join-command")]
    pub print_join_command: bool,
    /// Server to talk to.
    #[command(flatten)]
    pub server: ComponentArgs,
}

/// `builder ...`.
#[derive(Debug, Subcommand)]
pub enum BuilderCommand {
    /// Remove the build cache: cached steps, their layers and cache mounts.
    Prune {
        /// Do not prompt for confirmation (accepted; skiff does not prompt).
        #[arg(short = 'f', long)]
        force: bool,
    },
}

/// `build`.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Name and optionally a tag (name:tag); may be repeated.
    #[arg(short = 't', long = "tag")]
    pub tags: Vec<String>,
    /// Name of the Dockerfile (default CONTEXT/Dockerfile).
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// Set a build-time variable (KEY=VALUE, or KEY to pass the caller's value).
    #[arg(long = "build-arg", value_name = "KEY=VALUE")]
    pub build_args: Vec<String>,
    /// Build up to this stage.
    #[arg(long)]
    pub target: Option<String>,
    /// Do not use the cache.
    #[arg(long = "no-cache")]
    pub no_cache: bool,
    /// Secret file for RUN --mount=type=secret: id=ID,src=PATH.
    #[arg(long)]
    pub secret: Vec<String>,
    /// Network for RUN steps: none (default) or host.
    #[arg(long, default_value = "none")]
    pub network: String,
    /// Progress output: auto, plain or tty (auto picks tty when stderr is a terminal).
    #[arg(long, default_value = "auto", env = "BUILDKIT_PROGRESS")]
    pub progress: String,
    /// Target platform (os/arch[/variant]); only the host's can be built.
    #[arg(long)]
    pub platform: Option<String>,
    /// Print only the image ID.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// The build context directory.
    pub context: PathBuf,
}
