//! The HorizontalPodAutoscaler controller (`pkg/controller/podautoscaler`), on
//! `autoscaling/v2` (v1 objects are the same objects, converted by the API server).
//!
//! Every sync period (`--horizontal-pod-autoscaler-sync-period`, 15s) each HPA is
//! reconciled: the target's `/scale` subresource gives the current replicas and the pod
//! selector (Deployments, ReplicaSets, StatefulSets, any custom resource with a scale
//! subresource); the pods and their resource metrics ([`metrics`]) give each metric's
//! proposal ([`replicas`]); the largest is stabilized and rate-limited ([`behavior`]) and
//! written back through `/scale`. The status reports the current and desired replicas,
//! the current metrics and the `AbleToScale`, `ScalingActive` and `ScalingLimited`
//! conditions with Kubernetes' reasons; a rescale is recorded as a `SuccessfulRescale`
//! Event.
//!
//! The recommendation history is kept in memory per HPA, as in Kubernetes. A status
//! update triggers a watch event, so an HPA synced less than a period ago waits for the
//! rest of its period (Kubernetes' fixed-interval queue).

pub mod behavior;
pub mod metrics;
pub mod replicas;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::autoscaling::v2::{
    HPAScalingRules, HorizontalPodAutoscaler, HorizontalPodAutoscalerCondition, MetricSpec,
};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, Patch, PatchParams};
use kube::core::{DynamicObject, GroupVersionKind};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt as _};
use serde_json::{json, Value};

use crate::events::{EventType, Recorder};
use behavior::{Behavior, Condition, History, Normalized, Policy, Rules, Select};
use metrics::{MetricsSource, ResourceMetricsApi};
use replicas::{CalcError, PodInfo};

/// The controller's settings (kube-controller-manager's `--horizontal-pod-autoscaler-*`).
#[derive(Debug, Clone)]
pub struct PodAutoscalerConfig {
    /// How often each HPA is synced (`--horizontal-pod-autoscaler-sync-period`, 15s).
    pub sync_period: Duration,
    /// The scale-down stabilization window of HPAs without one
    /// (`--horizontal-pod-autoscaler-downscale-stabilization`, 5m).
    pub downscale_stabilization: Duration,
    /// `--horizontal-pod-autoscaler-tolerance` (0.1).
    pub tolerance: f64,
}

impl Default for PodAutoscalerConfig {
    fn default() -> PodAutoscalerConfig {
        PodAutoscalerConfig {
            sync_period: Duration::from_secs(15),
            downscale_stabilization: Duration::from_secs(300),
            tolerance: replicas::TOLERANCE,
        }
    }
}

/// A failed sync.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API call failed.
    #[error("horizontal pod autoscaler {key}: {source}")]
    Api {
        /// `namespace/name`.
        key: String,
        /// The error.
        source: kube::Error,
    },
}

/// What the controller remembers of one HPA.
#[derive(Debug, Default)]
struct Memory {
    history: History,
    last_sync: Option<i64>,
}

struct Ctx {
    client: Client,
    metrics: Arc<dyn MetricsSource>,
    recorder: Recorder,
    config: PodAutoscalerConfig,
    memory: Mutex<HashMap<String, Memory>>,
}

/// Runs the HPA controller until its watch ends.
pub async fn run(client: Client, config: PodAutoscalerConfig) {
    let ctx = Arc::new(Ctx {
        metrics: Arc::new(ResourceMetricsApi::new(client.clone())),
        recorder: Recorder::new(client.clone(), "horizontal-pod-autoscaler"),
        client: client.clone(),
        config,
        memory: Mutex::new(HashMap::new()),
    });
    Controller::new(
        Api::<HorizontalPodAutoscaler>::all(client),
        watcher::Config::default(),
    )
    .run(reconcile, error_policy, ctx)
    .for_each(|_| async {})
    .await;
}

fn error_policy(_: Arc<HorizontalPodAutoscaler>, err: &Error, ctx: Arc<Ctx>) -> Action {
    tracing::warn!("{err}");
    Action::requeue(ctx.config.sync_period)
}

