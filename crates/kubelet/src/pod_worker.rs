//! Pod workers: level-triggered syncs of one pod's spec (desired) against the
//! runtime's sandbox and containers (actual), as pkg/kubelet/pod_workers.go and
//! kuberuntime's `computePodActions`/`SyncPod` do.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use k8s_openapi::api::core::v1::{Container, Pod};

use crate::cri::{self, ContainerConfig, ContainerState, CriError, PodSandboxConfig, SandboxState};
use crate::status::{self, Observed, Waiting};
use crate::Runtime;

/// The first restart back-off; it doubles per restart up to [`MAX_BACKOFF`].
pub const INITIAL_BACKOFF: Duration = Duration::from_secs(10);
/// The longest restart back-off (5 minutes).
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// What a sync leaves for the API.
#[derive(Debug)]
pub enum Outcome {
    /// Report this status.
    Status(Box<k8s_openapi::api::core::v1::PodStatus>),
    /// The pod was being deleted and nothing of it runs any more: delete the object.
    Terminated,
}

/// The back-off before restart `restarts` (10s, 20s, 40s ... 5 min).
pub fn backoff(restarts: u32) -> Duration {
    INITIAL_BACKOFF
        .saturating_mul(1u32.checked_shl(restarts.min(16)).unwrap_or(u32::MAX))
        .min(MAX_BACKOFF)
}

fn should_restart(policy: &str, exit_code: i32) -> bool {
    match policy {
        "Never" => false,
        "OnFailure" => exit_code != 0,
        _ => true,
    }
}

/// The container's environment: literal values and the downward API's `fieldRef`s
/// (ConfigMap, Secret and resource references are not resolved yet).
fn env_of(c: &Container, pod: &Pod, observed: &Observed) -> Vec<(String, String)> {
    c.env
        .iter()
        .flatten()
        .filter_map(|e| {
            if let Some(v) = &e.value {
                return Some((e.name.clone(), v.clone()));
            }
            let path = &e.value_from.as_ref()?.field_ref.as_ref()?.field_path;
            Some((e.name.clone(), field_value(pod, path, observed)?))
        })
        .collect()
}

/// A `fieldRef` path's value, as the downward API defines them.
fn field_value(pod: &Pod, path: &str, observed: &Observed) -> Option<String> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let keyed = |prefix: &str, map: &Option<BTreeMap<String, String>>| {
        let key = path.strip_prefix(prefix)?.strip_suffix("']")?;
        map.as_ref()?.get(key).cloned()
    };
    match path {
        "metadata.name" => meta.name.clone(),
        "metadata.namespace" => meta.namespace.clone(),
        "metadata.uid" => meta.uid.clone(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()),
        "spec.serviceAccountName" => spec.and_then(|s| s.service_account_name.clone()),
        "status.hostIP" | "status.hostIPs" => observed.host_ip.clone(),
        "status.podIP" | "status.podIPs" => observed.pod_ip.clone(),
        _ if path.starts_with("metadata.labels['") => keyed("metadata.labels['", &meta.labels),
        _ if path.starts_with("metadata.annotations['") => {
            keyed("metadata.annotations['", &meta.annotations)
        }
        _ => None,
    }
}

struct PodRef {
    name: String,
    namespace: String,
    uid: String,
}

