//! PLAIN (`authzid NUL authcid NUL passwd`) against arbitrary bytes, checked against an account
//! `user` whose password is `pencil`. Nothing may panic; a parsed request is for the authcid
//! and never for another account the authzid names; a login succeeds only as `user` with a
//! password that SASLprep makes `pencil`.
#![no_main]

use std::sync::OnceLock;

use corvid::sasl::{derive_credentials, PlainRequest, MIN_ITERATIONS};
use corvid::storage::{ScramCredentials, ScramHash};
use libfuzzer_sys::fuzz_target;

const DOMAIN: &str = "example.com";

fn credentials() -> &'static ScramCredentials {
    // PBKDF2 is slow on purpose: derive once per process, not per input.
    static CREDS: OnceLock<ScramCredentials> = OnceLock::new();
    CREDS.get_or_init(|| {
        derive_credentials("pencil", ScramHash::Sha256, MIN_ITERATIONS).expect("valid")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(request) = PlainRequest::parse(data, DOMAIN) else {
        return;
    };
    // Parsing succeeded, so the message had exactly three UTF-8 fields.
    let fields: Vec<&str> = data
        .split(|&b| b == 0)
        .map(|f| std::str::from_utf8(f).expect("parse accepted it"))
        .collect();
    let [authzid, authcid, password] = fields[..] else {
        panic!("parse accepted {} fields", fields.len());
    };
    let username = request.username().to_string();
    assert!(!username.is_empty());
    // The account is the authcid's, however the authcid was spelled.
    let prepped = stringprep::saslprep(authcid).expect("parse prepped it");
    let node = jid::NodePart::new(&prepped).expect("parse accepted it as a localpart");
    assert_eq!(node.as_str(), username);
    // An authzid is allowed only when it names that same account on this domain.
    if !authzid.is_empty() {
        let requested = jid::Jid::new(authzid).expect("a refused authzid is an error");
        assert!(requested.resource().is_none(), "authzid {authzid:?}");
        assert_eq!(requested.domain().as_str(), DOMAIN, "authzid {authzid:?}");
        assert_eq!(
            requested.node().map(|n| n.as_str()),
            Some(username.as_str())
        );
    }
    // Only `user` has credentials: anyone else is checked against none (the stream's lookup).
    // Checking runs PBKDF2, so only inputs that could log in pay for it.
    if username != "user" {
        return;
    }
    let outcome = request.verify(Some(credentials()));
    let right = stringprep::saslprep(password).is_ok_and(|p| p == "pencil");
    assert_eq!(outcome.is_ok(), right, "password {password:?}");
    if let Ok(success) = outcome {
        assert_eq!(success.username, "user");
        assert_eq!(success.additional_data, None);
    }
});