fn now_secs() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// `Pods`/`Percent` policies and the rest of one direction's rules, defaults filled in.
fn rules(spec: Option<&HPAScalingRules>, default: Rules) -> Rules {
    let Some(spec) = spec else { return default };
    Rules {
        stabilization_window: spec
            .stabilization_window_seconds
            .map(i64::from)
            .unwrap_or(default.stabilization_window),
        select: match spec.select_policy.as_deref() {
            Some("Min") => Select::Min,
            Some("Disabled") => Select::Disabled,
            Some(_) => Select::Max,
            None => default.select,
        },
        policies: match &spec.policies {
            Some(policies) => policies
                .iter()
                .map(|p| {
                    let period = i64::from(p.period_seconds);
                    if p.type_ == "Percent" {
                        Policy::Percent {
                            value: p.value,
                            period,
                        }
                    } else {
                        Policy::Pods {
                            value: p.value,
                            period,
                        }
                    }
                })
                .collect(),
            None => default.policies,
        },
    }
}

/// The HPA's scaling behavior, with Kubernetes' defaults.
fn behavior_of(hpa: &HorizontalPodAutoscaler, downscale_window: i64) -> Behavior {
    match hpa.spec.behavior.as_ref() {
        None => Behavior::Legacy { downscale_window },
        Some(b) => Behavior::Rules {
            up: rules(b.scale_up.as_ref(), Rules::default_scale_up()),
            down: rules(
                b.scale_down.as_ref(),
                Rules::default_scale_down(downscale_window),
            ),
        },
    }
}

/// Seconds since the epoch of a Time.
fn secs(t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> i64 {
    t.0.as_second()
}

/// The pod as the replica calculator sees it, for `resource`.
fn pod_info(pod: &Pod, resource: &str) -> PodInfo {
    let status = pod.status.clone().unwrap_or_default();
    let ready = status
        .conditions
        .as_ref()
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .map(|c| {
            (
                c.status == "True",
                c.last_transition_time.as_ref().map(secs),
            )
        });
    let mut request = Ok(0);
    for c in pod.spec.iter().flat_map(|s| s.containers.iter()) {
        let amount = c
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get(resource));
        match (amount, &mut request) {
            (Some(q), Ok(total)) => *total += skiff_quantity::milli(&q.0),
            (None, Ok(_)) => request = Err(c.name.clone()),
            _ => {}
        }
    }
    PodInfo {
        name: pod.name_any(),
        phase: crate::pod_util::phase(pod).to_string(),
        deleting: pod.metadata.deletion_timestamp.is_some(),
        ready,
        start_time: status.start_time.as_ref().map(secs),
        request,
    }
}

/// A metric's outcome: the proposal and its `currentMetrics` entry.
struct MetricResult {
    replicas: i32,
    status: Value,
    description: String,
}

/// Why a metric gave no proposal: the `ScalingActive` reason and message.
struct MetricFailure {
    reason: &'static str,
    message: String,
}

/// What one sync observed of the target.
struct Observed<'a> {
    namespace: &'a str,
    /// The scale's label selector.
    selector: &'a str,
    /// The pods it selects.
    pods: &'a [Pod],
    /// The scale's `status.replicas`.
    current: i32,
}

/// One metric's proposal (resource metrics; other types are reported as invalid).
async fn compute_metric(
    source: &dyn MetricsSource,
    spec: &MetricSpec,
    observed: &Observed<'_>,
    tolerance: f64,
    now: i64,
) -> Result<MetricResult, MetricFailure> {
    let Some(resource) = spec.resource.as_ref().filter(|_| spec.type_ == "Resource") else {
        return Err(MetricFailure {
            reason: "InvalidMetricSourceType",
            message: format!(
                "the HPA was unable to compute the replica count: unsupported metric source type {:?}",
                spec.type_
            ),
        });
    };
    let name = resource.name.as_str();
    let failed = |message: String| MetricFailure {
        reason: "FailedGetResourceMetric",
        message: format!("the HPA was unable to compute the replica count: {message}"),
    };
    let metrics = source
        .pod_metrics(observed.namespace, observed.selector, name)
        .await
        .map_err(|e| failed(format!("failed to get {name} utilization: {e}")))?;
    let infos: Vec<PodInfo> = observed.pods.iter().map(|p| pod_info(p, name)).collect();
    let current = observed.current;
    let target = &resource.target;
    let calc_failed = |e: CalcError| failed(format!("failed to get {name} utilization: {e}"));
    if let Some(utilization) = target.average_utilization {
        let r =
            replicas::for_utilization(name, current, utilization, &infos, &metrics, tolerance, now)
                .map_err(calc_failed)?;
        return Ok(MetricResult {
            replicas: r.replicas,
            status: json!({"type": "Resource", "resource": {"name": name, "current": {
                "averageUtilization": r.utilization.unwrap_or(0),
                "averageValue": format!("{}m", r.average_value),
            }}}),
            description: format!("{name} resource utilization (percentage of request)"),
        });
    }
    let Some(average) = target.average_value.as_ref() else {
        return Err(MetricFailure {
            reason: "FailedGetResourceMetric",
            message: format!(
                "the HPA was unable to compute the replica count: invalid resource metric source: neither a utilization target nor a value target was set for {name}"
            ),
        });
    };
    let r = replicas::for_average_value(
        name,
        current,
        skiff_quantity::milli(&average.0),
        &infos,
        &metrics,
        tolerance,
        now,
    )
    .map_err(calc_failed)?;
    Ok(MetricResult {
        replicas: r.replicas,
        status: json!({"type": "Resource", "resource": {"name": name, "current": {
            "averageValue": format!("{}m", r.average_value),
        }}}),
        description: format!("{name} resource"),
    })
}

