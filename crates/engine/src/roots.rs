//! Where skiff keeps its state: one data root and one runtime root.

use std::path::{Path, PathBuf};

/// Default data root (images, containers, volumes, logs).
pub const DEFAULT_DATA_ROOT: &str = "/var/lib/skiff";
/// Default runtime root (sockets, libcontainer state; lost at reboot).
pub const DEFAULT_RUN_ROOT: &str = "/run/skiff";

/// The two state directories of one skiff instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roots {
    /// Persistent data.
    pub data: PathBuf,
    /// Runtime state.
    pub run: PathBuf,
}

impl Roots {
    /// The defaults, or `DIR` and `DIR/run` when `--root DIR` is given.
    pub fn new(root: Option<&Path>) -> Self {
        match root {
            Some(dir) => Roots {
                data: dir.to_path_buf(),
                run: dir.join("run"),
            },
            None => Roots {
                data: PathBuf::from(DEFAULT_DATA_ROOT),
                run: PathBuf::from(DEFAULT_RUN_ROOT),
            },
        }
    }

    /// Image store root.
    pub fn images(&self) -> PathBuf {
        self.data.join("images")
    }

    /// Directory of one container's persistent files.
    pub fn container(&self, id: &str) -> PathBuf {
        self.data.join("containers").join(id)
    }

    /// All containers.
    pub fn containers(&self) -> PathBuf {
        self.data.join("containers")
    }

    /// Directory of one container's runtime files (sockets).
    pub fn container_run(&self, id: &str) -> PathBuf {
        // Socket paths are limited to 108 bytes: use a short prefix of the id.
        self.run.join("c").join(&id[..id.len().min(12)])
    }

    /// libcontainer's state root.
    pub fn runtime_state(&self) -> PathBuf {
        self.run.join("runtime")
    }

    /// overlayfs directories of one container.
    pub fn overlay(&self, id: &str) -> PathBuf {
        self.data.join("overlay").join(id)
    }

    /// Named volumes.
    pub fn volumes(&self) -> PathBuf {
        self.data.join("volumes")
    }

    /// The lock serialising the build of the name index and the creation of named
    /// volumes (names themselves are reserved without it).
    pub fn containers_lock(&self) -> PathBuf {
        self.data.join("containers.lock")
    }
}