/// Syncs one pod; blocking (runtime calls).
pub fn sync_pod(rt: &dyn Runtime, pod: &Pod, node: &NodeRef) -> Result<Outcome, CriError> {
    let meta = &pod.metadata;
    let p = PodRef {
        name: meta.name.clone().unwrap_or_default(),
        namespace: meta.namespace.clone().unwrap_or_else(|| "default".into()),
        uid: meta.uid.clone().unwrap_or_default(),
    };
    let labels = BTreeMap::from([(cri::POD_UID_LABEL.to_string(), p.uid.clone())]);
    if meta.deletion_timestamp.is_some() {
        let spec = pod.spec.clone().unwrap_or_default();
        let grace = meta
            .deletion_grace_period_seconds
            .or(spec.termination_grace_period_seconds)
            .unwrap_or(30)
            .max(0) as u32;
        kill_pod(rt, &labels, grace)?;
        return Ok(Outcome::Terminated);
    }

    let mut observed = Observed {
        host_ip: node.ip.clone(),
        now: Utc::now(),
        ..Default::default()
    };
    let old_phase = pod.status.as_ref().and_then(|s| s.phase.clone());
    let terminal = matches!(old_phase.as_deref(), Some("Succeeded" | "Failed"));
    observed.containers = rt.list_containers(&labels)?;
    let mut sandboxes = rt.list_pod_sandboxes(&labels)?;
    sandboxes.sort_by_key(|s| s.created_at);
    let sandbox = sandboxes.last().cloned();
    if terminal {
        // A finished pod keeps its containers (for logs) but not its sandbox.
        for s in sandboxes.iter().filter(|s| s.state == SandboxState::Ready) {
            rt.stop_pod_sandbox(&s.id)?;
        }
        return Ok(Outcome::Status(Box::new(status::pod_status(
            pod, &observed,
        ))));
    }

    let sandbox = match sandbox {
        Some(s) if s.state == SandboxState::Ready => s,
        stale => {
            // A new sandbox means new namespaces: containers of the old one go with it.
            if stale.is_some() {
                kill_pod(rt, &labels, 0)?;
            }
            let spec = pod.spec.clone().unwrap_or_default();
            let Some(first) = spec.containers.first() else {
                return Err(CriError::Runtime("pod has no containers".into()));
            };
            if let Err(w) = ensure_image(rt, first) {
                observed.waiting.insert(first.name.clone(), w);
                return Ok(Outcome::Status(Box::new(status::pod_status(
                    pod, &observed,
                ))));
            }
            let config = PodSandboxConfig {
                name: p.name.clone(),
                namespace: p.namespace.clone(),
                uid: p.uid.clone(),
                attempt: sandboxes.len() as u32,
                hostname: p.name.clone(),
                image: first.image.clone().unwrap_or_default(),
                labels: BTreeMap::from([(cri::NODE_LABEL.to_string(), node.name.clone())]),
            };
            let id = rt.run_pod_sandbox(&config)?;
            observed.containers = rt.list_containers(&labels)?;
            rt.pod_sandbox_status(&id)?
        }
    };
    observed.sandbox_ready = true;
    observed.pod_ip = sandbox.ip.clone();

    let spec = pod.spec.clone().unwrap_or_default();
    let policy = spec
        .restart_policy
        .clone()
        .unwrap_or_else(|| "Always".into());
    let mut changed = false;
    let mut initialized = true;
    for c in spec.init_containers.iter().flatten() {
        let (latest, _) = observed.instances(&c.name);
        match latest.map(|l| (l.state, l.exit_code)) {
            Some((ContainerState::Exited, 0)) => continue,
            Some((ContainerState::Exited, _)) if policy == "Never" => {}
            Some((ContainerState::Running | ContainerState::Created, _)) => {}
            _ => changed |= start(rt, pod, &p, &sandbox.id, c, &mut observed)?,
        }
        initialized = false;
        break;
    }
    if initialized {
        for c in &spec.containers {
            let (latest, _) = observed.instances(&c.name);
            match latest.map(|l| (l.state, l.exit_code)) {
                Some((ContainerState::Running, _)) => {}
                Some((ContainerState::Exited, code)) if !should_restart(&policy, code) => {}
                _ => changed |= start(rt, pod, &p, &sandbox.id, c, &mut observed)?,
            }
        }
    }
    if changed {
        observed.containers = rt.list_containers(&labels)?;
    }
    observed.now = Utc::now();
    Ok(Outcome::Status(Box::new(status::pod_status(
        pod, &observed,
    ))))
}

/// The image's presence as `imagePullPolicy` wants it, or why the container waits.
fn ensure_image(rt: &dyn Runtime, c: &Container) -> Result<(), Waiting> {
    let image = c.image.clone().unwrap_or_default();
    let latest = !image.contains(':') || image.ends_with(":latest");
    let policy = c
        .image_pull_policy
        .clone()
        .unwrap_or_else(|| if latest { "Always" } else { "IfNotPresent" }.into());
    let present = rt.image_status(&image).ok().flatten().is_some();
    match policy.as_str() {
        "Never" if !present => Err(Waiting {
            reason: "ErrImageNeverPull".into(),
            message: format!(
                "Container image \"{image}\" is not present with pull policy of Never"
            ),
        }),
        "Never" => Ok(()),
        "IfNotPresent" if present => Ok(()),
        _ => rt.pull_image(&image).map(drop).map_err(|e| Waiting {
            reason: "ErrImagePull".into(),
            message: e.to_string(),
        }),
    }
}

