//! Expectations (`controller_utils.go`'s `ControllerExpectations`): pods a controller created
//! or deleted that its pod cache has not shown yet. While any are outstanding the
//! controller does not create or delete more, so a stale cache cannot make it act twice.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher;

use crate::pod_util::controller_of;

/// Outstanding expectations give up after this long (`ExpectationsTimeout`).
const TIMEOUT: Duration = Duration::from_secs(5 * 60);

#[derive(Default)]
struct Pending {
    creates: HashSet<String>,
    deletes: HashSet<String>,
    since: Option<Instant>,
}

/// Expected creations and deletions per owner UID; cheap to clone (shared).
#[derive(Clone, Default)]
pub struct Expectations {
    inner: Arc<Mutex<HashMap<String, Pending>>>,
}

impl Expectations {
    /// Remembers that `pod` was created for `owner`.
    pub fn expect_create(&self, owner: &str, pod: String) {
        let mut map = self.inner.lock().expect("expectations lock");
        let p = map.entry(owner.to_owned()).or_default();
        p.creates.insert(pod);
        p.since.get_or_insert_with(Instant::now);
    }

    /// Remembers that `pod` of `owner` was deleted.
    pub fn expect_delete(&self, owner: &str, pod: String) {
        let mut map = self.inner.lock().expect("expectations lock");
        let p = map.entry(owner.to_owned()).or_default();
        p.deletes.insert(pod);
        p.since.get_or_insert_with(Instant::now);
    }

    /// Notes a pod as the watch shows it (present, or being deleted/deleted).
    pub fn observe(&self, pod: &Pod) {
        let Some(owner) = controller_of(&pod.metadata) else {
            return;
        };
        let name = pod.metadata.name.clone().unwrap_or_default();
        let mut map = self.inner.lock().expect("expectations lock");
        if let Some(p) = map.get_mut(&owner.uid) {
            p.creates.remove(&name);
            if pod.metadata.deletion_timestamp.is_some() {
                p.deletes.remove(&name);
            }
        }
    }

    /// Notes that the watch showed `pod` gone.
    pub fn observe_deleted(&self, pod: &Pod) {
        let Some(owner) = controller_of(&pod.metadata) else {
            return;
        };
        let name = pod.metadata.name.clone().unwrap_or_default();
        let mut map = self.inner.lock().expect("expectations lock");
        if let Some(p) = map.get_mut(&owner.uid) {
            p.deletes.remove(&name);
            p.creates.remove(&name);
        }
    }

    /// Applies one pod watch event.
    pub fn observe_event(&self, event: &watcher::Event<Pod>) {
        match event {
            watcher::Event::Apply(p) | watcher::Event::InitApply(p) => self.observe(p),
            watcher::Event::Delete(p) => self.observe_deleted(p),
            watcher::Event::Init | watcher::Event::InitDone => {}
        }
    }

    /// Whether `owner` may act: nothing outstanding, or outstanding for too long.
    pub fn satisfied(&self, owner: &str) -> bool {
        let mut map = self.inner.lock().expect("expectations lock");
        let Some(p) = map.get(owner) else {
            return true;
        };
        let done = p.creates.is_empty() && p.deletes.is_empty();
        if done || p.since.is_some_and(|s| s.elapsed() > TIMEOUT) {
            map.remove(owner);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(owner: &str, name: &str, deleting: bool) -> Pod {
        let mut v = serde_json::json!({"metadata": {"name": name, "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": owner,
             "controller": true}]}});
        if deleting {
            v["metadata"]["deletionTimestamp"] = "2024-01-01T00:00:00Z".into();
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn creations_and_deletions_are_awaited_until_observed() {
        let e = Expectations::default();
        assert!(e.satisfied("u"));
        e.expect_create("u", "a".into());
        e.expect_delete("u", "b".into());
        assert!(!e.satisfied("u"));
        e.observe(&pod("u", "a", false));
        assert!(!e.satisfied("u"));
        e.observe(&pod("u", "b", true));
        assert!(e.satisfied("u"));
    }
}
