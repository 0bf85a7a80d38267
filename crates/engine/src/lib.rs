//! skiff's container engine: the Docker/Podman layer.
//!
//! Daemonless like Podman: every `skiff` command opens the [`Engine`] on the
//! state root, and each running container is owned by its own shim process
//! (see `skiff_runtime::shim`), so containers outlive the command that
//! started them. The kubelet drives the same engine for pods.

pub mod container;
pub mod lock;
pub mod names;
pub mod networks;
pub mod rootfs;
pub mod roots;
pub mod users;
pub mod volumes;

use std::path::{Path, PathBuf};

use skiff_images::ImageStore;

pub use container::create::CreateOptions;
pub use container::transient::TransientRequest;
pub use container::{Container, ContainerRecord, CreateRequest, DnsSettings, MountPoint};
pub use roots::Roots;
pub use volumes::{Volume, VolumeError, Volumes};

/// Errors of engine operations, with Docker's wording where users rely on it.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// No container has this name or id (prefix).
    #[error("No such container: {0}")]
    NoSuchContainer(String),
    /// An id prefix matches several containers.
    #[error("multiple containers match {0:?}: use more of the id")]
    Ambiguous(String),
    /// The name is taken.
    #[error("Conflict. The container name \"/{name}\" is already in use by container \"{id}\". You have to remove (or rename) that container to be able to reuse that name.")]
    NameConflict {
        /// The requested name.
        name: String,
        /// The container holding it.
        id: String,
    },
    /// `rm` of a running container without `-f`.
    #[error("cannot remove container \"{0}\": container is running: stop the container before removing or force remove")]
    RemoveRunning(String),
    /// An operation that needs a running container.
    #[error("container {0} is not running")]
    NotRunning(String),
    /// A flag value is wrong.
    #[error("{0}")]
    InvalidArgument(String),
    /// Image store errors.
    #[error(transparent)]
    Image(#[from] skiff_images::StoreError),
    /// Volume errors.
    #[error(transparent)]
    Volume(#[from] VolumeError),
    /// User resolution errors.
    #[error(transparent)]
    User(#[from] users::UserError),
    /// The container could not be started; `exit_code` is Docker's (125, 126 or 127).
    #[error("{message}")]
    StartFailed {
        /// Why.
        message: String,
        /// 126 cannot invoke, 127 not found, 125 otherwise.
        exit_code: i32,
    },
    /// Runtime errors.
    #[error(transparent)]
    Spec(#[from] skiff_runtime::spec::SpecError),
    /// Networking errors.
    #[error("{0}")]
    Network(String),
    /// Local I/O, with what was being done.
    #[error("{context}: {source}")]
    Io {
        /// What failed.
        context: String,
        /// Cause.
        source: std::io::Error,
    },
}

impl EngineError {
    /// Wraps an I/O error with context.
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> EngineError {
        let context = context.into();
        move |source| EngineError::Io { context, source }
    }

    /// The exit code `skiff` should end with for this error (Docker's convention).
    pub fn exit_code(&self) -> i32 {
        match self {
            EngineError::StartFailed { exit_code, .. } => *exit_code,
            _ => 125,
        }
    }
}

/// Result of engine operations.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;

/// The engine over one state root.
pub struct Engine {
    roots: Roots,
    images: ImageStore,
    volumes: Volumes,
    networking: skiff_network::Networking,
    mounter: Box<dyn rootfs::Mounter>,
    skiff_exe: PathBuf,
    global_args: Vec<String>,
}

impl Engine {
    /// Opens the engine. `skiff_exe` and `global_args` are used to start shims
    /// and their exit commands (`skiff <global_args> shim ...`).
    pub fn open(roots: Roots, skiff_exe: PathBuf, global_args: Vec<String>) -> Result<Engine> {
        for dir in [&roots.data, &roots.run] {
            std::fs::create_dir_all(dir)
                .map_err(EngineError::io(format!("creating {}", dir.display())))?;
        }
        let images = ImageStore::open(&roots.images())?;
        let volumes = Volumes::new(&roots.volumes());
        let mut dns_command = vec![skiff_exe.display().to_string()];
        dns_command.extend(global_args.iter().cloned());
        dns_command.extend(["network".to_string(), "dns-serve".to_string()]);
        let networking = networks::networking(&roots, dns_command)?;
        Ok(Engine {
            roots,
            images,
            volumes,
            networking,
            mounter: Box::new(rootfs::KernelMounter),
            skiff_exe,
            global_args,
        })
    }

    /// The image store.
    pub fn images(&self) -> &ImageStore {
        &self.images
    }

    /// The volumes.
    pub fn volumes(&self) -> &Volumes {
        &self.volumes
    }

    /// The networking layer.
    pub fn networking(&self) -> &skiff_network::Networking {
        &self.networking
    }

    /// The state roots.
    pub fn roots(&self) -> &Roots {
        &self.roots
    }

    fn files(&self, id: &str) -> container::Files {
        container::Files {
            dir: self.roots.container(id),
        }
    }

    /// Loads one container by full id.
    fn load(&self, id: &str) -> Result<Container> {
        let files = self.files(id);
        let record: ContainerRecord = skiff_runtime::status::read_json(&files.record())
            .map_err(EngineError::io(format!("reading container {id}")))?
            .ok_or_else(|| EngineError::NoSuchContainer(id.to_string()))?;
        let (status, started_at) = container::derive_status(&files);
        let health = match (&record.health, &status) {
            (Some(_), skiff_runtime::ContainerStatus::Running { .. }) => {
                skiff_runtime::status::read_json(&files.health())
                    .ok()
                    .flatten()
                    .or_else(|| Some(Default::default()))
            }
            _ => None,
        };
        Ok(Container {
            record,
            status,
            started_at,
            dir: files.dir,
            health,
        })
    }

    /// Every container, newest first.
    pub fn list(&self) -> Result<Vec<Container>> {
        let mut out = Vec::new();
        let entries = match std::fs::read_dir(self.roots.containers()) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(EngineError::io("listing containers")(e)),
        };
        for entry in entries.flatten() {
            let id = entry.file_name().to_string_lossy().to_string();
            if let Ok(c) = self.load(&id) {
                out.push(c);
            }
        }
        out.sort_by_key(|c| std::cmp::Reverse(c.record.created));
        Ok(out)
    }

    /// Finds a container by name, full id or unique id prefix.
    pub fn find(&self, name_or_id: &str) -> Result<Container> {
        let wanted = name_or_id.trim_start_matches('/');
        if wanted.is_empty() {
            return Err(EngineError::NoSuchContainer(name_or_id.to_string()));
        }
        let all = self.list()?;
        if let Some(c) = all
            .iter()
            .find(|c| c.record.id == wanted || c.record.name == wanted)
        {
            return Ok(c.clone());
        }
        let mut matches = all.into_iter().filter(|c| c.record.id.starts_with(wanted));
        match (matches.next(), matches.next()) {
            (Some(c), None) => Ok(c),
            (Some(_), Some(_)) => Err(EngineError::Ambiguous(wanted.to_string())),
            _ => Err(EngineError::NoSuchContainer(name_or_id.to_string())),
        }
    }

    /// The global arguments that reach this same root from a new skiff process.
    pub fn global_args(&self) -> &[String] {
        &self.global_args
    }

    /// Path of the skiff binary used for shims.
    pub fn skiff_exe(&self) -> &Path {
        &self.skiff_exe
    }
}
