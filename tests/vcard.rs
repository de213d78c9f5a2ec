//! XEP-0054 vcard-temp and the XEP-0153 photo hash in presence, over real sockets.

mod common;

use base64::Engine;
use common::*;
use corvid::xml::ns;
use minidom::Element;
use sha1::{Digest, Sha1};

const VCARD: &str = "vcard-temp";
const UPDATE: &str = "vcard-temp:x:update";

fn error_condition(el: &Element) -> Option<String> {
    el.get_child("error", ns::CLIENT).and_then(|e| {
        e.children()
            .find(|c| c.ns() == ns::STANZAS_ERRORS && c.name() != "text")
            .map(|c| c.name().to_string())
    })
}

async fn next_where(raw: &mut Raw, pred: impl Fn(&Element) -> bool) -> Element {
    loop {
        let el = raw.element().await;
        if pred(&el) {
            return el;
        }
    }
}

async fn iq(raw: &mut Raw, id: &str, xml: &str) -> Element {
    raw.write(xml).await;
    next_where(raw, |e| e.name() == "iq" && e.attr("id") == Some(id)).await
}

async fn login(t: &TestServer, user: &str, resource: &str) -> Raw {
    Raw::login(t.c2s(), t.tls_config(), user, resource).await.0
}

/// Gets the vCard of `to` (own when None).
async fn get_vcard(raw: &mut Raw, to: Option<&str>) -> Element {
    let to = to.map(|t| format!(" to='{t}'")).unwrap_or_default();
    iq(
        raw,
        "get",
        &format!("<iq type='get' id='get'{to}><vCard xmlns='vcard-temp'/></iq>"),
    )
    .await
}

async fn set_vcard(raw: &mut Raw, to: Option<&str>, inner: &str) -> Element {
    let to = to.map(|t| format!(" to='{t}'")).unwrap_or_default();
    iq(
        raw,
        "set",
        &format!("<iq type='set' id='set'{to}><vCard xmlns='vcard-temp'>{inner}</vCard></iq>"),
    )
    .await
}

fn full_name(result: &Element) -> Option<String> {
    result
        .get_child("vCard", VCARD)?
        .get_child("FN", VCARD)
        .map(|f| f.text())
}

fn photo_of(presence: &Element) -> Option<String> {
    presence
        .get_child("x", UPDATE)?
        .get_child("photo", UPDATE)
        .map(|p| p.text())
}

#[tokio::test]
async fn set_and_get_own_vcard() {
    let t = TestServer::start().await;
    t.add_user("alice").await;
    let mut alice = login(&t, "alice", "a").await;

    // None yet: item-not-found, as Prosody answers.
    let r = get_vcard(&mut alice, None).await;
    assert_eq!(error_condition(&r).as_deref(), Some("item-not-found"));

    let r = set_vcard(
        &mut alice,
        None,
        "<FN>Alice Liddell</FN><NICKNAME>al &amp; ice</NICKNAME>",
    )
    .await;
    assert_eq!(
        r.attr("type"),
        Some("result"),
        "{}",
        corvid::xml::to_string(&r)
    );

    let r = get_vcard(&mut alice, None).await;
    assert_eq!(r.attr("type"), Some("result"));
    assert_eq!(full_name(&r).as_deref(), Some("Alice Liddell"));
    let nick = r
        .get_child("vCard", VCARD)
        .and_then(|v| v.get_child("NICKNAME", VCARD))
        .map(|n| n.text());
    assert_eq!(nick.as_deref(), Some("al & ice"));

    // Addressed to the own bare JID, and replaced by a second set.
    set_vcard(&mut alice, Some("alice@localhost"), "<FN>Alice L.</FN>").await;
    let r = get_vcard(&mut alice, Some("alice@localhost")).await;
    assert_eq!(full_name(&r).as_deref(), Some("Alice L."));
}

#[tokio::test]
async fn another_users_vcard_is_public_but_not_writable() {
    let t = TestServer::start().await;
    for user in ["alice", "bob", "carol"] {
        t.add_user(user).await;
    }
    let mut alice = login(&t, "alice", "a").await;
    let mut bob = login(&t, "bob", "b").await;
    set_vcard(&mut alice, None, "<FN>Alice</FN>").await;

    let r = get_vcard(&mut bob, Some("alice@localhost")).await;
    assert_eq!(r.attr("type"), Some("result"));
    assert_eq!(r.attr("from"), Some("alice@localhost"));
    assert_eq!(full_name(&r).as_deref(), Some("Alice"));

    // No vCard and no account answer alike, so vCards cannot probe for accounts.
    let r = get_vcard(&mut bob, Some("carol@localhost")).await;
    assert_eq!(error_condition(&r).as_deref(), Some("service-unavailable"));
    let r = get_vcard(&mut bob, Some("nobody@localhost")).await;
    assert_eq!(error_condition(&r).as_deref(), Some("service-unavailable"));

    let r = set_vcard(&mut bob, Some("alice@localhost"), "<FN>Bob was here</FN>").await;
    assert_eq!(error_condition(&r).as_deref(), Some("forbidden"));
    let r = get_vcard(&mut alice, None).await;
    assert_eq!(full_name(&r).as_deref(), Some("Alice"));
}

