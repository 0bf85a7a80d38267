//! Pod status as the kubelet reports it (pkg/kubelet/kubelet_pods.go's
//! `generateAPIPodStatus` and `getPhase`, pkg/kubelet/status's conditions):
//! a pure function of the pod spec and what the runtime shows.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::cri::{self, ContainerState as CriState};

/// Prefix of `containerID` in statuses, the runtime's name as CRI reports it.
pub const CONTAINER_ID_PREFIX: &str = "skiff://";

/// The pod's phase (`PodPhase`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Accepted; some container has not started yet (or init containers run).
    Pending,
    /// Bound, every container created, at least one running or restarting.
    Running,
    /// Every container terminated with success and will not restart.
    Succeeded,
    /// Every container terminated, at least one in failure, and none restarts.
    Failed,
}

impl Phase {
    /// The API's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Running => "Running",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
        }
    }

    /// Succeeded or Failed: nothing of the pod runs again.
    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed)
    }
}

/// A reason to report a container waiting, decided by the pod worker
/// (`CrashLoopBackOff`, `ErrImageNeverPull`, `ErrImagePull`, `CreateContainerError` ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    /// The reason.
    pub reason: String,
    /// The message.
    pub message: String,
}

/// What the pod worker observed, the input of [`pod_status`].
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// The runtime's containers of this pod (all instances).
    pub containers: Vec<cri::ContainerStatus>,
    /// Whether the sandbox holds the pod's namespaces.
    pub sandbox_ready: bool,
    /// The pod IP, once known.
    pub pod_ip: Option<String>,
    /// The node's IP.
    pub host_ip: Option<String>,
    /// Waiting reasons decided by the worker, by container name.
    pub waiting: BTreeMap<String, Waiting>,
    /// Probe results of running containers, by container name (absent: no probe ran yet).
    pub probes: BTreeMap<String, crate::probes::ProbeState>,
    /// Now (the clock is an input, so tests are deterministic).
    pub now: DateTime<Utc>,
}

impl Observed {
    /// The newest instance of the named container, and the one before it.
    pub fn instances(
        &self,
        name: &str,
    ) -> (Option<&cri::ContainerStatus>, Option<&cri::ContainerStatus>) {
        let mut all: Vec<&cri::ContainerStatus> = self
            .containers
            .iter()
            .filter(|c| c.name() == name)
            .collect();
        all.sort_by_key(|c| (c.attempt(), c.created_at));
        let latest = all.pop();
        (latest, all.pop())
    }

    /// What the probes concluded of container `spec`'s instance `id`: their last results
    /// for it, or the state before any probe ran.
    pub fn probe_state(&self, spec: &Container, id: &str) -> crate::probes::ProbeState {
        self.probes
            .get(&spec.name)
            .filter(|p| p.container_id == id)
            .cloned()
            .unwrap_or_else(|| crate::probes::initial_state(spec, id))
    }

    /// Whether any of `containers` was ever made (the pod got past its init sequence).
    pub fn any_made(&self, containers: &[Container]) -> bool {
        containers
            .iter()
            .any(|c| self.instances(&c.name).0.is_some())
    }
}

fn time(t: DateTime<Utc>) -> Time {
    Time(jiff::Timestamp::from_second(t.timestamp()).unwrap_or(jiff::Timestamp::UNIX_EPOCH))
}

fn terminated(c: &cri::ContainerStatus) -> ContainerStateTerminated {
    ContainerStateTerminated {
        exit_code: c.exit_code,
        reason: Some(c.reason.clone()).filter(|r| !r.is_empty()),
        message: Some(c.message.clone()).filter(|m| !m.is_empty()),
        started_at: c.started_at.map(time),
        finished_at: c.finished_at.map(time),
        container_id: Some(format!("{CONTAINER_ID_PREFIX}{}", c.id)),
        ..Default::default()
    }
}

fn waiting(reason: &str, message: Option<String>) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.to_string()),
            message,
        }),
        ..Default::default()
    }
}