/// A condition in the API's form, keeping its transition time when its status is
/// unchanged.
fn api_condition(
    existing: &[HorizontalPodAutoscalerCondition],
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    now: &str,
) -> Value {
    let status = if status { "True" } else { "False" };
    let since = existing
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .and_then(|c| c.last_transition_time.as_ref())
        .map(|t| t.0.to_string())
        .unwrap_or_else(|| now.to_string());
    json!({"type": type_, "status": status, "reason": reason, "message": message,
           "lastTransitionTime": since})
}

fn from(c: &Condition) -> (&'static str, bool, &'static str, String) {
    (c.type_, c.status, c.reason, c.message.to_string())
}

async fn reconcile(hpa: Arc<HorizontalPodAutoscaler>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let key = crate::pod_util::key(&hpa.metadata);
    let now = now_secs();
    let period = ctx.config.sync_period.as_secs() as i64;
    {
        let memory = ctx.memory.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(last) = memory.get(&key).and_then(|m| m.last_sync) {
            if now - last < period {
                let wait = (last + period - now).max(1) as u64;
                return Ok(Action::requeue(Duration::from_secs(wait)));
            }
        }
    }
    if hpa.metadata.deletion_timestamp.is_some() {
        ctx.memory
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
        return Ok(Action::await_change());
    }
    sync(&hpa, &ctx, &key, now).await?;
    Ok(Action::requeue(ctx.config.sync_period))
}

