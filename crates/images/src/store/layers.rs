//! Unpacked layers: `layers/sha256/<diff-id hex>/diff`, each unpacked once and shared.

use std::fs::{self, File};
use std::io::{self, BufReader};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::records::LayerRecord;
use super::{fsync_dir, tmp_name, ImageStore, StoreError};
use crate::digest::Digest;
use crate::layer::extract_layer;
use crate::manifest::Descriptor;

const LAYER_INFO: &str = "layer.json";

/// Sizes recorded next to an unpacked diff, so a second image reusing it needs no rescan.
#[derive(Debug, Serialize, Deserialize)]
struct LayerInfo {
    size: u64,
    diff_size: u64,
}

/// Removes a staging directory unless disarmed, so failures leave nothing behind.
pub(crate) struct StagingDir {
    pub path: PathBuf,
    armed: bool,
}

impl StagingDir {
    pub(crate) fn create(tmp: &Path, kind: &str) -> Result<Self, StoreError> {
        fs::create_dir_all(tmp).map_err(|e| StoreError::io("creating", tmp, e))?;
        let path = tmp.join(format!("{}{}", tmp_name(kind), rand::random::<u64>()));
        fs::create_dir(&path).map_err(|e| StoreError::io("creating", &path, e))?;
        Ok(Self { path, armed: true })
    }

    pub(crate) fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for StagingDir {
    fn drop(&mut self) {
        if self.armed {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

impl ImageStore {
    /// `layers/sha256/<hex>` for a diff-id.
    pub(crate) fn layer_root(&self, diff_id: &Digest) -> PathBuf {
        self.root.join("layers/sha256").join(diff_id.hex())
    }

    /// True when the layer with `diff_id` is unpacked.
    pub fn has_layer(&self, diff_id: &Digest) -> bool {
        self.layer_root(diff_id).join(LAYER_INFO).is_file()
    }

    /// Unpacks the stored blob `blob` as the layer `diff_id`, unless already unpacked.
    ///
    /// Unpacks into `tmp/`, verifies blob digest and diff-id, syncs the filesystem and only
    /// then renames the directory into place; if another process won the race, its copy is
    /// kept and ours discarded.
    pub(crate) fn ensure_layer(
        &self,
        blob: &Descriptor,
        diff_id: &Digest,
    ) -> Result<LayerRecord, StoreError> {
        let dest = self.layer_root(diff_id);
        let record = |info: LayerInfo| LayerRecord {
            diff_id: diff_id.clone(),
            blob: blob.clone(),
            size: info.size,
            diff_size: info.diff_size,
        };
        if let Some(info) = read_info(&dest) {
            return Ok(record(info));
        }
        let file = self.blobs.open(&blob.digest)?;
        let staging = StagingDir::create(&self.root.join("tmp"), "layer")?;
        let out = extract_layer(
            BufReader::with_capacity(1 << 20, file),
            &staging.path.join("diff"),
        )
        .map_err(|e| StoreError::Extract {
            layer: blob.digest.clone(),
            source: e,
        })?;
        if out.digest != blob.digest {
            return Err(StoreError::DigestMismatch {
                what: format!("stored layer blob {}", blob.digest.short()),
                expected: blob.digest.clone(),
                actual: out.digest,
            });
        }
        if out.diff_id != *diff_id {
            return Err(StoreError::DigestMismatch {
                what: format!("diff-id of layer {}", blob.digest.short()),
                expected: diff_id.clone(),
                actual: out.diff_id,
            });
        }
        let info = LayerInfo {
            size: out.stats.size,
            diff_size: out.diff_size,
        };
        let info_path = staging.path.join(LAYER_INFO);
        fs::write(&info_path, serde_json::to_vec(&info).unwrap_or_default())
            .map_err(|e| StoreError::io("writing", &info_path, e))?;
        // One syncfs instead of an fsync per file: the unpacked tree is durable before
        // it becomes visible under its final name.
        let dir =
            File::open(&staging.path).map_err(|e| StoreError::io("opening", &staging.path, e))?;
        nix::unistd::syncfs(dir.as_raw_fd())
            .map_err(|e| StoreError::io("syncing", &staging.path, e.into()))?;
        let parent = dest.parent().unwrap_or(&self.root);
        fs::create_dir_all(parent).map_err(|e| StoreError::io("creating", parent, e))?;
        match fs::rename(&staging.path, &dest) {
            Ok(()) => {
                staging.disarm();
                fsync_dir(parent)?;
            }
            // Another process unpacked the same layer first: keep theirs.
            Err(e)
                if dest.exists()
                    && matches!(e.raw_os_error(), Some(libc::ENOTEMPTY | libc::EEXIST)) => {}
            Err(e) => return Err(StoreError::io("renaming layer to", &dest, e)),
        }
        Ok(record(info))
    }

    /// Unpacked size of a present layer (0 when unknown).
    pub(crate) fn layer_size(&self, diff_id: &Digest) -> u64 {
        read_info(&self.layer_root(diff_id)).map_or(0, |i| i.size)
    }

    /// Deletes an unpacked layer: renamed away first so it disappears atomically.
    pub(crate) fn remove_layer(&self, diff_id: &Digest) -> Result<(), StoreError> {
        let dir = self.layer_root(diff_id);
        if !dir.exists() {
            return Ok(());
        }
        let staging = StagingDir::create(&self.root.join("tmp"), "rm")?;
        let trash = staging.path.join("layer");
        match fs::rename(&dir, &trash) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::io("removing", &dir, e)),
        }
        // `staging` drops here and deletes the tree.
    }
}

fn read_info(dir: &Path) -> Option<LayerInfo> {
    let bytes = fs::read(dir.join(LAYER_INFO)).ok()?;
    serde_json::from_slice(&bytes).ok()
}
