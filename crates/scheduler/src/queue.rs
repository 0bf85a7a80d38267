//! The scheduling queue (`internal/queue/scheduling_queue.go`): pods wait in one of three
//! places, and cluster events move them between them.
//!
//! - the active queue, ordered by the profile's QueueSort plugin: pods ready to be tried;
//! - the backoff queue: pods that failed recently and wait `1s * 2^(attempts-1)` (at most
//!   10s) before the next try;
//! - the unschedulable pods: pods no node could take; a cluster event that may make them
//!   schedulable (a node added or changed, a pod deleted) moves them back, and none stays
//!   longer than five minutes.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;

use crate::framework::{Framework, Plugin, QueuedPodInfo};

const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// The longest a pod stays unschedulable without a retry (`podMaxInUnschedulablePodsDuration`).
pub const MAX_UNSCHEDULABLE: Duration = Duration::from_secs(5 * 60);
/// How often pods unschedulable for too long are looked for
/// (`flushUnschedulablePodsLeftover`'s period).
const LEFTOVER_SCAN_PERIOD: Duration = Duration::from_secs(30);

/// Where a queued pod is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// Waiting to be popped.
    Active,
    /// Waiting out its backoff.
    Backoff,
    /// Waiting for a cluster event (or gated by a PreEnqueue plugin).
    Unschedulable,
    /// Popped and being scheduled; not in any queue.
    InFlight,
}

struct Entry {
    info: QueuedPodInfo,
    place: Place,
    /// When the pod entered the unschedulable pods or its backoff started.
    since: Instant,
    /// The scheduling cycle the pod was popped in.
    cycle: u64,
}

/// Whether a pod changed in more than its status and bookkeeping (`isPodUpdated`).
fn pod_updated(old: &Pod, new: &Pod) -> bool {
    let strip = |pod: &Pod| {
        let mut p = pod.clone();
        p.metadata.resource_version = None;
        p.metadata.generation = None;
        p.metadata.managed_fields = None;
        p.metadata.finalizers = None;
        p.status = None;
        p
    };
    strip(old) != strip(new)
}

/// The three queues of one scheduler.
pub struct SchedulingQueue {
    sort: Arc<dyn Plugin>,
    framework: Framework,
    entries: HashMap<String, Entry>,
    /// Keys of the unschedulable pods (a superset: keys of pods that left are dropped when
    /// next looked at), so cluster events cost the unschedulable pods, not every queued one.
    unschedulable: HashSet<String>,
    /// Keys of active pods; stale keys (pods that moved) are skipped when popped.
    active: Vec<String>,
    backoff: BinaryHeap<Reverse<(Instant, String)>>,
    cycle: u64,
    move_request_cycle: u64,
    /// When pods unschedulable for too long were last looked for.
    last_leftover_scan: Option<Instant>,
}

impl SchedulingQueue {
    /// A queue ordered by `sort` (a QueueSort plugin), gated by `framework`'s PreEnqueue
    /// plugins.
    pub fn new(sort: Arc<dyn Plugin>, framework: Framework) -> SchedulingQueue {
        SchedulingQueue {
            sort,
            framework,
            entries: HashMap::new(),
            unschedulable: HashSet::new(),
            active: Vec::new(),
            backoff: BinaryHeap::new(),
            cycle: 0,
            move_request_cycle: 0,
            last_leftover_scan: None,
        }
    }

    fn less(&self, a: &str, b: &str) -> bool {
        let sort = self.sort.as_queue_sort().expect("a QueueSort plugin");
        match (self.entries.get(a), self.entries.get(b)) {
            (Some(a), Some(b)) => sort.less(&a.info, &b.info),
            (None, _) => true,
            _ => false,
        }
    }

    fn push_active(&mut self, key: String) {
        // A binary heap over `active` with the plugin's order; "less" is "pops first".
        self.active.push(key);
        let mut i = self.active.len() - 1;
        while i > 0 {
            let parent = (i - 1) / 2;
            if self.less(&self.active[i], &self.active[parent]) {
                self.active.swap(i, parent);
                i = parent;
            } else {
                break;
            }
        }
    }

