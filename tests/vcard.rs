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

// ---------------------------------------------------------------------------------------------
// XEP-0398 avatar conversion and XEP-0292 vCard4, both over PEP.

const PUBSUB: &str = "http://jabber.org/protocol/pubsub";
const AVATAR_DATA: &str = "urn:xmpp:avatar:data";
const AVATAR_META: &str = "urn:xmpp:avatar:metadata";

fn sha1_hex(bytes: &[u8]) -> String {
    Sha1::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The items (id, payload) of a PEP node of `owner` (own when None).
async fn pep_items(raw: &mut Raw, owner: Option<&str>, node: &str) -> Vec<(String, Element)> {
    let to = owner.map(|o| format!(" to='{o}'")).unwrap_or_default();
    let r = iq(
        raw,
        "items",
        &format!(
            "<iq type='get' id='items'{to}><pubsub xmlns='{PUBSUB}'><items node='{node}'/>\
             </pubsub></iq>"
        ),
    )
    .await;
    assert_eq!(
        r.attr("type"),
        Some("result"),
        "{}",
        corvid::xml::to_string(&r)
    );
    r.get_child("pubsub", PUBSUB)
        .and_then(|p| p.get_child("items", PUBSUB))
        .expect("items")
        .children()
        .map(|i| {
            (
                i.attr("id").unwrap_or_default().to_owned(),
                i.children().next().cloned().expect("payload"),
            )
        })
        .collect()
}

async fn pep_publish(raw: &mut Raw, node: &str, id: &str, payload: &str, options: &str) {
    let options = if options.is_empty() {
        String::new()
    } else {
        format!(
            "<publish-options><x xmlns='jabber:x:data' type='submit'>\
             <field var='FORM_TYPE' type='hidden'><value>{PUBSUB}#publish-options</value></field>\
             {options}</x></publish-options>"
        )
    };
    let r = iq(
        raw,
        "pub",
        &format!(
            "<iq type='set' id='pub'><pubsub xmlns='{PUBSUB}'><publish node='{node}'>\
             <item id='{id}'>{payload}</item></publish>{options}</pubsub></iq>"
        ),
    )
    .await;
    assert_eq!(
        r.attr("type"),
        Some("result"),
        "{}",
        corvid::xml::to_string(&r)
    );
}

fn vcard_photo(result: &Element) -> Option<(String, Vec<u8>)> {
    let photo = result
        .get_child("vCard", VCARD)?
        .get_child("PHOTO", VCARD)?;
    let kind = photo.get_child("TYPE", VCARD)?.text();
    let binval: String = photo
        .get_child("BINVAL", VCARD)?
        .text()
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(binval)
        .expect("BINVAL is base64");
    Some((kind, bytes))
}

#[tokio::test]
async fn vcard_photo_is_published_as_the_pep_avatar() {
    let t = TestServer::start().await;
    t.add_user("alice").await;
    let mut alice = login(&t, "alice", "a").await;
    let image: Vec<u8> = (0..=255u8).rev().cycle().take(1500).collect();
    let encoded = base64::engine::general_purpose::STANDARD.encode(&image);
    let r = set_vcard(
        &mut alice,
        None,
        &format!("<FN>Alice</FN><PHOTO><TYPE>image/jpeg</TYPE><BINVAL>{encoded}</BINVAL></PHOTO>"),
    )
    .await;
    assert_eq!(r.attr("type"), Some("result"));
    let id = sha1_hex(&image);

    let data = pep_items(&mut alice, None, AVATAR_DATA).await;
    let (data_id, payload) = data.last().expect("data item");
    assert_eq!(data_id, &id);
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(payload.text())
        .expect("base64");
    assert_eq!(decoded, image);

    let meta = pep_items(&mut alice, None, AVATAR_META).await;
    let (meta_id, metadata) = meta.last().expect("metadata item");
    assert_eq!(meta_id, &id);
    let info = metadata.get_child("info", AVATAR_META).expect("info");
    assert_eq!(info.attr("id"), Some(id.as_str()));
    assert_eq!(info.attr("bytes"), Some("1500"));
    assert_eq!(info.attr("type"), Some("image/jpeg"));

    // No photo any more: the avatar is disabled with an empty <metadata/>.
    set_vcard(&mut alice, None, "<FN>Alice</FN>").await;
    let meta = pep_items(&mut alice, None, AVATAR_META).await;
    let (_, metadata) = meta.last().expect("metadata item");
    assert!(metadata.is("metadata", AVATAR_META));
    assert_eq!(metadata.children().count(), 0, "{metadata:?}");
}

#[tokio::test]
async fn pep_avatar_becomes_the_vcard_photo_and_presence_hash() {
    let t = TestServer::start().await;
    t.add_user("alice").await;
    let mut a = login(&t, "alice", "a").await;
    let mut b = login(&t, "alice", "b").await;
    b.write("<presence/>").await;
    next_where(&mut b, |e| {
        e.name() == "presence" && e.attr("from") == Some("alice@localhost/b")
    })
    .await;
    set_vcard(&mut a, None, "<FN>Alice Liddell</FN>").await;

    let image: Vec<u8> = (0..=255u8).cycle().take(900).collect();
    let id = sha1_hex(&image);
    let encoded = base64::engine::general_purpose::STANDARD.encode(&image);
    pep_publish(
        &mut a,
        AVATAR_DATA,
        &id,
        &format!("<data xmlns='{AVATAR_DATA}'>{encoded}</data>"),
        "",
    )
    .await;
    pep_publish(
        &mut a,
        AVATAR_META,
        &id,
        &format!(
            "<metadata xmlns='{AVATAR_META}'><info id='{id}' bytes='900' type='image/webp' \
             width='32' height='32'/></metadata>"
        ),
        "",
    )
    .await;

    let r = get_vcard(&mut b, None).await;
    assert_eq!(
        full_name(&r).as_deref(),
        Some("Alice Liddell"),
        "the rest is kept"
    );
    assert_eq!(
        vcard_photo(&r),
        Some(("image/webp".to_owned(), image.clone()))
    );
    // XEP-0153: the next presence carries the new hash.
    a.write("<presence/>").await;
    let seen = next_where(&mut b, |e| {
        e.name() == "presence" && e.attr("from") == Some("alice@localhost/a")
    })
    .await;
    assert_eq!(photo_of(&seen).as_deref(), Some(id.as_str()));

    // Metadata whose data is not in PEP (a URL only) leaves the vCard alone.
    pep_publish(
        &mut a,
        AVATAR_META,
        "other",
        &format!(
            "<metadata xmlns='{AVATAR_META}'><info id='{}' bytes='1' type='image/png' \
             url='https://example.org/a.png'/></metadata>",
            sha1_hex(b"x")
        ),
        "",
    )
    .await;
    let r = get_vcard(&mut b, None).await;
    assert_eq!(vcard_photo(&r).map(|(_, bytes)| bytes), Some(image));

    // Disabling the avatar removes the photo.
    pep_publish(
        &mut a,
        AVATAR_META,
        "off",
        &format!("<metadata xmlns='{AVATAR_META}'/>"),
        "",
    )
    .await;
    let r = get_vcard(&mut b, None).await;
    assert_eq!(vcard_photo(&r), None);
    assert_eq!(full_name(&r).as_deref(), Some("Alice Liddell"));
}

#[tokio::test]
async fn vcard4_is_a_pep_node_others_can_read_and_conversions_are_advertised() {
    let t = TestServer::start().await;
    t.add_user("alice").await;
    t.add_user("bob").await;
    let mut alice = login(&t, "alice", "a").await;
    let info = iq(
        &mut alice,
        "disco",
        "<iq to='alice@localhost' type='get' id='disco'>\
         <query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
    )
    .await;
    let features: Vec<&str> = info
        .get_child("query", ns::DISCO_INFO)
        .expect("disco result")
        .children()
        .filter_map(|c| c.attr("var"))
        .collect();
    for wanted in ["urn:xmpp:vcard4", "urn:xmpp:pep-vcard-conversion:0"] {
        assert!(features.contains(&wanted), "{wanted} in {features:?}");
    }

    // XEP-0292 §3: published with open access, so anyone may read it.
    let card = "<vcard xmlns='urn:ietf:params:xml:ns:vcard-4.0'><fn><text>Alice</text></fn>\
                <nickname><text>al</text></nickname></vcard>";
    pep_publish(
        &mut alice,
        "urn:xmpp:vcard4",
        "current",
        card,
        "<field var='pubsub#access_model'><value>open</value></field>",
    )
    .await;
    let mut bob = login(&t, "bob", "b").await;
    let items = pep_items(&mut bob, Some("alice@localhost"), "urn:xmpp:vcard4").await;
    let (id, vcard) = items.last().expect("vCard4 item");
    assert_eq!(id, "current");
    let fn_text = vcard
        .get_child("fn", "urn:ietf:params:xml:ns:vcard-4.0")
        .and_then(|f| f.get_child("text", "urn:ietf:params:xml:ns:vcard-4.0"))
        .map(Element::text);
    assert_eq!(fn_text.as_deref(), Some("Alice"));
}
