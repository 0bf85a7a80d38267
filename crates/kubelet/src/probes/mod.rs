//! Container probes, as the kubelet's prober manager runs them: one tokio task per
//! probe of each running container, on its own timer (`initialDelaySeconds`,
//! `periodSeconds`, `timeoutSeconds`), counting consecutive results against
//! `successThreshold`/`failureThreshold`. Results are only recorded here; the pod
//! worker reads them at its next sync (level-triggered): readiness drives the
//! container's `ready`, a startup probe gates the other two and `started`, and a
//! failed liveness (or startup) probe asks the worker to restart the container.

pub mod handler;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod, Probe};

use crate::events::{EventSink, EventType, PodEvent};
use crate::Runtime;
use handler::{Outcome, Target};

/// The three kinds of probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeKind {
    /// Restarts the container when it fails.
    Liveness,
    /// Decides whether the container is ready for traffic.
    Readiness,
    /// Holds the other two until the container has started.
    Startup,
}

impl ProbeKind {
    /// As events name it (`Liveness probe failed: ...`).
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeKind::Liveness => "Liveness",
            ProbeKind::Readiness => "Readiness",
            ProbeKind::Startup => "Startup",
        }
    }
}

/// What the probes of one running container have concluded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProbeState {
    /// The container instance the results are about.
    pub container_id: String,
    /// The startup probe passed (or there is none).
    pub started: bool,
    /// The readiness probe passes (or there is none).
    pub ready: bool,
    /// Set when the liveness or startup probe failed `failureThreshold` times: the
    /// container must be restarted.
    pub restart: Option<ProbeKind>,
}

/// Consecutive-result counting: the result flips after `successThreshold` successes or
/// `failureThreshold` failures in a row.
#[derive(Debug, Clone)]
pub struct Thresholds {
    success: u32,
    failure: u32,
    run_ok: u32,
    run_failed: u32,
    result: Option<bool>,
}

impl Thresholds {
    /// Thresholds of `probe` (Kubernetes' defaults: 1 and 3), starting from `initial`.
    pub fn of(probe: &Probe, initial: Option<bool>) -> Thresholds {
        Thresholds {
            success: probe.success_threshold.unwrap_or(1).max(1) as u32,
            failure: probe.failure_threshold.unwrap_or(3).max(1) as u32,
            run_ok: 0,
            run_failed: 0,
            result: initial,
        }
    }

    /// Counts one result; returns the new result when it changes.
    pub fn record(&mut self, ok: bool) -> Option<bool> {
        if ok {
            self.run_ok += 1;
            self.run_failed = 0;
        } else {
            self.run_failed += 1;
            self.run_ok = 0;
        }
        let next = if ok && self.run_ok >= self.success {
            Some(true)
        } else if !ok && self.run_failed >= self.failure {
            Some(false)
        } else {
            self.result
        };
        if next != self.result {
            self.result = next;
            return next;
        }
        None
    }
}

/// Runs one probe's action once.
pub fn run_probe(probe: &Probe, target: &Target<'_>) -> Outcome {
    let timeout = Duration::from_secs(probe.timeout_seconds.unwrap_or(1).max(1) as u64);
    if let Some(e) = &probe.exec {
        handler::exec(target, e.command.as_deref().unwrap_or_default(), timeout)
    } else if let Some(h) = &probe.http_get {
        handler::http_get(target, h, timeout)
    } else if let Some(t) = &probe.tcp_socket {
        handler::tcp(target, t, timeout)
    } else if let Some(g) = &probe.grpc {
        handler::grpc(target, g.port, g.service.as_deref().unwrap_or(""), timeout)
    } else {
        Outcome::Success(String::new())
    }
}

