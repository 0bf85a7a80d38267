//! cgroups: hierarchy detection, a container's OOM kills and usage, and the
//! parent cgroups a kubelet keeps above its containers.
//!
//! A container's own limits are applied by libcontainer (libcgroups) from the OCI
//! spec. Parent cgroups (the kubelet's QoS levels and pod cgroups) hold no process,
//! so libcgroups, which creates a cgroup by moving a process in, cannot make them:
//! [`CgroupFs`] creates, limits and removes them itself, on cgroup v1 and v2 alike.

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
    root: PathBuf,
    hierarchy: Hierarchy,
    path: String,
}

impl CgroupReader {
    /// A reader for the cgroup at `cgroup_path` on the detected hierarchy.
    pub fn new(cgroup_path: &str) -> Self {
        CgroupReader::at(CGROUP_ROOT, Hierarchy::detect(), cgroup_path)
    }

    /// A reader for the cgroup at `cgroup_path` of the cgroup filesystem mounted at `root`.
    pub fn at(root: impl Into<PathBuf>, hierarchy: Hierarchy, cgroup_path: &str) -> Self {
        Self {
            root: root.into(),
            hierarchy,
            path: cgroup_path.trim_start_matches('/').to_string(),
        }
    }

    fn file(&self, controller: &str, name: &str) -> PathBuf {
        match self.hierarchy {
            Hierarchy::Unified => self.root.join(&self.path).join(name),
            Hierarchy::Legacy => self.root.join(controller).join(&self.path).join(name),
        }
    }

