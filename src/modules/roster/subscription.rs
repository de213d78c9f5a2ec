//! Subscription stanzas (RFC 6121 §3) applied to stored roster state through the Appendix A
//! table, plus pre-approval (§3.4). Both sides of a local-to-local subscription run here: the
//! sender's outbound processing routes the stanza, and the recipient's inbound processing
//! picks it up from the router.

use std::sync::Arc;

use jid::{BareJid, Jid};
use minidom::Element;
use tracing::warn;

use super::items;
use super::locks;
use super::push;
use super::table::{transition, Direction, State, SubscriptionType};
use crate::router::Router;
use crate::stanza::{self, Condition, ErrorType, StanzaError};
use crate::storage::{RosterItem, RosterWrite, StorageResult, Subscription};
use crate::xml::{self, ns};

/// What the presence module still has to do after an outbound subscription stanza.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// The contact may now see the user's presence: send it the current presence (§3.1.5).
    pub presence_granted: bool,
}

/// `<presence type=… from=user to=contact/>`, both bare as §3.1.2 requires.
pub fn subscription_stanza(user: &BareJid, contact: &BareJid, kind: &str) -> Element {
    let mut presence = Element::bare("presence", ns::CLIENT);
    stanza::set_attr(&mut presence, "from", user.to_string());
    stanza::set_attr(&mut presence, "to", contact.to_string());
    stanza::set_attr(&mut presence, "type", kind);
    presence
}

/// Unavailable presence from each available resource of `user` to `contact`, once the
/// contact may no longer see it.
pub async fn send_unavailable(router: &Arc<Router>, user: &BareJid, contact: &BareJid) {
    for (resource, _) in router.available_resources(user) {
        let mut presence = Element::bare("presence", ns::CLIENT);
        stanza::set_attr(&mut presence, "from", resource.to_string());
        stanza::set_attr(&mut presence, "to", contact.to_string());
        stanza::set_attr(&mut presence, "type", "unavailable");
        router
            .route_from_user(&Jid::from(resource), Jid::from(contact.clone()), presence)
            .await;
    }
}

/// One relationship as stored on the local user's side: `contact` in `user`'s roster, and
/// whether a request from `contact` waits.
struct Relation<'a> {
    user: &'a BareJid,
    contact: String,
    item: Option<RosterItem>,
    pending_in: bool,
}

enum Saved {
    Unchanged,
    Pushed,
    Full,
}

impl<'a> Relation<'a> {
    async fn load(
        router: &Router,
        user: &'a BareJid,
        contact: &BareJid,
    ) -> StorageResult<Relation<'a>> {
        let store = &router.storage().roster;
        let contact = contact.to_string();
        Ok(Relation {
            item: store.roster_item(user.as_str(), &contact).await?,
            pending_in: store.has_pending_in(user.as_str(), &contact).await?,
            user,
            contact,
        })
    }

    fn state(&self) -> State {
        match &self.item {
            Some(item) => State::of(item.subscription, item.ask, self.pending_in),
            None => State::of(Subscription::None, false, self.pending_in),
        }
    }

    fn approved(&self) -> bool {
        self.item.as_ref().is_some_and(|i| i.approved)
    }

    /// Writes `after` (and the pre-approval flag); pushes the item if it changed. An item is
    /// created only when the new state has something to show (a subscription or a pending
    /// outbound request) or carries a pre-approval; Pending In alone lives in its own table,
    /// since the RFC keeps such requests out of the roster until answered.
    async fn save(
        &self,
        router: &Router,
        after: State,
        approved: bool,
        request: Option<&Element>,
    ) -> StorageResult<Saved> {
        let store = &router.storage().roster;
        let before = self.state();
        if before.pending_in() && !after.pending_in() {
            store
                .delete_pending_in(self.user.as_str(), &self.contact)
                .await?;
        }
        if !before.pending_in() && after.pending_in() {
            if let Some(request) = request {
                store
                    .put_pending_in(self.user.as_str(), &self.contact, &xml::to_string(request))
                    .await?;
            }
        }
        let worth_an_item =
            after.subscription() != Subscription::None || after.pending_out() || approved;
        let mut item = match &self.item {
            Some(existing) => existing.clone(),
            None if worth_an_item => RosterItem::new(self.contact.clone()),
            None => return Ok(Saved::Unchanged),
        };
        item.subscription = after.subscription();
        item.ask = after.pending_out();
        item.approved = approved;
        if self.item.as_ref() == Some(&item) {
            return Ok(Saved::Unchanged);
        }
        let cap = router
            .config()
            .account_limits(self.user.domain().as_str())
            .roster_items;
        match store
            .put_roster_item(self.user.as_str(), &item, cap)
            .await?
        {
            RosterWrite::Stored(version) => {
                push::push(router, self.user, version, items::item_element(&item));
                Ok(Saved::Pushed)
            }
            RosterWrite::Full => Ok(Saved::Full),
        }
    }

    /// `save` for inbound stanzas, which have nobody to report a failure to.
    async fn save_or_log(
        &self,
        router: &Router,
        after: State,
        approved: bool,
        request: Option<&Element>,
    ) -> bool {
        match self.save(router, after, approved, request).await {
            Ok(Saved::Full) => false,
            Ok(_) => true,
            Err(e) => {
                warn!(error = %e, "writing roster state failed");
                false
            }
        }
    }
}

