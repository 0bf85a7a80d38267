//! The store conformance suite: etcd v3 semantics every backend must have.
//!
//! Each case takes a fresh, empty store. Revisions are only compared relative to each other:
//! etcd starts at revision 1, the embedded store at 0.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use skiff_store::{EventKind, Store, StoreError};

use super::{assert_quiet, next};

/// Create, get and the AlreadyExists error.
pub async fn create_and_get(store: Arc<dyn Store>) {
    assert_eq!(store.get("/registry/pods/default/web").await.unwrap(), None);
    let before = store.current_revision().await.unwrap();
    let rev = store
        .create("/registry/pods/default/web", b"v1".to_vec())
        .await
        .unwrap();
    assert_eq!(rev, before + 1, "a write bumps the revision by one");
    assert_eq!(store.current_revision().await.unwrap(), rev);
    let kv = store
        .get("/registry/pods/default/web")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(kv.key, "/registry/pods/default/web");
    assert_eq!(kv.value, b"v1");
    assert_eq!(
        (kv.create_revision, kv.mod_revision, kv.version),
        (rev, rev, 1)
    );

    let err = store
        .create("/registry/pods/default/web", b"v2".to_vec())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::AlreadyExists { .. }), "{err}");
    assert_eq!(
        store.current_revision().await.unwrap(),
        rev,
        "a failed write does not bump the revision"
    );
    let kv = store
        .get("/registry/pods/default/web")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(kv.value, b"v1", "a failed create leaves the value alone");
}

/// Compare-and-swap updates: success, Conflict with the current revision, NotFound.
pub async fn update_compare_and_swap(store: Arc<dyn Store>) {
    let created = store.create("/k", b"v1".to_vec()).await.unwrap();
    let updated = store.update("/k", b"v2".to_vec(), created).await.unwrap();
    assert_eq!(updated, created + 1);
    let kv = store.get("/k").await.unwrap().unwrap();
    assert_eq!(kv.value, b"v2");
    assert_eq!(
        (kv.create_revision, kv.mod_revision, kv.version),
        (created, updated, 2)
    );

    let err = store
        .update("/k", b"stale".to_vec(), created)
        .await
        .unwrap_err();
    match err {
        StoreError::Conflict {
            current_mod_revision,
            expected,
            ..
        } => {
            assert_eq!(current_mod_revision, updated);
            assert_eq!(expected, created);
        }
        other => panic!("expected Conflict, got {other}"),
    }
    assert_eq!(store.get("/k").await.unwrap().unwrap().value, b"v2");

    for expected in [0, updated] {
        let err = store
            .update("/missing", b"x".to_vec(), expected)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
    }
    assert_eq!(
        store.get("/missing").await.unwrap(),
        None,
        "update never creates"
    );
    assert_eq!(store.current_revision().await.unwrap(), updated);
}

/// Of many concurrent updates with the same expected revision exactly one wins.
pub async fn concurrent_updates_conflict(store: Arc<dyn Store>) {
    let created = store.create("/counter", b"0".to_vec()).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..16 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .update("/counter", format!("{i}").into_bytes(), created)
                .await
        }));
    }
    let mut won = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => won += 1,
            Err(StoreError::Conflict { .. }) => {}
            Err(err) => panic!("unexpected error: {err}"),
        }
    }
    assert_eq!(won, 1);
    assert_eq!(store.get("/counter").await.unwrap().unwrap().version, 2);
}

