//! Encoded answers kept per distinct query until the records change, so that a repeated
//! query over UDP is a hash lookup and a copy rather than a parse, a lookup and an encode.
//!
//! The key is the query after its ID, with the question name lower-cased: the flags (RD,
//! CD), the type, the class and the whole additional section (EDNS payload size, DO bit,
//! options) are part of it, so queries that could get different answers never share one.
//! A hit writes the query's ID and its question name, in the case it was asked, over the
//! kept answer; answer records name their owner by a pointer to the question, as a fresh
//! answer to the lower-cased query does.

use std::collections::HashMap;
use std::sync::Arc;

use super::{answer_normalized, SharedRecords};

/// Most answers kept; past that the cache starts over (names nobody asks twice, such as
/// random names under the cluster domain, must not grow it without bound).
const MAX_ENTRIES: usize = 16_384;

/// Where the question name of `query` ends, when `query` is one plain query (QR clear,
/// opcode QUERY, one question) whose name is written out without compression pointers.
pub(super) fn question_end(query: &[u8]) -> Option<usize> {
    let header = query.get(..12)?;
    // QR (0x80) and the opcode (0x78) are zero in a standard query.
    if header[2] & 0xf8 != 0 || header[4..6] != [0, 1] {
        return None;
    }
    let mut at = 12;
    loop {
        let len = usize::from(*query.get(at)?);
        at += 1;
        if len == 0 {
            break;
        }
        if len > 63 {
            return None;
        }
        at += len;
    }
    // The type and the class follow.
    (query.len() >= at + 4).then_some(at)
}

/// Writes the ID and the question name of `query` over `answer`, whose question (at byte
/// 12, up to `name_end`) is the same name in another case.
pub(super) fn echo_question(answer: &mut [u8], query: &[u8], name_end: usize) {
    answer[..2].copy_from_slice(&query[..2]);
    answer[12..name_end].copy_from_slice(&query[12..name_end]);
}

/// Answers by query key, for one generation of the records.
#[derive(Debug, Default)]
pub(super) struct AnswerCache {
    generation: u64,
    entries: HashMap<Box<[u8]>, Box<[u8]>>,
    hits: u64,
}

impl AnswerCache {
    /// Forgets every answer when the records moved past the generation they came from.
    fn expire(&mut self, generation: u64) {
        if generation != self.generation {
            self.entries.clear();
            self.generation = generation;
        }
    }

    fn get(&mut self, key: &[u8]) -> Option<&[u8]> {
        let answer = self.entries.get(key)?;
        self.hits += 1;
        Some(answer)
    }

    /// Keeps `answer`, made from the records of `generation`, unless those were replaced
    /// meanwhile.
    fn insert(&mut self, generation: u64, key: &[u8], answer: &[u8]) {
        if generation != self.generation {
            return;
        }
        if self.entries.len() >= MAX_ENTRIES {
            self.entries.clear();
        }
        self.entries.insert(key.into(), answer.into());
    }

    /// How many answers are kept.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// How many queries were answered from the cache.
    #[cfg(test)]
    pub(super) fn hits(&self) -> u64 {
        self.hits
    }
}

/// The UDP listener's synchronous part: answers what the records answer, through the cache.
#[derive(Debug)]
pub(super) struct UdpResponder {
    records: Arc<SharedRecords>,
    domain: String,
    cache: AnswerCache,
    /// The current query's key, reused so that a hit allocates nothing.
    key: Vec<u8>,
}

impl UdpResponder {
    pub(super) fn new(records: Arc<SharedRecords>, domain: String) -> UdpResponder {
        UdpResponder {
            records,
            domain,
            cache: AnswerCache::default(),
            key: Vec::with_capacity(512),
        }
    }

    #[cfg(test)]
    pub(super) fn cache(&self) -> &AnswerCache {
        &self.cache
    }

    #[cfg(test)]
    pub(super) fn records(&self) -> &SharedRecords {
        &self.records
    }

    /// Writes the answer to `query` into `out`; false when the records alone do not answer
    /// it (forwarded names, CNAMEs to outside names, anything but one plain query).
    pub(super) fn respond(&mut self, query: &[u8], out: &mut Vec<u8>) -> bool {
        let Some(name_end) = question_end(query) else {
            return false;
        };
        self.cache.expire(self.records.generation());
        self.key.clear();
        self.key.extend_from_slice(&query[2..]);
        self.key[10..name_end - 2].make_ascii_lowercase();
        out.clear();
        if let Some(answer) = self.cache.get(&self.key) {
            out.extend_from_slice(answer);
        } else {
            let (generation, records) = self.records.snapshot();
            let mut normalized = Vec::with_capacity(query.len());
            normalized.extend_from_slice(&query[..2]);
            normalized.extend_from_slice(&self.key);
            let Some(answer) =
                answer_normalized(&normalized, name_end, &records, &self.domain, false)
            else {
                return false;
            };
            self.cache.insert(generation, &self.key, &answer);
            out.extend_from_slice(&answer);
        }
        echo_question(out, query, name_end);
        true
    }
}
