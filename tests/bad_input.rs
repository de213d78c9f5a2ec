//! Bad input gets the RFC 6120 §4.9.3 stream error, and nobody else notices: after each case a
//! second pair of clients still chats.

mod common;

use common::*;

/// Two users who keep chatting while others misbehave.
struct Witnesses {
    alice: tokio_xmpp::Client,
    bob: tokio_xmpp::Client,
    n: u32,
}

impl Witnesses {
    async fn new(t: &TestServer) -> Witnesses {
        t.add_user("alice").await;
        t.add_user("bob").await;
        let mut alice = t.client("alice", "w", true);
        let mut bob = t.client("bob", "w", true);
        online(&mut alice).await;
        online(&mut bob).await;
        Witnesses { alice, bob, n: 0 }
    }

    async fn still_chatting(&mut self) {
        self.n += 1;
        let text = format!("still here {}", self.n);
        send(
            &mut self.alice,
            &format!("<message xmlns='jabber:client' to='bob@localhost/w' type='chat'><body>{text}</body></message>"),
        )
        .await;
        assert_eq!(
            body(&next_matching(&mut self.bob, is_message_with_body).await),
            text
        );
    }
}

async fn logged_in(t: &TestServer, user: &str) -> Raw {
    t.add_user(user).await;
    Raw::login(t.c2s(), t.tls_config(), user, "r").await.0
}

#[tokio::test]
async fn not_well_formed_xml() {
    let t = TestServer::start().await;
    let mut w = Witnesses::new(&t).await;
    let mut raw = logged_in(&t, "eve").await;
    raw.write("<message><body>unclosed</message>").await;
    assert_eq!(raw.stream_error().await, "not-well-formed");
    assert!(raw.closed().await);
    w.still_chatting().await;

    // Invalid UTF-8 before any stream header.
    let mut raw = Raw::connect(t.c2s()).await;
    raw.io_write_bytes(b"\xff\xfe<stream:stream>").await;
    assert_eq!(raw.stream_error().await, "not-well-formed");
    w.still_chatting().await;
}

#[tokio::test]
async fn doctype_entities_and_processing_instructions_are_restricted() {
    let t = TestServer::start().await;
    let mut w = Witnesses::new(&t).await;
    let mut raw = Raw::connect(t.c2s()).await;
    raw.write(
        "<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'><!ENTITY lol2 '&lol;&lol;'>]>",
    )
    .await;
    assert_eq!(raw.stream_error().await, "restricted-xml");
    w.still_chatting().await;

    let mut raw = logged_in(&t, "eve").await;
    raw.write("<?evil instruction?>").await;
    assert_eq!(raw.stream_error().await, "restricted-xml");
    w.still_chatting().await;

    let mut raw = logged_in(&t, "eve2").await;
    raw.write("<message to='bob@localhost/w'><body>&xxe;</body></message>")
        .await;
    assert_eq!(raw.stream_error().await, "restricted-xml");
    w.still_chatting().await;
}

#[tokio::test]
async fn oversized_stanza_is_a_policy_violation() {
    let t = TestServer::start_with(|c| c.c2s.max_stanza_size = 16 * 1024).await;
    let mut w = Witnesses::new(&t).await;
    let mut raw = logged_in(&t, "eve").await;
    // Never closed: the limit must trigger on bytes, not on a complete element.
    let huge = format!(
        "<message to='bob@localhost/w'><body>{}",
        "A".repeat(40 * 1024)
    );
    raw.write(&huge).await;
    assert_eq!(raw.stream_error().await, "policy-violation");
    w.still_chatting().await;

    // Just under the limit is fine.
    let mut raw = logged_in(&t, "frank").await;
    let fits = format!(
        "<message to='bob@localhost/w' type='chat'><body>{}</body></message>",
        "B".repeat(12 * 1024)
    );
    raw.write(&fits).await;
    let got = next_matching(&mut w.bob, is_message_with_body).await;
    assert_eq!(body(&got).len(), 12 * 1024);
    w.still_chatting().await;
}

#[tokio::test]
async fn a_connection_that_never_finishes_negotiating_is_closed() {
    let t = TestServer::start_with(|c| c.c2s.negotiation_timeout_secs = 1).await;
    let mut w = Witnesses::new(&t).await;
    let mut silent = Raw::connect(t.c2s()).await;
    assert_eq!(silent.stream_error().await, "connection-timeout");
    assert!(silent.closed().await);
    // Half-way (stream opened, never authenticated) times out too.
    let mut halfway = Raw::connect(t.c2s()).await;
    halfway.write(OPEN).await;
    assert_eq!(halfway.stream_error().await, "connection-timeout");
    w.still_chatting().await;
}

#[tokio::test]
async fn stream_header_errors() {
    let t = TestServer::start().await;
    let mut w = Witnesses::new(&t).await;
    let mut raw = Raw::connect(t.c2s()).await;
    raw.write("<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='elsewhere.example' version='1.0'>").await;
    assert_eq!(raw.stream_error().await, "host-unknown");

    let mut raw = Raw::connect(t.c2s()).await;
    raw.write("<stream:stream xmlns='jabber:client' xmlns:stream='urn:not-streams' to='localhost' version='1.0'>").await;
    assert_eq!(raw.stream_error().await, "invalid-namespace");

    let mut raw = Raw::connect(t.c2s()).await;
    raw.write("<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost'>").await;
    assert_eq!(raw.stream_error().await, "unsupported-version");
    w.still_chatting().await;
}

#[tokio::test]
async fn stanzas_before_authentication_are_refused() {
    let t = TestServer::start().await;
    let mut w = Witnesses::new(&t).await;
    let mut raw = Raw::connect(t.c2s()).await.starttls(t.tls_config()).await;
    raw.write(OPEN).await;
    raw.element().await;
    raw.write("<message to='bob@localhost/w' type='chat'><body>sneaky</body></message>")
        .await;
    assert_eq!(raw.stream_error().await, "not-authorized");
    // Authentication without TLS is refused when TLS is required.
    let mut plain = Raw::connect(t.c2s()).await;
    plain.write(OPEN).await;
    plain.element().await;
    plain.auth_plain("alice", PASSWORD).await;
    let failure = plain.element().await;
    assert!(
        failure.has_child("encryption-required", corvid::xml::ns::SASL),
        "{failure:?}"
    );
    w.still_chatting().await;
}

#[tokio::test]
async fn non_stanza_elements_after_binding_are_unsupported() {
    let t = TestServer::start().await;
    let mut w = Witnesses::new(&t).await;
    let mut raw = logged_in(&t, "eve").await;
    raw.write("<foo xmlns='urn:example:bar'/>").await;
    assert_eq!(raw.stream_error().await, "unsupported-stanza-type");
    w.still_chatting().await;
}
