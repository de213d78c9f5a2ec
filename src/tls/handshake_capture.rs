//! What rustls' unbuffered API does not tell (see `lean_stream`), learned while the handshake
//! runs: the TLS 1.3 exporter master secret, through the configuration's key log, from which
//! RFC 8446 §7.5 derives RFC 9266's `tls-exporter`; and the certificate the resolver served,
//! which `tls-server-end-point` hashes.
//!
//! rustls logs the secret and asks the resolver synchronously, inside the one call into the
//! connection that needs them, on the calling thread. So both pass through a thread-local that
//! is cleared before each such call and emptied right after it ([`capture`]): nothing outlives
//! that call, and what some other connection's call left can never be taken for this one.

use std::cell::RefCell;
use std::sync::Arc;

use rustls::crypto::hash::HashAlgorithm;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::KeyLog;
use zeroize::Zeroizing;

/// rustls' key-log label for the TLS 1.3 exporter master secret (the NSS key log format's).
const EXPORTER_SECRET: &str = "EXPORTER_SECRET";

/// What one call into a connection revealed.
#[derive(Default)]
pub struct Learned {
    pub exporter_secret: Option<Zeroizing<Vec<u8>>>,
    pub served: Option<Arc<CertifiedKey>>,
}

thread_local! {
    static LEARNED: RefCell<Learned> = RefCell::new(Learned::default());
}

/// The key log of a configuration whose connections use [`capture`]. It keeps nothing: a
/// secret logged outside `capture` is overwritten or cleared by the next one.
#[derive(Debug, Default)]
pub struct ExporterSecretLog;

impl KeyLog for ExporterSecretLog {
    fn will_log(&self, label: &str) -> bool {
        label == EXPORTER_SECRET
    }

    fn log(&self, label: &str, _client_random: &[u8], secret: &[u8]) {
        if label == EXPORTER_SECRET {
            let secret = Zeroizing::new(secret.to_vec());
            LEARNED.with(|learned| learned.borrow_mut().exporter_secret = Some(secret));
        }
    }
}

/// A resolver that also tells [`capture`] which certificate it chose.
#[derive(Debug)]
pub struct RecordServed<R>(pub R);

impl<R: ResolvesServerCert> ResolvesServerCert for RecordServed<R> {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let served = self.0.resolve(hello)?;
        LEARNED.with(|learned| learned.borrow_mut().served = Some(served.clone()));
        Some(served)
    }
}

/// Runs `call` (one synchronous call into a connection) and returns what it returned, and what
/// rustls revealed during the call.
pub fn capture<R>(call: impl FnOnce() -> R) -> (R, Learned) {
    LEARNED.with(|learned| learned.take());
    let result = call();
    (result, LEARNED.with(|learned| learned.take()))
}

/// RFC 8446 §7.5 `TLS-Exporter(label, "", length)` from the exporter master secret of a
/// connection whose cipher suite hashes with `hash`. `None` for a hash TLS 1.3 does not use.
pub fn export(
    hash: HashAlgorithm,
    exporter_master_secret: &[u8],
    label: &[u8],
    length: usize,
) -> Option<Vec<u8>> {
    let (hkdf, digest) = match hash {
        HashAlgorithm::SHA256 => (aws_lc_rs::hkdf::HKDF_SHA256, &aws_lc_rs::digest::SHA256),
        HashAlgorithm::SHA384 => (aws_lc_rs::hkdf::HKDF_SHA384, &aws_lc_rs::digest::SHA384),
        _ => return None,
    };
    let empty_hash = aws_lc_rs::digest::digest(digest, b"");
    // Derive-Secret(Secret, label, "") = HKDF-Expand-Label(Secret, label, Hash(""), Hash.length)
    let mut derived = Zeroizing::new(vec![0; digest.output_len()]);
    expand_label(
        hkdf,
        exporter_master_secret,
        label,
        empty_hash.as_ref(),
        &mut derived,
    )?;
    // HKDF-Expand-Label(Derive-Secret(..), "exporter", Hash(context_value), length), with an
    // empty context, as RFC 9266 asks.
    let mut out = vec![0; length];
    expand_label(hkdf, &derived, b"exporter", empty_hash.as_ref(), &mut out)?;
    Some(out)
}

/// RFC 8446 §7.1 HKDF-Expand-Label into `out` (its length is the output's).
fn expand_label(
    hkdf: aws_lc_rs::hkdf::Algorithm,
    secret: &[u8],
    label: &[u8],
    context: &[u8],
    out: &mut [u8],
) -> Option<()> {
    const PREFIX: &[u8] = b"tls13 ";
    let length = u16::try_from(out.len()).ok()?.to_be_bytes();
    let label_len = [u8::try_from(PREFIX.len() + label.len()).ok()?];
    let context_len = [u8::try_from(context.len()).ok()?];
    let info = [
        &length[..],
        &label_len[..],
        PREFIX,
        label,
        &context_len[..],
        context,
    ];
    let prk = aws_lc_rs::hkdf::Prk::new_less_safe(hkdf, secret);
    prk.expand(&info, OutputLength(out.len()))
        .ok()?
        .fill(out)
        .ok()
}

/// aws-lc-rs's way of saying how many bytes an expansion gives.
struct OutputLength(usize);

impl aws_lc_rs::hkdf::KeyType for OutputLength {
    fn len(&self) -> usize {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The derivation checked on its own against a value computed independently with
    /// Python's `hmac`/`hashlib` (HKDF-Expand written out from RFC 5869): the whole path
    /// through a real handshake is checked against rustls in `lean_stream`'s tests.
    #[test]
    fn derivation_matches_an_independent_computation() {
        let secret = [7u8; 32];
        let got = export(
            HashAlgorithm::SHA256,
            &secret,
            b"EXPORTER-Channel-Binding",
            32,
        )
        .expect("sha256");
        assert_eq!(hex(&got), EXPECTED_SHA256);
    }

    #[test]
    fn hashes_tls13_does_not_use_give_nothing() {
        assert!(export(HashAlgorithm::SHA1, &[0; 20], b"x", 32).is_none());
    }

    #[test]
    fn a_secret_is_only_taken_from_the_call_that_logged_it() {
        let log = ExporterSecretLog;
        // Logged outside any capture (another connection's call): not seen by the next one.
        log.log(EXPORTER_SECRET, &[0; 32], b"stale");
        let ((), none) = capture(|| ());
        assert!(none.exporter_secret.is_none());
        let ((), some) = capture(|| log.log(EXPORTER_SECRET, &[0; 32], b"fresh"));
        let fresh = some.exporter_secret.as_deref().map(Vec::as_slice);
        assert_eq!(fresh, Some(&b"fresh"[..]));
        let ((), other) = capture(|| log.log("CLIENT_TRAFFIC_SECRET_0", &[0; 32], b"no"));
        assert!(other.exporter_secret.is_none());
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    const EXPECTED_SHA256: &str =
        "bc690396b50c3f7994fc4f9415af47be310a461fc98080df88e8e77b45b6e2de";
}
