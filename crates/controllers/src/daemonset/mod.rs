//! The DaemonSet controller (`pkg/controller/daemon`): one pod per eligible node
//! ([`placement`]), pinned there with node affinity on `metadata.name` and placed by the
//! scheduler; a new template is rolled out node by node within `maxUnavailable`
//! (`RollingUpdate`) or only as pods are deleted (`OnDelete`), each template kept as a
//! ControllerRevision whose hash labels the pods (`controller-revision-hash`).

pub mod placement;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt as _};
use kube::{Api, Client, Resource as _, ResourceExt as _};
use serde_json::json;

use crate::controller_ref;
use crate::deployment::rollout::scaled_value;
use crate::events::{EventType, Recorder};
use crate::history::{self, CONTROLLER_REVISION_HASH};
use crate::pod_util::{is_available, is_not_found, is_ready, is_terminal, key, owned, phase};
use crate::replicaset::{pod_from_template, Expectations};
use placement::{add_daemon_tolerations, pin_to_node, placement, pod_node};

/// The deprecated label with the DaemonSet generation a pod was made from.
pub const POD_TEMPLATE_GENERATION: &str = "pod-template-generation";

/// A failed reconcile.
#[derive(Debug, thiserror::Error)]
#[error("daemonset {key}: {source}")]
pub struct Error {
    key: String,
    source: kube::Error,
}

struct Ctx {
    client: Client,
    pods: Store<Pod>,
    nodes: Store<Node>,
    revisions: Store<ControllerRevision>,
    expectations: Expectations,
    recorder: Recorder,
}

/// Runs the DaemonSet controller until the client's watches end.
pub async fn run(client: Client) {
    let (pods, pod_writer) = reflector::store();
    let expectations = Expectations::default();
    let observed = expectations.clone();
    let pod_events = watcher(Api::<Pod>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .reflect(pod_writer)
        .inspect(move |event| {
            if let Ok(event) = event {
                observed.observe_event(event);
            }
        })
        .touched_objects();
    let (nodes, node_writer) = reflector::store();
    let node_events = watcher(Api::<Node>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .reflect(node_writer)
        .touched_objects();
    let (revisions, rev_writer) = reflector::store();
    let revision_events = watcher(
        Api::<ControllerRevision>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(rev_writer)
    .touched_objects();
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        pods,
        nodes,
        revisions,
        expectations,
        recorder: Recorder::new(client.clone(), "daemonset-controller"),
    });
    let controller = Controller::new(Api::<DaemonSet>::all(client), watcher::Config::default());
    let daemonsets = controller.store();
    controller
        .owns_stream(pod_events)
        .owns_stream(revision_events)
        .watches_stream(node_events, move |_node: Node| {
            daemonsets
                .state()
                .iter()
                .map(|d| ObjectRef::from_obj(d.as_ref()))
                .collect::<Vec<_>>()
        })
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {})
        .await;
}

fn error_policy(_: Arc<DaemonSet>, err: &Error, _: Arc<Ctx>) -> Action {
    tracing::warn!("{err}");
    Action::requeue(Duration::from_secs(1))
}

/// What one sync does.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Nodes to create a daemon pod for.
    pub create_on: Vec<String>,
    /// Pods to delete.
    pub delete: Vec<String>,
    /// The counts of the status.
    pub status: DaemonSetStatus,
}

fn pod_hash(pod: &Pod) -> Option<&str> {
    pod.metadata
        .labels
        .as_ref()?
        .get(CONTROLLER_REVISION_HASH)
        .map(String::as_str)
}

