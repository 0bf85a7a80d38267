//! Containers as the engine keeps them: the record on disk and its life-cycle state.
//!
//! One file per operation, as in youki: [`create`], [`start`], [`stop`],
//! [`remove`], [`logs`], and [`transient`] containers for image builds.

pub mod create;
pub mod logs;
pub(crate) mod name_index;
pub mod remove;
pub mod start;
pub mod stop;
pub mod transient;

use std::collections::BTreeMap;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use skiff_runtime::shim::ShimState;
use skiff_runtime::{ContainerSpec, ContainerStatus, ExitStatus};

/// A resolv.conf given by the caller.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DnsSettings {
    /// `nameserver` lines, in order.
    pub nameservers: Vec<String>,
    /// The `search` list.
    pub searches: Vec<String>,
    /// The `options` (`ndots:5`).
    pub options: Vec<String>,
}

impl DnsSettings {
    /// The resolv.conf text.
    pub fn resolv_conf(&self) -> String {
        let mut out = String::new();
        if !self.searches.is_empty() {
            out.push_str(&format!("search {}\n", self.searches.join(" ")));
        }
        for ns in &self.nameservers {
            out.push_str(&format!("nameserver {ns}\n"));
        }
        if !self.options.is_empty() {
            out.push_str(&format!("options {}\n", self.options.join(" ")));
        }
        out
    }
}

/// What `skiff run`/`skiff create` asked for, before it is resolved against the image.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct CreateRequest {
    /// Image reference or id.
    pub image: String,
    /// `--name`.
    pub name: Option<String>,
    /// Arguments after the image (replace the image's Cmd).
    pub command: Vec<String>,
    /// `--entrypoint` (an empty string clears the image's entrypoint).
    pub entrypoint: Option<String>,
    /// `-e` and `--env-file` entries, `KEY=value` or `KEY` (taken from the caller's environment).
    pub env: Vec<String>,
    /// `-w`.
    pub workdir: Option<String>,
    /// `--user`.
    pub user: Option<String>,
    /// `--hostname`.
    pub hostname: Option<String>,
    /// `-v` specs.
    pub volumes: Vec<String>,
    /// `--tmpfs` paths.
    pub tmpfs: Vec<String>,
    /// `-t`.
    pub tty: bool,
    /// `-i`.
    pub interactive: bool,
    /// `--memory` in bytes.
    pub memory: Option<i64>,
    /// `--memory-swap` in bytes (-1 unlimited).
    pub memory_swap: Option<i64>,
    /// `--cpus`.
    pub cpus: Option<f64>,
    /// `--cpu-shares`.
    pub cpu_shares: Option<u64>,
    /// `--cpu-quota`: CFS quota in microseconds per period (overrides `--cpus`).
    #[serde(default)]
    pub cpu_quota: Option<i64>,
    /// `--cpu-period`: CFS period in microseconds (100000 when a quota is set).
    #[serde(default)]
    pub cpu_period: Option<u64>,
    /// `--pids-limit`.
    pub pids_limit: Option<i64>,
    /// `--cgroup-parent`: the cgroup the container's cgroup is created in (absolute
    /// from the hierarchy's root, e.g. a kubelet's pod cgroup); `/skiff` by default.
    #[serde(default)]
    pub cgroup_parent: Option<String>,
    /// `--read-only`.
    pub read_only: bool,
    /// `--cap-add`.
    pub cap_add: Vec<String>,
    /// `--cap-drop`.
    pub cap_drop: Vec<String>,
    /// `--security-opt` values.
    pub security_opt: Vec<String>,
    /// `--privileged`.
    pub privileged: bool,
    /// `--init`.
    pub init: bool,
    /// `--rm`.
    pub auto_remove: bool,
    /// `--network`: `bridge` (default), `host`, `none` or a network's name.
    pub network: Option<String>,
    /// `-p` values: `[hostip:][hostport[-end]:]containerport[-end][/tcp|udp]`.
    #[serde(default)]
    pub publish: Vec<String>,
    /// `-P`: publish every exposed port on a free host port.
    #[serde(default)]
    pub publish_all: bool,
    /// `--expose` values: `port[-end][/tcp|udp]`, added to the image's EXPOSE.
    #[serde(default)]
    pub expose: Vec<String>,
    /// `--network-alias`: more names on a user network's DNS.
    #[serde(default)]
    pub network_aliases: Vec<String>,
    /// The container's resolv.conf, instead of the one derived from the host and the
    /// network (Docker's `--dns`, `--dns-search`, `--dns-option`; a pod's DNS config).
    #[serde(default)]
    pub dns: Option<DnsSettings>,
    /// `--label`.
    pub labels: BTreeMap<String, String>,
    /// `--stop-signal`.
    pub stop_signal: Option<String>,
    /// `--stop-timeout` seconds.
    pub stop_timeout: Option<u32>,
    /// `--health-cmd` (run with /bin/sh -c).
    #[serde(default)]
    pub health_cmd: Option<String>,
    /// `--health-interval`.
    #[serde(default)]
    pub health_interval: Option<std::time::Duration>,
    /// `--health-timeout`.
    #[serde(default)]
    pub health_timeout: Option<std::time::Duration>,
    /// `--health-start-period`.
    #[serde(default)]
    pub health_start_period: Option<std::time::Duration>,
    /// `--health-retries`.
    #[serde(default)]
    pub health_retries: Option<u32>,
    /// `--no-healthcheck`.
    #[serde(default)]
    pub no_healthcheck: bool,
}

