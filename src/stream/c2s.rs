//! The client-to-server stream, written once for every transport: stream header, STARTTLS,
//! SASL, resource binding (RFC 6120 §4–7), then the bound session, which pumps stanzas between
//! the client and the router.

use std::sync::Arc;
use std::time::Duration;

use jid::{FullJid, Jid};
use minidom::Element;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;
use tracing::{debug, info};

use super::auth::{self, AuthOutcome};
use super::bind2::{self, InlineRequests};
use super::sasl2::{self, Sasl2Outcome};
use super::transport::{Incoming, Transport, TransportError};
use super::{fast, features};
use crate::router::Outbound;
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
    /// The client sent `</stream:stream>`: answer in kind.
    PeerClosed,
    /// The connection broke: nothing more can be sent.
    Disconnected,
    /// The client stopped reading: its queue filled while a write to it was blocked. A stream
    /// error could only sit behind the blocked bytes (perhaps after half a stanza), so the
    /// connection is just closed.
    Stalled,
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
}

pub(super) struct C2s<T: Transport> {
    pub transport: T,
    pub ctx: Arc<ServerContext>,
    header_sent: bool,
    /// Stanzas taken off the queue whose write has not finished: if the session ends before
    /// it does, they are routed again instead of vanishing with the connection.
    in_flight: Vec<Element>,
}

/// Runs one client connection to its end.
pub async fn run<T: Transport>(transport: T, ctx: Arc<ServerContext>) {
    let timeout = Duration::from_secs(ctx.config.c2s.negotiation_timeout_secs);
    let mut stream = C2s {
        transport,
        ctx,
        header_sent: false,
        in_flight: Vec::new(),
    };
    // Boxed, like the routing below: an idle session's task should not carry the space of the
    // negotiation's (or routing's) deepest await for its whole life.
    let negotiated =
        tokio::time::timeout_at(Instant::now() + timeout, Box::pin(stream.negotiate())).await;
    let Negotiated { jid, inline } = match negotiated {
        Ok(Ok(negotiated)) => negotiated,
        Ok(Err(end)) => return stream.finish(end).await,
        Err(_) => {
            debug!("negotiation timed out");
            return stream.finish(End::Error("connection-timeout", None)).await;
        }
    };
    tracing::Span::current().record("jid", tracing::field::display(&jid));
    info!("session bound");
    let session = stream.session(&jid, &inline);
    // Every idle session pays for this state; keep an eye on it.
    debug!(bytes = std::mem::size_of_val(&session), "session state");
    let end = session.await;
    Box::pin(stream.finish(end)).await;
}

