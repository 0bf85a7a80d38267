//! DefaultPreemption (PostFilter): when no node fits, evicts lower-priority pods where that
//! makes the pod fit (`defaultpreemption/default_preemption.go`, `preemption/preemption.go`).
//!
//! On each node where eviction may help, all lower-priority pods are removed in a dry run;
//! if the pod then passes the filters, victims are reprieved one by one, most important
//! first (those whose eviction would break a PodDisruptionBudget before the others), as
//! long as the pod still fits. Among the candidate nodes the one with the fewest budget
//! violations wins, then the lowest highest-victim priority, the smallest sum of
//! priorities, the fewest victims, the latest start of the most important victims. The
//! victims get a `DisruptionTarget` condition and are deleted; the pod is nominated to the
//! node and scheduled once they are gone.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use rand::Rng as _;

use super::helpers::selector_matches;
use crate::api::ClusterApi;
use crate::framework::{
    Code, CycleState, Diagnosis, FitError, Framework, NodeInfo, Plugin, PostFilterPlugin, Status,
};

/// The plugin's name.
pub const NAME: &str = "DefaultPreemption";
/// Status of a node where the pod was rejected for reasons eviction cannot change.
pub const NOT_HELPFUL: &str = "Preemption is not helpful for scheduling";
/// Status of a node without lower-priority pods.
pub const NO_VICTIMS: &str = "No preemption victims found for incoming pod";
/// The pod's earlier preemption is still under way (`podTerminatingByPreemption`).
pub const WAITING_FOR_VICTIMS: &str =
    "not eligible due to a terminating pod on the nominated node.";
/// Candidates looked for: 10% of the nodes, at least 100 (`minCandidateNodesPercentage`,
/// `minCandidateNodesAbsolute`).
const MIN_CANDIDATE_NODES_PERCENTAGE: usize = 10;
const MIN_CANDIDATE_NODES_ABSOLUTE: usize = 100;

/// PodDisruptionBudgets, from a watch-fed cache.
pub trait DisruptionBudgets: Send + Sync + 'static {
    /// Every budget.
    fn budgets(&self) -> Vec<Arc<PodDisruptionBudget>>;
}

/// A cluster without budgets (tests, benchmarks).
pub struct NoBudgets;

impl DisruptionBudgets for NoBudgets {
    fn budgets(&self) -> Vec<Arc<PodDisruptionBudget>> {
        Vec::new()
    }
}

/// Budgets from a reflector over `policy/v1` PodDisruptionBudgets.
pub struct CachedBudgets(kube::runtime::reflector::Store<PodDisruptionBudget>);

impl CachedBudgets {
    /// Starts the cache; the stream must be polled to keep it current.
    pub fn start(
        client: kube::Client,
    ) -> (Arc<CachedBudgets>, futures::stream::BoxStream<'static, ()>) {
        use futures::StreamExt as _;
        use kube::runtime::{reflector, watcher, WatchStreamExt as _};
        let (store, writer) = reflector::store::<PodDisruptionBudget>();
        let changes = watcher(
            kube::Api::<PodDisruptionBudget>::all(client),
            watcher::Config::default().any_semantic(),
        )
        .default_backoff()
        .reflect(writer)
        .map(drop)
        .boxed();
        (Arc::new(CachedBudgets(store)), changes)
    }
}

impl DisruptionBudgets for CachedBudgets {
    fn budgets(&self) -> Vec<Arc<PodDisruptionBudget>> {
        self.0.state()
    }
}

/// Evicts lower-priority pods to make room.
pub struct DefaultPreemption {
    /// The filters to re-run with victims removed (the profile without PostFilter plugins).
    pub filters: Framework,
    /// Where victims are deleted.
    pub api: Arc<dyn ClusterApi>,
    /// The budgets victims should not break.
    pub budgets: Arc<dyn DisruptionBudgets>,
}

/// One node where evicting `victims` lets the pod fit.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The node.
    pub node: String,
    /// The pods to evict, most important first.
    pub victims: Vec<Arc<Pod>>,
    /// How many of them a PodDisruptionBudget protects.
    pub pdb_violations: usize,
}

fn priority(pod: &Pod) -> i32 {
    pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
}

