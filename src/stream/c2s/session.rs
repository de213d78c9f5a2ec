//! The bound session: client stanzas go to the router, the router's go to the client, until
//! the stream ends; then the session ends for real or is parked for resumption.

use std::sync::Arc;
use std::time::Instant;

use jid::FullJid;
use minidom::Element;
use tokio::sync::Notify;
use tracing::{debug, info};

use super::goodbye::FAREWELL_TIMEOUT;
use super::idle::{self, Idle, IdleWatch};
use super::C2s;
use crate::router::session_queue::channel as session_queue;
use crate::router::{Outbound, Reservation, SessionEnd};
use crate::stream::bind2::{self, InlineRequests};
use crate::stream::end::End;
use crate::stream::resumption::{self, Bound, Resumed, SlotRequest, Takeover};
use crate::stream::sm;
use crate::stream::transport::{Incoming, Transport, TransportError};
use crate::xml;
use crate::xml::StreamCondition;

impl<T: Transport> C2s<T> {
    /// Binds the session in the router, ready for `run_bound`. Not async, so that what binding
    /// needs is gone before the session starts waiting.
    pub(super) fn bind_session(
        &mut self,
        jid: &FullJid,
        inline: InlineRequests,
        reservation: Reservation,
    ) -> Bound {
        let router = self.ctx.router.clone();
        let (tx, rx) = session_queue(self.ctx.config.limits.session_queue);
        let stalled = Arc::new(Notify::new());
        let session_id = router.bind(jid.clone(), tx, stalled.clone());
        // The session table counts this resource now.
        drop(reservation);
        bind2::apply_after_bind(&router, jid, &inline);
        let mut bound = Bound::new(session_id, jid.clone(), rx, stalled);
        if let Some(grant) = inline.sm {
            // Enabled inline (XEP-0386): its `<enabled/>` already went out inside `<bound/>`.
            self.install_sm(&mut bound, grant);
        }
        bound
    }

    /// Continues a session taken over by `<resume/>`: the client's `h` acknowledges what it
    /// got, `<resumed/>` tells it ours, then the unacknowledged stanzas are sent again and
    /// whatever queued up meanwhile follows.
    pub(super) async fn resume_session(&mut self, resumed: Resumed) -> End {
        let Resumed {
            mut bound,
            h,
            announced,
        } = resumed;
        let Some(sm) = bound.sm.as_mut() else {
            return self
                .end_bound(
                    *bound,
                    End::Error(StreamCondition::InternalServerError, None),
                )
                .await;
        };
        if let Err(too_high) = sm.ack(h) {
            let end = End::ErrorWith(
                StreamCondition::UndefinedCondition,
                Box::new(too_high.to_element()),
            );
            return self.end_bound(*bound, end).await;
        }
        let previd = sm.id.clone().unwrap_or_default();
        let inbound = sm.inbound;
        sm.request_outstanding = false;
        let retransmit: Vec<Vec<u8>> = sm.unacked.iter().map(xml::to_bytes).collect();
        let account = bound.jid.to_bare();
        bound.slot = Some(self.ctx.resumption.register(previd.clone(), account));
        self.ctx.router.set_detached(&bound.jid, false);
        // Resumed inline in a SASL2 `<success/>`, the client already has our `h`.
        let resumed = (!announced).then(|| xml::to_bytes(&sm::resumed(&previd, inbound)));
        let slices: Vec<&[u8]> = resumed
            .iter()
            .chain(&retransmit)
            .map(Vec::as_slice)
            .collect();
        debug!(retransmitted = retransmit.len(), "resumed");
        if let Err(e) = self.transport.send(&slices).await {
            return self.end_bound(*bound, End::from(e)).await;
        }
        let pending: Vec<Element> = bound.pending.drain(..).collect();
        if let Err(end) = self.write_elements(&mut bound, pending, true).await {
            return self.end_bound(*bound, end).await;
        }
        self.run_bound(*bound).await
    }