impl<T: Transport> C2s<T> {
    /// Takes the stream from the first byte to a bound resource.
    async fn negotiate(&mut self) -> Result<Negotiated, End> {
        let mut username: Option<String> = None;
        let mut failures = 0u32;
        loop {
            self.expect_stream_header().await?;
            self.send_features(username.is_some()).await?;
            // Elements of this stream, until it restarts (after TLS or SASL) or binds.
            loop {
                let el = match self.transport.next_frame().await? {
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
                    self.transport.starttls().await?;
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
                // inline, the session starts; otherwise the client binds itself.
                if el.is("authenticate", ns::SASL2) && username.is_none() {
                    match sasl2::authenticate(self, el).await? {
                        Sasl2Outcome::Success(login) => {
                            let login = *login;
                            if let Some(jid) = login.bound {
                                self.send_stream_features(&features::after_inline_bind())
                                    .await?;
                                let inline = login.inline;
                                return Ok(Negotiated { jid, inline });
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
                        let jid = self.bind(user, &el).await?;
                        let inline = InlineRequests::default();
                        return Ok(Negotiated { jid, inline });
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
        let header = match self.transport.next_frame().await? {
            Incoming::Open(header) => header,
            Incoming::Close => return Err(End::PeerClosed),
            Incoming::Element(_) => {
                return Err(End::Error(
                    "invalid-xml",
                    Some("expected a stream header".into()),
                ))
            }
        };
        self.open_stream().await?;
        let domain = self.ctx.config.domain.as_str();
        if let Some(to) = &header.to {
            if !to.eq_ignore_ascii_case(domain) {
                return Err(End::Error(
                    "host-unknown",
                    Some(format!("this server is {domain}")),
                ));
            }
        }
        match header.version.as_deref() {
            Some(v) if v.starts_with("1.") => Ok(header),
            _ => Err(End::Error(
                "unsupported-version",
                Some("XMPP 1.0 streams only".into()),
            )),
        }
    }

    async fn open_stream(&mut self) -> Result<(), End> {
        if !self.header_sent {
            let id = random_id();
            let domain = self.ctx.config.domain.clone();
            self.transport.open_stream(&id, &domain).await?;
            self.header_sent = true;
        }
        Ok(())
    }

    async fn send_features(&mut self, authenticated: bool) -> Result<(), End> {
        let body = if authenticated {
            features::after_auth()
        } else {
            let mechanisms = auth::offered_mechanisms(self);
            let sasl2 = features::sasl2(&mechanisms, &fast::offered(self));
            let classic = features::before_auth(
                self.transport.can_starttls(),
                self.ctx.config.c2s.require_encryption,
                mechanisms,
                self.transport.channel_bindings(),
            );
            classic + &sasl2
        };
        self.send_stream_features(&body).await
    }

    async fn send_stream_features(&mut self, body: &str) -> Result<(), End> {
        let decl = self.transport.stream_prefix_declaration();
        let xml = format!("<stream:features{decl}>{body}</stream:features>");
        self.transport.send(&[xml.as_bytes()]).await?;
        Ok(())
    }

    /// RFC 6120 §7: binds the requested resource, or a generated one.
    async fn bind(&mut self, username: &str, iq: &Element) -> Result<FullJid, End> {
        let requested = iq
            .get_child("bind", ns::BIND)
            .and_then(|b| b.get_child("resource", ns::BIND))
            .map(|r| r.text())
            .filter(|r| !r.trim().is_empty());
        let resource = requested.unwrap_or_else(random_id);
        let full = format!("{username}@{}/{resource}", self.ctx.config.domain);
        let Ok(jid) = FullJid::new(&full) else {
            let error = StanzaError::bad_request().with_text("invalid resource");
            let reply = stanza::error_reply(iq, &error, &self.ctx.config.domain);
            self.send_el(&reply).await?;
            return Err(End::Error(
                "not-authorized",
                Some("no valid resource bound".into()),
            ));
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
        Ok(jid)
    }

    /// The bound session: client stanzas go to the router, the router's go to the client.
    async fn session(&mut self, jid: &FullJid, inline: &InlineRequests) -> End {
        let router = self.ctx.router.clone();
        let (tx, mut rx) = mpsc::channel(self.ctx.config.limits.session_queue);
        let stalled = Arc::new(Notify::new());
        let session_id = router.bind(jid.clone(), tx, stalled.clone());
        bind2::apply_after_bind(&router, jid, inline);
        let end = loop {
            tokio::select! {
                frame = self.transport.next_frame() => {
                    let result = match frame {
                        Ok(Incoming::Element(el)) => Box::pin(self.handle_client_stanza(jid, el)).await,
                        Ok(Incoming::Close) => Err(End::PeerClosed),
                        Ok(Incoming::Open(_)) => Err(End::Error("invalid-xml", None)),
                        Err(e) => Err(End::from(e)),
                    };
                    if let Err(end) = result {
                        break end;
                    }
                }
                first = rx.recv() => {
                    let Some(first) = first else { break End::Disconnected };
                    // A write blocked on a client that stopped reading must not outlive the
                    // queue filling up behind it.
                    let written = tokio::select! {
                        written = Box::pin(self.write_queued(first, &mut rx)) => written,
                        _ = stalled.notified() => Err(End::Stalled),
                    };
                    if let Err(end) = written {
                        break end;
                    }
                }
                _ = stalled.notified() => {
                    break End::Error("policy-violation", Some("too many stanzas waiting to be read".into()));
                }
            }
        };
        router.unbind(session_id, jid).await;
        // Whatever was queued (or being written) but never fully written goes back through
        // the router, which now sees the session gone: messages end up in offline storage
        // rather than being lost. Oldest first, so offline order is kept.
        rx.close();
        let mut unsent: Vec<Element> = std::mem::take(&mut self.in_flight);
        while let Ok(item) = rx.try_recv() {
            if let Outbound::Stanza(el) = item {
                unsent.push(*el);
            }
        }
        for el in unsent {
            if Kind::of(&el) != Some(Kind::Message) {
                continue;
            }
            if let Some(to) = el.attr("to").and_then(|t| Jid::new(t).ok()) {
                router.route(Kind::Message, to, el).await;
            }
        }
        end
    }

    /// Validates and stamps a stanza from the client, then hands it to the router.
    async fn handle_client_stanza(&mut self, jid: &FullJid, mut el: Element) -> Result<(), End> {
        let Some(kind) = Kind::of(&el) else {
            return Err(End::Error(
                "unsupported-stanza-type",
                Some(format!("<{}/> in {}", el.name(), el.ns())),
            ));
        };
        if let Some(from) = el.attr("from") {
            let claimed = Jid::new(from).ok();
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
        if kind == Kind::Iq {
            if el.attr("id").is_none() {
                return Err(End::Error("invalid-xml", Some("<iq/> without id".into())));
            }
            if is_session_request(&el, &self.ctx.config.domain) {
                let reply = stanza::iq_result(&el, None, &self.ctx.config.domain);
                return self.send_el(&reply).await;
            }
        }
        Box::pin(self.ctx.router.route_from_client(jid, el)).await;
        Ok(())
    }

    /// Writes what the router queued, batching whatever else is already waiting.
    async fn write_queued(
        &mut self,
        first: Outbound,
        rx: &mut mpsc::Receiver<Outbound>,
    ) -> Result<(), End> {
        let mut batch: Vec<Vec<u8>> = Vec::new();
        let mut next = Some(first);
        let mut end = None;
        self.in_flight.clear();
        while let Some(item) = next.take() {
            match item {
                Outbound::Stanza(el) => {
                    batch.push(xml::to_bytes(&el));
                    self.in_flight.push(*el);
                }
                Outbound::Replaced => {
                    end = Some(End::Error(
                        "conflict",
                        Some("replaced by a new session".into()),
                    ));
                    break;
                }
                Outbound::Shutdown => {
                    end = Some(End::Error("system-shutdown", None));
                    break;
                }
            }
            if batch.len() >= MAX_BATCH {
                break;
            }
            next = rx.try_recv().ok();
        }
        if !batch.is_empty() {
            let slices: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
            self.transport.send(&slices).await?;
        }
        self.in_flight.clear();
        match end {
            Some(end) => Err(end),
            None => Ok(()),
        }
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
        match end {
            End::Error(condition, text) => {
                debug!(condition, ?text, "closing stream with error");
                if self.open_stream().await.is_err() {
                    return;
                }
                let decl = self.transport.stream_prefix_declaration();
                let text = text
                    .map(|t| {
                        format!(
                            "<text xmlns='{}' xml:lang='en'>{}</text>",
                            ns::STREAMS_ERRORS,
                            xml::escape_text(&t)
                        )
                    })
                    .unwrap_or_default();
                let error = format!(
                    "<stream:error{decl}><{condition} xmlns='{}'/>{text}</stream:error>",
                    ns::STREAMS_ERRORS
                );
                if self.transport.send(&[error.as_bytes()]).await.is_ok() {
                    let _ = self.transport.close_stream().await;
                }
            }
            End::PeerClosed => {
                let _ = self.open_stream().await;
                let _ = self.transport.close_stream().await;
            }
            End::Disconnected => {}
            End::Stalled => {
                debug!("closing the connection of a client that stopped reading");
            }
        }
    }
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
