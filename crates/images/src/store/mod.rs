//! The image store: blobs, unpacked layers and image records under one root directory.

mod blobs;
mod holds;
mod layers;
mod local;
mod metadata;
mod records;
mod remove;

use std::collections::HashSet;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use oci_spec::image::ImageConfiguration;

pub use blobs::{BlobStore, BlobWriter};
pub(crate) use layers::StagingDir;
pub use local::ImportGuard;
pub use records::{
    DiskUsage, HistoryEntry, ImageRecord, LayerRecord, LoadedImage, PruneReport, RemoveEvent,
};

use crate::digest::{Digest, ImageId};
use crate::layer::ExtractError;
use crate::manifest::{Descriptor, ManifestError};
use crate::reference::{Reference, ReferenceError};
use metadata::{Db, Metadata};

/// Errors from the image store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A filesystem operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done (`reading`, `renaming blob to`, ...).
        op: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Reading an input stream failed.
    #[error("reading {what}: {source}")]
    Read {
        /// What was being read.
        what: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// No image matches the name or ID.
    #[error("image {0:?} not found locally")]
    NotFound(String),
    /// A short ID matches more than one image.
    #[error("image ID prefix {0:?} is ambiguous: it matches {1} images, give more characters")]
    Ambiguous(String, usize),
    /// Content does not hash to the digest it was announced with.
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        /// Which content.
        what: String,
        /// The announced digest.
        expected: Digest,
        /// The digest of what arrived.
        actual: Digest,
    },
    /// A blob an image needs is missing.
    #[error(
        "blob {0} is missing from the image store; remove the image and pull or load it again"
    )]
    MissingBlob(Digest),
    /// An unpacked layer an image needs is missing.
    #[error(
        "layer {0} is not unpacked in the image store; remove the image and pull or load it again"
    )]
    MissingLayer(Digest),
    /// The metadata file cannot be parsed.
    #[error("image store metadata {path} is corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A config blob is not a valid image configuration.
    #[error("image config {digest} is invalid: {reason}")]
    Config {
        /// The config digest.
        digest: Digest,
        /// What is wrong.
        reason: String,
    },
    /// Extracting a layer failed.
    #[error("unpacking layer {layer}: {source}")]
    Extract {
        /// The layer blob.
        layer: Digest,
        /// What went wrong.
        #[source]
        source: ExtractError,
    },
    /// Removal refused without force (Docker's conflict).
    #[error("conflict: unable to delete {id} (must be forced) - {reason}")]
    Conflict {
        /// Short image ID.
        id: String,
        /// Why.
        reason: String,
    },
    /// A tag operation got a digest reference.
    #[error("cannot tag with {0}: a tag reference must not contain a digest")]
    TagWithDigest(Reference),
    /// A reference is invalid.
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    /// A manifest is invalid.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
}

impl StoreError {
    pub(crate) fn io(op: &'static str, path: &Path, source: io::Error) -> Self {
        StoreError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Prefix for staging names: the owning pid, so [`ImageStore::open`] can reap orphans.
pub(crate) fn tmp_name(kind: &str) -> String {
    format!("{}-{kind}-", std::process::id())
}

/// fsync a directory so a rename inside it is durable.
pub(crate) fn fsync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| StoreError::io("syncing", dir, e))
}

/// The image store rooted at `<data-root>/images`. Cheap to clone; safe across processes.
#[derive(Debug, Clone)]
pub struct ImageStore {
    root: PathBuf,
    blobs: BlobStore,
    meta: Metadata,
}

/// What the store needs to record a new image whose blobs and layers are in place.
pub(crate) struct NewImage {
    pub manifest: Descriptor,
    pub config: Descriptor,
    pub config_json: ImageConfiguration,
    pub layers: Vec<LayerRecord>,
    pub tags: Vec<Reference>,
    pub repo_digests: Vec<Reference>,
}

