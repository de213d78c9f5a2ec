//! XEP-0379 for accounts that exist already: a subscription request that carries
//! `<preauth token='…'/>` matching an unused invite of the user it asks is approved at once,
//! and the user asks for the contact's presence in return (§3.4 of the XEP has the user's
//! client do both; corvid issued the token, so corvid does it for every client of the user).
//! The token is used up and turned into an RFC 6121 §3.4 pre-approval just before the roster
//! sees the request, so the roster's own pre-approval path answers it (`subscribed`), exactly
//! as if the user had pre-approved the contact.

use std::sync::Arc;

use async_trait::async_trait;
use jid::{BareJid, Jid};
use minidom::Element;
use tracing::{debug, warn};

use crate::modules::roster::subscription::{self, subscription_stanza};
use crate::modules::roster::table::SubscriptionType;
use crate::registration::NS_PARS;
use crate::router::{Module, Priority, Registry, Router, StanzaFilter, Verdict};
use crate::storage::{RosterItem, RosterWrite};

pub struct Pars;

impl Module for Pars {
    fn name(&self) -> &'static str {
        "pars"
    }

    fn register(self: Arc<Self>, registry: &mut Registry) {
        // After blocking: a blocked contact's request goes no further, token or not.
        registry.stanza_filter(Priority::Profile, self);
    }
}

#[async_trait]
impl StanzaFilter for Pars {
    async fn inbound(
        &self,
        router: &Arc<Router>,
        to: &BareJid,
        from: &Jid,
        stanza: &Element,
    ) -> Verdict {
        if stanza.name() != "presence" || stanza.attr("type") != Some("subscribe") {
            return Verdict::Pass;
        }
        let Some(token) = stanza
            .get_child("preauth", NS_PARS)
            .and_then(|p| p.attr("token"))
        else {
            return Verdict::Pass;
        };
        pre_approve(router, to, &from.to_bare(), token).await;
        Verdict::Pass
    }
}

/// Uses `token` up for `contact` if it is an unused invite of `user`, and pre-approves
/// `contact`'s subscription.
async fn pre_approve(router: &Arc<Router>, user: &BareJid, contact: &BareJid, token: &str) {
    let storage = router.storage();
    let now = crate::ids::now_ms() as i64;
    let invite = match super::usable(storage, token, now).await {
        Ok(Ok(invite)) => invite,
        Ok(Err(why)) => {
            debug!(%user, %contact, %why, "preauth token not honoured");
            return;
        }
        Err(e) => {
            warn!(error = %e, "cannot look an invite up");
            return;
        }
    };
    if invite.inviter.as_deref() != Some(user.as_str()) {
        debug!(%user, %contact, "preauth token of someone else");
        return;
    }
    // An invite for a named account is that account's alone (XEP-0379 §5.2, "Identity").
    if let Some(name) = &invite.username {
        if contact.as_str() != format!("{name}@{}", invite.domain) {
            debug!(%user, %contact, "preauth token for another account");
            return;
        }
    }
    match storage
        .invites
        .consume_invite(token, contact.as_str(), now)
        .await
    {
        Ok(Some(_)) => {}
        Ok(None) => return,
        Err(e) => {
            warn!(error = %e, "cannot use an invite up");
            return;
        }
    }
    let mut item = match storage
        .roster
        .roster_item(user.as_str(), contact.as_str())
        .await
    {
        Ok(Some(item)) => item,
        Ok(None) => RosterItem::new(contact.to_string()),
        Err(e) => {
            warn!(error = %e, "cannot read a roster for a preauth token");
            return;
        }
    };
    item.approved = true;
    let cap = router
        .config()
        .account_limits(user.domain().as_str())
        .roster_items;
    match storage
        .roster
        .put_roster_item(user.as_str(), &item, cap)
        .await
    {
        Ok(RosterWrite::Stored(version)) => crate::modules::roster::push::push(
            router,
            user,
            version,
            crate::modules::roster::items::item_element(&item),
        ),
        Ok(RosterWrite::Full) => {
            warn!(%user, "roster full; preauth token not honoured");
            return;
        }
        Err(e) => {
            warn!(error = %e, "cannot store a pre-approval");
            return;
        }
    }
    // The mutual half: the user's own request, through the roster as if a client sent it.
    let request = subscription_stanza(user, contact, "subscribe");
    subscription::outbound(router, user, contact, SubscriptionType::Subscribe, &request).await;
}