/// One container's status; `default_waiting` is the reason shown before it has run.
fn container_status(
    spec: &Container,
    observed: &Observed,
    default_waiting: &str,
) -> ContainerStatus {
    let (latest, previous) = observed.instances(&spec.name);
    let decided = observed.waiting.get(&spec.name);
    let state = match (decided, latest) {
        (Some(w), _) => waiting(&w.reason, Some(w.message.clone()).filter(|m| !m.is_empty())),
        (None, Some(c)) => match c.state {
            CriState::Running => ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: c.started_at.map(time),
                }),
                ..Default::default()
            },
            CriState::Exited => ContainerState {
                terminated: Some(terminated(c)),
                ..Default::default()
            },
            CriState::Created | CriState::Unknown => waiting("ContainerCreating", None),
        },
        (None, None) => waiting(default_waiting, None),
    };
    // While waiting to restart, the last run is the newest instance itself.
    let last = match (decided, latest) {
        (Some(_), Some(c)) if c.state == CriState::Exited => Some(c),
        _ => previous.filter(|p| p.state == CriState::Exited),
    };
    let running = state.running.is_some();
    // Readiness and startup probes decide `ready` and `started` of a running instance.
    let probed = latest
        .filter(|_| running)
        .map(|c| observed.probe_state(spec, &c.id));
    let started = probed.as_ref().is_some_and(|p| p.started);
    let ready = probed.as_ref().is_some_and(|p| p.started && p.ready);
    ContainerStatus {
        name: spec.name.clone(),
        image: spec.image.clone().unwrap_or_default(),
        image_id: latest.map(|c| c.image_ref.clone()).unwrap_or_default(),
        container_id: latest.map(|c| format!("{CONTAINER_ID_PREFIX}{}", c.id)),
        ready,
        started: Some(started),
        restart_count: latest.map(|c| c.attempt() as i32).unwrap_or(0),
        state: Some(state),
        last_state: Some(match last {
            Some(c) => ContainerState {
                terminated: Some(terminated(c)),
                ..Default::default()
            },
            None => ContainerState::default(),
        }),
        ..Default::default()
    }
}

fn exited_ok(s: &ContainerStatus) -> bool {
    s.state
        .as_ref()
        .and_then(|st| st.terminated.as_ref())
        .is_some_and(|t| t.exit_code == 0)
}

/// `getPhase`: the pod's phase from its containers' statuses.
pub fn phase(restart_policy: &str, init: &[&ContainerStatus], app: &[ContainerStatus]) -> Phase {
    let failed_init = init.iter().any(|s| {
        s.state
            .as_ref()
            .and_then(|st| st.terminated.as_ref())
            .is_some_and(|t| t.exit_code != 0)
    });
    if !init.iter().all(|s| exited_ok(s)) {
        return if failed_init && restart_policy == "Never" {
            Phase::Failed
        } else {
            Phase::Pending
        };
    }
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for s in app {
        let state = s.state.clone().unwrap_or_default();
        if state.running.is_some() {
            running += 1;
        } else if let Some(t) = state.terminated {
            stopped += 1;
            if t.exit_code == 0 {
                succeeded += 1;
            }
        } else if s
            .last_state
            .as_ref()
            .is_some_and(|l| l.terminated.is_some())
        {
            stopped += 1;
        } else {
            waiting += 1;
        }
    }
    if waiting > 0 {
        Phase::Pending
    } else if running > 0 {
        Phase::Running
    } else if stopped > 0 {
        match restart_policy {
            "Always" => Phase::Running,
            _ if stopped == succeeded => Phase::Succeeded,
            "Never" => Phase::Failed,
            _ => Phase::Running,
        }
    } else {
        Phase::Pending
    }
}

fn condition(
    old: &[PodCondition],
    type_: &str,
    ok: bool,
    reason: Option<&str>,
    message: Option<String>,
    now: DateTime<Utc>,
) -> PodCondition {
    let status = if ok { "True" } else { "False" };
    // The transition time moves only when the status changes.
    let since = old
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .and_then(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| time(now));
    PodCondition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: reason.map(str::to_string),
        message,
        last_transition_time: Some(since),
        ..Default::default()
    }
}

