//! One external component's connection (XEP-0114): its stream header, the handshake, then
//! stanzas both ways until either side closes.
//!
//! Stanzas cross the wire in `jabber:component:accept` and are handled in `jabber:client`,
//! the one form the router knows: the parser builds them so and the writer writes them so,
//! as for `jabber:server` on s2s streams (RFC 6120 §4.8.3).

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use minidom::Element;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info};

use super::{handshake, ExternalComponents, HandshakeSlot, NS_ACCEPT};
use crate::listen::byte_stream;
use crate::router::Router;
use crate::stanza::{self, Kind, StanzaError};
use crate::stream::end::End;
use crate::stream::transport::TransportError;
use crate::xml::{self, escape_attr, ns, Frame, StreamCondition, StreamParser};

/// Frames in and bytes out on a component's TCP connection.
struct Wire {
    tcp: TcpStream,
    parser: StreamParser,
    frames: VecDeque<Frame>,
    read: u64,
}

impl Wire {
    /// The next frame. Cancel-safe: a read dropped half-way loses nothing.
    async fn next_frame(&mut self) -> Result<Frame, TransportError> {
        loop {
            if let Some(frame) = self.frames.pop_front() {
                return Ok(frame);
            }
            std::future::poll_fn(|cx| {
                byte_stream::poll_frames(
                    cx,
                    &mut self.tcp,
                    &mut self.parser,
                    &mut self.frames,
                    &mut self.read,
                )
            })
            .await?;
        }
    }

    async fn send_bytes(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.tcp.write_all(bytes).await?;
        self.tcp.flush().await
    }

    /// Our header. XEP-0114 streams have no version and no features: the handshake follows.
    async fn open(&mut self, from: &str, id: &str) -> io::Result<()> {
        let header = format!(
            "<?xml version='1.0'?><stream:stream xmlns:stream='{}' xmlns='{}' from='{}' id='{}'>",
            ns::STREAM,
            NS_ACCEPT,
            escape_attr(from),
            escape_attr(id),
        );
        self.send_bytes(header.as_bytes()).await
    }

    /// A stanza (in `jabber:client` here), written in the stream's namespace.
    async fn send_stanza(&mut self, stanza: &Element) -> io::Result<()> {
        self.send_bytes(&xml::writer::to_bytes_in_default(stanza, ns::CLIENT))
            .await
    }

    /// Ends the stream, with an error first when there is one, and closes the connection.
    async fn close(&mut self, error: Option<Element>) {
        if let Some(error) = error {
            let _ = self
                .send_bytes(&xml::stream_element_to_bytes(&error, false))
                .await;
        }
        let _ = self.send_bytes(b"</stream:stream>").await;
        let _ = self.tcp.shutdown().await;
    }
}

/// Serves one connection to its end. `slot` counts it among the handshakes under way until
/// it authenticates.
pub(super) async fn run(
    hub: Arc<ExternalComponents>,
    router: Arc<Router>,
    tcp: TcpStream,
    slot: HandshakeSlot,
) {
    let mut wire = Wire {
        tcp,
        parser: StreamParser::new(hub.config.xml_limits()).stanzas_in(NS_ACCEPT, ns::CLIENT),
        frames: VecDeque::new(),
        read: 0,
    };
    let deadline = Instant::now() + Duration::from_secs(hub.config.handshake_timeout_secs.max(1));
    let domain = match tokio::time::timeout_at(deadline, accept(&hub, &mut wire)).await {
        Ok(Ok(domain)) => domain,
        Ok(Err(end)) => return finish(&mut wire, end).await,
        Err(_) => {
            let end = End::Error(
                StreamCondition::ConnectionTimeout,
                Some("no handshake in time".into()),
            );
            return finish(&mut wire, end).await;
        }
    };
    let (id, queue) = match hub.attach(&domain) {
        Ok(attached) => attached,
        Err(_) => {
            info!(%domain, "second connection for a connected component refused");
            let end = End::Error(
                StreamCondition::Conflict,
                Some(format!("{domain} is already connected")),
            );
            return finish(&mut wire, end).await;
        }
    };
    drop(slot);
    // Shutdown waits for this task: what is queued for the component is bounced first.
    let guard = router.track_task();
    let mut session = Session {
        hub: &hub,
        router: &router,
        domain: &domain,
        wire,
        queue,
    };
    let end = match session.wire.send_bytes(b"<handshake/>").await {
        Ok(()) => {
            info!(%domain, "component connected");
            session.serve().await
        }
        Err(e) => End::from(e),
    };
    hub.detach(&domain, id);
    session.queue.close();
    while let Ok(stanza) = session.queue.try_recv() {
        if let Some(kind) = Kind::of(&stanza) {
            super::bounce(&router, kind, &stanza, StanzaError::service_unavailable());
        }
    }
    info!(%domain, "component disconnected");
    finish(&mut session.wire, end).await;
    drop(guard);
}

