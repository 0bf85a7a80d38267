//! InterPodAffinity: `podAffinity` and `podAntiAffinity` between pods, per topology domain
//! (the value of the term's `topologyKey` on the node).
//!
//! PreFilter counts, from the snapshot, the domains holding pods that match the incoming
//! pod's required terms, and the domains whose pods' required anti-affinity terms match the
//! incoming pod (anti-affinity is symmetric). Filter rejects nodes in the wrong domains.
//! PreScore sums the weights of preferred terms both ways, plus `hardPodAffinityWeight` for
//! existing pods' required affinity to the incoming pod, per domain; Score reads a node's
//! domains and NormalizeScore scales min..max to 0..100 (`interpodaffinity/*.go`).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, Pod, PodAffinityTerm};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

use super::helpers::selector_matches;
use crate::framework::{
    Code, CycleState, FilterPlugin, NodeInfo, NormalizeScorePlugin, Plugin, PreFilterPlugin,
    PreScorePlugin, ScorePlugin, Status, MAX_NODE_SCORE,
};

/// The plugin's name.
pub const NAME: &str = "InterPodAffinity";
/// The node is in no domain with pods the incoming pod's required affinity wants
/// (`ErrReasonAffinityRulesNotMatch`).
pub const ERR_REASON_AFFINITY: &str = "node(s) didn't match pod affinity rules";
/// The node's domain has pods the incoming pod's required anti-affinity excludes
/// (`ErrReasonAntiAffinityRulesNotMatch`).
pub const ERR_REASON_ANTI_AFFINITY: &str = "node(s) didn't match pod anti-affinity rules";
/// A pod in the node's domain excludes the incoming pod by its required anti-affinity
/// (`ErrReasonExistingAntiAffinityRulesNotMatch`).
pub const ERR_REASON_EXISTING_ANTI_AFFINITY: &str =
    "node(s) didn't satisfy existing pods anti-affinity rules";
/// What an existing pod's *required* affinity to the incoming pod adds to a domain's score
/// (the default of `hardPodAffinityWeight`).
pub const HARD_POD_AFFINITY_WEIGHT: i64 = 1;

const SCORE_KEY: &str = "InterPodAffinity/score";

/// Co-locates and separates pods by topology domain.
pub struct InterPodAffinity {
    /// Namespaces and their labels, for `namespaceSelector`.
    pub namespaces: Arc<dyn Namespaces>,
}

/// Namespaces with their labels, from a watch-fed cache.
pub trait Namespaces: Send + Sync + 'static {
    /// Every namespace: name and labels.
    fn namespaces(&self) -> Vec<(String, BTreeMap<String, String>)>;
}

/// No namespace cache (tests, benchmarks): only `namespaceSelector: {}` selects anything.
pub struct NoNamespaces;

impl Namespaces for NoNamespaces {
    fn namespaces(&self) -> Vec<(String, BTreeMap<String, String>)> {
        Vec::new()
    }
}

/// Namespaces from a reflector.
pub struct CachedNamespaces(kube::runtime::reflector::Store<Namespace>);

impl CachedNamespaces {
    /// Starts the cache; the stream yields after every change and must be polled.
    pub fn start(
        client: kube::Client,
    ) -> (
        Arc<CachedNamespaces>,
        futures::stream::BoxStream<'static, ()>,
    ) {
        use futures::StreamExt as _;
        use kube::runtime::{reflector, watcher, WatchStreamExt as _};
        let (store, writer) = reflector::store::<Namespace>();
        let changes = watcher(
            kube::Api::<Namespace>::all(client),
            watcher::Config::default().any_semantic(),
        )
        .default_backoff()
        .reflect(writer)
        .map(drop)
        .boxed();
        (Arc::new(CachedNamespaces(store)), changes)
    }
}

impl Namespaces for CachedNamespaces {
    fn namespaces(&self) -> Vec<(String, BTreeMap<String, String>)> {
        self.0
            .state()
            .iter()
            .map(|n| {
                (
                    n.metadata.name.clone().unwrap_or_default(),
                    n.metadata.labels.clone().unwrap_or_default(),
                )
            })
            .collect()
    }
}

/// A `(topologyKey, value)` domain.
type Domain = (String, String);

