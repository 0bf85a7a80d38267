//! Node-pressure eviction, as the kubelet's eviction manager does it
//! (pkg/kubelet/eviction): hard thresholds on eviction signals (`--eviction-hard`),
//! observed from the host behind [`NodeObserver`]; the node conditions they raise
//! (`MemoryPressure`, `DiskPressure`, `PIDPressure`, held for a transition period after
//! the signal recovers), and which pod goes first when a threshold is crossed: pods using
//! more than they requested, then the lowest priority, then the largest usage above the
//! request, so BestEffort pods go before Burstable ones over their requests and
//! Guaranteed pods last.
//!
//! Everything here but [`HostObserver`] and [`run`] is pure; the pod worker carries an
//! eviction out ([`crate::pod_worker::Worker::evict`]): it kills the pod and reports it
//! `Failed` with reason `Evicted`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;

/// How often signals are observed (the kubelet's `evictionMonitoringPeriod`).
pub const MONITORING_INTERVAL: Duration = Duration::from_secs(10);
/// How long a pressure condition stays True after its signal recovered
/// (`--eviction-pressure-transition-period`).
pub const PRESSURE_TRANSITION_PERIOD: Duration = Duration::from_secs(300);
/// The priority from which pods are critical and never evicted for node pressure
/// (`system-cluster-critical`'s value).
pub const CRITICAL_PRIORITY: i32 = 2_000_000_000;
/// The reason of an evicted pod's status and of its Event.
pub const REASON: &str = "Evicted";
/// The environment variable setting `--eviction-hard` (a kubelet inside `skiff server`).
pub const EVICTION_HARD_ENV: &str = "SKIFF_KUBELET_EVICTION_HARD";

/// An eviction signal (`memory.available` ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Signal {
    /// Memory capacity minus the node's working set.
    MemoryAvailable,
    /// Free space of the filesystem of the kubelet's root.
    NodeFsAvailable,
    /// Free space of the filesystem the images are on.
    ImageFsAvailable,
    /// The pid limit minus the processes running.
    PidAvailable,
}

impl Signal {
    /// Every signal, in the order pressure is relieved (memory first, as the kubelet).
    pub const ALL: [Signal; 4] = [
        Signal::MemoryAvailable,
        Signal::NodeFsAvailable,
        Signal::ImageFsAvailable,
        Signal::PidAvailable,
    ];

    /// The flag's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::MemoryAvailable => "memory.available",
            Signal::NodeFsAvailable => "nodefs.available",
            Signal::ImageFsAvailable => "imagefs.available",
            Signal::PidAvailable => "pid.available",
        }
    }

    /// The signal named `name`.
    pub fn parse(name: &str) -> Option<Signal> {
        Signal::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// The node condition it raises.
    pub fn condition(self) -> Condition {
        match self {
            Signal::MemoryAvailable => Condition::MemoryPressure,
            Signal::NodeFsAvailable | Signal::ImageFsAvailable => Condition::DiskPressure,
            Signal::PidAvailable => Condition::PidPressure,
        }
    }

    /// The resource it starves, as eviction messages name it.
    pub fn resource(self) -> &'static str {
        match self {
            Signal::MemoryAvailable => "memory",
            Signal::NodeFsAvailable | Signal::ImageFsAvailable => "ephemeral-storage",
            Signal::PidAvailable => "pids",
        }
    }
}

/// A node condition of pressure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Condition {
    /// `MemoryPressure`.
    MemoryPressure,
    /// `DiskPressure`.
    DiskPressure,
    /// `PIDPressure`.
    PidPressure,
}

impl Condition {
    /// All three, in the order the node lists them.
    pub const ALL: [Condition; 3] = [
        Condition::MemoryPressure,
        Condition::DiskPressure,
        Condition::PidPressure,
    ];

