//! The scheduling loop (`schedule_one.go`): one task owns the cache and the queue; watch
//! events and binding results arrive on a channel and are applied between cycles, so the
//! cache needs no lock and each cycle sees a consistent picture.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod, PodCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::watcher;
use rand::Rng as _;
use tokio::sync::mpsc;

use crate::api::{ClusterApi, Nomination, PodEvent};
use crate::cache::{node_changed_for_scheduling, Cache};
use crate::framework::{
    num_feasible_nodes_to_find, CycleState, Diagnosis, FitError, Framework, NodeInfo,
    QueuedPodInfo, Status,
};
use crate::queue::SchedulingQueue;

/// What the loop reacts to.
pub enum Input {
    /// A pod watch event.
    Pod(Box<watcher::Event<Pod>>),
    /// A node watch event.
    Node(Box<watcher::Event<Node>>),
    /// A claim, volume or StorageClass changed: pods waiting for volumes may fit now.
    VolumesChanged,
    /// A binding cycle ended.
    Bound {
        /// The pod's key.
        key: String,
        /// The pod as queued.
        info: QueuedPodInfo,
        /// The node.
        node: String,
        /// The binding's outcome.
        status: Status,
    },
}

/// The key of a pod: `namespace/name`.
pub fn pod_key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or(""),
        pod.metadata.name.as_deref().unwrap_or("")
    )
}

fn node_name(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
}

fn scheduler_name(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.scheduler_name.as_deref())
        .unwrap_or("default-scheduler")
}

fn priority(pod: &Pod) -> i32 {
    pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
}

fn terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// Counters the benchmark and logs read.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    /// Pods whose binding succeeded.
    pub bound: u64,
    /// Scheduling attempts that found no node.
    pub unschedulable: u64,
    /// Binding or plugin errors.
    pub errors: u64,
}

/// Why a scheduling cycle found no node.
struct Failure {
    /// Set when the pod fits no node (rather than an error).
    fit: Option<Box<FitError>>,
    /// The error, when there is no `fit`.
    error: String,
    /// What happens to `status.nominatedNodeName`.
    nomination: Nomination,
}

impl Failure {
    fn error(error: impl Into<String>) -> Failure {
        Failure {
            fit: None,
            error: error.into(),
            nomination: Nomination::Set(String::new()),
        }
    }
}

/// The scheduler's state, owned by its loop.
pub struct Scheduler {
    profiles: HashMap<String, Framework>,
    queue: SchedulingQueue,
    cache: Cache,
    api: Arc<dyn ClusterApi>,
    inputs: mpsc::UnboundedSender<Input>,
    next_start_node: usize,
    relisting_pods: Option<HashSet<String>>,
    relisting_nodes: Option<HashSet<String>>,
    /// Whether the first list of pods, and of nodes, is in the cache (`WaitForCacheSync`):
    /// until both are, [`Scheduler::run`] schedules nothing, so no pod is judged against
    /// part of the cluster (and preempts, or waits as unschedulable, for nothing).
    synced: (bool, bool),
    /// Pending pods nominated to a node by preemption, by key: the node and the pod
    /// (`nominator`); lower-priority pods are filtered as if they ran there already.
    nominated: HashMap<String, (String, Arc<Pod>)>,
    bindings: Arc<tokio::sync::Semaphore>,
    /// Progress counters.
    pub stats: Stats,
}

/// At most this many bindings in flight, so a burst cannot open thousands of requests.
const MAX_CONCURRENT_BINDINGS: usize = 256;

