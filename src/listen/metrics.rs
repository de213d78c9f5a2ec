//! `/metrics` (Prometheus text format) on its own listener (`[metrics] listen`), apart from
//! the public HTTP listener: scraping needs no TLS, no admission limits and no WebSocket, and
//! the operator decides who reaches it by where it binds (loopback by default).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router as HttpRouter;
use tokio::net::TcpListener;
use tracing::warn;

use crate::metrics::Metrics;

pub const PATH: &str = "/metrics";

/// What Prometheus asks for and the text encoder writes (exposition format 0.0.4).
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Serves `/metrics` until the task is aborted.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    let app = HttpRouter::new()
        .route(PATH, get(scrape))
        .with_state(metrics);
    if let Err(e) = axum::serve(listener, app).await {
        warn!(error = %e, "metrics listener failed");
    }
}

async fn scrape(State(metrics): State<Arc<Metrics>>) -> Response {
    let mut response = metrics.render().into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    response
}
