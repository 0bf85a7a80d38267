//! The HTTPRoute routing table: which backend a request's listener protocol, host,
//! path, method, headers and query lead to (pure: no sockets).
//!
//! The Gateway API's matching rules: a hostname is exact or `*.example.com`, a wildcard
//! standing for one or more labels; the most specific hostname wins (exact, then the
//! longest wildcard suffix, then routes without a hostname), and only its matches are
//! tried. Among them precedence goes to an `Exact` path, then the longest `PathPrefix`
//! (element-wise on `/`), then a method match, then the most header matches, then the
//! most query parameter matches; remaining ties go to the oldest route, then by
//! `namespace/name`, then rule and match order. A rule's backends are picked by weight.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use hyper::HeaderMap;

use crate::ingress::routes::{strip_port, Backend};

/// Which ingress listener a request arrived on (a Gateway listener's `protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// Plain HTTP, served on the ingress HTTP port.
    Http,
    /// HTTPS, terminated on the ingress HTTPS port.
    Https,
}

/// How a match's path is compared with a request's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    /// The whole path.
    Exact(String),
    /// Element-wise prefix, stored without its trailing `/` (`""` is `/`).
    Prefix(String),
}

impl PathMatch {
    /// A `PathPrefix` match of `value`.
    pub fn prefix(value: &str) -> PathMatch {
        PathMatch::Prefix(value.trim_end_matches('/').to_owned())
    }

    fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Exact(p) => p == path,
            PathMatch::Prefix(p) => {
                p.is_empty()
                    || path
                        .strip_prefix(p.as_str())
                        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            }
        }
    }

    /// Exact first, then longer prefixes.
    fn rank(&self) -> (u8, std::cmp::Reverse<usize>) {
        match self {
            PathMatch::Exact(p) => (0, std::cmp::Reverse(p.len())),
            PathMatch::Prefix(p) => (1, std::cmp::Reverse(p.len())),
        }
    }
}

/// One `HTTPRouteMatch`: every condition must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    /// The path condition.
    pub path: PathMatch,
    /// The method, upper case, if any.
    pub method: Option<String>,
    /// Exact header matches: lower-case name, value.
    pub headers: Vec<(String, String)>,
    /// Exact query parameter matches: name, value.
    pub query: Vec<(String, String)>,
}

impl Match {
    /// A match of every request under `/`.
    pub fn any() -> Match {
        Match {
            path: PathMatch::prefix("/"),
            method: None,
            headers: Vec::new(),
            query: Vec::new(),
        }
    }

    fn matches(&self, req: &RequestView<'_>) -> bool {
        self.path.matches(req.path)
            && self.method.as_deref().is_none_or(|m| m == req.method)
            && self.headers.iter().all(|(name, value)| {
                req.headers
                    .get_all(name.as_str())
                    .iter()
                    .any(|v| v.to_str().is_ok_and(|v| v == value))
            })
            && self.query.iter().all(|(name, value)| {
                req.query
                    .unwrap_or_default()
                    .split('&')
                    .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
                    .find(|(k, _)| k == name)
                    .is_some_and(|(_, v)| v == value)
            })
    }
}

/// A backend of a rule with its weight.
#[derive(Debug, Clone)]
pub struct WeightedBackend {
    /// The Service port's ready endpoints.
    pub backend: Arc<Backend>,
    /// The share of requests (`weight` / sum of weights).
    pub weight: u32,
    /// Whether the reference resolved; requests picking an unresolved one get a 500, as
    /// the Gateway API asks.
    pub resolved: bool,
}

/// What a rule forwards to: its backends, picked by weight in turn.
#[derive(Debug, Default)]
pub struct Action {
    backends: Vec<WeightedBackend>,
    next: AtomicUsize,
}

impl Action {
    /// An action over `backends` (weight 0 is never picked).
    pub fn new(backends: Vec<WeightedBackend>) -> Action {
        Action {
            backends,
            next: AtomicUsize::new(0),
        }
    }

    /// The backend of the next request: deterministic weighted round robin (`a:3, b:1`
    /// gives a, a, a, b); `None` when there is none with weight (a 500).
    pub fn pick(&self) -> Option<&WeightedBackend> {
        let total: u64 = self.backends.iter().map(|b| u64::from(b.weight)).sum();
        if total == 0 {
            return None;
        }
        let mut n = self.next.fetch_add(1, Ordering::Relaxed) as u64 % total;
        for b in &self.backends {
            if n < u64::from(b.weight) {
                return Some(b);
            }
            n -= u64::from(b.weight);
        }
        None
    }
}

