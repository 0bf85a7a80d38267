//! The CRI-shaped runtime over skiff's engine: a sandbox is an engine container
//! running the built-in pause process on the node's pod network; a pod's
//! containers are engine containers joining its namespaces.

use std::collections::BTreeMap;
use std::sync::Arc;

use skiff_engine::{Container, CreateOptions, CreateRequest, Engine, EngineError};
use skiff_runtime::ContainerStatus as EngineStatus;

use crate::cri::{
    self, ContainerConfig, ContainerState, ContainerStatus, CriError, ImageService,
    PodSandboxConfig, PodSandboxStatus, Result, RuntimeService, SandboxState,
};

/// Value of [`cri::TYPE_LABEL`] on sandboxes.
const SANDBOX_TYPE: &str = "podsandbox";
/// Value of [`cri::TYPE_LABEL`] on containers.
const CONTAINER_TYPE: &str = "container";

/// The engine as the kubelet's runtime.
#[derive(Clone)]
pub struct EngineRuntime {
    engine: Arc<Engine>,
    /// The network sandboxes join (the node's pod network).
    network: Option<String>,
}

impl EngineRuntime {
    /// Wraps `engine`; sandboxes join `network` (the engine's default network when `None`).
    pub fn new(engine: Arc<Engine>, network: Option<String>) -> EngineRuntime {
        EngineRuntime { engine, network }
    }

    /// The pod network's subnet, the node's pod CIDR (created on first use).
    pub fn pod_cidr(&self) -> Option<String> {
        let name = match &self.network {
            Some(n) => n.clone(),
            None => skiff_engine::networks::NetworkMode::parse(None)
                .network()?
                .to_string(),
        };
        match self.engine.networking().network(&name) {
            Ok(n) => Some(n.subnet.to_string()),
            Err(e) => {
                tracing::warn!("pod network {name}: {e}");
                None
            }
        }
    }

    fn list_typed(&self, kind: &str, wanted: &BTreeMap<String, String>) -> Result<Vec<Container>> {
        Ok(self
            .engine
            .list()
            .map_err(err)?
            .into_iter()
            .filter(|c| {
                let labels = &c.record.request.labels;
                labels.get(cri::TYPE_LABEL).map(String::as_str) == Some(kind)
                    && cri::matches(labels, wanted)
            })
            .collect())
    }

    fn sandbox_status(&self, c: &Container) -> PodSandboxStatus {
        let ip = c.record.network.network().and_then(|n| {
            self.engine
                .networking()
                .attachment(n, &c.record.id)
                .ok()
                .flatten()
                .map(|a| a.ip.to_string())
        });
        PodSandboxStatus {
            id: c.record.id.clone(),
            state: if c.is_running() {
                SandboxState::Ready
            } else {
                SandboxState::NotReady
            },
            ip,
            created_at: c.record.created,
            labels: c.record.request.labels.clone(),
        }
    }
}

fn err(e: EngineError) -> CriError {
    match e {
        EngineError::NoSuchContainer(id) => CriError::NotFound(format!("container {id}")),
        other => CriError::Runtime(other.to_string()),
    }
}

/// Engine names are unique; these follow the kubelet's `k8s_<container>_<pod>_<ns>_<uid>_<attempt>`.
fn engine_name(container: &str, pod: &PodSandboxConfigRef<'_>, attempt: u32) -> String {
    format!(
        "k8s_{container}_{}_{}_{}_{attempt}",
        pod.name, pod.namespace, pod.uid
    )
}

struct PodSandboxConfigRef<'a> {
    name: &'a str,
    namespace: &'a str,
    uid: &'a str,
}

fn container_status(c: &Container) -> ContainerStatus {
    let (state, exit_code, finished_at, reason, message) = match &c.status {
        EngineStatus::Created => (
            ContainerState::Created,
            0,
            None,
            String::new(),
            String::new(),
        ),
        EngineStatus::Running { .. } => (
            ContainerState::Running,
            0,
            None,
            String::new(),
            String::new(),
        ),
        EngineStatus::Exited(e) => (
            ContainerState::Exited,
            e.exit_code,
            Some(e.finished_at),
            e.reason().to_string(),
            e.error.clone().unwrap_or_default(),
        ),
        EngineStatus::Dead => (
            ContainerState::Unknown,
            0,
            None,
            String::new(),
            String::new(),
        ),
    };
    ContainerStatus {
        id: c.record.id.clone(),
        state,
        image: c.record.image.clone(),
        image_ref: c.record.image_id.clone(),
        created_at: c.record.created,
        started_at: c.started_at,
        finished_at,
        exit_code,
        reason,
        message,
        labels: c.record.request.labels.clone(),
    }
}

