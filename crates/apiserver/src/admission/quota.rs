//! ResourceQuota: refuses writes that would take a namespace over its quota, and keeps every
//! quota's `status.hard`/`status.used` current.
//!
//! Usage is level-triggered: each admission lists the namespace's objects and sums what
//! they use (terminal pods and pods past their deletion grace do not count), instead of
//! trusting counters. What an admitted write is about to store is not in the store yet, so
//! admission records it as a *pending* write in a per-server ledger; later computations
//! overlay pending writes on the listed objects until the store shows the write (or, if the
//! write failed, for at most [`PENDING_FOR`]). Admissions of one namespace are serialised
//! by a mutex held from listing to recording, so two concurrent creates cannot both slip
//! under a limit. A failed write may overcharge for a few seconds, much as kube-apiserver
//! overcharges `status.used` until its quota controller recalculates.
//!
//! [`run_controller`] writes `status` of every quota from the same computation: on every
//! change in a namespace with quotas (from a watch of the whole store) and every few
//! seconds, as the replenishment and resync loops of kube-controller-manager's quota
//! controller do.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{json, Value};

use super::limitrange::{add_into, effective, resource_list, ResourceList};
use super::{list_all, Attributes, Operation};
use crate::handlers::Api;
use crate::kinds::{array_at, str_at, REGISTRY};
use crate::quantity::Quantity;
use crate::registry::ResourceDef;
use crate::status::ApiResult;
use crate::storage::{Storage, REGISTRY_ROOT};

/// How long a pending write counts when the store never shows it (the write failed).
const PENDING_FOR: Duration = Duration::from_secs(10);

/// How often the controller recomputes every quota even without changes (pods pass their
/// deletion grace, pending writes expire).
const RESYNC: Duration = Duration::from_secs(5);

/// Resources whose quota requires every container to state them (`validationSet`).
const MUST_SPECIFY: &[&str] = &[
    "cpu",
    "memory",
    "requests.cpu",
    "requests.memory",
    "limits.cpu",
    "limits.memory",
];

/// Checks the namespace's quotas for a write and records it as pending when admitted.
pub(super) async fn admit(api: &Api, attrs: &Attributes<'_>, obj: &Value) -> ApiResult<()> {
    if !attrs.subresource.is_empty() || attrs.namespace.is_empty() {
        return Ok(());
    }
    let evaluated = match attrs.operation {
        Operation::Create => true,
        // Only these change usage after creation (service types, claim sizes); a pod's
        // resources change only through its `resize` subresource, which skiff lacks.
        Operation::Update => matches!(
            (attrs.def.group, attrs.def.kind),
            ("", "Service" | "PersistentVolumeClaim")
        ),
        Operation::Delete => false,
    };
    let Some(quota_def) = quota_def() else {
        return Ok(());
    };
    if !evaluated {
        return Ok(());
    }
    // Most namespaces have no quota: the mirror tells without a store read. Where quotas
    // exist, their usage is read from the store under the namespace's lock below, since
    // admission itself keeps charging it.
    if api
        .reflector()
        .list_in(quota_def, Some(attrs.namespace))
        .is_empty()
    {
        return Ok(());
    }
    let storage = api.storage();
    let ledger = Ledger::of(storage);
    let lock = ledger.namespace(attrs.namespace);
    let mut pending = lock.lock().await;
    let quotas = list_all(storage, quota_def, attrs.namespace).await?;
    let now = jiff::Timestamp::now();
    let matching: Vec<&Value> = quotas
        .iter()
        .filter(|q| tracks_any(attrs.def, &hard_of(q)) && scopes_match(q, attrs.def, obj))
        .collect();
    if matching.is_empty() {
        return Ok(());
    }
    let mut delta = usage(attrs.def, obj, now);
    // Charge only the growth of an update (SubtractWithNonNegativeResult).
    if let Some(old) = attrs.old {
        let before = usage(attrs.def, old, now);
        for (k, v) in delta.iter_mut() {
            if let Some(b) = before.get(k) {
                *v = v.sub(b);
                if v.is_negative() {
                    *v = Quantity::ZERO;
                }
            }
        }
    }
    delta.retain(|_, v| !v.is_zero());
    let mut snapshot = Snapshot::new(storage, attrs.namespace, &mut pending, now);
    for quota in matching {
        let name = str_at(quota, "/metadata/name");
        let hard = hard_of(quota);
        if attrs.def.group.is_empty() && attrs.def.kind == "Pod" {
            if let Some(missing) = missing_requirements(obj, &hard) {
                return Err(super::forbidden(
                    attrs,
                    obj,
                    &format!("failed quota: {name}: {missing}"),
                ));
            }
        }
        let requested: ResourceList = delta
            .iter()
            .filter(|(k, _)| hard.contains_key(*k))
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        if requested.is_empty() {
            continue;
        }
        let used = snapshot.used(quota).await?;
        let exceeded: Vec<&String> = requested
            .iter()
            .filter(|(k, v)| {
                let now_used = used.get(*k).copied().unwrap_or(Quantity::ZERO);
                now_used.add(v) > hard[*k]
            })
            .map(|(k, _)| k)
            .collect();
        if !exceeded.is_empty() {
            let show = |list: &ResourceList| {
                exceeded
                    .iter()
                    .map(|k| {
                        let q = list.get(*k).copied().unwrap_or(Quantity::ZERO);
                        format!("{k}={q}")
                    })
                    .collect::<Vec<_>>()
                    .join(",")
            };
            return Err(super::forbidden(
                attrs,
                obj,
                &format!(
                    "exceeded quota: {name}, requested: {}, used: {}, limited: {}",
                    show(&requested),
                    show(&used),
                    show(&hard)
                ),
            ));
        }
    }
    if !attrs.dry_run && !delta.is_empty() {
        pending.push(Pending {
            prefix: attrs.def.storage_prefix,
            name: str_at(obj, "/metadata/name").to_owned(),
            replaces: attrs
                .old
                .map(|old| str_at(old, "/metadata/resourceVersion").to_owned()),
            obj: obj.clone(),
            until: Instant::now() + PENDING_FOR,
        });
    }
    Ok(())
}

