//! Packet rules in nftables: skiff's own table, nothing else.
//!
//! Everything lives in one `table ip <name>` (default `skiff`) that skiff
//! creates; skiff never lists, flushes or changes any other table. Every
//! change is one `nft -f -` run, which the kernel applies as one transaction.
//!
//! Per-packet cost does not grow with the number of containers, networks or
//! published ports: rules only look things up in sets and maps (hash or
//! interval lookups), and a change only adds or deletes elements:
//!
//! | object | holds |
//! |---|---|
//! | `bridges` | every network's bridge |
//! | `isolated` | bridges of isolated networks |
//! | `internal` | bridges of internal networks (`--internal`: nothing in or out) |
//! | `same_bridge` | `bridge . bridge` for every bridge |
//! | `subnets` | every network's subnet (masqueraded when leaving it) |
//! | `ports` | `proto . port : container-ip . port` for `-p port:port` |
//! | `host_ports` | `host-ip . proto . port : container-ip . port` for `-p ip:port:port` |
//!
//! The table is level-triggered: [`TableState::desired`] computes what it
//! must hold from the persisted networks and attachments, and
//! [`Rules::replace`] rebuilds it in one transaction when the listing differs
//! (someone deleted the table, a chain or elements).
//!
//! Scripts use nft's text syntax: the JSON parser of nftables 1.0.6 (Debian
//! 12) cannot express a map whose data is a concatenation (`ipv4_addr .
//! inet_service`) and crashes on the `dnat ... map` rule built from it.
//! The scripts only contain validated interface names, addresses and
//! numbers. Listings are read as JSON (`nft -j list table`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use ipnet::Ipv4Net;
use serde_json::Value;

use crate::libnftables;
use crate::ports::{PortMapping, Protocol};
use crate::store::{validate_ifname, Network};

/// Errors of nftables programming.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// The `nft` binary could not be run.
    #[error("running {binary}: {source}; is nftables installed?")]
    Spawn {
        /// The binary.
        binary: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// `nft` rejected the transaction; nothing of it was applied.
    #[error("nft transaction on table ip {table} failed: {stderr}")]
    Apply {
        /// skiff's table.
        table: String,
        /// What nft said.
        stderr: String,
    },
    /// A listing did not parse.
    #[error("nft listing of table ip {table}: {reason}")]
    Listing {
        /// skiff's table.
        table: String,
        /// Why.
        reason: String,
    },
    /// The table name is not acceptable.
    #[error(
        "invalid nftables table name '{0}': use letters, digits and '_', at most 32 characters"
    )]
    TableName(String),
}

/// Runs nftables transactions and listings.
pub trait Nft: Send + Sync {
    /// Applies `script` (nft syntax) as one transaction: all or nothing.
    fn apply(&self, table: &str, script: &str) -> Result<(), NftError>;
    /// `nft -j list table ip <table>`, or `None` if the table does not exist.
    fn list_table(&self, table: &str) -> Result<Option<Value>, NftError>;

    /// The table's chains (without their rules) and its set or map `map` with the
    /// elements, in `nft -j` form; `None` if the table does not exist. Periodic checks use
    /// this: with thousands of chains the whole table is megabytes of rules.
    fn list_chains_and_map(&self, table: &str, map: &str) -> Result<Option<Value>, NftError> {
        let _ = map;
        self.list_table(table)
    }

    /// The names of every `ip` family table on the host (`nft -j list tables`).
    fn list_tables(&self) -> Result<Vec<String>, NftError> {
        Ok(Vec::new())
    }
}

/// The real `nft` binary, or the same in-process ([`NftCli::in_process`]).
#[derive(Debug, Clone)]
pub struct NftCli {
    binary: PathBuf,
    /// The libnftables context transactions run in, made on first use (by the thread,
    /// and so in the network namespace, that first applies); `None`: run `binary`.
    session: Option<Arc<Mutex<Option<libnftables::Context>>>>,
}

impl Default for NftCli {
    fn default() -> Self {
        NftCli::new("nft")
    }
}

impl NftCli {
    /// Uses the `nft` binary at `binary`.
    pub fn new(binary: impl Into<PathBuf>) -> Self {
        NftCli {
            binary: binary.into(),
            session: None,
        }
    }