fn names_where(statuses: &[ContainerStatus], f: impl Fn(&ContainerStatus) -> bool) -> Vec<String> {
    statuses
        .iter()
        .filter(|s| f(s))
        .map(|s| s.name.clone())
        .collect()
}

/// Whether a status has nothing left to wait for: the pod runs, every app container
/// runs and is ready, every init container finished, no ephemeral container waits.
/// Such a pod changes only through its runtime or its probes (which the PLEG sees) or
/// its object (which the watch sees).
pub fn settled(status: &PodStatus) -> bool {
    let running = |s: &ContainerStatus| s.state.as_ref().is_some_and(|st| st.running.is_some());
    let done = |s: &ContainerStatus| s.state.as_ref().is_some_and(|st| st.terminated.is_some());
    status.phase.as_deref() == Some(Phase::Running.as_str())
        && status
            .container_statuses
            .iter()
            .flatten()
            .all(|s| running(s) && s.ready)
        && status
            .init_container_statuses
            .iter()
            .flatten()
            // A running init container of a pod whose app containers all run is a sidecar.
            .all(|s| done(s) || (running(s) && s.ready))
        && status
            .ephemeral_container_statuses
            .iter()
            .flatten()
            .all(|s| running(s) || done(s))
}

/// Whether init container `c` is a sidecar (`restartPolicy: Always`): it runs beside the
/// app containers, restarted whenever it exits, and counts as done for the init sequence
/// once it has started.
pub fn is_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

/// Whether an init container no longer holds up the ones after it: a sidecar that runs
/// and has started (its startup probe passed), any other that exited with 0.
fn init_done(sidecar: bool, s: &ContainerStatus) -> bool {
    if sidecar {
        s.state.as_ref().is_some_and(|st| st.running.is_some()) && s.started == Some(true)
    } else {
        exited_ok(s)
    }
}

