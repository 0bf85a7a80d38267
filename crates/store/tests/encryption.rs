//! Encryption at rest: raw stored bytes hold no plaintext, keys rotate, plaintext migrates.

use crate::support;

use std::sync::Arc;

use skiff_store::{EmbeddedStore, EncryptingStore, KeyRing, Store, StoreError};
use support::etcd::{files_under, EtcdServer};
use support::next;

const SECRETS: &str = "/registry/secrets/";
const SECRET_KEY: &str = "/registry/secrets/default/db-password";
const SECRET: &[u8] = b"correct-horse-battery-staple-4711";
const CONFIG_KEY: &str = "/registry/configmaps/default/settings";
const CONFIG: &[u8] = b"plainly-visible-configmap-value-0815";

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

fn files_contain(files: &[std::path::PathBuf], needle: &[u8]) -> bool {
    files
        .iter()
        .any(|file| contains(&std::fs::read(file).unwrap_or_default(), needle))
}

/// Writes the secret (create and update) and the configmap through `store`, checks reads.
async fn write_both<S: Store>(store: &EncryptingStore<S>) {
    let rev = store
        .create(SECRET_KEY, b"first-draft".to_vec())
        .await
        .unwrap();
    store
        .update(SECRET_KEY, SECRET.to_vec(), rev)
        .await
        .unwrap();
    store.create(CONFIG_KEY, CONFIG.to_vec()).await.unwrap();
    assert_eq!(store.get(SECRET_KEY).await.unwrap().unwrap().value, SECRET);
    let listed = store.range(SECRETS, None, None, None).await.unwrap();
    assert_eq!(listed.kvs[0].value, SECRET);
    let raw = store.inner().get(SECRET_KEY).await.unwrap().unwrap().value;
    assert!(raw.starts_with(b"k8s:enc:aesgcm:v1:key1:"));
    assert!(!contains(&raw, SECRET));
    let raw = store.inner().get(CONFIG_KEY).await.unwrap().unwrap().value;
    assert_eq!(raw, CONFIG, "only the selected prefixes are encrypted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_file_holds_no_plaintext_secret() {
    let dir = tempfile::tempdir().unwrap();
    let keys = KeyRing::load_or_create(dir.path().join("encryption-keys")).unwrap();
    let inner = EmbeddedStore::open(dir.path().join("data")).unwrap();
    let store = EncryptingStore::new(inner, keys, [SECRETS.to_string()]);
    write_both(&store).await;
    // The database file and its write-ahead log, while the store is open and after closing.
    let files = files_under(&dir.path().join("data"));
    assert!(files.len() >= 2, "{files:?}");
    assert!(
        files_contain(&files, CONFIG),
        "positive control: plaintext is visible on disk"
    );
    assert!(
        !files_contain(&files, SECRET),
        "the secret is on disk in plaintext"
    );
    assert!(
        !files_contain(&files, b"first-draft"),
        "old revisions are encrypted too"
    );
    drop(store);
    let files = files_under(&dir.path().join("data"));
    assert!(files_contain(&files, CONFIG));
    assert!(!files_contain(&files, SECRET));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_data_holds_no_plaintext_secret() {
    let dir = tempfile::tempdir().unwrap();
    let server = EtcdServer::start();
    let keys = KeyRing::load_or_create(dir.path().join("encryption-keys")).unwrap();
    let store = EncryptingStore::new(server.store().await, keys, [SECRETS.to_string()]);
    write_both(&store).await;
    let files = files_under(&server.data_dir());
    assert!(
        files_contain(&files, CONFIG),
        "positive control: plaintext in etcd's files"
    );
    assert!(
        !files_contain(&files, SECRET),
        "the secret is in etcd's files in plaintext"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_keeps_old_values_readable_and_rewrite_moves_them() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("encryption-keys");
    let inner = Arc::new(EmbeddedStore::open(dir.path().join("data")).unwrap());
    let old_keys = KeyRing::load_or_create(&key_file).unwrap();
    let old = EncryptingStore::new(inner.clone(), old_keys, [SECRETS.to_string()]);
    old.create("/registry/secrets/a/one", b"one".to_vec())
        .await
        .unwrap();

    let rotated = KeyRing::rotate(&key_file).unwrap();
    assert_eq!(rotated.write_key_name(), "key2");
    let new = EncryptingStore::new(inner.clone(), rotated, [SECRETS.to_string()]);
    assert_eq!(
        new.get("/registry/secrets/a/one")
            .await
            .unwrap()
            .unwrap()
            .value,
        b"one"
    );
    new.create("/registry/secrets/a/two", b"two".to_vec())
        .await
        .unwrap();
    let raw = inner
        .get("/registry/secrets/a/two")
        .await
        .unwrap()
        .unwrap()
        .value;
    assert!(raw.starts_with(b"k8s:enc:aesgcm:v1:key2:"));
    let err = old.get("/registry/secrets/a/two").await.unwrap_err();
    assert!(matches!(err, StoreError::Encryption { .. }), "{err}");

    assert_eq!(new.rewrite(SECRETS).await.unwrap(), 1);
    assert_eq!(
        new.rewrite(SECRETS).await.unwrap(),
        0,
        "rewrite is idempotent"
    );
    let raw = inner
        .get("/registry/secrets/a/one")
        .await
        .unwrap()
        .unwrap()
        .value;
    assert!(raw.starts_with(b"k8s:enc:aesgcm:v1:key2:"));

    // After the rewrite the old key can be dropped from the key file.
    let text = std::fs::read_to_string(&key_file).unwrap();
    let without_key1: String = text
        .lines()
        .filter(|l| !l.starts_with("key1:"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&key_file, without_key1).unwrap();
    let only_new = KeyRing::load_or_create(&key_file).unwrap();
    let current = EncryptingStore::new(inner.clone(), only_new, [SECRETS.to_string()]);
    let all = current.range(SECRETS, None, None, None).await.unwrap();
    let values: Vec<_> = all.kvs.iter().map(|kv| kv.value.as_slice()).collect();
    assert_eq!(values, [&b"one"[..], &b"two"[..]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_from_before_encryption_is_read_and_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let inner = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    inner.create(SECRET_KEY, SECRET.to_vec()).await.unwrap();
    let keys = KeyRing::load_or_create(dir.path().join("keys")).unwrap();
    let store = EncryptingStore::new(inner.clone(), keys, [SECRETS.to_string()]);
    assert_eq!(store.get(SECRET_KEY).await.unwrap().unwrap().value, SECRET);
    assert_eq!(store.rewrite(SECRETS).await.unwrap(), 1);
    let raw = inner.get(SECRET_KEY).await.unwrap().unwrap().value;
    assert!(!contains(&raw, SECRET));
    assert_eq!(store.get(SECRET_KEY).await.unwrap().unwrap().value, SECRET);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_and_delete_return_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let keys = KeyRing::load_or_create(dir.path().join("keys")).unwrap();
    let store = EncryptingStore::new(
        EmbeddedStore::open(dir.path()).unwrap(),
        keys,
        [SECRETS.to_string()],
    );
    let mut watch = store.watch(SECRETS, 0).await.unwrap();
    let rev = store.create(SECRET_KEY, b"v1".to_vec()).await.unwrap();
    store.update(SECRET_KEY, b"v2".to_vec(), rev).await.unwrap();
    let (_, deleted) = store.delete(SECRET_KEY, None).await.unwrap();
    assert_eq!(deleted.value, b"v2");
    assert_eq!(next(&mut watch).await.unwrap().kv.value, b"v1");
    let update = next(&mut watch).await.unwrap();
    assert_eq!(
        (
            update.kv.value.as_slice(),
            update.prev_kv.unwrap().value.as_slice()
        ),
        (&b"v2"[..], &b"v1"[..])
    );
    assert_eq!(
        next(&mut watch).await.unwrap().prev_kv.unwrap().value,
        b"v2"
    );
}
