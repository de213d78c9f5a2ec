//! The server side of SCRAM against arbitrary bytes: a client-first-message, a NUL, then a
//! client-final-message, run against an account `user` with real credentials (password
//! `pencil`). The first byte picks the hash, -PLUS or not, whether -PLUS was offered and which
//! channel bindings the stream has; bit 0x20 adds XEP-0474's `h=` to the server-first-message.
//! Nothing may panic, and no input may authenticate: a correct proof needs the password,
//! which the fuzzer cannot guess.
//!
//! The server nonce is random, so a fuzzer could never get past the nonce check on its own;
//! `@NONCE@` in the client-final is replaced by the nonce of the server-first-message, as a
//! real client copies it, so that the channel-binding and proof checks are reached too.
#![no_main]

use std::sync::OnceLock;

use corvid::sasl::{derive_credentials, ChannelBindings, ScramServer, MIN_ITERATIONS};
use corvid::storage::{ScramCredentials, ScramHash};
use libfuzzer_sys::fuzz_target;

const DOMAIN: &str = "example.com";

fn credentials(hash: ScramHash) -> &'static ScramCredentials {
    // PBKDF2 is slow on purpose: derive once per process, not per input.
    static SHA1: OnceLock<ScramCredentials> = OnceLock::new();
    static SHA256: OnceLock<ScramCredentials> = OnceLock::new();
    let cell = match hash {
        ScramHash::Sha1 => &SHA1,
        ScramHash::Sha256 => &SHA256,
    };
    cell.get_or_init(|| derive_credentials("pencil", hash, MIN_ITERATIONS).expect("valid"))
}

fn bindings(flags: u8) -> ChannelBindings {
    ChannelBindings {
        tls_exporter: (flags & 0x08 != 0).then(|| vec![0x11; 32]),
        tls_server_end_point: (flags & 0x10 != 0).then(|| vec![0x22; 32]),
    }
}

/// `r=<nonce>` of the server-first-message.
fn server_nonce(server_first: &[u8]) -> &[u8] {
    let text = server_first
        .strip_prefix(b"r=")
        .expect("server-first starts with r=");
    let end = text.iter().position(|&b| b == b',').expect("s= follows");
    &text[..end]
}

fn replace_marker(msg: &[u8], nonce: &[u8]) -> Vec<u8> {
    const MARKER: &[u8] = b"@NONCE@";
    let mut out = Vec::with_capacity(msg.len() + nonce.len());
    let mut rest = msg;
    while let Some(at) = rest.windows(MARKER.len()).position(|w| w == MARKER) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(nonce);
        rest = &rest[at + MARKER.len()..];
    }
    out.extend_from_slice(rest);
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, input)) = data.split_first() else {
        return;
    };
    let hash = if flags & 0x01 != 0 {
        ScramHash::Sha1
    } else {
        ScramHash::Sha256
    };
    let plus = flags & 0x02 != 0;
    let plus_offered = flags & 0x04 != 0;
    let bindings = bindings(flags);
    let (first, last) = match input.iter().position(|&b| b == 0) {
        Some(at) => (&input[..at], Some(&input[at + 1..])),
        None => (input, None),
    };
    let Ok(mut server) =
        ScramServer::client_first(hash, plus, first, &bindings, plus_offered, DOMAIN)
    else {
        return;
    };
    // XEP-0474 downgrade protection, as the stream adds it: an `h=` after `i=`, which the
    // nonce extraction and the proof check must take in their stride.
    if flags & 0x20 != 0 {
        let types = bindings.names();
        server.protect_downgrade(
            &["SCRAM-SHA-1", "SCRAM-SHA-256", "SCRAM-SHA-256-PLUS"],
            plus_offered.then_some(types.as_slice()),
        );
    }
    assert!(!server.username().is_empty());
    assert_eq!(server.hash(), hash);
    // The lookup the stream does: only `user` exists.
    let creds = (server.username() == "user").then(|| credentials(hash));
    let (challenged, server_first) = server.server_first(creds);
    let Some(last) = last else {
        return;
    };
    let last = replace_marker(last, server_nonce(&server_first));
    let result = challenged.client_final(&last);
    assert!(result.is_err(), "arbitrary input authenticated: {result:?}");
});
