//! XEP-0191 Blocking Command: each user keeps a list of blocked JIDs; the server answers
//! `<blocklist/>`, `<block/>` and `<unblock/>`, pushes changes to the user's resources that
//! fetched the list, and filters stanzas in both directions between the user and anything the
//! list matches.
//!
//! Matching (XEP-0191 §6, the RFC 6121/XEP-0016 JID rules): an item `user@domain/resource` or
//! `domain/resource` matches that exact JID; `user@domain` matches it with any resource;
//! `domain` matches the domain itself and every JID on it. The user's own account and the
//! server (a node-less JID of our domain) are never matched, whatever the list says.
//!
//! Lists are read on every routed stanza, so they live in a `UserCache` (empty lists too):
//! after a user's first lookup, filtering costs a map lookup and no query.

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use jid::{BareJid, FullJid, Jid};
use minidom::Element;
use tracing::warn;

use super::user_cache::{bare_str, Invalidation, UserCache};
use crate::router::{
    IqHandler, IqRequest, IqResult, IqType, Module, Priority, Registry, Router, SessionEnd,
    SessionHook, StanzaFilter, Verdict,
};
use crate::stanza::{self, Condition, ErrorType, Kind, StanzaError};
use crate::storage::{BlockWrite, StorageError, StorageResult};
use crate::xml::ns;

/// One user's blocked JIDs, normalized, as a set for O(1) matching.
#[derive(Debug, Default)]
pub struct Blocklist {
    items: HashSet<String>,
}

impl Blocklist {
    pub fn new(items: impl IntoIterator<Item = String>) -> Blocklist {
        Blocklist {
            items: items.into_iter().collect(),
        }
    }

    /// Whether `peer` is blocked. Borrows every candidate from `peer`: no allocation.
    pub fn matches(&self, peer: &Jid) -> bool {
        if self.items.is_empty() {
            return false;
        }
        // The JID itself covers full items, bare items for a bare peer, `domain/resource`
        // items and, for a domain peer, domain items.
        self.items.contains(peer.as_str())
            || (peer.resource().is_some() && self.items.contains(bare_str(peer)))
            || self.items.contains(peer.domain().as_str())
    }

    /// The items, sorted, for `<blocklist/>` results.
    pub fn sorted(&self) -> Vec<&str> {
        let mut items: Vec<&str> = self.items.iter().map(String::as_str).collect();
        items.sort_unstable();
        items
    }
}

/// The flag of sessions that fetched the blocklist and so get its pushes (XEP-0191 §3.3).
pub const INTERESTED: &str = "blocklist-interested";

pub struct Blocking {
    lists: UserCache<Arc<Blocklist>>,
}

/// The cluster topic on which a node says it changed a user's blocklist.
const CACHE_TOPIC: &str = "blocklist-written";

impl Default for Blocking {
    fn default() -> Self {
        Blocking {
            lists: UserCache::shared(CACHE_TOPIC),
        }
    }
}

impl Module for Blocking {
    fn name(&self) -> &'static str {
        "blocking"
    }

    fn register(self: Arc<Self>, registry: &mut Registry) {
        let this = self.clone();
        registry.cluster_topic(
            CACHE_TOPIC,
            Arc::new(Invalidation(Box::new(move |user| this.lists.forget(user)))),
        );
        registry.session_flag(INTERESTED);
        registry.account_iq(IqType::Get, ns::BLOCKING, "blocklist", self.clone());
        for payload in ["block", "unblock"] {
            registry.account_iq(IqType::Set, ns::BLOCKING, payload, self.clone());
        }
        registry.stanza_filter(Priority::Policy, self.clone());
        registry.session_hook(Priority::Policy, self);
        // Conversations looks for the feature on the server, other clients on the account.
        registry.server_feature(ns::BLOCKING);
        registry.account_feature(ns::BLOCKING);
    }
}

/// What the user asked for, parsed and validated before anything is stored.
enum Command {
    Get,
    Block(Vec<Jid>),
    /// An empty list means "unblock everything" (XEP-0191 §3.5).
    Unblock(Vec<Jid>),
}

