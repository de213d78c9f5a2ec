//! `/metrics` over a real socket, read with an independent Prometheus text-format parser:
//! the counters move with real traffic, the sessions gauge goes up and down, and the listener
//! is loopback-only by default and absent when disabled.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use prometheus_parse::{Sample, Scrape, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// GET /metrics, parsed.
async fn scrape(addr: SocketAddr) -> Vec<Sample> {
    let mut tcp = TcpStream::connect(addr).await.expect("metrics listener");
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .expect("request");
    let mut response = String::new();
    tokio::time::timeout(WAIT, tcp.read_to_string(&mut response))
        .await
        .expect("answered in time")
        .expect("read");
    let (head, body) = response.split_once("\r\n\r\n").expect("HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    let lines = body.lines().map(|l| Ok(l.to_owned()));
    Scrape::parse(lines)
        .expect("Prometheus text format")
        .samples
}

/// The value of `metric` with exactly these labels (a histogram's: its observation count).
fn value(samples: &[Sample], metric: &str, labels: &[(&str, &str)]) -> f64 {
    let sample = samples
        .iter()
        .find(|s| {
            s.metric == metric
                && s.labels.len() == labels.len()
                && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
        })
        .unwrap_or_else(|| panic!("no {metric} {labels:?}"));
    match &sample.value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
        Value::Histogram(buckets) => buckets.iter().map(|b| b.count).fold(0.0, f64::max),
        Value::Summary(_) => panic!("{metric} is a summary"),
    }
}

/// A login counter: its children appear with their first count, so absent reads as 0.
fn logins(samples: &[Sample], metric: &str, labels: &[(&str, &str)]) -> f64 {
    let present = samples.iter().any(|s| {
        s.metric == metric
            && s.labels.len() == labels.len()
            && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
    });
    if present {
        value(samples, metric, labels)
    } else {
        0.0
    }
}

fn metrics_addr(t: &TestServer) -> SocketAddr {
    t.server.metrics_addr.expect("metrics listen")
}

const BOUND_TCP: &[(&str, &str)] = &[("transport", "tcp"), ("state", "bound")];

