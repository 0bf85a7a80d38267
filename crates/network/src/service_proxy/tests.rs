use std::process::{Command, Stdio};

use super::render::{MASQUERADE_MARK, REJECT_CHAIN};
use super::*;
use crate::nft::FakeNft;

fn port(
    name: &str,
    ip: [u8; 4],
    port: u16,
    node_port: Option<u16>,
    eps: &[[u8; 4]],
) -> ServicePort {
    let mut p = ServicePort::new(name, Protocol::Tcp, Some(Ipv4Addr::from(ip)), port);
    p.node_port = node_port;
    p.endpoints = eps.iter().map(|e| ep(*e)).collect();
    p
}

fn ep(ip: [u8; 4]) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::from(ip), 8080)
}

/// The rules `script` adds to `chain`.
fn rules_of(script: &str, table: &str, chain: &str) -> Vec<String> {
    let prefix = format!("add rule ip {table} {chain} ");
    script
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .map(str::to_string)
        .collect()
}

fn two_services() -> ServiceMap {
    ServiceMap::from([
        (
            "default/web".to_string(),
            vec![port(
                "",
                [10, 43, 0, 5],
                80,
                Some(30080),
                &[[10, 88, 0, 2], [10, 88, 0, 3]],
            )],
        ),
        (
            "default/api".to_string(),
            vec![port("http", [10, 43, 0, 6], 80, None, &[[10, 88, 0, 4]])],
        ),
    ])
}

