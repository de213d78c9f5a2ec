//! IQs between occupants (XEP-0045, IQs addressed to an occupant's room JID): a request to `room/nick`
//! reaches that occupant's real JID from the sender's room JID, and the answer finds its way
//! back, so neither side learns the other's real address in a semi-anonymous room. vCard
//! requests go to the occupant's account instead, which the server answers (what clients
//! asking for an occupant's avatar expect).

use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use jid::{FullJid, Jid};
use minidom::Element;

use crate::router::Router;
use crate::stanza::{self, Kind};

/// Requests waiting for an answer longer than this are forgotten (the asker timed out too).
const ANSWER_WINDOW: Duration = Duration::from_secs(120);
/// Forgotten requests are swept when the table grows past this.
const SWEEP_ABOVE: usize = 10_000;

struct Waiting {
    asker: FullJid,
    asker_id: String,
    /// The nick the answer comes from, as the asker addressed it.
    answerer: String,
    /// Where the request went: only an answer from there is passed back.
    asked: Jid,
    since: Instant,
}

#[derive(Default)]
pub(super) struct Forwarder {
    waiting: DashMap<String, Waiting>,
}

impl Forwarder {
    /// Sends `iq` from the occupant at `asker_nick` on to `target` (the occupant's real JID).
    pub(super) async fn request(
        &self,
        router: &Arc<Router>,
        room_jid: &str,
        asker_nick: &str,
        target: &FullJid,
        target_nick: &str,
        mut iq: Element,
    ) {
        let asker = iq.attr("from").and_then(|f| FullJid::new(f).ok());
        let (Some(asker), Some(asker_id)) = (asker, iq.attr("id").map(str::to_owned)) else {
            return;
        };
        let is_vcard = stanza::iq_payload(&iq).is_some_and(|p| p.is("vCard", "vcard-temp"));
        let to: Jid = if is_vcard {
            target.to_bare().into()
        } else {
            target.clone().into()
        };
        let id = format!("muc-fwd-{}", rand::random::<u64>());
        if self.waiting.len() > SWEEP_ABOVE {
            self.waiting
                .retain(|_, w| w.since.elapsed() < ANSWER_WINDOW);
        }
        self.waiting.insert(
            id.clone(),
            Waiting {
                asker,
                asker_id,
                answerer: target_nick.to_owned(),
                asked: to.clone(),
                since: Instant::now(),
            },
        );
        stanza::set_attr(&mut iq, "id", id);
        stanza::set_attr(&mut iq, "from", format!("{room_jid}/{asker_nick}"));
        stanza::set_attr(&mut iq, "to", to.to_string());
        router.route(Kind::Iq, to, iq).await;
    }

    /// An answer addressed to `room/nick`: back to whoever asked, if it is the answer we wait for.
    pub(super) async fn answer(&self, router: &Arc<Router>, room_jid: &str, mut iq: Element) {
        let Some(id) = iq.attr("id").map(str::to_owned) else {
            return;
        };
        let from = iq.attr("from").and_then(|f| Jid::new(f).ok());
        let Some((_, waiting)) = self
            .waiting
            .remove_if(&id, |_, waiting| from.as_ref() == Some(&waiting.asked))
        else {
            return;
        };
        stanza::set_attr(&mut iq, "id", waiting.asker_id);
        stanza::set_attr(&mut iq, "from", format!("{room_jid}/{}", waiting.answerer));
        stanza::set_attr(&mut iq, "to", waiting.asker.to_string());
        router.route(Kind::Iq, waiting.asker.into(), iq).await;
    }
}
