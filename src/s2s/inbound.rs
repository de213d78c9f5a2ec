//! A stream another server opened to us (RFC 6120 §13): its header checked against the
//! domains served here, TLS, then its authentication, as SASL EXTERNAL with a certificate
//! that verifies for the domain it claims (XEP-0178), or dialback (XEP-0220) where policy
//! allows, verified with that domain's authoritative server. Stanzas are accepted only from
//! a domain the stream authenticated and only for domains served here, so no other server
//! can speak for ours.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use jid::Jid;
use minidom::Element;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, info};

use super::dialback::{self, Dialback, DialbackType};
use super::outbound;
use super::pool::Pair;
use super::wire::{Socket, Wire};
use super::S2s;
use crate::router::Router;
use crate::stanza::Kind;
use crate::stream::end::End;
use crate::xml::{self, ns, Frame, StreamCondition, StreamHeader};

/// XEP-0288: the feature we offer, and what the initiating server sends to use it.
pub(super) const BIDI_FEATURE: &str = "urn:xmpp:features:bidi";
pub(super) const BIDI: &str = "urn:xmpp:bidi";

struct Inbound {
    s2s: Arc<S2s>,
    router: Arc<Router>,
    wire: Wire,
    /// The domain served here that the stream's header named.
    local: String,
    /// The domain the peer's header claimed (`from`).
    claimed: Option<String>,
    stream_id: String,
    /// Remote domains this stream may send stanzas from.
    authenticated: HashSet<String>,
    sasl_done: bool,
    /// Dialback verifications under way with authoritative servers.
    verifying: JoinSet<(Dialback, Result<bool, String>)>,
    /// The initiating server asked to use the stream both ways (XEP-0288).
    bidi: bool,
    /// Stanzas for the peer that take this stream back (bidi): the pool's link for the pair.
    returning: Option<Returning>,
}

struct Returning {
    pair: Pair,
    id: u64,
    queue: mpsc::Receiver<Element>,
}

pub(super) async fn run(
    s2s: Arc<S2s>,
    router: Arc<Router>,
    tcp: TcpStream,
    peer: SocketAddr,
    direct_tls: bool,
) {
    let limits = s2s.config.s2s.xml_limits();
    let negotiation = Duration::from_secs(s2s.config.s2s.negotiation_timeout_secs.max(1));
    let deadline = Instant::now() + negotiation;
    let socket = if direct_tls {
        match tokio::time::timeout_at(deadline, s2s.tls.s2s_direct.accept(tcp)).await {
            Ok(Ok(tls)) => Socket::Accepted(Box::new(tls)),
            Ok(Err(e)) => {
                debug!(%peer, error = %e, "s2s TLS handshake failed");
                return;
            }
            Err(_) => return,
        }
    } else {
        Socket::Plain(tcp)
    };
    let mut stream = Inbound {
        wire: Wire::new(socket, limits),
        local: s2s.config.domain.clone(),
        claimed: None,
        stream_id: String::new(),
        authenticated: HashSet::new(),
        sasl_done: false,
        verifying: JoinSet::new(),
        bidi: false,
        returning: None,
        s2s,
        router,
    };
    let end = stream.serve(deadline).await;
    let lost = is_loss(&end);
    for domain in &stream.authenticated {
        stream.s2s.inbound.leave(domain);
        if lost {
            stream.s2s.lost(&stream.router, domain);
        }
    }
    stream.give_back_returning().await;
    stream.finish(end).await;
}

impl Inbound {
    async fn serve(&mut self, deadline: Instant) -> End {
        if let Err(end) = self.accept_header().await {
            return end;
        }
        let idle = Duration::from_secs(self.s2s.config.s2s.idle_timeout_secs.max(1));
        let mut last_read = Instant::now();
        let mut read_so_far = self.wire.bytes_read();
        let mut closing = self.s2s.closing.subscribe();
        loop {
            let unauthenticated = self.authenticated.is_empty();
            let timer = if unauthenticated {
                deadline
            } else {
                last_read + idle
            };
            tokio::select! {
                frame = self.wire.next_frame() => {
                    let frame = match frame {
                        Ok(frame) => frame,
                        Err(e) => return End::from(e),
                    };
                    last_read = Instant::now();
                    read_so_far = self.wire.bytes_read();
                    if let Err(end) = self.handle(frame).await {
                        return end;
                    }
                }
                Some(stanza) = next_returning(&mut self.returning) => {
                    if let Err(e) = self.wire.send_stanza(&stanza).await {
                        super::outbound::resend(&self.s2s, &self.router, stanza);
                        return End::from(e);
                    }
                    last_read = Instant::now();
                }
                Some(done) = self.verifying.join_next(), if !self.verifying.is_empty() => {
                    if let Ok((request, verdict)) = done {
                        if let Err(end) = self.verified(request, verdict).await {
                            return end;
                        }
                    }
                }
                _ = tokio::time::sleep_until(timer) => {
                    // Keepalives count as traffic (they are read, and complete no frame).
                    if !unauthenticated && self.wire.bytes_read() > read_so_far {
                        read_so_far = self.wire.bytes_read();
                        last_read = Instant::now();
                        continue;
                    }
                    if unauthenticated {
                        return End::Error(StreamCondition::ConnectionTimeout, Some("not authenticated in time".into()));
                    }
                    debug!("s2s stream idle: closing");
                    return End::PeerClosed;
                }
                _ = super::until_closing(&mut closing) => return End::Error(StreamCondition::SystemShutdown, None),
            }
        }
    }

