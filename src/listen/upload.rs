//! XEP-0363 uploads over HTTP: `PUT /upload/{token}/{name}?…` with a signed slot (see
//! `modules::upload::slot`), `GET`/`HEAD` for anyone holding the URL, with ranges, and CORS
//! for web clients. Bodies stream straight to the file store and back, never held whole.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router as HttpRouter};
use chrono::Utc;
use futures::StreamExt;
use tokio::io::AsyncReadExt;
use tracing::{debug, info, warn};

use super::deadline::{ConnectionDeadline, DeadlineHold};
use crate::modules::upload::slot::{self, Slot, SlotError};
use crate::modules::upload::{normal_content_type, valid_key, FileError, Upload, UploadHandle};
use crate::storage::{StorageError, StoredUpload};
use crate::stream::context::StreamContext;

/// Bytes read from the file store per chunk of a download.
const READ_CHUNK: usize = 64 * 1024;

#[derive(Clone)]
struct UploadState {
    ctx: Arc<StreamContext>,
}

/// The upload routes, for the HTTP and the HTTPS listener.
pub fn routes(ctx: Arc<StreamContext>) -> HttpRouter {
    HttpRouter::new()
        .route(
            "/upload/{token}/{name}",
            get(download).put(upload).options(preflight),
        )
        .with_state(UploadState { ctx })
}

impl UploadState {
    fn upload(&self) -> Option<Arc<Upload>> {
        self.ctx
            .router
            .service::<UploadHandle>()
            .and_then(|handle| handle.get().cloned())
    }
}

fn status(code: StatusCode, text: &'static str) -> Response {
    super::cors::any_origin((code, text).into_response())
}

async fn preflight() -> Response {
    super::cors::preflight("GET, HEAD, PUT, OPTIONS")
}

/// `<token>/<name>` of a request, or `None` for a token no slot could have made.
fn upload_path(token: &str, name: &str) -> Option<String> {
    valid_key(token).then(|| format!("{token}/{name}"))
}

