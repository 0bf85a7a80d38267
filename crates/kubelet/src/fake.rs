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
    /// What `exec_sync` answers, by container name (exit 0 when not set).
    exec_results: BTreeMap<String, cri::ExecSyncResult>,
    /// Configs of created containers, by id.
    configs: BTreeMap<String, ContainerConfig>,
    /// Configs of sandboxes, in order of creation.
    sandbox_configs: Vec<PodSandboxConfig>,
    /// What `container_stats` answers, by container id.
    stats: BTreeMap<String, cri::ContainerStats>,
    /// Images a pull finds, with the credentials it needs (`None`: anonymous).
    registry: BTreeMap<String, Option<cri::AuthConfig>>,
    /// The configured USER of present images.
    image_users: BTreeMap<String, String>,
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

    /// Makes `exec_sync` in container `name` exit with `code`, printing `stdout`.
    pub fn set_exec_result(&self, name: &str, code: i32, stdout: &str) {
        self.state.lock().unwrap().exec_results.insert(
            name.into(),
            cri::ExecSyncResult {
                exit_code: code,
                stdout: stdout.as_bytes().to_vec(),
                stderr: Vec::new(),
            },
        );
    }

    /// The config the newest instance of container `name` was created with.
    pub fn config_of(&self, name: &str) -> Option<ContainerConfig> {
        let st = self.state.lock().unwrap();
        st.configs
            .values()
            .filter(|c| c.name == name)
            .max_by_key(|c| c.attempt)
            .cloned()
    }

    /// The config the newest sandbox was created with.
    pub fn last_sandbox_config(&self) -> Option<PodSandboxConfig> {
        self.state.lock().unwrap().sandbox_configs.last().cloned()
    }

    /// Makes `container_stats` of container `id` answer `stats`.
    pub fn set_stats(&self, id: &str, stats: cri::ContainerStats) {
        self.state.lock().unwrap().stats.insert(id.into(), stats);
    }

    /// Makes `image` pullable, only with `auth` when given.
    pub fn put_registry_image(&self, image: &str, auth: Option<cri::AuthConfig>) {
        self.state
            .lock()
            .unwrap()
            .registry
            .insert(image.into(), auth);
    }

    /// Sets the configured USER of the present image `image`.
    pub fn set_image_user(&self, image: &str, user: &str) {
        self.state
            .lock()
            .unwrap()
            .image_users
            .insert(image.into(), user.into());
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
        st.sandbox_configs.push(config.clone());
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
        st.configs.insert(id.clone(), config.clone());
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

    fn container_stats(&self, id: &str) -> Result<Option<cri::ContainerStats>> {
        Ok(self.state.lock().unwrap().stats.get(id).cloned())
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

    fn exec_sync(
        &self,
        id: &str,
        cmd: &[String],
        _timeout: std::time::Duration,
    ) -> Result<cri::ExecSyncResult> {
        let mut st = self.state.lock().unwrap();
        let c = st
            .containers
            .get(id)
            .ok_or_else(|| CriError::NotFound(id.into()))?;
        if c.state != ContainerState::Running {
            return Err(CriError::Runtime(format!("container {id} is not running")));
        }
        let name = c.name().to_string();
        st.calls.push(format!("exec_sync {name} {}", cmd.join(" ")));
        Ok(st.exec_results.get(&name).cloned().unwrap_or_default())
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

    fn pull_image(&self, image: &str, auth: Option<&cri::AuthConfig>) -> Result<String> {
        let mut st = self.state.lock().unwrap();
        st.calls.push(format!(
            "pull_image {image} as {}",
            auth.map(|a| a.username.as_str()).unwrap_or("anonymous")
        ));
        let fail = |message: &str| CriError::Pull {
            image: image.into(),
            message: message.into(),
        };
        match st.registry.get(image) {
            None => Err(fail("the fake registry has no such image")),
            Some(Some(wanted)) if Some(wanted) != auth => {
                Err(fail("401 Unauthorized: authentication required"))
            }
            Some(_) => {
                st.images.push(image.into());
                Ok("sha256:fake".into())
            }
        }
    }

    fn image_user(&self, image: &str) -> Result<Option<String>> {
        let st = self.state.lock().unwrap();
        if !st.images.iter().any(|i| i == image) {
            return Ok(None);
        }
        Ok(Some(st.image_users.get(image).cloned().unwrap_or_default()))
    }
}

/// In-memory API objects for unit tests of env and volumes.
#[derive(Debug, Default)]
pub struct FakeObjects {
    config_maps: Mutex<BTreeMap<(String, String), k8s_openapi::api::core::v1::ConfigMap>>,
    secrets: Mutex<BTreeMap<(String, String), k8s_openapi::api::core::v1::Secret>>,
    claims: Mutex<BTreeMap<(String, String), k8s_openapi::api::core::v1::PersistentVolumeClaim>>,
    volumes: Mutex<BTreeMap<String, k8s_openapi::api::core::v1::PersistentVolume>>,
    tokens: Mutex<u32>,
    service_accounts: Mutex<BTreeMap<(String, String), k8s_openapi::api::core::v1::ServiceAccount>>,
    services: Mutex<BTreeMap<(String, String), k8s_openapi::api::core::v1::Service>>,
}

impl FakeObjects {
    /// Creates or replaces a ConfigMap with these string data.
    pub fn put_config_map(&self, namespace: &str, name: &str, data: &[(&str, &str)]) {
        let cm = k8s_openapi::api::core::v1::ConfigMap {
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        };
        self.config_maps
            .lock()
            .unwrap()
            .insert((namespace.into(), name.into()), cm);
    }

    /// Adds `binaryData` entry `key` to ConfigMap `name` (created if absent).
    pub fn put_config_map_binary(&self, namespace: &str, name: &str, key: &str, value: &[u8]) {
        let mut maps = self.config_maps.lock().unwrap();
        let cm = maps.entry((namespace.into(), name.into())).or_default();
        cm.binary_data
            .get_or_insert_with(Default::default)
            .insert(key.into(), k8s_openapi::ByteString(value.to_vec()));
    }

    /// Creates or replaces a Secret with these data.
    pub fn put_secret(&self, namespace: &str, name: &str, data: &[(&str, &str)]) {
        let s = k8s_openapi::api::core::v1::Secret {
            data: Some(
                data.iter()
                    .map(|(k, v)| {
                        (
                            k.to_string(),
                            k8s_openapi::ByteString(v.as_bytes().to_vec()),
                        )
                    })
                    .collect(),
            ),
            ..Default::default()
        };
        self.secrets
            .lock()
            .unwrap()
            .insert((namespace.into(), name.into()), s);
    }

    /// Creates or replaces a Secret of `type_` with these data.
    pub fn put_typed_secret(
        &self,
        namespace: &str,
        name: &str,
        type_: &str,
        data: &[(&str, &str)],
    ) {
        self.put_secret(namespace, name, data);
        if let Some(s) = self
            .secrets
            .lock()
            .unwrap()
            .get_mut(&(namespace.into(), name.into()))
        {
            s.type_ = Some(type_.into());
        }
    }

    /// Creates or replaces a Service (JSON form).
    pub fn put_service(&self, namespace: &str, name: &str, service: serde_json::Value) {
        self.services.lock().unwrap().insert(
            (namespace.into(), name.into()),
            serde_json::from_value(service).unwrap(),
        );
    }

    /// Creates or replaces a ServiceAccount (JSON form).
    pub fn put_service_account(&self, namespace: &str, name: &str, sa: serde_json::Value) {
        self.service_accounts.lock().unwrap().insert(
            (namespace.into(), name.into()),
            serde_json::from_value(sa).unwrap(),
        );
    }

    /// Creates or replaces a claim (JSON form).
    pub fn put_claim(&self, namespace: &str, name: &str, claim: serde_json::Value) {
        self.claims.lock().unwrap().insert(
            (namespace.into(), name.into()),
            serde_json::from_value(claim).unwrap(),
        );
    }

    /// Creates or replaces a PersistentVolume (JSON form).
    pub fn put_volume(&self, name: &str, volume: serde_json::Value) {
        self.volumes
            .lock()
            .unwrap()
            .insert(name.into(), serde_json::from_value(volume).unwrap());
    }
}

impl crate::objects::ObjectSource for FakeObjects {
    fn config_map(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<k8s_openapi::api::core::v1::ConfigMap>, crate::objects::ObjectError> {
        Ok(self
            .config_maps
            .lock()
            .unwrap()
            .get(&(namespace.into(), name.into()))
            .cloned())
    }

    fn services(
        &self,
        namespace: &str,
    ) -> Result<Vec<k8s_openapi::api::core::v1::Service>, crate::objects::ObjectError> {
        Ok(self
            .services
            .lock()
            .unwrap()
            .iter()
            .filter(|((ns, _), _)| ns == namespace)
            .map(|(_, s)| s.clone())
            .collect())
    }

    fn service_account(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<k8s_openapi::api::core::v1::ServiceAccount>, crate::objects::ObjectError>
    {
        Ok(self
            .service_accounts
            .lock()
            .unwrap()
            .get(&(namespace.into(), name.into()))
            .cloned())
    }

    fn secret(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<k8s_openapi::api::core::v1::Secret>, crate::objects::ObjectError> {
        Ok(self
            .secrets
            .lock()
            .unwrap()
            .get(&(namespace.into(), name.into()))
            .cloned())
    }

    fn claim(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<
        Option<k8s_openapi::api::core::v1::PersistentVolumeClaim>,
        crate::objects::ObjectError,
    > {
        Ok(self
            .claims
            .lock()
            .unwrap()
            .get(&(namespace.into(), name.into()))
            .cloned())
    }

    fn volume(
        &self,
        name: &str,
    ) -> Result<Option<k8s_openapi::api::core::v1::PersistentVolume>, crate::objects::ObjectError>
    {
        Ok(self.volumes.lock().unwrap().get(name).cloned())
    }

    fn token(
        &self,
        spec: &crate::objects::TokenSpec,
    ) -> Result<crate::objects::Token, crate::objects::ObjectError> {
        let mut n = self.tokens.lock().unwrap();
        *n += 1;
        Ok(crate::objects::Token {
            token: format!(
                "token-{}-{}-{}",
                spec.service_account,
                spec.audience.as_deref().unwrap_or("api"),
                *n
            ),
            expires: Utc::now() + chrono::Duration::seconds(spec.expiration_seconds),
        })
    }
}

/// A mounter that records tmpfs mounts instead of making them.
#[derive(Debug, Default)]
pub struct FakeMounter {
    /// Mounted directories with their size limits.
    pub mounts: Mutex<BTreeMap<std::path::PathBuf, Option<u64>>>,
}

impl crate::volumes::Mounter for FakeMounter {
    fn mount_tmpfs(&self, dir: &std::path::Path, size: Option<u64>) -> std::io::Result<()> {
        self.mounts.lock().unwrap().insert(dir.to_path_buf(), size);
        Ok(())
    }

    fn is_mount_point(&self, dir: &std::path::Path) -> bool {
        self.mounts.lock().unwrap().contains_key(dir)
    }

    fn unmount(&self, dir: &std::path::Path) -> std::io::Result<()> {
        self.mounts.lock().unwrap().remove(dir);
        Ok(())
    }

    fn mounts_under(&self, dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        self.mounts
            .lock()
            .unwrap()
            .keys()
            .filter(|m| m.starts_with(dir))
            .cloned()
            .collect()
    }
}

/// Events recorded in memory.
#[derive(Debug, Default)]
pub struct RecordedEvents {
    /// `reason: message` per event, in order.
    pub events: Mutex<Vec<String>>,
}

impl RecordedEvents {
    /// The events so far, as `reason: message`.
    pub fn list(&self) -> Vec<String> {
        self.events.lock().unwrap().clone()
    }
}

impl crate::events::EventSink for RecordedEvents {
    fn emit(&self, event: crate::events::PodEvent) {
        self.events
            .lock()
            .unwrap()
            .push(format!("{}: {}", event.reason, event.message));
    }
}

/// An in-memory cgroup tree: which cgroups exist and the limits written to each.
#[derive(Debug, Default)]
pub struct FakeCgroups {
    state: Mutex<FakeTree>,
}

#[derive(Debug, Default)]
struct FakeTree {
    cgroups: BTreeMap<String, skiff_runtime::Resources>,
    writes: usize,
    usage: BTreeMap<String, skiff_runtime::cgroups::Usage>,
}

impl FakeCgroups {
    /// The limits written to `path`, if it exists.
    pub fn limits(&self, path: &str) -> Option<skiff_runtime::Resources> {
        self.state.lock().unwrap().cgroups.get(path).cloned()
    }

    /// Every cgroup, sorted.
    pub fn paths(&self) -> Vec<String> {
        self.state.lock().unwrap().cgroups.keys().cloned().collect()
    }

    /// How many times limits were written.
    pub fn writes(&self) -> usize {
        self.state.lock().unwrap().writes
    }

    /// Makes `usage()` of `path` answer `usage`.
    pub fn set_usage(&self, path: &str, usage: skiff_runtime::cgroups::Usage) {
        self.state
            .lock()
            .unwrap()
            .usage
            .insert(path.to_string(), usage);
    }
}

fn is_below(path: &str, parent: &str) -> bool {
    path.strip_prefix(parent)
        .is_some_and(|rest| rest.starts_with('/'))
}

impl crate::cgroups::CgroupTree for FakeCgroups {
    fn exists(&self, path: &str) -> bool {
        self.state.lock().unwrap().cgroups.contains_key(path)
    }

    fn create(&self, path: &str) -> std::result::Result<(), skiff_runtime::cgroups::CgroupError> {
        let mut st = self.state.lock().unwrap();
        let mut current = String::new();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            current = format!("{current}/{part}");
            st.cgroups.entry(current.clone()).or_default();
        }
        Ok(())
    }

    fn set(
        &self,
        path: &str,
        r: &skiff_runtime::Resources,
    ) -> std::result::Result<(), skiff_runtime::cgroups::CgroupError> {
        let mut st = self.state.lock().unwrap();
        st.writes += 1;
        let Some(c) = st.cgroups.get_mut(path) else {
            return Err(skiff_runtime::cgroups::CgroupError::Io {
                path: path.into(),
                source: std::io::ErrorKind::NotFound.into(),
            });
        };
        c.cpu_shares = r.cpu_shares.or(c.cpu_shares);
        c.cpu_quota = r.cpu_quota.or(c.cpu_quota);
        c.cpu_period = r.cpu_period.or(c.cpu_period);
        c.memory = r.memory.or(c.memory);
        c.memory_swap = r.memory_swap.or(c.memory_swap);
        c.pids_limit = r.pids_limit.or(c.pids_limit);
        Ok(())
    }

    fn children(&self, path: &str) -> Vec<String> {
        let st = self.state.lock().unwrap();
        st.cgroups
            .keys()
            .filter(|p| is_below(p, path) && !p[path.len() + 1..].contains('/'))
            .map(|p| p[path.len() + 1..].to_string())
            .collect()
    }

    fn remove(&self, path: &str) -> std::result::Result<(), skiff_runtime::cgroups::CgroupError> {
        let mut st = self.state.lock().unwrap();
        st.cgroups.retain(|p, _| p != path && !is_below(p, path));
        Ok(())
    }

    fn remove_if_empty(
        &self,
        path: &str,
    ) -> std::result::Result<bool, skiff_runtime::cgroups::CgroupError> {
        let mut st = self.state.lock().unwrap();
        if st.cgroups.keys().any(|p| is_below(p, path)) {
            return Ok(false);
        }
        st.cgroups.remove(path);
        Ok(true)
    }

    fn usage(&self, path: &str) -> Option<skiff_runtime::cgroups::Usage> {
        let st = self.state.lock().unwrap();
        st.cgroups
            .contains_key(path)
            .then(|| st.usage.get(path).cloned().unwrap_or_default())
    }
}
