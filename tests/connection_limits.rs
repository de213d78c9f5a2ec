//! Issue 15: what a connection may cost before it has logged in. Admission limits shared by
//! every listener (per address at once, per address per second, unauthenticated in total), TLS
//! handshakes and HTTP requests bounded by the negotiation timeout, and bytes smuggled behind
//! `<starttls/>`. Each case runs against a server on a runtime of its own, so a regression
//! fails on a timeout instead of hanging the suite.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Generous: the server is told to give up after a second or two; this only catches a
/// connection that is never closed.
const CLOSE_WAIT: Duration = Duration::from_secs(30);

fn ip(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

async fn tcp_from(addr: SocketAddr, from: IpAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind(SocketAddr::new(from, 0)).expect("bind");
    socket.connect(addr).await.expect("connect")
}

/// Everything the server sends until it closes the connection (a reset counts as closed).
async fn read_to_close(tcp: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(CLOSE_WAIT, tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return all,
            Ok(Ok(n)) => all.extend_from_slice(&buf[..n]),
            Err(_) => panic!("the server did not close the connection within {CLOSE_WAIT:?}"),
        }
    }
}

/// A client from `from` that the server serves: its stream header is answered with features.
async fn admitted(addr: SocketAddr, from: IpAddr) -> Raw {
    let mut raw = Raw::connect_from(addr, from).await;
    raw.write(OPEN).await;
    let features = raw.element().await;
    assert_eq!(features.name(), "features", "from {from}");
    raw
}

/// A client from `from` that the server refuses on the XMPP port: our header, then
/// `<policy-violation/>`, then the close.
async fn refused_on_xmpp_port(addr: SocketAddr, from: IpAddr) {
    let mut raw = Raw::connect_from(addr, from).await;
    assert_eq!(raw.stream_error().await, "policy-violation", "from {from}");
    assert!(raw.closed().await);
}

/// The same for a client that sends its stream header first, as real clients do: the answer
/// must not be lost to a reset caused by the unread header.
async fn refused_after_its_header(addr: SocketAddr, from: IpAddr) {
    let mut raw = Raw::connect_from(addr, from).await;
    raw.write(OPEN).await;
    assert_eq!(raw.stream_error().await, "policy-violation", "from {from}");
}

/// Refused before TLS: closed without a byte, so a TLS handshake cannot complete.
async fn refused_before_tls(addr: SocketAddr, from: IpAddr) {
    let mut tcp = tcp_from(addr, from).await;
    let _ = tcp.write_all(&partial_client_hello()).await;
    assert!(read_to_close(&mut tcp).await.is_empty());
}

/// The HTTP status a plain-HTTP WebSocket request from `from` is answered with.
async fn http_status(addr: SocketAddr, from: IpAddr) -> String {
    let mut tcp = tcp_from(addr, from).await;
    let request = "GET /xmpp-websocket HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\n\
        Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: xmpp\r\n\r\n";
    let _ = tcp.write_all(request.as_bytes()).await;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(2).any(|w| w == b"\r\n") {
        match tokio::time::timeout(CLOSE_WAIT, tcp.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => head.extend_from_slice(&buf[..n]),
            Ok(_) => break,
            Err(_) => panic!("no HTTP answer within {CLOSE_WAIT:?}"),
        }
    }
    let head = String::from_utf8_lossy(&head);
    head.split(' ').nth(1).unwrap_or("none").to_string()
}

/// The first 40 bytes of a ClientHello whose record announces 512: a handshake that can never
/// finish.
fn partial_client_hello() -> Vec<u8> {
    let mut hello = vec![
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ];
    hello.extend(std::iter::repeat_n(0x42, 29));
    hello
}

#[tokio::test]
async fn concurrent_connections_per_address_are_capped_on_every_listener() {
    let server = IsolatedServer::start(
        |c| {
            c.limits.max_connections_per_address = 3;
            c.limits.connection_rate_per_address = 0;
        },
        &[],
    );
    let crowded = ip(2);
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(admitted(server.c2s, crowded).await);
    }
    // The same address is refused on every listener while it holds three connections.
    refused_on_xmpp_port(server.c2s, crowded).await;
    refused_after_its_header(server.c2s, crowded).await;
    refused_before_tls(server.direct_tls, crowded).await;
    refused_before_tls(server.https, crowded).await;
    assert_eq!(http_status(server.http, crowded).await, "429");
    // Another address is not affected.
    let _other = admitted(server.c2s, ip(3)).await;
    // A connection that ends gives its place back.
    drop(held.pop());
    let mut again = None;
    for _ in 0..100 {
        let mut raw = Raw::connect_from(server.c2s, crowded).await;
        raw.write(OPEN).await;
        if raw.element().await.name() == "features" {
            again = Some(raw);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        again.is_some(),
        "a freed place is given to the next connection"
    );
}

#[tokio::test]
async fn new_connections_per_second_are_limited_per_address() {
    let server = IsolatedServer::start(
        |c| {
            c.limits.connection_rate_per_address = 1;
            c.limits.connection_burst_per_address = 3;
        },
        &[],
    );
    let hasty = ip(4);
    // The burst, each connection closed again: concurrency is not what is counted here.
    for _ in 0..3 {
        drop(admitted(server.c2s, hasty).await);
    }
    refused_on_xmpp_port(server.c2s, hasty).await;
    assert_eq!(http_status(server.http, hasty).await, "429");
    let _other = admitted(server.c2s, ip(5)).await;
    // The bucket refills (one a second): a later connection is served again.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let _later = admitted(server.c2s, hasty).await;
}

