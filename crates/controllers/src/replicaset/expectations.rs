//! Expectations (`controller_utils.go`'s `ControllerExpectations`): pods a controller created
//! or deleted that its pod cache has not shown yet. While any are outstanding the
//! controller does not create or delete more, so a stale cache cannot make it act twice.
//!
//! The watch may show a pod before the call that created or deleted it has returned (and
//! the expectation has been recorded): what the watch showed of pods that were not awaited
//! is remembered for a short while, and an expectation it already answers is not recorded.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher;

use crate::pod_util::controller_of;

/// Outstanding expectations give up after this long (`ExpectationsTimeout`).
const TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// How long a sighting nobody awaited yet is kept for an expectation about to be recorded.
const EARLY_WINDOW: Duration = Duration::from_secs(30);
/// A pod younger than this may still be awaited by the controller that created it.
const YOUNG: i64 = 30;

/// What the watch showed of a pod.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Seen {
    Created,
    Deleted,
}

#[derive(Default)]
struct Pending {
    creates: HashSet<String>,
    deletes: HashSet<String>,
    since: Option<Instant>,
}

/// Expected creations and deletions per owner UID; cheap to clone (shared).
#[derive(Clone, Default)]
pub struct Expectations {
    inner: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    pending: HashMap<String, Pending>,
    /// Sightings no expectation awaited yet, by (owner UID, pod name).
    early: HashMap<(String, String), (Seen, Instant)>,
}

impl State {
    /// Whether the watch already showed `seen` for the pod (forgetting the sighting).
    fn already(&mut self, owner: &str, pod: &str, seen: Seen) -> bool {
        let key = (owner.to_owned(), pod.to_owned());
        match self.early.get(&key) {
            Some((s, at)) if *s == seen && at.elapsed() < EARLY_WINDOW => {
                self.early.remove(&key);
                true
            }
            _ => false,
        }
    }

    /// Records a sighting no expectation awaited (old ones are dropped).
    fn remember(&mut self, owner: &str, pod: &str, seen: Seen) {
        if self.early.len() > 64 {
            self.early.retain(|_, (_, at)| at.elapsed() < EARLY_WINDOW);
        }
        self.early
            .insert((owner.to_owned(), pod.to_owned()), (seen, Instant::now()));
    }
}

impl Expectations {
    /// Remembers that `pod` was created for `owner`.
    pub fn expect_create(&self, owner: &str, pod: String) {
        let mut state = self.inner.lock().expect("expectations lock");
        if state.already(owner, &pod, Seen::Created) {
            return;
        }
        let p = state.pending.entry(owner.to_owned()).or_default();
        p.creates.insert(pod);
        p.since.get_or_insert_with(Instant::now);
    }

    /// Remembers that `pod` of `owner` was deleted.
    pub fn expect_delete(&self, owner: &str, pod: String) {
        let mut state = self.inner.lock().expect("expectations lock");
        if state.already(owner, &pod, Seen::Deleted) {
            return;
        }
        let p = state.pending.entry(owner.to_owned()).or_default();
        p.deletes.insert(pod);
        p.since.get_or_insert_with(Instant::now);
    }

    /// Notes a pod as the watch shows it (present, or being deleted/deleted).
    pub fn observe(&self, pod: &Pod) {
        let Some(owner) = controller_of(&pod.metadata) else {
            return;
        };
        let name = pod.metadata.name.clone().unwrap_or_default();
        let deleting = pod.metadata.deletion_timestamp.is_some();
        let mut state = self.inner.lock().expect("expectations lock");
        let (created, deleted) = match state.pending.get_mut(&owner.uid) {
            Some(p) => (p.creates.remove(&name), deleting && p.deletes.remove(&name)),
            None => (false, false),
        };
        let young = pod
            .metadata
            .creation_timestamp
            .as_ref()
            .is_none_or(|t| jiff::Timestamp::now().as_second() - t.0.as_second() < YOUNG);
        if !created && young {
            state.remember(&owner.uid, &name, Seen::Created);
        }
        if deleting && !deleted {
            state.remember(&owner.uid, &name, Seen::Deleted);
        }
    }

    /// Notes that the watch showed `pod` gone.
    pub fn observe_deleted(&self, pod: &Pod) {
        let Some(owner) = controller_of(&pod.metadata) else {
            return;
        };
        let name = pod.metadata.name.clone().unwrap_or_default();
        let mut state = self.inner.lock().expect("expectations lock");
        let deleted = match state.pending.get_mut(&owner.uid) {
            Some(p) => {
                p.creates.remove(&name);
                p.deletes.remove(&name)
            }
            None => false,
        };
        if !deleted {
            state.remember(&owner.uid, &name, Seen::Deleted);
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
        let mut state = self.inner.lock().expect("expectations lock");
        let Some(p) = state.pending.get(owner) else {
            return true;
        };
        let done = p.creates.is_empty() && p.deletes.is_empty();
        if done || p.since.is_some_and(|s| s.elapsed() > TIMEOUT) {
            state.pending.remove(owner);
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

    #[test]
    fn a_watch_faster_than_the_call_still_satisfies() {
        let e = Expectations::default();
        // The watch shows the new pod, then its deletion, before either call returned.
        e.observe(&pod("u", "a", false));
        e.expect_create("u", "a".into());
        assert!(e.satisfied("u"), "the creation was already seen");
        e.observe_deleted(&pod("u", "a", false));
        e.expect_delete("u", "a".into());
        assert!(e.satisfied("u"), "the deletion was already seen");
        // A sighting answers one expectation only.
        e.expect_delete("u", "a".into());
        assert!(!e.satisfied("u"));
    }
}