/// When the pod started; pods that have not started count as starting now
/// (`GetPodStartTime`).
fn start_time(pod: &Pod) -> jiff::Timestamp {
    pod.status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .map(|t| t.0)
        .unwrap_or_else(jiff::Timestamp::now)
}

/// `MoreImportantPod` as an ordering: higher priority first, then the one started earlier.
fn more_important_first(a: &Pod, b: &Pod) -> Ordering {
    priority(b)
        .cmp(&priority(a))
        .then_with(|| start_time(a).cmp(&start_time(b)))
}

/// Whether the pod is going away because the scheduler preempted it.
fn terminating_by_preemption(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
        && pod
            .status
            .iter()
            .flat_map(|s| s.conditions.iter().flatten())
            .any(|c| {
                c.type_ == "DisruptionTarget"
                    && c.status == "True"
                    && c.reason.as_deref() == Some("PreemptionByScheduler")
            })
}

/// A pod with its `namespace/name` key.
type KeyedPod = (String, Arc<Pod>);

/// Splits pods (most important first) into those whose eviction would exceed a budget's
/// `disruptionsAllowed` and the others, keeping their order (`filterPodsWithPDBViolation`).
fn split_by_budgets(
    pods: Vec<KeyedPod>,
    budgets: &[Arc<PodDisruptionBudget>],
) -> (Vec<KeyedPod>, Vec<KeyedPod>) {
    let mut allowed: Vec<i32> = budgets
        .iter()
        .map(|b| {
            b.status
                .as_ref()
                .map_or(0, |s| s.disruptions_allowed.unwrap_or(0))
        })
        .collect();
    let mut violating = Vec::new();
    let mut others = Vec::new();
    for (key, pod) in pods {
        let mut violated = false;
        if let Some(labels) = pod.metadata.labels.as_ref().filter(|l| !l.is_empty()) {
            for (i, budget) in budgets.iter().enumerate() {
                if budget.metadata.namespace != pod.metadata.namespace {
                    continue;
                }
                // A budget without a selector, or with an empty one, matches nothing here.
                let selector = budget.spec.as_ref().and_then(|s| s.selector.as_ref());
                let empty = selector.is_none_or(|s| {
                    s.match_labels.as_ref().is_none_or(|m| m.is_empty())
                        && s.match_expressions.as_ref().is_none_or(|e| e.is_empty())
                });
                if empty || !selector_matches(selector, labels) {
                    continue;
                }
                let name = pod.metadata.name.as_deref().unwrap_or("");
                let already_disrupted = budget
                    .status
                    .as_ref()
                    .and_then(|s| s.disrupted_pods.as_ref())
                    .is_some_and(|d| d.contains_key(name));
                if already_disrupted {
                    continue;
                }
                allowed[i] -= 1;
                if allowed[i] < 0 {
                    violated = true;
                }
            }
        }
        if violated {
            violating.push((key, pod));
        } else {
            others.push((key, pod));
        }
    }
    (violating, others)
}

/// The candidate kube-scheduler would choose (`pickOneNodeForPreemption`); the first of
/// equals.
pub fn pick_one(candidates: &[Candidate]) -> Option<usize> {
    candidates
        .iter()
        .enumerate()
        .min_by_key(|(_, c)| {
            let highest = c.victims.first().map(|v| priority(v)).unwrap_or(i32::MIN);
            // Shifted by 2^31 so that negative priorities still add up as "smaller".
            let sum: i64 = c
                .victims
                .iter()
                .map(|v| i64::from(priority(v)) + i64::from(i32::MAX) + 1)
                .sum();
            // The earliest start among the victims of the highest priority: later is better.
            let earliest = c
                .victims
                .iter()
                .filter(|v| priority(v) == highest)
                .map(|v| start_time(v))
                .min();
            (
                c.pdb_violations,
                highest,
                sum,
                c.victims.len(),
                std::cmp::Reverse(earliest),
            )
        })
        .map(|(i, _)| i)
}

