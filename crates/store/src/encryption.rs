//! Encryption at rest for selected key prefixes (Kubernetes Secrets).
//!
//! Follows kube-apiserver's `aesgcm` provider: a stored value is
//! `k8s:enc:aesgcm:v1:<key name>:<12-byte nonce><ciphertext and tag>`, sealed with AES-256-GCM
//! and authenticated together with its storage key, so a ciphertext moved to another key does
//! not decrypt. The key name in the prefix lets several keys be readable while one writes,
//! which is how keys rotate; values stored before encryption was enabled (no prefix) are still
//! read as plaintext, and [`EncryptingStore::rewrite`] migrates them.
//!
//! Nonces are random, so one key must not seal more than about 2^32 values (NIST SP 800-38D);
//! rotate long before that.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use aes_gcm::aead::{Aead, Generate, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use futures::StreamExt;

use crate::{KeyValue, RangeResult, Result, Store, StoreError, WatchEvent, WatchStream};

/// The prefix of every value this module encrypted; the key name and a colon follow it.
pub const ENCRYPTED_VALUE_PREFIX: &str = "k8s:enc:aesgcm:v1:";

const NONCE_LEN: usize = 12;

/// The encryption keys: every key can decrypt, the first one encrypts.
///
/// Stored as a key file, one `<name>:<base64 of 32 bytes>` line per key, newest (writing) key
/// first, mode 0600, like the `keys` list of a Kubernetes EncryptionConfiguration.
#[derive(Clone)]
pub struct KeyRing {
    keys: Vec<(String, Aes256Gcm)>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.keys.iter().map(|(name, _)| name.as_str()).collect();
        f.debug_struct("KeyRing").field("keys", &names).finish()
    }
}

impl KeyRing {
    /// A key ring from `(name, 32-byte key)` pairs; the first pair encrypts.
    pub fn new(keys: Vec<(String, [u8; 32])>) -> Result<KeyRing> {
        if keys.is_empty() {
            return Err(key_file_error("the key ring has no keys"));
        }
        let mut ring = Vec::with_capacity(keys.len());
        for (name, key) in keys {
            if name.is_empty() || name.contains(':') || name.contains(char::is_whitespace) {
                return Err(key_file_error(format!(
                    "invalid key name {name:?}: use letters, digits, '-' or '_'"
                )));
            }
            let cipher = Aes256Gcm::new(&Key::<Aes256Gcm>::from(key));
            ring.push((name, cipher));
        }
        Ok(KeyRing { keys: ring })
    }