/// Deletes: conditional, unconditional, NotFound, recreate as a new incarnation.
pub async fn delete(store: Arc<dyn Store>) {
    let created = store.create("/d", b"v1".to_vec()).await.unwrap();
    let err = store.delete("/d", Some(created + 100)).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict { current_mod_revision, .. } if current_mod_revision == created),
        "{err}"
    );
    let (rev, prev) = store.delete("/d", Some(created)).await.unwrap();
    assert_eq!(rev, created + 1);
    assert_eq!(prev.value, b"v1");
    assert_eq!(prev.mod_revision, created);
    assert_eq!(store.get("/d").await.unwrap(), None);
    assert_eq!(store.current_revision().await.unwrap(), rev);

    let err = store.delete("/d", None).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
    let err = store.delete("/d", Some(rev)).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
    assert_eq!(store.current_revision().await.unwrap(), rev);

    let recreated = store.create("/d", b"v2".to_vec()).await.unwrap();
    let kv = store.get("/d").await.unwrap().unwrap();
    assert_eq!((kv.create_revision, kv.version), (recreated, 1));
    let (_, prev) = store.delete("/d", None).await.unwrap();
    assert_eq!(prev.value, b"v2");
}

/// Range with limit and start_after pages through a prefix; count; other prefixes excluded.
pub async fn range_pages(store: Arc<dyn Store>) {
    for i in (0..10).rev() {
        let key = format!("/registry/pods/ns/pod-{i}");
        store
            .create(&key, format!("{i}").into_bytes())
            .await
            .unwrap();
    }
    store.create("/registry/pods", b"x".to_vec()).await.unwrap();
    store
        .create("/registry/podsecurity/x", b"x".to_vec())
        .await
        .unwrap();
    store
        .create("/registry/services/ns/a", b"x".to_vec())
        .await
        .unwrap();
    let current = store.current_revision().await.unwrap();

    let all = store
        .range("/registry/pods/", None, None, None)
        .await
        .unwrap();
    assert_eq!(all.kvs.len(), 10);
    assert!(!all.more);
    assert_eq!(all.revision, current);
    let keys: Vec<_> = all.kvs.iter().map(|kv| kv.key.clone()).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted, "byte order");
    assert_eq!(store.count("/registry/pods/").await.unwrap(), 10);
    assert_eq!(store.count("/registry/").await.unwrap(), 13);
    assert_eq!(store.count("").await.unwrap(), 13);
    assert_eq!(
        store.range("", None, None, None).await.unwrap().kvs.len(),
        13
    );

    let mut paged = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store
            .range("/registry/pods/", Some(current), Some(3), after.as_deref())
            .await
            .unwrap();
        assert!(page.kvs.len() <= 3);
        assert_eq!(page.revision, current);
        paged.extend(page.kvs.iter().map(|kv| kv.key.clone()));
        if !page.more {
            break;
        }
        after = Some(page.kvs.last().unwrap().key.clone());
    }
    assert_eq!(paged, keys);

    let exact = store
        .range("/registry/pods/", None, Some(10), None)
        .await
        .unwrap();
    assert_eq!((exact.kvs.len(), exact.more), (10, false));
    let page = store
        .range("/registry/pods/", None, Some(9), None)
        .await
        .unwrap();
    assert_eq!((page.kvs.len(), page.more), (9, true));
}

/// Reads at a past revision see the keys as they were; future revisions are refused.
pub async fn range_at_past_revision(store: Arc<dyn Store>) {
    let a = store.create("/r/a", b"a1".to_vec()).await.unwrap();
    store.create("/r/b", b"b1".to_vec()).await.unwrap();
    let then = store.current_revision().await.unwrap();
    store.update("/r/a", b"a2".to_vec(), a).await.unwrap();
    store.delete("/r/b", None).await.unwrap();
    store.create("/r/c", b"c1".to_vec()).await.unwrap();
    let now = store.current_revision().await.unwrap();

    let old = store.range("/r/", Some(then), None, None).await.unwrap();
    let old: Vec<_> = old
        .kvs
        .iter()
        .map(|kv| (kv.key.as_str(), kv.value.as_slice()))
        .collect();
    assert_eq!(old, [("/r/a", &b"a1"[..]), ("/r/b", &b"b1"[..])]);
    let new = store.range("/r/", None, None, None).await.unwrap();
    let new: Vec<_> = new
        .kvs
        .iter()
        .map(|kv| (kv.key.as_str(), kv.value.as_slice()))
        .collect();
    assert_eq!(new, [("/r/a", &b"a2"[..]), ("/r/c", &b"c1"[..])]);

    let page = store.range("/r/", Some(then), Some(1), None).await.unwrap();
    assert_eq!(
        (page.kvs[0].key.as_str(), page.more, page.revision),
        ("/r/a", true, then)
    );
    let page = store
        .range("/r/", Some(then), Some(1), Some("/r/a"))
        .await
        .unwrap();
    assert_eq!((page.kvs[0].key.as_str(), page.more), ("/r/b", false));
    let first = store.range("/r/", Some(a), None, None).await.unwrap();
    assert_eq!(first.kvs.len(), 1);
    assert_eq!(first.kvs[0].mod_revision, a);

    let err = store
        .range("/r/", Some(now + 10), None, None)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::FutureRevision { .. }), "{err}");
}

