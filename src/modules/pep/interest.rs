//! Which nodes each available session wants notifications for (XEP-0163 §4.2), learned from the
//! caps in the presence it broadcasts, and the moments a session newly wants a node, which is
//! when it gets that node's last item (§4.3.3 and §4.3.4).
//!
//! A session's interests only grow from its own presence: an unknown `ver` is asked about
//! (disco#info with `node='node#ver'`) in a task of its own, never on the session's own
//! presence path, because the answer arrives on that same session.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dashmap::DashMap;
use jid::{BareJid, FullJid, Jid};
use minidom::Element;
use tracing::debug;

use super::caps::{self, CacheKey, Caps, CapsCache, NotifySet};
use super::{notify, PepState};
use crate::router::Router;
use crate::stanza;
use crate::xml::ns;

struct Session {
    caps: Option<Caps>,
    notify: NotifySet,
    /// Non-negative priority: XEP-0163 §4.3.2 sends nothing to other resources.
    eligible: bool,
    /// Caps queries to this session still unanswered.
    queries: u8,
}

impl Session {
    fn wanted(&self) -> impl Iterator<Item = &String> {
        self.notify.iter().filter(move |_| self.eligible)
    }
}

/// A client changing caps faster than it answers gets no more queries than this at a time:
/// its own interests suffer, nobody else's (an honest client has one at most).
const MAX_QUERIES_PER_SESSION: u8 = 2;

/// What a broadcast presence calls for.
enum Next {
    Nothing,
    /// The session newly wants these nodes: send their last items.
    Deliver(Vec<String>),
    /// The caps are new to us: ask the session what they mean.
    Resolve(Caps),
}

/// Sessions of other servers' users that sent presence to local accounts: the owners each
/// one watches (whose notifications it may get, and whose last items it gets once its caps
/// are known), by the remote user's bare JID.
#[derive(Default)]
struct RemoteSessions(DashMap<BareJid, HashMap<FullJid, HashSet<BareJid>>>);

impl RemoteSessions {
    /// `session` sent available presence to `owner`; true if it had not before.
    fn seen(&self, owner: &BareJid, session: &FullJid) -> bool {
        self.0
            .entry(session.to_bare())
            .or_default()
            .entry(session.clone())
            .or_default()
            .insert(owner.clone())
    }

    /// `session` told `owner` it is unavailable; true if it watches nobody any more.
    fn gone(&self, owner: &BareJid, session: &FullJid) -> bool {
        let bare = session.to_bare();
        let Some(mut sessions) = self.0.get_mut(&bare) else {
            return true;
        };
        let left = match sessions.get_mut(session) {
            Some(owners) => {
                owners.remove(owner);
                owners.len()
            }
            None => 0,
        };
        if left == 0 {
            sessions.remove(session);
        }
        let empty = sessions.is_empty();
        drop(sessions);
        if empty {
            self.0.remove_if(&bare, |_, sessions| sessions.is_empty());
        }
        left == 0
    }

    /// Forgets every session of `domain`'s users; returns them.
    fn forget_domain(&self, domain: &str) -> Vec<FullJid> {
        let mut gone = Vec::new();
        self.0.retain(|user, sessions| {
            if user.domain().as_str() != domain {
                return true;
            }
            gone.extend(sessions.keys().cloned());
            false
        });
        gone
    }

    fn owners(&self, session: &FullJid) -> Vec<BareJid> {
        self.0
            .get(&session.to_bare())
            .and_then(|sessions| sessions.get(session).map(|o| o.iter().cloned().collect()))
            .unwrap_or_default()
    }

