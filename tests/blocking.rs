//! XEP-0191 Blocking Command over real sockets: the blocklist IQs, pushes to interested
//! resources, and what blocking does to stanzas in both directions.

mod common;

use common::*;
use corvid::storage::{RosterItem, Subscription};
use corvid::xml::ns;
use minidom::Element;

const BLOCKING: &str = "urn:xmpp:blocking";

fn error_condition(el: &Element) -> Option<String> {
    el.get_child("error", ns::CLIENT).and_then(|e| {
        e.children()
            .find(|c| c.ns() == ns::STANZAS_ERRORS && c.name() != "text")
            .map(|c| c.name().to_string())
    })
}

fn error_type(el: &Element) -> Option<String> {
    el.get_child("error", ns::CLIENT)
        .and_then(|e| e.attr("type"))
        .map(str::to_owned)
}

/// The next element matching `pred`, skipping others.
async fn next_where(raw: &mut Raw, pred: impl Fn(&Element) -> bool) -> Element {
    loop {
        let el = raw.element().await;
        if pred(&el) {
            return el;
        }
    }
}

/// Sends an IQ and returns the answer with the same id.
async fn iq(raw: &mut Raw, id: &str, xml: &str) -> Element {
    raw.write(xml).await;
    next_where(raw, |e| e.name() == "iq" && e.attr("id") == Some(id)).await
}

fn items(el: &Element, payload: &str) -> Vec<String> {
    el.get_child(payload, BLOCKING)
        .unwrap_or_else(|| panic!("no <{payload}/> in {}", corvid::xml::to_string(el)))
        .children()
        .filter(|c| c.is("item", BLOCKING))
        .filter_map(|c| c.attr("jid").map(str::to_owned))
        .collect()
}

async fn blocklist(raw: &mut Raw) -> Vec<String> {
    let result = iq(
        raw,
        "bl",
        "<iq type='get' id='bl'><blocklist xmlns='urn:xmpp:blocking'/></iq>",
    )
    .await;
    assert_eq!(result.attr("type"), Some("result"));
    items(&result, "blocklist")
}

async fn block(raw: &mut Raw, jids: &[&str]) -> Element {
    let items: String = jids.iter().map(|j| format!("<item jid='{j}'/>")).collect();
    iq(
        raw,
        "blk",
        &format!("<iq type='set' id='blk'><block xmlns='urn:xmpp:blocking'>{items}</block></iq>"),
    )
    .await
}

async fn unblock(raw: &mut Raw, jids: &[&str]) -> Element {
    let items: String = jids.iter().map(|j| format!("<item jid='{j}'/>")).collect();
    iq(
        raw,
        "unb",
        &format!(
            "<iq type='set' id='unb'><unblock xmlns='urn:xmpp:blocking'>{items}</unblock></iq>"
        ),
    )
    .await
}

/// Sends a block/unblock and collects both the result and the push the requesting resource
/// gets itself (in whichever order they come).
async fn change_with_push(raw: &mut Raw, id: &str, xml: &str, payload: &str) -> Element {
    raw.write(xml).await;
    let (mut result, mut push) = (None, None);
    while result.is_none() || push.is_none() {
        let el = raw.element().await;
        if el.name() == "iq" && el.attr("id") == Some(id) {
            assert_eq!(
                el.attr("type"),
                Some("result"),
                "{}",
                corvid::xml::to_string(&el)
            );
            result = Some(el);
        } else if is_push(&el, payload) {
            push = Some(el);
        }
    }
    push.unwrap_or_else(|| unreachable!())
}

fn is_push(el: &Element, payload: &str) -> bool {
    el.name() == "iq" && el.attr("type") == Some("set") && el.has_child(payload, BLOCKING)
}

fn is_message_with_body(el: &Element) -> bool {
    el.name() == "message" && el.has_child("body", ns::CLIENT)
}

fn body(el: &Element) -> String {
    el.get_child("body", ns::CLIENT)
        .map(|b| b.text())
        .unwrap_or_default()
}

async fn login(t: &TestServer, user: &str, resource: &str) -> Raw {
    Raw::login(t.c2s(), t.tls_config(), user, resource).await.0
}

/// Sends available presence and waits for it to come back (the session is then available).
async fn available(raw: &mut Raw, full: &str) {
    raw.write("<presence/>").await;
    next_where(raw, |e| {
        e.name() == "presence" && e.attr("from") == Some(full)
    })
    .await;
}

