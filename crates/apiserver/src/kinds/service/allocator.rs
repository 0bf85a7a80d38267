//! Cluster IPs and node ports of Services: what kube-apiserver's service IP and node port
//! allocators do.
//!
//! Nothing is stored besides the Services: what is allocated is what the stored Services
//! hold, read again under [`ServiceAllocator::lock`] for each write, and freed when a
//! Service is deleted. The handlers hold that lock from reading the Services until the
//! write is in the store, so concurrent creates through one API server never pick the same
//! address or port. (Several API servers on one etcd would need an allocation object
//! written with compare-and-swap, as kube-apiserver's bitmap; skiff runs one.)
//!
//! Dynamic addresses come from the upper part of the range first, leaving the lower band
//! (16 to 256 addresses) to addresses users pick, as kube-apiserver does since 1.27.

use std::collections::{BTreeMap, HashSet};
use std::net::Ipv4Addr;
use std::ops::RangeInclusive;

use ipnet::Ipv4Net;
use rand::Rng;
use serde_json::{json, Value};

use crate::kinds::{array_at, int_at, str_at};
use crate::validation::FieldError;

/// The service CIDR when none is configured (k3s's).
pub const DEFAULT_SERVICE_CIDR: &str = "10.43.0.0/16";
/// Node ports, as kube-apiserver's default `--service-node-port-range`.
pub const NODE_PORT_RANGE: RangeInclusive<u16> = 30000..=32767;

/// Where cluster IPs and node ports come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRanges {
    /// The service CIDR.
    pub cidr: Ipv4Net,
    /// The node port range.
    pub node_ports: RangeInclusive<u16>,
}

impl Default for ServiceRanges {
    fn default() -> Self {
        ServiceRanges::new(DEFAULT_SERVICE_CIDR.parse().expect("valid default CIDR"))
    }
}

impl ServiceRanges {
    /// `cidr` with the default node port range.
    pub fn new(cidr: Ipv4Net) -> ServiceRanges {
        ServiceRanges {
            cidr: cidr.trunc(),
            node_ports: NODE_PORT_RANGE,
        }
    }

    /// The `n`th address of the range: 1 is the `kubernetes` Service's, 10 the cluster
    /// DNS's. `None` past the range.
    pub fn nth(&self, n: u32) -> Option<Ipv4Addr> {
        let base = u32::from(self.cidr.network());
        (n < self.size()).then(|| Ipv4Addr::from(base + n))
    }

    /// Addresses in the CIDR (network and broadcast included).
    fn size(&self) -> u32 {
        1u32.checked_shl(32 - u32::from(self.cidr.prefix_len()))
            .unwrap_or(u32::MAX)
    }

    /// Whether `ip` may be a cluster IP: in the CIDR, neither its first (network) nor
    /// its last (broadcast) address.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.cidr.contains(&ip) && ip != self.cidr.network() && ip != self.cidr.broadcast()
    }

    /// Size of the band at the start of the range that dynamic allocation avoids.
    fn static_band(&self) -> u32 {
        (self.size() / 16).clamp(16, 256)
    }
}

/// What the stored Services hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allocated {
    /// Cluster IPs.
    pub ips: HashSet<Ipv4Addr>,
    /// Node ports (one number is taken for every protocol, as in Kubernetes).
    pub node_ports: HashSet<u16>,
}

impl Allocated {
    /// Collects the allocations of `services`, except the one at `except`
    /// (`(namespace, name)`: the Service being updated).
    pub fn from_services<'a>(
        services: impl IntoIterator<Item = &'a Value>,
        except: Option<(&str, &str)>,
    ) -> Allocated {
        let mut out = Allocated::default();
        for svc in services {
            let key = (
                str_at(svc, "/metadata/namespace"),
                str_at(svc, "/metadata/name"),
            );
            if Some(key) == except {
                continue;
            }
            if let Ok(ip) = str_at(svc, "/spec/clusterIP").parse() {
                out.ips.insert(ip);
            }
            out.node_ports.extend(node_ports(svc).into_values());
        }
        out
    }
}