/// A volume or bind mounted into a container, as `docker inspect` lists it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct MountPoint {
    /// `volume`, `bind` or `tmpfs`.
    #[serde(rename = "Type")]
    pub kind: String,
    /// Volume name, for volumes.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Host path.
    pub source: PathBuf,
    /// Path in the container.
    pub destination: String,
    /// Writable.
    #[serde(rename = "RW")]
    pub rw: bool,
}

/// The engine's durable record of one container (`container.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ContainerRecord {
    /// 64 hex characters.
    pub id: String,
    /// Unique name, without Docker's leading slash.
    pub name: String,
    /// Creation time.
    pub created: DateTime<Utc>,
    /// The image as the user named it.
    pub image: String,
    /// The image id (config digest) it was created from.
    pub image_id: String,
    /// The request, kept for inspect and restarts.
    pub request: CreateRequest,
    /// The signal `stop` sends first.
    pub stop_signal: String,
    /// Volumes and binds.
    pub mounts: Vec<MountPoint>,
    /// What the runtime runs (rootfs path, argv, env, limits ...).
    pub spec: ContainerSpec,
    /// The network it joins.
    #[serde(default)]
    pub network: crate::networks::NetworkMode,
    /// Ports to publish at each start (`-p`, and `-P` for the exposed
    /// ports); the host ports chosen are in the network attachment.
    #[serde(default)]
    pub ports: Vec<skiff_network::PortSpec>,
    /// The container whose network, IPC and UTS namespaces this one joins at each start
    /// (a pod's sandbox; see [`create::CreateOptions`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces_of: Option<String>,
    /// The container whose PID namespace this one joins at each start (an ephemeral
    /// container's target; see [`create::CreateOptions`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_namespace_of: Option<String>,
    /// The health check (the image's HEALTHCHECK or `--health-*`).
    #[serde(default)]
    pub health: Option<skiff_runtime::health::HealthConfig>,
}

impl ContainerRecord {
    /// First 12 characters of the id, as `docker ps` shows.
    pub fn short_id(&self) -> &str {
        &self.id[..12.min(self.id.len())]
    }

    /// The command line as `docker ps` shows it.
    pub fn command_line(&self) -> String {
        self.spec.args.join(" ")
    }
}

/// A container's record with its current state.
#[derive(Debug, Clone)]
pub struct Container {
    /// Durable record.
    pub record: ContainerRecord,
    /// Runtime state.
    pub status: ContainerStatus,
    /// When it last started.
    pub started_at: Option<DateTime<Utc>>,
    /// Files of the container.
    pub dir: PathBuf,
    /// Health as the shim last recorded it, for containers with a check.
    pub health: Option<skiff_runtime::health::HealthState>,
}

impl Container {
    /// Docker's human status column (`Up 3 seconds`, `Exited (0) 2 minutes ago`, `Created`).
    pub fn status_text(&self, now: DateTime<Utc>) -> String {
        match &self.status {
            ContainerStatus::Created => "Created".into(),
            ContainerStatus::Running { .. } => {
                let up = format!(
                    "Up {}",
                    human_duration(now - self.started_at.unwrap_or(self.record.created))
                );
                match &self.health {
                    Some(h) if h.status == skiff_runtime::health::HealthStatus::Starting => {
                        format!("{up} (health: starting)")
                    }
                    Some(h) => format!("{up} ({})", h.status.as_str()),
                    None => up,
                }
            }
            ContainerStatus::Exited(e) if e.error.is_some() => "Created".into(),
            ContainerStatus::Exited(e) => format!(
                "Exited ({}) {} ago",
                e.exit_code,
                human_duration(now - e.finished_at)
            ),
            ContainerStatus::Dead => "Dead".into(),
        }
    }

    /// True while the container process runs.
    pub fn is_running(&self) -> bool {
        matches!(self.status, ContainerStatus::Running { .. })
    }

    /// The exit status, once exited.
    pub fn exit(&self) -> Option<&ExitStatus> {
        match &self.status {
            ContainerStatus::Exited(e) => Some(e),
            _ => None,
        }
    }
}

