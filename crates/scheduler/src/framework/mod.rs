//! The scheduling framework: the extension points as traits, the per-cycle state, the
//! status plugins return, and [`Framework`], which runs a profile's plugins at each point in
//! kube-scheduler's order (`pkg/scheduler/framework/interface.go`, `runtime/framework.go`).
//!
//! A plugin is one type implementing [`Plugin`] plus the extension-point traits it serves;
//! [`Plugin`]'s `as_*` accessors tell the framework which ones those are, so one registry
//! row per plugin is enough (see [`crate::plugins::REGISTRY`]).

mod fit_error;
mod node_info;
pub mod quantity;

use std::any::Any;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Pod;

pub use fit_error::{Diagnosis, FitError};
pub use node_info::{
    non_zero_requests, pod_host_ports, pod_requests, HostPort, NodeInfo, Resource,
};

/// The highest score a Score plugin may return after normalization (`MaxNodeScore`).
pub const MAX_NODE_SCORE: i64 = 100;

/// What a plugin says about a pod (kube-scheduler's `framework.Code`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// The plugin ran and the pod may proceed.
    Success,
    /// An internal error; the pod is retried with backoff.
    Error,
    /// The pod does not fit now; preemption may help.
    Unschedulable,
    /// The pod does not fit and preemption cannot help on this node.
    UnschedulableAndUnresolvable,
    /// A Permit plugin wants the pod to wait (not supported yet: treated as a rejection).
    Wait,
    /// PreFilter/PreScore: the plugin has nothing to do for this pod; its Filter/Score are
    /// skipped.
    Skip,
}

/// A plugin's verdict with its reasons (the strings that end up in the pod's condition).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The verdict.
    pub code: Code,
    /// Human-readable reasons, e.g. `Insufficient cpu`.
    pub reasons: Vec<String>,
    /// The plugin that produced the status.
    pub plugin: &'static str,
}

impl Status {
    /// Success.
    pub fn success() -> Status {
        Status {
            code: Code::Success,
            reasons: Vec::new(),
            plugin: "",
        }
    }

    /// A status with one reason.
    pub fn new(code: Code, reason: impl Into<String>) -> Status {
        Status {
            code,
            reasons: vec![reason.into()],
            plugin: "",
        }
    }

    /// `Unschedulable` with one reason.
    pub fn unschedulable(reason: impl Into<String>) -> Status {
        Status::new(Code::Unschedulable, reason)
    }

    /// `UnschedulableAndUnresolvable` with one reason.
    pub fn unresolvable(reason: impl Into<String>) -> Status {
        Status::new(Code::UnschedulableAndUnresolvable, reason)
    }

    /// `Skip`.
    pub fn skip() -> Status {
        Status {
            code: Code::Skip,
            reasons: Vec::new(),
            plugin: "",
        }
    }

    /// Whether the code is `Success`.
    pub fn is_success(&self) -> bool {
        self.code == Code::Success
    }

    /// Whether the pod was rejected (either unschedulable code).
    pub fn is_rejected(&self) -> bool {
        matches!(
            self.code,
            Code::Unschedulable | Code::UnschedulableAndUnresolvable
        )
    }

    /// The reasons joined with ", ", as `Status.Message()` does.
    pub fn message(&self) -> String {
        self.reasons.join(", ")
    }

    fn with_plugin(mut self, plugin: &'static str) -> Status {
        self.plugin = plugin;
        self
    }
}

/// Data plugins share within one scheduling cycle, keyed by a plugin-chosen name (PreFilter
/// computes, Filter reads).
#[derive(Default)]
pub struct CycleState {
    data: HashMap<&'static str, Box<dyn Any + Send + Sync>>,
    skip_filter: Vec<&'static str>,
    skip_score: Vec<&'static str>,
    /// What the PreFilter plugin running now said about the candidate nodes.
    pre_filter_result: Option<BTreeSet<String>>,
    /// The merged `PreFilterResult`: the only nodes worth filtering (`None`: all of them).
    node_names: Option<BTreeSet<String>>,
    /// The plugins whose results were merged into `node_names`.
    narrowed_by: Vec<&'static str>,
}