    /// The condition's type.
    pub fn type_(self) -> &'static str {
        match self {
            Condition::MemoryPressure => "MemoryPressure",
            Condition::DiskPressure => "DiskPressure",
            Condition::PidPressure => "PIDPressure",
        }
    }

    /// Reason and message of the condition when True and when False (the kubelet's).
    fn texts(self, under_pressure: bool) -> (&'static str, &'static str) {
        match (self, under_pressure) {
            (Condition::MemoryPressure, true) => (
                "KubeletHasInsufficientMemory",
                "kubelet has insufficient memory available",
            ),
            (Condition::MemoryPressure, false) => (
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
            ),
            (Condition::DiskPressure, true) => {
                ("KubeletHasDiskPressure", "kubelet has disk pressure")
            }
            (Condition::DiskPressure, false) => {
                ("KubeletHasNoDiskPressure", "kubelet has no disk pressure")
            }
            (Condition::PidPressure, true) => (
                "KubeletHasInsufficientPID",
                "kubelet has insufficient PID available",
            ),
            (Condition::PidPressure, false) => (
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available",
            ),
        }
    }

    /// The node condition as the kubelet posts it (`now`: RFC 3339).
    pub fn to_json(self, under_pressure: bool, now: &str) -> serde_json::Value {
        let (reason, message) = self.texts(under_pressure);
        serde_json::json!({"type": self.type_(),
            "status": if under_pressure { "True" } else { "False" },
            "reason": reason, "message": message,
            "lastHeartbeatTime": now, "lastTransitionTime": now})
    }
}

/// A threshold's value: an absolute amount (bytes, pids) or a share of the capacity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Amount {
    /// Bytes (memory, filesystems) or a number of pids.
    Quantity(u64),
    /// Percent of the capacity.
    Percentage(f64),
}

/// `signal<value`: crossed when less than the value is available.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Threshold {
    /// What is observed.
    pub signal: Signal,
    /// The least that must stay available.
    pub value: Amount,
}

impl Threshold {
    /// The threshold as an amount, for a signal of `capacity`.
    pub fn quantity(&self, capacity: u64) -> u64 {
        match self.value {
            Amount::Quantity(q) => q,
            Amount::Percentage(p) => (capacity as f64 * p / 100.0).round() as u64,
        }
    }
}

/// A malformed `--eviction-hard`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// A threshold is not `signal<value`.
    #[error("invalid eviction threshold {0:?}: want SIGNAL<QUANTITY or SIGNAL<PERCENT%")]
    Syntax(String),
    /// The signal is not one the kubelet knows.
    #[error("unknown eviction signal {0:?}: want memory.available, nodefs.available, imagefs.available or pid.available")]
    Signal(String),
    /// The value is not a quantity or a percentage.
    #[error("invalid eviction threshold value {0:?}")]
    Value(String),
}

/// Parses `--eviction-hard` (`memory.available<100Mi,nodefs.available<10%`); as in the
/// kubelet, the flag replaces the defaults (`""` turns eviction off).
pub fn parse_thresholds(text: &str) -> Result<Vec<Threshold>, Error> {
    let mut out = Vec::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, value) = item
            .split_once('<')
            .ok_or_else(|| Error::Syntax(item.to_string()))?;
        let signal = Signal::parse(name.trim()).ok_or_else(|| Error::Signal(name.to_string()))?;
        let value = value.trim();
        let amount = match value.strip_suffix('%') {
            Some(p) => p
                .parse::<f64>()
                .ok()
                .filter(|p| (0.0..=100.0).contains(p))
                .map(Amount::Percentage),
            None => skiff_quantity::parse(value)
                .filter(|q| *q >= 0.0)
                .map(|q| Amount::Quantity(q.ceil() as u64)),
        }
        .ok_or_else(|| Error::Value(value.to_string()))?;
        out.retain(|t: &Threshold| t.signal != signal);
        out.push(Threshold {
            signal,
            value: amount,
        });
    }
    Ok(out)
}