    /// Whether the cgroup exists (v1: in the cpuacct hierarchy, where its cpu time is).
    pub fn exists(&self) -> bool {
        self.file("cpuacct", "").is_dir()
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

// --- Parent cgroups ----------------------------------------------------------------

/// The v1 hierarchies libcgroups puts a container's cgroup in; a parent's directory
/// appears in each of them once a container runs below it.
const V1_CONTROLLERS: &[&str] = &[
    "cpu",
    "cpuacct",
    "cpuset",
    "devices",
    "hugetlb",
    "memory",
    "pids",
    "perf_event",
    "blkio",
    "net_cls",
    "net_prio",
    "freezer",
];

/// The v1 hierarchies a parent cgroup's limits are written in.
const V1_LIMITED: &[&str] = &["cpu", "memory", "pids"];

/// How often a busy cgroup is tried again before removing it fails (a container's
/// last process may still be exiting).
const RMDIR_ATTEMPTS: u32 = 5;

/// A parent cgroup that could not be created, limited or removed.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// A cgroup path that is not absolute, or leaves the hierarchy.
    #[error("cgroup path {0:?} must be absolute, without '..'")]
    BadPath(String),
    /// A file or directory of the cgroup filesystem failed.
    #[error("cgroup {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> CgroupError + '_ {
    move |source| CgroupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// cgroup v2's `cpu.weight` for cgroup v1 `cpu.shares`, with the mapping runc 1.3.2+,
/// crun and libcgroups use (and Kubernetes adopted): a quadratic fit in log2(shares)
/// that keeps the ends (2 -> 1, 262144 -> 10000) and the defaults (1024 -> 100).
pub fn cpu_weight_from_shares(shares: u64) -> u64 {
    const MIN_SHARES: u64 = 2;
    const MAX_SHARES: u64 = 262_144;
    const MAX_WEIGHT: u64 = 10_000;
    if shares <= MIN_SHARES {
        return 1;
    }
    if shares >= MAX_SHARES {
        return MAX_WEIGHT;
    }
    let l = (shares as f64).log2();
    let exponent = (l * l + 125.0 * l) / 612.0 - 7.0 / 34.0;
    (10f64.powf(exponent).ceil() as u64).clamp(1, MAX_WEIGHT)
}

/// A mounted cgroup filesystem in which parent cgroups (holding no process of their
/// own) are created, limited and removed. Paths are absolute from the hierarchy's
/// root, as an OCI spec's `cgroupsPath` is.
#[derive(Debug, Clone)]
pub struct CgroupFs {
    root: PathBuf,
    hierarchy: Hierarchy,
    /// Each v1 controller's mount, resolved (`cpu` and `cpuacct` are often one
    /// hierarchy): a kubelet asks for its pods' cgroups on every sync, and the mounts
    /// do not move while it runs.
    canonical: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, PathBuf>>>,
}

impl CgroupFs {
    /// The host's cgroup filesystem, `/sys/fs/cgroup`, with its detected layout.
    pub fn host() -> CgroupFs {
        CgroupFs::at(CGROUP_ROOT, Hierarchy::detect())
    }

    /// A cgroup filesystem mounted at `root` (one directory per v1 controller below
    /// it, or the v2 hierarchy itself).
    pub fn at(root: impl Into<PathBuf>, hierarchy: Hierarchy) -> CgroupFs {
        CgroupFs {
            root: root.into(),
            hierarchy,
            canonical: Default::default(),
        }
    }

    /// The layout.
    pub fn hierarchy(&self) -> Hierarchy {
        self.hierarchy
    }

    /// A reader of cgroup `path`'s usage.
    pub fn reader(&self, path: &str) -> CgroupReader {
        CgroupReader::at(self.root.clone(), self.hierarchy, path)
    }

    /// The directories of cgroup `path` in the hierarchies of `controllers` that are
    /// mounted (v1; co-mounted controllers count once), or in the v2 hierarchy.
    fn dirs(&self, path: &str, controllers: &[&str]) -> Result<Vec<PathBuf>, CgroupError> {
        let relative = relative(path)?;
        Ok(match self.hierarchy {
            Hierarchy::Unified => vec![self.root.join(relative)],
            Hierarchy::Legacy => {
                let mut seen = Vec::new();
                let mut dirs = Vec::new();
                for c in controllers {
                    let mount = self.root.join(c);
                    let cached = self.canonical.lock().unwrap().get(*c).cloned();
                    let canonical = match cached {
                        Some(canonical) => canonical,
                        None => {
                            let Ok(canonical) = mount.canonicalize() else {
                                continue;
                            };
                            self.canonical
                                .lock()
                                .unwrap()
                                .insert(c.to_string(), canonical.clone());
                            canonical
                        }
                    };
                    if !seen.contains(&canonical) {
                        seen.push(canonical);
                        dirs.push(mount.join(&relative));
                    }
                }
                dirs
            }
        })
    }

    /// Whether cgroup `path` exists (in every v1 hierarchy limits are written in).
    pub fn exists(&self, path: &str) -> bool {
        self.dirs(path, V1_LIMITED)
            .is_ok_and(|dirs| !dirs.is_empty() && dirs.iter().all(|d| d.is_dir()))
    }

    /// Creates cgroup `path` and its missing ancestors. On v2 the controllers the
    /// parent offers are enabled for its children at every level, as libcgroups does
    /// for a container's cgroup, so limits can be written at each.
    pub fn create(&self, path: &str) -> Result<(), CgroupError> {
        match self.hierarchy {
            Hierarchy::Legacy => {
                for dir in self.dirs(path, V1_LIMITED)? {
                    std::fs::create_dir_all(&dir).map_err(io_error(&dir))?;
                }
            }
            Hierarchy::Unified => {
                let mut dir = self.root.clone();
                for component in relative(path)?.components() {
                    enable_controllers(&dir);
                    dir.push(component);
                    if !dir.is_dir() {
                        std::fs::create_dir(&dir).map_err(io_error(&dir))?;
                    }
                }
                enable_controllers(&dir);
            }
        }
        Ok(())
    }

    /// Writes the limits of `resources` that are set into cgroup `path` (those unset
    /// keep the kernel's value): cpu shares (v2: weight), CFS quota and period, memory
    /// and pids limits. Swap is not limited at parent levels.
    pub fn set(&self, path: &str, resources: &crate::Resources) -> Result<(), CgroupError> {
        let relative = relative(path)?;
        let file = |controller: &str, name: &str| match self.hierarchy {
            Hierarchy::Unified => self.root.join(&relative).join(name),
            Hierarchy::Legacy => self.root.join(controller).join(&relative).join(name),
        };
        let write =
            |path: PathBuf, value: String| std::fs::write(&path, &value).map_err(io_error(&path));
        let r = resources;
        match self.hierarchy {
            Hierarchy::Legacy => {
                if let Some(shares) = r.cpu_shares {
                    write(file("cpu", "cpu.shares"), shares.to_string())?;
                }
                if let Some(period) = r.cpu_period {
                    write(file("cpu", "cpu.cfs_period_us"), period.to_string())?;
                }
                if let Some(quota) = r.cpu_quota {
                    let quota = if quota > 0 { quota } else { -1 };
                    write(file("cpu", "cpu.cfs_quota_us"), quota.to_string())?;
                }
                if let Some(memory) = r.memory {
                    let memory = if memory > 0 { memory } else { -1 };
                    write(file("memory", "memory.limit_in_bytes"), memory.to_string())?;
                }
                if let Some(pids) = r.pids_limit {
                    write(file("pids", "pids.max"), limit_or_max(pids))?;
                }
            }
            Hierarchy::Unified => {
                if let Some(shares) = r.cpu_shares {
                    let weight = cpu_weight_from_shares(shares);
                    write(file("cpu", "cpu.weight"), weight.to_string())?;
                }
                if r.cpu_quota.is_some() || r.cpu_period.is_some() {
                    let quota = limit_or_max(r.cpu_quota.unwrap_or(-1));
                    let period = r.cpu_period.unwrap_or(100_000);
                    write(file("cpu", "cpu.max"), format!("{quota} {period}"))?;
                }
                if let Some(memory) = r.memory {
                    write(file("memory", "memory.max"), limit_or_max(memory))?;
                }
                if let Some(pids) = r.pids_limit {
                    write(file("pids", "pids.max"), limit_or_max(pids))?;
                }
            }
        }
        Ok(())
    }

    /// The names of cgroup `path`'s child cgroups (in any hierarchy).
    pub fn children(&self, path: &str) -> Vec<String> {
        let mut names = Vec::new();
        for dir in self.dirs(path, V1_CONTROLLERS).unwrap_or_default() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let name = entry.file_name().to_string_lossy().to_string();
                if entry.file_type().is_ok_and(|t| t.is_dir()) && !names.contains(&name) {
                    names.push(name);
                }
            }
        }
        names.sort();
        names
    }

