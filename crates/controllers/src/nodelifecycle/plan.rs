//! What the node lifecycle controller changes, from the caches alone: which nodes stopped
//! heartbeating, which of their conditions turn Unknown, which taints each node should
//! carry, and when each pod on a NoExecute-tainted node is evicted.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// The taint of a node whose kubelet stopped heartbeating.
pub const UNREACHABLE_TAINT: &str = "node.kubernetes.io/unreachable";
/// The taint of a node whose kubelet reports it not Ready.
pub const NOT_READY_TAINT: &str = "node.kubernetes.io/not-ready";

/// The NoSchedule taint of each pressure condition the kubelet's eviction manager
/// raises (TaintNodesByCondition).
pub const CONDITION_TAINTS: [(&str, &str); 3] = [
    ("MemoryPressure", "node.kubernetes.io/memory-pressure"),
    ("DiskPressure", "node.kubernetes.io/disk-pressure"),
    ("PIDPressure", "node.kubernetes.io/pid-pressure"),
];

/// The conditions the kubelet owns, turned Unknown when it goes silent.
pub const KUBELET_CONDITIONS: [&str; 4] =
    ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];

/// Reason and message of a condition whose kubelet stopped posting status.
pub const UNKNOWN_REASON: &str = "NodeStatusUnknown";
pub const UNKNOWN_MESSAGE: &str = "Kubelet stopped posting node status.";
/// Reason and message of a condition the kubelet never posted.
pub const NEVER_REASON: &str = "NodeStatusNeverUpdated";
pub const NEVER_MESSAGE: &str = "Kubelet never posted node status.";

/// The name of the node a pod is bound to ("" when unscheduled).
pub fn node_name(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or("")
}

/// What changes when the kubelet heartbeats: its Lease's renew time and the heartbeat
/// times of its conditions.
pub fn heartbeat_signature(node: &Node, lease: Option<&Lease>) -> String {
    let renew = lease
        .and_then(|l| l.spec.as_ref())
        .and_then(|s| s.renew_time.as_ref())
        .map(|t| t.0.to_string())
        .unwrap_or_default();
    let conditions: Vec<String> = node
        .status
        .iter()
        .flat_map(|s| s.conditions.iter().flatten())
        .map(|c| {
            format!(
                "{}={}@{}",
                c.type_,
                c.status,
                c.last_heartbeat_time
                    .as_ref()
                    .map(|t| t.0.to_string())
                    .unwrap_or_default()
            )
        })
        .collect();
    format!("{renew}|{}", conditions.join(","))
}

/// When this controller last saw each node's heartbeat change, by its own clock (as
/// upstream, so that skewed kubelet clocks do not matter): a node whose heartbeat has not
/// changed for the grace period is stale.
#[derive(Debug)]
pub struct Heartbeats {
    grace: Duration,
    seen: HashMap<String, (String, Instant)>,
}

impl Heartbeats {
    /// Nodes are stale after `grace` without a heartbeat.
    pub fn new(grace: Duration) -> Heartbeats {
        Heartbeats {
            grace,
            seen: HashMap::new(),
        }
    }

    /// Records the node's current heartbeat `signature`, seen at `now`.
    pub fn observe(&mut self, node: &str, signature: String, now: Instant) {
        match self.seen.get_mut(node) {
            Some((old, at)) if *old != signature => {
                *old = signature;
                *at = now;
            }
            Some(_) => {}
            None => {
                self.seen.insert(node.to_owned(), (signature, now));
            }
        }
    }

    /// Forgets the nodes not in `names`.
    pub fn retain(&mut self, names: &HashSet<String>) {
        self.seen.retain(|n, _| names.contains(n));
    }

    /// Whether the node has not heartbeated for longer than the grace period.
    pub fn is_stale(&self, node: &str, now: Instant) -> bool {
        self.seen
            .get(node)
            .is_some_and(|(_, at)| now.saturating_duration_since(*at) > self.grace)
    }

    /// How soon the next node that is still fresh turns stale.
    pub fn next_expiry(&self, now: Instant) -> Option<Duration> {
        self.seen
            .values()
            .map(|(_, at)| *at + self.grace)
            .filter(|deadline| *deadline >= now)
            .map(|deadline| deadline - now + Duration::from_millis(10))
            .min()
    }
}

fn conditions(node: &Node) -> &[NodeCondition] {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or(&[])
}