/// Scrapes until `metric` has `expected` (sessions end asynchronously after a close).
async fn until_value(addr: SocketAddr, metric: &str, labels: &[(&str, &str)], expected: f64) {
    for _ in 0..500 {
        if value(&scrape(addr).await, metric, labels) == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let now = value(&scrape(addr).await, metric, labels);
    panic!("{metric} {labels:?} stayed {now}, expected {expected}");
}

#[tokio::test]
async fn counters_move_with_logins_messages_and_sessions() {
    let t = TestServer::start().await;
    t.add_user("alice").await;
    t.add_user("bob").await;
    let addr = metrics_addr(&t);
    let before = scrape(addr).await;
    assert_eq!(value(&before, "corvid_c2s_sessions", BOUND_TCP), 0.0);
    let plain = &[("mechanism", "PLAIN")];
    let refused = &[("mechanism", "PLAIN"), ("reason", "not-authorized")];
    let logins_before = logins(&before, "corvid_logins_total", plain);

    let (mut alice, alice_jid) = Raw::login(t.c2s(), t.tls_config(), "alice", "a").await;
    let after_login = scrape(addr).await;
    assert_eq!(
        logins(&after_login, "corvid_logins_total", plain),
        logins_before + 1.0
    );
    assert_eq!(value(&after_login, "corvid_c2s_sessions", BOUND_TCP), 1.0);

    // A wrong password is a failure with its SASL condition.
    let mut wrong = Raw::connect(t.c2s()).await.starttls(t.tls_config()).await;
    wrong.write(OPEN).await;
    let _features = wrong.element().await;
    wrong.auth_plain("alice", "not-the-password").await;
    let failure = wrong.element().await;
    assert_eq!(failure.name(), "failure");
    let after_failure = scrape(addr).await;
    assert_eq!(
        logins(&after_failure, "corvid_login_failures_total", refused),
        1.0
    );
    assert_eq!(
        logins(&after_failure, "corvid_logins_total", plain),
        logins_before + 1.0,
        "a failure is no login"
    );

    let (mut bob, bob_jid) = Raw::login(t.c2s(), t.tls_config(), "bob", "b").await;
    until_value(addr, "corvid_c2s_sessions", BOUND_TCP, 2.0).await;
    let before_message = scrape(addr).await;
    let message = &[("kind", "message")];
    let in_before = value(&before_message, "corvid_stanzas_in_total", message);
    let out_before = value(&before_message, "corvid_stanzas_out_total", message);
    let routed_before = value(&before_message, "corvid_routing_seconds", message);
    alice
        .write(&format!(
            "<message to='{bob_jid}' type='chat' id='m1'><body>hi</body></message>"
        ))
        .await;
    loop {
        let el = bob.element().await;
        if el.name() == "message" {
            assert_eq!(el.attr("from"), Some(alice_jid.as_str()));
            break;
        }
    }
    let after_message = scrape(addr).await;
    assert_eq!(
        value(&after_message, "corvid_stanzas_in_total", message),
        in_before + 1.0
    );
    assert_eq!(
        value(&after_message, "corvid_stanzas_out_total", message),
        out_before + 1.0
    );
    assert_eq!(
        value(&after_message, "corvid_routing_seconds", message),
        routed_before + 1.0
    );

    // Bob's writer woke for the message and saw how much was waiting.
    assert!(value(&after_message, "corvid_session_queue_depth", &[]) >= 1.0);

    // The gauge follows sessions down as well as up.
    bob.write("</stream:stream>").await;
    assert!(bob.closed().await);
    until_value(addr, "corvid_c2s_sessions", BOUND_TCP, 1.0).await;
    alice.write("</stream:stream>").await;
    assert!(alice.closed().await);
    until_value(addr, "corvid_c2s_sessions", BOUND_TCP, 0.0).await;
}

#[tokio::test]
async fn offline_and_archive_writes_are_counted() {
    let t = TestServer::start().await;
    t.add_user("alice").await;
    t.add_user("carol").await;
    let addr = metrics_addr(&t);
    let before = scrape(addr).await;
    assert_eq!(value(&before, "corvid_offline_writes_total", &[]), 0.0);
    let (mut alice, _) = Raw::login(t.c2s(), t.tls_config(), "alice", "a").await;
    // carol is offline: the message is stored for her (and archived for both).
    alice
        .write("<message to='carol@localhost' type='chat' id='o1'><body>later</body></message>")
        .await;
    until_value(addr, "corvid_offline_writes_total", &[], 1.0).await;
    let after = scrape(addr).await;
    assert!(value(&after, "corvid_storage_seconds", &[("op", "offline_push")]) >= 1.0);
    // The archive writer batches off the delivery path: wait for its batch.
    for _ in 0..500 {
        if value(&scrape(addr).await, "corvid_archive_writes_total", &[]) >= 1.0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no archive write counted");
}

#[tokio::test]
async fn loopback_by_default_and_nothing_when_disabled() {
    let defaults = corvid::config::Config::default().metrics;
    assert!(defaults.enabled);
    assert!(defaults.listen.ip().is_loopback(), "{}", defaults.listen);
    let t = TestServer::start().await;
    assert!(metrics_addr(&t).ip().is_loopback());

    // A port known to be free: with metrics off, nothing listens there.
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port");
    let off = TestServer::start_with(|c| {
        c.metrics.enabled = false;
        c.metrics.listen = free;
    })
    .await;
    assert_eq!(off.server.metrics_addr, None);
    let refused = TcpStream::connect(free).await;
    assert!(refused.is_err(), "something listens on {free}");
}

/// A WebSocket (RFC 7395) session on the plain HTTP listener (loopback counts as encrypted):
/// PLAIN, then bind. Returns the socket, kept open.
async fn websocket_login(
    t: &TestServer,
    user: &str,
) -> tokio_tungstenite::WebSocketStream<TcpStream> {
    use base64::Engine;
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;

    let mut request = format!("ws://{}/xmpp-websocket", t.http())
        .into_client_request()
        .expect("request");
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", "xmpp".parse().expect("header"));
    let tcp = TcpStream::connect(t.http()).await.expect("connect");
    let (mut ws, _) = tokio_tungstenite::client_async(request, tcp)
        .await
        .expect("ws handshake");
    let open = "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='localhost' version='1.0'/>";
    let plain = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{PASSWORD}"));
    let auth =
        format!("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{plain}</auth>");
    let bind = "<iq xmlns='jabber:client' type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>";
    // What each step waits for: a frame containing this text.
    let steps = [
        (open, "<stream:features"),
        (auth.as_str(), "<success"),
        (open, "<stream:features"),
        (bind, "<jid>"),
    ];
    for (send, expect) in steps {
        ws.send(Message::Text(send.into())).await.expect("send");
        loop {
            let frame = tokio::time::timeout(WAIT, ws.next())
                .await
                .expect("frame in time")
                .expect("open")
                .expect("ok");
            if let Message::Text(text) = frame {
                if text.contains(expect) {
                    break;
                }
                assert!(!text.contains("failure"), "{text}");
            }
        }
    }
    ws
}

#[tokio::test]
async fn sessions_are_labelled_by_transport_and_detached_ones_counted() {
    let t = TestServer::start().await;
    for user in ["alice", "bob", "carol"] {
        t.add_user(user).await;
    }
    let addr = metrics_addr(&t);
    let bound = |transport| [("transport", transport), ("state", "bound")];

    let mut direct = t.client_via("alice", "d", Mode::DirectTls, false);
    online(&mut direct).await;
    until_value(addr, "corvid_c2s_sessions", &bound("tls"), 1.0).await;
    let samples = scrape(addr).await;
    assert_eq!(value(&samples, "corvid_c2s_sessions", &bound("tcp")), 0.0);
    assert!(
        samples.iter().any(|s| s.metric == "corvid_logins_total"
            && s.labels
                .get("mechanism")
                .is_some_and(|m| m.starts_with("SCRAM-"))),
        "a SCRAM login counted under its mechanism"
    );

    let ws = websocket_login(&t, "bob").await;
    until_value(addr, "corvid_c2s_sessions", &bound("websocket"), 1.0).await;

    // A resumable session whose connection breaks is detached, no longer bound.
    let (mut carol, carol_jid) = Raw::login(t.c2s(), t.tls_config(), "carol", "c").await;
    carol.enable_resumption().await;
    until_value(addr, "corvid_c2s_sessions", &bound("tcp"), 1.0).await;
    let detached = [("transport", "none"), ("state", "detached")];
    assert_eq!(
        value(&scrape(addr).await, "corvid_c2s_sessions", &detached),
        0.0
    );
    drop(carol);
    t.until_detached(&carol_jid).await;
    until_value(addr, "corvid_c2s_sessions", &detached, 1.0).await;
    until_value(addr, "corvid_c2s_sessions", &bound("tcp"), 0.0).await;
    drop(ws);
    until_value(addr, "corvid_c2s_sessions", &bound("websocket"), 0.0).await;
}

#[tokio::test]
async fn offline_writes_are_counted_on_postgresql() {
    let Some((t, schema)) = start_on_postgres().await else {
        eprintln!("CORVID_TEST_POSTGRES unset: skipped");
        return;
    };
    t.add_user("alice").await;
    t.add_user("carol").await;
    let addr = metrics_addr(&t);
    let (mut alice, _) = Raw::login(t.c2s(), t.tls_config(), "alice", "a").await;
    alice
        .write("<message to='carol@localhost' type='chat' id='o1'><body>later</body></message>")
        .await;
    until_value(addr, "corvid_offline_writes_total", &[], 1.0).await;
    drop(alice);
    t.server.shutdown().await;
    drop_schema(&schema).await;
}

#[tokio::test]
async fn s2s_connections_are_counted() {
    use common::federation::{Federation, Trust, A, B};
    use common::xmpp::Session;

    let f = Federation::start(Trust::SelfSigned).await;
    f.a.add_user(&format!("alice@{A}")).await;
    f.b.add_user(&format!("bob@{B}")).await;
    let (a, b) = (metrics_addr(&f.a), metrics_addr(&f.b));
    assert_eq!(value(&scrape(a).await, "corvid_s2s_connections", &[]), 0.0);
    assert_eq!(
        value(&scrape(a).await, "corvid_s2s_outbound_links", &[]),
        0.0
    );
    let mut alice = Session::online_on(&f.a, A, "alice", "pc").await;
    let mut bob = Session::online_on(&f.b, B, "bob", "phone").await;
    alice
        .send("<message to='bob@b.test' type='chat' id='m1'><body>hi</body></message>")
        .await;
    bob.expect(|el| el.name() == "message" && body(el) == "hi")
        .await;
    let at_a = scrape(a).await;
    assert_eq!(value(&at_a, "corvid_s2s_outbound_links", &[]), 1.0);
    assert!(value(&at_a, "corvid_s2s_connections", &[]) >= 1.0);
    assert!(value(&scrape(b).await, "corvid_s2s_connections", &[]) >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_session_queue_is_counted_as_a_stall() {
    // A short queue, and no traffic shaping holding alice back.
    let t = TestServer::start_with(|c| {
        c.limits.session_queue = 4;
        c.limits.bytes_rate_per_session = 0;
    })
    .await;
    t.add_user("alice").await;
    t.add_user("bob").await;
    let addr = metrics_addr(&t);
    let (mut alice, _) = Raw::login(t.c2s(), t.tls_config(), "alice", "a").await;
    // bob reads nothing: the server's writes to him block once the socket buffers are full,
    // then his queue fills.
    let (_bob, bob_jid) = Raw::login(t.c2s(), t.tls_config(), "bob", "b").await;
    assert_eq!(
        value(
            &scrape(addr).await,
            "corvid_session_queue_stalls_total",
            &[]
        ),
        0.0
    );
    let filler = "x".repeat(100 * 1024);
    for n in 0..300 {
        alice
            .write(&format!(
                "<message to='{bob_jid}' type='chat' id='s{n}'><body>{filler}</body></message>"
            ))
            .await;
        if n % 10 == 9
            && value(
                &scrape(addr).await,
                "corvid_session_queue_stalls_total",
                &[],
            ) >= 1.0
        {
            return;
        }
    }
    panic!("30 MB for a client that reads nothing, and no stall counted");
}