/// The user sent a subscription stanza to `contact` (Appendix A.2, §3.4).
pub async fn outbound(
    router: &Arc<Router>,
    user: &BareJid,
    contact: &BareJid,
    kind: SubscriptionType,
    original: &Element,
) -> Outcome {
    let guard = locks::lock(&user.to_string(), contact.as_str()).await;
    let stored = match Relation::load(router, user, contact).await {
        Ok(stored) => stored,
        Err(e) => {
            warn!(error = %e, "reading roster state failed");
            router.bounce(original, StanzaError::storage_failure());
            return Outcome::default();
        }
    };
    let before = stored.state();
    let after = transition(Direction::Outbound, kind, before);
    let mut approved = stored.approved();
    let mut route = match kind {
        SubscriptionType::Subscribed => after != before,
        _ => true,
    };
    match kind {
        // §3.4.1: approving a request that has not arrived yet records a pre-approval
        // instead of sending anything.
        SubscriptionType::Subscribed
            if after == before && !before.subscription().contact_sees_user() =>
        {
            approved = true;
            route = false;
        }
        SubscriptionType::Subscribed => approved = false,
        // §3.4: "unsubscribed" also withdraws a pre-approval.
        SubscriptionType::Unsubscribed => approved = false,
        _ => {}
    }
    match stored.save(router, after, approved, None).await {
        Ok(Saved::Full) => {
            let error = StanzaError::new(ErrorType::Wait, Condition::ResourceConstraint)
                .with_text("the roster is full");
            router.bounce(original, error);
            return Outcome::default();
        }
        Ok(_) => {}
        Err(e) => {
            warn!(error = %e, "writing roster state failed");
            router.bounce(original, StanzaError::storage_failure());
            return Outcome::default();
        }
    }
    drop(guard);
    if route {
        let mut stanza = original.clone();
        stanza::set_attr(&mut stanza, "from", user.to_string());
        stanza::set_attr(&mut stanza, "to", contact.to_string());
        router
            .route_from_user(&Jid::from(user.clone()), Jid::from(contact.clone()), stanza)
            .await;
    }
    let had = before.subscription().contact_sees_user();
    let has = after.subscription().contact_sees_user();
    if had && !has {
        send_unavailable(router, user, contact).await;
    }
    Outcome {
        presence_granted: !had && has,
    }
}