    /// The stream ends: stanzas still queued for the peer go out another way (a link of
    /// their own), and new ones no longer come here.
    async fn give_back_returning(&mut self) {
        let Some(mut returning) = self.returning.take() else {
            return;
        };
        self.s2s.pool.remove(&returning.pair, returning.id);
        returning.queue.close();
        while let Ok(stanza) = returning.queue.try_recv() {
            super::outbound::resend(&self.s2s, &self.router, stanza);
        }
    }

    /// With bidi, our stanzas for the domain just authenticated take this stream back,
    /// unless a link of our own to it is already there.
    fn adopt_for_return(&mut self, remote: &str) {
        if !self.bidi || self.returning.is_some() {
            return;
        }
        let pair = Pair {
            local: self.local.clone(),
            remote: remote.to_owned(),
        };
        let capacity = self.s2s.config.s2s.queue_limit.max(1);
        if let Some((id, queue)) = self.s2s.pool.adopt(&pair, capacity) {
            debug!(%remote, "bidi: stanzas for the peer take this stream");
            self.returning = Some(Returning { pair, id, queue });
        }
    }

    async fn finish(&mut self, end: End) {
        match end {
            End::Error(condition, text) => {
                debug!(?condition, ?text, "s2s stream error");
                let error = xml::stream_error::element(condition, text, None);
                self.wire.close(Some(error)).await;
            }
            End::ErrorWith(condition, app) => {
                let error = xml::stream_error::element(condition, None, Some(*app));
                self.wire.close(Some(error)).await;
            }
            End::PeerClosed => self.wire.close(None).await,
            _ => {}
        }
        info!("s2s stream ended");
    }

    /// Reads the peer's stream header and answers with ours and the features.
    async fn accept_header(&mut self) -> Result<(), End> {
        let header = match self.wire.next_frame().await.map_err(End::from)? {
            Frame::StreamOpen(header) => header,
            Frame::StreamClose => return Err(End::PeerClosed),
            Frame::Element(_) => {
                return Err(End::Error(
                    StreamCondition::InvalidXml,
                    Some("expected a stream header".into()),
                ))
            }
        };
        let first = self.stream_id.is_empty();
        self.stream_id = crate::stream::random_id::random_id();
        let to = header.to.as_deref().map(str::to_ascii_lowercase);
        match &to {
            Some(to) if self.s2s.serves(&self.router, to) => {
                if first {
                    self.local = to.clone();
                } else if *to != self.local {
                    return Err(self
                        .refuse_header(
                            StreamCondition::HostUnknown,
                            "a different domain after a restart",
                        )
                        .await);
                }
            }
            _ => {
                let why = format!(
                    "{} is not served here",
                    to.as_deref().unwrap_or("(no 'to')")
                );
                return Err(self.refuse_header(StreamCondition::HostUnknown, &why).await);
            }
        }
        let claimed = header.from.as_deref().map(str::to_ascii_lowercase);
        if first {
            self.claimed = claimed.clone();
            let span = tracing::Span::current();
            span.record("local", tracing::field::display(&self.local));
            if let Some(claimed) = &claimed {
                span.record("remote", tracing::field::display(claimed));
            }
        }
        self.wire
            .open(&self.local, self.claimed.as_deref(), Some(&self.stream_id))
            .await
            .map_err(End::from)?;
        check_header(&header)?;
        if self
            .claimed
            .as_deref()
            .is_some_and(|c| self.s2s.serves(&self.router, c))
        {
            return Err(End::Error(
                StreamCondition::InvalidFrom,
                Some("another server cannot speak for a domain served here".into()),
            ));
        }
        let features = self.features();
        self.wire.send_element(&features).await.map_err(End::from)?;
        Ok(())
    }