/// Creates and starts the next instance of `c`, unless it is backing off;
/// returns whether the runtime changed.
fn start(
    rt: &dyn Runtime,
    pod: &Pod,
    p: &PodRef,
    sandbox_id: &str,
    c: &Container,
    observed: &mut Observed,
) -> Result<bool, CriError> {
    let (latest, _) = observed.instances(&c.name);
    let attempt = latest.map(|l| l.attempt() + 1).unwrap_or(0);
    if let Some(l) = latest {
        if l.state == ContainerState::Exited {
            let delay = backoff(l.attempt());
            let finished = l.finished_at.unwrap_or(l.created_at);
            if Utc::now() < finished + chrono::Duration::from_std(delay).unwrap_or_default() {
                observed.waiting.insert(
                    c.name.clone(),
                    Waiting {
                        reason: "CrashLoopBackOff".into(),
                        message: format!(
                            "back-off {}s restarting failed container={} pod={}_{}({})",
                            delay.as_secs(),
                            c.name,
                            p.name,
                            p.namespace,
                            p.uid
                        ),
                    },
                );
                return Ok(false);
            }
        }
    }
    if let Err(w) = ensure_image(rt, c) {
        observed.waiting.insert(c.name.clone(), w);
        return Ok(false);
    }
    let config = ContainerConfig {
        name: c.name.clone(),
        attempt,
        image: c.image.clone().unwrap_or_default(),
        command: c.command.clone().unwrap_or_default(),
        args: c.args.clone().unwrap_or_default(),
        working_dir: c.working_dir.clone(),
        envs: env_of(c, pod, observed),
        hostname: p.name.clone(),
        tty: c.tty.unwrap_or(false),
        stdin: c.stdin.unwrap_or(false),
        labels: BTreeMap::new(),
    };
    let id = match rt.create_container(sandbox_id, &config) {
        Ok(id) => id,
        Err(e) => {
            observed.waiting.insert(
                c.name.clone(),
                Waiting {
                    reason: "CreateContainerError".into(),
                    message: e.to_string(),
                },
            );
            return Ok(false);
        }
    };
    // A start failure shows as the instance's terminated state (exit 127/126).
    if let Err(e) = rt.start_container(&id) {
        tracing::info!(container = %c.name, pod = %p.name, "start failed: {e}");
    }
    // Older instances than the previous one are garbage.
    let mut mine: Vec<_> = observed
        .containers
        .iter()
        .filter(|x| x.name() == c.name)
        .collect();
    mine.sort_by_key(|x| x.attempt());
    if mine.len() > 1 {
        for old in &mine[..mine.len() - 1] {
            let _ = rt.remove_container(&old.id);
        }
    }
    Ok(true)
}

/// Stops every container of the pod (SIGTERM, `grace` seconds, SIGKILL, in parallel),
/// then its sandboxes, and removes them all.
pub fn kill_pod(
    rt: &dyn Runtime,
    labels: &BTreeMap<String, String>,
    grace: u32,
) -> Result<(), CriError> {
    let containers = rt.list_containers(labels)?;
    std::thread::scope(|s| {
        for c in containers
            .iter()
            .filter(|c| c.state == ContainerState::Running)
        {
            s.spawn(move || {
                if let Err(e) = rt.stop_container(&c.id, grace) {
                    tracing::warn!(container = %c.id, "stopping: {e}");
                }
            });
        }
    });
    for c in &containers {
        rt.remove_container(&c.id)?;
    }
    for s in rt.list_pod_sandboxes(labels)? {
        rt.stop_pod_sandbox(&s.id)?;
        rt.remove_pod_sandbox(&s.id)?;
    }
    Ok(())
}

/// The node a kubelet runs.
#[derive(Debug, Clone, Default)]
pub struct NodeRef {
    /// Its name.
    pub name: String,
    /// Its IP (the pods' hostIP).
    pub ip: Option<String>,
}

/// Shared state of the pod workers.
pub struct Ctx {
    /// The runtime.
    pub runtime: Arc<dyn Runtime>,
    /// The API client.
    pub client: kube::Client,
    /// The node.
    pub node: NodeRef,
}