fn quota_def() -> Option<&'static ResourceDef> {
    REGISTRY.by_kind("", "v1", "ResourceQuota")
}

/// A quota's `spec.hard`.
fn hard_of(quota: &Value) -> ResourceList {
    resource_list(quota.pointer("/spec/hard"))
}

/// A write admitted but maybe not stored yet.
#[derive(Debug)]
struct Pending {
    /// The storage prefix of its resource (shared by every version).
    prefix: &'static str,
    name: String,
    /// The resourceVersion it replaces (updates); `None` for a creation.
    replaces: Option<String>,
    obj: Value,
    until: Instant,
}

/// The pending writes of one server, per namespace, each list behind the mutex that
/// serialises the namespace's quota admissions.
#[derive(Debug, Default)]
struct Ledger {
    namespaces: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Vec<Pending>>>>>,
}

/// Ledgers by the identity of the store they count (one per server in a process).
static LEDGERS: LazyLock<Mutex<HashMap<usize, Arc<Ledger>>>> = LazyLock::new(Default::default);

impl Ledger {
    fn of(storage: &Storage) -> Arc<Ledger> {
        let id = Arc::as_ptr(storage.store()) as *const () as usize;
        let mut ledgers = LEDGERS.lock().unwrap_or_else(|e| e.into_inner());
        ledgers.entry(id).or_default().clone()
    }

    fn namespace(&self, namespace: &str) -> Arc<tokio::sync::Mutex<Vec<Pending>>> {
        let mut namespaces = self.namespaces.lock().unwrap_or_else(|e| e.into_inner());
        namespaces.entry(namespace.to_owned()).or_default().clone()
    }
}

/// The objects of one namespace as a quota sees them: the store overlaid with pending
/// writes, listed once per resource.
struct Snapshot<'a> {
    storage: &'a Storage,
    namespace: &'a str,
    pending: &'a mut Vec<Pending>,
    now: jiff::Timestamp,
    objects: HashMap<&'static str, Vec<Value>>,
}