/// Reads the component's header, answers with ours, then checks its handshake. Returns the
/// domain it authenticated for.
async fn accept(hub: &ExternalComponents, wire: &mut Wire) -> Result<String, End> {
    let header = match wire.next_frame().await.map_err(End::from)? {
        Frame::StreamOpen(header) => header,
        Frame::StreamClose => return Err(End::PeerClosed),
        Frame::Element(_) => {
            return Err(End::Error(
                StreamCondition::InvalidXml,
                Some("expected a stream header".into()),
            ))
        }
    };
    let stream_id = crate::stream::random_id::random_id();
    let to = header
        .to
        .as_deref()
        .and_then(|to| crate::address::parse(to).ok())
        .filter(|to| to.node().is_none() && to.resource().is_none())
        .map(|to| to.to_string());
    let secret = to.as_deref().and_then(|to| hub.secret(to));
    // Our header comes first, even before an error (RFC 6120 §4.9.1.1), from the domain
    // asked for when it is a component's.
    let from = match (&to, secret) {
        (Some(to), Some(_)) => to.as_str(),
        _ => hub.hosted.first().map(String::as_str).unwrap_or_default(),
    };
    wire.open(from, &stream_id).await.map_err(End::from)?;
    if header.default_ns.as_deref() != Some(NS_ACCEPT) {
        return Err(End::Error(
            StreamCondition::InvalidNamespace,
            Some(format!("components speak {NS_ACCEPT}")),
        ));
    }
    let (Some(domain), Some(secret)) = (to, secret) else {
        let asked = header.to.as_deref().unwrap_or("(no 'to')");
        return Err(End::Error(
            StreamCondition::HostUnknown,
            Some(format!("{asked} is not a component of this server")),
        ));
    };
    tracing::Span::current().record("domain", tracing::field::display(&domain));
    let proof = match wire.next_frame().await.map_err(End::from)? {
        Frame::Element(el) if el.name() == "handshake" && is_stanza_namespace(&el.ns()) => {
            el.text()
        }
        Frame::StreamClose => return Err(End::PeerClosed),
        _ => {
            return Err(End::Error(
                StreamCondition::NotAuthorized,
                Some("handshake first".into()),
            ))
        }
    };
    if !handshake::verify(&stream_id, secret, &proof) {
        info!(%domain, "component handshake with a wrong secret");
        return Err(End::Error(
            StreamCondition::NotAuthorized,
            Some("wrong handshake".into()),
        ));
    }
    Ok(domain)
}

async fn finish(wire: &mut Wire, end: End) {
    match end {
        End::Error(condition, text) => {
            debug!(?condition, ?text, "component stream error");
            wire.close(Some(xml::stream_error::element(condition, text, None)))
                .await;
        }
        End::ErrorWith(condition, app) => {
            wire.close(Some(xml::stream_error::element(
                condition,
                None,
                Some(*app),
            )))
            .await;
        }
        End::PeerClosed => wire.close(None).await,
        End::Disconnected | End::Stalled | End::TakenOver(_) => {}
    }
}

/// An authenticated component.
struct Session<'a> {
    hub: &'a ExternalComponents,
    router: &'a Arc<Router>,
    domain: &'a str,
    wire: Wire,
    /// Stanzas the router hands the component.
    queue: mpsc::Receiver<Element>,
}