    /// The sessions of the remote user `contact` that watch `owner`.
    fn watching(&self, contact: &BareJid, owner: &BareJid) -> Vec<FullJid> {
        self.0
            .get(contact)
            .map(|sessions| {
                sessions
                    .iter()
                    .filter(|(_, owners)| owners.contains(owner))
                    .map(|(jid, _)| jid.clone())
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[derive(Default)]
pub struct Interests {
    sessions: DashMap<FullJid, Session>,
    remote: RemoteSessions,
    cache: CapsCache,
    /// Caps being asked about, with the sessions waiting for the same answer: two sessions
    /// with one new ver cost one query.
    inflight: Mutex<HashMap<CacheKey, Vec<(FullJid, Caps)>>>,
}

impl Interests {
    /// True if the session has non-negative priority and asked for `node+notify`.
    pub fn wants(&self, jid: &FullJid, node: &str) -> bool {
        self.sessions
            .get(jid)
            .is_some_and(|s| s.eligible && s.notify.contains(node))
    }

    pub fn forget(&self, jid: &FullJid) {
        self.sessions.remove(jid);
    }

    /// The connection to `domain` was lost: what its users' sessions asked for, and whom they
    /// watch, is forgotten, as if each had sent unavailable. Walks every remote user once
    /// (losses are rare; presence, the frequent path, stays keyed by user). Returns how many
    /// sessions were forgotten.
    pub fn forget_domain(&self, domain: &str) -> usize {
        let mut gone = self.remote.forget_domain(domain);
        // Sessions known from their caps but no longer (or never) watching anyone here.
        self.sessions.retain(|jid, _| {
            if jid.domain().as_str() == domain {
                gone.push(jid.clone());
                return false;
            }
            true
        });
        gone.sort_unstable();
        gone.dedup();
        gone.len()
    }

    /// The local accounts a remote session sent presence to: whose last items it gets.
    pub fn remote_owners(&self, session: &FullJid) -> Vec<BareJid> {
        self.remote.owners(session)
    }

    /// The sessions of the remote user `contact` that sent presence to `owner`.
    pub fn remote_sessions(&self, contact: &BareJid, owner: &BareJid) -> Vec<FullJid> {
        self.remote.watching(contact, owner)
    }

    /// Every node the session asked to be notified of (none while its priority is negative).
    pub fn wanted_nodes(&self, jid: &FullJid) -> Vec<String> {
        self.sessions
            .get(jid)
            .map(|s| s.wanted().cloned().collect())
            .unwrap_or_default()
    }

    fn observe(&self, jid: &FullJid, caps: Option<Caps>, eligible: bool) -> Next {
        let mut session = self.sessions.entry(jid.clone()).or_insert_with(|| Session {
            caps: None,
            notify: NotifySet::default(),
            eligible: false,
            queries: 0,
        });
        let before: Vec<String> = session.wanted().cloned().collect();
        let same_caps = match (&session.caps, &caps) {
            (Some(old), Some(new)) => old.same_features(new),
            (None, None) => true,
            _ => false,
        };
        session.eligible = eligible;
        session.caps = caps.clone();
        if !same_caps {
            match caps.as_ref() {
                None => session.notify = NotifySet::default(),
                Some(caps) => match caps.key().and_then(|key| self.cache.get(&key)) {
                    Some(known) => session.notify = known,
                    // The old interests stay until the answer comes.
                    None => return Next::Resolve(caps.clone()),
                },
            }
        }
        let added: Vec<String> = session
            .wanted()
            .filter(|node| !before.contains(node))
            .cloned()
            .collect();
        if added.is_empty() {
            Next::Nothing
        } else {
            Next::Deliver(added)
        }
    }

    /// Sets what `caps` mean for `jid`, unless its presence has moved on to other caps (or it
    /// is gone). Returns the nodes it newly wants.
    fn apply(&self, jid: &FullJid, caps: &Caps, set: NotifySet) -> Vec<String> {
        let Some(mut session) = self.sessions.get_mut(jid) else {
            return Vec::new();
        };
        if !session.caps.as_ref().is_some_and(|c| c.same_features(caps)) {
            return Vec::new();
        }
        let before: Vec<String> = session.wanted().cloned().collect();
        session.notify = set;
        session
            .wanted()
            .filter(|node| !before.contains(node))
            .cloned()
            .collect()
    }

    /// Counts a query to `jid`; false if it is gone or already has too many unanswered.
    fn begin_query(&self, jid: &FullJid) -> bool {
        match self.sessions.get_mut(jid) {
            Some(mut session) if session.queries < MAX_QUERIES_PER_SESSION => {
                session.queries += 1;
                true
            }
            _ => false,
        }
    }

    fn end_query(&self, jid: &FullJid) {
        if let Some(mut session) = self.sessions.get_mut(jid) {
            session.queries = session.queries.saturating_sub(1);
        }
    }

    /// Registers `jid` as waiting for `key`; true if it is the one that must ask.
    fn join_inflight(&self, key: &CacheKey, jid: &FullJid, caps: &Caps) -> bool {
        let mut inflight = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
        match inflight.get_mut(key) {
            Some(waiting) => {
                waiting.push((jid.clone(), caps.clone()));
                false
            }
            None => {
                inflight.insert(key.clone(), Vec::new());
                true
            }
        }
    }

    /// The sessions that waited for the answer to `key`.
    fn finish_inflight(&self, key: &CacheKey) -> Vec<(FullJid, Caps)> {
        let mut inflight = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
        inflight.remove(key).unwrap_or_default()
    }
}

/// RFC 6121 §4.7.2.3: a missing or unreadable priority is 0.
fn priority_is_non_negative(presence: &Element) -> bool {
    presence
        .get_child("priority", ns::CLIENT)
        .and_then(|p| p.text().trim().parse::<i64>().ok())
        .is_none_or(|p| p >= 0)
}

/// Called after a local session broadcast presence.
pub fn on_presence(
    router: &Arc<Router>,
    state: &Arc<PepState>,
    from: &FullJid,
    presence: &Element,
) {
    match stanza::stanza_type(presence) {
        // The next available presence is an initial one again (§4.3.3).
        "unavailable" => state.interests.forget(from),
        "available" => {
            let caps = Caps::from_presence(presence);
            let eligible = priority_is_non_negative(presence);
            match state.interests.observe(from, caps, eligible) {
                Next::Nothing => {}
                Next::Deliver(nodes) => {
                    tokio::spawn(notify::send_last_items(
                        router.clone(),
                        state.clone(),
                        from.clone(),
                        nodes,
                    ));
                }
                Next::Resolve(caps) => {
                    tokio::spawn(resolve(router.clone(), state.clone(), from.clone(), caps));
                }
            }
        }
        _ => {}
    }
}

/// Called when presence from a remote session (`from`) reached the local account `owner`: its
/// interests are learned from its caps as a local session's are (the caps query goes over
/// s2s), and on its first presence to `owner` it gets `owner`'s last items (§4.3.3).
pub fn on_remote_presence(
    router: &Arc<Router>,
    state: &Arc<PepState>,
    owner: &BareJid,
    from: &FullJid,
    presence: &Element,
) {
    match stanza::stanza_type(presence) {
        "unavailable" if state.interests.remote.gone(owner, from) => {
            state.interests.forget(from);
        }
        "available" => {
            let new_to_owner = state.interests.remote.seen(owner, from);
            let caps = Caps::from_presence(presence);
            let eligible = priority_is_non_negative(presence);
            let next = state.interests.observe(from, caps, eligible);
            if new_to_owner {
                // Everything it wants now, from this owner; what the caps add later comes
                // with the answer, from every owner it watches.
                let nodes = state.interests.wanted_nodes(from);
                let (router, state, owner, from) =
                    (router.clone(), state.clone(), owner.clone(), from.clone());
                tokio::spawn(async move {
                    notify::send_last_items_from(&router, &state, owner, &from, &nodes).await;
                });
            }
            match next {
                Next::Nothing => {}
                Next::Deliver(nodes) => {
                    // The owner that is new to it had all it wants just now.
                    let owners: Vec<BareJid> = state
                        .interests
                        .remote_owners(from)
                        .into_iter()
                        .filter(|o| !(new_to_owner && o == owner))
                        .collect();
                    let (router, state, from) = (router.clone(), state.clone(), from.clone());
                    tokio::spawn(async move {
                        for owner in owners {
                            notify::send_last_items_from(&router, &state, owner, &from, &nodes)
                                .await;
                        }
                    });
                }
                Next::Resolve(caps) => {
                    tokio::spawn(resolve(router.clone(), state.clone(), from.clone(), caps));
                }
            }
        }
        _ => {}
    }
}

/// Finds out what `caps` mean for `jid`: from the cache, from a query already under way for
/// the same ver, or by asking.
async fn resolve(router: Arc<Router>, state: Arc<PepState>, jid: FullJid, caps: Caps) {
    let Some(key) = caps.key() else {
        learn(&router, &state, &jid, &caps, None).await;
        return;
    };
    if let Some(known) = state.interests.cache.get(&key) {
        let added = state.interests.apply(&jid, &caps, known);
        notify::send_last_items(router, state, jid, added).await;
        return;
    }
    if !state.interests.join_inflight(&key, &jid, &caps) {
        return;
    }
    let verified = learn(&router, &state, &jid, &caps, Some(&key)).await;
    for (waiter, waiter_caps) in state.interests.finish_inflight(&key) {
        match &verified {
            Some(set) => {
                let added = state.interests.apply(&waiter, &waiter_caps, set.clone());
                tokio::spawn(notify::send_last_items(
                    router.clone(),
                    state.clone(),
                    waiter,
                    added,
                ));
            }
            // The answer we got was not what the ver says: each waiter speaks for itself.
            None => {
                tokio::spawn(learn_alone(
                    router.clone(),
                    state.clone(),
                    waiter,
                    waiter_caps,
                ));
            }
        }
    }
}

async fn learn_alone(router: Arc<Router>, state: Arc<PepState>, jid: FullJid, caps: Caps) {
    let key = caps.key();
    learn(&router, &state, &jid, &caps, key.as_ref()).await;
}

/// Asks `jid`, applies its answer to it and sends the last items it now wants. A verified
/// answer is also cached and returned; any other answer counts for this session only (§5.4).
async fn learn(
    router: &Arc<Router>,
    state: &Arc<PepState>,
    jid: &FullJid,
    caps: &Caps,
    key: Option<&CacheKey>,
) -> Option<NotifySet> {
    let answer = ask(router, state, jid, caps).await;
    let set = answer.as_ref().map(caps::interests).unwrap_or_default();
    let verified = match (key, &answer) {
        (Some(key), Some(query)) => caps::verify(key, query),
        _ => false,
    };
    if let (true, Some(key)) = (verified, key) {
        let capacity = router.config().pep.caps_cache_size;
        state
            .interests
            .cache
            .insert(key.clone(), set.clone(), capacity);
    } else {
        debug!(%jid, ver = %caps.ver, "caps not verified; used for this session only");
    }
    let added = state.interests.apply(jid, caps, set.clone());
    notify::send_last_items(router.clone(), state.clone(), jid.clone(), added).await;
    verified.then_some(set)
}

/// The disco#info answer of `jid` for `node#ver`, if it gives one in time.
async fn ask(
    router: &Arc<Router>,
    state: &PepState,
    jid: &FullJid,
    caps: &Caps,
) -> Option<Element> {
    if !state.interests.begin_query(jid) {
        return None;
    }
    let mut query = Element::bare("query", ns::DISCO_INFO);
    stanza::set_attr(&mut query, "node", format!("{}#{}", caps.node, caps.ver));
    let mut iq = Element::bare("iq", ns::CLIENT);
    stanza::set_attr(&mut iq, "type", "get");
    iq.append_child(query);
    let timeout = Duration::from_secs(router.config().pep.caps_query_timeout_secs);
    let answer = router.request_iq(Jid::from(jid.clone()), iq, timeout).await;
    state.interests.end_query(jid);
    match answer {
        Ok(answer) if stanza::stanza_type(&answer) == "result" => {
            answer.get_child("query", ns::DISCO_INFO).cloned()
        }
        Ok(_) => None,
        Err(e) => {
            debug!(%jid, error = %e, "no caps answer");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(s: &str) -> FullJid {
        FullJid::new(s).expect("full jid")
    }

    fn bare(s: &str) -> BareJid {
        BareJid::new(s).expect("bare jid")
    }

    #[test]
    fn a_lost_domain_takes_its_sessions_and_nobody_else() {
        let interests = Interests::default();
        let alice = bare("alice@a.test");
        let bob = full("bob@b.test/phone");
        let carol = full("carol@c.test/pc");
        let local = full("alice@a.test/pc");
        for remote in [&bob, &carol] {
            assert!(interests.remote.seen(&alice, remote));
            interests.observe(remote, None, true);
        }
        interests.observe(&local, None, true);
        assert_eq!(interests.forget_domain("b.test"), 1);
        assert!(interests.remote_owners(&bob).is_empty());
        assert!(!interests.sessions.contains_key(&bob));
        assert_eq!(interests.remote_owners(&carol), vec![alice.clone()]);
        assert!(interests.sessions.contains_key(&carol));
        assert!(interests.sessions.contains_key(&local));
        assert_eq!(
            interests.forget_domain("b.test"),
            0,
            "nothing left the second time"
        );
    }
}