    /// Answers a header we cannot accept: our header first (RFC 6120 §4.9.1.1), then the error.
    async fn refuse_header(&mut self, condition: StreamCondition, why: &str) -> End {
        let local = self.local.clone();
        let _ = self.wire.open(&local, None, Some(&self.stream_id)).await;
        End::Error(condition, Some(why.to_owned()))
    }

    fn features(&self) -> Element {
        let config = &self.s2s.config.s2s;
        let mut features = Element::builder("features", ns::STREAM);
        if !self.wire.is_secure() {
            let mut starttls = Element::builder("starttls", ns::TLS);
            if config.require_encryption {
                starttls = starttls.append(Element::bare("required", ns::TLS));
            }
            features = features.append(starttls.build());
        }
        let may_authenticate = self.wire.is_secure() || !config.require_encryption;
        if may_authenticate && !self.sasl_done {
            if self.certificate_verifies() {
                features = features.append(
                    Element::builder("mechanisms", ns::SASL)
                        .append(
                            Element::builder("mechanism", ns::SASL)
                                .append("EXTERNAL")
                                .build(),
                        )
                        .build(),
                );
            }
            features = features.append(
                Element::builder("dialback", dialback::FEATURE_NS)
                    .append(Element::bare("errors", dialback::FEATURE_NS))
                    .build(),
            );
        }
        if may_authenticate && !self.bidi {
            features = features.append(Element::bare("bidi", BIDI_FEATURE));
        }
        if may_authenticate {
            features = features.append(crate::stream::features::stream_limits(
                config.max_stanza_size,
                Some(config.idle_timeout_secs),
            ));
        }
        features.build()
    }

    /// Whether the peer's certificate verifies for the domain its header claimed.
    fn certificate_verifies(&self) -> bool {
        self.verifies_for(self.claimed.as_deref())
    }

    fn verifies_for(&self, domain: Option<&str>) -> bool {
        match (self.wire.peer_certificates(), domain) {
            (Some(chain), Some(domain)) => self.s2s.trust.verify(chain, domain).is_ok(),
            _ => false,
        }
    }

    async fn handle(&mut self, frame: Frame) -> Result<(), End> {
        let el = match frame {
            Frame::Element(el) => el,
            Frame::StreamClose => return Err(End::PeerClosed),
            Frame::StreamOpen(_) => {
                return Err(End::Error(
                    StreamCondition::InvalidXml,
                    Some("unexpected stream header".into()),
                ))
            }
        };
        if el.is("starttls", ns::TLS) {
            return self.starttls().await;
        }
        if el.is("bidi", BIDI) {
            self.bidi = true;
            if let Some(remote) = self.authenticated.iter().next().cloned() {
                self.adopt_for_return(&remote);
            }
            return Ok(());
        }
        if el.is("auth", ns::SASL) {
            return self.sasl_external(&el).await;
        }
        if el.ns() == dialback::NS {
            return self.dialback(&el).await;
        }
        if let Some(kind) = Kind::of(&el) {
            return self.stanza(kind, el).await;
        }
        if el.is("error", ns::STREAM) {
            debug!(error = ?outbound::stream_error_text(&el), "the peer ended the stream");
            // Answered like its `</stream:stream>`: not a lost connection (`is_loss`).
            if super::peer_shuts_down(&el) {
                return Err(End::PeerClosed);
            }
            return Err(End::Disconnected);
        }
        Err(End::Error(
            StreamCondition::UnsupportedStanzaType,
            Some(format!("<{}/> is not understood here", el.name())),
        ))
    }

    async fn starttls(&mut self) -> Result<(), End> {
        if self.wire.is_secure() {
            return Err(End::Error(
                StreamCondition::PolicyViolation,
                Some("TLS already runs".into()),
            ));
        }
        self.wire
            .send_element(&Element::bare("proceed", ns::TLS))
            .await
            .map_err(End::from)?;
        let Some(tcp) = self.wire.take_plain() else {
            return Err(End::Disconnected);
        };
        let acceptor = self.s2s.tls.s2s_starttls(&self.local);
        let tls = acceptor.accept(tcp).await.map_err(|e| {
            debug!(error = %e, "s2s STARTTLS handshake failed");
            End::Disconnected
        })?;
        self.wire.upgraded(Socket::Accepted(Box::new(tls)));
        self.accept_header().await
    }

