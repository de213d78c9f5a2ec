//! External components (XEP-0114) over real sockets: a raw TCP component performs the
//! handshake and exchanges stanzas with users logged in over c2s.

mod common;

use std::net::SocketAddr;

use common::xmpp::{error_condition, Session};
use common::{Raw, TestServer};
use corvid::config::ComponentService;
use corvid::xml::Frame;
use minidom::Element;
use sha1::{Digest, Sha1};

const GATEWAY: &str = "gateway.localhost";
const OTHER: &str = "bots.example.net";
const SECRET: &str = "gateway-secret";
const ACCEPT: &str = "jabber:component:accept";

async fn start() -> TestServer {
    TestServer::start_with(|config| {
        config.components.port = 0;
        for domain in [GATEWAY, OTHER] {
            config.components.services.insert(
                domain.to_owned(),
                ComponentService {
                    secret: SECRET.to_owned(),
                },
            );
        }
    })
    .await
}

fn listener(server: &TestServer) -> SocketAddr {
    server
        .server
        .component_addr
        .expect("the component listener runs")
}

fn header(namespace: &str, to: &str) -> String {
    format!(
        "<?xml version='1.0'?><stream:stream xmlns='{namespace}' \
         xmlns:stream='http://etherx.jabber.org/streams' to='{to}'>"
    )
}

/// Opens a component stream to `to`; returns the connection and the server's stream id.
async fn open(server: &TestServer, to: &str) -> (Raw, String) {
    let mut raw = Raw::connect(listener(server)).await;
    raw.write(&header(ACCEPT, to)).await;
    match raw.frame().await {
        Some(Frame::StreamOpen(header)) => {
            let id = header.id.expect("the server's header carries a stream id");
            (raw, id)
        }
        other => panic!("expected the server's stream header, got {other:?}"),
    }
}

