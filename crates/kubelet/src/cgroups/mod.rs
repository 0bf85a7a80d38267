//! The kubelet's cgroup hierarchy, as its QoS and pod container managers lay it out
//! with the cgroupfs driver (pkg/kubelet/cm): below the kubelet's cgroup root
//! (`--cgroup-root`), every pod's cgroup sits in the level of its QoS class, and the
//! runtime puts the pod's sandbox and containers in the pod's cgroup.
//!
//! ```text
//! <root>/kubepods/                          cpu shares and memory: the node's
//! <root>/kubepods/pod<uid>/                 a Guaranteed pod
//! <root>/kubepods/burstable/                cpu shares: the Burstable pods' requests
//! <root>/kubepods/burstable/pod<uid>/       a Burstable pod
//! <root>/kubepods/besteffort/               the least cpu shares
//! <root>/kubepods/besteffort/pod<uid>/      a BestEffort pod
//! <root>/kubepods/.../pod<uid>/<id>         its sandbox and containers (the runtime's)
//! ```
//!
//! A pod's cgroup has the sum of its containers' limits ([`resources`]); it is removed
//! when the pod is gone or has finished. What the kubelet created is recorded in its
//! directory so that `skiff system reset` removes it after the kubelet has stopped.
//! The cgroup filesystem sits behind [`CgroupTree`] (the runtime's [`CgroupFs`], which
//! knows cgroup v1 from v2), so this logic is tested without root.

pub mod resources;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Pod;
use serde::{Deserialize, Serialize};
use skiff_runtime::cgroups::{CgroupError, CgroupFs, Usage};
use skiff_runtime::Resources;

use crate::qos::{self, QosClass};

/// The kubelet's cgroup root unless `--cgroup-root` says otherwise: beside the engine's
/// own containers (`/skiff/<id>`).
pub const DEFAULT_CGROUP_ROOT: &str = "/skiff";
/// The level all pods' cgroups are below.
const KUBEPODS: &str = "kubepods";
/// Prefix of a pod cgroup's name, followed by the pod's UID.
const POD_PREFIX: &str = "pod";
/// Where the kubelet records what it created, in its directory (`ROOT/kubelet`).
const STATE_FILE: &str = "cgroups.json";

/// A failure of the kubelet's cgroups.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The cgroup filesystem failed.
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    /// The record of created cgroups could not be read or written.
    #[error("kubelet cgroup record {path}: {source}")]
    State {
        /// The file.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A pod without a UID has no cgroup.
    #[error("pod {0} has no uid")]
    NoUid(String),
}

/// The cgroup filesystem as the kubelet uses it: parent cgroups without processes.
/// Paths are absolute from the hierarchy's root.
pub trait CgroupTree: Send + Sync {
    /// Whether the cgroup exists.
    fn exists(&self, path: &str) -> bool;
    /// Creates the cgroup and its missing ancestors.
    fn create(&self, path: &str) -> Result<(), CgroupError>;
    /// Writes the limits that are set.
    fn set(&self, path: &str, resources: &Resources) -> Result<(), CgroupError>;
    /// Names of the cgroup's children.
    fn children(&self, path: &str) -> Vec<String>;
    /// Removes the cgroup and every cgroup below it, unless processes remain.
    fn remove(&self, path: &str) -> Result<(), CgroupError>;
    /// Removes the cgroup if it has no children; whether it is gone.
    fn remove_if_empty(&self, path: &str) -> Result<bool, CgroupError>;
    /// The cgroup's cpu time and memory working set, if it exists.
    fn usage(&self, _path: &str) -> Option<Usage> {
        None
    }
}

impl CgroupTree for CgroupFs {
    fn exists(&self, path: &str) -> bool {
        CgroupFs::exists(self, path)
    }
    fn create(&self, path: &str) -> Result<(), CgroupError> {
        CgroupFs::create(self, path)
    }
    fn set(&self, path: &str, resources: &Resources) -> Result<(), CgroupError> {
        CgroupFs::set(self, path, resources)
    }
    fn children(&self, path: &str) -> Vec<String> {
        CgroupFs::children(self, path)
    }
    fn remove(&self, path: &str) -> Result<(), CgroupError> {
        CgroupFs::remove(self, path)
    }
    fn remove_if_empty(&self, path: &str) -> Result<bool, CgroupError> {
        CgroupFs::remove_if_empty(self, path)
    }
    fn usage(&self, path: &str) -> Option<Usage> {
        let reader = self.reader(path);
        reader.exists().then(|| reader.usage())
    }
}

