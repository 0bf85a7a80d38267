//! Repository names, tags and manifest references as the distribution spec defines them.
//!
//! Names are validated before they reach the storage, which uses them as relative paths:
//! the grammar below admits no `..`, no empty component and no leading `/`.

use std::fmt;
use std::str::FromStr;

use skiff_images::Digest;

/// Longest repository name accepted, as Docker's registry limits it.
pub const MAX_NAME_LEN: usize = 255;

/// Longest tag accepted (`[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`).
pub const MAX_TAG_LEN: usize = 128;

/// Errors from validating names, tags and references.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The repository name does not follow the distribution grammar.
    #[error("invalid repository name {0:?}: use lowercase path components of [a-z0-9] separated by '.', '_', '__' or '-', joined by '/'")]
    Name(String),
    /// The tag does not follow the distribution grammar.
    #[error("invalid tag {0:?}: use up to 128 characters of [A-Za-z0-9._-], not starting with '.' or '-'")]
    Tag(String),
}

/// A validated repository name such as `library/busybox`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(String);

impl RepoName {
    /// The name as a string, also its relative storage path.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One path component: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: '.', '_', '__' or any number of '-'.
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

impl FromStr for RepoName {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() || s.len() > MAX_NAME_LEN || !s.split('/').all(valid_component) {
            return Err(NameError::Name(s.to_owned()));
        }
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A validated tag such as `1.36-musl`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

impl Tag {
    /// The tag as a string, also a safe file name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Tag {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b = s.as_bytes();
        let first = |x: u8| x.is_ascii_alphanumeric() || x == b'_';
        let rest = |x: &u8| x.is_ascii_alphanumeric() || matches!(x, b'_' | b'.' | b'-');
        if b.is_empty() || b.len() > MAX_TAG_LEN || !first(b[0]) || !b.iter().all(rest) {
            return Err(NameError::Tag(s.to_owned()));
        }
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The `<reference>` of a manifest URL: a tag or a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManifestRef {
    /// `/v2/<name>/manifests/<tag>`.
    Tag(Tag),
    /// `/v2/<name>/manifests/sha256:<hex>`.
    Digest(Digest),
}

impl fmt::Display for ManifestRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tag(t) => t.fmt(f),
            Self::Digest(d) => d.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["a", "library/busybox", "a.b_c__d---e/f0", "x/y/z/0"] {
            assert!(ok.parse::<RepoName>().is_ok(), "{ok}");
        }
        for bad in [
            "", "A", "a/", "/a", "a//b", "../a", "a/../b", "a..b", "a___b", "-a", "a-", "a/_b",
            "a b", "a:b",
        ] {
            assert!(bad.parse::<RepoName>().is_err(), "{bad}");
        }
        assert!("a".repeat(256).parse::<RepoName>().is_err());
    }

    #[test]
    fn tags() {
        for ok in ["latest", "1.0", "_x", "A-b.C_d", &"a".repeat(128)] {
            assert!(ok.parse::<Tag>().is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "-a", ".a", "a/b", "a:b", &"a".repeat(129)] {
            assert!(bad.parse::<Tag>().is_err(), "{bad}");
        }
    }
}