#[tokio::test]
async fn block_unblock_and_blocklist_roundtrip() {
    let t = TestServer::start().await;
    t.add_user("alice").await;
    let mut alice = login(&t, "alice", "a").await;

    assert!(blocklist(&mut alice).await.is_empty());
    let r = block(
        &mut alice,
        &["romeo@example.net", "Example.ORG", "bob@localhost/phone"],
    )
    .await;
    assert_eq!(
        r.attr("type"),
        Some("result"),
        "{}",
        corvid::xml::to_string(&r)
    );
    // Items come back normalized and sorted.
    assert_eq!(
        blocklist(&mut alice).await,
        vec!["bob@localhost/phone", "example.org", "romeo@example.net"]
    );

    let r = unblock(&mut alice, &["example.org"]).await;
    assert_eq!(r.attr("type"), Some("result"));
    assert_eq!(
        blocklist(&mut alice).await,
        vec!["bob@localhost/phone", "romeo@example.net"]
    );

    // An empty <unblock/> clears the list.
    let r = unblock(&mut alice, &[]).await;
    assert_eq!(r.attr("type"), Some("result"));
    assert!(blocklist(&mut alice).await.is_empty());

    // The same IQs addressed to the user's own bare JID work too.
    let r = iq(
        &mut alice,
        "own",
        "<iq type='set' id='own' to='alice@localhost'><block xmlns='urn:xmpp:blocking'><item jid='x@y'/></block></iq>",
    )
    .await;
    assert_eq!(r.attr("type"), Some("result"));
    assert_eq!(blocklist(&mut alice).await, vec!["x@y"]);
}

#[tokio::test]
async fn malformed_block_requests_are_refused_and_change_nothing() {
    let t = TestServer::start().await;
    t.add_user("alice").await;
    t.add_user("bob").await;
    let mut alice = login(&t, "alice", "a").await;
    block(&mut alice, &["keep@example.net"]).await;

    let r = block(&mut alice, &[]).await;
    assert_eq!(error_condition(&r).as_deref(), Some("bad-request"));

    let r = block(&mut alice, &["ok@example.net", "not@valid@jid"]).await;
    assert_eq!(error_condition(&r).as_deref(), Some("jid-malformed"));
    let r = iq(
        &mut alice,
        "noattr",
        "<iq type='set' id='noattr'><block xmlns='urn:xmpp:blocking'><item/></block></iq>",
    )
    .await;
    assert_eq!(error_condition(&r).as_deref(), Some("jid-malformed"));

    // One's own account cannot be blocked.
    let r = block(&mut alice, &["alice@localhost/other"]).await;
    assert_eq!(error_condition(&r).as_deref(), Some("not-acceptable"));

    // A get with <block/> or a set with <blocklist/> makes no sense.
    let r = iq(
        &mut alice,
        "wrong",
        "<iq type='set' id='wrong'><blocklist xmlns='urn:xmpp:blocking'/></iq>",
    )
    .await;
    assert_eq!(error_condition(&r).as_deref(), Some("bad-request"));

    // Another user cannot read or change alice's list.
    let mut bob = login(&t, "bob", "b").await;
    let r = iq(
        &mut bob,
        "peek",
        "<iq type='get' id='peek' to='alice@localhost'><blocklist xmlns='urn:xmpp:blocking'/></iq>",
    )
    .await;
    assert_eq!(error_condition(&r).as_deref(), Some("service-unavailable"));

    assert_eq!(blocklist(&mut alice).await, vec!["keep@example.net"]);
}

#[tokio::test]
async fn blocklist_cap_refuses_the_whole_request() {
    let t = TestServer::start_with(|c| c.limits.blocklist_items = 2).await;
    t.add_user("alice").await;
    let mut alice = login(&t, "alice", "a").await;
    let r = block(&mut alice, &["a@x", "b@x"]).await;
    assert_eq!(r.attr("type"), Some("result"));
    let r = block(&mut alice, &["c@x"]).await;
    assert_eq!(error_condition(&r).as_deref(), Some("not-acceptable"));
    assert_eq!(error_type(&r).as_deref(), Some("modify"));
    // Blocking what is already blocked still works at the cap.
    let r = block(&mut alice, &["a@x"]).await;
    assert_eq!(r.attr("type"), Some("result"));
    assert_eq!(blocklist(&mut alice).await, vec!["a@x", "b@x"]);
}

