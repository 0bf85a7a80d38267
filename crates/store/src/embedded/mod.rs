//! The embedded backend: an MVCC history in one redb file, written by one group-commit thread.
//!
//! Threads: one writer thread owns every write transaction ([`writer`]); reads run as redb read
//! transactions (snapshots) on tokio's blocking pool; watches follow an in-memory broadcast of
//! committed events and read the persisted history when they start in the past or fall behind
//! ([`watch`]).

mod schema;
mod watch;
mod writer;

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use redb::{Database, ReadTransaction, ReadableDatabase, ReadableTable};
use tokio::sync::{broadcast, oneshot};

use self::schema::{
    Record, HISTORY, KEY_REVISIONS, LATEST, META, META_COMPACT_REVISION, META_REVISION,
};
use self::writer::{Applied, EventBatch, Op, Request, Writer};
use crate::{EventKind, KeyValue, RangeResult, Result, Store, StoreError, WatchStream};

/// File name of the database inside the data directory.
const DB_FILE: &str = "store.redb";
/// Committed transactions buffered for watchers; a watcher further behind re-reads the history.
const BROADCAST_CAPACITY: usize = 1024;

/// The default backend: a revisioned store in `<data dir>/store.redb`.
///
/// Every acknowledged write has been committed with fsync; concurrent writes share commits
/// (group commit). History is kept until [`Store::compact`], also across restarts. Clones share
/// one database; the file closes when the last clone and every watch stream are dropped.
#[derive(Clone)]
pub struct EmbeddedStore {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.shared.path)
            .finish_non_exhaustive()
    }
}

struct Shared {
    path: PathBuf,
    db: Arc<Database>,
    /// `None` only while dropping, to stop the writer thread.
    requests: Option<mpsc::Sender<Request>>,
    events: broadcast::Sender<EventBatch>,
    /// The last committed revision, published by the writer after each commit.
    revision: Arc<AtomicI64>,
    writer: Option<JoinHandle<()>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.requests = None;
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

impl EmbeddedStore {
    /// Opens (or creates) the store in `data_dir`; blocks while redb recovers after a crash.
    pub fn open(data_dir: impl AsRef<Path>) -> Result<EmbeddedStore> {
        let data_dir = data_dir.as_ref();
        std::fs::create_dir_all(data_dir).map_err(|err| {
            StoreError::backend(format!("creating {}: {err}", data_dir.display()))
        })?;
        let path = data_dir.join(DB_FILE);
        let db = Database::builder()
            .create(&path)
            .map_err(|err| StoreError::backend(format!("opening {}: {err}", path.display())))?;
        let txn = db.begin_write()?;
        let revision = {
            txn.open_table(HISTORY)?;
            txn.open_table(LATEST)?;
            txn.open_table(KEY_REVISIONS)?;
            let meta = txn.open_table(META)?;
            let revision = meta.get(META_REVISION)?.map_or(0, |g| g.value());
            revision as i64
        };
        txn.commit()?;

        let db = Arc::new(db);
        let (requests, receiver) = mpsc::channel();
        let (events, _) = broadcast::channel(BROADCAST_CAPACITY);
        let revision = Arc::new(AtomicI64::new(revision));
        let writer = Writer {
            db: db.clone(),
            requests: receiver,
            events: events.clone(),
            revision: revision.clone(),
        };
        let writer = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer.run())
            .map_err(|err| StoreError::backend(format!("starting the writer thread: {err}")))?;
        Ok(EmbeddedStore {
            shared: Arc::new(Shared {
                path,
                db,
                requests: Some(requests),
                events,
                revision,
                writer: Some(writer),
            }),
        })
    }

