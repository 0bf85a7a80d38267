//! The on-disk layout of the embedded store: three SQLite tables.
//!
//! Like etcd's mvcc, the history is keyed by revision and the other tables index it: a past
//! revision is read by finding, per key, the newest history row at or below it. Keys are
//! stored as BLOBs so SQLite compares them bytewise, which is etcd's (and Kubernetes') order.

use rusqlite::Row;

use crate::{EventKind, KeyValue, WatchEvent};

/// Creates the tables; idempotent.
pub(crate) const CREATE: &str = "
CREATE TABLE IF NOT EXISTS history (
    revision        INTEGER PRIMARY KEY,  -- one row per write
    key             BLOB    NOT NULL,
    deleted         INTEGER NOT NULL,     -- 1 for a deletion (tombstone)
    value           BLOB    NOT NULL,
    create_revision INTEGER NOT NULL,
    version         INTEGER NOT NULL,
    prev_revision   INTEGER NOT NULL      -- the key's previous live revision, 0 if none
);
CREATE INDEX IF NOT EXISTS history_by_key ON history (key, revision);
-- Live keys and their mod revision; deleted keys are absent. Serves current reads.
CREATE TABLE IF NOT EXISTS latest (
    key      BLOB PRIMARY KEY,
    revision INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT OR IGNORE INTO meta (name, value) VALUES ('revision', 0), ('compact_revision', 0);
";

/// The columns [`Entry::from_row`] reads, in order.
pub(crate) const COLUMNS: &str =
    "revision, key, deleted, value, create_revision, version, prev_revision";

/// One row of the history table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub revision: i64,
    pub key: String,
    pub kind: EventKind,
    pub value: Vec<u8>,
    pub create_revision: i64,
    pub version: i64,
    pub prev_revision: i64,
}

impl Entry {
    /// Reads a row selected with [`COLUMNS`].
    pub fn from_row(row: &Row<'_>) -> rusqlite::Result<Entry> {
        let key: Vec<u8> = row.get(1)?;
        let key = String::from_utf8(key).map_err(|err| {
            rusqlite::Error::FromSqlConversionFailure(1, rusqlite::types::Type::Blob, err.into())
        })?;
        Ok(Entry {
            revision: row.get(0)?,
            key,
            kind: if row.get::<_, i64>(2)? == 1 {
                EventKind::Delete
            } else {
                EventKind::Put
            },
            value: row.get(3)?,
            create_revision: row.get(4)?,
            version: row.get(5)?,
            prev_revision: row.get(6)?,
        })
    }

    /// The key-value this entry wrote (etcd's tombstone shape for a deletion).
    pub fn into_key_value(self) -> KeyValue {
        KeyValue {
            key: self.key,
            value: self.value,
            create_revision: self.create_revision,
            mod_revision: self.revision,
            version: self.version,
        }
    }

    /// The watch event of this entry, given the previous value.
    pub fn into_event(self, prev_kv: Option<KeyValue>) -> WatchEvent {
        WatchEvent {
            kind: self.kind,
            kv: self.into_key_value(),
            prev_kv,
        }
    }
}

/// The exclusive upper bound of the keys starting with `prefix`.
///
/// Keys are UTF-8, which never contains the byte 0xff, so incrementing the last byte of the
/// prefix cannot overflow and `[0xff]` bounds every key.
pub(crate) fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    match end.last_mut() {
        Some(last) => *last += 1,
        None => end.push(0xff),
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_bounds_the_prefix() {
        assert_eq!(prefix_end("/registry/pods/"), b"/registry/pods0");
        assert_eq!(prefix_end(""), [0xff]);
        let end = prefix_end("/ä");
        assert!("/ä/x".as_bytes() < end.as_slice());
        assert!("/å".as_bytes() >= end.as_slice());
    }
}