    fn pop_active(&mut self) -> Option<String> {
        if self.active.is_empty() {
            return None;
        }
        let top = self.active.swap_remove(0);
        let mut i = 0;
        loop {
            let (l, r) = (2 * i + 1, 2 * i + 2);
            let mut best = i;
            if l < self.active.len() && self.less(&self.active[l], &self.active[best]) {
                best = l;
            }
            if r < self.active.len() && self.less(&self.active[r], &self.active[best]) {
                best = r;
            }
            if best == i {
                break;
            }
            self.active.swap(i, best);
            i = best;
        }
        Some(top)
    }

    /// Places a pod that is new or was updated: active unless a PreEnqueue plugin holds it.
    pub fn add_or_update(&mut self, key: &str, pod: Arc<Pod>) {
        if let Some(entry) = self.entries.get_mut(key) {
            let updated = pod_updated(&entry.info.pod, &pod);
            entry.info.pod = pod;
            match entry.place {
                Place::InFlight | Place::Active | Place::Backoff => return,
                // Only a change beyond the status may make it schedulable: the scheduler's
                // own condition and nomination writes must not retry it at once.
                Place::Unschedulable if !updated => return,
                Place::Unschedulable => {
                    let info = entry.info.clone();
                    self.enqueue(key, info, Instant::now());
                    return;
                }
            }
        }
        self.enqueue(key, QueuedPodInfo::new(pod), Instant::now());
    }

    fn enqueue(&mut self, key: &str, mut info: QueuedPodInfo, now: Instant) {
        info.gated_by = self.framework.run_pre_enqueue(&info.pod);
        let place = if info.gated_by.is_some() {
            Place::Unschedulable
        } else {
            Place::Active
        };
        let cycle = self.entries.get(key).map(|e| e.cycle).unwrap_or(0);
        self.entries.insert(
            key.to_owned(),
            Entry {
                info,
                place,
                since: now,
                cycle,
            },
        );
        if place == Place::Active {
            self.push_active(key.to_owned());
        } else {
            self.unschedulable.insert(key.to_owned());
        }
    }

    /// Forgets a pod (deleted, or bound by someone else).
    pub fn delete(&mut self, key: &str) {
        self.entries.remove(key);
        self.unschedulable.remove(key);
    }

    /// Whether the queue holds the pod in any place.
    pub fn contains(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    /// Every key the queue holds.
    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.entries.keys()
    }

    /// Where the pod is.
    pub fn place(&self, key: &str) -> Option<Place> {
        self.entries.get(key).map(|e| e.place)
    }

    /// The next pod to schedule, marked in flight.
    pub fn pop(&mut self) -> Option<(String, QueuedPodInfo)> {
        while let Some(key) = self.pop_active() {
            let cycle = self.cycle + 1;
            let Some(entry) = self.entries.get_mut(&key) else {
                continue;
            };
            if entry.place != Place::Active {
                continue;
            }
            self.cycle = cycle;
            entry.place = Place::InFlight;
            entry.cycle = cycle;
            entry.info.attempts += 1;
            entry.info.initial_attempt.get_or_insert_with(Instant::now);
            return Some((key, entry.info.clone()));
        }
        None
    }

    /// A scheduling attempt succeeded (the pod is bound or being bound).
    pub fn done(&mut self, key: &str) {
        if self
            .entries
            .get(key)
            .is_some_and(|e| e.place == Place::InFlight)
        {
            self.entries.remove(key);
        }
    }

    fn backoff_of(attempts: u32) -> Duration {
        let shift = attempts.saturating_sub(1).min(16);
        (INITIAL_BACKOFF * (1u32 << shift)).min(MAX_BACKOFF)
    }

    /// A scheduling attempt failed: the pod goes to backoff when a move request came in
    /// during its cycle or the failure was an error, else to the unschedulable pods.
    pub fn requeue_failed(&mut self, key: &str, plugins: Vec<&'static str>, error: bool) {
        let now = Instant::now();
        let move_requested = self.move_request_cycle;
        let Some(entry) = self.entries.get_mut(key) else {
            return;
        };
        if entry.place != Place::InFlight {
            return;
        }
        entry.info.unschedulable_plugins = plugins;
        entry.since = now;
        if error || move_requested >= entry.cycle {
            entry.place = Place::Backoff;
            let until = now + Self::backoff_of(entry.info.attempts);
            self.backoff.push(Reverse((until, key.to_owned())));
        } else {
            entry.place = Place::Unschedulable;
            self.unschedulable.insert(key.to_owned());
        }
    }

