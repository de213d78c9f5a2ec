//! XEP-0163 personal eventing over real sockets: publishing and retrieving on the account's
//! bare JID (XEP-0060 subset), access models, publish-options, notifications filtered by
//! XEP-0115 caps, last-item delivery, and the payloads Conversations and Gajim publish
//! (XEP-0084 avatars, XEP-0172 nicknames, XEP-0384 OMEMO device lists and bundles).
//!
//! Rosters are written straight to storage: subscription management is not these tests'
//! subject.

mod common;

use base64::Engine;
use common::*;
use corvid::storage::{RosterItem, Subscription};
use minidom::Element;
use sha1::Digest;
use tokio_xmpp::Client;

const PUBSUB: &str = "http://jabber.org/protocol/pubsub";
const PUBSUB_OWNER: &str = "http://jabber.org/protocol/pubsub#owner";
const PUBSUB_EVENT: &str = "http://jabber.org/protocol/pubsub#event";
const PUBSUB_ERRORS: &str = "http://jabber.org/protocol/pubsub#errors";
const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
const STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
const AVATAR_DATA: &str = "urn:xmpp:avatar:data";
const AVATAR_META: &str = "urn:xmpp:avatar:metadata";
const NICK: &str = "http://jabber.org/protocol/nick";
const DEVICELIST: &str = "eu.siacs.conversations.axolotl.devicelist";
const CAPS_NODE: &str = "https://corvid.example/test-client";

// ---------------------------------------------------------------------------------------------
// Rosters.

/// `follower` is subscribed to `owner`'s presence (owner: from, follower: to).
async fn follow(t: &TestServer, follower: &str, owner: &str) {
    put_roster(
        t,
        owner,
        &format!("{follower}@{DOMAIN}"),
        Subscription::From,
    )
    .await;
    put_roster(t, follower, &format!("{owner}@{DOMAIN}"), Subscription::To).await;
}

async fn put_roster(t: &TestServer, user: &str, contact: &str, subscription: Subscription) {
    let item = RosterItem {
        subscription,
        ..RosterItem::new(contact)
    };
    t.storage()
        .roster
        .put_roster_item(&account(user), &item, 1000)
        .await
        .expect("roster item");
}

async fn server_with(users: &[&str]) -> TestServer {
    let t = TestServer::start().await;
    for user in users {
        t.add_user(user).await;
    }
    t
}

// ---------------------------------------------------------------------------------------------
// Caps: the client side of XEP-0115, computed here independently of the server.

/// The sha-1 ver of a client with one identity (client/pc, "corvid-test") and `features`.
fn caps_ver(features: &[String]) -> String {
    let mut sorted = features.to_vec();
    sorted.sort_unstable();
    let mut s = String::from("client/pc//corvid-test<");
    for feature in sorted {
        s.push_str(&feature);
        s.push('<');
    }
    base64::engine::general_purpose::STANDARD.encode(sha1::Sha1::digest(s.as_bytes()))
}

fn features_with_notify(nodes: &[&str]) -> Vec<String> {
    let mut features = vec![
        DISCO_INFO.to_string(),
        "http://jabber.org/protocol/caps".to_string(),
    ];
    for node in nodes {
        features.push(node.to_string());
        features.push(format!("{node}+notify"));
    }
    features
}

/// Available presence carrying caps `ver`.
async fn available_with_caps(client: &mut Client, ver: &str) {
    send(
        client,
        &format!(
            "<presence xmlns='jabber:client'><c xmlns='http://jabber.org/protocol/caps' \
             hash='sha-1' node='{CAPS_NODE}' ver='{ver}'/></presence>"
        ),
    )
    .await;
}

fn is_caps_query(el: &Element) -> bool {
    el.name() == "iq"
        && el.attr("type") == Some("get")
        && el.get_child("query", DISCO_INFO).is_some()
}

/// Answers the server's disco#info query about `ver` with `features`.
async fn answer_caps_query(client: &mut Client, ver: &str, features: &[String]) {
    let query = next_matching(client, is_caps_query).await;
    assert_eq!(query.attr("from"), Some(DOMAIN), "the server asks");
    let node = query
        .get_child("query", DISCO_INFO)
        .and_then(|q| q.attr("node"))
        .map(str::to_owned);
    assert_eq!(node, Some(format!("{CAPS_NODE}#{ver}")));
    let vars: String = features
        .iter()
        .map(|f| format!("<feature var='{f}'/>"))
        .collect();
    send(
        client,
        &format!(
            "<iq xmlns='jabber:client' type='result' id='{}' to='{DOMAIN}'>\
             <query xmlns='{DISCO_INFO}' node='{CAPS_NODE}#{ver}'>\
             <identity category='client' type='pc' name='corvid-test'/>{vars}</query></iq>",
            query.attr("id").unwrap_or_default()
        ),
    )
    .await;
}

/// Available presence with caps wanting `nodes`, and the answer to the server's query.
async fn online_with_notify(client: &mut Client, nodes: &[&str]) {
    let features = features_with_notify(nodes);
    let ver = caps_ver(&features);
    available_with_caps(client, &ver).await;
    answer_caps_query(client, &ver, &features).await;
}

// ---------------------------------------------------------------------------------------------
// Stanzas.

async fn connect(t: &TestServer, user: &str, resource: &str) -> Client {
    let mut client = t.client(user, resource, false);
    online(&mut client).await;
    client
}

/// Sends an IQ (which must carry `id='{id}'`) and returns the answer.
async fn iq(client: &mut Client, id: &str, xml: &str) -> Element {
    send(client, xml).await;
    next_matching(client, |e| e.name() == "iq" && e.attr("id") == Some(id)).await
}