    /// Pumps stanzas both ways until the stream ends, then ends the session or parks it.
    /// Everything but the wait itself is boxed (see `drive`).
    pub(super) async fn run_bound(&mut self, mut b: Bound) -> End {
        self.shaper.bound(&self.ctx.config.limits, Instant::now());
        let stalled = b.stalled.clone();
        let _counted = self
            .ctx
            .router
            .metrics()
            .session_bound(self.transport.metrics_kind());
        let mut shutdown = self.ctx.router.shutdown_signal();
        let mut idle = IdleWatch::new(
            &self.ctx.config.c2s,
            self.transport.bytes_read(),
            Instant::now(),
        );
        let end = loop {
            let mut slot = b.slot.take();
            let deadline = idle.as_ref().map(IdleWatch::deadline);
            let step = tokio::select! {
                frame = self.next_frame() => Step::Frame(frame),
                first = b.rx.recv() => Step::Queued(first),
                _ = stalled.notified() => Step::Stalled,
                Some(request) = resumption::requested(&mut slot) => match request {
                    SlotRequest::Takeover(request) => Step::Takeover(request),
                    SlotRequest::Move => Step::Move,
                },
                _ = shutdown.wait() => Step::Shutdown,
                _ = idle::until(deadline) => Step::Idle,
            };
            b.slot = slot;
            if let (Step::Frame(Ok(_)), Some(idle)) = (&step, idle.as_mut()) {
                idle.heard(self.transport.bytes_read(), Instant::now());
            }
            let result = match step {
                Step::Frame(Ok(Incoming::Element(el))) => {
                    Box::pin(self.handle_client_stanza(&mut b, el)).await
                }
                Step::Idle => match idle.as_mut() {
                    Some(watch) => {
                        let verdict = watch.expired(self.transport.bytes_read(), Instant::now());
                        Box::pin(self.on_idle(&mut b, verdict)).await
                    }
                    None => Ok(()),
                },
                Step::Frame(Ok(Incoming::Close)) => Err(End::PeerClosed),
                Step::Frame(Ok(Incoming::Open(_))) => {
                    Err(End::Error(StreamCondition::InvalidXml, None))
                }
                Step::Frame(Err(e)) => Err(End::from(e)),
                Step::Queued(None) => Err(End::Disconnected),
                Step::Queued(Some(first)) => {
                    let mut slot = b.slot.take();
                    // A write blocked on a client that stopped reading must not outlive the
                    // queue filling up behind it, nor keep a resuming client waiting.
                    let mut write = Box::pin(self.write_queued(&mut b, first));
                    let written = tokio::select! {
                        written = &mut write => written,
                        _ = stalled.notified() => Err(End::Stalled),
                        Some(request) = resumption::takeover_requested(&mut slot) => {
                            Err(End::TakenOver(request))
                        }
                        // Cutting a write short would leave half a stanza before the stream
                        // error; a client that reads nothing gets a bounded wait, then only
                        // the connection closes (what it did not get is stored offline).
                        _ = shutdown.wait() => {
                            match tokio::time::timeout(FAREWELL_TIMEOUT, &mut write).await {
                                Ok(Ok(())) => Err(End::Error(StreamCondition::SystemShutdown, None)),
                                Ok(Err(end)) => Err(end),
                                Err(_) => Err(End::Stalled),
                            }
                        }
                    };
                    drop(write);
                    if b.slot.is_none() {
                        b.slot = slot;
                    }
                    written
                }
                Step::Stalled => Err(End::Error(
                    StreamCondition::PolicyViolation,
                    Some("too many stanzas waiting to be read".into()),
                )),
                // The resuming connection gave up before this session got to its request:
                // the client is still here.
                Step::Takeover(request) if request.is_closed() => Ok(()),
                Step::Takeover(request) => Err(End::TakenOver(request)),
                Step::Move => {
                    self.moving = true;
                    Err(End::Error(
                        StreamCondition::SystemShutdown,
                        Some("this node is draining: resume on another one".into()),
                    ))
                }
                Step::Shutdown => Err(End::Error(StreamCondition::SystemShutdown, None)),
            };
            if let Err(end) = result {
                break end;
            }
        };
        Box::pin(self.end_bound(b, end)).await
    }