/// The `<item jid=…/>` children, normalized. None of them may be malformed.
fn parse_items(payload: &Element) -> Result<Vec<Jid>, StanzaError> {
    payload
        .children()
        .filter(|child| child.is("item", ns::BLOCKING))
        .map(|item| {
            item.attr("jid")
                .and_then(|jid| Jid::new(jid).ok())
                .ok_or_else(StanzaError::jid_malformed)
        })
        .collect()
}

fn parse_command(request: &IqRequest) -> Result<Command, StanzaError> {
    let payload = request.payload();
    // The router hands over each payload only in the type it was registered for.
    match payload.name() {
        "blocklist" => Ok(Command::Get),
        "block" => {
            let items = parse_items(payload)?;
            if items.is_empty() {
                return Err(
                    StanzaError::bad_request().with_text("<block/> needs at least one item")
                );
            }
            Ok(Command::Block(items))
        }
        "unblock" => Ok(Command::Unblock(parse_items(payload)?)),
        _ => Err(StanzaError::bad_request()),
    }
}

/// Stanzas between a user and these are never filtered.
fn exempt(router: &Router, user: &str, peer: &Jid) -> bool {
    bare_str(peer) == user || (peer.node().is_none() && router.is_hosted(peer.domain().as_str()))
}

/// `<block>` or `<unblock>` with one `<item/>` per JID, for pushes.
fn payload_with_items<'a>(name: &str, jids: impl IntoIterator<Item = &'a str>) -> Element {
    let mut payload = Element::bare(name, ns::BLOCKING);
    for jid in jids {
        let mut item = Element::bare("item", ns::BLOCKING);
        stanza::set_attr(&mut item, "jid", jid);
        payload.append_child(item);
    }
    payload
}

fn storage_failure(e: StorageError) -> StanzaError {
    match e {
        // The account went away while its session was still up.
        StorageError::NotFound => StanzaError::service_unavailable(),
        e => {
            warn!(error = %e, "blocklist storage failed");
            StanzaError::storage_failure()
        }
    }
}

impl Blocking {
    /// The user's list, from memory after the first lookup.
    async fn list(&self, router: &Router, user: &str) -> StorageResult<Arc<Blocklist>> {
        self.lists
            .get_or_load(router, user, || async {
                let items = router.storage().blocklist.blocklist(user).await?;
                Ok(Arc::new(Blocklist::new(items)))
            })
            .await
    }

    /// Whether `user` blocked `peer`. Fails open on a storage error (logged): refusing every
    /// stanza of a user because the database hiccuped would be worse, and the next stanza
    /// tries again.
    async fn blocked(&self, router: &Router, user: &str, peer: &Jid) -> bool {
        if exempt(router, user, peer) {
            return false;
        }
        match self.list(router, user).await {
            Ok(list) => list.matches(peer),
            Err(e) => {
                warn!(error = %e, user, "loading a blocklist failed; not filtering");
                false
            }
        }
    }

    async fn handle(
        &self,
        router: &Arc<Router>,
        user: &BareJid,
        from: &Jid,
        command: Command,
    ) -> IqResult {
        if user.node().is_none() {
            return Err(StanzaError::service_unavailable());
        }
        match command {
            Command::Get => {
                let list = self
                    .list(router, user.as_str())
                    .await
                    .map_err(storage_failure)?;
                let interested = router.session_flag(INTERESTED);
                if let (Ok(full), Some(interested)) = (from.clone().try_into_full(), interested) {
                    router.set_session_flag(&full, interested, true);
                }
                Ok(Some(payload_with_items("blocklist", list.sorted())))
            }
            Command::Block(items) => {
                if let Some(own) = items.iter().find(|jid| bare_str(jid) == user.as_str()) {
                    return Err(
                        StanzaError::new(ErrorType::Modify, Condition::NotAcceptable)
                            .with_text(format!("{own} is your own account")),
                    );
                }
                let jids: Vec<String> = items.iter().map(|j| j.as_str().to_owned()).collect();
                let cap = router
                    .config()
                    .account_limits(user.domain().as_str())
                    .blocklist_items;
                {
                    let guard = self.lists.write_lock().await;
                    let written = router
                        .storage()
                        .blocklist
                        .block(user.as_str(), &jids, cap)
                        .await
                        .map_err(storage_failure)?;
                    if written == BlockWrite::Full {
                        return Err(StanzaError::not_acceptable()
                            .with_text(format!("a blocklist holds at most {cap} JIDs")));
                    }
                    self.reload(router, &guard, user).await?;
                }
                self.push(
                    router,
                    user,
                    payload_with_items("block", jids.iter().map(String::as_str)),
                );
                self.announce_unavailable(router, user, &items).await;
                Ok(None)
            }
            Command::Unblock(items) => {
                let jids: Vec<String> = items.iter().map(|j| j.as_str().to_owned()).collect();
                let before = self
                    .list(router, user.as_str())
                    .await
                    .map_err(storage_failure)?;
                {
                    let guard = self.lists.write_lock().await;
                    let store = &router.storage().blocklist;
                    let removed = if jids.is_empty() {
                        store.unblock_all(user.as_str()).await
                    } else {
                        store.unblock(user.as_str(), &jids).await
                    };
                    removed.map_err(storage_failure)?;
                    self.reload(router, &guard, user).await?;
                }
                self.push(
                    router,
                    user,
                    payload_with_items("unblock", jids.iter().map(String::as_str)),
                );
                self.announce_available(router, user, &before).await;
                Ok(None)
            }
        }
    }