    /// Removes cgroup `path` with every cgroup below it, deepest first, in every
    /// hierarchy. A cgroup that still has processes is not touched and makes this
    /// fail (the kernel refuses to remove it), so only what has ended goes.
    pub fn remove(&self, path: &str) -> Result<(), CgroupError> {
        let mut first_error = None;
        for dir in self.dirs(path, V1_CONTROLLERS)? {
            if let Err(e) = remove_tree(&dir) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Removes cgroup `path` where it has no child cgroup and no process; returns
    /// whether it is gone from every hierarchy.
    pub fn remove_if_empty(&self, path: &str) -> Result<bool, CgroupError> {
        let mut gone = true;
        for dir in self.dirs(path, V1_CONTROLLERS)? {
            match std::fs::remove_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(_) => gone = false,
            }
        }
        Ok(gone)
    }
}

/// `path` below a hierarchy's root, refusing what would leave it.
fn relative(path: &str) -> Result<PathBuf, CgroupError> {
    let p = Path::new(path);
    let bad = || CgroupError::BadPath(path.to_string());
    if !p.is_absolute() {
        return Err(bad());
    }
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::RootDir => {}
            std::path::Component::Normal(n) => out.push(n),
            _ => return Err(bad()),
        }
    }
    Ok(out)
}

/// A v2 limit: the number, or `max` when unlimited (not positive).
fn limit_or_max(limit: i64) -> String {
    if limit > 0 {
        limit.to_string()
    } else {
        "max".into()
    }
}

/// Enables for `dir`'s children each controller `dir` offers that is not enabled yet;
/// one at a time, so one the kernel refuses does not hold back the others.
fn enable_controllers(dir: &Path) {
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
    let enabled = read("cgroup.subtree_control");
    let enabled: Vec<&str> = enabled.split_whitespace().collect();
    for controller in read("cgroup.controllers").split_whitespace() {
        if !enabled.contains(&controller) {
            let _ = std::fs::write(dir.join("cgroup.subtree_control"), format!("+{controller}"));
        }
    }
}

