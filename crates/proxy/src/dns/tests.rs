use super::*;
use hickory_proto::op::Query;

fn records() -> Records {
    records_with_web_at("10.43.0.5")
}

/// The test cluster, with the `web` Service's cluster IP at `web_ip`.
fn records_with_web_at(web_ip: &str) -> Records {
    let services: Vec<Service> = serde_json::from_value(json!([
        {"metadata": {"name": "web", "namespace": "default"},
         "spec": {"type": "ClusterIP", "clusterIP": web_ip,
                  "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}},
        {"metadata": {"name": "db", "namespace": "default"},
         "spec": {"type": "ClusterIP", "clusterIP": "None",
                  "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}]}},
        {"metadata": {"name": "ext", "namespace": "default"},
         "spec": {"type": "ExternalName", "externalName": "example.com"}},
    ]))
    .unwrap();
    let slices: Vec<EndpointSlice> = serde_json::from_value(json!([
        {"metadata": {"name": "db-1", "namespace": "default",
                      "labels": {"kubernetes.io/service-name": "db"}},
         "addressType": "IPv4",
         "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}],
         "endpoints": [
            {"addresses": ["10.88.0.7"], "hostname": "db-0", "conditions": {"ready": true}},
            {"addresses": ["10.88.0.8"], "hostname": "db-1", "conditions": {"ready": true}},
            {"addresses": ["10.88.0.9"], "hostname": "db-2", "conditions": {"ready": false}},
         ]},
    ]))
    .unwrap();
    let endpoints = model::endpoints_by_service(&slices);
    Records::build(&services, &endpoints, "cluster.local")
}

fn ask(records: &Records, qname: &str, qtype: RecordType) -> Option<Message> {
    let mut request = Message::new();
    request.set_id(42);
    request.add_query(Query::query(Name::from_ascii(qname).unwrap(), qtype));
    match answer(records, "cluster.local", &request) {
        Reply::Answer(m) => Some(m),
        Reply::Forward => None,
    }
}

fn data(m: &Message) -> Vec<String> {
    let mut out: Vec<String> = m.answers().iter().map(|r| r.data().to_string()).collect();
    out.sort();
    out
}

#[test]
fn services_resolve_to_cluster_ips_and_headless_to_ready_endpoints() {
    let r = records();
    let m = ask(&r, "web.default.svc.cluster.local.", RecordType::A).unwrap();
    assert_eq!(m.response_code(), ResponseCode::NoError);
    assert!(m.authoritative());
    assert_eq!(m.id(), 42);
    assert_eq!(data(&m), ["10.43.0.5"]);
    // Case does not matter; no AAAA, but the name exists.
    let m = ask(&r, "WEB.default.svc.cluster.local.", RecordType::AAAA).unwrap();
    assert_eq!(
        (m.response_code(), m.answers().len()),
        (ResponseCode::NoError, 0)
    );
    let m = ask(&r, "db.default.svc.cluster.local.", RecordType::A).unwrap();
    assert_eq!(data(&m), ["10.88.0.7", "10.88.0.8"]);
    let m = ask(&r, "db-1.db.default.svc.cluster.local.", RecordType::A).unwrap();
    assert_eq!(data(&m), ["10.88.0.8"]);
    let m = ask(&r, "ext.default.svc.cluster.local.", RecordType::A).unwrap();
    assert_eq!(data(&m), ["example.com."]);
}

#[test]
fn pod_names_resolve_to_the_address_they_spell() {
    let r = records();
    let m = ask(&r, "10-244-1-7.default.pod.cluster.local.", RecordType::A).unwrap();
    assert_eq!(m.response_code(), ResponseCode::NoError);
    assert_eq!(data(&m), ["10.244.1.7"]);
    let m = ask(&r, "10-244-1-7.other.pod.cluster.local.", RecordType::AAAA).unwrap();
    assert_eq!(
        (m.response_code(), m.answers().len()),
        (ResponseCode::NoError, 0)
    );
    for bad in [
        "10-244-1.default.pod.cluster.local.",
        "web.default.pod.cluster.local.",
    ] {
        let m = ask(&r, bad, RecordType::A).unwrap();
        assert_eq!(m.response_code(), ResponseCode::NXDomain, "{bad}");
    }
}

#[test]
fn srv_and_ptr() {
    let r = records();
    let m = ask(
        &r,
        "_http._tcp.web.default.svc.cluster.local.",
        RecordType::SRV,
    )
    .unwrap();
    assert_eq!(data(&m), ["0 100 80 web.default.svc.cluster.local."]);
    assert_eq!(m.additionals().len(), 1);
    let m = ask(
        &r,
        "_pg._tcp.db.default.svc.cluster.local.",
        RecordType::SRV,
    )
    .unwrap();
    assert_eq!(
        data(&m),
        [
            "0 100 5432 db-0.db.default.svc.cluster.local.",
            "0 100 5432 db-1.db.default.svc.cluster.local."
        ]
    );
    let m = ask(&r, "5.0.43.10.in-addr.arpa.", RecordType::PTR).unwrap();
    assert_eq!(data(&m), ["web.default.svc.cluster.local."]);
    let m = ask(&r, "8.0.88.10.in-addr.arpa.", RecordType::PTR).unwrap();
    assert_eq!(data(&m), ["db-1.db.default.svc.cluster.local."]);
    // Addresses that are not the cluster's go upstream.
    assert!(ask(&r, "1.1.1.1.in-addr.arpa.", RecordType::PTR).is_none());
}

#[test]
fn unknown_cluster_names_are_nxdomain_and_others_forwarded() {
    let r = records();
    for name in [
        "nope.default.svc.cluster.local.",
        "web.other.svc.cluster.local.",
        "web.default.svc.cluster.local.default.svc.cluster.local.",
        "db-2.db.default.svc.cluster.local.",
        "_nope._tcp.web.default.svc.cluster.local.",
        "cluster.local.",
    ] {
        let m = ask(&r, name, RecordType::A).unwrap();
        assert_eq!(m.response_code(), ResponseCode::NXDomain, "{name}");
        assert_eq!(m.name_servers().len(), 1, "{name}: SOA");
    }
    assert!(ask(&r, "example.com.", RecordType::A).is_none());
    assert!(ask(&r, "notcluster.local.", RecordType::A).is_none());
}

/// Over real UDP: a cluster name answered in-process, another forwarded to a fake upstream.
#[tokio::test]
async fn serves_udp_and_forwards() {
    let upstream = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let upstream_addr = upstream.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 512];
        let (n, from) = upstream.recv_from(&mut buf).await.unwrap();
        let request = Message::from_vec(&buf[..n]).unwrap();
        let mut response = Message::new();
        response.set_header(Header::response_from_request(request.header()));
        response.add_query(request.queries()[0].clone());
        response.add_answer(Record::from_rdata(
            request.queries()[0].name().clone(),
            60,
            RData::A(A(Ipv4Addr::new(192, 0, 2, 10))),
        ));
        upstream
            .send_to(&response.to_vec().unwrap(), from)
            .await
            .unwrap();
    });
    let dns = ClusterDns::bind(
        "127.0.0.1:0".parse().unwrap(),
        DnsConfig {
            domain: "cluster.local".into(),
            upstreams: vec![upstream_addr],
            timeout: Duration::from_secs(2),
        },
    )
    .unwrap();
    dns.set_records(records());
    let addr = dns.local_addr().unwrap();
    tokio::spawn(dns.serve(None));
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for (qname, want) in [
        ("web.default.svc.cluster.local.", "10.43.0.5"),
        ("example.org.", "192.0.2.10"),
    ] {
        let mut request = Message::new();
        request.set_id(7);
        request.set_recursion_desired(true);
        request.add_query(Query::query(
            Name::from_ascii(qname).unwrap(),
            RecordType::A,
        ));
        client
            .send_to(&request.to_vec().unwrap(), addr)
            .await
            .unwrap();
        let mut buf = vec![0u8; 512];
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), client.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        let m = Message::from_vec(&buf[..n]).unwrap();
        assert_eq!(data(&m), [want], "{qname}");
    }
    // And over TCP.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut request = Message::new();
    request.add_query(Query::query(
        Name::from_ascii("db.default.svc.cluster.local.").unwrap(),
        RecordType::A,
    ));
    write_frame(&mut stream, &request.to_vec().unwrap())
        .await
        .unwrap();
    let m = Message::from_vec(&read_frame(&mut stream).await.unwrap()).unwrap();
    assert_eq!(data(&m), ["10.88.0.7", "10.88.0.8"]);
}