    /// Re-reads the committed list and publishes it to the cache.
    async fn reload(
        &self,
        router: &Router,
        guard: &tokio::sync::MutexGuard<'_, ()>,
        user: &BareJid,
    ) -> Result<(), StanzaError> {
        let items = router
            .storage()
            .blocklist
            .blocklist(user.as_str())
            .await
            .map_err(storage_failure)?;
        self.lists
            .publish(
                guard,
                router,
                user.as_str(),
                Arc::new(Blocklist::new(items)),
            )
            .await;
        Ok(())
    }

    /// Sends the change to every resource of the user that fetched the list.
    fn push(&self, router: &Router, user: &BareJid, payload: Element) {
        let Some(interested) = router.session_flag(INTERESTED) else {
            return;
        };
        for resource in router.resources_with_flag(user, interested) {
            let mut iq = Element::bare("iq", ns::CLIENT);
            stanza::set_attr(&mut iq, "type", "set");
            stanza::set_attr(
                &mut iq,
                "id",
                format!("block-push-{}", router.ids().next_id()),
            );
            stanza::set_attr(&mut iq, "to", resource.to_string());
            iq.append_child(payload.clone());
            let _ = router.deliver_to_session(&resource, iq);
        }
    }

    /// XEP-0191 §3.3: a newly blocked contact that could see the user's presence gets
    /// unavailable presence from each of the user's available resources, so the user appears
    /// offline to it. "Could see" is read from the roster (subscription from/both); contacts
    /// that only got directed presence are not tracked yet.
    async fn announce_unavailable(&self, router: &Arc<Router>, user: &BareJid, blocked: &[Jid]) {
        let resources = router.available_resources(user);
        if resources.is_empty() {
            return;
        }
        let roster = match router.storage().roster.roster(user.as_str()).await {
            Ok((_, items)) => items,
            Err(e) => {
                warn!(error = %e, "reading the roster after a block failed");
                return;
            }
        };
        let watchers: Vec<Jid> = roster
            .into_iter()
            .filter(|item| item.subscription.contact_sees_user())
            .filter_map(|item| Jid::new(&item.contact).ok())
            .collect();
        let list = Blocklist::new(blocked.iter().map(|j| j.as_str().to_owned()));
        let mut targets: Vec<Jid> = Vec::new();
        for watcher in &watchers {
            if list.matches(watcher) {
                targets.push(watcher.clone());
            }
        }
        // A full-JID item only names one resource of a watcher: tell that resource.
        for item in blocked
            .iter()
            .filter(|j| j.resource().is_some() && j.node().is_some())
        {
            if watchers.iter().any(|w| w.as_str() == bare_str(item)) {
                targets.push(item.clone());
            }
        }
        for target in targets {
            for (resource, _) in &resources {
                let mut presence = Element::bare("presence", ns::CLIENT);
                stanza::set_attr(&mut presence, "type", "unavailable");
                stanza::set_attr(&mut presence, "from", resource.to_string());
                stanza::set_attr(&mut presence, "to", target.to_string());
                // Straight to the router: the user's own outbound filter would now drop it.
                router.route(Kind::Presence, target.clone(), presence).await;
            }
        }
    }
}