/// A pod affinity term with its namespaces resolved (`framework.AffinityTerm`).
#[derive(Debug, Clone)]
struct Term {
    /// Namespaces listed, those the selector picks, or the owner's own when neither list
    /// nor selector is given.
    namespaces: BTreeSet<String>,
    /// Namespaces by label, resolved into `namespaces` when the term is read; kept because
    /// `{}` selects every namespace, even one the cache does not know yet.
    namespace_selector: Option<LabelSelector>,
    /// Pods by label; `None` matches no pod.
    selector: Option<LabelSelector>,
    topology_key: String,
}

impl Term {
    fn new(term: &PodAffinityTerm, owner: &Pod, all: &dyn Namespaces) -> Term {
        let owner_namespace = owner.metadata.namespace.as_deref().unwrap_or("");
        let mut namespaces: BTreeSet<String> = term.namespaces.iter().flatten().cloned().collect();
        match &term.namespace_selector {
            None if namespaces.is_empty() => {
                namespaces.insert(owner_namespace.to_owned());
            }
            None => {}
            Some(selector) => namespaces.extend(
                all.namespaces()
                    .into_iter()
                    .filter(|(_, labels)| selector_matches(Some(selector), labels))
                    .map(|(name, _)| name),
            ),
        }
        Term {
            namespaces,
            namespace_selector: term.namespace_selector.clone(),
            selector: with_label_keys(term, owner),
            topology_key: term.topology_key.clone(),
        }
    }

    /// Whether `pod` is one of the pods the term is about (`AffinityTerm.Matches`).
    fn matches(&self, pod: &Pod) -> bool {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("");
        let in_namespace = self.namespaces.contains(namespace)
            || self.namespace_selector.as_ref().is_some_and(|s| {
                s.match_labels.as_ref().is_none_or(|m| m.is_empty())
                    && s.match_expressions.as_ref().is_none_or(|e| e.is_empty())
            });
        let empty = BTreeMap::new();
        in_namespace
            && selector_matches(
                self.selector.as_ref(),
                pod.metadata.labels.as_ref().unwrap_or(&empty),
            )
    }

    /// The node's domain for this term, if the node has the key.
    fn domain(&self, node: &NodeInfo) -> Option<Domain> {
        node.labels()
            .and_then(|l| l.get(&self.topology_key))
            .map(|v| (self.topology_key.clone(), v.clone()))
    }
}

/// The term's selector with `matchLabelKeys` (`key In [owner's value]`) and
/// `mismatchLabelKeys` (`key NotIn [owner's value]`) merged in, as the API server merges
/// them at creation (merging twice changes nothing).
fn with_label_keys(term: &PodAffinityTerm, owner: &Pod) -> Option<LabelSelector> {
    let mut selector = term.label_selector.clone()?;
    let labels = owner.metadata.labels.as_ref();
    for (keys, operator) in [
        (&term.match_label_keys, "In"),
        (&term.mismatch_label_keys, "NotIn"),
    ] {
        for key in keys.iter().flatten() {
            let Some(value) = labels.and_then(|l| l.get(key)) else {
                continue;
            };
            selector
                .match_expressions
                .get_or_insert_with(Vec::new)
                .push(LabelSelectorRequirement {
                    key: key.clone(),
                    operator: operator.into(),
                    values: Some(vec![value.clone()]),
                });
        }
    }
    Some(selector)
}

/// The four term lists of a pod's `affinity`.
#[derive(Debug, Default)]
struct Terms {
    required_affinity: Vec<Term>,
    required_anti_affinity: Vec<Term>,
    preferred_affinity: Vec<(i64, Term)>,
    preferred_anti_affinity: Vec<(i64, Term)>,
}