/// `(port, protocol)` to node port of a Service that has node ports.
fn node_ports(svc: &Value) -> BTreeMap<(i64, String), u16> {
    if !has_node_ports(str_at(svc, "/spec/type")) {
        return BTreeMap::new();
    }
    array_at(svc, "/spec/ports")
        .iter()
        .filter_map(|p| {
            let np = u16::try_from(int_at(p, "/nodePort"))
                .ok()
                .filter(|n| *n > 0)?;
            Some(((int_at(p, "/port"), str_at(p, "/protocol").to_owned()), np))
        })
        .collect()
}

fn has_node_ports(kind: &str) -> bool {
    matches!(kind, "NodePort" | "LoadBalancer")
}

/// Serialises allocations: hold [`ServiceAllocator::lock`] from reading the stored
/// Services until the Service is written.
#[derive(Debug, Default)]
pub struct ServiceAllocator {
    ranges: ServiceRanges,
    lock: tokio::sync::Mutex<()>,
}

impl ServiceAllocator {
    /// An allocator over `ranges`.
    pub fn new(ranges: ServiceRanges) -> ServiceAllocator {
        ServiceAllocator {
            ranges,
            lock: tokio::sync::Mutex::new(()),
        }
    }

    /// The ranges.
    pub fn ranges(&self) -> &ServiceRanges {
        &self.ranges
    }

    /// Waits for the right to allocate.
    pub async fn lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.lock.lock().await
    }
}

/// Fills in the cluster IP and node ports of `svc` (a create when `old` is `None`,
/// otherwise an update of `old`), given what other Services hold. Returns Kubernetes'
/// field errors when a requested address or port cannot be had, or when the cluster IP
/// of an update changes.
pub fn allocate(
    svc: &mut Value,
    old: Option<&Value>,
    ranges: &ServiceRanges,
    used: &Allocated,
    rng: &mut impl Rng,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let kind = str_at(svc, "/spec/type").to_owned();
    let spec = crate::kinds::object_mut(svc, "spec");
    if kind == "ExternalName" {
        for field in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
            spec.remove(field);
        }
    } else {
        allocate_ip(spec, old, ranges, used, rng, &mut errs);
    }
    allocate_node_ports(svc, old, ranges, used, rng, &mut errs);
    errs
}

fn allocate_ip(
    spec: &mut serde_json::Map<String, Value>,
    old: Option<&Value>,
    ranges: &ServiceRanges,
    used: &Allocated,
    rng: &mut impl Rng,
    errs: &mut Vec<FieldError>,
) {
    let requested = spec
        .get("clusterIP")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .or_else(|| {
            spec.get("clusterIPs")
                .and_then(|v| v.get(0))
                .and_then(Value::as_str)
        })
        .unwrap_or("")
        .to_owned();
    let previous = old
        .filter(|o| str_at(o, "/spec/type") != "ExternalName")
        .map(|o| str_at(o, "/spec/clusterIP"))
        .filter(|ip| !ip.is_empty());
    let ip = match (previous, requested.as_str()) {
        // An update that leaves the address out keeps it (kubectl replace, apply).
        (Some(p), "") => p.to_owned(),
        (Some(p), r) if p == r => p.to_owned(),
        (Some(_), r) => {
            errs.push(FieldError::invalid(
                "spec.clusterIPs[0]",
                json!(r),
                "may not change once set",
            ));
            return;
        }
        (None, "None") => "None".to_owned(),
        (None, "") => match pick_ip(ranges, used, rng) {
            Some(ip) => ip.to_string(),
            None => {
                errs.push(FieldError::invalid(
                    "spec.clusterIPs",
                    json!([]),
                    format!(
                        "failed to allocate a serviceIP: range is full ({})",
                        ranges.cidr
                    ),
                ));
                return;
            }
        },
        (None, r) => {
            let invalid =
                |detail: String| FieldError::invalid("spec.clusterIPs", json!([r]), detail);
            let Ok(ip) = r.parse::<Ipv4Addr>() else {
                errs.push(FieldError::invalid(
                    "spec.clusterIPs[0]",
                    json!(r),
                    "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
                ));
                return;
            };
            if !ranges.contains(ip) {
                errs.push(invalid(format!(
                    "failed to allocate IP {ip}: the provided IP ({ip}) is not in the valid range. The range of valid IPs is {}",
                    ranges.cidr
                )));
                return;
            }
            if used.ips.contains(&ip) {
                errs.push(invalid(format!(
                    "failed to allocate IP {ip}: provided IP is already allocated"
                )));
                return;
            }
            ip.to_string()
        }
    };
    spec.insert("clusterIP".into(), json!(ip));
    spec.insert("clusterIPs".into(), json!([ip]));
    spec.insert("ipFamilies".into(), json!(["IPv4"]));
    spec.insert("ipFamilyPolicy".into(), json!("SingleStack"));
}

