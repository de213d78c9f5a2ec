//! Federation between two corvid servers over real sockets (RFC 6120 §13): `a.test` and
//! `b.test` on their own loopback addresses, authenticating with certificates from a CA both
//! trust (SASL EXTERNAL, XEP-0178) or, when certificates do not verify, with Server Dialback
//! (XEP-0220); the policy that refuses dialback for domains that must use certificates; what
//! happens when the peer is down; and a remote server that lies about who it is.

mod common;

use std::time::Duration;

use common::federation::{Federation, Trust, A, B};
use common::xmpp::{error_condition, Session};
use common::WAIT;
use minidom::Element;

async fn users(f: &Federation) {
    f.a.add_user(&format!("alice@{A}")).await;
    f.b.add_user(&format!("bob@{B}")).await;
}

fn is_chat_from(el: &Element, from: &str, body: &str) -> bool {
    el.name() == "message"
        && el.attr("from") == Some(from)
        && el
            .get_child("body", corvid::xml::ns::CLIENT)
            .map(Element::text)
            .as_deref()
            == Some(body)
}

/// alice@a.test and bob@b.test exchange a message each way.
async fn round_trip(f: &Federation) {
    let mut alice = Session::online_on(&f.a, A, "alice", "pc").await;
    let mut bob = Session::online_on(&f.b, B, "bob", "phone").await;
    alice
        .send("<message to='bob@b.test' type='chat' id='m1'><body>hello from a</body></message>")
        .await;
    bob.expect(|el| is_chat_from(el, "alice@a.test/pc", "hello from a"))
        .await;
    bob.send(
        "<message to='alice@a.test/pc' type='chat' id='m2'><body>hello from b</body></message>",
    )
    .await;
    alice
        .expect(|el| is_chat_from(el, "bob@b.test/phone", "hello from b"))
        .await;
}

#[tokio::test]
async fn messages_cross_with_certificates_when_dialback_is_refused() {
    // Neither server accepts dialback: only SASL EXTERNAL can authenticate the streams.
    let f = Federation::start_with(
        Trust::TestCa,
        |c| c.s2s.require_certificates = true,
        |c| c.s2s.require_certificates = true,
    )
    .await;
    users(&f).await;
    round_trip(&f).await;
}

#[tokio::test]
async fn messages_cross_with_dialback_when_certificates_do_not_verify() {
    let f = Federation::start(Trust::SelfSigned).await;
    users(&f).await;
    round_trip(&f).await;
}

#[tokio::test]
async fn a_domain_that_must_use_a_certificate_cannot_use_dialback() {
    // b.test requires a certificate from a.test, whose certificate is self-signed.
    let f = Federation::start_with(
        Trust::SelfSigned,
        |_| {},
        |c| c.s2s.secure_domains = vec![A.to_owned()],
    )
    .await;
    users(&f).await;
    let mut alice = Session::online_on(&f.a, A, "alice", "pc").await;
    alice
        .send("<message to='bob@b.test' type='chat' id='m1'><body>hi</body></message>")
        .await;
    let error = alice
        .expect(|el| el.name() == "message" && el.attr("type") == Some("error"))
        .await;
    assert_eq!(error.attr("id"), Some("m1"));
    assert_eq!(
        error_condition(&error).as_deref(),
        Some("remote-server-not-found")
    );
}

#[tokio::test]
async fn stanzas_for_a_server_that_is_down_are_bounced_not_lost() {
    let f = Federation::start(Trust::TestCa).await;
    users(&f).await;
    let b_addr = f.b.server.s2s_addr.expect("b listens");
    // b.test goes away: nothing listens at its address any more.
    f.b.server.shutdown().await;
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while tokio::net::TcpStream::connect(b_addr).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let mut alice = Session::online_on(&f.a, A, "alice", "pc").await;
    for i in 0..3 {
        alice
            .send(&format!(
                "<message to='bob@b.test' type='chat' id='q{i}'><body>{i}</body></message>"
            ))
            .await;
    }
    let mut bounced = Vec::new();
    while bounced.len() < 3 {
        let error = alice
            .expect(|el| el.name() == "message" && el.attr("type") == Some("error"))
            .await;
        assert_eq!(
            error_condition(&error).as_deref(),
            Some("remote-server-not-found"),
            "{error:?}"
        );
        bounced.push(error.attr("id").unwrap_or_default().to_owned());
    }
    bounced.sort();
    assert_eq!(bounced, ["q0", "q1", "q2"]);
}

