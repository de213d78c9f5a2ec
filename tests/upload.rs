//! XEP-0363 HTTP File Upload over real sockets: slots asked over XMPP from `upload.localhost`,
//! then PUT and GET over raw HTTP/1.1 on the server's listener. Covers the round trip, the
//! limits and their errors, signed URLs (tampered, expired), exact size and type, ranges,
//! expiry, deletion with the account, discovery and who may ask.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::xmpp::{error_condition, Session};
use common::*;
use corvid::config::Config;
use corvid::modules::upload::Slot;
use minidom::Element;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

const UPLOAD: &str = "urn:xmpp:http:upload:0";
const SERVICE: &str = "upload.localhost";
const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
const DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";
const DATA: &str = "jabber:x:data";

/// HTTP only (no TLS listener), so URLs are http:// and plain TCP reaches them.
fn plain_http(config: &mut Config) {
    config.http.tls_enabled = false;
}

async fn server_with(adjust: impl FnOnce(&mut Config)) -> TestServer {
    let server = TestServer::start_with(|config| {
        plain_http(config);
        adjust(config);
    })
    .await;
    server.add_user("alice").await;
    server.add_user("bob").await;
    server
}

// --- a small HTTP/1.1 client: one request per connection, the answer read to the end ---

struct HttpAnswer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl HttpAnswer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The path and query of `url`, which must point at `addr`'s port.
fn target(url: &str) -> String {
    let rest = url.split_once("://").expect("absolute URL").1;
    let slash = rest.find('/').expect("a path");
    rest[slash..].to_owned()
}

