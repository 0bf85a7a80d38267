//! The routing table: which backend a request's host and path lead to.
//!
//! Kubernetes' matching rules for `networking.k8s.io/v1` Ingress: a host is matched
//! exactly, or by a wildcard `*.example.com` that stands for exactly one label; paths
//! are `Exact` (the whole path) or `Prefix` (element-wise on `/`: `/foo` matches `/foo`
//! and `/foo/bar`, not `/foobar`; a trailing `/` is ignored), `ImplementationSpecific`
//! meaning `Prefix` here. The longest matching path wins, and `Exact` wins a tie.
//! Rules of a matched host are tried first, then the rules without a host, then the
//! default backend; nothing left is a 404.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// How a rule's path is compared with a request's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathType {
    /// The whole path, case-sensitively.
    Exact,
    /// Element-wise prefix (`ImplementationSpecific` is read as this).
    Prefix,
}

impl PathType {
    /// The type of an Ingress path's `pathType` (`ImplementationSpecific` and unknown
    /// values read as `Prefix`).
    pub fn parse(path_type: &str) -> PathType {
        match path_type {
            "Exact" => PathType::Exact,
            _ => PathType::Prefix,
        }
    }
}

/// Where matched requests go: one Service port's ready endpoints, in turn.
#[derive(Debug)]
pub struct Backend {
    /// `namespace/service:port`, for logs and errors.
    pub name: String,
    /// The pod addresses (ready endpoints only); empty means 503.
    pub endpoints: Vec<SocketAddr>,
    next: AtomicUsize,
}

impl Backend {
    /// A backend over `endpoints`.
    pub fn new(name: impl Into<String>, endpoints: Vec<SocketAddr>) -> Backend {
        Backend {
            name: name.into(),
            endpoints,
            next: AtomicUsize::new(0),
        }
    }

    /// The next endpoint, round robin; `None` when none is ready.
    pub fn pick(&self) -> Option<SocketAddr> {
        if self.endpoints.is_empty() {
            return None;
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        Some(self.endpoints[n % self.endpoints.len()])
    }
}

/// The paths of one host (or of the rules without a host).
#[derive(Debug, Default)]
pub struct HostRules {
    exact: HashMap<String, Arc<Backend>>,
    /// Normalised prefixes (no trailing `/`; `""` is `/`), longest first.
    prefixes: Vec<(String, Arc<Backend>)>,
}

impl HostRules {
    /// Adds a path unless the same path and type is already routed (the first added,
    /// from the oldest Ingress, keeps it, as ingress-nginx does).
    pub fn add(&mut self, path: &str, path_type: PathType, backend: Arc<Backend>) {
        match path_type {
            PathType::Exact => {
                self.exact.entry(path.to_owned()).or_insert(backend);
            }
            PathType::Prefix => {
                let prefix = path.trim_end_matches('/').to_owned();
                if !self.prefixes.iter().any(|(p, _)| *p == prefix) {
                    self.prefixes.push((prefix, backend));
                    self.prefixes
                        .sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
                }
            }
        }
    }

    /// The backend for `path`: the exact one, else the longest matching prefix.
    pub fn lookup(&self, path: &str) -> Option<&Arc<Backend>> {
        if let Some(b) = self.exact.get(path) {
            return Some(b);
        }
        self.prefixes
            .iter()
            .find(|(prefix, _)| prefix_matches(prefix, path))
            .map(|(_, b)| b)
    }

    fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.prefixes.is_empty()
    }
}

/// Whether the normalised `prefix` matches `path` element-wise.
fn prefix_matches(prefix: &str, path: &str) -> bool {
    prefix.is_empty()
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// What a request leads to.
#[derive(Debug, Clone)]
pub enum Route {
    /// A backend (which may have no ready endpoint: 503).
    Backend(Arc<Backend>),
    /// Nothing matched and there is no default backend: 404.
    NotFound,
}

/// Every rule of every Ingress this controller serves, ready for lookups.
#[derive(Debug, Default)]
pub struct RoutingTable {
    hosts: HashMap<String, HostRules>,
    /// `*.example.com` keyed by `example.com`.
    wildcards: HashMap<String, HostRules>,
    any_host: HostRules,
    default_backend: Option<Arc<Backend>>,
}

impl RoutingTable {
    /// The rules of `host` (`""`: every host; `*.x` a wildcard), created when absent.
    pub fn host_mut(&mut self, host: &str) -> &mut HostRules {
        let host = host.to_ascii_lowercase();
        if host.is_empty() {
            &mut self.any_host
        } else if let Some(suffix) = host.strip_prefix("*.") {
            self.wildcards.entry(suffix.to_owned()).or_default()
        } else {
            self.hosts.entry(host).or_default()
        }
    }

    /// Sets the default backend unless one is set (the oldest Ingress's wins).
    pub fn set_default_backend(&mut self, backend: Arc<Backend>) {
        self.default_backend.get_or_insert(backend);
    }

    /// Where a request for `host` (a Host header: case and `:port` do not matter) and
    /// `path` goes.
    pub fn route(&self, host: &str, path: &str) -> Route {
        let host = strip_port(host).to_ascii_lowercase();
        let host = host.trim_end_matches('.');
        let by_host = self.hosts.get(host).or_else(|| {
            let (_, parent) = host.split_once('.')?;
            self.wildcards.get(parent)
        });
        let found = by_host
            .and_then(|rules| rules.lookup(path))
            .or_else(|| self.any_host.lookup(path))
            .or(self.default_backend.as_ref());
        match found {
            Some(b) => Route::Backend(b.clone()),
            None => Route::NotFound,
        }
    }

    /// Whether no rule and no default backend is set.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
            && self.wildcards.is_empty()
            && self.any_host.is_empty()
            && self.default_backend.is_none()
    }
}

