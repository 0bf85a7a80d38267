//! The layer cache: a step's result keyed on everything that determines it.
//!
//! A key is the sha256 of the parent step's key and the step's description (the
//! instruction after substitution, its flags, and for COPY/ADD the content hash of what
//! it reads), so a key names the whole chain from the base image. Entries live in
//! `<data-root>/builder/cache/<key>.json` and point at layers in the image store, which
//! keeps each under a hold (`build-cache-<key>`) so layers no image uses, such as those
//! of intermediate stages, survive garbage collection; an entry whose layer is gone
//! anyway is a miss.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use skiff_images::{ImageStore, LayerRecord};

/// The key of the first step of a chain: the base image (or `scratch`).
pub fn root_key(base: &str) -> String {
    chain("", base)
}

/// The prefix of the image store holds that keep cached layers (see [`hold_name`]).
pub const HOLD_PREFIX: &str = "build-cache-";

/// The image store hold that keeps the layer of the step `key` from garbage collection.
pub fn hold_name(key: &str) -> String {
    format!("{HOLD_PREFIX}{key}")
}

/// The key of a step given its parent's key and its description.
pub fn chain(parent: &str, step: &str) -> String {
    let mut h = Sha256::new();
    h.update(parent.as_bytes());
    h.update(b"\n");
    h.update(step.as_bytes());
    hex::encode(h.finalize())
}

/// The description of a RUN step in its key: the command, the build arguments in its
/// environment (so a new `--build-arg` value misses every RUN after the ARG, as in
/// BuildKit) and its mounts.
pub fn run_step(argv: &[String], arg_env: &[String], mounts: &[String]) -> String {
    let json = |v: &[String]| serde_json::to_string(v).unwrap_or_default();
    format!(
        "RUN {} args={} mounts={}",
        json(argv),
        json(arg_env),
        mounts.join(";")
    )
}

/// A RUN step's history line as BuildKit writes it: the build arguments it saw first
/// (`RUN |2 A=1 B=2 /bin/sh -c make # buildkit`).
pub fn run_created_by(
    command: &crate::dockerfile::CommandLine,
    argv: &[String],
    arg_env: &[String],
) -> String {
    let args = if arg_env.is_empty() {
        String::new()
    } else {
        format!("|{} {} ", arg_env.len(), arg_env.join(" "))
    };
    match command {
        crate::dockerfile::CommandLine::Shell(_) => {
            format!("RUN {args}{} # buildkit", argv.join(" "))
        }
        crate::dockerfile::CommandLine::Exec(v) => format!(
            "RUN {args}{} # buildkit",
            serde_json::to_string(v).unwrap_or_default()
        ),
    }
}

/// What a cached step produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheEntry {
    /// The step's layer.
    pub layer: LayerRecord,
    /// When the step first ran (RFC 3339), so a cached rebuild yields the same image ID.
    pub created: String,
}

/// The cache directory.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
}

impl Cache {
    /// The cache under `dir` (created on first write).
    pub fn new(dir: &Path) -> Self {
        Cache {
            dir: dir.to_path_buf(),
        }
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.json"))
    }

    /// The entry for `key` if present and its layer still in `store`.
    pub fn get(&self, key: &str, store: &ImageStore) -> Option<CacheEntry> {
        let bytes = fs::read(self.path(key)).ok()?;
        let entry: CacheEntry = serde_json::from_slice(&bytes).ok()?;
        (store.has_layer(&entry.layer.diff_id) && store.blobs().has(&entry.layer.blob.digest))
            .then_some(entry)
    }

    /// Records `entry` under `key` (replacing the file atomically; losing it only costs a
    /// rebuild, so it is not fsynced).
    pub fn put(&self, key: &str, entry: &CacheEntry) -> io::Result<()> {
        fs::create_dir_all(&self.dir)?;
        let tmp = self.dir.join(format!(".{key}.{}.tmp", std::process::id()));
        fs::write(&tmp, serde_json::to_vec(entry).map_err(io::Error::other)?)?;
        fs::rename(&tmp, self.path(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_chain_and_entries_need_their_layer() {
        let a = chain(&root_key("image:x"), "RUN true");
        assert_ne!(a, chain(&root_key("image:y"), "RUN true"));
        assert_ne!(a, chain(&root_key("image:x"), "RUN false"));
        assert_eq!(a, chain(&root_key("image:x"), "RUN true"));

        let sh = |s: &str| vec!["/bin/sh".to_string(), "-c".into(), s.into()];
        let v1 = vec!["V=1".to_string()];
        let v2 = vec!["V=2".to_string()];
        assert_ne!(
            run_step(&sh("make"), &v1, &[]),
            run_step(&sh("make"), &v2, &[]),
            "a RUN sees the build arguments in its environment"
        );
        assert_ne!(
            run_step(&sh("make"), &[], &[]),
            run_step(&sh("make"), &v1, &[])
        );
        assert_ne!(
            run_step(&sh("make"), &[], &["Bind a".into()]),
            run_step(&sh("make"), &[], &["Bind b".into()])
        );
        use crate::dockerfile::CommandLine;
        assert_eq!(
            run_created_by(&CommandLine::Shell("make".into()), &sh("make"), &v1),
            "RUN |1 V=1 /bin/sh -c make # buildkit"
        );
        assert_eq!(
            run_created_by(&CommandLine::Exec(vec!["make".into()]), &[], &[]),
            "RUN [\"make\"] # buildkit"
        );

        let tmp = tempfile::tempdir().unwrap();
        let store = ImageStore::open(&tmp.path().join("images")).unwrap();
        let src = tmp.path().join("src");
        fs::create_dir_all(&src).unwrap();
        fs::write(src.join("f"), "x").unwrap();
        let layer = store.add_layer_from_dir(&src).unwrap();
        let cache = Cache::new(&tmp.path().join("cache"));
        assert!(cache.get(&a, &store).is_none());
        let entry = CacheEntry {
            layer: layer.clone(),
            created: "2024-01-01T00:00:00Z".into(),
        };
        cache.put(&a, &entry).unwrap();
        assert_eq!(cache.get(&a, &store), Some(entry.clone()));
        let mut gone = entry;
        gone.layer.diff_id = skiff_images::Digest::of(b"other");
        cache.put(&a, &gone).unwrap();
        assert!(
            cache.get(&a, &store).is_none(),
            "a collected layer is a miss"
        );
    }
}
