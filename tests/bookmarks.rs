//! XEP-0049 Private XML Storage and XEP-0402 bookmarks with their XEP-0048 compatibility
//! (`#compat` through Private XML, `#compat-pep` through the PEP node `storage:bookmarks`),
//! over real sockets.

mod common;

use base64::Engine;
use common::*;
use minidom::Element;
use sha1::Digest;
use tokio_xmpp::Client;

const PRIVATE: &str = "jabber:iq:private";
const LEGACY: &str = "storage:bookmarks";
const NATIVE: &str = "urn:xmpp:bookmarks:1";
const PUBSUB: &str = "http://jabber.org/protocol/pubsub";
const PUBSUB_EVENT: &str = "http://jabber.org/protocol/pubsub#event";
const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
const STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
const CAPS_NODE: &str = "https://corvid.example/bookmarks-test";

async fn server_with(users: &[&str]) -> TestServer {
    server_configured(users, |_| {}).await
}

async fn server_configured(
    users: &[&str],
    adjust: impl FnOnce(&mut corvid::config::Config),
) -> TestServer {
    let t = TestServer::start_with(adjust).await;
    for user in users {
        t.add_user(user).await;
    }
    t
}

async fn connect(t: &TestServer, user: &str, resource: &str) -> Client {
    let mut client = t.client(user, resource, false);
    online(&mut client).await;
    client
}

fn rand_id() -> String {
    format!("q{}", rand::random::<u64>() % 1_000_000_000)
}

/// Sends `<iq type id [to]>{inner}</iq>` and returns the answer.
async fn iq(client: &mut Client, kind: &str, to: Option<&str>, inner: &str) -> Element {
    let id = rand_id();
    let to = to.map(|t| format!(" to='{t}'")).unwrap_or_default();
    send(
        client,
        &format!("<iq xmlns='jabber:client' type='{kind}' id='{id}'{to}>{inner}</iq>"),
    )
    .await;
    next_matching(client, |e| {
        e.name() == "iq" && e.attr("id") == Some(id.as_str())
    })
    .await
}

async fn private_get(client: &mut Client, asked: &str) -> Element {
    iq(
        client,
        "get",
        None,
        &format!("<query xmlns='{PRIVATE}'>{asked}</query>"),
    )
    .await
}

async fn private_set(client: &mut Client, to: Option<&str>, inner: &str) -> Element {
    iq(
        client,
        "set",
        to,
        &format!("<query xmlns='{PRIVATE}'>{inner}</query>"),
    )
    .await
}

fn assert_result(answer: &Element) {
    assert_eq!(answer.attr("type"), Some("result"), "{answer:?}");
}

/// (error type, defined condition) of an error answer.
fn error_of(answer: &Element) -> (String, String) {
    assert_eq!(answer.attr("type"), Some("error"), "{answer:?}");
    let error = answer.get_child("error", "jabber:client").expect("error");
    let condition = error
        .children()
        .find(|c| c.ns() == STANZAS && c.name() != "text")
        .map(|c| c.name().to_owned())
        .unwrap_or_default();
    (error.attr("type").unwrap_or_default().to_owned(), condition)
}

fn assert_error(answer: &Element, kind: &str, condition: &str) {
    let (k, c) = error_of(answer);
    assert_eq!((k.as_str(), c.as_str()), (kind, condition), "{answer:?}");
}

/// The children of a private get's `<query/>`.
fn private_children(answer: &Element) -> Vec<Element> {
    assert_result(answer);
    answer
        .get_child("query", PRIVATE)
        .expect("query in the result")
        .children()
        .cloned()
        .collect()
}

/// The legacy `<storage/>` a private get of `storage:bookmarks` returns.
async fn private_bookmarks(client: &mut Client) -> Element {
    let answer = private_get(client, &format!("<storage xmlns='{LEGACY}'/>")).await;
    let children = private_children(&answer);
    assert_eq!(children.len(), 1, "{answer:?}");
    assert!(children[0].is("storage", LEGACY), "{answer:?}");
    children[0].clone()
}

/// The room JIDs of a legacy `<storage/>`, in order.
fn legacy_rooms(storage: &Element) -> Vec<String> {
    storage
        .children()
        .filter(|c| c.is("conference", LEGACY))
        .filter_map(|c| c.attr("jid"))
        .map(str::to_owned)
        .collect()
}