impl<'a> Snapshot<'a> {
    fn new(
        storage: &'a Storage,
        namespace: &'a str,
        pending: &'a mut Vec<Pending>,
        now: jiff::Timestamp,
    ) -> Snapshot<'a> {
        let moment = Instant::now();
        pending.retain(|p| p.until > moment);
        Snapshot {
            storage,
            namespace,
            pending,
            now,
            objects: HashMap::new(),
        }
    }

    async fn objects(&mut self, def: &'static ResourceDef) -> ApiResult<&[Value]> {
        if !self.objects.contains_key(def.storage_prefix) {
            let mut items = list_all(self.storage, def, self.namespace).await?;
            self.pending.retain(|p| {
                if p.prefix != def.storage_prefix {
                    return true;
                }
                let stored = items
                    .iter()
                    .position(|o| str_at(o, "/metadata/name") == p.name);
                match (&p.replaces, stored) {
                    // A creation the store shows (or a name taken meanwhile): done.
                    (None, Some(_)) => false,
                    (None, None) => {
                        items.push(p.obj.clone());
                        true
                    }
                    (Some(rv), Some(i)) if str_at(&items[i], "/metadata/resourceVersion") == rv => {
                        items[i] = p.obj.clone();
                        true
                    }
                    // Updated (by this write or another) or deleted since: done.
                    (Some(_), _) => false,
                }
            });
            self.objects.insert(def.storage_prefix, items);
        }
        Ok(&self.objects[def.storage_prefix])
    }

    /// What a quota's objects use, for each of its hard resources (zero when unused).
    async fn used(&mut self, quota: &Value) -> ApiResult<ResourceList> {
        let hard = hard_of(quota);
        let mut used: ResourceList = hard.keys().map(|k| (k.clone(), Quantity::ZERO)).collect();
        for def in counted_defs(&hard) {
            let now = self.now;
            let objects = self.objects(def).await?;
            let mut total = ResourceList::new();
            for obj in objects.iter().filter(|o| scopes_match(quota, def, o)) {
                let mut u = usage(def, obj, now);
                u.retain(|k, _| hard.contains_key(k));
                add_into(&mut total, &u);
            }
            for (k, v) in total {
                let sum = used.get(&k).map_or(v, |have| have.add(&v));
                used.insert(k, sum);
            }
        }
        Ok(used)
    }
}

/// The resources whose objects a quota's hard keys count.
fn counted_defs(hard: &ResourceList) -> Vec<&'static ResourceDef> {
    let mut defs: Vec<&'static ResourceDef> = Vec::new();
    let mut seen = HashSet::new();
    let mut candidates: Vec<&'static ResourceDef> = Vec::new();
    for kind in ["Pod", "Service", "PersistentVolumeClaim"] {
        candidates.extend(REGISTRY.by_kind("", "v1", kind));
    }
    for key in hard.keys() {
        if let Some(res) = key.strip_prefix("count/") {
            let (plural, group) = res.split_once('.').unwrap_or((res, ""));
            candidates.extend(
                REGISTRY
                    .all()
                    .into_iter()
                    .find(|d| d.plural == plural && d.group == group),
            );
        } else if let Some(kind) = legacy_count_kind(key) {
            candidates.extend(REGISTRY.by_kind("", "v1", kind));
        }
    }
    for def in candidates {
        if tracks_any(def, hard) && seen.insert(def.storage_prefix) {
            defs.push(def);
        }
    }
    defs
}

/// The kind counted by a core object-count resource name (`configmaps`, ...).
fn legacy_count_kind(key: &str) -> Option<&'static str> {
    Some(match key {
        "pods" => "Pod",
        "services" => "Service",
        "persistentvolumeclaims" => "PersistentVolumeClaim",
        "configmaps" => "ConfigMap",
        "secrets" => "Secret",
        "replicationcontrollers" => "ReplicationController",
        "resourcequotas" => "ResourceQuota",
        _ => return None,
    })
}

/// The count resource of a resource: `count/pods`, `count/deployments.apps`.
fn count_key(def: &ResourceDef) -> String {
    if def.group.is_empty() {
        format!("count/{}", def.plural)
    } else {
        format!("count/{}.{}", def.plural, def.group)
    }
}

/// Whether objects of `def` are counted by any of `hard`'s resources.
fn tracks_any(def: &ResourceDef, hard: &ResourceList) -> bool {
    hard.keys().any(|k| tracks(def, k))
}

/// Whether objects of `def` are counted by the quota resource `key` (`MatchingResources`).
fn tracks(def: &ResourceDef, key: &str) -> bool {
    if *key == count_key(def) {
        return true;
    }
    if !def.group.is_empty() {
        return false;
    }
    if legacy_count_kind(key) == Some(def.kind) {
        return true;
    }
    match def.kind {
        "Pod" => {
            matches!(
                key,
                "cpu"
                    | "memory"
                    | "ephemeral-storage"
                    | "requests.cpu"
                    | "requests.memory"
                    | "requests.ephemeral-storage"
                    | "limits.cpu"
                    | "limits.memory"
                    | "limits.ephemeral-storage"
            ) || key.starts_with("hugepages-")
                || key.starts_with("requests.hugepages-")
                || key
                    .strip_prefix("requests.")
                    .is_some_and(|r| r.contains('/') && !r.contains("kubernetes.io/"))
        }
        "Service" => matches!(key, "services.nodeports" | "services.loadbalancers"),
        "PersistentVolumeClaim" => {
            key == "requests.storage" || key.contains(".storageclass.storage.k8s.io/")
        }
        _ => false,
    }
}

