//! XEP-0160 offline messages: a chat or normal message for a user with no available resource
//! is stored (with a XEP-0203 delay stamp) and delivered, oldest first, when the user next
//! becomes available. A full store answers the sender with `<service-unavailable/>`.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{SecondsFormat, TimeZone, Utc};
use jid::{BareJid, FullJid};
use minidom::Element;
use tracing::warn;

use crate::ids::IdGenerator;
use crate::router::{Module, Priority, Registry, Router, SessionHook, UndeliverableMessage};
use crate::stanza::{self, StanzaError};
use crate::storage::{OfflineMessage, OfflinePush};
use crate::xml::{self, ns};

/// Storing a user's message and flushing the user's stored messages take the same lock, so
/// a message stored while its recipient comes online is either seen by that flush or, if
/// the flush already began, delivered at once instead of stored (where it would wait for the
/// next login).
pub struct Offline {
    locks: Vec<tokio::sync::Mutex<()>>,
}

/// Striped per-user locks: enough stripes that users rarely share one.
const LOCK_STRIPES: usize = 64;

impl Default for Offline {
    fn default() -> Self {
        Offline {
            locks: (0..LOCK_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
        }
    }
}

impl Offline {
    fn lock_for(&self, username: &str) -> &tokio::sync::Mutex<()> {
        use std::hash::{BuildHasher, BuildHasherDefault};
        let hash = BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
            .hash_one(username);
        &self.locks[(hash as usize) % self.locks.len()]
    }
}

impl Module for Offline {
    fn name(&self) -> &'static str {
        "offline"
    }

    fn register(self: Arc<Self>, registry: &mut Registry) {
        registry.undeliverable_message(self.clone());
        registry.session_hook(Priority::Offline, self);
        registry.server_feature(ns::OFFLINE);
    }
}

/// Chat states alone are not worth waking a user up for (XEP-0085 §5.4), and a sender may ask
/// us not to store (XEP-0334 `<no-store/>`).
fn worth_storing(message: &Element) -> bool {
    if message.has_child("no-store", ns::HINTS) {
        return false;
    }
    message
        .children()
        .any(|child| child.ns() != ns::CHATSTATES && child.ns() != ns::HINTS)
}

/// `server`: the recipient's domain, which held the message (XEP-0203 §3).
fn delay_stamp(server: &str, received_at_ms: i64) -> Element {
    let stamp = Utc
        .timestamp_millis_opt(received_at_ms)
        .single()
        .unwrap_or_else(Utc::now)
        .to_rfc3339_opts(SecondsFormat::Millis, true);
    let mut delay = Element::bare("delay", ns::DELAY);
    stanza::set_attr(&mut delay, "from", server);
    stanza::set_attr(&mut delay, "stamp", stamp);
    delay.append_text("Offline Storage");
    delay
}

#[async_trait]
impl UndeliverableMessage for Offline {
    async fn store(
        &self,
        router: &Arc<Router>,
        to: &BareJid,
        message: &Element,
    ) -> Result<(), StanzaError> {
        if to.node().is_none() {
            return Err(StanzaError::service_unavailable());
        }
        if !worth_storing(message) {
            return Ok(());
        }
        let _guard = self.lock_for(to.as_str()).lock().await;
        // The recipient may have become available since the router looked (but while the
        // server shuts down, no session will write anything any more).
        let reachable: Vec<FullJid> = router
            .available_resources(to)
            .into_iter()
            .filter(|_| !router.is_shutting_down())
            .filter(|(_, priority)| *priority >= 0)
            .map(|(jid, _)| jid)
            .collect();
        let mut delivered = false;
        for session in &reachable {
            delivered |= router.deliver_to_session(session, message.clone()).is_ok();
        }
        if delivered {
            return Ok(());
        }
        let id = router.ids().next_id();
        let received_at_ms = IdGenerator::timestamp_ms(id);
        let mut stored = message.clone();
        stored.append_child(delay_stamp(to.domain().as_str(), received_at_ms));
        let record = OfflineMessage {
            id,
            received_at_ms,
            stanza: xml::to_string(&stored),
        };
        let cap = router
            .config()
            .account_limits(to.domain().as_str())
            .offline_messages_per_user;
        match router
            .storage()
            .offline
            .push(to.as_str(), &record, cap)
            .await
        {
            Ok(OfflinePush::Stored) => Ok(()),
            Ok(OfflinePush::Full) => Err(StanzaError::service_unavailable()
                .with_text("the recipient's offline message storage is full")),
            Err(e) => {
                warn!(error = %e, "storing an offline message failed");
                Err(StanzaError::storage_failure())
            }
        }
    }
}

#[async_trait]
impl SessionHook for Offline {
    async fn became_available(&self, router: &Arc<Router>, session: &FullJid) {
        if session.node().is_none() {
            return;
        }
        let user = session.to_bare();
        let offline = &router.storage().offline;
        let _guard = self.lock_for(user.as_str()).lock().await;
        let waiting = match offline.peek(user.as_str()).await {
            Ok(waiting) => waiting,
            Err(e) => {
                warn!(error = %e, "reading offline messages failed");
                return;
            }
        };
        let mut delivered_up_to = None;
        for record in waiting {
            let Ok(message) =
                xml::parse_standalone(record.stanza.as_bytes(), xml::XmlLimits::STORED)
            else {
                warn!(id = record.id, "dropping an unreadable offline message");
                delivered_up_to = Some(record.id);
                continue;
            };
            if router.deliver_to_session(session, message).is_err() {
                break;
            }
            delivered_up_to = Some(record.id);
        }
        if let Some(last) = delivered_up_to {
            if let Err(e) = offline.remove_up_to(user.as_str(), last).await {
                warn!(error = %e, "removing delivered offline messages failed");
            }
        }
    }
}
