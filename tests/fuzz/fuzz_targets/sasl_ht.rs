//! The HT-SHA-256 mechanisms of XEP-0484 FAST (`authcid NUL initiator-hash`) against arbitrary
//! bytes. The first byte picks the mechanism (its two low bits) and the stream's channel bindings. Nothing may
//! panic; a parsed request carries exactly a SHA-256-sized hash; the stored token verifies only
//! the hash a client holding that token computes for this stream's binding, and the answer is
//! the responder hash.
#![no_main]

use corvid::sasl::ht::{client_message, server_final};
use corvid::sasl::{ChannelBindingType, ChannelBindings, HtMechanism, HtRequest};
use libfuzzer_sys::fuzz_target;

/// The token the (only) account holds; the seeds contain messages computed with it.
const TOKEN: &[u8] = b"fuzz-token";

fuzz_target!(|data: &[u8]| {
    let Some((&flags, message)) = data.split_first() else {
        return;
    };
    let Some(&mechanism) = HtMechanism::ALL.get(usize::from(flags & 0x03)) else {
        return;
    };
    let bindings = ChannelBindings {
        tls_exporter: (flags & 0x04 != 0).then(|| vec![0x11; 32]),
        tls_server_end_point: (flags & 0x08 != 0).then(|| vec![0x22; 32]),
    };
    let Ok(request) = HtRequest::parse(mechanism, message, &bindings) else {
        return;
    };
    let nul = message
        .iter()
        .position(|&b| b == 0)
        .expect("parse found one");
    let (authcid, hash) = (&message[..nul], &message[nul + 1..]);
    assert_eq!(hash.len(), 32);
    assert!(std::str::from_utf8(authcid).is_ok());
    assert!(!request.username().is_empty());
    let cb_data = match mechanism.binding() {
        None => &[][..],
        Some(ty) => bindings.get(ty).expect("parse refuses a missing binding"),
    };
    if mechanism.binding() == Some(ChannelBindingType::TlsExporter) {
        assert_eq!(cb_data, [0x11; 32]);
    }
    let expected = client_message("", TOKEN, cb_data);
    match request.verify(TOKEN) {
        Some(answer) => {
            assert_eq!(hash, &expected[1..], "a wrong hash verified");
            assert_eq!(answer, server_final(TOKEN, cb_data));
        }
        None => assert_ne!(hash, &expected[1..], "the right hash was refused"),
    }
});