/// What one object uses (`Evaluator.Usage`); pods that no longer run use nothing.
fn usage(def: &ResourceDef, obj: &Value, now: jiff::Timestamp) -> ResourceList {
    let one = Quantity::from_int(1);
    let mut u = ResourceList::new();
    if def.group.is_empty() && def.kind == "Pod" && !pod_counts(obj, now) {
        return u;
    }
    u.insert(count_key(def), one);
    if !def.group.is_empty() {
        return u;
    }
    if let Some(kind) = [
        "pods",
        "services",
        "persistentvolumeclaims",
        "configmaps",
        "secrets",
        "replicationcontrollers",
        "resourcequotas",
    ]
    .into_iter()
    .find(|k| legacy_count_kind(k) == Some(def.kind))
    {
        u.insert(kind.to_owned(), one);
    }
    match def.kind {
        "Pod" => add_pod_usage(obj, &mut u),
        "Service" => {
            let ports = i64::try_from(array_at(obj, "/spec/ports").len()).unwrap_or(0);
            let (node_ports, balancers) = match str_at(obj, "/spec/type") {
                "NodePort" => (ports, 0),
                "LoadBalancer" => {
                    let allocate = obj.pointer("/spec/allocateLoadBalancerNodePorts");
                    let node_ports = if allocate == Some(&json!(false)) {
                        let explicit = array_at(obj, "/spec/ports")
                            .iter()
                            .filter(|p| p.get("nodePort").and_then(Value::as_i64).unwrap_or(0) != 0)
                            .count();
                        i64::try_from(explicit).unwrap_or(0)
                    } else {
                        ports
                    };
                    (node_ports, 1)
                }
                _ => (0, 0),
            };
            u.insert("services.nodeports".into(), Quantity::from_int(node_ports));
            u.insert(
                "services.loadbalancers".into(),
                Quantity::from_int(balancers),
            );
        }
        "PersistentVolumeClaim" => {
            let class = str_at(obj, "/spec/storageClassName");
            let requested = resource_list(obj.pointer("/spec/resources/requests"));
            let allocated = resource_list(obj.pointer("/status/allocatedResources"));
            let storage = match (requested.get("storage"), allocated.get("storage")) {
                (Some(r), Some(a)) if a > r => Some(*a),
                (Some(r), _) => Some(*r),
                (None, a) => a.copied(),
            };
            if !class.is_empty() {
                u.insert(
                    format!("{class}.storageclass.storage.k8s.io/persistentvolumeclaims"),
                    one,
                );
            }
            if let Some(storage) = storage {
                u.insert("requests.storage".into(), storage);
                if !class.is_empty() {
                    u.insert(
                        format!("{class}.storageclass.storage.k8s.io/requests.storage"),
                        storage,
                    );
                }
            }
        }
        _ => {}
    }
    u
}

/// A pod's compute usage: effective requests and limits plus overhead
/// (`podComputeUsageHelper` over `PodRequests`/`PodLimits`).
fn add_pod_usage(pod: &Value, u: &mut ResourceList) {
    let spec = pod.get("spec").unwrap_or(&Value::Null);
    let overhead = resource_list(spec.get("overhead"));
    let mut requests = effective(spec, "requests");
    let mut limits = effective(spec, "limits");
    add_into(&mut requests, &overhead);
    for (k, v) in &overhead {
        if let Some(l) = limits.get_mut(k) {
            *l = l.add(v);
        }
    }
    u.extend(compute_usage(&requests, &limits));
}

/// The quota resources a set of requests and limits uses (`podComputeUsageHelper`).
fn compute_usage(requests: &ResourceList, limits: &ResourceList) -> ResourceList {
    let mut u = ResourceList::new();
    for (name, q) in requests {
        match name.as_str() {
            "cpu" | "memory" | "ephemeral-storage" => {
                u.insert(name.clone(), *q);
                u.insert(format!("requests.{name}"), *q);
            }
            n if n.starts_with("hugepages-") || n.contains('/') => {
                u.insert(format!("requests.{name}"), *q);
            }
            _ => {}
        }
    }
    for (name, q) in limits {
        if matches!(name.as_str(), "cpu" | "memory" | "ephemeral-storage") {
            u.insert(format!("limits.{name}"), *q);
        }
    }
    u
}

