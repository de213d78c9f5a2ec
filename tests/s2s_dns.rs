//! Resolving remote domains for s2s (`corvid::s2s::resolve`) against a real DNS server this
//! test runs on loopback: SRV ordering across `_xmpps-server` and `_xmpp-server`, the
//! fallbacks, `.` targets, timeouts and configured routes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use corvid::config::S2sConfig;
use corvid::s2s::resolve::{ResolveError, Resolver, Target};
use hickory_resolver::proto::op::{Message, ResponseCode};
use hickory_resolver::proto::rr::rdata::{A, AAAA, SRV};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use tokio::net::UdpSocket;

/// The records the test server answers with; every other name is NXDOMAIN, except the
/// names in `failing`, which get SERVFAIL.
#[derive(Clone, Default)]
struct Zone(Vec<Record>, Vec<String>);

fn name(n: &str) -> Name {
    Name::from_ascii(format!("{n}.")).expect("a name")
}

fn key(n: &Name) -> String {
    n.to_ascii().trim_end_matches('.').to_ascii_lowercase()
}

impl Zone {
    fn with(mut self, owner: &str, data: RData) -> Self {
        self.0.push(Record::from_rdata(name(owner), 60, data));
        self
    }
    fn srv(self, owner: &str, priority: u16, weight: u16, port: u16, target: &str) -> Self {
        let target = if target == "." {
            Name::root()
        } else {
            name(target)
        };
        self.with(owner, RData::SRV(SRV::new(priority, weight, port, target)))
    }
    fn servfail(mut self, owner: &str) -> Self {
        self.1.push(owner.to_owned());
        self
    }
    fn a(self, owner: &str, ip: &str) -> Self {
        self.with(owner, RData::A(A(ip.parse().expect("IPv4"))))
    }
    fn aaaa(self, owner: &str, ip: &str) -> Self {
        self.with(owner, RData::AAAA(AAAA(ip.parse().expect("IPv6"))))
    }
}

/// Questions the server was asked, as (name, type).
type Asked = Arc<Mutex<Vec<(String, RecordType)>>>;

fn reply(zone: &Zone, query: &Message, asked: &Asked) -> Message {
    let mut reply = Message::response(query.metadata.id, query.metadata.op_code);
    reply.metadata.recursion_desired = query.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    reply.metadata.authoritative = true;
    for question in &query.queries {
        let wanted = key(question.name());
        asked
            .lock()
            .unwrap()
            .push((wanted.clone(), question.query_type()));
        reply.add_query(question.clone());
        if zone.1.contains(&wanted) {
            reply.metadata.response_code = ResponseCode::ServFail;
            continue;
        }
        let mut owned = zone.0.iter().filter(|r| key(&r.name) == wanted).peekable();
        if owned.peek().is_none() {
            reply.metadata.response_code = ResponseCode::NXDomain;
        }
        for record in owned.filter(|r| r.record_type() == question.query_type()) {
            // The answer carries the name as asked, as a real server's would.
            let mut record = record.clone();
            record.name = question.name().clone();
            reply.add_answer(record);
        }
    }
    reply
}

/// Starts a DNS server for `zone` on an ephemeral UDP port of 127.0.0.1.
async fn dns_server(zone: Zone) -> (SocketAddr, Asked) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let addr = socket.local_addr().expect("address");
    let asked = Asked::default();
    let log = asked.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                return;
            };
            let Ok(query) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let bytes = reply(&zone, &query, &log).to_vec().expect("encodable");
            let _ = socket.send_to(&bytes, from).await;
        }
    });
    (addr, asked)
}

/// A nameserver that reads every question and answers none.
async fn silent_server() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let addr = socket.local_addr().expect("address");
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while socket.recv_from(&mut buf).await.is_ok() {}
    });
    addr
}

fn config(nameserver: SocketAddr, routes: &[(&str, &str)]) -> S2sConfig {
    S2sConfig {
        nameservers: vec![nameserver],
        dns_timeout_ms: 5000,
        routes: routes
            .iter()
            .map(|(d, r)| (d.to_string(), r.to_string()))
            .collect::<BTreeMap<_, _>>(),
        ..S2sConfig::default()
    }
}

async fn resolver(zone: Zone) -> (Resolver, Asked) {
    let (addr, asked) = dns_server(zone).await;
    (Resolver::new(&config(addr, &[])).expect("resolver"), asked)
}

fn target(addr: &str, direct_tls: bool) -> Target {
    Target {
        addr: addr.parse().expect("socket address"),
        direct_tls,
    }
}

#[tokio::test]
async fn direct_tls_first_at_equal_priority() {
    let zone = Zone::default()
        .srv("_xmpp-server._tcp.a.example", 10, 0, 5269, "xmpp.a.example")
        .srv(
            "_xmpps-server._tcp.a.example",
            10,
            0,
            5270,
            "xmpps.a.example",
        )
        .a("xmpp.a.example", "127.0.0.3")
        .a("xmpps.a.example", "127.0.0.2");
    let (resolver, _) = resolver(zone).await;
    for _ in 0..5 {
        assert_eq!(
            resolver.resolve("a.example").await.expect("resolves"),
            [
                target("127.0.0.2:5270", true),
                target("127.0.0.3:5269", false)
            ]
        );
    }
}

