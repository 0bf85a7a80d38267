//! The embedded backend: an MVCC history in one SQLite database (WAL mode), written by one
//! group-commit thread.
//!
//! Threads: one writer thread owns the only writing connection ([`writer`]); reads run as
//! SQLite read transactions (WAL snapshots) on pooled read-only connections on tokio's blocking
//! pool; watches follow an in-memory broadcast of committed events and read the persisted
//! history when they start in the past or fall behind ([`watch`]).

mod schema;
mod watch;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, Transaction};
use tokio::sync::{broadcast, oneshot};

use self::schema::{prefix_end, Entry, COLUMNS, CREATE};
use self::writer::{Applied, EventBatch, Op, Request, Writer};
use crate::{KeyValue, RangeResult, Result, Store, StoreError, WatchStream};

/// File name of the database inside the data directory (SQLite adds `-wal` and `-shm`).
const DB_FILE: &str = "store.sqlite";
/// Committed transactions buffered for watchers; a watcher further behind re-reads the history.
/// The buffer keeps its transactions' values alive until they are overwritten: under group
/// commit a transaction holds tens of writes, so 1,024 of them held the last ~10,000 objects
/// written (13 MiB of pods) for as long as nothing else was written.
const BROADCAST_CAPACITY: usize = 128;
/// Most reads running at once, and idle read connections kept open: a thousand watchers
/// catching up after a restart queue for these instead of opening a thousand connections.
const READ_CONCURRENCY: usize = 16;

/// Page cache of each read connection, in KiB (SQLite's negative `cache_size`).
const READER_CACHE_KIB: i64 = -256;

/// The default backend: a revisioned store in `<data dir>/store.sqlite`.
///
/// Every acknowledged write has been committed with fsync; concurrent writes share commits
/// (group commit). History is kept until [`Store::compact`], also across restarts. Clones share
/// one database; the writer stops when the last clone is dropped.
#[derive(Clone)]
pub struct EmbeddedStore {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.shared.readers.path)
            .finish_non_exhaustive()
    }
}

struct Shared {
    readers: Arc<Readers>,
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

/// A pool of read-only connections; each read is one transaction, hence one snapshot.
pub(crate) struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    permits: tokio::sync::Semaphore,
}

impl Readers {
    /// Runs `read` in a snapshot on the blocking pool, at most [`READ_CONCURRENCY`] at once.
    pub(crate) async fn run<T, F>(self: &Arc<Self>, read: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T> + Send + 'static,
    {
        let _permit = self.permits.acquire().await.map_err(StoreError::backend)?;
        let readers = self.clone();
        tokio::task::spawn_blocking(move || readers.read(read))
            .await
            .map_err(StoreError::backend)?
    }

    /// Runs `read` in a read transaction on a pooled connection (blocking).
    fn read<T>(&self, read: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        let idle = self.idle.lock().unwrap().pop();
        let mut conn = match idle {
            Some(conn) => conn,
            None => {
                let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
                let conn = Connection::open_with_flags(&self.path, flags)?;
                conn.busy_timeout(Duration::from_secs(10))?;
                // A small page cache per reader: the kernel's page cache already holds the
                // file, and sixteen 2 MiB caches would be most of the server's memory.
                conn.pragma_update(None, "cache_size", READER_CACHE_KIB)?;
                conn
            }
        };
        let result = {
            let txn = conn.transaction()?;
            let result = read(&txn);
            txn.finish()?;
            result
        };
        let mut idle = self.idle.lock().unwrap();
        if idle.len() < READ_CONCURRENCY {
            idle.push(conn);
        }
        result
    }
}

impl EmbeddedStore {
    /// Opens (or creates) the store in `data_dir`; blocks while SQLite recovers after a crash.
    pub fn open(data_dir: impl AsRef<Path>) -> Result<EmbeddedStore> {
        let data_dir = data_dir.as_ref();
        std::fs::create_dir_all(data_dir).map_err(|err| {
            StoreError::backend(format!("creating {}: {err}", data_dir.display()))
        })?;
        let path = data_dir.join(DB_FILE);
        let opening = |err: rusqlite::Error| {
            StoreError::backend(format!("opening {}: {err}", path.display()))
        };
        let conn = Connection::open(&path).map_err(opening)?;
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(opening)?;
        // WAL + synchronous=FULL: a commit returns after the WAL is fsynced, readers never
        // block the writer, and recovery after a crash replays the WAL.
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(opening)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::backend(format!(
                "{}: SQLite refused WAL mode (got {mode})",
                path.display()
            )));
        }
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(opening)?;
        conn.execute_batch(CREATE).map_err(opening)?;
        let revision: i64 = conn
            .query_row("SELECT value FROM meta WHERE name = 'revision'", [], |r| {
                r.get(0)
            })
            .map_err(opening)?;

