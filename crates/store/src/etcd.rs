//! The etcd v3 backend: the same trait over an external etcd cluster.
//!
//! etcd's revisions are used directly as skiff's revisions (and resourceVersions), so an API
//! server on etcd behaves like kube-apiserver on etcd. Creates, compare-and-swap updates and
//! conditional deletes are single etcd transactions, as in Kubernetes' etcd3 store.

use std::collections::VecDeque;
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions, Txn, TxnOp,
    TxnOpResponse, WatchOptions,
};

use crate::{EventKind, KeyValue, RangeResult, Result, Store, StoreError, WatchEvent, WatchStream};

/// etcd's message for reads and watches below the compaction revision.
const COMPACTED_MESSAGE: &str = "required revision has been compacted";
/// etcd's message for reads at a revision it has not reached.
const FUTURE_MESSAGE: &str = "required revision is a future revision";

/// A [`Store`] backed by an etcd v3 cluster (`--datastore-endpoint`).
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore").finish_non_exhaustive()
    }
}

impl EtcdStore {
    /// Connects to the etcd cluster at `endpoints` (e.g. `http://127.0.0.1:2379`).
    pub async fn connect<E: AsRef<str>>(endpoints: &[E]) -> Result<EtcdStore> {
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(Duration::from_secs(30));
        let client = Client::connect(endpoints, Some(options))
            .await
            .map_err(StoreError::backend)?;
        Ok(EtcdStore { client })
    }

    /// Translates an etcd error; `requested` is the revision the call asked for, if any.
    async fn error(&self, err: etcd_client::Error, requested: i64) -> StoreError {
        let message = match &err {
            etcd_client::Error::GRpcStatus(status) => status.message(),
            _ => return StoreError::backend(err),
        };
        if message.contains(COMPACTED_MESSAGE) {
            return StoreError::Compacted {
                compact_revision: self.compact_revision().await,
            };
        }
        if message.contains(FUTURE_MESSAGE) {
            return StoreError::FutureRevision {
                requested,
                current_revision: self.current_revision().await.unwrap_or(0),
            };
        }
        StoreError::backend(err)
    }

    /// Learns etcd's compaction revision, which only watch responses report: a watch from
    /// revision 1 is cancelled at once with it (0 when nothing is compacted or on failure).
    async fn compact_revision(&self) -> i64 {
        let probe = async {
            let options = WatchOptions::new().with_start_revision(1);
            let mut stream = self.client.clone().watch("\0", Some(options)).await.ok()?;
            while let Ok(Some(response)) = stream.message().await {
                if response.compact_revision() > 0 || response.canceled() {
                    return Some(response.compact_revision());
                }
            }
            None
        };
        tokio::time::timeout(Duration::from_secs(2), probe)
            .await
            .ok()
            .flatten()
            .unwrap_or(0)
    }
}

/// The first key after every key starting with `prefix` (etcd's `range_end` for a prefix).
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // No upper bound: "\0" means "to the end of the keyspace".
    vec![0]
}

/// The first key of `prefix` as etcd accepts it (etcd rejects empty keys).
fn range_start(prefix: &str) -> Vec<u8> {
    if prefix.is_empty() {
        vec![0]
    } else {
        prefix.as_bytes().to_vec()
    }
}

fn key_value(kv: &etcd_client::KeyValue) -> KeyValue {
    KeyValue {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        version: kv.version(),
    }
}

fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> i64 {
    header.map_or(0, |h| h.revision())
}

/// The key's current mod revision from the `or_else` get of a failed transaction.
fn current_from_failed_txn(response: &etcd_client::TxnResponse) -> Option<i64> {
    response
        .op_responses()
        .into_iter()
        .find_map(|op| match op {
            TxnOpResponse::Get(get) => Some(get.kvs().first().map(|kv| kv.mod_revision())),
            _ => None,
        })
        .flatten()
}

/// Fails a conditional write whose transaction did not succeed: NotFound or Conflict.
fn precondition_failed(
    key: &str,
    expected: i64,
    response: &etcd_client::TxnResponse,
) -> StoreError {
    match current_from_failed_txn(response) {
        None => StoreError::NotFound { key: key.into() },
        Some(current_mod_revision) => StoreError::Conflict {
            key: key.into(),
            expected,
            current_mod_revision,
        },
    }
}