/// Where an entry came from, for precedence ties: the route's creation time and
/// `namespace/name`, the rule and match indexes.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Origin {
    /// `metadata.creationTimestamp` (RFC 3339 sorts as text).
    pub created: String,
    /// `namespace/name`.
    pub route: String,
    /// The rule's index.
    pub rule: usize,
    /// The match's index in the rule.
    pub index: usize,
}

#[derive(Debug)]
struct Entry {
    matcher: Match,
    action: Arc<Action>,
    origin: Origin,
}

impl Entry {
    #[allow(clippy::type_complexity)]
    fn precedence(
        &self,
    ) -> (
        (u8, std::cmp::Reverse<usize>),
        bool,
        std::cmp::Reverse<usize>,
        std::cmp::Reverse<usize>,
        &Origin,
    ) {
        (
            self.matcher.path.rank(),
            self.matcher.method.is_none(),
            std::cmp::Reverse(self.matcher.headers.len()),
            std::cmp::Reverse(self.matcher.query.len()),
            &self.origin,
        )
    }
}

#[derive(Debug, Default)]
struct HostIndex {
    exact: HashMap<String, Vec<Entry>>,
    /// `*.example.com` keyed by `example.com`.
    wildcards: HashMap<String, Vec<Entry>>,
    any: Vec<Entry>,
}

impl HostIndex {
    fn bucket(&mut self, host: &str) -> &mut Vec<Entry> {
        if host.is_empty() {
            &mut self.any
        } else if let Some(suffix) = host.strip_prefix("*.") {
            self.wildcards.entry(suffix.to_owned()).or_default()
        } else {
            self.exact.entry(host.to_owned()).or_default()
        }
    }

    /// The entries of the most specific hostname that covers `host`.
    fn lookup(&self, host: &str) -> &[Entry] {
        if let Some(e) = self.exact.get(host) {
            return e;
        }
        let mut rest = host;
        while let Some((_, parent)) = rest.split_once('.') {
            if let Some(e) = self.wildcards.get(parent) {
                return e;
            }
            rest = parent;
        }
        &self.any
    }

    fn sort(&mut self) {
        let all = self
            .exact
            .values_mut()
            .chain(self.wildcards.values_mut())
            .chain(std::iter::once(&mut self.any));
        for entries in all {
            entries.sort_by(|a, b| a.precedence().cmp(&b.precedence()));
        }
    }
}

/// What the router needs of a request.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    /// The listener it arrived on.
    pub protocol: Protocol,
    /// The Host header (any case, with or without `:port`).
    pub host: &'a str,
    /// The method.
    pub method: &'a str,
    /// The path, without the query.
    pub path: &'a str,
    /// The query string, if any.
    pub query: Option<&'a str>,
    /// The headers.
    pub headers: &'a HeaderMap,
}

/// What a request leads to.
#[derive(Debug, Clone)]
pub enum Routed {
    /// A backend (which may have no ready endpoint: 503).
    Backend(Arc<Backend>),
    /// A rule matched, but its backend does not resolve (or it has none): 500.
    Invalid,
    /// No HTTPRoute matched: the Ingress rules are tried.
    NoMatch,
}

/// Every accepted HTTPRoute rule, by listener protocol and hostname.
#[derive(Debug, Default)]
pub struct RouteTable {
    by_protocol: HashMap<Protocol, HostIndex>,
}

impl RouteTable {
    /// Adds `matcher` for `hostname` (`""` any, `*.x` a wildcard) on `protocol`'s listener.
    pub fn add(
        &mut self,
        protocol: Protocol,
        hostname: &str,
        matcher: Match,
        action: Arc<Action>,
        origin: Origin,
    ) {
        let host = hostname.to_ascii_lowercase();
        self.by_protocol
            .entry(protocol)
            .or_default()
            .bucket(&host)
            .push(Entry {
                matcher,
                action,
                origin,
            });
    }

    /// Orders every hostname's entries by precedence; call once after the last `add`.
    pub fn finish(mut self) -> RouteTable {
        self.by_protocol.values_mut().for_each(HostIndex::sort);
        self
    }

    /// Whether no route is configured.
    pub fn is_empty(&self) -> bool {
        self.by_protocol.is_empty()
    }

    /// Where `req` goes.
    pub fn route(&self, req: &RequestView<'_>) -> Routed {
        let Some(index) = self.by_protocol.get(&req.protocol) else {
            return Routed::NoMatch;
        };
        let host = strip_port(req.host).to_ascii_lowercase();
        let host = host.trim_end_matches('.');
        let Some(entry) = index.lookup(host).iter().find(|e| e.matcher.matches(req)) else {
            return Routed::NoMatch;
        };
        match entry.action.pick() {
            Some(b) if b.resolved => Routed::Backend(b.backend.clone()),
            _ => Routed::Invalid,
        }
    }
}