/// How many entries (not the host's own) `nft` holds in `table`: keyed by IP, or by
/// node port.
fn entries(nft: &FakeNft, table: &str, node_port: bool) -> usize {
    let listing = nft.list_table(table).unwrap().unwrap_or_default();
    listing["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|item| item.get("set"))
        .filter(|set| {
            let name = set["name"].as_str().unwrap_or_default();
            name.starts_with("entries_")
                && !name.contains("_host")
                && name.starts_with("entries_pick_np") == node_port
        })
        .map(|set| set["elem"].as_array().map_or(0, Vec::len))
        .sum()
}

/// Whether every line of `script` is an element update.
fn only_elements(script: &str) -> bool {
    script
        .lines()
        .all(|l| l.starts_with("add element ") || l.starts_with("delete element "))
}

fn pick(node_port: bool, masquerade: bool, host: bool, n: usize) -> render::Pick {
    render::Pick {
        node_port,
        masquerade,
        host,
        endpoints: n,
        affinity: None,
    }
}

#[test]
fn scripts_only_touch_the_service_table() {
    let rules = ServiceRules::new("skiff_svc").unwrap();
    let script = rules.replace(&two_services());
    for line in script.lines() {
        assert!(
            line.contains(" ip skiff_svc ") || line.ends_with(" ip skiff_svc"),
            "{line}"
        );
        assert!(!line.contains("ruleset"), "{line}");
    }
    // Packets are matched by set and map lookups, never by one rule per Service: one
    // rule per way of picking in use.
    assert_eq!(
        rules_of(&script, "skiff_svc", "services"),
        [
            "ip daddr . meta l4proto . th dport @entries_pick_1 goto pick_1",
            "ip daddr . meta l4proto . th dport @entries_pick_2 goto pick_2",
            "fib daddr type local meta l4proto . th dport @entries_pick_np_masq_2 goto pick_np_masq_2"
        ]
    );
    assert_eq!(rules_of(&script, "skiff_svc", "output"), ["jump services"]);
    assert!(script.contains("add element ip skiff_svc entries_pick_2 { 10.43.0.5 . tcp . 80 }"));
    // The node port: masqueraded (externalTrafficPolicy Cluster), keyed by the port.
    assert!(script.contains("add element ip skiff_svc entries_pick_np_masq_2 { tcp . 30080 }"));
    assert!(script.contains(
        "add element ip skiff_svc node_port_endpoints { tcp . 30080 . 1 : 10.88.0.3 . 8080 }"
    ));
    assert_eq!(
        rules_of(&script, "skiff_svc", "pick_np_masq_2"),
        [
            format!("meta mark set meta mark | {MASQUERADE_MARK:#x}"),
            "dnat ip to meta l4proto . th dport . numgen random mod 2 map @node_port_endpoints"
                .to_string()
        ]
    );
    // No chain of any Service's own.
    for prefix in ["svc_", "ext_", "ep_", "svl_", "aff_"] {
        assert!(!script.contains(prefix), "{prefix}");
    }
}

#[test]
fn one_service_change_rewrites_only_that_service() {
    let nft = Arc::new(FakeNft::default());
    let mut proxy = ServiceProxy::new("t", nft.clone()).unwrap();
    let mut desired = two_services();
    let report = proxy.sync(&desired).unwrap();
    assert!(report.rebuilt);
    assert_eq!(entries(&nft, "t", false), 2);
    assert_eq!(entries(&nft, "t", true), 1);
    assert!(proxy.verify().unwrap());
    // Nothing changed: no transaction.
    let before = nft.scripts().len();
    assert_eq!(proxy.sync(&desired).unwrap(), SyncReport::default());
    assert_eq!(nft.scripts().len(), before);

    // One endpoint of web goes away: its elements, and the node port's pick chain for
    // two endpoints, unused now.
    let web = desired.get_mut("default/web").unwrap();
    web[0].endpoints.pop();
    let report = proxy.sync(&desired).unwrap();
    assert_eq!(
        report,
        SyncReport {
            rebuilt: false,
            services_changed: 1
        }
    );
    let script = nft.scripts().last().unwrap().clone();
    assert!(!script.contains("10.43.0.6"), "{script}");
    assert!(!script.contains("delete table"));
    assert!(script.contains("add chain ip t pick_np_masq_1"), "{script}");
    assert!(script.contains("add element ip t entries_pick_np_masq_1 { tcp . 30080 }"));
    // The picks in use changed: `services` gets one rule per pick in use again.
    assert_eq!(
        rules_of(&script, "t", "services"),
        [
            "ip daddr . meta l4proto . th dport @entries_pick_1 goto pick_1",
            "fib daddr type local meta l4proto . th dport @entries_pick_np_masq_1 goto pick_np_masq_1"
        ]
    );
    assert!(
        script.ends_with(
            "flush chain ip t pick_np_masq_2\ndelete chain ip t pick_np_masq_2\n\
             delete set ip t entries_pick_2\ndelete set ip t entries_pick_np_masq_2\n"
        ),
        "{script}"
    );
    assert!(proxy.verify().unwrap());

    // The Service goes: its elements go with it, and the pick chain only it used.
    desired.remove("default/web");
    proxy.sync(&desired).unwrap();
    assert!(nft
        .scripts()
        .last()
        .unwrap()
        .contains("delete chain ip t pick_np_masq_1"));
    assert_eq!(entries(&nft, "t", false), 1);
    assert_eq!(entries(&nft, "t", true), 0);
    assert_eq!(nft.elements("t", "node_port_endpoints"), 0);
    assert_eq!(nft.elements("t", "no_endpoint_node_ports"), 0);
    assert!(proxy.verify().unwrap());
}

#[test]
fn no_ready_endpoints_means_rejected_connections() {
    let nft = Arc::new(FakeNft::default());
    let mut proxy = ServiceProxy::new("t", nft.clone()).unwrap();
    let mut desired = ServiceMap::from([(
        "default/web".to_string(),
        vec![port("", [10, 43, 0, 5], 80, Some(30080), &[])],
    )]);
    proxy.sync(&desired).unwrap();
    assert_eq!(entries(&nft, "t", false), 0);
    assert_eq!(entries(&nft, "t", true), 0);
    // New connections are refused (kube-proxy's reject), not left to time out.
    let script = nft.scripts().last().unwrap().clone();
    assert!(
        script
            .contains("add element ip t no_endpoints { 10.43.0.5 . tcp . 80 : goto reject_conn }"),
        "{script}"
    );
    assert!(script
        .contains("add element ip t no_endpoint_node_ports { tcp . 30080 : goto reject_conn }"));
    let reject = rules_of(&script, "t", REJECT_CHAIN);
    assert_eq!(reject[0], "meta l4proto tcp reject with tcp reset");
    for chain in ["filter_forward", "filter_output", "filter_input"] {
        assert!(
            rules_of(&script, "t", chain)
                .iter()
                .any(|r| r.contains("vmap @no_endpoints")),
            "{chain}"
        );
    }
    assert!(proxy.verify().unwrap());

    // An endpoint appears: the reject goes, the Service is programmed.
    desired.get_mut("default/web").unwrap()[0].endpoints = vec![ep([10, 88, 0, 2])];
    proxy.sync(&desired).unwrap();
    assert_eq!(nft.elements("t", "no_endpoints"), 0);
    assert_eq!(nft.elements("t", "no_endpoint_node_ports"), 0);
    assert_eq!(entries(&nft, "t", false), 1);
    assert_eq!(entries(&nft, "t", true), 1);
    assert!(proxy.verify().unwrap());
}

#[test]
fn load_balancer_addresses_are_masqueraded_entries_of_their_own() {
    let mut web = port("", [10, 43, 0, 5], 80, Some(30080), &[[10, 88, 0, 2]]);
    web.load_balancer_ips = vec![Ipv4Addr::new(127, 241, 0, 1)];
    let services = ServiceMap::from([("default/web".to_string(), vec![web])]);
    let script = ServiceRules::new("t").unwrap().replace(&services);
    let masq = pick(false, true, false, 1).chain();
    assert_eq!(masq, "pick_masq_1");
    assert!(
        script.contains(&format!(
            "add element ip t entries_{masq} {{ 127.241.0.1 . tcp . 80 }}"
        )),
        "{script}"
    );
    assert!(script
        .contains("add element ip t endpoints { 127.241.0.1 . tcp . 80 . 0 : 10.88.0.2 . 8080 }"));
    assert!(script.contains("add element ip t entries_pick_np_masq_1 { tcp . 30080 }"));
    // The cluster IP: not masqueraded, hairpin handled in postrouting.
    assert!(script.contains("add element ip t entries_pick_1 { 10.43.0.5 . tcp . 80 }"));
    assert!(script
        .contains("add element ip t hairpin { 10.43.0.5 . tcp . 10.88.0.2 . 10.88.0.2 . 8080 }"));
    // externalTrafficPolicy Cluster: masqueraded, then any endpoint.
    assert_eq!(
        rules_of(&script, "t", &masq),
        vec![
            format!("meta mark set meta mark | {MASQUERADE_MARK:#x}"),
            "dnat ip to ip daddr . meta l4proto . th dport . numgen random mod 1 map @endpoints"
                .to_string()
        ]
    );
    let nft = Arc::new(FakeNft::default());
    let mut proxy = ServiceProxy::new("t", nft.clone()).unwrap();
    proxy.sync(&services).unwrap();
    assert_eq!(entries(&nft, "t", false), 2);
    assert_eq!(nft.elements("t", "endpoints"), 2);
    assert!(proxy.verify().unwrap());
}

#[test]
fn client_ip_affinity_is_one_dynamic_set_and_shared_chains() {
    let mut web = port(
        "",
        [10, 43, 0, 5],
        80,
        None,
        &[[10, 88, 0, 2], [10, 88, 0, 3]],
    );
    web.affinity_timeout = Some(10800);
    let key = "default/web";
    let rules = ServiceRules::new("t").unwrap();
    let mut services = ServiceMap::from([(key.to_string(), vec![web.clone()])]);
    let script = rules.replace(&services);
    // One set of clients per slot, shared by every Service.
    for slot in 0..2 {
        assert!(
            script.contains(&format!(
                "add set ip t affinity_{slot} {{ type ipv4_addr . inet_proto . inet_service . ipv4_addr; size 1048576; flags dynamic,timeout; }}"
            )),
            "{script}"
        );
    }
    assert!(script.contains("add element ip t entries_pick_2_aff10800 { 10.43.0.5 . tcp . 80 }"));
    // A known client goes to the slot it had; only others are balanced.
    assert_eq!(
        rules_of(&script, "t", "pick_2_aff10800"),
        [
            "ip daddr . meta l4proto . th dport . ip saddr @affinity_0 goto stick_0_10800",
            "ip daddr . meta l4proto . th dport . ip saddr @affinity_1 goto stick_1_10800",
            "numgen random mod 2 vmap { 0 : goto stick_0_10800, 1 : goto stick_1_10800 }",
        ]
    );
    // The slot refreshes the client's entry with the Service's timeout on every new
    // connection, then goes to its endpoint.
    assert_eq!(
        rules_of(&script, "t", "stick_1_10800"),
        [
            "update @affinity_1 { ip daddr . meta l4proto . th dport . ip saddr timeout 10800s }",
            "dnat ip to ip daddr . meta l4proto . th dport . numgen random mod 1 offset 1 map @endpoints",
        ]
    );

    // Another timeout is another pick chain; the Service's change is still elements and
    // the shared chains it is the first to need (the old ones, unused, go).
    let nft = Arc::new(FakeNft::default());
    let mut proxy = ServiceProxy::new("t", nft.clone()).unwrap();
    proxy.sync(&services).unwrap();
    services.get_mut(key).unwrap()[0].affinity_timeout = Some(60);
    proxy.sync(&services).unwrap();
    let update = nft.scripts().last().unwrap().clone();
    assert!(update.contains("add chain ip t pick_2_aff60"), "{update}");
    assert!(update.contains("timeout 60s"), "{update}");
    assert!(
        update.contains("delete chain ip t stick_0_10800"),
        "{update}"
    );
    assert!(update.contains("add element ip t entries_pick_2_aff60 { 10.43.0.5 . tcp . 80 }"));
    assert!(proxy.verify().unwrap());
    // A second Service with the same timeout and count: elements only.
    let mut other = port(
        "",
        [10, 43, 0, 9],
        80,
        None,
        &[[10, 88, 0, 4], [10, 88, 0, 5]],
    );
    other.affinity_timeout = Some(60);
    services.insert("default/other".to_string(), vec![other]);
    proxy.sync(&services).unwrap();
    let update = nft.scripts().last().unwrap().clone();
    assert!(only_elements(&update), "{update}");
    assert!(proxy.verify().unwrap());
    // Affinity off: no lookups.
    let script = rules.replace(&ServiceMap::from([(
        key.to_string(),
        vec![port("", [10, 43, 0, 5], 80, None, &[[10, 88, 0, 2]])],
    )]));
    assert!(!script.contains("affinity"), "{script}");
}

#[test]
fn internal_traffic_policy_local_uses_this_nodes_endpoints_or_drops() {
    let key = "default/web";
    let mut web = port(
        "",
        [10, 43, 0, 5],
        80,
        None,
        &[[10, 88, 0, 2], [10, 89, 0, 7]],
    );
    web.internal_local = true;
    web.local_endpoints = vec![ep([10, 88, 0, 2])];
    let rules = ServiceRules::new("t").unwrap();
    let script = rules.replace(&ServiceMap::from([(key.to_string(), vec![web.clone()])]));
    // The cluster IP's entry holds this node's endpoint only.
    assert!(
        script.contains("add element ip t entries_pick_1 { 10.43.0.5 . tcp . 80 }"),
        "{script}"
    );
    assert!(script
        .contains("add element ip t endpoints { 10.43.0.5 . tcp . 80 . 0 : 10.88.0.2 . 8080 }"));
    assert!(!script.contains("10.89.0.7"), "{script}");

    // No endpoint on this node: dropped (there are endpoints elsewhere), not rejected.
    web.local_endpoints.clear();
    let script = rules.replace(&ServiceMap::from([(key.to_string(), vec![web])]));
    assert!(
        script.contains("add element ip t no_endpoints { 10.43.0.5 . tcp . 80 : drop }"),
        "{script}"
    );
    assert!(!script.contains("add element ip t entries_"), "{script}");
}

#[test]
fn external_traffic_policy_local_keeps_the_source() {
    let key = "default/web";
    let mut web = port(
        "",
        [10, 43, 0, 5],
        80,
        Some(30080),
        &[[10, 88, 0, 2], [10, 89, 0, 7]],
    );
    web.load_balancer_ips = vec![Ipv4Addr::new(127, 241, 0, 1)];
    web.external_local = true;
    web.local_endpoints = vec![ep([10, 88, 0, 2])];
    let rules = ServiceRules::new("t").unwrap();
    let script = rules.replace(&ServiceMap::from([(key.to_string(), vec![web.clone()])]));
    // From elsewhere: this node's endpoint only, not masqueraded.
    assert!(
        script.contains("add element ip t entries_pick_1 { 127.241.0.1 . tcp . 80 }"),
        "{script}"
    );
    assert!(script.contains("add element ip t entries_pick_np_1 { tcp . 30080 }"));
    assert!(script
        .contains("add element ip t node_port_endpoints { tcp . 30080 . 0 : 10.88.0.2 . 8080 }"));
    assert!(script.contains("add element ip t node_port_hairpin { 10.88.0.2 . tcp . 30080 }"));
    assert_eq!(
        rules_of(&script, "t", "pick_np_1"),
        [
            format!(
                "ip saddr . meta l4proto . th dport @node_port_hairpin meta mark set meta mark | {MASQUERADE_MARK:#x}"
            ),
            "dnat ip to meta l4proto . th dport . numgen random mod 1 map @node_port_endpoints"
                .to_string()
        ]
    );
    // The host itself: every endpoint, from the second slot range, masqueraded.
    let h = render::HOST_SLOTS;
    assert!(script.contains("add element ip t entries_pick_masq_host_2 { 127.241.0.1 . tcp . 80 }"));
    assert!(script.contains("add element ip t entries_pick_np_masq_host_2 { tcp . 30080 }"));
    assert!(script.contains(&format!(
        "add element ip t endpoints {{ 127.241.0.1 . tcp . 80 . {} : 10.89.0.7 . 8080 }}",
        h + 1
    )));
    assert_eq!(
        rules_of(&script, "t", "pick_masq_host_2")[1],
        format!(
            "dnat ip to ip daddr . meta l4proto . th dport . numgen random mod 2 offset {h} map @endpoints"
        )
    );
    assert_eq!(
        rules_of(&script, "t", "output"),
        [
            "ip daddr . meta l4proto . th dport @entries_pick_masq_host_2 goto pick_masq_host_2",
            "fib daddr type local meta l4proto . th dport @entries_pick_np_masq_host_2 goto pick_np_masq_host_2",
            "jump services"
        ]
    );
    // The cluster IP still reaches every endpoint (internalTrafficPolicy Cluster).
    assert!(script.contains("add element ip t entries_pick_2 { 10.43.0.5 . tcp . 80 }"));

    // No endpoint here: outside traffic is dropped, the host's still goes anywhere.
    web.local_endpoints.clear();
    let script = rules.replace(&ServiceMap::from([(key.to_string(), vec![web])]));
    assert!(script.contains("add element ip t no_endpoints { 127.241.0.1 . tcp . 80 : drop }"));
    assert!(script.contains("add element ip t no_endpoint_node_ports { tcp . 30080 : drop }"));
    assert!(script.contains("add element ip t entries_pick_np_masq_host_2 { tcp . 30080 }"));
    assert!(
        !script.contains("add element ip t entries_pick_np_1 "),
        "{script}"
    );
}

/// A change of a Service of every kind (node port, LB address, both Local policies,
/// affinity, more endpoints than the standing pick chains cover) writes only map
/// elements once the shared chains it picks through exist.
#[test]
fn a_change_of_any_kind_of_service_writes_only_elements() {
    let nft = Arc::new(FakeNft::default());
    let mut proxy = ServiceProxy::new("t", nft.clone()).unwrap();
    let many: Vec<[u8; 4]> = (0..100u8).map(|i| [10, 88, 1, i]).collect();
    let mut kinds = Vec::new();
    for i in 0..2u8 {
        // Two of each, so that one can change while the other keeps the pick chains.
        let mut np = port(
            "",
            [10, 43, 1, i],
            80,
            Some(30000 + i as u16),
            &[[10, 88, 0, 2], [10, 88, 0, 3]],
        );
        np.load_balancer_ips = vec![Ipv4Addr::new(127, 241, 1, i)];
        let mut local = np.clone();
        local.cluster_ip = Some(Ipv4Addr::new(10, 43, 2, i));
        local.node_port = Some(31000 + i as u16);
        local.load_balancer_ips = vec![Ipv4Addr::new(127, 241, 2, i)];
        local.external_local = true;
        local.internal_local = true;
        local.local_endpoints = vec![ep([10, 88, 0, 2])];
        let mut sticky = np.clone();
        sticky.cluster_ip = Some(Ipv4Addr::new(10, 43, 3, i));
        sticky.node_port = Some(32000 + i as u16);
        sticky.load_balancer_ips = vec![Ipv4Addr::new(127, 241, 3, i)];
        sticky.affinity_timeout = Some(10800);
        let big = port("", [10, 43, 4, i], 80, None, &many);
        kinds.extend(
            [
                ("np", np),
                ("local", local),
                ("sticky", sticky),
                ("big", big),
            ]
            .map(|(kind, p)| (format!("default/{kind}{i}"), vec![p])),
        );
    }
    let mut desired: ServiceMap = kinds.into_iter().collect();
    proxy.sync(&desired).unwrap();
    assert!(proxy.verify().unwrap());
    for kind in ["np", "local", "sticky", "big"] {
        let key = format!("default/{kind}0");
        // One endpoint moves.
        let ports = desired.get_mut(&key).unwrap();
        ports[0].endpoints[0] = ep([10, 88, 0, 9]);
        if !ports[0].local_endpoints.is_empty() {
            ports[0].local_endpoints[0] = ep([10, 88, 0, 9]);
        }
        assert_eq!(proxy.sync(&desired).unwrap().services_changed, 1);
        let update = nft.scripts().last().unwrap().clone();
        assert!(only_elements(&update), "{kind}: {update}");
        assert!(update.contains("10.88.0.9"), "{kind}: {update}");
        // It goes, and comes back.
        let ports = desired.remove(&key).unwrap();
        proxy.sync(&desired).unwrap();
        let update = nft.scripts().last().unwrap().clone();
        assert!(only_elements(&update), "{kind}: {update}");
        desired.insert(key, ports);
        proxy.sync(&desired).unwrap();
        let update = nft.scripts().last().unwrap().clone();
        assert!(only_elements(&update), "{kind}: {update}");
        assert!(proxy.verify().unwrap());
    }
    // A rebuild makes exactly the chains the incremental changes kept.
    let chains = ServiceRules::new("t").unwrap().chain_names(&desired);
    let mut fresh = ServiceProxy::new("t", nft.clone()).unwrap();
    fresh.sync(&desired).unwrap();
    assert!(fresh.verify().unwrap());
    assert!(chains.contains("pick_100") && chains.contains("pick_np_masq_2_aff10800"));
}

#[test]
fn a_deleted_table_is_rebuilt() {
    let nft = Arc::new(FakeNft::default());
    let mut proxy = ServiceProxy::new("t", nft.clone()).unwrap();
    let desired = two_services();
    proxy.sync(&desired).unwrap();
    // Someone deletes the table behind skiff's back.
    nft.apply("t", &ServiceRules::new("t").unwrap().delete_table())
        .unwrap();
    assert!(!proxy.verify().unwrap());
    assert!(proxy.sync(&desired).unwrap().rebuilt);
    assert_eq!(entries(&nft, "t", false), 2);
    assert!(proxy.verify().unwrap());
    proxy.remove().unwrap();
    assert!(nft.list_table("t").unwrap().is_none());
}

/// The scripts are accepted by the real nft, in a network namespace of their own (root
/// only; skipped otherwise).
#[test]
fn real_nft_accepts_the_scripts() {
    if !nix::unistd::geteuid().is_root() {
        return;
    }
    let rules = ServiceRules::new("svc_test").unwrap();
    let mut desired = two_services();
    // Every feature once: affinity, both Local policies, an LB address, no endpoints.
    let web = &mut desired.get_mut("default/web").unwrap()[0];
    web.affinity_timeout = Some(10800);
    web.load_balancer_ips = vec![Ipv4Addr::new(127, 241, 0, 1)];
    web.external_local = true;
    web.local_endpoints = vec![ep([10, 88, 0, 2])];
    let api = &mut desired.get_mut("default/api").unwrap()[0];
    api.internal_local = true;
    desired.insert(
        "default/empty".to_string(),
        vec![port("", [10, 43, 0, 7], 80, Some(30081), &[])],
    );
    // A direct Service: map elements only.
    desired.insert(
        "default/direct".to_string(),
        vec![port(
            "",
            [10, 43, 0, 8],
            80,
            None,
            &[[10, 88, 0, 5], [10, 88, 0, 6]],
        )],
    );
    // The whole table, then an incremental change, as the proxy writes them.
    let nft = Arc::new(FakeNft::default());
    let mut proxy = ServiceProxy::new(rules.table(), nft.clone()).unwrap();
    proxy.sync(&desired).unwrap();
    desired.get_mut("default/web").unwrap()[0].endpoints.pop();
    desired.remove("default/api");
    desired.get_mut("default/web").unwrap()[0].affinity_timeout = Some(60);
    desired.get_mut("default/direct").unwrap()[0].endpoints = vec![ep([10, 88, 0, 7])];
    proxy.sync(&desired).unwrap();
    let script = nft.scripts().concat();
    let mut child = match Command::new("unshare")
        .args(["-n", "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(_) => return,
    };
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}\n{script}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_diff_walks_both_maps_and_treats_no_ports_as_absent() {
    let old = two_services();
    let mut new = two_services();
    assert!(changed_services(&old, &new).is_empty());
    // A Service without ports is the same as no Service.
    new.insert("default/empty".to_string(), Vec::new());
    assert!(changed_services(&old, &new).is_empty());
    assert!(changed_services(&new, &old).is_empty());
    // Added, changed and removed Services, in key order, with both versions.
    new.remove("default/api");
    new.insert(
        "a/first".to_string(),
        vec![port("", [10, 43, 0, 9], 80, None, &[[10, 88, 0, 9]])],
    );
    new.get_mut("default/web").unwrap()[0].endpoints.pop();
    let changes: Vec<(&str, usize, usize)> = changed_services(&old, &new)
        .into_iter()
        .map(|(k, before, after)| (k.as_str(), before.len(), after.len()))
        .collect();
    assert_eq!(
        changes,
        [
            ("a/first", 0, 1),
            ("default/api", 1, 0),
            ("default/web", 1, 1)
        ]
    );
}

#[test]
fn the_applied_state_follows_each_change() {
    let nft = Arc::new(FakeNft::default());
    let mut proxy = ServiceProxy::new("t", nft.clone()).unwrap();
    let mut desired = two_services();
    proxy.sync(&desired).unwrap();
    desired.remove("default/api");
    desired.insert("default/empty".to_string(), Vec::new());
    assert_eq!(proxy.sync(&desired).unwrap().services_changed, 1);
    // What was applied is what the table holds: nothing left to do, and it verifies.
    assert_eq!(proxy.sync(&desired).unwrap(), SyncReport::default());
    assert!(proxy.verify().unwrap());
    assert_eq!(entries(&nft, "t", false), 1);
    // Added back: rewritten again.
    desired.insert(
        "default/api".to_string(),
        two_services()["default/api"].clone(),
    );
    assert_eq!(proxy.sync(&desired).unwrap().services_changed, 1);
    assert_eq!(entries(&nft, "t", false), 2);
    assert!(proxy.verify().unwrap());
}

/// A Service with a cluster IP only has no chain of its own: one `services` element
/// leading to the shared `pick_<n>` chain, its endpoints in `endpoints` by slot and in
/// `hairpin`; a change of it is element updates only.
#[test]
fn direct_services_are_map_elements_only() {
    let nft = Arc::new(FakeNft::default());
    let mut proxy = ServiceProxy::new("t", nft.clone()).unwrap();
    let key = "default/api";
    let mut desired = ServiceMap::from([(
        key.to_string(),
        vec![port(
            "http",
            [10, 43, 0, 6],
            80,
            None,
            &[[10, 88, 0, 4], [10, 88, 0, 5]],
        )],
    )]);
    proxy.sync(&desired).unwrap();
    let script = nft.scripts().last().unwrap().clone();
    assert!(script.contains("add element ip t entries_pick_2 { 10.43.0.6 . tcp . 80 }"));
    assert!(script
        .contains("add element ip t endpoints { 10.43.0.6 . tcp . 80 . 1 : 10.88.0.5 . 8080 }"));
    assert!(script
        .contains("add element ip t hairpin { 10.43.0.6 . tcp . 10.88.0.4 . 10.88.0.4 . 8080 }"));
    assert_eq!(
        rules_of(&script, "t", "pick_2"),
        ["dnat ip to ip daddr . meta l4proto . th dport . numgen random mod 2 map @endpoints"]
    );
    assert!(!script.contains("ep_"), "{script}");
    assert_eq!(nft.elements("t", "endpoints"), 2);
    assert_eq!(nft.elements("t", "hairpin"), 2);
    assert!(proxy.verify().unwrap());

    // One endpoint moves: only the elements that differ, no chain, no rule.
    desired.get_mut(key).unwrap()[0].endpoints[1] = ep([10, 88, 0, 9]);
    proxy.sync(&desired).unwrap();
    let update = nft.scripts().last().unwrap().clone();
    assert_eq!(
        update.lines().collect::<Vec<_>>(),
        [
            "delete element ip t endpoints { 10.43.0.6 . tcp . 80 . 1 }",
            "delete element ip t hairpin { 10.43.0.6 . tcp . 10.88.0.5 . 10.88.0.5 . 8080 }",
            "add element ip t endpoints { 10.43.0.6 . tcp . 80 . 1 : 10.88.0.9 . 8080 }",
            "add element ip t hairpin { 10.43.0.6 . tcp . 10.88.0.9 . 10.88.0.9 . 8080 }",
        ]
    );
    assert!(proxy.verify().unwrap());

    // Session affinity: a shared pick chain made for it, elements moved to it; and back.
    desired.get_mut(key).unwrap()[0].affinity_timeout = Some(10800);
    proxy.sync(&desired).unwrap();
    let update = nft.scripts().last().unwrap().clone();
    assert!(
        update.contains("add chain ip t pick_2_aff10800"),
        "{update}"
    );
    assert!(update.contains("add element ip t entries_pick_2_aff10800 { 10.43.0.6 . tcp . 80 }"));
    assert_eq!(nft.elements("t", "endpoints"), 2);
    assert!(proxy.verify().unwrap());
    desired.get_mut(key).unwrap()[0].affinity_timeout = None;
    proxy.sync(&desired).unwrap();
    let update = nft.scripts().last().unwrap().clone();
    assert!(
        update.contains("delete chain ip t pick_2_aff10800"),
        "{update}"
    );
    assert_eq!(nft.elements("t", "endpoints"), 2);
    assert_eq!(entries(&nft, "t", false), 1);
    assert!(proxy.verify().unwrap());

    // More endpoints than the standing chains cover: a shared chain for that count.
    desired.get_mut(key).unwrap()[0].endpoints = (0..=render::STANDING_PICKS)
        .map(|i| SocketAddrV4::new(Ipv4Addr::from(0x0a58_0100 + i as u32), 8080))
        .collect();
    proxy.sync(&desired).unwrap();
    assert_eq!(nft.elements("t", "endpoints"), 65);
    let update = nft.scripts().last().unwrap().clone();
    assert!(update.contains("add chain ip t pick_65"), "{update}");
    assert!(proxy.verify().unwrap());
}

#[test]
fn another_roots_table_routing_the_same_address_is_found() {
    let nft = Arc::new(FakeNft::default());
    for table in ["skiff_a_svc", "skiff_b_svc", "other_svc"] {
        ServiceProxy::new(table, nft.clone())
            .unwrap()
            .sync(&two_services())
            .unwrap();
    }
    let web = Ipv4Addr::new(10, 43, 0, 5);
    // Its own table and tables of other programs do not count.
    assert_eq!(
        other_tables_routing(nft.as_ref(), "skiff_a_svc", web).unwrap(),
        ["skiff_b_svc"]
    );
    // An address only this root routes: nothing to warn about.
    let unused = Ipv4Addr::new(10, 43, 0, 50);
    assert!(other_tables_routing(nft.as_ref(), "skiff_a_svc", unused)
        .unwrap()
        .is_empty());
}