/// The status of the node's Ready condition, if it has one.
pub fn ready_status(node: &Node) -> Option<&str> {
    conditions(node)
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status.as_str())
}

/// The kubelet-owned conditions of a stale node that must turn Unknown (empty when all
/// already are): existing ones keep their heartbeat time, missing ones are added.
pub fn unknown_conditions(node: &Node, now: jiff::Timestamp) -> Vec<NodeCondition> {
    KUBELET_CONDITIONS
        .iter()
        .filter_map(
            |type_| match conditions(node).iter().find(|c| c.type_ == *type_) {
                Some(c) if c.status == "Unknown" => None,
                Some(c) => Some(NodeCondition {
                    status: "Unknown".into(),
                    reason: Some(UNKNOWN_REASON.into()),
                    message: Some(UNKNOWN_MESSAGE.into()),
                    last_transition_time: Some(Time(now)),
                    ..c.clone()
                }),
                None => Some(NodeCondition {
                    type_: (*type_).into(),
                    status: "Unknown".into(),
                    reason: Some(NEVER_REASON.into()),
                    message: Some(NEVER_MESSAGE.into()),
                    last_heartbeat_time: Some(Time(now)),
                    last_transition_time: Some(Time(now)),
                }),
            },
        )
        .collect()
}

/// The node's taints as they should be for a Ready condition of `ready` (`None`: the
/// kubelet never posted one, nothing changes), or `None` when they already are: Unknown
/// means unreachable, False not-ready (each NoSchedule and NoExecute), True neither; a
/// reachable node under memory, disk or pid pressure (the condition True) also carries
/// that pressure's NoSchedule taint. Taints that stay keep their time; other taints are
/// untouched.
pub fn desired_taints(
    node: &Node,
    ready: Option<&str>,
    now: jiff::Timestamp,
) -> Option<Vec<Taint>> {
    let want: &[&str] = match ready? {
        "Unknown" => &[UNREACHABLE_TAINT],
        "False" => &[NOT_READY_TAINT],
        _ => &[],
    };
    let current: Vec<Taint> = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let conditions = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default();
    let pressure: Vec<&str> = CONDITION_TAINTS
        .iter()
        .filter(|(type_, _)| {
            ready != Some("Unknown")
                && conditions
                    .iter()
                    .any(|c| c.type_ == *type_ && c.status == "True")
        })
        .map(|(_, key)| *key)
        .collect();
    let managed = |t: &Taint| {
        ((t.key == UNREACHABLE_TAINT || t.key == NOT_READY_TAINT)
            && (t.effect == "NoExecute" || t.effect == "NoSchedule"))
            || (CONDITION_TAINTS.iter().any(|(_, key)| t.key == *key) && t.effect == "NoSchedule")
    };
    let mut taints: Vec<Taint> = current
        .iter()
        .filter(|t| {
            !managed(t) || want.contains(&t.key.as_str()) || pressure.contains(&t.key.as_str())
        })
        .cloned()
        .collect();
    for key in &pressure {
        if !taints
            .iter()
            .any(|t| t.key == *key && t.effect == "NoSchedule")
        {
            taints.push(Taint {
                key: (*key).into(),
                effect: "NoSchedule".into(),
                value: None,
                time_added: None,
            });
        }
    }
    for key in want {
        for effect in ["NoSchedule", "NoExecute"] {
            if !taints.iter().any(|t| t.key == *key && t.effect == effect) {
                taints.push(Taint {
                    key: (*key).into(),
                    effect: effect.into(),
                    value: None,
                    time_added: (effect == "NoExecute").then_some(Time(now)),
                });
            }
        }
    }
    (taints != current).then_some(taints)
}

/// The pods on `node` whose Ready condition is not yet False (`MarkPodsNotReady`).
pub fn pods_to_mark_not_ready(pods: &[Arc<Pod>], node: &str) -> Vec<Arc<Pod>> {
    pods.iter()
        .filter(|p| node_name(p) == node && p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
            !matches!(phase, Some("Succeeded" | "Failed"))
        })
        .filter(|p| {
            !p.status
                .iter()
                .flat_map(|s| s.conditions.iter().flatten())
                .any(|c| c.type_ == "Ready" && c.status == "False")
        })
        .cloned()
        .collect()
}

