//! XMPP over BOSH (XEP-0124, XEP-0206) at `/http-bind` (and `/bosh`): each session is a c2s
//! stream over `BoshTransport`, so SASL, binding, Stream Management and the rest are the same
//! as on TCP. This file is the HTTP side: it takes requests in (in `rid` order), hands their
//! payloads to the stream, and holds them until there is something to answer.

pub mod body;
mod session;
mod transport;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Extension;
use axum::Router as HttpRouter;
use tokio::time::Instant;
use tracing::{debug, info_span, Instrument};

use self::body::Body;
use self::session::{Ended, Params, Session, Sessions};
use self::transport::BoshTransport;
use super::admission::Permit;
use super::deadline::ConnectionDeadline;
use super::ListenContext;
use crate::stream::c2s;
use crate::stream::context::Admitted;
use crate::stream::random_id::random_id;
use crate::stream::transport::Incoming;
use crate::xml::{ns, StreamHeader};

/// Where Prosody serves BOSH, and where ejabberd does.
pub const PATHS: [&str; 2] = ["/http-bind", "/bosh"];

/// XEP-0124's version implemented (§7.1 `ver`).
const BOSH_VERSION: &str = "1.11";

/// How many requests the client may have held at once: one, as Prosody and ejabberd allow.
const MAX_HOLD: u64 = 1;

/// Answers waiting for requests, in stanza-size units: enough for a burst (a roster, a MAM
/// page), little enough that an abandoned session costs no more than a slow TCP one.
const PENDING_STANZAS: usize = 4;

#[derive(Clone)]
struct Bosh {
    listen: Arc<ListenContext>,
    sessions: Arc<Sessions>,
    /// Served over HTTPS.
    encrypted: bool,
}

/// The BOSH routes of one HTTP listener (none when `bosh.enabled` is off). Sessions belong to
/// the listener they were created on: one created over HTTPS is not continued over HTTP.
pub fn routes(listen: Arc<ListenContext>, encrypted: bool) -> HttpRouter {
    if !listen.streams.config.bosh.enabled {
        return HttpRouter::new();
    }
    let state = Bosh {
        listen,
        sessions: Arc::new(Sessions::default()),
        encrypted,
    };
    let mut router = HttpRouter::new();
    for path in PATHS {
        router = router.route(path, post(request).options(preflight).get(describe));
    }
    router.with_state(state)
}

/// Browser clients (Converse.js) post from other origins (XEP-0124 §3 leaves CORS to HTTP).
async fn preflight() -> Response {
    super::cors::preflight("GET, POST, OPTIONS")
}

async fn describe() -> Response {
    let text = "This is the BOSH endpoint of an XMPP server (XEP-0124, XEP-0206): \
                POST <body/> elements here from an XMPP client.\n";
    let mut response = text.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    super::cors::any_origin(response)
}

/// Every answer: a `<body/>`, 200 OK, even a termination (XEP-0124 §17: the HTTP status codes
/// of §19 are for clients of older versions).
fn answer(body: impl Into<String>) -> Response {
    let mut response = body.into().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/xml; charset=utf-8"),
    );
    super::cors::any_origin(response)
}

async fn request(
    State(bosh): State<Bosh>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    deadline: Option<Extension<ConnectionDeadline>>,
    request_body: axum::body::Body,
) -> Response {
    let config = &bosh.listen.streams.config;
    // A held request may take `wait`: the connection is not cut under it.
    let _hold = deadline.as_ref().map(|Extension(deadline)| deadline.hold());
    let limits = config.c2s.xml_limits();
    let bytes = match axum::body::to_bytes(request_body, limits.max_stanza_size).await {
        Ok(bytes) => bytes,
        Err(e) => {
            debug!(%peer, error = %e, "BOSH request body refused");
            return answer(body::terminate("policy-violation"));
        }
    };
    let parsed = match body::parse(&bytes, limits) {
        Ok(parsed) => parsed,
        Err(e) => {
            debug!(%peer, error = %e, "malformed BOSH body");
            return answer(body::terminate("bad-request"));
        }
    };
    match parsed.sid.clone() {
        None => create(&bosh, peer, parsed).await,
        Some(sid) => match bosh.sessions.get(&sid) {
            Some(session) => {
                session.add_bytes_read(bytes.len());
                carry_on(&bosh, session, parsed).await
            }
            None => answer(body::terminate("item-not-found")),
        },
    }
}

