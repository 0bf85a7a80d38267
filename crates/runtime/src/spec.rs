//! What the engine asks of a container, and its translation into an OCI runtime spec.
//!
//! The defaults mirror runc/Docker: the standard /proc, /dev, /sys mounts,
//! masked and read-only kernel paths, Docker's capability set and seccomp
//! profile, and no_new_privs.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::capabilities;
use crate::seccomp;

/// How a namespace is provided to the container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NamespaceMode {
    /// A fresh namespace of this kind.
    #[default]
    Private,
    /// The host's namespace (no isolation for this kind).
    Host,
    /// Join the namespace at this path (e.g. `/proc/PID/ns/net` or a bind-mounted netns).
    Path(PathBuf),
}

/// Which seccomp profile applies.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SeccompMode {
    /// skiff's default profile (see [`seccomp`]).
    #[default]
    Default,
    /// No filtering (`--security-opt seccomp=unconfined`).
    Unconfined,
    /// A Docker-format or OCI-format JSON profile given by the user.
    Profile(Value),
}

/// The user the container process runs as, already resolved to numbers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary group ids.
    #[serde(default)]
    pub additional_gids: Vec<u32>,
}

/// A bind mount or tmpfs into the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// Host path (ignored for tmpfs).
    pub source: PathBuf,
    /// Path inside the container.
    pub destination: String,
    /// Mount read-only.
    #[serde(default)]
    pub readonly: bool,
    /// A tmpfs instead of a bind mount.
    #[serde(default)]
    pub tmpfs: bool,
}

/// Resource limits, in Docker's units.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// Memory limit in bytes (`--memory`).
    pub memory: Option<i64>,
    /// Memory plus swap limit in bytes (`--memory-swap`); -1 is unlimited swap.
    pub memory_swap: Option<i64>,
    /// Relative CPU weight in cgroup v1 shares (`--cpu-shares`, 2..262144).
    pub cpu_shares: Option<u64>,
    /// CFS quota in microseconds per period (`--cpus` sets quota = cpus * period).
    pub cpu_quota: Option<i64>,
    /// CFS period in microseconds (default 100000).
    pub cpu_period: Option<u64>,
    /// Maximum number of processes (`--pids-limit`).
    pub pids_limit: Option<i64>,
}

/// Everything the runtime needs to create one container.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContainerSpec {
    /// Container id (64 hex chars in the engine).
    pub id: String,
    /// Prepared root filesystem (the overlay mount point).
    pub rootfs: PathBuf,
    /// Mount the root filesystem read-only (`--read-only`).
    #[serde(default)]
    pub readonly_rootfs: bool,
    /// argv of the container process.
    pub args: Vec<String>,
    /// Environment as `KEY=value`.
    #[serde(default)]
    pub env: Vec<String>,
    /// Working directory inside the container.
    #[serde(default)]
    pub cwd: String,
    /// The process user.
    #[serde(default)]
    pub user: User,
    /// Hostname of the UTS namespace.
    #[serde(default)]
    pub hostname: String,
    /// Allocate a pseudo-terminal.
    #[serde(default)]
    pub terminal: bool,
    /// Extra mounts (volumes, binds, /etc/hosts ...).
    #[serde(default)]
    pub mounts: Vec<Mount>,
    /// Capabilities to add (`--cap-add`).
    #[serde(default)]
    pub cap_add: Vec<String>,
    /// Capabilities to drop (`--cap-drop`).
    #[serde(default)]
    pub cap_drop: Vec<String>,
    /// `--privileged`: all capabilities, no seccomp, no masked paths, all devices.
    #[serde(default)]
    pub privileged: bool,
    /// Seccomp profile.
    #[serde(default)]
    pub seccomp: SeccompMode,
    /// Allow gaining privileges through setuid binaries (`--security-opt no-new-privileges=false`).
    #[serde(default)]
    pub allow_privilege_escalation: bool,
    /// Resource limits.
    #[serde(default)]
    pub resources: Resources,
    /// Network namespace.
    #[serde(default)]
    pub network: NamespaceMode,
    /// PID namespace.
    #[serde(default)]
    pub pid: NamespaceMode,
    /// IPC namespace.
    #[serde(default)]
    pub ipc: NamespaceMode,
    /// UTS namespace.
    #[serde(default)]
    pub uts: NamespaceMode,
    /// cgroup path relative to the hierarchy root, e.g. `/skiff/<id>`.
    #[serde(default)]
    pub cgroup_path: String,
    /// Run skiff's tiny init as PID 1 (`--init`).
    #[serde(default)]
    pub init: bool,
    /// Kernel parameters (`--sysctl`).
    #[serde(default)]
    pub sysctls: Vec<(String, String)>,
    /// OCI annotations.
    #[serde(default)]
    pub annotations: Vec<(String, String)>,
}