#[tokio::test]
async fn lower_priority_number_wins_across_both_services() {
    let zone = Zone::default()
        .srv("_xmpps-server._tcp.b.example", 20, 0, 5270, "tls.b.example")
        .srv(
            "_xmpp-server._tcp.b.example",
            10,
            0,
            5269,
            "plain.b.example",
        )
        .srv(
            "_xmpp-server._tcp.b.example",
            30,
            0,
            5269,
            "backup.b.example",
        )
        .a("tls.b.example", "127.0.0.2")
        .a("plain.b.example", "127.0.0.3")
        .a("backup.b.example", "127.0.0.4")
        .aaaa("backup.b.example", "2001:db8::4");
    let (resolver, _) = resolver(zone).await;
    let found = resolver.resolve("b.example").await.expect("resolves");
    assert_eq!(
        found[..2],
        [
            target("127.0.0.3:5269", false),
            target("127.0.0.2:5270", true)
        ]
    );
    // Both of the last target's addresses, with the record's port.
    let mut rest: Vec<Target> = found[2..].to_vec();
    rest.sort_by_key(|t| t.addr);
    assert_eq!(
        rest,
        [
            target("127.0.0.4:5269", false),
            target("[2001:db8::4]:5269", false)
        ]
    );
}

#[tokio::test]
async fn only_xmpp_server_records() {
    let zone = Zone::default()
        .srv("_xmpp-server._tcp.c.example", 0, 5, 5299, "host.c.example")
        .a("host.c.example", "127.0.0.5");
    let (resolver, _) = resolver(zone).await;
    assert_eq!(
        resolver.resolve("c.example").await.expect("resolves"),
        [target("127.0.0.5:5299", false)]
    );
}

#[tokio::test]
async fn no_srv_falls_back_to_the_domains_addresses_on_5269() {
    let zone = Zone::default()
        .a("d.example", "127.0.0.6")
        .aaaa("d.example", "2001:db8::6");
    let (resolver, _) = resolver(zone).await;
    let mut found = resolver.resolve("d.example").await.expect("resolves");
    found.sort_by_key(|t| t.addr);
    assert_eq!(
        found,
        [
            target("127.0.0.6:5269", false),
            target("[2001:db8::6]:5269", false)
        ]
    );
}

#[tokio::test]
async fn dot_target_means_no_service() {
    let zone = Zone::default()
        .srv("_xmpp-server._tcp.e.example", 0, 0, 0, ".")
        .a("e.example", "127.0.0.7");
    let (resolver, asked) = resolver(zone).await;
    let err = resolver.resolve("e.example").await.expect_err("no service");
    assert!(
        matches!(err, ResolveError::NoService(ref d) if d == "e.example"),
        "{err}"
    );
    assert!(err.to_string().contains("e.example"), "{err}");
    let asked = asked.lock().unwrap();
    assert!(
        !asked.iter().any(|(n, _)| n == "e.example"),
        "no fallback to the domain's addresses: {asked:?}"
    );
}

#[tokio::test]
async fn dot_target_of_one_service_leaves_the_other() {
    let zone = Zone::default()
        .srv("_xmpps-server._tcp.f.example", 0, 0, 0, ".")
        .srv("_xmpp-server._tcp.f.example", 5, 0, 5269, "host.f.example")
        .a("host.f.example", "127.0.0.8");
    let (resolver, _) = resolver(zone).await;
    assert_eq!(
        resolver.resolve("f.example").await.expect("resolves"),
        [target("127.0.0.8:5269", false)]
    );
}

#[tokio::test]
async fn a_failing_srv_lookup_leaves_the_other_services_records() {
    let zone = Zone::default()
        .servfail("_xmpps-server._tcp.i.example")
        .srv("_xmpp-server._tcp.i.example", 0, 0, 5269, "host.i.example")
        .a("host.i.example", "127.0.0.14");
    let (resolver, _) = resolver(zone).await;
    assert_eq!(
        resolver.resolve("i.example").await.expect("resolves"),
        [target("127.0.0.14:5269", false)]
    );
}

#[tokio::test]
async fn a_failing_srv_lookup_is_no_reason_to_skip_srv() {
    // Without the failed name's answer it is unknown whether SRV records exist, so the
    // domain's own address is not used.
    let zone = Zone::default()
        .servfail("_xmpps-server._tcp.j.example")
        .a("j.example", "127.0.0.15");
    let (resolver, asked) = resolver(zone).await;
    let err = resolver.resolve("j.example").await.expect_err("SERVFAIL");
    assert!(matches!(err, ResolveError::Resolver(_)), "{err}");
    let asked = asked.lock().unwrap();
    assert!(!asked.iter().any(|(n, _)| n == "j.example"), "{asked:?}");
}

