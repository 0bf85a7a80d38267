//! Watch streams of the embedded store: history catch-up handed over to the live broadcast.
//!
//! A watcher subscribes to the broadcast of committed events *before* reading anything, then
//! reads the persisted history from its start revision up to the end of a snapshot. Every
//! commit missing from that snapshot was broadcast after the subscription, so the hand-over
//! has no gap; events already delivered are recognised by revision and skipped, so it has no
//! duplicates either. A watcher that falls further behind than the broadcast buffer
//! (`Lagged`) goes back to reading the history from its next revision.

use std::collections::VecDeque;
use std::sync::Arc;

use redb::{Database, ReadTransaction, ReadableDatabase};
use tokio::sync::broadcast::{self, error::RecvError};

use super::schema::HISTORY;
use super::writer::EventBatch;
use super::{load, revisions};
use crate::{EventKind, Result, StoreError, WatchEvent, WatchStream};

/// History entries examined per catch-up read, bounding the memory a far-behind watcher uses.
const CATCH_UP_CHUNK: usize = 512;

/// Where a watcher gets its next events from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading the persisted history from `cursor`: at the start, and after lagging.
    CatchUp,
    /// Following the in-memory broadcast of commits.
    Live,
    /// The store closed or an error was delivered; the stream is over.
    Ended,
}

struct Watcher {
    db: Arc<Database>,
    live: broadcast::Receiver<EventBatch>,
    prefix: String,
    phase: Phase,
    /// The smallest revision not yet delivered; anything below it is a duplicate.
    next: u64,
    /// Where the next history read starts.
    cursor: u64,
    pending: VecDeque<WatchEvent>,
}

/// A stream of the events under `prefix` from revision `from` on.
pub(super) fn stream(
    db: Arc<Database>,
    live: broadcast::Receiver<EventBatch>,
    prefix: String,
    from: u64,
) -> WatchStream {
    let watcher = Watcher {
        db,
        live,
        prefix,
        phase: Phase::CatchUp,
        next: from,
        cursor: from,
        pending: VecDeque::new(),
    };
    Box::pin(futures::stream::unfold(watcher, |mut watcher| async move {
        let item = watcher.next_event().await?;
        Some((item, watcher))
    }))
}

impl Watcher {
    async fn next_event(&mut self) -> Option<Result<WatchEvent>> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                self.next = self.next.max(event.revision() as u64 + 1);
                return Some(Ok(event));
            }
            match self.phase {
                Phase::Ended => return None,
                Phase::CatchUp => {
                    if let Err(err) = self.catch_up().await {
                        self.phase = Phase::Ended;
                        return Some(Err(err));
                    }
                }
                Phase::Live => match self.live.recv().await {
                    Ok(batch) => {
                        let next = self.next;
                        let prefix = self.prefix.as_str();
                        self.pending.extend(
                            batch
                                .iter()
                                .filter(|e| e.revision() as u64 >= next)
                                .filter(|e| e.kv.key.starts_with(prefix))
                                .cloned(),
                        );
                    }
                    Err(RecvError::Lagged(_)) => {
                        self.cursor = self.next;
                        self.phase = Phase::CatchUp;
                    }
                    Err(RecvError::Closed) => self.phase = Phase::Ended,
                },
            }
        }
    }

    async fn catch_up(&mut self) -> Result<()> {
        let db = self.db.clone();
        let prefix = self.prefix.clone();
        let cursor = self.cursor;
        let chunk = tokio::task::spawn_blocking(move || {
            read_history(&db.begin_read()?, &prefix, cursor, CATCH_UP_CHUNK)
        })
        .await
        .map_err(StoreError::backend)??;
        self.pending.extend(chunk.events);
        self.cursor = chunk.next;
        if chunk.complete {
            self.next = self.next.max(chunk.next);
            self.phase = Phase::Live;
        }
        Ok(())
    }
}

/// Events read from the history by one catch-up step.
struct HistoryChunk {
    events: Vec<WatchEvent>,
    /// The revision after the last entry examined.
    next: u64,
    /// Whether the snapshot has no entries after `next`.
    complete: bool,
}

/// Reads up to `max` history entries from revision `from`, keeping those under `prefix`.
fn read_history(
    txn: &ReadTransaction,
    prefix: &str,
    from: u64,
    max: usize,
) -> Result<HistoryChunk> {
    let (_, compacted) = revisions(txn)?;
    if from < compacted {
        return Err(StoreError::Compacted {
            compact_revision: compacted as i64,
        });
    }
    let history = txn.open_table(HISTORY)?;
    let mut events = Vec::new();
    let mut next = from;
    let mut entries = history.range(from..)?;
    for entry in entries.by_ref().take(max) {
        let (revision, _) = entry?;
        let revision = revision.value();
        next = revision + 1;
        let record = load(&history, revision)?;
        if !record.key.starts_with(prefix) {
            continue;
        }
        // The previous value survives compaction whenever this event does: it is the newest
        // entry of its key below this one (only the entry at the compaction revision itself
        // may lose it, as in etcd).
        let prev_kv = match record.prev_revision {
            0 => None,
            prev => match history.get(prev)? {
                Some(bytes) => Some(super::Record::decode(bytes.value())?.into_key_value(prev)),
                None => None,
            },
        };
        let kind = record.kind;
        events.push(WatchEvent {
            kind,
            kv: record.into_key_value(revision),
            prev_kv,
        });
    }
    let complete = entries.next().is_none();
    debug_assert!(events.iter().all(|e| e.kind != EventKind::Delete || e.kv.value.is_empty()));
    Ok(HistoryChunk {
        events,
        next,
        complete,
    })
}