fn publish_xml(
    id: &str,
    node: &str,
    item_id: Option<&str>,
    payload: &str,
    options: &str,
) -> String {
    let item_id = item_id.map(|i| format!(" id='{i}'")).unwrap_or_default();
    let options = if options.is_empty() {
        String::new()
    } else {
        format!(
            "<publish-options><x xmlns='jabber:x:data' type='submit'>\
             <field var='FORM_TYPE' type='hidden'><value>{PUBSUB}#publish-options</value></field>\
             {options}</x></publish-options>"
        )
    };
    format!(
        "<iq xmlns='jabber:client' type='set' id='{id}'><pubsub xmlns='{PUBSUB}'>\
         <publish node='{node}'><item{item_id}>{payload}</item></publish>{options}</pubsub></iq>"
    )
}

fn field(var: &str, value: &str) -> String {
    format!("<field var='{var}'><value>{value}</value></field>")
}

/// Publishes and expects success; returns the item id the server reports.
async fn publish(
    client: &mut Client,
    node: &str,
    item_id: Option<&str>,
    payload: &str,
    options: &str,
) -> String {
    let id = format!("pub-{}", rand_id());
    let answer = iq(
        client,
        &id,
        &publish_xml(&id, node, item_id, payload, options),
    )
    .await;
    assert_eq!(answer.attr("type"), Some("result"), "publish: {answer:?}");
    let publish = answer
        .get_child("pubsub", PUBSUB)
        .and_then(|p| p.get_child("publish", PUBSUB))
        .expect("publish in the result");
    assert_eq!(publish.attr("node"), Some(node));
    publish
        .get_child("item", PUBSUB)
        .and_then(|i| i.attr("id"))
        .expect("item id")
        .to_owned()
}

fn rand_id() -> u64 {
    rand::random::<u64>() % 1_000_000
}

/// `<items/>` of `owner`'s `node`, as asked by `client`; the whole answer.
async fn items(client: &mut Client, owner: &str, node: &str, inner: &str, attrs: &str) -> Element {
    let id = format!("items-{}", rand_id());
    let to = if owner.is_empty() {
        String::new()
    } else {
        format!(" to='{owner}@{DOMAIN}'")
    };
    iq(
        client,
        &id,
        &format!(
            "<iq xmlns='jabber:client' type='get' id='{id}'{to}><pubsub xmlns='{PUBSUB}'>\
             <items node='{node}'{attrs}>{inner}</items></pubsub></iq>"
        ),
    )
    .await
}

/// (item id, payload) of an items result or event.
fn listed(items: &Element) -> Vec<(String, Option<Element>)> {
    items
        .children()
        .filter(|c| c.name() == "item")
        .map(|i| {
            (
                i.attr("id").unwrap_or_default().to_owned(),
                i.children().next().cloned(),
            )
        })
        .collect()
}

fn result_items(answer: &Element) -> Vec<(String, Option<Element>)> {
    assert_eq!(answer.attr("type"), Some("result"), "items: {answer:?}");
    let items = answer
        .get_child("pubsub", PUBSUB)
        .and_then(|p| p.get_child("items", PUBSUB))
        .expect("items in the result");
    listed(items)
}

fn result_ids(answer: &Element) -> Vec<String> {
    result_items(answer).into_iter().map(|(id, _)| id).collect()
}

/// The defined condition and the pubsub#errors condition of an error answer.
fn error_of(answer: &Element) -> (String, String, Option<String>) {
    assert_eq!(answer.attr("type"), Some("error"), "{answer:?}");
    let error = answer.get_child("error", "jabber:client").expect("error");
    let condition = error
        .children()
        .find(|c| c.ns() == STANZAS && c.name() != "text")
        .map(|c| c.name().to_owned())
        .unwrap_or_default();
    let pubsub = error
        .children()
        .find(|c| c.ns() == PUBSUB_ERRORS)
        .map(|c| c.name().to_owned());
    (
        error.attr("type").unwrap_or_default().to_owned(),
        condition,
        pubsub,
    )
}

/// Asserts an error answer: its type, defined condition and pubsub#errors condition.
fn assert_error(answer: &Element, kind: &str, condition: &str, pubsub: Option<&str>) {
    let (k, c, p) = error_of(answer);
    assert_eq!(
        (k.as_str(), c.as_str(), p.as_deref()),
        (kind, condition, pubsub)
    );
}

/// The `<event/>` of a notification message, if it is one.
fn event_of(el: &Element) -> Option<&Element> {
    (el.name() == "message")
        .then(|| el.get_child("event", PUBSUB_EVENT))
        .flatten()
}

/// A notification about `node` (items, retract, delete or purge).
fn is_event_about(node: &'static str) -> impl Fn(&Element) -> bool {
    move |el| {
        event_of(el).is_some_and(|event| event.children().any(|c| c.attr("node") == Some(node)))
    }
}

/// Waits for a notification about `node` and returns its `<items/>` entries.
async fn next_event_items(
    client: &mut Client,
    node: &'static str,
) -> (Element, Vec<(String, Option<Element>)>) {
    let message = next_matching(client, is_event_about(node)).await;
    let items = event_of(&message)
        .and_then(|e| e.get_child("items", PUBSUB_EVENT))
        .expect("items event");
    let listed = listed(items);
    (message, listed)
}

fn nick(name: &str) -> String {
    format!("<nick xmlns='{NICK}'>{name}</nick>")
}

fn text_of(payload: &Option<Element>) -> String {
    payload.as_ref().map(Element::text).unwrap_or_default()
}

/// Sends a chat message from `from` to `to_jid`: a marker that everything the server routed to
/// `to_jid` before it has arrived.
async fn marker(from: &mut Client, to_jid: &str, text: &str) {
    send(
        from,
        &format!(
            "<message xmlns='jabber:client' to='{to_jid}' type='chat' id='m-{text}'><body>{text}</body></message>"
        ),
    )
    .await;
}

/// The next message must be the marker: nothing else was routed to this client before it.
async fn expect_marker_next(client: &mut Client, text: &str) {
    let next = next_matching(client, |e| e.name() == "message").await;
    assert!(
        event_of(&next).is_none(),
        "unexpected notification {next:?}"
    );
    assert_eq!(body(&next), text);
}