/// Where the kubelet's cgroups are, from its cgroup root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The cgroup root without a trailing `/` (empty for the hierarchy's root).
    root: String,
}

impl Layout {
    /// The layout below `cgroup_root` (`/skiff`; `/` is the hierarchy's root).
    pub fn new(cgroup_root: &str) -> Layout {
        let trimmed = cgroup_root.trim_matches('/');
        Layout {
            root: if trimmed.is_empty() {
                String::new()
            } else {
                format!("/{trimmed}")
            },
        }
    }

    /// `<root>/kubepods`, the parent of every pod's cgroup.
    pub fn kubepods(&self) -> String {
        format!("{}/{KUBEPODS}", self.root)
    }

    /// The level of a QoS class: kubepods itself for Guaranteed pods.
    pub fn qos(&self, class: QosClass) -> String {
        match class {
            QosClass::Guaranteed => self.kubepods(),
            QosClass::Burstable => format!("{}/burstable", self.kubepods()),
            QosClass::BestEffort => format!("{}/besteffort", self.kubepods()),
        }
    }

    /// A pod's cgroup: `pod<uid>` in its class's level.
    pub fn pod(&self, class: QosClass, uid: &str) -> String {
        format!("{}/{POD_PREFIX}{uid}", self.qos(class))
    }

    /// The ancestors of kubepods, outermost first (`/a`, `/a/b` for root `/a/b`).
    fn ancestors(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for part in self.root.split('/').filter(|p| !p.is_empty()) {
            let parent = out.last().cloned().unwrap_or_default();
            out.push(format!("{parent}/{part}"));
        }
        out
    }
}

/// The pod UID in a pod cgroup's name.
fn pod_uid(name: &str) -> Option<&str> {
    name.strip_prefix(POD_PREFIX).filter(|u| !u.is_empty())
}

/// What a kubelet created in the cgroup hierarchy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Owned {
    /// Its kubepods level, with everything below.
    kubepods: String,
    /// The ancestors of kubepods it created, outermost first.
    created: Vec<String>,
}

/// The record kept in the kubelet's directory: one entry per cgroup root used.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct State {
    owned: Vec<Owned>,
}

