//! Named volumes (`skiff volume ...`, `-v name:/path`): directories that outlive containers.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use skiff_runtime::status::{read_json, write_atomic};

/// Metadata of one volume, as `docker volume inspect` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct Volume {
    /// Volume name.
    pub name: String,
    /// Always `local`.
    pub driver: String,
    /// Where the data lives on the host.
    pub mountpoint: PathBuf,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// User labels.
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// Always `local`.
    pub scope: String,
    /// True for volumes created implicitly for an image's VOLUME.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub anonymous: bool,
}

/// Errors of volume operations.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// No such volume.
    #[error("no such volume: {0}")]
    NotFound(String),
    /// Invalid name.
    #[error("invalid volume name {0:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")]
    InvalidName(String),
    /// A container uses it.
    #[error("remove {name}: volume is in use - [{containers}]")]
    InUse {
        /// Volume name.
        name: String,
        /// Ids of the containers using it.
        containers: String,
    },
    /// Filesystem error.
    #[error("volume {name}: {source}")]
    Io {
        /// Volume name.
        name: String,
        /// Cause.
        source: std::io::Error,
    },
}

/// The volumes under one root.
pub struct Volumes {
    root: PathBuf,
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

impl Volumes {
    /// Volumes stored in `root`.
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
        }
    }

    fn meta(&self, name: &str) -> PathBuf {
        self.root.join(name).join("volume.json")
    }

    /// Creates a volume, or returns the existing one (as Docker does). The bool is true if new.
    pub fn create(
        &self,
        name: &str,
        labels: std::collections::BTreeMap<String, String>,
        anonymous: bool,
    ) -> Result<(Volume, bool), VolumeError> {
        if !valid_name(name) {
            return Err(VolumeError::InvalidName(name.to_string()));
        }
        if let Ok(v) = self.get(name) {
            return Ok((v, false));
        }
        let io = |source| VolumeError::Io {
            name: name.to_string(),
            source,
        };
        let data = self.root.join(name).join("_data");
        std::fs::create_dir_all(&data).map_err(io)?;
        let volume = Volume {
            name: name.to_string(),
            driver: "local".into(),
            mountpoint: data,
            created_at: Utc::now(),
            labels,
            scope: "local".into(),
            anonymous,
        };
        write_atomic(
            &self.meta(name),
            &serde_json::to_vec_pretty(&volume).expect("volume serialises"),
        )
        .map_err(io)?;
        Ok((volume, true))
    }

    /// Looks a volume up.
    pub fn get(&self, name: &str) -> Result<Volume, VolumeError> {
        if !valid_name(name) {
            return Err(VolumeError::NotFound(name.to_string()));
        }
        read_json::<Volume>(&self.meta(name))
            .map_err(|source| VolumeError::Io {
                name: name.to_string(),
                source,
            })?
            .ok_or_else(|| VolumeError::NotFound(name.to_string()))
    }

    /// All volumes, by name.
    pub fn list(&self) -> Vec<Volume> {
        let mut out: Vec<Volume> = std::fs::read_dir(&self.root)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                read_json::<Volume>(&e.path().join("volume.json"))
                    .ok()
                    .flatten()
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Deletes a volume and its data; the caller checks it is unused.
    pub fn remove(&self, name: &str) -> Result<(), VolumeError> {
        self.get(name)?;
        std::fs::remove_dir_all(self.root.join(name)).map_err(|source| VolumeError::Io {
            name: name.to_string(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_is_idempotent_and_remove_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let vols = Volumes::new(dir.path());
        let (v, new) = vols.create("data", Default::default(), false).unwrap();
        assert!(new);
        std::fs::write(v.mountpoint.join("f"), "x").unwrap();
        let (again, new) = vols.create("data", Default::default(), false).unwrap();
        assert!(!new);
        assert_eq!(again.mountpoint, v.mountpoint);
        assert_eq!(vols.list().len(), 1);
        vols.remove("data").unwrap();
        assert!(matches!(vols.get("data"), Err(VolumeError::NotFound(_))));
    }

    #[test]
    fn invalid_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let vols = Volumes::new(dir.path());
        assert!(vols.create("../etc", Default::default(), false).is_err());
        assert!(vols.create("", Default::default(), false).is_err());
    }
}