#[tokio::test]
async fn unknown_domain_is_not_found() {
    let (resolver, _) = resolver(Zone::default()).await;
    let err = resolver
        .resolve("nowhere.example")
        .await
        .expect_err("unknown");
    assert!(
        matches!(err, ResolveError::NotFound(ref d) if d == "nowhere.example"),
        "{err}"
    );
}

#[tokio::test]
async fn srv_target_without_addresses_is_not_found() {
    let zone = Zone::default().srv("_xmpp-server._tcp.g.example", 0, 0, 5269, "gone.g.example");
    let (resolver, _) = resolver(zone).await;
    let err = resolver.resolve("g.example").await.expect_err("no address");
    assert!(matches!(err, ResolveError::NotFound(_)), "{err}");
}

#[tokio::test]
async fn internationalized_domain_is_looked_up_by_its_a_label() {
    let zone = Zone::default()
        .srv(
            "_xmpps-server._tcp.xn--bcher-kva.example",
            0,
            0,
            5270,
            "host.xn--bcher-kva.example",
        )
        .a("host.xn--bcher-kva.example", "127.0.0.9");
    let (resolver, _) = resolver(zone).await;
    assert_eq!(
        resolver.resolve("bücher.example").await.expect("resolves"),
        [target("127.0.0.9:5270", true)]
    );
}

#[tokio::test]
async fn a_nameserver_that_never_answers_fails_in_time() {
    let mut config = config(silent_server().await, &[]);
    config.dns_timeout_ms = 400;
    let resolver = Resolver::new(&config).expect("resolver");
    // The outer bound only keeps a hanging lookup from hanging the test run.
    let result = tokio::time::timeout(Duration::from_secs(30), resolver.resolve("h.example"))
        .await
        .expect("the lookup returned");
    let err = result.expect_err("no answer");
    assert!(matches!(err, ResolveError::Timeout(_)), "{err}");
}

#[tokio::test]
async fn routes_override_dns() {
    // The zone has SRV records for every routed domain: the routes must win anyway.
    let mut zone = Zone::default().a("relay.example", "127.0.0.10");
    for domain in ["ip.example", "v6.example", "hosts.example", "named.example"] {
        zone = zone
            .srv(
                &format!("_xmpp-server._tcp.{domain}"),
                0,
                0,
                5269,
                "dns.example",
            )
            .a("dns.example", "127.0.0.99");
    }
    let (addr, _) = dns_server(zone).await;
    let config = config(
        addr,
        &[
            ("ip.example", "127.0.0.11:5299"),
            ("v6.example", "tls://[::1]:5270"),
            ("hosts.example", "localhost:5269"),
            ("named.example", "tls://relay.example:5271"),
            ("bücher.example", "127.0.0.12"),
        ],
    );
    let resolver = Resolver::new(&config).expect("resolver");

    assert_eq!(
        resolver.resolve("ip.example").await.expect("routed"),
        [target("127.0.0.11:5299", false)]
    );
    assert_eq!(
        resolver.resolve("v6.example").await.expect("routed"),
        [target("[::1]:5270", true)]
    );
    let local = resolver.resolve("hosts.example").await.expect("routed");
    assert!(
        local.contains(&target("127.0.0.1:5269", false)),
        "{local:?}"
    );
    assert!(
        local
            .iter()
            .all(|t| t.addr.ip().is_loopback() && t.addr.port() == 5269 && !t.direct_tls),
        "{local:?}"
    );
    assert_eq!(
        resolver.resolve("named.example").await.expect("routed"),
        [target("127.0.0.10:5271", true)]
    );
    // A route written with U-labels matches the domain in either form.
    for spelling in ["bücher.example", "xn--bcher-kva.example"] {
        assert_eq!(
            resolver.resolve(spelling).await.expect("routed"),
            [target("127.0.0.12:5269", false)]
        );
    }
}

#[tokio::test]
async fn bad_routes_are_refused_at_start() {
    let addr = silent_server().await;
    for route in [
        "tls://10.0.0.7",
        "ftp://10.0.0.7:21",
        "2001:db8::1:5269",
        "h:0",
    ] {
        let err = Resolver::new(&config(addr, &[("example.net", route)])).expect_err(route);
        assert!(
            matches!(err, ResolveError::BadRoute { .. }),
            "{route}: {err}"
        );
        assert!(err.to_string().contains(route), "{err}");
    }
}

#[tokio::test]
async fn an_ip_literal_domain_needs_no_lookup() {
    let addr = silent_server().await;
    let resolver = Resolver::new(&config(addr, &[])).expect("resolver");
    assert_eq!(
        resolver.resolve("127.0.0.13").await.expect("literal"),
        [target("127.0.0.13:5269", false)]
    );
    assert_eq!(
        resolver.resolve("[::1]").await.expect("literal"),
        [target("[::1]:5269", false)]
    );
}
