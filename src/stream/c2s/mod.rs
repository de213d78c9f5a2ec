//! The client-to-server stream, written once for every transport: stream header, STARTTLS,
//! SASL, resource binding (RFC 6120 §4–7), then the bound session, which pumps stanzas between
//! the client and the router.
//!
//! `negotiation` takes the stream from its first byte to a bound resource (`header` answers
//! stream headers and sends features, `bind` binds or resumes); `session` runs the bound
//! session, with `inbound` and `nonzas` for what the client sends and `write` for what goes
//! to it; `goodbye` ends the stream the way it ended.

mod bind;
mod goodbye;
mod header;
mod idle;
mod inbound;
mod negotiation;
mod nonzas;
mod session;
mod write;

use std::sync::Arc;
use std::time::{Duration, Instant};

use minidom::Element;
use rustls::pki_types::CertificateDer;
use tracing::{debug, info};

use super::context::{Admitted, StreamContext};
use super::end::End;
use super::resumption::{self, Resumed};
use super::sasl2::Sasl2Stream;
use super::sasl_stream::SaslStream;
use super::shaper::Shaper;
use super::throttle::Attempt;
use super::transport::{Incoming, Read, Transport, TransportError};
use crate::router::SessionEnd;
use crate::sasl::{self, ChannelBindings, Mechanism};
use crate::xml::StreamCondition;
use negotiation::Negotiated;

pub(super) struct C2s<T: Transport> {
    transport: T,
    ctx: Arc<StreamContext>,
    /// The hosted domain this stream is for: the first stream header's `to` (the main domain
    /// when it names none). Later headers of the stream (after TLS, after SASL) must name it too.
    domain: String,
    domain_chosen: bool,
    header_sent: bool,
    /// Stanzas taken off the queue whose write has not finished: if the session ends before
    /// it does, they are routed again instead of vanishing with the connection.
    in_flight: Vec<Element>,
    /// A session taken over by `<resume/>` during negotiation, with the client's `h`.
    resumed: Option<Resumed>,
    /// The bound session was asked to move off this draining node: it ends its stream but
    /// stays resumable.
    moving: bool,
    /// How fast the client may send: every frame is read through `next_frame`, which waits
    /// here while the client is over its rates.
    shaper: Shaper,
}

/// Runs one client connection to its end. The permit is held until then; the negotiation must
/// be over by its deadline (counted from TCP accept, so a slow TLS handshake or HTTP upgrade
/// before this leaves less time, not more).
///
/// Not an `async fn`: the state is built here and handed to `drive`, which uses it in place.
/// An async function keeps its arguments for its whole life, so moving `transport` into the
/// stream inside one would keep a dead second copy in every session's task.
pub fn run<T: Transport>(
    transport: T,
    ctx: Arc<StreamContext>,
    permit: impl Admitted,
) -> impl std::future::Future<Output = ()> {
    let shaper = Shaper::before_bind(&ctx.config.limits, Instant::now());
    let stream = C2s {
        transport,
        domain: ctx.config.domain.clone(),
        domain_chosen: false,
        ctx,
        header_sent: false,
        in_flight: Vec::new(),
        resumed: None,
        moving: false,
        shaper,
    };
    drive(Box::new(stream), permit)
}