/// Decides one sync: pods to create and delete for placement and the rolling update,
/// and the status counts (`manage`, `rollingUpdate`, `updateDaemonSetStatus`).
pub fn plan(
    ds: &DaemonSet,
    nodes: &[&Node],
    pods: &[&Pod],
    hash: &str,
    now: jiff::Timestamp,
) -> Plan {
    let spec = Some(&ds.spec);
    let template = spec.and_then(|s| s.template.spec.as_ref());
    let min_ready = spec.and_then(|s| s.min_ready_seconds).unwrap_or(0);
    let mut by_node: BTreeMap<String, Vec<&Pod>> = BTreeMap::new();
    let mut p = Plan::default();
    for pod in pods {
        match pod_node(pod.spec.as_ref()) {
            Some(node) => by_node.entry(node).or_default().push(pod),
            None => p.delete.extend(pod.metadata.name.clone()),
        }
    }
    let mut nodes: Vec<&Node> = nodes.to_vec();
    nodes.sort_by_key(|n| n.metadata.name.clone());
    let known: HashSet<String> = nodes
        .iter()
        .filter_map(|n| n.metadata.name.clone())
        .collect();
    // Pods of nodes that are gone.
    for (node, pods) in &by_node {
        if !known.contains(node) {
            p.delete.extend(
                pods.iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none())
                    .filter_map(|p| p.metadata.name.clone()),
            );
        }
    }
    let strategy = spec.and_then(|s| s.update_strategy.as_ref());
    let rolling = strategy
        .and_then(|s| s.type_.as_deref())
        .unwrap_or("RollingUpdate")
        == "RollingUpdate";
    let max_surge_value = strategy
        .and_then(|s| s.rolling_update.as_ref())
        .and_then(|r| r.max_surge.as_ref());
    // With maxSurge, a node may run its old pod and its replacement at once.
    let surge = rolling && scaled_value(max_surge_value, nodes.len().max(1) as i32, true) > 0;
    let s = &mut p.status;
    // (node, its one kept pod) for the status and the rolling update.
    let mut kept: Vec<(String, &Pod)> = Vec::new();
    // With maxSurge: (its pod of the current template, its pod of an older one) per node.
    let mut pairs: Vec<(String, Option<&Pod>, Option<&Pod>)> = Vec::new();
    let mut desired = 0;
    for node in &nodes {
        let name = node.metadata.name.clone().unwrap_or_default();
        let place = placement(template, node);
        let on_node = by_node.get(&name).cloned().unwrap_or_default();
        let mut active: Vec<&Pod> = on_node
            .iter()
            .copied()
            .filter(|p| !is_terminal(p) && p.metadata.deletion_timestamp.is_none())
            .collect();
        active.sort_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
        let failed: Vec<&Pod> = on_node
            .iter()
            .copied()
            .filter(|p| phase(p) == "Failed" && p.metadata.deletion_timestamp.is_none())
            .collect();
        if place.should_run {
            desired += 1;
        }
        if place.should_run || (place.should_continue_running && !active.is_empty()) {
            p.delete
                .extend(failed.iter().filter_map(|p| p.metadata.name.clone()));
            match active.split_first() {
                None if place.should_run => p.create_on.push(name.clone()),
                None => {}
                Some((first, extra)) => {
                    let is_new = |pod: &Pod| pod_hash(pod) == Some(hash);
                    // Surging: the oldest pod of the other kind stays beside the first.
                    let second = extra
                        .iter()
                        .copied()
                        .find(|pod| surge && is_new(pod) != is_new(first));
                    p.delete.extend(
                        extra
                            .iter()
                            .filter(|pod| second.is_none_or(|s| !std::ptr::eq(**pod, s)))
                            .filter_map(|p| p.metadata.name.clone()),
                    );
                    if place.should_run {
                        kept.push((name.clone(), first));
                        let (new, old) = if is_new(first) {
                            (Some(*first), second)
                        } else {
                            (second, Some(*first))
                        };
                        pairs.push((name.clone(), new, old));
                    }
                }
            }
        } else {
            p.delete
                .extend(active.iter().filter_map(|p| p.metadata.name.clone()));
        }
        if !place.should_run && !active.is_empty() {
            s.number_misscheduled += 1;
        }
    }
    s.desired_number_scheduled = desired;
    s.current_number_scheduled = kept.len() as i32;
    s.number_ready = kept.iter().filter(|(_, p)| is_ready(p)).count() as i32;
    let available = kept
        .iter()
        .filter(|(_, p)| is_available(p, min_ready, now))
        .count() as i32;
    s.number_available = (available > 0).then_some(available);
    s.number_unavailable = (desired - available > 0).then_some(desired - available);
    let updated = kept
        .iter()
        .filter(|(_, p)| pod_hash(p) == Some(hash))
        .count() as i32;
    s.updated_number_scheduled = (updated > 0).then_some(updated);

    if surge {
        // RollingUpdate with maxSurge: a node whose old pod is available gets its
        // replacement beside it while fewer than maxSurge replacements are not yet
        // available; a node whose old pod is unavailable gets one at once; an old pod
        // goes when its replacement is available.
        let max_surge = scaled_value(max_surge_value, desired, true);
        let mut surging = 0;
        let mut at_once = Vec::new();
        let mut candidates = Vec::new();
        for (node, new, old) in &pairs {
            match (new, old) {
                (_, None) => {}
                (None, Some(old)) if !is_available(old, min_ready, now) => {
                    at_once.push(node.clone())
                }
                (None, Some(_)) => candidates.push(node.clone()),
                (Some(new), Some(old)) if is_available(new, min_ready, now) => {
                    p.delete.extend(old.metadata.name.clone())
                }
                (Some(_), Some(_)) => surging += 1,
            }
        }
        let room = (max_surge - surging).clamp(0, candidates.len() as i32) as usize;
        p.create_on.extend(at_once);
        p.create_on.extend(candidates.into_iter().take(room));
    } else if rolling {
        // RollingUpdate: replace old pods, unavailable ones first, keeping at most
        // maxUnavailable nodes without an available pod.
        let max_unavailable = scaled_value(
            strategy
                .and_then(|s| s.rolling_update.as_ref())
                .and_then(|r| r.max_unavailable.as_ref()),
            desired,
            true,
        )
        .max(1);
        let mut unavailable = desired - available;
        for (_, pod) in kept.iter().filter(|(_, p)| pod_hash(p) != Some(hash)) {
            if !is_available(pod, min_ready, now) {
                p.delete.extend(pod.metadata.name.clone());
            }
        }
        for (_, pod) in kept.iter().filter(|(_, p)| pod_hash(p) != Some(hash)) {
            if is_available(pod, min_ready, now) && unavailable < max_unavailable {
                p.delete.extend(pod.metadata.name.clone());
                unavailable += 1;
            }
        }
    }
    p
}