#[async_trait::async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let response = match self.client.clone().get(key, None).await {
            Ok(response) => response,
            Err(err) => return Err(self.error(err, 0).await),
        };
        Ok(response.kvs().first().map(key_value))
    }

    async fn range(
        &self,
        prefix: &str,
        at_revision: Option<i64>,
        limit: Option<usize>,
        start_after: Option<&str>,
    ) -> Result<RangeResult> {
        let start = match start_after.filter(|after| *after >= prefix) {
            // The smallest key after `after`.
            Some(after) => [after.as_bytes(), &[0]].concat(),
            None => range_start(prefix),
        };
        let mut options = GetOptions::new().with_range(prefix_end(prefix));
        if let Some(limit) = limit.filter(|l| *l > 0) {
            options = options.with_limit(limit as i64);
        }
        let at_revision = at_revision.filter(|r| *r > 0);
        if let Some(revision) = at_revision {
            options = options.with_revision(revision);
        }
        let response = match self.client.clone().get(start, Some(options)).await {
            Ok(response) => response,
            Err(err) => return Err(self.error(err, at_revision.unwrap_or(0)).await),
        };
        Ok(RangeResult {
            kvs: response.kvs().iter().map(key_value).collect(),
            more: response.more(),
            revision: at_revision.unwrap_or_else(|| header_revision(response.header())),
        })
    }

    async fn count(&self, prefix: &str) -> Result<u64> {
        let options = GetOptions::new()
            .with_range(prefix_end(prefix))
            .with_count_only();
        match self
            .client
            .clone()
            .get(range_start(prefix), Some(options))
            .await
        {
            Ok(response) => Ok(response.count() as u64),
            Err(err) => Err(self.error(err, 0).await),
        }
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<i64> {
        let txn = Txn::new()
            .when([Compare::create_revision(key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, value, None)]);
        let response = match self.client.clone().txn(txn).await {
            Ok(response) => response,
            Err(err) => return Err(self.error(err, 0).await),
        };
        if !response.succeeded() {
            return Err(StoreError::AlreadyExists { key: key.into() });
        }
        Ok(header_revision(response.header()))
    }

    async fn update(&self, key: &str, value: Vec<u8>, expected_mod_revision: i64) -> Result<i64> {
        let txn = Txn::new()
            .when([
                // An absent key has mod revision 0: never let an update create it.
                Compare::create_revision(key, CompareOp::Greater, 0),
                Compare::mod_revision(key, CompareOp::Equal, expected_mod_revision),
            ])
            .and_then([TxnOp::put(key, value, None)])
            .or_else([TxnOp::get(key, None)]);
        let response = match self.client.clone().txn(txn).await {
            Ok(response) => response,
            Err(err) => return Err(self.error(err, 0).await),
        };
        if !response.succeeded() {
            return Err(precondition_failed(key, expected_mod_revision, &response));
        }
        Ok(header_revision(response.header()))
    }

    async fn delete(
        &self,
        key: &str,
        expected_mod_revision: Option<i64>,
    ) -> Result<(i64, KeyValue)> {
        let mut guard = vec![Compare::create_revision(key, CompareOp::Greater, 0)];
        if let Some(expected) = expected_mod_revision {
            guard.push(Compare::mod_revision(key, CompareOp::Equal, expected));
        }
        let txn = Txn::new()
            .when(guard)
            .and_then([TxnOp::delete(
                key,
                Some(DeleteOptions::new().with_prev_key()),
            )])
            .or_else([TxnOp::get(key, None)]);
        let response = match self.client.clone().txn(txn).await {
            Ok(response) => response,
            Err(err) => return Err(self.error(err, 0).await),
        };
        if !response.succeeded() {
            let expected = expected_mod_revision.unwrap_or(0);
            return Err(precondition_failed(key, expected, &response));
        }
        let prev = response.op_responses().into_iter().find_map(|op| match op {
            TxnOpResponse::Delete(delete) => delete.prev_kvs().first().map(key_value),
            _ => None,
        });
        match prev {
            Some(prev) => Ok((header_revision(response.header()), prev)),
            // Deleted by someone else between the compare and the delete cannot happen in one
            // etcd transaction; an empty answer means the key vanished concurrently.
            None => Err(StoreError::NotFound { key: key.into() }),
        }
    }

    async fn current_revision(&self) -> Result<i64> {
        let options = GetOptions::new().with_count_only();
        match self.client.clone().get("\0", Some(options)).await {
            Ok(response) => Ok(header_revision(response.header())),
            Err(err) => Err(StoreError::backend(err)),
        }
    }

    async fn compact(&self, revision: i64) -> Result<()> {
        let options = etcd_client::CompactionOptions::new().with_physical();
        match self.client.clone().compact(revision, Some(options)).await {
            Ok(_) => Ok(()),
            Err(err) => Err(self.error(err, revision).await),
        }
    }

    async fn watch(&self, prefix: &str, from_revision: i64) -> Result<WatchStream> {
        let mut options = WatchOptions::new()
            .with_range(prefix_end(prefix))
            .with_prev_key();
        if from_revision > 0 {
            options = options.with_start_revision(from_revision);
        }
        let stream = self
            .client
            .clone()
            .watch(range_start(prefix), Some(options))
            .await
            .map_err(StoreError::backend)?;
        let state = (stream, VecDeque::new(), false);
        Ok(Box::pin(futures::stream::unfold(
            state,
            |(mut stream, mut pending, mut ended)| async move {
                loop {
                    if let Some(event) = pending.pop_front() {
                        return Some((Ok(event), (stream, pending, ended)));
                    }
                    if ended {
                        return None;
                    }
                    let failure = match stream.message().await {
                        Ok(Some(response)) if response.compact_revision() > 0 => {
                            StoreError::Compacted {
                                compact_revision: response.compact_revision(),
                            }
                        }
                        Ok(Some(response)) if response.canceled() => StoreError::backend(format!(
                            "etcd cancelled the watch: {}",
                            response.cancel_reason()
                        )),
                        Ok(Some(response)) => {
                            pending.extend(response.events().iter().filter_map(watch_event));
                            continue;
                        }
                        Ok(None) => StoreError::backend("etcd closed the watch stream"),
                        Err(err) => StoreError::backend(err),
                    };
                    ended = true;
                    return Some((Err(failure), (stream, pending, ended)));
                }
            },
        )))
    }
}

fn watch_event(event: &etcd_client::Event) -> Option<WatchEvent> {
    let kind = match event.event_type() {
        EventType::Put => EventKind::Put,
        EventType::Delete => EventKind::Delete,
    };
    Some(WatchEvent {
        kind,
        kv: key_value(event.kv()?),
        prev_kv: event.prev_kv().map(key_value),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_the_last_byte() {
        assert_eq!(prefix_end("/registry/pods/"), b"/registry/pods0".to_vec());
        assert_eq!(prefix_end(""), vec![0]);
    }
}
