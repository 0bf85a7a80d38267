//! The pod lifecycle event generator, as pkg/kubelet/pleg's `GenericPLEG`: one relist of
//! the node's sandboxes and containers per period, compared with the last one, names
//! the pods whose runtime state changed (a container started or exited, a sandbox
//! lost its pause process) or whose probes concluded something new, so that only
//! those pods are synced at once. A pod whose status is settled is otherwise synced
//! only every [`crate::pod_worker::STEADY_RESYNC`], instead of every second.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::time::Duration;

use crate::cri::{self, CriError, RuntimeService};
use crate::probes::ProbeState;

/// How often the runtime is relisted (the kubelet's `relistPeriod`).
pub const RELIST_PERIOD: Duration = Duration::from_secs(1);

/// A pod the runtime knows, as its labels name it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodKey {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub name: String,
}

/// One sandbox or container as a relist saw it: id, state (sandboxes offset by 10) and
/// exit code.
type Instance = (String, u8, i32);

/// What the last relist saw, per pod UID: the pod and a digest of its runtime state.
#[derive(Debug, Default)]
pub struct Pleg {
    last: HashMap<String, (PodKey, u64)>,
}

impl Pleg {
    /// Relists the runtime and returns the pods whose sandboxes, containers or probe
    /// conclusions (`probes`, by pod UID) differ from the last relist, including pods
    /// that appeared or vanished; sorted.
    pub fn relist<R: RuntimeService + ?Sized>(
        &mut self,
        runtime: &R,
        probes: impl Fn(&str) -> BTreeMap<String, ProbeState>,
    ) -> Result<Vec<PodKey>, CriError> {
        let all = BTreeMap::new();
        // Per pod UID: its key and every instance's (id, state, exit code), sorted.
        let mut seen: BTreeMap<String, (PodKey, Vec<Instance>)> = BTreeMap::new();
        let mut add = |labels: &BTreeMap<String, String>, instance: Instance| {
            let Some(uid) = labels.get(cri::POD_UID_LABEL) else {
                return;
            };
            let get = |k: &str| labels.get(k).cloned().unwrap_or_default();
            seen.entry(uid.clone())
                .or_insert_with(|| {
                    let key = PodKey {
                        namespace: get(cri::POD_NAMESPACE_LABEL),
                        name: get(cri::POD_NAME_LABEL),
                    };
                    (key, Vec::new())
                })
                .1
                .push(instance);
        };
        for s in runtime.list_pod_sandboxes(&all)? {
            add(&s.labels, (s.id, 10 + s.state as u8, 0));
        }
        for c in runtime.list_containers(&all)? {
            add(&c.labels, (c.id, c.state as u8, c.exit_code));
        }
        let mut now = HashMap::with_capacity(seen.len());
        let mut changed = Vec::new();
        for (uid, (key, mut instances)) in seen {
            instances.sort();
            let mut h = DefaultHasher::new();
            instances.hash(&mut h);
            for (name, p) in probes(&uid) {
                (name, p.container_id, p.started, p.ready).hash(&mut h);
                p.restart.map(|k| k.as_str()).hash(&mut h);
            }
            let digest = h.finish();
            if self.last.get(&uid).map(|(_, d)| *d) != Some(digest) {
                changed.push(key.clone());
            }
            now.insert(uid, (key, digest));
        }
        // Pods whose last sandbox and container went.
        for (uid, (key, _)) in &self.last {
            if !now.contains_key(uid) {
                changed.push(key.clone());
            }
        }
        self.last = now;
        changed.sort();
        changed.dedup();
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cri::{ContainerConfig, PodSandboxConfig};
    use crate::fake::FakeRuntime;

    fn sandbox(rt: &FakeRuntime, name: &str) -> String {
        rt.run_pod_sandbox(&PodSandboxConfig {
            name: name.into(),
            namespace: "default".into(),
            uid: format!("uid-{name}"),
            image: "busybox".into(),
            ..Default::default()
        })
        .unwrap()
    }

    fn key(name: &str) -> PodKey {
        PodKey {
            namespace: "default".into(),
            name: name.into(),
        }
    }

    #[test]
    fn only_pods_whose_runtime_state_or_probes_changed_are_named() {
        let rt = FakeRuntime::with_images(&["busybox"]);
        let mut pleg = Pleg::default();
        let none = |_: &str| BTreeMap::new();
        let a = sandbox(&rt, "a");
        sandbox(&rt, "b");
        // The first relist names every pod it finds.
        assert_eq!(pleg.relist(&rt, none).unwrap(), vec![key("a"), key("b")]);
        assert!(pleg.relist(&rt, none).unwrap().is_empty());

        // A container of a starts, then exits: a only, each time.
        let c = rt
            .create_container(
                &a,
                &ContainerConfig {
                    name: "app".into(),
                    image: "busybox".into(),
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(pleg.relist(&rt, none).unwrap(), vec![key("a")]);
        rt.start_container(&c).unwrap();
        assert_eq!(pleg.relist(&rt, none).unwrap(), vec![key("a")]);
        assert!(pleg.relist(&rt, none).unwrap().is_empty());
        rt.stop_container(&c, 0).unwrap();
        assert_eq!(pleg.relist(&rt, none).unwrap(), vec![key("a")]);

        // A probe of b concludes the container is ready.
        let ready = |uid: &str| {
            let mut m = BTreeMap::new();
            if uid == "uid-b" {
                m.insert(
                    "app".to_string(),
                    ProbeState {
                        ready: true,
                        ..Default::default()
                    },
                );
            }
            m
        };
        assert_eq!(pleg.relist(&rt, ready).unwrap(), vec![key("b")]);
        assert!(pleg.relist(&rt, ready).unwrap().is_empty());

        // b's sandbox goes: b is named once more.
        let b = rt.list_pod_sandboxes(&BTreeMap::new()).unwrap();
        let b = b
            .iter()
            .find(|s| s.labels[cri::POD_NAME_LABEL] == "b")
            .unwrap();
        rt.remove_pod_sandbox(&b.id).unwrap();
        assert_eq!(pleg.relist(&rt, ready).unwrap(), vec![key("b")]);
    }
}