    /// XEP-0178: the certificate the peer presented in the TLS handshake must be valid for
    /// the domain it claims, which the authorization identity may repeat but not change.
    async fn sasl_external(&mut self, auth: &Element) -> Result<(), End> {
        if auth.attr("mechanism") != Some("EXTERNAL") || self.sasl_done {
            return self.sasl_failure("invalid-mechanism").await;
        }
        let text = auth.text();
        let text = text.trim();
        let authzid = match text {
            "" | "=" => None,
            encoded => match base64::engine::general_purpose::STANDARD.decode(encoded) {
                Ok(bytes) => Some(String::from_utf8_lossy(&bytes).to_ascii_lowercase()),
                Err(_) => return self.sasl_failure("incorrect-encoding").await,
            },
        };
        let Some(claimed) = self.claimed.clone() else {
            return self.sasl_failure("not-authorized").await;
        };
        if authzid.as_deref().is_some_and(|id| id != claimed) {
            return self.sasl_failure("invalid-authzid").await;
        }
        if !self.certificate_verifies() || self.s2s.serves(&self.router, &claimed) {
            return self.sasl_failure("not-authorized").await;
        }
        self.wire
            .send_element(&Element::bare("success", ns::SASL))
            .await
            .map_err(End::from)?;
        self.sasl_done = true;
        self.authenticate(&claimed, "external")?;
        self.wire.restart();
        self.accept_header().await
    }

    async fn sasl_failure(&mut self, condition: &str) -> Result<(), End> {
        let failure = Element::builder("failure", ns::SASL)
            .append(Element::bare(condition, ns::SASL))
            .build();
        self.wire.send_element(&failure).await.map_err(End::from)
    }

    /// Admits `domain` on this stream, within `s2s.max_connections_per_domain` streams
    /// from it at a time.
    fn authenticate(&mut self, domain: &str, method: &'static str) -> Result<(), End> {
        if !self.authenticated.contains(domain) {
            if !self
                .s2s
                .inbound
                .enter(domain, self.s2s.config.s2s.max_connections_per_domain)
            {
                return Err(End::Error(
                    StreamCondition::PolicyViolation,
                    Some(format!("too many connections from {domain}")),
                ));
            }
            self.authenticated.insert(domain.to_owned());
        }
        info!(remote = %domain, method, "s2s stream authenticated");
        tracing::Span::current().record("auth", method);
        self.adopt_for_return(domain);
        Ok(())
    }

    async fn dialback(&mut self, el: &Element) -> Result<(), End> {
        let Some(request) = Dialback::parse(el) else {
            return Err(End::Error(
                StreamCondition::InvalidXml,
                Some("dialback without from/to".into()),
            ));
        };
        if request.kind != DialbackType::Request {
            // Answers come on streams we opened, not on this one.
            return Err(End::Error(
                StreamCondition::InvalidXml,
                Some("unsolicited dialback answer".into()),
            ));
        }
        let config = &self.s2s.config.s2s;
        if config.require_encryption && !self.wire.is_secure() {
            return Err(End::Error(
                StreamCondition::PolicyViolation,
                Some("TLS first".into()),
            ));
        }
        if request.verify {
            // We are the authoritative server: is this the key we gave?
            let ours = self.s2s.serves(&self.router, &request.to);
            let valid = ours
                && request.id.as_deref().is_some_and(|id| {
                    self.s2s
                        .keys
                        .is_valid(&request.key, &request.from, &request.to, id)
                });
            debug!(from = %request.from, to = %request.to, valid, "dialback verify answered");
            let answer = if ours {
                request.answer(valid)
            } else {
                request.error("item-not-found", "that domain is not served here")
            };
            return self.wire.send_element(&answer).await.map_err(End::from);
        }
        // We are the receiving server: the originating server claims `from`.
        if !self.s2s.serves(&self.router, &request.to) {
            let answer = request.error("item-not-found", "that domain is not served here");
            return self.wire.send_element(&answer).await.map_err(End::from);
        }
        if self.s2s.serves(&self.router, &request.from) {
            return Err(End::Error(
                StreamCondition::InvalidFrom,
                Some("another server cannot speak for a domain served here".into()),
            ));
        }
        if self.authenticated.contains(&request.from) {
            return self
                .wire
                .send_element(&request.answer(true))
                .await
                .map_err(End::from);
        }
        // A certificate valid for the domain is proof enough, without asking (XEP-0344).
        if self.verifies_for(Some(&request.from)) {
            self.authenticate(&request.from.clone(), "dialback+certificate")?;
            return self
                .wire
                .send_element(&request.answer(true))
                .await
                .map_err(End::from);
        }
        if config.certificate_required(&request.from) {
            let answer = request.error(
                "policy-violation",
                "this domain must authenticate with a certificate that verifies",
            );
            return self.wire.send_element(&answer).await.map_err(End::from);
        }
        let s2s = self.s2s.clone();
        let stream_id = self.stream_id.clone();
        self.verifying.spawn(async move {
            let verdict =
                outbound::verify(&s2s, &request.to, &request.from, &stream_id, &request.key)
                    .await
                    .map_err(|e| e.to_string());
            (request, verdict)
        });
        Ok(())
    }

