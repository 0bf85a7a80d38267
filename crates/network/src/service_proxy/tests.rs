use std::process::{Command, Stdio};

use super::*;
use crate::nft::FakeNft;

fn port(
    name: &str,
    ip: [u8; 4],
    port: u16,
    node_port: Option<u16>,
    eps: &[[u8; 4]],
) -> ServicePort {
    ServicePort {
        name: name.into(),
        protocol: Protocol::Tcp,
        cluster_ip: Some(Ipv4Addr::from(ip)),
        port,
        node_port,
        endpoints: eps
            .iter()
            .map(|e| SocketAddrV4::new(Ipv4Addr::from(*e), 8080))
            .collect(),
    }
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
    assert!(script.contains("add element ip skiff_svc node_ports { tcp . 30080 : goto svc_"));
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
    assert_eq!(nft.elements("t", "node_port_keys"), 0);
    assert!(proxy.verify().unwrap());
}

#[test]
fn no_ready_endpoints_means_no_elements() {
    let nft = Arc::new(FakeNft::default());
    let mut proxy = ServiceProxy::new("t", nft.clone()).unwrap();
    let desired = ServiceMap::from([(
        "default/web".to_string(),
        vec![port("", [10, 43, 0, 5], 80, Some(30080), &[])],
    )]);
    proxy.sync(&desired).unwrap();
    assert_eq!(nft.elements("t", "services"), 0);
    assert_eq!(nft.elements("t", "node_ports"), 0);
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
    let mut script = rules.replace(&desired);
    let old = desired.clone();
    desired.get_mut("default/web").unwrap()[0].endpoints.pop();
    desired.remove("default/api");
    for key in ["default/web", "default/api"] {
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