    /// Runs transactions and listings through libnftables in this process, with one
    /// context kept open for transactions (see [`libnftables`]): what the service proxy
    /// uses, as a change of its table costs less than starting `nft`. Falls back to the
    /// `nft` command when the library cannot be loaded.
    pub fn in_process() -> Self {
        NftCli {
            binary: PathBuf::from("nft"),
            session: Some(Arc::new(Mutex::new(None))),
        }
    }

    /// Runs `commands` in the kept context; `None` when not in-process or without the
    /// library.
    fn run_in_process(&self, commands: &str) -> Option<Result<String, String>> {
        let session = self.session.as_ref()?;
        let mut slot = session.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            *slot = Some(libnftables::Context::new(false)?);
        }
        slot.as_mut().map(|ctx| ctx.run(commands))
    }
}

impl Nft for NftCli {
    fn apply(&self, table: &str, script: &str) -> Result<(), NftError> {
        if let Some(result) = self.run_in_process(script) {
            return result.map(drop).map_err(|stderr| NftError::Apply {
                table: table.to_string(),
                stderr,
            });
        }
        let spawn = |source| NftError::Spawn {
            binary: self.binary.clone(),
            source,
        };
        let mut child = Command::new(&self.binary)
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(spawn)?;
        let mut stdin = child.stdin.take().expect("piped stdin");
        let written = stdin.write_all(script.as_bytes());
        drop(stdin);
        let output = child.wait_with_output().map_err(spawn)?;
        written.map_err(spawn)?;
        if !output.status.success() {
            return Err(NftError::Apply {
                table: table.to_string(),
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            });
        }
        Ok(())
    }

    fn list_chains_and_map(&self, table: &str, map: &str) -> Result<Option<Value>, NftError> {
        let Some(map_listing) = self.list(table, &["map", "ip", table, map])? else {
            return Ok(None);
        };
        let Some(chains) = self.list(table, &["chains", "ip"])? else {
            return Ok(None);
        };
        let items = |v: &Value| {
            v.get("nftables")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        };
        let mut all: Vec<Value> = items(&chains)
            .into_iter()
            .filter(|item| item.pointer("/chain/table").and_then(Value::as_str) == Some(table))
            .collect();
        all.extend(
            items(&map_listing)
                .into_iter()
                .filter(|item| item.get("map").is_some() || item.get("set").is_some()),
        );
        Ok(Some(serde_json::json!({ "nftables": all })))
    }

    fn list_table(&self, table: &str) -> Result<Option<Value>, NftError> {
        self.list(table, &["table", "ip", table])
    }

    fn list_tables(&self) -> Result<Vec<String>, NftError> {
        let listing = self.list("", &["tables", "ip"])?.unwrap_or_default();
        Ok(listing
            .get("nftables")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|item| item.pointer("/table/name").and_then(Value::as_str))
            .map(str::to_string)
            .collect())
    }
}

impl NftCli {
    /// `nft -j list WHAT...`, or `None` when what it names (in `table`) does not exist.
    fn list(&self, table: &str, what: &[&str]) -> Result<Option<Value>, NftError> {
        // In-process: a context of its own (JSON output), closed after the listing.
        if let Some(mut ctx) = self
            .session
            .as_ref()
            .and_then(|_| libnftables::Context::new(true))
        {
            return match ctx.run(&format!("list {}", what.join(" "))) {
                Err(e) if e.contains("No such file or directory") => Ok(None),
                Err(stderr) => Err(NftError::Apply {
                    table: table.to_string(),
                    stderr,
                }),
                Ok(text) => serde_json::from_str(&text)
                    .map(Some)
                    .map_err(|e| NftError::Listing {
                        table: table.to_string(),
                        reason: e.to_string(),
                    }),
            };
        }
        let output = Command::new(&self.binary)
            .args(["-j", "list"])
            .args(what)
            .stdin(Stdio::null())
            .output()
            .map_err(|source| NftError::Spawn {
                binary: self.binary.clone(),
                source,
            })?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            if stderr.contains("No such file or directory") {
                return Ok(None);
            }
            return Err(NftError::Apply {
                table: table.to_string(),
                stderr: stderr.trim().to_string(),
            });
        }
        serde_json::from_slice(&output.stdout)
            .map(Some)
            .map_err(|e| NftError::Listing {
                table: table.to_string(),
                reason: e.to_string(),
            })
    }
}

/// Checks an nftables table name.
pub fn validate_table(name: &str) -> Result<(), NftError> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(NftError::TableName(name.to_string()))
    }
}

