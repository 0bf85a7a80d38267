//! Behaviour specific to the embedded backend: history across restarts, watchers that fall
//! behind the in-memory broadcast, and fan-out to many watchers.

use crate::support;

use std::time::{Duration, Instant};

use futures::StreamExt;
use skiff_store::{EmbeddedStore, EventKind, Store, StoreError};
use support::next;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_and_compaction_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (first, second, compacted, last);
    {
        let store = EmbeddedStore::open(dir.path()).unwrap();
        first = store.create("/a", b"1".to_vec()).await.unwrap();
        second = store.update("/a", b"2".to_vec(), first).await.unwrap();
        compacted = store.create("/b", b"1".to_vec()).await.unwrap();
        store.compact(first + 1).await.unwrap();
        last = store.delete("/b", None).await.unwrap().0;
    }
    let store = EmbeddedStore::open(dir.path()).unwrap();
    assert_eq!(store.current_revision().await.unwrap(), last);
    let then = store.range("/", Some(compacted), None, None).await.unwrap();
    assert_eq!(then.kvs.len(), 2);
    assert_eq!(
        store.range("/", None, None, None).await.unwrap().kvs.len(),
        1
    );
    let err = store.range("/", Some(first), None, None).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Compacted { compact_revision } if compact_revision == second)
    );

    let mut watch = store.watch("/", second).await.unwrap();
    assert_eq!(next(&mut watch).await.unwrap().revision(), second);
    assert_eq!(next(&mut watch).await.unwrap().revision(), compacted);
    let event = next(&mut watch).await.unwrap();
    assert_eq!((event.kind, event.revision()), (EventKind::Delete, last));
    assert_eq!(event.prev_kv.unwrap().value, b"1");
    let new = store.create("/c", b"1".to_vec()).await.unwrap();
    assert_eq!(new, last + 1, "revisions continue after a restart");
    assert_eq!(next(&mut watch).await.unwrap().revision(), new);
}

/// A watcher that does not read while more commits happen than the broadcast buffers gets
/// `Lagged` internally and must fall back to the history without losing an event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_watcher_catches_up_from_history() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let mut slow = store.watch("/lag/", 0).await.unwrap();
    // Receive one event first, so the watcher has finished its catch-up and follows the
    // broadcast when it falls behind.
    let start = store.create("/lag/first", vec![]).await.unwrap();
    assert_eq!(next(&mut slow).await.unwrap().revision(), start);
    // One at a time, so every write is its own commit and its own broadcast message.
    let writes = 1100;
    for i in 0..writes {
        store
            .create(&format!("/lag/{i:05}"), vec![0; 16])
            .await
            .unwrap();
    }
    for expected in start + 1..=start + writes {
        let event = next(&mut slow).await.unwrap();
        assert_eq!(event.revision(), expected);
    }
    let live = store.create("/lag/live", vec![]).await.unwrap();
    assert_eq!(next(&mut slow).await.unwrap().revision(), live);
}

/// 1,000 watchers all receive every event in order; prints the delivery latency.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_to_a_thousand_watchers() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    const WATCHERS: usize = 1000;
    const EVENTS: i64 = 20;
    let start = store.current_revision().await.unwrap();
    let mut watchers = Vec::new();
    for _ in 0..WATCHERS {
        let mut watch = store.watch("/fan/", 0).await.unwrap();
        watchers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            for expected in start + 1..=start + EVENTS {
                let event = watch.next().await.unwrap().unwrap();
                assert_eq!(event.revision(), expected);
                let sent: u128 = String::from_utf8(event.kv.value).unwrap().parse().unwrap();
                latencies.push(now_micros() - sent);
            }
            latencies
        }));
    }
    for i in 0..EVENTS {
        let value = now_micros().to_string().into_bytes();
        store.create(&format!("/fan/{i}"), value).await.unwrap();
    }
    let mut latencies = Vec::new();
    for watcher in watchers {
        let watcher = tokio::time::timeout(Duration::from_secs(30), watcher);
        latencies.extend(watcher.await.unwrap().unwrap());
    }
    latencies.sort_unstable();
    let p99 = latencies[latencies.len() * 99 / 100];
    println!(
        "{WATCHERS} watchers x {EVENTS} events: p50 {} us, p99 {p99} us (from before the fsync)",
        latencies[latencies.len() / 2]
    );
}

fn now_micros() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_ends_when_the_store_closes() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let mut watch = store.watch("/", 0).await.unwrap();
    drop(store);
    let end = tokio::time::timeout(Duration::from_secs(5), watch.next()).await;
    assert!(matches!(end, Ok(None)), "{end:?}");
    let started = Instant::now();
    drop(watch);
    // The file is free again once the last watch is gone.
    EmbeddedStore::open(dir.path()).unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// 1,000 watchers starting in the past all replay the history (reads are pooled).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_watchers_catch_up_from_history() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let start = store.current_revision().await.unwrap();
    for i in 0..20 {
        store.create(&format!("/old/{i}"), vec![]).await.unwrap();
    }
    let mut watchers = Vec::new();
    for _ in 0..1000 {
        let mut watch = store.watch("/old/", start + 1).await.unwrap();
        watchers.push(tokio::spawn(async move {
            for expected in start + 1..=start + 21 {
                assert_eq!(next(&mut watch).await.unwrap().revision(), expected);
            }
        }));
    }
    store.create("/old/live", vec![]).await.unwrap();
    for watcher in watchers {
        watcher.await.unwrap();
    }
}
