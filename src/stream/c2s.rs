//! The client-to-server stream, written once for every transport: stream header, STARTTLS,
//! SASL, resource binding (RFC 6120 §4–7), then the bound session, which pumps stanzas between
//! the client and the router.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jid::{BareJid, FullJid};
use minidom::Element;
use tokio::sync::{mpsc, Notify};
use tracing::{debug, info};

use super::auth::{self, AuthOutcome};
use super::bind2::{self, InlineRequests};
use super::resumption::{self, Bound, Takeover};
use super::sasl2::{self, Sasl2Outcome};
use super::shaper::Shaper;
use super::sm::{self, Nonza, SmState};
use super::transport::{Incoming, Read, Transport, TransportError};
use super::{fast, features};
use crate::listen::admission::Permit;
use crate::router::{Outbound, Reservation, SessionEnd};
use crate::server::ServerContext;
use crate::stanza::{self, Kind, StanzaError};
use crate::xml::{self, ns, StreamHeader};

/// How long the closing stream error and footer may take to write.
const FAREWELL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Why a stream ends.
#[derive(Debug)]
pub(super) enum End {
    /// We close with this RFC 6120 §4.9.3 condition.
    Error(&'static str, Option<String>),
    /// We close with this condition and an application-specific condition element.
    ErrorWith(&'static str, Box<Element>),
    /// The client sent `</stream:stream>`: answer in kind.
    PeerClosed,
    /// The connection broke: nothing more can be sent.
    Disconnected,
    /// The client stopped reading: its queue filled while a write to it was blocked. A stream
    /// error could only sit behind the blocked bytes (perhaps after half a stanza), so the
    /// connection is just closed.
    Stalled,
    /// A resuming connection asked for this session's state (XEP-0198 §5): hand it over and
    /// close the connection without another byte, since the client has moved on.
    TakenOver(Takeover),
}

impl From<TransportError> for End {
    fn from(e: TransportError) -> Self {
        match e {
            TransportError::Framing(f) => End::Error(f.condition(), Some(f.to_string())),
            TransportError::Io(_) | TransportError::Disconnected => End::Disconnected,
        }
    }
}

impl From<std::io::Error> for End {
    fn from(_: std::io::Error) -> Self {
        End::Disconnected
    }
}

/// What the negotiation ends with: the bound address, and what the client asked to have
/// switched on from the session's start (XEP-0386 inline features).
pub(super) struct Negotiated {
    pub jid: FullJid,
    pub inline: InlineRequests,
    /// The resource's place under the per-account cap, until the router has the session.
    pub reservation: Reservation,
}

pub(super) struct C2s<T: Transport> {
    pub transport: T,
    pub ctx: Arc<ServerContext>,
    /// The hosted domain this stream is for: the first stream header's `to` (the main domain
    /// when it names none). Later headers of the stream (after TLS, after SASL) must name it too.
    pub domain: String,
    domain_chosen: bool,
    header_sent: bool,
    /// Stanzas taken off the queue whose write has not finished: if the session ends before
    /// it does, they are routed again instead of vanishing with the connection.
    in_flight: Vec<Element>,
    /// A session taken over by `<resume/>` during negotiation, with the client's `h`.
    pub(super) resumed: Option<Resumed>,
    /// How fast the client may send: every frame is read through `next_frame`, which waits
    /// here while the client is over its rates.
    shaper: Shaper,
}

/// Runs one client connection to its end. The permit is held until then; the negotiation must
/// be over by its deadline (counted from TCP accept, so a slow TLS handshake or HTTP upgrade
/// before this leaves less time, not more).
pub async fn run<T: Transport>(transport: T, ctx: Arc<ServerContext>, permit: Permit) {
    let deadline = permit.deadline(Duration::from_secs(ctx.config.c2s.negotiation_timeout_secs));
    // Held to the last byte of the farewell: shutdown waits for it.
    let _alive = ctx.router.track_task();
    let mut shutdown = ctx.router.shutdown_signal();
    let shaper = Shaper::before_bind(&ctx.config.limits, Instant::now());
    let mut stream = C2s {
        transport,
        domain: ctx.config.domain.clone(),
        domain_chosen: false,
        ctx,
        header_sent: false,
        in_flight: Vec::new(),
        resumed: None,
        shaper,
    };
    // Boxed, like the routing below: an idle session's task should not carry the space of the
    // negotiation's (or routing's) deepest await for its whole life.
    let negotiated = tokio::select! {
        negotiated = tokio::time::timeout_at(deadline, Box::pin(stream.negotiate())) => negotiated,
        _ = shutdown.wait() => Ok(Err(End::Error("system-shutdown", None))),
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
                    resumption::end_session(&stream.ctx, *bound, Vec::new(), why).await;
                } else {
                    // Taken over inline, but the connection failed before the session ran.
                    resumption::detach(stream.ctx.clone(), bound);
                }
            }
            return stream.finish(end).await;
        }
        Err(_) => {
            debug!("negotiation timed out");
            if let Some(Resumed { bound, .. }) = stream.resumed.take() {
                // Taken over just as time ran out: park it again rather than drop it.
                resumption::detach(stream.ctx.clone(), bound);
            }
            return stream.finish(End::Error("connection-timeout", None)).await;
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
    let session = stream.session(&jid, inline, reservation);
    // Every idle session pays for this state; keep an eye on it.
    debug!(bytes = std::mem::size_of_val(&session), "session state");
    let end = session.await;
    Box::pin(stream.finish(end)).await;
}

impl<T: Transport> C2s<T> {
    /// The next frame from the client, read no sooner than its rates allow. Every read of the
    /// stream goes through here, on every transport, so the shaper sees all of it, including
    /// input that completes no frame (transports return after a bounded amount of it).
    /// Cancel-safe like `Transport::next_frame`: a wait dropped half-way loses nothing, and
    /// bytes read by a dropped read are charged with the next one.
    pub(super) async fn next_frame(&mut self) -> Result<Incoming, TransportError> {
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

    /// Takes the stream from the first byte to a bound resource.
    async fn negotiate(&mut self) -> Result<Negotiated, End> {
        let mut username: Option<String> = None;
        let mut failures = 0u32;
        loop {
            self.expect_stream_header().await?;
            self.send_features(username.is_some()).await?;
            // Elements of this stream, until it restarts (after TLS or SASL) or binds.
            loop {
                let el = match self.next_frame().await? {
                    Incoming::Element(el) => el,
                    Incoming::Close => return Err(End::PeerClosed),
                    Incoming::Open(_) => {
                        return Err(End::Error(
                            "invalid-xml",
                            Some("unexpected stream header".into()),
                        ))
                    }
                };
                if el.is("starttls", ns::TLS) && username.is_none() {
                    if !self.transport.can_starttls() {
                        self.send_el(&Element::bare("failure", ns::TLS)).await?;
                        return Err(End::Disconnected);
                    }
                    self.send_el(&Element::bare("proceed", ns::TLS)).await?;
                    // The certificate of the domain the stream is for (RFC 6120 §13.7.2.1).
                    let domain = self.domain.clone();
                    self.transport.starttls(&domain).await?;
                    self.header_sent = false;
                    break;
                }
                if el.is("auth", ns::SASL) && username.is_none() {
                    match auth::authenticate(self, el).await? {
                        AuthOutcome::Success(user) => {
                            username = Some(user);
                            self.transport.restart();
                            self.header_sent = false;
                            break;
                        }
                        AuthOutcome::Failure => {
                            count_failure(&mut failures)?;
                            continue;
                        }
                    }
                }
                // XEP-0388: no stream restart, features right after the success. Bound
                // inline (or resumed inline), the session starts; otherwise the client binds
                // itself.
                if el.is("authenticate", ns::SASL2) && username.is_none() {
                    match sasl2::authenticate(self, el).await? {
                        Sasl2Outcome::Success(login) => {
                            let login = *login;
                            if let Some(jid) = login.bound {
                                self.send_stream_features(features::after_inline_bind())
                                    .await?;
                                return Ok(Negotiated {
                                    jid,
                                    inline: login.inline,
                                    reservation: login.reservation,
                                });
                            }
                            username = Some(login.username);
                            self.send_features(true).await?;
                        }
                        Sasl2Outcome::Failure => count_failure(&mut failures)?,
                    }
                    continue;
                }
                match &username {
                    Some(user) if is_bind_request(&el) => {
                        if let Some((jid, reservation)) = self.bind(user, &el).await? {
                            let inline = InlineRequests::default();
                            return Ok(Negotiated {
                                jid,
                                inline,
                                reservation,
                            });
                        }
                        continue;
                    }
                    Some(_) if el.is("iq", ns::CLIENT) && el.has_child("bind", ns::BIND) => {
                        // Binding is an IQ set (RFC 6120 §7.6.1). Any other type still gets an
                        // answer so the client is not left waiting, except an answer itself.
                        if !matches!(el.attr("type"), Some("result" | "error")) {
                            let error = StanzaError::bad_request()
                                .with_text("resource binding is an iq of type set");
                            let domain = self.domain.clone();
                            self.send_el(&stanza::error_reply(&el, &error, &domain))
                                .await?;
                        }
                        continue;
                    }
                    Some(user) if el.ns() == ns::SM => {
                        if let Some(jid) = self.sm_before_bind(user, &el).await? {
                            let inline = InlineRequests::default();
                            // Resumption takes over a session: no new resource.
                            let reservation = Reservation::uncounted();
                            return Ok(Negotiated {
                                jid,
                                inline,
                                reservation,
                            });
                        }
                        continue;
                    }
                    _ => {
                        return Err(End::Error(
                            "not-authorized",
                            Some("authenticate and bind a resource first".into()),
                        ))
                    }
                }
            }
        }
    }

    /// Reads the peer's stream header and answers with ours (RFC 6120 §4.7).
    async fn expect_stream_header(&mut self) -> Result<StreamHeader, End> {
        let header = match self.next_frame().await? {
            Incoming::Open(header) => header,
            Incoming::Close => return Err(End::PeerClosed),
            Incoming::Element(_) => {
                return Err(End::Error(
                    "invalid-xml",
                    Some("expected a stream header".into()),
                ))
            }
        };
        let requested = header.to.as_deref().map(|to| {
            // RFC 7622 §3.2: a trailing label separator is not part of the name.
            let to = to.strip_suffix('.').unwrap_or(to);
            crate::address::parse(to)
                .ok()
                .filter(|jid| jid.node().is_none() && jid.resource().is_none())
                .map(|jid| jid.domain().to_string())
                .unwrap_or_else(|| to.to_owned())
        });
        let known = match &requested {
            None => true,
            Some(to) if self.domain_chosen => *to == self.domain,
            Some(to) if self.ctx.config.is_hosted(to) => {
                self.domain = to.clone();
                true
            }
            Some(_) => false,
        };
        self.domain_chosen = true;
        self.open_stream().await?;
        if !known {
            return Err(End::Error(
                "host-unknown",
                Some(format!(
                    "this stream is not for a domain served here ({})",
                    self.domain
                )),
            ));
        }
        match header.version.as_deref() {
            Some(v) if v.starts_with("1.") => Ok(header),
            _ => Err(End::Error(
                "unsupported-version",
                Some("XMPP 1.0 streams only".into()),
            )),
        }
    }

    /// The account `username` names on this stream's domain: its bare JID as text, which is
    /// also how storage keys it.
    pub(super) fn account(&self, username: &str) -> String {
        format!("{username}@{}", self.domain)
    }

    async fn open_stream(&mut self) -> Result<(), End> {
        if !self.header_sent {
            let id = random_id();
            let domain = self.domain.clone();
            self.transport.open_stream(&id, &domain).await?;
            self.header_sent = true;
        }
        Ok(())
    }

    async fn send_features(&mut self, authenticated: bool) -> Result<(), End> {
        let children = if authenticated {
            features::after_auth()
        } else {
            let mechanisms = auth::offered_mechanisms(self);
            let sasl2 = features::sasl2(&mechanisms, &fast::offered(self));
            let mut classic = features::before_auth(
                self.transport.can_starttls(),
                self.ctx.config.c2s.require_encryption,
                mechanisms,
                self.transport.channel_bindings(),
            );
            classic.extend(sasl2);
            classic
        };
        self.send_stream_features(children).await
    }

    pub(super) async fn send_stream_features(&mut self, children: Vec<Element>) -> Result<(), End> {
        let features = Element::builder("features", ns::STREAM)
            .append_all(children)
            .build();
        let bytes = xml::stream_element_to_bytes(&features, self.declares_stream_prefix());
        self.transport.send(&[&bytes]).await?;
        Ok(())
    }

    /// Whether a `stream:` element must bind its own prefix. The transport gives its
    /// declaration as text; the writer only needs to know if there is one.
    fn declares_stream_prefix(&self) -> bool {
        !self.transport.stream_prefix_declaration().is_empty()
    }

    /// RFC 6120 §7: binds the requested resource, or a generated one. None when the account
    /// has all the resources it may have: the client was told so and may close or retry.
    async fn bind(
        &mut self,
        username: &str,
        iq: &Element,
    ) -> Result<Option<(FullJid, Reservation)>, End> {
        let requested = iq
            .get_child("bind", ns::BIND)
            .and_then(|b| b.get_child("resource", ns::BIND))
            .map(|r| r.text())
            .filter(|r| !r.trim().is_empty());
        let resource = requested.unwrap_or_else(random_id);
        let full = format!("{username}@{}/{resource}", self.domain);
        let Ok(jid) = FullJid::new(&full) else {
            let error = StanzaError::bad_request().with_text("invalid resource");
            let reply = stanza::error_reply(iq, &error, &self.domain);
            self.send_el(&reply).await?;
            return Err(End::Error(
                "not-authorized",
                Some("no valid resource bound".into()),
            ));
        };
        let reservation = match self.ctx.router.reserve_resource(&jid) {
            Ok(reservation) => reservation,
            Err(refusal) => {
                debug!(%jid, %refusal, "resource refused");
                // RFC 6120 §7.6.2.1.
                let error = StanzaError::resource_constraint().with_text(refusal.to_string());
                let reply = stanza::error_reply(iq, &error, &self.domain);
                self.send_el(&reply).await?;
                return Ok(None);
            }
        };
        let mut jid_el = Element::bare("jid", ns::BIND);
        jid_el.append_text(jid.to_string());
        let mut bind = Element::bare("bind", ns::BIND);
        bind.append_child(jid_el);
        let mut reply = Element::bare("iq", ns::CLIENT);
        if let Some(id) = iq.attr("id") {
            stanza::set_attr(&mut reply, "id", id);
        }
        stanza::set_attr(&mut reply, "type", "result");
        reply.append_child(bind);
        self.send_el(&reply).await?;
        Ok(Some((jid, reservation)))
    }

    /// Stream Management before a resource is bound: `<resume/>` takes over a session
    /// (XEP-0198 §5); anything else is too early. Returns the resumed JID, or None when the
    /// client was told `<failed/>` and may go on to bind.
    async fn sm_before_bind(&mut self, user: &str, el: &Element) -> Result<Option<FullJid>, End> {
        let (previd, h) = match sm::parse(el) {
            Some(Ok(Nonza::Resume { previd, h })) => (previd, h),
            Some(Err(e)) => {
                debug!(error = %e, "bad Stream Management element before bind");
                self.send_el(&sm::failed("bad-request", None)).await?;
                return Ok(None);
            }
            _ => {
                self.send_el(&sm::failed("unexpected-request", None))
                    .await?;
                return Ok(None);
            }
        };
        let account = self.account(user);
        let Ok(account) = BareJid::new(&account) else {
            self.send_el(&sm::failed("item-not-found", None)).await?;
            return Ok(None);
        };
        match self.ctx.resumption.take(&previd, &account).await {
            Ok(bound) => {
                let jid = bound.jid.clone();
                self.resumed = Some(Resumed {
                    bound,
                    h,
                    announced: false,
                });
                Ok(Some(jid))
            }
            Err(known_h) => {
                debug!(previd, "resumption failed: unknown or expired");
                self.send_el(&sm::failed("item-not-found", known_h)).await?;
                Ok(None)
            }
        }
    }

    /// The bound session: client stanzas go to the router, the router's go to the client.
    async fn session(
        &mut self,
        jid: &FullJid,
        inline: InlineRequests,
        reservation: Reservation,
    ) -> End {
        let router = self.ctx.router.clone();
        let (tx, rx) = mpsc::channel(self.ctx.config.limits.session_queue);
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
        self.run_bound(bound).await
    }

    /// Continues a session taken over by `<resume/>`: the client's `h` acknowledges what it
    /// got, `<resumed/>` tells it ours, then the unacknowledged stanzas are sent again and
    /// whatever queued up meanwhile follows.
    async fn resume_session(&mut self, resumed: Resumed) -> End {
        let Resumed {
            mut bound,
            h,
            announced,
        } = resumed;
        let Some(sm) = bound.sm.as_mut() else {
            return self
                .end_bound(*bound, End::Error("internal-server-error", None))
                .await;
        };
        if let Err(too_high) = sm.ack(h) {
            let end = End::ErrorWith("undefined-condition", Box::new(too_high.to_element()));
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
    async fn run_bound(&mut self, mut b: Bound) -> End {
        self.shaper.bound(&self.ctx.config.limits, Instant::now());
        let stalled = b.stalled.clone();
        let mut shutdown = self.ctx.router.shutdown_signal();
        let end = loop {
            let mut slot = b.slot.take();
            let step = tokio::select! {
                frame = self.next_frame() => Step::Frame(frame),
                first = b.rx.recv() => Step::Queued(first),
                _ = stalled.notified() => Step::Stalled,
                Some(request) = resumption::takeover_requested(&mut slot) => Step::Takeover(request),
                _ = shutdown.wait() => Step::Shutdown,
            };
            b.slot = slot;
            let result = match step {
                Step::Frame(Ok(Incoming::Element(el))) => {
                    Box::pin(self.handle_client_stanza(&mut b, el)).await
                }
                Step::Frame(Ok(Incoming::Close)) => Err(End::PeerClosed),
                Step::Frame(Ok(Incoming::Open(_))) => Err(End::Error("invalid-xml", None)),
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
                                Ok(Ok(())) => Err(End::Error("system-shutdown", None)),
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
                    "policy-violation",
                    Some("too many stanzas waiting to be read".into()),
                )),
                Step::Takeover(request) => Err(End::TakenOver(request)),
                Step::Shutdown => Err(End::Error("system-shutdown", None)),
            };
            if let Err(end) = result {
                break end;
            }
        };
        self.end_bound(b, end).await
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
            end @ (End::Disconnected | End::Stalled)
                if resumable && !self.ctx.router.is_shutting_down() =>
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

    /// Validates and stamps a stanza from the client, then hands it to the router. Stream
    /// Management and CSI nonzas are answered here.
    async fn handle_client_stanza(&mut self, b: &mut Bound, mut el: Element) -> Result<(), End> {
        let Some(kind) = Kind::of(&el) else {
            return self.handle_nonza(b, el).await;
        };
        let jid = &b.jid;
        if let Some(from) = el.attr("from") {
            let claimed = crate::address::parse(from).ok();
            let own = claimed.as_ref().is_some_and(|c| match c.try_as_full() {
                Ok(full) => full == jid,
                Err(bare) => *bare == jid.to_bare(),
            });
            if !own {
                return Err(End::Error(
                    "invalid-from",
                    Some(format!("'{from}' is not this session's address")),
                ));
            }
        }
        stanza::set_attr(&mut el, "from", jid.to_string());
        if kind == Kind::Message {
            // XEP-0280 wrappers are the server's alone: one a client sends claims a copy of
            // someone else's message (a forged carbon), so it never leaves this stream.
            while el.remove_child("received", ns::CARBONS).is_some() {}
            while el.remove_child("sent", ns::CARBONS).is_some() {}
        }
        if let Some(sm) = b.sm.as_mut() {
            sm.count_inbound();
        }
        if kind == Kind::Iq {
            if el.attr("id").is_none() {
                return Err(End::Error("invalid-xml", Some("<iq/> without id".into())));
            }
            if is_session_request(&el, &self.domain) {
                let reply = stanza::iq_result(&el, None, &self.domain);
                return self.write_elements(b, vec![reply], false).await;
            }
        }
        Box::pin(self.ctx.router.route_from_client(jid, el)).await;
        Ok(())
    }

    /// XEP-0198 and XEP-0352 elements; anything else is not allowed on a client stream.
    async fn handle_nonza(&mut self, b: &mut Bound, el: Element) -> Result<(), End> {
        if el.ns() == ns::CSI && matches!(el.name(), "active" | "inactive") {
            let csi = b.csi.get_or_insert_with(Default::default);
            if el.name() == "inactive" {
                csi.deactivate();
                return Ok(());
            }
            let held = csi.activate();
            debug!(held = held.len(), "client active again");
            return self.write_elements(b, held, false).await;
        }
        let nonza = match sm::parse(&el) {
            Some(Ok(nonza)) => nonza,
            Some(Err(e)) => return Err(End::Error("bad-format", Some(e.to_string()))),
            None => {
                return Err(End::Error(
                    "unsupported-stanza-type",
                    Some(format!("<{}/> in {}", el.name(), el.ns())),
                ))
            }
        };
        match (nonza, b.sm.as_mut()) {
            (Nonza::Enable { resume, max }, None) => self.enable_sm(b, resume, max).await,
            (Nonza::Ack { h }, Some(sm)) => {
                sm.request_outstanding = false;
                sm.ack(h).map_err(|too_high| {
                    End::ErrorWith("undefined-condition", Box::new(too_high.to_element()))
                })
            }
            (Nonza::Request, Some(sm)) => {
                let ack = sm::ack(sm.inbound);
                self.send_el(&ack).await
            }
            // Enabling twice, resuming a bound session, acks without SM (XEP-0198 §3, §5).
            _ => self.send_el(&sm::failed("unexpected-request", None)).await,
        }
    }

    /// `<enable/>` (XEP-0198 §3): counting starts now; with `resume`, the session can be taken
    /// over by a later connection for up to the granted timeout.
    async fn enable_sm(
        &mut self,
        b: &mut Bound,
        resume: bool,
        max: Option<u64>,
    ) -> Result<(), End> {
        let grant = self.grant_sm(resume, max);
        let reply = sm::enabled(grant.id.as_deref(), grant.max_secs);
        self.install_sm(b, grant);
        self.send_el(&reply).await
    }

    /// What an `<enable/>` gets: a resumption id (when resumption is asked for and allowed)
    /// and the timeout granted, the smaller of the client's `max` and ours.
    pub(super) fn grant_sm(&self, resume: bool, max: Option<u64>) -> SmGrant {
        let server_max = self.ctx.config.stream_management.resume_timeout_secs;
        let max_secs = max.map_or(server_max, |asked| asked.min(server_max));
        let id = (resume && max_secs > 0).then(random_id);
        SmGrant { id, max_secs }
    }

    /// Starts counting on the session, and makes it resumable under the granted id.
    fn install_sm(&mut self, b: &mut Bound, grant: SmGrant) {
        if let Some(id) = &grant.id {
            b.slot = Some(self.ctx.resumption.register(id.clone(), b.jid.to_bare()));
        }
        debug!(
            resume = grant.id.is_some(),
            granted = grant.max_secs,
            "stream management enabled"
        );
        b.sm = Some(Box::new(SmState::new(grant.id, grant.max_secs)));
    }

    /// Writes what the router queued, batching whatever else is already waiting.
    async fn write_queued(&mut self, b: &mut Bound, first: Outbound) -> Result<(), End> {
        let mut batch: Vec<Vec<u8>> = Vec::new();
        let mut next = Some(first);
        let mut end = None;
        self.in_flight.clear();
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
                    batch.push(shared.0.bytes_to(&shared.1));
                    if batch.len() >= MAX_BATCH {
                        break;
                    }
                    next = b.rx.try_recv().ok();
                    continue;
                }
                Outbound::Shared(shared) => shared.0.element_to(&shared.1),
                Outbound::Replaced => {
                    end = Some(End::Error(
                        "conflict",
                        Some("replaced by a new session".into()),
                    ));
                    break;
                }
            };
            match b.csi.as_mut() {
                Some(csi) if csi.is_inactive() || csi.has_held() => {
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
            if batch.len() >= MAX_BATCH {
                break;
            }
            next = b.rx.try_recv().ok();
        }
        self.send_batch(b, batch).await?;
        match end {
            Some(end) => Err(end),
            None => Ok(()),
        }
    }

    /// Writes stanzas that did not come off the queue (held ones, a server answer), through
    /// CSI when `filter` says so, and counted for Stream Management like any other.
    async fn write_elements(
        &mut self,
        b: &mut Bound,
        elements: Vec<Element>,
        filter: bool,
    ) -> Result<(), End> {
        self.in_flight.clear();
        let mut batch = Vec::with_capacity(elements.len());
        for el in elements {
            match b.csi.as_mut() {
                Some(csi) if filter => {
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
        self.send_batch(b, batch).await
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

    /// Ends the stream as `end` says: a stream error and footer, a footer, or nothing.
    /// Says goodbye the way `end` calls for. Bounded in time: a client that does not read
    /// cannot keep the connection (and its task) alive by not taking the last bytes.
    async fn finish(&mut self, end: End) {
        let _ = tokio::time::timeout(FAREWELL_TIMEOUT, self.say_goodbye(end)).await;
    }

    async fn say_goodbye(&mut self, end: End) {
        let (end, app) = match end {
            End::ErrorWith(condition, app) => (End::Error(condition, None), Some(app)),
            end => (end, None),
        };
        match end {
            End::Error(condition, text) => {
                debug!(condition, ?text, "closing stream with error");
                if self.open_stream().await.is_err() {
                    return;
                }
                let error = stream_error(condition, text, app.map(|app| *app));
                let bytes = xml::stream_element_to_bytes(&error, self.declares_stream_prefix());
                if self.transport.send(&[&bytes]).await.is_ok() {
                    let _ = self.transport.close_stream().await;
                }
            }
            End::PeerClosed => {
                let _ = self.open_stream().await;
                let _ = self.transport.close_stream().await;
            }
            End::Disconnected | End::ErrorWith(..) | End::TakenOver(_) => {}
            End::Stalled => {
                debug!("closing the connection of a client that stopped reading");
            }
        }
    }
}

/// What woke the bound session.
enum Step {
    Frame(Result<Incoming, TransportError>),
    Queued(Option<Outbound>),
    Stalled,
    Takeover(Takeover),
    Shutdown,
}

/// Stream management granted to a session (XEP-0198 `<enabled/>`).
#[derive(Debug)]
pub(super) struct SmGrant {
    pub id: Option<String>,
    pub max_secs: u64,
}

/// A detached session a new connection took over (XEP-0198 `<resume/>`).
pub(super) struct Resumed {
    pub bound: Box<Bound>,
    /// The client's count of what it received.
    pub h: u32,
    /// `<resumed/>` already went out (inline in SASL2's `<success/>`).
    pub announced: bool,
}

/// `<stream:error/>` (RFC 6120 §4.9.2): the condition, our text in English, and an
/// application-specific condition after them.
fn stream_error(condition: &'static str, text: Option<String>, app: Option<Element>) -> Element {
    let mut error = Element::bare("error", ns::STREAM);
    error.append_child(Element::bare(condition, ns::STREAMS_ERRORS));
    if let Some(text) = text {
        let mut el = Element::bare("text", ns::STREAMS_ERRORS);
        if let Ok(lang) = rxml::NcName::try_from("lang") {
            el.attrs_mut()
                .insert(rxml::Namespace::XML, lang, "en".to_owned());
        }
        el.append_text(text);
        error.append_child(el);
    }
    if let Some(app) = app {
        error.append_child(app);
    }
    error
}

const MAX_AUTH_ATTEMPTS: u32 = 5;

/// Counts a failed authentication (RFC 6120 or SASL2 alike); too many end the stream.
fn count_failure(failures: &mut u32) -> Result<(), End> {
    *failures += 1;
    if *failures >= MAX_AUTH_ATTEMPTS {
        return Err(End::Error(
            "policy-violation",
            Some("too many failed authentication attempts".into()),
        ));
    }
    Ok(())
}
const MAX_BATCH: usize = 64;

fn is_bind_request(el: &Element) -> bool {
    el.is("iq", ns::CLIENT) && el.attr("type") == Some("set") && el.has_child("bind", ns::BIND)
}

/// RFC 3921's session establishment, which older clients still send; it is a no-op now.
fn is_session_request(el: &Element, domain: &str) -> bool {
    el.attr("type") == Some("set")
        && el.has_child("session", ns::SESSION)
        && el.attr("to").is_none_or(|to| to == domain)
}

pub(super) fn random_id() -> String {
    use rand::Rng;
    let bytes: [u8; 12] = rand::thread_rng().gen();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