#[tokio::test]
async fn oversize_or_broken_vcard_is_refused_and_the_old_one_kept() {
    let t = TestServer::start_with(|c| c.limits.vcard_max_bytes = 2000).await;
    t.add_user("alice").await;
    let mut alice = login(&t, "alice", "a").await;
    set_vcard(&mut alice, None, "<FN>Small</FN>").await;

    let big = format!("<FN>Big</FN><DESC>{}</DESC>", "x".repeat(2000));
    let r = set_vcard(&mut alice, None, &big).await;
    assert_eq!(error_condition(&r).as_deref(), Some("not-acceptable"));

    let r = set_vcard(
        &mut alice,
        None,
        "<FN>Broken</FN><PHOTO><BINVAL>not base64!</BINVAL></PHOTO>",
    )
    .await;
    assert_eq!(error_condition(&r).as_deref(), Some("bad-request"));

    let r = get_vcard(&mut alice, None).await;
    assert_eq!(full_name(&r).as_deref(), Some("Small"));
}

#[tokio::test]
async fn photo_hash_is_added_to_broadcast_presence() {
    let t = TestServer::start().await;
    t.add_user("alice").await;
    let mut a = login(&t, "alice", "a").await;
    let mut b = login(&t, "alice", "b").await;
    b.write("<presence/>").await;
    next_where(&mut b, |e| {
        e.name() == "presence" && e.attr("from") == Some("alice@localhost/b")
    })
    .await;
    let from_a =
        |e: &Element| e.name() == "presence" && e.attr("from") == Some("alice@localhost/a");

    // No vCard yet: an empty <photo/> says "no avatar".
    a.write("<presence/>").await;
    let seen = next_where(&mut b, from_a).await;
    assert_eq!(photo_of(&seen).as_deref(), Some(""));

    let image: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
    let encoded = base64::engine::general_purpose::STANDARD.encode(&image);
    // Wrapped like many clients do; the hash is of the decoded bytes.
    let wrapped: Vec<String> = encoded
        .as_bytes()
        .chunks(76)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    let r = set_vcard(
        &mut a,
        None,
        &format!(
            "<FN>Alice</FN><PHOTO><TYPE>image/png</TYPE><BINVAL>{}</BINVAL></PHOTO>",
            wrapped.join("\n")
        ),
    )
    .await;
    assert_eq!(r.attr("type"), Some("result"));
    let expected: String = Sha1::digest(&image)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();

    a.write("<presence><show>away</show></presence>").await;
    let seen = next_where(&mut b, from_a).await;
    assert_eq!(photo_of(&seen).as_deref(), Some(expected.as_str()));
    assert!(
        seen.has_child("show", ns::CLIENT),
        "the rest of the presence is kept"
    );

    // A client that states its own hash is left alone.
    a.write("<presence><x xmlns='vcard-temp:x:update'><photo>abc</photo></x></presence>")
        .await;
    let seen = next_where(&mut b, from_a).await;
    assert_eq!(photo_of(&seen).as_deref(), Some("abc"));
    assert_eq!(seen.children().filter(|c| c.is("x", UPDATE)).count(), 1);

    // Removing the photo empties the hash again.
    set_vcard(&mut a, None, "<FN>Alice</FN>").await;
    a.write("<presence/>").await;
    let seen = next_where(&mut b, from_a).await;
    assert_eq!(photo_of(&seen).as_deref(), Some(""));
}

#[tokio::test]
async fn vcard_is_advertised() {
    let t = TestServer::start().await;
    t.add_user("alice").await;
    let mut alice = login(&t, "alice", "a").await;
    for (id, to) in [("s", "localhost"), ("a", "alice@localhost")] {
        let info = iq(
            &mut alice,
            id,
            &format!("<iq to='{to}' type='get' id='{id}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"),
        )
        .await;
        let features: Vec<&str> = info
            .get_child("query", ns::DISCO_INFO)
            .expect("disco result")
            .children()
            .filter_map(|c| c.attr("var"))
            .collect();
        assert!(features.contains(&VCARD), "{to}: {features:?}");
    }
}

#[tokio::test]
async fn vcard_on_postgres() {
    let Some((t, schema)) = start_on_postgres().await else {
        eprintln!("skipped: CORVID_TEST_POSTGRES not set");
        return;
    };
    t.add_user("alice").await;
    t.add_user("bob").await;
    let mut alice = login(&t, "alice", "a").await;
    let mut bob = login(&t, "bob", "b").await;
    let r = set_vcard(
        &mut alice,
        None,
        "<FN>Alice on Postgres</FN><PHOTO><BINVAL>aGVsbG8=</BINVAL></PHOTO>",
    )
    .await;
    assert_eq!(r.attr("type"), Some("result"));
    let r = get_vcard(&mut bob, Some("alice@localhost")).await;
    assert_eq!(full_name(&r).as_deref(), Some("Alice on Postgres"));
    let hash = t
        .storage()
        .vcard
        .vcard_photo_hash(&account("alice"))
        .await
        .expect("hash");
    // SHA-1 of "hello".
    assert_eq!(
        hash.as_deref(),
        Some("aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d")
    );
    drop_schema(&schema).await;
}