/// A free address, from the upper part of the range first.
fn pick_ip(ranges: &ServiceRanges, used: &Allocated, rng: &mut impl Rng) -> Option<Ipv4Addr> {
    let (size, band) = (ranges.size(), ranges.static_band());
    // Offsets 1..size-1 (no network, no broadcast address).
    let upper = band.max(1)..size.saturating_sub(1);
    let lower = 1..band.min(size.saturating_sub(1));
    for range in [upper, lower] {
        if range.is_empty() {
            continue;
        }
        let len = range.end - range.start;
        let start = rng.gen_range(0..len);
        for i in 0..len {
            let ip = ranges.nth(range.start + (start + i) % len)?;
            if !used.ips.contains(&ip) {
                return Some(ip);
            }
        }
    }
    None
}

fn allocate_node_ports(
    svc: &mut Value,
    old: Option<&Value>,
    ranges: &ServiceRanges,
    used: &Allocated,
    rng: &mut impl Rng,
    errs: &mut Vec<FieldError>,
) {
    let wants = has_node_ports(str_at(svc, "/spec/type"));
    let Some(ports) = svc.pointer_mut("/spec/ports").and_then(Value::as_array_mut) else {
        return;
    };
    if !wants {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            p.remove("nodePort");
        }
        return;
    }
    let before = old.map(node_ports).unwrap_or_default();
    let kept: HashSet<u16> = before.values().copied().collect();
    // Ports of this Service: the same number may serve TCP and UDP of one port.
    let mut mine: HashSet<(u16, String)> = HashSet::new();
    let mut missing = Vec::new();
    for (i, p) in ports.iter_mut().enumerate() {
        let key = (int_at(p, "/port"), str_at(p, "/protocol").to_owned());
        let mut np = int_at(p, "/nodePort");
        if np == 0 {
            if let Some(prev) = before.get(&key) {
                np = i64::from(*prev);
                p["nodePort"] = json!(np);
            }
        }
        if np == 0 {
            missing.push(i);
            continue;
        }
        let field = format!("spec.ports[{i}].nodePort");
        let Some(n) = u16::try_from(np)
            .ok()
            .filter(|n| ranges.node_ports.contains(n))
        else {
            errs.push(FieldError::invalid(
                field,
                json!(np),
                format!(
                    "provided port is not in the valid range. The range of valid ports is {}-{}",
                    ranges.node_ports.start(),
                    ranges.node_ports.end()
                ),
            ));
            continue;
        };
        let taken_here = mine.contains(&(n, key.1.clone()));
        if taken_here || (!kept.contains(&n) && used.node_ports.contains(&n)) {
            errs.push(FieldError::invalid(
                field,
                json!(np),
                "provided port is already allocated",
            ));
            continue;
        }
        mine.insert((n, key.1));
    }
    let taken: HashSet<u16> = mine.iter().map(|(n, _)| *n).collect();
    let (lo, hi) = (*ranges.node_ports.start(), *ranges.node_ports.end());
    let len = u32::from(hi - lo) + 1;
    for i in missing {
        let start = rng.gen_range(0..len);
        let free = (0..len).map(|k| lo + ((start + k) % len) as u16).find(|n| {
            !used.node_ports.contains(n) && !taken.contains(n) && !mine.iter().any(|(m, _)| m == n)
        });
        match free {
            Some(n) => {
                ports[i]["nodePort"] = json!(n);
                mine.insert((n, str_at(&ports[i], "/protocol").to_owned()));
            }
            None => errs.push(FieldError::invalid(
                format!("spec.ports[{i}].nodePort"),
                json!(0),
                "failed to allocate a nodePort: range is full",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn svc(name: &str, spec: Value) -> Value {
        json!({"metadata": {"namespace": "default", "name": name}, "spec": spec})
    }

    fn ranges() -> ServiceRanges {
        ServiceRanges::new("10.43.0.0/16".parse().unwrap())
    }

    fn rng() -> rand::rngs::StdRng {
        rand::rngs::StdRng::seed_from_u64(7)
    }

    fn messages(errs: &[FieldError]) -> Vec<String> {
        errs.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn well_known_addresses() {
        let r = ranges();
        assert_eq!(r.nth(1), Some(Ipv4Addr::new(10, 43, 0, 1)));
        assert_eq!(r.nth(10), Some(Ipv4Addr::new(10, 43, 0, 10)));
        assert!(!r.contains(Ipv4Addr::new(10, 43, 0, 0)));
        assert!(!r.contains(Ipv4Addr::new(10, 43, 255, 255)));
        assert!(!r.contains(Ipv4Addr::new(10, 44, 0, 1)));
    }

    #[test]
    fn dynamic_addresses_are_unique_and_avoid_the_static_band() {
        let r = ServiceRanges::new("10.43.0.0/24".parse().unwrap());
        let mut used = Allocated::default();
        let mut rng = rng();
        // 254 usable addresses, all handed out exactly once, upper band first.
        for i in 0..254 {
            let mut s = svc("s", json!({"type": "ClusterIP", "ports": [{"port": 80}]}));
            assert!(allocate(&mut s, None, &r, &used, &mut rng).is_empty());
            let ip: Ipv4Addr = str_at(&s, "/spec/clusterIP").parse().unwrap();
            assert!(r.contains(ip));
            if i < 254 - 16 {
                assert!(ip.octets()[3] >= 16, "{ip} in the static band");
            }
            assert!(used.ips.insert(ip), "{ip} handed out twice");
            assert_eq!(s["spec"]["clusterIPs"], json!([ip.to_string()]));
        }
        let mut s = svc("s", json!({"type": "ClusterIP"}));
        let errs = allocate(&mut s, None, &r, &used, &mut rng);
        assert_eq!(
            messages(&errs),
            ["spec.clusterIPs: Invalid value: []: failed to allocate a serviceIP: range is full (10.43.0.0/24)"]
        );
    }

    #[test]
    fn requested_addresses_are_honoured_or_refused() {
        let r = ranges();
        let stored = [svc(
            "a",
            json!({"type": "ClusterIP", "clusterIP": "10.43.0.5"}),
        )];
        let used = Allocated::from_services(&stored, None);
        let mut s = svc("b", json!({"type": "ClusterIP", "clusterIP": "10.43.0.5"}));
        assert_eq!(
            messages(&allocate(&mut s, None, &r, &used, &mut rng())),
            [
                r#"spec.clusterIPs: Invalid value: ["10.43.0.5"]: failed to allocate IP 10.43.0.5: provided IP is already allocated"#
            ]
        );
        let mut s = svc("b", json!({"type": "ClusterIP", "clusterIP": "10.96.0.5"}));
        assert_eq!(
            messages(&allocate(&mut s, None, &r, &used, &mut rng())),
            [
                r#"spec.clusterIPs: Invalid value: ["10.96.0.5"]: failed to allocate IP 10.96.0.5: the provided IP (10.96.0.5) is not in the valid range. The range of valid IPs is 10.43.0.0/16"#
            ]
        );
        let mut s = svc("b", json!({"type": "ClusterIP", "clusterIP": "10.43.0.6"}));
        assert!(allocate(&mut s, None, &r, &used, &mut rng()).is_empty());
        assert_eq!(str_at(&s, "/spec/clusterIP"), "10.43.0.6");
        // Headless and ExternalName Services take no address.
        let mut s = svc("h", json!({"type": "ClusterIP", "clusterIP": "None"}));
        assert!(allocate(&mut s, None, &r, &used, &mut rng()).is_empty());
        assert_eq!(s["spec"]["clusterIPs"], json!(["None"]));
        let mut s = svc(
            "e",
            json!({"type": "ExternalName", "externalName": "example.com"}),
        );
        assert!(allocate(&mut s, None, &r, &used, &mut rng()).is_empty());
        assert!(s["spec"].get("clusterIP").is_none());
    }

    #[test]
    fn updates_keep_the_address_and_may_not_change_it() {
        let r = ranges();
        let old = svc(
            "a",
            json!({"type": "ClusterIP", "clusterIP": "10.43.0.5", "clusterIPs": ["10.43.0.5"]}),
        );
        let stored = [old.clone()];
        // The Service's own address is not "taken" for its update.
        let used = Allocated::from_services(&stored, Some(("default", "a")));
        let mut new = svc("a", json!({"type": "ClusterIP"}));
        assert!(allocate(&mut new, Some(&old), &r, &used, &mut rng()).is_empty());
        assert_eq!(str_at(&new, "/spec/clusterIP"), "10.43.0.5");
        let mut new = svc("a", json!({"type": "ClusterIP", "clusterIP": "10.43.0.7"}));
        assert_eq!(
            messages(&allocate(&mut new, Some(&old), &r, &used, &mut rng())),
            [r#"spec.clusterIPs[0]: Invalid value: "10.43.0.7": may not change once set"#]
        );
        // Freed on delete: a Service no longer stored holds nothing.
        assert!(Allocated::from_services(&[], None).ips.is_empty());
    }

    #[test]
    fn node_ports() {
        let r = ranges();
        let stored = [svc(
            "a",
            json!({"type": "NodePort", "clusterIP": "10.43.0.5", "ports": [{"port": 80, "protocol": "TCP", "nodePort": 30080}]}),
        )];
        let used = Allocated::from_services(&stored, None);
        assert!(used.node_ports.contains(&30080));
        let mut s = svc(
            "b",
            json!({"type": "NodePort", "ports": [{"port": 80, "protocol": "TCP", "nodePort": 30080}]}),
        );
        assert_eq!(
            messages(&allocate(&mut s, None, &r, &used, &mut rng())),
            ["spec.ports[0].nodePort: Invalid value: 30080: provided port is already allocated"]
        );
        let mut s = svc(
            "b",
            json!({"type": "NodePort", "ports": [{"port": 80, "protocol": "TCP", "nodePort": 80}]}),
        );
        assert_eq!(
            messages(&allocate(&mut s, None, &r, &used, &mut rng())),
            ["spec.ports[0].nodePort: Invalid value: 80: provided port is not in the valid range. The range of valid ports is 30000-32767"]
        );
        // Allocated ports are in range, distinct, and kept by an update that omits them.
        let mut s = svc(
            "b",
            json!({"type": "LoadBalancer", "ports": [{"port": 80, "protocol": "TCP"}, {"port": 81, "protocol": "TCP"}]}),
        );
        assert!(allocate(&mut s, None, &r, &used, &mut rng()).is_empty());
        let (p0, p1) = (
            int_at(&s, "/spec/ports/0/nodePort"),
            int_at(&s, "/spec/ports/1/nodePort"),
        );
        assert!((30000..=32767).contains(&p0) && p0 != 30080 && p0 != p1);
        let mut update = svc(
            "b",
            json!({"type": "LoadBalancer", "ports": [{"port": 80, "protocol": "TCP"}, {"port": 81, "protocol": "TCP"}]}),
        );
        assert!(allocate(&mut update, Some(&s), &r, &used, &mut rng()).is_empty());
        assert_eq!(int_at(&update, "/spec/ports/0/nodePort"), p0);
        assert_eq!(int_at(&update, "/spec/ports/1/nodePort"), p1);
        // Back to ClusterIP: the node ports go.
        let mut update = svc(
            "b",
            json!({"type": "ClusterIP", "ports": [{"port": 80, "protocol": "TCP", "nodePort": p0}]}),
        );
        assert!(allocate(&mut update, Some(&s), &r, &used, &mut rng()).is_empty());
        assert_eq!(int_at(&update, "/spec/ports/0/nodePort"), 0);
    }
}
