//! The local-path provisioner, as k3s ships Rancher's: claims of a class whose provisioner
//! is [`PROVISIONER`] get a `hostPath` PersistentVolume in a directory of one node
//! (`<storage dir>/pvc-<claim uid>`), pinned to that node by its node affinity; volumes it
//! created are deleted with their directory once released under the `Delete` policy.
//!
//! The node is the scheduler's choice (`volume.kubernetes.io/selected-node`) for
//! `WaitForFirstConsumer` classes, this server's own node (else the first node) for
//! `Immediate` ones. Directories are created and removed through [`VolumeDirs`] on the
//! filesystem of this process, which is the filesystem of [`LocalPathConfig::local_node`];
//! a volume on another node has its directory created by that node's kubelet on first
//! mount (`DirectoryOrCreate`) and, when deleted, its data is left on that node.

pub mod provision;

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, PostParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt as _};
use kube::{Api, Client};

use crate::events::{EventType, Recorder};
use crate::persistentvolume::util::ANN_DEFAULT_CLASS;
use provision::Action;

/// The provisioner name, the one k3s's `local-path` class uses, so manifests and tools
/// written for k3s find the class they expect.
pub const PROVISIONER: &str = "rancher.io/local-path";
/// The default StorageClass created at start.
pub const CLASS_NAME: &str = "local-path";
/// Records on a provisioned volume the node it was made for (Rancher's annotation).
pub const ANN_SELECTED_NODE_OF_VOLUME: &str = "local.path.provisioner/selected-node";

/// How often everything is resynced when nothing changes.
const RESYNC: Duration = Duration::from_secs(30);
/// How long after a cache change the next sweep runs.
const DEBOUNCE: Duration = Duration::from_millis(100);

/// Where the provisioner keeps volumes.
#[derive(Debug, Clone)]
pub struct LocalPathConfig {
    /// The directory volumes are created in (`<root>/storage`, or
    /// `--default-local-storage-path`).
    pub storage_dir: PathBuf,
    /// The node whose filesystem this process writes (the server's own kubelet), if any.
    pub local_node: Option<String>,
}

/// Creating and removing volume directories on this host.
pub trait VolumeDirs: Send + Sync {
    /// Creates `path` (and its parents), writable by any user as Rancher's provisioner does,
    /// since pods may run as any user.
    fn create(&self, path: &Path) -> io::Result<()>;
    /// Removes `path` and everything in it; a missing directory is not an error.
    fn remove(&self, path: &Path) -> io::Result<()>;
}

/// [`VolumeDirs`] on the real filesystem.
pub struct HostDirs;

impl VolumeDirs for HostDirs {
    fn create(&self, path: &Path) -> io::Result<()> {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::create_dir_all(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777))
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        match std::fs::remove_dir_all(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }
}

/// The default StorageClass: `local-path`, waiting for the first consumer so volumes land
/// on the pod's node, deleting volumes with their claims.
pub fn default_class() -> StorageClass {
    StorageClass {
        metadata: ObjectMeta {
            name: Some(CLASS_NAME.into()),
            annotations: Some([(ANN_DEFAULT_CLASS.to_owned(), "true".to_owned())].into()),
            ..Default::default()
        },
        provisioner: PROVISIONER.into(),
        reclaim_policy: Some("Delete".into()),
        volume_binding_mode: Some("WaitForFirstConsumer".into()),
        ..Default::default()
    }
}

/// Creates the default StorageClass unless a class of that name exists (a user's edits or
/// deletion of the default annotation are kept).
pub async fn ensure_default_class(client: &Client) -> Result<(), kube::Error> {
    let api: Api<StorageClass> = Api::all(client.clone());
    if api.get_opt(CLASS_NAME).await?.is_some() {
        return Ok(());
    }
    match api.create(&PostParams::default(), &default_class()).await {
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        other => other.map(drop),
    }
}