fn port_of(url: &str) -> u16 {
    let rest = url.split_once("://").expect("absolute URL").1;
    let authority = &rest[..rest.find('/').expect("a path")];
    authority
        .rsplit_once(':')
        .expect("a port")
        .1
        .parse()
        .expect("port")
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut io: S,
    method: &str,
    target: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> HttpAnswer {
    let mut request =
        format!("{method} {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    io.write_all(request.as_bytes()).await.expect("write");
    io.write_all(body).await.expect("write body");
    io.flush().await.expect("flush");
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, io.read_to_end(&mut raw))
        .await
        .expect("answer in time")
        .expect("read");
    parse_answer(&raw, method == "HEAD")
}

fn parse_answer(raw: &[u8], head: bool) -> HttpAnswer {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of headers");
    let text = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = text.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked && !head {
        body = dechunk(&body);
    }
    HttpAnswer {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size");
        let size = usize::from_str_radix(
            std::str::from_utf8(&data[..line_end])
                .expect("ascii")
                .trim(),
            16,
        )
        .expect("hex size");
        data = &data[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

async fn http(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> HttpAnswer {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    exchange(tcp, method, target, headers, body).await
}

/// PUT `body` to `url` with the given Content-Type (and the body's length).
async fn put(server: &TestServer, url: &str, content_type: &str, body: &[u8]) -> HttpAnswer {
    assert_eq!(
        port_of(url),
        server.http().port(),
        "URL on the HTTP listener: {url}"
    );
    http(
        server.http(),
        "PUT",
        &target(url),
        &[
            ("Content-Type", content_type.to_owned()),
            ("Content-Length", body.len().to_string()),
        ],
        body,
    )
    .await
}

async fn get(server: &TestServer, url: &str, headers: &[(&str, String)]) -> HttpAnswer {
    http(server.http(), "GET", &target(url), headers, b"").await
}

// --- XMPP side ---

fn request_xml(filename: &str, size: u64, content_type: &str) -> String {
    format!(
        "<iq type='get' to='{SERVICE}'><request xmlns='{UPLOAD}' filename='{filename}' \
         size='{size}' content-type='{content_type}'/></iq>"
    )
}

/// Asks for a slot and returns (PUT URL, GET URL).
async fn slot(
    session: &mut Session,
    filename: &str,
    size: u64,
    content_type: &str,
) -> (String, String) {
    let answer = session.iq(&request_xml(filename, size, content_type)).await;
    assert_eq!(
        answer.attr("type"),
        Some("result"),
        "{}",
        corvid::xml::to_string(&answer)
    );
    assert_eq!(answer.attr("from"), Some(SERVICE));
    let slot = answer.get_child("slot", UPLOAD).expect("<slot/>");
    let put = slot
        .get_child("put", UPLOAD)
        .and_then(|p| p.attr("url"))
        .expect("put url");
    let get = slot
        .get_child("get", UPLOAD)
        .and_then(|g| g.attr("url"))
        .expect("get url");
    (put.to_owned(), get.to_owned())
}

async fn refused(session: &mut Session, filename: &str, size: u64) -> Element {
    let answer = session.iq(&request_xml(filename, size, "text/plain")).await;
    assert_eq!(
        answer.attr("type"),
        Some("error"),
        "{}",
        corvid::xml::to_string(&answer)
    );
    answer
}

fn uploads_dir(server: &TestServer) -> PathBuf {
    server.config().upload.directory.clone()
}

/// Names in the uploads folder (stored files and any temporary one).
fn files_on_disk(server: &TestServer) -> Vec<String> {
    match std::fs::read_dir(uploads_dir(server)) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Waits (asserting nothing about time) until `done` holds, or fails after a generous bound.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..500 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("never happened: {what}");
}

#[tokio::test]
async fn a_file_goes_up_and_anyone_with_the_url_gets_it_back() {
    let server = server_with(|_| {}).await;
    let mut alice = Session::online(&server, "alice", "phone").await;
    let content = b"\x89PNG not really, but bytes all the same".to_vec();
    let (put_url, get_url) = slot(
        &mut alice,
        "très cool.png",
        content.len() as u64,
        "image/png",
    )
    .await;
    assert!(
        get_url.starts_with(&format!(
            "http://localhost:{}/upload/",
            server.http().port()
        )),
        "{get_url}"
    );
    assert!(get_url.ends_with("/tr%C3%A8s%20cool.png"), "{get_url}");
    assert!(put_url.starts_with(&format!("{get_url}?")), "{put_url}");

    // Before the upload there is nothing to get.
    assert_eq!(get(&server, &get_url, &[]).await.status, 404);
    let answer = put(&server, &put_url, "image/png", &content).await;
    assert_eq!(answer.status, 201);
    assert_eq!(answer.header("access-control-allow-origin"), Some("*"));

    // Bob is not the uploader and holds no credentials: the URL is all he needs.
    let _bob = Session::online(&server, "bob", "laptop").await;
    let answer = get(&server, &get_url, &[]).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body, content);
    assert_eq!(answer.header("content-type"), Some("image/png"));
    assert_eq!(answer.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(answer.header("access-control-allow-origin"), Some("*"));
    let csp = answer.header("content-security-policy").expect("CSP");
    assert!(
        csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    let disposition = answer.header("content-disposition").expect("disposition");
    assert!(disposition.starts_with("inline;"), "{disposition}");
    assert!(
        disposition.contains("tr%C3%A8s%20cool.png"),
        "{disposition}"
    );

    // HEAD: the same headers, no body.
    let head = http(server.http(), "HEAD", &target(&get_url), &[], b"").await;
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("content-length"),
        Some(content.len().to_string().as_str())
    );
    assert!(head.body.is_empty());

    // The record is the uploader's, with what the slot said.
    let path = target(&get_url);
    let token = path.split('/').nth(2).expect("token");
    let record = server
        .storage()
        .uploads
        .upload(&format!("{token}/très cool.png"))
        .await
        .expect("storage")
        .expect("recorded");
    assert_eq!(record.owner, account("alice"));
    assert_eq!(record.size, content.len() as u64);
    assert_eq!(record.content_type, "image/png");
}

#[tokio::test]
async fn documents_are_downloaded_not_shown_and_preflight_allows_put() {
    let server = server_with(|_| {}).await;
    let mut alice = Session::online(&server, "alice", "phone").await;
    let (put_url, get_url) = slot(&mut alice, "page.html", 13, "text/html").await;
    assert_eq!(
        put(&server, &put_url, "text/html", b"<h1>hi</h1>\n\n")
            .await
            .status,
        201
    );
    let answer = get(&server, &get_url, &[]).await;
    let disposition = answer.header("content-disposition").expect("disposition");
    assert!(disposition.starts_with("attachment;"), "{disposition}");

    let preflight = http(
        server.http(),
        "OPTIONS",
        &target(&put_url),
        &[
            ("Origin", "https://web.example".into()),
            ("Access-Control-Request-Method", "PUT".into()),
            ("Access-Control-Request-Headers", "content-type".into()),
        ],
        b"",
    )
    .await;
    assert!(preflight.status == 204 || preflight.status == 200);
    assert_eq!(preflight.header("access-control-allow-origin"), Some("*"));
    let methods = preflight
        .header("access-control-allow-methods")
        .expect("methods");
    assert!(methods.contains("PUT"), "{methods}");
    let headers = preflight
        .header("access-control-allow-headers")
        .expect("headers");
    assert!(
        headers.to_ascii_lowercase().contains("content-type"),
        "{headers}"
    );
}

#[tokio::test]
async fn a_file_over_the_limit_gets_file_too_large_with_the_limit() {
    let server = server_with(|config| config.upload.max_file_size = 1000).await;
    let mut alice = Session::online(&server, "alice", "phone").await;
    let answer = refused(&mut alice, "big.bin", 1001).await;
    assert_eq!(error_condition(&answer).as_deref(), Some("not-acceptable"));
    let error = answer.get_child("error", "jabber:client").expect("error");
    assert_eq!(error.attr("type"), Some("modify"));
    let max = error
        .get_child("file-too-large", UPLOAD)
        .and_then(|f| f.get_child("max-file-size", UPLOAD))
        .expect("<file-too-large><max-file-size/>");
    assert_eq!(max.text(), "1000");
    // At the limit it is fine.
    slot(&mut alice, "big.bin", 1000, "application/octet-stream").await;
}

fn retry_stamp(answer: &Element) -> DateTime<Utc> {
    let error = answer.get_child("error", "jabber:client").expect("error");
    assert_eq!(error.attr("type"), Some("wait"));
    let stamp = error
        .get_child("retry", UPLOAD)
        .and_then(|r| r.attr("stamp"))
        .expect("<retry stamp/>");
    DateTime::parse_from_rfc3339(stamp)
        .expect("XEP-0082 stamp")
        .with_timezone(&Utc)
}

#[tokio::test]
async fn the_daily_quota_refuses_with_a_retry_time_a_day_after_the_first_upload() {
    let server = server_with(|config| {
        config.upload.max_file_size = 10;
        config.upload.daily_quota_per_user = 16;
    })
    .await;
    let mut alice = Session::online(&server, "alice", "phone").await;
    let (put_url, _) = slot(&mut alice, "a.txt", 10, "text/plain").await;
    let before = Utc::now();
    assert_eq!(
        put(&server, &put_url, "text/plain", b"0123456789")
            .await
            .status,
        201
    );
    let answer = refused(&mut alice, "b.txt", 7).await;
    assert_eq!(
        error_condition(&answer).as_deref(),
        Some("resource-constraint")
    );
    let retry = retry_stamp(&answer);
    let day = chrono::Duration::hours(24);
    assert!(
        retry >= before + day - chrono::Duration::seconds(1),
        "{retry}"
    );
    assert!(retry <= Utc::now() + day, "{retry}");
    // What still fits is given; bob has a quota of his own.
    slot(&mut alice, "c.txt", 6, "text/plain").await;
    let mut bob = Session::online(&server, "bob", "laptop").await;
    slot(&mut bob, "d.txt", 10, "text/plain").await;
}

#[tokio::test]
async fn slots_collected_in_advance_cannot_overshoot_the_quota() {
    let server = server_with(|config| {
        config.upload.max_file_size = 10;
        config.upload.daily_quota_per_user = 16;
    })
    .await;
    let mut alice = Session::online(&server, "alice", "phone").await;
    // Both given while nothing is uploaded yet; together they are over the quota.
    let (first, _) = slot(&mut alice, "a.txt", 10, "text/plain").await;
    let (second, second_get) = slot(&mut alice, "b.txt", 10, "text/plain").await;
    assert_eq!(
        put(&server, &first, "text/plain", b"0123456789")
            .await
            .status,
        201
    );
    assert_eq!(
        put(&server, &second, "text/plain", b"0123456789")
            .await
            .status,
        413
    );
    assert_eq!(get(&server, &second_get, &[]).await.status, 404);
}

#[tokio::test]
async fn a_slot_request_without_a_usable_content_type_is_a_bad_request() {
    let server = server_with(|_| {}).await;
    let mut alice = Session::online(&server, "alice", "phone").await;
    for bad in ["text", "text/plain&#10;X-Evil: 1", "/plain", "a b/c"] {
        let answer = alice.iq(&request_xml("a.txt", 1, bad)).await;
        assert_eq!(
            error_condition(&answer).as_deref(),
            Some("bad-request"),
            "{bad}"
        );
    }
    // No content-type at all is application/octet-stream.
    let answer = alice
        .iq(&format!(
            "<iq type='get' to='{SERVICE}'><request xmlns='{UPLOAD}' filename='a.bin' size='2'/></iq>"
        ))
        .await;
    let put_url = answer
        .get_child("slot", UPLOAD)
        .and_then(|s| s.get_child("put", UPLOAD))
        .and_then(|p| p.attr("url"))
        .unwrap_or_else(|| panic!("no slot: {}", corvid::xml::to_string(&answer)))
        .to_owned();
    assert_eq!(
        put(&server, &put_url, "application/octet-stream", b"ab")
            .await
            .status,
        201
    );
}

#[tokio::test]
async fn the_total_quota_refuses_everyone_until_files_expire() {
    let server = server_with(|config| {
        config.upload.max_file_size = 10;
        config.upload.total_quota = 12;
    })
    .await;
    let mut alice = Session::online(&server, "alice", "phone").await;
    let (put_url, _) = slot(&mut alice, "a.txt", 10, "text/plain").await;
    assert_eq!(
        put(&server, &put_url, "text/plain", b"0123456789")
            .await
            .status,
        201
    );
    let mut bob = Session::online(&server, "bob", "laptop").await;
    let answer = refused(&mut bob, "b.txt", 3).await;
    assert_eq!(
        error_condition(&answer).as_deref(),
        Some("resource-constraint")
    );
    // The space comes back when alice's file expires, 30 days after its upload.
    let retry = retry_stamp(&answer);
    let expiry = chrono::Duration::days(30);
    assert!(
        retry > Utc::now() + expiry - chrono::Duration::minutes(1),
        "{retry}"
    );
    assert!(retry <= Utc::now() + expiry, "{retry}");
    slot(&mut bob, "b.txt", 2, "text/plain").await;
}

#[tokio::test]
async fn a_put_must_match_the_slots_size_and_type_and_happens_once() {
    let server = server_with(|_| {}).await;
    let mut alice = Session::online(&server, "alice", "phone").await;
    let (put_url, get_url) = slot(&mut alice, "notes.txt", 5, "text/plain").await;
    assert_eq!(
        put(&server, &put_url, "text/plain", b"123456").await.status,
        413
    );
    assert_eq!(
        put(&server, &put_url, "text/plain", b"1234").await.status,
        400
    );
    assert_eq!(
        put(&server, &put_url, "image/png", b"12345").await.status,
        400
    );
    let no_length = http(
        server.http(),
        "PUT",
        &target(&put_url),
        &[("Content-Type", "text/plain".into())],
        b"",
    )
    .await;
    assert_eq!(no_length.status, 411);
    // None of that stored anything.
    assert_eq!(get(&server, &get_url, &[]).await.status, 404);
    assert!(
        files_on_disk(&server).is_empty(),
        "{:?}",
        files_on_disk(&server)
    );

    assert_eq!(
        put(&server, &put_url, "text/plain", b"hello").await.status,
        201
    );
    assert_eq!(
        put(&server, &put_url, "text/plain", b"HELLO").await.status,
        409
    );
    assert_eq!(get(&server, &get_url, &[]).await.body, b"hello");
}

#[tokio::test]
async fn a_tampered_or_expired_url_is_forbidden() {
    let server = server_with(|_| {}).await;
    let mut alice = Session::online(&server, "alice", "phone").await;
    let (put_url, get_url) = slot(&mut alice, "a.txt", 5, "text/plain").await;
    let (path, query) = put_url.split_once('?').expect("query");

    // A bigger size, another file name, another owner, a forged signature, no signature.
    let bigger = put_url.replace("size=5", "size=6");
    let renamed = format!("{}b.txt?{query}", path.trim_end_matches("a.txt"));
    let owner = put_url.replace("owner=alice", "owner=bob");
    let sig_at = put_url.find("sig=").expect("sig") + 4;
    let mut forged = put_url.clone();
    let flipped = if &forged[sig_at..sig_at + 1] == "A" {
        "B"
    } else {
        "A"
    };
    forged.replace_range(sig_at..sig_at + 1, flipped);
    let unsigned = put_url[..sig_at - 5].to_owned();
    for url in [&bigger, &renamed, &owner, &forged, &unsigned] {
        let body: &[u8] = if url == &bigger { b"123456" } else { b"12345" };
        let answer = put(&server, url, "text/plain", body).await;
        assert_eq!(answer.status, 403, "{url}");
    }

    // A slot signed with the server's own secret but already expired.
    let secret = server
        .storage()
        .secrets
        .server_secret("http-upload-slots", b"unused")
        .await
        .expect("secret");
    let token_path = target(&get_url);
    let token = token_path.split('/').nth(2).expect("token");
    let expired = Slot {
        path: format!("{token}/a.txt"),
        owner: account("alice"),
        size: 5,
        content_type: "text/plain".into(),
        expires: Utc::now().timestamp() - 10,
    };
    let url = format!("{get_url}?{}", expired.query(&secret));
    assert_eq!(put(&server, &url, "text/plain", b"12345").await.status, 403);
    // The same slot a minute into the future is accepted: only the expiry was wrong.
    let fresh = Slot {
        expires: Utc::now().timestamp() + 60,
        ..expired
    };
    let url = format!("{get_url}?{}", fresh.query(&secret));
    assert_eq!(put(&server, &url, "text/plain", b"12345").await.status, 201);
}

#[tokio::test]
async fn ranges_are_served_and_bad_ones_refused() {
    let server = server_with(|_| {}).await;
    let mut alice = Session::online(&server, "alice", "phone").await;
    let content = b"0123456789abcdef";
    let (put_url, get_url) = slot(
        &mut alice,
        "r.bin",
        content.len() as u64,
        "application/octet-stream",
    )
    .await;
    assert_eq!(
        put(&server, &put_url, "application/octet-stream", content)
            .await
            .status,
        201
    );

    let part = get(&server, &get_url, &[("Range", "bytes=2-5".into())]).await;
    assert_eq!(part.status, 206);
    assert_eq!(part.body, b"2345");
    assert_eq!(part.header("content-range"), Some("bytes 2-5/16"));
    let tail = get(&server, &get_url, &[("Range", "bytes=-3".into())]).await;
    assert_eq!(tail.status, 206);
    assert_eq!(tail.body, b"def");
    let open = get(&server, &get_url, &[("Range", "bytes=10-".into())]).await;
    assert_eq!(open.body, b"abcdef");
    let beyond = get(&server, &get_url, &[("Range", "bytes=16-".into())]).await;
    assert_eq!(beyond.status, 416);
    assert_eq!(beyond.header("content-range"), Some("bytes */16"));
    let whole = get(&server, &get_url, &[]).await;
    assert_eq!(whole.status, 200);
    assert_eq!(whole.header("accept-ranges"), Some("bytes"));
}

#[tokio::test]
async fn expired_files_are_swept_with_their_records() {
    let server = server_with(|config| {
        config.upload.expire_after_secs = 1;
        config.upload.sweep_interval_secs = 1;
    })
    .await;
    let mut alice = Session::online(&server, "alice", "phone").await;
    let (put_url, get_url) = slot(&mut alice, "old.txt", 3, "text/plain").await;
    assert_eq!(
        put(&server, &put_url, "text/plain", b"old").await.status,
        201
    );
    assert_eq!(files_on_disk(&server).len(), 1);
    until("the expired file is deleted", || {
        files_on_disk(&server).is_empty()
    })
    .await;
    assert_eq!(get(&server, &get_url, &[]).await.status, 404);
    let usage = server
        .storage()
        .uploads
        .upload_total()
        .await
        .expect("storage");
    assert_eq!(usage.bytes, 0);
}

#[tokio::test]
async fn deleting_the_account_deletes_its_files() {
    let server = server_with(|_| {}).await;
    let mut alice = Session::online(&server, "alice", "phone").await;
    let (put_url, get_url) = slot(&mut alice, "mine.txt", 4, "text/plain").await;
    assert_eq!(
        put(&server, &put_url, "text/plain", b"mine").await.status,
        201
    );
    let mut bob = Session::online(&server, "bob", "laptop").await;
    let (bob_put, bob_get) = slot(&mut bob, "his.txt", 3, "text/plain").await;
    assert_eq!(
        put(&server, &bob_put, "text/plain", b"his").await.status,
        201
    );
    assert_eq!(files_on_disk(&server).len(), 2);

    // What `corvid user del` and the XEP-0133 command both call.
    server
        .storage()
        .delete_account_and_archive(&account("alice"))
        .await
        .expect("deleted");
    assert_eq!(get(&server, &get_url, &[]).await.status, 404);
    assert_eq!(files_on_disk(&server).len(), 1);
    assert_eq!(get(&server, &bob_get, &[]).await.body, b"his");
}

#[tokio::test]
async fn an_upload_that_ends_short_leaves_nothing_behind() {
    let server = server_with(|_| {}).await;
    let mut alice = Session::online(&server, "alice", "phone").await;
    let (put_url, get_url) = slot(&mut alice, "cut.bin", 100_000, "application/octet-stream").await;
    let mut tcp = TcpStream::connect(server.http()).await.expect("connect");
    let head = format!(
        "PUT {} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: 100000\r\n\r\n",
        target(&put_url)
    );
    tcp.write_all(head.as_bytes()).await.expect("write");
    tcp.write_all(&[7u8; 40_000]).await.expect("write");
    // The temporary file appears while the body arrives, then goes with the connection.
    until("the upload has started", || {
        !files_on_disk(&server).is_empty()
    })
    .await;
    drop(tcp);
    until("the partial file is removed", || {
        files_on_disk(&server).is_empty()
    })
    .await;
    assert_eq!(get(&server, &get_url, &[]).await.status, 404);
    // The slot is still good for a complete upload.
    let body = vec![9u8; 100_000];
    assert_eq!(
        put(&server, &put_url, "application/octet-stream", &body)
            .await
            .status,
        201
    );
    assert_eq!(get(&server, &get_url, &[]).await.body, body);
}

#[tokio::test]
async fn paths_outside_the_uploads_are_not_found() {
    let server = server_with(|_| {}).await;
    for path in [
        "/upload/../corvid.db",
        "/upload/..%2F..%2Fcorvid.db/x",
        "/upload/.%2e/corvid.db",
        "/upload/nonexistenttoken/file.txt",
        "/upload/a.b/file.txt",
    ] {
        let answer = http(server.http(), "GET", path, &[], b"").await;
        assert!(
            matches!(answer.status, 400 | 404),
            "{path}: {}",
            answer.status
        );
        let answer = http(
            server.http(),
            "PUT",
            &format!("{path}?size=1&sig=x"),
            &[("Content-Length", "1".into())],
            b"x",
        )
        .await;
        assert!(
            matches!(answer.status, 400 | 403 | 404),
            "{path}: {}",
            answer.status
        );
    }
}

#[tokio::test]
async fn the_service_is_discoverable_with_its_size_limit() {
    let server = server_with(|config| config.upload.max_file_size = 5_000_000).await;
    let mut alice = Session::online(&server, "alice", "phone").await;
    let items = alice
        .iq(&format!(
            "<iq type='get' to='{DOMAIN}'><query xmlns='{DISCO_ITEMS}'/></iq>"
        ))
        .await;
    let listed: Vec<&str> = items
        .get_child("query", DISCO_ITEMS)
        .expect("items")
        .children()
        .filter_map(|i| i.attr("jid"))
        .collect();
    assert!(listed.contains(&SERVICE), "{listed:?}");

    let info = alice
        .iq(&format!(
            "<iq type='get' to='{SERVICE}'><query xmlns='{DISCO_INFO}'/></iq>"
        ))
        .await;
    let query = info.get_child("query", DISCO_INFO).expect("info");
    let identity = query.get_child("identity", DISCO_INFO).expect("identity");
    assert_eq!(identity.attr("category"), Some("store"));
    assert_eq!(identity.attr("type"), Some("file"));
    assert!(query
        .children()
        .any(|f| f.is("feature", DISCO_INFO) && f.attr("var") == Some(UPLOAD)));
    let form = query.get_child("x", DATA).expect("XEP-0128 form");
    assert_eq!(form.attr("type"), Some("result"));
    let value = |var: &str| {
        form.children()
            .find(|f| f.attr("var") == Some(var))
            .and_then(|f| f.get_child("value", DATA))
            .map(|v| v.text())
    };
    assert_eq!(value("FORM_TYPE").as_deref(), Some(UPLOAD));
    assert_eq!(value("max-file-size").as_deref(), Some("5000000"));
}

#[tokio::test]
async fn users_of_another_domain_are_refused_and_use_their_own_service() {
    const B: &str = "b.example";
    let server = server_with(|config| {
        config
            .hosts
            .insert(B.into(), corvid::config::HostConfig::default());
    })
    .await;
    server.add_user(&format!("carol@{B}")).await;
    let mut carol = Session::online_on(&server, B, "carol", "phone").await;
    let answer = carol.iq(&request_xml("x.txt", 3, "text/plain")).await;
    assert_eq!(answer.attr("type"), Some("error"));
    assert_eq!(error_condition(&answer).as_deref(), Some("not-allowed"));

    let own = carol
        .iq(&format!(
            "<iq type='get' to='upload.{B}'><request xmlns='{UPLOAD}' filename='x.txt' \
             size='3' content-type='text/plain'/></iq>"
        ))
        .await;
    assert_eq!(
        own.attr("type"),
        Some("result"),
        "{}",
        corvid::xml::to_string(&own)
    );
    let get_url = own
        .get_child("slot", UPLOAD)
        .and_then(|s| s.get_child("get", UPLOAD))
        .and_then(|g| g.attr("url"))
        .expect("get url");
    assert!(get_url.starts_with(&format!("http://{B}:")), "{get_url}");
}

#[tokio::test]
async fn urls_are_https_when_https_listens_and_follow_public_url() {
    let server = TestServer::start().await;
    server.add_user("alice").await;
    let mut alice = Session::online(&server, "alice", "phone").await;
    let (_, get_url) = slot(&mut alice, "a.txt", 1, "text/plain").await;
    let https = server.server.https_addr.expect("https listener");
    assert!(
        get_url.starts_with(&format!("https://localhost:{}/upload/", https.port())),
        "{get_url}"
    );

    // And the upload works over TLS too.
    let (put_url, get_url) = slot(&mut alice, "b.txt", 2, "text/plain").await;
    let connector = tokio_rustls::TlsConnector::from(server.tls_config());
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let tls = connector
        .connect(name.clone(), TcpStream::connect(https).await.expect("tcp"))
        .await
        .expect("tls");
    let answer = exchange(
        tls,
        "PUT",
        &target(&put_url),
        &[
            ("Content-Type", "text/plain".into()),
            ("Content-Length", "2".into()),
        ],
        b"ok",
    )
    .await;
    assert_eq!(answer.status, 201);
    let tls = connector
        .connect(name, TcpStream::connect(https).await.expect("tcp"))
        .await
        .expect("tls");
    let answer = exchange(tls, "GET", &target(&get_url), &[], b"").await;
    assert_eq!(answer.body, b"ok");

    let proxied = TestServer::start_with(|config| {
        config.http.public_url = Some("https://files.example.net/".into());
    })
    .await;
    proxied.add_user("alice").await;
    let mut alice = Session::online(&proxied, "alice", "phone").await;
    let (put_url, get_url) = slot(&mut alice, "a.txt", 1, "text/plain").await;
    assert!(
        get_url.starts_with("https://files.example.net/upload/"),
        "{get_url}"
    );
    assert!(
        put_url.starts_with("https://files.example.net/upload/"),
        "{put_url}"
    );
}

#[tokio::test]
async fn without_http_there_is_no_upload_service() {
    let server = TestServer::start_with(|config| config.http.enabled = false).await;
    server.add_user("alice").await;
    let mut alice = Session::online(&server, "alice", "phone").await;
    let items = alice
        .iq(&format!(
            "<iq type='get' to='{DOMAIN}'><query xmlns='{DISCO_ITEMS}'/></iq>"
        ))
        .await;
    assert!(!corvid::xml::to_string(&items).contains(SERVICE));
    let answer = alice.iq(&request_xml("a.txt", 1, "text/plain")).await;
    assert_eq!(answer.attr("type"), Some("error"));
}

/// The upload records on one backend: a path is recorded once, usage counts what a user
/// uploaded since a moment, and deletions by age, by owner and by path return what they took.
async fn records_behave(storage: &corvid::storage::Storage) {
    use corvid::storage::{StorageError, StoredUpload};
    let record = |path: &str, owner: &str, size: u64, at: i64| StoredUpload {
        path: path.into(),
        owner: owner.into(),
        size,
        content_type: "text/plain".into(),
        created_at_ms: at,
    };
    let uploads = &storage.uploads;
    let empty = uploads.upload_total().await.expect("total");
    assert_eq!((empty.bytes, empty.oldest_ms), (0, None));
    uploads
        .record_upload(&record("t1/a", "alice@x", 10, 1_000))
        .await
        .expect("a");
    uploads
        .record_upload(&record("t2/b", "alice@x", 5, 2_000))
        .await
        .expect("b");
    uploads
        .record_upload(&record("t3/c", "bob@x", 7, 3_000))
        .await
        .expect("c");
    assert!(matches!(
        uploads
            .record_upload(&record("t1/a", "bob@x", 1, 4_000))
            .await,
        Err(StorageError::Conflict)
    ));
    assert_eq!(
        uploads.upload("t1/a").await.expect("read"),
        Some(record("t1/a", "alice@x", 10, 1_000))
    );
    assert_eq!(uploads.upload("t9/z").await.expect("read"), None);
    let since = uploads.upload_usage("alice@x", 1_500).await.expect("usage");
    assert_eq!((since.bytes, since.oldest_ms), (5, Some(2_000)));
    let total = uploads.upload_total().await.expect("total");
    assert_eq!((total.bytes, total.oldest_ms), (22, Some(1_000)));
    assert_eq!(
        uploads.delete_uploads_before(1_500).await.expect("old"),
        ["t1/a"]
    );
    assert_eq!(
        uploads.delete_uploads_of("alice@x").await.expect("alice's"),
        ["t2/b"]
    );
    uploads.delete_upload("t3/c").await.expect("one");
    assert_eq!(uploads.upload_total().await.expect("total").bytes, 0);
}

#[tokio::test]
async fn upload_records_behave_alike_on_sqlite_and_postgres() {
    let dir = tempfile::tempdir().expect("dir");
    let url = format!("sqlite://{}", dir.path().join("records.db").display());
    let sqlite = corvid::storage::Storage::open(&url).await.expect("sqlite");
    records_behave(&sqlite).await;
    let Ok(url) = std::env::var("CORVID_TEST_POSTGRES") else {
        eprintln!("CORVID_TEST_POSTGRES unset: PostgreSQL variant skipped");
        return;
    };
    let schema = format!("corvid_upload_{:016x}", rand::random::<u64>());
    let backend = corvid::storage::PostgresStorage::open_with_schema(&url, &schema)
        .await
        .expect("postgres schema");
    let postgres = corvid::storage::Storage::from_backend(std::sync::Arc::new(backend));
    records_behave(&postgres).await;
    drop_schema(&schema).await;
}

/// `corvid user del`, run against the configuration file while no server runs, deletes the
/// account's uploaded files from the configured directory (relative to that file), and only
/// the account's.
#[tokio::test]
async fn corvid_user_del_deletes_the_files() {
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("corvid.toml");
    let url = format!("sqlite://{}", dir.path().join("db.sqlite").display());
    std::fs::write(
        &config,
        format!("[storage]\nurl = '{url}'\n[upload]\ndirectory = 'files'\n"),
    )
    .expect("config");
    let c = config.to_str().expect("utf-8");
    let run = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_corvid"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("corvid runs");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    let storage = corvid::storage::Storage::open(&url).await.expect("storage");
    for user in ["bob", "carol"] {
        let creds: Vec<_> = [corvid::storage::ScramHash::Sha256]
            .into_iter()
            .map(|h| corvid::sasl::derive_credentials("pw", h, 4096).expect("derive"))
            .collect();
        storage
            .accounts
            .create_account(&format!("{user}@localhost"), &creds)
            .await
            .expect("account");
    }
    let files = dir.path().join("files");
    std::fs::create_dir_all(&files).expect("files dir");
    for (token, owner) in [
        ("bobtoken", "bob@localhost"),
        ("caroltoken", "carol@localhost"),
    ] {
        std::fs::write(files.join(token), b"data").expect("file");
        storage
            .uploads
            .record_upload(&corvid::storage::StoredUpload {
                path: format!("{token}/f.txt"),
                owner: owner.into(),
                size: 4,
                content_type: "text/plain".into(),
                created_at_ms: Utc::now().timestamp_millis(),
            })
            .await
            .expect("record");
    }
    run(&["user", "del", "bob", "-c", c]);
    assert!(!files.join("bobtoken").exists());
    assert!(files.join("caroltoken").exists());
    assert_eq!(
        storage
            .uploads
            .upload("bobtoken/f.txt")
            .await
            .expect("read"),
        None
    );
    assert!(storage
        .uploads
        .upload("caroltoken/f.txt")
        .await
        .expect("read")
        .is_some());
}