/// Removes the cgroup directory `dir` and those below it, deepest first.
fn remove_tree(dir: &Path) -> Result<(), CgroupError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_error(dir)(e)),
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_tree(&entry.path())?;
        }
    }
    let mut attempt = 0;
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && attempt + 1 < RMDIR_ATTEMPTS => {
                attempt += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => return Err(io_error(dir)(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_map_to_weights_keeping_the_ends_and_the_default() {
        assert_eq!(cpu_weight_from_shares(2), 1);
        assert_eq!(cpu_weight_from_shares(1024), 100);
        assert_eq!(cpu_weight_from_shares(262_144), 10_000);
        assert_eq!(cpu_weight_from_shares(0), 1);
        // Monotonic in between.
        let weights: Vec<u64> = [3, 102, 512, 2048, 4096, 100_000]
            .iter()
            .map(|s| cpu_weight_from_shares(*s))
            .collect();
        assert!(weights.windows(2).all(|w| w[0] < w[1]), "{weights:?}");
    }

    #[test]
    fn paths_must_stay_below_the_root() {
        let fs = CgroupFs::at("/nonexistent", Hierarchy::Unified);
        assert!(matches!(
            fs.create("relative"),
            Err(CgroupError::BadPath(_))
        ));
        assert!(matches!(
            fs.remove("/a/../../b"),
            Err(CgroupError::BadPath(_))
        ));
    }

    #[test]
    fn v1_limits_go_to_each_controllers_hierarchy() {
        let dir = tempfile::tempdir().unwrap();
        for c in ["cpu", "memory", "pids", "freezer"] {
            std::fs::create_dir(dir.path().join(c)).unwrap();
        }
        let fs = CgroupFs::at(dir.path(), Hierarchy::Legacy);
        fs.create("/k/kubepods/pod1").unwrap();
        assert!(fs.exists("/k/kubepods/pod1"));
        // Only the limited controllers get it; libcgroups adds the others.
        assert!(!dir.path().join("freezer/k").exists());
        fs.set(
            "/k/kubepods/pod1",
            &crate::Resources {
                cpu_shares: Some(512),
                cpu_quota: Some(50_000),
                cpu_period: Some(100_000),
                memory: Some(64 << 20),
                ..Default::default()
            },
        )
        .unwrap();
        let read = |f: &str| std::fs::read_to_string(dir.path().join(f)).unwrap();
        assert_eq!(read("cpu/k/kubepods/pod1/cpu.shares"), "512");
        assert_eq!(read("cpu/k/kubepods/pod1/cpu.cfs_quota_us"), "50000");
        assert_eq!(read("cpu/k/kubepods/pod1/cpu.cfs_period_us"), "100000");
        assert_eq!(
            read("memory/k/kubepods/pod1/memory.limit_in_bytes"),
            (64 << 20).to_string()
        );
        std::fs::create_dir(dir.path().join("freezer/k")).unwrap();
        std::fs::create_dir(dir.path().join("freezer/k/kubepods")).unwrap();
        assert_eq!(fs.children("/k/kubepods"), vec!["pod1".to_string()]);
    }

    #[test]
    fn v2_enables_controllers_down_the_path_and_writes_weight_and_max() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cgroup.controllers"), "cpu memory pids").unwrap();
        std::fs::write(dir.path().join("cgroup.subtree_control"), "memory").unwrap();
        let fs = CgroupFs::at(dir.path(), Hierarchy::Unified);
        fs.create("/k/kubepods").unwrap();
        // The fake files are plain: a write replaces what a kernel would add to.
        assert_eq!(
            std::fs::read_to_string(dir.path().join("cgroup.subtree_control")).unwrap(),
            "+pids"
        );
        fs.set(
            "/k/kubepods",
            &crate::Resources {
                cpu_shares: Some(1024),
                cpu_quota: Some(150_000),
                cpu_period: Some(100_000),
                memory: Some(1 << 30),
                ..Default::default()
            },
        )
        .unwrap();
        let read = |f: &str| std::fs::read_to_string(dir.path().join(f)).unwrap();
        assert_eq!(read("k/kubepods/cpu.weight"), "100");
        assert_eq!(read("k/kubepods/cpu.max"), "150000 100000");
        assert_eq!(read("k/kubepods/memory.max"), (1u64 << 30).to_string());
        fs.set(
            "/k/kubepods",
            &crate::Resources {
                cpu_quota: Some(-1),
                memory: Some(-1),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(read("k/kubepods/cpu.max"), "max 100000");
        assert_eq!(read("k/kubepods/memory.max"), "max");
    }
}