// ---------------------------------------------------------------------------------------------
// Publishing and retrieving.

#[tokio::test]
async fn publish_then_items_roundtrip_with_auto_create_and_generated_id() {
    let t = server_with(&["bob"]).await;
    let mut bob = connect(&t, "bob", "phone").await;

    // No node yet.
    let missing = items(&mut bob, "", NICK, "", "").await;
    assert_eq!(error_of(&missing).1, "item-not-found");

    // The first publish creates the node; without an id the server makes one.
    let generated = publish(&mut bob, NICK, None, &nick("Bobby"), "").await;
    assert!(!generated.is_empty());
    let answer = items(&mut bob, "", NICK, "", "").await;
    let found = result_items(&answer);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].0, generated);
    let payload = found[0].1.as_ref().expect("payload");
    assert_eq!((payload.name(), payload.ns().as_str()), ("nick", NICK));
    assert_eq!(payload.text(), "Bobby");

    // Addressed to the bare JID explicitly, with an item id of our own.
    let id = publish(
        &mut bob,
        "urn:example:notes",
        Some("n1"),
        "<note xmlns='urn:example:notes'>one</note>",
        "",
    )
    .await;
    assert_eq!(id, "n1");
    let by_id = items(&mut bob, "bob", "urn:example:notes", "<item id='n1'/>", "").await;
    assert_eq!(result_ids(&by_id), vec!["n1"]);

    // Someone else cannot publish to bob's service.
    t.add_user("mallory").await;
    let mut mallory = connect(&t, "mallory", "m").await;
    let forged = publish_xml("f1", NICK, None, &nick("evil"), "")
        .replace("id='f1'>", &format!("id='f1' to='bob@{DOMAIN}'>"));
    let answer = iq(&mut mallory, "f1", &forged).await;
    assert_error(&answer, "auth", "forbidden", None);
}

#[tokio::test]
async fn retract_removes_the_item_and_notifies_when_asked() {
    let t = server_with(&["bob"]).await;
    let mut phone = connect(&t, "bob", "phone").await;
    let mut laptop = connect(&t, "bob", "laptop").await;
    send(&mut phone, "<presence xmlns='jabber:client'/>").await;
    let node = "urn:example:notes";
    publish(
        &mut phone,
        node,
        Some("a"),
        "<note xmlns='urn:example:notes'>a</note>",
        &field("pubsub#max_items", "10"),
    )
    .await;
    publish(
        &mut phone,
        node,
        Some("b"),
        "<note xmlns='urn:example:notes'>b</note>",
        "",
    )
    .await;

    // The laptop wants the node: it gets the last item when its caps are known.
    online_with_notify(&mut laptop, &[node]).await;
    let (_, last) = next_event_items(&mut laptop, node).await;
    assert_eq!(
        last.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(),
        vec!["b"]
    );

    let answer = iq(
        &mut phone,
        "r1",
        &format!(
            "<iq xmlns='jabber:client' type='set' id='r1'><pubsub xmlns='{PUBSUB}'>\
                  <retract node='{node}' notify='true'><item id='a'/></retract></pubsub></iq>"
        ),
    )
    .await;
    assert_eq!(answer.attr("type"), Some("result"));
    let notice = next_matching(&mut laptop, is_event_about(node)).await;
    let retract = event_of(&notice)
        .and_then(|e| e.get_child("items", PUBSUB_EVENT))
        .and_then(|i| i.get_child("retract", PUBSUB_EVENT))
        .expect("retract notification");
    assert_eq!(retract.attr("id"), Some("a"));
    assert_eq!(notice.attr("from"), Some("bob@localhost"));

    let left = items(&mut phone, "", node, "", "").await;
    assert_eq!(result_ids(&left), vec!["b"]);
    // Retracting it again: there is no such item.
    let again = iq(
        &mut phone,
        "r2",
        &format!(
            "<iq xmlns='jabber:client' type='set' id='r2'><pubsub xmlns='{PUBSUB}'>\
                  <retract node='{node}'><item id='a'/></retract></pubsub></iq>"
        ),
    )
    .await;
    assert_eq!(error_of(&again).1, "item-not-found");
}

// ---------------------------------------------------------------------------------------------
// Notifications and caps filtering.

#[tokio::test]
async fn notification_reaches_interested_contacts_and_own_resources_only() {
    let t = server_with(&["bob", "alice", "carol"]).await;
    follow(&t, "alice", "bob").await;
    follow(&t, "carol", "bob").await;
    let mut bob = connect(&t, "bob", "phone").await;
    send(&mut bob, "<presence xmlns='jabber:client'/>").await;
    let meta = |id: &str| {
        format!("<metadata xmlns='{AVATAR_META}'><info bytes='12' id='{id}' height='64' width='64' type='image/png'/></metadata>")
    };
    publish(&mut bob, AVATAR_META, Some("v1"), &meta("v1"), "").await;

    // alice wants avatar metadata: on coming online she gets the last item, stamped.
    let mut alice = connect(&t, "alice", "a").await;
    online_with_notify(&mut alice, &[AVATAR_META]).await;
    let (message, last) = next_event_items(&mut alice, AVATAR_META).await;
    assert_eq!(message.attr("from"), Some("bob@localhost"));
    assert_eq!(message.attr("type"), Some("headline"));
    assert_eq!(last[0].0, "v1");
    assert!(
        message.get_child("delay", "urn:xmpp:delay").is_some(),
        "last item carries a delay"
    );

    // carol's client does not ask for avatar notifications.
    let mut carol = connect(&t, "carol", "c").await;
    online_with_notify(&mut carol, &[NICK]).await;

    // bob's second resource wants them (same caps as alice: no new query, last item first).
    let mut tablet = connect(&t, "bob", "tablet").await;
    let features = features_with_notify(&[AVATAR_META]);
    available_with_caps(&mut tablet, &caps_ver(&features)).await;
    let (_, own_last) = next_event_items(&mut tablet, AVATAR_META).await;
    assert_eq!(own_last[0].0, "v1");

    publish(&mut bob, AVATAR_META, Some("v2"), &meta("v2"), "").await;
    let (message, got) = next_event_items(&mut alice, AVATAR_META).await;
    assert_eq!(got[0].0, "v2");
    assert_eq!(
        got[0].1.as_ref().map(|p| p.name().to_owned()),
        Some("metadata".into())
    );
    assert_eq!(message.attr("to"), Some("alice@localhost/a"));
    assert!(message.get_child("delay", "urn:xmpp:delay").is_none());
    let (_, got) = next_event_items(&mut tablet, AVATAR_META).await;
    assert_eq!(got[0].0, "v2");

    // carol got nothing about avatars: the marker bob sends next is the first message she sees.
    marker(&mut bob, "carol@localhost/c", "after-v2").await;
    expect_marker_next(&mut carol, "after-v2").await;
    // Neither did bob's publishing resource, which advertised no caps.
    marker(&mut alice, "bob@localhost/phone", "to-phone").await;
    expect_marker_next(&mut bob, "to-phone").await;
}