/// The kubelet's default hard thresholds on Linux.
pub fn default_thresholds() -> Vec<Threshold> {
    parse_thresholds("memory.available<100Mi,nodefs.available<10%,imagefs.available<15%")
        .expect("valid defaults")
}

/// What is available of a signal's resource, and its capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Observation {
    /// Available now.
    pub available: u64,
    /// The whole.
    pub capacity: u64,
}

/// The signals observed at one time.
pub type Observations = BTreeMap<Signal, Observation>;

/// Where the signals come from, behind a trait so that the logic is tested without a host.
pub trait NodeObserver: Send + Sync {
    /// The current value of every signal it can observe.
    fn observe(&self) -> Observations;
}

/// The host: memory from `/proc/meminfo` (capacity minus working set, as the kubelet
/// computes `memory.available`), filesystems by `statvfs`, pids from `pid_max` and `/proc`.
#[derive(Debug, Clone)]
pub struct HostObserver {
    /// A path on the kubelet's filesystem (`nodefs`).
    pub nodefs: PathBuf,
    /// A path on the images' filesystem (`imagefs`).
    pub imagefs: PathBuf,
}

impl NodeObserver for HostObserver {
    fn observe(&self) -> Observations {
        let mut out = Observations::new();
        if let Ok(meminfo) = std::fs::read_to_string("/proc/meminfo") {
            let total = crate::node::parse_mem_total(&meminfo).unwrap_or(0) * 1024;
            let working_set = crate::stats::working_set_from_meminfo(&meminfo).unwrap_or(0);
            out.insert(
                Signal::MemoryAvailable,
                Observation {
                    available: total.saturating_sub(working_set),
                    capacity: total,
                },
            );
        }
        for (signal, path) in [
            (Signal::NodeFsAvailable, &self.nodefs),
            (Signal::ImageFsAvailable, &self.imagefs),
        ] {
            if let Some(o) = filesystem(path) {
                out.insert(signal, o);
            }
        }
        let pid_max = std::fs::read_to_string("/proc/sys/kernel/pid_max")
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok());
        if let Some(pid_max) = pid_max {
            let running = std::fs::read_dir("/proc")
                .map(|d| {
                    d.flatten()
                        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
                        .count() as u64
                })
                .unwrap_or(0);
            out.insert(
                Signal::PidAvailable,
                Observation {
                    available: pid_max.saturating_sub(running),
                    capacity: pid_max,
                },
            );
        }
        out
    }
}

/// Free (for unprivileged users) and total bytes of the filesystem holding `path`.
fn filesystem(path: &std::path::Path) -> Option<Observation> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: statvfs is plain old data; all-zero bytes are a valid value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `st` a valid out-pointer.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    let block = st.f_frsize as u64;
    Some(Observation {
        available: st.f_bavail as u64 * block,
        capacity: st.f_blocks as u64 * block,
    })
}

/// The thresholds crossed by `observed`, with the observation that crossed each; a
/// signal that was not observed crosses nothing.
pub fn crossed(thresholds: &[Threshold], observed: &Observations) -> Vec<(Threshold, Observation)> {
    let mut out: Vec<(Threshold, Observation)> = thresholds
        .iter()
        .filter_map(|t| {
            let o = observed.get(&t.signal)?;
            (o.available < t.quantity(o.capacity)).then_some((*t, *o))
        })
        .collect();
    out.sort_by_key(|(t, _)| t.signal);
    out
}

/// The pressure conditions, each held True for a transition period after its last
/// crossing (so a node does not flap between pressure and none).
#[derive(Debug, Default)]
pub struct Pressure {
    last_crossed: Mutex<BTreeMap<Condition, Instant>>,
    period: Duration,
}

impl Pressure {
    /// Conditions held `period` after their signals recover.
    pub fn new(period: Duration) -> Pressure {
        Pressure {
            last_crossed: Mutex::new(BTreeMap::new()),
            period,
        }
    }

