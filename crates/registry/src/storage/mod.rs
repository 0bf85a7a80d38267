//! Where the registry keeps its content: a [`Storage`] trait, with a filesystem
//! implementation ([`FsStorage`]) for the server and an in-memory one for unit tests.
//!
//! The model, shared by every implementation:
//! - **blobs**: a global content-addressed store (layers, configs and manifests alike);
//!   content only appears there complete and verified, so a reader never sees a partial blob;
//! - **links**: which blobs and manifests a repository holds, each with a small payload
//!   (a manifest's media type); a blob is visible through a repository only when linked, which
//!   is what makes cross-repository mounts an operation of their own;
//! - **tags**: per repository, a name pointing at a manifest digest, replaced atomically;
//! - **referrers**: per repository and subject digest, the descriptors of manifests whose
//!   `subject` names it;
//! - **uploads**: staging areas, appended to and then committed under a digest the caller
//!   has verified; abandoned uploads stay invisible.

mod fs;
#[cfg(test)]
pub(crate) mod memory;

use std::io;
use std::pin::Pin;

use async_trait::async_trait;
use tokio::io::AsyncRead;

use skiff_images::Digest;

use crate::name::{RepoName, Tag};

pub use fs::FsStorage;

/// Errors from a storage backend.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A filesystem operation failed.
    #[error("storage: {op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The blob does not exist.
    #[error("blob {0} not found in storage")]
    BlobNotFound(Digest),
    /// The upload does not exist (never started, finished, cancelled or purged).
    #[error("upload {0} not found in storage")]
    UploadNotFound(String),
    /// Reading the request body failed while appending to an upload.
    #[error("reading upload data: {0}")]
    Body(#[source] io::Error),
}

/// What a repository link points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LinkKind {
    /// A blob (layer or config) pushed to or mounted into the repository.
    Blob,
    /// A manifest revision; its link payload is the media type.
    Manifest,
}

/// A byte stream read from storage.
pub type ByteReader = Pin<Box<dyn AsyncRead + Send>>;

/// A reader over all of a blob or a range of it.
pub struct BlobRead {
    /// The blob's full size.
    pub size: u64,
    /// The requested bytes.
    pub reader: ByteReader,
}

/// The state of an upload as the storage knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadInfo {
    /// The repository the upload was started in.
    pub repo: RepoName,
    /// Bytes received so far.
    pub size: u64,
}

/// The registry's persistence, behind which the protocol logic is tested without disks.
#[async_trait]
pub trait Storage: Send + Sync + 'static {
    /// The size of a blob, or `None` when it is not stored.
    async fn blob_size(&self, digest: &Digest) -> Result<Option<u64>, StorageError>;
    /// Reads `len` bytes of a blob from `offset` (the whole blob for `None`).
    async fn read_blob(
        &self,
        digest: &Digest,
        range: Option<(u64, u64)>,
    ) -> Result<BlobRead, StorageError>;
    /// Reads a small blob (a manifest) whole.
    async fn read_blob_bytes(&self, digest: &Digest) -> Result<Vec<u8>, StorageError>;
    /// Stores a small blob whose digest the caller computed; durable when this returns.
    async fn put_blob_bytes(&self, digest: &Digest, data: &[u8]) -> Result<(), StorageError>;

    /// Records that `repo` holds `digest`, with a small payload.
    async fn link(
        &self,
        repo: &RepoName,
        kind: LinkKind,
        digest: &Digest,
        payload: &[u8],
    ) -> Result<(), StorageError>;
    /// The payload of a link, or `None` when `repo` does not hold `digest`.
    async fn linked(
        &self,
        repo: &RepoName,
        kind: LinkKind,
        digest: &Digest,
    ) -> Result<Option<Vec<u8>>, StorageError>;
    /// Removes a link; true if there was one.
    async fn unlink(
        &self,
        repo: &RepoName,
        kind: LinkKind,
        digest: &Digest,
    ) -> Result<bool, StorageError>;

    /// Points `tag` at `digest`, replacing any previous target atomically.
    async fn set_tag(
        &self,
        repo: &RepoName,
        tag: &Tag,
        digest: &Digest,
    ) -> Result<(), StorageError>;
    /// The digest a tag points at.
    async fn tag(&self, repo: &RepoName, tag: &Tag) -> Result<Option<Digest>, StorageError>;
    /// Removes a tag; true if there was one.
    async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> Result<bool, StorageError>;
    /// All tags of a repository, in any order; `None` when the repository does not exist.
    async fn tags(&self, repo: &RepoName) -> Result<Option<Vec<(Tag, Digest)>>, StorageError>;
    /// All repositories, in any order.
    async fn repositories(&self) -> Result<Vec<RepoName>, StorageError>;

    /// Records that manifest `referrer` names `subject`; `descriptor` is its JSON descriptor.
    async fn add_referrer(
        &self,
        repo: &RepoName,
        subject: &Digest,
        referrer: &Digest,
        descriptor: &[u8],
    ) -> Result<(), StorageError>;
    /// The descriptors recorded for `subject`.
    async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
    ) -> Result<Vec<Vec<u8>>, StorageError>;
    /// Forgets one referrer of `subject`.
    async fn remove_referrer(
        &self,
        repo: &RepoName,
        subject: &Digest,
        referrer: &Digest,
    ) -> Result<(), StorageError>;

    /// Starts an empty upload in `repo` under the caller's `id`.
    async fn create_upload(&self, repo: &RepoName, id: &str) -> Result<(), StorageError>;
    /// An upload's repository and size.
    async fn upload_info(&self, id: &str) -> Result<Option<UploadInfo>, StorageError>;
    /// Appends everything `data` yields to an upload; returns the new size.
    ///
    /// On error the upload may hold part of the data: callers re-read the size.
    async fn append_upload(
        &self,
        id: &str,
        data: &mut (dyn AsyncRead + Send + Unpin),
    ) -> Result<u64, StorageError>;
    /// Reads an upload's content from the start (to hash it again after a restart).
    async fn read_upload(&self, id: &str) -> Result<ByteReader, StorageError>;
    /// Makes an upload the blob `digest`, which the caller verified; durable when this returns.
    async fn commit_upload(&self, id: &str, digest: &Digest) -> Result<(), StorageError>;
    /// Discards an upload; true if there was one.
    async fn delete_upload(&self, id: &str) -> Result<bool, StorageError>;
}