/// A published port as programmed: the mapping and the container it leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Published {
    /// The `-p` mapping.
    pub mapping: PortMapping,
    /// The container's address.
    pub target: Ipv4Addr,
}

/// What skiff's table holds, read back from a listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableState {
    /// Elements of `bridges`.
    pub bridges: BTreeSet<String>,
    /// Elements of `isolated`.
    pub isolated: BTreeSet<String>,
    /// Elements of `internal`.
    pub internal: BTreeSet<String>,
    /// Elements of `same_bridge` (the first of each pair).
    pub same_bridge: BTreeSet<String>,
    /// Elements of `subnets`.
    pub subnets: BTreeSet<Ipv4Net>,
    /// Elements of `ports` and `host_ports`.
    pub published: BTreeSet<Published>,
    /// Base chains and how many rules each holds.
    pub chains: BTreeMap<String, usize>,
}

impl TableState {
    /// What skiff's table must hold for `networks` and the ports published
    /// to containers (`published`), with the chains of `rules`.
    pub fn desired<'a>(
        rules: &Rules,
        networks: impl IntoIterator<Item = &'a Network>,
        published: impl IntoIterator<Item = Published>,
    ) -> TableState {
        let mut state = TableState {
            published: published.into_iter().collect(),
            chains: rules
                .chains()
                .iter()
                .map(|c| (c.name.to_string(), c.rules.len()))
                .collect(),
            ..Default::default()
        };
        for n in networks {
            state.bridges.insert(n.bridge.clone());
            state.same_bridge.insert(n.bridge.clone());
            state.subnets.insert(n.subnet);
            if n.isolated {
                state.isolated.insert(n.bridge.clone());
            }
            if n.internal {
                state.internal.insert(n.bridge.clone());
            }
        }
        state
    }

    /// Parses `nft -j list table ip <table>` output.
    pub fn from_listing(table: &str, listing: &Value) -> Result<TableState, NftError> {
        let bad = |reason: String| NftError::Listing {
            table: table.to_string(),
            reason,
        };
        let mut state = TableState::default();
        let items = listing
            .get("nftables")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("no nftables array".into()))?;
        for item in items {
            if let Some(chain) = item.get("chain") {
                let name = chain
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                state.chains.entry(name.to_string()).or_default();
                continue;
            }
            if let Some(rule) = item.get("rule") {
                let chain = rule
                    .get("chain")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                *state.chains.entry(chain.to_string()).or_default() += 1;
                continue;
            }
            let Some(set) = item.get("set").or_else(|| item.get("map")) else {
                continue;
            };
            let name = set.get("name").and_then(Value::as_str).unwrap_or_default();
            let elems = set
                .get("elem")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for elem in &elems {
                // Elements with comments or timeouts come wrapped in {"elem": {"val": ...}}.
                let elem = elem.get("elem").and_then(|e| e.get("val")).unwrap_or(elem);
                match name {
                    "bridges" | "isolated" | "internal" => {
                        let s = elem
                            .as_str()
                            .ok_or_else(|| bad(format!("bad {name} element {elem}")))?
                            .to_string();
                        match name {
                            "bridges" => state.bridges.insert(s),
                            "isolated" => state.isolated.insert(s),
                            _ => state.internal.insert(s),
                        };
                    }
                    "same_bridge" => {
                        let first = concat(elem)
                            .and_then(|c| c.first().and_then(Value::as_str))
                            .ok_or_else(|| bad(format!("bad same_bridge element {elem}")))?;
                        state.same_bridge.insert(first.to_string());
                    }
                    "subnets" => {
                        let net = subnet(elem)
                            .ok_or_else(|| bad(format!("bad subnets element {elem}")))?;
                        state.subnets.insert(net);
                    }
                    "ports" | "host_ports" => {
                        let p = published(elem, name == "host_ports")
                            .ok_or_else(|| bad(format!("bad {name} element {elem}")))?;
                        state.published.insert(p);
                    }
                    _ => {}
                }
            }
        }
        Ok(state)
    }
}

fn concat(v: &Value) -> Option<&Vec<Value>> {
    v.get("concat").and_then(Value::as_array)
}

fn subnet(v: &Value) -> Option<Ipv4Net> {
    if let Some(s) = v.as_str() {
        return Ipv4Net::new(s.parse().ok()?, 32).ok();
    }
    let p = v.get("prefix")?;
    Ipv4Net::new(
        p.get("addr")?.as_str()?.parse().ok()?,
        p.get("len")?.as_u64()? as u8,
    )
    .ok()
}