#[tokio::test]
async fn pushes_reach_every_interested_resource_and_only_those() {
    let t = TestServer::start().await;
    t.add_user("alice").await;
    t.add_user("carol").await;
    let mut one = login(&t, "alice", "one").await;
    let mut two = login(&t, "alice", "two").await;
    let mut three = login(&t, "alice", "three").await;
    // One and two fetch the list and so become interested; three never does.
    blocklist(&mut one).await;
    blocklist(&mut two).await;

    let push = change_with_push(
        &mut one,
        "b1",
        "<iq type='set' id='b1'><block xmlns='urn:xmpp:blocking'><item jid='romeo@example.net'/><item jid='example.com'/></block></iq>",
        "block",
    )
    .await;
    assert_eq!(
        items(&push, "block"),
        vec!["romeo@example.net", "example.com"]
    );
    let push = next_where(&mut two, |e| is_push(e, "block")).await;
    assert_eq!(
        items(&push, "block"),
        vec!["romeo@example.net", "example.com"]
    );
    // Acknowledge, as a client would: the server must not answer the answer.
    let id = push.attr("id").unwrap_or_default().to_owned();
    two.write(&format!("<iq type='result' id='{id}'/>")).await;

    let push = change_with_push(
        &mut two,
        "u1",
        "<iq type='set' id='u1'><unblock xmlns='urn:xmpp:blocking'><item jid='example.com'/></unblock></iq>",
        "unblock",
    )
    .await;
    assert_eq!(items(&push, "unblock"), vec!["example.com"]);
    let push = next_where(&mut one, |e| is_push(e, "unblock")).await;
    assert_eq!(items(&push, "unblock"), vec!["example.com"]);

    // Unblock-all is pushed as an empty <unblock/>.
    let push = change_with_push(
        &mut one,
        "u2",
        "<iq type='set' id='u2'><unblock xmlns='urn:xmpp:blocking'/></iq>",
        "unblock",
    )
    .await;
    assert!(items(&push, "unblock").is_empty());
    let push = next_where(&mut two, |e| is_push(e, "unblock")).await;
    assert!(items(&push, "unblock").is_empty());

    // Three got no push: the first thing it receives is a later marker.
    let mut carol = login(&t, "carol", "c").await;
    carol
        .write(
            "<message to='alice@localhost/three' type='chat' id='m'><body>marker</body></message>",
        )
        .await;
    let first = three.element().await;
    assert!(
        is_message_with_body(&first),
        "{}",
        corvid::xml::to_string(&first)
    );
    assert_eq!(body(&first), "marker");

    // A resource that ended is forgotten; its successor is not interested until it asks.
    // Both are made available first so that two sees one's unavailable presence, i.e. the
    // server has processed the end of one's session before it logs in again.
    available(&mut two, "alice@localhost/two").await;
    available(&mut one, "alice@localhost/one").await;
    drop(one);
    next_where(&mut two, |e| {
        e.name() == "presence"
            && e.attr("from") == Some("alice@localhost/one")
            && e.attr("type") == Some("unavailable")
    })
    .await;
    let mut one_again = login(&t, "alice", "one").await;
    change_with_push(
        &mut two,
        "b2",
        "<iq type='set' id='b2'><block xmlns='urn:xmpp:blocking'><item jid='late@example.net'/></block></iq>",
        "block",
    )
    .await;
    carol
        .write(
            "<message to='alice@localhost/one' type='chat' id='m2'><body>marker2</body></message>",
        )
        .await;
    let first = one_again.element().await;
    assert_eq!(
        body(&first),
        "marker2",
        "{}",
        corvid::xml::to_string(&first)
    );
}