/// The connection's place for as long as the session lives, with a negotiation deadline
/// counted from the session's creation (the HTTP connection that created it may be older).
struct SessionPermit {
    permit: Permit,
    created: tokio::time::Instant,
}

impl Admitted for SessionPermit {
    fn deadline(&self, negotiation_timeout: Duration) -> tokio::time::Instant {
        self.created + negotiation_timeout
    }

    fn bound(&self) {
        self.permit.bound()
    }
}

/// Session creation (XEP-0124 §7, XEP-0206 §6): a stream starts, and this request is answered
/// with the session's attributes and the stream's features.
async fn create(bosh: &Bosh, peer: SocketAddr, request: Body) -> Response {
    let ctx = &bosh.listen.streams;
    let config = &ctx.config;
    let Some(to) = request.to.clone().filter(|to| !to.is_empty()) else {
        return answer(body::terminate("improper-addressing"));
    };
    let domain = crate::address::check_domain(to.strip_suffix('.').unwrap_or(&to))
        .ok()
        .map(|d| d.into_owned());
    let Some(domain) = domain.filter(|d| config.is_hosted(d)) else {
        return answer(body::terminate("host-unknown"));
    };
    // Each session counts as a connection of its address, however many share one HTTP
    // connection.
    let permit = match bosh.listen.admission.admit(peer.ip()) {
        Ok(permit) => permit,
        Err(refusal) => {
            debug!(%peer, %refusal, "BOSH session refused");
            return answer(body::terminate("policy-violation"));
        }
    };
    let bosh_config = &config.bosh;
    let max_wait = bosh_config.max_wait_secs;
    let held = request.hold.unwrap_or(MAX_HOLD).min(MAX_HOLD) as usize;
    let params = Params {
        wait: Duration::from_secs(request.wait.unwrap_or(max_wait).min(max_wait)),
        hold: held,
        requests: held + 1,
        inactivity: Duration::from_secs(bosh_config.inactivity_secs),
        max_pause: Duration::from_secs(bosh_config.max_pause_secs),
        max_pending: config.c2s.max_stanza_size * PENDING_STANZAS,
    };
    let sid = random_id();
    let (session, inbound) = Session::new(sid.clone(), domain, params);
    session.state().last_rid = request.rid;
    bosh.sessions.insert(session.clone());
    // In progress from here: the stream counts no inactivity while this request is served.
    let _active = Active::enter(&session, request.rid);

    let http = &config.http;
    let secure = bosh.encrypted
        || bosh_config.is_secure
        || (http.loopback_is_secure && peer.ip().is_loopback());
    let transport = BoshTransport::new(
        session.clone(),
        bosh.sessions.clone(),
        inbound,
        peer,
        secure,
    );
    let span = info_span!("c2s", %peer, transport = "bosh", %sid, jid = tracing::field::Empty);
    let permit = SessionPermit {
        permit,
        created: Instant::now(),
    };
    tokio::spawn(c2s::run(transport, ctx.clone(), permit).instrument(span));

    let header = StreamHeader {
        to: Some(to),
        version: request.xmpp_version.clone(),
        lang: request.lang.clone(),
        default_ns: Some(ns::CLIENT.to_owned()),
        ..StreamHeader::default()
    };
    if session.inbound.send(Incoming::Open(header)).await.is_err() {
        return answer(body::terminate("internal-server-error"));
    }
    hold(bosh, &session, request.rid, true, false).await
}

