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

use rusqlite::Transaction;
use tokio::sync::broadcast::{self, error::RecvError};

use super::schema::{prefix_end, Entry, COLUMNS};
use super::writer::EventBatch;
use super::{entry_at, revisions, Readers};
use crate::{Result, StoreError, WatchEvent, WatchStream};

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
    readers: Arc<Readers>,
    live: broadcast::Receiver<EventBatch>,
    prefix: String,
    phase: Phase,
    /// The smallest revision not yet delivered; anything below it is a duplicate.
    next: i64,
    /// Where the next history read starts.
    cursor: i64,
    pending: VecDeque<WatchEvent>,
}

/// A stream of the events under `prefix` from revision `from` on; `caught_up` when `from` is
/// after the last commit, so the history has nothing to add.
pub(super) fn stream(
    readers: Arc<Readers>,
    live: broadcast::Receiver<EventBatch>,
    prefix: String,
    from: i64,
    caught_up: bool,
) -> WatchStream {
    let watcher = Watcher {
        readers,
        live,
        prefix,
        phase: if caught_up {
            Phase::Live
        } else {
            Phase::CatchUp
        },
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
                self.next = self.next.max(event.revision() + 1);
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
                                .filter(|e| e.revision() >= next)
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
        let prefix = self.prefix.clone();
        let cursor = self.cursor;
        let chunk = self
            .readers
            .run(move |txn| read_history(txn, &prefix, cursor, CATCH_UP_CHUNK))
            .await?;
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
    /// The revision to continue from.
    next: i64,
    /// Whether the snapshot has no entries after `next`.
    complete: bool,
}

/// Reads up to `max` events under `prefix` from revision `from` on.
fn read_history(
    txn: &Transaction<'_>,
    prefix: &str,
    from: i64,
    max: usize,
) -> Result<HistoryChunk> {
    let (current, compacted) = revisions(txn)?;
    if from < compacted {
        return Err(StoreError::Compacted {
            compact_revision: compacted,
        });
    }
    let mut statement = txn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM history
         WHERE revision >= ?1 AND key >= ?2 AND key < ?3
         ORDER BY revision LIMIT ?4"
    ))?;
    let rows = statement.query_map(
        rusqlite::params![from, prefix.as_bytes(), prefix_end(prefix), max as i64],
        Entry::from_row,
    )?;
    let entries = rows.collect::<rusqlite::Result<Vec<_>>>()?;
    let complete = entries.len() < max;
    let next = match entries.last() {
        Some(last) if !complete => last.revision + 1,
        _ => current + 1,
    };
    let mut events = Vec::with_capacity(entries.len());
    for entry in entries {
        // The previous value survives compaction whenever this event does: it is the newest
        // entry of its key below this one (only the entry at the compaction revision itself
        // may lose it, as in etcd).
        let prev_kv = match entry.prev_revision {
            0 => None,
            prev => entry_at(txn, prev)?.map(Entry::into_key_value),
        };
        events.push(entry.into_event(prev_kv));
    }
    Ok(HistoryChunk {
        events,
        next: next.max(from),
        complete,
    })
}