fn legacy_room<'a>(storage: &'a Element, jid: &str) -> &'a Element {
    storage
        .children()
        .find(|c| c.is("conference", LEGACY) && c.attr("jid") == Some(jid))
        .unwrap_or_else(|| panic!("{jid} in {storage:?}"))
}

/// (item id, payload) of the own PEP node, or `None` when the node does not exist.
async fn pep_items(client: &mut Client, node: &str) -> Option<Vec<(String, Element)>> {
    let answer = iq(
        client,
        "get",
        None,
        &format!("<pubsub xmlns='{PUBSUB}'><items node='{node}'/></pubsub>"),
    )
    .await;
    if answer.attr("type") == Some("error") {
        assert_error(&answer, "cancel", "item-not-found");
        return None;
    }
    assert_result(&answer);
    let items = answer
        .get_child("pubsub", PUBSUB)
        .and_then(|p| p.get_child("items", PUBSUB))
        .expect("items");
    Some(
        items
            .children()
            .map(|i| {
                (
                    i.attr("id").unwrap_or_default().to_owned(),
                    i.children().next().cloned().expect("payload"),
                )
            })
            .collect(),
    )
}

async fn native_ids(client: &mut Client) -> Vec<String> {
    let mut ids: Vec<String> = pep_items(client, NATIVE)
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    ids.sort();
    ids
}

/// The `<storage/>` of the legacy PEP node's `current` item.
async fn legacy_pep_storage(client: &mut Client) -> Element {
    let items = pep_items(client, LEGACY).await.expect("legacy PEP node");
    let (id, payload) = items.last().expect("an item").clone();
    assert_eq!(id, "current");
    assert!(payload.is("storage", LEGACY), "{payload:?}");
    payload
}

fn field(var: &str, value: &str) -> String {
    format!("<field var='{var}'><value>{value}</value></field>")
}

/// What XEP-0402 §3 clients send.
fn native_options() -> String {
    [
        field("pubsub#persist_items", "true"),
        field("pubsub#max_items", "max"),
        field("pubsub#send_last_published_item", "never"),
        field("pubsub#access_model", "whitelist"),
    ]
    .concat()
}

/// What XEP-0048 §3.3 / XEP-0223 clients send.
fn legacy_options() -> String {
    [
        field("pubsub#persist_items", "true"),
        field("pubsub#access_model", "whitelist"),
    ]
    .concat()
}

async fn publish(client: &mut Client, node: &str, id: &str, payload: &str, options: &str) {
    let answer = iq(
        client,
        "set",
        None,
        &format!(
            "<pubsub xmlns='{PUBSUB}'><publish node='{node}'><item id='{id}'>{payload}</item>\
             </publish><publish-options><x xmlns='jabber:x:data' type='submit'>\
             <field var='FORM_TYPE' type='hidden'><value>{PUBSUB}#publish-options</value></field>\
             {options}</x></publish-options></pubsub>"
        ),
    )
    .await;
    assert_result(&answer);
}

fn native_conference(name: &str, nick: &str) -> String {
    format!(
        "<conference xmlns='{NATIVE}' name='{name}' autojoin='true'><nick>{nick}</nick>\
         <extensions><state xmlns='urn:example:client'/></extensions></conference>"
    )
}

// ---------------------------------------------------------------------------------------------
// Caps, so that a session asks for notifications (`+notify`).

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

