//! Image references (`[registry/]repository[:tag][@digest]`), normalised as Docker does.
//!
//! The grammar follows the distribution project's reference format: a name without a
//! registry belongs to `docker.io`, a single-component Docker Hub name lives under
//! `library/`, and a reference with neither tag nor digest means `:latest`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::digest::{Digest, DigestError};

/// The registry that references without a registry part belong to.
pub const DEFAULT_REGISTRY: &str = "docker.io";
/// The tag implied when a reference has neither tag nor digest.
pub const DEFAULT_TAG: &str = "latest";
const MAX_NAME_LEN: usize = 255;

/// Errors from parsing an image reference.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReferenceError {
    /// The string is empty.
    #[error("invalid reference format: empty image reference")]
    Empty,
    /// The repository contains uppercase letters.
    #[error("invalid reference format: repository name {0:?} must be lowercase")]
    Uppercase(String),
    /// A repository path component breaks the grammar.
    #[error("invalid reference format: repository name component {component:?} in {reference:?} must be lowercase letters, digits and separators (., _, __, -) between them")]
    Component {
        /// The whole reference.
        reference: String,
        /// The offending path component.
        component: String,
    },
    /// The registry host part is not a valid host[:port].
    #[error("invalid reference format: registry {0:?} is not a valid host[:port]")]
    Registry(String),
    /// The tag breaks the grammar.
    #[error("invalid reference format: tag {0:?} must be 1-128 characters of letters, digits, '_', '.' or '-', not starting with '.' or '-'")]
    Tag(String),
    /// The digest part is invalid.
    #[error("invalid reference format: {0}")]
    Digest(#[from] DigestError),
    /// The full name is longer than 255 characters.
    #[error("invalid reference format: repository name {0:?} is longer than 255 characters")]
    TooLong(String),
    /// The name is a 64-character hex string, which Docker reserves for image IDs.
    #[error("invalid repository name ({0}), cannot specify 64-byte hexadecimal strings")]
    HexName(String),
}

/// A fully qualified image reference: registry, repository path, optional tag and digest.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl Reference {
    /// Parses and normalises `s` (`busybox` becomes `docker.io/library/busybox:latest`).
    pub fn parse(s: &str) -> Result<Self, ReferenceError> {
        s.parse()
    }

    /// The registry host[:port], e.g. `docker.io` or `localhost:5000`.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository path inside the registry, e.g. `library/busybox`.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag, if any (always present when there is no digest).
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, if the reference pins one.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// `registry/repository`, e.g. `docker.io/library/busybox`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The short repository name `docker images` shows: `busybox`, `localhost:5000/a/b`.
    pub fn familiar(&self) -> String {
        if self.registry == DEFAULT_REGISTRY {
            match self.repository.strip_prefix("library/") {
                Some(rest) if !rest.contains('/') => rest.to_owned(),
                _ => self.repository.clone(),
            }
        } else {
            self.name()
        }
    }

    /// The familiar name with tag and digest, e.g. `busybox:latest`.
    pub fn familiar_string(&self) -> String {
        let mut s = self.familiar();
        self.push_suffix(&mut s);
        s
    }

    /// The same repository with `tag` and without digest.
    pub fn with_tag(&self, tag: &str) -> Result<Self, ReferenceError> {
        validate_tag(tag)?;
        Ok(Self {
            tag: Some(tag.to_owned()),
            digest: None,
            ..self.clone()
        })
    }

    /// The same repository pinned to `digest`, without tag (`name@digest`).
    pub fn with_digest(&self, digest: Digest) -> Self {
        Self {
            tag: None,
            digest: Some(digest),
            ..self.clone()
        }
    }

    /// The tag or, failing that, the digest string: what a registry's manifest URL takes.
    pub fn tag_or_digest(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => DEFAULT_TAG.to_owned(),
        }
    }

    fn push_suffix(&self, s: &mut String) {
        if let Some(tag) = &self.tag {
            s.push(':');
            s.push_str(tag);
        }
        if let Some(digest) = &self.digest {
            s.push('@');
            s.push_str(&digest.to_string());
        }
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(ReferenceError::Empty);
        }
        let (name_tag, digest) = match s.split_once('@') {
            Some((n, d)) => (n, Some(d.parse::<Digest>()?)),
            None => (s, None),
        };
        let (name, tag) = match name_tag.rfind(':') {
            Some(i) if !name_tag[i + 1..].contains('/') => {
                (&name_tag[..i], Some(&name_tag[i + 1..]))
            }
            _ => (name_tag, None),
        };
        if let Some(tag) = tag {
            validate_tag(tag)?;
        }
        if name.is_empty() {
            return Err(ReferenceError::Empty);
        }
        if name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ReferenceError::HexName(name.to_owned()));
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, rest))
                if first.contains(['.', ':'])
                    || first == "localhost"
                    || first.to_lowercase() != first =>
            {
                (first.to_owned(), rest.to_owned())
            }
            _ => (DEFAULT_REGISTRY.to_owned(), name.to_owned()),
        };
        let registry = if registry == "index.docker.io" {
            DEFAULT_REGISTRY.to_owned()
        } else {
            registry
        };
        validate_registry(&registry)?;
        let repository = if registry == DEFAULT_REGISTRY && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        if repository.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(ReferenceError::Uppercase(repository));
        }
        for component in repository.split('/') {
            if !valid_component(component) {
                return Err(ReferenceError::Component {
                    reference: s.to_owned(),
                    component: component.to_owned(),
                });
            }
        }
        let full = format!("{registry}/{repository}");
        if full.len() > MAX_NAME_LEN {
            return Err(ReferenceError::TooLong(full));
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_owned()),
            (None, Some(_)) => None,
            (None, None) => Some(DEFAULT_TAG.to_owned()),
        };
        Ok(Self {
            registry,
            repository,
            tag,
            digest,
        })
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = self.name();
        self.push_suffix(&mut s);
        f.write_str(&s)
    }
}

