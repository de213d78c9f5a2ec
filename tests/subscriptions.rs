//! RFC 6121 Appendix A, row by row, over real sockets: two local users whose stored states
//! mirror each other (as they would after a history of real exchanges); the acting side sends
//! the subscription stanza, and the other side's stored state, roster pushes and delivered
//! stanzas are checked against the row.

mod common;

use common::xmpp::{is_roster_push, pushed_item, Session};
use common::{account, TestServer};
use corvid::modules::roster::table::{Direction, State, SubscriptionType, APPENDIX_A};
use std::sync::Arc;

use corvid::storage::{RosterItem, RosterStore, RosterWrite, Storage, StorageResult, Subscription};

const U: &str = "u@localhost";
const C: &str = "c@localhost";

/// The contact's view of the same relationship.
fn mirror(state: State) -> State {
    match state {
        State::None => State::None,
        State::NonePendingOut => State::NonePendingIn,
        State::NonePendingIn => State::NonePendingOut,
        State::NonePendingOutIn => State::NonePendingOutIn,
        State::To => State::From,
        State::ToPendingIn => State::FromPendingOut,
        State::From => State::To,
        State::FromPendingOut => State::ToPendingIn,
        State::Both => State::Both,
    }
}

async fn set_state(storage: &Storage, user: &str, contact: &str, state: State) {
    let user = &account(user);
    let roster = &storage.roster;
    roster
        .delete_roster_item(user, contact)
        .await
        .expect("reset item");
    roster
        .delete_pending_in(user, contact)
        .await
        .expect("reset pending");
    if state.subscription() != Subscription::None || state.pending_out() {
        let mut item = RosterItem::new(contact);
        item.subscription = state.subscription();
        item.ask = state.pending_out();
        roster
            .put_roster_item(user, &item, 100)
            .await
            .expect("item");
    }
    if state.pending_in() {
        let request = format!(
            "<presence xmlns='jabber:client' type='subscribe' from='{contact}' to='{user}@localhost'/>"
        );
        roster
            .put_pending_in(user, contact, &request)
            .await
            .expect("pending");
    }
}

async fn state_of(storage: &Storage, user: &str, contact: &str) -> State {
    let user = &account(user);
    let roster = &storage.roster;
    let item = roster.roster_item(user, contact).await.expect("item");
    let pending_in = roster.has_pending_in(user, contact).await.expect("pending");
    match item {
        Some(item) => State::of(item.subscription, item.ask, pending_in),
        None => State::of(Subscription::None, false, pending_in),
    }
}

fn item_view(state: State) -> (Subscription, bool) {
    (state.subscription(), state.pending_out())
}

