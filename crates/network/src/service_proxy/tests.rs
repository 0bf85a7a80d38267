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
    // Packets are matched by map lookups, never by one rule per Service.
    assert_eq!(script.matches("vmap @services").count(), 1);
    assert_eq!(script.matches("vmap @node_ports").count(), 1);
    assert!(script.contains("add element ip skiff_svc services { 10.43.0.5 . tcp . 80 : goto svc_"));
    assert!(script.contains("add element ip skiff_svc node_ports { tcp . 30080 : goto ext_"));
    assert!(script.contains("numgen random mod 2 vmap { 0 : goto ep_"));
    assert!(script.contains("meta l4proto tcp dnat ip to 10.88.0.3:8080"));
}

#[test]
fn one_service_change_rewrites_only_that_service() {
    let nft = Arc::new(FakeNft::default());
    let mut proxy = ServiceProxy::new("t", nft.clone()).unwrap();
    let mut desired = two_services();
    let report = proxy.sync(&desired).unwrap();
    assert!(report.rebuilt);
    assert_eq!(nft.elements("t", "services"), 2);
    assert_eq!(nft.elements("t", "node_ports"), 1);
    assert!(proxy.verify().unwrap());
    // Nothing changed: no transaction.
    let before = nft.scripts().len();
    assert_eq!(proxy.sync(&desired).unwrap(), SyncReport::default());
    assert_eq!(nft.scripts().len(), before);

    // One endpoint of web goes away.
    let web = desired.get_mut("default/web").unwrap();
    let gone = web[0].endpoints.pop().unwrap();
    let report = proxy.sync(&desired).unwrap();
    assert_eq!(
        report,
        SyncReport {
            rebuilt: false,
            services_changed: 1
        }
    );
    let script = nft.scripts().last().unwrap().clone();
    let api_chain = ServiceRules::service_chain("default/api", &desired["default/api"][0]);
    assert!(!script.contains(&api_chain), "{script}");
    assert!(!script.contains("delete table"));
    let gone_chain = ServiceRules::endpoint_chain("default/web", &desired["default/web"][0], gone);
    assert!(
        script.contains(&format!("delete chain ip t {gone_chain}")),
        "{script}"
    );
    assert!(script.contains("numgen random mod 1 vmap"));
    assert!(proxy.verify().unwrap());

    // The Service goes: its elements and chains go with it.
    desired.remove("default/web");
    proxy.sync(&desired).unwrap();
    assert_eq!(nft.elements("t", "services"), 1);
    assert_eq!(nft.elements("t", "node_ports"), 0);
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
    assert_eq!(nft.elements("t", "services"), 0);
    assert_eq!(nft.elements("t", "node_ports"), 0);
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
    assert_eq!(nft.elements("t", "services"), 1);
    assert_eq!(nft.elements("t", "node_ports"), 1);
    assert!(proxy.verify().unwrap());
}

#[test]
fn load_balancer_addresses_lead_to_the_external_chain() {
    let mut web = port("", [10, 43, 0, 5], 80, Some(30080), &[[10, 88, 0, 2]]);
    web.load_balancer_ips = vec![Ipv4Addr::new(127, 241, 0, 1)];
    let key = "default/web";
    let ext = ServiceRules::external_chain(key, &web);
    let svc = ServiceRules::service_chain(key, &web);
    let services = ServiceMap::from([(key.to_string(), vec![web])]);
    let script = ServiceRules::new("t").unwrap().replace(&services);
    assert!(
        script.contains(&format!(
            "add element ip t services {{ 127.241.0.1 . tcp . 80 : goto {ext} }}"
        )),
        "{script}"
    );
    assert!(script.contains(&format!(
        "add element ip t node_ports {{ tcp . 30080 : goto {ext} }}"
    )));
    assert!(script.contains(&format!(
        "add element ip t services {{ 10.43.0.5 . tcp . 80 : goto {svc} }}"
    )));
    // externalTrafficPolicy Cluster: masqueraded, then any endpoint.
    assert_eq!(
        rules_of(&script, "t", &ext),
        vec![
            format!("meta mark set meta mark | {MASQUERADE_MARK:#x}"),
            format!("goto {svc}")
        ]
    );
    let nft = Arc::new(FakeNft::default());
    let mut proxy = ServiceProxy::new("t", nft.clone()).unwrap();
    proxy.sync(&services).unwrap();
    assert_eq!(nft.elements("t", "services"), 2);
    assert!(proxy.verify().unwrap());
}

