//! Rosters (RFC 6121 §2), subscription state (§3) and last activity (XEP-0012).

use async_trait::async_trait;

use super::StorageResult;

/// The `subscription` attribute of a roster item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Subscription {
    None,
    /// The user receives the contact's presence.
    To,
    /// The contact receives the user's presence.
    From,
    Both,
}

impl Subscription {
    pub fn as_str(self) -> &'static str {
        match self {
            Subscription::None => "none",
            Subscription::To => "to",
            Subscription::From => "from",
            Subscription::Both => "both",
        }
    }

    pub fn parse(s: &str) -> Option<Subscription> {
        match s {
            "none" => Some(Subscription::None),
            "to" => Some(Subscription::To),
            "from" => Some(Subscription::From),
            "both" => Some(Subscription::Both),
            _ => None,
        }
    }

    /// The contact is subscribed to the user's presence.
    pub fn contact_sees_user(self) -> bool {
        matches!(self, Subscription::From | Subscription::Both)
    }

    /// The user is subscribed to the contact's presence.
    pub fn user_sees_contact(self) -> bool {
        matches!(self, Subscription::To | Subscription::Both)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RosterItem {
    /// The contact's bare JID.
    pub contact: String,
    pub name: Option<String>,
    pub subscription: Subscription,
    /// The user asked to subscribe and the contact has not answered ("Pending Out").
    pub ask: bool,
    /// The user pre-approved the contact's future subscription request (§3.4).
    pub approved: bool,
    pub groups: Vec<String>,
}

impl RosterItem {
    pub fn new(contact: impl Into<String>) -> RosterItem {
        RosterItem {
            contact: contact.into(),
            name: None,
            subscription: Subscription::None,
            ask: false,
            approved: false,
            groups: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RosterWrite {
    /// Written; the roster's new version.
    Stored(i64),
    /// A new item would exceed the per-user cap; nothing was written.
    Full,
}

/// Rosters of local accounts. Every write bumps the roster's version (RFC 6121 §2.6), which
/// only ever grows, so a client's cached version is current exactly when it equals ours.
#[async_trait]
pub trait RosterStore: Send + Sync {
    /// The roster's version and items, sorted by contact.
    async fn roster(&self, username: &str) -> StorageResult<(i64, Vec<RosterItem>)>;
    async fn roster_version(&self, username: &str) -> StorageResult<i64>;
    async fn roster_item(&self, username: &str, contact: &str)
        -> StorageResult<Option<RosterItem>>;
    /// Inserts or replaces the item. Adding one more item than `max_items` answers `Full`.
    /// `NotFound` if the account does not exist.
    async fn put_roster_item(
        &self,
        username: &str,
        item: &RosterItem,
        max_items: u32,
    ) -> StorageResult<RosterWrite>;
    /// Removes the item; the new version, or `None` if there was no such item.
    async fn delete_roster_item(&self, username: &str, contact: &str)
        -> StorageResult<Option<i64>>;

    /// Records an unanswered inbound subscription request with the stanza to show the user.
    async fn put_pending_in(
        &self,
        username: &str,
        contact: &str,
        stanza: &str,
    ) -> StorageResult<()>;
    /// Forgets a pending inbound request; true if there was one.
    async fn delete_pending_in(&self, username: &str, contact: &str) -> StorageResult<bool>;
    async fn has_pending_in(&self, username: &str, contact: &str) -> StorageResult<bool>;
    /// Every pending inbound request as (contact, stanza), sorted by contact.
    async fn pending_in(&self, username: &str) -> StorageResult<Vec<(String, String)>>;
}

/// When an account was last online (XEP-0012).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastActivity {
    /// Seconds since the Unix epoch at which its last session ended.
    pub at_secs: i64,
    /// The status of its last unavailable presence.
    pub status: String,
}

#[async_trait]
pub trait LastActivityStore: Send + Sync {
    async fn set_last_activity(&self, username: &str, last: &LastActivity) -> StorageResult<()>;
    async fn last_activity(&self, username: &str) -> StorageResult<Option<LastActivity>>;
}

pub(super) fn groups_to_json(groups: &[String]) -> String {
    serde_json::to_string(groups).unwrap_or_else(|_| "[]".to_string())
}

pub(super) fn groups_from_json(json: &str) -> Vec<String> {
    serde_json::from_str(json).unwrap_or_default()
}
