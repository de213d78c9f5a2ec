//! Invites (XEP-0401 easy onboarding, XEP-0379 pre-authenticated roster subscription): a
//! secret token, with an `xmpp:` URI that clients open and an https landing page
//! (`crate::listen::invite_page`) for people without a client yet. Created by the operator
//! (`corvid invite create`), admins (ad-hoc commands) and, with `allow_user_invites`, users.

pub mod command;
mod pars;
mod uri;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use jid::BareJid;
use tracing::warn;

use crate::config::Config;
use crate::router::Router;
use crate::storage::{RosterItem, RosterWrite, Storage, StorageError, StoredInvite, Subscription};

pub use command::InviteCommands;
pub use pars::Pars;
pub use uri::{landing_url, public_base, xmpp_uri};

/// The path the landing page is served under, followed by the token.
pub const PAGE_PATH: &str = "/invite/";

/// How long used and expired invites are kept: 30 days.
const KEEP_STALE_MS: i64 = 30 * 24 * 3600 * 1000;

/// Random bytes in a token: 192 bits, written as 32 URL-safe characters.
const TOKEN_BYTES: usize = 24;

#[derive(Debug, Clone)]
pub struct InviteRequest {
    /// The hosted domain the invitee's account will be on.
    pub domain: String,
    /// Who invites; `None` for the operator.
    pub inviter: Option<BareJid>,
    /// The only localpart the invite may create.
    pub username: Option<String>,
    /// The new account and the inviter become mutual contacts.
    pub roster: bool,
    /// How long it stays usable; `invite_expiry_secs` when unset.
    pub expiry: Option<Duration>,
}

/// A created invite and the two ways to hand it over.
#[derive(Debug, Clone)]
pub struct Invite {
    pub stored: StoredInvite,
    /// `xmpp:inviter@domain?roster;preauth=TOKEN;ibr=y` (or `xmpp:domain?register;preauth=…`
    /// for an operator's invite), what Conversations and Gajim open.
    pub uri: String,
    /// The https page that lets someone without a client register in the browser.
    pub url: String,
}