    /// Reads the key file at `path`, creating it with one fresh key when it does not exist.
    pub fn load_or_create(path: impl AsRef<Path>) -> Result<KeyRing> {
        let path = path.as_ref();
        match std::fs::read_to_string(path) {
            Ok(text) => KeyRing::new(parse_key_file(path, &text)?),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                let keys = vec![("key1".to_owned(), random_key())];
                write_key_file(path, &keys)?;
                KeyRing::new(keys)
            }
            Err(err) => Err(key_file_error(format!("reading {}: {err}", path.display()))),
        }
    }

    /// Adds a fresh key in front of the key file at `path` (it encrypts from now on; the old
    /// keys stay readable) and returns the new ring.
    pub fn rotate(path: impl AsRef<Path>) -> Result<KeyRing> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|err| key_file_error(format!("reading {}: {err}", path.display())))?;
        let mut keys = parse_key_file(path, &text)?;
        let number = keys
            .iter()
            .filter_map(|(name, _)| name.strip_prefix("key")?.parse::<u64>().ok())
            .max()
            .unwrap_or(0)
            + 1;
        keys.insert(0, (format!("key{number}"), random_key()));
        write_key_file(path, &keys)?;
        KeyRing::new(keys)
    }

    /// The name of the key that encrypts new values.
    pub fn write_key_name(&self) -> &str {
        &self.keys[0].0
    }

    /// Seals `plaintext` stored under `storage_key` with the writing key.
    pub fn encrypt(&self, storage_key: &str, plaintext: &[u8]) -> Result<Vec<u8>> {
        let (name, cipher) = &self.keys[0];
        let nonce = Nonce::generate();
        let payload = Payload {
            msg: plaintext,
            aad: storage_key.as_bytes(),
        };
        let sealed = cipher
            .encrypt(&nonce, payload)
            .map_err(|_| StoreError::Encryption {
                key: storage_key.into(),
                reason: "AES-GCM sealing failed".into(),
            })?;
        let mut out = Vec::with_capacity(ENCRYPTED_VALUE_PREFIX.len() + name.len() + 1 + 12);
        out.extend_from_slice(ENCRYPTED_VALUE_PREFIX.as_bytes());
        out.extend_from_slice(name.as_bytes());
        out.push(b':');
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Opens a value stored under `storage_key`; values without the prefix are plaintext.
    pub fn decrypt(&self, storage_key: &str, stored: Vec<u8>) -> Result<Vec<u8>> {
        let Some(rest) = stored.strip_prefix(ENCRYPTED_VALUE_PREFIX.as_bytes()) else {
            return Ok(stored);
        };
        let failed = |reason: String| StoreError::Encryption {
            key: storage_key.into(),
            reason,
        };
        let colon = rest
            .iter()
            .position(|b| *b == b':')
            .ok_or_else(|| failed("no key name after the encryption prefix".into()))?;
        let name = String::from_utf8_lossy(&rest[..colon]);
        let (_, cipher) = self
            .keys
            .iter()
            .find(|(known, _)| *known == name)
            .ok_or_else(|| {
                failed(format!(
                    "encrypted with key {name:?}, which is not in the key file"
                ))
            })?;
        let sealed = &rest[colon + 1..];
        if sealed.len() < NONCE_LEN {
            return Err(failed("truncated ciphertext".into()));
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_from(nonce).map_err(|_| failed("bad nonce".into()))?;
        let payload = Payload {
            msg: ciphertext,
            aad: storage_key.as_bytes(),
        };
        cipher
            .decrypt(&nonce, payload)
            .map_err(|_| failed(format!("authentication with key {name:?} failed")))
    }

    /// Whether `stored` was sealed with the writing key (so a rewrite would not change it).
    fn is_current(&self, stored: &[u8]) -> bool {
        stored
            .strip_prefix(ENCRYPTED_VALUE_PREFIX.as_bytes())
            .and_then(|rest| rest.strip_prefix(self.write_key_name().as_bytes()))
            .is_some_and(|rest| rest.first() == Some(&b':'))
    }
}

fn key_file_error(reason: impl Into<String>) -> StoreError {
    StoreError::Encryption {
        key: "(key file)".into(),
        reason: reason.into(),
    }
}

fn random_key() -> [u8; 32] {
    Key::<Aes256Gcm>::generate().into()
}

fn parse_key_file(path: &Path, text: &str) -> Result<Vec<(String, [u8; 32])>> {
    let mut keys = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |what: &str| {
            key_file_error(format!(
                "{}:{}: {what}; expected <name>:<base64 of 32 bytes>",
                path.display(),
                number + 1
            ))
        };
        let (name, secret) = line.split_once(':').ok_or_else(|| bad("no ':'"))?;
        let secret = BASE64
            .decode(secret.trim())
            .map_err(|_| bad("invalid base64"))?;
        let secret: [u8; 32] = secret.try_into().map_err(|_| bad("key is not 32 bytes"))?;
        keys.push((name.trim().to_owned(), secret));
    }
    Ok(keys)
}

/// Writes the key file atomically (temporary file, fsync, rename) with mode 0600.
fn write_key_file(path: &Path, keys: &[(String, [u8; 32])]) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let io = |err: std::io::Error| key_file_error(format!("writing {}: {err}", path.display()));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut text = String::from("# skiff encryption keys: the first key encrypts, all decrypt\n");
    for (name, key) in keys {
        text.push_str(&format!("{name}:{}\n", BASE64.encode(key)));
    }
    let temporary = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)
        .map_err(io)?;
    file.write_all(text.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&temporary, path).map_err(io)
}

