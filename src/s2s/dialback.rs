//! Server Dialback (XEP-0220): the keys, and the elements that carry them.
//!
//! A key is derived as XEP-0185 recommends, from a secret every node of this server shares
//! (kept in storage): any node can then answer a `<db:verify/>` for a stream another node
//! opened, and a restart does not invalidate keys in flight.

use hmac::{Hmac, Mac};
use minidom::Element;
use sha2::{Digest, Sha256};

use crate::stanza::set_attr;
use crate::xml::ns;

pub const NS: &str = "jabber:server:dialback";
/// The stream feature a server offers when it accepts dialback (XEP-0220 §2.1).
pub const FEATURE_NS: &str = "urn:xmpp:features:dialback";

/// The name of the secret in storage.
pub const SECRET_NAME: &str = "s2s-dialback";

#[derive(Clone)]
pub struct DialbackKeys {
    /// SHA-256 of the stored secret in lower-case hex, what XEP-0185 §2 keys the HMAC with.
    hashed_secret: String,
}

impl DialbackKeys {
    pub fn new(secret: &[u8]) -> DialbackKeys {
        DialbackKeys {
            hashed_secret: Sha256::digest(secret)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
        }
    }

    /// The key an originating server sends for a stream with id `stream_id` that `receiving`
    /// opened in answer to it (XEP-0185 §2): hex of
    /// HMAC-SHA256(SHA256(secret), receiving ' ' originating ' ' stream id).
    pub fn key(&self, receiving: &str, originating: &str, stream_id: &str) -> String {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(self.hashed_secret.as_bytes()) else {
            // HMAC takes a key of any length; no key is refused.
            return String::new();
        };
        mac.update(receiving.as_bytes());
        mac.update(b" ");
        mac.update(originating.as_bytes());
        mac.update(b" ");
        mac.update(stream_id.as_bytes());
        mac.finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Whether `key` is the one this server would have sent: compared in constant time, since
    /// the peer chooses what it sends.
    pub fn is_valid(&self, key: &str, receiving: &str, originating: &str, stream_id: &str) -> bool {
        use subtle::ConstantTimeEq;
        let expected = self.key(receiving, originating, stream_id);
        !key.is_empty() && bool::from(expected.as_bytes().ct_eq(key.trim().as_bytes()))
    }
}

/// `<db:result>` or `<db:verify>` as sent and received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dialback {
    pub verify: bool,
    pub from: String,
    pub to: String,
    /// `<db:verify>` only: the stream the key was given on.
    pub id: Option<String>,
    pub kind: DialbackType,
    /// The key of a request; empty in an answer.
    pub key: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialbackType {
    /// A request: the key is to be checked.
    Request,
    Valid,
    Invalid,
    Error,
}

impl Dialback {
    /// Reads a `<db:result>` or `<db:verify>`; None for anything else or without from/to.
    pub fn parse(el: &Element) -> Option<Dialback> {
        if el.ns() != NS || !matches!(el.name(), "result" | "verify") {
            return None;
        }
        let kind = match el.attr("type") {
            None => DialbackType::Request,
            Some("valid") => DialbackType::Valid,
            Some("invalid") => DialbackType::Invalid,
            Some(_) => DialbackType::Error,
        };
        Some(Dialback {
            verify: el.name() == "verify",
            from: el.attr("from")?.to_ascii_lowercase(),
            to: el.attr("to")?.to_ascii_lowercase(),
            id: el.attr("id").map(str::to_owned),
            kind,
            key: el.text(),
        })
    }

    /// A request to check `key` for a stream from `from` to `to`.
    pub fn result_request(from: &str, to: &str, key: String) -> Element {
        let mut el = Element::builder("result", NS).append(key).build();
        set_attr(&mut el, "from", from);
        set_attr(&mut el, "to", to);
        el
    }

    /// Asks the authoritative server of `to` whether `key` is its key for stream `id`.
    pub fn verify_request(from: &str, to: &str, id: &str, key: String) -> Element {
        let mut el = Element::builder("verify", NS).append(key).build();
        set_attr(&mut el, "from", from);
        set_attr(&mut el, "to", to);
        set_attr(&mut el, "id", id);
        el
    }

    /// The answer to this request, from its `to` back to its `from`.
    pub fn answer(&self, valid: bool) -> Element {
        let mut el = Element::bare(if self.verify { "verify" } else { "result" }, NS);
        set_attr(&mut el, "from", self.to.as_str());
        set_attr(&mut el, "to", self.from.as_str());
        if let Some(id) = &self.id {
            set_attr(&mut el, "id", id.as_str());
        }
        set_attr(&mut el, "type", if valid { "valid" } else { "invalid" });
        el
    }

    /// An error answer (XEP-0220 §2.4): the request names a domain not served here
    /// (`item-not-found`), or policy forbids dialback for it (`policy-violation`), or the
    /// authoritative server could not be reached (`remote-server-not-found`).
    pub fn error(&self, condition: &str, text: &str) -> Element {
        let mut el = Element::builder(if self.verify { "verify" } else { "result" }, NS)
            .append(
                // The stanza error of the stream's own namespace (XEP-0220 §2.4).
                Element::builder("error", ns::SERVER)
                    .append(Element::bare(condition, ns::STANZAS_ERRORS))
                    .append(
                        Element::builder("text", ns::STANZAS_ERRORS)
                            .append(text.to_owned())
                            .build(),
                    )
                    .build(),
            )
            .build();
        set_attr(&mut el, "from", self.to.as_str());
        set_attr(&mut el, "to", self.from.as_str());
        if let Some(id) = &self.id {
            set_attr(&mut el, "id", id.as_str());
        }
        set_attr(&mut el, "type", "error");
        if let Some(error) = el.get_child_mut("error", ns::SERVER) {
            set_attr(error, "type", "cancel");
        }
        el
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_xep_0185() {
        // Computed independently (Python's hmac/hashlib) for secret "s3cr3tf0rd14lb4ck",
        // receiving "example.net", originating "example.com", stream id "D60000229F".
        let keys = DialbackKeys::new(b"s3cr3tf0rd14lb4ck");
        let key = keys.key("example.net", "example.com", "D60000229F");
        assert_eq!(
            key,
            "008c689ff366b50c63d69a3e2d2c0e0e1f8404b0118eb688a0102c87cb691bdc"
        );
        assert!(keys.is_valid(&key, "example.net", "example.com", "D60000229F"));
        assert!(!keys.is_valid(&key, "example.net", "example.com", "D60000229G"));
        assert!(!keys.is_valid("", "example.net", "example.com", "D60000229F"));
        let other = DialbackKeys::new(b"another secret");
        assert!(!other.is_valid(&key, "example.net", "example.com", "D60000229F"));
    }

    #[test]
    fn requests_and_answers_round_trip() {
        let request = Dialback::verify_request("b.test", "a.test", "s1", "abc".into());
        let parsed = Dialback::parse(&request).expect("parses");
        assert!(parsed.verify);
        assert_eq!(parsed.kind, DialbackType::Request);
        assert_eq!(parsed.key, "abc");
        let answer = Dialback::parse(&parsed.answer(true)).expect("answer parses");
        assert_eq!(answer.kind, DialbackType::Valid);
        assert_eq!(
            (answer.from.as_str(), answer.to.as_str()),
            ("a.test", "b.test")
        );
        assert_eq!(answer.id.as_deref(), Some("s1"));
        let error = Dialback::parse(&parsed.error("item-not-found", "no")).expect("error");
        assert_eq!(error.kind, DialbackType::Error);
    }
}
