//! XEP-0484 FAST tokens: per account and client (the SASL2 user-agent id), two slots, as the
//! XEP's implementation notes suggest. A freshly issued token waits in `new`; its first use
//! moves it to `current`, dropping the token it replaces. So a client that lost the `<success/>`
//! carrying a new token still logs in with the old one, and tokens stay bounded per client.
//!
//! Tokens are stored as issued, not hashed. The HT mechanisms key an HMAC with the token, so
//! the server needs the key itself; storing SHA-256(token) would not help either, because
//! HMAC hashes keys longer than its block into exactly that value, making the hash as good
//! as the token to an attacker. What limits a leak instead: tokens expire, are bound to one
//! client and mechanism, and are dropped on password change and account deletion.

use std::fmt;

use async_trait::async_trait;

use super::StorageResult;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FastSlot {
    /// The token the client last logged in with.
    Current,
    /// Issued, not used yet.
    New,
}

impl FastSlot {
    pub fn as_str(self) -> &'static str {
        match self {
            FastSlot::Current => "current",
            FastSlot::New => "new",
        }
    }

    pub fn from_db(s: &str) -> Option<Self> {
        match s {
            "current" => Some(FastSlot::Current),
            "new" => Some(FastSlot::New),
            _ => None,
        }
    }
}

#[derive(Clone, PartialEq, Eq)]
pub struct FastToken {
    pub slot: FastSlot,
    /// The secret, as sent in `<token token='…'/>`.
    pub token: String,
    /// The HT mechanism it was issued for; it is refused with any other.
    pub mechanism: String,
    /// Milliseconds since the Unix epoch; unusable from then on.
    pub expires_at_ms: i64,
    /// The highest `<fast count='…'/>` accepted with it, for replay protection.
    pub last_count: Option<i64>,
}

// The token is a password equivalent: never in logs.
impl fmt::Debug for FastToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FastToken")
            .field("slot", &self.slot)
            .field("mechanism", &self.mechanism)
            .field("expires_at_ms", &self.expires_at_ms)
            .field("last_count", &self.last_count)
            .finish_non_exhaustive()
    }
}

#[async_trait]
pub trait FastTokenStore: Send + Sync {
    /// The tokens of one client, the `new` slot first.
    async fn fast_tokens(&self, username: &str, client_id: &str) -> StorageResult<Vec<FastToken>>;
    /// Puts a freshly issued token in the `new` slot (replacing an unused one there) and drops
    /// the user's tokens that expired by `now_ms`. `NotFound` if the account does not exist.
    async fn issue_fast_token(
        &self,
        username: &str,
        client_id: &str,
        token: &str,
        mechanism: &str,
        expires_at_ms: i64,
        now_ms: i64,
    ) -> StorageResult<()>;
    /// Records a successful login with `token`: stores `count`, and a token from the `new` slot
    /// becomes `current`, replacing the one there. Returns false, changing nothing, when the
    /// token is no longer stored or `count` is not above the last count recorded for it; the
    /// check and the update are atomic, so one replayed login cannot succeed twice.
    async fn use_fast_token(
        &self,
        username: &str,
        client_id: &str,
        token: &str,
        count: Option<i64>,
    ) -> StorageResult<bool>;
    /// Forgets `token` (the client asked to invalidate it).
    async fn delete_fast_token(
        &self,
        username: &str,
        client_id: &str,
        token: &str,
    ) -> StorageResult<()>;
}