/// A request of an existing session: taken in its `rid` order, its payloads handed to the
/// stream, then held until there is something to answer.
async fn carry_on(bosh: &Bosh, session: Arc<Session>, request: Body) -> Response {
    let _active = match take_in(&session, request.rid).await {
        Ok(active) => active,
        Err(refused) => return refused,
    };
    let params = session.params;
    if let Some(pause) = request.pause {
        // §10: the session may stay idle this long once this request is answered.
        session.state().idle_allowance = Duration::from_secs(pause).min(params.max_pause);
    }
    let mut frames = Vec::with_capacity(request.payloads.len() + 2);
    if request.restart {
        frames.push(Incoming::Open(StreamHeader {
            to: request.to.clone(),
            version: Some("1.0".to_owned()),
            lang: request.lang.clone(),
            default_ns: Some(ns::CLIENT.to_owned()),
            ..StreamHeader::default()
        }));
    }
    frames.extend(request.payloads.into_iter().map(Incoming::Element));
    if request.terminate {
        frames.push(Incoming::Close);
    }
    // The stream reads no faster than the client's rates allow: a client over them waits
    // here, and one that stays over them past a request's life is cut off.
    let patience = params.wait.max(Duration::from_secs(10));
    for frame in frames {
        match tokio::time::timeout(patience, session.inbound.send(frame)).await {
            Ok(Ok(())) => {}
            // The stream is gone: the hold below answers with how it ended.
            Ok(Err(_)) => break,
            Err(_) => {
                session.end(Ended::Condition("policy-violation"));
                break;
            }
        }
    }
    let immediate = request.pause.is_some();
    hold(bosh, &session, request.rid, false, immediate).await
}

/// A request in progress, counted until it is answered (or its connection drops).
struct Active<'a> {
    session: &'a Session,
    rid: u64,
}

impl<'a> Active<'a> {
    fn enter(session: &'a Session, rid: u64) -> Active<'a> {
        let mut state = session.state();
        state.active += 1;
        state.in_progress.push(rid);
        state.idle_since = None;
        Active { session, rid }
    }
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        let mut state = self.session.state();
        state.active = state.active.saturating_sub(1);
        let rid = self.rid;
        state.held.retain(|held| *held != rid);
        state.in_progress.retain(|taken| *taken != rid);
        state.resent.retain(|resent| *resent != rid);
        if state.active == 0 {
            state.idle_since = Some(Instant::now());
        }
        drop(state);
        // The stream's inactivity check looks again from the new idle start.
        self.session.notify();
    }
}

/// Takes a request in once the ones before it are (§14.3): a repeated `rid` gets its answer
/// again, one outside the window ends the session.
async fn take_in(session: &Session, rid: u64) -> Result<Active<'_>, Response> {
    let params = session.params;
    let give_up = Instant::now() + params.wait.max(Duration::from_secs(1));
    loop {
        let changed = session.changed();
        match place_of(session, rid) {
            Place::Next => return Ok(Active::enter(session, rid)),
            Place::Answered(text) => return Err(answer(text)),
            Place::Refused(condition) => return Err(end_with(session, condition)),
            Place::Wait => {}
        }
        // An earlier request is still on its way, or a held one is answering.
        if tokio::time::timeout_at(give_up, changed).await.is_err() {
            return Err(end_with(session, "item-not-found"));
        }
    }
}

