//! The pod side of a simulated node: bound pods become Running and Ready; containers that
//! say how they end ([`super::exit`]) terminate then, restarting as the pod's
//! `restartPolicy` asks or leaving the pod `Succeeded`/`Failed`; pods being deleted are
//! removed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, Client, ResourceExt as _};
use serde_json::json;

use super::exit;

/// A failed pod update.
#[derive(Debug, thiserror::Error)]
#[error("simulated pod {pod}: {source}")]
pub struct PodError {
    pod: String,
    source: kube::Error,
}

/// The simulated nodes' shared state.
pub struct Ctx {
    /// The API.
    pub client: Client,
    /// Names of the simulated nodes.
    pub nodes: HashSet<String>,
    /// Each node's pod CIDR (`10.hi.lo.0/24`).
    pub cidrs: BTreeMap<String, (u8, u8)>,
    /// The next host number to hand out per node.
    pub next_ip: Mutex<HashMap<String, u32>>,
}

/// Whether the pod should be reported ready: unless annotated
/// `skiff.dev/simulate-ready: "false"`, as a failing readiness probe would make it.
fn wants_ready(pod: &Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(exit::READY_ANNOTATION))
        .is_none_or(|v| v != "false")
}

/// Whether the pod is Running with the readiness it should have.
fn running_as_wanted(pod: &Pod) -> bool {
    let status = pod.status.as_ref();
    let ready = status
        .iter()
        .flat_map(|s| s.conditions.iter().flatten())
        .any(|c| c.type_ == "Ready" && c.status == "True");
    status.and_then(|s| s.phase.as_deref()) == Some("Running") && ready == wants_ready(pod)
}

impl Ctx {
    fn allocate_ip(&self, node: &str) -> String {
        let (hi, lo) = self.cidrs.get(node).copied().unwrap_or((0, 0));
        let mut next = self.next_ip.lock().expect("ip lock");
        let n = next.entry(node.to_owned()).or_insert(1);
        *n = *n % 253 + 1;
        format!("10.{hi}.{lo}.{}", *n + 1)
    }
}

/// Reconciles one pod: ignores pods of other nodes, finishes deletions, reports Running.
pub async fn reconcile(pod: Arc<Pod>, ctx: Arc<Ctx>) -> Result<Action, PodError> {
    let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) else {
        return Ok(Action::await_change());
    };
    if !ctx.nodes.contains(&node) {
        return Ok(Action::await_change());
    }
    let namespace = pod.namespace().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let err = |source| PodError {
        pod: format!("{namespace}/{}", pod.name_any()),
        source,
    };
    if pod.metadata.deletion_timestamp.is_some() {
        let dp = crate::pod_util::force_delete_params(&pod);
        return match api.delete(&pod.name_any(), &dp).await {
            Ok(_) => Ok(Action::await_change()),
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {
                Ok(Action::await_change())
            }
            Err(e) => Err(err(e)),
        };
    }
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded" | "Failed")) {
        return Ok(Action::await_change());
    }
    let exits = exit::pod_exits(&pod);
    if running_as_wanted(&pod) {
        let Some(exits) = exits else {
            return Ok(Action::await_change());
        };
        return finish_or_wait(&pod, &exits, &api).await.map_err(err);
    }
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let ip = pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .unwrap_or_else(|| ctx.allocate_ip(&node));
    let host_ip = ctx
        .cidrs
        .get(&node)
        .map(|(hi, lo)| format!("10.{hi}.{lo}.1"))
        .unwrap_or_default();
    let ready = wants_ready(&pod);
    let old_statuses = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.clone())
        .unwrap_or_default();
    let containers: Vec<serde_json::Value> = pod
        .spec
        .iter()
        .flat_map(|s| &s.containers)
        .map(|c| {
            let old = old_statuses.iter().find(|s| s.name == c.name);
            // A readiness change keeps the container's start.
            let started_at = old
                .and_then(|s| s.state.as_ref()?.running.as_ref()?.started_at.clone())
                .map_or(json!(now), |t| json!(t));
            json!({
                "name": c.name,
                "image": c.image,
                "imageID": format!("simulated://{}", c.image.as_deref().unwrap_or("")),
                "containerID": format!("skiff://{}-{}", pod.metadata.uid.as_deref().unwrap_or(""), c.name),
                "ready": ready,
                "started": true,
                "restartCount": old.map_or(0, |s| s.restart_count),
                "state": {"running": {"startedAt": started_at}},
            })
        })
        .collect();
    let condition = |type_: &str| {
        let status = if matches!(type_, "Ready" | "ContainersReady") && !ready {
            "False"
        } else {
            "True"
        };
        let reason = (status == "False").then_some("ContainersNotReady");
        json!({"type": type_, "status": status, "reason": reason, "lastProbeTime": null,
            "lastTransitionTime": now})
    };
    let patch = json!({"status": {
        "phase": "Running",
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "startTime": pod.status.as_ref().and_then(|s| s.start_time.clone()).map_or(json!(now), |t| json!(t)),
        "conditions": [
            condition("PodReadyToStartContainers"),
            condition("Initialized"),
            condition("Ready"),
            condition("ContainersReady"),
            condition("PodScheduled"),
        ],
        "containerStatuses": containers,
    }});
    api.patch_status(
        &pod.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map_err(err)?;
    Ok(match exits.and_then(|e| e.iter().map(|e| e.after).max()) {
        Some(after) => Action::requeue(after),
        None => Action::await_change(),
    })
}