impl State {
    fn read(path: &Path) -> Result<State, Error> {
        match std::fs::read(path) {
            Ok(data) => serde_json::from_slice(&data).map_err(|e| Error::State {
                path: path.to_path_buf(),
                source: e.into(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(source) => Err(Error::State {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    fn write(&self, path: &Path) -> Result<(), Error> {
        let fail = |source| Error::State {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(fail)?;
        }
        let tmp = path.with_extension("json.tmp");
        let data = serde_json::to_vec_pretty(self).map_err(|e| fail(e.into()))?;
        std::fs::write(&tmp, data).map_err(fail)?;
        std::fs::rename(&tmp, path).map_err(fail)
    }
}

/// The kubelet's QoS levels and pod cgroups.
pub struct PodCgroups {
    tree: Arc<dyn CgroupTree>,
    layout: Layout,
    /// The limits of kubepods: what the node offers to pods.
    allocatable: Resources,
    state_file: PathBuf,
    /// cpu requests (millicores) of the Burstable pods with a cgroup, by UID: their
    /// level's shares are the sum.
    burstable: Mutex<BTreeMap<String, i64>>,
    /// Held while the QoS levels and the record are made (pods sync in parallel).
    making_qos: Mutex<()>,
    /// The most processes each pod's cgroup may hold (`--pod-max-pids`).
    pod_pids_limit: Option<i64>,
}

impl PodCgroups {
    /// Pod cgroups below `cgroup_root` on `tree`, giving pods the node's `allocatable`
    /// cpu and memory; the record of what was created goes in `kubelet_dir`.
    pub fn new(
        tree: Arc<dyn CgroupTree>,
        cgroup_root: &str,
        allocatable: resources::Amounts,
        kubelet_dir: &Path,
    ) -> PodCgroups {
        PodCgroups {
            tree,
            layout: Layout::new(cgroup_root),
            allocatable: Resources {
                cpu_shares: Some(resources::milli_cpu_to_shares(allocatable.cpu)),
                memory: (allocatable.memory > 0).then_some(allocatable.memory),
                ..Default::default()
            },
            state_file: kubelet_dir.join(STATE_FILE),
            burstable: Mutex::new(BTreeMap::new()),
            making_qos: Mutex::new(()),
            pod_pids_limit: None,
        }
    }

    /// The same cgroups with pid limits: `pod` processes at most in each pod's cgroup
    /// (the kubelet's `--pod-max-pids`, `podPidsLimit`; `None` or a negative value: no
    /// limit) and `node` in kubepods, all pods together (the node's allocatable pids).
    pub fn with_pids_limits(mut self, pod: Option<i64>, node: Option<i64>) -> PodCgroups {
        self.pod_pids_limit = pod.filter(|l| *l > 0);
        self.allocatable.pids_limit = node.filter(|l| *l > 0);
        self
    }

    /// Where the cgroups are.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Creates kubepods and the QoS levels and sets their limits: kubepods the node's
    /// allocatable cpu (as shares) and memory, besteffort the least shares, burstable
    /// the shares of its pods' requests. Records first what it is about to create.
    pub fn ensure_qos(&self) -> Result<(), Error> {
        let _making = self.making_qos.lock().unwrap();
        let kubepods = self.layout.kubepods();
        let created: Vec<String> = self
            .layout
            .ancestors()
            .into_iter()
            .filter(|a| !self.tree.exists(a))
            .collect();
        let mut state = State::read(&self.state_file)?;
        match state.owned.iter_mut().find(|o| o.kubepods == kubepods) {
            Some(o) => {
                for c in created {
                    if !o.created.contains(&c) {
                        o.created.push(c);
                    }
                }
                o.created.sort_by_key(|c| c.len());
            }
            None => state.owned.push(Owned {
                kubepods: kubepods.clone(),
                created,
            }),
        }
        state.write(&self.state_file)?;
        self.tree.create(&kubepods)?;
        self.tree.set(&kubepods, &self.allocatable)?;
        for class in [QosClass::Burstable, QosClass::BestEffort] {
            self.tree.create(&self.layout.qos(class))?;
        }
        self.tree.set(
            &self.layout.qos(QosClass::BestEffort),
            &Resources {
                cpu_shares: Some(resources::MIN_SHARES),
                ..Default::default()
            },
        )?;
        let burstable = self.burstable.lock().unwrap();
        self.set_burstable_shares(&burstable)
    }

    fn set_burstable_shares(&self, pods: &BTreeMap<String, i64>) -> Result<(), Error> {
        let milli = pods.values().fold(0i64, |sum, v| sum.saturating_add(*v));
        self.tree.set(
            &self.layout.qos(QosClass::Burstable),
            &Resources {
                cpu_shares: Some(resources::milli_cpu_to_shares(milli)),
                ..Default::default()
            },
        )?;
        Ok(())
    }

    /// Counts (`Some` cpu requests) or forgets a Burstable pod in its level's shares.
    fn track_burstable(&self, uid: &str, cpu: Option<i64>) -> Result<(), Error> {
        let mut pods = self.burstable.lock().unwrap();
        let before = pods.get(uid).copied();
        match cpu {
            Some(v) => pods.insert(uid.to_string(), v),
            None => pods.remove(uid),
        };
        if before == cpu {
            return Ok(());
        }
        self.set_burstable_shares(&pods)
    }

    /// Makes the pod's cgroup exist with its limits (set when it is created: a pod's
    /// resources do not change); returns its path, the cgroup parent of the pod's
    /// sandbox and containers.
    pub fn ensure_pod(&self, pod: &Pod) -> Result<String, Error> {
        let uid = pod
            .metadata
            .uid
            .as_deref()
            .filter(|u| !u.is_empty())
            .ok_or_else(|| Error::NoUid(pod.metadata.name.clone().unwrap_or_default()))?;
        let class = qos::of_pod(pod);
        if !self.tree.exists(&self.layout.qos(class)) {
            self.ensure_qos()?;
        }
        let spec = pod.spec.clone().unwrap_or_default();
        let path = self.layout.pod(class, uid);
        if !self.tree.exists(&path) {
            self.tree.create(&path)?;
            let mut limits = resources::pod_resources(&spec, class);
            limits.pids_limit = self.pod_pids_limit;
            self.tree.set(&path, &limits)?;
        }
        if class == QosClass::Burstable {
            let cpu = resources::pod_amounts(&spec, resources::requests).cpu;
            self.track_burstable(uid, Some(cpu))?;
        }
        Ok(path)
    }

    /// Removes the pod's cgroup (whichever level it is in) with what is left below it.
    pub fn remove_pod(&self, uid: &str) -> Result<(), Error> {
        if uid.is_empty() {
            return Ok(());
        }
        let tracked = self.track_burstable(uid, None);
        for class in QosClass::ALL {
            self.tree.remove(&self.layout.pod(class, uid))?;
        }
        tracked
    }

    /// The usage of the pod's cgroup (whichever level it is in), if it has one: what the
    /// kubelet reports as the pod's cpu and memory.
    pub fn pod_usage(&self, uid: &str) -> Option<Usage> {
        QosClass::ALL
            .iter()
            .find_map(|class| self.tree.usage(&self.layout.pod(*class, uid)))
    }

    /// The UIDs of the pods that have a cgroup.
    pub fn pod_uids(&self) -> Vec<String> {
        let mut uids: Vec<String> = QosClass::ALL
            .iter()
            .flat_map(|class| self.tree.children(&self.layout.qos(*class)))
            .filter_map(|name| pod_uid(&name).map(str::to_string))
            .collect();
        uids.sort();
        uids.dedup();
        uids
    }
}

/// The kubelet's directory in a skiff root (`ROOT/kubelet`).
pub fn kubelet_dir(root: &Path) -> PathBuf {
    root.join("kubelet")
}

/// Removes every cgroup the kubelet of `kubelet_dir` created (`skiff system reset`,
/// once its containers are gone): its kubepods levels with what is below, then the
/// ancestors it created where they are empty. Nothing else is touched.
pub fn reset(kubelet_dir: &Path, tree: &dyn CgroupTree) -> Result<(), Error> {
    let path = kubelet_dir.join(STATE_FILE);
    let mut state = State::read(&path)?;
    let mut first_error = None;
    state.owned.retain(|owned| {
        if let Err(e) = tree.remove(&owned.kubepods) {
            first_error.get_or_insert(Error::from(e));
            return true;
        }
        for ancestor in owned.created.iter().rev() {
            let _ = tree.remove_if_empty(ancestor);
        }
        false
    });
    if state.owned.is_empty() {
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(Error::State { path, source }),
        }
    } else {
        state.write(&path)?;
    }
    first_error.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::FakeCgroups;

    fn pod(uid: &str, containers: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "default", "uid": uid},
            "spec": {"containers": containers},
        }))
        .unwrap()
    }

    fn manager(tree: Arc<FakeCgroups>, root: &str, dir: &Path) -> PodCgroups {
        PodCgroups::new(
            tree,
            root,
            resources::Amounts {
                cpu: 4000,
                memory: 8 << 30,
            },
            dir,
        )
    }

    #[test]
    fn layout_follows_the_cgroupfs_driver() {
        let l = Layout::new("/skiff/");
        assert_eq!(l.kubepods(), "/skiff/kubepods");
        assert_eq!(l.pod(QosClass::Guaranteed, "u1"), "/skiff/kubepods/podu1");
        assert_eq!(
            l.pod(QosClass::Burstable, "u1"),
            "/skiff/kubepods/burstable/podu1"
        );
        assert_eq!(
            l.pod(QosClass::BestEffort, "u1"),
            "/skiff/kubepods/besteffort/podu1"
        );
        assert_eq!(Layout::new("/").kubepods(), "/kubepods");
        assert_eq!(Layout::new("a/b").ancestors(), vec!["/a", "/a/b"]);
        assert_eq!(pod_uid("podu1"), Some("u1"));
        assert_eq!(pod_uid("burstable"), None);
    }

    #[test]
    fn qos_levels_get_the_nodes_and_their_pods_shares() {
        let dir = tempfile::tempdir().unwrap();
        let tree = Arc::new(FakeCgroups::default());
        let m = manager(tree.clone(), "/t", dir.path());
        m.ensure_qos().unwrap();
        let kubepods = tree.limits("/t/kubepods").unwrap();
        assert_eq!(kubepods.cpu_shares, Some(4096));
        assert_eq!(kubepods.memory, Some(8 << 30));
        assert_eq!(
            tree.limits("/t/kubepods/besteffort").unwrap().cpu_shares,
            Some(2)
        );
        assert_eq!(
            tree.limits("/t/kubepods/burstable").unwrap().cpu_shares,
            Some(2)
        );

        let burstable = pod(
            "b1",
            serde_json::json!([{"name": "c", "resources": {"requests": {"cpu": "500m"}}}]),
        );
        assert_eq!(
            m.ensure_pod(&burstable).unwrap(),
            "/t/kubepods/burstable/podb1"
        );
        assert_eq!(
            tree.limits("/t/kubepods/burstable").unwrap().cpu_shares,
            Some(512)
        );
        m.remove_pod("b1").unwrap();
        assert!(!tree.exists("/t/kubepods/burstable/podb1"));
        assert_eq!(
            tree.limits("/t/kubepods/burstable").unwrap().cpu_shares,
            Some(2)
        );
    }

    #[test]
    fn pods_land_in_their_class_with_their_limits() {
        let dir = tempfile::tempdir().unwrap();
        let tree = Arc::new(FakeCgroups::default());
        let m = manager(tree.clone(), "/t", dir.path());
        let limits = serde_json::json!({"cpu": "250m", "memory": "64Mi"});
        let guaranteed = pod(
            "g1",
            serde_json::json!([{"name": "c", "resources": {"limits": limits}}]),
        );
        // The QoS levels are made on first use.
        assert_eq!(m.ensure_pod(&guaranteed).unwrap(), "/t/kubepods/podg1");
        let l = tree.limits("/t/kubepods/podg1").unwrap();
        assert_eq!(
            (l.cpu_shares, l.cpu_quota, l.cpu_period, l.memory),
            (Some(256), Some(25_000), Some(100_000), Some(64 << 20))
        );
        let best_effort = pod("e1", serde_json::json!([{"name": "c"}]));
        assert_eq!(
            m.ensure_pod(&best_effort).unwrap(),
            "/t/kubepods/besteffort/pode1"
        );
        assert_eq!(m.pod_uids(), vec!["e1".to_string(), "g1".to_string()]);
        // Limits are written once, when the cgroup is made.
        let writes = tree.writes();
        m.ensure_pod(&guaranteed).unwrap();
        assert_eq!(tree.writes(), writes);
    }

    #[test]
    fn reset_removes_what_the_kubelet_created_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let tree = Arc::new(FakeCgroups::default());
        // Someone else's cgroup beside ours, and an existing ancestor.
        tree.create("/a/other").unwrap();
        let m = manager(tree.clone(), "/a/b/c", dir.path());
        m.ensure_pod(&pod("e1", serde_json::json!([{"name": "c"}])))
            .unwrap();
        tree.create("/a/b/c/kubepods/besteffort/pode1/container")
            .unwrap();
        reset(dir.path(), tree.as_ref()).unwrap();
        assert_eq!(tree.paths(), vec!["/a", "/a/other"]);
        assert!(!dir.path().join(STATE_FILE).exists());
        // Nothing recorded: nothing to do.
        reset(dir.path(), tree.as_ref()).unwrap();
    }
}