impl Blocking {
    /// The reverse of `announce_unavailable`: a contact subscribed to the user's presence that
    /// `before` blocked and the list now lets through sees the user's current presence again.
    /// The presence module answers it as it answers a probe from that contact, so only what
    /// the contact is entitled to see goes out.
    async fn announce_available(&self, router: &Arc<Router>, user: &BareJid, before: &Blocklist) {
        if router.available_resources(user).is_empty() {
            return;
        }
        let roster = match router.storage().roster.roster(user.as_str()).await {
            Ok((_, items)) => items,
            Err(e) => {
                warn!(error = %e, "reading the roster after an unblock failed");
                return;
            }
        };
        for item in roster
            .iter()
            .filter(|item| item.subscription.contact_sees_user())
        {
            let Ok(watcher) = Jid::new(&item.contact) else {
                continue;
            };
            if !before.matches(&watcher) || self.blocked(router, user.as_str(), &watcher).await {
                continue;
            }
            let mut probe = Element::bare("presence", ns::CLIENT);
            stanza::set_attr(&mut probe, "type", "probe");
            stanza::set_attr(&mut probe, "from", item.contact.clone());
            stanza::set_attr(&mut probe, "to", user.to_string());
            router
                .route(Kind::Presence, Jid::from(user.clone()), probe)
                .await;
        }
    }
}

/// XEP-0191 §3.3 stanzas from a blocked entity: presence silently dropped; messages and IQ
/// get/set answered with `<service-unavailable/>` (the user looks offline); anything else
/// (IQ results, errors) dropped.
fn inbound_verdict(stanza: &Element) -> Verdict {
    match (Kind::of(stanza), stanza::stanza_type(stanza)) {
        (_, "error") | (Some(Kind::Presence), _) | (None, _) => Verdict::Drop,
        (Some(Kind::Message), _) | (Some(Kind::Iq), "get" | "set") => {
            Verdict::Reject(StanzaError::service_unavailable())
        }
        (Some(Kind::Iq), _) => Verdict::Drop,
    }
}

/// XEP-0191 §3.3 stanzas from the user to a blocked entity: messages and IQ get/set refused
/// with `<not-acceptable/>` plus `<blocked/>`; presence and IQ results dropped.
fn outbound_verdict(stanza: &Element) -> Verdict {
    match (Kind::of(stanza), stanza::stanza_type(stanza)) {
        (_, "error") | (Some(Kind::Presence), _) | (None, _) => Verdict::Drop,
        (Some(Kind::Message), _) | (Some(Kind::Iq), "get" | "set") => Verdict::Reject(
            StanzaError::new(ErrorType::Cancel, Condition::NotAcceptable)
                .with_app_condition(Element::bare("blocked", ns::BLOCKING_ERRORS)),
        ),
        (Some(Kind::Iq), _) => Verdict::Drop,
    }
}

#[async_trait]
impl StanzaFilter for Blocking {
    async fn outbound(
        &self,
        router: &Arc<Router>,
        from: &Jid,
        to: &Jid,
        stanza: &Element,
    ) -> Verdict {
        if self.blocked(router, bare_str(from), to).await {
            outbound_verdict(stanza)
        } else {
            Verdict::Pass
        }
    }

    async fn inbound(
        &self,
        router: &Arc<Router>,
        to: &BareJid,
        from: &Jid,
        stanza: &Element,
    ) -> Verdict {
        if self.blocked(router, to.as_str(), from).await {
            inbound_verdict(stanza)
        } else {
            Verdict::Pass
        }
    }
}

#[async_trait]
impl IqHandler for Blocking {
    /// Only the user manages (or sees) their own list; to others it does not exist.
    fn authorize(&self, request: &IqRequest) -> Result<(), StanzaError> {
        match &request.account {
            Some(user) if bare_str(&request.from) == user.as_str() => Ok(()),
            _ => Err(StanzaError::service_unavailable()),
        }
    }

