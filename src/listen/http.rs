//! HTTP on port 5280: the RFC 7395 WebSocket endpoint, BOSH (XEP-0206, in `bosh`) and
//! XEP-0156 host-meta discovery.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, State, WebSocketUpgrade};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Extension;
use axum::Router as HttpRouter;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;
use tracing::{debug, info_span, warn, Instrument};

use super::admission::{self, Answer, Permit};
use super::deadline::ConnectionDeadline;
use super::read_meter::{MeteredIo, ReadMeter};
use super::websocket::WsTransport;
use super::ListenContext;
use crate::stream::c2s;
use crate::stream::context::StreamContext;
use crate::xml;

pub const WEBSOCKET_PATH: &str = "/xmpp-websocket";

/// Bytes the WebSocket library reads from the connection at a time.
const WEBSOCKET_READ_BUFFER: usize = 4096;

#[derive(Clone)]
struct HttpState {
    ctx: Arc<StreamContext>,
    /// What host-meta announces.
    urls: AnnouncedUrls,
    /// Served over TLS (wss://).
    encrypted: bool,
}

fn app(listen: &Arc<ListenContext>, urls: AnnouncedUrls, encrypted: bool) -> HttpRouter {
    let ctx = listen.streams.clone();
    HttpRouter::new()
        .route(WEBSOCKET_PATH, get(websocket))
        .route("/.well-known/host-meta", get(host_meta_xml))
        .route("/.well-known/host-meta.json", get(host_meta_json))
        .with_state(HttpState {
            ctx: ctx.clone(),
            urls,
            encrypted,
        })
        .merge(super::invite_page::routes(ctx.clone(), encrypted))
        .merge(super::upload::routes(ctx))
        .merge(super::bosh::routes(listen.clone(), encrypted))
}

/// The endpoints host-meta announces (XEP-0156): WebSocket, and BOSH when it is on.
#[derive(Clone)]
pub struct AnnouncedUrls {
    websocket: EndpointUrl,
    bosh: Option<EndpointUrl>,
}

/// One announced endpoint.
#[derive(Clone)]
enum EndpointUrl {
    /// `http.websocket_url` or `http.bosh_url`, the same for every domain (a reverse proxy's
    /// address, say).
    Configured(Arc<str>),
    /// The bound port (the TLS scheme when HTTPS listens), under the hosted domain the
    /// request is for.
    Derived {
        scheme: &'static str,
        port: u16,
        path: &'static str,
    },
}

impl EndpointUrl {
    fn for_domain(&self, domain: &str) -> String {
        match self {
            EndpointUrl::Configured(url) => url.to_string(),
            EndpointUrl::Derived { scheme, port, path } => {
                // A URL's host is written in A-labels: that is what every HTTP client and
                // certificate check compares.
                let host = idna::domain_to_ascii(domain).unwrap_or_else(|_| domain.to_owned());
                format!("{scheme}://{host}:{port}{path}")
            }
        }
    }

    /// Configured, or derived from the bound ports.
    fn new(
        configured: &Option<String>,
        schemes: (&'static str, &'static str),
        http_port: u16,
        https_port: Option<u16>,
        path: &'static str,
    ) -> EndpointUrl {
        match (configured, https_port) {
            (Some(url), _) => EndpointUrl::Configured(url.as_str().into()),
            (None, Some(port)) => EndpointUrl::Derived {
                scheme: schemes.1,
                port,
                path,
            },
            (None, None) => EndpointUrl::Derived {
                scheme: schemes.0,
                port: http_port,
                path,
            },
        }
    }
}