/// Whether `host` (exact or wildcard) is covered by `pattern` (exact or wildcard), Gateway
/// style: a wildcard covers one or more labels.
pub fn host_covered(pattern: &str, host: &str) -> bool {
    let (pattern, host) = (pattern.to_ascii_lowercase(), host.to_ascii_lowercase());
    match pattern.strip_prefix("*.") {
        None => pattern == host,
        Some(suffix) => {
            let h = host.strip_prefix("*.").unwrap_or(&host);
            host == pattern
                || (h.len() > suffix.len()
                    && h.ends_with(suffix)
                    && h.as_bytes()[h.len() - suffix.len() - 1] == b'.')
        }
    }
}

/// The hostnames a route serves on a listener: the intersection of the listener's
/// `hostname` and the route's `hostnames` (`[""]`: any host). Empty when they do not
/// intersect (the route is not accepted there).
pub fn intersect(listener: Option<&str>, route: &[String]) -> Vec<String> {
    let listener = listener.filter(|h| !h.is_empty());
    match (listener, route.is_empty()) {
        (None, true) => vec![String::new()],
        (Some(l), true) => vec![l.to_ascii_lowercase()],
        (None, false) => route.iter().map(|h| h.to_ascii_lowercase()).collect(),
        (Some(l), false) => {
            let mut out: Vec<String> = route
                .iter()
                .filter_map(|h| {
                    if host_covered(l, h) {
                        Some(h.to_ascii_lowercase())
                    } else if host_covered(h, l) {
                        Some(l.to_ascii_lowercase())
                    } else {
                        None
                    }
                })
                .collect();
            out.sort();
            out.dedup();
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(name: &str) -> Arc<Action> {
        Arc::new(Action::new(vec![WeightedBackend {
            backend: Arc::new(Backend::new(name, vec!["10.0.0.1:80".parse().unwrap()])),
            weight: 1,
            resolved: true,
        }]))
    }

    fn origin(route: &str, rule: usize) -> Origin {
        Origin {
            created: "2026-01-01T00:00:00Z".into(),
            route: route.into(),
            rule,
            index: 0,
        }
    }

    fn path(p: PathMatch) -> Match {
        Match {
            path: p,
            ..Match::any()
        }
    }

    fn routed(t: &RouteTable, protocol: Protocol, host: &str, method: &str, uri: &str) -> String {
        routed_with(t, protocol, host, method, uri, &HeaderMap::new())
    }

    fn routed_with(
        t: &RouteTable,
        protocol: Protocol,
        host: &str,
        method: &str,
        uri: &str,
        headers: &HeaderMap,
    ) -> String {
        let (path, query) = match uri.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (uri, None),
        };
        let req = RequestView {
            protocol,
            host,
            method,
            path,
            query,
            headers,
        };
        match t.route(&req) {
            Routed::Backend(b) => b.name.clone(),
            Routed::Invalid => "500".into(),
            Routed::NoMatch => "none".into(),
        }
    }

    #[test]
    fn exact_before_longest_prefix_element_wise() {
        let mut t = RouteTable::default();
        let h = Protocol::Http;
        t.add(
            h,
            "a.test",
            path(PathMatch::prefix("/")),
            action("root"),
            origin("ns/r", 0),
        );
        t.add(
            h,
            "a.test",
            path(PathMatch::prefix("/api/")),
            action("api"),
            origin("ns/r", 1),
        );
        t.add(
            h,
            "a.test",
            path(PathMatch::Exact("/api".into())),
            action("exact"),
            origin("ns/r", 2),
        );
        let t = t.finish();
        assert_eq!(routed(&t, h, "a.test", "GET", "/api"), "exact");
        assert_eq!(routed(&t, h, "a.test", "GET", "/api/x"), "api");
        assert_eq!(routed(&t, h, "a.test", "GET", "/apix"), "root");
        assert_eq!(routed(&t, h, "A.TEST:8080", "GET", "/"), "root");
        // Another protocol's listener has no routes.
        assert_eq!(routed(&t, Protocol::Https, "a.test", "GET", "/"), "none");
        assert_eq!(routed(&t, h, "b.test", "GET", "/"), "none");
    }

    #[test]
    fn most_specific_hostname_wins_and_wildcards_span_labels() {
        let mut t = RouteTable::default();
        let h = Protocol::Http;
        t.add(h, "", Match::any(), action("any"), origin("ns/a", 0));
        t.add(
            h,
            "*.example.test",
            Match::any(),
            action("wild"),
            origin("ns/w", 0),
        );
        t.add(
            h,
            "*.b.example.test",
            Match::any(),
            action("wild-b"),
            origin("ns/wb", 0),
        );
        t.add(
            h,
            "x.example.test",
            path(PathMatch::prefix("/x")),
            action("x"),
            origin("ns/x", 0),
        );
        let t = t.finish();
        assert_eq!(routed(&t, h, "q.example.test", "GET", "/"), "wild");
        assert_eq!(routed(&t, h, "q.r.example.test", "GET", "/"), "wild");
        assert_eq!(routed(&t, h, "q.b.example.test", "GET", "/"), "wild-b");
        assert_eq!(routed(&t, h, "other.test", "GET", "/"), "any");
        assert_eq!(routed(&t, h, "x.example.test", "GET", "/x/1"), "x");
        // The exact hostname's routes alone are tried.
        assert_eq!(routed(&t, h, "x.example.test", "GET", "/y"), "none");
    }

    #[test]
    fn method_headers_query_and_ties() {
        let mut t = RouteTable::default();
        let h = Protocol::Http;
        let post = Match {
            method: Some("POST".into()),
            ..Match::any()
        };
        let header = Match {
            headers: vec![("x-env".into(), "canary".into())],
            ..Match::any()
        };
        let query = Match {
            query: vec![("v".into(), "2".into())],
            ..Match::any()
        };
        t.add(
            h,
            "h",
            Match::any(),
            action("newer"),
            Origin {
                created: "2026-02-01T00:00:00Z".into(),
                ..origin("ns/n", 0)
            },
        );
        t.add(h, "h", Match::any(), action("older"), origin("ns/o", 0));
        t.add(h, "h", post, action("post"), origin("ns/p", 0));
        t.add(h, "h", header, action("canary"), origin("ns/c", 0));
        t.add(h, "h", query, action("v2"), origin("ns/q", 0));
        let t = t.finish();
        assert_eq!(routed(&t, h, "h", "POST", "/"), "post");
        assert_eq!(routed(&t, h, "h", "GET", "/"), "older");
        assert_eq!(routed(&t, h, "h", "GET", "/?a=1&v=2"), "v2");
        let mut headers = HeaderMap::new();
        headers.insert("X-Env", "canary".parse().unwrap());
        assert_eq!(routed_with(&t, h, "h", "GET", "/", &headers), "canary");
        headers.insert("X-Env", "prod".parse().unwrap());
        assert_eq!(routed_with(&t, h, "h", "GET", "/", &headers), "older");
    }

    #[test]
    fn weights_and_unresolved_backends() {
        let b = |name: &str, weight, resolved| WeightedBackend {
            backend: Arc::new(Backend::new(name, vec!["10.0.0.1:80".parse().unwrap()])),
            weight,
            resolved,
        };
        let a = Action::new(vec![b("a", 3, true), b("b", 1, true), b("z", 0, true)]);
        let picks: Vec<_> = (0..8)
            .map(|_| a.pick().unwrap().backend.name.clone())
            .collect();
        assert_eq!(picks, ["a", "a", "a", "b", "a", "a", "a", "b"]);
        assert!(Action::new(vec![b("z", 0, true)]).pick().is_none());
        let mut t = RouteTable::default();
        t.add(
            Protocol::Http,
            "",
            Match::any(),
            Arc::new(Action::new(vec![b("missing", 1, false)])),
            origin("ns/m", 0),
        );
        t.add(
            Protocol::Http,
            "",
            path(PathMatch::prefix("/none")),
            Arc::new(Action::new(vec![])),
            origin("ns/m", 1),
        );
        let t = t.finish();
        assert_eq!(routed(&t, Protocol::Http, "h", "GET", "/"), "500");
        assert_eq!(routed(&t, Protocol::Http, "h", "GET", "/none"), "500");
    }

    #[test]
    fn hostname_intersection() {
        let hosts = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(intersect(None, &[]), [""]);
        assert_eq!(intersect(Some("a.test"), &[]), ["a.test"]);
        assert_eq!(intersect(None, &hosts(&["A.test"])), ["a.test"]);
        assert_eq!(
            intersect(
                Some("*.example.test"),
                &hosts(&["a.example.test", "b.other.test"])
            ),
            ["a.example.test"]
        );
        assert_eq!(
            intersect(Some("a.example.test"), &hosts(&["*.example.test"])),
            ["a.example.test"]
        );
        assert_eq!(
            intersect(Some("*.example.test"), &hosts(&["*.a.example.test"])),
            ["*.a.example.test"]
        );
        assert!(intersect(Some("a.test"), &hosts(&["b.test"])).is_empty());
        assert!(!host_covered("*.example.test", "example.test"));
    }
}
