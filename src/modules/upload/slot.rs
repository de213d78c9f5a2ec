//! Upload slots as signed URLs: everything the PUT must match (path, uploader, size, content
//! type, expiry) travels in the URL with an HMAC-SHA256 over it, keyed by a secret kept in
//! storage. Any node holding the secret accepts the upload; no slot is stored anywhere.

use base64::Engine;
use hmac::{Hmac, Mac};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sha2::Sha256;

/// Where uploads are served, under the HTTP listener.
pub const PATH_PREFIX: &str = "/upload";

/// Everything but RFC 3986's unreserved characters is encoded, in paths and queries alike.
const ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// What a PUT URL promises.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    /// `<token>/<file name>`.
    pub path: String,
    /// The uploader's bare JID.
    pub owner: String,
    pub size: u64,
    pub content_type: String,
    /// Unix seconds after which the PUT URL is refused.
    pub expires: i64,
}

/// Why a PUT URL was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SlotError {
    #[error("the upload URL lacks its signed parameters")]
    Missing,
    #[error("the upload URL's signature does not match")]
    BadSignature,
    #[error("the upload URL has expired")]
    Expired,
}

impl Slot {
    fn mac(&self, secret: &[u8]) -> Hmac<Sha256> {
        // The secret is ours, never network input, and HMAC takes keys of any length.
        let mut mac =
            Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
        // Each field with its length first: no two slots serialize alike.
        for field in [
            self.path.as_bytes(),
            self.owner.as_bytes(),
            self.size.to_string().as_bytes(),
            self.content_type.as_bytes(),
            self.expires.to_string().as_bytes(),
        ] {
            mac.update(&(field.len() as u64).to_be_bytes());
            mac.update(field);
        }
        mac
    }

    pub fn signature(&self, secret: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(self.mac(secret).finalize().into_bytes())
    }

    /// The query string of the PUT URL (without `?`).
    pub fn query(&self, secret: &[u8]) -> String {
        form_urlencoded::Serializer::new(String::new())
            .append_pair("owner", &self.owner)
            .append_pair("size", &self.size.to_string())
            .append_pair("type", &self.content_type)
            .append_pair("expires", &self.expires.to_string())
            .append_pair("sig", &self.signature(secret))
            .finish()
    }

    /// The slot a PUT to `path` with `query` was given for, if its signature holds and it has
    /// not expired at `now` (Unix seconds).
    pub fn verify(path: &str, query: &str, secret: &[u8], now: i64) -> Result<Slot, SlotError> {
        let mut owner = None;
        let mut size = None;
        let mut content_type = None;
        let mut expires = None;
        let mut sig = None;
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            let slot = match name.as_ref() {
                "owner" => &mut owner,
                "size" => &mut size,
                "type" => &mut content_type,
                "expires" => &mut expires,
                "sig" => &mut sig,
                _ => continue,
            };
            *slot = Some(value.into_owned());
        }
        let (Some(owner), Some(size), Some(content_type), Some(expires), Some(sig)) =
            (owner, size, content_type, expires, sig)
        else {
            return Err(SlotError::Missing);
        };
        let (Ok(size), Ok(expires)) = (size.parse(), expires.parse()) else {
            return Err(SlotError::BadSignature);
        };
        let Ok(sig) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(sig) else {
            return Err(SlotError::BadSignature);
        };
        let slot = Slot {
            path: path.to_owned(),
            owner,
            size,
            content_type,
            expires,
        };
        // Constant-time comparison.
        slot.mac(secret)
            .verify_slice(&sig)
            .map_err(|_| SlotError::BadSignature)?;
        if now > slot.expires {
            return Err(SlotError::Expired);
        }
        Ok(slot)
    }
}

/// A fresh, unguessable URL token (the file's key in the store).
pub fn new_token() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 18]>())
}

/// The client's file name made safe for a URL path segment and a download header: no path
/// separators or control characters, at most 128 bytes; `file` when nothing is left.
pub fn clean_filename(name: &str) -> String {
    let mut clean = String::new();
    for c in name.chars() {
        let c = if c.is_control() || matches!(c, '/' | '\\') {
            '_'
        } else {
            c
        };
        if clean.len() + c.len_utf8() > 128 {
            break;
        }
        clean.push(c);
    }
    let trimmed = clean.trim().trim_start_matches('.');
    if trimmed.is_empty() {
        "file".to_owned()
    } else {
        trimmed.to_owned()
    }
}

/// `<token>/<file name>` as it appears in a URL path.
pub fn url_path(path: &str) -> String {
    let (token, name) = path.split_once('/').unwrap_or((path, ""));
    format!(
        "{PATH_PREFIX}/{token}/{}",
        utf8_percent_encode(name, ENCODE)
    )
}

/// A percent-encoded path segment, decoded; `None` when it is not UTF-8.
pub fn decode_segment(segment: &str) -> Option<String> {
    percent_decode_str(segment)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

/// `filename*` of a Content-Disposition header (RFC 6266, RFC 8187).
pub fn disposition_filename(name: &str) -> String {
    format!("UTF-8''{}", utf8_percent_encode(name, ENCODE))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot() -> Slot {
        Slot {
            path: "tok/a b.png".into(),
            owner: "alice@example.org".into(),
            size: 42,
            content_type: "image/png".into(),
            expires: 1000,
        }
    }

    #[test]
    fn a_signed_slot_verifies_and_a_changed_one_does_not() {
        let secret = b"secret";
        let query = slot().query(secret);
        assert_eq!(Slot::verify("tok/a b.png", &query, secret, 999), Ok(slot()));
        assert_eq!(
            Slot::verify("tok/other.png", &query, secret, 999),
            Err(SlotError::BadSignature)
        );
        let bigger = query.replace("size=42", "size=43");
        assert_eq!(
            Slot::verify("tok/a b.png", &bigger, secret, 999),
            Err(SlotError::BadSignature)
        );
        assert_eq!(
            Slot::verify("tok/a b.png", &query, b"other", 999),
            Err(SlotError::BadSignature)
        );
        assert_eq!(
            Slot::verify("tok/a b.png", &query, secret, 1001),
            Err(SlotError::Expired)
        );
        assert_eq!(
            Slot::verify("tok/a b.png", "size=42", secret, 0),
            Err(SlotError::Missing)
        );
    }

    #[test]
    fn file_names_lose_separators_and_control_characters() {
        assert_eq!(clean_filename("../../etc/passwd"), "_.._etc_passwd");
        assert_eq!(clean_filename("a\nb.txt"), "a_b.txt");
        assert_eq!(clean_filename("..."), "file");
        assert_eq!(clean_filename("très cool.jpg"), "très cool.jpg");
        assert!(clean_filename(&"é".repeat(200)).len() <= 128);
    }

    #[test]
    fn url_paths_round_trip() {
        let path = url_path("tok/très cool.jpg");
        assert_eq!(path, "/upload/tok/tr%C3%A8s%20cool.jpg");
        assert_eq!(
            decode_segment("tr%C3%A8s%20cool.jpg").as_deref(),
            Some("très cool.jpg")
        );
    }
}