impl RuntimeService for EngineRuntime {
    fn run_pod_sandbox(&self, config: &PodSandboxConfig) -> Result<String> {
        let mut labels = config.labels.clone();
        labels.extend(cri::pod_labels(
            &config.name,
            &config.namespace,
            &config.uid,
        ));
        labels.insert(cri::TYPE_LABEL.into(), SANDBOX_TYPE.into());
        labels.insert(cri::ATTEMPT_LABEL.into(), config.attempt.to_string());
        let pod = PodSandboxConfigRef {
            name: &config.name,
            namespace: &config.namespace,
            uid: &config.uid,
        };
        let req = CreateRequest {
            image: config.image.clone(),
            name: Some(engine_name("POD", &pod, config.attempt)),
            hostname: Some(config.hostname.clone()),
            network: self.network.clone(),
            labels,
            // The pause process exits at SIGTERM at once.
            stop_timeout: Some(2),
            ..Default::default()
        };
        let opts = CreateOptions {
            pause: true,
            ..Default::default()
        };
        let record = self.engine.create_with(&req, &opts).map_err(err)?;
        if let Err(e) = self.engine.start(&record.id, Default::default()) {
            let _ = self.engine.remove(&record.id, true, false);
            return Err(err(e));
        }
        Ok(record.id)
    }

    fn stop_pod_sandbox(&self, id: &str) -> Result<()> {
        self.engine.stop(id, Some(2)).map(drop).map_err(err)
    }

    fn remove_pod_sandbox(&self, id: &str) -> Result<()> {
        self.engine.remove(id, true, false).map(drop).map_err(err)
    }

    fn pod_sandbox_status(&self, id: &str) -> Result<PodSandboxStatus> {
        let c = self.engine.find(id).map_err(err)?;
        Ok(self.sandbox_status(&c))
    }

    fn list_pod_sandboxes(
        &self,
        labels: &BTreeMap<String, String>,
    ) -> Result<Vec<PodSandboxStatus>> {
        Ok(self
            .list_typed(SANDBOX_TYPE, labels)?
            .iter()
            .map(|c| self.sandbox_status(c))
            .collect())
    }

    fn create_container(&self, sandbox_id: &str, config: &ContainerConfig) -> Result<String> {
        let sandbox = self.engine.find(sandbox_id).map_err(err)?;
        let sl = &sandbox.record.request.labels;
        let get = |k: &str| sl.get(k).cloned().unwrap_or_default();
        let (name, namespace, uid) = (
            get(cri::POD_NAME_LABEL),
            get(cri::POD_NAMESPACE_LABEL),
            get(cri::POD_UID_LABEL),
        );
        let mut labels = config.labels.clone();
        labels.extend(cri::pod_labels(&name, &namespace, &uid));
        labels.insert(cri::TYPE_LABEL.into(), CONTAINER_TYPE.into());
        labels.insert(cri::CONTAINER_NAME_LABEL.into(), config.name.clone());
        labels.insert(cri::ATTEMPT_LABEL.into(), config.attempt.to_string());
        // Kubernetes: `command` replaces ENTRYPOINT (and drops CMD), `args` replaces CMD.
        let (entrypoint, command) = match config.command.split_first() {
            Some((first, rest)) => {
                let mut command = rest.to_vec();
                command.extend(config.args.iter().cloned());
                (Some(first.clone()), command)
            }
            None => (None, config.args.clone()),
        };
        let pod = PodSandboxConfigRef {
            name: &name,
            namespace: &namespace,
            uid: &uid,
        };
        let req = CreateRequest {
            image: config.image.clone(),
            name: Some(engine_name(&config.name, &pod, config.attempt)),
            entrypoint,
            command,
            env: config
                .envs
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect(),
            workdir: config.working_dir.clone(),
            hostname: Some(config.hostname.clone()),
            tty: config.tty,
            interactive: config.stdin,
            labels,
            ..Default::default()
        };
        let opts = CreateOptions {
            namespaces_of: Some(sandbox.record.id.clone()),
            ..Default::default()
        };
        Ok(self.engine.create_with(&req, &opts).map_err(err)?.id)
    }

    fn start_container(&self, id: &str) -> Result<()> {
        self.engine
            .start(id, Default::default())
            .map(drop)
            .map_err(err)
    }

    fn stop_container(&self, id: &str, timeout: u32) -> Result<()> {
        self.engine.stop(id, Some(timeout)).map(drop).map_err(err)
    }

    fn remove_container(&self, id: &str) -> Result<()> {
        self.engine.remove(id, true, false).map(drop).map_err(err)
    }

    fn container_status(&self, id: &str) -> Result<ContainerStatus> {
        Ok(container_status(&self.engine.find(id).map_err(err)?))
    }

    fn list_containers(&self, labels: &BTreeMap<String, String>) -> Result<Vec<ContainerStatus>> {
        Ok(self
            .list_typed(CONTAINER_TYPE, labels)?
            .iter()
            .map(container_status)
            .collect())
    }
}

impl ImageService for EngineRuntime {
    fn image_status(&self, image: &str) -> Result<Option<String>> {
        Ok(self
            .engine
            .images()
            .resolve(image)
            .ok()
            .map(|r| r.id.to_string()))
    }

    fn pull_image(&self, image: &str) -> Result<String> {
        let fail = |message: String| CriError::Pull {
            image: image.to_string(),
            message,
        };
        let reference = skiff_images::Reference::parse(image).map_err(|e| fail(e.to_string()))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| fail(e.to_string()))?;
        let record = rt
            .block_on(skiff_images::pull(
                self.engine.images(),
                &reference,
                &Default::default(),
                &skiff_images::NoProgress,
            ))
            .map_err(|e| fail(e.to_string()))?;
        Ok(record.id.to_string())
    }
}