#[tokio::test]
async fn nickname_is_announced_to_contacts_and_retrievable() {
    let t = server_with(&["bob", "alice"]).await;
    follow(&t, "alice", "bob").await;
    let mut bob = connect(&t, "bob", "b").await;
    publish(&mut bob, NICK, Some("current"), &nick("Bob"), "").await;

    let mut alice = connect(&t, "alice", "a").await;
    online_with_notify(&mut alice, &[NICK]).await;
    let (_, last) = next_event_items(&mut alice, NICK).await;
    assert_eq!(text_of(&last[0].1), "Bob");

    publish(&mut bob, NICK, Some("current"), &nick("Bobby"), "").await;
    let (message, got) = next_event_items(&mut alice, NICK).await;
    assert_eq!(message.attr("from"), Some("bob@localhost"));
    let payload = got[0].1.as_ref().expect("nick payload");
    assert_eq!(
        (
            payload.name(),
            payload.ns().as_str(),
            payload.text().as_str()
        ),
        ("nick", NICK, "Bobby")
    );

    // A contact may also ask for it (presence access model).
    let answer = items(&mut alice, "bob", NICK, "", "").await;
    let found = result_items(&answer);
    assert_eq!(found.len(), 1, "republishing 'current' replaced it");
    assert_eq!(text_of(&found[0].1), "Bobby");
}