/// What host-meta announces: configured, or derived from the bound ports.
pub fn announced_urls(
    ctx: &StreamContext,
    http_port: u16,
    https_port: Option<u16>,
) -> AnnouncedUrls {
    let http = &ctx.config.http;
    let websocket = EndpointUrl::new(
        &http.websocket_url,
        ("ws", "wss"),
        http_port,
        https_port,
        WEBSOCKET_PATH,
    );
    let bosh = ctx.config.bosh.enabled.then(|| {
        let path = super::bosh::PATHS[0];
        EndpointUrl::new(
            &http.bosh_url,
            ("http", "https"),
            http_port,
            https_port,
            path,
        )
    });
    AnnouncedUrls { websocket, bosh }
}

/// The (WebSocket, BOSH) URLs for the domain a host-meta request names in its `Host`
/// (XEP-0156 §3: clients ask the domain of their JID); the main domain when it names none
/// hosted here.
fn announced_urls_for(state: &HttpState, headers: &HeaderMap) -> (String, Option<String>) {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(|h| h.rsplit_once(':').map_or(h, |(name, _)| name))
        .map(|h| h.to_ascii_lowercase())
        // Hosted domains are configured in their normal form (U-labels); a Host header can
        // only carry the A-label form, so it is brought to the same form before comparing.
        .and_then(|h| {
            crate::address::check_domain(&h)
                .ok()
                .map(|d| d.into_owned())
        });
    let config = &state.ctx.config;
    let domain = host
        .filter(|h| config.is_hosted(h))
        .unwrap_or_else(|| config.domain.clone());
    let urls = &state.urls;
    (
        urls.websocket.for_domain(&domain),
        urls.bosh.as_ref().map(|bosh| bosh.for_domain(&domain)),
    )
}

/// Plain HTTP on 5280.
pub async fn serve(listener: TcpListener, ctx: Arc<ListenContext>, urls: AnnouncedUrls) {
    let app = app(&ctx, urls, false);
    accept_loop(listener, ctx, app, None).await;
}

/// HTTPS on 5281: the same routes behind rustls.
pub async fn serve_tls(
    listener: TcpListener,
    ctx: Arc<ListenContext>,
    urls: AnnouncedUrls,
    acceptor: TlsAcceptor,
) {
    let app = app(&ctx, urls, true);
    accept_loop(listener, ctx, app, Some(acceptor)).await;
}

/// One accept loop for both ports (axum's own server speaks only plain TCP, and admission and
/// the negotiation deadline have to apply before a request is read).
async fn accept_loop(
    listener: TcpListener,
    ctx: Arc<ListenContext>,
    app: HttpRouter,
    acceptor: Option<TlsAcceptor>,
) {
    let timeout = Duration::from_secs(ctx.streams.config.c2s.negotiation_timeout_secs);
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                warn!(error = %e, "HTTP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let permit = match ctx.admission.admit(peer.ip()) {
            Ok(permit) => permit,
            Err(refusal) => {
                debug!(%peer, %refusal, "HTTP connection refused");
                let answer = match acceptor {
                    Some(_) => Answer::Nothing,
                    None => Answer::Http,
                };
                admission::turn_away(tcp, &refusal, answer);
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            // Until the WebSocket upgrade this is still the negotiation: the handshake and the
            // request are bounded by its deadline. A host-meta connection kept alive past it
            // is closed too; a browser opens a new one.
            let deadline = permit.deadline(timeout);
            match acceptor {
                Some(acceptor) => {
                    match tokio::time::timeout_at(deadline, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            serve_connection(tls, peer, app, permit, deadline, timeout).await
                        }
                        Ok(Err(e)) => debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => debug!(%peer, "TLS handshake timed out"),
                    }
                }
                None => serve_connection(tcp, peer, app, permit, deadline, timeout).await,
            }
        });
    }
}