/// The connection's task, from the first byte to the last. What it holds while it waits is
/// what every idle session costs (a test in `listen::tcp` keeps count): what only a rare
/// state needs (negotiation, resumption, ending the session, the goodbye) is boxed, so it
/// takes memory only while it runs.
async fn drive<T: Transport>(mut stream: Box<C2s<T>>, permit: impl Admitted) {
    let timeout = Duration::from_secs(stream.ctx.config.c2s.negotiation_timeout_secs);
    let deadline = permit.deadline(timeout);
    // Held to the last byte of the farewell: shutdown waits for it.
    let _alive = stream.ctx.router.track_task();
    let mut shutdown = stream.ctx.router.shutdown_signal();
    let negotiated = tokio::select! {
        negotiated = tokio::time::timeout_at(deadline, Box::pin(stream.negotiate())) => negotiated,
        _ = shutdown.wait() => Ok(Err(End::Error(StreamCondition::SystemShutdown, None))),
    };
    let Negotiated {
        jid,
        inline,
        reservation,
    } = match negotiated {
        Ok(Ok(negotiated)) => negotiated,
        Ok(Err(end)) => {
            if let Some(Resumed { bound, .. }) = stream.resumed.take() {
                if stream.ctx.router.is_shutting_down() {
                    let why = SessionEnd::ByServer;
                    Box::pin(resumption::end_session(
                        &stream.ctx,
                        *bound,
                        Vec::new(),
                        why,
                    ))
                    .await;
                } else {
                    // Taken over inline, but the connection failed before the session ran.
                    resumption::detach(stream.ctx.clone(), bound);
                }
            }
            return Box::pin(stream.finish(end)).await;
        }
        Err(_) => {
            debug!("negotiation timed out");
            if let Some(Resumed { bound, .. }) = stream.resumed.take() {
                // Taken over just as time ran out: park it again rather than drop it.
                resumption::detach(stream.ctx.clone(), bound);
            }
            let end = End::Error(StreamCondition::ConnectionTimeout, None);
            return Box::pin(stream.finish(end)).await;
        }
    };
    tracing::Span::current().record("jid", tracing::field::display(&jid));
    permit.bound();
    if let Some(resumed) = stream.resumed.take() {
        info!("session resumed");
        let end = Box::pin(stream.resume_session(resumed)).await;
        return Box::pin(stream.finish(end)).await;
    }
    info!("session bound");
    let bound = stream.bind_session(&jid, inline, reservation);
    // Dropped here, not at the end of scope: a local alive across the await below would be
    // kept in every idle session's task.
    drop(jid);
    // The one await that is not boxed: this is where an idle session spends its life.
    let end = stream.run_bound(bound).await;
    Box::pin(stream.finish(end)).await;
}

impl<T: Transport> C2s<T> {
    /// The next frame from the client, read no sooner than its rates allow. Every read of the
    /// stream goes through here, on every transport, so the shaper sees all of it, including
    /// input that completes no frame (transports return after a bounded amount of it).
    /// Cancel-safe like `Transport::next_frame`: a wait dropped half-way loses nothing, and
    /// bytes read by a dropped read are charged with the next one.
    async fn next_frame(&mut self) -> Result<Incoming, TransportError> {
        loop {
            if let Some(ready) = self.shaper.ready_at(Instant::now()) {
                // Not reading is the whole of the slowing down: the client's bytes wait in
                // the kernel and TCP's window stops it. Boxed, so that the timer takes memory
                // only while a client is over its rate, not in every idle session's state.
                Box::pin(tokio::time::sleep_until(ready.into())).await;
            }
            let read = self.transport.next_frame().await;
            let stanza = matches!(read, Ok(Read::Frame(Incoming::Element(_))));
            self.shaper
                .charge(self.transport.bytes_read(), stanza, Instant::now());
            match read {
                Ok(Read::Frame(frame)) => return Ok(frame),
                Ok(Read::Partial) => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

impl<T: Transport> SaslStream for C2s<T> {
    fn context(&self) -> &Arc<StreamContext> {
        &self.ctx
    }

    fn domain(&self) -> &str {
        &self.domain
    }

    fn is_secure(&self) -> bool {
        self.transport.is_secure()
    }

    fn channel_bindings(&self) -> ChannelBindings {
        self.transport.channel_bindings()
    }

    fn peer_certificates(&self) -> Option<&[CertificateDer<'static>]> {
        self.transport.peer_certificates()
    }

    /// Nothing at all before encryption when the server requires it (the client must
    /// STARTTLS first, or use wss://).
    fn offered_mechanisms(&self) -> Vec<Mechanism> {
        let config = &self.ctx.config;
        if config.c2s.require_encryption && !self.transport.is_secure() {
            return Vec::new();
        }
        let auth = &config.auth;
        let encrypted = self.transport.is_secure() || auth.allow_plain_without_tls;
        sasl::offered_mechanisms(
            encrypted,
            auth.allow_plain,
            &self.transport.channel_bindings(),
        )
    }

    fn admit(&self) -> Option<Attempt> {
        self.ctx.throttle.admit(self.transport.peer().ip()).ok()
    }

    async fn send_element(&mut self, el: &Element) -> Result<(), End> {
        self.send_el(el).await
    }

    async fn read_frame(&mut self) -> Result<Incoming, End> {
        Ok(self.next_frame().await?)
    }
}

impl<T: Transport> super::register::RegisterStream for C2s<T> {
    fn peer_ip(&self) -> std::net::IpAddr {
        self.transport.peer().ip()
    }
}

impl<T: Transport> Sasl2Stream for C2s<T> {
    fn keep_resumed(&mut self, resumed: Resumed) {
        self.resumed = Some(resumed);
    }
}
