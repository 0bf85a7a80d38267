//! An in-memory runtime for unit tests of the pod workers: containers "run" until
//! a test makes them exit.

use std::collections::BTreeMap;
use std::sync::Mutex;

use chrono::Utc;

use crate::cri::{
    self, ContainerConfig, ContainerState, ContainerStatus, CriError, ImageService,
    PodSandboxConfig, PodSandboxStatus, Result, RuntimeService, SandboxState,
};

/// The fake runtime's state.
#[derive(Debug, Default)]
pub struct FakeRuntime {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    next: u64,
    sandboxes: BTreeMap<String, PodSandboxStatus>,
    containers: BTreeMap<String, ContainerStatus>,
    images: Vec<String>,
    /// Calls in order (`run_pod_sandbox`, `create_container <name>`, ...).
    calls: Vec<String>,
}

impl FakeRuntime {
    /// A runtime with these images present.
    pub fn with_images(images: &[&str]) -> FakeRuntime {
        let rt = FakeRuntime::default();
        rt.state.lock().unwrap().images = images.iter().map(|s| s.to_string()).collect();
        rt
    }

    /// Makes the running instance of container `name` exit with `code`.
    pub fn exit(&self, name: &str, code: i32) {
        let mut st = self.state.lock().unwrap();
        for c in st.containers.values_mut() {
            if c.name() == name && c.state == ContainerState::Running {
                c.state = ContainerState::Exited;
                c.exit_code = code;
                c.reason = if code == 0 { "Completed" } else { "Error" }.into();
                c.finished_at = Some(Utc::now());
            }
        }
    }

    /// The calls made so far.
    pub fn calls(&self) -> Vec<String> {
        self.state.lock().unwrap().calls.clone()
    }
}

impl State {
    fn id(&mut self) -> String {
        self.next += 1;
        format!("{:064x}", self.next)
    }
}

impl RuntimeService for FakeRuntime {
    fn run_pod_sandbox(&self, config: &PodSandboxConfig) -> Result<String> {
        let mut st = self.state.lock().unwrap();
        let id = st.id();
        let mut labels = config.labels.clone();
        labels.extend(cri::pod_labels(
            &config.name,
            &config.namespace,
            &config.uid,
        ));
        let ip = format!("10.0.0.{}", st.sandboxes.len() + 2);
        st.sandboxes.insert(
            id.clone(),
            PodSandboxStatus {
                id: id.clone(),
                state: SandboxState::Ready,
                ip: Some(ip),
                created_at: Utc::now(),
                labels,
            },
        );
        st.calls.push("run_pod_sandbox".into());
        Ok(id)
    }

    fn stop_pod_sandbox(&self, id: &str) -> Result<()> {
        let mut st = self.state.lock().unwrap();
        st.calls.push("stop_pod_sandbox".into());
        let s = st
            .sandboxes
            .get_mut(id)
            .ok_or_else(|| CriError::NotFound(id.into()))?;
        s.state = SandboxState::NotReady;
        Ok(())
    }

    fn remove_pod_sandbox(&self, id: &str) -> Result<()> {
        let mut st = self.state.lock().unwrap();
        st.calls.push("remove_pod_sandbox".into());
        st.sandboxes.remove(id);
        Ok(())
    }

    fn pod_sandbox_status(&self, id: &str) -> Result<PodSandboxStatus> {
        let st = self.state.lock().unwrap();
        st.sandboxes
            .get(id)
            .cloned()
            .ok_or_else(|| CriError::NotFound(id.into()))
    }

    fn list_pod_sandboxes(
        &self,
        labels: &BTreeMap<String, String>,
    ) -> Result<Vec<PodSandboxStatus>> {
        let st = self.state.lock().unwrap();
        Ok(st
            .sandboxes
            .values()
            .filter(|s| cri::matches(&s.labels, labels))
            .cloned()
            .collect())
    }

    fn create_container(&self, sandbox_id: &str, config: &ContainerConfig) -> Result<String> {
        let mut st = self.state.lock().unwrap();
        let sandbox = st
            .sandboxes
            .get(sandbox_id)
            .cloned()
            .ok_or_else(|| CriError::NotFound(sandbox_id.into()))?;
        let id = st.id();
        let mut labels = config.labels.clone();
        for k in [
            cri::POD_NAME_LABEL,
            cri::POD_NAMESPACE_LABEL,
            cri::POD_UID_LABEL,
        ] {
            if let Some(v) = sandbox.labels.get(k) {
                labels.insert(k.into(), v.clone());
            }
        }
        labels.insert(cri::CONTAINER_NAME_LABEL.into(), config.name.clone());
        labels.insert(cri::ATTEMPT_LABEL.into(), config.attempt.to_string());
        st.containers.insert(
            id.clone(),
            ContainerStatus {
                id: id.clone(),
                state: ContainerState::Created,
                image: config.image.clone(),
                image_ref: "sha256:fake".into(),
                created_at: Utc::now(),
                started_at: None,
                finished_at: None,
                exit_code: 0,
                reason: String::new(),
                message: String::new(),
                labels,
            },
        );
        st.calls.push(format!("create_container {}", config.name));
        Ok(id)
    }

    fn start_container(&self, id: &str) -> Result<()> {
        let mut st = self.state.lock().unwrap();
        let c = st
            .containers
            .get_mut(id)
            .ok_or_else(|| CriError::NotFound(id.into()))?;
        c.state = ContainerState::Running;
        c.started_at = Some(Utc::now());
        let name = c.name().to_string();
        st.calls.push(format!("start_container {name}"));
        Ok(())
    }

    fn stop_container(&self, id: &str, timeout: u32) -> Result<()> {
        let mut st = self.state.lock().unwrap();
        let c = st
            .containers
            .get_mut(id)
            .ok_or_else(|| CriError::NotFound(id.into()))?;
        c.state = ContainerState::Exited;
        c.exit_code = 137;
        c.reason = "Error".into();
        c.finished_at = Some(Utc::now());
        let name = c.name().to_string();
        st.calls.push(format!("stop_container {name} {timeout}"));
        Ok(())
    }

    fn remove_container(&self, id: &str) -> Result<()> {
        let mut st = self.state.lock().unwrap();
        if let Some(c) = st.containers.remove(id) {
            let name = c.name().to_string();
            st.calls.push(format!("remove_container {name}"));
        }
        Ok(())
    }

    fn container_status(&self, id: &str) -> Result<ContainerStatus> {
        let st = self.state.lock().unwrap();
        st.containers
            .get(id)
            .cloned()
            .ok_or_else(|| CriError::NotFound(id.into()))
    }

    fn list_containers(&self, labels: &BTreeMap<String, String>) -> Result<Vec<ContainerStatus>> {
        let st = self.state.lock().unwrap();
        Ok(st
            .containers
            .values()
            .filter(|c| cri::matches(&c.labels, labels))
            .cloned()
            .collect())
    }
}

impl ImageService for FakeRuntime {
    fn image_status(&self, image: &str) -> Result<Option<String>> {
        let st = self.state.lock().unwrap();
        Ok(st
            .images
            .iter()
            .any(|i| i == image)
            .then(|| "sha256:fake".to_string()))
    }

    fn pull_image(&self, image: &str) -> Result<String> {
        Err(CriError::Pull {
            image: image.into(),
            message: "the fake runtime pulls nothing".into(),
        })
    }
}