impl ImageStore {
    /// Opens (creating if needed) the store at `root` and removes staging left by dead processes.
    pub fn open(root: &Path) -> Result<Self, StoreError> {
        for dir in ["blobs/sha256", "layers/sha256", "tmp"] {
            let p = root.join(dir);
            fs::create_dir_all(&p).map_err(|e| StoreError::io("creating", &p, e))?;
        }
        let store = Self {
            root: root.to_path_buf(),
            blobs: BlobStore::new(root),
            meta: Metadata::new(root),
        };
        store.reap_orphans();
        Ok(store)
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The blob store (`blobs/sha256`).
    pub fn blobs(&self) -> &BlobStore {
        &self.blobs
    }

    /// Where `login` keeps registry credentials: `<data-root>/auth.json`.
    pub fn auth_file(&self) -> PathBuf {
        self.root.parent().unwrap_or(&self.root).join("auth.json")
    }

    /// Deletes `tmp/<pid>-*` entries whose process is gone (killed mid-pull, say).
    fn reap_orphans(&self) {
        let Ok(rd) = fs::read_dir(self.root.join("tmp")) else {
            return;
        };
        for entry in rd.flatten() {
            let name = entry.file_name();
            let Some(pid) = name
                .to_str()
                .and_then(|n| n.split('-').next())
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            if !Path::new(&format!("/proc/{pid}")).exists() {
                let p = entry.path();
                let _ = if p.is_dir() {
                    fs::remove_dir_all(&p)
                } else {
                    fs::remove_file(&p)
                };
            }
        }
    }

    /// All images, most recently added first.
    pub fn list(&self) -> Result<Vec<ImageRecord>, StoreError> {
        let mut images: Vec<_> = self.meta.read()?.images.into_values().collect();
        images.sort_by(|a, b| b.added.cmp(&a.added).then(a.id.cmp(&b.id)));
        Ok(images)
    }

    /// Finds an image by full reference, familiar name, `name@digest`, full or short ID.
    ///
    /// Order as Docker's: a name first, then an ID (`sha256:` prefixed or bare hex prefix).
    pub fn resolve(&self, name_or_id: &str) -> Result<ImageRecord, StoreError> {
        let db = self.meta.read()?;
        find(&db, name_or_id).map(|(rec, _)| rec.clone())
    }

    /// Like [`Self::resolve`], also returning the name it matched (`None` when matched by ID).
    pub fn resolve_named(
        &self,
        name_or_id: &str,
    ) -> Result<(ImageRecord, Option<Reference>), StoreError> {
        let db = self.meta.read()?;
        let (rec, matched) = find(&db, name_or_id)?;
        let name = match matched {
            Matched::Tag(r) | Matched::Digest(r) => Some(r),
            Matched::Id => None,
        };
        Ok((rec.clone(), name))
    }

    /// The parsed image configuration (entrypoint, env, history, rootfs) of `image`.
    pub fn config(&self, image: &ImageRecord) -> Result<ImageConfiguration, StoreError> {
        let bytes = self.blobs.read(&image.config.digest)?;
        parse_config(&image.config.digest, &bytes)
    }

    /// The unpacked layer directories of `image`, bottom first: overlayfs lowerdirs.
    ///
    /// overlayfs wants the top layer first in `lowerdir=`; callers reverse this list.
    pub fn layer_dirs(&self, image: &ImageRecord) -> Result<Vec<PathBuf>, StoreError> {
        image
            .layers
            .iter()
            .map(|l| {
                let dir = self.layer_root(&l.diff_id).join("diff");
                if dir.is_dir() {
                    Ok(dir)
                } else {
                    Err(StoreError::MissingLayer(l.diff_id.clone()))
                }
            })
            .collect()
    }

    /// Points `new_ref` at the image `src` resolves to, moving it off any other image.
    pub fn tag(&self, src: &str, new_ref: &Reference) -> Result<ImageRecord, StoreError> {
        if new_ref.digest().is_some() {
            return Err(StoreError::TagWithDigest(new_ref.clone()));
        }
        self.meta.update(|db| {
            let id = find(db, src)?.0.id.to_string();
            for rec in db.images.values_mut() {
                rec.repo_tags.retain(|t| t != new_ref);
            }
            let rec = db
                .images
                .get_mut(&id)
                .ok_or_else(|| StoreError::NotFound(src.to_owned()))?;
            rec.repo_tags.push(new_ref.clone());
            Ok(rec.clone())
        })
    }

    /// The config's history with layer sizes, newest first, as `docker history` shows it.
    pub fn history(&self, image: &ImageRecord) -> Result<Vec<HistoryEntry>, StoreError> {
        let config = self.config(image)?;
        let mut layers = image.layers.iter();
        let mut out: Vec<HistoryEntry> = match config.history() {
            Some(history) if !history.is_empty() => history
                .iter()
                .map(|h| {
                    let empty = h.empty_layer().unwrap_or(false);
                    let size = if empty {
                        0
                    } else {
                        layers.next().map_or(0, |l| l.size)
                    };
                    HistoryEntry {
                        id: None,
                        created: h.created().clone(),
                        created_by: h.created_by().clone().unwrap_or_default(),
                        size,
                        comment: h.comment().clone().unwrap_or_default(),
                        empty_layer: empty,
                    }
                })
                .collect(),
            // Images without history (some loaders drop it): one line per layer.
            _ => image
                .layers
                .iter()
                .map(|l| HistoryEntry {
                    id: None,
                    created: image.created.clone(),
                    created_by: String::new(),
                    size: l.size,
                    comment: String::new(),
                    empty_layer: false,
                })
                .collect(),
        };
        out.reverse();
        if let Some(top) = out.first_mut() {
            top.id = Some(image.id.clone());
        }
        Ok(out)
    }

    /// Space used: images, unique unpacked layers and blobs.
    pub fn disk_usage(&self) -> Result<DiskUsage, StoreError> {
        let db = self.meta.read()?;
        let mut seen = HashSet::new();
        let mut usage = DiskUsage {
            images: db.images.len(),
            blobs_size: self.blobs.total_size(),
            ..Default::default()
        };
        for rec in db.images.values() {
            usage.images_size += rec.size;
            for l in &rec.layers {
                if seen.insert(&l.diff_id) {
                    usage.layers_size += l.size;
                }
            }
        }
        Ok(usage)
    }

    /// Records a new image (or new names for an existing one) once its blobs and layers exist.
    ///
    /// Tags move off whatever image had them before, as in Docker (that image may
    /// become dangling). Blobs of a replaced manifest are garbage-collected.
    pub(crate) fn commit(&self, new: NewImage) -> Result<ImageRecord, StoreError> {
        let id = ImageId(new.config.digest.clone());
        let created = new.config_json.created().clone();
        let platform = {
            let c = &new.config_json;
            let mut p = format!("{}/{}", c.os(), c.architecture());
            if let Some(v) = c.variant() {
                p.push('/');
                p.push_str(v);
            }
            p
        };
        let (rec, _, _) = self.update_and_collect(|db| {
            // Verified under the lock: a concurrent rmi may have collected shared content.
            for d in [&new.manifest.digest, &new.config.digest]
                .into_iter()
                .chain(new.layers.iter().map(|l| &l.blob.digest))
            {
                if !self.blobs.has(d) {
                    return Err(StoreError::MissingBlob(d.clone()));
                }
            }
            for l in &new.layers {
                if !self.has_layer(&l.diff_id) {
                    return Err(StoreError::MissingLayer(l.diff_id.clone()));
                }
            }
            for rec in db.images.values_mut() {
                rec.repo_tags.retain(|t| !new.tags.contains(t));
            }
            let key = id.to_string();
            let old = db.images.remove(&key);
            let mut rec = ImageRecord {
                id: id.clone(),
                repo_tags: Vec::new(),
                repo_digests: Vec::new(),
                manifest: new.manifest.clone(),
                config: new.config.clone(),
                size: new.layers.iter().map(|l| l.size).sum(),
                layers: new.layers.clone(),
                created: created.clone(),
                platform: platform.clone(),
                added: chrono::Utc::now(),
            };
            if let Some(old) = &old {
                rec.added = old.added;
                rec.repo_tags = old.repo_tags.clone();
                rec.repo_digests = old.repo_digests.clone();
            }
            for t in &new.tags {
                if !rec.repo_tags.contains(t) {
                    rec.repo_tags.push(t.clone());
                }
            }
            for d in &new.repo_digests {
                if !rec.repo_digests.contains(d) {
                    rec.repo_digests.push(d.clone());
                }
            }
            db.images.insert(key, rec.clone());
            Ok((rec, old.into_iter().collect()))
        })?;
        Ok(rec)
    }
}

/// Parses a config blob.
pub(crate) fn parse_config(
    digest: &Digest,
    bytes: &[u8],
) -> Result<ImageConfiguration, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Config {
        digest: digest.clone(),
        reason: e.to_string(),
    })
}

