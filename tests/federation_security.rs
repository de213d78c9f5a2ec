//! A remote server can only ever speak for the domain it authenticated (RFC 6120 §13.? and
//! §4.9.3.9): stanzas before authentication get `<not-authorized/>`, a `from` of another
//! domain `<invalid-from/>`, a header claiming one of our own domains `<invalid-from/>`; a
//! dialback key is only accepted when the claimed domain's authoritative server vouches for it,
//! and a verification request with a wrong key is answered `invalid`.

mod common;

use common::federation::{dialback_keys, raw_s2s, Federation, Trust, A, B};
use common::xmpp::Session;
use minidom::Element;

const DIALBACK: &str = "jabber:server:dialback";

async fn federation() -> Federation {
    let f = Federation::start(Trust::SelfSigned).await;
    f.a.add_user(&format!("alice@{A}")).await;
    f.b.add_user(&format!("bob@{B}")).await;
    f
}

fn dialback_type(el: &Element) -> Option<&str> {
    (el.ns() == DIALBACK).then(|| el.attr("type")).flatten()
}

#[tokio::test]
async fn stanzas_before_authentication_are_not_authorized() {
    let f = federation().await;
    let (mut raw, _id, _features) = raw_s2s(&f.b, A, B).await;
    raw.write("<message from='alice@a.test/x' to='bob@b.test'><body>hi</body></message>")
        .await;
    assert_eq!(raw.stream_error().await, "not-authorized");
}

#[tokio::test]
async fn a_stream_claiming_one_of_our_domains_is_refused() {
    let f = federation().await;
    let addr = f.b.server.s2s_addr.expect("s2s");
    let mut raw = common::Raw::connect(addr).await;
    raw.write(&common::federation::s2s_header(B, B)).await;
    assert_eq!(raw.stream_error().await, "invalid-from");
}

#[tokio::test]
async fn a_stream_for_a_domain_not_served_here_is_refused() {
    let f = federation().await;
    let addr = f.b.server.s2s_addr.expect("s2s");
    let mut raw = common::Raw::connect(addr).await;
    raw.write(&common::federation::s2s_header(A, "elsewhere.test"))
        .await;
    assert_eq!(raw.stream_error().await, "host-unknown");
}

#[tokio::test]
async fn a_dialback_key_vouched_for_admits_its_domain_and_only_its_domain() {
    let f = federation().await;
    let mut bob = Session::online_on(&f.b, B, "bob", "phone").await;
    // The key a.test's own server would give for this stream: b.test asks a.test, which
    // vouches for it.
    let keys = dialback_keys(&f.a).await;
    let (mut raw, id, features) = raw_s2s(&f.b, A, B).await;
    assert!(features.has_child("dialback", "urn:xmpp:features:dialback"));
    raw.write(&format!(
        "<db:result from='{A}' to='{B}'>{}</db:result>",
        keys.key(B, A, &id)
    ))
    .await;
    let verdict = raw.element().await;
    assert_eq!(dialback_type(&verdict), Some("valid"), "{verdict:?}");

    raw.write(
        "<message from='alice@a.test/x' to='bob@b.test' type='chat'><body>legit</body></message>",
    )
    .await;
    bob.expect(|el| el.name() == "message" && el.attr("from") == Some("alice@a.test/x"))
        .await;
    // The same stream cannot speak for another domain, nor for b.test's own users.
    raw.write("<message from='mallory@evil.test' to='bob@b.test' type='chat'><body>spoof</body></message>")
        .await;
    assert_eq!(raw.stream_error().await, "invalid-from");

    let (mut raw, id, _) = raw_s2s(&f.b, A, B).await;
    raw.write(&format!(
        "<db:result from='{A}' to='{B}'>{}</db:result>",
        keys.key(B, A, &id)
    ))
    .await;
    assert_eq!(dialback_type(&raw.element().await), Some("valid"));
    raw.write(
        "<message from='carol@b.test' to='bob@b.test' type='chat'><body>spoof</body></message>",
    )
    .await;
    assert_eq!(raw.stream_error().await, "invalid-from");
}

#[tokio::test]
async fn a_dialback_key_its_domain_does_not_vouch_for_is_refused() {
    let f = federation().await;
    let (mut raw, _id, _) = raw_s2s(&f.b, A, B).await;
    raw.write(&format!(
        "<db:result from='{A}' to='{B}'>0123456789abcdef</db:result>"
    ))
    .await;
    let verdict = raw.element().await;
    assert_eq!(dialback_type(&verdict), Some("invalid"), "{verdict:?}");
    raw.write("<message from='alice@a.test/x' to='bob@b.test'><body>hi</body></message>")
        .await;
    assert_eq!(raw.stream_error().await, "not-authorized");
}