    /// Records the thresholds crossed at `now`; returns the conditions now True.
    pub fn update(
        &self,
        crossed: &[(Threshold, Observation)],
        now: Instant,
    ) -> BTreeSet<Condition> {
        let mut last = self.last_crossed.lock().unwrap();
        for (t, _) in crossed {
            last.insert(t.signal.condition(), now);
        }
        last.retain(|_, at| now.saturating_duration_since(*at) < self.period);
        last.keys().copied().collect()
    }

    /// The conditions True now.
    pub fn current(&self) -> BTreeSet<Condition> {
        self.last_crossed.lock().unwrap().keys().copied().collect()
    }

    /// The three node conditions as the kubelet posts them.
    pub fn conditions_json(&self, now: &str) -> Vec<serde_json::Value> {
        let current = self.current();
        Condition::ALL
            .iter()
            .map(|c| c.to_json(current.contains(c), now))
            .collect()
    }
}

/// A pod that may be evicted, with what it uses of the starved resource.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// The pod.
    pub pod: Pod,
    /// Its usage of the resource (bytes or pids).
    pub usage: u64,
}

impl Candidate {
    fn priority(&self) -> i32 {
        self.pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
    }
}

/// What a pod requests of the resource `signal` starves (the sum of its containers').
pub fn request(pod: &Pod, signal: Signal) -> u64 {
    let resource = signal.resource();
    pod.spec
        .iter()
        .flat_map(|s| &s.containers)
        .filter_map(|c| c.resources.as_ref()?.requests.as_ref()?.get(resource))
        .map(|q| skiff_quantity::value(&q.0).max(0) as u64)
        .sum()
}

/// Whether the pod must never be evicted for node pressure: static and mirror pods and
/// pods of a critical priority (`IsCriticalPod`).
pub fn is_critical(pod: &Pod) -> bool {
    let static_pod = pod.metadata.annotations.as_ref().is_some_and(|a| {
        a.contains_key("kubernetes.io/config.mirror")
            || a.get("kubernetes.io/config.source")
                .is_some_and(|s| s != "api")
    });
    let priority = pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0);
    static_pod || priority >= CRITICAL_PRIORITY
}

/// Whether a pod the kubelet has not started yet may start under the node's pressure
/// `conditions` (the eviction manager's admit handler): critical pods always; under
/// memory pressure alone, pods that are not BestEffort or that tolerate the
/// memory-pressure taint; under any other pressure, no other pod. The error is the
/// message the rejected pod fails with (reason `Evicted`).
pub fn admit(pod: &Pod, conditions: &BTreeSet<Condition>) -> Result<(), String> {
    if conditions.is_empty() || is_critical(pod) {
        return Ok(());
    }
    if conditions.len() == 1 && conditions.contains(&Condition::MemoryPressure) {
        let tolerates = pod
            .spec
            .iter()
            .flat_map(|s| s.tolerations.iter().flatten())
            .any(|t| {
                let key = t.key.as_deref().unwrap_or("");
                let effect = t.effect.as_deref().unwrap_or("");
                let op = t.operator.as_deref().unwrap_or("Equal");
                (effect.is_empty() || effect == "NoSchedule")
                    && ((op == "Exists" && (key.is_empty() || key == MEMORY_PRESSURE_TAINT))
                        || (op == "Equal"
                            && key == MEMORY_PRESSURE_TAINT
                            && t.value.as_deref().unwrap_or("").is_empty()))
            });
        if crate::qos::of_pod(pod) != crate::qos::QosClass::BestEffort || tolerates {
            return Ok(());
        }
    }
    let types: Vec<&str> = conditions.iter().map(|c| c.type_()).collect();
    Err(format!(
        "The node was low on resource: [{}]. ",
        types.join(" ")
    ))
}

/// The taint of a node under memory pressure.
const MEMORY_PRESSURE_TAINT: &str = "node.kubernetes.io/memory-pressure";

