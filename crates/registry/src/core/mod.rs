//! The registry's protocol logic, free of HTTP: what each distribution operation means for
//! the storage. One file per resource (blobs, uploads, manifests, tags and catalog,
//! referrers); the HTTP layer only translates requests into these calls.

mod blobs;
mod manifests;
mod referrers;
mod tags;
mod uploads;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use skiff_images::{Digest, DigestError};

use crate::errcode::ErrorCode;
use crate::name::{ManifestRef, NameError, RepoName};
use crate::storage::{Storage, StorageError};

pub use blobs::{BlobContent, ByteRange};
pub use manifests::{StoredManifest, MAX_MANIFEST_SIZE};
pub use referrers::Referrers;
pub use tags::{Page, Paged};
pub use uploads::UploadStatus;

/// Errors of registry operations, each carrying its distribution error code.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// A repository name or tag is malformed.
    #[error(transparent)]
    Name(#[from] NameError),
    /// The repository does not exist.
    #[error("repository {0} is not known to this registry")]
    NameUnknown(RepoName),
    /// The blob is not in the repository.
    #[error("blob {digest} is not in repository {repo}")]
    BlobUnknown {
        /// The repository asked.
        repo: RepoName,
        /// The blob.
        digest: Digest,
    },
    /// The manifest is not in the repository.
    #[error("manifest {reference} is not in repository {repo}")]
    ManifestUnknown {
        /// The repository asked.
        repo: RepoName,
        /// The tag or digest.
        reference: String,
    },
    /// A manifest references a blob or manifest the repository does not hold.
    #[error("manifest references {0}, which is not in the repository: push it first")]
    ManifestBlobUnknown(Digest),
    /// A manifest is malformed or inconsistent.
    #[error("invalid manifest: {0}")]
    ManifestInvalid(String),
    /// A digest is malformed, or content does not match it.
    #[error("{0}")]
    DigestInvalid(String),
    /// The content is too large or its size is inconsistent.
    #[error("{0}")]
    SizeInvalid(String),
    /// The media type or operation is not supported.
    #[error("{0}")]
    Unsupported(String),
    /// The upload session does not exist in this repository.
    #[error("upload {0} is unknown: it was never started, or was finished or cancelled")]
    UploadUnknown(String),
    /// A chunk does not start where the upload ends.
    #[error(
        "chunk starts at byte {start} but the upload holds {size} bytes: send chunks in order"
    )]
    ChunkOutOfOrder {
        /// Where the chunk claims to start.
        start: u64,
        /// Bytes received so far (the next chunk must start here).
        size: u64,
    },
    /// Upload data could not be received.
    #[error("upload data: {0}")]
    UploadInvalid(String),
    /// A byte range of a blob cannot be served.
    #[error("range not satisfiable for a blob of {size} bytes")]
    RangeNotSatisfiable {
        /// The blob's size.
        size: u64,
    },
    /// A pagination parameter is not a number.
    #[error("invalid pagination parameter n={0:?}: expected a non-negative integer")]
    Pagination(String),
    /// The storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl CoreError {
    /// The distribution error code.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Name(NameError::Name(_)) => ErrorCode::NameInvalid,
            Self::Name(NameError::Tag(_)) => ErrorCode::TagInvalid,
            Self::NameUnknown(_) => ErrorCode::NameUnknown,
            Self::BlobUnknown { .. } => ErrorCode::BlobUnknown,
            Self::ManifestUnknown { .. } => ErrorCode::ManifestUnknown,
            Self::ManifestBlobUnknown(_) => ErrorCode::ManifestBlobUnknown,
            Self::ManifestInvalid(_) => ErrorCode::ManifestInvalid,
            Self::DigestInvalid(_) => ErrorCode::DigestInvalid,
            Self::SizeInvalid(_) => ErrorCode::SizeInvalid,
            Self::Unsupported(_) => ErrorCode::Unsupported,
            Self::UploadUnknown(_) => ErrorCode::BlobUploadUnknown,
            Self::ChunkOutOfOrder { .. } | Self::UploadInvalid(_) => ErrorCode::BlobUploadInvalid,
            Self::RangeNotSatisfiable { .. } => ErrorCode::RangeInvalid,
            Self::Pagination(_) => ErrorCode::PaginationNumberInvalid,
            Self::Storage(StorageError::Body(_)) => ErrorCode::BlobUploadInvalid,
            Self::Storage(_) => ErrorCode::Unknown,
        }
    }

    /// The HTTP status; the spec's for the code, except 416 for chunks out of order.
    pub fn status(&self) -> u16 {
        match self {
            Self::ChunkOutOfOrder { .. } => 416,
            other => other.code().status(),
        }
    }
}

/// Parses a repository name from a URL.
pub fn parse_repo(s: &str) -> Result<RepoName, CoreError> {
    Ok(s.parse()?)
}

/// Parses a digest from a URL or query, as DIGEST_INVALID when malformed.
pub fn parse_digest(s: &str) -> Result<Digest, CoreError> {
    s.parse()
        .map_err(|e: DigestError| CoreError::DigestInvalid(format!("{e}")))
}

/// Parses a manifest reference: a digest when it contains ':', a tag otherwise.
pub fn parse_reference(s: &str) -> Result<ManifestRef, CoreError> {
    if s.contains(':') {
        parse_digest(s).map(ManifestRef::Digest)
    } else {
        Ok(ManifestRef::Tag(s.parse()?))
    }
}

/// The registry: storage plus the upload sessions in flight.
pub struct Registry {
    storage: Arc<dyn Storage>,
    /// Upload sessions seen by this process; the storage holds their bytes, the session the
    /// running hash, so that finishing an upload does not read it again.
    sessions: Mutex<HashMap<String, Arc<uploads::Session>>>,
}

impl Registry {
    /// A registry over `storage`.
    pub fn new(storage: Arc<dyn Storage>) -> Self {
        Self {
            storage,
            sessions: Mutex::new(HashMap::new()),
        }
    }

    /// True when the repository exists.
    async fn repo_exists(&self, repo: &RepoName) -> Result<bool, CoreError> {
        Ok(self.storage.tags(repo).await?.is_some())
    }
}