fn published(v: &Value, with_host_ip: bool) -> Option<Published> {
    let pair = v.as_array()?;
    let key = concat(pair.first()?)?;
    let data = concat(pair.get(1)?)?;
    let (host_ip, rest) = if with_host_ip {
        (Some(key.first()?.as_str()?.parse().ok()?), &key[1..])
    } else {
        (None, &key[..])
    };
    let protocol = match rest.first()? {
        Value::String(s) => s.parse().ok()?,
        Value::Number(n) if n.as_u64() == Some(6) => Protocol::Tcp,
        Value::Number(n) if n.as_u64() == Some(17) => Protocol::Udp,
        _ => return None,
    };
    Some(Published {
        mapping: PortMapping {
            host_ip,
            host_port: rest.get(1)?.as_u64()? as u16,
            container_port: data.get(1)?.as_u64()? as u16,
            protocol,
        },
        target: data.first()?.as_str()?.parse().ok()?,
    })
}

/// A base chain of skiff's table.
#[derive(Debug, Clone, Copy)]
pub struct Chain {
    /// Chain name.
    pub name: &'static str,
    /// `filter` or `nat`.
    pub kind: &'static str,
    /// Netfilter hook.
    pub hook: &'static str,
    /// Priority at the hook.
    pub priority: i32,
    /// Its rules, in order.
    pub rules: &'static [&'static str],
}

/// Renders skiff's nftables scripts for one table.
#[derive(Debug, Clone)]
pub struct Rules {
    table: String,
}

impl Rules {
    /// Scripts for `table ip <table>`.
    pub fn new(table: &str) -> Result<Rules, NftError> {
        validate_table(table)?;
        Ok(Rules {
            table: table.to_string(),
        })
    }

    /// The table name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// skiff's base chains and their rules.
    pub fn chains(&self) -> [Chain; 5] {
        [
            Chain {
                // With route_localnet on the bridges (needed for 127.0.0.1
                // publishing), refuse packets from containers that claim a
                // loopback destination (kube-proxy and Docker do the same).
                name: "guard",
                kind: "filter",
                hook: "prerouting",
                priority: -300,
                rules: &["iifname @bridges ip daddr 127.0.0.0/8 drop"],
            },
            Chain {
                name: "prerouting",
                kind: "nat",
                hook: "prerouting",
                priority: -100,
                rules: &[
                    "fib daddr type local dnat ip to ip daddr . meta l4proto . th dport map @host_ports",
                    "fib daddr type local dnat ip to meta l4proto . th dport map @ports",
                ],
            },
            Chain {
                // Connections the host itself opens (127.0.0.1, its own addresses).
                name: "output",
                kind: "nat",
                hook: "output",
                priority: -100,
                rules: &[
                    "fib daddr type local dnat ip to ip daddr . meta l4proto . th dport map @host_ports",
                    "fib daddr type local dnat ip to meta l4proto . th dport map @ports",
                ],
            },
            Chain {
                name: "forward",
                kind: "filter",
                hook: "forward",
                priority: 0,
                rules: &[
                    "iifname . oifname @same_bridge accept",
                    // Internal networks: nothing leaves or enters, not even
                    // through another container's published port.
                    "iifname @internal drop",
                    "oifname @internal drop",
                    // Published ports are public: reachable from any other network.
                    "ct status dnat accept",
                    "iifname @isolated oifname @bridges drop",
                    "iifname @bridges oifname @isolated drop",
                ],
            },
            Chain {
                name: "postrouting",
                kind: "nat",
                hook: "postrouting",
                priority: 100,
                rules: &[
                    // Outbound: leave with the host's address.
                    "ip saddr @subnets oifname != @bridges masquerade",
                    // Hairpin: a container reaching a published port comes back
                    // from the gateway, so the reply returns through the host.
                    "ct status dnat ip saddr @subnets oifname @bridges masquerade",
                    // The host reaching a published port through 127.0.0.1.
                    "ip saddr 127.0.0.0/8 oifname @bridges masquerade",
                ],
            },
        ]
    }