/// Stops and removes the sandboxes (and containers) of this node's pods that are no
/// longer in the API: force-deleted, or deleted while the kubelet was down.
pub async fn remove_orphans(ctx: &Ctx) -> Result<(), SyncError> {
    let mine = BTreeMap::from([(cri::NODE_LABEL.to_string(), ctx.node.name.clone())]);
    let rt = ctx.runtime.clone();
    // The runtime first: a sandbox seen here belongs to a pod the API had before.
    let sandboxes = tokio::task::spawn_blocking(move || rt.list_pod_sandboxes(&mine)).await??;
    if sandboxes.is_empty() {
        return Ok(());
    }
    let api: kube::Api<Pod> = kube::Api::all(ctx.client.clone());
    let params =
        kube::api::ListParams::default().fields(&format!("spec.nodeName={}", ctx.node.name));
    let known: std::collections::HashSet<String> = api
        .list(&params)
        .await?
        .items
        .into_iter()
        .filter_map(|p| p.metadata.uid)
        .collect();
    for s in sandboxes {
        let Some(uid) = s.labels.get(cri::POD_UID_LABEL).cloned() else {
            continue;
        };
        if known.contains(&uid) {
            continue;
        }
        tracing::info!(pod_uid = %uid, "removing the containers of a deleted pod");
        let rt = ctx.runtime.clone();
        let labels = BTreeMap::from([(cri::POD_UID_LABEL.to_string(), uid)]);
        tokio::task::spawn_blocking(move || kill_pod(rt.as_ref(), &labels, 0)).await??;
    }
    Ok(())
}

/// A sync failure.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The runtime failed.
    #[error("runtime: {0}")]
    Runtime(#[from] CriError),
    /// The API failed.
    #[error("api: {0}")]
    Api(#[from] kube::Error),
    /// The blocking sync panicked.
    #[error("pod worker: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// The controller's reconcile: sync on a blocking thread, then report.
pub async fn reconcile(
    pod: Arc<Pod>,
    ctx: Arc<Ctx>,
) -> Result<kube::runtime::controller::Action, SyncError> {
    use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
    use kube::runtime::controller::Action;
    let name = pod.metadata.name.clone().unwrap_or_default();
    let namespace = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let api: kube::Api<Pod> = kube::Api::namespaced(ctx.client.clone(), &namespace);
    let (rt, p, node) = (ctx.runtime.clone(), pod.clone(), ctx.node.clone());
    let outcome = tokio::task::spawn_blocking(move || sync_pod(rt.as_ref(), &p, &node)).await??;
    match outcome {
        Outcome::Terminated => {
            let params = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions {
                    uid: pod.metadata.uid.clone(),
                    resource_version: None,
                }),
                ..Default::default()
            };
            match api.delete(&name, &params).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
            Ok(Action::await_change())
        }
        Outcome::Status(status) => {
            let terminal = matches!(status.phase.as_deref(), Some("Succeeded" | "Failed"));
            if pod.status.as_ref() != Some(status.as_ref()) {
                let patch = serde_json::json!({"status": status});
                api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
            }
            // Level-triggered: the runtime changes without API events, so look again.
            Ok(Action::requeue(Duration::from_secs(if terminal {
                10
            } else {
                1
            })))
        }
    }
}

