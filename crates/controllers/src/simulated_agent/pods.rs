//! The pod side of a simulated node: bound pods become Running and Ready; pods being
//! deleted are removed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::controller::Action;
use kube::{Api, Client, ResourceExt as _};
use serde_json::json;

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

fn running_and_ready(pod: &Pod) -> bool {
    let status = pod.status.as_ref();
    status.and_then(|s| s.phase.as_deref()) == Some("Running")
        && status
            .iter()
            .flat_map(|s| s.conditions.iter().flatten())
            .any(|c| c.type_ == "Ready" && c.status == "True")
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
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: pod.metadata.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        };
        return match api.delete(&pod.name_any(), &dp).await {
            Ok(_) => Ok(Action::await_change()),
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {
                Ok(Action::await_change())
            }
            Err(e) => Err(err(e)),
        };
    }
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if running_and_ready(&pod) || matches!(phase, Some("Succeeded" | "Failed")) {
        return Ok(Action::await_change());
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
    let containers: Vec<serde_json::Value> = pod
        .spec
        .iter()
        .flat_map(|s| &s.containers)
        .map(|c| {
            json!({
                "name": c.name,
                "image": c.image,
                "imageID": format!("simulated://{}", c.image.as_deref().unwrap_or("")),
                "containerID": format!("skiff://{}-{}", pod.metadata.uid.as_deref().unwrap_or(""), c.name),
                "ready": true,
                "started": true,
                "restartCount": 0,
                "state": {"running": {"startedAt": now}},
            })
        })
        .collect();
    let condition = |type_: &str| json!({"type": type_, "status": "True", "lastProbeTime": null, "lastTransitionTime": now});
    let patch = json!({"status": {
        "phase": "Running",
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "startTime": now,
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
    Ok(Action::await_change())
}

/// Retries a failed update shortly.
pub fn error_policy(_: Arc<Pod>, err: &PodError, _: Arc<Ctx>) -> Action {
    tracing::debug!("{err}");
    Action::requeue(Duration::from_secs(1))
}
