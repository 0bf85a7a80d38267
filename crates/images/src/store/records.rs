//! The records the store keeps per image and reports to callers.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::digest::{Digest, ImageId};
use crate::manifest::Descriptor;
use crate::reference::Reference;

/// One image in the store: its names, manifest, config and layers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The image ID (config digest).
    pub id: ImageId,
    /// Tags pointing at this image (`docker.io/library/busybox:latest`).
    #[serde(default)]
    pub repo_tags: Vec<Reference>,
    /// Digest references this image was pulled or pushed as (`name@sha256:...`).
    #[serde(default)]
    pub repo_digests: Vec<Reference>,
    /// The single-platform manifest stored for this image (used by push and save).
    pub manifest: Descriptor,
    /// The config blob.
    pub config: Descriptor,
    /// Layers, bottom first.
    pub layers: Vec<LayerRecord>,
    /// Unpacked size: sum of the layers' file sizes, what `docker images` shows.
    pub size: u64,
    /// The config's `created` timestamp, if any.
    #[serde(default)]
    pub created: Option<String>,
    /// `os/arch[/variant]` from the config.
    #[serde(default)]
    pub platform: String,
    /// When the image entered this store.
    pub added: DateTime<Utc>,
}

impl ImageRecord {
    /// True when no tag points at the image (`<none>:<none>` in `docker images`).
    pub fn is_dangling(&self) -> bool {
        self.repo_tags.is_empty()
    }
}

/// One layer of an image: its stored blob and its unpacked diff.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    /// Digest of the uncompressed tar stream; names the unpacked directory.
    pub diff_id: Digest,
    /// The stored (possibly compressed) blob.
    pub blob: Descriptor,
    /// Sum of file sizes in the layer.
    pub size: u64,
    /// Size of the uncompressed tar stream.
    pub diff_size: u64,
}

/// One line of `docker history`, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HistoryEntry {
    /// The image ID for the top entry, `None` (shown as `<missing>`) below it.
    pub id: Option<ImageId>,
    /// When the step ran.
    pub created: Option<String>,
    /// The command that created the step.
    pub created_by: String,
    /// Bytes the step added (0 for steps without a layer).
    pub size: u64,
    /// The step's comment.
    pub comment: String,
    /// True when the step did not create a layer.
    pub empty_layer: bool,
}

/// One line of `docker rmi` / `docker image prune` output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum RemoveEvent {
    /// A name was removed: `Untagged: busybox:latest`.
    Untagged(String),
    /// An image or layer was deleted: `Deleted: sha256:...`.
    Deleted(Digest),
}

impl fmt::Display for RemoveEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RemoveEvent::Untagged(n) => write!(f, "Untagged: {n}"),
            RemoveEvent::Deleted(d) => write!(f, "Deleted: {d}"),
        }
    }
}

/// What a prune removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PruneReport {
    /// The `Untagged:`/`Deleted:` lines.
    pub events: Vec<RemoveEvent>,
    /// Bytes freed (unpacked layers plus blobs).
    pub reclaimed: u64,
}

/// Space used by the store, as `docker system df` reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DiskUsage {
    /// Number of images.
    pub images: usize,
    /// Sum of image sizes, counting shared layers once per image.
    pub images_size: u64,
    /// Sum of unpacked layer sizes, each shared layer once.
    pub layers_size: u64,
    /// Sum of stored blob sizes.
    pub blobs_size: u64,
}

/// A loaded image as `docker load` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LoadedImage {
    /// The image ID.
    pub id: ImageId,
    /// The name it was loaded as, if the archive named it.
    pub reference: Option<Reference>,
}

impl fmt::Display for LoadedImage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.reference {
            Some(r) => write!(f, "Loaded image: {}", r.familiar_string()),
            None => write!(f, "Loaded image ID: {}", self.id),
        }
    }
}