impl DefaultPreemption {
    /// Whether the pod passes PreFilter and Filter on `node` standing in for `nodes[index]`
    /// (PreFilter runs again, so state such as inter-pod affinity sees the victims gone).
    fn fits(&self, pod: &Pod, nodes: &[&NodeInfo], index: usize, node: &NodeInfo) -> Status {
        let snapshot: Vec<&NodeInfo> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| if i == index { node } else { *n })
            .collect();
        let mut state = CycleState::default();
        let pre = self.filters.run_pre_filter(&mut state, pod, &snapshot);
        if !pre.is_success() {
            return pre;
        }
        self.filters.run_filter(&state, pod, node)
    }

    /// The fewest pods to evict from `nodes[index]` for the pod to fit
    /// (`SelectVictimsOnNode`), or the status saying why evicting does not help.
    pub fn select_victims(
        &self,
        pod: &Pod,
        nodes: &[&NodeInfo],
        index: usize,
        budgets: &[Arc<PodDisruptionBudget>],
    ) -> Result<Candidate, Status> {
        let node = nodes[index];
        let mut trial = node.clone();
        let mut potential: Vec<KeyedPod> = node
            .pods
            .iter()
            .filter(|(_, p)| priority(p) < priority(pod))
            .map(|(k, p)| (k.clone(), p.clone()))
            .collect();
        if potential.is_empty() {
            return Err(Status::unresolvable(NO_VICTIMS));
        }
        for (key, _) in &potential {
            trial.remove_pod(key);
        }
        let status = self.fits(pod, nodes, index, &trial);
        if !status.is_success() {
            return Err(status);
        }
        potential.sort_by(|a, b| more_important_first(&a.1, &b.1));
        let (violating, others) = split_by_budgets(potential, budgets);
        let mut victims = Vec::new();
        let mut pdb_violations = 0;
        for (group, violates) in [(violating, true), (others, false)] {
            for (key, victim) in group {
                trial.add_pod(&key, victim.clone());
                if !self.fits(pod, nodes, index, &trial).is_success() {
                    trial.remove_pod(&key);
                    victims.push(victim);
                    pdb_violations += usize::from(violates);
                }
            }
        }
        victims.sort_by(|a, b| more_important_first(a, b));
        Ok(Candidate {
            node: node.name().to_owned(),
            victims,
            pdb_violations,
        })
    }

    /// The preemptor's earlier victims on its nominated node are still terminating
    /// (`PodEligibleToPreemptOthers`).
    fn waiting_for_victims(&self, pod: &Pod, nodes: &[&NodeInfo], diagnosis: &Diagnosis) -> bool {
        let Some(nominated) = pod
            .status
            .as_ref()
            .and_then(|s| s.nominated_node_name.as_deref())
            .filter(|n| !n.is_empty())
        else {
            return false;
        };
        let unresolvable = diagnosis
            .node_statuses
            .iter()
            .any(|(n, s)| n == nominated && s.code == Code::UnschedulableAndUnresolvable);
        if unresolvable {
            return false;
        }
        nodes.iter().filter(|n| n.name() == nominated).any(|n| {
            n.pods
                .values()
                .any(|p| priority(p) < priority(pod) && terminating_by_preemption(p))
        })
    }

    /// Candidates over the nodes where eviction may help, from a random offset, up to
    /// kube-scheduler's number; the statuses of the other nodes.
    fn find_candidates(
        &self,
        pod: &Pod,
        nodes: &[&NodeInfo],
        diagnosis: &Diagnosis,
    ) -> (Vec<Candidate>, Vec<(String, Status)>) {
        let budgets = self.budgets.budgets();
        let wanted = (nodes.len() * MIN_CANDIDATE_NODES_PERCENTAGE / 100)
            .max(MIN_CANDIDATE_NODES_ABSOLUTE)
            .min(nodes.len());
        let offset = if nodes.is_empty() {
            0
        } else {
            rand::thread_rng().gen_range(0..nodes.len())
        };
        let mut candidates = Vec::new();
        let mut statuses = Vec::new();
        // One lookup per node: a linear search here made a failure cost nodes squared.
        let rejections: HashMap<&str, &Status> = diagnosis
            .node_statuses
            .iter()
            .map(|(name, status)| (name.as_str(), status))
            .collect();
        for i in 0..nodes.len() {
            let index = (offset + i) % nodes.len();
            let node = nodes[index];
            let rejected = rejections.get(node.name()).copied();
            if rejected.is_some_and(|s| s.code == Code::UnschedulableAndUnresolvable)
                || !diagnosis.pre_filter_msg.is_empty()
            {
                statuses.push((node.name().to_owned(), Status::unresolvable(NOT_HELPFUL)));
                continue;
            }
            match self.select_victims(pod, nodes, index, &budgets) {
                Ok(candidate) => {
                    candidates.push(candidate);
                    if candidates.len() >= wanted {
                        break;
                    }
                }
                Err(status) => statuses.push((node.name().to_owned(), status)),
            }
        }
        (candidates, statuses)
    }
}