/// `contact` sent a subscription stanza to the local `user` (Appendix A.3, §3.4.2).
pub async fn inbound(
    router: &Arc<Router>,
    user: &BareJid,
    contact: &BareJid,
    kind: SubscriptionType,
    mut stanza: Element,
) -> Outcome {
    let username = user.to_string();
    match router.storage().accounts.account_exists(&username).await {
        Ok(true) => {}
        Ok(false) => {
            // §3.1.3: a request to nobody is answered as if refused.
            if kind == SubscriptionType::Subscribe {
                let refusal = subscription_stanza(user, contact, "unsubscribed");
                router
                    .route(
                        crate::stanza::Kind::Presence,
                        Jid::from(contact.clone()),
                        refusal,
                    )
                    .await;
            }
            return Outcome::default();
        }
        Err(e) => {
            warn!(error = %e, "account lookup failed");
            return Outcome::default();
        }
    }
    // The request is delivered bare-addressed, from the contact's bare JID (§3.1.3).
    stanza::set_attr(&mut stanza, "from", contact.to_string());
    stanza::set_attr(&mut stanza, "to", user.to_string());
    let effect = {
        let _guard = locks::lock(&username, contact.as_str()).await;
        apply_inbound(router, user, contact, kind, &stanza).await
    };
    match effect {
        InboundEffect::None => {}
        InboundEffect::AnswerSubscribed => {
            auto_reply(router, user, contact, "subscribed").await;
        }
        InboundEffect::PreApproved => {
            auto_reply(router, user, contact, "subscribed").await;
            return Outcome {
                presence_granted: true,
            };
        }
        InboundEffect::Deliver { revoked } => {
            router.deliver_presence(user, None, stanza);
            if revoked {
                send_unavailable(router, user, contact).await;
            }
        }
    }
    Outcome::default()
}

/// What an inbound subscription stanza leads to once the stored state has been updated.
enum InboundEffect {
    /// Dropped: it changed nothing (§3.2–3.3), or storing it failed.
    None,
    /// The contact is already subscribed: answer for the user (§3.1.3).
    AnswerSubscribed,
    /// A pre-approved request was granted (§3.4.2): answer and show the user's presence.
    PreApproved,
    /// Show the stanza to the user; `revoked`: the contact may no longer see the user.
    Deliver { revoked: bool },
}

/// Reads, updates and writes the relationship; runs under its lock, so it only decides and
/// stores, and leaves every stanza to the caller.
async fn apply_inbound(
    router: &Arc<Router>,
    user: &BareJid,
    contact: &BareJid,
    kind: SubscriptionType,
    stanza: &Element,
) -> InboundEffect {
    let stored = match Relation::load(router, user, contact).await {
        Ok(stored) => stored,
        Err(e) => {
            warn!(error = %e, "reading roster state failed");
            return InboundEffect::None;
        }
    };
    let before = stored.state();
    let after = transition(Direction::Inbound, kind, before);
    if kind == SubscriptionType::Subscribe {
        if before.subscription().contact_sees_user() {
            return InboundEffect::AnswerSubscribed;
        }
        if stored.approved() {
            let granted = transition(Direction::Outbound, SubscriptionType::Subscribed, after);
            if stored.save_or_log(router, granted, false, None).await {
                return InboundEffect::PreApproved;
            }
            return InboundEffect::None;
        }
        if after == before || !pending_room(router, stored.user).await {
            return InboundEffect::None;
        }
        if stored.save_or_log(router, after, false, Some(stanza)).await {
            return InboundEffect::Deliver { revoked: false };
        }
        return InboundEffect::None;
    }
    if after == before {
        return InboundEffect::None;
    }
    if stored
        .save_or_log(router, after, stored.approved(), None)
        .await
    {
        let revoked =
            before.subscription().contact_sees_user() && !after.subscription().contact_sees_user();
        return InboundEffect::Deliver { revoked };
    }
    InboundEffect::None
}

/// Stored requests from strangers count against the roster cap, so nobody can fill a user's
/// storage by sending requests from many addresses.
async fn pending_room(router: &Router, user: &BareJid) -> bool {
    let store = &router.storage().roster;
    let cap = router
        .config()
        .account_limits(user.domain().as_str())
        .roster_items as usize;
    match store.pending_in(user.as_str()).await {
        Ok(pending) => pending.len() < cap,
        Err(e) => {
            warn!(error = %e, "reading pending requests failed");
            false
        }
    }
}

async fn auto_reply(router: &Arc<Router>, user: &BareJid, contact: &BareJid, kind: &str) {
    let reply = subscription_stanza(user, contact, kind);
    router
        .route_from_user(&Jid::from(user.clone()), Jid::from(contact.clone()), reply)
        .await;
}