#[tokio::test]
async fn messages_and_iqs_across_a_block_get_the_xep_0191_errors() {
    let t = TestServer::start().await;
    t.add_user("alice").await;
    t.add_user("bob").await;
    let mut alice = login(&t, "alice", "a").await;
    let mut bob = login(&t, "bob", "b").await;
    available(&mut alice, "alice@localhost/a").await;
    available(&mut bob, "bob@localhost/b").await;

    // Before the block, messages flow.
    bob.write("<message to='alice@localhost' type='chat' id='m0'><body>before</body></message>")
        .await;
    assert_eq!(
        body(&next_where(&mut alice, is_message_with_body).await),
        "before"
    );

    let r = block(&mut alice, &["bob@localhost"]).await;
    assert_eq!(r.attr("type"), Some("result"));

    // Inbound: the blocked contact is told the user is not there.
    bob.write("<message to='alice@localhost/a' type='chat' id='m1'><body>hello?</body></message>")
        .await;
    let error = next_where(&mut bob, |e| e.attr("id") == Some("m1")).await;
    assert_eq!(error.attr("type"), Some("error"));
    assert_eq!(error.attr("from"), Some("alice@localhost/a"));
    assert_eq!(
        error_condition(&error).as_deref(),
        Some("service-unavailable")
    );

    let error = iq(
        &mut bob,
        "i1",
        "<iq to='alice@localhost' type='get' id='i1'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
    )
    .await;
    assert_eq!(
        error_condition(&error).as_deref(),
        Some("service-unavailable")
    );

    // Outbound: the user is told the contact is blocked.
    alice
        .write("<message to='bob@localhost' type='chat' id='m2'><body>psst</body></message>")
        .await;
    let error = next_where(&mut alice, |e| e.attr("id") == Some("m2")).await;
    assert_eq!(error.attr("type"), Some("error"));
    assert_eq!(error_condition(&error).as_deref(), Some("not-acceptable"));
    assert_eq!(error_type(&error).as_deref(), Some("cancel"));
    let app = error
        .get_child("error", ns::CLIENT)
        .and_then(|e| e.get_child("blocked", "urn:xmpp:blocking:errors"));
    assert!(app.is_some(), "{}", corvid::xml::to_string(&error));

    let error = iq(
        &mut alice,
        "i2",
        "<iq to='bob@localhost/b' type='get' id='i2'><ping xmlns='urn:xmpp:ping'/></iq>",
    )
    .await;
    assert_eq!(error_condition(&error).as_deref(), Some("not-acceptable"));

    // The server itself is never blocked, even by a domain item for it.
    block(&mut alice, &["localhost"]).await;
    let pong = iq(
        &mut alice,
        "p",
        "<iq to='localhost' type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>",
    )
    .await;
    assert_eq!(pong.attr("type"), Some("result"));

    // Nothing of bob's reached alice and nothing of alice's reached bob: after unblocking,
    // the first message each receives is a fresh one.
    let r = unblock(&mut alice, &[]).await;
    assert_eq!(r.attr("type"), Some("result"));
    bob.write("<message to='alice@localhost' type='chat' id='m3'><body>after</body></message>")
        .await;
    assert_eq!(
        body(&next_where(&mut alice, is_message_with_body).await),
        "after"
    );
    alice
        .write("<message to='bob@localhost' type='chat' id='m4'><body>back</body></message>")
        .await;
    assert_eq!(
        body(&next_where(&mut bob, is_message_with_body).await),
        "back"
    );
}

#[tokio::test]
async fn a_domain_item_blocks_everyone_on_that_domain() {
    let t = TestServer::start().await;
    for user in ["alice", "bob", "carol"] {
        t.add_user(user).await;
    }
    let mut alice = login(&t, "alice", "a").await;
    let mut carol = login(&t, "carol", "c").await;
    available(&mut alice, "alice@localhost/a").await;
    block(&mut alice, &["localhost"]).await;

    carol
        .write("<message to='alice@localhost' type='chat' id='m1'><body>hi</body></message>")
        .await;
    let error = next_where(&mut carol, |e| e.attr("id") == Some("m1")).await;
    assert_eq!(
        error_condition(&error).as_deref(),
        Some("service-unavailable")
    );

    // The user's own account is never blocked: messages to oneself still arrive.
    alice
        .write("<message to='alice@localhost/a' type='chat' id='self'><body>note to self</body></message>")
        .await;
    assert_eq!(
        body(&next_where(&mut alice, is_message_with_body).await),
        "note to self"
    );
}

#[tokio::test]
async fn presence_from_a_blocked_contact_is_dropped_silently() {
    let t = TestServer::start().await;
    for user in ["alice", "bob", "carol"] {
        t.add_user(user).await;
    }
    let mut alice = login(&t, "alice", "a").await;
    let mut bob = login(&t, "bob", "b").await;
    let mut carol = login(&t, "carol", "c").await;
    available(&mut alice, "alice@localhost/a").await;

    // Control: unblocked, bob's directed presence reaches alice.
    bob.write("<presence to='alice@localhost'/>").await;
    let seen = next_where(&mut alice, |e| e.name() == "presence").await;
    assert_eq!(seen.attr("from"), Some("bob@localhost/b"));

    block(&mut alice, &["bob@localhost"]).await;
    bob.write("<presence to='alice@localhost'><status>here</status></presence>")
        .await;
    bob.write("<presence to='alice@localhost' type='subscribe'/>")
        .await;
    // Presence errors are never answered, so bob hears nothing back; a message to carol
    // proves bob's session has processed both presences before the marker goes out.
    bob.write("<message to='carol@localhost/c' type='chat' id='sync'><body>sync</body></message>")
        .await;
    assert_eq!(
        body(&next_where(&mut carol, is_message_with_body).await),
        "sync"
    );
    carol
        .write("<message to='alice@localhost/a' type='chat' id='mk'><body>marker</body></message>")
        .await;
    let first = alice.element().await;
    assert!(
        is_message_with_body(&first),
        "{}",
        corvid::xml::to_string(&first)
    );
    assert_eq!(body(&first), "marker");
    // And bob got nothing back for his presences: the next thing he sees is a reply to this.
    let pong = iq(
        &mut bob,
        "p",
        "<iq to='localhost' type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>",
    )
    .await;
    assert_eq!(pong.attr("type"), Some("result"));
}

