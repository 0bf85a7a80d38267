//! Pod workers: level-triggered syncs of one pod's spec (desired) against the
//! runtime's sandbox and containers (actual), as pkg/kubelet/pod_workers.go and
//! kuberuntime's `computePodActions`/`SyncPod` do.
//!
//! The worker orchestrates; each concern has its module: [`crate::env`] (a
//! container's environment), [`crate::volumes`] (the pod's volumes on the node),
//! [`crate::probes`] (probe workers whose results the next sync reads),
//! [`crate::hooks`] (postStart, preStop), [`crate::events`].

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use k8s_openapi::api::core::v1::{Container, ContainerStateWaiting, Pod};

use crate::cgroups::PodCgroups;
use crate::cri::{
    self, ContainerConfig, ContainerState, CriError, Mount, PodSandboxConfig, SandboxState,
};
use crate::env::Downward;
use crate::events::{EventSink, EventType, PodEvent};
use crate::objects::ObjectSource;
use crate::probes::handler::Target;
use crate::probes::{ProbeKind, ProbeManager};
use crate::security_context;
use crate::status::{self, Observed, Waiting};
use crate::volumes::{self, HostVolume, Mounter};
use crate::Runtime;

/// How often a pod's API-data volumes (configMap, secret, projected, downwardAPI) are
/// refreshed: the kubelet's `--sync-frequency` default.
pub const DEFAULT_SYNC_FREQUENCY: Duration = Duration::from_secs(60);
/// How often a pod whose status is settled (every container running and ready, nothing
/// left to report) is synced when nothing happens to it: changes in the runtime and
/// the probes' conclusions reach it within a second through the [`crate::pleg`]
/// instead (the kubelet's periodic resync is its `--sync-frequency`, a minute).
pub const STEADY_RESYNC: Duration = Duration::from_secs(10);
/// Environment variable setting [`STEADY_RESYNC`] in seconds (`1` syncs every pod every
/// second, as before the PLEG: for comparisons).
pub const STEADY_RESYNC_ENV: &str = "SKIFF_KUBELET_STEADY_RESYNC";
/// How soon a pod that is not settled yet is synced again.
const UNSETTLED_RESYNC: Duration = Duration::from_secs(1);
/// The time a container gets after its preStop hook, at least (as the kubelet gives).
const MIN_GRACE_AFTER_PRE_STOP: u32 = 2;

/// What a sync leaves for the API.
#[derive(Debug)]
pub enum Outcome {
    /// Report this status.
    Status(Box<k8s_openapi::api::core::v1::PodStatus>),
    /// The pod was being deleted and nothing of it runs any more: delete the object.
    Terminated,
}

fn should_restart(policy: &str, exit_code: i32) -> bool {
    match policy {
        "Never" => false,
        "OnFailure" => exit_code != 0,
        _ => true,
    }
}

struct PodRef {
    name: String,
    namespace: String,
    uid: String,
}

/// A pod's volumes as last set up.
struct PodVolumes {
    volumes: BTreeMap<String, HostVolume>,
    synced: Instant,
}

/// The node a kubelet runs.
#[derive(Debug, Clone, Default)]
pub struct NodeRef {
    /// Its name.
    pub name: String,
    /// Its IP (the pods' hostIP).
    pub ip: Option<String>,
    /// What it offers (a container's resources default to it in the downward API).
    pub capacity: Option<crate::node::Capacity>,
}

/// The services a [`Worker`] uses, each behind a trait.
pub struct Services {
    /// The container runtime.
    pub runtime: Arc<dyn Runtime>,
    /// API reads (ConfigMaps, Secrets, claims, tokens).
    pub objects: Arc<dyn ObjectSource>,
    /// Kernel mounts of volumes.
    pub mounter: Arc<dyn Mounter>,
    /// Where events go.
    pub events: Arc<dyn EventSink>,
    /// Where probe tasks run (`None`: probes do not run).
    pub handle: Option<tokio::runtime::Handle>,
}

/// Syncs the pods of one node: their sandboxes, containers, volumes and probes.
pub struct Worker {
    runtime: Arc<dyn Runtime>,
    objects: Arc<dyn ObjectSource>,
    mounter: Arc<dyn Mounter>,
    events: Arc<dyn EventSink>,
    probes: ProbeManager,
    node: NodeRef,
    pods_dir: PathBuf,
    sync_frequency: Duration,
    volumes: Mutex<HashMap<String, PodVolumes>>,
    cluster_dns: Option<crate::dns::ClusterDns>,
    cgroups: Option<Arc<PodCgroups>>,
    puller: crate::image_pull::ImagePuller,
    /// The back-offs between restarts of failed containers (`CrashLoopBackOff`).
    restarts: crate::restart_backoff::RestartBackOff,
    /// Pods evicted for node pressure or refused by admission under it, by UID
    /// ([`Worker::evict`]).
    evicted: Mutex<HashMap<String, Evicted>>,
    /// Pods admitted (or refused) already: admission is decided once per pod.
    admitted: Mutex<std::collections::HashSet<String>>,
    /// The node's pressure conditions, which new pods are admitted under.
    pressure: Option<Arc<crate::eviction::Pressure>>,
    /// Where `Localhost` seccomp profiles live (`ROOT/kubelet/seccomp`).
    seccomp_root: PathBuf,
}

impl Worker {
    /// The same worker, giving `ClusterFirst` pods `cluster_dns` as their resolver.
    pub fn with_cluster_dns(mut self, cluster_dns: Option<crate::dns::ClusterDns>) -> Worker {
        self.cluster_dns = cluster_dns;
        self
    }

    /// The same worker, admitting new pods under the node's `pressure` conditions as
    /// the eviction manager's admit handler does ([`crate::eviction::admit`]).
    pub fn with_pressure(mut self, pressure: Arc<crate::eviction::Pressure>) -> Worker {
        self.pressure = Some(pressure);
        self
    }

    /// The same worker, putting each pod in a cgroup of its QoS class (`None`: pods'
    /// containers stay in the runtime's default cgroup parent).
    pub fn with_cgroups(mut self, cgroups: Option<Arc<PodCgroups>>) -> Worker {
        self.cgroups = cgroups;
        self
    }

    /// A worker for `node`, keeping pod directories in `pods_dir` (`ROOT/kubelet/pods`)
    /// and refreshing API-data volumes every `sync_frequency`.
    pub fn new(
        services: Services,
        node: NodeRef,
        pods_dir: PathBuf,
        sync_frequency: Duration,
    ) -> Worker {
        Worker {
            probes: ProbeManager::new(
                services.handle,
                services.runtime.clone(),
                services.events.clone(),
            ),
            runtime: services.runtime,
            objects: services.objects,
            mounter: services.mounter,
            events: services.events,
            node,
            seccomp_root: pods_dir.parent().unwrap_or(&pods_dir).join("seccomp"),
            pods_dir,
            sync_frequency,
            puller: Default::default(),
            restarts: Default::default(),
            volumes: Mutex::new(HashMap::new()),
            cluster_dns: None,
            cgroups: None,
            evicted: Mutex::new(HashMap::new()),
            admitted: Mutex::new(Default::default()),
            pressure: None,
        }
    }

    /// The runtime.
    pub fn runtime(&self) -> &dyn Runtime {
        self.runtime.as_ref()
    }

    /// What the probes of the pod's containers have concluded, by container name.
    pub fn probe_states(&self, uid: &str) -> BTreeMap<String, crate::probes::ProbeState> {
        self.probes.states(uid)
    }

    /// How often a settled pod is synced: `$SKIFF_KUBELET_STEADY_RESYNC` seconds
    /// ([`STEADY_RESYNC`] when unset), or the sync frequency when that is shorter (its
    /// API-data volumes are refreshed no later than it says).
    pub fn steady_resync(&self) -> Duration {
        static STEADY: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
        let steady = *STEADY.get_or_init(|| {
            std::env::var(STEADY_RESYNC_ENV)
                .ok()
                .and_then(|v| v.trim_end_matches('s').parse::<u64>().ok())
                .map(Duration::from_secs)
                .unwrap_or(STEADY_RESYNC)
        });
        steady.min(self.sync_frequency)
    }

    fn event(
        &self,
        pod: &Pod,
        container: Option<&str>,
        type_: EventType,
        reason: &str,
        message: String,
    ) {
        self.events
            .emit(PodEvent::new(pod, container, type_, reason, message));
    }

    fn downward(&self, pod_ip: Option<String>) -> Downward {
        let cap = self.node.capacity.clone();
        Downward {
            pod_ip,
            host_ip: self.node.ip.clone(),
            node_cpu: cap.as_ref().map(|c| c.cpu).unwrap_or(0),
            node_memory: cap.as_ref().map(|c| c.memory_kib * 1024).unwrap_or(0),
            node_ephemeral_storage: cap
                .as_ref()
                .map(|c| c.ephemeral_storage_kib * 1024)
                .unwrap_or(0),
        }
    }

    /// The pod's volumes, set up on first use and refreshed every sync period; a
    /// failure of the first setup is returned, later ones keep the last content.
    fn ensure_volumes(&self, pod: &Pod, uid: &str) -> Result<BTreeMap<String, HostVolume>, String> {
        {
            let known = self.volumes.lock().unwrap();
            if let Some(v) = known.get(uid) {
                if v.synced.elapsed() < self.sync_frequency {
                    return Ok(v.volumes.clone());
                }
            }
        }
        let downward = self.downward(None);
        let ctx = volumes::SetupContext {
            pod,
            downward: &downward,
            objects: self.objects.as_ref(),
            mounter: self.mounter.as_ref(),
            pods_dir: &self.pods_dir,
        };
        let result = volumes::setup(&ctx);
        let mut known = self.volumes.lock().unwrap();
        match (result, known.get_mut(uid)) {
            (Ok(volumes), _) => {
                known.insert(
                    uid.to_string(),
                    PodVolumes {
                        volumes: volumes.clone(),
                        synced: Instant::now(),
                    },
                );
                Ok(volumes)
            }
            (Err(e), Some(last)) => {
                last.synced = Instant::now();
                drop(known);
                self.event(pod, None, EventType::Warning, "FailedMount", e.to_string());
                Ok(self.volumes.lock().unwrap()[uid].volumes.clone())
            }
            (Err(e), None) => Err(e.to_string()),
        }
    }