/// One sync of the HPA (`reconcileAutoscaler`).
async fn sync(hpa: &HorizontalPodAutoscaler, ctx: &Ctx, key: &str, now: i64) -> Result<(), Error> {
    let api_error = |source| Error::Api {
        key: key.to_string(),
        source,
    };
    let namespace = hpa.namespace().unwrap_or_default();
    let spec = hpa.spec.clone();
    let min = spec.min_replicas.unwrap_or(1);
    let max = spec.max_replicas;
    let existing = hpa
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let now_text = jiff::Timestamp::from_second(now)
        .map(|t| t.to_string())
        .unwrap_or_default();
    let mut conditions: Vec<(&'static str, bool, &'static str, String)> = Vec::new();
    let target = &spec.scale_target_ref;
    let (group, version) = match target.api_version.as_deref().unwrap_or("").rsplit_once('/') {
        Some((g, v)) => (g.to_string(), v.to_string()),
        None => (
            String::new(),
            target.api_version.clone().unwrap_or_default(),
        ),
    };
    let gvk = GroupVersionKind::gvk(&group, &version, &target.kind);
    let fetched = match kube::discovery::pinned_kind(&ctx.client, &gvk).await {
        Ok((resource, _)) => {
            let api =
                Api::<DynamicObject>::namespaced_with(ctx.client.clone(), &namespace, &resource);
            match api.get_scale(&target.name).await {
                Ok(scale) => Ok((api, scale)),
                Err(e) => Err(e.to_string()),
            }
        }
        Err(e) => Err(e.to_string()),
    };
    let (scale_api, scale) = match fetched {
        Ok(both) => both,
        Err(e) => {
            let message =
                format!("the HPA controller was unable to get the target's current scale: {e}");
            ctx.recorder
                .record(hpa, EventType::Warning, "FailedGetScale", e.clone());
            conditions.push(("AbleToScale", false, "FailedGetScale", message));
            let status = json!({
                "currentReplicas": hpa.status.as_ref().and_then(|s| s.current_replicas).unwrap_or(0),
                "desiredReplicas": hpa.status.as_ref().map(|s| s.desired_replicas).unwrap_or(0),
            });
            return write_status(
                ctx,
                hpa,
                &namespace,
                status,
                &conditions,
                &existing,
                &now_text,
                now,
                key,
            )
            .await;
        }
    };
    conditions.push((
        "AbleToScale",
        true,
        "SucceededGetScale",
        "the HPA controller was able to get the target's current scale".into(),
    ));
    let current = scale.status.as_ref().map(|s| s.replicas).unwrap_or(0);
    let spec_replicas = scale.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
    let selector = scale
        .status
        .as_ref()
        .and_then(|s| s.selector.clone())
        .unwrap_or_default();
    let mut current_metrics = Vec::new();
    let mut rescale_reason = String::new();
    let desired: i32;
    if spec_replicas == 0 && min != 0 {
        desired = 0;
        conditions.push((
            "ScalingActive",
            false,
            "ScalingDisabled",
            "scaling is disabled since the replica count of the target is zero".into(),
        ));
    } else if current > max {
        rescale_reason = "Current number of replicas above Spec.MaxReplicas".into();
        desired = max;
    } else if current < min {
        rescale_reason = "Current number of replicas below Spec.MinReplicas".into();
        desired = min;
    } else if current == 0 {
        rescale_reason = "Current number of replicas must be greater than 0".into();
        desired = 1;
    } else {
        if selector.is_empty() {
            conditions.push((
                "ScalingActive",
                false,
                "InvalidSelector",
                "the HPA target's scale is missing a selector".into(),
            ));
            let status = json!({"currentReplicas": current, "desiredReplicas": current});
            return write_status(
                ctx,
                hpa,
                &namespace,
                status,
                &conditions,
                &existing,
                &now_text,
                now,
                key,
            )
            .await;
        }
        let pods: Vec<Pod> = Api::<Pod>::namespaced(ctx.client.clone(), &namespace)
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(api_error)?
            .items;
        let specs = spec
            .metrics
            .clone()
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| {
                // autoscaling/v2's default: 80% cpu.
                vec![
                    serde_json::from_value(json!({"type": "Resource", "resource": {
                "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}))
                    .unwrap_or_default(),
                ]
            });
        let mut proposal: Option<(i32, String)> = None;
        let mut failure: Option<MetricFailure> = None;
        for metric in &specs {
            let observed = Observed {
                namespace: &namespace,
                selector: &selector,
                pods: &pods,
                current,
            };
            match compute_metric(
                ctx.metrics.as_ref(),
                metric,
                &observed,
                ctx.config.tolerance,
                now,
            )
            .await
            {
                Ok(r) => {
                    current_metrics.push(r.status);
                    if proposal.as_ref().is_none_or(|(p, _)| r.replicas > *p) {
                        proposal = Some((r.replicas, r.description));
                    }
                }
                Err(f) => {
                    current_metrics.push(json!({"type": ""}));
                    failure.get_or_insert(f);
                }
            }
        }
        current_metrics.retain(|m| m["type"] != "");
        let Some((proposed, description)) =
            proposal.filter(|_| failure.is_none() || specs.len() > 1)
        else {
            let f = failure.unwrap_or(MetricFailure {
                reason: "FailedGetResourceMetric",
                message: "the HPA was unable to compute the replica count: no metrics".into(),
            });
            ctx.recorder
                .record(hpa, EventType::Warning, f.reason, f.message.clone());
            conditions.push(("ScalingActive", false, f.reason, f.message));
            let status = json!({"currentReplicas": current, "desiredReplicas": current,
                                "currentMetrics": current_metrics});
            return write_status(
                ctx,
                hpa,
                &namespace,
                status,
                &conditions,
                &existing,
                &now_text,
                now,
                key,
            )
            .await;
        };
        conditions.push((
            "ScalingActive",
            true,
            "ValidMetricFound",
            format!(
                "the HPA was able to successfully calculate a replica count from {description}"
            ),
        ));
        let behavior = behavior_of(hpa, ctx.config.downscale_stabilization.as_secs() as i64);
        let normalized: Normalized = {
            let mut memory = ctx.memory.lock().unwrap_or_else(|e| e.into_inner());
            let entry = memory.entry(key.to_string()).or_default();
            behavior::normalize(
                &behavior,
                &mut entry.history,
                current,
                proposed,
                (min, max),
                now,
            )
        };
        // AbleToScale from stabilization replaces the scale's.
        conditions.retain(|c| c.0 != "AbleToScale");
        conditions.push(from(&normalized.able_to_scale));
        conditions.push(from(&normalized.scaling_limited));
        desired = normalized.replicas;
        if desired > current {
            rescale_reason = format!("{description} above target");
        } else if desired < current {
            rescale_reason = "All metrics below target".into();
        }
    }
    let rescale = desired != current && !rescale_reason.is_empty();
    let mut status = json!({"currentReplicas": current, "desiredReplicas": current,
                            "currentMetrics": current_metrics});
    if rescale {
        let patch = Patch::Merge(json!({"spec": {"replicas": desired}}));
        match scale_api
            .patch_scale(&target.name, &PatchParams::default(), &patch)
            .await
        {
            Ok(_) => {
                conditions.retain(|c| c.0 != "AbleToScale");
                conditions.push((
                    "AbleToScale",
                    true,
                    "SucceededRescale",
                    format!("the HPA controller was able to update the target scale to {desired}"),
                ));
                ctx.recorder.record(
                    hpa,
                    EventType::Normal,
                    "SuccessfulRescale",
                    format!("New size: {desired}; reason: {rescale_reason}"),
                );
                {
                    let mut memory = ctx.memory.lock().unwrap_or_else(|e| e.into_inner());
                    let entry = memory.entry(key.to_string()).or_default();
                    entry.history.record_scale(now, current, desired);
                }
                status["desiredReplicas"] = json!(desired);
                status["lastScaleTime"] = json!(now_text);
            }
            Err(e) => {
                conditions.retain(|c| c.0 != "AbleToScale");
                conditions.push((
                    "AbleToScale",
                    false,
                    "FailedUpdateScale",
                    format!("the HPA controller was unable to update the target scale: {e}"),
                ));
                ctx.recorder.record(
                    hpa,
                    EventType::Warning,
                    "FailedRescale",
                    format!("New size: {desired}; reason: {rescale_reason}; error: {e}"),
                );
            }
        }
    } else if spec_replicas == 0 && min != 0 {
        status["desiredReplicas"] = json!(0);
    }
    write_status(
        ctx,
        hpa,
        &namespace,
        status,
        &conditions,
        &existing,
        &now_text,
        now,
        key,
    )
    .await
}

/// Writes the status (with the conditions in Kubernetes' order) and remembers the sync.
#[allow(clippy::too_many_arguments)]
async fn write_status(
    ctx: &Ctx,
    hpa: &HorizontalPodAutoscaler,
    namespace: &str,
    mut status: Value,
    conditions: &[(&'static str, bool, &'static str, String)],
    existing: &[HorizontalPodAutoscalerCondition],
    now_text: &str,
    now: i64,
    key: &str,
) -> Result<(), Error> {
    let order = ["AbleToScale", "ScalingActive", "ScalingLimited"];
    let mut by_type: BTreeMap<usize, Value> = BTreeMap::new();
    // Conditions this sync did not decide stay as they were (Kubernetes sets conditions
    // one by one on the previous status).
    for c in existing {
        if let Some(index) = order.iter().position(|t| *t == c.type_) {
            by_type.insert(index, serde_json::to_value(c).unwrap_or_default());
        }
    }
    for (type_, ok, reason, message) in conditions {
        let index = order.iter().position(|t| t == type_).unwrap_or(order.len());
        by_type.insert(
            index,
            api_condition(existing, type_, *ok, reason, message, now_text),
        );
    }
    status["conditions"] = json!(by_type.into_values().collect::<Vec<_>>());
    if let Some(generation) = hpa.metadata.generation {
        status["observedGeneration"] = json!(generation);
    }
    if status.get("lastScaleTime").is_none() {
        if let Some(t) = hpa.status.as_ref().and_then(|s| s.last_scale_time.as_ref()) {
            status["lastScaleTime"] = json!(t.0.to_string());
        }
    }
    {
        let mut memory = ctx.memory.lock().unwrap_or_else(|e| e.into_inner());
        memory.entry(key.to_string()).or_default().last_sync = Some(now);
    }
    let api: Api<HorizontalPodAutoscaler> = Api::namespaced(ctx.client.clone(), namespace);
    api.patch_status(
        &hpa.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({"status": status})),
    )
    .await
    .map(drop)
    .map_err(|source| Error::Api {
        key: key.to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::future::BoxFuture;
    use replicas::PodMetric;

    /// Metrics from a table, as the metrics API would answer.
    struct FixedMetrics(BTreeMap<String, PodMetric>);

    impl MetricsSource for FixedMetrics {
        fn pod_metrics<'a>(
            &'a self,
            _: &'a str,
            _: &'a str,
            _: &'a str,
        ) -> BoxFuture<'a, Result<BTreeMap<String, PodMetric>, String>> {
            let metrics = self.0.clone();
            Box::pin(async move { Ok(metrics) })
        }
    }

    fn running_pod(name: &str, cpu_request: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"containers": [{"name": "app", "image": "busybox",
                "resources": {"requests": {"cpu": cpu_request}}}]},
            "status": {"phase": "Running", "startTime": "2026-01-01T00:00:00Z",
                "conditions": [{"type": "Ready", "status": "True",
                    "lastTransitionTime": "2026-01-01T00:00:05Z"}]},
        }))
        .unwrap()
    }

    fn cpu_metric(target: Value) -> MetricSpec {
        serde_json::from_value(json!({"type": "Resource",
            "resource": {"name": "cpu", "target": target}}))
        .unwrap()
    }

    #[tokio::test]
    async fn a_utilization_metric_proposes_replicas_through_the_source() {
        let now = jiff::Timestamp::from_second(1_767_229_200)
            .unwrap()
            .as_second();
        let source = FixedMetrics(BTreeMap::from([(
            "a".to_string(),
            PodMetric {
                value: 250,
                timestamp: now - 5,
                window: 15,
            },
        )]));
        let pods = [running_pod("a", "100m")];
        let observed = Observed {
            namespace: "default",
            selector: "app=x",
            pods: &pods,
            current: 1,
        };
        let metric = cpu_metric(json!({"type": "Utilization", "averageUtilization": 50}));
        let r = compute_metric(&source, &metric, &observed, 0.1, now)
            .await
            .ok()
            .unwrap();
        assert_eq!(r.replicas, 5);
        assert_eq!(r.status["resource"]["current"]["averageUtilization"], 250);
        assert_eq!(
            r.description,
            "cpu resource utilization (percentage of request)"
        );
        // An average value target: 250m against 100m per pod.
        let metric = cpu_metric(json!({"type": "AverageValue", "averageValue": "100m"}));
        let r = compute_metric(&source, &metric, &observed, 0.1, now)
            .await
            .ok()
            .unwrap();
        assert_eq!(r.replicas, 3);
        // A pod without a cpu request cannot be measured against a utilization target.
        let mut bare = running_pod("a", "1");
        bare.spec.as_mut().unwrap().containers[0].resources = None;
        let metric = cpu_metric(json!({"type": "Utilization", "averageUtilization": 50}));
        let err = compute_metric(
            &source,
            &metric,
            &Observed {
                pods: &[bare],
                ..observed
            },
            0.1,
            now,
        )
        .await
        .err()
        .unwrap();
        assert_eq!(err.reason, "FailedGetResourceMetric");
        assert!(err
            .message
            .contains("missing request for cpu in container app of Pod a"));
    }

    #[test]
    fn behavior_defaults_fill_what_the_spec_leaves_out() {
        let hpa: HorizontalPodAutoscaler = serde_json::from_value(json!({
            "metadata": {"name": "h"},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "d"}, "maxReplicas": 3,
                "behavior": {"scaleDown": {"selectPolicy": "Disabled"}}},
        }))
        .unwrap();
        let Behavior::Rules { up, down } = behavior_of(&hpa, 300) else {
            panic!("expected rules");
        };
        assert_eq!(up, Rules::default_scale_up());
        assert_eq!(down.select, Select::Disabled);
        assert_eq!(down.stabilization_window, 300);
        let mut plain = hpa.clone();
        plain.spec.behavior = None;
        assert_eq!(
            behavior_of(&plain, 60),
            Behavior::Legacy {
                downscale_window: 60
            }
        );
    }
}