#[tokio::test]
async fn blocking_a_subscribed_contact_hides_presence_and_unblocking_shows_it_again() {
    let t = TestServer::start().await;
    t.add_user("alice").await;
    t.add_user("bob").await;
    let mut item = RosterItem::new("bob@localhost");
    item.subscription = Subscription::Both;
    t.storage()
        .roster
        .put_roster_item(&account("alice"), &item, 100)
        .await
        .expect("roster");
    let mut item = RosterItem::new("alice@localhost");
    item.subscription = Subscription::Both;
    t.storage()
        .roster
        .put_roster_item(&account("bob"), &item, 100)
        .await
        .expect("roster");

    let mut alice = login(&t, "alice", "a").await;
    let mut bob = login(&t, "bob", "b").await;
    available(&mut bob, "bob@localhost/b").await;
    available(&mut alice, "alice@localhost/a").await;

    block(&mut alice, &["bob@localhost"]).await;
    let gone = next_where(&mut bob, |e| {
        e.name() == "presence"
            && e.attr("from") == Some("alice@localhost/a")
            && e.attr("type") == Some("unavailable")
    })
    .await;
    assert_eq!(gone.attr("type"), Some("unavailable"));

    // Unblocking shows Alice's current presence to Bob again.
    unblock(&mut alice, &["bob@localhost"]).await;
    let back = next_where(&mut bob, |e| {
        e.name() == "presence" && e.attr("from") == Some("alice@localhost/a")
    })
    .await;
    assert_eq!(back.attr("type"), None, "{back:?}");
}

#[tokio::test]
async fn blocking_is_advertised_on_the_server_and_the_account() {
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
        assert!(features.contains(&BLOCKING), "{to}: {features:?}");
    }
}

#[tokio::test]
async fn blocklist_survives_a_server_restart() {
    let first = TestServer::start().await;
    first.add_user("alice").await;
    first.add_user("bob").await;
    let db = first.db_path();
    {
        let mut alice = login(&first, "alice", "a").await;
        let r = block(&mut alice, &["bob@localhost"]).await;
        assert_eq!(r.attr("type"), Some("result"));
    }
    let TestServer { server, dir, .. } = first;
    server.shutdown().await;

    let url = format!("sqlite://{}", db.display());
    let second = TestServer::start_with(|c| c.storage.url = url).await;
    let mut alice = login(&second, "alice", "a").await;
    assert_eq!(blocklist(&mut alice).await, vec!["bob@localhost"]);
    let mut bob = login(&second, "bob", "b").await;
    bob.write("<message to='alice@localhost/a' type='chat' id='m'><body>hi</body></message>")
        .await;
    let error = next_where(&mut bob, |e| e.attr("id") == Some("m")).await;
    assert_eq!(
        error_condition(&error).as_deref(),
        Some("service-unavailable")
    );
    drop(dir);
}

#[tokio::test]
async fn blocking_on_postgres() {
    let Some((t, schema)) = start_on_postgres().await else {
        eprintln!("skipped: CORVID_TEST_POSTGRES not set");
        return;
    };
    t.add_user("alice").await;
    t.add_user("bob").await;
    let mut alice = login(&t, "alice", "a").await;
    let mut bob = login(&t, "bob", "b").await;
    let r = block(&mut alice, &["bob@localhost", "example.net"]).await;
    assert_eq!(r.attr("type"), Some("result"));
    assert_eq!(
        blocklist(&mut alice).await,
        vec!["bob@localhost", "example.net"]
    );
    bob.write("<message to='alice@localhost' type='chat' id='m'><body>hi</body></message>")
        .await;
    let error = next_where(&mut bob, |e| e.attr("id") == Some("m")).await;
    assert_eq!(
        error_condition(&error).as_deref(),
        Some("service-unavailable")
    );
    unblock(&mut alice, &[]).await;
    assert!(blocklist(&mut alice).await.is_empty());
    drop_schema(&schema).await;
}