impl Plugin for DefaultPreemption {
    fn name(&self) -> &'static str {
        NAME
    }
    fn as_post_filter(&self) -> Option<&dyn PostFilterPlugin> {
        Some(self)
    }
}

impl PostFilterPlugin for DefaultPreemption {
    fn post_filter(
        &self,
        _: &CycleState,
        pod: &Pod,
        nodes: &[&NodeInfo],
        diagnosis: &Diagnosis,
    ) -> (Option<String>, Status) {
        let spec = pod.spec.as_ref();
        if spec.and_then(|s| s.preemption_policy.as_deref()) == Some("Never") {
            return (
                None,
                Status::unschedulable("preemption: not eligible due to preemptionPolicy=Never."),
            );
        }
        if self.waiting_for_victims(pod, nodes, diagnosis) {
            return (
                None,
                Status::unschedulable(format!("preemption: {WAITING_FOR_VICTIMS}")),
            );
        }
        let (candidates, statuses) = self.find_candidates(pod, nodes, diagnosis);
        let Some(best) = pick_one(&candidates) else {
            let fit = FitError {
                num_all_nodes: statuses.len(),
                diagnosis: Diagnosis {
                    node_statuses: statuses,
                    ..Default::default()
                },
            };
            // No candidate: any earlier nomination is cleared.
            return (
                Some(String::new()),
                Status::unschedulable(format!("preemption: {fit}")),
            );
        };
        let chosen = &candidates[best];
        for victim in &chosen.victims {
            let eviction = self.api.preempt(victim, pod, &chosen.node);
            tokio::spawn(async move {
                if let Err(e) = eviction.await {
                    tracing::warn!("{e}");
                }
            });
        }
        (Some(chosen.node.clone()), Status::success())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::tests::FakeApi;
    use crate::plugins::{Handle, ScoringStrategy};
    use k8s_openapi::api::core::v1::Node;
    use serde_json::json;

    fn plugin(api: Arc<FakeApi>, budgets: Vec<PodDisruptionBudget>) -> DefaultPreemption {
        struct Fixed(Vec<Arc<PodDisruptionBudget>>);
        impl DisruptionBudgets for Fixed {
            fn budgets(&self) -> Vec<Arc<PodDisruptionBudget>> {
                self.0.clone()
            }
        }
        let handle = Handle {
            api: api.clone(),
            scoring: ScoringStrategy::LeastAllocated,
            volumes: Arc::new(crate::plugins::volume_binding::NoVolumes),
            budgets: Arc::new(NoBudgets),
            namespaces: Arc::new(crate::plugins::inter_pod_affinity::NoNamespaces),
        };
        let filters = crate::plugins::framework_of(&handle, |n| n != NAME);
        DefaultPreemption {
            filters,
            api,
            budgets: Arc::new(Fixed(budgets.into_iter().map(Arc::new).collect())),
        }
    }

    fn node(name: &str, cpu: &str, pods: &[Pod]) -> NodeInfo {
        let node: Node = serde_json::from_value(json!({"metadata": {"name": name},
            "status": {"allocatable": {"cpu": cpu, "memory": "8Gi", "pods": "110"}}}))
        .unwrap();
        let mut info = NodeInfo::default();
        info.set_node(Arc::new(node));
        for p in pods {
            let mut p = p.clone();
            p.spec.as_mut().unwrap().node_name = Some(name.into());
            info.add_pod(
                &format!("d/{}", p.metadata.name.as_deref().unwrap()),
                Arc::new(p),
            );
        }
        info
    }

    fn pod(name: &str, cpu: &str, priority: i32, started: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "d", "uid": format!("uid-{name}"),
                "labels": {"app": name.trim_end_matches(char::is_numeric)}},
            "spec": {"priority": priority, "containers": [
                {"name": "c", "resources": {"requests": {"cpu": cpu}}}]},
            "status": {"startTime": started}}))
        .unwrap()
    }

    fn names(c: &Candidate) -> Vec<&str> {
        c.victims
            .iter()
            .map(|v| v.metadata.name.as_deref().unwrap())
            .collect()
    }

    const T1: &str = "2026-01-01T00:00:00Z";
    const T2: &str = "2026-01-02T00:00:00Z";

    #[test]
    fn victims_are_the_fewest_lowest_priority_pods() {
        let p = plugin(Arc::new(FakeApi::default()), vec![]);
        // 4 cpus: 1 + 1 + 2 used by priorities 5, 1, 1; the preemptor needs 2.
        let a = node(
            "a",
            "4",
            &[
                pod("mid", "1", 5, T1),
                pod("low1", "1", 1, T1),
                pod("big", "2", 1, T2),
            ],
        );
        let incoming = pod("high", "2", 10, T1);
        let c = p.select_victims(&incoming, &[&a], 0, &[]).unwrap();
        // mid (most important) is reprieved first, then low1 (older than big); big goes.
        assert_eq!(names(&c), ["big"]);
        assert_eq!(c.pdb_violations, 0);
        // Equal or higher priority pods are never victims.
        let b = node("b", "2", &[pod("peer", "2", 10, T1)]);
        let err = p.select_victims(&incoming, &[&b], 0, &[]).unwrap_err();
        assert_eq!(err.message(), NO_VICTIMS);
        // Evicting everything evictable is not enough: the filter's reason.
        let c2 = node(
            "c",
            "2",
            &[pod("peer", "1", 10, T1), pod("low", "1", 1, T1)],
        );
        let err = p.select_victims(&incoming, &[&c2], 0, &[]).unwrap_err();
        assert_eq!(err.message(), "Insufficient cpu");
    }

    #[test]
    fn budgets_make_their_pods_reprieved_first() {
        let budget: PodDisruptionBudget = serde_json::from_value(json!({
            "metadata": {"name": "keep", "namespace": "d"},
            "spec": {"selector": {"matchLabels": {"app": "guarded"}}},
            "status": {"disruptionsAllowed": 0, "currentHealthy": 1, "desiredHealthy": 1,
                "expectedPods": 1}}))
        .unwrap();
        let p = plugin(Arc::new(FakeApi::default()), vec![]);
        // Two 1-cpu pods of equal priority, one guarded by a budget; one must go.
        let a = node(
            "a",
            "2",
            &[pod("guarded", "1", 1, T2), pod("free", "1", 1, T1)],
        );
        let incoming = pod("high", "1", 10, T1);
        let c = p
            .select_victims(&incoming, &[&a], 0, &[Arc::new(budget)])
            .unwrap();
        assert_eq!(names(&c), ["free"]);
        assert_eq!(c.pdb_violations, 0);
        // Without the budget the more important (older) one is kept instead.
        let c = p.select_victims(&incoming, &[&a], 0, &[]).unwrap();
        assert_eq!(names(&c), ["guarded"]);
    }

    #[test]
    fn the_node_is_chosen_by_kube_schedulers_order() {
        let cand = |node: &str, violations: usize, victims: &[(i32, &str)]| Candidate {
            node: node.into(),
            pdb_violations: violations,
            victims: victims
                .iter()
                .enumerate()
                .map(|(i, (prio, t))| Arc::new(pod(&format!("v{i}"), "1", *prio, t)))
                .collect(),
        };
        // Fewer budget violations beats everything.
        let cs = [cand("a", 1, &[(1, T1)]), cand("b", 0, &[(5, T1), (5, T1)])];
        assert_eq!(pick_one(&cs), Some(1));
        // Then the lowest highest priority.
        let cs = [cand("a", 0, &[(5, T1)]), cand("b", 0, &[(3, T1), (3, T1)])];
        assert_eq!(pick_one(&cs), Some(1));
        // Then the smallest sum of priorities.
        let cs = [
            cand("a", 0, &[(3, T1), (2, T1)]),
            cand("b", 0, &[(3, T1), (1, T1)]),
        ];
        assert_eq!(pick_one(&cs), Some(1));
        let cs = [cand("a", 0, &[(3, T1), (-5, T1)]), cand("b", 0, &[(3, T1)])];
        assert_eq!(
            pick_one(&cs),
            Some(1),
            "each victim adds 2^31 + its priority"
        );
        // Then the fewest victims (equal sums: i32::MIN adds nothing once shifted).
        let cs = [
            cand("a", 0, &[(3, T1), (0, T1), (i32::MIN, T1)]),
            cand("b", 0, &[(3, T1), (0, T1)]),
        ];
        assert_eq!(pick_one(&cs), Some(1));
        // Then the latest start of the most important victims.
        let cs = [cand("a", 0, &[(3, T1)]), cand("b", 0, &[(3, T2)])];
        assert_eq!(pick_one(&cs), Some(1));
        // Then the first.
        let cs = [cand("a", 0, &[(3, T1)]), cand("b", 0, &[(3, T1)])];
        assert_eq!(pick_one(&cs), Some(0));
        assert_eq!(pick_one(&[]), None);
    }

    #[tokio::test]
    async fn post_filter_evicts_on_the_best_node_and_nominates_it() {
        let api = Arc::new(FakeApi::default());
        let p = plugin(api.clone(), vec![]);
        let a = node("a", "2", &[pod("mid", "2", 5, T1)]);
        let b = node("b", "2", &[pod("low", "2", 1, T1)]);
        let c = node("c", "2", &[pod("peer", "2", 10, T1)]);
        let incoming = pod("high", "1", 10, T1);
        let diagnosis = Diagnosis {
            node_statuses: ["a", "b", "c"]
                .iter()
                .map(|n| (n.to_string(), Status::unschedulable("Insufficient cpu")))
                .collect(),
            ..Default::default()
        };
        let (nominated, status) =
            p.post_filter(&CycleState::default(), &incoming, &[&a, &b, &c], &diagnosis);
        assert!(status.is_success(), "{status:?}");
        assert_eq!(nominated.as_deref(), Some("b"));
        assert_eq!(
            api.preemptions.lock().unwrap().clone(),
            [("d/low".to_owned(), "d/high".to_owned(), "b".to_owned())]
        );

        // While that victim terminates, the nominated pod does not preempt again.
        let mut low = pod("low", "2", 1, T1);
        low.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now()),
        );
        low.status.as_mut().unwrap().conditions = Some(vec![serde_json::from_value(json!({
            "type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler"}))
        .unwrap()]);
        let b = node("b", "2", &[low]);
        let mut nominated_pod = incoming.clone();
        nominated_pod.status.as_mut().unwrap().nominated_node_name = Some("b".into());
        let (nominated, status) = p.post_filter(
            &CycleState::default(),
            &nominated_pod,
            &[&a, &b, &c],
            &diagnosis,
        );
        assert_eq!(nominated, None);
        assert_eq!(
            status.message(),
            "preemption: not eligible due to a terminating pod on the nominated node."
        );
        assert_eq!(api.preemptions.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn never_policy_and_hopeless_nodes_do_not_preempt() {
        let api = Arc::new(FakeApi::default());
        let p = plugin(api.clone(), vec![]);
        let a = node("a", "2", &[pod("low", "2", 1, T1)]);
        let b = node("b", "2", &[pod("peer", "2", 10, T1)]);
        let diagnosis = Diagnosis {
            node_statuses: vec![
                ("a".into(), Status::unschedulable("Insufficient cpu")),
                ("b".into(), Status::unschedulable("Insufficient cpu")),
            ],
            ..Default::default()
        };
        let mut never = pod("high", "1", 10, T1);
        never.spec.as_mut().unwrap().preemption_policy = Some("Never".into());
        let (nominated, status) =
            p.post_filter(&CycleState::default(), &never, &[&a, &b], &diagnosis);
        assert_eq!(nominated, None);
        assert_eq!(
            status.message(),
            "preemption: not eligible due to preemptionPolicy=Never."
        );
        let low = pod("low2", "1", 0, T1);
        let (nominated, status) =
            p.post_filter(&CycleState::default(), &low, &[&a, &b], &diagnosis);
        assert_eq!(nominated.as_deref(), Some(""));
        assert_eq!(
            status.message(),
            "preemption: 0/2 nodes are available: 2 No preemption victims found for incoming pod."
        );
        assert!(api.preemptions.lock().unwrap().is_empty());
    }
}
