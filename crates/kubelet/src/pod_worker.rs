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

fn env_of(c: &Container) -> Vec<(String, String)> {
    c.env
        .iter()
        .flatten()
        .filter_map(|e| e.value.clone().map(|v| (e.name.clone(), v)))
        .collect()
}

struct PodRef<'a> {
    pod: &'a Pod,
    name: String,
    namespace: String,
    uid: String,
}

/// Syncs one pod; blocking (runtime calls).
pub fn sync_pod(rt: &dyn Runtime, pod: &Pod, host_ip: Option<String>) -> Result<Outcome, CriError> {
    let meta = &pod.metadata;
    let p = PodRef {
        pod,
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
        host_ip,
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
        return Ok(Outcome::Status(Box::new(status::pod_status(pod, &observed))));
    }

    let sandbox = match sandbox {
        Some(s) if s.state == SandboxState::Ready => s,
        stale => {
            // A new sandbox means new namespaces: containers of the old one go with it.
            if let Some(old) = &stale {
                kill_pod(rt, &labels, 0)?;
                let _ = old;
            }
            let spec = pod.spec.clone().unwrap_or_default();
            let Some(first) = spec.containers.first() else {
                return Err(CriError::Runtime("pod has no containers".into()));
            };
            if let Err(w) = ensure_image(rt, first) {
                observed.waiting.insert(first.name.clone(), w);
                return Ok(Outcome::Status(Box::new(status::pod_status(pod, &observed))));
            }
            let config = PodSandboxConfig {
                name: p.name.clone(),
                namespace: p.namespace.clone(),
                uid: p.uid.clone(),
                attempt: sandboxes.len() as u32,
                hostname: p.name.clone(),
                image: first.image.clone().unwrap_or_default(),
                labels: BTreeMap::new(),
            };
            let id = rt.run_pod_sandbox(&config)?;
            observed.containers = rt.list_containers(&labels)?;
            rt.pod_sandbox_status(&id)?
        }
    };
    observed.sandbox_ready = true;
    observed.pod_ip = sandbox.ip.clone();

    let spec = pod.spec.clone().unwrap_or_default();
    let policy = spec.restart_policy.clone().unwrap_or_else(|| "Always".into());
    let mut changed = false;
    let mut initialized = true;
    for c in spec.init_containers.iter().flatten() {
        let (latest, _) = observed.instances(&c.name);
        match latest.map(|l| (l.state, l.exit_code)) {
            Some((ContainerState::Exited, 0)) => continue,
            Some((ContainerState::Exited, _)) if policy == "Never" => {}
            Some((ContainerState::Running | ContainerState::Created, _)) => {}
            _ => changed |= start(rt, &p, &sandbox.id, c, &mut observed)?,
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
                _ => changed |= start(rt, &p, &sandbox.id, c, &mut observed)?,
            }
        }
    }
    if changed {
        observed.containers = rt.list_containers(&labels)?;
    }
    observed.now = Utc::now();
    Ok(Outcome::Status(Box::new(status::pod_status(pod, &observed))))
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
    p: &PodRef<'_>,
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
    let _ = p.pod;
    let config = ContainerConfig {
        name: c.name.clone(),
        attempt,
        image: c.image.clone().unwrap_or_default(),
        command: c.command.clone().unwrap_or_default(),
        args: c.args.clone().unwrap_or_default(),
        working_dir: c.working_dir.clone(),
        envs: env_of(c),
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
    let mut mine: Vec<_> = observed.containers.iter().filter(|x| x.name() == c.name).collect();
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
pub fn kill_pod(rt: &dyn Runtime, labels: &BTreeMap<String, String>, grace: u32) -> Result<(), CriError> {
    let containers = rt.list_containers(labels)?;
    std::thread::scope(|s| {
        for c in containers.iter().filter(|c| c.state == ContainerState::Running) {
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

/// Shared state of the pod workers.
pub struct Ctx {
    /// The runtime.
    pub runtime: Arc<dyn Runtime>,
    /// The API client.
    pub client: kube::Client,
    /// The node's IP.
    pub host_ip: Option<String>,
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
    let namespace = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    let api: kube::Api<Pod> = kube::Api::namespaced(ctx.client.clone(), &namespace);
    let (rt, p, host_ip) = (ctx.runtime.clone(), pod.clone(), ctx.host_ip.clone());
    let outcome = tokio::task::spawn_blocking(move || sync_pod(rt.as_ref(), &p, host_ip)).await??;
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
            Ok(Action::requeue(Duration::from_secs(if terminal { 10 } else { 1 })))
        }
    }
}

/// Retries a failed sync shortly.
pub fn error_policy(pod: Arc<Pod>, error: &SyncError, _ctx: Arc<Ctx>) -> kube::runtime::controller::Action {
    tracing::warn!(pod = ?pod.metadata.name, "sync failed: {error}");
    kube::runtime::controller::Action::requeue(Duration::from_secs(2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps_at_five_minutes() {
        assert_eq!(backoff(0), Duration::from_secs(10));
        assert_eq!(backoff(1), Duration::from_secs(20));
        assert_eq!(backoff(2), Duration::from_secs(40));
        assert_eq!(backoff(5), Duration::from_secs(300));
        assert_eq!(backoff(40), Duration::from_secs(300));
    }
}