/// Whether a pod still counts against quota (`QuotaV1Pod`): not terminal, and not past its
/// deletion time plus grace period.
fn pod_counts(pod: &Value, now: jiff::Timestamp) -> bool {
    if matches!(str_at(pod, "/status/phase"), "Succeeded" | "Failed") {
        return false;
    }
    let deletion = str_at(pod, "/metadata/deletionTimestamp");
    if let (Ok(at), Some(grace)) = (
        deletion.parse::<jiff::Timestamp>(),
        pod.pointer("/metadata/deletionGracePeriodSeconds")
            .and_then(Value::as_i64),
    ) {
        if now > at + jiff::SignedDuration::from_secs(grace) {
            return false;
        }
    }
    true
}

/// `must specify <resource> for: <containers>; ...` when a quota on cpu or memory meets a
/// container that does not state them (the pod evaluator's `Constraints`).
fn missing_requirements(pod: &Value, hard: &ResourceList) -> Option<String> {
    let required: BTreeSet<&str> = MUST_SPECIFY
        .iter()
        .copied()
        .filter(|k| hard.contains_key(*k))
        .collect();
    if required.is_empty() {
        return None;
    }
    let mut missing: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for list in ["/spec/containers", "/spec/initContainers"] {
        for c in array_at(pod, list) {
            let have = compute_usage(
                &resource_list(c.pointer("/resources/requests")),
                &resource_list(c.pointer("/resources/limits")),
            );
            for r in &required {
                if !have.contains_key(*r) {
                    missing
                        .entry(r)
                        .or_default()
                        .insert(str_at(c, "/name").to_owned());
                }
            }
        }
    }
    if missing.is_empty() {
        return None;
    }
    let parts: Vec<String> = missing
        .iter()
        .map(|(r, names)| {
            format!(
                "{r} for: {}",
                names.iter().cloned().collect::<Vec<_>>().join(",")
            )
        })
        .collect();
    Some(format!("must specify {}", parts.join("; ")))
}

/// Whether a quota's scopes select an object. Scoped quotas only ever select pods.
fn scopes_match(quota: &Value, def: &ResourceDef, obj: &Value) -> bool {
    let scopes = array_at(quota, "/spec/scopes");
    let expressions = array_at(quota, "/spec/scopeSelector/matchExpressions");
    if scopes.is_empty() && expressions.is_empty() {
        return true;
    }
    if !(def.group.is_empty() && def.kind == "Pod") {
        return false;
    }
    scopes
        .iter()
        .all(|s| pod_in_scope(obj, s.as_str().unwrap_or(""), "Exists", &[]))
        && expressions.iter().all(|e| {
            let values: Vec<&str> = array_at(e, "/values")
                .iter()
                .filter_map(Value::as_str)
                .collect();
            pod_in_scope(
                obj,
                str_at(e, "/scopeName"),
                str_at(e, "/operator"),
                &values,
            )
        })
}

/// Whether a pod is in a quota scope under a scope selector operator.
fn pod_in_scope(pod: &Value, scope: &str, operator: &str, values: &[&str]) -> bool {
    let spec = pod.get("spec");
    let inside = match scope {
        "Terminating" => spec
            .and_then(|s| s.get("activeDeadlineSeconds"))
            .and_then(Value::as_i64)
            .is_some_and(|d| d >= 0),
        "NotTerminating" => spec
            .and_then(|s| s.get("activeDeadlineSeconds"))
            .and_then(Value::as_i64)
            .is_none_or(|d| d < 0),
        "BestEffort" => crate::kinds::qos_class(spec) == "BestEffort",
        "NotBestEffort" => crate::kinds::qos_class(spec) != "BestEffort",
        "PriorityClass" => {
            let class = str_at(pod, "/spec/priorityClassName");
            return match operator {
                "In" => values.contains(&class),
                "NotIn" => !values.contains(&class),
                "Exists" => !class.is_empty(),
                "DoesNotExist" => class.is_empty(),
                _ => false,
            };
        }
        "CrossNamespacePodAffinity" => ["podAffinity", "podAntiAffinity"].iter().any(|a| {
            let terms = |list: &str| {
                array_at(pod, &format!("/spec/affinity/{a}/{list}"))
                    .iter()
                    .map(|t| t.get("podAffinityTerm").unwrap_or(t))
                    .any(|t| {
                        !array_at(t, "/namespaces").is_empty()
                            || t.get("namespaceSelector").is_some()
                    })
            };
            terms("requiredDuringSchedulingIgnoredDuringExecution")
                || terms("preferredDuringSchedulingIgnoredDuringExecution")
        }),
        _ => false,
    };
    match operator {
        "DoesNotExist" => !inside,
        _ => inside,
    }
}

