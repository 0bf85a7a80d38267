//! Holds: layers kept by something other than an image, such as a builder's cache of
//! step results, as BuildKit's cache records keep their snapshots. Each hold is a file
//! `holds/<name>.json` listing layers; the garbage collector treats them as in use.

use std::fs;

use super::records::LayerRecord;
use super::{ImageStore, StoreError};

const HOLDS: &str = "holds";

impl ImageStore {
    /// Keeps `layers` (unpacked dirs and blobs) from garbage collection until the hold
    /// `name` is released. Take it under an [`super::ImportGuard`] held since the layers
    /// were added, so no sweep runs in between. Replaces an existing hold of that name.
    pub fn hold(&self, name: &str, layers: &[LayerRecord]) -> Result<(), StoreError> {
        let dir = self.root.join(HOLDS);
        fs::create_dir_all(&dir).map_err(|e| StoreError::io("creating", &dir, e))?;
        let path = dir.join(format!("{}.json", hold_file_name(name)));
        let tmp = self.root.join("tmp").join(format!(
            "{}{}",
            super::tmp_name("hold"),
            rand::random::<u64>()
        ));
        let bytes = serde_json::to_vec(layers).unwrap_or_default();
        fs::write(&tmp, bytes).map_err(|e| StoreError::io("writing", &tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| StoreError::io("renaming hold to", &path, e))
    }

    /// Releases every hold whose name starts with `prefix` and collects what no image
    /// or other hold uses. Returns the bytes reclaimed.
    pub fn release_holds(&self, prefix: &str) -> Result<u64, StoreError> {
        let prefix = hold_file_name(prefix);
        let dir = self.root.join(HOLDS);
        if let Ok(rd) = fs::read_dir(&dir) {
            for entry in rd.flatten() {
                if entry.file_name().to_string_lossy().starts_with(&prefix) {
                    let p = entry.path();
                    fs::remove_file(&p).map_err(|e| StoreError::io("removing", &p, e))?;
                }
            }
        }
        let (_, _, reclaimed) = self.update_and_collect(|_| Ok(((), Vec::new())))?;
        Ok(reclaimed)
    }

    /// Every held layer (unreadable hold files hold nothing).
    pub(crate) fn held_layers(&self) -> Vec<LayerRecord> {
        let Ok(rd) = fs::read_dir(self.root.join(HOLDS)) else {
            return Vec::new();
        };
        rd.flatten()
            .filter_map(|e| fs::read(e.path()).ok())
            .filter_map(|b| serde_json::from_slice::<Vec<LayerRecord>>(&b).ok())
            .flatten()
            .collect()
    }
}

/// A hold name as a file name: anything but `[A-Za-z0-9_.-]` becomes `_`.
fn hold_file_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_layers_survive_collection_until_released() {
        let tmp = tempfile::tempdir().unwrap();
        let store = ImageStore::open(&tmp.path().join("images")).unwrap();
        let src = tmp.path().join("src");
        fs::create_dir_all(&src).unwrap();
        fs::write(src.join("f"), b"cached").unwrap();
        let layer = {
            let _guard = store.begin_import().unwrap();
            let layer = store.add_layer_from_dir(&src).unwrap();
            store
                .hold("build-cache-abc", std::slice::from_ref(&layer))
                .unwrap();
            layer
        };
        // Any collection (here: releasing an unrelated hold) keeps it.
        store.release_holds("other-").unwrap();
        assert!(store.has_layer(&layer.diff_id));
        assert!(store.blobs().has(&layer.blob.digest));
        assert!(store.release_holds("build-cache-").unwrap() > 0);
        assert!(!store.has_layer(&layer.diff_id));
        assert!(!store.blobs().has(&layer.blob.digest));
    }
}
