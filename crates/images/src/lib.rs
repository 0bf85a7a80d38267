//! skiff's image layer: references, a content-addressed image store with shared unpacked
//! layers, docker-archive and OCI archive import/export, and an OCI distribution client.
//!
//! Layout under the store root (`<data-root>/images`):
//! - `blobs/sha256/<hex>`: verified blobs (manifests, configs, compressed layers), OCI
//!   image layout semantics;
//! - `layers/sha256/<diff-id hex>/diff`: each layer unpacked once, an overlayfs lowerdir;
//! - `images.json`: names and image records, replaced atomically under `images.lock`;
//! - `gc.lock`: shared by imports in flight, exclusive while unreferenced content is swept;
//! - `tmp/`: staging for blobs and layers, renamed into place only once verified.

#![warn(missing_docs)]

pub mod digest;
pub mod layer;
pub mod manifest;
pub mod progress;
pub mod reference;

pub use digest::{Digest, DigestError, ImageId};
pub use layer::{extract_layer, write_layer_tar, DiffError, ExtractError, ExtractedLayer};
pub use manifest::{parse_manifest, Manifest, ManifestError, Platform};
pub use progress::{NoProgress, Progress};
pub use reference::{Reference, ReferenceError};
pub mod store;
pub use store::{
    DiskUsage, HistoryEntry, ImageRecord, ImageStore, ImportGuard, LayerRecord, LoadedImage,
    PruneReport, RemoveEvent, StoreError,
};
pub mod archive;
pub use archive::{ArchiveError, ArchiveFormat};
pub mod registry;
pub use registry::{
    login, logout, pull, push, Credentials, PullOptions, PushOptions, RegistryError,
};

/// Any error of this crate: the per-module enums, joined for callers that do not care which.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// From reference parsing.
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    /// From digest parsing.
    #[error(transparent)]
    Digest(#[from] DigestError),
    /// From manifest parsing.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// From layer extraction.
    #[error(transparent)]
    Extract(#[from] ExtractError),
    /// From the store.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// From load/save.
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    /// From the registry client.
    #[error(transparent)]
    Registry(#[from] RegistryError),
}