#[tokio::test]
async fn appendix_a_every_row() {
    let server = TestServer::start().await;
    server.add_user("u").await;
    server.add_user("c").await;
    let storage = server.storage().clone();
    let mut u = Session::online(&server, "u", "r").await;
    let mut c = Session::online(&server, "c", "r").await;

    let mut failures = Vec::new();
    for (direction, kind, before, after) in APPENDIX_A {
        set_state(&storage, "u", C, before).await;
        set_state(&storage, "c", U, mirror(before)).await;
        let stanza = format!("<presence type='{}' to='{{to}}'/>", kind.as_str());
        let marker = Session::marker();
        // The actor sends the stanza, then a marker to u: whatever the stanza caused for u
        // arrives before the marker.
        match direction {
            Direction::Outbound => {
                u.send(&stanza.replace("{to}", C)).await;
                u.send_marker(&u.jid.clone(), &marker).await;
            }
            Direction::Inbound => {
                c.send(&stanza.replace("{to}", U)).await;
                c.send_marker(&u.jid.clone(), &marker).await;
            }
        }
        let received = u.until_marker(&marker).await;
        // Keep c's queue short; what c saw is c's own row, tested when c is "u".
        let _ = c.drain().await;

        let row = format!("{direction:?} {kind:?} {before:?}");
        let got = state_of(&storage, "u", C).await;
        if got != after {
            failures.push(format!("{row}: state {got:?}, expected {after:?}"));
        }
        let pushes: Vec<_> = received.iter().filter(|el| is_roster_push(el)).collect();
        // §3.4: approving before being asked records a pre-approval, which is pushed too.
        let pre_approval = direction == Direction::Outbound
            && kind == SubscriptionType::Subscribed
            && before == after
            && !before.subscription().contact_sees_user();
        let item_changed = item_view(before) != item_view(after) || pre_approval;
        let pushed = !pushes.is_empty();
        if item_changed != pushed {
            failures.push(format!(
                "{row}: {} roster pushes, item changed: {item_changed}",
                pushes.len()
            ));
        }
        if let Some(item) = pushes.last().and_then(|p| pushed_item(p)) {
            let sub = item.attr("subscription");
            let ask = item.attr("ask") == Some("subscribe");
            if sub != Some(after.subscription().as_str()) || ask != after.pending_out() {
                failures.push(format!("{row}: pushed {sub:?} ask={ask}"));
            }
        }
        if direction == Direction::Inbound {
            let delivered = received.iter().any(|el| {
                el.name() == "presence"
                    && el.attr("type") == Some(kind.as_str())
                    && el.attr("from") == Some(C)
            });
            // A.3: the stanza reaches the user exactly when it changed the state.
            if delivered != (before != after) {
                failures.push(format!("{row}: delivered {delivered}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "rows failing:\n{}",
        failures.join("\n")
    );
}

/// §3.4: a pre-approved request is granted without reaching the user, and the contact
/// learns it at once.
#[tokio::test]
async fn pre_approval_grants_without_asking() {
    let server = TestServer::start().await;
    server.add_user("u").await;
    server.add_user("c").await;
    let mut u = Session::online(&server, "u", "r").await;
    let mut c = Session::online(&server, "c", "r").await;

    u.send(&format!("<presence type='subscribed' to='{C}'/>"))
        .await;
    let seen = u.drain().await;
    let push = seen.iter().find(|el| is_roster_push(el)).expect("a push");
    let item = pushed_item(push).expect("item");
    assert_eq!(item.attr("approved"), Some("true"));
    assert_eq!(item.attr("subscription"), Some("none"));

    c.send(&format!("<presence type='subscribe' to='{U}'/>"))
        .await;
    let granted = c
        .expect(|el| el.name() == "presence" && el.attr("type") == Some("subscribed"))
        .await;
    assert_eq!(granted.attr("from"), Some(U));
    // c now sees u's presence, pushed to it right away (§3.1.5).
    c.expect(|el| {
        el.name() == "presence"
            && el.attr("from") == Some(u.jid.as_str())
            && el.attr("type").is_none()
    })
    .await;
    let seen = u.drain().await;
    assert!(
        !seen
            .iter()
            .any(|el| el.name() == "presence" && el.attr("type") == Some("subscribe")),
        "a pre-approved request must not be shown: {seen:?}"
    );
    let item = server
        .storage()
        .roster
        .roster_item(&account("u"), C)
        .await
        .expect("read")
        .expect("item");
    assert_eq!(item.subscription, Subscription::From);
    assert!(!item.approved, "the pre-approval is used up");
}

#[tokio::test]
async fn subscription_type_names_round_trip() {
    for kind in [
        SubscriptionType::Subscribe,
        SubscriptionType::Subscribed,
        SubscriptionType::Unsubscribe,
        SubscriptionType::Unsubscribed,
    ] {
        assert_eq!(SubscriptionType::parse(kind.as_str()), Some(kind));
    }
}

/// A roster store whose pending-request lookups are slow, so that two tasks handling the same
/// relationship both read it before either writes, every time.
struct SlowReads(Arc<dyn RosterStore>);

#[async_trait::async_trait]
impl RosterStore for SlowReads {
    async fn roster(&self, u: &str) -> StorageResult<(i64, Vec<RosterItem>)> {
        self.0.roster(u).await
    }
    async fn roster_version(&self, u: &str) -> StorageResult<i64> {
        self.0.roster_version(u).await
    }
    async fn roster_item(&self, u: &str, c: &str) -> StorageResult<Option<RosterItem>> {
        self.0.roster_item(u, c).await
    }
    async fn put_roster_item(&self, u: &str, i: &RosterItem, m: u32) -> StorageResult<RosterWrite> {
        self.0.put_roster_item(u, i, m).await
    }
    async fn delete_roster_item(&self, u: &str, c: &str) -> StorageResult<Option<i64>> {
        self.0.delete_roster_item(u, c).await
    }
    async fn put_pending_in(&self, u: &str, c: &str, s: &str) -> StorageResult<()> {
        self.0.put_pending_in(u, c, s).await
    }
    async fn delete_pending_in(&self, u: &str, c: &str) -> StorageResult<bool> {
        self.0.delete_pending_in(u, c).await
    }
    async fn has_pending_in(&self, u: &str, c: &str) -> StorageResult<bool> {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        self.0.has_pending_in(u, c).await
    }
    async fn pending_in(&self, u: &str) -> StorageResult<Vec<(String, String)>> {
        self.0.pending_in(u).await
    }
}

/// Both users asked each other, and both approve at the same moment: u's task approves
/// (outbound, on u's item) while c's approval arrives (inbound, on the same item). Each must
/// see the other's write, so both sides end up `both`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_approvals_do_not_lose_an_update() {
    let server = TestServer::start_custom(
        |_| {},
        |mut storage| {
            storage.roster = Arc::new(SlowReads(storage.roster));
            storage
        },
    )
    .await;
    server.add_user("u").await;
    server.add_user("c").await;
    let storage = server.storage().clone();
    set_state(&storage, "u", C, State::NonePendingOutIn).await;
    set_state(&storage, "c", U, State::NonePendingOutIn).await;
    let mut u = Session::online(&server, "u", "r").await;
    let mut c = Session::online(&server, "c", "r").await;

    u.send(&format!("<presence type='subscribed' to='{C}'/>"))
        .await;
    c.send(&format!("<presence type='subscribed' to='{U}'/>"))
        .await;
    let _ = tokio::join!(u.drain(), c.drain());
    let _ = tokio::join!(u.drain(), c.drain());

    assert_eq!(state_of(&storage, "u", C).await, State::Both);
    assert_eq!(state_of(&storage, "c", U).await, State::Both);
}