impl Terms {
    fn of(pod: &Pod, all: &dyn Namespaces) -> Terms {
        let Some(affinity) = pod.spec.as_ref().and_then(|s| s.affinity.as_ref()) else {
            return Terms::default();
        };
        let required = |terms: Option<&Vec<PodAffinityTerm>>| -> Vec<Term> {
            terms
                .into_iter()
                .flatten()
                .map(|t| Term::new(t, pod, all))
                .collect()
        };
        let affinity_side = affinity.pod_affinity.as_ref();
        let anti_side = affinity.pod_anti_affinity.as_ref();
        let preferred =
            |terms: Option<&Vec<k8s_openapi::api::core::v1::WeightedPodAffinityTerm>>| {
                terms
                    .into_iter()
                    .flatten()
                    .map(|t| {
                        (
                            i64::from(t.weight),
                            Term::new(&t.pod_affinity_term, pod, all),
                        )
                    })
                    .collect::<Vec<_>>()
            };
        Terms {
            required_affinity: required(affinity_side.and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })),
            required_anti_affinity: required(anti_side.and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })),
            preferred_affinity: preferred(affinity_side.and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            })),
            preferred_anti_affinity: preferred(anti_side.and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            })),
        }
    }

    fn is_empty(&self) -> bool {
        self.required_affinity.is_empty()
            && self.required_anti_affinity.is_empty()
            && self.preferred_affinity.is_empty()
            && self.preferred_anti_affinity.is_empty()
    }
}

fn has_affinity(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .is_some_and(|a| a.pod_affinity.is_some() || a.pod_anti_affinity.is_some())
}

/// What Filter needs, computed once per cycle (`preFilterState`).
#[derive(Debug, Default)]
struct FilterState {
    required_affinity: Vec<Term>,
    required_anti_affinity: Vec<Term>,
    /// Domains with pods matching *all* the incoming pod's required affinity terms.
    affinity_counts: HashMap<Domain, i64>,
    /// Domains with pods matching one of the incoming pod's required anti-affinity terms.
    anti_affinity_counts: HashMap<Domain, i64>,
    /// Domains with pods whose required anti-affinity matches the incoming pod.
    existing_anti_affinity_counts: HashMap<Domain, i64>,
    /// Whether the incoming pod matches all its own required affinity terms.
    matches_own_affinity: bool,
}

impl FilterState {
    fn compute(pod: &Pod, nodes: &[&NodeInfo], all: &dyn Namespaces) -> FilterState {
        let terms = Terms::of(pod, all);
        let mut state = FilterState {
            matches_own_affinity: terms.required_affinity.iter().all(|t| t.matches(pod)),
            required_affinity: terms.required_affinity,
            required_anti_affinity: terms.required_anti_affinity,
            ..Default::default()
        };
        let incoming_has_terms =
            !state.required_affinity.is_empty() || !state.required_anti_affinity.is_empty();
        for node in nodes {
            // Without terms of its own, only pods with required anti-affinity matter.
            if !incoming_has_terms && node.pods_with_required_anti_affinity == 0 {
                continue;
            }
            for existing in node.pods.values() {
                if has_affinity(existing) {
                    for term in Terms::of(existing, all).required_anti_affinity {
                        if term.matches(pod) {
                            if let Some(domain) = term.domain(node) {
                                *state
                                    .existing_anti_affinity_counts
                                    .entry(domain)
                                    .or_default() += 1;
                            }
                        }
                    }
                }
                if !state.required_affinity.is_empty()
                    && state.required_affinity.iter().all(|t| t.matches(existing))
                {
                    for term in &state.required_affinity {
                        if let Some(domain) = term.domain(node) {
                            *state.affinity_counts.entry(domain).or_default() += 1;
                        }
                    }
                }
                for term in &state.required_anti_affinity {
                    if term.matches(existing) {
                        if let Some(domain) = term.domain(node) {
                            *state.anti_affinity_counts.entry(domain).or_default() += 1;
                        }
                    }
                }
            }
        }
        state
    }

    /// `satisfyPodAffinity`: every term's domain on the node holds a matching pod, or no
    /// pod anywhere matches and the pod matches its own terms (the first of its group).
    fn satisfies_affinity(&self, node: &NodeInfo) -> bool {
        let mut pods_exist = true;
        for term in &self.required_affinity {
            let Some(domain) = term.domain(node) else {
                return false;
            };
            if self.affinity_counts.get(&domain).copied().unwrap_or(0) <= 0 {
                pods_exist = false;
            }
        }
        pods_exist || (self.affinity_counts.is_empty() && self.matches_own_affinity)
    }

    fn satisfies_anti_affinity(&self, node: &NodeInfo) -> bool {
        !self.required_anti_affinity.iter().any(|term| {
            term.domain(node)
                .is_some_and(|d| self.anti_affinity_counts.get(&d).copied().unwrap_or(0) > 0)
        })
    }