    /// The table, its sets, maps and chains, and the chains' rules. Idempotent:
    /// objects are added (a no-op when present) and the chains are flushed
    /// and refilled within the same transaction, leaving elements alone.
    pub fn base(&self) -> String {
        let t = &self.table;
        let mut s = String::new();
        let _ = writeln!(s, "add table ip {t}");
        for (name, spec) in [
            ("bridges", "type ifname;"),
            ("isolated", "type ifname;"),
            ("internal", "type ifname;"),
            ("same_bridge", "type ifname . ifname;"),
            ("subnets", "type ipv4_addr; flags interval;"),
        ] {
            let _ = writeln!(s, "add set ip {t} {name} {{ {spec} }}");
        }
        let _ = writeln!(
            s,
            "add map ip {t} ports {{ type inet_proto . inet_service : ipv4_addr . inet_service; }}"
        );
        let _ = writeln!(
            s,
            "add map ip {t} host_ports {{ type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service; }}"
        );
        for c in self.chains() {
            let _ = writeln!(
                s,
                "add chain ip {t} {} {{ type {} hook {} priority {}; policy accept; }}",
                c.name, c.kind, c.hook, c.priority
            );
            let _ = writeln!(s, "flush chain ip {t} {}", c.name);
            for rule in c.rules {
                let _ = writeln!(s, "add rule ip {t} {} {rule}", c.name);
            }
        }
        s
    }

    /// Rebuilds the whole table as `state` says, in one transaction: the
    /// old table (whatever is left of it) goes, the new one comes complete,
    /// so no packet sees a half-built table.
    pub fn replace(&self, state: &TableState) -> String {
        let t = &self.table;
        let mut s = self.delete_table();
        s.push_str(&self.base());
        for b in &state.bridges {
            let _ = writeln!(s, "add element ip {t} bridges {{ \"{b}\" }}");
        }
        for b in &state.same_bridge {
            let _ = writeln!(s, "add element ip {t} same_bridge {{ \"{b}\" . \"{b}\" }}");
        }
        for b in &state.isolated {
            let _ = writeln!(s, "add element ip {t} isolated {{ \"{b}\" }}");
        }
        for b in &state.internal {
            let _ = writeln!(s, "add element ip {t} internal {{ \"{b}\" }}");
        }
        for n in &state.subnets {
            let _ = writeln!(s, "add element ip {t} subnets {{ {n} }}");
        }
        for p in &state.published {
            let (map, elem) = Self::port_element(p, true);
            let _ = writeln!(s, "add element ip {t} {map} {{ {elem} }}");
        }
        s
    }

    fn network_elements(&self, verb: &str, network: &Network, out: &mut String) {
        let t = &self.table;
        let b = &network.bridge;
        debug_assert!(validate_ifname(b));
        let _ = writeln!(out, "{verb} element ip {t} bridges {{ \"{b}\" }}");
        let _ = writeln!(
            out,
            "{verb} element ip {t} same_bridge {{ \"{b}\" . \"{b}\" }}"
        );
        let _ = writeln!(
            out,
            "{verb} element ip {t} subnets {{ {} }}",
            network.subnet
        );
        if network.isolated {
            let _ = writeln!(out, "{verb} element ip {t} isolated {{ \"{b}\" }}");
        }
        if network.internal {
            let _ = writeln!(out, "{verb} element ip {t} internal {{ \"{b}\" }}");
        }
    }

    /// [`Rules::base`] plus `network`'s set elements.
    pub fn network_up(&self, network: &Network) -> String {
        let mut s = self.base();
        self.network_elements("add", network, &mut s);
        s
    }

    /// Removes `network`'s set elements; missing elements are no error.
    pub fn network_down(&self, network: &Network) -> String {
        let mut s = format!("add table ip {}\n", self.table);
        // `add` then `delete` in one transaction deletes whether or not the
        // element was there (nftables 1.0.6 has no `destroy`).
        self.network_elements("add", network, &mut s);
        self.network_elements("delete", network, &mut s);
        s
    }

    fn port_element(p: &Published, with_data: bool) -> (&'static str, String) {
        let m = &p.mapping;
        let key = match m.host_ip {
            Some(ip) => format!("{ip} . {} . {}", m.protocol, m.host_port),
            None => format!("{} . {}", m.protocol, m.host_port),
        };
        let map = if m.host_ip.is_some() {
            "host_ports"
        } else {
            "ports"
        };
        if with_data {
            (map, format!("{key} : {} . {}", p.target, m.container_port))
        } else {
            (map, key)
        }
    }

    /// Publishes ports: `create` fails the whole transaction when a host
    /// port is taken, so two containers can never own one port.
    pub fn publish(&self, ports: &[Published]) -> String {
        let mut s = String::new();
        for p in ports {
            let (map, elem) = Self::port_element(p, true);
            let _ = writeln!(s, "create element ip {} {map} {{ {elem} }}", self.table);
        }
        s
    }