    async fn handle_iq(&self, router: &Arc<Router>, request: IqRequest) -> IqResult {
        let user = request
            .account
            .clone()
            .ok_or_else(StanzaError::service_unavailable)?;
        let command = parse_command(&request)?;
        self.handle(router, &user, &request.from, command).await
    }
}

#[async_trait]
impl SessionHook for Blocking {
    async fn ended(
        &self,
        router: &Arc<Router>,
        session: &FullJid,
        _was_available: bool,
        _why: SessionEnd,
    ) {
        let user = session.to_bare();
        if !router.has_sessions(&user) {
            self.lists.forget(user.as_str());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(items: &[&str]) -> Blocklist {
        Blocklist::new(items.iter().map(|s| s.to_string()))
    }

    fn jid(s: &str) -> Jid {
        Jid::new(s).unwrap()
    }

    #[test]
    fn matching_follows_the_jid_rules() {
        let bare = list(&["romeo@example.net"]);
        assert!(bare.matches(&jid("romeo@example.net")));
        assert!(bare.matches(&jid("romeo@example.net/orchard")));
        assert!(!bare.matches(&jid("juliet@example.net")));
        assert!(!bare.matches(&jid("example.net")));

        let full = list(&["romeo@example.net/orchard"]);
        assert!(full.matches(&jid("romeo@example.net/orchard")));
        assert!(!full.matches(&jid("romeo@example.net/balcony")));
        assert!(!full.matches(&jid("romeo@example.net")));

        let domain = list(&["example.net"]);
        assert!(domain.matches(&jid("example.net")));
        assert!(domain.matches(&jid("example.net/service")));
        assert!(domain.matches(&jid("anyone@example.net/r")));
        assert!(!domain.matches(&jid("anyone@example.org")));
        assert!(!domain.matches(&jid("sub.example.net")));

        let domain_resource = list(&["example.net/bot"]);
        assert!(domain_resource.matches(&jid("example.net/bot")));
        assert!(!domain_resource.matches(&jid("example.net")));
        assert!(!domain_resource.matches(&jid("user@example.net/bot")));

        assert!(!Blocklist::default().matches(&jid("a@b")));
    }

    #[test]
    fn items_are_normalized_so_case_does_not_evade_a_block() {
        let payload: Element =
            "<block xmlns='urn:xmpp:blocking'><item jid='Romeo@Example.NET/Orchard'/></block>"
                .parse()
                .unwrap();
        let items = parse_items(&payload).unwrap();
        let list = Blocklist::new(items.iter().map(|j| j.as_str().to_owned()));
        assert!(list.matches(&jid("romeo@example.net/Orchard")));
    }

    #[test]
    fn verdicts_follow_xep_0191() {
        let el = |s: &str| -> Element { s.parse().unwrap() };
        let message = el("<message xmlns='jabber:client' type='chat'/>");
        let presence = el("<presence xmlns='jabber:client' type='subscribe'/>");
        let get = el("<iq xmlns='jabber:client' type='get'/>");
        let result = el("<iq xmlns='jabber:client' type='result'/>");
        let error = el("<message xmlns='jabber:client' type='error'/>");
        assert!(matches!(inbound_verdict(&presence), Verdict::Drop));
        assert!(matches!(inbound_verdict(&result), Verdict::Drop));
        assert!(matches!(inbound_verdict(&error), Verdict::Drop));
        assert!(matches!(
            inbound_verdict(&message),
            Verdict::Reject(StanzaError {
                condition: Condition::ServiceUnavailable,
                ..
            })
        ));
        assert!(matches!(
            inbound_verdict(&get),
            Verdict::Reject(StanzaError {
                condition: Condition::ServiceUnavailable,
                ..
            })
        ));
        assert!(matches!(outbound_verdict(&presence), Verdict::Drop));
        assert!(matches!(outbound_verdict(&result), Verdict::Drop));
        match outbound_verdict(&message) {
            Verdict::Reject(e) => {
                assert_eq!(e.condition, Condition::NotAcceptable);
                assert_eq!(e.kind, ErrorType::Cancel);
                assert!(e
                    .app_condition
                    .as_deref()
                    .is_some_and(|c| c.is("blocked", ns::BLOCKING_ERRORS)));
            }
            other => panic!("{other:?}"),
        }
    }
}
