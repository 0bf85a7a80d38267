//! Errors every [`Store`](crate::Store) backend returns.

/// Result of a store operation.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Why a store operation failed.
///
/// The variants mirror the outcomes the Kubernetes storage layer distinguishes: the API server
/// maps `NotFound` to 404, `AlreadyExists` to 409 AlreadyExists, `Conflict` to 409 Conflict,
/// `Compacted` to 410 Gone ("too old resource version") and `FutureRevision` to a retryable
/// "too large resource version" timeout.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The key does not exist (get-for-update, update or delete).
    #[error("key {key} not found")]
    NotFound {
        /// The missing key.
        key: String,
    },
    /// A create found the key already present.
    #[error("key {key} already exists")]
    AlreadyExists {
        /// The existing key.
        key: String,
    },
    /// A compare-and-swap found another mod revision than the caller expected.
    #[error("key {key} was modified concurrently: expected mod revision {expected}, found {current_mod_revision}")]
    Conflict {
        /// The key that was modified.
        key: String,
        /// The mod revision the caller expected.
        expected: i64,
        /// The key's mod revision at the time of the write.
        current_mod_revision: i64,
    },
    /// The requested revision is older than the oldest revision the store still keeps.
    #[error(
        "revision has been compacted: the oldest revision still available is {compact_revision}"
    )]
    Compacted {
        /// The revision the store was compacted at; reads at or after it still work.
        compact_revision: i64,
    },
    /// The requested revision has not been written yet.
    #[error("revision {requested} is newer than the current revision {current_revision}")]
    FutureRevision {
        /// The revision the caller asked for.
        requested: i64,
        /// The store's current revision.
        current_revision: i64,
    },
    /// A stored value could not be encrypted or decrypted.
    #[error("encryption of key {key} failed: {reason}")]
    Encryption {
        /// The key whose value failed.
        key: String,
        /// What went wrong (unknown key name, authentication failure, ...).
        reason: String,
    },
    /// The backend (database file, etcd connection) failed.
    #[error("store backend: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),
}

impl StoreError {
    /// Wraps any backend error.
    pub fn backend(err: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>) -> Self {
        StoreError::Backend(err.into())
    }
}