/// Serves HTTP requests on one connection until it closes, is upgraded (the WebSocket then
/// runs on a task of its own, with a clone of the permit), or the deadline passes (held off
/// by uploads and downloads in progress, then `grace` after the last, see `deadline`).
async fn serve_connection<I>(
    io: I,
    peer: SocketAddr,
    app: HttpRouter,
    permit: Permit,
    deadline: tokio::time::Instant,
    grace: Duration,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    // The meter stays under hyper's connection and under the upgraded WebSocket alike: what
    // the WebSocket session reads is counted where it crosses the connection.
    let meter = ReadMeter::new();
    let io = MeteredIo::new(io, meter.clone());
    let holds = ConnectionDeadline::default();
    let passed = holds.clone();
    let service =
        hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            request.extensions_mut().insert(permit.clone());
            request.extensions_mut().insert(meter.clone());
            request.extensions_mut().insert(holds.clone());
            app.clone().oneshot(request)
        });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::select! {
        _ = connection => {}
        _ = passed.passed(deadline, grace) => {
            debug!(%peer, "HTTP connection closed at the negotiation deadline");
        }
    }
}

async fn websocket(
    State(state): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(permit): Extension<Permit>,
    Extension(meter): Extension<Arc<ReadMeter>>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let upgrade = upgrade.protocols(["xmpp"]);
    // RFC 7395 §3.2: the handshake must agree on the `xmpp` subprotocol.
    if upgrade.selected_protocol().is_none() {
        return (
            StatusCode::BAD_REQUEST,
            "Sec-WebSocket-Protocol must include 'xmpp' (RFC 7395)",
        )
            .into_response();
    }
    let ctx = state.ctx;
    let http = &ctx.config.http;
    let secure = state.encrypted
        || http.websocket_is_secure
        || (http.loopback_is_secure && peer.ip().is_loopback());
    let limits = ctx.config.c2s.xml_limits();
    let max_stanza = limits.max_stanza_size;
    upgrade
        // Room for the framing and a clear policy-violation from our own size check.
        .max_message_size(max_stanza * 2)
        .max_frame_size(max_stanza * 2)
        // The library's default (128 KiB, allocated up front) is a lot to keep per idle
        // session; stanzas are small, and a read is also what one quota may overshoot by.
        .read_buffer_size(WEBSOCKET_READ_BUFFER)
        .on_upgrade(move |socket| {
            let span =
                info_span!("c2s", %peer, transport = "websocket", jid = tracing::field::Empty);
            async move {
                let transport = WsTransport::new(socket, meter, peer, limits, secure);
                c2s::run(transport, ctx, permit).await;
            }
            .instrument(span)
        })
}

/// Browser clients fetch host-meta from other origins (XEP-0156 §3).
fn discovery_response(content_type: &'static str, body: String) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    response
}

const REL_WEBSOCKET: &str = "urn:xmpp:alt-connections:websocket";
const REL_BOSH: &str = "urn:xmpp:alt-connections:xbosh";

async fn host_meta_xml(State(state): State<HttpState>, headers: HeaderMap) -> Response {
    let (websocket, bosh) = announced_urls_for(&state, &headers);
    let link =
        |rel: &str, url: &str| format!("  <Link rel='{rel}' href='{}'/>\n", xml::escape_attr(url));
    let mut links = link(REL_WEBSOCKET, &websocket);
    if let Some(bosh) = bosh {
        links.push_str(&link(REL_BOSH, &bosh));
    }
    let body = format!(
        "<?xml version='1.0' encoding='utf-8'?>\n\
         <XRD xmlns='http://docs.oasis-open.org/ns/xri/xrd-1.0'>\n{links}</XRD>\n"
    );
    discovery_response("application/xrd+xml", body)
}

async fn host_meta_json(State(state): State<HttpState>, headers: HeaderMap) -> Response {
    let (websocket, bosh) = announced_urls_for(&state, &headers);
    let mut links = vec![serde_json::json!({ "rel": REL_WEBSOCKET, "href": websocket })];
    if let Some(bosh) = bosh {
        links.push(serde_json::json!({ "rel": REL_BOSH, "href": bosh }));
    }
    let body = serde_json::json!({ "links": links });
    discovery_response("application/json", body.to_string())
}
