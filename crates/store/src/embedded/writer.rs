//! The single writer thread: group commit of queued writes.
//!
//! Every write is a request on a channel. The writer takes the first waiting request, drains
//! whatever else queued up meanwhile (up to [`MAX_BATCH`]), applies them in order in one SQLite
//! transaction, commits it (one fsync of the WAL), and only then answers every request and
//! broadcasts their events. Writers that arrive while an fsync runs form the next batch, so 64
//! concurrent writers share fsyncs instead of queueing for 64 of them, and revisions are
//! assigned in commit order by construction.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use tokio::sync::{broadcast, oneshot};

use super::schema::{Entry, COLUMNS};
use crate::{EventKind, KeyValue, Result, StoreError, WatchEvent};

/// Most writes committed in one transaction; bounds the latency a batch adds to its first writer.
const MAX_BATCH: usize = 1024;

/// A write the API server asked for.
#[derive(Debug)]
pub(crate) enum Op {
    Create {
        key: String,
        value: Vec<u8>,
    },
    Update {
        key: String,
        value: Vec<u8>,
        expected: i64,
    },
    Delete {
        key: String,
        expected: Option<i64>,
    },
}

/// What a successful write produced.
#[derive(Debug)]
pub(crate) struct Applied {
    pub revision: i64,
    /// The value the write replaced (the deleted value for a delete).
    pub prev: Option<KeyValue>,
}

/// A message to the writer thread.
pub(crate) enum Request {
    Write {
        op: Op,
        reply: oneshot::Sender<Result<Applied>>,
    },
    Compact {
        revision: i64,
        reply: oneshot::Sender<Result<()>>,
    },
}

/// Committed events of one transaction, shared by every watcher.
pub(crate) type EventBatch = Arc<[WatchEvent]>;

/// The writer thread's state.
pub(crate) struct Writer {
    pub conn: Connection,
    pub requests: mpsc::Receiver<Request>,
    pub events: broadcast::Sender<EventBatch>,
    pub revision: Arc<AtomicI64>,
}

type Reply = oneshot::Sender<Result<Applied>>;

impl Writer {
    /// Serves requests until every sender is gone.
    pub fn run(mut self) {
        let mut pending_compact = None;
        while let Ok(first) = self.requests.recv() {
            let mut batch: Vec<(Op, Reply)> = Vec::new();
            let mut next = Some(first);
            while let Some(request) = next.take() {
                match request {
                    Request::Write { op, reply } => batch.push((op, reply)),
                    // Compaction runs alone, after the writes queued before it.
                    Request::Compact { revision, reply } => {
                        pending_compact = Some((revision, reply));
                        break;
                    }
                }
                if batch.len() < MAX_BATCH {
                    next = self.requests.try_recv().ok();
                }
            }
            if !batch.is_empty() {
                self.commit_batch(batch);
            }
            if let Some((revision, reply)) = pending_compact.take() {
                let _ = reply.send(self.compact(revision));
            }
        }
    }

