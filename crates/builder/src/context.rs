//! The build context: the directory COPY and ADD read, walked once with `.dockerignore`
//! applied and every file hashed, so cache keys of COPY steps cost no further I/O.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::ignore::{IgnoreRules, Pattern};

/// Errors reading the context.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    /// A file of the context cannot be read.
    #[error("reading build context {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// No file matches a COPY source.
    #[error("{0:?} not found in the build context (or excluded by .dockerignore)")]
    NotFound(String),
    /// A COPY source leaves the context.
    #[error("forbidden path outside the build context: {0}")]
    Outside(String),
}

/// What a context entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file with the sha256 of its content.
    File([u8; 32]),
    /// A directory.
    Dir,
    /// A symlink and its target.
    Symlink(PathBuf),
}

/// One file, directory or symlink of the context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Path relative to the context root, `/`-separated, no leading slash.
    pub rel: String,
    /// Kind and content hash.
    pub kind: EntryKind,
    /// Permission bits.
    pub mode: u32,
    /// Size in bytes.
    pub size: u64,
}

/// The context as read at the start of a build.
#[derive(Debug, Clone)]
pub struct BuildContext {
    /// The context directory.
    pub root: PathBuf,
    /// Every included entry by relative path (sorted, so parents precede children).
    pub entries: BTreeMap<String, Entry>,
}

impl BuildContext {
    /// Walks `root`, leaving out what `ignore` excludes, and hashes every file.
    pub fn read(root: &Path, ignore: &IgnoreRules) -> Result<Self, ContextError> {
        let mut ctx = BuildContext {
            root: root.to_path_buf(),
            entries: BTreeMap::new(),
        };
        ctx.walk(ignore, "")?;
        Ok(ctx)
    }

    fn walk(&mut self, ignore: &IgnoreRules, rel: &str) -> Result<(), ContextError> {
        let dir = self.root.join(rel);
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ContextError::Io { path, source }
        };
        let mut names: Vec<String> = fs::read_dir(&dir)
            .map_err(io_err(&dir))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        for name in names {
            let child = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            let path = self.root.join(&child);
            let meta = fs::symlink_metadata(&path).map_err(io_err(&path))?;
            let excluded = ignore.is_excluded(&child);
            if meta.is_dir() {
                if excluded && !ignore.has_exceptions() {
                    continue;
                }
                if !excluded {
                    self.insert(&child, EntryKind::Dir, &meta);
                }
                self.walk(ignore, &child)?;
                continue;
            }
            if excluded {
                continue;
            }
            let kind = if meta.file_type().is_symlink() {
                EntryKind::Symlink(fs::read_link(&path).map_err(io_err(&path))?)
            } else if meta.is_file() {
                let mut hasher = Sha256::new();
                let mut f = fs::File::open(&path).map_err(io_err(&path))?;
                io::copy(&mut f, &mut hasher).map_err(io_err(&path))?;
                EntryKind::File(hasher.finalize().into())
            } else {
                continue;
            };
            self.insert(&child, kind, &meta);
        }
        Ok(())
    }

    fn insert(&mut self, rel: &str, kind: EntryKind, meta: &fs::Metadata) {
        self.entries.insert(
            rel.to_string(),
            Entry {
                rel: rel.to_string(),
                kind,
                mode: meta.permissions().mode() & 0o7777,
                size: meta.size(),
            },
        );
    }

    /// The entries a COPY source selects: the matches of the pattern and, for matched
    /// directories, everything below them. `.` selects the whole context.
    pub fn select(&self, source: &str) -> Result<Selection<'_>, ContextError> {
        let mut depth = 0i32;
        for c in source.split('/') {
            match c {
                "" | "." => {}
                ".." => depth -= 1,
                _ => depth += 1,
            }
            if depth < 0 {
                return Err(ContextError::Outside(source.to_string()));
            }
        }
        let pattern = Pattern::new(source, false);
        if pattern.matches("") {
            return Ok(Selection {
                roots: vec![SelectedRoot::ContextRoot],
                entries: self.entries.values().collect(),
            });
        }
        let mut roots = Vec::new();
        let mut entries = Vec::new();
        for e in self.entries.values() {
            if pattern.matches(&e.rel) {
                roots.push(SelectedRoot::Entry(e.rel.clone()));
                entries.push(e);
            } else if roots.iter().any(|r| match r {
                SelectedRoot::Entry(root) => e.rel.starts_with(&format!("{root}/")),
                SelectedRoot::ContextRoot => true,
            }) {
                entries.push(e);
            }
        }
        if roots.is_empty() {
            return Err(ContextError::NotFound(source.to_string()));
        }
        Ok(Selection { roots, entries })
    }
}