    /// Stops the pod's probes and removes its volumes and its cgroup from the node.
    pub fn forget_pod(&self, uid: &str) {
        self.probes.remove_pod(uid);
        self.puller.forget_pod(uid);
        self.restarts.forget_pod(uid);
        self.volumes.lock().unwrap().remove(uid);
        self.evicted.lock().unwrap().remove(uid);
        self.admitted.lock().unwrap().remove(uid);
        if let Err(e) = volumes::teardown(&self.pods_dir, uid, self.mounter.as_ref()) {
            tracing::warn!(pod_uid = %uid, "removing the pod's volumes: {e}");
        }
        self.remove_pod_cgroup(uid);
    }

    /// Makes the pod's cgroup exist; its path, the cgroup parent of the pod's sandbox.
    fn ensure_pod_cgroup(&self, pod: &Pod) -> Result<Option<String>, CriError> {
        let Some(cgroups) = &self.cgroups else {
            return Ok(None);
        };
        cgroups.ensure_pod(pod).map(Some).map_err(|e| {
            CriError::Runtime(format!(
                "failed to ensure that the pod's cgroups exist and are correctly applied: {e}"
            ))
        })
    }

    /// Removes the pod's cgroup; what cannot go yet is left for housekeeping.
    fn remove_pod_cgroup(&self, uid: &str) {
        if let Some(cgroups) = &self.cgroups {
            if let Err(e) = cgroups.remove_pod(uid) {
                tracing::warn!(pod_uid = %uid, "removing the pod's cgroup: {e}");
            }
        }
    }

    /// Syncs one pod; blocking (runtime calls).
    pub fn sync_pod(&self, pod: &Pod) -> Result<Outcome, CriError> {
        let rt = self.runtime.as_ref();
        let meta = &pod.metadata;
        let p = PodRef {
            name: meta.name.clone().unwrap_or_default(),
            namespace: meta.namespace.clone().unwrap_or_else(|| "default".into()),
            uid: meta.uid.clone().unwrap_or_default(),
        };
        let labels = BTreeMap::from([(cri::POD_UID_LABEL.to_string(), p.uid.clone())]);
        let _span = tracing::debug_span!("sync_pod", pod = %p.name).entered();
        let began = std::time::Instant::now();
        if meta.deletion_timestamp.is_some() {
            let spec = pod.spec.clone().unwrap_or_default();
            let grace = meta
                .deletion_grace_period_seconds
                .or(spec.termination_grace_period_seconds)
                .unwrap_or(30)
                .max(0) as u32;
            self.probes.remove_pod(&p.uid);
            self.kill_pod(&labels, Some(pod), grace)?;
            self.forget_pod(&p.uid);
            return Ok(Outcome::Terminated);
        }

        let mut observed = Observed {
            host_ip: self.node.ip.clone(),
            now: Utc::now(),
            ..Default::default()
        };
        let old_phase = pod.status.as_ref().and_then(|s| s.phase.clone());
        observed.containers = rt.list_containers(&labels)?;
        let mut sandboxes = rt.list_pod_sandboxes(&labels)?;
        sandboxes.sort_by_key(|s| s.created_at);
        let sandbox = sandboxes.last().cloned();
        let finished = matches!(old_phase.as_deref(), Some("Succeeded" | "Failed"));
        if !finished && sandboxes.is_empty() && observed.containers.is_empty() {
            self.admit(pod, &p.uid);
        }
        if !finished {
            self.enforce_active_deadline(pod, &p.uid);
        }
        let evicted = self.evicted.lock().unwrap().get(&p.uid).cloned();
        let terminal = evicted.is_some() || finished;
        if terminal {
            // A finished pod keeps its containers (for logs) but not its sandbox.
            self.probes.remove_pod(&p.uid);
            if evicted.is_some() {
                // A sync that began before the eviction may have started one again.
                self.stop_running(&observed.containers, EVICTION_GRACE);
                observed.containers = rt.list_containers(&labels)?;
            }
            for s in sandboxes.iter().filter(|s| s.state == SandboxState::Ready) {
                rt.stop_pod_sandbox(&s.id)?;
            }
            // Nothing of it runs any more: its cgroup goes, as the kubelet removes the
            // cgroups of pods that are not active.
            self.remove_pod_cgroup(&p.uid);
            self.read_termination_messages(pod, &p.uid, &mut observed);
            let mut status = status::pod_status(pod, &observed);
            // A terminal phase is never left (the status manager's rule); an evicted pod
            // (or one past its active deadline) failed for the reason recorded.
            match evicted {
                Some(e) => {
                    status.phase = Some(status::Phase::Failed.as_str().into());
                    status.reason = Some(e.reason.into());
                    if e.disruption {
                        let conditions = status.conditions.get_or_insert_with(Vec::new);
                        if !conditions.iter().any(|c| c.type_ == "DisruptionTarget") {
                            conditions.push(k8s_openapi::api::core::v1::PodCondition {
                                type_: "DisruptionTarget".into(),
                                status: "True".into(),
                                reason: Some("TerminationByKubelet".into()),
                                message: Some(e.message.clone()),
                                last_transition_time: Some(
                                    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                                        jiff::Timestamp::now(),
                                    ),
                                ),
                                ..Default::default()
                            });
                        }
                    }
                    status.message = Some(e.message);
                }
                None => status.phase = old_phase,
            }
            return Ok(Outcome::Status(Box::new(status)));
        }
        let spec = pod.spec.clone().unwrap_or_default();
        // The pod's cgroup before anything of it runs (and on every sync, so a
        // restarted kubelet counts the pods it finds in their QoS level).
        let cgroup_parent = self.ensure_pod_cgroup(pod)?;
        tracing::debug!(elapsed = ?began.elapsed(), "runtime listed, pod cgroup ready");

        // Volumes first: no container starts without them.
        let volumes = match self.ensure_volumes(pod, &p.uid) {
            Ok(v) => {
                tracing::debug!(elapsed = ?began.elapsed(), "volumes ready");
                v
            }
            Err(message) => {
                self.event(pod, None, EventType::Warning, "FailedMount", message);
                observed.sandbox_ready = sandbox.is_some_and(|s| s.state == SandboxState::Ready);
                return Ok(Outcome::Status(Box::new(status::pod_status(
                    pod, &observed,
                ))));
            }
        };

        let sandbox = match sandbox {
            Some(s) if s.state == SandboxState::Ready => s,
            stale => {
                // A new sandbox means new namespaces: containers of the old one go with it.
                if stale.is_some() {
                    self.probes.remove_pod(&p.uid);
                    self.kill_pod(&labels, None, 0)?;
                }
                let Some(first) = spec.containers.first() else {
                    return Err(CriError::Runtime("pod has no containers".into()));
                };
                if let Err(w) = self.ensure_image(pod, first, false) {
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
                    hostname: self.pod_hostname(pod).unwrap_or_else(|_| p.name.clone()),
                    image: first.image.clone().unwrap_or_default(),
                    labels: BTreeMap::from([(cri::NODE_LABEL.to_string(), self.node.name.clone())]),
                    dns: Some(crate::dns::pod_dns(
                        pod,
                        self.cluster_dns.as_ref(),
                        &crate::dns::host_resolv_conf(),
                    )),
                    cgroup_parent,
                };
                let id = rt.run_pod_sandbox(&config)?;
                tracing::debug!(elapsed = ?began.elapsed(), "sandbox running");
                observed.containers = rt.list_containers(&labels)?;
                rt.pod_sandbox_status(&id)?
            }
        };
        observed.sandbox_ready = true;
        observed.pod_ip = sandbox.ip.clone();

        // Probe results of the last period: restart what failed liveness, then re-probe
        // exactly what runs.
        if self.restart_unhealthy(pod, &spec, &observed)? {
            observed.containers = rt.list_containers(&labels)?;
        }
        let running: Vec<(&Container, String)> = spec
            .init_containers
            .iter()
            .flatten()
            .chain(&spec.containers)
            .filter_map(|c| {
                let (latest, _) = observed.instances(&c.name);
                let l = latest.filter(|l| l.state == ContainerState::Running)?;
                Some((c, l.id.clone()))
            })
            .collect();
        self.probes.sync(pod, &running, observed.pod_ip.as_deref());
        observed.probes = self.probes.states(&p.uid);