/// Retries a failed sync shortly.
pub fn error_policy(
    pod: Arc<Pod>,
    error: &SyncError,
    _ctx: Arc<Ctx>,
) -> kube::runtime::controller::Action {
    tracing::warn!(pod = ?pod.metadata.name, "sync failed: {error}");
    kube::runtime::controller::Action::requeue(Duration::from_secs(2))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::FakeRuntime;

    fn pod(yaml: serde_json::Value) -> Pod {
        let mut pod: Pod = serde_json::from_value(yaml).unwrap();
        pod.metadata.name = Some("p".into());
        pod.metadata.namespace = Some("default".into());
        pod.metadata.uid = Some("uid-1".into());
        pod
    }

    fn status_of(outcome: Outcome) -> k8s_openapi::api::core::v1::PodStatus {
        match outcome {
            Outcome::Status(s) => *s,
            Outcome::Terminated => panic!("terminated"),
        }
    }

    #[test]
    fn init_containers_run_in_order_before_app_containers() {
        let rt = FakeRuntime::with_images(&["busybox:1"]);
        let mut p = pod(serde_json::json!({"spec": {
            "initContainers": [{"name": "i1", "image": "busybox:1"}, {"name": "i2", "image": "busybox:1"}],
            "containers": [{"name": "app", "image": "busybox:1"}]}}));
        let s = status_of(sync_pod(&rt, &p, &NodeRef::default()).unwrap());
        assert_eq!(s.phase.as_deref(), Some("Pending"));
        assert_eq!(
            rt.calls(),
            [
                "run_pod_sandbox",
                "create_container i1",
                "start_container i1"
            ]
        );
        // Still running: nothing new.
        p.status = Some(s);
        sync_pod(&rt, &p, &NodeRef::default()).unwrap();
        assert_eq!(rt.calls().len(), 3);
        rt.exit("i1", 0);
        sync_pod(&rt, &p, &NodeRef::default()).unwrap();
        assert_eq!(
            rt.calls()[3..],
            ["create_container i2", "start_container i2"]
        );
        rt.exit("i2", 0);
        let s = status_of(sync_pod(&rt, &p, &NodeRef::default()).unwrap());
        assert_eq!(
            rt.calls()[5..],
            ["create_container app", "start_container app"]
        );
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert_eq!(s.pod_ip.as_deref(), Some("10.0.0.2"));
    }

    #[test]
    fn env_takes_values_and_field_refs() {
        let p = pod(serde_json::json!({
        "metadata": {"labels": {"app": "web"}},
        "spec": {"nodeName": "n1", "containers": [{"name": "app", "image": "busybox:1", "env": [
            {"name": "A", "value": "1"},
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
        ]}]}}));
        let observed = Observed {
            pod_ip: Some("10.0.0.9".into()),
            ..Default::default()
        };
        let c = &p.spec.as_ref().unwrap().containers[0];
        let env: Vec<String> = env_of(c, &p, &observed)
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        assert_eq!(env, ["A=1", "POD=p", "IP=10.0.0.9", "NODE=n1", "APP=web"]);
    }

    #[test]
    fn a_failed_container_backs_off_before_restarting() {
        let rt = FakeRuntime::with_images(&["busybox:1"]);
        let p = pod(
            serde_json::json!({"spec": {"containers": [{"name": "app", "image": "busybox:1"}]}}),
        );
        sync_pod(&rt, &p, &NodeRef::default()).unwrap();
        rt.exit("app", 1);
        let s = status_of(sync_pod(&rt, &p, &NodeRef::default()).unwrap());
        let cs = &s.container_statuses.unwrap()[0];
        let waiting = cs.state.clone().unwrap().waiting.unwrap();
        assert_eq!(waiting.reason.as_deref(), Some("CrashLoopBackOff"));
        assert_eq!(
            waiting.message.as_deref(),
            Some("back-off 10s restarting failed container=app pod=p_default(uid-1)")
        );
        assert_eq!(
            cs.last_state.clone().unwrap().terminated.unwrap().exit_code,
            1
        );
        assert_eq!(s.phase.as_deref(), Some("Running"));
    }

    #[test]
    fn never_pull_of_a_missing_image_waits_with_err_image_never_pull() {
        let rt = FakeRuntime::with_images(&[]);
        let p = pod(serde_json::json!({"spec": {"containers": [
            {"name": "app", "image": "nothere:1", "imagePullPolicy": "Never"}]}}));
        let s = status_of(sync_pod(&rt, &p, &NodeRef::default()).unwrap());
        let waiting = s.container_statuses.unwrap()[0]
            .state
            .clone()
            .unwrap()
            .waiting
            .unwrap();
        assert_eq!(waiting.reason.as_deref(), Some("ErrImageNeverPull"));
        assert_eq!(
            waiting.message.as_deref(),
            Some("Container image \"nothere:1\" is not present with pull policy of Never")
        );
    }

    #[test]
    fn deletion_stops_with_the_grace_period_then_removes_everything() {
        let rt = FakeRuntime::with_images(&["busybox:1"]);
        let mut p = pod(
            serde_json::json!({"spec": {"terminationGracePeriodSeconds": 7,
            "containers": [{"name": "app", "image": "busybox:1"}]}}),
        );
        sync_pod(&rt, &p, &NodeRef::default()).unwrap();
        p.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            jiff::Timestamp::now(),
        ));
        assert!(matches!(
            sync_pod(&rt, &p, &NodeRef::default()).unwrap(),
            Outcome::Terminated
        ));
        let calls = rt.calls();
        assert!(
            calls.contains(&"stop_container app 7".to_string()),
            "{calls:?}"
        );
        assert!(calls.ends_with(&[
            "remove_container app".into(),
            "stop_pod_sandbox".into(),
            "remove_pod_sandbox".into()
        ]));
    }

    #[test]
    fn backoff_doubles_and_caps_at_five_minutes() {
        assert_eq!(backoff(0), Duration::from_secs(10));
        assert_eq!(backoff(1), Duration::from_secs(20));
        assert_eq!(backoff(2), Duration::from_secs(40));
        assert_eq!(backoff(5), Duration::from_secs(300));
        assert_eq!(backoff(40), Duration::from_secs(300));
    }
}