/// A [`Store`] that encrypts the values of keys under selected prefixes before they reach the
/// inner store, and decrypts them on the way back (reads, deletes and watch events).
#[derive(Clone)]
pub struct EncryptingStore<S> {
    inner: S,
    keys: Arc<KeyRing>,
    prefixes: Arc<[String]>,
}

impl<S: Store> EncryptingStore<S> {
    /// Encrypts values under each of `prefixes` (e.g. `/registry/secrets/`) with `keys`.
    pub fn new(inner: S, keys: KeyRing, prefixes: impl IntoIterator<Item = String>) -> Self {
        EncryptingStore {
            inner,
            keys: Arc::new(keys),
            prefixes: prefixes.into_iter().collect(),
        }
    }

    /// The wrapped store, which sees ciphertext.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Re-encrypts every value under `prefix` not sealed with the writing key (plaintext from
    /// before encryption was enabled, or an older key after [`KeyRing::rotate`]); returns how
    /// many were rewritten. Values changed concurrently are skipped: their writer already used
    /// the current key. Afterwards older keys can be removed from the key file.
    pub async fn rewrite(&self, prefix: &str) -> Result<u64> {
        let mut rewritten = 0;
        let mut after: Option<String> = None;
        loop {
            let page = self
                .inner
                .range(prefix, None, Some(500), after.as_deref())
                .await?;
            for kv in &page.kvs {
                if !self.encrypts(&kv.key) || self.keys.is_current(&kv.value) {
                    continue;
                }
                let plaintext = self.keys.decrypt(&kv.key, kv.value.clone())?;
                let sealed = self.keys.encrypt(&kv.key, &plaintext)?;
                match self.inner.update(&kv.key, sealed, kv.mod_revision).await {
                    Ok(_) => rewritten += 1,
                    Err(StoreError::Conflict { .. } | StoreError::NotFound { .. }) => {}
                    Err(err) => return Err(err),
                }
            }
            match (page.more, page.kvs.last()) {
                (true, Some(last)) => after = Some(last.key.clone()),
                _ => return Ok(rewritten),
            }
        }
    }
}

impl<S> EncryptingStore<S> {
    fn encrypts(&self, key: &str) -> bool {
        self.prefixes.iter().any(|prefix| key.starts_with(prefix))
    }

    fn seal(&self, key: &str, value: Vec<u8>) -> Result<Vec<u8>> {
        if self.encrypts(key) {
            self.keys.encrypt(key, &value)
        } else {
            Ok(value)
        }
    }

    fn open(&self, mut kv: KeyValue) -> Result<KeyValue> {
        if self.encrypts(&kv.key) && !kv.value.is_empty() {
            kv.value = self.keys.decrypt(&kv.key, std::mem::take(&mut kv.value))?;
        }
        Ok(kv)
    }

    fn open_event(&self, event: WatchEvent) -> Result<WatchEvent> {
        Ok(WatchEvent {
            kind: event.kind,
            kv: self.open(event.kv)?,
            prev_kv: event.prev_kv.map(|kv| self.open(kv)).transpose()?,
        })
    }
}