#[test]
fn client_ip_affinity_remembers_clients_per_endpoint() {
    let mut web = port(
        "",
        [10, 43, 0, 5],
        80,
        None,
        &[[10, 88, 0, 2], [10, 88, 0, 3]],
    );
    web.affinity_timeout = Some(10800);
    let key = "default/web";
    let svc = ServiceRules::service_chain(key, &web);
    let sets: Vec<String> = web
        .endpoints
        .iter()
        .map(|e| ServiceRules::affinity_set(key, &web, *e).unwrap())
        .collect();
    let chains: Vec<String> = web
        .endpoints
        .iter()
        .map(|e| ServiceRules::endpoint_chain(key, &web, *e))
        .collect();
    let rules = ServiceRules::new("t").unwrap();
    let mut services = ServiceMap::from([(key.to_string(), vec![web.clone()])]);
    let script = rules.replace(&services);
    for (set, chain) in sets.iter().zip(&chains) {
        assert!(
            script.contains(&format!(
                "add set ip t {set} {{ type ipv4_addr; flags dynamic,timeout; timeout 10800s; }}"
            )),
            "{script}"
        );
        // The endpoint refreshes the client's entry on every new connection.
        let ep_rules = rules_of(&script, "t", chain);
        assert_eq!(ep_rules[1], format!("update @{set} {{ ip saddr }}"));
        assert!(ep_rules[2].contains("dnat ip to"));
    }
    // A known client goes where it went before; only others are balanced.
    let svc_rules = rules_of(&script, "t", &svc);
    assert_eq!(svc_rules.len(), 3);
    assert_eq!(
        svc_rules[0],
        format!("ip saddr @{} goto {}", sets[0], chains[0])
    );
    assert_eq!(
        svc_rules[1],
        format!("ip saddr @{} goto {}", sets[1], chains[1])
    );
    assert!(svc_rules[2].starts_with("numgen random mod 2 vmap"));

    // Another timeout is another set (a set's timeout cannot change); the old ones go.
    let old = services.clone();
    services.get_mut(key).unwrap()[0].affinity_timeout = Some(60);
    let update = rules.service(key, &old[key], &services[key]);
    assert!(update.contains("timeout 60s"), "{update}");
    for set in &sets {
        assert!(
            update.contains(&format!("delete set ip t {set}")),
            "{update}"
        );
    }
    // Affinity off: no sets, no lookups.
    let script = rules.replace(&ServiceMap::from([(
        key.to_string(),
        vec![port("", [10, 43, 0, 5], 80, None, &[[10, 88, 0, 2]])],
    )]));
    assert!(!script.contains("aff_"), "{script}");
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
    let svl = ServiceRules::local_chain(key, &web);
    let rules = ServiceRules::new("t").unwrap();
    let script = rules.replace(&ServiceMap::from([(key.to_string(), vec![web.clone()])]));
    assert!(
        script.contains(&format!(
            "add element ip t services {{ 10.43.0.5 . tcp . 80 : goto {svl} }}"
        )),
        "{script}"
    );
    let svl_rules = rules_of(&script, "t", &svl);
    assert_eq!(svl_rules.len(), 1);
    assert!(svl_rules[0].starts_with("numgen random mod 1 vmap"));
    let local_chain = ServiceRules::endpoint_chain(key, &web, ep([10, 88, 0, 2]));
    assert!(svl_rules[0].contains(&local_chain));

    // No endpoint on this node: dropped (there are endpoints elsewhere), not rejected.
    web.local_endpoints.clear();
    let script = rules.replace(&ServiceMap::from([(key.to_string(), vec![web])]));
    assert!(
        script.contains("add element ip t no_endpoints { 10.43.0.5 . tcp . 80 : drop }"),
        "{script}"
    );
    assert!(!script.contains("add element ip t services"), "{script}");
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
    let (ext, svc, svl) = (
        ServiceRules::external_chain(key, &web),
        ServiceRules::service_chain(key, &web),
        ServiceRules::local_chain(key, &web),
    );
    let rules = ServiceRules::new("t").unwrap();
    let script = rules.replace(&ServiceMap::from([(key.to_string(), vec![web.clone()])]));
    // Only the host's own connections are masqueraded (and may go anywhere).
    assert_eq!(
        rules_of(&script, "t", &ext),
        vec![
            format!(
                "fib saddr type local meta mark set meta mark | {MASQUERADE_MARK:#x} goto {svc}"
            ),
            format!("goto {svl}"),
        ]
    );
    // The cluster IP still reaches every endpoint (internalTrafficPolicy Cluster).
    assert!(script.contains(&format!(
        "add element ip t services {{ 10.43.0.5 . tcp . 80 : goto {svc} }}"
    )));
    assert!(rules_of(&script, "t", &svc)[0].starts_with("numgen random mod 2"));

    // No endpoint here: outside traffic is dropped, the host's still goes anywhere.
    web.local_endpoints.clear();
    let script = rules.replace(&ServiceMap::from([(key.to_string(), vec![web])]));
    assert_eq!(rules_of(&script, "t", &ext).len(), 1);
    assert!(script.contains("add element ip t no_endpoints { 127.241.0.1 . tcp . 80 : drop }"));
    assert!(script.contains("add element ip t no_endpoint_node_ports { tcp . 30080 : drop }"));
    assert!(!script.contains(&format!("add chain ip t {svl}")));
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
    assert_eq!(nft.elements("t", "services"), 2);
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
    let mut script = rules.replace(&desired);
    let old = desired.clone();
    desired.get_mut("default/web").unwrap()[0].endpoints.pop();
    desired.remove("default/api");
    desired.get_mut("default/web").unwrap()[0].affinity_timeout = Some(60);
    desired.get_mut("default/direct").unwrap()[0].endpoints = vec![ep([10, 88, 0, 7])];
    for key in [
        "default/web",
        "default/api",
        "default/empty",
        "default/direct",
    ] {
        script.push_str(&rules.service(
            key,
            old.get(key).map(Vec::as_slice).unwrap_or_default(),
            desired.get(key).map(Vec::as_slice).unwrap_or_default(),
        ));
    }
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
    assert_eq!(nft.elements("t", "services"), 1);
    // Added back: rewritten again.
    desired.insert(
        "default/api".to_string(),
        two_services()["default/api"].clone(),
    );
    assert_eq!(proxy.sync(&desired).unwrap().services_changed, 1);
    assert_eq!(nft.elements("t", "services"), 2);
    assert!(proxy.verify().unwrap());
}