impl Scheduler {
    /// A scheduler with one framework per `schedulerName`; `inputs` is the sender side of
    /// the loop's channel (binding tasks report through it).
    pub fn new(
        profiles: HashMap<String, Framework>,
        api: Arc<dyn ClusterApi>,
        inputs: mpsc::UnboundedSender<Input>,
    ) -> Scheduler {
        let first = profiles
            .values()
            .next()
            .expect("at least one profile")
            .clone();
        let sort = first
            .queue_sort()
            .expect("the profile has a QueueSort plugin");
        Scheduler {
            queue: SchedulingQueue::new(sort, first),
            profiles,
            cache: Cache::default(),
            api,
            inputs,
            next_start_node: 0,
            relisting_pods: None,
            relisting_nodes: None,
            synced: (false, false),
            nominated: HashMap::new(),
            bindings: Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_BINDINGS)),
            stats: Stats::default(),
        }
    }

    /// Runs until the input channel closes.
    pub async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Input>) {
        let mut scheduled_since_yield = 0u32;
        loop {
            while let Ok(input) = rx.try_recv() {
                self.handle(input);
            }
            let next_backoff = self.queue.flush(Instant::now());
            let popped = if self.synced == (true, true) {
                self.queue.pop()
            } else {
                None
            };
            if let Some((key, info)) = popped {
                self.schedule_one(key, info);
                scheduled_since_yield += 1;
                if scheduled_since_yield >= 16 {
                    scheduled_since_yield = 0;
                    tokio::task::yield_now().await;
                }
                continue;
            }
            let wait = next_backoff
                .map(|t| t.saturating_duration_since(Instant::now()))
                .unwrap_or(Duration::from_secs(30))
                .max(Duration::from_millis(10));
            tokio::select! {
                input = rx.recv() => match input {
                    Some(input) => self.handle(input),
                    None => return,
                },
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Applies one input to the cache and queue.
    pub fn handle(&mut self, input: Input) {
        match input {
            Input::Pod(event) => self.handle_pod_event(*event),
            Input::Node(event) => self.handle_node_event(*event),
            Input::VolumesChanged => self.queue.move_all_to_active_or_backoff(),
            Input::Bound {
                key,
                info,
                node,
                status,
            } => self.finish_binding(key, info, node, status),
        }
    }

    fn handle_pod_event(&mut self, event: watcher::Event<Pod>) {
        match event {
            watcher::Event::Init => self.relisting_pods = Some(HashSet::new()),
            watcher::Event::InitApply(pod) => {
                if let Some(seen) = self.relisting_pods.as_mut() {
                    seen.insert(pod_key(&pod));
                }
                self.apply_pod(Arc::new(pod));
            }
            watcher::Event::InitDone => {
                self.synced.0 = true;
                if let Some(seen) = self.relisting_pods.take() {
                    let gone: Vec<String> = self
                        .cache
                        .pod_keys()
                        .into_iter()
                        .chain(self.queue.keys().cloned())
                        .filter(|k| !seen.contains(k) && !self.cache.is_assumed(k))
                        .collect();
                    for key in gone {
                        self.delete_pod(&key);
                    }
                }
            }
            watcher::Event::Apply(pod) => self.apply_pod(Arc::new(pod)),
            watcher::Event::Delete(pod) => {
                let key = pod_key(&pod);
                // While a binding is in flight the fallback binder deletes and recreates
                // the pod under the same key; the binding's outcome decides then.
                if !self.cache.is_binding(&key) {
                    self.delete_pod(&key);
                }
            }
        }
    }

    fn delete_pod(&mut self, key: &str) {
        self.nominated.remove(key);
        if self.cache.remove_pod(key) {
            self.queue.move_all_to_active_or_backoff();
        }
        self.queue.delete(key);
    }

    fn apply_pod(&mut self, pod: Arc<Pod>) {
        let key = pod_key(&pod);
        if node_name(&pod).is_some() {
            self.queue.delete(&key);
            self.nominated.remove(&key);
            if terminal(&pod) {
                if self.cache.remove_pod(&key) {
                    self.queue.move_all_to_active_or_backoff();
                }
            } else {
                // A new pod on a node, or new labels, may satisfy pods waiting for
                // inter-pod affinity or topology spread (`AssignedPodAdd`/`Update`).
                // An assumed pod confirmed by the watch is new to the other pods' eyes.
                let moves = match self.cache.pod(&key) {
                    None => true,
                    Some(_) if self.cache.is_assumed(&key) => true,
                    Some(old) => old.metadata.labels != pod.metadata.labels,
                };
                self.cache.add_pod(&key, pod);
                if moves {
                    self.queue.move_rejected_by(&[
                        crate::plugins::inter_pod_affinity::NAME,
                        crate::plugins::pod_topology_spread::NAME,
                    ]);
                }
            }
            return;
        }
        if let Some(node) = pod
            .status
            .as_ref()
            .and_then(|s| s.nominated_node_name.as_deref())
            .filter(|n| !n.is_empty())
        {
            self.nominated
                .insert(key.clone(), (node.to_owned(), pod.clone()));
        }
        if pod.metadata.deletion_timestamp.is_some()
            || !self.profiles.contains_key(scheduler_name(&pod))
            || self.cache.is_assumed(&key)
            || terminal(&pod)
        {
            return;
        }
        self.queue.add_or_update(&key, pod);
    }

    fn handle_node_event(&mut self, event: watcher::Event<Node>) {
        match event {
            watcher::Event::Init => self.relisting_nodes = Some(HashSet::new()),
            watcher::Event::InitApply(node) => {
                if let Some(seen) = self.relisting_nodes.as_mut() {
                    seen.insert(node.metadata.name.clone().unwrap_or_default());
                }
                self.apply_node(node);
            }
            watcher::Event::InitDone => {
                self.synced.1 = true;
                if let Some(seen) = self.relisting_nodes.take() {
                    for name in self.cache.node_names() {
                        if !seen.contains(&name) {
                            self.cache.remove_node(&name);
                        }
                    }
                }
            }
            watcher::Event::Apply(node) => self.apply_node(node),
            watcher::Event::Delete(node) => {
                self.cache
                    .remove_node(node.metadata.name.as_deref().unwrap_or(""));
            }
        }
    }

    fn apply_node(&mut self, node: Node) {
        let node = Arc::new(node);
        let changed = match self.cache.set_node(node.clone()) {
            None => true,
            Some(old) => node_changed_for_scheduling(&old, &node),
        };
        if changed {
            self.queue.move_all_to_active_or_backoff();
        }
    }

    /// The filtering and scoring half of a cycle: the node to use, or why there is none.
    fn find_node(
        &mut self,
        framework: &Framework,
        state: &mut CycleState,
        pod: &Pod,
    ) -> Result<String, Failure> {
        let nodes = self.cache.nodes();
        if nodes.is_empty() {
            return Err(Failure::error("no nodes available to schedule pods"));
        }
        let mut diagnosis = Diagnosis::default();
        let pre = framework.run_pre_filter(state, pod, &nodes);
        if pre.code == crate::framework::Code::Error {
            return Err(Failure::error(pre.message()));
        }
        if pre.is_rejected() {
            diagnosis.pre_filter_msg = pre.message();
            diagnosis.node_statuses = nodes
                .iter()
                .map(|n| (n.name().to_owned(), pre.clone()))
                .collect();
            return Err(self.post_filter(framework, state, pod, &nodes, diagnosis));
        }
        // PreFilter may have narrowed the cycle to a few nodes (a DaemonSet pod's one node):
        // only those are filtered; the others count as rejected by the narrowing plugins.
        let narrowed: Option<Vec<&NodeInfo>> = state.pre_filter_nodes().map(|names| {
            names
                .iter()
                .filter_map(|name| self.cache.node(name))
                .filter(|info| info.node.is_some())
                .collect()
        });
        let candidates: &[&NodeInfo] = narrowed.as_deref().unwrap_or(&nodes);
        let want = num_feasible_nodes_to_find(candidates.len());
        let start = self.next_start_node % candidates.len().max(1);
        let mut feasible: Vec<&NodeInfo> = Vec::with_capacity(want);
        let mut evaluated = 0;
        for i in 0..candidates.len() {
            let node = candidates[(start + i) % candidates.len()];
            evaluated += 1;
            let status = self.filter_with_nominated(framework, state, pod, node);
            if status.is_success() {
                feasible.push(node);
                if feasible.len() >= want {
                    break;
                }
            } else if status.code == crate::framework::Code::Error {
                return Err(Failure::error(status.message()));
            } else {
                diagnosis
                    .node_statuses
                    .push((node.name().to_owned(), status));
            }
        }
        if narrowed.is_none() {
            self.next_start_node = (start + evaluated) % nodes.len();
        }
        if feasible.is_empty() {
            if let Some(names) = state.pre_filter_nodes() {
                // `SetAbsentNodesStatus`: built only on failure, never per cycle.
                let mut absent = Status::unresolvable(format!(
                    "node(s) didn't satisfy plugin(s) [{}]",
                    state.narrowed_by().join(" ")
                ));
                absent.plugin = state.narrowed_by().first().copied().unwrap_or("");
                diagnosis.node_statuses.extend(
                    nodes
                        .iter()
                        .filter(|n| !names.contains(n.name()))
                        .map(|n| (n.name().to_owned(), absent.clone())),
                );
            }
            return Err(self.post_filter(framework, state, pod, &nodes, diagnosis));
        }
        if feasible.len() == 1 {
            return Ok(feasible[0].name().to_owned());
        }
        let scores = framework
            .run_scoring(state, pod, &feasible, &nodes)
            .map_err(|s| Failure::error(s.message()))?;
        Ok(select_host(&feasible, &scores))
    }

    fn post_filter(
        &self,
        framework: &Framework,
        state: &CycleState,
        pod: &Pod,
        nodes: &[&NodeInfo],
        mut diagnosis: Diagnosis,
    ) -> Failure {
        let (nominated, message) = framework.run_post_filter(state, pod, nodes, &diagnosis);
        diagnosis.post_filter_msg = message;
        Failure {
            fit: Some(Box::new(FitError {
                num_all_nodes: nodes.len(),
                diagnosis,
            })),
            error: String::new(),
            nomination: nominated.map_or(Nomination::Keep, Nomination::Set),
        }
    }

    /// Runs the filters with the pods nominated to `node` that are at least as important
    /// as `pod` counted there, and then without them (`RunFilterPluginsWithNominatedPods`),
    /// so room freed by preemption stays for its preemptor.
    fn filter_with_nominated(
        &self,
        framework: &Framework,
        state: &CycleState,
        pod: &Pod,
        node: &NodeInfo,
    ) -> Status {
        if self.nominated.is_empty() {
            return framework.run_filter(state, pod, node);
        }
        let key = pod_key(pod);
        let nominated: Vec<(&String, &Arc<Pod>)> = self
            .nominated
            .iter()
            .filter(|(k, (n, p))| {
                n == node.name()
                    && **k != key
                    && priority(p) >= priority(pod)
                    && !node.pods.contains_key(*k)
            })
            .map(|(k, (_, p))| (k, p))
            .collect();
        if nominated.is_empty() {
            return framework.run_filter(state, pod, node);
        }
        let mut with_nominated = node.clone();
        for (k, p) in nominated {
            let mut assumed = (**p).clone();
            assumed.spec.get_or_insert_with(Default::default).node_name = Some(node.name().into());
            with_nominated.add_pod(k, Arc::new(assumed));
        }
        let status = framework.run_filter(state, pod, &with_nominated);
        if !status.is_success() {
            return status;
        }
        framework.run_filter(state, pod, node)
    }

    /// One scheduling cycle for one pod; starts its binding cycle on success.
    pub fn schedule_one(&mut self, key: String, info: QueuedPodInfo) {
        let pod = info.pod.clone();
        let Some(framework) = self.profiles.get(scheduler_name(&pod)).cloned() else {
            self.queue.delete(&key);
            return;
        };
        let mut state = CycleState::default();
        let host = match self.find_node(&framework, &mut state, &pod) {
            Ok(host) => host,
            Err(failure) => {
                self.fail(&key, &info, failure);
                return;
            }
        };
        let mut assumed = (*pod).clone();
        assumed.spec.get_or_insert_with(Default::default).node_name = Some(host.clone());
        let assumed = Arc::new(assumed);
        self.cache.assume(&key, assumed.clone());
        let reserve = framework.run_reserve(&state, &pod, &host);
        let permit = if reserve.is_success() {
            framework.run_permit(&state, &pod, &host)
        } else {
            reserve.clone()
        };
        if !permit.is_success() {
            if reserve.is_success() {
                framework.run_unreserve(&state, &pod, &host);
            }
            self.cache.forget(&key);
            self.fail(&key, &info, Failure::error(permit.message()));
            return;
        }
        let binding = framework.run_binding(pod.clone(), host.clone());
        let inputs = self.inputs.clone();
        let permits = self.bindings.clone();
        tokio::spawn(async move {
            let _permit = permits.acquire_owned().await;
            let status = binding.await;
            let _ = inputs.send(Input::Bound {
                key,
                info,
                node: host,
                status,
            });
        });
    }

    fn finish_binding(&mut self, key: String, info: QueuedPodInfo, node: String, status: Status) {
        let pod = info.pod.clone();
        if status.is_success() {
            self.stats.bound += 1;
            self.cache.finish_binding(&key);
            self.queue.done(&key);
            self.api.record(PodEvent {
                message: format!("Successfully assigned {key} to {node}"),
                pod,
                type_: "Normal",
                reason: "Scheduled",
            });
            return;
        }
        self.cache.forget(&key);
        if let Some(framework) = self.profiles.get(scheduler_name(&pod)) {
            framework.run_unreserve(&CycleState::default(), &pod, &node);
        }
        self.fail(&key, &info, Failure::error(status.message()));
    }

    /// Records a failed attempt: requeue, the PodScheduled condition and an Event.
    fn fail(&mut self, key: &str, info: &QueuedPodInfo, failure: Failure) {
        let Failure {
            fit,
            error,
            nomination,
        } = failure;
        let (message, plugins, is_error) = match &fit {
            Some(fit) => (fit.to_string(), fit.unschedulable_plugins(), false),
            None if error == "no nodes available to schedule pods" => (error, Vec::new(), false),
            None => (error, Vec::new(), true),
        };
        if is_error {
            self.stats.errors += 1;
            tracing::warn!(pod = key, "scheduling failed: {message}");
        } else {
            self.stats.unschedulable += 1;
        }
        self.queue.requeue_failed(key, plugins, is_error);
        let reason = if is_error {
            "SchedulerError"
        } else {
            "Unschedulable"
        };
        let pod = info.pod.clone();
        match &nomination {
            Nomination::Set(node) if node.is_empty() => {
                self.nominated.remove(key);
            }
            Nomination::Set(node) => {
                self.nominated
                    .insert(key.to_owned(), (node.clone(), pod.clone()));
            }
            Nomination::Keep => {}
        }
        let nominated_now = pod
            .status
            .as_ref()
            .and_then(|s| s.nominated_node_name.as_deref())
            .unwrap_or("");
        let nomination_unchanged = match &nomination {
            Nomination::Keep => true,
            Nomination::Set(node) => node == nominated_now,
        };
        let current = pod
            .status
            .iter()
            .flat_map(|s| s.conditions.iter().flatten())
            .find(|c| c.type_ == "PodScheduled");
        let unchanged = current.is_some_and(|c| {
            c.status == "False"
                && c.reason.as_deref() == Some(reason)
                && c.message.as_deref() == Some(message.as_str())
        });
        if !unchanged || !nomination_unchanged {
            let condition = PodCondition {
                type_: "PodScheduled".into(),
                status: "False".into(),
                reason: Some(reason.into()),
                message: Some(message.clone()),
                last_transition_time: Some(Time(jiff::Timestamp::now())),
                ..Default::default()
            };
            let update = self.api.set_condition(&pod, condition, nomination);
            tokio::spawn(async move {
                if let Err(e) = update.await {
                    tracing::debug!("{e}");
                }
            });
        }
        self.api.record(PodEvent {
            pod,
            type_: "Warning",
            reason: "FailedScheduling",
            message,
        });
    }

    /// The cache (for tests and the benchmark).
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// The queue (for tests).
    pub fn queue(&self) -> &SchedulingQueue {
        &self.queue
    }
}

/// The node with the highest score; ties broken uniformly at random (reservoir sampling,
/// as `selectHost` does).
fn select_host(nodes: &[&NodeInfo], scores: &[i64]) -> String {
    let mut rng = rand::thread_rng();
    let mut best = 0;
    let mut ties = 0;
    for (i, score) in scores.iter().enumerate() {
        if *score > scores[best] {
            best = i;
            ties = 1;
        } else if *score == scores[best] {
            ties += 1;
            if rng.gen_range(0..ties) == 0 {
                best = i;
            }
        }
    }
    nodes[best].name().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::tests::FakeApi;
    use crate::plugins::{default_framework, Handle, ScoringStrategy};
    use serde_json::json;

    fn scheduler(api: Arc<FakeApi>) -> (Scheduler, mpsc::UnboundedReceiver<Input>) {
        let fw = default_framework(&Handle {
            api: api.clone(),
            scoring: ScoringStrategy::LeastAllocated,
            volumes: Arc::new(crate::plugins::volume_binding::NoVolumes),
            budgets: Arc::new(crate::plugins::default_preemption::NoBudgets),
            namespaces: Arc::new(crate::plugins::inter_pod_affinity::NoNamespaces),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let profiles = HashMap::from([("default-scheduler".to_owned(), fw)]);
        (Scheduler::new(profiles, api, tx), rx)
    }

    fn node(name: &str, cpu: &str, taint: bool) -> Node {
        let mut v = json!({"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            "status": {"allocatable": {"cpu": cpu, "memory": "8Gi", "pods": "110"}}});
        if taint {
            v["spec"] = json!({"taints": [{"key": "k", "value": "v", "effect": "NoSchedule"}]});
        }
        serde_json::from_value(v).unwrap()
    }

    fn pod(name: &str, cpu: &str, scheduler: &str) -> Pod {
        serde_json::from_value(
            json!({"metadata": {"name": name, "namespace": "d", "uid": name},
            "spec": {"schedulerName": scheduler, "containers": [
                {"name": "c", "resources": {"requests": {"cpu": cpu}}}]}}),
        )
        .unwrap()
    }

    async fn drain(s: &mut Scheduler, rx: &mut mpsc::UnboundedReceiver<Input>) {
        while let Some((key, info)) = s.queue.pop() {
            s.schedule_one(key, info);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        while let Ok(input) = rx.try_recv() {
            s.handle(input);
        }
    }

    fn with_priority(mut p: Pod, priority: i32, node: Option<&str>) -> Pod {
        let spec = p.spec.as_mut().unwrap();
        spec.priority = Some(priority);
        spec.node_name = node.map(str::to_owned);
        p
    }

    fn daemon_pod(name: &str, cpu: &str, node: &str) -> Pod {
        let mut p = pod(name, cpu, "default-scheduler");
        p.spec.as_mut().unwrap().affinity = Some(
            serde_json::from_value(json!({"nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                    {"matchFields": [{"key": "metadata.name", "operator": "In",
                        "values": [node]}]}]}}}))
            .unwrap(),
        );
        p
    }

    #[tokio::test]
    async fn a_pod_naming_its_node_is_filtered_against_that_node_alone() {
        let api = Arc::new(FakeApi::default());
        let (mut s, mut rx) = scheduler(api.clone());
        for name in ["a", "b", "c"] {
            let event = watcher::Event::Apply(node(name, "2", false));
            s.handle(Input::Node(Box::new(event)));
        }
        let fits = daemon_pod("fits", "1", "b");
        let too_big = daemon_pod("too-big", "3", "b");
        for p in [fits, too_big] {
            s.handle(Input::Pod(Box::new(watcher::Event::Apply(p))));
        }
        drain(&mut s, &mut rx).await;
        assert_eq!(
            api.bindings.lock().unwrap().clone(),
            [("d/fits".to_owned(), "b".to_owned())]
        );
        // The other nodes were never filtered: they failed NodeAffinity's PreFilter
        // result, not its Filter (kube-scheduler's message for absent nodes).
        let conditions = api.conditions.lock().unwrap().clone();
        let message = conditions[0].1.message.clone().unwrap_or_default();
        assert!(
            message.starts_with(
                "0/3 nodes are available: 1 Insufficient cpu, \
                 2 node(s) didn't satisfy plugin(s) [NodeAffinity]. preemption:"
            ),
            "{message}"
        );
    }

    #[tokio::test]
    async fn nothing_is_scheduled_before_pods_and_nodes_are_listed() {
        let api = Arc::new(FakeApi::default());
        let (s, rx) = scheduler(api.clone());
        let tx = s.inputs.clone();
        tokio::spawn(s.run(rx));
        let send = |input: Input| tx.send(input).map_err(|_| ()).unwrap();
        send(Input::Pod(Box::new(watcher::Event::Init)));
        let p = pod("p", "1", "default-scheduler");
        send(Input::Pod(Box::new(watcher::Event::InitApply(p))));
        send(Input::Pod(Box::new(watcher::Event::InitDone)));
        send(Input::Node(Box::new(watcher::Event::Init)));
        let small = node("small", "500m", false);
        send(Input::Node(Box::new(watcher::Event::InitApply(small))));
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Half the nodes are listed: the pod waits instead of failing on what is known.
        assert!(api.bindings.lock().unwrap().is_empty());
        assert!(api.conditions.lock().unwrap().is_empty());
        let big = node("big", "2", false);
        send(Input::Node(Box::new(watcher::Event::InitApply(big))));
        send(Input::Node(Box::new(watcher::Event::InitDone)));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            api.bindings.lock().unwrap().clone(),
            [("d/p".to_owned(), "big".to_owned())]
        );
        assert!(api.conditions.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn preemption_nominates_and_keeps_the_room_for_the_preemptor() {
        let api = Arc::new(FakeApi::default());
        let (mut s, mut rx) = scheduler(api.clone());
        s.handle(Input::Node(Box::new(watcher::Event::Apply(node(
            "a", "2", false,
        )))));
        let low = with_priority(pod("low", "2", "default-scheduler"), 1, Some("a"));
        s.handle(Input::Pod(Box::new(watcher::Event::Apply(low.clone()))));
        let high = with_priority(pod("high", "2", "default-scheduler"), 10, None);
        s.handle(Input::Pod(Box::new(watcher::Event::Apply(high))));
        drain(&mut s, &mut rx).await;
        assert_eq!(
            api.preemptions.lock().unwrap().clone(),
            [("d/low".to_owned(), "d/high".to_owned(), "a".to_owned())]
        );
        assert_eq!(
            api.nominations.lock().unwrap().last().cloned(),
            Some(("d/high".to_owned(), Nomination::Set("a".into())))
        );
        // The preemption worked: the failure message has no preemption part.
        assert_eq!(
            api.conditions
                .lock()
                .unwrap()
                .last()
                .unwrap()
                .1
                .message
                .as_deref(),
            Some("0/1 nodes are available: 1 Insufficient cpu.")
        );
        assert!(api.bindings.lock().unwrap().is_empty());

        // The victim goes while a lower-priority pod waits: the room is the preemptor's,
        // even though the preemptor is still backing off.
        let small = with_priority(pod("small", "1", "default-scheduler"), 0, None);
        s.handle(Input::Pod(Box::new(watcher::Event::Apply(small))));
        s.handle(Input::Pod(Box::new(watcher::Event::Delete(low))));
        drain(&mut s, &mut rx).await;
        assert!(api.bindings.lock().unwrap().is_empty());
        assert_eq!(
            s.queue().place("d/high"),
            Some(crate::queue::Place::Backoff)
        );
        s.queue.flush(Instant::now() + Duration::from_secs(2));
        drain(&mut s, &mut rx).await;
        assert_eq!(
            api.bindings.lock().unwrap().clone(),
            [("d/high".to_owned(), "a".to_owned())]
        );
    }

    #[tokio::test]
    async fn binds_fitting_pods_and_counts_assumed_resources() {
        let api = Arc::new(FakeApi::default());
        let (mut s, mut rx) = scheduler(api.clone());
        s.handle(Input::Node(Box::new(watcher::Event::Apply(node(
            "a", "2", false,
        )))));
        s.handle(Input::Node(Box::new(watcher::Event::Apply(node(
            "b", "2", true,
        )))));
        for name in ["p1", "p2", "p3"] {
            let event = watcher::Event::Apply(pod(name, "1", "default-scheduler"));
            s.handle(Input::Pod(Box::new(event)));
        }
        let event = watcher::Event::Apply(pod("other", "1", "my-scheduler"));
        s.handle(Input::Pod(Box::new(event)));
        drain(&mut s, &mut rx).await;
        let bindings = api.bindings.lock().unwrap().clone();
        // Two 1-cpu pods fill node a; node b is tainted; "other" is not ours.
        assert_eq!(bindings.len(), 2, "{bindings:?}");
        assert!(bindings.iter().all(|(_, n)| n == "a"));
        assert_eq!(s.stats.bound, 2);
        let conditions = api.conditions.lock().unwrap().clone();
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].0, "d/p3");
        assert_eq!(
            conditions[0].1.message.as_deref(),
            Some("0/2 nodes are available: 1 Insufficient cpu, 1 node(s) had untolerated taint {k: v}. preemption: 0/2 nodes are available: 1 No preemption victims found for incoming pod, 1 Preemption is not helpful for scheduling.")
        );
        assert_eq!(conditions[0].1.reason.as_deref(), Some("Unschedulable"));
        assert!(api
            .events
            .lock()
            .unwrap()
            .iter()
            .any(|e| e.reason == "FailedScheduling"));
        assert_eq!(
            s.queue().place("d/p3"),
            Some(crate::queue::Place::Unschedulable)
        );
        assert!(!s.queue().contains("d/other"));

        // Deleting a bound pod frees room and moves the unschedulable pod back.
        let mut bound = pod(&bindings[0].0[2..], "1", "default-scheduler");
        bound.spec.as_mut().unwrap().node_name = Some("a".into());
        s.handle(Input::Pod(Box::new(watcher::Event::Delete(bound))));
        assert_ne!(
            s.queue().place("d/p3"),
            Some(crate::queue::Place::Unschedulable)
        );
    }
}
