//! The write path: what the router queued, taken in batches and written at once, through CSI
//! and counted for Stream Management.

use minidom::Element;
use tracing::debug;

use super::C2s;
use crate::router::Outbound;
use crate::stream::end::End;
use crate::stream::resumption::Bound;
use crate::stream::sm;
use crate::stream::transport::Transport;
use crate::xml;
use crate::xml::StreamCondition;

/// Stanzas written with one call to the transport at most.
const MAX_BATCH: usize = 64;

impl<T: Transport> C2s<T> {
    /// Writes what the router queued, batching whatever else is already waiting.
    pub(super) async fn write_queued(&mut self, b: &mut Bound, first: Outbound) -> Result<(), End> {
        let mut batch: Vec<Vec<u8>> = Vec::new();
        let mut next = Some(first);
        let mut end = None;
        self.in_flight.clear();
        self.ctx.router.metrics().queue_depth(b.rx.len());
        // Without stream management or CSI holding anything, a shared stanza is written from
        // its bytes. It is not kept for re-routing either: only groupchat is shared, and a
        // groupchat message for a session that is going away only goes back to its room.
        let plain = b.sm.is_none()
            && b.csi
                .as_ref()
                .is_none_or(|c| !c.is_inactive() && !c.has_held());
        while let Some(item) = next.take() {
            let el = match item {
                Outbound::Stanza(el) => *el,
                Outbound::Shared(shared) if plain => {
                    self.ctx
                        .router
                        .metrics()
                        .stanza_out(shared.0.element.name());
                    batch.push(shared.0.bytes_to(&shared.1));
                    if batch.len() >= MAX_BATCH && end.is_none() {
                        break;
                    }
                    next = b.rx.try_recv();
                    continue;
                }
                Outbound::Shared(shared) => shared.0.element_to(&shared.1),
                Outbound::Replaced => {
                    end = Some(End::Error(
                        StreamCondition::Conflict,
                        Some("replaced by a new session".into()),
                    ));
                    break;
                }
                // What was queued with it still goes out first: the answer to the request
                // that removed the account, say, which is queued just after.
                Outbound::Terminate(condition, text) => {
                    end = Some(End::Error(condition, Some(text.into())));
                    next = b.rx.try_recv();
                    continue;
                }
            };
            let through_csi = b
                .csi
                .as_ref()
                .is_some_and(|csi| csi.is_inactive() || csi.has_held());
            self.stage(b, el, through_csi, &mut batch);
            if batch.len() >= MAX_BATCH && end.is_none() {
                break;
            }
            next = b.rx.try_recv();
        }
        self.send_batch(b, batch).await?;
        match end {
            Some(end) => Err(end),
            None => Ok(()),
        }
    }

    /// Writes stanzas that did not come off the queue (held ones, a server answer), through
    /// CSI when `filter` says so, and counted for Stream Management like any other.
    pub(super) async fn write_elements(
        &mut self,
        b: &mut Bound,
        elements: Vec<Element>,
        filter: bool,
    ) -> Result<(), End> {
        self.in_flight.clear();
        let mut batch = Vec::with_capacity(elements.len());
        for el in elements {
            self.stage(b, el, filter, &mut batch);
        }
        self.send_batch(b, batch).await
    }

    /// Adds a stanza to the batch being written (and `in_flight`), or, when `through_csi`, lets
    /// CSI hold it back or release it with what it held.
    fn stage(&mut self, b: &mut Bound, el: Element, through_csi: bool, batch: &mut Vec<Vec<u8>>) {
        self.ctx.router.metrics().stanza_out(el.name());
        match b.csi.as_mut() {
            Some(csi) if through_csi => {
                let in_flight = &mut self.in_flight;
                csi.filter(el, |el| {
                    batch.push(xml::to_bytes(&el));
                    in_flight.push(el);
                });
            }
            _ => {
                batch.push(xml::to_bytes(&el));
                self.in_flight.push(el);
            }
        }
    }

    /// Sends serialized stanzas (their elements are in `in_flight`), asking for an ack when
    /// enough are unacknowledged; once written they move to the unacked queue.
    async fn send_batch(&mut self, b: &mut Bound, batch: Vec<Vec<u8>>) -> Result<(), End> {
        if batch.is_empty() {
            self.in_flight.clear();
            return Ok(());
        }
        let mut slices: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
        if let Some(sm) = b.sm.as_mut() {
            if sm.should_request(self.in_flight.len()) {
                slices.push(&sm::REQUEST);
            }
        }
        self.transport.send(&slices).await?;
        match b.sm.as_mut() {
            Some(sm) => {
                sm.sent_stanzas(self.in_flight.drain(..));
                if sm.unacked.len() > self.ctx.config.stream_management.max_unacked {
                    debug!(unacked = sm.unacked.len(), "client does not acknowledge");
                    return Err(End::Stalled);
                }
            }
            None => self.in_flight.clear(),
        }
        Ok(())
    }

    pub(super) async fn send_el(&mut self, el: &Element) -> Result<(), End> {
        let bytes = xml::to_bytes(el);
        self.transport.send(&[&bytes]).await?;
        Ok(())
    }
}