/// The pod's status from its spec, its previous status and what the runtime shows.
pub fn pod_status(pod: &Pod, observed: &Observed) -> PodStatus {
    let spec = pod.spec.clone().unwrap_or_default();
    let old = pod.status.clone().unwrap_or_default();
    let restart_policy = spec.restart_policy.as_deref().unwrap_or("Always");
    let init_specs = spec.init_containers.clone().unwrap_or_default();
    let init: Vec<ContainerStatus> = init_specs
        .iter()
        .map(|c| container_status(c, observed, "PodInitializing"))
        .collect();
    let sidecars: Vec<bool> = init_specs.iter().map(is_sidecar).collect();
    // Sidecars run on beside the app containers; the others must have finished.
    let regular_init: Vec<&ContainerStatus> = init
        .iter()
        .zip(&sidecars)
        .filter(|(_, sidecar)| !**sidecar)
        .map(|(s, _)| s)
        .collect();
    let pending_init: Vec<String> = init
        .iter()
        .zip(&sidecars)
        .filter(|(s, sidecar)| !init_done(**sidecar, s))
        .map(|(s, _)| s.name.clone())
        .collect();
    // Once an app container was made, the pod stays initialized when a sidecar restarts.
    let app_made = observed.any_made(&spec.containers);
    let initialized =
        pending_init.is_empty() || (regular_init.iter().all(|s| exited_ok(s)) && app_made);
    // App containers wait for the init containers first.
    let app_default = if initialized {
        "ContainerCreating"
    } else {
        "PodInitializing"
    };
    let app: Vec<ContainerStatus> = spec
        .containers
        .iter()
        .map(|c| container_status(c, observed, app_default))
        .collect();
    let phase = match phase(restart_policy, &regular_init, &app) {
        // A sidecar that has not started yet holds the app containers back.
        Phase::Running | Phase::Succeeded if !initialized => Phase::Pending,
        phase => phase,
    };
    // Ephemeral containers are reported, but count for neither phase nor readiness.
    let ephemeral: Vec<ContainerStatus> = crate::ephemeral::containers(&spec)
        .iter()
        .map(|c| container_status(c, observed, "ContainerCreating"))
        .collect();
    let old_conditions = old.conditions.clone().unwrap_or_default();
    let now = observed.now;
    let mut conditions: Vec<PodCondition> = old_conditions
        .iter()
        // Conditions others own: the scheduler's, and a disruption's (the taint
        // manager's, an eviction's).
        .filter(|c| matches!(c.type_.as_str(), "PodScheduled" | "DisruptionTarget"))
        .cloned()
        .collect();
    conditions.push(condition(
        &old_conditions,
        "PodReadyToStartContainers",
        observed.sandbox_ready,
        None,
        None,
        now,
    ));
    let incomplete = if initialized {
        Vec::new()
    } else {
        pending_init
    };
    conditions.push(if incomplete.is_empty() {
        condition(&old_conditions, "Initialized", true, None, None, now)
    } else {
        condition(
            &old_conditions,
            "Initialized",
            false,
            Some("ContainersNotInitialized"),
            Some(format!(
                "containers with incomplete status: [{}]",
                incomplete.join(" ")
            )),
            now,
        )
    });
    // Sidecars' readiness counts with the app containers'.
    let mut unready: Vec<String> = init
        .iter()
        .zip(&sidecars)
        .filter(|(s, sidecar)| **sidecar && !s.ready)
        .map(|(s, _)| s.name.clone())
        .collect();
    unready.extend(names_where(&app, |s| !s.ready));
    for type_ in ["ContainersReady", "Ready"] {
        conditions.push(if phase.is_terminal() {
            condition(
                &old_conditions,
                type_,
                false,
                Some("PodCompleted"),
                None,
                now,
            )
        } else if unready.is_empty() {
            condition(&old_conditions, type_, true, None, None, now)
        } else {
            condition(
                &old_conditions,
                type_,
                false,
                Some("ContainersNotReady"),
                Some(format!(
                    "containers with unready status: [{}]",
                    unready.join(" ")
                )),
                now,
            )
        });
    }
    let pod_ip = observed.pod_ip.clone().or(old.pod_ip.clone());
    PodStatus {
        phase: Some(phase.as_str().to_string()),
        conditions: Some(conditions),
        host_ip: observed.host_ip.clone(),
        host_ips: observed.host_ip.clone().map(|ip| vec![HostIP { ip }]),
        pod_ips: pod_ip.clone().map(|ip| vec![PodIP { ip }]),
        pod_ip,
        start_time: old.start_time.clone().or(Some(time(now))),
        init_container_statuses: (!init.is_empty()).then_some(init),
        container_statuses: Some(app),
        ephemeral_container_statuses: (!ephemeral.is_empty()).then_some(ephemeral),
        qos_class: Some(crate::qos::of_pod(pod).as_str().to_string()),
        ..old
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(restart: &str, names: &[&str]) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "default", "uid": "u"},
            "spec": {"restartPolicy": restart, "containers":
                names.iter().map(|n| serde_json::json!({"name": n, "image": "busybox"})).collect::<Vec<_>>()},
        }))
        .unwrap()
    }

    fn instance(name: &str, attempt: u32, state: CriState, code: i32) -> cri::ContainerStatus {
        let now = Utc::now();
        cri::ContainerStatus {
            id: format!("{name}{attempt}"),
            state,
            image: "busybox".into(),
            image_ref: "sha256:1".into(),
            created_at: now,
            started_at: Some(now),
            finished_at: (state == CriState::Exited).then_some(now),
            exit_code: code,
            reason: match (state, code) {
                (CriState::Exited, 0) => "Completed".into(),
                (CriState::Exited, _) => "Error".into(),
                _ => String::new(),
            },
            message: String::new(),
            labels: BTreeMap::from([
                (cri::CONTAINER_NAME_LABEL.to_string(), name.to_string()),
                (cri::ATTEMPT_LABEL.to_string(), attempt.to_string()),
            ]),
        }
    }

    fn observed(containers: Vec<cri::ContainerStatus>) -> Observed {
        Observed {
            containers,
            sandbox_ready: true,
            pod_ip: Some("10.0.0.2".into()),
            host_ip: Some("192.168.1.2".into()),
            now: Utc::now(),
            ..Default::default()
        }
    }

    fn condition_of<'a>(s: &'a PodStatus, type_: &str) -> &'a PodCondition {
        s.conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == type_)
            .unwrap()
    }

    #[test]
    fn no_containers_yet_is_pending_container_creating() {
        let s = pod_status(&pod("Always", &["a"]), &observed(vec![]));
        assert_eq!(s.phase.as_deref(), Some("Pending"));
        let cs = &s.container_statuses.as_ref().unwrap()[0];
        assert_eq!(
            cs.state
                .as_ref()
                .unwrap()
                .waiting
                .as_ref()
                .unwrap()
                .reason
                .as_deref(),
            Some("ContainerCreating")
        );
        let ready = condition_of(&s, "Ready");
        assert_eq!(ready.reason.as_deref(), Some("ContainersNotReady"));
        assert_eq!(
            ready.message.as_deref(),
            Some("containers with unready status: [a]")
        );
    }

    #[test]
    fn running_containers_make_a_ready_running_pod() {
        let s = pod_status(
            &pod("Always", &["a", "b"]),
            &observed(vec![
                instance("a", 0, CriState::Running, 0),
                instance("b", 0, CriState::Running, 0),
            ]),
        );
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert_eq!(condition_of(&s, "Ready").status, "True");
        assert_eq!(s.pod_ips.as_ref().unwrap()[0].ip, "10.0.0.2");
        assert_eq!(s.qos_class.as_deref(), Some("BestEffort"));
    }

    #[test]
    fn exit_zero_with_never_is_succeeded_completed() {
        let s = pod_status(
            &pod("Never", &["a"]),
            &observed(vec![instance("a", 0, CriState::Exited, 0)]),
        );
        assert_eq!(s.phase.as_deref(), Some("Succeeded"));
        let t = s.container_statuses.as_ref().unwrap()[0]
            .state
            .clone()
            .unwrap()
            .terminated
            .unwrap();
        assert_eq!(t.reason.as_deref(), Some("Completed"));
        assert_eq!(
            condition_of(&s, "Ready").reason.as_deref(),
            Some("PodCompleted")
        );
    }

    #[test]
    fn failure_with_never_is_failed_and_with_always_running() {
        let c = vec![instance("a", 0, CriState::Exited, 1)];
        assert_eq!(
            pod_status(&pod("Never", &["a"]), &observed(c.clone()))
                .phase
                .as_deref(),
            Some("Failed")
        );
        assert_eq!(
            pod_status(&pod("OnFailure", &["a"]), &observed(c.clone()))
                .phase
                .as_deref(),
            Some("Running")
        );
        assert_eq!(
            pod_status(&pod("Always", &["a"]), &observed(c))
                .phase
                .as_deref(),
            Some("Running")
        );
    }

    #[test]
    fn an_oom_kill_shows_as_oom_killed_137_in_state_then_last_state() {
        let mut killed = instance("a", 0, CriState::Exited, 137);
        killed.reason = "OOMKilled".into();
        let s = pod_status(&pod("Never", &["a"]), &observed(vec![killed.clone()]));
        assert_eq!(s.phase.as_deref(), Some("Failed"));
        let t = s.container_statuses.as_ref().unwrap()[0]
            .state
            .clone()
            .unwrap()
            .terminated
            .unwrap();
        assert_eq!((t.reason.as_deref(), t.exit_code), (Some("OOMKilled"), 137));
        let s = pod_status(
            &pod("Always", &["a"]),
            &observed(vec![killed, instance("a", 1, CriState::Running, 0)]),
        );
        let last = s.container_statuses.as_ref().unwrap()[0]
            .last_state
            .clone()
            .unwrap()
            .terminated
            .unwrap();
        assert_eq!(
            (last.reason.as_deref(), last.exit_code),
            (Some("OOMKilled"), 137)
        );
    }

    #[test]
    fn restarted_container_reports_last_state_and_count() {
        let s = pod_status(
            &pod("Always", &["a"]),
            &observed(vec![
                instance("a", 0, CriState::Exited, 2),
                instance("a", 1, CriState::Running, 0),
            ]),
        );
        let cs = &s.container_statuses.as_ref().unwrap()[0];
        assert_eq!(cs.restart_count, 1);
        assert_eq!(
            cs.last_state.clone().unwrap().terminated.unwrap().exit_code,
            2
        );
    }
}