/// `host` without a `:port` (IPv6 literals keep their brackets).
pub fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host
            .split_once(']')
            .map_or(host, |(h, _)| &host[..=h.len()]);
    }
    host.split_once(':').map_or(host, |(h, _)| h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(name: &str) -> Arc<Backend> {
        Arc::new(Backend::new(name, vec!["10.0.0.1:80".parse().unwrap()]))
    }

    fn routed(table: &RoutingTable, host: &str, path: &str) -> String {
        match table.route(host, path) {
            Route::Backend(b) => b.name.clone(),
            Route::NotFound => "404".into(),
        }
    }

    #[test]
    fn prefix_is_element_wise_and_longest_wins() {
        let mut t = RoutingTable::default();
        let rules = t.host_mut("a.example.test");
        rules.add("/", PathType::Prefix, backend("root"));
        rules.add("/foo", PathType::Prefix, backend("foo"));
        rules.add("/foo/bar/", PathType::Prefix, backend("foobar"));
        assert_eq!(routed(&t, "a.example.test", "/foo"), "foo");
        assert_eq!(routed(&t, "a.example.test", "/foo/"), "foo");
        assert_eq!(routed(&t, "a.example.test", "/foo/baz"), "foo");
        assert_eq!(routed(&t, "a.example.test", "/foobar"), "root");
        assert_eq!(routed(&t, "a.example.test", "/foo/bar"), "foobar");
        assert_eq!(routed(&t, "a.example.test", "/foo/bar/x"), "foobar");
        assert_eq!(routed(&t, "a.example.test", "/foo/barx"), "foo");
        assert_eq!(routed(&t, "a.example.test", "/other"), "root");
    }

    #[test]
    fn exact_beats_prefix_and_matches_only_the_whole_path() {
        let mut t = RoutingTable::default();
        let rules = t.host_mut("");
        rules.add("/foo", PathType::Prefix, backend("prefix"));
        rules.add("/foo", PathType::Exact, backend("exact"));
        assert_eq!(routed(&t, "x", "/foo"), "exact");
        assert_eq!(routed(&t, "x", "/foo/"), "prefix");
        assert_eq!(routed(&t, "x", "/foo/a"), "prefix");
        assert_eq!(routed(&t, "x", "/bar"), "404");
    }

    #[test]
    fn hosts_exact_wildcard_one_label_and_fallbacks() {
        let mut t = RoutingTable::default();
        t.host_mut("A.example.test")
            .add("/", PathType::Prefix, backend("a"));
        t.host_mut("*.example.test")
            .add("/", PathType::Prefix, backend("wild"));
        t.host_mut("b.example.test")
            .add("/b", PathType::Prefix, backend("b"));
        t.host_mut("").add("/any", PathType::Prefix, backend("any"));
        assert_eq!(routed(&t, "a.example.test", "/x"), "a");
        assert_eq!(routed(&t, "a.EXAMPLE.test:8080", "/x"), "a");
        assert_eq!(routed(&t, "a.example.test.", "/x"), "a");
        assert_eq!(routed(&t, "c.example.test", "/x"), "wild");
        // One label only.
        assert_eq!(routed(&t, "x.c.example.test", "/x"), "404");
        assert_eq!(routed(&t, "example.test", "/x"), "404");
        assert_eq!(routed(&t, "b.example.test", "/b/c"), "b");
        // A host's paths that do not match fall back to the rules without a host.
        assert_eq!(routed(&t, "b.example.test", "/c"), "404");
        assert_eq!(routed(&t, "b.example.test", "/any"), "any");
        assert_eq!(routed(&t, "other", "/any/1"), "any");

        t.set_default_backend(backend("default"));
        t.set_default_backend(backend("later"));
        assert_eq!(routed(&t, "b.example.test", "/c"), "default");
        assert_eq!(routed(&t, "other", "/"), "default");
    }

    #[test]
    fn first_rule_for_a_path_keeps_it() {
        let mut t = RoutingTable::default();
        t.host_mut("h").add("/", PathType::Prefix, backend("old"));
        t.host_mut("h").add("/", PathType::Prefix, backend("new"));
        assert_eq!(routed(&t, "h", "/"), "old");
    }

    #[test]
    fn round_robin_and_no_endpoints() {
        let b = Backend::new(
            "b",
            vec![
                "10.0.0.1:80".parse().unwrap(),
                "10.0.0.2:80".parse().unwrap(),
            ],
        );
        let picks: Vec<_> = (0..4).map(|_| b.pick().unwrap().to_string()).collect();
        assert_eq!(
            picks,
            ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.1:80", "10.0.0.2:80"]
        );
        assert_eq!(Backend::new("none", vec![]).pick(), None);
    }

    #[test]
    fn ports_are_stripped_from_hosts() {
        assert_eq!(strip_port("a.b:80"), "a.b");
        assert_eq!(strip_port("a.b"), "a.b");
        assert_eq!(strip_port("[::1]:443"), "[::1]");
    }
}
