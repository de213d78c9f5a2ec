//! Unguessable identifiers: stream ids, generated resources, Stream Management resumption ids.

/// 96 random bits as 24 hex digits.
pub fn random_id() -> String {
    use rand::Rng;
    let bytes: [u8; 12] = rand::thread_rng().gen();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