impl CycleState {
    /// From PreFilter: the pod can only run on these nodes (`PreFilterResult.NodeNames`),
    /// so Filter runs on them alone instead of on every node. Results of several plugins
    /// are intersected.
    pub fn set_pre_filter_result(&mut self, node_names: BTreeSet<String>) {
        self.pre_filter_result = Some(node_names);
    }

    /// The nodes PreFilter narrowed the cycle to; `None` when every node is a candidate.
    pub fn pre_filter_nodes(&self) -> Option<&BTreeSet<String>> {
        self.node_names.as_ref()
    }

    /// The plugins that narrowed the candidate nodes, in the order they ran.
    pub fn narrowed_by(&self) -> &[&'static str] {
        &self.narrowed_by
    }

    /// Stores `value` under `key`.
    pub fn write<T: Any + Send + Sync>(&mut self, key: &'static str, value: T) {
        self.data.insert(key, Box::new(value));
    }

    /// The value under `key`, if present and of type `T`.
    pub fn read<T: Any + Send + Sync>(&self, key: &'static str) -> Option<&T> {
        self.data.get(key).and_then(|v| v.downcast_ref())
    }
}

/// A pod waiting in the scheduling queue, with its scheduling history.
#[derive(Debug, Clone)]
pub struct QueuedPodInfo {
    /// The pod, as last seen (never mutated: the cache's object).
    pub pod: Arc<Pod>,
    /// When the pod was (last) added to the queue, for FIFO order among equal priorities.
    pub timestamp: Instant,
    /// How many scheduling attempts failed so far.
    pub attempts: u32,
    /// When the first attempt started.
    pub initial_attempt: Option<Instant>,
    /// Plugins that rejected the pod last time.
    pub unschedulable_plugins: Vec<&'static str>,
    /// The PreEnqueue plugin that keeps the pod out of the active queue, if any.
    pub gated_by: Option<&'static str>,
}

impl QueuedPodInfo {
    /// A pod seen for the first time.
    pub fn new(pod: Arc<Pod>) -> QueuedPodInfo {
        QueuedPodInfo {
            pod,
            timestamp: Instant::now(),
            attempts: 0,
            initial_attempt: None,
            unschedulable_plugins: Vec::new(),
            gated_by: None,
        }
    }
}

/// Every plugin: a name and which extension points it serves.
pub trait Plugin: Send + Sync {
    /// The plugin's name as profiles and messages use it (`NodeResourcesFit`).
    fn name(&self) -> &'static str;
    /// The PreEnqueue side of the plugin.
    fn as_pre_enqueue(&self) -> Option<&dyn PreEnqueuePlugin> {
        None
    }
    /// The QueueSort side of the plugin.
    fn as_queue_sort(&self) -> Option<&dyn QueueSortPlugin> {
        None
    }
    /// The PreFilter side of the plugin.
    fn as_pre_filter(&self) -> Option<&dyn PreFilterPlugin> {
        None
    }
    /// The Filter side of the plugin.
    fn as_filter(&self) -> Option<&dyn FilterPlugin> {
        None
    }
    /// The PostFilter side of the plugin.
    fn as_post_filter(&self) -> Option<&dyn PostFilterPlugin> {
        None
    }
    /// The PreScore side of the plugin.
    fn as_pre_score(&self) -> Option<&dyn PreScorePlugin> {
        None
    }
    /// The Score side of the plugin.
    fn as_score(&self) -> Option<&dyn ScorePlugin> {
        None
    }
    /// The NormalizeScore side of the plugin.
    fn as_normalize_score(&self) -> Option<&dyn NormalizeScorePlugin> {
        None
    }
    /// The Reserve side of the plugin.
    fn as_reserve(&self) -> Option<&dyn ReservePlugin> {
        None
    }
    /// The Permit side of the plugin.
    fn as_permit(&self) -> Option<&dyn PermitPlugin> {
        None
    }
    /// The PreBind side of the plugin.
    fn as_pre_bind(&self) -> Option<&dyn PreBindPlugin> {
        None
    }
    /// The Bind side of the plugin.
    fn as_bind(&self) -> Option<&dyn BindPlugin> {
        None
    }
}