/// Whether `toleration` tolerates `taint`.
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = toleration.effect.as_deref() {
        if !effect.is_empty() && effect != taint.effect {
            return false;
        }
    }
    let key = toleration.key.as_deref().unwrap_or("");
    match toleration.operator.as_deref().unwrap_or("Equal") {
        // An empty key with Exists tolerates everything.
        "Exists" => key.is_empty() || key == taint.key,
        "Equal" => {
            key == taint.key
                && toleration.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
        _ => false,
    }
}

/// When the taint manager evicts a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Eviction {
    /// The node has no NoExecute taint, or the pod tolerates them all for ever.
    Never,
    /// A NoExecute taint is not tolerated.
    Now,
    /// At this time, when the shortest `tolerationSeconds` runs out (counted from when
    /// each taint was added).
    At(jiff::Timestamp),
}

/// When the NoExecute taints that carry no `timeAdded` (kubectl and most clients set
/// none) were first seen on their nodes: `tolerationSeconds` run from then, as
/// Kubernetes' taint manager keeps the eviction it scheduled when it first saw the taint.
#[derive(Debug, Default)]
pub struct TaintClock {
    /// (node, key, value, effect) to when it was first seen.
    seen: HashMap<(String, String, String, String), jiff::Timestamp>,
}

impl TaintClock {
    /// Notes the undated NoExecute taints of `nodes` at `now`; forgets removed ones.
    pub fn observe(&mut self, nodes: &[Arc<Node>], now: jiff::Timestamp) {
        let mut seen = HashMap::new();
        for node in nodes {
            let name = node.metadata.name.as_deref().unwrap_or_default();
            for taint in node.spec.iter().flat_map(|s| s.taints.iter().flatten()) {
                if taint.effect != "NoExecute" || taint.time_added.is_some() {
                    continue;
                }
                let key = taint_key(name, taint);
                let since = self.seen.get(&key).copied().unwrap_or(now);
                seen.insert(key, since);
            }
        }
        self.seen = seen;
    }

    /// When `taint` of node `node` was first seen, if it is undated and was observed.
    fn since(&self, node: &str, taint: &Taint) -> Option<jiff::Timestamp> {
        self.seen.get(&taint_key(node, taint)).copied()
    }
}

fn taint_key(node: &str, taint: &Taint) -> (String, String, String, String) {
    (
        node.to_string(),
        taint.key.clone(),
        taint.value.clone().unwrap_or_default(),
        taint.effect.clone(),
    )
}

/// When the pod on a node with `taints` is evicted, at `now`; `since` says when an
/// undated taint was first seen.
pub fn eviction(
    pod: &Pod,
    taints: &[Taint],
    since: impl Fn(&Taint) -> Option<jiff::Timestamp>,
    now: jiff::Timestamp,
) -> Eviction {
    let tolerations: &[Toleration] = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or(&[]);
    let mut at: Option<jiff::Timestamp> = None;
    for taint in taints.iter().filter(|t| t.effect == "NoExecute") {
        let used: Vec<&Toleration> = tolerations.iter().filter(|t| tolerates(t, taint)).collect();
        if used.is_empty() {
            return Eviction::Now;
        }
        // The shortest of the limits of the tolerations used; none means for ever.
        let Some(seconds) = used.iter().filter_map(|t| t.toleration_seconds).min() else {
            continue;
        };
        let since = taint
            .time_added
            .as_ref()
            .map(|t| t.0)
            .or_else(|| since(taint))
            .unwrap_or(now);
        let deadline = since + jiff::SignedDuration::from_secs(seconds.max(0));
        at = Some(at.map_or(deadline, |a| a.min(deadline)));
    }
    match at {
        None => Eviction::Never,
        Some(at) if at <= now => Eviction::Now,
        Some(at) => Eviction::At(at),
    }
}