/// Keeps `status.hard` and `status.used` of every ResourceQuota current: recomputes a
/// namespace's quotas when anything in it changes and all of them every few seconds.
pub async fn run_controller(storage: Storage) {
    loop {
        let Ok(revision) = storage.current_revision().await else {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        let mut with_quotas = resync(&storage).await;
        let Ok(mut events) = storage.watch(REGISTRY_ROOT, revision + 1).await else {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        let mut tick = tokio::time::interval(RESYNC);
        tick.tick().await;
        loop {
            let mut dirty: HashSet<String> = HashSet::new();
            tokio::select! {
                event = events.next() => {
                    let Some(Ok(event)) = event else { break };
                    note(&event.kv.key, &mut dirty, &mut with_quotas);
                    // Gather what follows closely (a controller creating many pods).
                    let quiet = tokio::time::sleep(Duration::from_millis(50));
                    tokio::pin!(quiet);
                    loop {
                        tokio::select! {
                            _ = &mut quiet => break,
                            more = events.next() => match more {
                                Some(Ok(event)) => note(&event.kv.key, &mut dirty, &mut with_quotas),
                                _ => break,
                            },
                        }
                    }
                }
                _ = tick.tick() => {
                    with_quotas = resync(&storage).await;
                    continue;
                }
            }
            for namespace in dirty {
                if let Err(err) = reconcile(&storage, &namespace).await {
                    tracing::debug!("resource quota status in {namespace}: {}", err.message);
                }
            }
        }
    }
}

/// Marks the namespace of a changed key dirty when it has quotas (or the key is a quota).
fn note(key: &str, dirty: &mut HashSet<String>, with_quotas: &mut HashSet<String>) {
    let mut parts = key.rsplitn(3, '/');
    let (_name, namespace) = (parts.next(), parts.next().unwrap_or(""));
    let quota_prefix = quota_def().map_or(String::new(), |d| Storage::prefix(d, None));
    if key.starts_with(&quota_prefix) && !quota_prefix.is_empty() {
        with_quotas.insert(namespace.to_owned());
    }
    if with_quotas.contains(namespace) {
        dirty.insert(namespace.to_owned());
    }
}

/// Recomputes every quota; returns the namespaces that have quotas.
async fn resync(storage: &Storage) -> HashSet<String> {
    let Some(def) = quota_def() else {
        return HashSet::new();
    };
    let quotas = match list_all(storage, def, "").await {
        Ok(q) => q,
        Err(_) => return HashSet::new(),
    };
    let namespaces: HashSet<String> = quotas
        .iter()
        .map(|q| str_at(q, "/metadata/namespace").to_owned())
        .collect();
    for namespace in &namespaces {
        let _ = reconcile(storage, namespace).await;
    }
    namespaces
}

/// Writes the status of the namespace's quotas where it differs from what they use.
async fn reconcile(storage: &Storage, namespace: &str) -> ApiResult<()> {
    let Some(def) = quota_def() else {
        return Ok(());
    };
    let lock = Ledger::of(storage).namespace(namespace);
    let mut pending = lock.lock().await;
    let quotas = list_all(storage, def, namespace).await?;
    let mut snapshot = Snapshot::new(storage, namespace, &mut pending, jiff::Timestamp::now());
    for quota in quotas {
        if quota.pointer("/metadata/deletionTimestamp").is_some() {
            continue;
        }
        let used = snapshot.used(&quota).await?;
        let text = |list: &ResourceList| -> Value {
            list.iter()
                .map(|(k, v)| (k.clone(), json!(v.canonical())))
                .collect::<serde_json::Map<_, _>>()
                .into()
        };
        let status = json!({"hard": text(&hard_of(&quota)), "used": text(&used)});
        if quota.get("status") == Some(&status) {
            continue;
        }
        let name = str_at(&quota, "/metadata/name").to_owned();
        let revision = str_at(&quota, "/metadata/resourceVersion")
            .parse()
            .unwrap_or(0);
        let mut updated = quota;
        updated["status"] = status;
        // A conflict means someone wrote the quota meanwhile; that write's event brings
        // the namespace back.
        storage
            .update(def, namespace, &name, updated, revision)
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(kind: &str) -> &'static ResourceDef {
        REGISTRY.by_kind("", "v1", kind).unwrap()
    }

    fn q(s: &str) -> Quantity {
        Quantity::parse(s).unwrap()
    }

    fn pod(resources: Value) -> Value {
        json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "resources": resources}]},
            "status": {"phase": "Pending"}})
    }

    #[test]
    fn pods_use_counts_requests_and_limits() {
        let now = jiff::Timestamp::now();
        let u = usage(
            def("Pod"),
            &pod(json!({"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"cpu": "500m"}})),
            now,
        );
        let text: BTreeMap<String, String> =
            u.iter().map(|(k, v)| (k.clone(), v.canonical())).collect();
        assert_eq!(
            text,
            [
                ("count/pods", "1"),
                ("cpu", "250m"),
                ("limits.cpu", "500m"),
                ("memory", "64Mi"),
                ("pods", "1"),
                ("requests.cpu", "250m"),
                ("requests.memory", "64Mi"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
        );
    }

    #[test]
    fn terminal_and_expired_deleted_pods_use_nothing() {
        let now = jiff::Timestamp::now();
        let mut done = pod(json!({}));
        done["status"]["phase"] = json!("Succeeded");
        assert!(usage(def("Pod"), &done, now).is_empty());
        let mut deleted = pod(json!({}));
        deleted["metadata"]["deletionTimestamp"] = json!("2020-01-01T00:00:00Z");
        deleted["metadata"]["deletionGracePeriodSeconds"] = json!(30);
        assert!(usage(def("Pod"), &deleted, now).is_empty());
        deleted["metadata"]["deletionTimestamp"] = json!("2999-01-01T00:00:00Z");
        assert_eq!(usage(def("Pod"), &deleted, now)["pods"], q("1"));
    }

    #[test]
    fn services_and_claims_use_their_own_resources() {
        let now = jiff::Timestamp::now();
        let svc = json!({"spec": {"type": "LoadBalancer", "ports": [{"port": 80}, {"port": 443}]}});
        let u = usage(def("Service"), &svc, now);
        assert_eq!(u["services"], q("1"));
        assert_eq!(u["services.nodeports"], q("2"));
        assert_eq!(u["services.loadbalancers"], q("1"));
        let pvc = json!({"spec": {"storageClassName": "fast", "resources": {"requests": {"storage": "1Gi"}}}});
        let u = usage(def("PersistentVolumeClaim"), &pvc, now);
        assert_eq!(u["requests.storage"], q("1Gi"));
        assert_eq!(
            u["fast.storageclass.storage.k8s.io/requests.storage"],
            q("1Gi")
        );
        assert_eq!(u["count/persistentvolumeclaims"], q("1"));
        let cm = usage(def("ConfigMap"), &json!({}), now);
        assert_eq!(
            cm.keys().collect::<Vec<_>>(),
            ["configmaps", "count/configmaps"]
        );
    }

    #[test]
    fn quota_resources_select_the_kinds_they_count() {
        assert!(tracks(def("Pod"), "requests.cpu"));
        assert!(tracks(def("Pod"), "count/pods"));
        assert!(!tracks(def("Pod"), "requests.storage"));
        assert!(tracks(def("PersistentVolumeClaim"), "requests.storage"));
        assert!(tracks(def("Secret"), "secrets"));
        assert!(!tracks(def("Secret"), "configmaps"));
        let deploy = REGISTRY.by_kind("apps", "v1", "Deployment").unwrap();
        assert!(tracks(deploy, "count/deployments.apps"));
        let hard = resource_list(Some(&json!({"count/deployments.apps": "1", "pods": "1"})));
        let defs: Vec<&str> = counted_defs(&hard).iter().map(|d| d.kind).collect();
        assert_eq!(defs, ["Pod", "Deployment"]);
    }

    #[test]
    fn names_containers_missing_cpu_and_memory() {
        let hard = resource_list(Some(
            &json!({"limits.cpu": "2", "requests.memory": "1Gi", "pods": "3"}),
        ));
        let p = json!({"spec": {"containers": [
            {"name": "b", "resources": {"limits": {"cpu": "1"}}},
            {"name": "a"},
        ]}});
        assert_eq!(
            missing_requirements(&p, &hard).unwrap(),
            "must specify limits.cpu for: a; requests.memory for: a,b"
        );
        let full = pod(json!({"requests": {"memory": "1Mi"}, "limits": {"cpu": "1"}}));
        assert_eq!(missing_requirements(&full, &hard), None);
        let counts_only = resource_list(Some(&json!({"pods": "1"})));
        assert_eq!(missing_requirements(&p, &counts_only), None);
    }

    #[tokio::test]
    async fn pending_writes_count_until_the_store_shows_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = skiff_store::EmbeddedStore::open(dir.path().join("db")).unwrap();
        let storage = Storage::new(Arc::new(store));
        let pods = def("Pod");
        let named = |name: &str| {
            let mut p = pod(json!({"requests": {"cpu": "100m"}}));
            p["metadata"]["name"] = json!(name);
            p
        };
        storage.create(pods, "ns", "a", named("a")).await.unwrap();
        let quota = json!({"spec": {"hard": {"pods": "5", "requests.cpu": "1"}}});
        let mut pending = vec![Pending {
            prefix: pods.storage_prefix,
            name: "b".into(),
            replaces: None,
            obj: named("b"),
            until: Instant::now() + PENDING_FOR,
        }];
        async fn used_of(
            storage: &Storage,
            quota: &Value,
            pending: &mut Vec<Pending>,
        ) -> (String, String) {
            let mut snapshot = Snapshot::new(storage, "ns", pending, jiff::Timestamp::now());
            let used = snapshot.used(quota).await.unwrap();
            (used["pods"].canonical(), used["requests.cpu"].canonical())
        }
        assert_eq!(
            used_of(&storage, &quota, &mut pending).await,
            ("2".into(), "200m".into())
        );
        assert_eq!(pending.len(), 1);
        // Stored: counted once, and the pending write is done.
        storage.create(pods, "ns", "b", named("b")).await.unwrap();
        assert_eq!(
            used_of(&storage, &quota, &mut pending).await,
            ("2".into(), "200m".into())
        );
        assert!(pending.is_empty());
        // A pending update replaces the stored version it was admitted against.
        let (stored, revision) = storage.get(pods, "ns", "a").await.unwrap().unwrap();
        let mut bigger = stored.clone();
        bigger["spec"]["containers"][0]["resources"]["requests"]["cpu"] = json!("500m");
        pending.push(Pending {
            prefix: pods.storage_prefix,
            name: "a".into(),
            replaces: Some(revision.to_string()),
            obj: bigger.clone(),
            until: Instant::now() + PENDING_FOR,
        });
        assert_eq!(
            used_of(&storage, &quota, &mut pending).await,
            ("2".into(), "600m".into())
        );
        storage
            .update(pods, "ns", "a", bigger.clone(), revision)
            .await
            .unwrap();
        assert_eq!(
            used_of(&storage, &quota, &mut pending).await,
            ("2".into(), "600m".into())
        );
        assert!(pending.is_empty());
        // A write that never reached the store stops counting after a while.
        pending.push(Pending {
            prefix: pods.storage_prefix,
            name: "lost".into(),
            replaces: None,
            obj: named("lost"),
            until: Instant::now(),
        });
        assert_eq!(
            used_of(&storage, &quota, &mut pending).await,
            ("2".into(), "600m".into())
        );
        assert!(pending.is_empty());
    }

    #[test]
    fn scopes_select_pods_only() {
        let best_effort = pod(json!({}));
        let mut terminating = pod(json!({"requests": {"cpu": "1"}}));
        terminating["spec"]["activeDeadlineSeconds"] = json!(60);
        terminating["spec"]["priorityClassName"] = json!("high");
        let quota = |spec: Value| json!({"spec": spec});
        let be = quota(json!({"scopes": ["BestEffort"]}));
        assert!(scopes_match(&be, def("Pod"), &best_effort));
        assert!(!scopes_match(&be, def("Pod"), &terminating));
        assert!(!scopes_match(&be, def("Service"), &json!({})));
        let term = quota(json!({"scopes": ["Terminating", "NotBestEffort"]}));
        assert!(scopes_match(&term, def("Pod"), &terminating));
        assert!(!scopes_match(&term, def("Pod"), &best_effort));
        let prio = quota(json!({"scopeSelector": {"matchExpressions": [
            {"scopeName": "PriorityClass", "operator": "In", "values": ["high"]}]}}));
        assert!(scopes_match(&prio, def("Pod"), &terminating));
        assert!(!scopes_match(&prio, def("Pod"), &best_effort));
        assert!(scopes_match(
            &quota(json!({"hard": {}})),
            def("Service"),
            &json!({})
        ));
    }
}