/// Watch delivers puts and deletes under its prefix in order, with previous values.
pub async fn watch_delivers_ordered_events(store: Arc<dyn Store>) {
    let mut watch = store.watch("/w/", 0).await.unwrap();
    let other = store.watch("/elsewhere/", 0).await.unwrap();
    drop(other);
    let created = store.create("/w/a", b"1".to_vec()).await.unwrap();
    store.create("/x/ignored", b"1".to_vec()).await.unwrap();
    let updated = store.update("/w/a", b"2".to_vec(), created).await.unwrap();
    let (deleted, _) = store.delete("/w/a", None).await.unwrap();

    let event = next(&mut watch).await.unwrap();
    assert_eq!(event.kind, EventKind::Put);
    assert_eq!(
        (event.kv.key.as_str(), event.kv.value.as_slice()),
        ("/w/a", &b"1"[..])
    );
    assert_eq!((event.kv.mod_revision, event.kv.version), (created, 1));
    assert_eq!(event.prev_kv, None);

    let event = next(&mut watch).await.unwrap();
    assert_eq!((event.kind, event.revision()), (EventKind::Put, updated));
    assert_eq!(event.kv.create_revision, created);
    assert_eq!(event.prev_kv.unwrap().value, b"1");

    let event = next(&mut watch).await.unwrap();
    assert_eq!((event.kind, event.revision()), (EventKind::Delete, deleted));
    assert_eq!(event.kv.key, "/w/a");
    let prev = event.prev_kv.unwrap();
    assert_eq!(
        (prev.value.as_slice(), prev.mod_revision),
        (&b"2"[..], updated)
    );
    assert_quiet(&mut watch, Duration::from_millis(300)).await;
}

/// A watch from a past revision replays history, then continues live without gap or duplicate.
pub async fn watch_resumes_from_revision(store: Arc<dyn Store>) {
    let mut revisions = Vec::new();
    for i in 0..5 {
        revisions.push(store.create(&format!("/w/{i}"), vec![i]).await.unwrap());
    }
    let mut watch = store.watch("/w/", revisions[2]).await.unwrap();
    for expected in &revisions[2..] {
        assert_eq!(next(&mut watch).await.unwrap().revision(), *expected);
    }
    let live = store.create("/w/live", b"x".to_vec()).await.unwrap();
    let event = next(&mut watch).await.unwrap();
    assert_eq!((event.revision(), event.kv.key.as_str()), (live, "/w/live"));
    assert_quiet(&mut watch, Duration::from_millis(300)).await;

    // Resuming after the last event seen: from its revision + 1.
    let mut resumed = store.watch("/w/", revisions[3] + 1).await.unwrap();
    assert_eq!(next(&mut resumed).await.unwrap().revision(), revisions[4]);
    assert_eq!(next(&mut resumed).await.unwrap().revision(), live);
    let (deleted, _) = store.delete("/w/0", None).await.unwrap();
    let event = next(&mut resumed).await.unwrap();
    assert_eq!((event.kind, event.revision()), (EventKind::Delete, deleted));
    assert_eq!(event.prev_kv.unwrap().value, vec![0]);
}

