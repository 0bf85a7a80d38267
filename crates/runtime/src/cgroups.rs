//! Reading a container's cgroup: hierarchy detection, OOM kills and usage.
//!
//! Limits are applied by libcontainer (libcgroups) from the OCI spec; this
//! module only reads what the kernel reports, on cgroup v1 and v2 alike.

use std::path::{Path, PathBuf};

/// Which cgroup layout the host uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hierarchy {
    /// cgroup v1: one hierarchy per controller (possibly with a cgroup2 mount beside).
    Legacy,
    /// Pure cgroup v2.
    Unified,
}

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

impl Hierarchy {
    /// Detects the layout the same way libcgroups does.
    pub fn detect() -> Hierarchy {
        if Path::new(CGROUP_ROOT).join("cgroup.controllers").exists() {
            Hierarchy::Unified
        } else {
            Hierarchy::Legacy
        }
    }
}

/// Usage figures of one cgroup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    /// Memory in use, bytes (working set as `docker stats` shows it).
    pub memory_bytes: u64,
    /// Total CPU time consumed, nanoseconds.
    pub cpu_nanos: u64,
    /// Number of processes.
    pub pids: u64,
}

/// Reads a cgroup of the container at `cgroup_path` (as given in the OCI spec).
#[derive(Debug, Clone)]
pub struct CgroupReader {
    hierarchy: Hierarchy,
    path: String,
}

impl CgroupReader {
    /// A reader for the cgroup at `cgroup_path` on the detected hierarchy.
    pub fn new(cgroup_path: &str) -> Self {
        Self {
            hierarchy: Hierarchy::detect(),
            path: cgroup_path.trim_start_matches('/').to_string(),
        }
    }

    fn file(&self, controller: &str, name: &str) -> PathBuf {
        match self.hierarchy {
            Hierarchy::Unified => Path::new(CGROUP_ROOT).join(&self.path).join(name),
            Hierarchy::Legacy => Path::new(CGROUP_ROOT)
                .join(controller)
                .join(&self.path)
                .join(name),
        }
    }

    fn read_keyed(&self, controller: &str, name: &str, key: &str) -> Option<u64> {
        let text = std::fs::read_to_string(self.file(controller, name)).ok()?;
        text.lines().find_map(|l| {
            let mut it = l.split_whitespace();
            (it.next() == Some(key))
                .then(|| it.next().and_then(|v| v.parse().ok()))
                .flatten()
        })
    }

    fn read_u64(&self, controller: &str, name: &str) -> Option<u64> {
        std::fs::read_to_string(self.file(controller, name))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// How many times the OOM killer killed a process in this cgroup.
    pub fn oom_kills(&self) -> u64 {
        match self.hierarchy {
            Hierarchy::Unified => self
                .read_keyed("memory", "memory.events", "oom_kill")
                .unwrap_or(0),
            Hierarchy::Legacy => self
                .read_keyed("memory", "memory.oom_control", "oom_kill")
                .unwrap_or(0),
        }
    }

    /// Current usage; zeros for figures the kernel does not offer.
    pub fn usage(&self) -> Usage {
        match self.hierarchy {
            Hierarchy::Unified => {
                let current = self.read_u64("memory", "memory.current").unwrap_or(0);
                let inactive = self
                    .read_keyed("memory", "memory.stat", "inactive_file")
                    .unwrap_or(0);
                Usage {
                    memory_bytes: current.saturating_sub(inactive),
                    cpu_nanos: self
                        .read_keyed("cpu", "cpu.stat", "usage_usec")
                        .unwrap_or(0)
                        * 1000,
                    pids: self.read_u64("pids", "pids.current").unwrap_or(0),
                }
            }
            Hierarchy::Legacy => {
                let current = self
                    .read_u64("memory", "memory.usage_in_bytes")
                    .unwrap_or(0);
                let inactive = self
                    .read_keyed("memory", "memory.stat", "total_inactive_file")
                    .unwrap_or(0);
                Usage {
                    memory_bytes: current.saturating_sub(inactive),
                    cpu_nanos: self.read_u64("cpuacct", "cpuacct.usage").unwrap_or(0),
                    pids: self.read_u64("pids", "pids.current").unwrap_or(0),
                }
            }
        }
    }
}