        let policy = spec
            .restart_policy
            .clone()
            .unwrap_or_else(|| "Always".into());
        let ephemeral = crate::ephemeral::to_start(&spec, &observed);
        let pid_targets = crate::ephemeral::targets(&ephemeral);
        let start = StartContext {
            pod,
            p: &p,
            sandbox_id: &sandbox.id,
            volumes: &volumes,
            pid_targets: &pid_targets,
        };
        let mut changed = false;
        let mut initialized = true;
        // Once an app container was made, sidecars that restart hold nothing back; once
        // every app container is done for good, the sidecars are stopped and stay so.
        let app_made = observed.any_made(&spec.containers);
        let apps_done = app_made
            && spec.containers.iter().all(|c| {
                matches!(
                    observed.instances(&c.name).0.map(|l| (l.state, l.exit_code)),
                    Some((ContainerState::Exited, code)) if !should_restart(&policy, code)
                )
            });
        for c in spec.init_containers.iter().flatten() {
            let (latest, _) = observed.instances(&c.name);
            let state = latest.map(|l| (l.state, l.exit_code));
            if status::is_sidecar(c) {
                // A sidecar runs for the pod's life, restarted (after its back-off)
                // whatever the pod's restartPolicy; the init sequence goes on once it
                // has started.
                match (state, latest) {
                    (Some((ContainerState::Running, _)), Some(l)) => {
                        let started = observed.probe_state(c, &l.id).started;
                        if started || app_made {
                            continue;
                        }
                    }
                    (Some((ContainerState::Created, _)), _) => {}
                    _ if apps_done => continue,
                    _ => {
                        changed |= self.start(&start, c, &mut observed)?;
                        if app_made {
                            continue;
                        }
                    }
                }
                initialized = false;
                break;
            }
            match state {
                Some((ContainerState::Exited, 0)) => continue,
                Some((ContainerState::Exited, _)) if policy == "Never" => {}
                Some((ContainerState::Running | ContainerState::Created, _)) => {}
                _ => changed |= self.start(&start, c, &mut observed)?,
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
                    _ => changed |= self.start(&start, c, &mut observed)?,
                }
            }
            // Every app container is done for good: the sidecars stop, last first.
            if apps_done {
                changed |= self.stop_sidecars(pod, &spec, &observed)?;
            }
        }
        // Ephemeral containers start once the sandbox is up, initialized or not.
        for (c, _) in &ephemeral {
            changed |= self.start(&start, c, &mut observed)?;
        }
        if changed {
            tracing::debug!(elapsed = ?began.elapsed(), "containers started");
            observed.containers = rt.list_containers(&labels)?;
        }
        observed.now = Utc::now();
        self.read_termination_messages(pod, &p.uid, &mut observed);
        Ok(Outcome::Status(Box::new(status::pod_status(
            pod, &observed,
        ))))
    }

    /// Fills in the termination message of each exited container instance, from the
    /// file mounted at its `terminationMessagePath` or its log
    /// ([`crate::termination_message`]), after what the runtime said of it.
    fn read_termination_messages(&self, pod: &Pod, uid: &str, observed: &mut Observed) {
        use crate::termination_message as tm;
        let Some(spec) = pod.spec.as_ref() else {
            return;
        };
        let pod_dir = volumes::pod_dir(&self.pods_dir, uid);
        for instance in observed
            .containers
            .iter_mut()
            .filter(|c| c.state == ContainerState::Exited)
        {
            let Some(c) = spec
                .containers
                .iter()
                .chain(spec.init_containers.iter().flatten())
                .find(|c| c.name == instance.name())
            else {
                continue;
            };
            let file = tm::host_path(&pod_dir, &c.name, instance.attempt());
            if !file.exists() {
                continue;
            }
            let log = self.runtime.container_log_path(&instance.id).ok();
            let message = tm::message(c, &file, instance.exit_code, log.as_deref());
            if message.is_empty() {
                continue;
            }
            if instance.message.is_empty() {
                instance.message = message;
            } else {
                instance.message = format!("{}: {message}", instance.message);
            }
        }
    }

    /// Stops the running containers whose liveness (or startup) probe failed; returns
    /// whether any was stopped.
    fn restart_unhealthy(
        &self,
        pod: &Pod,
        spec: &k8s_openapi::api::core::v1::PodSpec,
        observed: &Observed,
    ) -> Result<bool, CriError> {
        let mut stopped = false;
        let grace = termination_grace(spec);
        for (name, state) in self
            .probes
            .states(pod.metadata.uid.as_deref().unwrap_or_default())
        {
            let Some(kind) = state.restart else { continue };
            let (latest, _) = observed.instances(&name);
            let Some(c) =
                latest.filter(|l| l.id == state.container_id && l.state == ContainerState::Running)
            else {
                continue;
            };
            let probe = match kind {
                ProbeKind::Startup => "startup",
                _ => "liveness",
            };
            self.event(
                pod,
                Some(&name),
                EventType::Normal,
                "Killing",
                format!("Container {name} failed {probe} probe, will be restarted"),
            );
            let container = spec
                .containers
                .iter()
                .chain(spec.init_containers.iter().flatten())
                .find(|x| x.name == name);
            self.stop_container(pod, container, &c.id, observed.pod_ip.as_deref(), grace)?;
            stopped = true;
        }
        Ok(stopped)
    }

    /// Stops the running sidecars of a pod whose app containers have all finished, in the
    /// reverse of their order (as the kubelet does); returns whether any was stopped.
    fn stop_sidecars(
        &self,
        pod: &Pod,
        spec: &k8s_openapi::api::core::v1::PodSpec,
        observed: &Observed,
    ) -> Result<bool, CriError> {
        let grace = termination_grace(spec);
        let mut stopped = false;
        for c in spec.init_containers.iter().flatten().rev() {
            if !status::is_sidecar(c) {
                continue;
            }
            let (latest, _) = observed.instances(&c.name);
            let Some(l) = latest.filter(|l| l.state == ContainerState::Running) else {
                continue;
            };
            self.stop_container(pod, Some(c), &l.id, observed.pod_ip.as_deref(), grace)?;
            stopped = true;
        }
        Ok(stopped)
    }

    /// Stops the running container `id` (of spec `c`, when known) within `grace`: its
    /// preStop hook first, then its stop signal with the grace left.
    fn stop_container(
        &self,
        pod: &Pod,
        c: Option<&Container>,
        id: &str,
        pod_ip: Option<&str>,
        grace: u32,
    ) -> Result<(), CriError> {
        let remaining = match c {
            Some(c) => self.pre_stop(pod, c, id, pod_ip, grace),
            None => grace,
        };
        self.runtime.stop_container(id, remaining)
    }

    /// Runs the container's preStop hook within `grace`; returns the grace left for
    /// the stop signal.
    fn pre_stop(
        &self,
        pod: &Pod,
        c: &Container,
        id: &str,
        pod_ip: Option<&str>,
        grace: u32,
    ) -> u32 {
        let Some(h) = c.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref()) else {
            return grace;
        };
        let started = Instant::now();
        let target = Target {
            runtime: self.runtime.as_ref(),
            container_id: id,
            container: c,
            pod_ip,
        };
        let timeout = Duration::from_secs(grace.max(1) as u64);
        if let Err(message) = crate::hooks::run(h, &target, pod, timeout) {
            self.event(
                pod,
                Some(&c.name),
                EventType::Warning,
                "FailedPreStopHook",
                message,
            );
        }
        let spent = started.elapsed().as_secs() as u32;
        grace.saturating_sub(spent).max(MIN_GRACE_AFTER_PRE_STOP)
    }

    /// Creates and starts the next instance of `c`, unless it is backing off;
    /// returns whether the runtime changed.
    fn start(
        &self,
        s: &StartContext<'_>,
        c: &Container,
        observed: &mut Observed,
    ) -> Result<bool, CriError> {
        let rt = self.runtime.as_ref();
        let p = s.p;
        let (latest, _) = observed.instances(&c.name);
        let attempt = latest.map(|l| l.attempt() + 1).unwrap_or(0);
        if let Some(l) = latest {
            if l.state == ContainerState::Exited {
                let finished = l.finished_at.unwrap_or(l.created_at);
                if let Some(delay) = self.restarts.check(&p.uid, &c.name, finished, Utc::now()) {
                    let message = format!(
                        "back-off {}s restarting failed container={} pod={}_{}({})",
                        delay.as_secs(),
                        c.name,
                        p.name,
                        p.namespace,
                        p.uid
                    );
                    // Once per back-off period (the status shows the same message after).
                    if !shows_waiting(s.pod, &c.name, &message) {
                        self.event(
                            s.pod,
                            Some(&c.name),
                            EventType::Warning,
                            "BackOff",
                            format!(
                                "Back-off restarting failed container {} in pod {}_{}({})",
                                c.name, p.name, p.namespace, p.uid
                            ),
                        );
                    }
                    observed.waiting.insert(
                        c.name.clone(),
                        Waiting {
                            reason: "CrashLoopBackOff".into(),
                            message,
                        },
                    );
                    return Ok(false);
                }
            }
        }
        if let Err(w) = self.ensure_image(s.pod, c, true) {
            observed.waiting.insert(c.name.clone(), w);
            return Ok(false);
        }
        let config = match self.container_config(s, c, attempt, observed) {
            Ok(config) => config,
            Err(message) => {
                if !shows_waiting(s.pod, &c.name, &message) {
                    self.event(
                        s.pod,
                        Some(&c.name),
                        EventType::Warning,
                        "Failed",
                        format!("Error: {message}"),
                    );
                }
                observed.waiting.insert(
                    c.name.clone(),
                    Waiting {
                        reason: "CreateContainerConfigError".into(),
                        message,
                    },
                );
                return Ok(false);
            }
        };
        let id = match rt.create_container(s.sandbox_id, &config) {
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
        self.event(
            s.pod,
            Some(&c.name),
            EventType::Normal,
            "Created",
            format!("Created container {}", c.name),
        );
        // A start failure shows as the instance's terminated state (exit 127/126).
        match rt.start_container(&id) {
            Ok(()) => {
                self.event(
                    s.pod,
                    Some(&c.name),
                    EventType::Normal,
                    "Started",
                    format!("Started container {}", c.name),
                );
                self.post_start(s.pod, c, &id, observed.pod_ip.as_deref())?;
            }
            Err(e) => tracing::info!(container = %c.name, pod = %p.name, "start failed: {e}"),
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

    /// Runs the postStart hook; when it fails, the container is killed (and restarted
    /// by its restart policy), as the kubelet does.
    fn post_start(
        &self,
        pod: &Pod,
        c: &Container,
        id: &str,
        pod_ip: Option<&str>,
    ) -> Result<(), CriError> {
        let Some(h) = c.lifecycle.as_ref().and_then(|l| l.post_start.as_ref()) else {
            return Ok(());
        };
        let grace = pod
            .spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds)
            .unwrap_or(30)
            .max(0) as u32;
        let target = Target {
            runtime: self.runtime.as_ref(),
            container_id: id,
            container: c,
            pod_ip,
        };
        if let Err(message) =
            crate::hooks::run(h, &target, pod, Duration::from_secs(grace.max(1) as u64))
        {
            self.event(
                pod,
                Some(&c.name),
                EventType::Warning,
                "FailedPostStartHook",
                message,
            );
            self.event(
                pod,
                Some(&c.name),
                EventType::Normal,
                "Killing",
                format!(
                    "Container {} failed post start hook, will be killed",
                    c.name
                ),
            );
            self.runtime.stop_container(id, grace)?;
        }
        Ok(())
    }

    /// The runtime config of the next instance of `c`: environment, expanded command
    /// and args, volume mounts; the error is the `CreateContainerConfigError` message.
    fn container_config(
        &self,
        s: &StartContext<'_>,
        c: &Container,
        attempt: u32,
        observed: &Observed,
    ) -> Result<ContainerConfig, String> {
        let downward = self.downward(observed.pod_ip.clone());
        let envs = crate::env::container_env(c, s.pod, &downward, self.objects.as_ref())
            .map_err(|e| e.to_string())?;
        let mut mounts = volumes::container_mounts(c, s.volumes, &envs)?;
        let hostname = self.pod_hostname(s.pod)?;
        if !mounts.iter().any(|m| m.container_path == "/etc/hosts") {
            mounts.extend(self.etc_hosts(s.pod, &s.p.uid, observed.pod_ip.as_deref())?);
        }
        if let Some(path) = crate::termination_message::wanted(c) {
            if !mounts.iter().any(|m| m.container_path == path) {
                let pod_dir = volumes::pod_dir(&self.pods_dir, &s.p.uid);
                let host = crate::termination_message::host_path(&pod_dir, &c.name, attempt);
                crate::termination_message::create(&host)
                    .map_err(|e| format!("creating {}: {e}", host.display()))?;
                mounts.push(Mount {
                    container_path: path.to_string(),
                    host_path: host,
                    readonly: false,
                });
            }
        }
        let pod_sc = s
            .pod
            .spec
            .as_ref()
            .and_then(|p| p.security_context.as_ref());
        let image = c.image.clone().unwrap_or_default();
        let effective = security_context::effective(pod_sc, c);
        if effective.run_as_non_root == Some(true) {
            let image_user = self
                .runtime
                .image_user(&image)
                .map_err(|e| e.to_string())?
                .unwrap_or_default();
            let pod = security_context::pod_description(&s.p.name, &s.p.namespace, &s.p.uid);
            security_context::verify_run_as_non_root(&effective, &pod, &c.name, &image_user)
                .map_err(|e| e.to_string())?;
        }
        let security = security_context::linux_security_context(pod_sc, c, &self.seccomp_root)
            .map_err(|e| e.to_string())?;
        Ok(ContainerConfig {
            name: c.name.clone(),
            attempt,
            image: c.image.clone().unwrap_or_default(),
            command: crate::env::expand_all(c.command.as_deref().unwrap_or_default(), &envs),
            args: crate::env::expand_all(c.args.as_deref().unwrap_or_default(), &envs),
            working_dir: c.working_dir.clone(),
            envs,
            hostname,
            tty: c.tty.unwrap_or(false),
            stdin: c.stdin.unwrap_or(false),
            labels: BTreeMap::new(),
            mounts,
            resources: crate::cgroups::resources::container_resources(c),
            security,
            pid_target: s.pid_targets.get(&c.name).cloned(),
        })
    }

    /// Stops every container of the pod (preStop hooks first, when the spec is known;
    /// then SIGTERM, what is left of `grace` seconds, SIGKILL; all in parallel), then
    /// its sandboxes, and removes them all.
    pub fn kill_pod(
        &self,
        labels: &BTreeMap<String, String>,
        pod: Option<&Pod>,
        grace: u32,
    ) -> Result<(), CriError> {
        let rt = self.runtime.as_ref();
        let containers = rt.list_containers(labels)?;
        let pod_ip = rt
            .list_pod_sandboxes(labels)?
            .into_iter()
            .filter(|s| s.state == SandboxState::Ready)
            .find_map(|s| s.ip);
        let spec = pod.and_then(|p| p.spec.clone()).unwrap_or_default();
        std::thread::scope(|s| {
            for c in containers
                .iter()
                .filter(|c| c.state == ContainerState::Running)
            {
                let spec_c = spec
                    .containers
                    .iter()
                    .chain(spec.init_containers.iter().flatten())
                    .find(|x| x.name == c.name());
                let pod_ip = pod_ip.as_deref();
                s.spawn(move || {
                    let remaining = match (pod, spec_c) {
                        (Some(pod), Some(spec_c)) => {
                            self.event(
                                pod,
                                Some(&spec_c.name),
                                EventType::Normal,
                                "Killing",
                                format!("Stopping container {}", spec_c.name),
                            );
                            self.pre_stop(pod, spec_c, &c.id, pod_ip, grace)
                        }
                        _ => grace,
                    };
                    if let Err(e) = rt.stop_container(&c.id, remaining) {
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
}

/// What starting a container of a pod needs.
struct StartContext<'a> {
    pod: &'a Pod,
    p: &'a PodRef,
    sandbox_id: &'a str,
    volumes: &'a BTreeMap<String, HostVolume>,
    /// The running containers whose PID namespace ephemeral containers join, by name.
    pid_targets: &'a BTreeMap<String, String>,
}

impl Worker {
    /// The host name of `pod`'s containers (`spec.hostname` or the pod's name, the fully
    /// qualified one with `setHostnameAsFQDN`).
    fn pod_hostname(&self, pod: &Pod) -> Result<String, String> {
        let domain = self.cluster_domain();
        crate::etc_hosts::PodHostname::of(pod, domain).kernel_hostname(pod)
    }

    fn cluster_domain(&self) -> &str {
        self.cluster_dns
            .as_ref()
            .map(|d| d.domain.as_str())
            .unwrap_or("cluster.local")
    }

    /// The pod's managed `/etc/hosts` (its addresses, names and `hostAliases`, or the
    /// node's file on the host network), written into the pod's directory and mounted into
    /// each container, as the kubelet's `etc-hosts`; none before the pod has an address.
    fn etc_hosts(
        &self,
        pod: &Pod,
        uid: &str,
        pod_ip: Option<&str>,
    ) -> Result<Option<Mount>, String> {
        use crate::etc_hosts::{host_network_hosts, managed_hosts, PodHostname};
        let host_network = pod
            .spec
            .as_ref()
            .and_then(|s| s.host_network)
            .unwrap_or(false);
        let content = if host_network {
            host_network_hosts(
                pod,
                &std::fs::read_to_string("/etc/hosts").unwrap_or_default(),
            )
        } else {
            let Some(ip) = pod_ip.filter(|ip| !ip.is_empty()) else {
                return Ok(None);
            };
            let name = PodHostname::of(pod, self.cluster_domain());
            managed_hosts(pod, &name, &[ip.to_string()])
        };
        let dir = self.pods_dir.join(uid);
        let path = dir.join("etc-hosts");
        std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(&path, content))
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
        Ok(Some(Mount {
            container_path: "/etc/hosts".into(),
            host_path: path,
            readonly: false,
        }))
    }

    /// The image of `c` present as its `imagePullPolicy` wants it, pulled with the
    /// credentials of the pod's pull secrets; or why the container waits.
    /// Pulls `c`'s image as its policy says. `for_container`: the image is about to be
    /// used for `c` (not for the pod's sandbox), which the kubelet announces with a
    /// `Pulled` event when the image was already there.
    fn ensure_image(&self, pod: &Pod, c: &Container, for_container: bool) -> Result<(), Waiting> {
        let credentials = || {
            let (ring, problems) = crate::pull_secrets::keyring(pod, self.objects.as_ref());
            for problem in problems {
                self.event(
                    pod,
                    None,
                    EventType::Warning,
                    "FailedToRetrieveImagePullSecret",
                    format!(
                        "Unable to retrieve some image pull secrets ({problem}); attempting to pull the image may not succeed."
                    ),
                );
            }
            ring.lookup(c.image.as_deref().unwrap_or_default())
        };
        let mut events = Vec::new();
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        let result = self.puller.ensure_image(
            self.runtime.as_ref(),
            uid,
            c,
            &credentials,
            Instant::now(),
            &mut events,
        );
        // Retrying a container whose configuration cannot be made yet (a missing
        // ConfigMap) uses the image again: said once, with the first attempt.
        let retrying = waiting_reason(pod, &c.name) == Some("CreateContainerConfigError");
        for (type_, reason, message) in events {
            // A back-off's event once per failed pull, not once per sync while it lasts.
            let backing_off = result.as_ref().err().map(|w| w.message.as_str());
            if reason == "BackOff" && backing_off.is_some_and(|m| shows_waiting(pod, &c.name, m)) {
                continue;
            }
            if reason == "Pulled"
                && message.ends_with("already present on machine")
                && (!for_container || retrying)
            {
                continue;
            }
            self.event(pod, Some(&c.name), type_, reason, message);
        }
        result
    }
}

/// The waiting state `pod`'s status shows for container `name`: what the kubelet said at
/// its last sync.
fn waiting_in_status<'a>(pod: &'a Pod, name: &str) -> Option<&'a ContainerStateWaiting> {
    pod.status
        .as_ref()
        .and_then(|st| {
            st.container_statuses
                .iter()
                .flatten()
                .chain(st.init_container_statuses.iter().flatten())
                .find(|x| x.name == name)
        })
        .and_then(|x| x.state.as_ref()?.waiting.as_ref())
}

/// The pod's `terminationGracePeriodSeconds` (30 s by default).
fn termination_grace(spec: &k8s_openapi::api::core::v1::PodSpec) -> u32 {
    spec.termination_grace_period_seconds.unwrap_or(30).max(0) as u32
}

/// Whether `pod`'s status already shows container `name` waiting with `message`, so an
/// event about it was sent at the last sync.
fn shows_waiting(pod: &Pod, name: &str, message: &str) -> bool {
    waiting_in_status(pod, name).is_some_and(|w| w.message.as_deref() == Some(message))
}

/// Why `pod`'s status shows container `name` waiting, if it does.
fn waiting_reason<'a>(pod: &'a Pod, name: &str) -> Option<&'a str> {
    waiting_in_status(pod, name)?.reason.as_deref()
}

/// The grace period of a pod evicted for a hard threshold (the kubelet's
/// `immediateEvictionGracePeriodSeconds`).
const EVICTION_GRACE: u32 = 1;

/// The status reason (and Event reason) of a pod past its `activeDeadlineSeconds`.
pub const DEADLINE_EXCEEDED: &str = "DeadlineExceeded";

/// Why a pod is reported `Failed` with reason `Evicted`.
#[derive(Debug, Clone)]
struct Evicted {
    /// The status reason: `Evicted`, or `DeadlineExceeded` past `activeDeadlineSeconds`.
    reason: &'static str,
    /// The status message.
    message: String,
    /// Evicted while running (a `DisruptionTarget` condition, reason
    /// `TerminationByKubelet`), not refused at admission.
    disruption: bool,
}

impl Worker {
    /// Admits a pod the kubelet has not started yet, once, under the node's pressure
    /// conditions; a refused pod is recorded as evicted, with an `Evicted` Event.
    fn admit(&self, pod: &Pod, uid: &str) {
        let Some(pressure) = &self.pressure else {
            return;
        };
        if !self.admitted.lock().unwrap().insert(uid.to_string()) {
            return;
        }
        if let Err(message) = crate::eviction::admit(pod, &pressure.current()) {
            self.event(
                pod,
                None,
                EventType::Warning,
                crate::eviction::REASON,
                message.clone(),
            );
            self.evicted.lock().unwrap().insert(
                uid.to_string(),
                Evicted {
                    reason: crate::eviction::REASON,
                    message,
                    disruption: false,
                },
            );
        }
    }

    /// Fails the pod once it has been active longer than `spec.activeDeadlineSeconds`
    /// since its `startTime` (the kubelet's active deadline handler): recorded as an
    /// eviction is, so every later sync stops what runs of it, starts nothing and reports
    /// it `Failed` with reason `DeadlineExceeded`; with a `DeadlineExceeded` Event.
    fn enforce_active_deadline(&self, pod: &Pod, uid: &str) {
        let Some(deadline) = pod.spec.as_ref().and_then(|s| s.active_deadline_seconds) else {
            return;
        };
        let Some(start) = pod.status.as_ref().and_then(|s| s.start_time.as_ref()) else {
            return;
        };
        let active = jiff::Timestamp::now().as_second() - start.0.as_second();
        if active < deadline || self.evicted.lock().unwrap().contains_key(uid) {
            return;
        }
        let message = "Pod was active on the node longer than the specified deadline";
        self.event(
            pod,
            None,
            EventType::Warning,
            DEADLINE_EXCEEDED,
            message.to_string(),
        );
        self.evicted.lock().unwrap().insert(
            uid.to_string(),
            Evicted {
                reason: DEADLINE_EXCEEDED,
                message: message.to_string(),
                disruption: false,
            },
        );
    }

    /// Evicts the pod for node pressure (the eviction manager's `killPodFunc`): records
    /// why, so that every later sync reports it `Failed` with reason `Evicted` and
    /// starts nothing of it, stops its containers (kept for their logs) and sandbox,
    /// and records an `Evicted` Event.
    pub fn evict(&self, pod: &Pod, message: &str) -> Result<(), CriError> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        self.evicted.lock().unwrap().insert(
            uid.clone(),
            Evicted {
                reason: crate::eviction::REASON,
                message: message.to_string(),
                disruption: true,
            },
        );
        self.event(
            pod,
            None,
            EventType::Warning,
            crate::eviction::REASON,
            message.to_string(),
        );
        self.probes.remove_pod(&uid);
        let labels = BTreeMap::from([(cri::POD_UID_LABEL.to_string(), uid)]);
        self.stop_running(&self.runtime.list_containers(&labels)?, EVICTION_GRACE);
        for s in self.runtime.list_pod_sandboxes(&labels)? {
            if s.state == SandboxState::Ready {
                self.runtime.stop_pod_sandbox(&s.id)?;
            }
        }
        Ok(())
    }

    /// Stops the running ones of `containers` in parallel, each with `grace` seconds.
    fn stop_running(&self, containers: &[cri::ContainerStatus], grace: u32) {
        std::thread::scope(|s| {
            for c in containers
                .iter()
                .filter(|c| c.state == ContainerState::Running)
            {
                s.spawn(move || {
                    if let Err(e) = self.runtime.stop_container(&c.id, grace) {
                        tracing::warn!(container = %c.id, "stopping: {e}");
                    }
                });
            }
        });
    }

    /// What the pod uses of the resource `signal` starves, from its cgroup (memory
    /// working set, processes); 0 when unknown (no pod cgroups, or disk usage, which is
    /// not measured per pod).
    pub fn usage_of(&self, pod: &Pod, signal: crate::eviction::Signal) -> u64 {
        use crate::eviction::Signal;
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        let Some(usage) = self.cgroups.as_ref().and_then(|c| c.pod_usage(uid)) else {
            return 0;
        };
        match signal {
            Signal::MemoryAvailable => usage.memory_bytes,
            Signal::PidAvailable => usage.pids,
            Signal::NodeFsAvailable | Signal::ImageFsAvailable => 0,
        }
    }
}

/// Shared state of the pod workers.
pub struct Ctx {
    /// The runtime.
    pub runtime: Arc<dyn Runtime>,
    /// The API client.
    pub client: kube::Client,
    /// The node.
    pub node: NodeRef,
    /// The worker syncing the node's pods.
    pub worker: Arc<Worker>,
}

/// Stops and removes the sandboxes (and containers) of this node's pods that are no
/// longer in the API (force-deleted, or deleted while the kubelet was down), and the
/// volumes and cgroups of pods gone from the API.
pub async fn remove_orphans(ctx: &Ctx) -> Result<(), SyncError> {
    let mine = BTreeMap::from([(cri::NODE_LABEL.to_string(), ctx.node.name.clone())]);
    let rt = ctx.runtime.clone();
    // The node first: a sandbox, volume or cgroup seen here belongs to a pod the API
    // had before.
    let sandboxes = tokio::task::spawn_blocking(move || rt.list_pod_sandboxes(&mine)).await??;
    let mut uids = volumes::pod_dirs(&ctx.worker.pods_dir);
    if let Some(cgroups) = &ctx.worker.cgroups {
        uids.extend(cgroups.pod_uids());
        uids.sort();
        uids.dedup();
    }
    if sandboxes.is_empty() && uids.is_empty() {
        return Ok(());
    }
    let api: kube::Api<Pod> = kube::Api::all(ctx.client.clone());
    // Every pod, not only this node's: kubelets of several nodes may share a root.
    let known: std::collections::HashSet<String> = api
        .list(&Default::default())
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
        let worker = ctx.worker.clone();
        let labels = BTreeMap::from([(cri::POD_UID_LABEL.to_string(), uid.clone())]);
        tokio::task::spawn_blocking(move || {
            worker.kill_pod(&labels, None, 0)?;
            worker.forget_pod(&uid);
            Ok::<_, CriError>(())
        })
        .await??;
    }
    for uid in uids.into_iter().filter(|u| !known.contains(u)) {
        let worker = ctx.worker.clone();
        tokio::task::spawn_blocking(move || worker.forget_pod(&uid)).await?;
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
    let (worker, p) = (ctx.worker.clone(), pod.clone());
    let outcome = tokio::task::spawn_blocking(move || worker.sync_pod(&p)).await??;
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
            let unchanged = pod.status.as_ref() == Some(status.as_ref());
            if !unchanged {
                let patch = serde_json::json!({"status": status});
                api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
            }
            // Level-triggered: the runtime changes without API events, so look again;
            // a settled pod hears of its runtime's changes from the PLEG meanwhile.
            Ok(Action::requeue(if terminal {
                Duration::from_secs(10)
            } else if unchanged && status::settled(&status) && !has_deadline(&pod) {
                ctx.worker.steady_resync()
            } else {
                UNSETTLED_RESYNC
            }))
        }
    }
}