    fn commit_batch(&mut self, batch: Vec<(Op, Reply)>) {
        let (ops, replies): (Vec<Op>, Vec<Reply>) = batch.into_iter().unzip();
        match self.apply(ops) {
            Ok((outcomes, events, revision)) => {
                self.revision.store(revision, Ordering::Release);
                if !events.is_empty() {
                    // No receivers just means nobody watches.
                    let _ = self.events.send(events.into());
                }
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(outcome);
                }
            }
            Err(err) => {
                tracing::error!(error = %err, "embedded store: write transaction failed");
                let message = err.to_string();
                for reply in replies {
                    let _ = reply.send(Err(StoreError::backend(message.clone())));
                }
            }
        }
    }

    /// Applies `ops` in one transaction; per-op outcomes, their events, the new revision.
    ///
    /// A precondition failure fails only its op (it wrote nothing); an SQLite error rolls
    /// back and fails the whole batch.
    #[allow(clippy::type_complexity)]
    fn apply(&mut self, ops: Vec<Op>) -> Result<(Vec<Result<Applied>>, Vec<WatchEvent>, i64)> {
        let txn = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut outcomes = Vec::with_capacity(ops.len());
        let mut events = Vec::with_capacity(ops.len());
        // This thread is the only writer: the revision it last committed is the stored one.
        let mut rev = self.revision.load(Ordering::Acquire);
        for op in ops {
            match apply_op(&txn, op, rev + 1) {
                Ok(event) => {
                    rev += 1;
                    outcomes.push(Ok(Applied {
                        revision: rev,
                        prev: event.prev_kv.clone(),
                    }));
                    events.push(event);
                }
                Err(err @ StoreError::Backend(_)) => return Err(err),
                Err(err) => outcomes.push(Err(err)),
            }
        }
        if !events.is_empty() {
            txn.prepare_cached("UPDATE meta SET value = ?1 WHERE name = 'revision'")?
                .execute([rev])?;
        }
        txn.commit()?;
        Ok((outcomes, events, rev))
    }

    /// Drops history below `revision`, keeping each key's newest entry at or below it.
    ///
    /// Like etcd, the entry written exactly at `revision` is kept even when it is a deletion,
    /// so watches may still start at the compaction revision itself.
    fn compact(&mut self, revision: i64) -> Result<()> {
        let txn = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let (current, compacted): (i64, i64) = txn.query_row(
            "SELECT (SELECT value FROM meta WHERE name = 'revision'),
                    (SELECT value FROM meta WHERE name = 'compact_revision')",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        if revision > current {
            return Err(StoreError::FutureRevision {
                requested: revision,
                current_revision: current,
            });
        }
        if revision <= compacted {
            return Err(StoreError::Compacted {
                compact_revision: compacted,
            });
        }
        let removed = txn.execute(
            "DELETE FROM history AS h WHERE h.revision <= ?1 AND (
                 (h.deleted = 1 AND h.revision < ?1)
                 OR EXISTS (SELECT 1 FROM history AS newer
                            WHERE newer.key = h.key
                              AND newer.revision > h.revision AND newer.revision <= ?1))",
            [revision],
        )?;
        txn.execute(
            "UPDATE meta SET value = ?1 WHERE name = 'compact_revision'",
            [revision],
        )?;
        txn.commit()?;
        tracing::debug!(revision, removed, "embedded store compacted");
        Ok(())
    }
}

/// Applies one op as revision `rev` and returns its event.
fn apply_op(txn: &Connection, op: Op, rev: i64) -> Result<WatchEvent> {
    let (entry, prev) = match op {
        Op::Create { key, value } => {
            let exists = txn
                .prepare_cached("SELECT 1 FROM latest WHERE key = ?1")?
                .exists([key.as_bytes()])?;
            if exists {
                return Err(StoreError::AlreadyExists { key });
            }
            let entry = Entry {
                revision: rev,
                key,
                kind: EventKind::Put,
                value,
                create_revision: rev,
                version: 1,
                prev_revision: 0,
            };
            (entry, None)
        }
        Op::Update {
            key,
            value,
            expected,
        } => {
            let prev = current(txn, &key, Some(expected))?;
            let entry = Entry {
                revision: rev,
                key,
                kind: EventKind::Put,
                value,
                create_revision: prev.create_revision,
                version: prev.version + 1,
                prev_revision: prev.mod_revision,
            };
            (entry, Some(prev))
        }
        Op::Delete { key, expected } => {
            let prev = current(txn, &key, expected)?;
            let entry = Entry {
                revision: rev,
                key,
                kind: EventKind::Delete,
                value: Vec::new(),
                create_revision: 0,
                version: 0,
                prev_revision: prev.mod_revision,
            };
            (entry, Some(prev))
        }
    };
    let key = entry.key.as_bytes();
    let deleted = entry.kind == EventKind::Delete;
    txn.prepare_cached(
        "INSERT INTO history (revision, key, deleted, value, create_revision, version, prev_revision)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        rev,
        key,
        deleted,
        entry.value,
        entry.create_revision,
        entry.version,
        entry.prev_revision
    ])?;
    if deleted {
        txn.prepare_cached("DELETE FROM latest WHERE key = ?1")?
            .execute([key])?;
    } else {
        txn.prepare_cached("INSERT OR REPLACE INTO latest (key, revision) VALUES (?1, ?2)")?
            .execute(params![key, rev])?;
    }
    Ok(entry.into_event(prev))
}

/// The live value of `key`, checked against the caller's expected mod revision.
fn current(txn: &Connection, key: &str, expected: Option<i64>) -> Result<KeyValue> {
    let entry = txn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM history
             WHERE revision = (SELECT revision FROM latest WHERE key = ?1)"
        ))?
        .query_row([key.as_bytes()], Entry::from_row)
        .optional()?;
    let Some(entry) = entry else {
        return Err(StoreError::NotFound { key: key.into() });
    };
    if let Some(expected) = expected {
        if expected != entry.revision {
            return Err(StoreError::Conflict {
                key: key.into(),
                expected,
                current_mod_revision: entry.revision,
            });
        }
    }
    Ok(entry.into_key_value())
}