/// The pods to evict now from nodes with NoExecute taints, and how soon the next
/// scheduled eviction is due.
pub fn evictions(
    pods: &[Arc<Pod>],
    nodes: &[Arc<Node>],
    clock: &TaintClock,
    now: jiff::Timestamp,
) -> (Vec<Arc<Pod>>, Option<Duration>) {
    let taints: HashMap<&str, &[Taint]> = nodes
        .iter()
        .filter_map(|n| {
            let taints = n.spec.as_ref()?.taints.as_deref()?;
            taints
                .iter()
                .any(|t| t.effect == "NoExecute")
                .then_some((n.metadata.name.as_deref()?, taints))
        })
        .collect();
    let mut due = Vec::new();
    let mut next: Option<Duration> = None;
    for pod in pods {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some(taints) = taints.get(node_name(pod)) else {
            continue;
        };
        let node = node_name(pod);
        match eviction(pod, taints, |t| clock.since(node, t), now) {
            Eviction::Never => {}
            Eviction::Now => due.push(pod.clone()),
            Eviction::At(at) => {
                let wait = Duration::try_from(at.duration_since(now)).unwrap_or_default();
                next = Some(next.map_or(wait, |n| n.min(wait)));
            }
        }
    }
    (due, next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(value: serde_json::Value) -> Node {
        serde_json::from_value(value).unwrap()
    }

    fn pod(value: serde_json::Value) -> Arc<Pod> {
        Arc::new(serde_json::from_value(value).unwrap())
    }

    fn ts(s: &str) -> jiff::Timestamp {
        s.parse().unwrap()
    }

    fn keys(taints: &[Taint]) -> Vec<String> {
        taints
            .iter()
            .map(|t| format!("{}:{}", t.key, t.effect))
            .collect()
    }

    #[test]
    fn a_node_is_stale_once_its_heartbeat_stops_changing_for_the_grace_period() {
        let start = Instant::now();
        let mut hb = Heartbeats::new(Duration::from_secs(40));
        hb.observe("a", "1".into(), start);
        hb.observe("b", "1".into(), start);
        assert!(!hb.is_stale("a", start + Duration::from_secs(30)));
        // b renews, a does not.
        hb.observe("a", "1".into(), start + Duration::from_secs(30));
        hb.observe("b", "2".into(), start + Duration::from_secs(30));
        let later = start + Duration::from_secs(41);
        assert!(hb.is_stale("a", later));
        assert!(!hb.is_stale("b", later));
        assert_eq!(hb.next_expiry(later), Some(Duration::from_millis(29_010)));
        // Unknown nodes are never stale; forgotten nodes start over.
        assert!(!hb.is_stale("c", later));
        hb.retain(&HashSet::from(["b".to_owned()]));
        assert!(!hb.is_stale("a", later));
    }

    #[test]
    fn the_signature_changes_with_the_lease_and_the_status_heartbeat() {
        let n = node(json!({"metadata": {"name": "a"}, "status": {"conditions": [
            {"type": "Ready", "status": "True", "lastHeartbeatTime": "2025-01-01T00:00:00Z"}]}}));
        let lease = |t: &str| -> Lease {
            serde_json::from_value(json!({"metadata": {"name": "a"}, "spec": {"renewTime": t}}))
                .unwrap()
        };
        let one = heartbeat_signature(&n, Some(&lease("2025-01-01T00:00:01.000000Z")));
        let two = heartbeat_signature(&n, Some(&lease("2025-01-01T00:00:11.000000Z")));
        assert_ne!(one, two);
        assert_eq!(
            one,
            heartbeat_signature(&n, Some(&lease("2025-01-01T00:00:01.000000Z")))
        );
    }

    #[test]
    fn pressure_conditions_taint_a_reachable_node_no_schedule() {
        let now = ts("2025-01-01T00:01:00Z");
        let n = node(json!({"metadata": {"name": "a"},
            "spec": {"taints": [{"key": "node.kubernetes.io/pid-pressure", "effect": "NoSchedule"},
                {"key": "user", "effect": "NoSchedule"}]},
            "status": {"conditions": [
            {"type": "Ready", "status": "True"},
            {"type": "MemoryPressure", "status": "True"},
            {"type": "PIDPressure", "status": "False"}]}}));
        let taints = desired_taints(&n, Some("True"), now).unwrap();
        let keys: Vec<(&str, &str)> = taints
            .iter()
            .map(|t| (t.key.as_str(), t.effect.as_str()))
            .collect();
        assert_eq!(
            keys,
            [
                ("user", "NoSchedule"),
                ("node.kubernetes.io/memory-pressure", "NoSchedule")
            ]
        );
        // Unreachable: the pressure taints go, the unreachable ones come.
        let mut tainted = n.clone();
        tainted.spec.as_mut().unwrap().taints = Some(taints);
        let keys: Vec<String> = desired_taints(&tainted, Some("Unknown"), now)
            .unwrap()
            .iter()
            .map(|t| t.key.clone())
            .collect();
        assert_eq!(keys, ["user", UNREACHABLE_TAINT, UNREACHABLE_TAINT]);
    }

    #[test]
    fn a_stale_node_gets_its_kubelet_conditions_unknown() {
        let now = ts("2025-01-01T00:01:00Z");
        let n = node(json!({"metadata": {"name": "a"}, "status": {"conditions": [
            {"type": "Ready", "status": "True", "reason": "KubeletReady",
             "lastHeartbeatTime": "2025-01-01T00:00:00Z"},
            {"type": "MemoryPressure", "status": "False"},
            {"type": "DiskPressure", "status": "Unknown"},
            {"type": "NetworkUnavailable", "status": "False"}]}}));
        let changed = unknown_conditions(&n, now);
        let types: Vec<&str> = changed.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, ["Ready", "MemoryPressure", "PIDPressure"]);
        let ready = &changed[0];
        assert_eq!(ready.status, "Unknown");
        assert_eq!(ready.reason.as_deref(), Some(UNKNOWN_REASON));
        assert_eq!(ready.message.as_deref(), Some(UNKNOWN_MESSAGE));
        assert_eq!(
            ready.last_heartbeat_time,
            Some(Time(ts("2025-01-01T00:00:00Z")))
        );
        assert_eq!(ready.last_transition_time, Some(Time(now)));
        assert_eq!(changed[2].reason.as_deref(), Some(NEVER_REASON));
    }

    #[test]
    fn taints_follow_the_ready_condition() {
        let now = ts("2025-01-01T00:01:00Z");
        let plain = node(json!({"metadata": {"name": "a"},
            "spec": {"taints": [{"key": "dedicated", "effect": "NoSchedule"}]}}));
        let unknown = desired_taints(&plain, Some("Unknown"), now).unwrap();
        assert_eq!(
            keys(&unknown),
            [
                "dedicated:NoSchedule",
                "node.kubernetes.io/unreachable:NoSchedule",
                "node.kubernetes.io/unreachable:NoExecute"
            ]
        );
        assert_eq!(unknown[2].time_added, Some(Time(now)));
        assert_eq!(unknown[1].time_added, None);
        // Already there: nothing to change (idempotent).
        let mut tainted = plain.clone();
        tainted.spec.as_mut().unwrap().taints = Some(unknown.clone());
        assert_eq!(desired_taints(&tainted, Some("Unknown"), now), None);
        // Not ready instead: unreachable goes, not-ready comes.
        let not_ready = desired_taints(&tainted, Some("False"), now).unwrap();
        assert_eq!(
            keys(&not_ready),
            [
                "dedicated:NoSchedule",
                "node.kubernetes.io/not-ready:NoSchedule",
                "node.kubernetes.io/not-ready:NoExecute"
            ]
        );
        // Ready again: only the administrator's taint stays.
        let ready = desired_taints(&tainted, Some("True"), now).unwrap();
        assert_eq!(keys(&ready), ["dedicated:NoSchedule"]);
        assert_eq!(desired_taints(&plain, Some("True"), now), None);
        assert_eq!(desired_taints(&plain, None, now), None);
    }

    #[test]
    fn running_pods_on_the_node_are_marked_not_ready_once() {
        let pods = vec![
            pod(
                json!({"metadata": {"name": "ready"}, "spec": {"nodeName": "a", "containers": []},
                "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}),
            ),
            pod(
                json!({"metadata": {"name": "marked"}, "spec": {"nodeName": "a", "containers": []},
                "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}]}}),
            ),
            pod(
                json!({"metadata": {"name": "done"}, "spec": {"nodeName": "a", "containers": []},
                "status": {"phase": "Succeeded"}}),
            ),
            pod(
                json!({"metadata": {"name": "elsewhere"}, "spec": {"nodeName": "b", "containers": []}}),
            ),
        ];
        let names: Vec<String> = pods_to_mark_not_ready(&pods, "a")
            .iter()
            .map(|p| p.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names, ["ready"]);
    }

    #[test]
    fn tolerations_match_by_key_value_operator_and_effect() {
        let taint = Taint {
            key: "k".into(),
            value: Some("v".into()),
            effect: "NoExecute".into(),
            time_added: None,
        };
        let t = |v: serde_json::Value| -> Toleration { serde_json::from_value(v).unwrap() };
        assert!(tolerates(&t(json!({"key": "k", "value": "v"})), &taint));
        assert!(tolerates(
            &t(json!({"key": "k", "operator": "Exists"})),
            &taint
        ));
        assert!(tolerates(&t(json!({"operator": "Exists"})), &taint));
        assert!(!tolerates(&t(json!({"key": "k", "value": "w"})), &taint));
        assert!(!tolerates(
            &t(json!({"key": "k", "operator": "Exists", "effect": "NoSchedule"})),
            &taint
        ));
    }

    #[test]
    fn pods_are_evicted_now_after_their_toleration_or_never() {
        let now = ts("2025-01-01T00:01:00Z");
        let n = Arc::new(node(json!({"metadata": {"name": "a"}, "spec": {"taints": [
            {"key": UNREACHABLE_TAINT, "effect": "NoSchedule"},
            {"key": UNREACHABLE_TAINT, "effect": "NoExecute", "timeAdded": "2025-01-01T00:00:50Z"}]}})));
        let with = |name: &str, tolerations: serde_json::Value| {
            pod(json!({"metadata": {"name": name},
                "spec": {"nodeName": "a", "containers": [], "tolerations": tolerations}}))
        };
        let pods = vec![
            with("intolerant", json!([])),
            with(
                "short",
                json!([{"key": UNREACHABLE_TAINT, "operator": "Exists",
                "effect": "NoExecute", "tolerationSeconds": 5}]),
            ),
            with(
                "long",
                json!([{"key": UNREACHABLE_TAINT, "operator": "Exists",
                "effect": "NoExecute", "tolerationSeconds": 300}]),
            ),
            with("forever", json!([{"operator": "Exists"}])),
            with(
                "min-wins",
                json!([{"operator": "Exists"},
                {"key": UNREACHABLE_TAINT, "operator": "Exists", "tolerationSeconds": 30}]),
            ),
            pod(
                json!({"metadata": {"name": "elsewhere"}, "spec": {"nodeName": "b", "containers": []}}),
            ),
            pod(
                json!({"metadata": {"name": "going", "deletionTimestamp": "2025-01-01T00:00:00Z"},
                "spec": {"nodeName": "a", "containers": []}}),
            ),
        ];
        let (due, next) = evictions(&pods, std::slice::from_ref(&n), &TaintClock::default(), now);
        let names: Vec<String> = due
            .iter()
            .map(|p| p.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names, ["intolerant", "short"]);
        assert_eq!(next, Some(Duration::from_secs(20)));
        let taints = n.spec.as_ref().unwrap().taints.clone().unwrap();
        assert_eq!(
            eviction(&pods[2], &taints, |_| None, now),
            Eviction::At(ts("2025-01-01T00:05:50Z"))
        );
        assert_eq!(eviction(&pods[3], &taints, |_| None, now), Eviction::Never);
        // A NoSchedule taint alone evicts nobody.
        assert_eq!(
            eviction(&pods[0], &taints[..1], |_| None, now),
            Eviction::Never
        );
    }

    #[test]
    fn toleration_seconds_of_an_undated_taint_run_from_when_it_was_first_seen() {
        let n = Arc::new(node(
            json!({"metadata": {"name": "n1"}, "spec": {"taints": [
            {"key": "maintenance", "value": "x", "effect": "NoExecute"}]}}),
        ));
        let p = pod(json!({"metadata": {"name": "p"}, "spec": {"nodeName": "n1",
            "containers": [],
            "tolerations": [{"key": "maintenance", "operator": "Exists",
                "effect": "NoExecute", "tolerationSeconds": 30}]}}));
        let pods = [p];
        let mut clock = TaintClock::default();
        let t0 = ts("2025-01-01T00:00:00Z");
        clock.observe(std::slice::from_ref(&n), t0);
        let later = |secs| t0 + jiff::SignedDuration::from_secs(secs);
        // Seen again 20 s later: still 10 s to go, not 30 from now.
        clock.observe(std::slice::from_ref(&n), later(20));
        let (due, next) = evictions(&pods, std::slice::from_ref(&n), &clock, later(20));
        assert!(due.is_empty());
        assert_eq!(next, Some(Duration::from_secs(10)));
        let (due, _) = evictions(&pods, std::slice::from_ref(&n), &clock, later(30));
        assert_eq!(due.len(), 1);
        // Taken off and put back: counted afresh.
        let bare = Arc::new(node(json!({"metadata": {"name": "n1"}, "spec": {}})));
        clock.observe(std::slice::from_ref(&bare), later(31));
        clock.observe(std::slice::from_ref(&n), later(40));
        let (due, next) = evictions(&pods, std::slice::from_ref(&n), &clock, later(41));
        assert!(due.is_empty());
        assert_eq!(next, Some(Duration::from_secs(29)));
    }
}