/// `status` as a merge patch: counts that are now unset are written as `null`, else the
/// server would keep their old values.
fn merge_patch(status: &DaemonSetStatus) -> serde_json::Value {
    let mut v = serde_json::to_value(status).unwrap_or_default();
    for field in [
        "numberAvailable",
        "numberUnavailable",
        "updatedNumberScheduled",
        "collisionCount",
        "conditions",
    ] {
        v.as_object_mut()
            .map(|m| m.entry(field).or_insert(serde_json::Value::Null));
    }
    v
}

async fn reconcile(ds: Arc<DaemonSet>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    // Nothing is decided on a cache still filling, or a restart would recreate what
    // exists (`WaitForCacheSync`).
    crate::cache_sync::cache_synced(&ctx.pods).await;
    crate::cache_sync::cache_synced(&ctx.nodes).await;
    crate::cache_sync::cache_synced(&ctx.revisions).await;
    let ds_key = key(&ds.metadata);
    let err = |source| Error {
        key: ds_key.clone(),
        source,
    };
    if ds.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let namespace = ds.namespace().unwrap_or_default();
    let uid = ds.metadata.uid.clone().unwrap_or_default();
    let spec = ds.spec.clone();
    let revisions_api: Api<ControllerRevision> = Api::namespaced(ctx.client.clone(), &namespace);
    // Ownerless revisions the selector matches are adopted (`ClaimControllerRevisions`):
    // one holding the current template then serves as the current revision.
    let in_namespace = ctx
        .revisions
        .state()
        .into_iter()
        .filter(|r| r.metadata.namespace.as_deref() == Some(namespace.as_str()));
    let claim = controller_ref::claim(in_namespace, &uid, Some(&spec.selector), false);
    let mut revisions = claim.owned;
    revisions.extend(claim.release);
    for revision in &claim.adopt {
        let owner = ds
            .controller_owner_ref(&())
            .expect("a DaemonSet has a name and uid");
        match controller_ref::adopt(&revisions_api, revision.as_ref(), owner).await {
            Ok(adopted) => revisions.push(Arc::new(adopted)),
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => return Err(err(e)),
        }
    }
    let collision = ds.status.as_ref().and_then(|s| s.collision_count);
    let current = history::ensure_revision(
        &revisions_api,
        ds.controller_owner_ref(&())
            .expect("a DaemonSet has a name and uid"),
        &ds.name_any(),
        spec.template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone())
            .unwrap_or_default(),
        history::revision_data(&spec.template),
        &revisions,
        collision,
    )
    .await
    .map_err(err)?;
    // An adopted revision without the hash label goes by its name, as in Kubernetes.
    let hash = current
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(CONTROLLER_REVISION_HASH))
        .cloned()
        .unwrap_or_else(|| current.name_any());

    // Checked before the cache is read: a pod that shows up between the read and the check
    // would satisfy the expectation without being in the plan.
    let may_manage = ctx.expectations.satisfied(&uid);
    let pods = owned(&ctx.pods, &namespace, &uid);
    let pod_refs: Vec<&Pod> = pods.iter().map(|p| p.as_ref()).collect();
    let nodes = ctx.nodes.state();
    let node_refs: Vec<&Node> = nodes.iter().map(|n| n.as_ref()).collect();
    let now = jiff::Timestamp::now();
    let plan = plan(&ds, &node_refs, &pod_refs, &hash, now);
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);

    if may_manage {
        for name in &plan.delete {
            let Some(pod) = pod_refs
                .iter()
                .find(|p| p.metadata.name.as_ref() == Some(name))
            else {
                continue;
            };
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: pod.metadata.uid.clone(),
                    resource_version: None,
                }),
                ..Default::default()
            };
            match pods_api.delete(name, &dp).await {
                Ok(_) => {
                    ctx.expectations.expect_delete(&uid, name.clone());
                    ctx.recorder.record(
                        ds.as_ref(),
                        EventType::Normal,
                        "SuccessfulDelete",
                        format!("Deleted pod: {name}"),
                    );
                }
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(err(e)),
            }
        }
        let owner = ds
            .controller_owner_ref(&())
            .expect("a DaemonSet has a name and uid");
        for node in &plan.create_on {
            let mut pod = pod_from_template(
                Some(&spec.template),
                owner.clone(),
                format!("{}-", ds.name_any()),
            );
            let labels = pod.metadata.labels.get_or_insert_with(Default::default);
            labels.insert(CONTROLLER_REVISION_HASH.into(), hash.clone());
            labels.insert(
                POD_TEMPLATE_GENERATION.into(),
                ds.metadata.generation.unwrap_or(1).to_string(),
            );
            if let Some(pod_spec) = pod.spec.as_mut() {
                add_daemon_tolerations(pod_spec);
                pin_to_node(pod_spec, node);
            }
            match pods_api.create(&PostParams::default(), &pod).await {
                Ok(p) => {
                    ctx.expectations.expect_create(&uid, p.name_any());
                    ctx.recorder.record(
                        ds.as_ref(),
                        EventType::Normal,
                        "SuccessfulCreate",
                        format!("Created pod: {}", p.name_any()),
                    );
                }
                Err(e) => {
                    ctx.recorder.record(
                        ds.as_ref(),
                        EventType::Warning,
                        "FailedCreate",
                        format!("Error creating: {e}"),
                    );
                    return Err(err(e));
                }
            }
        }
    }

    let mut status = plan.status;
    status.observed_generation = ds.metadata.generation;
    status.collision_count = collision;
    status.conditions = ds.status.as_ref().and_then(|s| s.conditions.clone());
    if ds.status.as_ref() != Some(&status) {
        let api: Api<DaemonSet> = Api::namespaced(ctx.client.clone(), &namespace);
        api.patch_status(
            &ds.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({"status": merge_patch(&status)})),
        )
        .await
        .map_err(err)?;
    }
    let mut live: HashSet<String> = pod_refs
        .iter()
        .filter_map(|p| pod_hash(p).map(|h| format!("{}-{h}", ds.name_any())))
        .collect();
    live.insert(current.name_any());
    history::truncate(
        &revisions_api,
        &revisions,
        &live,
        spec.revision_history_limit.unwrap_or(10),
    )
    .await
    .map_err(err)?;
    if !ctx.expectations.satisfied(&uid) {
        return Ok(Action::requeue(Duration::from_millis(500)));
    }
    // A ready pod turns available minReadySeconds later without any event: look again
    // then (this also covers a surging replacement, which the status does not count).
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    if min_ready > 0
        && pod_refs
            .iter()
            .any(|p| is_ready(p) && !is_available(p, min_ready, now))
    {
        return Ok(Action::requeue(Duration::from_secs(min_ready as u64)));
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ds(strategy: serde_json::Value) -> DaemonSet {
        serde_json::from_value(json!({
            "metadata": {"name": "d", "namespace": "default", "uid": "ds"},
            "spec": {"selector": {"matchLabels": {"a": "b"}}, "updateStrategy": strategy,
                "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c"}]}}},
        }))
        .unwrap()
    }

    fn node(name: &str, taint: bool) -> Node {
        let taints = if taint {
            json!([{"key": "k", "effect": "NoSchedule"}])
        } else {
            json!([])
        };
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"taints": taints}}))
            .unwrap()
    }

    fn pod(name: &str, node: &str, hash: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {CONTROLLER_REVISION_HASH: hash},
                "creationTimestamp": "2025-01-01T00:00:00Z"},
            "spec": {"nodeName": node, "containers": [{"name": "c"}]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
        }))
        .unwrap()
    }

    fn now() -> jiff::Timestamp {
        "2025-01-02T00:00:00Z".parse().unwrap()
    }

    #[test]
    fn one_pod_per_eligible_node() {
        let d = ds(json!({"type": "RollingUpdate"}));
        let (a, b, t) = (node("a", false), node("b", false), node("t", true));
        let on_a = pod("pa", "a", "h1");
        let p = plan(&d, &[&a, &b, &t], &[&on_a], "h1", now());
        assert_eq!(p.create_on, ["b"]);
        assert!(p.delete.is_empty());
        assert_eq!(p.status.desired_number_scheduled, 2);
        assert_eq!(p.status.current_number_scheduled, 1);
        assert_eq!(p.status.number_ready, 1);
        // A second pod on a node goes; a pod on a node that no longer fits too.
        let again = pod("pa2", "a", "h1");
        let on_t = pod("pt", "t", "h1");
        let evict: Node = serde_json::from_value(json!({"metadata": {"name": "t"},
            "spec": {"taints": [{"key": "k", "effect": "NoExecute"}]}}))
        .unwrap();
        let p = plan(&d, &[&a, &evict], &[&on_a, &again, &on_t], "h1", now());
        assert_eq!(p.delete, ["pa2", "pt"]);
        assert_eq!(p.status.number_misscheduled, 1);
    }

    #[test]
    fn rolling_update_replaces_within_max_unavailable_and_on_delete_waits() {
        let nodes = [node("a", false), node("b", false), node("c", false)];
        let nodes: Vec<&Node> = nodes.iter().collect();
        let pods = [
            pod("pa", "a", "old"),
            pod("pb", "b", "old"),
            pod("pc", "c", "new"),
        ];
        let pods: Vec<&Pod> = pods.iter().collect();
        let d = ds(json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}}));
        let p = plan(&d, &nodes, &pods, "new", now());
        assert_eq!(p.delete, ["pa"]);
        assert_eq!(p.status.updated_number_scheduled, Some(1));
        let d = ds(json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "100%"}}));
        assert_eq!(plan(&d, &nodes, &pods, "new", now()).delete, ["pa", "pb"]);
        let d = ds(json!({"type": "OnDelete"}));
        assert!(plan(&d, &nodes, &pods, "new", now()).delete.is_empty());
    }

    #[test]
    fn max_surge_starts_replacements_beside_old_pods_then_removes_them() {
        let nodes = [node("a", false), node("b", false), node("c", false)];
        let nodes: Vec<&Node> = nodes.iter().collect();
        let d = ds(json!({"type": "RollingUpdate",
            "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}));
        let (pa, pb, pc) = (
            pod("pa", "a", "old"),
            pod("pb", "b", "old"),
            pod("pc", "c", "old"),
        );
        // One replacement at a time, beside its old pod; nothing is deleted yet.
        let p = plan(&d, &nodes, &[&pa, &pb, &pc], "new", now());
        assert_eq!(p.create_on, ["a"]);
        assert!(p.delete.is_empty(), "{:?}", p.delete);
        // While a's replacement is not available, the budget is spent and both stay.
        let mut starting = pod("na", "a", "new");
        starting.status = serde_json::from_value(json!({"phase": "Pending"})).unwrap();
        let p = plan(&d, &nodes, &[&pa, &starting, &pb, &pc], "new", now());
        assert!(p.create_on.is_empty(), "{:?}", p.create_on);
        assert!(p.delete.is_empty(), "{:?}", p.delete);
        // Available: a's old pod goes, and b is next.
        let na = pod("na", "a", "new");
        let p = plan(&d, &nodes, &[&pa, &na, &pb, &pc], "new", now());
        assert_eq!(p.delete, ["pa"]);
        assert_eq!(p.create_on, ["b"]);
        // An unavailable old pod is replaced at once, beyond the budget.
        let mut broken = pod("pc", "c", "old");
        broken.status = serde_json::from_value(json!({"phase": "Running"})).unwrap();
        let p = plan(&d, &nodes, &[&pa, &starting, &pb, &broken], "new", now());
        assert_eq!(p.create_on, ["c"]);
        // Without maxSurge a second pod on a node is an extra and goes.
        let d = ds(json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}}));
        let p = plan(&d, &nodes, &[&pa, &na, &pb, &pc], "new", now());
        assert!(p.delete.contains(&"na".to_string()), "{:?}", p.delete);
    }
}