/// Compaction: reads and watches below the compaction revision fail with Compacted, latest
/// values survive, watches from the compaction revision on still work.
pub async fn compaction(store: Arc<dyn Store>) {
    let first = store.create("/c/a", b"a1".to_vec()).await.unwrap();
    let second = store.update("/c/a", b"a2".to_vec(), first).await.unwrap();
    store.create("/c/b", b"b1".to_vec()).await.unwrap();
    store.delete("/c/b", None).await.unwrap();
    let keep = store.create("/c/c", b"c1".to_vec()).await.unwrap();
    let after = store.update("/c/c", b"c2".to_vec(), keep).await.unwrap();

    store.compact(keep).await.unwrap();

    let mut watch = store.watch("/c/", second).await.unwrap();
    match next(&mut watch).await {
        Err(StoreError::Compacted { compact_revision }) => assert_eq!(compact_revision, keep),
        other => panic!("expected Compacted, got {other:?}"),
    }
    let err = store
        .range("/c/", Some(second), None, None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Compacted { compact_revision } if compact_revision == keep),
        "{err}"
    );
    let err = store.compact(keep).await.unwrap_err();
    assert!(matches!(err, StoreError::Compacted { .. }), "{err}");
    let err = store.compact(after + 100).await.unwrap_err();
    assert!(matches!(err, StoreError::FutureRevision { .. }), "{err}");

    let at_compaction = store.range("/c/", Some(keep), None, None).await.unwrap();
    let values: Vec<_> = at_compaction
        .kvs
        .iter()
        .map(|kv| kv.value.clone())
        .collect();
    assert_eq!(values, [b"a2".to_vec(), b"c1".to_vec()]);
    let now = store.range("/c/", None, None, None).await.unwrap();
    let values: Vec<_> = now.kvs.iter().map(|kv| kv.value.clone()).collect();
    assert_eq!(values, [b"a2".to_vec(), b"c2".to_vec()]);

    let mut watch = store.watch("/c/", keep + 1).await.unwrap();
    let event = next(&mut watch).await.unwrap();
    assert_eq!(event.revision(), after);
    assert_eq!(
        event.prev_kv.unwrap().value,
        b"c1",
        "prev value survives compaction"
    );
    let mut watch = store.watch("/c/", keep).await.unwrap();
    assert_eq!(next(&mut watch).await.unwrap().revision(), keep);
    assert_eq!(next(&mut watch).await.unwrap().revision(), after);
}

/// Concurrent writers get distinct, increasing revisions, and a watch sees every one in order.
pub async fn concurrent_writers(store: Arc<dyn Store>) {
    const WRITERS: usize = 64;
    const WRITES: usize = 10;
    let start = store.current_revision().await.unwrap();
    let mut watch = store.watch("/cw/", start + 1).await.unwrap();
    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut revisions = Vec::new();
            for i in 0..WRITES {
                let key = format!("/cw/{writer:02}/{i:02}");
                revisions.push((key.clone(), store.create(&key, vec![1]).await.unwrap()));
            }
            revisions
        }));
    }
    let mut all = HashSet::new();
    for task in tasks {
        let revisions = task.await.unwrap();
        assert!(
            revisions.windows(2).all(|w| w[0].1 < w[1].1),
            "one writer's revisions increase"
        );
        for (key, rev) in revisions {
            assert!(all.insert(rev), "revision {rev} handed out twice");
            assert_eq!(store.get(&key).await.unwrap().unwrap().mod_revision, rev);
        }
    }
    let total = (WRITERS * WRITES) as i64;
    assert_eq!(all.len() as i64, total);
    assert_eq!(store.current_revision().await.unwrap(), start + total);
    for expected in start + 1..=start + total {
        let event = next(&mut watch).await.unwrap();
        assert_eq!(event.revision(), expected, "watch is gap-free and ordered");
        assert!(all.contains(&expected));
    }
}