    /// The database file, for tools (and tests) that inspect raw stored bytes.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    async fn write(&self, op: Op) -> Result<Applied> {
        let (reply, answer) = oneshot::channel();
        self.request(Request::Write { op, reply })?;
        answer.await.map_err(|_| closed())?
    }

    fn request(&self, request: Request) -> Result<()> {
        let requests = self.shared.requests.as_ref().ok_or_else(closed)?;
        requests.send(request).map_err(|_| closed())
    }

    /// Runs `read` in a snapshot on the blocking pool.
    async fn read<T, F>(&self, read: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&ReadTransaction) -> Result<T> + Send + 'static,
    {
        let db = self.shared.db.clone();
        tokio::task::spawn_blocking(move || read(&db.begin_read()?))
            .await
            .map_err(StoreError::backend)?
    }
}

fn closed() -> StoreError {
    StoreError::backend("the embedded store is closed")
}

#[async_trait::async_trait]
impl Store for EmbeddedStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let key = key.to_owned();
        self.read(move |txn| get(txn, &key)).await
    }

    async fn range(
        &self,
        prefix: &str,
        at_revision: Option<i64>,
        limit: Option<usize>,
        start_after: Option<&str>,
    ) -> Result<RangeResult> {
        let prefix = prefix.to_owned();
        let start_after = start_after.map(str::to_owned);
        self.read(move |txn| range(txn, &prefix, at_revision, limit, start_after.as_deref()))
            .await
    }

    async fn count(&self, prefix: &str) -> Result<u64> {
        let prefix = prefix.to_owned();
        self.read(move |txn| count(txn, &prefix)).await
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<i64> {
        let key = key.to_owned();
        Ok(self.write(Op::Create { key, value }).await?.revision)
    }

    async fn update(&self, key: &str, value: Vec<u8>, expected_mod_revision: i64) -> Result<i64> {
        let key = key.to_owned();
        let expected = expected_mod_revision;
        let op = Op::Update {
            key,
            value,
            expected,
        };
        Ok(self.write(op).await?.revision)
    }

    async fn delete(
        &self,
        key: &str,
        expected_mod_revision: Option<i64>,
    ) -> Result<(i64, KeyValue)> {
        let key = key.to_owned();
        let expected = expected_mod_revision;
        let applied = self.write(Op::Delete { key, expected }).await?;
        let prev = applied
            .prev
            .ok_or_else(|| StoreError::backend("delete without previous value"))?;
        Ok((applied.revision, prev))
    }

    async fn current_revision(&self) -> Result<i64> {
        Ok(self.shared.revision.load(Ordering::Acquire))
    }

    async fn compact(&self, revision: i64) -> Result<()> {
        let (reply, answer) = oneshot::channel();
        self.request(Request::Compact { revision, reply })?;
        answer.await.map_err(|_| closed())?
    }

    async fn watch(&self, prefix: &str, from_revision: i64) -> Result<WatchStream> {
        // Subscribe before reading the revision or the history: every commit not visible to
        // them is then guaranteed to arrive on the broadcast.
        let live = self.shared.events.subscribe();
        let from = if from_revision > 0 {
            from_revision
        } else {
            self.shared.revision.load(Ordering::Acquire) + 1
        };
        Ok(watch::stream(
            self.shared.db.clone(),
            live,
            prefix.to_owned(),
            from as u64,
        ))
    }
}

/// The current revision and the compaction revision in a snapshot.
fn revisions(txn: &ReadTransaction) -> Result<(u64, u64)> {
    let meta = txn.open_table(META)?;
    let current = meta.get(META_REVISION)?.map_or(0, |g| g.value());
    let compacted = meta.get(META_COMPACT_REVISION)?.map_or(0, |g| g.value());
    Ok((current, compacted))
}

fn load(history: &impl ReadableTable<u64, &'static [u8]>, revision: u64) -> Result<Record> {
    let bytes = history
        .get(revision)?
        .ok_or_else(|| StoreError::backend(format!("history entry {revision} missing")))?;
    Record::decode(bytes.value())
}