/// Where a request's `rid` stands.
enum Place {
    /// The one expected: taken in (counted as `last_rid`).
    Next,
    /// Already answered: the same answer again.
    Answered(String),
    /// Not now: a request before it has not come, or the same `rid` is still held.
    Wait,
    /// Out of the window, forgotten, or one request too many: the session ends.
    Refused(&'static str),
}

fn place_of(session: &Session, rid: u64) -> Place {
    let params = session.params;
    let mut state = session.state();
    if rid <= state.last_rid {
        if let Some((_, cached)) = state.answered.iter().find(|(r, _)| *r == rid) {
            return Place::Answered(cached.to_string());
        }
        if state.in_progress.contains(&rid) {
            // Sent again while still served (the client lost the connection it was held on):
            // the first copy answers now, and this one repeats its answer.
            if state.held.contains(&rid) {
                state.held.retain(|held| *held != rid);
                drop(state);
                session.notify();
            } else if !state.resent.contains(&rid) {
                state.resent.push(rid);
            }
            return Place::Wait;
        }
        return Place::Refused("item-not-found");
    }
    if rid > state.last_rid + params.requests as u64 {
        debug!(rid, "BOSH rid out of window");
        return Place::Refused("item-not-found");
    }
    if rid > state.last_rid + 1 {
        return Place::Wait;
    }
    if state.active >= params.requests {
        debug!("more simultaneous BOSH requests than allowed");
        return Place::Refused("policy-violation");
    }
    state.last_rid = rid;
    state.idle_allowance = params.inactivity;
    Place::Next
}

/// Ends the session with `condition` and tells this request so.
fn end_with(session: &Session, condition: &'static str) -> Response {
    session.end(Ended::Condition(condition));
    answer(body::terminate(condition))
}

/// Holds the request until the stream has something for the client, the session ends, a
/// newer request takes its place, or `wait` passes; then answers it.
async fn hold(
    bosh: &Bosh,
    session: &Session,
    rid: u64,
    creation: bool,
    immediate: bool,
) -> Response {
    let params = session.params;
    let until = if immediate {
        Instant::now()
    } else {
        Instant::now() + params.wait
    };
    {
        let mut state = session.state();
        // A request already sent again is not held: its copy waits for this answer.
        if !state.resent.contains(&rid) {
            state.held.push_back(rid);
            while state.held.len() > params.hold {
                state.held.pop_front();
            }
        }
    }
    // Releases the older held request, if this one took its place.
    session.notify();
    loop {
        let changed = session.changed();
        {
            let mut state = session.state();
            let released = !state.held.contains(&rid);
            let ready = !state.pending.is_empty() || state.ended.is_some();
            // The creation answer waits for the stream's features (or its end).
            let creation_ready = !creation || state.authid.is_some() || state.ended.is_some();
            if (ready && creation_ready) || released || Instant::now() >= until {
                state.held.retain(|held| *held != rid);
                let text = compose(session, &mut state, creation);
                let ended = state.ended.is_some() && state.pending.is_empty();
                state.answered.push_back((rid, text.as_str().into()));
                while state.answered.len() > params.requests {
                    state.answered.pop_front();
                }
                drop(state);
                if ended {
                    bosh.sessions.remove(&session.sid);
                }
                session.notify();
                return answer(text);
            }
        }
        let _ = tokio::time::timeout_at(until, changed).await;
    }
}

/// The answer's text: the session's attributes on the first, everything pending, and the
/// termination once the stream has ended and nothing is left to send.
fn compose(session: &Session, state: &mut session::State, creation: bool) -> String {
    let params = session.params;
    let mut attrs: Vec<(&str, String)> = Vec::new();
    if creation {
        let secs = |d: Duration| d.as_secs().to_string();
        attrs.extend([
            ("sid", session.sid.clone()),
            ("wait", secs(params.wait)),
            ("requests", params.requests.to_string()),
            ("hold", params.hold.to_string()),
            ("inactivity", secs(params.inactivity)),
            ("maxpause", secs(params.max_pause)),
            ("polling", "1".to_owned()),
            ("ver", BOSH_VERSION.to_owned()),
            ("xmpp:version", "1.0".to_owned()),
            ("xmpp:restartlogic", "true".to_owned()),
        ]);
        if let Some(authid) = &state.authid {
            attrs.push(("authid", authid.clone()));
        }
        attrs.push(("from", session.domain.clone()));
    }
    let mut payload = Vec::new();
    while let Some(el) = state.pending.pop_front() {
        state.pending_bytes = state.pending_bytes.saturating_sub(el.len());
        payload.extend_from_slice(&el);
    }
    let terminate = state.ended.map(|ended| match ended {
        Ended::Closed => None,
        Ended::Condition(condition) => Some(condition),
    });
    let attrs: Vec<(&str, &str)> = attrs.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let mut text = body::open_tag(&attrs, terminate);
    // Our own serializer wrote these: UTF-8 by construction.
    text.push_str(&String::from_utf8_lossy(&payload));
    text.push_str("</body>");
    text
}