impl fmt::Debug for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Reference {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Reference {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

fn validate_tag(tag: &str) -> Result<(), ReferenceError> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let ok = !tag.is_empty()
        && tag.len() <= 128
        && tag.starts_with(word)
        && tag.chars().all(|c| word(c) || c == '.' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(ReferenceError::Tag(tag.to_owned()))
    }
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn valid_component(c: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = c.as_bytes();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn validate_registry(registry: &str) -> Result<(), ReferenceError> {
    let err = || ReferenceError::Registry(registry.to_owned());
    let (host, port) = if let Some(rest) = registry.strip_prefix('[') {
        // IPv6 literal: [addr]:port
        let (addr, after) = rest.split_once(']').ok_or_else(err)?;
        if addr.is_empty() || !addr.chars().all(|c| c.is_ascii_hexdigit() || c == ':') {
            return Err(err());
        }
        match after {
            "" => return Ok(()),
            p => (None, Some(p.strip_prefix(':').ok_or_else(err)?)),
        }
    } else {
        match registry.split_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(registry), None),
        }
    };
    if let Some(port) = port {
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err());
        }
    }
    if let Some(host) = host {
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if !host.split('.').all(label_ok) {
            return Err(err());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn normalises_like_docker() {
        let table: &[(&str, &str, &str)] = &[
            ("busybox", "docker.io/library/busybox:latest", "busybox"),
            ("busybox:1.36", "docker.io/library/busybox:1.36", "busybox"),
            (
                "library/busybox",
                "docker.io/library/busybox:latest",
                "busybox",
            ),
            (
                "docker.io/busybox",
                "docker.io/library/busybox:latest",
                "busybox",
            ),
            (
                "index.docker.io/library/busybox",
                "docker.io/library/busybox:latest",
                "busybox",
            ),
            ("user/app:v1", "docker.io/user/app:v1", "user/app"),
            (
                "localhost:5000/a/b:tag",
                "localhost:5000/a/b:tag",
                "localhost:5000/a/b",
            ),
            ("localhost/foo", "localhost/foo:latest", "localhost/foo"),
            (
                "quay.io/coreos/etcd",
                "quay.io/coreos/etcd:latest",
                "quay.io/coreos/etcd",
            ),
            (
                "127.0.0.1:5000/busybox",
                "127.0.0.1:5000/busybox:latest",
                "127.0.0.1:5000/busybox",
            ),
            (
                "[::1]:5000/busybox",
                "[::1]:5000/busybox:latest",
                "[::1]:5000/busybox",
            ),
            (
                "x/a.b_c__d-e---f",
                "docker.io/x/a.b_c__d-e---f:latest",
                "x/a.b_c__d-e---f",
            ),
            (
                "library/a.b_c__d-e---f",
                "docker.io/library/a.b_c__d-e---f:latest",
                "a.b_c__d-e---f",
            ),
            (
                "localhost:5000",
                "docker.io/library/localhost:5000",
                "localhost",
            ),
        ];
        for (input, full, familiar) in table {
            let r: Reference = input.parse().unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(r.to_string(), *full, "{input}");
            assert_eq!(r.familiar(), *familiar, "{input}");
        }
    }

    #[test]
    fn digests() {
        let r: Reference = format!("busybox@{D}").parse().unwrap();
        assert_eq!(r.to_string(), format!("docker.io/library/busybox@{D}"));
        assert_eq!(r.tag(), None);
        assert_eq!(r.tag_or_digest(), D);
        let r: Reference = format!("localhost:5000/a:v1@{D}").parse().unwrap();
        assert_eq!(r.to_string(), format!("localhost:5000/a:v1@{D}"));
        assert_eq!(r.familiar_string(), format!("localhost:5000/a:v1@{D}"));
        assert_eq!(r.tag(), Some("v1"));
    }

    #[test]
    fn rejects_invalid() {
        type Check = fn(&ReferenceError) -> bool;
        let cases: &[(&str, Check)] = &[
            ("", |e| matches!(e, ReferenceError::Empty)),
            ("BusyBox", |e| matches!(e, ReferenceError::Uppercase(_))),
            ("docker.io/Foo/bar", |e| {
                matches!(e, ReferenceError::Uppercase(_))
            }),
            ("busybox@sha256:abc", |e| {
                matches!(e, ReferenceError::Digest(_))
            }),
            ("busybox@md5:abc", |e| {
                matches!(e, ReferenceError::Digest(_))
            }),
            ("busybox:", |e| matches!(e, ReferenceError::Tag(_))),
            ("busybox:-x", |e| matches!(e, ReferenceError::Tag(_))),
            ("busybox:a+b", |e| matches!(e, ReferenceError::Tag(_))),
            ("a//b", |e| matches!(e, ReferenceError::Component { .. })),
            ("-abc", |e| matches!(e, ReferenceError::Component { .. })),
            ("a_b.io/x", |e| matches!(e, ReferenceError::Registry(_))),
            ("a..b", |e| matches!(e, ReferenceError::Component { .. })),
            ("a___b", |e| matches!(e, ReferenceError::Component { .. })),
            ("foo/bar/", |e| {
                matches!(e, ReferenceError::Component { .. })
            }),
            ("my_host:abc/x", |e| {
                matches!(e, ReferenceError::Registry(_))
            }),
            ("-host.io/x", |e| matches!(e, ReferenceError::Registry(_))),
            (
                "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                |e| matches!(e, ReferenceError::HexName(_)),
            ),
        ];
        for (input, check) in cases {
            match input.parse::<Reference>() {
                Ok(r) => panic!("{input:?} parsed as {r}"),
                Err(e) => assert!(check(&e), "{input:?}: unexpected error {e}"),
            }
        }
        let long = format!("a/{}", "b".repeat(300));
        assert!(matches!(
            long.parse::<Reference>(),
            Err(ReferenceError::TooLong(_))
        ));
        let tag = format!("busybox:{}", "t".repeat(129));
        assert!(matches!(
            tag.parse::<Reference>(),
            Err(ReferenceError::Tag(_))
        ));
    }

    #[test]
    fn serde_round_trip() {
        let r: Reference = "localhost:5000/a/b:tag".parse().unwrap();
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(json, "\"localhost:5000/a/b:tag\"");
        assert_eq!(serde_json::from_str::<Reference>(&json).unwrap(), r);
    }
}
