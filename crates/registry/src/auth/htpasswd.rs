//! Apache htpasswd files with bcrypt entries (`htpasswd -B`), the format Docker's registry
//! reads.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use skiff_images::Digest;

/// Errors from reading an htpasswd file.
#[derive(Debug, thiserror::Error)]
pub enum HtpasswdError {
    /// The file cannot be read.
    #[error("htpasswd file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A line is not `user:bcrypt-hash`.
    #[error("htpasswd file {path}, line {line}: expected USER:HASH with a bcrypt hash ($2y$, $2b$ or $2a$); create entries with `htpasswd -B`")]
    Entry {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
    },
}

/// The users of an htpasswd file.
#[derive(Debug)]
pub struct Htpasswd {
    users: HashMap<String, String>,
    /// Passwords already verified, by user: the sha256 of the password. bcrypt is slow by
    /// design and clients send Basic credentials on every request.
    verified: Mutex<HashMap<String, Digest>>,
}

impl Htpasswd {
    /// Reads an htpasswd file.
    pub fn read(path: &Path) -> Result<Self, HtpasswdError> {
        let text = std::fs::read_to_string(path).map_err(|source| HtpasswdError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text).map_err(|line| HtpasswdError::Entry {
            path: path.to_path_buf(),
            line,
        })
    }

    /// Parses the file's text; the error is the 1-based number of a bad line.
    pub fn parse(text: &str) -> Result<Self, usize> {
        let mut users = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match line.split_once(':') {
                Some((user, hash))
                    if !user.is_empty()
                        && ["$2y$", "$2b$", "$2a$"].iter().any(|p| hash.starts_with(p)) =>
                {
                    users.insert(user.to_owned(), hash.to_owned());
                }
                _ => return Err(i + 1),
            }
        }
        Ok(Self {
            users,
            verified: Mutex::new(HashMap::new()),
        })
    }

    /// True when `password` is `user`'s. Blocking (bcrypt) on a cache miss.
    pub fn verify(&self, user: &str, password: &str) -> bool {
        let Some(hash) = self.users.get(user) else {
            return false;
        };
        let fingerprint = Digest::of(password.as_bytes());
        let mut verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if verified.get(user) == Some(&fingerprint) {
            return true;
        }
        drop(verified);
        let ok = bcrypt::verify(password, hash).unwrap_or(false);
        if ok {
            verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
            verified.insert(user.to_owned(), fingerprint);
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_bcrypt_entries_only() {
        let hash = bcrypt::hash("secret", 4)
            .unwrap()
            .replacen("$2b$", "$2y$", 1);
        let h = Htpasswd::parse(&format!("# users\nalice:{hash}\n\n")).unwrap();
        assert!(h.verify("alice", "secret"));
        assert!(h.verify("alice", "secret"), "cached");
        assert!(!h.verify("alice", "wrong"));
        assert!(!h.verify("bob", "secret"));
        assert_eq!(Htpasswd::parse("a:{SHA}xyz").unwrap_err(), 1);
        assert_eq!(Htpasswd::parse("ok:$2y$x\nnocolon").unwrap_err(), 2);
    }
}
