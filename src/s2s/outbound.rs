//! A link to another server: where it is (`resolve`), TCP, TLS (STARTTLS or direct),
//! authentication as the originating server (SASL EXTERNAL with our certificate, else
//! dialback), then the stanzas of its queue, until it idles out or breaks. The same
//! negotiation, stopped before authentication, carries a dialback verification to another
//! server (`verify`).

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use minidom::Element;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info};

use super::dialback::{self, Dialback, DialbackType};
use super::inbound;
use super::pool::{self, Pair, Unreachable};
use super::wire::{Socket, Wire};
use super::S2s;
use crate::router::Router;
use crate::stanza::Kind;
use crate::stream::transport::TransportError;
use crate::xml::{ns, Frame};

#[derive(Debug, thiserror::Error)]
pub(super) enum LinkError {
    #[error("{0}")]
    Resolve(#[from] super::resolve::ResolveError),
    #[error("no connection could be opened ({0})")]
    Connect(String),
    #[error("no answer in time")]
    Timeout,
    #[error("{0}")]
    Tls(#[from] crate::tls::connector::ConnectError),
    #[error("its certificate does not verify and it must use one: {0}")]
    Certificate(crate::tls::s2s::PeerCertError),
    #[error("it does not offer TLS, which is required")]
    NoTls,
    #[error("it refused us: {0}")]
    Refused(String),
    #[error("it closed the stream: {0}")]
    StreamError(String),
    #[error("it broke the protocol: {0}")]
    Protocol(String),
    #[error("connection lost: {0}")]
    Lost(String),
    #[error("this server is shutting down")]
    Stopped,
}

impl From<TransportError> for LinkError {
    fn from(e: TransportError) -> Self {
        LinkError::Lost(e.to_string())
    }
}

impl From<std::io::Error> for LinkError {
    fn from(e: std::io::Error) -> Self {
        LinkError::Lost(e.to_string())
    }
}

impl LinkError {
    fn unreachable(&self) -> Unreachable {
        Unreachable {
            timeout: matches!(self, LinkError::Timeout),
            reason: self.to_string(),
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub(super) enum Auth {
    External,
    Dialback,
}

/// An open, secured (if required) stream to the remote server, its features read.
struct Opened {
    wire: Wire,
    stream_id: Option<String>,
    features: Element,
}

pub(super) async fn run_link(
    s2s: Arc<S2s>,
    router: Arc<Router>,
    pair: Pair,
    id: u64,
    mut queue: mpsc::Receiver<Element>,
) {
    // Not one of the tasks shutdown waits for: links carry the unavailable presence of the
    // sessions that end then, and close after them (`S2s::shutdown`).
    let Some(_slot) = s2s.connection_slot() else {
        let full = LinkError::Refused("s2s.max_connections reached here".into());
        return give_up(&s2s, &router, &pair, id, queue, full).await;
    };
    let limit = negotiation_limit(&s2s);
    let established = tokio::time::timeout(limit, establish(&s2s, &pair)).await;
    let Established {
        mut wire,
        auth,
        stream_id,
        dialback_offered,
    } = match established {
        Ok(Ok(link)) => link,
        Ok(Err(e)) => return give_up(&s2s, &router, &pair, id, queue, e).await,
        Err(_) => return give_up(&s2s, &router, &pair, id, queue, LinkError::Timeout).await,
    };
    tracing::Span::current().record("auth", tracing::field::debug(auth));
    info!("s2s link established");
    s2s.pool.succeeded(&pair.remote);
    let keepalive = Duration::from_secs(s2s.config.s2s.keepalive_secs.max(1));
    let idle = Duration::from_secs(s2s.config.s2s.idle_timeout_secs.max(1));
    let mut last_write = Instant::now();
    let mut last_use = Instant::now();
    let mut closing = s2s.closing.subscribe();
    let mut piggyback = Piggyback {
        authenticated: std::collections::HashSet::from([pair.local.clone()]),
        pending: std::collections::HashMap::new(),
    };
    // The peer's stream error was `<system-shutdown/>`: it goes away cleanly.
    let mut peer_shut_down = false;
    let ended = loop {
        tokio::select! {
            next = queue.recv() => {
                let Some(first) = next else { break None };
                // What else is queued already goes out in the same write: one system call
                // (and one TLS record) for many stanzas while the link is busy.
                let mut ready = Vec::new();
                let mut next = Some(first);
                let mut failed = None;
                while let Some(stanza) = next.take() {
                    let from_domain = from_domain(&stanza);
                    if piggyback.authenticated.contains(&from_domain) {
                        ready.push(stanza);
                    } else if let Some(waiting) = piggyback.pending.get_mut(&from_domain) {
                        waiting.push(stanza);
                    } else if let Some(stream_id) = stream_id.as_deref().filter(|_| dialback_offered) {
                        let key = s2s.keys.key(&pair.remote, &from_domain, stream_id);
                        let request = Dialback::result_request(&from_domain, &pair.remote, key);
                        if let Err(e) = wire.send_element(&request).await {
                            resend(&s2s, &router, stanza);
                            failed = Some(LinkError::from(e));
                            break;
                        }
                        debug!(domain = %from_domain, "dialback piggybacking");
                        piggyback.pending.insert(from_domain, vec![stanza]);
                    } else {
                        // The peer takes no dialback here: a link of the domain's own.
                        let own = Pair { local: from_domain, remote: pair.remote.clone() };
                        if let Some(kind) = Kind::of(&stanza) {
                            pool::send_on(&s2s, &router, kind, own, stanza);
                        }
                    }
                    if ready.len() < WRITE_BATCH {
                        next = queue.try_recv().ok();
                    }
                }
                if let Err(e) = wire.send_stanzas(&ready).await {
                    debug!(error = %e, "s2s write failed");
                    for stanza in ready {
                        resend(&s2s, &router, stanza);
                    }
                    failed = Some(LinkError::from(e));
                }
                if failed.is_some() {
                    break failed;
                }
                last_write = Instant::now();
                last_use = last_write;
            }
            frame = wire.next_frame() => match frame {
                Ok(Frame::Element(el)) => {
                    if let Some(error) = stream_error_text(&el) {
                        peer_shut_down = super::peer_shuts_down(&el);
                        break Some(LinkError::StreamError(error));
                    }
                    if let Some(answer) = Dialback::parse(&el) {
                        if let Err(e) = piggyback.answered(&s2s, &router, &mut wire, &pair, answer, &el).await {
                            break Some(e);
                        }
                        continue;
                    }
                    let Some(kind) = Kind::of(&el) else {
                        debug!(name = el.name(), "unexpected element on an outbound link ignored");
                        continue;
                    };
                    // Bidi: the server we connected to (whose identity the connection itself
                    // established) sends its stanzas back this way, from its own domain only.
                    let remote = pair.remote.as_str();
                    match inbound::admit(&s2s, &router, |d| d == remote, el) {
                        Ok((to, stanza)) => router.route(kind, to, stanza).await,
                        Err(end) => {
                            let error = end_element(end);
                            wire.close(error).await;
                            break Some(LinkError::Protocol("the peer sent a stanza it may not".into()));
                        }
                    }
                    last_use = Instant::now();
                }
                Ok(Frame::StreamClose) => break None,
                Ok(Frame::StreamOpen(_)) => break Some(LinkError::Protocol("a second stream header".into())),
                Err(e) => break Some(e.into()),
            },
            _ = tokio::time::sleep_until(last_write + keepalive) => {
                if let Err(e) = wire.keepalive().await {
                    break Some(e.into());
                }
                last_write = Instant::now();
            }
            _ = tokio::time::sleep_until(last_use + idle) => {
                debug!("s2s link idle: closing");
                break None;
            }
            // What is queued still goes out, below, before the stream closes.
            _ = super::until_closing(&mut closing) => break None,
        }
    };
    // New stanzas open a new link from here on; those already queued go out on this one while
    // it can still write, or take the new one.
    s2s.pool.remove(&pair, id);
    // An established link that broke, or that a stream error (the peer's or ours) ended: the
    // remote server's users may be gone without a word. Idling out, the peer's
    // `</stream:stream>` and our shutdown are clean (`None`), and so is the peer's own
    // `<system-shutdown/>` (`peer_shuts_down`).
    let lost = matches!(
        ended,
        Some(LinkError::Lost(_) | LinkError::StreamError(_) | LinkError::Protocol(_))
    );
    if lost && !peer_shut_down {
        s2s.lost(&router, &pair.remote);
    }
    for (domain, waiting) in piggyback.pending.drain() {
        let why = Unreachable {
            timeout: false,
            reason: format!("the link closed before {domain} was authenticated"),
        };
        for stanza in waiting {
            if let Some(kind) = Kind::of(&stanza) {
                pool::bounce(&router, kind, &stanza, why.stanza_error(&pair.remote));
            }
        }
    }
    queue.close();
    while let Ok(stanza) = queue.try_recv() {
        if ended.is_some() || wire.send_stanza(&stanza).await.is_err() {
            resend(&s2s, &router, stanza);
        }
    }
    if let Some(e) = &ended {
        info!(reason = %e, "s2s link ended");
    } else {
        info!("s2s link closed");
    }
    wire.close(None).await;
}

/// Stanzas written to a busy link at once, at most.
const WRITE_BATCH: usize = 64;

/// A stanza the link took but could not write: it goes out again through the pool (a new
/// link, or a bounce if the domain is now unreachable), never silently lost.
pub(super) fn resend(s2s: &Arc<S2s>, router: &Arc<Router>, stanza: Element) {
    let Some(kind) = Kind::of(&stanza) else {
        return;
    };
    let Some(to) = stanza.attr("to").and_then(|t| jid::Jid::new(t).ok()) else {
        return;
    };
    if s2s.is_closing() {
        pool::bounce(
            router,
            kind,
            &stanza,
            LinkError::Stopped
                .unreachable()
                .stanza_error(to.domain().as_str()),
        );
        return;
    }
    pool::send(s2s, router, kind, &to, stanza);
}

/// The link could not be set up: every stanza waiting for it is bounced with the reason, and
/// the domain is not tried again for a while.
async fn give_up(
    s2s: &Arc<S2s>,
    router: &Arc<Router>,
    pair: &Pair,
    id: u64,
    mut queue: mpsc::Receiver<Element>,
    e: LinkError,
) {
    info!(error = %e, "s2s link failed");
    let why = e.unreachable();
    let base = Duration::from_secs(s2s.config.s2s.retry_after_secs);
    if !matches!(e, LinkError::Stopped) {
        s2s.pool.failed(&pair.remote, why.clone(), base);
    }
    s2s.pool.remove(pair, id);
    queue.close();
    while let Some(stanza) = queue.recv().await {
        if let Some(kind) = Kind::of(&stanza) {
            pool::bounce(router, kind, &stanza, why.stanza_error(&pair.remote));
        }
    }
}

/// The whole set-up (lookup, connect, TLS, authentication) must be over within this.
fn negotiation_limit(s2s: &S2s) -> Duration {
    let c = &s2s.config.s2s;
    Duration::from_millis(c.dns_timeout_ms)
        + Duration::from_secs(c.connect_timeout_secs + c.negotiation_timeout_secs)
}

/// A link ready for stanzas.
struct Established {
    wire: Wire,
    auth: Auth,
    /// The id of the stream in use: what piggybacked dialback keys are made for.
    stream_id: Option<String>,
    /// The peer took dialback on this connection, so further domains can be added to it.
    dialback_offered: bool,
}

/// Dialback piggybacking (XEP-0220 §2.5): our other domains (services such as
/// `conference.`) authenticated on the link one by one, their stanzas held until then.
struct Piggyback {
    authenticated: std::collections::HashSet<String>,
    pending: std::collections::HashMap<String, Vec<Element>>,
}

impl Piggyback {
    async fn answered(
        &mut self,
        s2s: &Arc<S2s>,
        router: &Arc<Router>,
        wire: &mut Wire,
        pair: &Pair,
        answer: Dialback,
        el: &Element,
    ) -> Result<(), LinkError> {
        if answer.verify || answer.from != pair.remote {
            return Ok(());
        }
        let Some(waiting) = self.pending.remove(&answer.to) else {
            return Ok(());
        };
        if answer.kind == DialbackType::Valid {
            debug!(domain = %answer.to, "piggybacked domain authenticated");
            self.authenticated.insert(answer.to.clone());
            for stanza in waiting {
                if let Err(e) = wire.send_stanza(&stanza).await {
                    resend(s2s, router, stanza);
                    return Err(e.into());
                }
            }
            return Ok(());
        }
        let why = Unreachable {
            timeout: false,
            reason: format!(
                "it refused {} ({})",
                answer.to,
                error_text(el).unwrap_or_else(|| "dialback key invalid".into())
            ),
        };
        for stanza in waiting {
            if let Some(kind) = Kind::of(&stanza) {
                pool::bounce(router, kind, &stanza, why.stanza_error(&pair.remote));
            }
        }
        Ok(())
    }
}

fn from_domain(stanza: &Element) -> String {
    stanza
        .attr("from")
        .and_then(|f| jid::Jid::new(f).ok())
        .map(|jid| jid.domain().to_string())
        .unwrap_or_default()
}

async fn establish(s2s: &S2s, pair: &Pair) -> Result<Established, LinkError> {
    let mut opened = open(s2s, pair).await?;
    let dialback_offered = offers_dialback(&opened.features);
    if opened.features.has_child("bidi", inbound::BIDI_FEATURE) {
        // XEP-0288: the peer may send its stanzas for us back on this stream.
        opened
            .wire
            .send_element(&Element::bare("bidi", inbound::BIDI))
            .await?;
    }
    if offers_mechanism(&opened.features, "EXTERNAL") {
        if sasl_external(&mut opened.wire, &pair.local).await? {
            let opened = restart(s2s, opened.wire, pair).await?;
            return Ok(Established {
                wire: opened.wire,
                auth: Auth::External,
                stream_id: opened.stream_id,
                dialback_offered,
            });
        }
        debug!("SASL EXTERNAL refused; trying dialback");
    }
    if !dialback_offered {
        return Err(LinkError::Refused(
            "no authentication method we can use (SASL EXTERNAL refused or not offered, no \
             dialback)"
                .into(),
        ));
    }
    let id = opened
        .stream_id
        .clone()
        .ok_or_else(|| LinkError::Protocol("no stream id for dialback".into()))?;
    dialback(s2s, &mut opened.wire, pair, &id).await?;
    Ok(Established {
        wire: opened.wire,
        auth: Auth::Dialback,
        stream_id: Some(id),
        dialback_offered,
    })
}

/// Connects to the first address that answers and negotiates TLS, up to the features of the
/// secured stream.
async fn open(s2s: &S2s, pair: &Pair) -> Result<Opened, LinkError> {
    let dns = Duration::from_millis(s2s.config.s2s.dns_timeout_ms.max(1));
    let targets = tokio::time::timeout(dns, s2s.resolver.resolve(&pair.remote))
        .await
        .map_err(|_| LinkError::Timeout)??;
    let connect = Duration::from_secs(s2s.config.s2s.connect_timeout_secs.max(1));
    let limits = s2s.config.s2s.xml_limits();
    let mut last = String::from("no address");
    for target in targets {
        let socket = if target.direct_tls {
            let tls = s2s
                .connector
                .connect_direct(target.addr, &pair.local, &pair.remote);
            match tokio::time::timeout(connect, tls).await {
                Ok(Ok(tls)) => Socket::Opened(Box::new(tls)),
                Ok(Err(e)) => {
                    last = e.to_string();
                    continue;
                }
                Err(_) => {
                    last = format!("{}: timed out", target.addr);
                    continue;
                }
            }
        } else {
            match tokio::time::timeout(connect, TcpStream::connect(target.addr)).await {
                Ok(Ok(tcp)) => {
                    let _ = tcp.set_nodelay(true);
                    Socket::Plain(tcp)
                }
                Ok(Err(e)) => {
                    last = format!("{}: {e}", target.addr);
                    continue;
                }
                Err(_) => {
                    last = format!("{}: timed out", target.addr);
                    continue;
                }
            }
        };
        debug!(addr = %target.addr, direct_tls = target.direct_tls, "s2s connected");
        return restart(s2s, Wire::new(socket, limits), pair).await;
    }
    Err(LinkError::Connect(last))
}

/// Opens a stream on the wire (a new one after TLS or SASL) and reads the peer's header and
/// features; STARTTLS is negotiated here whenever offered.
async fn restart(s2s: &S2s, mut wire: Wire, pair: &Pair) -> Result<Opened, LinkError> {
    loop {
        wire.open(&pair.local, Some(&pair.remote), None).await?;
        let header = match wire.next_frame().await? {
            Frame::StreamOpen(header) => header,
            _ => return Err(LinkError::Protocol("expected a stream header".into())),
        };
        if header.default_ns.as_deref() != Some(ns::SERVER) {
            return Err(LinkError::Protocol("not a jabber:server stream".into()));
        }
        let features = match wire.next_frame().await? {
            Frame::Element(el) if el.is("features", ns::STREAM) => el,
            Frame::Element(el) => {
                if let Some(error) = stream_error_text(&el) {
                    return Err(LinkError::StreamError(error));
                }
                return Err(LinkError::Protocol(format!(
                    "expected features, got <{}>",
                    el.name()
                )));
            }
            Frame::StreamClose => return Err(LinkError::StreamError("closed".into())),
            Frame::StreamOpen(_) => return Err(LinkError::Protocol("a second header".into())),
        };
        if !wire.is_secure() {
            if features.has_child("starttls", ns::TLS) {
                wire.send_element(&Element::bare("starttls", ns::TLS))
                    .await?;
                match wire.next_frame().await? {
                    Frame::Element(el) if el.is("proceed", ns::TLS) => {}
                    _ => return Err(LinkError::Refused("STARTTLS failed".into())),
                }
                let tcp = wire
                    .take_plain()
                    .ok_or_else(|| LinkError::Protocol("STARTTLS twice".into()))?;
                let tls = s2s
                    .connector
                    .starttls(tcp, &pair.local, &pair.remote)
                    .await?;
                wire.upgraded(Socket::Opened(Box::new(tls)));
                continue;
            }
            if s2s.config.s2s.require_encryption {
                return Err(LinkError::NoTls);
            }
        }
        if let Some(Err(e)) = wire.opened_verified() {
            if s2s.config.s2s.certificate_required(&pair.remote) {
                return Err(LinkError::Certificate(e.clone()));
            }
            debug!(error = %e, "the remote server's certificate does not verify");
        }
        return Ok(Opened {
            wire,
            stream_id: header.id,
            features,
        });
    }
}

fn offers_mechanism(features: &Element, mechanism: &str) -> bool {
    features.get_child("mechanisms", ns::SASL).is_some_and(|m| {
        m.children()
            .any(|c| c.is("mechanism", ns::SASL) && c.text().trim() == mechanism)
    })
}

fn offers_dialback(features: &Element) -> bool {
    features.has_child("dialback", dialback::FEATURE_NS)
}

/// XEP-0178: EXTERNAL with our domain as authorization identity. True on success.
async fn sasl_external(wire: &mut Wire, local: &str) -> Result<bool, LinkError> {
    let authzid = base64::engine::general_purpose::STANDARD.encode(local);
    let mut auth = Element::builder("auth", ns::SASL).append(authzid).build();
    crate::stanza::set_attr(&mut auth, "mechanism", "EXTERNAL");
    wire.send_element(&auth).await?;
    loop {
        match wire.next_frame().await? {
            Frame::Element(el) if el.is("success", ns::SASL) => {
                wire.restart();
                return Ok(true);
            }
            Frame::Element(el) if el.is("failure", ns::SASL) => return Ok(false),
            // A challenge to EXTERNAL is answered empty (RFC 4422 appendix A).
            Frame::Element(el) if el.is("challenge", ns::SASL) => {
                wire.send_element(&Element::bare("response", ns::SASL))
                    .await?;
            }
            Frame::Element(el) => {
                if let Some(error) = stream_error_text(&el) {
                    return Err(LinkError::StreamError(error));
                }
                return Err(LinkError::Protocol(format!(
                    "unexpected <{}> in SASL",
                    el.name()
                )));
            }
            _ => return Err(LinkError::Protocol("stream ended in SASL".into())),
        }
    }
}

/// XEP-0220 §2.1 as the originating server: our key for this stream, then the receiving
/// server's verdict once it has asked our authoritative server.
async fn dialback(
    s2s: &S2s,
    wire: &mut Wire,
    pair: &Pair,
    stream_id: &str,
) -> Result<(), LinkError> {
    let key = s2s.keys.key(&pair.remote, &pair.local, stream_id);
    wire.send_element(&Dialback::result_request(&pair.local, &pair.remote, key))
        .await?;
    loop {
        match wire.next_frame().await? {
            Frame::Element(el) => {
                if let Some(error) = stream_error_text(&el) {
                    return Err(LinkError::StreamError(error));
                }
                let Some(answer) = Dialback::parse(&el) else {
                    continue;
                };
                if answer.verify || answer.from != pair.remote || answer.to != pair.local {
                    continue;
                }
                return match answer.kind {
                    DialbackType::Valid => Ok(()),
                    DialbackType::Invalid => Err(LinkError::Refused("dialback key invalid".into())),
                    DialbackType::Error | DialbackType::Request => Err(LinkError::Refused(
                        error_text(&el).unwrap_or_else(|| "dialback error".into()),
                    )),
                };
            }
            _ => return Err(LinkError::Protocol("stream ended in dialback".into())),
        }
    }
}

/// XEP-0220 §2.2 as the receiving server: asks the authoritative server of `originating`
/// whether `key` is the one it gave for stream `stream_id` that `receiving` opened. A
/// connection of its own, closed after the answer.
pub(super) async fn verify(
    s2s: &S2s,
    receiving: &str,
    originating: &str,
    stream_id: &str,
    key: &str,
) -> Result<bool, LinkError> {
    let pair = Pair {
        local: receiving.to_owned(),
        remote: originating.to_owned(),
    };
    let exchange = async {
        let _slot = s2s
            .connection_slot()
            .ok_or_else(|| LinkError::Refused("s2s.max_connections reached here".into()))?;
        let mut opened = open(s2s, &pair).await?;
        let request = Dialback::verify_request(receiving, originating, stream_id, key.to_owned());
        opened.wire.send_element(&request).await?;
        let valid = loop {
            match opened.wire.next_frame().await? {
                Frame::Element(el) => {
                    if let Some(error) = stream_error_text(&el) {
                        return Err(LinkError::StreamError(error));
                    }
                    let Some(answer) = Dialback::parse(&el) else {
                        continue;
                    };
                    if !answer.verify || answer.id.as_deref() != Some(stream_id) {
                        continue;
                    }
                    break answer.kind == DialbackType::Valid
                        && answer.from == originating
                        && answer.to == receiving;
                }
                _ => return Err(LinkError::Protocol("stream ended before the answer".into())),
            }
        };
        opened.wire.close(None).await;
        Ok(valid)
    };
    tokio::time::timeout(negotiation_limit(s2s), exchange)
        .await
        .map_err(|_| LinkError::Timeout)?
}

/// The `<stream:error/>` an `End` sends, if any.
fn end_element(end: crate::stream::end::End) -> Option<Element> {
    use crate::stream::end::End;
    match end {
        End::Error(condition, text) => {
            Some(crate::xml::stream_error::element(condition, text, None))
        }
        End::ErrorWith(condition, app) => Some(crate::xml::stream_error::element(
            condition,
            None,
            Some(*app),
        )),
        _ => None,
    }
}

/// The condition (and text) of a `<stream:error>`, None for any other element.
pub(super) fn stream_error_text(el: &Element) -> Option<String> {
    if !el.is("error", ns::STREAM) {
        return None;
    }
    let condition = el
        .children()
        .find(|c| c.ns() == ns::STREAMS_ERRORS && c.name() != "text")
        .map_or("undefined-condition", |c| c.name());
    Some(match el.get_child("text", ns::STREAMS_ERRORS) {
        Some(text) => format!("{condition} ({})", text.text()),
        None => condition.to_owned(),
    })
}

/// The condition of a dialback error answer.
fn error_text(el: &Element) -> Option<String> {
    // In the stream's namespace, which the parser hands over as `jabber:client`; some servers
    // send it in others.
    let error = el.children().find(|c| c.name() == "error")?;
    error
        .children()
        .find(|c| c.ns() == ns::STANZAS_ERRORS && c.name() != "text")
        .map(|c| format!("dialback error: {}", c.name()))
}