/// The config's diff-ids as digests.
pub(crate) fn diff_ids(
    digest: &Digest,
    config: &ImageConfiguration,
) -> Result<Vec<Digest>, StoreError> {
    config
        .rootfs()
        .diff_ids()
        .iter()
        .map(|d| {
            d.parse().map_err(|e| StoreError::Config {
                digest: digest.clone(),
                reason: format!("rootfs.diff_ids: {e}"),
            })
        })
        .collect()
}

/// How an image was found: by one of its names, or by ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Matched {
    Tag(Reference),
    Digest(Reference),
    Id,
}

/// Looks `name_or_id` up in `db` (see [`ImageStore::resolve`]).
pub(crate) fn find<'a>(
    db: &'a Db,
    name_or_id: &str,
) -> Result<(&'a ImageRecord, Matched), StoreError> {
    let not_found = || StoreError::NotFound(name_or_id.to_owned());
    if let Ok(r) = Reference::parse(name_or_id) {
        if let Some(d) = r.digest() {
            let bare = r.with_digest(d.clone());
            for rec in db.images.values() {
                let named = rec.repo_digests.contains(&bare)
                    || (rec.manifest.digest == *d
                        && rec
                            .repo_tags
                            .iter()
                            .chain(&rec.repo_digests)
                            .any(|t| t.name() == r.name()));
                if named {
                    return Ok((rec, Matched::Digest(bare)));
                }
            }
        } else if let Some(rec) = db.images.values().find(|rec| rec.repo_tags.contains(&r)) {
            return Ok((rec, Matched::Tag(r)));
        }
    }
    let hex = name_or_id.strip_prefix("sha256:").unwrap_or(name_or_id);
    if hex.is_empty()
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(not_found());
    }
    let matches: Vec<_> = db
        .images
        .values()
        .filter(|r| r.id.digest().hex().starts_with(hex))
        .collect();
    match matches.len() {
        0 => Err(not_found()),
        1 => Ok((matches[0], Matched::Id)),
        n => Err(StoreError::Ambiguous(name_or_id.to_owned(), n)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_reaps_staging_of_dead_processes_only() {
        let tmp = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let root = tmp.path().join("images");
        fs::create_dir_all(root.join("tmp")).unwrap();
        let orphan = root.join("tmp").join(format!("{dead}-layer-1"));
        fs::create_dir_all(orphan.join("diff/bin")).unwrap();
        let orphan_blob = root.join("tmp").join(format!("{dead}-blob-x"));
        fs::write(&orphan_blob, b"partial").unwrap();
        let ours = root
            .join("tmp")
            .join(format!("{}-layer-2", std::process::id()));
        fs::create_dir_all(&ours).unwrap();
        let store = ImageStore::open(&root).unwrap();
        assert!(!orphan.exists() && !orphan_blob.exists());
        assert!(ours.exists(), "a live process's staging is left alone");
        assert!(store.list().unwrap().is_empty());
        assert_eq!(store.auth_file(), tmp.path().join("auth.json"));
    }

    #[test]
    fn corrupt_metadata_is_reported_with_its_path() {
        let tmp = tempfile::tempdir().unwrap();
        let store = ImageStore::open(tmp.path()).unwrap();
        fs::write(tmp.path().join("images.json"), b"{not json").unwrap();
        let err = store.list().unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }));
        assert!(err.to_string().contains("images.json"), "{err}");
    }
}