/// Available presence with caps wanting notifications of `nodes`, and the answer to the
/// server's caps query.
async fn online_with_notify(client: &mut Client, nodes: &[&str]) {
    let mut features = vec![
        DISCO_INFO.to_string(),
        "http://jabber.org/protocol/caps".to_string(),
    ];
    for node in nodes {
        features.push(node.to_string());
        features.push(format!("{node}+notify"));
    }
    let ver = caps_ver(&features);
    send(
        client,
        &format!(
            "<presence xmlns='jabber:client'><c xmlns='http://jabber.org/protocol/caps' \
             hash='sha-1' node='{CAPS_NODE}' ver='{ver}'/></presence>"
        ),
    )
    .await;
    let query = next_matching(client, |e| {
        e.name() == "iq" && e.attr("type") == Some("get") && e.has_child("query", DISCO_INFO)
    })
    .await;
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

/// The next `<items/>` notification about `node`.
async fn next_event(client: &mut Client, node: &str) -> Element {
    let message = next_matching(client, |e| {
        e.name() == "message"
            && e.get_child("event", PUBSUB_EVENT)
                .and_then(|ev| ev.get_child("items", PUBSUB_EVENT))
                .is_some_and(|items| items.attr("node") == Some(node))
    })
    .await;
    assert_eq!(message.attr("from"), Some(account("alice").as_str()));
    message
        .get_child("event", PUBSUB_EVENT)
        .and_then(|ev| ev.get_child("items", PUBSUB_EVENT))
        .cloned()
        .expect("items")
}

fn event_item_ids(items: &Element, kind: &str) -> Vec<String> {
    let mut ids: Vec<String> = items
        .children()
        .filter(|c| c.name() == kind)
        .filter_map(|c| c.attr("id"))
        .map(str::to_owned)
        .collect();
    ids.sort();
    ids
}

// ---------------------------------------------------------------------------------------------
// XEP-0049.

#[tokio::test]
async fn private_xml_set_get_and_replace() {
    let t = server_with(&["alice", "bob"]).await;
    let mut alice = connect(&t, "alice", "a").await;

    // Nothing stored: the empty element that was asked for.
    let answer = private_get(&mut alice, "<prefs xmlns='urn:example:prefs'/>").await;
    let children = private_children(&answer);
    assert_eq!(children.len(), 1);
    assert!(children[0].is("prefs", "urn:example:prefs"));
    assert_eq!(children[0].children().count(), 0);

    let prefs = "<prefs xmlns='urn:example:prefs'><nick>Alice ☕</nick></prefs>";
    let notes = "<notes xmlns='urn:example:notes'><n>1</n></notes>";
    assert_result(&private_set(&mut alice, None, &format!("{prefs}{notes}")).await);
    let children =
        private_children(&private_get(&mut alice, "<prefs xmlns='urn:example:prefs'/>").await);
    assert_eq!(children.len(), 1);
    assert_eq!(
        children[0]
            .get_child("nick", "urn:example:prefs")
            .unwrap()
            .text(),
        "Alice ☕"
    );
    let children =
        private_children(&private_get(&mut alice, "<notes xmlns='urn:example:notes'/>").await);
    assert_eq!(
        children[0]
            .get_child("n", "urn:example:notes")
            .unwrap()
            .text(),
        "1"
    );

    // A set replaces what the namespace held; the other namespace keeps its value.
    let prefs2 = "<prefs xmlns='urn:example:prefs'><nick>A</nick></prefs>\
                  <extra xmlns='urn:example:prefs'/>";
    assert_result(&private_set(&mut alice, Some(&account("alice")), prefs2).await);
    let children =
        private_children(&private_get(&mut alice, "<prefs xmlns='urn:example:prefs'/>").await);
    let names: Vec<&str> = children.iter().map(Element::name).collect();
    assert_eq!(names, ["prefs", "extra"]);
    assert_eq!(
        children[0]
            .get_child("nick", "urn:example:prefs")
            .unwrap()
            .text(),
        "A"
    );
    let children =
        private_children(&private_get(&mut alice, "<notes xmlns='urn:example:notes'/>").await);
    assert_eq!(
        children[0]
            .get_child("n", "urn:example:notes")
            .unwrap()
            .text(),
        "1"
    );

    // Per account: bob sees none of it, and it survives a new session.
    let mut bob = connect(&t, "bob", "b").await;
    let children =
        private_children(&private_get(&mut bob, "<prefs xmlns='urn:example:prefs'/>").await);
    assert_eq!(children[0].children().count(), 0);
    drop(alice);
    let mut again = connect(&t, "alice", "again").await;
    let children =
        private_children(&private_get(&mut again, "<notes xmlns='urn:example:notes'/>").await);
    assert_eq!(
        children[0]
            .get_child("n", "urn:example:notes")
            .unwrap()
            .text(),
        "1"
    );
}

#[tokio::test]
async fn private_xml_refuses_other_users_reserved_namespaces_and_bad_requests() {
    let t = server_configured(&["alice", "bob"], |config| {
        config.private_storage.max_bytes = 1024;
        config.private_storage.max_namespaces = 2;
    })
    .await;
    let mut alice = connect(&t, "alice", "a").await;
    let mut bob = connect(&t, "bob", "b").await;
    assert_result(&private_set(&mut bob, None, "<p xmlns='urn:example:p'>bob's</p>").await);

    // Another user's storage, existing or not: forbidden either way.
    for to in [account("bob"), account("nobody")] {
        let get = iq(
            &mut alice,
            "get",
            Some(&to),
            &format!("<query xmlns='{PRIVATE}'><p xmlns='urn:example:p'/></query>"),
        )
        .await;
        assert_error(&get, "auth", "forbidden");
        let set = private_set(&mut alice, Some(&to), "<p xmlns='urn:example:p'>x</p>").await;
        assert_error(&set, "auth", "forbidden");
    }
    let children = private_children(&private_get(&mut bob, "<p xmlns='urn:example:p'/>").await);
    assert_eq!(children[0].text(), "bob's");

    // Reserved namespaces.
    for reserved in ["jabber:client", "jabber:server", PRIVATE] {
        let el = format!("<x xmlns='{reserved}'/>");
        assert_error(
            &private_set(&mut alice, None, &el).await,
            "modify",
            "not-acceptable",
        );
        assert_error(
            &private_get(&mut alice, &el).await,
            "modify",
            "not-acceptable",
        );
    }
    // An element without a namespace of its own is in jabber:iq:private.
    assert_error(
        &private_set(&mut alice, None, "<x/>").await,
        "modify",
        "not-acceptable",
    );
    // Nothing to store, nothing asked, or two things asked.
    assert_error(
        &private_set(&mut alice, None, "").await,
        "modify",
        "not-acceptable",
    );
    assert_error(&private_get(&mut alice, "").await, "modify", "bad-request");
    assert_error(
        &private_get(&mut alice, "<a xmlns='urn:a'/><b xmlns='urn:b'/>").await,
        "modify",
        "bad-request",
    );

    // Limits: the size of one namespace, and how many namespaces.
    let big = format!("<big xmlns='urn:example:big'>{}</big>", "x".repeat(2000));
    assert_error(
        &private_set(&mut alice, None, &big).await,
        "modify",
        "not-acceptable",
    );
    assert_result(&private_set(&mut alice, None, "<a xmlns='urn:a'/>").await);
    assert_result(&private_set(&mut alice, None, "<b xmlns='urn:b'>1</b>").await);
    assert_error(
        &private_set(&mut alice, None, "<c xmlns='urn:c'/>").await,
        "wait",
        "resource-constraint",
    );
    assert_result(&private_set(&mut alice, None, "<b xmlns='urn:b'>2</b>").await);

    // The server is still there for both.
    let children = private_children(&private_get(&mut alice, "<b xmlns='urn:b'/>").await);
    assert_eq!(children[0].text(), "2");
}

#[tokio::test]
async fn private_xml_goes_with_the_account() {
    let t = server_with(&["alice"]).await;
    let mut alice = connect(&t, "alice", "a").await;
    assert_result(&private_set(&mut alice, None, "<p xmlns='urn:example:p'>1</p>").await);
    drop(alice);
    t.storage()
        .delete_account_and_archive(&account("alice"))
        .await
        .unwrap();
    t.add_user("alice").await;
    let mut alice = connect(&t, "alice", "b").await;
    let children = private_children(&private_get(&mut alice, "<p xmlns='urn:example:p'/>").await);
    assert_eq!(children[0].children().count(), 0);
    assert_eq!(children[0].text(), "");
}

// ---------------------------------------------------------------------------------------------
// XEP-0402 and its XEP-0048 compatibility.

#[tokio::test]
async fn account_advertises_both_compat_features() {
    let t = server_with(&["alice"]).await;
    let mut alice = connect(&t, "alice", "a").await;
    let answer = iq(
        &mut alice,
        "get",
        Some(&account("alice")),
        &format!("<query xmlns='{DISCO_INFO}'/>"),
    )
    .await;
    assert_result(&answer);
    let features: Vec<&str> = answer
        .get_child("query", DISCO_INFO)
        .unwrap()
        .children()
        .filter(|c| c.name() == "feature")
        .filter_map(|c| c.attr("var"))
        .collect();
    for wanted in [
        "urn:xmpp:bookmarks:1#compat",
        "urn:xmpp:bookmarks:1#compat-pep",
    ] {
        assert!(features.contains(&wanted), "{wanted} in {features:?}");
    }
}

#[tokio::test]
async fn native_bookmarks_show_in_private_xml_and_legacy_pep_with_deletions() {
    let t = server_with(&["alice"]).await;
    let mut native = connect(&t, "alice", "native").await;
    let mut legacy = connect(&t, "alice", "legacy").await;

    publish(
        &mut native,
        NATIVE,
        "one@muc.example",
        &native_conference("One", "al"),
        &native_options(),
    )
    .await;
    publish(
        &mut native,
        NATIVE,
        "two@muc.example",
        &format!("<conference xmlns='{NATIVE}'/>"),
        &native_options(),
    )
    .await;

    // Through Private XML (#compat).
    let storage = private_bookmarks(&mut legacy).await;
    assert_eq!(
        legacy_rooms(&storage),
        ["one@muc.example", "two@muc.example"]
    );
    let one = legacy_room(&storage, "one@muc.example");
    assert_eq!(one.attr("name"), Some("One"));
    assert!(matches!(one.attr("autojoin"), Some("true" | "1")));
    assert_eq!(
        one.get_child("nick", LEGACY).map(Element::text).as_deref(),
        Some("al")
    );
    assert!(one.has_child("state", "urn:example:client"), "{one:?}");

    // Through the legacy PEP node (#compat-pep).
    let storage = legacy_pep_storage(&mut legacy).await;
    assert_eq!(
        legacy_rooms(&storage),
        ["one@muc.example", "two@muc.example"]
    );

    // A deletion in the native node shows in both.
    let answer = iq(
        &mut native,
        "set",
        None,
        &format!(
            "<pubsub xmlns='{PUBSUB}'><retract node='{NATIVE}' notify='true'>\
             <item id='one@muc.example'/></retract></pubsub>"
        ),
    )
    .await;
    assert_result(&answer);
    assert_eq!(
        legacy_rooms(&private_bookmarks(&mut legacy).await),
        ["two@muc.example"]
    );
    assert_eq!(
        legacy_rooms(&legacy_pep_storage(&mut legacy).await),
        ["two@muc.example"]
    );
}

#[tokio::test]
async fn private_xml_bookmarks_become_native_and_legacy_pep_with_notifications() {
    let t = server_with(&["alice"]).await;
    let mut watcher = connect(&t, "alice", "watcher").await;
    online_with_notify(&mut watcher, &[NATIVE, LEGACY]).await;
    let mut legacy = connect(&t, "alice", "legacy").await;

    let answer = private_set(
        &mut legacy,
        None,
        &format!(
            "<storage xmlns='{LEGACY}'>\
             <conference jid='one@muc.example' name='One' autojoin='true'><nick>al</nick>\
             <password>pw</password></conference>\
             <conference jid='two@muc.example' autojoin='false'/>\
             <url name='Site' url='https://example.org/'/></storage>"
        ),
    )
    .await;
    assert_result(&answer);

    // The native items, announced to the session that asked.
    let mut announced = Vec::new();
    while announced.len() < 2 {
        let items = next_event(&mut watcher, NATIVE).await;
        announced.extend(event_item_ids(&items, "item"));
    }
    announced.sort();
    assert_eq!(announced, ["one@muc.example", "two@muc.example"]);
    let legacy_event = next_event(&mut watcher, LEGACY).await;
    let storage = legacy_event
        .get_child("item", PUBSUB_EVENT)
        .and_then(|i| i.get_child("storage", LEGACY))
        .expect("legacy storage in the event");
    assert_eq!(
        legacy_rooms(storage),
        ["one@muc.example", "two@muc.example"]
    );

    let items = pep_items(&mut watcher, NATIVE).await.expect("native node");
    let (_, one) = items
        .iter()
        .find(|(id, _)| id == "one@muc.example")
        .expect("room one");
    assert!(one.is("conference", NATIVE));
    assert_eq!(one.attr("name"), Some("One"));
    assert_eq!(
        one.get_child("nick", NATIVE).map(Element::text).as_deref(),
        Some("al")
    );
    assert_eq!(
        one.get_child("password", NATIVE)
            .map(Element::text)
            .as_deref(),
        Some("pw")
    );

    // A room dropped from the legacy list is retracted from the native node.
    let answer = private_set(
        &mut legacy,
        None,
        &format!(
            "<storage xmlns='{LEGACY}'><conference jid='two@muc.example' autojoin='false'/>\
             <url name='Site' url='https://example.org/'/></storage>"
        ),
    )
    .await;
    assert_result(&answer);
    let retraction = next_event(&mut watcher, NATIVE).await;
    assert_eq!(event_item_ids(&retraction, "retract"), ["one@muc.example"]);
    assert_eq!(native_ids(&mut watcher).await, ["two@muc.example"]);
    assert_eq!(
        legacy_rooms(&legacy_pep_storage(&mut watcher).await),
        ["two@muc.example"]
    );

    // The URL bookmark, which has no native form, is still in the private view.
    let storage = private_bookmarks(&mut legacy).await;
    assert_eq!(legacy_rooms(&storage), ["two@muc.example"]);
    assert!(storage
        .children()
        .any(|c| c.is("url", LEGACY) && c.attr("url") == Some("https://example.org/")));
}

#[tokio::test]
async fn legacy_pep_bookmarks_become_native_and_private_xml() {
    let t = server_with(&["alice"]).await;
    let mut legacy = connect(&t, "alice", "legacy").await;
    let mut native = connect(&t, "alice", "native").await;
    online_with_notify(&mut native, &[NATIVE]).await;

    publish(
        &mut legacy,
        LEGACY,
        "current",
        &format!(
            "<storage xmlns='{LEGACY}'><conference jid='pep@muc.example' name='Pep' \
             autojoin='true'><nick>al</nick></conference></storage>"
        ),
        &legacy_options(),
    )
    .await;
    let items = next_event(&mut native, NATIVE).await;
    assert_eq!(event_item_ids(&items, "item"), ["pep@muc.example"]);
    assert_eq!(native_ids(&mut native).await, ["pep@muc.example"]);
    assert_eq!(
        legacy_rooms(&private_bookmarks(&mut native).await),
        ["pep@muc.example"]
    );

    // A native client's own publish with its usual options still meets the node's
    // configuration that the conversion created.
    publish(
        &mut native,
        NATIVE,
        "added@muc.example",
        &native_conference("Added", "al"),
        &native_options(),
    )
    .await;
    assert_eq!(
        legacy_rooms(&legacy_pep_storage(&mut legacy).await),
        ["pep@muc.example", "added@muc.example"]
    );

    // Emptying the legacy list empties the native node.
    publish(
        &mut legacy,
        LEGACY,
        "current",
        &format!("<storage xmlns='{LEGACY}'/>"),
        &legacy_options(),
    )
    .await;
    assert_eq!(native_ids(&mut native).await, Vec::<String>::new());
    assert_eq!(
        legacy_rooms(&private_bookmarks(&mut native).await),
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn invalid_legacy_bookmarks_are_refused_and_change_nothing() {
    let t = server_with(&["alice"]).await;
    let mut alice = connect(&t, "alice", "a").await;
    publish(
        &mut alice,
        NATIVE,
        "kept@muc.example",
        &format!("<conference xmlns='{NATIVE}'/>"),
        &native_options(),
    )
    .await;
    for bad in [
        "<conference name='no jid'/>",
        "<conference jid='not a jid@@'/>",
    ] {
        let storage = format!("<storage xmlns='{LEGACY}'>{bad}</storage>");
        assert_error(
            &private_set(&mut alice, None, &storage).await,
            "modify",
            "bad-request",
        );
        let answer = iq(
            &mut alice,
            "set",
            None,
            &format!(
                "<pubsub xmlns='{PUBSUB}'><publish node='{LEGACY}'><item id='current'>\
                 {storage}</item></publish></pubsub>"
            ),
        )
        .await;
        assert_error(&answer, "modify", "bad-request");
    }
    assert_eq!(native_ids(&mut alice).await, ["kept@muc.example"]);
}