    fn satisfies_existing_anti_affinity(&self, node: &NodeInfo) -> bool {
        if self.existing_anti_affinity_counts.is_empty() {
            return true;
        }
        !node.labels().into_iter().flatten().any(|(k, v)| {
            self.existing_anti_affinity_counts
                .get(&(k.clone(), v.clone()))
                .copied()
                .unwrap_or(0)
                > 0
        })
    }
}

impl Plugin for InterPodAffinity {
    fn name(&self) -> &'static str {
        NAME
    }
    fn as_pre_filter(&self) -> Option<&dyn PreFilterPlugin> {
        Some(self)
    }
    fn as_filter(&self) -> Option<&dyn FilterPlugin> {
        Some(self)
    }
    fn as_pre_score(&self) -> Option<&dyn PreScorePlugin> {
        Some(self)
    }
    fn as_score(&self) -> Option<&dyn ScorePlugin> {
        Some(self)
    }
    fn as_normalize_score(&self) -> Option<&dyn NormalizeScorePlugin> {
        Some(self)
    }
}

impl PreFilterPlugin for InterPodAffinity {
    fn pre_filter(&self, state: &mut CycleState, pod: &Pod, nodes: &[&NodeInfo]) -> Status {
        let computed = FilterState::compute(pod, nodes, self.namespaces.as_ref());
        if computed.required_affinity.is_empty()
            && computed.required_anti_affinity.is_empty()
            && computed.existing_anti_affinity_counts.is_empty()
        {
            return Status::skip();
        }
        state.write(NAME, computed);
        Status::success()
    }
}

impl FilterPlugin for InterPodAffinity {
    fn filter(&self, state: &CycleState, _: &Pod, node: &NodeInfo) -> Status {
        let Some(s) = state.read::<FilterState>(NAME) else {
            return Status::success();
        };
        if !s.satisfies_affinity(node) {
            return Status::new(Code::UnschedulableAndUnresolvable, ERR_REASON_AFFINITY);
        }
        if !s.satisfies_anti_affinity(node) {
            return Status::unschedulable(ERR_REASON_ANTI_AFFINITY);
        }
        if !s.satisfies_existing_anti_affinity(node) {
            return Status::unschedulable(ERR_REASON_EXISTING_ANTI_AFFINITY);
        }
        Status::success()
    }
}

/// Score per domain, by topology key then value (`preScoreState.topologyScore`).
#[derive(Debug, Default)]
struct ScoreState(HashMap<String, HashMap<String, i64>>);

impl ScoreState {
    fn add(&mut self, term: &Term, pod: &Pod, node: &NodeInfo, weight: i64) {
        if weight == 0 || !term.matches(pod) {
            return;
        }
        if let Some((key, value)) = term.domain(node) {
            *self.0.entry(key).or_default().entry(value).or_default() += weight;
        }
    }

    fn compute(pod: &Pod, all_nodes: &[&NodeInfo], all: &dyn Namespaces) -> ScoreState {
        let incoming = Terms::of(pod, all);
        let mut scores = ScoreState::default();
        let incoming_has_preferred =
            !incoming.preferred_affinity.is_empty() || !incoming.preferred_anti_affinity.is_empty();
        for node in all_nodes {
            if !incoming_has_preferred && node.pods_with_affinity == 0 {
                continue;
            }
            for existing in node.pods.values() {
                if incoming_has_preferred {
                    for (weight, term) in &incoming.preferred_affinity {
                        scores.add(term, existing, node, *weight);
                    }
                    for (weight, term) in &incoming.preferred_anti_affinity {
                        scores.add(term, existing, node, -*weight);
                    }
                }
                if !has_affinity(existing) {
                    continue;
                }
                let theirs = Terms::of(existing, all);
                if theirs.is_empty() {
                    continue;
                }
                for term in &theirs.required_affinity {
                    scores.add(term, pod, node, HARD_POD_AFFINITY_WEIGHT);
                }
                for (weight, term) in &theirs.preferred_affinity {
                    scores.add(term, pod, node, *weight);
                }
                for (weight, term) in &theirs.preferred_anti_affinity {
                    scores.add(term, pod, node, -*weight);
                }
            }
        }
        scores
    }
}

