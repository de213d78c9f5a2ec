//! XEP-0401 invites (and the XEP-0379 tokens they carry): a random token that lets one person
//! create an account on a hosted domain, or have a subscription to the inviter approved,
//! until it expires. Each is used at most once: the use is recorded by one conditional
//! update, so of two concurrent uses exactly one wins.

use std::fmt;

use async_trait::async_trait;

use super::StorageResult;

#[derive(Clone, PartialEq, Eq)]
pub struct StoredInvite {
    /// The secret, as it appears in the invite link.
    pub token: String,
    /// The hosted domain an account made with it is created on.
    pub domain: String,
    /// The inviter's bare JID; `None` when the operator created it.
    pub inviter: Option<String>,
    /// The only localpart it may create, when the inviter chose one.
    pub username: Option<String>,
    /// The new account and the inviter become mutual contacts.
    pub roster: bool,
    pub created_at_ms: i64,
    /// Milliseconds since the Unix epoch; unusable from then on.
    pub expires_at_ms: i64,
}

// The token lets anyone holding it create an account: never in logs.
impl fmt::Debug for StoredInvite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredInvite")
            .field("domain", &self.domain)
            .field("inviter", &self.inviter)
            .field("username", &self.username)
            .field("roster", &self.roster)
            .field("expires_at_ms", &self.expires_at_ms)
            .finish_non_exhaustive()
    }
}

/// An invite as looked up, with whether it was used already.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InviteState {
    pub invite: StoredInvite,
    /// The account (or subscriber) that used it, if any did.
    pub used_by: Option<String>,
}

#[async_trait]
pub trait InviteStore: Send + Sync {
    /// Stores a new invite; `Conflict` if the token exists, `NotFound` if the inviter's
    /// account does not.
    async fn create_invite(&self, invite: &StoredInvite) -> StorageResult<()>;
    /// The invite with this token, used or not, expired or not.
    async fn invite(&self, token: &str) -> StorageResult<Option<InviteState>>;
    /// Marks the invite used by `used_by` if it is unused and not expired at `now_ms`, and
    /// returns it; `None`, changing nothing, otherwise. Atomic: of concurrent calls for one
    /// token, one gets it.
    async fn consume_invite(
        &self,
        token: &str,
        used_by: &str,
        now_ms: i64,
    ) -> StorageResult<Option<StoredInvite>>;
    /// Makes an invite `used_by` consumed usable again (the account it was for could not be
    /// created after all); false if it was not consumed by `used_by`.
    async fn release_invite(&self, token: &str, used_by: &str) -> StorageResult<bool>;
    /// Invites `inviter` created that are still unused and unexpired at `now_ms`, oldest first.
    async fn pending_invites(
        &self,
        inviter: Option<&str>,
        now_ms: i64,
    ) -> StorageResult<Vec<StoredInvite>>;
    /// Forgets invites that expired or were used by `before_ms`; how many.
    async fn delete_stale_invites(&self, before_ms: i64) -> StorageResult<u64>;
}