    /// Unpublishes ports; missing elements are no error, but an element that
    /// now leads to another container fails the transaction. (`add` then
    /// `delete` in one transaction: nftables 1.0.6 has no `destroy`, and a
    /// plain `delete` would remove another container's port by key alone.)
    pub fn unpublish(&self, ports: &[Published]) -> String {
        let mut s = String::new();
        for p in ports {
            let (map, elem) = Self::port_element(p, true);
            let _ = writeln!(s, "add element ip {} {map} {{ {elem} }}", self.table);
        }
        s.push_str(&self.delete_published(ports));
        s
    }

    /// Deletes exactly these published ports, which must exist (read from a listing).
    pub fn delete_published(&self, ports: &[Published]) -> String {
        let mut s = String::new();
        for p in ports {
            let (map, key) = Self::port_element(p, false);
            let _ = writeln!(s, "delete element ip {} {map} {{ {key} }}", self.table);
        }
        s
    }

    /// Deletes exactly the elements in `stale`, which must exist (read from a listing).
    pub fn delete_stale(&self, stale: &TableState) -> String {
        let t = &self.table;
        let mut s = self.delete_published(&stale.published.iter().copied().collect::<Vec<_>>());
        for b in &stale.bridges {
            let _ = writeln!(s, "delete element ip {t} bridges {{ \"{b}\" }}");
        }
        for b in &stale.isolated {
            let _ = writeln!(s, "delete element ip {t} isolated {{ \"{b}\" }}");
        }
        for b in &stale.internal {
            let _ = writeln!(s, "delete element ip {t} internal {{ \"{b}\" }}");
        }
        for b in &stale.same_bridge {
            let _ = writeln!(
                s,
                "delete element ip {t} same_bridge {{ \"{b}\" . \"{b}\" }}"
            );
        }
        for n in &stale.subnets {
            let _ = writeln!(s, "delete element ip {t} subnets {{ {n} }}");
        }
        s
    }

    /// Deletes skiff's whole table (uninstall, tests).
    pub fn delete_table(&self) -> String {
        format!("add table ip {t}\ndelete table ip {t}\n", t = self.table)
    }
}

/// An in-memory stand-in for `nft` that understands the element commands
/// [`Rules`] writes, applies each script all-or-nothing, and lists the table
/// in nft's JSON shape.
#[derive(Debug, Default)]
pub struct FakeNft {
    state: Mutex<FakeTables>,
}

#[derive(Debug, Default, Clone)]
struct FakeTables {
    /// table to (set name to (key to data)).
    tables: BTreeMap<String, BTreeMap<String, BTreeMap<String, String>>>,
    /// table to (chain name to number of rules).
    chains: BTreeMap<String, BTreeMap<String, usize>>,
    scripts: Vec<String>,
}

impl FakeNft {
    /// Every script applied successfully, in order.
    pub fn scripts(&self) -> Vec<String> {
        self.state.lock().unwrap().scripts.clone()
    }

    /// Number of elements in set or map `name` of `table`.
    pub fn elements(&self, table: &str, name: &str) -> usize {
        self.state
            .lock()
            .unwrap()
            .tables
            .get(table)
            .and_then(|t| t.get(name))
            .map_or(0, |s| s.len())
    }
}

fn fake_error(table: &str, msg: &str) -> NftError {
    NftError::Apply {
        table: table.to_string(),
        stderr: msg.to_string(),
    }
}