fn rfc3339(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Once every container's run is over, terminates the pod (restartPolicy `Never`, or
/// `OnFailure` with all codes 0) or restarts its containers; else waits.
async fn finish_or_wait(
    pod: &Pod,
    exits: &[exit::Exit],
    api: &Api<Pod>,
) -> Result<Action, kube::Error> {
    let now = jiff::Timestamp::now();
    let statuses = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.clone())
        .unwrap_or_default();
    let started = statuses
        .iter()
        .filter_map(|c| c.state.as_ref()?.running.as_ref()?.started_at.as_ref())
        .map(|t| t.0)
        .max()
        .unwrap_or(now);
    let longest = exits.iter().map(|e| e.after).max().unwrap_or_default();
    let done_at = started + jiff::SignedDuration::try_from(longest).unwrap_or_default();
    if now < done_at {
        return Ok(Action::requeue(crate::pod_util::until(now, done_at)));
    }
    let policy = pod
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always");
    let all_ok = exits.iter().all(|e| e.code == 0);
    let terminal = policy == "Never" || (policy == "OnFailure" && all_ok);
    let terminated = |name: &str, code: i32, container_id: &serde_json::Value| {
        json!({"terminated": {
            "exitCode": code,
            "reason": if code == 0 { "Completed" } else { "Error" },
            "startedAt": rfc3339(started),
            "finishedAt": rfc3339(now),
            "containerID": container_id,
        }, "name": name})
    };
    let containers: Vec<serde_json::Value> = pod
        .spec
        .iter()
        .flat_map(|s| &s.containers)
        .zip(exits)
        .map(|(c, e)| {
            let old = statuses.iter().find(|s| s.name == c.name);
            let id = json!(old.and_then(|s| s.container_id.clone()));
            let restarts = old.map_or(0, |s| s.restart_count);
            let state = terminated(&c.name, e.code, &id);
            let mut status = json!({
                "name": c.name,
                "image": c.image,
                "imageID": format!("simulated://{}", c.image.as_deref().unwrap_or("")),
                "containerID": id,
                "restartCount": restarts,
            });
            if terminal {
                status["ready"] = json!(false);
                status["started"] = json!(false);
                status["state"] = json!({"terminated": state["terminated"]});
            } else {
                status["ready"] = json!(true);
                status["started"] = json!(true);
                status["restartCount"] = json!(restarts + 1);
                status["lastState"] = json!({"terminated": state["terminated"]});
                status["state"] = json!({"running": {"startedAt": rfc3339(now)}});
            }
            status
        })
        .collect();
    let patch = if terminal {
        let condition = |type_: &str, status: &str, reason: Option<&str>| {
            let old = pod
                .status
                .iter()
                .flat_map(|s| s.conditions.iter().flatten())
                .find(|c| c.type_ == type_)
                .and_then(|c| c.last_transition_time.as_ref().map(|t| rfc3339(t.0)));
            let changed = matches!(
                type_,
                "Ready" | "ContainersReady" | "PodReadyToStartContainers"
            );
            let time = if changed { Some(rfc3339(now)) } else { old };
            json!({"type": type_, "status": status, "reason": reason, "lastProbeTime": null,
                "lastTransitionTime": time})
        };
        json!({"status": {
            "phase": if all_ok { "Succeeded" } else { "Failed" },
            "conditions": [
                condition("PodReadyToStartContainers", "False", None),
                condition("Initialized", "True", if all_ok { Some("PodCompleted") } else { None }),
                condition("Ready", "False", Some("PodCompleted")),
                condition("ContainersReady", "False", Some("PodCompleted")),
                condition("PodScheduled", "True", None),
            ],
            "containerStatuses": containers,
        }})
    } else {
        json!({"status": {"containerStatuses": containers}})
    };
    api.patch_status(
        &pod.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(if terminal {
        Action::await_change()
    } else {
        Action::requeue(longest)
    })
}

/// Retries a failed update shortly.
pub fn error_policy(_: Arc<Pod>, err: &PodError, _: Arc<Ctx>) -> Action {
    tracing::debug!("{err}");
    Action::requeue(Duration::from_secs(1))
}