fn proof(stream_id: &str, secret: &str) -> String {
    Sha1::digest(format!("{stream_id}{secret}").as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A component of `domain` that completed the handshake.
async fn connect(server: &TestServer, domain: &str) -> Raw {
    let (mut raw, id) = open(server, domain).await;
    raw.write(&format!("<handshake>{}</handshake>", proof(&id, SECRET)))
        .await;
    let answer = raw.element().await;
    assert_eq!(answer.name(), "handshake", "{answer:?}");
    assert_eq!(answer.ns(), ACCEPT);
    assert_eq!(answer.children().count(), 0);
    raw
}

/// The next stanza the component receives that matches `pred`.
async fn expect(raw: &mut Raw, pred: impl Fn(&Element) -> bool) -> Element {
    loop {
        let el = raw.element().await;
        if pred(&el) {
            return el;
        }
    }
}

fn body(el: &Element, ns: &str) -> Option<String> {
    el.get_child("body", ns).map(Element::text)
}

#[tokio::test]
async fn the_handshake_proves_the_secret_and_the_server_lists_the_component() {
    let server = start().await;
    server.add_user("alice").await;
    let _gateway = connect(&server, GATEWAY).await;
    let mut alice = Session::online(&server, "alice", "a").await;
    let items = alice
        .iq("<iq type='get' to='localhost'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>")
        .await;
    assert_eq!(items.attr("type"), Some("result"), "{items:?}");
    let jids: Vec<&str> = items
        .get_child("query", "http://jabber.org/protocol/disco#items")
        .expect("query")
        .children()
        .filter_map(|item| item.attr("jid"))
        .collect();
    // Listed under the hosted domain it is named under, and the other one (a domain of its
    // own) under the main domain: both here, since localhost is the only hosted domain.
    assert!(jids.contains(&GATEWAY), "{jids:?}");
    assert!(jids.contains(&OTHER), "{jids:?}");
}

#[tokio::test]
async fn a_wrong_secret_is_not_authorized() {
    let server = start().await;
    let (mut raw, id) = open(&server, GATEWAY).await;
    raw.write(&format!(
        "<handshake>{}</handshake>",
        proof(&id, "not-the-secret")
    ))
    .await;
    assert_eq!(raw.stream_error().await, "not-authorized");
    assert!(raw.closed().await);
}

#[tokio::test]
async fn a_proof_for_another_stream_is_not_authorized() {
    let server = start().await;
    let (mut raw, _id) = open(&server, GATEWAY).await;
    raw.write(&format!(
        "<handshake>{}</handshake>",
        proof("some-other-id", SECRET)
    ))
    .await;
    assert_eq!(raw.stream_error().await, "not-authorized");
}

#[tokio::test]
async fn an_unknown_domain_is_host_unknown() {
    let server = start().await;
    for to in ["nothing.localhost", "localhost"] {
        let mut raw = Raw::connect(listener(&server)).await;
        raw.write(&header(ACCEPT, to)).await;
        assert_eq!(raw.stream_error().await, "host-unknown", "{to}");
    }
}

#[tokio::test]
async fn another_namespace_is_refused() {
    let server = start().await;
    let mut raw = Raw::connect(listener(&server)).await;
    raw.write(&header("jabber:client", GATEWAY)).await;
    assert_eq!(raw.stream_error().await, "invalid-namespace");
}

#[tokio::test]
async fn a_stanza_before_the_handshake_is_not_authorized() {
    let server = start().await;
    server.add_user("alice").await;
    let (mut raw, _id) = open(&server, GATEWAY).await;
    raw.write(
        "<message from='gateway.localhost' to='alice@localhost'><body>early</body></message>",
    )
    .await;
    assert_eq!(raw.stream_error().await, "not-authorized");
}

#[tokio::test]
async fn messages_cross_between_users_and_the_component() {
    let server = start().await;
    server.add_user("alice").await;
    let mut gateway = connect(&server, GATEWAY).await;
    let mut alice = Session::online(&server, "alice", "a").await;

    alice
        .send("<message to='bob@gateway.localhost' type='chat' id='m1'><body>to the gateway</body></message>")
        .await;
    let got = expect(&mut gateway, |el| el.name() == "message").await;
    assert_eq!(got.ns(), ACCEPT, "written in the component namespace");
    assert_eq!(got.attr("from"), Some(alice.jid.as_str()));
    assert_eq!(got.attr("to"), Some("bob@gateway.localhost"));
    assert_eq!(body(&got, ACCEPT).as_deref(), Some("to the gateway"));

    gateway
        .write(&format!(
            "<message from='bob@gateway.localhost/irc' to='{}' type='chat' id='m2'>\
             <body>from the gateway</body></message>",
            alice.jid
        ))
        .await;
    let got = alice
        .expect(|el| el.name() == "message" && el.attr("id") == Some("m2"))
        .await;
    assert_eq!(got.attr("from"), Some("bob@gateway.localhost/irc"));
    assert_eq!(
        body(&got, "jabber:client").as_deref(),
        Some("from the gateway")
    );

    // A `from` left out means the component's domain itself (what Prosody and ejabberd do).
    gateway
        .write("<message to='alice@localhost' type='chat' id='m3'><body>no from</body></message>")
        .await;
    let got = alice
        .expect(|el| el.name() == "message" && el.attr("id") == Some("m3"))
        .await;
    assert_eq!(got.attr("from"), Some(GATEWAY));
}

#[tokio::test]
async fn iqs_make_the_round_trip_both_ways() {
    let server = start().await;
    server.add_user("alice").await;
    let mut gateway = connect(&server, GATEWAY).await;
    let mut alice = Session::online(&server, "alice", "a").await;

    // A user asks the component; the component answers.
    alice
        .send(
            "<iq type='get' to='gateway.localhost' id='v1'><query xmlns='jabber:iq:version'/></iq>",
        )
        .await;
    let request = expect(&mut gateway, |el| el.name() == "iq").await;
    assert_eq!(request.attr("type"), Some("get"));
    assert_eq!(request.attr("from"), Some(alice.jid.as_str()));
    gateway
        .write(&format!(
            "<iq type='result' from='gateway.localhost' to='{}' id='v1'>\
             <query xmlns='jabber:iq:version'><name>gateway</name></query></iq>",
            alice.jid
        ))
        .await;
    let answer = alice
        .expect(|el| el.name() == "iq" && el.attr("id") == Some("v1"))
        .await;
    assert_eq!(answer.attr("type"), Some("result"));
    assert_eq!(answer.attr("from"), Some(GATEWAY));

    // The component asks the server; the server answers the component.
    gateway
        .write("<iq type='get' from='gateway.localhost' to='localhost' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    let answer = expect(&mut gateway, |el| el.attr("id") == Some("p1")).await;
    assert_eq!(answer.attr("type"), Some("result"), "{answer:?}");
    assert_eq!(answer.attr("from"), Some("localhost"));
    assert_eq!(answer.attr("to"), Some(GATEWAY));

    // A request for a session that does not exist comes back as an error, not silence.
    gateway
        .write("<iq type='get' from='gateway.localhost' to='alice@localhost/gone' id='p2'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    let answer = expect(&mut gateway, |el| el.attr("id") == Some("p2")).await;
    assert_eq!(answer.attr("type"), Some("error"), "{answer:?}");
}

#[tokio::test]
async fn presence_reaches_the_component_and_comes_back() {
    let server = start().await;
    server.add_user("alice").await;
    let mut gateway = connect(&server, GATEWAY).await;
    let mut alice = Session::online(&server, "alice", "a").await;

    alice
        .send("<presence to='gateway.localhost' type='subscribe'/>")
        .await;
    let subscribe = expect(&mut gateway, |el| el.name() == "presence").await;
    assert_eq!(subscribe.attr("type"), Some("subscribe"));
    assert_eq!(subscribe.attr("from"), Some(alice.bare()));

    gateway
        .write("<presence from='gateway.localhost' to='alice@localhost' type='subscribed'/>")
        .await;
    gateway
        .write("<presence from='gateway.localhost' to='alice@localhost'/>")
        .await;
    // The subscription is approved in alice's roster, then the gateway's presence arrives.
    alice
        .expect(|el| {
            common::xmpp::is_roster_push(el)
                && common::xmpp::pushed_item(el).is_some_and(|item| {
                    item.attr("jid") == Some(GATEWAY) && item.attr("subscription") == Some("to")
                })
        })
        .await;
    alice
        .expect(|el| {
            el.name() == "presence" && el.attr("from") == Some(GATEWAY) && el.attr("type").is_none()
        })
        .await;
}

#[tokio::test]
async fn a_spoofed_from_ends_the_stream() {
    let server = start().await;
    server.add_user("alice").await;
    server.add_user("mallory").await;
    let mut alice = Session::online(&server, "alice", "a").await;
    for from in [
        "mallory@localhost",
        "localhost",
        "bots.example.net",
        "gateway.localhost.evil",
        "x@evil.gateway.localhost",
    ] {
        // The stream that sent the spoof is gone, so the domain is free again each time.
        let mut gateway = connect(&server, GATEWAY).await;
        gateway
            .write(&format!(
                "<message from='{from}' to='alice@localhost' type='chat'><body>spoof</body></message>"
            ))
            .await;
        assert_eq!(gateway.stream_error().await, "invalid-from", "{from}");
        assert!(gateway.closed().await);
    }
    // Nothing spoofed reached alice: the next message she gets is her own marker.
    let before = alice.drain().await;
    assert!(before.iter().all(|el| el.name() != "message"), "{before:?}");
}

#[tokio::test]
async fn stanzas_for_a_component_away_are_bounced() {
    let server = start().await;
    server.add_user("alice").await;
    let mut alice = Session::online(&server, "alice", "a").await;

    // Never connected.
    alice
        .send("<message to='bob@gateway.localhost' type='chat' id='b1'><body>anyone?</body></message>")
        .await;
    let bounce = alice
        .expect(|el| el.name() == "message" && el.attr("id") == Some("b1"))
        .await;
    assert_eq!(bounce.attr("type"), Some("error"));
    assert_eq!(bounce.attr("from"), Some("bob@gateway.localhost"));
    assert_eq!(
        error_condition(&bounce).as_deref(),
        Some("service-unavailable")
    );
    let answer = alice
        .iq("<iq type='get' to='gateway.localhost'><query xmlns='jabber:iq:version'/></iq>")
        .await;
    assert_eq!(
        error_condition(&answer).as_deref(),
        Some("service-unavailable")
    );

    // Connected, then gone.
    let mut gateway = connect(&server, GATEWAY).await;
    gateway.write("</stream:stream>").await;
    assert!(gateway.closed().await);
    // The server frees the domain before it closes the connection, so once the close is
    // seen, the next message is bounced.
    alice
        .send("<message to='gateway.localhost' type='chat' id='b2'><body>still there?</body></message>")
        .await;
    let bounce = alice
        .expect(|el| el.name() == "message" && el.attr("id") == Some("b2"))
        .await;
    assert_eq!(bounce.attr("type"), Some("error"));
    assert_eq!(
        error_condition(&bounce).as_deref(),
        Some("service-unavailable")
    );
}

#[tokio::test]
async fn a_second_connection_for_the_same_domain_is_refused_and_the_first_keeps_it() {
    let server = start().await;
    server.add_user("alice").await;
    let mut first = connect(&server, GATEWAY).await;
    let (mut second, id) = open(&server, GATEWAY).await;
    second
        .write(&format!("<handshake>{}</handshake>", proof(&id, SECRET)))
        .await;
    assert_eq!(second.stream_error().await, "conflict");

    let mut alice = Session::online(&server, "alice", "a").await;
    alice
        .send("<message to='gateway.localhost' type='chat' id='c1'><body>first?</body></message>")
        .await;
    let got = expect(&mut first, |el| el.name() == "message").await;
    assert_eq!(got.attr("id"), Some("c1"));

    // Another component domain is independent.
    let _other = connect(&server, OTHER).await;
}

#[tokio::test]
async fn whitespace_keepalives_are_allowed() {
    let server = start().await;
    server.add_user("alice").await;
    let mut gateway = connect(&server, GATEWAY).await;
    let mut alice = Session::online(&server, "alice", "a").await;
    gateway.write("  \n ").await;
    gateway
        .write("<message from='gateway.localhost' to='alice@localhost' id='k1'><body>alive</body></message>")
        .await;
    let got = alice
        .expect(|el| el.name() == "message" && el.attr("id") == Some("k1"))
        .await;
    assert_eq!(got.attr("from"), Some(GATEWAY));
}

#[tokio::test]
async fn a_shutdown_tells_the_component() {
    let server = start().await;
    let mut gateway = connect(&server, GATEWAY).await;
    let TestServer { server, dir, .. } = server;
    let stopping = tokio::spawn(server.shutdown());
    assert_eq!(gateway.stream_error().await, "system-shutdown");
    assert!(gateway.closed().await);
    stopping.await.expect("shutdown completes");
    drop(dir);
}

/// A component of a federating server is reachable from another server's users, and its
/// answers leave over federation like any stanza (dialback for its domain, on the link of the
/// domain it is named under).
#[tokio::test]
async fn a_component_talks_with_users_of_another_server() {
    use common::federation::{Federation, Trust, A, B};
    let component = format!("gateway.{A}");
    let f = Federation::start_with(
        Trust::SelfSigned,
        |config| {
            config.components.port = 0;
            config.components.services.insert(
                component.clone(),
                ComponentService {
                    secret: SECRET.to_owned(),
                },
            );
        },
        |config| {
            // What an SRV record for the component's domain would say: a.test's server.
            let to_a = config
                .s2s
                .routes
                .get(A)
                .cloned()
                .expect("a route to a.test");
            config.s2s.routes.insert(format!("gateway.{A}"), to_a);
        },
    )
    .await;
    f.b.add_user(&format!("bob@{B}")).await;
    let mut gateway = connect(&f.a, &component).await;
    let mut bob = Session::online_on(&f.b, B, "bob", "phone").await;

    bob.send(&format!(
        "<message to='irc@{component}' type='chat' id='f1'><body>over s2s</body></message>"
    ))
    .await;
    let got = expect(&mut gateway, |el| el.name() == "message").await;
    assert_eq!(got.attr("from"), Some(bob.jid.as_str()));
    assert_eq!(body(&got, ACCEPT).as_deref(), Some("over s2s"));

    gateway
        .write(&format!(
            "<message from='irc@{component}' to='{}' type='chat' id='f2'><body>back</body></message>",
            bob.jid
        ))
        .await;
    let reply = bob
        .expect(|el| el.name() == "message" && el.attr("id") == Some("f2"))
        .await;
    assert_eq!(
        reply.attr("from"),
        Some(format!("irc@{component}").as_str())
    );
    assert_eq!(body(&reply, "jabber:client").as_deref(), Some("back"));
}

#[tokio::test]
async fn a_component_that_never_completes_the_handshake_is_cut_off() {
    let server = TestServer::start_with(|config| {
        config.components.port = 0;
        config.components.handshake_timeout_secs = 1;
        config.components.services.insert(
            GATEWAY.to_owned(),
            ComponentService {
                secret: SECRET.to_owned(),
            },
        );
    })
    .await;
    let (mut raw, _id) = open(&server, GATEWAY).await;
    assert_eq!(raw.stream_error().await, "connection-timeout");
    // The domain was never taken: a component that does its handshake gets it.
    let _gateway = connect(&server, GATEWAY).await;
}

#[tokio::test]
async fn an_oversized_stanza_is_a_policy_violation_and_frees_the_domain() {
    let server = start().await;
    server.add_user("alice").await;
    let mut gateway = connect(&server, GATEWAY).await;
    let huge = "x".repeat(600 * 1024);
    gateway
        .write_until_refused(&format!(
            "<message from='gateway.localhost' to='alice@localhost'><body>{huge}</body></message>"
        ))
        .await;
    assert_eq!(gateway.stream_error().await, "policy-violation");
    let mut alice = Session::online(&server, "alice", "a").await;
    let answer = alice
        .iq("<iq type='get' to='gateway.localhost'><query xmlns='jabber:iq:version'/></iq>")
        .await;
    assert_eq!(
        error_condition(&answer).as_deref(),
        Some("service-unavailable")
    );
}

#[tokio::test]
async fn stanzas_that_spell_out_the_component_namespace_are_understood() {
    let server = start().await;
    server.add_user("alice").await;
    let (mut gateway, id) = open(&server, GATEWAY).await;
    gateway
        .write(&format!(
            "<handshake xmlns='{ACCEPT}'>{}</handshake>",
            proof(&id, SECRET)
        ))
        .await;
    assert_eq!(gateway.element().await.name(), "handshake");
    let mut alice = Session::online(&server, "alice", "a").await;
    gateway
        .write(&format!(
            "<message xmlns='{ACCEPT}' from='gateway.localhost' to='alice@localhost' id='n1'>\
             <body>spelled out</body></message>"
        ))
        .await;
    let got = alice
        .expect(|el| el.name() == "message" && el.attr("id") == Some("n1"))
        .await;
    assert_eq!(body(&got, "jabber:client").as_deref(), Some("spelled out"));
}