        let (requests, receiver) = mpsc::channel();
        let (events, _) = broadcast::channel(BROADCAST_CAPACITY);
        let revision = Arc::new(AtomicI64::new(revision));
        let writer = Writer {
            conn,
            requests: receiver,
            events: events.clone(),
            revision: revision.clone(),
        };
        let writer = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer.run())
            .map_err(|err| StoreError::backend(format!("starting the writer thread: {err}")))?;
        let readers = Arc::new(Readers {
            path,
            idle: Mutex::new(Vec::new()),
            permits: tokio::sync::Semaphore::new(READ_CONCURRENCY),
        });
        Ok(EmbeddedStore {
            shared: Arc::new(Shared {
                readers,
                requests: Some(requests),
                events,
                revision,
                writer: Some(writer),
            }),
        })
    }

    /// The database file, for tools (and tests) that inspect raw stored bytes; recent commits
    /// may still be in the `-wal` file beside it.
    pub fn path(&self) -> &Path {
        &self.shared.readers.path
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

    async fn read<T, F>(&self, read: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T> + Send + 'static,
    {
        self.shared.readers.run(read).await
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
        let current = self.shared.revision.load(Ordering::Acquire);
        let from = if from_revision > 0 {
            from_revision
        } else {
            current + 1
        };
        Ok(watch::stream(
            self.shared.readers.clone(),
            live,
            prefix.to_owned(),
            from,
            // Nothing to read from the history: the broadcast has everything from `from` on.
            from > current,
        ))
    }
}

/// The current revision and the compaction revision in a snapshot.
pub(crate) fn revisions(txn: &Transaction<'_>) -> Result<(i64, i64)> {
    Ok(txn
        .prepare_cached(
            "SELECT (SELECT value FROM meta WHERE name = 'revision'),
                    (SELECT value FROM meta WHERE name = 'compact_revision')",
        )?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?)
}

/// The history entry written at `revision`, if not compacted away.
pub(crate) fn entry_at(txn: &Transaction<'_>, revision: i64) -> Result<Option<Entry>> {
    Ok(txn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM history WHERE revision = ?1"
        ))?
        .query_row([revision], Entry::from_row)
        .optional()?)
}

fn get(txn: &Transaction<'_>, key: &str) -> Result<Option<KeyValue>> {
    let entry = txn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM history
             WHERE revision = (SELECT revision FROM latest WHERE key = ?1)"
        ))?
        .query_row([key.as_bytes()], Entry::from_row)
        .optional()?;
    Ok(entry.map(Entry::into_key_value))
}

fn range(
    txn: &Transaction<'_>,
    prefix: &str,
    at_revision: Option<i64>,
    limit: Option<usize>,
    start_after: Option<&str>,
) -> Result<RangeResult> {
    let (current, compacted) = revisions(txn)?;
    let at = match at_revision {
        None | Some(0) => current,
        Some(requested) if requested > current => {
            return Err(StoreError::FutureRevision {
                requested,
                current_revision: current,
            })
        }
        Some(requested) if requested < compacted => {
            return Err(StoreError::Compacted {
                compact_revision: compacted,
            })
        }
        Some(requested) => requested,
    };
    // One more than asked for tells whether there are more.
    let fetch = match limit.filter(|l| *l > 0) {
        Some(limit) => i64::try_from(limit).unwrap_or(i64::MAX - 1) + 1,
        None => -1,
    };
    // Keys sort after the empty blob, so "after nothing" needs no second query.
    let after: &[u8] = start_after.map_or(&[], str::as_bytes);
    let sql = if at == current {
        format!(
            "SELECT {COLUMNS} FROM history WHERE revision IN (
                 SELECT revision FROM latest WHERE key >= ?1 AND key < ?2 AND key > ?3)
             ORDER BY key LIMIT ?5"
        )
    } else {
        // Per key, the newest entry at or below `at` decides whether it existed then.
        format!(
            "SELECT {COLUMNS} FROM history WHERE deleted = 0 AND revision IN (
                 SELECT max(revision) FROM history
                 WHERE key >= ?1 AND key < ?2 AND key > ?3 AND revision <= ?4
                 GROUP BY key)
             ORDER BY key LIMIT ?5"
        )
    };
    let mut statement = txn.prepare_cached(&sql)?;
    let end = prefix_end(prefix);
    let rows = statement.query_map(
        rusqlite::params![prefix.as_bytes(), end, after, at, fetch],
        Entry::from_row,
    )?;
    let mut kvs = rows
        .map(|row| Ok(row?.into_key_value()))
        .collect::<Result<Vec<_>>>()?;
    let more = fetch > 0 && kvs.len() as i64 == fetch;
    if more {
        kvs.pop();
    }
    Ok(RangeResult {
        kvs,
        more,
        revision: at,
    })
}

fn count(txn: &Transaction<'_>, prefix: &str) -> Result<u64> {
    let count: i64 = txn
        .prepare_cached("SELECT count(*) FROM latest WHERE key >= ?1 AND key < ?2")?
        .query_row(
            rusqlite::params![prefix.as_bytes(), prefix_end(prefix)],
            |r| r.get(0),
        )?;
    Ok(count as u64)
}

impl From<rusqlite::Error> for StoreError {
    fn from(err: rusqlite::Error) -> Self {
        StoreError::backend(err)
    }
}