#[derive(Debug, thiserror::Error)]
pub enum InviteError {
    #[error("'{0}' is not a domain served here")]
    UnknownDomain(String),
    #[error("the inviter {0} has no account here")]
    NoInviter(String),
    #[error("'{0}' is not a valid username")]
    BadUsername(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Why a token cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unusable {
    #[error("this invite does not exist")]
    Unknown,
    #[error("this invite has been used already")]
    Used,
    #[error("this invite has expired")]
    Expired,
}

/// Creates and stores an invite. The URL uses `http.public_url` (or the domain and the
/// listener's port) since the caller may be the command line, with no request to go by.
pub async fn create_invite(
    storage: &Storage,
    config: &Config,
    request: InviteRequest,
) -> Result<Invite, InviteError> {
    if !config.is_hosted(&request.domain) {
        return Err(InviteError::UnknownDomain(request.domain));
    }
    let username = match request.username {
        Some(name) => Some(
            crate::registration::normalise_username(&name, &request.domain)
                .map(|jid| jid.node().map(|n| n.to_string()).unwrap_or_default())
                .map_err(|_| InviteError::BadUsername(name))?,
        ),
        None => None,
    };
    let now = crate::ids::now_ms() as i64;
    let expiry = request
        .expiry
        .unwrap_or(Duration::from_secs(config.invite_expiry_secs));
    let stored = StoredInvite {
        token: new_token(),
        domain: request.domain,
        inviter: request.inviter.as_ref().map(BareJid::to_string),
        username,
        roster: request.roster && request.inviter.is_some(),
        created_at_ms: now,
        expires_at_ms: now.saturating_add(i64::try_from(expiry.as_millis()).unwrap_or(i64::MAX)),
    };
    match storage.invites.create_invite(&stored).await {
        Ok(()) => {}
        Err(StorageError::NotFound) => {
            return Err(InviteError::NoInviter(
                stored.inviter.clone().unwrap_or_default(),
            ))
        }
        Err(e) => return Err(e.into()),
    }
    // Old invites are kept a while so that their page still says "used" or "expired" rather
    // than "unknown"; creating a new one is when the old ones are swept.
    if let Err(e) = storage
        .invites
        .delete_stale_invites(now - KEEP_STALE_MS)
        .await
    {
        warn!(error = %e, "cannot sweep old invites");
    }
    let base = public_base(config, None, &stored.domain);
    Ok(Invite {
        uri: xmpp_uri(&stored),
        url: landing_url(&base, &stored.token),
        stored,
    })
}

/// Whether `inviter` may create invites: admins always (the caller knows who they are),
/// other users of a hosted domain with `allow_user_invites`. The operator (`corvid invite`)
/// needs no check.
pub fn may_invite(config: &Config, inviter: &BareJid, is_admin: bool) -> bool {
    is_admin || (config.allow_user_invites && config.is_hosted(inviter.domain().as_str()))
}

/// A fresh token: random, URL-safe, nothing to escape in a URI or HTML.
pub fn new_token() -> String {
    let bytes: [u8; TOKEN_BYTES] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The invite behind `token` if it can still be used at `now_ms`.
pub async fn usable(
    storage: &Storage,
    token: &str,
    now_ms: i64,
) -> Result<Result<StoredInvite, Unusable>, StorageError> {
    if !looks_like_token(token) {
        return Ok(Err(Unusable::Unknown));
    }
    let Some(state) = storage.invites.invite(token).await? else {
        return Ok(Err(Unusable::Unknown));
    };
    Ok(if state.used_by.is_some() {
        Err(Unusable::Used)
    } else if state.invite.expires_at_ms <= now_ms {
        Err(Unusable::Expired)
    } else {
        Ok(state.invite)
    })
}

/// Tokens are ours: anything else is refused before storage is asked.
fn looks_like_token(token: &str) -> bool {
    (16..=128).contains(&token.len())
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Makes `account` and `inviter` mutual contacts (subscription both on each side), as
/// XEP-0379 has it for an account created with the inviter's token, and tells the inviter's
/// online resources with a roster push.
pub async fn befriend(router: &Arc<Router>, account: &BareJid, inviter: &BareJid) {
    for (user, contact) in [(account, inviter), (inviter, account)] {
        let mut item = match router
            .storage()
            .roster
            .roster_item(user.as_str(), contact.as_str())
            .await
        {
            Ok(Some(item)) => item,
            Ok(None) => RosterItem::new(contact.to_string()),
            Err(e) => {
                warn!(error = %e, %user, "cannot read the roster for an invite's contact");
                continue;
            }
        };
        item.subscription = Subscription::Both;
        item.ask = false;
        let cap = router
            .config()
            .account_limits(user.domain().as_str())
            .roster_items;
        match router
            .storage()
            .roster
            .put_roster_item(user.as_str(), &item, cap)
            .await
        {
            Ok(RosterWrite::Stored(version)) => {
                crate::modules::roster::push::push(
                    router,
                    user,
                    version,
                    crate::modules::roster::items::item_element(&item),
                );
            }
            Ok(RosterWrite::Full) => warn!(%user, "roster full; invite contact not added"),
            Err(e) => warn!(error = %e, %user, "cannot add an invite's contact"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_invite_only_when_allowed() {
        let mut config = Config::default();
        let alice = BareJid::new("alice@localhost").unwrap();
        let stranger = BareJid::new("eve@elsewhere.example").unwrap();
        assert!(!may_invite(&config, &alice, false));
        assert!(may_invite(&config, &alice, true));
        config.allow_user_invites = true;
        assert!(may_invite(&config, &alice, false));
        assert!(!may_invite(&config, &stranger, false));
    }

    #[test]
    fn tokens_are_long_random_and_url_safe() {
        let a = new_token();
        let b = new_token();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(looks_like_token(&a));
        assert!(!looks_like_token("short"));
        assert!(!looks_like_token("../../../../etc/passwd/xxxxxxxx"));
    }
}