/// Whether the pod has an `activeDeadlineSeconds`, which the next sync may find passed.
fn has_deadline(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .is_some_and(|s| s.active_deadline_seconds.is_some())
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
    use crate::fake::{FakeMounter, FakeObjects, FakeRuntime, RecordedEvents};

    struct Fixture {
        rt: Arc<FakeRuntime>,
        objects: Arc<FakeObjects>,
        events: Arc<RecordedEvents>,
        worker: Worker,
        _dir: tempfile::TempDir,
    }

    fn fixture(images: &[&str]) -> Fixture {
        let rt = Arc::new(FakeRuntime::with_images(images));
        let objects = Arc::new(FakeObjects::default());
        let events = Arc::new(RecordedEvents::default());
        let dir = tempfile::tempdir().unwrap();
        let worker = Worker::new(
            Services {
                runtime: rt.clone(),
                objects: objects.clone(),
                mounter: Arc::new(FakeMounter::default()),
                events: events.clone(),
                handle: None,
            },
            NodeRef::default(),
            dir.path().join("pods"),
            DEFAULT_SYNC_FREQUENCY,
        );
        Fixture {
            rt,
            objects,
            events,
            worker,
            _dir: dir,
        }
    }

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
        let f = fixture(&["busybox:1"]);
        let rt = &f.rt;
        let mut p = pod(serde_json::json!({"spec": {
            "initContainers": [{"name": "i1", "image": "busybox:1"}, {"name": "i2", "image": "busybox:1"}],
            "containers": [{"name": "app", "image": "busybox:1"}]}}));
        let s = status_of(f.worker.sync_pod(&p).unwrap());
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
        f.worker.sync_pod(&p).unwrap();
        assert_eq!(rt.calls().len(), 3);
        rt.exit("i1", 0);
        f.worker.sync_pod(&p).unwrap();
        assert_eq!(
            rt.calls()[3..],
            ["create_container i2", "start_container i2"]
        );
        rt.exit("i2", 0);
        let s = status_of(f.worker.sync_pod(&p).unwrap());
        assert_eq!(
            rt.calls()[5..],
            ["create_container app", "start_container app"]
        );
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert_eq!(s.pod_ip.as_deref(), Some("10.0.0.2"));
    }

    #[test]
    fn sidecars_start_in_order_run_beside_the_app_and_stop_after_it() {
        let f = fixture(&["busybox:1"]);
        let rt = &f.rt;
        let mut p = pod(serde_json::json!({"spec": {
            "restartPolicy": "Never",
            "initContainers": [
                {"name": "setup", "image": "busybox:1"},
                {"name": "proxy", "image": "busybox:1", "restartPolicy": "Always"}],
            "containers": [{"name": "app", "image": "busybox:1"}]}}));
        let condition = |s: &k8s_openapi::api::core::v1::PodStatus, type_: &str| {
            s.conditions
                .iter()
                .flatten()
                .find(|c| c.type_ == type_)
                .map(|c| c.status.clone())
                .unwrap_or_default()
        };
        f.worker.sync_pod(&p).unwrap();
        rt.exit("setup", 0);
        // The sidecar starts; the app waits until it has started.
        let s = status_of(f.worker.sync_pod(&p).unwrap());
        assert_eq!(rt.calls().last().unwrap(), "start_container proxy");
        assert!(!rt.calls().contains(&"start_container app".to_string()));
        p.status = Some(s);
        let s = status_of(f.worker.sync_pod(&p).unwrap());
        assert_eq!(rt.calls().last().unwrap(), "start_container app");
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert_eq!(condition(&s, "Initialized"), "True");
        assert_eq!(condition(&s, "Ready"), "True");
        // A sidecar that exits restarts, whatever the pod's restartPolicy, and the pod
        // stays initialized.
        rt.exit("proxy", 1);
        p.status = Some(s);
        let s = status_of(f.worker.sync_pod(&p).unwrap());
        assert_eq!(rt.calls().last().unwrap(), "start_container proxy");
        assert_eq!(condition(&s, "Initialized"), "True");
        // The app finishes: the sidecar is stopped and the pod has succeeded.
        rt.exit("app", 0);
        p.status = Some(s);
        let s = status_of(f.worker.sync_pod(&p).unwrap());
        assert!(
            rt.calls().last().unwrap().starts_with("stop_container"),
            "{:?}",
            rt.calls()
        );
        assert_eq!(s.phase.as_deref(), Some("Succeeded"));
        // And it is not started again.
        let calls = rt.calls().len();
        p.status = Some(s);
        f.worker.sync_pod(&p).unwrap();
        assert!(
            !rt.calls()[calls..]
                .iter()
                .any(|c| c.starts_with("start_container")),
            "{:?}",
            rt.calls()
        );
    }

    #[test]
    fn a_failed_container_backs_off_before_restarting() {
        let f = fixture(&["busybox:1"]);
        let rt = &f.rt;
        let mut p = pod(
            serde_json::json!({"spec": {"containers": [{"name": "app", "image": "busybox:1"}]}}),
        );
        f.worker.sync_pod(&p).unwrap();
        rt.exit("app", 1);
        // The first exit restarts at once, as the kubelet does.
        let s = status_of(f.worker.sync_pod(&p).unwrap());
        assert_eq!(
            rt.calls()[rt.calls().len() - 2..],
            ["create_container app", "start_container app"]
        );
        assert_eq!(s.container_statuses.unwrap()[0].restart_count, 1);
        // The second waits 10 s.
        rt.exit("app", 1);
        let s = status_of(f.worker.sync_pod(&p).unwrap());
        assert_eq!(s.container_statuses.as_ref().unwrap()[0].restart_count, 1);
        // A BackOff warning, as `kubectl describe` shows it, once per back-off period.
        let backoffs = |f: &Fixture| {
            f.events
                .list()
                .into_iter()
                .filter(|e| e.starts_with("BackOff: "))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            backoffs(&f),
            ["BackOff: Back-off restarting failed container app in pod p_default(uid-1)"]
        );
        p.status = Some(s.clone());
        f.worker.sync_pod(&p).unwrap();
        assert_eq!(backoffs(&f).len(), 1, "{:?}", f.events.list());
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
    fn what_a_container_writes_at_its_termination_message_path_becomes_its_message() {
        let f = fixture(&["busybox:1"]);
        let p = pod(
            serde_json::json!({"spec": {"restartPolicy": "Never", "containers": [
            {"name": "app", "image": "busybox:1", "terminationMessagePath": "/dev/custom-log"},
            {"name": "quiet", "image": "busybox:1"}]}}),
        );
        f.worker.sync_pod(&p).unwrap();
        let mount = |name: &str, path: &str| {
            let config = f.rt.config_of(name).unwrap();
            let m = config.mounts.iter().find(|m| m.container_path == path);
            m.map(|m| m.host_path.clone()).unwrap()
        };
        let file = mount("app", "/dev/custom-log");
        assert!(!mount("quiet", "/dev/termination-log")
            .as_os_str()
            .is_empty());
        // The container writes its message, then exits.
        std::fs::write(&file, "DONE").unwrap();
        f.rt.exit("app", 0);
        f.rt.exit("quiet", 0);
        let s = status_of(f.worker.sync_pod(&p).unwrap());
        let message = |name: &str| {
            let cs = s.container_statuses.as_ref().unwrap();
            let c = cs.iter().find(|c| c.name == name).unwrap();
            c.state.clone().unwrap().terminated.unwrap().message
        };
        assert_eq!(message("app").as_deref(), Some("DONE"));
        assert_eq!(message("quiet"), None);
    }

    #[test]
    fn a_pod_past_its_active_deadline_fails_with_deadline_exceeded() {
        let f = fixture(&["busybox:1"]);
        let mut p = pod(serde_json::json!({"spec": {"activeDeadlineSeconds": 5,
            "containers": [{"name": "app", "image": "busybox:1"}]}}));
        let s = status_of(f.worker.sync_pod(&p).unwrap());
        assert_eq!(s.phase.as_deref(), Some("Running"));
        p.status = Some(s);
        // Within the deadline: still running.
        let s = status_of(f.worker.sync_pod(&p).unwrap());
        assert_eq!(s.phase.as_deref(), Some("Running"));
        // Started 6 s ago: past it.
        let started = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(6);
        p.status.as_mut().unwrap().start_time = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(started),
        );
        let s = status_of(f.worker.sync_pod(&p).unwrap());
        assert_eq!(s.phase.as_deref(), Some("Failed"));
        assert_eq!(s.reason.as_deref(), Some("DeadlineExceeded"));
        assert_eq!(
            s.message.as_deref(),
            Some("Pod was active on the node longer than the specified deadline")
        );
        assert!(f.rt.calls().iter().any(|c| c.starts_with("stop_container")));
        let events = f.events.events.lock().unwrap().join("\n");
        assert!(
            events.contains("DeadlineExceeded: Pod was active"),
            "{events}"
        );
    }

    #[test]
    fn never_pull_of_a_missing_image_waits_with_err_image_never_pull() {
        let f = fixture(&[]);
        let p = pod(serde_json::json!({"spec": {"containers": [
            {"name": "app", "image": "nothere:1", "imagePullPolicy": "Never"}]}}));
        let s = status_of(f.worker.sync_pod(&p).unwrap());
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

    /// A fixture whose worker keeps pod cgroups (under `/t`) in a fake tree.
    fn cgroup_fixture() -> (
        Arc<FakeRuntime>,
        Arc<crate::fake::FakeCgroups>,
        Worker,
        [tempfile::TempDir; 2],
    ) {
        use crate::cgroups::{resources::Amounts, PodCgroups};
        let f = fixture(&["busybox:1"]);
        let tree = Arc::new(crate::fake::FakeCgroups::default());
        let dir = tempfile::tempdir().unwrap();
        let cgroups = PodCgroups::new(tree.clone(), "/t", Amounts::default(), dir.path());
        let worker = f.worker.with_cgroups(Some(Arc::new(cgroups)));
        (f.rt, tree, worker, [f._dir, dir])
    }

    #[test]
    fn a_pod_runs_in_its_qos_cgroup_with_its_containers_limits() {
        use crate::cgroups::CgroupTree as _;
        let (rt, tree, worker, _dirs) = cgroup_fixture();
        let mut p = pod(
            serde_json::json!({"spec": {"restartPolicy": "Never", "containers": [
            {"name": "app", "image": "busybox:1", "resources": {
                "requests": {"cpu": "250m", "memory": "32Mi"},
                "limits": {"cpu": "500m", "memory": "64Mi"}}}]}}),
        );
        let s = status_of(worker.sync_pod(&p).unwrap());
        assert_eq!(s.qos_class.as_deref(), Some("Burstable"));
        let pod_cgroup = "/t/kubepods/burstable/poduid-1";
        assert_eq!(
            rt.last_sandbox_config().unwrap().cgroup_parent.as_deref(),
            Some(pod_cgroup)
        );
        let limits = tree.limits(pod_cgroup).unwrap();
        assert_eq!(
            (limits.cpu_shares, limits.cpu_quota, limits.memory),
            (Some(256), Some(50_000), Some(64 << 20))
        );
        let r = rt.config_of("app").unwrap().resources;
        assert_eq!(
            (
                r.cpu_shares,
                r.cpu_quota,
                r.cpu_period,
                r.memory_limit_in_bytes
            ),
            (Some(256), Some(50_000), Some(100_000), Some(64 << 20))
        );
        // Finished: nothing of the pod runs, its cgroup goes.
        rt.exit("app", 0);
        p.status = Some(status_of(worker.sync_pod(&p).unwrap()));
        assert_eq!(
            p.status.as_ref().unwrap().phase.as_deref(),
            Some("Succeeded")
        );
        worker.sync_pod(&p).unwrap();
        assert!(!tree.exists(pod_cgroup));
        assert!(tree.exists("/t/kubepods/burstable"));
    }

    #[test]
    fn a_deleted_pods_cgroup_is_removed() {
        use crate::cgroups::CgroupTree as _;
        let (_rt, tree, worker, _dirs) = cgroup_fixture();
        let mut p = pod(
            serde_json::json!({"spec": {"containers": [{"name": "app", "image": "busybox:1"}]}}),
        );
        worker.sync_pod(&p).unwrap();
        assert!(tree.exists("/t/kubepods/besteffort/poduid-1"));
        p.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            jiff::Timestamp::now(),
        ));
        worker.sync_pod(&p).unwrap();
        assert!(!tree.exists("/t/kubepods/besteffort/poduid-1"));
    }

    #[test]
    fn deletion_stops_with_the_grace_period_then_removes_everything() {
        let f = fixture(&["busybox:1"]);
        let rt = &f.rt;
        let mut p = pod(
            serde_json::json!({"spec": {"terminationGracePeriodSeconds": 7,
            "containers": [{"name": "app", "image": "busybox:1"}]}}),
        );
        f.worker.sync_pod(&p).unwrap();
        p.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            jiff::Timestamp::now(),
        ));
        assert!(matches!(
            f.worker.sync_pod(&p).unwrap(),
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

    fn waiting_of(s: &k8s_openapi::api::core::v1::PodStatus) -> (String, String) {
        let w = s.container_statuses.as_ref().unwrap()[0]
            .state
            .clone()
            .unwrap()
            .waiting
            .unwrap();
        (w.reason.unwrap(), w.message.unwrap_or_default())
    }

    #[test]
    fn run_as_non_root_refuses_a_root_image_and_the_security_context_reaches_the_runtime() {
        let f = fixture(&["busybox:1", "app:1"]);
        f.rt.set_image_user("app:1", "1000:1000");
        let mut p = pod(serde_json::json!({"spec": {
            "securityContext": {"runAsNonRoot": true, "fsGroup": 2000,
                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [
                {"name": "root", "image": "busybox:1"},
                {"name": "app", "image": "app:1", "securityContext": {
                    "runAsGroup": 3000, "allowPrivilegeEscalation": false,
                    "readOnlyRootFilesystem": true, "capabilities": {"drop": ["ALL"]}}}]}}));
        let s = status_of(f.worker.sync_pod(&p).unwrap());
        let statuses = s.container_statuses.clone().unwrap();
        let root = statuses.iter().find(|c| c.name == "root").unwrap();
        let w = root.state.clone().unwrap().waiting.unwrap();
        assert_eq!(w.reason.as_deref(), Some("CreateContainerConfigError"));
        assert_eq!(
            w.message.as_deref(),
            Some("container has runAsNonRoot and image will run as root (pod: \"p_default(uid-1)\", container: root)")
        );
        assert!(
            f.rt.config_of("root").is_none(),
            "the container is not created"
        );
        let config = f.rt.config_of("app").unwrap();
        assert_eq!(
            config.security,
            cri::LinuxContainerSecurityContext {
                run_as_group: Some(3000),
                supplemental_groups: vec![2000],
                readonly_rootfs: true,
                drop_capabilities: vec!["ALL".into()],
                no_new_privs: true,
                seccomp: cri::SecurityProfile::RuntimeDefault,
                ..Default::default()
            }
        );
        // A named image user cannot be checked.
        f.rt.set_image_user("busybox:1", "nobody");
        p.status = Some(s);
        let s = status_of(f.worker.sync_pod(&p).unwrap());
        assert!(waiting_of(&s)
            .1
            .contains("image has non-numeric user (nobody)"));
    }

    #[test]
    fn an_image_pull_back_off_is_announced_once_per_failed_pull() {
        let f = fixture(&[]);
        let mut p = pod(
            serde_json::json!({"spec": {"containers": [{"name": "app", "image": "nowhere:1"}]}}),
        );
        let s = status_of(f.worker.sync_pod(&p).unwrap());
        assert_eq!(waiting_of(&s).0, "ErrImagePull");
        p.status = Some(s);
        let s = status_of(f.worker.sync_pod(&p).unwrap());
        assert_eq!(waiting_of(&s).0, "ImagePullBackOff");
        let backoffs = || {
            f.events
                .list()
                .iter()
                .filter(|e| e.starts_with("BackOff: Back-off pulling image \"nowhere:1\""))
                .count()
        };
        assert_eq!(backoffs(), 1, "{:?}", f.events.list());
        // Later syncs within the same back-off say nothing new.
        p.status = Some(s);
        f.worker.sync_pod(&p).unwrap();
        f.worker.sync_pod(&p).unwrap();
        assert_eq!(backoffs(), 1, "{:?}", f.events.list());
    }

    #[test]
    fn image_pull_secrets_give_the_pull_its_credentials() {
        let f = fixture(&[]);
        let alice = cri::AuthConfig {
            username: "alice".into(),
            password: "s3cret".into(),
        };
        f.rt.put_registry_image("127.0.0.1:5000/app:1", Some(alice));
        let config = serde_json::json!({"auths": {"127.0.0.1:5000": {"username": "alice", "password": "s3cret"}}});
        f.objects.put_typed_secret(
            "default",
            "regcred",
            "kubernetes.io/dockerconfigjson",
            &[(".dockerconfigjson", &config.to_string())],
        );
        let spec = |secrets: serde_json::Value| {
            pod(serde_json::json!({"spec": {"imagePullSecrets": secrets,
                "containers": [{"name": "app", "image": "127.0.0.1:5000/app:1"}]}}))
        };
        let s = status_of(f.worker.sync_pod(&spec(serde_json::json!([]))).unwrap());
        let (reason, message) = waiting_of(&s);
        assert_eq!(reason, "ErrImagePull");
        assert!(message.contains("401 Unauthorized"), "{message}");
        let mut p = spec(serde_json::json!([{"name": "regcred"}]));
        p.metadata.uid = Some("uid-2".into());
        let s = status_of(f.worker.sync_pod(&p).unwrap());
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert!(f
            .rt
            .calls()
            .contains(&"pull_image 127.0.0.1:5000/app:1 as alice".to_string()));
    }

    #[test]
    fn a_missing_config_map_waits_with_create_container_config_error_until_it_exists() {
        let f = fixture(&["busybox:1"]);
        let mut p = pod(
            serde_json::json!({"spec": {"containers": [{"name": "app", "image": "busybox:1",
            "command": ["echo", "$(COLOR)"],
            "env": [{"name": "COLOR", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "color"}}}]}]}}),
        );
        let s = status_of(f.worker.sync_pod(&p).unwrap());
        assert_eq!(
            waiting_of(&s),
            (
                "CreateContainerConfigError".into(),
                "configmap \"cfg\" not found".into()
            )
        );
        assert_eq!(
            f.events.list(),
            [
                "Pulled: Container image \"busybox:1\" already present on machine",
                "Failed: Error: configmap \"cfg\" not found"
            ]
        );
        // The same error again: no new event.
        p.status = Some(s);
        f.worker.sync_pod(&p).unwrap();
        assert_eq!(f.events.list().len(), 2);
        f.objects
            .put_config_map("default", "cfg", &[("color", "blue")]);
        let s = status_of(f.worker.sync_pod(&p).unwrap());
        assert!(s.container_statuses.unwrap()[0]
            .state
            .clone()
            .unwrap()
            .running
            .is_some());
        let config = f.rt.config_of("app").unwrap();
        assert_eq!(config.envs, [("COLOR".to_string(), "blue".to_string())]);
        assert_eq!(config.command, ["echo", "blue"]);
    }

    #[test]
    fn volumes_are_mounted_into_containers_and_removed_with_the_pod() {
        let f = fixture(&["busybox:1"]);
        let mut p = pod(serde_json::json!({"spec": {
            "volumes": [{"name": "shared", "emptyDir": {}}, {"name": "cfg", "configMap": {"name": "c"}}],
            "containers": [
                {"name": "main", "image": "busybox:1", "volumeMounts": [{"name": "shared", "mountPath": "/data"}]},
                {"name": "side", "image": "busybox:1", "volumeMounts": [
                    {"name": "shared", "mountPath": "/out"}, {"name": "cfg", "mountPath": "/cfg"}]}]}}));
        // The ConfigMap is missing: nothing starts, FailedMount.
        let s = status_of(f.worker.sync_pod(&p).unwrap());
        assert_eq!(waiting_of(&s).0, "ContainerCreating");
        assert!(f.rt.calls().is_empty());
        assert_eq!(
            f.events.list(),
            ["FailedMount: MountVolume.SetUp failed for volume \"cfg\" : configmap \"c\" not found"]
        );
        f.objects.put_config_map("default", "c", &[("k", "v")]);
        f.worker.sync_pod(&p).unwrap();
        let main = f.rt.config_of("main").unwrap();
        let side = f.rt.config_of("side").unwrap();
        assert_eq!(main.mounts[0].host_path, side.mounts[0].host_path);
        assert!(main.mounts[0]
            .host_path
            .ends_with("pods/uid-1/volumes/kubernetes.io~empty-dir/shared"));
        assert!(side.mounts[1].readonly);
        assert!(side.mounts[1].host_path.join("k").exists());
        p.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            jiff::Timestamp::now(),
        ));
        f.worker.sync_pod(&p).unwrap();
        assert!(!f.worker.pods_dir.join("uid-1").exists());
    }

    #[test]
    fn pre_stop_runs_before_the_stop_and_post_start_failure_kills() {
        let f = fixture(&["busybox:1"]);
        let mut p = pod(
            serde_json::json!({"spec": {"terminationGracePeriodSeconds": 9, "containers": [
            {"name": "app", "image": "busybox:1", "lifecycle": {
                "postStart": {"exec": {"command": ["post"]}},
                "preStop": {"exec": {"command": ["pre"]}}}}]}}),
        );
        f.worker.sync_pod(&p).unwrap();
        assert_eq!(
            f.rt.calls()[1..],
            [
                "create_container app",
                "start_container app",
                "exec_sync app post"
            ]
        );
        p.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            jiff::Timestamp::now(),
        ));
        f.worker.sync_pod(&p).unwrap();
        let calls = f.rt.calls();
        assert_eq!(calls[4..6], ["exec_sync app pre", "stop_container app 9"]);

        // A failing postStart stops the container it ran in.
        let f = fixture(&["busybox:1"]);
        f.rt.set_exec_result("app", 1, "no");
        p.metadata.deletion_timestamp = None;
        f.worker.sync_pod(&p).unwrap();
        assert_eq!(f.rt.calls()[4], "stop_container app 9");
        assert!(f
            .events
            .list()
            .iter()
            .any(|e| e.starts_with("FailedPostStartHook: Exec lifecycle hook")));
    }

    #[test]
    fn an_ephemeral_container_starts_once_in_its_targets_pid_namespace() {
        let f = fixture(&["busybox:1"]);
        let mut p = pod(serde_json::json!({"spec": {
            "containers": [{"name": "app", "image": "busybox:1"}],
            "ephemeralContainers": [{"name": "dbg", "image": "busybox:1", "command": ["sh"],
                "stdin": true, "tty": true, "targetContainerName": "app"}]}}));
        f.worker.sync_pod(&p).unwrap();
        // The target was not running yet: the debug container waits for it.
        assert!(f.rt.config_of("dbg").is_none());
        p.status = Some(status_of(f.worker.sync_pod(&p).unwrap()));
        let app = cri::RuntimeService::list_containers(f.rt.as_ref(), &BTreeMap::new()).unwrap();
        let app = app.iter().find(|c| c.name() == "app").unwrap();
        let dbg = f.rt.config_of("dbg").unwrap();
        assert_eq!(dbg.pid_target.as_deref(), Some(app.id.as_str()));
        assert_eq!(
            (dbg.stdin, dbg.tty, dbg.command),
            (true, true, vec!["sh".to_string()])
        );
        assert_eq!(f.rt.config_of("app").unwrap().pid_target, None);
        // Exited: never started again; reported apart from the pod's containers.
        f.rt.exit("dbg", 0);
        let calls = f.rt.calls().len();
        let s = status_of(f.worker.sync_pod(&p).unwrap());
        assert_eq!(f.rt.calls().len(), calls);
        assert_eq!(s.phase.as_deref(), Some("Running"));
        let e = &s.ephemeral_container_statuses.unwrap()[0];
        assert_eq!(e.name, "dbg");
        let terminated = e.state.clone().unwrap().terminated.unwrap();
        assert_eq!(terminated.exit_code, 0);
        assert_eq!(s.container_statuses.unwrap().len(), 1);
    }

    #[test]
    fn an_evicted_pod_stops_and_fails_with_reason_evicted() {
        let f = fixture(&["busybox:1"]);
        let mut p = pod(
            serde_json::json!({"spec": {"containers": [{"name": "app", "image": "busybox:1"}]}}),
        );
        p.status = Some(status_of(f.worker.sync_pod(&p).unwrap()));
        f.worker
            .evict(&p, "The node was low on resource: memory. ")
            .unwrap();
        let calls = f.rt.calls();
        assert!(
            calls.contains(&"stop_container app 1".to_string()),
            "{calls:?}"
        );
        assert!(
            calls.ends_with(&["stop_pod_sandbox".to_string()]),
            "{calls:?}"
        );
        assert_eq!(
            f.events.list().last().map(String::as_str),
            Some("Evicted: The node was low on resource: memory. ")
        );
        let s = status_of(f.worker.sync_pod(&p).unwrap());
        assert_eq!(s.phase.as_deref(), Some("Failed"));
        assert_eq!(s.reason.as_deref(), Some("Evicted"));
        assert_eq!(
            s.message.as_deref(),
            Some("The node was low on resource: memory. ")
        );
        let disruption = s
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "DisruptionTarget")
            .unwrap();
        assert_eq!(
            (disruption.status.as_str(), disruption.reason.as_deref()),
            ("True", Some("TerminationByKubelet"))
        );
        // Reported Failed, it stays so (restartPolicy Always notwithstanding), and nothing
        // starts again, also after the kubelet forgot the eviction.
        p.status = Some(s);
        f.worker.evicted.lock().unwrap().clear();
        let calls = f.rt.calls().len();
        let s = status_of(f.worker.sync_pod(&p).unwrap());
        assert_eq!(s.phase.as_deref(), Some("Failed"));
        assert_eq!(s.reason.as_deref(), Some("Evicted"));
        assert_eq!(f.rt.calls().len(), calls);
    }

    #[test]
    fn under_memory_pressure_a_new_best_effort_pod_is_refused() {
        use crate::eviction::{parse_thresholds, Observation, Pressure};
        let pressure = Arc::new(Pressure::new(Duration::from_secs(300)));
        let threshold = parse_thresholds("memory.available<1Gi").unwrap()[0];
        pressure.update(&[(threshold, Observation::default())], Instant::now());
        let f = fixture(&["busybox:1"]);
        let worker = f.worker.with_pressure(pressure);
        let p = pod(
            serde_json::json!({"spec": {"containers": [{"name": "app", "image": "busybox:1"}]}}),
        );
        let s = status_of(worker.sync_pod(&p).unwrap());
        assert_eq!(
            (
                s.phase.as_deref(),
                s.reason.as_deref(),
                s.message.as_deref()
            ),
            (
                Some("Failed"),
                Some("Evicted"),
                Some("The node was low on resource: [MemoryPressure]. ")
            )
        );
        assert!(f.rt.calls().is_empty(), "nothing started");
        assert_eq!(
            f.events.list(),
            ["Evicted: The node was low on resource: [MemoryPressure]. "]
        );
        // A Guaranteed pod is admitted.
        let mut g = pod(serde_json::json!({"spec": {"containers": [{"name": "app",
            "image": "busybox:1", "resources": {"limits": {"cpu": "1", "memory": "64Mi"}}}]}}));
        g.metadata.uid = Some("uid-2".into());
        let s = status_of(worker.sync_pod(&g).unwrap());
        assert_eq!(s.phase.as_deref(), Some("Running"));
    }

    #[test]
    fn pod_max_pids_limits_each_pod_cgroup_and_kubepods() {
        use crate::cgroups::{resources::Amounts, PodCgroups};
        let f = fixture(&["busybox:1"]);
        let tree = Arc::new(crate::fake::FakeCgroups::default());
        let dir = tempfile::tempdir().unwrap();
        let cgroups = PodCgroups::new(tree.clone(), "/t", Amounts::default(), dir.path())
            .with_pids_limits(Some(20), Some(4_194_304));
        let worker = f.worker.with_cgroups(Some(Arc::new(cgroups)));
        let p = pod(
            serde_json::json!({"spec": {"containers": [{"name": "app", "image": "busybox:1"}]}}),
        );
        worker.sync_pod(&p).unwrap();
        assert_eq!(
            tree.limits("/t/kubepods/besteffort/poduid-1")
                .unwrap()
                .pids_limit,
            Some(20)
        );
        assert_eq!(
            tree.limits("/t/kubepods").unwrap().pids_limit,
            Some(4_194_304)
        );
        // -1 is no limit.
        let cgroups = PodCgroups::new(tree.clone(), "/u", Amounts::default(), dir.path())
            .with_pids_limits(Some(-1), None);
        let g = fixture(&["busybox:1"]);
        let worker = g.worker.with_cgroups(Some(Arc::new(cgroups)));
        worker.sync_pod(&p).unwrap();
        assert_eq!(
            tree.limits("/u/kubepods/besteffort/poduid-1")
                .unwrap()
                .pids_limit,
            None
        );
    }
}