/// What a COPY source matched.
#[derive(Debug)]
pub struct Selection<'a> {
    /// The matched paths themselves (directories copy their contents).
    pub roots: Vec<SelectedRoot>,
    /// The matched entries and everything below matched directories.
    pub entries: Vec<&'a Entry>,
}

/// One match of a COPY source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SelectedRoot {
    /// `.`: the context directory itself.
    ContextRoot,
    /// A path relative to the context.
    Entry(String),
}

impl Selection<'_> {
    /// A digest of everything selected: paths, kinds, modes and content hashes.
    pub fn digest(&self) -> String {
        let mut h = Sha256::new();
        for r in &self.roots {
            match r {
                SelectedRoot::ContextRoot => h.update(b"root\0"),
                SelectedRoot::Entry(p) => {
                    h.update(b"match\0");
                    h.update(p.as_bytes());
                    h.update(b"\0");
                }
            }
        }
        for e in &self.entries {
            h.update(e.rel.as_bytes());
            h.update(format!("\0{:o}\0", e.mode).as_bytes());
            match &e.kind {
                EntryKind::File(d) => {
                    h.update(b"f");
                    h.update(d);
                }
                EntryKind::Dir => h.update(b"d"),
                EntryKind::Symlink(t) => {
                    h.update(b"l");
                    h.update(t.to_string_lossy().as_bytes());
                }
            }
            h.update(b"\n");
        }
        hex::encode(h.finalize())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_hashes_and_selects() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fs::create_dir_all(root.join("src/sub")).unwrap();
        fs::create_dir_all(root.join("node_modules/x")).unwrap();
        fs::write(root.join("src/main.c"), "int main;").unwrap();
        fs::write(root.join("src/sub/util.c"), "x").unwrap();
        fs::write(root.join("README.md"), "hi").unwrap();
        fs::write(root.join("node_modules/x/i.js"), "js").unwrap();
        fs::write(root.join("debug.log"), "log").unwrap();
        let ignore = IgnoreRules::parse("node_modules\n*.log\n");
        let ctx = BuildContext::read(root, &ignore).unwrap();
        assert!(!ctx.entries.keys().any(|k| k.starts_with("node_modules")));
        assert!(!ctx.entries.contains_key("debug.log"));
        let all = ctx.select(".").unwrap();
        assert_eq!(all.entries.len(), 5);
        let src = ctx.select("src").unwrap();
        assert_eq!(src.entries.len(), 4);
        let c = ctx.select("src/*.c").unwrap();
        assert_eq!(c.entries.len(), 1);
        assert!(matches!(ctx.select("nope"), Err(ContextError::NotFound(_))));
        let before = ctx.select("src").unwrap().digest();
        fs::write(root.join("src/sub/util.c"), "y").unwrap();
        let ctx2 = BuildContext::read(root, &ignore).unwrap();
        assert_ne!(ctx2.select("src").unwrap().digest(), before);
        assert_eq!(
            ctx2.select("README.md").unwrap().digest(),
            ctx.select("README.md").unwrap().digest()
        );
    }
}