async fn upload(
    State(state): State<UploadState>,
    Path((token, name)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    deadline: Option<Extension<ConnectionDeadline>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let _hold = deadline.map(|Extension(d)| d.hold());
    let Some(service) = state.upload() else {
        return status(StatusCode::NOT_FOUND, "no upload service here\n");
    };
    let Some(path) = upload_path(&token, &name) else {
        return status(StatusCode::NOT_FOUND, "no such upload\n");
    };
    let router = &state.ctx.router;
    let secret = match service.secret(router).await {
        Ok(secret) => secret,
        Err(e) => {
            warn!(error = %e, "reading the upload secret failed");
            return status(StatusCode::SERVICE_UNAVAILABLE, "try again later\n");
        }
    };
    let now = Utc::now().timestamp();
    let slot = match Slot::verify(&path, query.as_deref().unwrap_or(""), secret, now) {
        Ok(slot) => slot,
        Err(e) => {
            debug!(%path, error = %e, "upload refused");
            return status(
                StatusCode::FORBIDDEN,
                match e {
                    SlotError::Expired => "this upload URL has expired\n",
                    _ => "this upload URL is not valid\n",
                },
            );
        }
    };
    if let Err((code, why)) = check_headers(&slot, &headers) {
        return status(code, why);
    }
    let storage = router.storage();
    match storage.uploads.upload(&path).await {
        Ok(None) => {}
        Ok(Some(_)) => return status(StatusCode::CONFLICT, "already uploaded\n"),
        Err(e) => {
            warn!(error = %e, "reading an upload record failed");
            return status(StatusCode::SERVICE_UNAVAILABLE, "try again later\n");
        }
    }
    if let Err(e) = service.check_quotas(router, &slot.owner, slot.size).await {
        debug!(%path, error = ?e.text, "upload over quota");
        return status(StatusCode::PAYLOAD_TOO_LARGE, "upload quota used up\n");
    }
    let files = service.files();
    let mut pending = match files.create(&token).await {
        Ok(pending) => pending,
        Err(e) => {
            warn!(error = %e, "creating an upload file failed");
            return status(StatusCode::INTERNAL_SERVER_ERROR, "cannot store the file\n");
        }
    };
    let mut received: u64 = 0;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            // The client went away or sent less than it announced: dropping `pending` leaves
            // nothing behind.
            Err(e) => {
                debug!(%path, error = %e, "upload ended early");
                return status(StatusCode::BAD_REQUEST, "the upload ended early\n");
            }
        };
        received += chunk.len() as u64;
        if received > slot.size {
            return status(
                StatusCode::PAYLOAD_TOO_LARGE,
                "more bytes than the slot allows\n",
            );
        }
        if let Err(e) = pending.write(&chunk).await {
            warn!(error = %e, "writing an upload failed");
            return status(StatusCode::INTERNAL_SERVER_ERROR, "cannot store the file\n");
        }
    }
    if received != slot.size {
        return status(StatusCode::BAD_REQUEST, "fewer bytes than the slot says\n");
    }
    let record = StoredUpload {
        path: path.clone(),
        owner: slot.owner.clone(),
        size: slot.size,
        content_type: slot.content_type.clone(),
        created_at_ms: Utc::now().timestamp_millis(),
    };
    // The record first: its primary key decides between two PUTs racing for one slot, before
    // either file becomes visible.
    match storage.uploads.record_upload(&record).await {
        Ok(()) => {}
        Err(StorageError::Conflict) => return status(StatusCode::CONFLICT, "already uploaded\n"),
        Err(e) => {
            warn!(error = %e, "recording an upload failed");
            return status(StatusCode::SERVICE_UNAVAILABLE, "try again later\n");
        }
    }
    if let Err(e) = pending.commit().await {
        warn!(error = %e, "storing an upload failed");
        let _ = storage.uploads.delete_upload(&path).await;
        return status(StatusCode::INTERNAL_SERVER_ERROR, "cannot store the file\n");
    }
    info!(owner = %slot.owner, %path, size = slot.size, "file uploaded");
    status(StatusCode::CREATED, "")
}

/// The PUT's length and type against the slot's (XEP-0363 §4: both must match).
fn check_headers(slot: &Slot, headers: &HeaderMap) -> Result<(), (StatusCode, &'static str)> {
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match length {
        None => return Err((StatusCode::LENGTH_REQUIRED, "Content-Length is required\n")),
        Some(length) if length > slot.size => {
            return Err((
                StatusCode::PAYLOAD_TOO_LARGE,
                "larger than the slot allows\n",
            ))
        }
        Some(length) if length != slot.size => {
            return Err((
                StatusCode::BAD_REQUEST,
                "Content-Length differs from the slot's size\n",
            ))
        }
        Some(_) => {}
    }
    let content_type = headers.get(header::CONTENT_TYPE).map(|v| v.to_str().ok());
    let content_type = match content_type {
        None => normal_content_type(None),
        Some(Some(t)) => normal_content_type(Some(t)),
        Some(None) => String::new(),
    };
    if !content_type.eq_ignore_ascii_case(&slot.content_type) {
        return Err((
            StatusCode::BAD_REQUEST,
            "Content-Type differs from the slot's\n",
        ));
    }
    Ok(())
}

/// One range of a `Range` header (RFC 9110 §14), resolved against `len`.
#[derive(Debug, PartialEq, Eq)]
pub enum Wanted {
    Whole,
    Part { start: u64, end: u64 },
    Unsatisfiable,
}

fn wanted_range(headers: &HeaderMap, len: u64) -> Wanted {
    resolve_range(
        headers.get(header::RANGE).and_then(|v| v.to_str().ok()),
        len,
    )
}