fn get(txn: &ReadTransaction, key: &str) -> Result<Option<KeyValue>> {
    let latest = txn.open_table(LATEST)?;
    let Some(revision) = latest.get(key.as_bytes())?.map(|g| g.value()) else {
        return Ok(None);
    };
    let history = txn.open_table(HISTORY)?;
    Ok(Some(load(&history, revision)?.into_key_value(revision)))
}

fn range(
    txn: &ReadTransaction,
    prefix: &str,
    at_revision: Option<i64>,
    limit: Option<usize>,
    start_after: Option<&str>,
) -> Result<RangeResult> {
    let (current, compacted) = revisions(txn)?;
    let at = match at_revision {
        None | Some(0) => current,
        Some(requested) if requested > current as i64 => {
            return Err(StoreError::FutureRevision {
                requested,
                current_revision: current as i64,
            })
        }
        Some(requested) if requested < compacted as i64 => {
            return Err(StoreError::Compacted {
                compact_revision: compacted as i64,
            })
        }
        Some(requested) => requested as u64,
    };
    let limit = limit.filter(|l| *l > 0).unwrap_or(usize::MAX);
    // Resume strictly after the previous page's last key, but never before the prefix.
    let start_after = start_after.filter(|after| *after >= prefix);
    let history = txn.open_table(HISTORY)?;
    let mut kvs = Vec::new();
    let mut more = false;
    if at == current {
        let latest = txn.open_table(LATEST)?;
        let lower = match start_after {
            Some(after) => Bound::Excluded(after.as_bytes()),
            None => Bound::Included(prefix.as_bytes()),
        };
        for entry in latest.range::<&[u8]>((lower, Bound::Unbounded))? {
            let (key, revision) = entry?;
            if !key.value().starts_with(prefix.as_bytes()) {
                break;
            }
            if kvs.len() == limit {
                more = true;
                break;
            }
            let revision = revision.value();
            kvs.push(load(&history, revision)?.into_key_value(revision));
        }
    } else {
        // Per key, the newest history entry at or below `at` decides whether it existed.
        let key_revisions = txn.open_table(KEY_REVISIONS)?;
        let mut cursor: Option<Vec<u8>> = start_after.map(|after| after.as_bytes().to_vec());
        loop {
            let lower = match &cursor {
                Some(key) => Bound::Excluded((key.as_slice(), u64::MAX)),
                None => Bound::Included((prefix.as_bytes(), 0)),
            };
            let next = key_revisions
                .range::<(&[u8], u64)>((lower, Bound::Unbounded))?
                .next()
                .transpose()?
                .map(|(entry, _)| entry.value().0.to_vec());
            let Some(key) = next.filter(|key| key.starts_with(prefix.as_bytes())) else {
                break;
            };
            let visible = key_revisions
                .range((key.as_slice(), 0)..=(key.as_slice(), at))?
                .next_back()
                .transpose()?
                .map(|(entry, _)| entry.value().1);
            if let Some(revision) = visible {
                let record = load(&history, revision)?;
                if record.kind == EventKind::Put {
                    if kvs.len() == limit {
                        more = true;
                        break;
                    }
                    kvs.push(record.into_key_value(revision));
                }
            }
            cursor = Some(key);
        }
    }
    Ok(RangeResult {
        kvs,
        more,
        revision: at as i64,
    })
}

fn count(txn: &ReadTransaction, prefix: &str) -> Result<u64> {
    let latest = txn.open_table(LATEST)?;
    let mut count = 0;
    for entry in latest.range::<&[u8]>(prefix.as_bytes()..)? {
        if !entry?.0.value().starts_with(prefix.as_bytes()) {
            break;
        }
        count += 1;
    }
    Ok(count)
}

macro_rules! redb_errors_are_backend_errors {
    ($($error:ty),*) => {$(
        impl From<$error> for StoreError {
            fn from(err: $error) -> Self {
                StoreError::backend(err)
            }
        }
    )*};
}

redb_errors_are_backend_errors!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);