impl Session<'_> {
    async fn serve(&mut self) -> End {
        let mut shutdown = self.router.shutdown_signal();
        let keepalive = match self.hub.config.keepalive_secs {
            0 => None,
            secs => Some(Duration::from_secs(secs)),
        };
        let mut next_keepalive = keepalive.map(|every| Instant::now() + every);
        loop {
            tokio::select! {
                frame = self.wire.next_frame() => {
                    let result = match frame {
                        Ok(Frame::Element(el)) => self.received(el).await,
                        Ok(Frame::StreamClose) => Err(End::PeerClosed),
                        Ok(Frame::StreamOpen(_)) => Err(End::Error(
                            StreamCondition::InvalidXml,
                            Some("unexpected stream header".into()),
                        )),
                        Err(e) => Err(End::from(e)),
                    };
                    if let Err(end) = result {
                        return end;
                    }
                }
                Some(stanza) = self.queue.recv() => {
                    if let Err(e) = self.wire.send_stanza(&stanza).await {
                        if let Some(kind) = Kind::of(&stanza) {
                            super::bounce(self.router, kind, &stanza, StanzaError::service_unavailable());
                        }
                        return End::from(e);
                    }
                    next_keepalive = keepalive.map(|every| Instant::now() + every);
                }
                _ = sleep_until(next_keepalive) => {
                    if let Err(e) = self.wire.send_bytes(b" ").await {
                        return End::from(e);
                    }
                    next_keepalive = keepalive.map(|every| Instant::now() + every);
                }
                _ = shutdown.wait() => return End::Error(StreamCondition::SystemShutdown, None),
            }
        }
    }

    /// A stanza from the component: its `from` must be the component's domain or an address
    /// at it (RFC 6120 §4.9.3.9 `invalid-from` otherwise); it then goes wherever its `to`
    /// says, like any stanza.
    async fn received(&mut self, el: Element) -> Result<(), End> {
        let mut el = self.in_client_namespace(el)?;
        let Some(kind) = Kind::of(&el) else {
            return Err(End::Error(
                StreamCondition::UnsupportedStanzaType,
                Some(format!("<{}/> is not understood here", el.name())),
            ));
        };
        match el.attr("from").map(crate::address::parse) {
            // What Prosody and ejabberd accept too: the component's domain is implied.
            None => stanza::set_attr(&mut el, "from", self.domain),
            Some(Ok(from)) if from.domain().as_str() == self.domain => {
                stanza::set_attr(&mut el, "from", from.to_string());
            }
            Some(_) => {
                return Err(End::Error(
                    StreamCondition::InvalidFrom,
                    Some(format!("stanzas from this stream are from {}", self.domain)),
                ))
            }
        }
        let to = match el.attr("to").map(crate::address::parse) {
            Some(Ok(to)) => to,
            None => {
                let error =
                    StanzaError::bad_request().with_text("a component's stanzas need a 'to'");
                return self.refuse(kind, &el, error).await;
            }
            Some(Err(e)) => {
                stanza::remove_attr(&mut el, "to");
                let error = StanzaError::jid_malformed().with_text(e.to_string());
                return self.refuse(kind, &el, error).await;
            }
        };
        stanza::set_attr(&mut el, "to", to.to_string());
        self.router.route(kind, to, el).await;
        Ok(())
    }

    /// The stanza as the router handles it, in `jabber:client`. The parser builds it so when
    /// it takes the stream's default namespace; a component that writes
    /// `xmlns='jabber:component:accept'` on the stanza itself gets the same, at the cost of
    /// one more parse, paid only by such components.
    fn in_client_namespace(&self, el: Element) -> Result<Element, End> {
        if el.ns() != NS_ACCEPT {
            return Ok(el);
        }
        let bytes = xml::writer::to_bytes_in_default(&el, NS_ACCEPT);
        xml::parse_standalone(&bytes, self.hub.config.xml_limits())
            .map_err(|e| End::Error(e.condition(), Some(e.to_string())))
    }

    /// Answers a stanza that goes nowhere with `error`, on this stream (not for presence or
    /// for what is itself an answer).
    async fn refuse(&mut self, kind: Kind, el: &Element, error: StanzaError) -> Result<(), End> {
        let answer =
            stanza::is_error(el) || (kind == Kind::Iq && stanza::stanza_type(el) == "result");
        if kind == Kind::Presence || answer {
            return Ok(());
        }
        let reply = stanza::error_reply(el, &error, self.domain);
        self.wire.send_stanza(&reply).await.map_err(End::from)
    }
}

/// The handshake's namespace: the stream's default, as the parser builds it, or written out.
fn is_stanza_namespace(namespace: &str) -> bool {
    namespace == ns::CLIENT || namespace == NS_ACCEPT
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