struct Entry {
    container_id: String,
    state: Arc<Mutex<ProbeState>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Entry {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The probe workers of every pod on the node.
pub struct ProbeManager {
    handle: Option<tokio::runtime::Handle>,
    runtime: Arc<dyn Runtime>,
    events: Arc<dyn EventSink>,
    entries: Mutex<HashMap<(String, String), Entry>>,
}

fn has_probes(c: &Container) -> bool {
    c.liveness_probe.is_some() || c.readiness_probe.is_some() || c.startup_probe.is_some()
}

/// The state of a container before any probe ran.
pub fn initial_state(c: &Container, container_id: &str) -> ProbeState {
    let started = c.startup_probe.is_none();
    ProbeState {
        container_id: container_id.into(),
        started,
        ready: c.readiness_probe.is_none(),
        restart: None,
    }
}

impl ProbeManager {
    /// Probes run on `handle`'s runtime (none: probes never run, for unit tests of syncs).
    pub fn new(
        handle: Option<tokio::runtime::Handle>,
        runtime: Arc<dyn Runtime>,
        events: Arc<dyn EventSink>,
    ) -> ProbeManager {
        ProbeManager {
            handle,
            runtime,
            events,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Probes exactly the `running` containers (spec, runtime id) of the pod: starts
    /// workers for new instances, stops those of instances that are gone.
    pub fn sync(&self, pod: &Pod, running: &[(&Container, String)], pod_ip: Option<&str>) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let mut entries = self.entries.lock().unwrap();
        entries.retain(|(u, name), e| {
            *u != uid
                || running
                    .iter()
                    .any(|(c, id)| c.name == *name && *id == e.container_id)
        });
        let Some(handle) = &self.handle else {
            return;
        };
        let pod = Arc::new(pod.clone());
        for (c, id) in running {
            if !has_probes(c) || entries.contains_key(&(uid.clone(), c.name.clone())) {
                continue;
            }
            let state = Arc::new(Mutex::new(initial_state(c, id)));
            let mut tasks = Vec::new();
            for (kind, probe) in [
                (ProbeKind::Startup, &c.startup_probe),
                (ProbeKind::Liveness, &c.liveness_probe),
                (ProbeKind::Readiness, &c.readiness_probe),
            ] {
                let Some(probe) = probe.clone() else { continue };
                let worker = Worker {
                    kind,
                    probe,
                    pod: pod.clone(),
                    container: Arc::new((*c).clone()),
                    container_id: id.clone(),
                    pod_ip: pod_ip.map(str::to_string),
                    state: state.clone(),
                    runtime: self.runtime.clone(),
                    events: self.events.clone(),
                };
                tasks.push(handle.spawn(worker.run()));
            }
            entries.insert(
                (uid.clone(), c.name.clone()),
                Entry {
                    container_id: id.clone(),
                    state,
                    tasks,
                },
            );
        }
    }

    /// The probe states of the pod's containers, by container name.
    pub fn states(&self, uid: &str) -> BTreeMap<String, ProbeState> {
        self.entries
            .lock()
            .unwrap()
            .iter()
            .filter(|((u, _), _)| u == uid)
            .map(|((_, name), e)| (name.clone(), e.state.lock().unwrap().clone()))
            .collect()
    }

    /// Stops every probe of the pod.
    pub fn remove_pod(&self, uid: &str) {
        self.entries.lock().unwrap().retain(|(u, _), _| u != uid);
    }
}

/// One probe of one container instance.
struct Worker {
    kind: ProbeKind,
    probe: Probe,
    pod: Arc<Pod>,
    container: Arc<Container>,
    container_id: String,
    pod_ip: Option<String>,
    state: Arc<Mutex<ProbeState>>,
    runtime: Arc<dyn Runtime>,
    events: Arc<dyn EventSink>,
}

impl Worker {
    async fn run(self) {
        let secs =
            |v: Option<i32>, default: i32| Duration::from_secs(v.unwrap_or(default).max(0) as u64);
        let period = secs(self.probe.period_seconds, 10).max(Duration::from_secs(1));
        tokio::time::sleep(secs(self.probe.initial_delay_seconds, 0)).await;
        let initial = match self.kind {
            ProbeKind::Liveness => Some(true),
            ProbeKind::Readiness => Some(false),
            ProbeKind::Startup => None,
        };
        let mut thresholds = Thresholds::of(&self.probe, initial);
        loop {
            let gated = self.kind != ProbeKind::Startup && !self.state.lock().unwrap().started;
            if !gated {
                let outcome = self.probe_once().await;
                if let Outcome::Failure(message) = &outcome {
                    self.events.emit(PodEvent::new(
                        &self.pod,
                        Some(&self.container.name),
                        EventType::Warning,
                        "Unhealthy",
                        format!("{} probe failed: {message}", self.kind.as_str()),
                    ));
                }
                if let Some(result) = thresholds.record(outcome.ok()) {
                    let mut st = self.state.lock().unwrap();
                    match (self.kind, result) {
                        (ProbeKind::Readiness, r) => st.ready = r,
                        (ProbeKind::Startup, true) => {
                            st.started = true;
                            return;
                        }
                        (kind, false) => {
                            st.restart = Some(kind);
                            return;
                        }
                        (ProbeKind::Liveness, true) => {}
                    }
                }
            }
            tokio::time::sleep(period).await;
        }
    }

    async fn probe_once(&self) -> Outcome {
        let (probe, container, id, ip, rt) = (
            self.probe.clone(),
            self.container.clone(),
            self.container_id.clone(),
            self.pod_ip.clone(),
            self.runtime.clone(),
        );
        tokio::task::spawn_blocking(move || {
            let target = Target {
                runtime: rt.as_ref(),
                container_id: &id,
                container: &container,
                pod_ip: ip.as_deref(),
            };
            run_probe(&probe, &target)
        })
        .await
        .unwrap_or_else(|e| Outcome::Failure(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cri::{ContainerConfig, PodSandboxConfig, RuntimeService as _};
    use crate::fake::{FakeRuntime, RecordedEvents};

    #[test]
    fn thresholds_flip_after_consecutive_results() {
        let probe: Probe = serde_json::from_value(
            serde_json::json!({"successThreshold": 2, "failureThreshold": 2}),
        )
        .unwrap();
        let mut t = Thresholds::of(&probe, Some(false));
        assert_eq!(t.record(true), None);
        assert_eq!(t.record(true), Some(true));
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(true), None);
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(false), Some(false));
        assert_eq!(t.record(false), None);
    }

    #[test]
    fn failing_probes_restart_and_unready_with_events() {
        let tokio_rt = tokio::runtime::Runtime::new().unwrap();
        let rt = Arc::new(FakeRuntime::with_images(&["busybox"]));
        let sandbox = rt.run_pod_sandbox(&PodSandboxConfig::default()).unwrap();
        let live = rt
            .create_container(
                &sandbox,
                &ContainerConfig {
                    name: "live".into(),
                    ..Default::default()
                },
            )
            .unwrap();
        let ready = rt
            .create_container(
                &sandbox,
                &ContainerConfig {
                    name: "ready".into(),
                    ..Default::default()
                },
            )
            .unwrap();
        rt.start_container(&live).unwrap();
        rt.start_container(&ready).unwrap();
        rt.set_exec_result("live", 1, "not alive");
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u"},
            "spec": {"containers": [
                {"name": "live", "livenessProbe": {"exec": {"command": ["check"]}, "periodSeconds": 1, "failureThreshold": 1}},
                {"name": "ready", "readinessProbe": {"exec": {"command": ["check"]}, "periodSeconds": 1}},
            ]}}))
        .unwrap();
        let events = Arc::new(RecordedEvents::default());
        let manager =
            ProbeManager::new(Some(tokio_rt.handle().clone()), rt.clone(), events.clone());
        let spec = pod.spec.clone().unwrap();
        let running = [
            (&spec.containers[0], live.clone()),
            (&spec.containers[1], ready.clone()),
        ];
        manager.sync(&pod, &running, Some("10.0.0.2"));
        let states = manager.states("u");
        assert!(!states["ready"].ready, "not ready before the first success");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let states = manager.states("u");
            if states["live"].restart == Some(ProbeKind::Liveness) && states["ready"].ready {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{states:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(events
            .list()
            .contains(&"Unhealthy: Liveness probe failed: not alive".to_string()));
        // A new instance gets fresh workers; the old one's go.
        manager.sync(&pod, &running[1..], None);
        assert_eq!(manager.states("u").len(), 1);
        manager.remove_pod("u");
        assert!(manager.states("u").is_empty());
    }
}
