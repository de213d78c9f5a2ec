//! XEP-0474 SASL SCRAM Downgrade Protection (version 0.5): the server-first-message carries
//! `h=`, the hash of the SASL mechanisms and XEP-0440 channel-binding types this stream
//! advertised. SCRAM signs the whole message with the password, so a client that computes
//! the same hash from what it saw knows nobody stripped a mechanism or a binding type.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;

use super::keys;
use crate::storage::ScramHash;

/// Between the items of one list.
const ITEM: char = '\u{1e}';
/// Between the mechanisms and the channel-binding types.
const LISTS: char = '\u{1f}';

/// The `h` attribute's value: `mechanisms` sorted (octet order), joined by %x1E, then, when
/// the stream advertised channel-binding types, %x1F and those sorted and joined; hashed with
/// the SCRAM mechanism's own hash, in base64.
pub fn downgrade_protection(
    hash: ScramHash,
    mechanisms: &[&str],
    channel_bindings: Option<&[&str]>,
) -> String {
    let mut text = sorted_joined(mechanisms);
    if let Some(types) = channel_bindings {
        text.push(LISTS);
        text.push_str(&sorted_joined(types));
    }
    BASE64.encode(keys::digest(hash, text.as_bytes()))
}

fn sorted_joined(items: &[&str]) -> String {
    let mut items = items.to_vec();
    // `str` ordering is byte order: RFC 4790's i;octet.
    items.sort_unstable();
    items.join(&ITEM.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_xeps_example() {
        // XEP-0474 §5.3: SCRAM-SHA-1 and -PLUS with tls-server-end-point and tls-exporter,
        // listed in another order than they are hashed.
        assert_eq!(
            downgrade_protection(
                ScramHash::Sha1,
                &["SCRAM-SHA-1-PLUS", "SCRAM-SHA-1"],
                Some(&["tls-server-end-point", "tls-exporter"]),
            ),
            "G6k/rBLDqgOhRRaCuuatSDFkJ08="
        );
    }

    #[test]
    fn without_channel_binding_types_there_is_no_second_list() {
        let text = "PLAIN\u{1e}SCRAM-SHA-256";
        assert_eq!(
            downgrade_protection(ScramHash::Sha256, &["SCRAM-SHA-256", "PLAIN"], None),
            BASE64.encode(keys::digest(ScramHash::Sha256, text.as_bytes()))
        );
    }
}