/// A spec the runtime cannot turn into a container.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The command line is empty.
    #[error("no command specified: the image has no Cmd or Entrypoint and none was given")]
    NoCommand,
    /// A capability name is not known.
    #[error(transparent)]
    Capability(#[from] capabilities::UnknownCapability),
    /// The generated spec does not parse as OCI (a bug or a bad user profile).
    #[error("invalid OCI runtime spec: {0}")]
    Invalid(#[from] serde_json::Error),
    /// The bundle could not be written.
    #[error("writing bundle {path}: {source}")]
    Write {
        /// Bundle path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/sys/devices/virtual/powercap",
    "/sys/firmware",
];

const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

impl ContainerSpec {
    /// The capabilities this container ends up with.
    pub fn effective_capabilities(&self) -> Result<Vec<String>, SpecError> {
        Ok(capabilities::compute(
            &self.cap_add,
            &self.cap_drop,
            self.privileged,
        )?)
    }

    /// Translates this spec into an OCI runtime spec.
    pub fn to_oci(&self) -> Result<oci_spec::runtime::Spec, SpecError> {
        if self.args.is_empty() {
            return Err(SpecError::NoCommand);
        }
        let caps = self.effective_capabilities()?;
        let mut namespaces = vec![json!({"type": "mount"})];
        for (kind, mode) in [
            ("network", &self.network),
            ("pid", &self.pid),
            ("ipc", &self.ipc),
            ("uts", &self.uts),
        ] {
            match mode {
                NamespaceMode::Private => namespaces.push(json!({"type": kind})),
                NamespaceMode::Host => {}
                NamespaceMode::Path(p) => namespaces.push(json!({"type": kind, "path": p})),
            }
        }
        if cgroup_namespace_supported() {
            namespaces.push(json!({"type": "cgroup"}));
        }

        let mut mounts = vec![
            json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
            json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
            json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
            json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
            json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        ];
        let sys_ro = if self.privileged { "rw" } else { "ro" };
        if self.network == NamespaceMode::Host {
            // A sysfs mount needs its own network namespace; bind the host's instead.
            mounts.push(json!({"destination": "/sys", "type": "bind", "source": "/sys", "options": ["rbind", "nosuid", "noexec", "nodev", sys_ro]}));
        } else {
            mounts.push(json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", sys_ro]}));
            mounts.push(json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", sys_ro]}));
        }
        for m in &self.mounts {
            if m.tmpfs {
                mounts.push(json!({"destination": m.destination, "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777"]}));
            } else {
                let mut options = vec!["rbind", "rprivate"];
                if m.readonly {
                    options.push("ro");
                }
                mounts.push(json!({"destination": m.destination, "type": "bind", "source": m.source, "options": options}));
            }
        }

        let mut resources = json!({});
        let r = &self.resources;
        let mut memory = serde_json::Map::new();
        if let Some(limit) = r.memory {
            memory.insert("limit".into(), json!(limit));
            // Docker: without --memory-swap, swap is allowed up to the memory limit again.
            let swap = r.memory_swap.unwrap_or(limit * 2);
            if swap_accounting_available() {
                memory.insert("swap".into(), json!(swap));
            }
        } else if let Some(swap) = r.memory_swap {
            if swap_accounting_available() {
                memory.insert("swap".into(), json!(swap));
            }
        }
        if !memory.is_empty() {
            resources["memory"] = Value::Object(memory);
        }
        let mut cpu = serde_json::Map::new();
        if let Some(shares) = r.cpu_shares {
            cpu.insert("shares".into(), json!(shares));
        }
        if let Some(quota) = r.cpu_quota {
            cpu.insert("quota".into(), json!(quota));
            cpu.insert("period".into(), json!(r.cpu_period.unwrap_or(100_000)));
        }
        if !cpu.is_empty() {
            resources["cpu"] = Value::Object(cpu);
        }
        if let Some(pids) = r.pids_limit {
            resources["pids"] = json!({"limit": pids});
        }
        if self.privileged {
            resources["devices"] = json!([{"allow": true, "access": "rwm"}]);
        } else {
            resources["devices"] = json!([{"allow": false, "access": "rwm"}]);
        }

        let seccomp = if self.privileged {
            None
        } else {
            match &self.seccomp {
                SeccompMode::Default => Some(seccomp::default_profile(&caps)),
                SeccompMode::Unconfined => None,
                SeccompMode::Profile(p) => Some(p.clone()),
            }
        };

        let mut linux = json!({
            "namespaces": namespaces,
            "resources": resources,
            "cgroupsPath": if self.cgroup_path.is_empty() { format!("/skiff/{}", self.id) } else { self.cgroup_path.clone() },
            "sysctl": self.sysctls.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
        });
        if !self.privileged {
            linux["maskedPaths"] = json!(MASKED_PATHS);
            linux["readonlyPaths"] = json!(READONLY_PATHS);
        }
        if let Some(profile) = seccomp {
            linux["seccomp"] = profile;
        }

        let cwd = if self.cwd.is_empty() {
            "/".to_string()
        } else {
            self.cwd.clone()
        };
        let no_new_privileges = !self.allow_privilege_escalation && !self.privileged;
        let mut spec = json!({
            "ociVersion": "1.0.2",
            "root": {"path": self.rootfs, "readonly": self.readonly_rootfs},
            "hostname": self.hostname,
            "process": {
                "terminal": self.terminal,
                "user": {"uid": self.user.uid, "gid": self.user.gid, "additionalGids": self.user.additional_gids},
                "args": self.args,
                "env": self.env,
                "cwd": cwd,
                "capabilities": {
                    "bounding": caps, "effective": caps, "permitted": caps,
                },
                "rlimits": [nofile_limit()],
            },
            "mounts": mounts,
            "linux": linux,
            "annotations": self.annotations.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
        });
        // Only when set: libcontainer loads seccomp before dropping capabilities (as it
        // must without no_new_privs) only when the field is absent, not when it is false.
        if no_new_privileges {
            spec["process"]["noNewPrivileges"] = json!(true);
        }
        Ok(serde_json::from_value(spec)?)
    }

    /// Writes `config.json` of an OCI bundle in `bundle`.
    pub fn write_bundle(&self, bundle: &Path) -> Result<(), SpecError> {
        let oci = self.to_oci()?;
        let write_err = |source| SpecError::Write {
            path: bundle.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(bundle).map_err(write_err)?;
        let data = serde_json::to_vec_pretty(&oci)?;
        crate::status::write_replace(&bundle.join("config.json"), &data).map_err(write_err)
    }
}

/// The open-files limit containers get: the caller's own, as Podman does.
fn nofile_limit() -> Value {
    let (soft, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .unwrap_or((1024, 1024));
    json!({"type": "RLIMIT_NOFILE", "hard": hard, "soft": soft})
}

fn cgroup_namespace_supported() -> bool {
    Path::new("/proc/self/ns/cgroup").exists()
}

/// Whether the kernel accounts swap for cgroups (memsw on v1, memory.swap.max on v2).
fn swap_accounting_available() -> bool {
    match crate::cgroups::Hierarchy::detect() {
        crate::cgroups::Hierarchy::Unified => {
            Path::new("/sys/fs/cgroup/memory.swap.max").exists()
                || std::fs::read_to_string("/sys/fs/cgroup/cgroup.subtree_control").is_ok()
        }
        crate::cgroups::Hierarchy::Legacy => {
            Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes").exists()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> ContainerSpec {
        ContainerSpec {
            id: "abc".into(),
            rootfs: "/tmp/rootfs".into(),
            args: vec!["/bin/true".into()],
            env: vec!["PATH=/bin".into()],
            ..Default::default()
        }
    }

    #[test]
    fn default_spec_masks_kernel_paths_and_sets_no_new_privs() {
        let oci = base().to_oci().unwrap();
        let linux = oci.linux().as_ref().unwrap();
        assert!(linux
            .masked_paths()
            .as_ref()
            .unwrap()
            .contains(&"/proc/kcore".to_string()));
        assert!(linux.seccomp().is_some());
        assert_eq!(
            oci.process().as_ref().unwrap().no_new_privileges(),
            Some(true)
        );
    }

    #[test]
    fn allowed_escalation_leaves_no_new_privs_unset_for_seccomp_to_load_first() {
        let mut spec = base();
        spec.allow_privilege_escalation = true;
        let oci = spec.to_oci().unwrap();
        assert_eq!(oci.process().as_ref().unwrap().no_new_privileges(), None);
        assert!(oci.linux().as_ref().unwrap().seccomp().is_some());
    }

    #[test]
    fn privileged_drops_seccomp_and_masks() {
        let mut spec = base();
        spec.privileged = true;
        let oci = spec.to_oci().unwrap();
        let linux = oci.linux().as_ref().unwrap();
        assert!(linux.seccomp().is_none());
        assert!(linux.masked_paths().is_none());
    }

    #[test]
    fn host_network_has_no_network_namespace() {
        let mut spec = base();
        spec.network = NamespaceMode::Host;
        let oci = spec.to_oci().unwrap();
        let namespaces = oci.linux().as_ref().unwrap().namespaces().clone().unwrap();
        assert!(!namespaces
            .iter()
            .any(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::Network));
    }

    #[test]
    fn cpus_become_quota_and_period() {
        let mut spec = base();
        spec.resources.cpu_quota = Some(50_000);
        let oci = spec.to_oci().unwrap();
        let cpu = oci
            .linux()
            .as_ref()
            .unwrap()
            .resources()
            .as_ref()
            .unwrap()
            .cpu()
            .clone()
            .unwrap();
        assert_eq!(cpu.quota(), Some(50_000));
        assert_eq!(cpu.period(), Some(100_000));
    }

    #[test]
    fn empty_command_is_rejected() {
        let mut spec = base();
        spec.args.clear();
        assert!(matches!(spec.to_oci(), Err(SpecError::NoCommand)));
    }
}