#[tokio::test]
async fn verification_requests_are_answered_by_the_key_alone() {
    let f = federation().await;
    let keys = dialback_keys(&f.a).await;
    // Any server may ask a.test, the authoritative server, without authenticating first.
    let (mut raw, _id, _) = raw_s2s(&f.a, B, A).await;
    raw.write(&format!(
        "<db:verify from='{B}' to='{A}' id='stream-1'>{}</db:verify>",
        keys.key(B, A, "stream-1")
    ))
    .await;
    let answer = raw.element().await;
    assert_eq!(dialback_type(&answer), Some("valid"), "{answer:?}");
    assert_eq!(answer.attr("id"), Some("stream-1"));
    assert_eq!(answer.attr("from"), Some(A));
    raw.write(&format!(
        "<db:verify from='{B}' to='{A}' id='stream-2'>{}</db:verify>",
        keys.key(B, A, "stream-1")
    ))
    .await;
    assert_eq!(dialback_type(&raw.element().await), Some("invalid"));
    raw.write(&format!(
        "<db:verify from='{B}' to='elsewhere.test' id='stream-3'>00</db:verify>"
    ))
    .await;
    assert_eq!(dialback_type(&raw.element().await), Some("error"));
}

#[tokio::test]
async fn limits_are_advertised_and_enforced() {
    let f =
        Federation::start_with(Trust::SelfSigned, |_| {}, |c| c.s2s.max_stanza_size = 16384).await;
    let (mut raw, _id, features) = raw_s2s(&f.b, A, B).await;
    let limits = features
        .get_child("limits", "urn:xmpp:stream-limits:0")
        .expect("XEP-0478 limits");
    let max = limits
        .get_child("max-bytes", "urn:xmpp:stream-limits:0")
        .map(Element::text);
    assert_eq!(max.as_deref(), Some("16384"));
    // The default is 512 KiB, as the issue and XEP-0478's examples have it.
    assert_eq!(
        corvid::config::S2sConfig::default().max_stanza_size,
        512 * 1024
    );
    let big = "x".repeat(32768);
    raw.write(&format!(
        "<message from='a@a.test' to='bob@b.test'><body>{big}</body></message>"
    ))
    .await;
    assert_eq!(raw.stream_error().await, "policy-violation");
}

#[tokio::test]
async fn a_stream_that_never_authenticates_is_cut_at_the_deadline() {
    let f = Federation::start_with(
        Trust::SelfSigned,
        |_| {},
        |c| c.s2s.negotiation_timeout_secs = 1,
    )
    .await;
    let (mut raw, _id, _) = raw_s2s(&f.b, A, B).await;
    assert_eq!(raw.stream_error().await, "connection-timeout");
}

#[tokio::test]
async fn streams_from_one_domain_are_capped() {
    let f = Federation::start_with(
        Trust::SelfSigned,
        |_| {},
        |c| c.s2s.max_connections_per_domain = 1,
    )
    .await;
    let keys = dialback_keys(&f.a).await;
    let mut streams = Vec::new();
    for expected in ["valid", "policy-violation"] {
        let (mut raw, id, _) = raw_s2s(&f.b, A, B).await;
        raw.write(&format!(
            "<db:result from='{A}' to='{B}'>{}</db:result>",
            keys.key(B, A, &id)
        ))
        .await;
        if expected == "valid" {
            assert_eq!(dialback_type(&raw.element().await), Some("valid"));
        } else {
            assert_eq!(raw.stream_error().await, expected);
        }
        streams.push(raw);
    }
}

/// ejabberd matches dialback elements by their prefixed name (`db:verify`), not by namespace:
/// corvid writes them with the `db:` prefix its stream header binds.
#[tokio::test]
async fn dialback_elements_are_written_with_the_db_prefix() {
    use tokio::io::AsyncReadExt;
    let f = federation().await;
    let keys = dialback_keys(&f.a).await;
    let (mut raw, _id, _) = raw_s2s(&f.a, B, A).await;
    raw.write(&format!(
        "<db:verify from='{B}' to='{A}' id='s1'>{}</db:verify>",
        keys.key(B, A, "s1")
    ))
    .await;
    let mut bytes = Vec::new();
    let mut byte = [0u8; 1];
    tokio::time::timeout(common::WAIT, async {
        while !bytes.ends_with(b"/>") {
            raw.io.read_exact(&mut byte).await.expect("read");
            bytes.push(byte[0]);
        }
    })
    .await
    .expect("an answer");
    let answer = String::from_utf8_lossy(&bytes);
    assert!(answer.trim_start().starts_with("<db:verify "), "{answer}");
    assert!(answer.contains("type='valid'"), "{answer}");
}
