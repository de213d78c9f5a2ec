//! The XEP-0114 §3 handshake: the component proves it knows the shared secret by sending
//! the hex SHA-1 of the stream id followed by the secret.

use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;

/// `hex(SHA1(stream_id + secret))` in lower case, as XEP-0114 §3 writes it.
pub fn digest(stream_id: &str, secret: &str) -> String {
    let mut hasher = Sha1::new();
    hasher.update(stream_id.as_bytes());
    hasher.update(secret.as_bytes());
    hasher
        .finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Whether `sent` (the text of `<handshake/>`) proves the secret. Compared in constant time,
/// so the time taken tells an attacker nothing about how much of a guess was right;
/// upper-case hex is accepted too, since some libraries write it so.
pub fn verify(stream_id: &str, secret: &str, sent: &str) -> bool {
    let expected = digest(stream_id, secret);
    let sent = sent.trim().to_ascii_lowercase();
    bool::from(expected.as_bytes().ct_eq(sent.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_is_sha1_of_the_id_then_the_secret() {
        // SHA-1 of "abc", the FIPS 180 test vector, split between id and secret.
        assert_eq!(
            digest("a", "bc"),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
    }

    #[test]
    fn only_the_right_digest_verifies() {
        let good = digest("id1", "secret");
        assert!(verify("id1", "secret", &good));
        assert!(verify("id1", "secret", &good.to_ascii_uppercase()));
        assert!(verify("id1", "secret", &format!("\n {good} ")));
        assert!(!verify("id2", "secret", &good));
        assert!(!verify("id1", "secreT", &good));
        assert!(!verify("id1", "secret", &good[..39]));
        assert!(!verify("id1", "secret", ""));
    }
}
