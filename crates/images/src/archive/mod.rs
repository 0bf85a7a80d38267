//! Image archives: `docker save` format (docker-archive) and OCI image layout in a tar.

mod load;
mod save;

use std::io;

use serde::{Deserialize, Serialize};

use crate::store::StoreError;

/// Which archive layout to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveFormat {
    /// `docker save`: `manifest.json`, `repositories`, config JSON and `<id>/layer.tar`.
    DockerArchive,
    /// OCI image layout: `oci-layout`, `index.json`, `blobs/sha256/...`.
    OciArchive,
}

/// Errors from loading or saving archives.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// Reading the archive stream failed.
    #[error("reading archive: {0}")]
    Read(#[source] io::Error),
    /// Writing the archive stream failed.
    #[error("writing archive: {0}")]
    Write(#[source] io::Error),
    /// The archive is neither a docker-archive nor an OCI archive.
    #[error("not an image archive: found neither manifest.json (docker-archive) nor index.json (OCI archive)")]
    UnknownFormat,
    /// The archive has an unusable entry path.
    #[error("archive entry {0:?} has an unsafe path")]
    UnsafePath(String),
    /// A file the archive's index refers to is missing.
    #[error("archive is missing {0}")]
    Missing(String),
    /// A JSON file in the archive cannot be parsed.
    #[error("archive file {file} is invalid: {reason}")]
    Invalid {
        /// The file inside the archive.
        file: String,
        /// What is wrong.
        reason: String,
    },
    /// A blob in an OCI archive does not hash to its name.
    #[error("archive blob {path} does not match its digest (got {actual})")]
    DigestMismatch {
        /// The path inside the archive.
        path: String,
        /// What it hashed to.
        actual: crate::digest::Digest,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One element of docker-archive `manifest.json`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifestEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// `oci-layout` file content.
#[derive(Debug, Serialize, Deserialize)]
struct OciLayout {
    #[serde(rename = "imageLayoutVersion")]
    image_layout_version: String,
}

/// OCI annotation naming an image reference (often just the tag).
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// containerd's annotation with the full image name.
pub const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";