impl PreScorePlugin for InterPodAffinity {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &Pod,
        _feasible: &[&NodeInfo],
        all: &[&NodeInfo],
    ) -> Status {
        let scores = ScoreState::compute(pod, all, self.namespaces.as_ref());
        if scores.0.is_empty() {
            return Status::skip();
        }
        state.write(SCORE_KEY, scores);
        Status::success()
    }
}

impl ScorePlugin for InterPodAffinity {
    fn score(&self, state: &CycleState, _: &Pod, node: &NodeInfo) -> Result<i64, Status> {
        let Some(ScoreState(scores)) = state.read::<ScoreState>(SCORE_KEY) else {
            return Ok(0);
        };
        let Some(labels) = node.labels() else {
            return Ok(0);
        };
        Ok(scores
            .iter()
            .filter_map(|(key, values)| labels.get(key).and_then(|v| values.get(v)))
            .sum())
    }
}

impl NormalizeScorePlugin for InterPodAffinity {
    fn normalize_score(&self, _: &CycleState, _: &Pod, scores: &mut [i64]) -> Status {
        // Scores may be negative (anti-affinity): min..max becomes 0..100.
        let (Some(min), Some(max)) = (scores.iter().min().copied(), scores.iter().max().copied())
        else {
            return Status::success();
        };
        for s in scores.iter_mut() {
            *s = if max > min {
                MAX_NODE_SCORE * (*s - min) / (max - min)
            } else {
                0
            };
        }
        Status::success()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Node;

    fn plugin() -> InterPodAffinity {
        struct Two;
        impl Namespaces for Two {
            fn namespaces(&self) -> Vec<(String, BTreeMap<String, String>)> {
                ["d", "infra"]
                    .iter()
                    .map(|n| {
                        let mut labels = BTreeMap::from([(
                            "kubernetes.io/metadata.name".to_owned(),
                            n.to_string(),
                        )]);
                        if *n == "infra" {
                            labels.insert("team".into(), "platform".into());
                        }
                        (n.to_string(), labels)
                    })
                    .collect()
            }
        }
        InterPodAffinity {
            namespaces: Arc::new(Two),
        }
    }
    use serde_json::{json, Value};

    fn node(name: &str, zone: &str, pods: &[Pod]) -> NodeInfo {
        let node: Node = serde_json::from_value(json!({"metadata": {"name": name,
            "labels": {"kubernetes.io/hostname": name, "zone": zone}}}))
        .unwrap();
        let mut info = NodeInfo::default();
        info.set_node(Arc::new(node));
        for p in pods {
            let key = format!(
                "{}/{}",
                p.metadata.namespace.as_deref().unwrap(),
                p.metadata.name.as_deref().unwrap()
            );
            info.add_pod(&key, Arc::new(p.clone()));
        }
        info
    }

    fn pod(name: &str, labels: Value, affinity: Value) -> Pod {
        serde_json::from_value(
            json!({"metadata": {"name": name, "namespace": "d", "labels": labels},
            "spec": {"containers": [{"name": "c"}], "affinity": affinity}}),
        )
        .unwrap()
    }

    fn term(key: &str, app: &str) -> Value {
        json!({"topologyKey": key, "labelSelector": {"matchLabels": {"app": app}}})
    }

    fn filter_all(p: &Pod, nodes: &[&NodeInfo]) -> Vec<Status> {
        let mut state = CycleState::default();
        let pre = plugin().pre_filter(&mut state, p, nodes);
        nodes
            .iter()
            .map(|n| {
                if pre.code == Code::Skip {
                    Status::success()
                } else {
                    plugin().filter(&state, p, n)
                }
            })
            .collect()
    }

    fn verdicts(statuses: &[Status]) -> Vec<String> {
        statuses
            .iter()
            .map(|s| {
                if s.is_success() {
                    "ok".into()
                } else {
                    s.message()
                }
            })
            .collect()
    }

    #[test]
    fn required_anti_affinity_keeps_replicas_apart_per_hostname() {
        let anti = json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            term("kubernetes.io/hostname", "web")]}});
        let a = node("a", "z1", &[pod("w1", json!({"app": "web"}), anti.clone())]);
        let b = node("b", "z1", &[]);
        let out = filter_all(&pod("w2", json!({"app": "web"}), anti), &[&a, &b]);
        assert_eq!(verdicts(&out), [ERR_REASON_ANTI_AFFINITY, "ok"]);
        assert_eq!(out[0].code, Code::Unschedulable);
    }

    #[test]
    fn existing_pods_anti_affinity_is_symmetric_per_zone() {
        // The existing pod refuses app=db in its zone; the incoming pod says nothing.
        let anti = json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            term("zone", "db")]}});
        let a = node("a", "z1", &[pod("guard", json!({"app": "x"}), anti)]);
        let b = node("b", "z1", &[]);
        let c = node("c", "z2", &[]);
        let out = filter_all(&pod("db", json!({"app": "db"}), Value::Null), &[&a, &b, &c]);
        assert_eq!(
            verdicts(&out),
            [
                ERR_REASON_EXISTING_ANTI_AFFINITY,
                ERR_REASON_EXISTING_ANTI_AFFINITY,
                "ok"
            ]
        );
        // Another namespace is not covered by the term (its owner's namespace by default).
        let mut other = pod("db", json!({"app": "db"}), Value::Null);
        other.metadata.namespace = Some("e".into());
        assert_eq!(
            verdicts(&filter_all(&other, &[&a, &b, &c])),
            ["ok", "ok", "ok"]
        );
    }

    #[test]
    fn required_affinity_co_locates_and_the_first_of_a_group_may_go_anywhere() {
        let affinity = json!({"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            term("zone", "cache")]}});
        let a = node("a", "z1", &[]);
        let b = node(
            "b",
            "z2",
            &[pod("cache", json!({"app": "cache"}), Value::Null)],
        );
        let c = node("c", "z2", &[]);
        let out = filter_all(
            &pod("web", json!({"app": "web"}), affinity.clone()),
            &[&a, &b, &c],
        );
        assert_eq!(verdicts(&out), [ERR_REASON_AFFINITY, "ok", "ok"]);
        assert_eq!(out[0].code, Code::UnschedulableAndUnresolvable);
        // No matching pod anywhere: a pod that does not match its own term cannot run...
        let empty = node("e", "z3", &[]);
        let out = filter_all(&pod("web", json!({"app": "web"}), affinity), &[&empty]);
        assert_eq!(verdicts(&out), [ERR_REASON_AFFINITY]);
        // ...but one that matches it may be the first of its group.
        let own = json!({"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            term("zone", "cache")]}});
        let out = filter_all(&pod("c1", json!({"app": "cache"}), own.clone()), &[&empty]);
        assert_eq!(verdicts(&out), ["ok"]);
        // A node without the topology key never satisfies affinity.
        let mut bare = NodeInfo::default();
        bare.set_node(Arc::new(
            serde_json::from_value(json!({"metadata": {"name": "bare"}})).unwrap(),
        ));
        let out = filter_all(&pod("c1", json!({"app": "cache"}), own), &[&bare]);
        assert_eq!(verdicts(&out), [ERR_REASON_AFFINITY]);
    }

    #[test]
    fn namespaces_and_namespace_selectors_widen_terms() {
        let mut other = pod("cache", json!({"app": "cache"}), Value::Null);
        other.metadata.namespace = Some("infra".into());
        let a = node("a", "z1", &[other]);
        let b = node("b", "z2", &[]);
        let listed = json!({"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"topologyKey": "zone", "namespaces": ["infra"],
             "labelSelector": {"matchLabels": {"app": "cache"}}}]}});
        let out = filter_all(&pod("web", json!({}), listed), &[&a, &b]);
        assert_eq!(verdicts(&out), ["ok", ERR_REASON_AFFINITY]);
        let all = json!({"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"topologyKey": "zone", "namespaceSelector": {},
             "labelSelector": {"matchLabels": {"app": "cache"}}}]}});
        let out = filter_all(&pod("web", json!({}), all), &[&a, &b]);
        assert_eq!(verdicts(&out), ["ok", ERR_REASON_AFFINITY]);
        let by_name = json!({"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"topologyKey": "zone", "namespaceSelector": {"matchLabels":
                {"kubernetes.io/metadata.name": "other"}},
             "labelSelector": {"matchLabels": {"app": "cache"}}}]}});
        let out = filter_all(&pod("web", json!({}), by_name), &[&a, &b]);
        assert_eq!(verdicts(&out), [ERR_REASON_AFFINITY, ERR_REASON_AFFINITY]);
        let by_label = json!({"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"topologyKey": "zone", "namespaceSelector": {"matchLabels": {"team": "platform"}},
             "labelSelector": {"matchLabels": {"app": "cache"}}}]}});
        let out = filter_all(&pod("web", json!({}), by_label), &[&a, &b]);
        assert_eq!(verdicts(&out), ["ok", ERR_REASON_AFFINITY]);
    }

    #[test]
    fn match_label_keys_narrow_terms_to_the_owners_group() {
        // Anti-affinity per hostname, but only against pods of the same revision.
        let anti = json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"topologyKey": "kubernetes.io/hostname", "matchLabelKeys": ["rev"],
             "labelSelector": {"matchLabels": {"app": "web"}}}]}});
        let a = node(
            "a",
            "z1",
            &[pod("old", json!({"app": "web", "rev": "1"}), Value::Null)],
        );
        let out = filter_all(
            &pod("new", json!({"app": "web", "rev": "2"}), anti.clone()),
            &[&a],
        );
        assert_eq!(verdicts(&out), ["ok"]);
        let out = filter_all(&pod("twin", json!({"app": "web", "rev": "1"}), anti), &[&a]);
        assert_eq!(verdicts(&out), [ERR_REASON_ANTI_AFFINITY]);
        let mismatch = json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"topologyKey": "kubernetes.io/hostname", "mismatchLabelKeys": ["rev"],
             "labelSelector": {"matchLabels": {"app": "web"}}}]}});
        let out = filter_all(
            &pod("new", json!({"app": "web", "rev": "2"}), mismatch),
            &[&a],
        );
        assert_eq!(verdicts(&out), [ERR_REASON_ANTI_AFFINITY]);
    }

    #[test]
    fn pods_without_terms_skip_the_filter() {
        let a = node("a", "z1", &[pod("x", json!({"app": "x"}), Value::Null)]);
        let mut state = CycleState::default();
        let p = pod("y", json!({}), Value::Null);
        assert_eq!(plugin().pre_filter(&mut state, &p, &[&a]).code, Code::Skip);
    }

    fn scores(p: &Pod, nodes: &[&NodeInfo]) -> Vec<i64> {
        let mut state = CycleState::default();
        if plugin().pre_score(&mut state, p, nodes, nodes).code == Code::Skip {
            return vec![0; nodes.len()];
        }
        let mut raw: Vec<i64> = nodes
            .iter()
            .map(|n| plugin().score(&state, p, n).unwrap())
            .collect();
        plugin().normalize_score(&state, p, &mut raw);
        raw
    }

    #[test]
    fn preferred_terms_score_by_weight_both_ways() {
        let a = node(
            "a",
            "z1",
            &[pod("cache", json!({"app": "cache"}), Value::Null)],
        );
        let b = node(
            "b",
            "z2",
            &[pod("noisy", json!({"app": "noisy"}), Value::Null)],
        );
        let c = node("c", "z3", &[]);
        let prefs = json!({
            "podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 10, "podAffinityTerm": term("zone", "cache")}]},
            "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 10, "podAffinityTerm": term("zone", "noisy")}]}});
        // Raw: a = 10, b = -10, c = 0; normalized over min..max.
        assert_eq!(
            scores(&pod("web", json!({}), prefs), &[&a, &b, &c]),
            [100, 0, 50]
        );

        // Existing pods' terms count for the incoming pod: required affinity with weight 1,
        // preferred anti-affinity with its negative weight.
        let wants_web = json!({"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            term("zone", "web")]}});
        let avoids_web = json!({"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 5, "podAffinityTerm": term("zone", "web")}]}});
        let a = node("a", "z1", &[pod("fan", json!({}), wants_web)]);
        let b = node("b", "z2", &[pod("hater", json!({}), avoids_web)]);
        let c = node("c", "z3", &[]);
        // Raw: a = 1, b = -5, c = 0.
        assert_eq!(
            scores(
                &pod("web", json!({"app": "web"}), Value::Null),
                &[&a, &b, &c]
            ),
            [100, 0, 83]
        );
        // Nobody cares: the plugin skips scoring.
        assert_eq!(scores(&pod("x", json!({}), Value::Null), &[&c]), [0]);
    }
}