#[tokio::test]
async fn unauthenticated_connections_are_capped_in_total_and_binding_frees_the_place() {
    let server =
        IsolatedServer::start(|c| c.limits.max_unauthenticated_connections = 2, &["alice"]);
    // Logged in and bound: no longer counted.
    let (mut alice, _) = Raw::login(server.c2s, server.tls_config(), "alice", "a").await;
    let _first = admitted(server.c2s, ip(6)).await;
    let _second = admitted(server.c2s, ip(7)).await;
    refused_on_xmpp_port(server.c2s, ip(8)).await;
    refused_before_tls(server.direct_tls, ip(8)).await;
    assert_eq!(http_status(server.http, ip(8)).await, "503");
    // The bound session is still served.
    alice
        .write("<iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    assert_eq!(alice.element().await.attr("type"), Some("result"));
}

#[tokio::test]
async fn a_tls_handshake_that_never_completes_is_cut_by_the_negotiation_timeout() {
    let server = IsolatedServer::start(|c| c.c2s.negotiation_timeout_secs = 1, &[]);
    for addr in [server.direct_tls, server.https] {
        // Nothing at all.
        let mut silent = TcpStream::connect(addr).await.expect("connect");
        assert!(read_to_close(&mut silent).await.is_empty(), "{addr}");
        // Half a ClientHello.
        let mut half = TcpStream::connect(addr).await.expect("connect");
        half.write_all(&partial_client_hello())
            .await
            .expect("write");
        assert!(read_to_close(&mut half).await.is_empty(), "{addr}");
    }
}

#[tokio::test]
async fn an_http_request_that_never_completes_is_cut_by_the_negotiation_timeout() {
    let server = IsolatedServer::start(|c| c.c2s.negotiation_timeout_secs = 1, &[]);
    let mut silent = TcpStream::connect(server.http).await.expect("connect");
    read_to_close(&mut silent).await;
    let mut half = TcpStream::connect(server.http).await.expect("connect");
    half.write_all(b"GET /xmpp-websocket HTTP/1.1\r\nHost: loc")
        .await
        .expect("write");
    read_to_close(&mut half).await;
}

#[tokio::test]
async fn bytes_sent_with_starttls_are_discarded() {
    let server = IsolatedServer::start(|_| {}, &["alice"]);
    // In the same write as <starttls/>: a stanza and a second stream header with a login, all
    // plaintext an attacker on the path could have added.
    // (An XML declaration there would be refused as bad XML, hiding what is tested.)
    let header = OPEN.trim_start_matches("<?xml version='1.0'?>");
    let injected = format!(
        "<iq type='get' id='inj'><ping xmlns='urn:xmpp:ping'/></iq>{header}\
         <iq type='get' id='inj2'><ping xmlns='urn:xmpp:ping'/></iq>"
    );
    let mut raw = Raw::connect(server.c2s)
        .await
        .starttls_with(server.tls_config(), &injected)
        .await;
    raw.write(OPEN).await;
    let features = raw.element().await;
    assert_eq!(features.name(), "features");
    raw.auth_plain("alice", PASSWORD).await;
    assert_eq!(raw.element().await.name(), "success");
    raw.reset_parser();
    raw.write(OPEN).await;
    assert_eq!(raw.element().await.name(), "features");
    raw.write(
        "<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
         <resource>r</resource></bind></iq>",
    )
    .await;
    assert_eq!(raw.element().await.attr("id"), Some("bind"));
    raw.write("<iq type='get' id='after'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    loop {
        let el = raw.element().await;
        assert!(
            !matches!(el.attr("id"), Some("inj" | "inj2")),
            "an injected stanza was answered: {el:?}"
        );
        if el.attr("id") == Some("after") {
            break;
        }
    }
}

/// Writes `drip` one byte every 50 ms and returns what the server sent until it closed.
async fn drip_until_closed(io: Box<dyn Io>, drip: Vec<u8>) -> String {
    let (mut rd, mut wr) = tokio::io::split(io);
    let writer = tokio::spawn(async move {
        for byte in drip {
            if wr.write_all(&[byte]).await.is_err() || wr.flush().await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let mut got = Vec::new();
    let read = tokio::time::timeout(WAIT, async {
        let mut chunk = [0u8; 4096];
        // A TLS peer that closes without close_notify ends in an error; either is the end.
        while let Ok(n @ 1..) = rd.read(&mut chunk).await {
            got.extend_from_slice(&chunk[..n]);
        }
    })
    .await;
    writer.abort();
    assert!(read.is_ok(), "the server closes a dripping client");
    String::from_utf8_lossy(&got).into_owned()
}

/// Slowloris: a byte now and then keeps every read short, so only a deadline on the whole
/// negotiation (not on each read) ends it; before TLS and after it.
#[tokio::test]
async fn a_client_that_drips_bytes_is_cut_at_the_negotiation_deadline() {
    let server = IsolatedServer::start(|c| c.c2s.negotiation_timeout_secs = 1, &[]);
    // Before TLS: the stream header itself, a byte at a time (about 7 s of it).
    let tcp = TcpStream::connect(server.c2s).await.expect("connect");
    let got = drip_until_closed(Box::new(tcp), OPEN.as_bytes().to_vec()).await;
    assert!(got.contains("connection-timeout"), "{got}");

    // After STARTTLS: the new header, then whitespace.
    let tls = Raw::connect(server.c2s)
        .await
        .starttls(server.tls_config())
        .await;
    let mut drip = OPEN.as_bytes().to_vec();
    drip.extend([b' '; 100]);
    let got = drip_until_closed(tls.io, drip).await;
    assert!(got.contains("connection-timeout"), "{got}");
}