/// A `Range` header's value (if any) against a file of `len` bytes. A `Part` always lies
/// inside the file: `start <= end < len`.
pub fn resolve_range(value: Option<&str>, len: u64) -> Wanted {
    let Some(spec) = value.and_then(|v| v.trim().strip_prefix("bytes=")) else {
        return Wanted::Whole;
    };
    // Several ranges would need a multipart answer; a server may serve the whole instead.
    if spec.contains(',') {
        return Wanted::Whole;
    }
    let Some((first, last)) = spec.split_once('-') else {
        return Wanted::Whole;
    };
    let (first, last) = (first.trim(), last.trim());
    let parse = |s: &str| s.parse::<u64>().ok();
    let (start, end) = match (first.is_empty(), last.is_empty()) {
        // The last N bytes.
        (true, false) => match parse(last) {
            Some(0) => return Wanted::Unsatisfiable,
            Some(n) => (len.saturating_sub(n), len.saturating_sub(1)),
            None => return Wanted::Whole,
        },
        (false, true) => match parse(first) {
            Some(start) => (start, len.saturating_sub(1)),
            None => return Wanted::Whole,
        },
        (false, false) => match (parse(first), parse(last)) {
            (Some(start), Some(end)) if start <= end => (start, end.min(len.saturating_sub(1))),
            _ => return Wanted::Whole,
        },
        (true, true) => return Wanted::Whole,
    };
    if len == 0 || start >= len {
        return Wanted::Unsatisfiable;
    }
    Wanted::Part { start, end }
}

/// Shown in the browser only when it can do no harm; anything else is downloaded.
fn inline(content_type: &str) -> bool {
    let lower = content_type.to_ascii_lowercase();
    ["image/", "audio/", "video/"]
        .iter()
        .any(|prefix| lower.starts_with(prefix))
        // SVG is an image that can carry scripts.
        && !lower.starts_with("image/svg")
}

async fn download(
    State(state): State<UploadState>,
    Path((token, name)): Path<(String, String)>,
    deadline: Option<Extension<ConnectionDeadline>>,
    headers: HeaderMap,
) -> Response {
    let hold = deadline.map(|Extension(d)| d.hold());
    let Some(service) = state.upload() else {
        return status(StatusCode::NOT_FOUND, "no upload service here\n");
    };
    let Some(path) = upload_path(&token, &name) else {
        return status(StatusCode::NOT_FOUND, "no such file\n");
    };
    let record = match state.ctx.router.storage().uploads.upload(&path).await {
        Ok(Some(record)) => record,
        Ok(None) => return status(StatusCode::NOT_FOUND, "no such file\n"),
        Err(e) => {
            warn!(error = %e, "reading an upload record failed");
            return status(StatusCode::SERVICE_UNAVAILABLE, "try again later\n");
        }
    };
    // Expired but not swept yet: as good as gone.
    let expiry_ms = i64::try_from(service.config().expire_after_secs)
        .unwrap_or(i64::MAX / 1000)
        .saturating_mul(1000);
    if record.created_at_ms.saturating_add(expiry_ms) < Utc::now().timestamp_millis() {
        return status(StatusCode::NOT_FOUND, "no such file\n");
    }
    let files = service.files();
    let len = match files.len(&token).await {
        Ok(len) => len,
        Err(FileError::NotFound) => return status(StatusCode::NOT_FOUND, "no such file\n"),
        Err(e) => {
            warn!(error = %e, "reading an upload failed");
            return status(StatusCode::INTERNAL_SERVER_ERROR, "cannot read the file\n");
        }
    };
    let (code, start, count) = match wanted_range(&headers, len) {
        Wanted::Whole => (StatusCode::OK, 0, len),
        Wanted::Part { start, end } => (StatusCode::PARTIAL_CONTENT, start, end - start + 1),
        Wanted::Unsatisfiable => {
            let mut response = status(StatusCode::RANGE_NOT_SATISFIABLE, "");
            if let Ok(value) = HeaderValue::from_str(&format!("bytes */{len}")) {
                response.headers_mut().insert(header::CONTENT_RANGE, value);
            }
            return response;
        }
    };
    let read = match files.read_range(&token, start, count).await {
        Ok(read) => read,
        Err(e) => {
            warn!(error = %e, "reading an upload failed");
            return status(StatusCode::INTERNAL_SERVER_ERROR, "cannot read the file\n");
        }
    };
    let mut response = Response::new(body_of(read.reader, hold));
    *response.status_mut() = code;
    let out = response.headers_mut();
    let mut set = |name: header::HeaderName, value: String| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            out.insert(name, value);
        }
    };
    set(header::CONTENT_TYPE, record.content_type.clone());
    set(header::CONTENT_LENGTH, count.to_string());
    set(header::ACCEPT_RANGES, "bytes".to_owned());
    if code == StatusCode::PARTIAL_CONTENT {
        set(
            header::CONTENT_RANGE,
            format!("bytes {start}-{}/{len}", start + count - 1),
        );
    }
    let disposition = if inline(&record.content_type) {
        "inline"
    } else {
        "attachment"
    };
    let file_name = record.path.split_once('/').map_or("", |(_, name)| name);
    set(
        header::CONTENT_DISPOSITION,
        format!(
            "{disposition}; filename*={}",
            slot::disposition_filename(file_name)
        ),
    );
    // Uploaded content is someone else's: no scripts, no framing, no type sniffing.
    set(
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; frame-ancestors 'none'; sandbox".to_owned(),
    );
    set(header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_owned());
    set(
        header::CACHE_CONTROL,
        "public, max-age=86400, immutable".to_owned(),
    );
    super::cors::any_origin(response)
}