    /// After the stream ended: a resumable session whose connection broke is parked for its
    /// client to come back; any other session ends for real.
    async fn end_bound(&mut self, mut b: Bound, end: End) -> End {
        let mut in_flight = std::mem::take(&mut self.in_flight);
        let resumable = b.slot.is_some() && b.sm.as_ref().is_some_and(|sm| sm.resumable());
        let end = match end {
            End::TakenOver(request) => {
                // What was being written may be half on the old wire: the client never
                // counted it, so it goes first on the new one.
                for el in in_flight.drain(..).rev() {
                    b.pending.push_front(el);
                }
                info!("session taken over by a resuming connection");
                if let Err(back) = request.send(Box::new(b)) {
                    // The resuming connection gave up waiting: park the state after all.
                    resumption::detach(self.ctx.clone(), back);
                }
                return End::Disconnected;
            }
            // At shutdown nothing is parked: resumption state does not outlive the process.
            // Told to move (the node drains), the session waits here for its client to
            // resume on another node, which asks this one for what the client did not get.
            end @ (End::Disconnected | End::Stalled | End::Error(..))
                if resumable
                    && !self.ctx.router.is_shutting_down()
                    && (self.moving || !matches!(end, End::Error(..))) =>
            {
                for el in in_flight.drain(..).rev() {
                    b.pending.push_front(el);
                }
                resumption::detach(self.ctx.clone(), Box::new(b));
                return end;
            }
            end => end,
        };
        let why = match &end {
            End::PeerClosed => SessionEnd::Closed,
            End::Disconnected | End::Stalled => SessionEnd::ConnectionLost,
            End::Error(..) | End::ErrorWith(..) | End::TakenOver(_) => SessionEnd::ByServer,
        };
        resumption::end_session(&self.ctx, b, in_flight, why).await;
        end
    }
}

impl<T: Transport> C2s<T> {
    /// The idle deadline came (see `idle.rs`): ask a quiet client for a sign of life, or end
    /// the stream of one that gave none. A stream-management session asked with `<r/>` (its
    /// `<a/>` is the answer) and gone is parked for resumption like any dropped connection.
    async fn on_idle(&mut self, b: &mut Bound, verdict: Idle) -> Result<(), End> {
        match verdict {
            Idle::Alive => Ok(()),
            Idle::Ask => match b.sm.as_mut() {
                Some(sm) => {
                    sm.request_outstanding = true;
                    self.transport.send(&[&sm::REQUEST]).await?;
                    Ok(())
                }
                None => {
                    let ping = idle_ping(&self.domain, &b.jid);
                    self.write_elements(b, vec![ping], false).await
                }
            },
            Idle::Gone => {
                debug!("no answer to the idle ping: connection taken for dead");
                if b.sm.as_ref().is_some_and(|sm| sm.resumable()) && b.slot.is_some() {
                    Err(End::Disconnected)
                } else {
                    Err(End::Error(
                        StreamCondition::ConnectionTimeout,
                        Some("no answer to a ping".into()),
                    ))
                }
            }
        }
    }
}

/// A XEP-0199 ping from the server to the session.
fn idle_ping(domain: &str, to: &FullJid) -> Element {
    let mut iq = Element::bare("iq", crate::xml::ns::CLIENT);
    crate::stanza::set_attr(&mut iq, "from", domain);
    crate::stanza::set_attr(&mut iq, "to", to.to_string());
    crate::stanza::set_attr(&mut iq, "type", "get");
    crate::stanza::set_attr(&mut iq, "id", format!("idle-{}", rand::random::<u32>()));
    iq.append_child(Element::bare("ping", crate::xml::ns::PING));
    iq
}

/// What woke the bound session.
enum Step {
    /// Nothing read for a while (see `idle.rs`).
    Idle,
    Frame(Result<Incoming, TransportError>),
    Queued(Option<Outbound>),
    Stalled,
    Takeover(Takeover),
    /// The node drains: the client should resume elsewhere.
    Move,
    Shutdown,
}
