//! Progress reporting for pull, push, load and save, so the CLI can draw bars.

/// Receives progress events; ids are short digests (12 hex characters) like Docker shows.
///
/// Implementations must be cheap and thread-safe: layers transfer concurrently.
pub trait Progress: Send + Sync {
    /// A transfer or step for `id` started; `total` bytes when known.
    fn started(&self, id: &str, total: Option<u64>);
    /// `n` more bytes of `id` were transferred.
    fn advanced(&self, id: &str, n: u64);
    /// `id` is done.
    fn finished(&self, id: &str);
    /// A free-form status line (e.g. `Layer already exists`, `Digest: sha256:...`).
    fn message(&self, msg: &str);
}

/// A [`Progress`] that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn started(&self, _id: &str, _total: Option<u64>) {}
    fn advanced(&self, _id: &str, _n: u64) {}
    fn finished(&self, _id: &str) {}
    fn message(&self, _msg: &str) {}
}