/// Decides whether a pod may enter the active queue at all (scheduling gates).
pub trait PreEnqueuePlugin: Plugin {
    /// Success lets the pod in; anything else keeps it with the unschedulable pods.
    fn pre_enqueue(&self, pod: &Pod) -> Status;
}

/// Orders the active queue.
pub trait QueueSortPlugin: Plugin {
    /// Whether `a` is scheduled before `b`.
    fn less(&self, a: &QueuedPodInfo, b: &QueuedPodInfo) -> bool;
}

/// Runs once per cycle before filtering; may reject the pod outright.
pub trait PreFilterPlugin: Plugin {
    /// Precomputes state for Filter; `nodes` is every node in the snapshot.
    fn pre_filter(&self, state: &mut CycleState, pod: &Pod, nodes: &[&NodeInfo]) -> Status;
}

/// Says whether the pod fits one node.
pub trait FilterPlugin: Plugin {
    /// Success when the pod may run on `node`.
    fn filter(&self, state: &CycleState, pod: &Pod, node: &NodeInfo) -> Status;
}

/// Runs when no node fits (preemption).
pub trait PostFilterPlugin: Plugin {
    /// Tries to make the pod schedulable; returns a nominated node on success and the status
    /// whose message becomes the tail of the failure message.
    fn post_filter(
        &self,
        state: &CycleState,
        pod: &Pod,
        nodes: &[&NodeInfo],
        diagnosis: &Diagnosis,
    ) -> (Option<String>, Status);
}

/// Runs once per cycle before scoring.
pub trait PreScorePlugin: Plugin {
    /// Precomputes state for Score over the `feasible` nodes; `all` is every node in the
    /// snapshot (pods on infeasible nodes still count for topology domains).
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &Pod,
        feasible: &[&NodeInfo],
        all: &[&NodeInfo],
    ) -> Status;
}

/// Ranks one feasible node.
pub trait ScorePlugin: Plugin {
    /// The node's raw score.
    fn score(&self, state: &CycleState, pod: &Pod, node: &NodeInfo) -> Result<i64, Status>;
}

/// Rescales a Score plugin's raw scores into `[0, MAX_NODE_SCORE]`.
pub trait NormalizeScorePlugin: Plugin {
    /// Rewrites `scores` (one per feasible node, same order) in place.
    fn normalize_score(&self, state: &CycleState, pod: &Pod, scores: &mut [i64]) -> Status;
}

/// Claims resources on the chosen node before binding; undone when a later step fails.
pub trait ReservePlugin: Plugin {
    /// Reserves.
    fn reserve(&self, state: &CycleState, pod: &Pod, node: &str) -> Status;
    /// Releases what `reserve` claimed.
    fn unreserve(&self, state: &CycleState, pod: &Pod, node: &str);
}

/// Approves or denies the binding.
pub trait PermitPlugin: Plugin {
    /// Success approves; a rejection fails the cycle; `Wait` is not supported yet.
    fn permit(&self, state: &CycleState, pod: &Pod, node: &str) -> Status;
}

/// Runs before binding, in the binding cycle (volumes would be provisioned here).
pub trait PreBindPlugin: Plugin {
    /// Prepares the binding.
    fn pre_bind(&self, pod: Arc<Pod>, node: String) -> BoxFuture<'static, Status>;
}

/// Binds the pod to the node; the first bind plugin that does not `Skip` wins.
pub trait BindPlugin: Plugin {
    /// Binds.
    fn bind(&self, pod: Arc<Pod>, node: String) -> BoxFuture<'static, Status>;
}

/// A configured plugin with its score weight.
#[derive(Clone)]
pub struct Enabled {
    /// The plugin.
    pub plugin: Arc<dyn Plugin>,
    /// Weight of its score (ignored unless it scores).
    pub weight: i64,
}

/// The plugins of one profile (one `schedulerName`), run at each extension point.
#[derive(Clone)]
pub struct Framework {
    plugins: Vec<Enabled>,
}

/// The outcome of filtering and scoring one pod.
pub enum ScheduleResult {
    /// The node to bind to, and how many nodes were evaluated/feasible.
    Suggested {
        /// The chosen node.
        node: String,
        /// Nodes filtered.
        evaluated: usize,
        /// Nodes that passed the filters.
        feasible: usize,
    },
    /// No node fits.
    Unschedulable(FitError),
    /// A plugin failed.
    Error(String),
}