    /// A cluster event that may make unschedulable pods schedulable
    /// (`MoveAllToActiveOrBackoffQueue`).
    pub fn move_all_to_active_or_backoff(&mut self) {
        let now = Instant::now();
        self.move_request_cycle = self.cycle;
        for key in self.take_unschedulable(|_| true) {
            self.retry(&key, now);
        }
    }

    /// An event that may help only pods some of `plugins` rejected (a pod added to a node
    /// helps inter-pod affinity, not resources): moves those of the unschedulable pods.
    pub fn move_rejected_by(&mut self, plugins: &[&str]) {
        let now = Instant::now();
        self.move_request_cycle = self.cycle;
        let keys = self.take_unschedulable(|e| {
            e.info
                .unschedulable_plugins
                .iter()
                .any(|p| plugins.contains(p))
        });
        for key in keys {
            self.retry(&key, now);
        }
    }

    /// Removes from the unschedulable pods those `pick` selects, and returns their keys;
    /// drops keys of pods that are no longer unschedulable.
    fn take_unschedulable(&mut self, pick: impl Fn(&Entry) -> bool) -> Vec<String> {
        let entries = &self.entries;
        let mut taken = Vec::new();
        self.unschedulable.retain(|key| {
            match entries.get(key).filter(|e| e.place == Place::Unschedulable) {
                None => false,
                Some(e) if pick(e) => {
                    taken.push(key.clone());
                    false
                }
                Some(_) => true,
            }
        });
        taken
    }

    fn retry(&mut self, key: &str, now: Instant) {
        let Some(entry) = self.entries.get_mut(key) else {
            return;
        };
        if entry.info.gated_by.is_some() {
            let info = entry.info.clone();
            self.enqueue(key, info, now);
            return;
        }
        let until = entry.since + Self::backoff_of(entry.info.attempts);
        if until > now {
            entry.place = Place::Backoff;
            self.backoff.push(Reverse((until, key.to_owned())));
        } else {
            entry.place = Place::Active;
            self.push_active(key.to_owned());
        }
    }

    /// Moves pods whose backoff ended to the active queue, and pods unschedulable for too
    /// long back to trying; returns when the next backoff ends.
    pub fn flush(&mut self, now: Instant) -> Option<Instant> {
        while let Some(Reverse((until, key))) = self.backoff.peek().cloned() {
            if until > now {
                break;
            }
            self.backoff.pop();
            if let Some(entry) = self.entries.get_mut(&key) {
                if entry.place == Place::Backoff {
                    entry.place = Place::Active;
                    self.push_active(key);
                }
            }
        }
        let scan_due = self
            .last_leftover_scan
            .is_none_or(|last| now.saturating_duration_since(last) >= LEFTOVER_SCAN_PERIOD);
        if scan_due {
            self.last_leftover_scan = Some(now);
            let stale = self.take_unschedulable(|e| {
                e.info.gated_by.is_none()
                    && now.saturating_duration_since(e.since) > MAX_UNSCHEDULABLE
            });
            for key in stale {
                self.retry(&key, now);
            }
        }
        self.backoff.peek().map(|Reverse((until, _))| *until)
    }