/// The file as a streamed body; `hold` keeps the connection open until it is sent.
fn body_of(
    reader: std::pin::Pin<Box<dyn tokio::io::AsyncRead + Send>>,
    hold: Option<DeadlineHold>,
) -> Body {
    let stream = futures::stream::unfold((reader, hold), |(mut reader, hold)| async move {
        let mut buf = vec![0u8; READ_CHUNK];
        match reader.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((
                    Ok::<_, std::io::Error>(bytes::Bytes::from(buf)),
                    (reader, hold),
                ))
            }
            Err(e) => Some((Err(e), (reader, hold))),
        }
    });
    Body::from_stream(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(value: &str, len: u64) -> Wanted {
        let mut headers = HeaderMap::new();
        headers.insert(header::RANGE, HeaderValue::from_str(value).unwrap());
        wanted_range(&headers, len)
    }

    #[test]
    fn ranges_resolve_as_rfc_9110_says() {
        assert_eq!(range("bytes=0-4", 10), Wanted::Part { start: 0, end: 4 });
        assert_eq!(range("bytes=5-", 10), Wanted::Part { start: 5, end: 9 });
        assert_eq!(range("bytes=-3", 10), Wanted::Part { start: 7, end: 9 });
        assert_eq!(range("bytes=-30", 10), Wanted::Part { start: 0, end: 9 });
        assert_eq!(range("bytes=8-100", 10), Wanted::Part { start: 8, end: 9 });
        assert_eq!(range("bytes=10-", 10), Wanted::Unsatisfiable);
        assert_eq!(range("bytes=-0", 10), Wanted::Unsatisfiable);
        assert_eq!(range("bytes=5-2", 10), Wanted::Whole);
        assert_eq!(range("bytes=0-1,3-4", 10), Wanted::Whole);
        assert_eq!(range("items=0-1", 10), Wanted::Whole);
    }

    #[test]
    fn only_media_is_shown_inline() {
        assert!(inline("image/png"));
        assert!(inline("Video/MP4"));
        assert!(!inline("image/svg+xml"));
        assert!(!inline("text/html"));
        assert!(!inline("application/pdf"));
    }
}