impl Framework {
    /// A framework over `plugins` (order matters: it is the order plugins run in).
    pub fn new(plugins: Vec<Enabled>) -> Framework {
        Framework { plugins }
    }

    fn each<'a, T: ?Sized + 'a>(
        &'a self,
        pick: impl Fn(&'a dyn Plugin) -> Option<&'a T> + 'a,
    ) -> impl Iterator<Item = (&'a Enabled, &'a T)> + 'a {
        self.plugins
            .iter()
            .filter_map(move |e| pick(e.plugin.as_ref()).map(|p| (e, p)))
    }

    /// The QueueSort plugin of the profile.
    pub fn queue_sort(&self) -> Option<Arc<dyn Plugin>> {
        self.plugins
            .iter()
            .find(|e| e.plugin.as_queue_sort().is_some())
            .map(|e| e.plugin.clone())
    }

    /// Runs the PreEnqueue plugins; the name of the first that refuses the pod.
    pub fn run_pre_enqueue(&self, pod: &Pod) -> Option<&'static str> {
        self.each(|p| p.as_pre_enqueue())
            .find(|(_, p)| !p.pre_enqueue(pod).is_success())
            .map(|(e, _)| e.plugin.name())
    }

    /// Runs PreFilter; a rejection (with the rejecting plugin) or the plugins to skip.
    /// Narrowing results are merged into [`CycleState::pre_filter_nodes`]; an empty
    /// intersection rejects the pod as kube-scheduler's `RunPreFilterPlugins` does.
    pub fn run_pre_filter(&self, state: &mut CycleState, pod: &Pod, nodes: &[&NodeInfo]) -> Status {
        for (e, p) in self.each(|p| p.as_pre_filter()) {
            state.pre_filter_result = None;
            let status = p.pre_filter(state, pod, nodes);
            match status.code {
                Code::Success => {}
                Code::Skip => state.skip_filter.push(e.plugin.name()),
                _ => return status.with_plugin(e.plugin.name()),
            }
            let Some(names) = state.pre_filter_result.take() else {
                continue;
            };
            state.narrowed_by.push(e.plugin.name());
            let merged = match state.node_names.take() {
                None => names,
                Some(before) => before.intersection(&names).cloned().collect(),
            };
            let empty = merged.is_empty();
            state.node_names = Some(merged);
            if empty {
                let reason = match state.narrowed_by.as_slice() {
                    [one] => format!("node(s) didn't satisfy plugin {one}"),
                    all => format!(
                        "node(s) didn't satisfy plugin(s) [{}] simultaneously",
                        all.join(" ")
                    ),
                };
                return Status::unresolvable(reason).with_plugin(e.plugin.name());
            }
        }
        Status::success()
    }

    /// Runs every Filter plugin against one node, stopping at the first rejection.
    pub fn run_filter(&self, state: &CycleState, pod: &Pod, node: &NodeInfo) -> Status {
        for (e, p) in self.each(|p| p.as_filter()) {
            if state.skip_filter.contains(&e.plugin.name()) {
                continue;
            }
            let status = p.filter(state, pod, node);
            if !status.is_success() {
                return status.with_plugin(e.plugin.name());
            }
        }
        Status::success()
    }

    /// Runs PostFilter plugins until one nominates a node; returns the nomination and the
    /// joined messages of those that could not help.
    pub fn run_post_filter(
        &self,
        state: &CycleState,
        pod: &Pod,
        nodes: &[&NodeInfo],
        diagnosis: &Diagnosis,
    ) -> (Option<String>, String) {
        let mut messages = Vec::new();
        for (_, p) in self.each(|p| p.as_post_filter()) {
            let (nominated, status) = p.post_filter(state, pod, nodes, diagnosis);
            if status.is_success() {
                return (nominated, String::new());
            }
            if !status.reasons.is_empty() {
                messages.push(status.message());
            }
        }
        (None, messages.join(" "))
    }

    /// Runs PreScore, Score, NormalizeScore and weights over the feasible `nodes`; one
    /// total per node. `all` is every node of the snapshot.
    pub fn run_scoring(
        &self,
        state: &mut CycleState,
        pod: &Pod,
        nodes: &[&NodeInfo],
        all: &[&NodeInfo],
    ) -> Result<Vec<i64>, Status> {
        for (e, p) in self.each(|p| p.as_pre_score()) {
            let status = p.pre_score(state, pod, nodes, all);
            match status.code {
                Code::Success => {}
                Code::Skip => state.skip_score.push(e.plugin.name()),
                _ => return Err(status.with_plugin(e.plugin.name())),
            }
        }
        let mut totals = vec![0i64; nodes.len()];
        for (e, p) in self.each(|p| p.as_score()) {
            if state.skip_score.contains(&e.plugin.name()) {
                continue;
            }
            let mut scores = Vec::with_capacity(nodes.len());
            for node in nodes {
                scores.push(p.score(state, pod, node)?);
            }
            if let Some(n) = e.plugin.as_normalize_score() {
                let status = n.normalize_score(state, pod, &mut scores);
                if !status.is_success() {
                    return Err(status.with_plugin(e.plugin.name()));
                }
            }
            for (total, score) in totals.iter_mut().zip(scores) {
                *total += score * e.weight;
            }
        }
        Ok(totals)
    }

    /// Runs Reserve; on a failure, unreserves everything and returns the failure.
    pub fn run_reserve(&self, state: &CycleState, pod: &Pod, node: &str) -> Status {
        for (e, p) in self.each(|p| p.as_reserve()) {
            let status = p.reserve(state, pod, node);
            if !status.is_success() {
                self.run_unreserve(state, pod, node);
                return status.with_plugin(e.plugin.name());
            }
        }
        Status::success()
    }

    /// Runs Unreserve in reverse order.
    pub fn run_unreserve(&self, state: &CycleState, pod: &Pod, node: &str) {
        let reserves: Vec<_> = self.each(|p| p.as_reserve()).collect();
        for (_, p) in reserves.into_iter().rev() {
            p.unreserve(state, pod, node);
        }
    }

    /// Runs Permit; the first refusal.
    pub fn run_permit(&self, state: &CycleState, pod: &Pod, node: &str) -> Status {
        for (e, p) in self.each(|p| p.as_permit()) {
            let status = p.permit(state, pod, node);
            if !status.is_success() {
                return status.with_plugin(e.plugin.name());
            }
        }
        Status::success()
    }

    /// The binding cycle: PreBind, then the first Bind plugin that does not skip.
    pub fn run_binding(&self, pod: Arc<Pod>, node: String) -> BoxFuture<'static, Status> {
        let plugins = self.plugins.clone();
        Box::pin(async move {
            for e in &plugins {
                if let Some(p) = e.plugin.as_pre_bind() {
                    let status = p.pre_bind(pod.clone(), node.clone()).await;
                    if !status.is_success() {
                        return status.with_plugin(e.plugin.name());
                    }
                }
            }
            for e in &plugins {
                if let Some(p) = e.plugin.as_bind() {
                    let status = p.bind(pod.clone(), node.clone()).await;
                    if status.code != Code::Skip {
                        return status.with_plugin(e.plugin.name());
                    }
                }
            }
            Status::new(Code::Error, "no bind plugin bound the pod")
        })
    }
}

/// How many feasible nodes to look for before scoring: kube-scheduler's adaptive
/// `percentageOfNodesToScore` (50% minus 1% per 125 nodes, at least 5%, at least 100 nodes).
pub fn num_feasible_nodes_to_find(all_nodes: usize) -> usize {
    const MIN_FEASIBLE: usize = 100;
    if all_nodes < MIN_FEASIBLE {
        return all_nodes;
    }
    let percentage = 50usize.saturating_sub(all_nodes / 125).max(5);
    (all_nodes * percentage / 100).max(MIN_FEASIBLE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feasible_nodes_follow_the_adaptive_percentage() {
        assert_eq!(num_feasible_nodes_to_find(3), 3);
        assert_eq!(num_feasible_nodes_to_find(100), 100);
        assert_eq!(num_feasible_nodes_to_find(500), 230);
        assert_eq!(num_feasible_nodes_to_find(5000), 500);
        assert_eq!(num_feasible_nodes_to_find(15000), 750);
    }
}