    /// Number of pods in each place: (active, backoff, unschedulable).
    pub fn lengths(&self) -> (usize, usize, usize) {
        let mut counts = (0, 0, 0);
        for e in self.entries.values() {
            match e.place {
                Place::Active => counts.0 += 1,
                Place::Backoff => counts.1 += 1,
                Place::Unschedulable => counts.2 += 1,
                Place::InFlight => {}
            }
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::tests::FakeApi;
    use crate::plugins::{default_framework, Handle, ScoringStrategy};

    fn queue() -> SchedulingQueue {
        let fw = default_framework(&Handle {
            api: Arc::new(FakeApi::default()),
            scoring: ScoringStrategy::LeastAllocated,
            volumes: Arc::new(crate::plugins::volume_binding::NoVolumes),
            budgets: Arc::new(crate::plugins::default_preemption::NoBudgets),
            namespaces: Arc::new(crate::plugins::inter_pod_affinity::NoNamespaces),
        });
        SchedulingQueue::new(fw.queue_sort().unwrap(), fw)
    }

    fn pod(priority: i32, gated: bool) -> Arc<Pod> {
        let mut spec = serde_json::json!({"containers": [{"name": "c"}], "priority": priority});
        if gated {
            spec["schedulingGates"] = serde_json::json!([{"name": "wait"}]);
        }
        Arc::new(serde_json::from_value(serde_json::json!({"spec": spec})).unwrap())
    }

    #[test]
    fn pops_by_priority_then_arrival() {
        let mut q = queue();
        q.add_or_update("a", pod(0, false));
        q.add_or_update("b", pod(10, false));
        q.add_or_update("c", pod(0, false));
        let order: Vec<String> = std::iter::from_fn(|| q.pop().map(|(k, _)| k)).collect();
        assert_eq!(order, ["b", "a", "c"]);
    }

    #[test]
    fn gated_pods_wait_until_their_gates_are_removed() {
        let mut q = queue();
        q.add_or_update("g", pod(0, true));
        assert!(q.pop().is_none());
        assert_eq!(q.place("g"), Some(Place::Unschedulable));
        q.add_or_update("g", pod(0, false));
        assert_eq!(q.pop().map(|(k, _)| k).as_deref(), Some("g"));
    }

    #[test]
    fn unschedulable_pods_move_on_cluster_events_and_back_off() {
        let mut q = queue();
        q.add_or_update("p", pod(0, false));
        q.pop().unwrap();
        q.requeue_failed("p", vec!["NodeResourcesFit"], false);
        assert_eq!(q.place("p"), Some(Place::Unschedulable));
        q.move_all_to_active_or_backoff();
        // One attempt so far: a one-second backoff that has not ended yet.
        assert_eq!(q.place("p"), Some(Place::Backoff));
        assert!(q.pop().is_none());
        q.flush(Instant::now() + Duration::from_secs(2));
        assert_eq!(q.pop().map(|(k, i)| (k, i.attempts)), Some(("p".into(), 2)));
    }

    #[test]
    fn status_only_updates_leave_unschedulable_pods_waiting() {
        let mut q = queue();
        q.add_or_update("p", pod(0, false));
        q.pop().unwrap();
        q.requeue_failed("p", vec!["NodeResourcesFit"], false);
        let mut with_status = (*pod(0, false)).clone();
        with_status.status =
            Some(serde_json::from_value(serde_json::json!({"nominatedNodeName": "a"})).unwrap());
        with_status.metadata.resource_version = Some("7".into());
        q.add_or_update("p", Arc::new(with_status.clone()));
        assert_eq!(q.place("p"), Some(Place::Unschedulable));
        with_status.metadata.labels = Some([("k".to_owned(), "v".to_owned())].into());
        q.add_or_update("p", Arc::new(with_status));
        assert_eq!(q.place("p"), Some(Place::Active));
    }

    #[test]
    fn pods_unschedulable_too_long_are_retried_by_the_periodic_scan() {
        let mut q = queue();
        q.add_or_update("p", pod(0, false));
        q.pop().unwrap();
        let start = Instant::now();
        q.flush(start);
        q.requeue_failed("p", vec!["NodeResourcesFit"], false);
        q.flush(start + Duration::from_secs(10));
        assert_eq!(q.place("p"), Some(Place::Unschedulable));
        // An event for other plugins leaves it where it is.
        q.move_rejected_by(&["InterPodAffinity"]);
        assert_eq!(q.place("p"), Some(Place::Unschedulable));
        q.flush(start + MAX_UNSCHEDULABLE + Duration::from_secs(1));
        assert_eq!(q.place("p"), Some(Place::Active));
        // A deleted unschedulable pod does not come back with the next event.
        q.pop().unwrap();
        q.requeue_failed("p", vec!["NodeResourcesFit"], false);
        q.delete("p");
        q.move_all_to_active_or_backoff();
        assert!(!q.contains("p"));
        assert_eq!(q.lengths(), (0, 0, 0));
    }

    #[test]
    fn a_move_during_the_cycle_sends_the_failed_pod_to_backoff() {
        let mut q = queue();
        q.add_or_update("p", pod(0, false));
        q.pop().unwrap();
        q.move_all_to_active_or_backoff();
        q.requeue_failed("p", vec![], false);
        assert_eq!(q.place("p"), Some(Place::Backoff));
    }
}