/// Ensures the default class, then provisions and deletes volumes until the watches end.
pub async fn run(client: Client, config: LocalPathConfig, dirs: Arc<dyn VolumeDirs>) {
    // The API may still be warming up (RBAC caches): retry until it takes the class.
    while let Err(e) = ensure_default_class(&client).await {
        tracing::debug!("local-path: creating the default StorageClass: {e}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (claims, claim_writer) = reflector::store::<PersistentVolumeClaim>();
    let (volumes, volume_writer) = reflector::store::<PersistentVolume>();
    let (classes, class_writer) = reflector::store::<StorageClass>();
    let (nodes, node_writer) = reflector::store::<Node>();
    let config_of = watcher::Config::default;
    let mut changes = futures::stream::select_all([
        watcher(
            Api::<PersistentVolumeClaim>::all(client.clone()),
            config_of(),
        )
        .default_backoff()
        .reflect(claim_writer)
        .map(drop)
        .boxed(),
        watcher(Api::<PersistentVolume>::all(client.clone()), config_of())
            .default_backoff()
            .reflect(volume_writer)
            .map(drop)
            .boxed(),
        watcher(Api::<StorageClass>::all(client.clone()), config_of())
            .default_backoff()
            .reflect(class_writer)
            .map(drop)
            .boxed(),
        watcher(Api::<Node>::all(client.clone()), config_of().any_semantic())
            .default_backoff()
            .reflect(node_writer)
            .map(drop)
            .boxed(),
    ])
    .boxed();
    let ready = async {
        let _ = claims.wait_until_ready().await;
        let _ = volumes.wait_until_ready().await;
        let _ = classes.wait_until_ready().await;
        let _ = nodes.wait_until_ready().await;
    };
    if !crate::sweep::until_ready(ready, &mut changes).await {
        return;
    }
    let provisioner = Provisioner {
        recorder: Recorder::new(client.clone(), "rancher.io/local-path"),
        client,
        config,
        dirs,
        failures: HashMap::new(),
    };
    let mut provisioner = provisioner;
    loop {
        provisioner.sweep(&claims, &volumes, &classes, &nodes).await;
        if !crate::sweep::wait_for_next(RESYNC, DEBOUNCE, &mut changes).await {
            return;
        }
    }
}

struct Provisioner {
    client: Client,
    recorder: Recorder,
    config: LocalPathConfig,
    dirs: Arc<dyn VolumeDirs>,
    /// The last failure reported per volume, so a resync does not repeat the Event.
    failures: HashMap<String, String>,
}

impl Provisioner {
    async fn sweep(
        &mut self,
        claims: &Store<PersistentVolumeClaim>,
        volumes: &Store<PersistentVolume>,
        classes: &Store<StorageClass>,
        nodes: &Store<Node>,
    ) {
        let nodes: Vec<String> = nodes
            .state()
            .iter()
            .filter_map(|n| n.metadata.name.clone())
            .collect();
        let actions = provision::plan(
            &claims.state(),
            &volumes.state(),
            &classes.state(),
            &nodes,
            self.config.local_node.as_deref(),
            &self.config.storage_dir,
        );
        for action in actions {
            match action {
                Action::Provision {
                    claim,
                    node,
                    path,
                    volume,
                } => self.provision(&claim, &node, &path, &volume).await,
                Action::Delete { volume, node, path } => {
                    self.delete(&volume, node.as_deref(), path.as_deref()).await
                }
            }
        }
    }

    fn is_local(&self, node: Option<&str>) -> bool {
        node.is_some() && node == self.config.local_node.as_deref()
    }

    async fn provision(
        &mut self,
        claim: &PersistentVolumeClaim,
        node: &str,
        path: &Path,
        volume: &PersistentVolume,
    ) {
        let name = volume.metadata.name.clone().unwrap_or_default();
        let key = crate::persistentvolume::util::claim_key(claim);
        self.recorder.record(
            claim,
            EventType::Normal,
            "Provisioning",
            format!("External provisioner is provisioning volume for claim \"{key}\""),
        );
        let created = if self.is_local(Some(node)) {
            self.dirs
                .create(path)
                .map_err(|e| format!("creating {}: {e}", path.display()))
        } else {
            // Another node's kubelet creates the directory when it mounts the volume.
            Ok(())
        };
        let created = match created {
            Ok(()) => {
                let api: Api<PersistentVolume> = Api::all(self.client.clone());
                match api.create(&PostParams::default(), volume).await {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
                    Err(e) => Err(format!("creating persistentvolume {name}: {e}")),
                }
            }
            Err(e) => Err(e),
        };
        match created {
            Ok(()) => self.recorder.record(
                claim,
                EventType::Normal,
                "ProvisioningSucceeded",
                format!("Successfully provisioned volume {name}"),
            ),
            Err(e) => self.fail(claim, &name, "ProvisioningFailed", e),
        }
    }

    async fn delete(&mut self, volume: &PersistentVolume, node: Option<&str>, path: Option<&Path>) {
        let name = volume.metadata.name.clone().unwrap_or_default();
        // Never remove a directory this provisioner did not make.
        let path = path.filter(|p| {
            p.parent() == Some(self.config.storage_dir.as_path())
                && p.file_name().is_some_and(|f| f == name.as_str())
        });
        if let Some(path) = path {
            if self.is_local(node) {
                if let Err(e) = self.dirs.remove(path) {
                    let message = format!("removing {}: {e}", path.display());
                    return self.fail(volume, &name, "VolumeFailedDelete", message);
                }
            } else {
                tracing::warn!(
                    "local-path: persistentvolume {name} is deleted; its data stays in {} on node {}",
                    path.display(),
                    node.unwrap_or("(none)")
                );
            }
        }
        let api: Api<PersistentVolume> = Api::all(self.client.clone());
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {
                self.failures.remove(&name);
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => self.fail(volume, &name, "VolumeFailedDelete", e.to_string()),
        }
    }

    fn fail<K>(&mut self, obj: &K, volume: &str, reason: &str, message: String)
    where
        K: kube::Resource<DynamicType = ()>,
    {
        tracing::warn!("local-path: {message}");
        if self.failures.get(volume) != Some(&message) {
            self.recorder
                .record(obj, EventType::Warning, reason, message.clone());
            self.failures.insert(volume.to_owned(), message);
        }
    }
}
