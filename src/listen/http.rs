//! HTTP on port 5280: the RFC 7395 WebSocket endpoint and XEP-0156 host-meta discovery.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, State, WebSocketUpgrade};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router as HttpRouter;
use tokio::net::TcpListener;
use tracing::{info_span, warn, Instrument};

use super::websocket::WsTransport;
use crate::server::ServerContext;
use crate::stream::c2s;
use crate::xml;

pub const WEBSOCKET_PATH: &str = "/xmpp-websocket";

#[derive(Clone)]
struct HttpState {
    ctx: Arc<ServerContext>,
    /// The port actually bound (the configured one may be 0), for the default WebSocket URL.
    port: u16,
}

pub async fn serve(listener: TcpListener, ctx: Arc<ServerContext>) {
    let port = listener
        .local_addr()
        .map(|a| a.port())
        .unwrap_or(5280);
    let app = HttpRouter::new()
        .route(WEBSOCKET_PATH, get(websocket))
        .route("/.well-known/host-meta", get(host_meta_xml))
        .route("/.well-known/host-meta.json", get(host_meta_json))
        .with_state(HttpState { ctx, port });
    let service = app.into_make_service_with_connect_info::<SocketAddr>();
    if let Err(e) = axum::serve(listener, service).await {
        warn!(error = %e, "HTTP listener stopped");
    }
}

async fn websocket(
    State(HttpState { ctx, .. }): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
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
    let max_stanza = ctx.config.c2s.max_stanza_size;
    let secure = ctx.config.http.websocket_is_secure;
    upgrade
        // Room for the framing and a clear policy-violation from our own size check.
        .max_message_size(max_stanza * 2)
        .max_frame_size(max_stanza * 2)
        .on_upgrade(move |socket| {
            let span = info_span!("c2s", %peer, transport = "websocket", jid = tracing::field::Empty);
            async move {
                let transport = WsTransport::new(socket, peer, max_stanza, secure);
                c2s::run(transport, ctx).await;
            }
            .instrument(span)
        })
}

fn websocket_url(state: &HttpState) -> String {
    let (ctx, port) = (&state.ctx, state.port);
    ctx.config.http.websocket_url.clone().unwrap_or_else(|| {
        format!("ws://{}:{port}{WEBSOCKET_PATH}", ctx.config.domain)
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

async fn host_meta_xml(State(state): State<HttpState>) -> Response {
    let url = websocket_url(&state);
    let body = format!(
        "<?xml version='1.0' encoding='utf-8'?>\n\
         <XRD xmlns='http://docs.oasis-open.org/ns/xri/xrd-1.0'>\n  \
         <Link rel='urn:xmpp:alt-connections:websocket' href='{}'/>\n</XRD>\n",
        xml::escape_attr(&url)
    );
    discovery_response("application/xrd+xml", body)
}

async fn host_meta_json(State(state): State<HttpState>) -> Response {
    let url = websocket_url(&state);
    let body = serde_json::json!({
        "links": [{ "rel": "urn:xmpp:alt-connections:websocket", "href": url }]
    });
    discovery_response("application/json", body.to_string())
}
