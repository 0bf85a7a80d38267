//! Images made on this host rather than pulled or loaded: a builder's output.
//!
//! A builder adds each step's filesystem change with [`ImageStore::add_layer_from_dir`]
//! and the result with [`ImageStore::add_image`], under an [`ImportGuard`] so a
//! concurrent `rmi` does not sweep layers it has not committed yet.

use std::fs::File;
use std::path::Path;

use nix::fcntl::Flock;

use super::records::{ImageRecord, LayerRecord};
use super::{parse_config, ImageStore, NewImage, StoreError};
use crate::digest::Digest;
use crate::layer::write_layer_tar;
use crate::manifest::{media_type, Descriptor, ImageManifest};
use crate::reference::Reference;

/// Holds off garbage collection while uncommitted blobs and layers are being added.
///
/// Garbage written under the guard and never committed is collected by a later sweep.
pub struct ImportGuard {
    _lock: Flock<File>,
}

impl ImageStore {
    /// Takes a shared hold on the store's garbage collector until the guard drops.
    pub fn begin_import(&self) -> Result<ImportGuard, StoreError> {
        Ok(ImportGuard {
            _lock: self.import_guard()?,
        })
    }

    /// Adds the tree under `dir` (overlayfs upper-dir conventions for whiteouts and opaque
    /// directories) as an uncompressed layer blob, unpacked and ready to be a lower dir.
    ///
    /// The same tree always yields the same diff-id; an existing layer is reused.
    pub fn add_layer_from_dir(&self, dir: &Path) -> Result<LayerRecord, StoreError> {
        let writer = self.blobs.writer()?;
        let writer = write_layer_tar(dir, writer).map_err(|e| StoreError::Read {
            what: format!("layer contents of {}", dir.display()),
            source: std::io::Error::other(e),
        })?;
        let (digest, size) = writer.commit(None)?;
        let blob = Descriptor::new(media_type::OCI_LAYER, digest.clone(), size);
        // Uncompressed: the blob digest is the diff-id.
        self.ensure_layer(&blob, &digest)
    }

    /// The unpacked directory of a present layer (an overlayfs lower dir).
    pub fn layer_dir(&self, diff_id: &Digest) -> Result<std::path::PathBuf, StoreError> {
        let dir = self.layer_root(diff_id).join("diff");
        if self.has_layer(diff_id) {
            Ok(dir)
        } else {
            Err(StoreError::MissingLayer(diff_id.clone()))
        }
    }

    /// Records an image made of `layers` (bottom first, already in the store) and the
    /// image config `config` (JSON, so fields OCI does not define, such as Docker's
    /// `Healthcheck`, are kept); its `rootfs` is set here from the layers. `tags` move to
    /// the image as with `load`.
    ///
    /// The image ID is the digest of the config as serialised here, so equal inputs give
    /// the same ID and re-adding an existing image only adds names.
    pub fn add_image(
        &self,
        mut config: serde_json::Value,
        layers: Vec<LayerRecord>,
        tags: &[Reference],
    ) -> Result<ImageRecord, StoreError> {
        let diff_ids: Vec<String> = layers.iter().map(|l| l.diff_id.to_string()).collect();
        let object = config.as_object_mut().ok_or_else(|| StoreError::Read {
            what: "image config".into(),
            source: std::io::Error::other("the image config must be a JSON object"),
        })?;
        object.insert(
            "rootfs".into(),
            serde_json::json!({"type": "layers", "diff_ids": diff_ids}),
        );
        let config_bytes = serde_json::to_vec(&config).map_err(|e| StoreError::Read {
            what: "image config".into(),
            source: std::io::Error::other(e),
        })?;
        let config_digest = Digest::of(&config_bytes);
        let config_json = parse_config(&config_digest, &config_bytes)?;
        self.blobs.write_bytes(&config_bytes)?;
        let manifest = ImageManifest {
            schema_version: 2,
            media_type: Some(media_type::OCI_MANIFEST.into()),
            config: Descriptor::new(
                media_type::OCI_CONFIG,
                config_digest.clone(),
                config_bytes.len() as u64,
            ),
            layers: layers.iter().map(|l| l.blob.clone()).collect(),
            annotations: Default::default(),
        };
        let manifest_bytes = serde_json::to_vec(&manifest).unwrap_or_default();
        let manifest_digest = self.blobs.write_bytes(&manifest_bytes)?;
        self.commit(NewImage {
            manifest: Descriptor::new(
                media_type::OCI_MANIFEST,
                manifest_digest,
                manifest_bytes.len() as u64,
            ),
            config: manifest.config.clone(),
            config_json,
            layers,
            tags: tags.to_vec(),
            repo_digests: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_from_directories_are_reproducible() {
        let tmp = tempfile::tempdir().unwrap();
        let store = ImageStore::open(&tmp.path().join("images")).unwrap();
        let src = tmp.path().join("src");
        std::fs::create_dir_all(src.join("app")).unwrap();
        std::fs::write(src.join("app/hello"), b"hi").unwrap();
        let _guard = store.begin_import().unwrap();
        let layer = store.add_layer_from_dir(&src).unwrap();
        assert_eq!(store.add_layer_from_dir(&src).unwrap(), layer);
        let dirs_layer = store.layer_root(&layer.diff_id).join("diff/app/hello");
        assert_eq!(std::fs::read(dirs_layer).unwrap(), b"hi");

        let config = serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "config": {"Cmd": ["/app/hello"], "Healthcheck": {"Test": ["NONE"]}},
        });
        let tag = Reference::parse("built:1").unwrap();
        let rec = store
            .add_image(
                config.clone(),
                vec![layer.clone()],
                std::slice::from_ref(&tag),
            )
            .unwrap();
        let again = store.add_image(config, vec![layer], &[]).unwrap();
        assert_eq!(rec.id, again.id);
        assert_eq!(again.repo_tags, vec![tag]);
        let stored = store.config(&rec).unwrap();
        assert_eq!(stored.rootfs().diff_ids().len(), 1);
        let raw: serde_json::Value =
            serde_json::from_slice(&store.blobs().read(&rec.config.digest).unwrap()).unwrap();
        assert_eq!(raw["config"]["Healthcheck"]["Test"][0], "NONE");
        assert_eq!(store.resolve("built:1").unwrap().id, rec.id);
    }
}