/// Orders `candidates` first-to-evict for `signal`, as the kubelet's rankers do: for
/// memory and disk, pods whose usage exceeds their requests first, then lower priority,
/// then more usage above the request; for pids, lower priority then more processes.
pub fn rank(signal: Signal, candidates: &mut [Candidate]) {
    candidates.sort_by(|a, b| {
        let (ra, rb) = (request(&a.pod, signal), request(&b.pod, signal));
        let over = |c: &Candidate, r: u64| c.usage > r;
        let above = |c: &Candidate, r: u64| c.usage as i128 - r as i128;
        match signal {
            Signal::PidAvailable => a.priority().cmp(&b.priority()).then(b.usage.cmp(&a.usage)),
            _ => over(b, rb)
                .cmp(&over(a, ra))
                .then(a.priority().cmp(&b.priority()))
                .then(above(b, rb).cmp(&above(a, ra))),
        }
    });
}

/// A quantity in the largest binary unit that divides it (as `resource.Quantity` prints
/// bytes), a plain number for pids.
pub fn format_amount(signal: Signal, amount: u64) -> String {
    if signal == Signal::PidAvailable {
        return amount.to_string();
    }
    for (unit, size) in [
        ("Ei", 1u64 << 60),
        ("Pi", 1 << 50),
        ("Ti", 1 << 40),
        ("Gi", 1 << 30),
        ("Mi", 1 << 20),
        ("Ki", 1 << 10),
    ] {
        if amount >= size && amount % size == 0 {
            return format!("{}{unit}", amount / size);
        }
    }
    amount.to_string()
}

/// The message of an evicted pod's status and Event (the kubelet's wording).
pub fn message(threshold: &Threshold, observed: &Observation, victim: &Candidate) -> String {
    let signal = threshold.signal;
    let resource = signal.resource();
    let mut text = format!(
        "The node was low on resource: {resource}. Threshold quantity: {}, available: {}. ",
        format_amount(signal, threshold.quantity(observed.capacity)),
        format_amount(signal, observed.available)
    );
    if signal != Signal::PidAvailable {
        let request = request(&victim.pod, signal);
        if let Some(c) = victim.pod.spec.as_ref().and_then(|s| s.containers.first()) {
            text.push_str(&format!(
                "Container {} was using {}, request is {}, has larger consumption of {resource}. ",
                c.name,
                format_amount(signal, victim.usage),
                format_amount(signal, request)
            ));
        }
    }
    text
}

/// What the eviction manager needs from the rest of the kubelet.
pub struct Manager {
    /// The hard thresholds.
    pub thresholds: Vec<Threshold>,
    /// The signals' source.
    pub observer: Arc<dyn NodeObserver>,
    /// The conditions posted with the node's status.
    pub pressure: Arc<Pressure>,
}

impl Manager {
    /// One monitoring pass over `pods` (this node's): which conditions hold, and the pod
    /// to evict with its message, if a threshold is crossed and a pod may go. `usage`
    /// tells a pod's use of a signal's resource.
    pub fn synchronize(
        &self,
        pods: &[Pod],
        usage: &dyn Fn(&Pod, Signal) -> u64,
        now: Instant,
    ) -> (BTreeSet<Condition>, Option<(Pod, String)>) {
        let observed = self.observer.observe();
        let crossed = crossed(&self.thresholds, &observed);
        let conditions = self.pressure.update(&crossed, now);
        let Some((threshold, observation)) = crossed.first() else {
            return (conditions, None);
        };
        let mut candidates: Vec<Candidate> = pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none() && !is_critical(p))
            .filter(|p| {
                let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
                !matches!(phase, Some("Succeeded" | "Failed"))
            })
            .map(|p| Candidate {
                pod: p.clone(),
                usage: usage(p, threshold.signal),
            })
            .collect();
        rank(threshold.signal, &mut candidates);
        let victim = candidates.into_iter().next().map(|c| {
            let text = message(threshold, observation, &c);
            (c.pod, text)
        });
        (conditions, victim)
    }
}