    /// The authoritative server answered (or could not be asked).
    async fn verified(
        &mut self,
        request: Dialback,
        verdict: Result<bool, String>,
    ) -> Result<(), End> {
        let answer = match verdict {
            Ok(true) => {
                self.authenticate(&request.from, "dialback")?;
                request.answer(true)
            }
            Ok(false) => {
                info!(remote = %request.from, "dialback key refused by the authoritative server");
                request.answer(false)
            }
            Err(e) => {
                info!(remote = %request.from, error = %e, "dialback verification failed");
                request.error("remote-server-not-found", &format!("cannot verify: {e}"))
            }
        };
        self.wire.send_element(&answer).await.map_err(End::from)
    }

    async fn stanza(&mut self, kind: Kind, stanza: Element) -> Result<(), End> {
        if self.authenticated.is_empty() {
            return Err(End::Error(
                StreamCondition::NotAuthorized,
                Some("authenticate first".into()),
            ));
        }
        let authenticated = &self.authenticated;
        let (to, stanza) = admit(
            &self.s2s,
            &self.router,
            |d| authenticated.contains(d),
            stanza,
        )?;
        self.router.route(kind, to, stanza).await;
        Ok(())
    }
}

/// A stanza another server sent, checked before it is routed: valid addresses, a `from` of a
/// domain the stream authenticated (`authenticated`), a `to` served here. Returns where it goes.
pub(super) fn admit(
    s2s: &S2s,
    router: &Router,
    authenticated: impl Fn(&str) -> bool,
    mut stanza: Element,
) -> Result<(Jid, Element), End> {
    let from = stanza.attr("from").map(crate::address::parse);
    let to = stanza.attr("to").map(crate::address::parse);
    let (Some(Ok(from)), Some(Ok(to))) = (from, to) else {
        return Err(End::Error(
            StreamCondition::ImproperAddressing,
            Some("a stanza between servers needs valid 'from' and 'to'".into()),
        ));
    };
    if !authenticated(from.domain().as_str()) {
        return Err(End::Error(
            StreamCondition::InvalidFrom,
            Some(format!(
                "{} is not authenticated on this stream",
                from.domain()
            )),
        ));
    }
    if !s2s.serves(router, to.domain().as_str()) {
        return Err(End::Error(
            StreamCondition::HostUnknown,
            Some(format!("{} is not served here", to.domain())),
        ));
    }
    // Addresses as the router expects them (prepared, no trailing dot).
    crate::stanza::set_attr(&mut stanza, "from", from.to_string());
    crate::stanza::set_attr(&mut stanza, "to", to.to_string());
    Ok((to, stanza))
}

/// Whether a stream ending so means the connection with the peer was lost: it broke, the
/// peer ended it with a stream error, or we did. A `</stream:stream>` from the peer, our own
/// close of an idle stream (the peer sent nothing, keepalives included, for
/// `s2s.idle_timeout_secs`: a server that does not use a stream may well be silent on it) and
/// `<system-shutdown/>` (ours) are not.
fn is_loss(end: &End) -> bool {
    match end {
        End::Disconnected | End::Stalled | End::ErrorWith(..) => true,
        End::Error(condition, _) => !matches!(condition, StreamCondition::SystemShutdown),
        End::PeerClosed | End::TakenOver(_) => false,
    }
}

async fn next_returning(returning: &mut Option<Returning>) -> Option<Element> {
    match returning {
        Some(returning) => returning.queue.recv().await,
        None => std::future::pending().await,
    }
}

fn check_header(header: &StreamHeader) -> Result<(), End> {
    if header.default_ns.as_deref() != Some(ns::SERVER) {
        return Err(End::Error(
            StreamCondition::InvalidNamespace,
            Some("server-to-server streams are in jabber:server".into()),
        ));
    }
    match header.version.as_deref() {
        Some(v) if v.starts_with("1.") => Ok(()),
        _ => Err(End::Error(
            StreamCondition::UnsupportedVersion,
            Some("XMPP 1.0 streams only".into()),
        )),
    }
}