/// Published ports as `docker ps` shows them: `0.0.0.0:8080->80/tcp`, with
/// runs of consecutive ports folded into ranges (`0.0.0.0:8000-8001->80-81/tcp`).
pub fn ports_text(ports: &[skiff_network::PortMapping]) -> String {
    let mut sorted = ports.to_vec();
    sorted.sort_by_key(|p| (p.host_ip, p.protocol, p.container_port, p.host_port));
    // (first mapping, length of the run)
    let mut runs: Vec<(skiff_network::PortMapping, u16)> = Vec::new();
    for p in sorted {
        if let Some((first, len)) = runs.last_mut() {
            let follows = first.host_ip == p.host_ip
                && first.protocol == p.protocol
                && u32::from(first.container_port) + u32::from(*len) == u32::from(p.container_port)
                && u32::from(first.host_port) + u32::from(*len) == u32::from(p.host_port);
            if follows {
                *len += 1;
                continue;
            }
        }
        runs.push((p, 1));
    }
    let span = |start: u16, len: u16| {
        if len == 1 {
            start.to_string()
        } else {
            format!("{start}-{}", start + len - 1)
        }
    };
    runs.iter()
        .map(|(p, len)| {
            format!(
                "{}:{}->{}/{}",
                p.host_ip.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED),
                span(p.host_port, *len),
                span(p.container_port, *len),
                p.protocol
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Docker's rendering of a duration (`Less than a second`, `5 seconds`, `About a minute` ...).
pub fn human_duration(d: chrono::Duration) -> String {
    let secs = d.num_seconds().max(0);
    match secs {
        0 => "Less than a second".into(),
        1 => "1 second".into(),
        2..=59 => format!("{secs} seconds"),
        60..=119 => "About a minute".into(),
        120..=3599 => format!("{} minutes", secs / 60),
        3600..=7199 => "About an hour".into(),
        7200..=172_799 => format!("{} hours", secs / 3600),
        _ => format!("{} days", secs / 86400),
    }
}

/// Files of one container.
pub(crate) struct Files {
    pub dir: PathBuf,
}

impl Files {
    pub fn record(&self) -> PathBuf {
        self.dir.join("container.json")
    }
    pub fn exit(&self) -> PathBuf {
        self.dir.join("exit.json")
    }
    pub fn shim_state(&self) -> PathBuf {
        self.dir.join("shim.json")
    }
    pub fn shim_config(&self) -> PathBuf {
        self.dir.join("shim-config.json")
    }
    pub fn shim_log(&self) -> PathBuf {
        self.dir.join("shim.log")
    }
    pub fn log(&self) -> PathBuf {
        self.dir.join("container.log")
    }
    pub fn bundle(&self) -> PathBuf {
        self.dir.join("bundle")
    }
    pub fn hosts(&self) -> PathBuf {
        self.dir.join("hosts")
    }
    pub fn hostname(&self) -> PathBuf {
        self.dir.join("hostname")
    }
    pub fn resolv_conf(&self) -> PathBuf {
        self.dir.join("resolv.conf")
    }
    pub fn health(&self) -> PathBuf {
        self.dir.join("health.json")
    }
}

/// Derives the runtime state from the shim's files.
pub(crate) fn derive_status(files: &Files) -> (ContainerStatus, Option<DateTime<Utc>>) {
    use skiff_runtime::status::read_json;
    let shim: Option<ShimState> = read_json(&files.shim_state()).ok().flatten();
    let started_at = shim.as_ref().map(|s| s.started_at);
    if let Ok(Some(exit)) = read_json::<ExitStatus>(&files.exit()) {
        return (ContainerStatus::Exited(exit), started_at);
    }
    match shim {
        None => (ContainerStatus::Created, None),
        // The shim reaps the container before it records the exit: while the shim
        // lives, the container still counts as running (`Dead` in that window made a
        // kubelet start a finished `restartPolicy: Never` container again).
        Some(s)
            if skiff_runtime::kill::process_alive(s.pid)
                || skiff_runtime::kill::process_alive(s.shim_pid) =>
        {
            (ContainerStatus::Running { pid: s.pid }, started_at)
        }
        Some(_) => (ContainerStatus::Dead, started_at),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_docker() {
        assert_eq!(
            human_duration(chrono::Duration::seconds(0)),
            "Less than a second"
        );
        assert_eq!(human_duration(chrono::Duration::seconds(5)), "5 seconds");
        assert_eq!(
            human_duration(chrono::Duration::seconds(90)),
            "About a minute"
        );
        assert_eq!(human_duration(chrono::Duration::seconds(600)), "10 minutes");
        assert_eq!(human_duration(chrono::Duration::hours(5)), "5 hours");
    }

    #[test]
    fn ports_fold_into_ranges_like_docker_ps() {
        let m = |s: &str| s.parse::<skiff_network::PortMapping>().unwrap();
        let ports = [
            m("8001:81"),
            m("8000:80"),
            m("127.0.0.1:9000:90/udp"),
            m("49153:443"),
        ];
        assert_eq!(
            ports_text(&ports),
            "0.0.0.0:8000-8001->80-81/tcp, 0.0.0.0:49153->443/tcp, 127.0.0.1:9000->90/udp"
        );
        assert_eq!(ports_text(&[]), "");
    }
}