#[async_trait::async_trait]
impl<S: Store> Store for EncryptingStore<S> {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        self.inner
            .get(key)
            .await?
            .map(|kv| self.open(kv))
            .transpose()
    }

    async fn range(
        &self,
        prefix: &str,
        at_revision: Option<i64>,
        limit: Option<usize>,
        start_after: Option<&str>,
    ) -> Result<RangeResult> {
        let page = self
            .inner
            .range(prefix, at_revision, limit, start_after)
            .await?;
        Ok(RangeResult {
            kvs: page
                .kvs
                .into_iter()
                .map(|kv| self.open(kv))
                .collect::<Result<_>>()?,
            more: page.more,
            revision: page.revision,
        })
    }

    async fn count(&self, prefix: &str) -> Result<u64> {
        self.inner.count(prefix).await
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<i64> {
        self.inner.create(key, self.seal(key, value)?).await
    }

    async fn update(&self, key: &str, value: Vec<u8>, expected_mod_revision: i64) -> Result<i64> {
        let value = self.seal(key, value)?;
        self.inner.update(key, value, expected_mod_revision).await
    }

    async fn delete(
        &self,
        key: &str,
        expected_mod_revision: Option<i64>,
    ) -> Result<(i64, KeyValue)> {
        let (revision, prev) = self.inner.delete(key, expected_mod_revision).await?;
        Ok((revision, self.open(prev)?))
    }

    async fn current_revision(&self) -> Result<i64> {
        self.inner.current_revision().await
    }

    async fn compact(&self, revision: i64) -> Result<()> {
        self.inner.compact(revision).await
    }

    async fn watch(&self, prefix: &str, from_revision: i64) -> Result<WatchStream> {
        let events = self.inner.watch(prefix, from_revision).await?;
        let opener = EncryptingStore {
            inner: (),
            keys: self.keys.clone(),
            prefixes: self.prefixes.clone(),
        };
        // Like the inner stream, end after the first error.
        let state = Some((events, opener));
        Ok(Box::pin(futures::stream::unfold(
            state,
            |state| async move {
                let (mut events, opener) = state?;
                match events.next().await? {
                    Ok(event) => match opener.open_event(event) {
                        Ok(event) => Some((Ok(event), Some((events, opener)))),
                        Err(err) => Some((Err(err), None)),
                    },
                    Err(err) => Some((Err(err), None)),
                }
            },
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(names: &[&str]) -> KeyRing {
        // The same name always gets the same key bytes.
        let keys = names
            .iter()
            .map(|name| {
                (
                    name.to_string(),
                    [name.len() as u8 + name.as_bytes()[3]; 32],
                )
            })
            .collect();
        KeyRing::new(keys).unwrap()
    }

    #[test]
    fn sealed_values_carry_the_key_name_and_round_trip() {
        let keys = ring(&["key2", "key1"]);
        let sealed = keys.encrypt("/registry/secrets/ns/a", b"hunter2").unwrap();
        assert!(sealed.starts_with(b"k8s:enc:aesgcm:v1:key2:"));
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
        let opened = keys.decrypt("/registry/secrets/ns/a", sealed).unwrap();
        assert_eq!(opened, b"hunter2");
    }

    #[test]
    fn ciphertext_is_bound_to_its_storage_key() {
        let keys = ring(&["key1"]);
        let sealed = keys.encrypt("/registry/secrets/ns/a", b"x").unwrap();
        let err = keys.decrypt("/registry/secrets/ns/b", sealed).unwrap_err();
        assert!(matches!(err, StoreError::Encryption { .. }), "{err}");
    }

    #[test]
    fn older_keys_decrypt_and_unknown_keys_fail() {
        let old = ring(&["key1"]);
        let sealed = old.encrypt("/s", b"v").unwrap();
        assert_eq!(
            ring(&["key2", "key1"])
                .decrypt("/s", sealed.clone())
                .unwrap(),
            b"v"
        );
        assert!(ring(&["key2"]).decrypt("/s", sealed).is_err());
    }

    #[test]
    fn plaintext_passes_through() {
        assert_eq!(
            ring(&["key1"]).decrypt("/s", b"{}".to_vec()).unwrap(),
            b"{}"
        );
    }

    #[test]
    fn key_file_is_created_and_rotated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("encryption-keys");
        let first = KeyRing::load_or_create(&path).unwrap();
        assert_eq!(first.write_key_name(), "key1");
        let sealed = first.encrypt("/s", b"v").unwrap();
        let rotated = KeyRing::rotate(&path).unwrap();
        assert_eq!(rotated.write_key_name(), "key2");
        let reloaded = KeyRing::load_or_create(&path).unwrap();
        assert_eq!(reloaded.write_key_name(), "key2");
        assert_eq!(reloaded.decrypt("/s", sealed).unwrap(), b"v");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