#[tokio::test]
async fn an_idle_link_closes_and_a_new_one_opens_on_demand() {
    let f = Federation::start_with(Trust::TestCa, |c| c.s2s.idle_timeout_secs = 1, |_| {}).await;
    users(&f).await;
    round_trip(&f).await;
    let s2s = f.a.server.s2s.clone().expect("federation on");
    tokio::time::timeout(WAIT, async {
        while s2s.link_count() > 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the idle link closes");
    round_trip(&f).await;
}

#[tokio::test]
async fn a_link_can_use_direct_tls() {
    // b.test listens for direct TLS too (XEP-0368, ALPN xmpp-server), and a.test's route to
    // it says so.
    let b_tls_port = common::federation::free_port(common::federation::B_IP);
    let f = Federation::start_with(
        Trust::TestCa,
        |c| {
            c.s2s.require_certificates = true;
            let route = format!("tls://127.0.0.3:{b_tls_port}");
            c.s2s.routes.insert(B.to_owned(), route);
        },
        |c| {
            c.s2s.require_certificates = true;
            c.s2s.direct_tls = true;
            c.s2s.direct_tls_port = b_tls_port;
        },
    )
    .await;
    users(&f).await;
    assert_eq!(
        f.b.server.s2s_direct_tls_addr.map(|a| a.port()),
        Some(b_tls_port)
    );
    round_trip(&f).await;
}

#[tokio::test]
async fn replies_take_the_same_connection_back_with_bidi() {
    let f = Federation::start_with(
        Trust::TestCa,
        |c| c.s2s.require_certificates = true,
        |c| c.s2s.require_certificates = true,
    )
    .await;
    users(&f).await;
    round_trip(&f).await;
    // a.test opened one connection and asked for bidi (XEP-0288); b.test's reply went back
    // over it instead of a connection of its own.
    let a = f.a.server.s2s.clone().expect("federation on");
    let b = f.b.server.s2s.clone().expect("federation on");
    assert_eq!(a.connection_count(), 1);
    assert_eq!(b.connection_count(), 1);
    assert_eq!(b.link_count(), 1);
}

/// A hosted domain's service (its MUC) reaches the other server over the hosted domain's own
/// link, authenticated there with a dialback key of its own (XEP-0220 §2.5 piggybacking).
async fn invitation_from_a_room_rides_on_the_domains_link(trust: Trust) {
    let f = Federation::start(trust).await;
    users(&f).await;
    round_trip(&f).await;
    let mut alice = Session::online_on(&f.a, A, "alice", "pc2").await;
    let room = "club@conference.a.test";
    alice
        .send(&format!(
            "<presence to='{room}/alice'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
        ))
        .await;
    alice
        .expect(|el| {
            el.name() == "presence" && el.attr("from") == Some("club@conference.a.test/alice")
        })
        .await;
    let mut bob = Session::online_on(&f.b, B, "bob", "tablet").await;
    alice
        .send(&format!(
            "<message to='{room}'><x xmlns='http://jabber.org/protocol/muc#user'>\
             <invite to='bob@b.test'/></x></message>"
        ))
        .await;
    bob.expect(|el| el.name() == "message" && el.attr("from") == Some(room))
        .await;
    let a = f.a.server.s2s.clone().expect("federation on");
    assert_eq!(a.link_count(), 1, "conference.a.test used a.test's link");
}

#[tokio::test]
async fn a_service_rides_on_its_domains_link_with_dialback() {
    invitation_from_a_room_rides_on_the_domains_link(Trust::SelfSigned).await;
}

#[tokio::test]
async fn a_service_rides_on_its_domains_link_with_certificates() {
    invitation_from_a_room_rides_on_the_domains_link(Trust::TestCa).await;
}

#[tokio::test]
async fn a_burst_arrives_whole_and_in_order() {
    let f = Federation::start(Trust::TestCa).await;
    users(&f).await;
    let mut alice = Session::online_on(&f.a, A, "alice", "pc").await;
    let mut bob = Session::online_on(&f.b, B, "bob", "phone").await;
    const BURST: usize = 500;
    let mut burst = String::new();
    for i in 0..BURST {
        burst.push_str(&format!(
            "<message to='bob@b.test' type='chat' id='b{i}'><body>{i}</body></message>"
        ));
    }
    // One write: the messages reach the link faster than it can send them one by one.
    alice.send(&burst).await;
    for i in 0..BURST {
        let message = bob
            .expect(|el| el.name() == "message" && el.attr("type") == Some("chat"))
            .await;
        assert_eq!(message.attr("id"), Some(format!("b{i}").as_str()));
    }
}