/// An ExternalName answer carries the target's addresses: from the upstream for an outside
/// name, from the cluster's records for a Service name.
#[tokio::test]
async fn external_names_are_followed_to_addresses() {
    let upstream = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let upstream_addr = upstream.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 512];
        let (n, from) = upstream.recv_from(&mut buf).await.unwrap();
        let request = Message::from_vec(&buf[..n]).unwrap();
        assert_eq!(request.queries()[0].name().to_ascii(), "example.com.");
        let mut response = Message::new();
        response.set_header(Header::response_from_request(request.header()));
        response.add_query(request.queries()[0].clone());
        response.add_answer(Record::from_rdata(
            request.queries()[0].name().clone(),
            60,
            RData::A(A(Ipv4Addr::new(192, 0, 2, 55))),
        ));
        upstream
            .send_to(&response.to_vec().unwrap(), from)
            .await
            .unwrap();
    });
    let config = DnsConfig {
        domain: "cluster.local".into(),
        upstreams: vec![upstream_addr],
        timeout: Duration::from_secs(2),
    };
    let services: Vec<Service> = serde_json::from_value(json!([
        {"metadata": {"name": "web", "namespace": "default"},
         "spec": {"type": "ClusterIP", "clusterIP": "10.43.0.5",
                  "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}},
        {"metadata": {"name": "ext", "namespace": "default"},
         "spec": {"type": "ExternalName", "externalName": "example.com"}},
        {"metadata": {"name": "alias", "namespace": "default"},
         "spec": {"type": "ExternalName", "externalName": "web.default.svc.cluster.local"}},
    ]))
    .unwrap();
    let records = SharedRecords::default();
    records.replace(Records::build(
        &services,
        &Default::default(),
        "cluster.local",
    ));
    for (qname, want) in [
        (
            "ext.default.svc.cluster.local.",
            ["192.0.2.55", "example.com."],
        ),
        (
            "alias.default.svc.cluster.local.",
            ["10.43.0.5", "web.default.svc.cluster.local."],
        ),
    ] {
        let mut request = Message::new();
        request.set_id(9);
        request.add_query(Query::query(
            Name::from_ascii(qname).unwrap(),
            RecordType::A,
        ));
        let bytes = resolve(&request.to_vec().unwrap(), &config, &records, false)
            .await
            .unwrap();
        let m = Message::from_vec(&bytes).unwrap();
        assert_eq!(m.id(), 9);
        assert_eq!(data(&m), want, "{qname}");
    }
}

/// A query in wire form; `edit` sets flags or EDNS.
fn query_bytes(
    id: u16,
    qname: &str,
    qtype: RecordType,
    edit: impl FnOnce(&mut Message),
) -> Vec<u8> {
    let mut request = Message::new();
    request.set_id(id);
    request.set_recursion_desired(true);
    request.add_query(Query::query(Name::from_ascii(qname).unwrap(), qtype));
    edit(&mut request);
    request.to_vec().unwrap()
}

fn responder(records: Records) -> (UdpResponder, Arc<SharedRecords>) {
    let shared = Arc::new(SharedRecords::default());
    shared.replace(records);
    (
        UdpResponder::new(shared.clone(), "cluster.local".into()),
        shared,
    )
}

/// The responder's answer, which must be the same bytes as an uncached answer.
fn respond(responder: &mut UdpResponder, query: &[u8]) -> Message {
    let mut out = Vec::new();
    assert!(
        responder.respond(query, &mut out),
        "answered from the records"
    );
    let fresh = local_answer(query, &responder_records(responder), "cluster.local", false);
    assert_eq!(
        Some(&out),
        fresh.as_ref(),
        "cached and fresh answers differ"
    );
    Message::from_vec(&out).unwrap()
}

fn responder_records(responder: &UdpResponder) -> Arc<Records> {
    responder.records().snapshot().1
}

#[test]
fn cached_answers_change_with_the_services() {
    let (mut r, shared) = responder(records());
    let q = query_bytes(1, "web.default.svc.cluster.local.", RecordType::A, |_| {});
    assert_eq!(data(&respond(&mut r, &q)), ["10.43.0.5"]);
    assert_eq!(data(&respond(&mut r, &q)), ["10.43.0.5"]);
    assert_eq!((r.cache().len(), r.cache().hits()), (1, 1));
    shared.replace(records_with_web_at("10.43.0.6"));
    assert_eq!(data(&respond(&mut r, &q)), ["10.43.0.6"]);
    assert_eq!(
        r.cache().hits(),
        1,
        "a changed Service is not answered from the cache"
    );
    shared.replace(Records::default());
    let m = respond(&mut r, &q);
    assert_eq!(m.response_code(), ResponseCode::NXDomain);
    assert_eq!(m.name_servers().len(), 1);
    // Names outside the cluster domain are not the responder's.
    let q = query_bytes(2, "example.com.", RecordType::A, |_| {});
    assert!(!r.respond(&q, &mut Vec::new()));
}

#[test]
fn cached_answers_carry_each_query_id() {
    let (mut r, _) = responder(records());
    for id in [1, 0xbeef, 7] {
        let q = query_bytes(id, "db.default.svc.cluster.local.", RecordType::A, |_| {});
        let m = respond(&mut r, &q);
        assert_eq!(m.id(), id);
        assert_eq!(data(&m), ["10.88.0.7", "10.88.0.8"]);
    }
    assert_eq!(r.cache().hits(), 2);
}

#[test]
fn cached_answers_echo_the_question_as_asked() {
    let (mut r, _) = responder(records());
    for (qname, hits) in [
        ("web.default.svc.cluster.local.", 0),
        ("WeB.DEFAULT.svc.Cluster.local.", 1),
        ("WEB.default.SVC.cluster.LOCAL.", 2),
    ] {
        let q = query_bytes(3, qname, RecordType::A, |_| {});
        let m = respond(&mut r, &q);
        assert_eq!(m.queries()[0].name().to_ascii(), qname);
        assert_eq!(m.answers()[0].name().to_ascii(), qname);
        assert_eq!(data(&m), ["10.43.0.5"]);
        assert_eq!(r.cache().hits(), hits);
    }
    // Negative answers and search-path names too.
    for qname in [
        "web.default.svc.cluster.local.default.svc.cluster.local.",
        "WEB.default.svc.cluster.local.default.svc.cluster.local.",
    ] {
        let m = respond(&mut r, &query_bytes(4, qname, RecordType::A, |_| {}));
        assert_eq!(m.response_code(), ResponseCode::NXDomain);
        assert_eq!(m.queries()[0].name().to_ascii(), qname);
    }
}

/// A headless Service with 40 ready endpoints: its A answer needs more than 512 bytes.
fn big_headless() -> Records {
    let services: Vec<Service> = serde_json::from_value(json!([
        {"metadata": {"name": "big", "namespace": "default"},
         "spec": {"type": "ClusterIP", "clusterIP": "None"}},
    ]))
    .unwrap();
    let endpoints: Vec<_> = (0..40)
        .map(|i| json!({"addresses": [format!("10.88.1.{i}")], "conditions": {"ready": true}}))
        .collect();
    let slices: Vec<EndpointSlice> = serde_json::from_value(json!([
        {"metadata": {"name": "big-1", "namespace": "default",
                      "labels": {"kubernetes.io/service-name": "big"}},
         "addressType": "IPv4", "endpoints": endpoints},
    ]))
    .unwrap();
    Records::build(
        &services,
        &model::endpoints_by_service(&slices),
        "cluster.local",
    )
}

#[test]
fn queries_with_other_flags_or_edns_get_their_own_answers() {
    let (mut r, _) = responder(records());
    let name = "web.default.svc.cluster.local.";
    let recursive = query_bytes(5, name, RecordType::A, |_| {});
    let plain = query_bytes(5, name, RecordType::A, |m| {
        m.set_recursion_desired(false);
    });
    assert!(respond(&mut r, &recursive).recursion_desired());
    assert!(!respond(&mut r, &plain).recursion_desired());
    assert!(respond(&mut r, &recursive).recursion_desired());
    assert_eq!((r.cache().len(), r.cache().hits()), (2, 1));

    // Without EDNS the answer is cut to 512 bytes with TC set; with a 4096-byte EDNS
    // payload it is whole; over TCP it is whole.
    let (mut r, _) = responder(big_headless());
    let name = "big.default.svc.cluster.local.";
    let udp = query_bytes(6, name, RecordType::A, |_| {});
    let edns = query_bytes(6, name, RecordType::A, |m| {
        let mut edns = hickory_proto::op::Edns::new();
        edns.set_max_payload(4096);
        m.set_edns(edns);
    });
    for _ in 0..2 {
        let cut = respond(&mut r, &udp);
        assert!(cut.truncated());
        assert!(cut.answers().len() < 40);
        let whole = respond(&mut r, &edns);
        assert!(!whole.truncated());
        assert_eq!(whole.answers().len(), 40);
    }
    assert_eq!((r.cache().len(), r.cache().hits()), (2, 2));
    let over_tcp = local_answer(&udp, &big_headless(), "cluster.local", true).unwrap();
    let over_tcp = Message::from_vec(&over_tcp).unwrap();
    assert!(!over_tcp.truncated());
    assert_eq!(over_tcp.answers().len(), 40);
}

/// A burst of queries from two clients, read and answered in batches: each answer goes to
/// its own client with its own ID and name.
#[tokio::test]
async fn bursts_of_queries_get_their_own_answers() {
    let dns = ClusterDns::bind(
        "127.0.0.1:0".parse().unwrap(),
        DnsConfig {
            domain: "cluster.local".into(),
            upstreams: Vec::new(),
            timeout: Duration::from_secs(1),
        },
    )
    .unwrap();
    dns.set_records(records());
    let addr = dns.local_addr().unwrap();
    tokio::spawn(dns.serve(None));
    let names = [
        ("web.default.svc.cluster.local.", vec!["10.43.0.5"]),
        (
            "db.default.svc.cluster.local.",
            vec!["10.88.0.7", "10.88.0.8"],
        ),
        ("db-0.db.default.svc.cluster.local.", vec!["10.88.0.7"]),
    ];
    let clients = [
        UdpSocket::bind("127.0.0.1:0").await.unwrap(),
        UdpSocket::bind("127.0.0.1:0").await.unwrap(),
    ];
    for id in 0..100u16 {
        let (qname, _) = &names[usize::from(id) % names.len()];
        let q = query_bytes(id, qname, RecordType::A, |_| {});
        clients[usize::from(id) % 2]
            .send_to(&q, addr)
            .await
            .unwrap();
    }
    for (c, client) in clients.iter().enumerate() {
        let mut seen = std::collections::BTreeSet::new();
        let mut buf = vec![0u8; 512];
        while seen.len() < 50 {
            let n = tokio::time::timeout(Duration::from_secs(5), client.recv(&mut buf))
                .await
                .expect("an answer to every query")
                .unwrap();
            let m = Message::from_vec(&buf[..n]).unwrap();
            assert_eq!(
                usize::from(m.id()) % 2,
                c,
                "answer sent to the other client"
            );
            let (qname, want) = &names[usize::from(m.id()) % names.len()];
            assert_eq!(m.queries()[0].name().to_ascii(), *qname);
            assert_eq!(data(&m), *want);
            assert!(seen.insert(m.id()), "answer {} sent twice", m.id());
        }
    }
}
