//! The revisioned key-value store under skiff's Kubernetes API server.
//!
//! Everything the API server persists goes through one trait, [`Store`], whose semantics are
//! etcd v3's as the Kubernetes storage layer (`k8s.io/apiserver/pkg/storage`) uses them:
//!
//! - one global revision counter; every successful write bumps it by one and the new value is
//!   the written key's `mod_revision` (the object's `resourceVersion`);
//! - an MVCC history: reads at a past revision and watches from a past revision work until
//!   [`Store::compact`] discards that history, after which they fail with
//!   [`StoreError::Compacted`] (HTTP 410 Gone, "too old resource version");
//! - watches deliver every change under a prefix in revision order, without gaps or
//!   duplicates, each with the previous value.
//!
//! Backends: [`EmbeddedStore`] (SQLite, the default, with group commit) and [`EtcdStore`]
//! (an external etcd v3 cluster). [`EncryptingStore`] wraps either to encrypt selected key
//! prefixes (Secrets) at rest.

mod embedded;
mod encryption;
mod error;
mod etcd;

use std::pin::Pin;

use futures::Stream;

pub use embedded::EmbeddedStore;
pub use encryption::{EncryptingStore, KeyRing, ENCRYPTED_VALUE_PREFIX};
pub use error::{Result, StoreError};
pub use etcd::EtcdStore;

/// One key at one revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    /// The full key, e.g. `/registry/pods/default/nginx`.
    pub key: String,
    /// The stored bytes (empty in the key-value of a [`EventKind::Delete`] event).
    pub value: Vec<u8>,
    /// Revision of the write that created this incarnation of the key (0 for a deletion).
    pub create_revision: i64,
    /// Revision of the write that produced this value; the object's resourceVersion.
    pub mod_revision: i64,
    /// Number of writes since the key was created: 1 after the create (0 for a deletion).
    pub version: i64,
}

/// A page of keys returned by [`Store::range`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeResult {
    /// The keys in ascending byte order.
    pub kvs: Vec<KeyValue>,
    /// Whether more keys under the prefix follow the last one returned.
    pub more: bool,
    /// The revision the range was served at: the requested one, or the current revision.
    pub revision: i64,
}

/// What a watch event did to its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// The key was created or updated.
    Put,
    /// The key was deleted.
    Delete,
}

/// One change delivered by [`Store::watch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchEvent {
    /// Whether the key was written or deleted.
    pub kind: EventKind,
    /// The key after the change; for a delete only `key` and `mod_revision` (the revision of
    /// the deletion) are set, like etcd's tombstones.
    pub kv: KeyValue,
    /// The key before the change, when it existed and its history was not compacted away.
    pub prev_kv: Option<KeyValue>,
}

impl WatchEvent {
    /// The revision of the write that caused this event.
    pub fn revision(&self) -> i64 {
        self.kv.mod_revision
    }
}

/// The events of one watch, in revision order; an `Err` ends the stream.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchEvent>> + Send>>;

/// A revisioned key-value store with etcd v3 semantics.
///
/// Object-safe: the API server holds an `Arc<dyn Store>` and never knows which backend it has.
/// Keys are byte-ordered strings; a "prefix" selects every key starting with it (the empty
/// prefix selects all keys).
#[async_trait::async_trait]
pub trait Store: Send + Sync {
    /// Reads the current value of one key.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;

    /// Lists keys under `prefix` in byte order, at `at_revision` (the current revision when
    /// `None`), at most `limit` of them, starting after the key `start_after` (the last key of
    /// the previous page), like a Kubernetes list with `limit` and `continue`.
    ///
    /// Fails with [`StoreError::Compacted`] when `at_revision` is older than the compaction
    /// and [`StoreError::FutureRevision`] when it is newer than the current revision.
    async fn range(
        &self,
        prefix: &str,
        at_revision: Option<i64>,
        limit: Option<usize>,
        start_after: Option<&str>,
    ) -> Result<RangeResult>;

    /// Counts the keys currently under `prefix`.
    async fn count(&self, prefix: &str) -> Result<u64>;

    /// Creates `key` if it does not exist and returns the new revision.
    async fn create(&self, key: &str, value: Vec<u8>) -> Result<i64>;

    /// Replaces the value of `key` if its mod revision is still `expected_mod_revision`
    /// (compare-and-swap) and returns the new revision.
    async fn update(&self, key: &str, value: Vec<u8>, expected_mod_revision: i64) -> Result<i64>;

    /// Deletes `key`, only if its mod revision is `expected_mod_revision` when given, and
    /// returns the revision of the deletion with the deleted value.
    async fn delete(
        &self,
        key: &str,
        expected_mod_revision: Option<i64>,
    ) -> Result<(i64, KeyValue)>;

    /// The revision of the last committed write.
    async fn current_revision(&self) -> Result<i64>;

    /// Discards history older than `revision`: afterwards reads at revisions below it and
    /// watches starting below it fail with [`StoreError::Compacted`]. The latest value of
    /// every key is kept.
    async fn compact(&self, revision: i64) -> Result<()>;

    /// Streams every change under `prefix` with a revision of at least `from_revision`
    /// (0: only changes after the call), each with the previous value.
    ///
    /// To resume after the last event seen at revision `r`, watch from `r + 1`; to follow a
    /// list served at revision `r`, watch from `r + 1` too. When `from_revision` has been
    /// compacted the stream yields [`StoreError::Compacted`] and ends.
    async fn watch(&self, prefix: &str, from_revision: i64) -> Result<WatchStream>;
}

/// Shared stores are stores: lets wrappers such as [`EncryptingStore`] hold an
/// `Arc<dyn Store>`.
#[async_trait::async_trait]
impl<S: Store + ?Sized> Store for std::sync::Arc<S> {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        (**self).get(key).await
    }

    async fn range(
        &self,
        prefix: &str,
        at_revision: Option<i64>,
        limit: Option<usize>,
        start_after: Option<&str>,
    ) -> Result<RangeResult> {
        (**self)
            .range(prefix, at_revision, limit, start_after)
            .await
    }

    async fn count(&self, prefix: &str) -> Result<u64> {
        (**self).count(prefix).await
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<i64> {
        (**self).create(key, value).await
    }

    async fn update(&self, key: &str, value: Vec<u8>, expected_mod_revision: i64) -> Result<i64> {
        (**self).update(key, value, expected_mod_revision).await
    }

    async fn delete(
        &self,
        key: &str,
        expected_mod_revision: Option<i64>,
    ) -> Result<(i64, KeyValue)> {
        (**self).delete(key, expected_mod_revision).await
    }

    async fn current_revision(&self) -> Result<i64> {
        (**self).current_revision().await
    }

    async fn compact(&self, revision: i64) -> Result<()> {
        (**self).compact(revision).await
    }

    async fn watch(&self, prefix: &str, from_revision: i64) -> Result<WatchStream> {
        (**self).watch(prefix, from_revision).await
    }
}