/// Runs the eviction manager every [`MONITORING_INTERVAL`]: posts the pressure
/// conditions when they change and evicts one pod per pass while a threshold is crossed.
pub async fn run(manager: Manager, ctx: Arc<crate::pod_worker::Ctx>, node: String) {
    use kube::api::{ListParams, Patch, PatchParams};
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(ctx.client.clone());
    let pods: kube::Api<Pod> = kube::Api::all(ctx.client.clone());
    let mut posted: Option<BTreeSet<Condition>> = None;
    let mut tick = tokio::time::interval(MONITORING_INTERVAL);
    loop {
        tick.tick().await;
        let list = match pods
            .list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
            .await
        {
            Ok(l) => l.items,
            Err(e) => {
                tracing::warn!("eviction manager: listing the node's pods: {e}");
                continue;
            }
        };
        let worker = ctx.worker.clone();
        let usage = move |p: &Pod, s: Signal| worker.usage_of(p, s);
        let (conditions, victim) = manager.synchronize(&list, &usage, Instant::now());
        if posted.as_ref() != Some(&conditions) {
            let now = jiff::Timestamp::now()
                .strftime("%Y-%m-%dT%H:%M:%SZ")
                .to_string();
            let patch = serde_json::json!({"status": {"conditions": manager.pressure.conditions_json(&now)}});
            match nodes
                .patch_status(&node, &PatchParams::default(), &Patch::Strategic(&patch))
                .await
            {
                Ok(_) => posted = Some(conditions),
                Err(e) => tracing::warn!("eviction manager: posting node conditions: {e}"),
            }
        }
        if let Some((pod, message)) = victim {
            tracing::info!(pod = ?pod.metadata.name, "evicting: {message}");
            let worker = ctx.worker.clone();
            let done = tokio::task::spawn_blocking(move || worker.evict(&pod, &message)).await;
            match done {
                Ok(Err(e)) => tracing::warn!("eviction manager: evicting a pod: {e}"),
                Err(e) => tracing::warn!("eviction manager: {e}"),
                Ok(Ok(())) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, priority: i32, requests: Option<&str>, limits: Option<&str>) -> Pod {
        let mut resources = serde_json::json!({});
        if let Some(r) = requests {
            resources["requests"] = serde_json::json!({"memory": r, "cpu": "100m"});
        }
        if let Some(l) = limits {
            resources["limits"] = serde_json::json!({"memory": l, "cpu": "100m"});
        }
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "default", "uid": name},
            "spec": {"priority": priority, "containers": [{"name": "app", "image": "busybox", "resources": resources}]},
        }))
        .unwrap()
    }

    fn names(c: &[Candidate]) -> Vec<String> {
        c.iter()
            .map(|c| c.pod.metadata.name.clone().unwrap())
            .collect()
    }

    const MI: u64 = 1 << 20;

    #[test]
    fn thresholds_parse_quantities_and_percentages() {
        let t = parse_thresholds("memory.available<1000Ti, nodefs.available<10%,pid.available<5")
            .unwrap();
        assert_eq!(t[0].signal, Signal::MemoryAvailable);
        assert_eq!(t[0].value, Amount::Quantity(1000 << 40));
        assert_eq!(t[1].quantity(2000), 200);
        assert_eq!(t[2].value, Amount::Quantity(5));
        assert_eq!(
            parse_thresholds("memory.free<1Gi"),
            Err(Error::Signal("memory.free".into()))
        );
        assert_eq!(
            parse_thresholds("memory.available>1Gi"),
            Err(Error::Syntax("memory.available>1Gi".into()))
        );
        assert_eq!(
            parse_thresholds("nodefs.available<120%"),
            Err(Error::Value("120%".into()))
        );
        assert!(parse_thresholds("").unwrap().is_empty());
        let d = default_thresholds();
        assert_eq!(d[0].value, Amount::Quantity(100 * MI));
        assert_eq!(d[2].value, Amount::Percentage(15.0));
    }

    #[test]
    fn a_threshold_is_crossed_when_less_is_available() {
        let t = parse_thresholds("memory.available<100Mi,nodefs.available<10%").unwrap();
        let mut obs = Observations::new();
        obs.insert(
            Signal::MemoryAvailable,
            Observation {
                available: 100 * MI,
                capacity: 1000 * MI,
            },
        );
        obs.insert(
            Signal::NodeFsAvailable,
            Observation {
                available: 99,
                capacity: 1000,
            },
        );
        let c = crossed(&t, &obs);
        assert_eq!(c.len(), 1, "exactly 100Mi available is not below 100Mi");
        assert_eq!(c[0].0.signal, Signal::NodeFsAvailable);
        assert_eq!(c[0].0.signal.condition().type_(), "DiskPressure");
        // Not observed: nothing crossed.
        assert!(crossed(&parse_thresholds("pid.available<10").unwrap(), &obs).is_empty());
    }

    #[test]
    fn pressure_holds_for_the_transition_period() {
        let p = Pressure::new(Duration::from_secs(300));
        let t0 = Instant::now();
        let t = parse_thresholds("memory.available<1Gi").unwrap();
        let hit = [(t[0], Observation::default())];
        assert_eq!(
            p.update(&hit, t0),
            BTreeSet::from([Condition::MemoryPressure])
        );
        assert_eq!(
            p.update(&[], t0 + Duration::from_secs(299)),
            BTreeSet::from([Condition::MemoryPressure])
        );
        assert!(p.update(&[], t0 + Duration::from_secs(300)).is_empty());
        let json = p.conditions_json("now");
        assert_eq!(json[0]["type"], "MemoryPressure");
        assert_eq!(json[0]["status"], "False");
        assert_eq!(json[2]["reason"], "KubeletHasSufficientPID");
    }

    #[test]
    fn best_effort_goes_first_then_burstable_over_request_then_guaranteed() {
        let guaranteed = pod("guaranteed", 0, Some("64Mi"), Some("64Mi"));
        let burstable_under = pod("burstable-under", 0, Some("64Mi"), None);
        let burstable_over = pod("burstable-over", 0, Some("16Mi"), None);
        let best_effort = pod("best-effort", 0, None, None);
        let mut c = vec![
            Candidate {
                pod: guaranteed,
                usage: 60 * MI,
            },
            Candidate {
                pod: burstable_under,
                usage: 10 * MI,
            },
            Candidate {
                pod: burstable_over,
                usage: 20 * MI,
            },
            Candidate {
                pod: best_effort,
                usage: MI,
            },
        ];
        rank(Signal::MemoryAvailable, &mut c);
        assert_eq!(
            names(&c),
            [
                "burstable-over",
                "best-effort",
                "guaranteed",
                "burstable-under"
            ]
        );
        // A BestEffort pod using nothing still ranks before a Guaranteed one.
        let mut c = vec![
            Candidate {
                pod: pod("g", 0, Some("64Mi"), Some("64Mi")),
                usage: 0,
            },
            Candidate {
                pod: pod("be", 0, None, None),
                usage: 0,
            },
        ];
        rank(Signal::MemoryAvailable, &mut c);
        assert_eq!(names(&c), ["be", "g"]);
    }

    #[test]
    fn under_pressure_only_some_pods_are_admitted() {
        let memory = BTreeSet::from([Condition::MemoryPressure]);
        let best_effort = pod("be", 0, None, None);
        assert!(admit(&best_effort, &BTreeSet::new()).is_ok());
        assert_eq!(
            admit(&best_effort, &memory),
            Err("The node was low on resource: [MemoryPressure]. ".into())
        );
        let mut tolerating = best_effort.clone();
        tolerating.spec.as_mut().unwrap().tolerations = Some(vec![serde_json::from_value(
            serde_json::json!({"key": "node.kubernetes.io/memory-pressure", "operator": "Exists", "effect": "NoSchedule"}),
        )
        .unwrap()]);
        assert!(admit(&tolerating, &memory).is_ok());
        let guaranteed = pod("g", 0, Some("64Mi"), Some("64Mi"));
        assert!(admit(&guaranteed, &memory).is_ok());
        let both = BTreeSet::from([Condition::MemoryPressure, Condition::DiskPressure]);
        assert_eq!(
            admit(&guaranteed, &both),
            Err("The node was low on resource: [MemoryPressure DiskPressure]. ".into())
        );
        assert!(admit(&pod("c", CRITICAL_PRIORITY, None, None), &both).is_ok());
    }

    #[test]
    fn priority_decides_among_pods_over_their_requests() {
        let mut c = vec![
            Candidate {
                pod: pod("high", 1000, None, None),
                usage: 50 * MI,
            },
            Candidate {
                pod: pod("low", -10, None, None),
                usage: 5 * MI,
            },
        ];
        rank(Signal::MemoryAvailable, &mut c);
        assert_eq!(names(&c), ["low", "high"]);
        rank(Signal::PidAvailable, &mut c);
        assert_eq!(names(&c), ["low", "high"]);
        c[1].pod.spec.as_mut().unwrap().priority = Some(-10);
        rank(Signal::PidAvailable, &mut c);
        assert_eq!(names(&c), ["high", "low"], "then more processes");
    }

    struct Fixed(Observations);
    impl NodeObserver for Fixed {
        fn observe(&self) -> Observations {
            self.0.clone()
        }
    }

    #[test]
    fn a_pass_evicts_the_first_ranked_pod_with_the_kubelets_message() {
        let mut obs = Observations::new();
        obs.insert(
            Signal::MemoryAvailable,
            Observation {
                available: 512 * MI,
                capacity: 1024 * MI,
            },
        );
        let manager = Manager {
            thresholds: parse_thresholds("memory.available<1Gi").unwrap(),
            observer: Arc::new(Fixed(obs)),
            pressure: Arc::new(Pressure::new(PRESSURE_TRANSITION_PERIOD)),
        };
        let mut critical = pod("critical", CRITICAL_PRIORITY, None, None);
        critical.metadata.name = Some("critical".into());
        let mut done = pod("done", 0, None, None);
        done.status = Some(serde_json::from_value(serde_json::json!({"phase": "Failed"})).unwrap());
        let pods = [
            pod("guaranteed", 0, Some("64Mi"), Some("64Mi")),
            pod("best-effort", 0, None, None),
            critical,
            done,
        ];
        let usage = |p: &Pod, _: Signal| match p.metadata.name.as_deref() {
            Some("best-effort") => 2 * MI,
            // Within its request (a Guaranteed pod cannot use more than it requests).
            _ => 60 * MI,
        };
        let (conditions, victim) = manager.synchronize(&pods, &usage, Instant::now());
        assert_eq!(conditions, BTreeSet::from([Condition::MemoryPressure]));
        let (pod, message) = victim.unwrap();
        assert_eq!(pod.metadata.name.as_deref(), Some("best-effort"));
        assert_eq!(
            message,
            "The node was low on resource: memory. Threshold quantity: 1Gi, available: 512Mi. Container app was using 2Mi, request is 0, has larger consumption of memory. "
        );
        // Nothing crossed: no victim, the condition holds.
        let manager = Manager {
            thresholds: Vec::new(),
            ..manager
        };
        let (conditions, victim) = manager.synchronize(&pods, &usage, Instant::now());
        assert_eq!(conditions, BTreeSet::from([Condition::MemoryPressure]));
        assert!(victim.is_none());
    }
}