#[tokio::test]
async fn avatar_data_and_metadata_publish_and_fetch() {
    let t = server_with(&["bob", "alice"]).await;
    follow(&t, "alice", "bob").await;
    let mut bob = connect(&t, "bob", "b").await;
    let image = vec![0x89u8, b'P', b'N', b'G', 1, 2, 3, 4, 5, 6, 7, 8];
    let hash = hex(&sha1::Sha1::digest(&image));
    let data = base64::engine::general_purpose::STANDARD.encode(&image);
    // XEP-0084 §4.1: data first, then metadata, both under the SHA-1 of the image.
    publish(
        &mut bob,
        AVATAR_DATA,
        Some(&hash),
        &format!("<data xmlns='{AVATAR_DATA}'>{data}</data>"),
        "",
    )
    .await;
    let metadata = format!(
        "<metadata xmlns='{AVATAR_META}'><info bytes='{}' id='{hash}' height='1' width='1' type='image/png'/></metadata>",
        image.len()
    );
    publish(&mut bob, AVATAR_META, Some(&hash), &metadata, "").await;

    let mut alice = connect(&t, "alice", "a").await;
    online_with_notify(&mut alice, &[AVATAR_META]).await;
    let (_, last) = next_event_items(&mut alice, AVATAR_META).await;
    assert_eq!(last[0].0, hash);
    let info = last[0]
        .1
        .as_ref()
        .and_then(|m| m.get_child("info", AVATAR_META))
        .expect("info");
    assert_eq!(info.attr("id"), Some(hash.as_str()));

    // The data node is fetched by id, as clients do after a metadata notification.
    let answer = items(
        &mut alice,
        "bob",
        AVATAR_DATA,
        &format!("<item id='{hash}'/>"),
        "",
    )
    .await;
    let found = result_items(&answer);
    assert_eq!(found.len(), 1);
    let fetched = found[0].1.as_ref().expect("data payload");
    assert_eq!(fetched.ns(), AVATAR_DATA);
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(fetched.text().trim())
        .expect("base64");
    assert_eq!(bytes, image);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------------------------------------
// Access models and publish-options.

#[tokio::test]
async fn omemo_nodes_with_open_access_are_readable_by_non_contacts() {
    let t = server_with(&["bob", "carol"]).await;
    let mut bob = connect(&t, "bob", "b").await;
    let open = field("pubsub#access_model", "open");
    // As Conversations does: the device list and one bundle per device, open to everyone.
    publish(
        &mut bob,
        DEVICELIST,
        Some("current"),
        "<list xmlns='eu.siacs.conversations.axolotl'><device id='1234'/></list>",
        &open,
    )
    .await;
    let bundle = "<bundle xmlns='eu.siacs.conversations.axolotl'>\
        <signedPreKeyPublic signedPreKeyId='1'>BQ==</signedPreKeyPublic>\
        <signedPreKeySignature>c2ln</signedPreKeySignature><identityKey>aWs=</identityKey>\
        <prekeys><preKeyPublic preKeyId='1'>cGs=</preKeyPublic></prekeys></bundle>";
    let bundles_node = "eu.siacs.conversations.axolotl.bundles:1234";
    let options = format!("{open}{}", field("pubsub#max_items", "max"));
    publish(&mut bob, bundles_node, Some("current"), bundle, &options).await;
    // Republishing with the same options meets them ("max" is the server's limit).
    publish(&mut bob, bundles_node, Some("current"), bundle, &options).await;
    publish(&mut bob, NICK, None, &nick("Bob"), "").await;
    publish(
        &mut bob,
        "storage:bookmarks",
        Some("current"),
        "<storage xmlns='storage:bookmarks'/>",
        &field("pubsub#access_model", "whitelist"),
    )
    .await;

    // carol has no roster relation with bob at all.
    let mut carol = connect(&t, "carol", "c").await;
    let devices = items(&mut carol, "bob", DEVICELIST, "", "").await;
    let found = result_items(&devices);
    let device = found[0]
        .1
        .as_ref()
        .and_then(|l| l.get_child("device", "eu.siacs.conversations.axolotl"))
        .and_then(|d| d.attr("id"))
        .map(str::to_owned);
    assert_eq!(device.as_deref(), Some("1234"));
    let bundles = items(&mut carol, "bob", bundles_node, "", " max_items='1'").await;
    let found = result_items(&bundles);
    assert_eq!(found.len(), 1);
    assert_eq!(
        found[0].1.as_ref().map(|b| b.name().to_owned()),
        Some("bundle".into())
    );

    // The nickname node has the default presence model: XEP-0060 §6.5.9.2.
    let denied = items(&mut carol, "bob", NICK, "", "").await;
    assert_error(
        &denied,
        "auth",
        "not-authorized",
        Some("presence-subscription-required"),
    );
    // A whitelist node is closed to her (§6.5.9.4).
    let closed = items(&mut carol, "bob", "storage:bookmarks", "", "").await;
    assert_error(&closed, "cancel", "not-allowed", Some("closed-node"));
    // Disco#items shows her the open nodes only.
    let disco = iq(
        &mut carol,
        "di",
        "<iq xmlns='jabber:client' type='get' id='di' to='bob@localhost'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>",
    )
    .await;
    let mut nodes: Vec<String> = disco
        .get_child("query", "http://jabber.org/protocol/disco#items")
        .expect("disco items")
        .children()
        .filter_map(|i| i.attr("node").map(str::to_owned))
        .collect();
    nodes.sort();
    assert_eq!(
        nodes,
        vec![bundles_node.to_string(), DEVICELIST.to_string()]
    );
}

#[tokio::test]
async fn publish_options_that_differ_from_the_node_fail_the_precondition() {
    let t = server_with(&["bob"]).await;
    let mut bob = connect(&t, "bob", "b").await;
    publish(
        &mut bob,
        DEVICELIST,
        Some("current"),
        "<list xmlns='eu.siacs.conversations.axolotl'/>",
        "",
    )
    .await;

    // The node exists with the default (presence) access model.
    let open = field("pubsub#access_model", "open");
    let xml = publish_xml(
        "p2",
        DEVICELIST,
        Some("current"),
        "<list xmlns='eu.siacs.conversations.axolotl'/>",
        &open,
    );
    let answer = iq(&mut bob, "p2", &xml).await;
    assert_error(&answer, "cancel", "conflict", Some("precondition-not-met"));
    // A field the server does not support is not silently ignored either.
    let unknown = publish_xml(
        "p3",
        DEVICELIST,
        Some("current"),
        "<list xmlns='eu.siacs.conversations.axolotl'/>",
        &field("pubsub#title", "x"),
    );
    let answer = iq(&mut bob, "p3", &unknown).await;
    assert_eq!(error_of(&answer).2.as_deref(), Some("precondition-not-met"));

    // What a client does next: reconfigure the node, then publish again.
    let configure = format!(
        "<iq xmlns='jabber:client' type='set' id='c1'><pubsub xmlns='{PUBSUB}#owner'>\
         <configure node='{DEVICELIST}'><x xmlns='jabber:x:data' type='submit'>\
         <field var='FORM_TYPE' type='hidden'><value>{PUBSUB}#node_config</value></field>\
         {open}</x></configure></pubsub></iq>"
    );
    assert_eq!(
        iq(&mut bob, "c1", &configure).await.attr("type"),
        Some("result")
    );
    let answer = iq(&mut bob, "p4", &xml.replace("'p2'", "'p4'")).await;
    assert_eq!(answer.attr("type"), Some("result"), "{answer:?}");

    // The configuration form shows the new value.
    let form = iq(
        &mut bob,
        "c2",
        &format!(
            "<iq xmlns='jabber:client' type='get' id='c2'><pubsub xmlns='{PUBSUB}#owner'>\
                  <configure node='{DEVICELIST}'/></pubsub></iq>"
        ),
    )
    .await;
    let access = form
        .get_child("pubsub", PUBSUB_OWNER)
        .and_then(|p| p.get_child("configure", PUBSUB_OWNER))
        .and_then(|c| c.get_child("x", "jabber:x:data"))
        .and_then(|x| {
            x.children()
                .find(|f| f.attr("var") == Some("pubsub#access_model"))
        })
        .and_then(|f| f.get_child("value", "jabber:x:data"))
        .map(Element::text);
    assert_eq!(access.as_deref(), Some("open"));
}

// ---------------------------------------------------------------------------------------------
// Items kept: max_items, persistence across a restart, deletion.

#[tokio::test]
async fn max_items_keeps_the_newest_and_persistent_items_survive_a_restart() {
    let t = server_with(&["bob"]).await;
    let mut bob = connect(&t, "bob", "b").await;
    let log = "urn:example:log";
    let two = field("pubsub#max_items", "2");
    for id in ["1", "2", "3"] {
        publish(
            &mut bob,
            log,
            Some(id),
            &format!("<entry xmlns='urn:example:log'>{id}</entry>"),
            &two,
        )
        .await;
    }
    assert_eq!(
        result_ids(&items(&mut bob, "", log, "", "").await),
        vec!["2", "3"]
    );
    assert_eq!(
        result_ids(&items(&mut bob, "", log, "", " max_items='1'").await),
        vec!["3"]
    );
    // A node that does not persist items still answers with its last one while running.
    let volatile = "urn:example:volatile";
    let no_persist = field("pubsub#persist_items", "false");
    for id in ["x", "y"] {
        publish(
            &mut bob,
            volatile,
            Some(id),
            "<v xmlns='urn:example:volatile'/>",
            &no_persist,
        )
        .await;
    }
    assert_eq!(
        result_ids(&items(&mut bob, "", volatile, "", "").await),
        vec!["y"]
    );
    drop(bob);

    let TestServer { server, dir, .. } = t;
    server.shutdown().await;
    let db = dir.path().join("corvid.db");
    let t = TestServer::start_with(|config| {
        config.storage.url = format!("sqlite://{}", db.display());
    })
    .await;
    let mut bob = connect(&t, "bob", "b").await;
    assert_eq!(
        result_ids(&items(&mut bob, "", log, "", "").await),
        vec!["2", "3"]
    );
    // The node itself persisted, its item did not.
    assert!(result_ids(&items(&mut bob, "", volatile, "", "").await).is_empty());
    drop(dir);
}

#[tokio::test]
async fn deleting_a_node_notifies_and_removes_it() {
    let t = server_with(&["bob", "alice"]).await;
    follow(&t, "alice", "bob").await;
    let mut bob = connect(&t, "bob", "b").await;
    publish(&mut bob, NICK, Some("current"), &nick("Bob"), "").await;
    let mut alice = connect(&t, "alice", "a").await;
    online_with_notify(&mut alice, &[NICK]).await;
    next_event_items(&mut alice, NICK).await;

    let answer = iq(
        &mut bob,
        "d1",
        &format!(
            "<iq xmlns='jabber:client' type='set' id='d1'><pubsub xmlns='{PUBSUB}#owner'>\
                  <delete node='{NICK}'/></pubsub></iq>"
        ),
    )
    .await;
    assert_eq!(answer.attr("type"), Some("result"));
    let notice = next_matching(&mut alice, is_event_about(NICK)).await;
    assert!(event_of(&notice)
        .and_then(|e| e.get_child("delete", PUBSUB_EVENT))
        .is_some());
    assert_eq!(
        error_of(&items(&mut bob, "", NICK, "", "").await).1,
        "item-not-found"
    );
}

// ---------------------------------------------------------------------------------------------
// XEP-0115 caps handling on the server.

#[tokio::test]
async fn caps_query_is_sent_once_for_two_sessions_with_the_same_ver() {
    let t = server_with(&["bob", "alice"]).await;
    follow(&t, "alice", "bob").await;
    let mut bob = connect(&t, "bob", "b").await;
    publish(&mut bob, NICK, Some("current"), &nick("Bob"), "").await;

    let mut first = connect(&t, "alice", "one").await;
    online_with_notify(&mut first, &[NICK]).await;
    next_event_items(&mut first, NICK).await;

    // Same ver from another session: the server already knows it, asks nothing, and the last
    // item is the first thing the session hears about.
    let mut second = connect(&t, "alice", "two").await;
    let features = features_with_notify(&[NICK]);
    available_with_caps(&mut second, &caps_ver(&features)).await;
    let next = next_matching(&mut second, |e| is_caps_query(e) || event_of(e).is_some()).await;
    assert!(
        !is_caps_query(&next),
        "asked again about a known ver: {next:?}"
    );
    assert_eq!(
        event_of(&next)
            .and_then(|e| e.get_child("items", PUBSUB_EVENT))
            .and_then(|i| i.attr("node")),
        Some(NICK)
    );
}

#[tokio::test]
async fn caps_answer_that_does_not_match_its_ver_is_not_cached() {
    let t = server_with(&["bob", "alice"]).await;
    follow(&t, "alice", "bob").await;
    let mut bob = connect(&t, "bob", "b").await;
    publish(&mut bob, NICK, Some("current"), &nick("Bob"), "").await;

    // A ver that is not the hash of what the client then answers.
    let bogus = "AAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    let features = features_with_notify(&[NICK]);
    let mut first = connect(&t, "alice", "one").await;
    available_with_caps(&mut first, bogus).await;
    answer_caps_query(&mut first, bogus, &features).await;
    // The answer still counts for the session that gave it.
    let (_, last) = next_event_items(&mut first, NICK).await;
    assert_eq!(text_of(&last[0].1), "Bob");

    // But not for the next session claiming the same ver: it is asked itself.
    let mut second = connect(&t, "alice", "two").await;
    available_with_caps(&mut second, bogus).await;
    let next = next_matching(&mut second, |e| is_caps_query(e) || event_of(e).is_some()).await;
    assert!(
        is_caps_query(&next),
        "an unverified answer was reused: {next:?}"
    );
    // Answered with no interests this time: it gets nothing, whatever the first one said.
    let id = next.attr("id").unwrap_or_default().to_owned();
    send(
        &mut second,
        &format!("<iq xmlns='jabber:client' type='result' id='{id}' to='{DOMAIN}'><query xmlns='{DISCO_INFO}'/></iq>"),
    )
    .await;
    publish(&mut bob, NICK, Some("current"), &nick("Bobby"), "").await;
    let (_, got) = next_event_items(&mut first, NICK).await;
    assert_eq!(text_of(&got[0].1), "Bobby");
    marker(&mut bob, "alice@localhost/two", "after-nick").await;
    expect_marker_next(&mut second, "after-nick").await;
}

#[tokio::test]
async fn account_disco_shows_the_pep_identity_and_features() {
    let t = server_with(&["alice"]).await;
    let mut alice = connect(&t, "alice", "a").await;
    let info = iq(
        &mut alice,
        "i1",
        "<iq xmlns='jabber:client' type='get' id='i1' to='alice@localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
    )
    .await;
    let query = info.get_child("query", DISCO_INFO).expect("disco info");
    assert!(query.children().any(|c| c.name() == "identity"
        && c.attr("category") == Some("pubsub")
        && c.attr("type") == Some("pep")));
    let features: Vec<&str> = query.children().filter_map(|c| c.attr("var")).collect();
    for feature in [
        "publish",
        "auto-create",
        "publish-options",
        "access-open",
        "filtered-notifications",
        "last-published",
    ] {
        let var = format!("{PUBSUB}#{feature}");
        assert!(features.contains(&var.as_str()), "{var} in {features:?}");
    }
}

#[tokio::test]
async fn new_interest_in_a_node_brings_its_last_item() {
    let t = server_with(&["bob", "alice"]).await;
    follow(&t, "alice", "bob").await;
    let mut bob = connect(&t, "bob", "b").await;
    publish(&mut bob, NICK, Some("current"), &nick("Bob"), "").await;

    // First without interest in nicknames: nothing comes.
    let mut alice = connect(&t, "alice", "a").await;
    online_with_notify(&mut alice, &[AVATAR_META]).await;
    marker(&mut bob, "alice@localhost/a", "before").await;
    expect_marker_next(&mut alice, "before").await;

    // New caps that add nick+notify count as a new subscription to that node: its last item
    // is sent.
    online_with_notify(&mut alice, &[AVATAR_META, NICK]).await;
    let (_, last) = next_event_items(&mut alice, NICK).await;
    assert_eq!(text_of(&last[0].1), "Bob");
}

/// XEP-0163 §6.1: being allowed to see the owner's presence is a subscription to the
/// owner's nodes, so their last items arrive right away, not only at the next presence.
#[tokio::test]
async fn approved_subscription_brings_the_last_items() {
    let t = server_with(&["bob", "alice"]).await;
    let mut bob = connect(&t, "bob", "b").await;
    publish(&mut bob, NICK, Some("current"), &nick("Bob"), "").await;
    send(&mut bob, "<presence xmlns='jabber:client'/>").await;

    let mut alice = connect(&t, "alice", "a").await;
    online_with_notify(&mut alice, &[NICK]).await;
    // No relationship yet: nothing comes.
    marker(&mut bob, "alice@localhost/a", "before").await;
    expect_marker_next(&mut alice, "before").await;

    send(
        &mut alice,
        "<presence xmlns='jabber:client' type='subscribe' to='bob@localhost'/>",
    )
    .await;
    next_matching(&mut bob, |el| {
        el.name() == "presence" && el.attr("type") == Some("subscribe")
    })
    .await;
    send(
        &mut bob,
        "<presence xmlns='jabber:client' type='subscribed' to='alice@localhost'/>",
    )
    .await;
    let (message, last) = next_event_items(&mut alice, NICK).await;
    assert_eq!(message.attr("from"), Some("bob@localhost"));
    assert_eq!(text_of(&last[0].1), "Bob");
}

#[tokio::test]
async fn publish_and_retrieve_on_postgres() {
    let Some((t, schema)) = start_on_postgres().await else {
        println!("skipped: CORVID_TEST_POSTGRES not set");
        return;
    };
    t.add_user("bob").await;
    let mut bob = connect(&t, "bob", "b").await;
    let log = "urn:example:log";
    for id in ["1", "2", "3"] {
        let entry = format!("<entry xmlns='urn:example:log'>{id}</entry>");
        publish(
            &mut bob,
            log,
            Some(id),
            &entry,
            &field("pubsub#max_items", "2"),
        )
        .await;
    }
    let answer = items(&mut bob, "", log, "", "").await;
    drop(bob);
    t.server.shutdown().await;
    drop_schema(&schema).await;
    assert_eq!(result_ids(&answer), vec!["2", "3"]);
}

// ---------------------------------------------------------------------------------------------
// Explicit subscriptions (XEP-0060 §6.1, §6.2, §5.6).

async fn subscribe_iq(
    client: &mut Client,
    owner: &str,
    action: &str,
    node: &str,
    jid: &str,
) -> Element {
    let id = format!("sub-{}", rand_id());
    iq(
        client,
        &id,
        &format!(
            "<iq xmlns='jabber:client' type='set' id='{id}' to='{owner}@{DOMAIN}'>\
             <pubsub xmlns='{PUBSUB}'><{action} node='{node}' jid='{jid}'/></pubsub></iq>"
        ),
    )
    .await
}

/// (node, jid) of the requester's subscriptions at `owner`'s service.
async fn my_subscriptions(client: &mut Client, owner: &str) -> Vec<(String, String)> {
    let id = format!("subs-{}", rand_id());
    let answer = iq(
        client,
        &id,
        &format!(
            "<iq xmlns='jabber:client' type='get' id='{id}' to='{owner}@{DOMAIN}'>\
             <pubsub xmlns='{PUBSUB}'><subscriptions/></pubsub></iq>"
        ),
    )
    .await;
    assert_eq!(answer.attr("type"), Some("result"), "{answer:?}");
    answer
        .get_child("pubsub", PUBSUB)
        .and_then(|p| p.get_child("subscriptions", PUBSUB))
        .expect("subscriptions")
        .children()
        .map(|s| {
            assert_eq!(s.attr("subscription"), Some("subscribed"));
            (
                s.attr("node").unwrap_or_default().to_owned(),
                s.attr("jid").unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn explicit_subscription_to_an_open_node_brings_events_until_unsubscribed() {
    let t = server_with(&["alice", "bob"]).await;
    let mut alice = connect(&t, "alice", "a").await;
    let node = "urn:example:status";
    let open = field("pubsub#access_model", "open");
    publish(
        &mut alice,
        node,
        Some("1"),
        "<s xmlns='urn:example:status'>one</s>",
        &open,
    )
    .await;

    // bob is no contact and his caps ask for nothing: only the subscription brings events.
    let mut bob = connect(&t, "bob", "phone").await;
    // Available, as events to a bare JID go to available resources (RFC 6121 §8.5.2).
    send(&mut bob, "<presence xmlns='jabber:client'/>").await;
    let bob_jid = format!("bob@{DOMAIN}");
    // The result and the last item (§6.1.7), whichever the client reads first.
    send(
        &mut bob,
        &format!(
            "<iq xmlns='jabber:client' type='set' id='sub1' to='alice@{DOMAIN}'>\
             <pubsub xmlns='{PUBSUB}'><subscribe node='{node}' jid='{bob_jid}'/></pubsub></iq>"
        ),
    )
    .await;
    let (mut answer, mut last) = (None, None);
    while answer.is_none() || last.is_none() {
        let el = next_matching(&mut bob, |e| {
            e.attr("id") == Some("sub1") || is_event_about("urn:example:status")(e)
        })
        .await;
        if el.name() == "iq" {
            answer = Some(el);
        } else {
            last = Some(el);
        }
    }
    let (answer, last) = (answer.unwrap(), last.unwrap());
    assert_eq!(answer.attr("type"), Some("result"), "{answer:?}");
    let sub = answer
        .get_child("pubsub", PUBSUB)
        .and_then(|p| p.get_child("subscription", PUBSUB))
        .expect("subscription");
    assert_eq!(
        (sub.attr("node"), sub.attr("jid"), sub.attr("subscription")),
        (Some(node), Some(bob_jid.as_str()), Some("subscribed"))
    );
    let last = listed(
        event_of(&last)
            .and_then(|e| e.get_child("items", PUBSUB_EVENT))
            .expect("items event"),
    );
    assert_eq!(last.len(), 1);
    assert_eq!(text_of(&last[0].1), "one");

    publish(
        &mut alice,
        node,
        Some("2"),
        "<s xmlns='urn:example:status'>two</s>",
        &open,
    )
    .await;
    let (_, new) = next_event_items(&mut bob, "urn:example:status").await;
    assert_eq!(text_of(&new[0].1), "two");
    assert_eq!(
        my_subscriptions(&mut bob, "alice").await,
        vec![(node.to_owned(), bob_jid.clone())]
    );
    // alice sees none of bob's subscriptions as her own.
    assert!(my_subscriptions(&mut alice, "alice").await.is_empty());

    let answer = subscribe_iq(&mut bob, "alice", "unsubscribe", node, &bob_jid).await;
    assert_eq!(answer.attr("type"), Some("result"), "{answer:?}");
    publish(
        &mut alice,
        node,
        Some("3"),
        "<s xmlns='urn:example:status'>three</s>",
        &open,
    )
    .await;
    marker(&mut alice, &format!("bob@{DOMAIN}/phone"), "after-three").await;
    expect_marker_next(&mut bob, "after-three").await;
    assert!(my_subscriptions(&mut bob, "alice").await.is_empty());
    let again = subscribe_iq(&mut bob, "alice", "unsubscribe", node, &bob_jid).await;
    assert_error(
        &again,
        "cancel",
        "unexpected-request",
        Some("not-subscribed"),
    );
}

#[tokio::test]
async fn explicit_subscription_follows_the_access_model_and_the_jid_rules() {
    let t = server_with(&["alice", "bob", "carol"]).await;
    follow(&t, "carol", "alice").await;
    let mut alice = connect(&t, "alice", "a").await;
    let presence_node = "urn:example:presence-only";
    let private_node = "urn:example:private";
    publish(
        &mut alice,
        presence_node,
        Some("1"),
        "<p xmlns='urn:example:p'/>",
        "",
    )
    .await;
    let whitelist = field("pubsub#access_model", "whitelist");
    publish(
        &mut alice,
        private_node,
        Some("1"),
        "<p xmlns='urn:example:p'/>",
        &whitelist,
    )
    .await;

    let mut bob = connect(&t, "bob", "b").await;
    let bob_jid = format!("bob@{DOMAIN}");
    let answer = subscribe_iq(&mut bob, "alice", "subscribe", presence_node, &bob_jid).await;
    assert_error(
        &answer,
        "auth",
        "not-authorized",
        Some("presence-subscription-required"),
    );
    let answer = subscribe_iq(&mut bob, "alice", "subscribe", private_node, &bob_jid).await;
    assert_error(&answer, "cancel", "not-allowed", Some("closed-node"));
    let answer = subscribe_iq(&mut bob, "alice", "subscribe", "urn:example:none", &bob_jid).await;
    assert_error(&answer, "cancel", "item-not-found", None);
    // Someone else's JID, or none.
    let answer = subscribe_iq(
        &mut bob,
        "alice",
        "subscribe",
        presence_node,
        &format!("carol@{DOMAIN}"),
    )
    .await;
    assert_error(&answer, "modify", "bad-request", Some("invalid-jid"));
    let id = "no-jid";
    let answer = iq(
        &mut bob,
        id,
        &format!(
            "<iq xmlns='jabber:client' type='set' id='{id}' to='alice@{DOMAIN}'>\
             <pubsub xmlns='{PUBSUB}'><subscribe node='{presence_node}'/></pubsub></iq>"
        ),
    )
    .await;
    assert_error(&answer, "modify", "bad-request", Some("jid-required"));
    assert!(my_subscriptions(&mut bob, "alice").await.is_empty());

    // A contact may subscribe to the presence node, with a full JID too; the subscription is
    // stored and survives a restart.
    let mut carol = connect(&t, "carol", "c").await;
    let carol_full = format!("carol@{DOMAIN}/c");
    let answer = subscribe_iq(&mut carol, "alice", "subscribe", presence_node, &carol_full).await;
    assert_eq!(answer.attr("type"), Some("result"), "{answer:?}");
    drop((alice, bob, carol));
    let TestServer { server, dir, .. } = t;
    server.shutdown().await;
    let db = dir.path().join("corvid.db");
    let t = TestServer::start_with(|config| {
        config.storage.url = format!("sqlite://{}", db.display());
    })
    .await;
    let mut carol = connect(&t, "carol", "c").await;
    assert_eq!(
        my_subscriptions(&mut carol, "alice").await,
        vec![(presence_node.to_owned(), carol_full)]
    );
    drop(dir);
}