/// A Service with a cluster IP only, no affinity and no Local policy has no chain of its
/// own: one `services` element leading to the shared `pick_<n>` chain, its endpoints in
/// `endpoints` by slot and in `hairpin`; a change of it is element updates only.
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
    assert!(script.contains("add element ip t services { 10.43.0.6 . tcp . 80 : goto pick_2 }"));
    assert!(script
        .contains("add element ip t endpoints { 10.43.0.6 . tcp . 80 . 1 : 10.88.0.5 . 8080 }"));
    assert!(script
        .contains("add element ip t hairpin { 10.43.0.6 . tcp . 10.88.0.4 . 10.88.0.4 . 8080 }"));
    assert_eq!(
        rules_of(&script, "t", "pick_2"),
        ["dnat ip to ip daddr . meta l4proto . th dport . numgen random mod 2 map @endpoints"]
    );
    let api = &desired[key][0];
    assert!(!script.contains(&ServiceRules::service_chain(key, api)));
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

    // Session affinity needs per-endpoint sets: the port gets chains; and back.
    desired.get_mut(key).unwrap()[0].affinity_timeout = Some(10800);
    proxy.sync(&desired).unwrap();
    let update = nft.scripts().last().unwrap().clone();
    let svc = ServiceRules::service_chain(key, &desired[key][0]);
    assert!(
        update.contains(&format!("add chain ip t {svc}")),
        "{update}"
    );
    assert!(update.contains("delete element ip t endpoints"), "{update}");
    assert!(update.contains(&format!(
        "add element ip t services {{ 10.43.0.6 . tcp . 80 : goto {svc} }}"
    )));
    assert_eq!(nft.elements("t", "endpoints"), 0);
    assert_eq!(nft.elements("t", "hairpin"), 0);
    assert!(proxy.verify().unwrap());
    desired.get_mut(key).unwrap()[0].affinity_timeout = None;
    proxy.sync(&desired).unwrap();
    let update = nft.scripts().last().unwrap().clone();
    assert!(
        update.contains(&format!("delete chain ip t {svc}")),
        "{update}"
    );
    assert_eq!(nft.elements("t", "endpoints"), 2);
    assert_eq!(nft.elements("t", "services"), 1);
    assert!(proxy.verify().unwrap());

    // More endpoints than the shared chains cover: chains of its own.
    desired.get_mut(key).unwrap()[0].endpoints = (0..=render::MAX_DIRECT_ENDPOINTS)
        .map(|i| SocketAddrV4::new(Ipv4Addr::from(0x0a58_0100 + i as u32), 8080))
        .collect();
    proxy.sync(&desired).unwrap();
    assert_eq!(nft.elements("t", "endpoints"), 0);
    assert!(nft
        .scripts()
        .last()
        .unwrap()
        .contains(&format!("add chain ip t {svc}")));
    assert!(proxy.verify().unwrap());
}