impl Nft for FakeNft {
    fn apply(&self, table: &str, script: &str) -> Result<(), NftError> {
        let mut guard = self.state.lock().unwrap();
        let mut next = guard.tables.clone();
        let mut chains = guard.chains.clone();
        let missing = || fake_error(table, "No such file or directory");
        for line in script.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["add", "table", "ip", t] => {
                    next.entry(t.to_string()).or_default();
                    chains.entry(t.to_string()).or_default();
                }
                ["delete", "table", "ip", t] => {
                    next.remove(*t).ok_or_else(missing)?;
                    chains.remove(*t);
                }
                ["add", "chain", "ip", t, name, ..] => {
                    chains
                        .get_mut(*t)
                        .ok_or_else(missing)?
                        .entry(name.to_string())
                        .or_default();
                }
                ["flush", "chain", "ip", t, name] => {
                    *chains
                        .get_mut(*t)
                        .and_then(|c| c.get_mut(*name))
                        .ok_or_else(missing)? = 0;
                }
                ["add", "rule", "ip", t, name, ..] => {
                    *chains
                        .get_mut(*t)
                        .and_then(|c| c.get_mut(*name))
                        .ok_or_else(missing)? += 1;
                }
                ["delete", "chain", "ip", t, name] => {
                    chains
                        .get_mut(*t)
                        .and_then(|c| c.remove(*name))
                        .ok_or_else(missing)?;
                }
                ["add", "set" | "map", "ip", t, name, ..] => {
                    next.get_mut(*t)
                        .ok_or_else(|| fake_error(table, "No such file or directory"))?
                        .entry(name.to_string())
                        .or_default();
                }
                [verb @ ("add" | "create" | "delete"), "element", "ip", t, name, "{", rest @ ..] => {
                    let body = rest[..rest.len() - 1].join(" ");
                    let (key, data) = match body.split_once(" : ") {
                        Some((k, d)) => (k.to_string(), d.to_string()),
                        None => (body.clone(), String::new()),
                    };
                    let set = next
                        .get_mut(*t)
                        .and_then(|t| t.get_mut(*name))
                        .ok_or_else(|| fake_error(table, "No such file or directory"))?;
                    match (*verb, set.get(&key)) {
                        ("create", Some(_)) => return Err(fake_error(table, "File exists")),
                        ("add", Some(d)) if *d != data => {
                            return Err(fake_error(table, "File exists"))
                        }
                        ("add" | "create", _) => {
                            set.insert(key, data);
                        }
                        ("delete", Some(_)) => {
                            set.remove(&key);
                        }
                        _ => return Err(fake_error(table, "No such file or directory")),
                    }
                }
                _ => {}
            }
        }
        guard.tables = next;
        guard.chains = chains;
        guard.scripts.push(script.to_string());
        Ok(())
    }

    fn list_tables(&self) -> Result<Vec<String>, NftError> {
        Ok(self.state.lock().unwrap().tables.keys().cloned().collect())
    }

    fn list_table(&self, table: &str) -> Result<Option<Value>, NftError> {
        let guard = self.state.lock().unwrap();
        let Some(sets) = guard.tables.get(table) else {
            return Ok(None);
        };
        let word = |w: &str| -> Value {
            let w = w.trim_matches('"');
            match w.parse::<u64>() {
                Ok(n) => Value::from(n),
                Err(_) => Value::from(w),
            }
        };
        let value = |text: &str| -> Value {
            let parts: Vec<&str> = text.split(" . ").collect();
            if parts.len() > 1 {
                serde_json::json!({ "concat": parts.iter().map(|p| word(p)).collect::<Vec<_>>() })
            } else if let Ok(net) = text.parse::<Ipv4Net>() {
                serde_json::json!({ "prefix": { "addr": net.addr().to_string(), "len": net.prefix_len() } })
            } else {
                word(text)
            }
        };
        let mut items = Vec::new();
        for (name, elems) in sets {
            let elem: Vec<Value> = elems
                .iter()
                .map(|(k, d)| {
                    if d.is_empty() {
                        value(k)
                    } else {
                        Value::Array(vec![value(k), value(d)])
                    }
                })
                .collect();
            items
                .push(serde_json::json!({ "set": { "name": name, "table": table, "elem": elem } }));
        }
        for (name, rules) in guard.chains.get(table).into_iter().flatten() {
            items.push(serde_json::json!({ "chain": { "name": name, "table": table } }));
            for _ in 0..*rules {
                items.push(serde_json::json!({ "rule": { "chain": name, "table": table } }));
            }
        }
        Ok(Some(serde_json::json!({ "nftables": items })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn network(isolated: bool) -> Network {
        Network {
            name: "n".into(),
            id: "0".repeat(64),
            bridge: "br-test".into(),
            subnet: "10.0.5.0/24".parse().unwrap(),
            gateway: "10.0.5.1".parse().unwrap(),
            isolated,
            dns: true,
            internal: false,
            created: 0,
        }
    }

    fn published(spec: &str, target: [u8; 4]) -> Published {
        Published {
            mapping: spec.parse().unwrap(),
            target: Ipv4Addr::from(target),
        }
    }

    #[test]
    fn table_names_are_checked() {
        assert!(Rules::new("skiff").is_ok());
        assert!(Rules::new("skt_ab12").is_ok());
        for bad in ["", "1a", "a-b", "a b", "a;b", &"x".repeat(33)] {
            assert!(Rules::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn base_rules_only_touch_our_table_and_use_lookups() {
        let rules = Rules::new("skiff").unwrap();
        let base = rules.base();
        for line in base.lines() {
            assert!(
                line.contains(" ip skiff ") || line.ends_with(" ip skiff"),
                "{line}"
            );
            assert!(!line.starts_with("flush ruleset") && !line.starts_with("flush table"));
        }
        // Every DNAT is a map lookup, never one rule per port.
        let dnat: Vec<&str> = base.lines().filter(|l| l.contains("dnat ip to")).collect();
        assert_eq!(dnat.len(), 4);
        assert!(dnat.iter().all(|l| l.contains("map @")));
    }

    #[test]
    fn publish_and_unpublish_render_map_elements() {
        let rules = Rules::new("skiff").unwrap();
        let p = [
            published("8080:80", [10, 0, 5, 2]),
            published("127.0.0.1:5353:53/udp", [10, 0, 5, 2]),
        ];
        assert_eq!(
            rules.publish(&p),
            "create element ip skiff ports { tcp . 8080 : 10.0.5.2 . 80 }\n\
             create element ip skiff host_ports { 127.0.0.1 . udp . 5353 : 10.0.5.2 . 53 }\n"
        );
        assert_eq!(
            rules.delete_published(&p),
            "delete element ip skiff ports { tcp . 8080 }\n\
             delete element ip skiff host_ports { 127.0.0.1 . udp . 5353 }\n"
        );
    }

    #[test]
    fn fake_applies_all_or_nothing_and_lists() {
        let nft = FakeNft::default();
        let rules = Rules::new("t").unwrap();
        let net = network(true);
        nft.apply("t", &rules.network_up(&net)).unwrap();
        let a = published("8080:80", [10, 0, 5, 2]);
        let b = published("8080:80", [10, 0, 5, 3]);
        let c = published("9090:90", [10, 0, 5, 3]);
        nft.apply("t", &rules.publish(&[a])).unwrap();
        // The second container cannot take 8080, and does not get 9090 either.
        assert!(nft.apply("t", &rules.publish(&[c, b])).is_err());
        let listing = nft.list_table("t").unwrap().unwrap();
        let state = TableState::from_listing("t", &listing).unwrap();
        assert_eq!(state.published, BTreeSet::from([a]));
        assert_eq!(state.bridges, BTreeSet::from(["br-test".to_string()]));
        assert_eq!(state.isolated.len(), 1);
        assert_eq!(state.subnets, BTreeSet::from([net.subnet]));
        // Unpublishing twice is fine; unpublishing someone else's port is not.
        nft.apply("t", &rules.unpublish(&[a])).unwrap();
        nft.apply("t", &rules.unpublish(&[a])).unwrap();
        nft.apply("t", &rules.publish(&[b])).unwrap();
        assert!(nft.apply("t", &rules.unpublish(&[a])).is_err());
        nft.apply("t", &rules.network_down(&net)).unwrap();
        nft.apply("t", &rules.network_down(&net)).unwrap();
        assert_eq!(nft.elements("t", "bridges"), 0);
    }

    #[test]
    fn parses_real_listing_shape() {
        let listing = serde_json::json!({"nftables": [
            {"metainfo": {"version": "1.0.6"}},
            {"table": {"family": "ip", "name": "t"}},
            {"set": {"name": "subnets", "elem": [{"prefix": {"addr": "10.1.0.0", "len": 24}}]}},
            {"set": {"name": "same_bridge", "elem": [{"concat": ["br1", "br1"]}]}},
            {"map": {"name": "ports", "elem": [[{"concat": ["tcp", 8080]}, {"concat": ["10.1.0.2", 80]}]]}},
            {"map": {"name": "host_ports", "elem": [[{"concat": ["127.0.0.1", "udp", 53]}, {"concat": ["10.1.0.2", 53]}]]}}
        ]});
        let state = TableState::from_listing("t", &listing).unwrap();
        assert_eq!(state.published.len(), 2);
        assert_eq!(state.same_bridge, BTreeSet::from(["br1".to_string()]));
        assert_eq!(
            state.subnets,
            BTreeSet::from(["10.1.0.0/24".parse::<Ipv4Net>().unwrap()])
        );
    }
}
