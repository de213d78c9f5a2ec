//! Creating an account from outside: XEP-0077 in-band registration on a client stream
//! (`crate::stream::register`) and the invite page (`crate::listen::invite_page`) share the
//! checks here, so both refuse the same things in the same way. What the domain's
//! `registration` mode allows, the username's form, the invite's validity and the per-address
//! limits of open registration are all decided in `register`.

mod limiter;
pub mod query;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use jid::BareJid;
use tracing::{info, warn};

use crate::config::RegistrationMode;
use crate::invites::{self, Unusable};
use crate::router::Router;
use crate::stanza::StanzaError;
use crate::storage::{ScramCredentials, ScramHash, StorageError};

pub use limiter::{Refusal, RegistrationLimiter};

/// `jabber:iq:register` (XEP-0077).
pub const NS_REGISTER: &str = "jabber:iq:register";
/// The stream feature that offers in-band registration (XEP-0077 §4).
pub const NS_REGISTER_FEATURE: &str = "http://jabber.org/features/iq-register";
/// The stream feature saying registration takes an invite token (XEP-0445).
pub const NS_IBR_TOKEN: &str = "urn:xmpp:ibr-token:0";
/// `<preauth token='…'/>` (XEP-0379).
pub const NS_PARS: &str = "urn:xmpp:pars:0";

/// Longer passwords are refused: nobody types them, and each costs PBKDF2 work.
const MAX_PASSWORD_BYTES: usize = 1024;

/// One account to create.
#[derive(Debug, Clone, Copy)]
pub struct NewAccount<'a> {
    /// A hosted domain.
    pub domain: &'a str,
    pub username: &'a str,
    pub password: &'a str,
    /// An invite token, if the request came with one.
    pub token: Option<&'a str>,
    /// Where the request came from, counted against open registration's limits.
    pub source: IpAddr,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistrationError {
    #[error("registration is closed on this server")]
    Closed,
    #[error("registration on this server requires an invite")]
    InviteRequired,
    #[error("{0}")]
    Invite(Unusable),
    #[error("this invite is for the username '{0}'")]
    WrongUsername(String),
    #[error("the username is missing")]
    MissingUsername,
    #[error("the password is missing")]
    MissingPassword,
    #[error("the password is too long")]
    PasswordTooLong,
    #[error("'{0}' is not a valid username")]
    BadUsername(String),
    #[error("that username is taken")]
    Conflict,
    #[error("{0}")]
    Limited(Refusal),
    #[error("the server cannot create accounts right now; try again later")]
    Unavailable,
}

impl RegistrationError {
    /// The XEP-0077 §3/§8 answer.
    pub fn stanza_error(&self) -> StanzaError {
        let error = match self {
            RegistrationError::Closed | RegistrationError::InviteRequired => {
                StanzaError::not_allowed()
            }
            RegistrationError::Invite(_) => StanzaError::not_allowed(),
            RegistrationError::Conflict => StanzaError::conflict(),
            RegistrationError::Limited(_) => StanzaError::resource_constraint(),
            RegistrationError::Unavailable => return StanzaError::storage_failure(),
            RegistrationError::WrongUsername(_)
            | RegistrationError::MissingUsername
            | RegistrationError::MissingPassword
            | RegistrationError::PasswordTooLong
            | RegistrationError::BadUsername(_) => StanzaError::not_acceptable(),
        };
        error.with_text(self.to_string())
    }
}

impl From<StorageError> for RegistrationError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::Conflict => RegistrationError::Conflict,
            e => {
                warn!(error = %e, "registration: storage failed");
                RegistrationError::Unavailable
            }
        }
    }
}

/// `username` as the account it names on `domain` (nodeprep'd as logins see it), or why not.
pub fn normalise_username(username: &str, domain: &str) -> Result<BareJid, RegistrationError> {
    let bad = || RegistrationError::BadUsername(username.to_owned());
    if username.is_empty() || username.contains(['@', '/']) {
        return Err(bad());
    }
    let jid = crate::address::parse(&format!("{username}@{domain}")).map_err(|_| bad())?;
    if jid.resource().is_some() || jid.node().is_none() || jid.domain().as_str() != domain {
        return Err(bad());
    }
    Ok(jid.into_bare())
}

/// Creates the account if `request` may have it. With an invite, the invite is used up
/// (atomically: of two registrations with one token, one wins) and its roster pre-approval
/// applied. Returns the new account.
pub async fn register(
    router: &Arc<Router>,
    limiter: &RegistrationLimiter,
    request: NewAccount<'_>,
) -> Result<BareJid, RegistrationError> {
    let config = router.config();
    let mode = config.registration_mode(request.domain);
    if mode == RegistrationMode::Closed {
        return Err(RegistrationError::Closed);
    }
    if request.username.is_empty() {
        return Err(RegistrationError::MissingUsername);
    }
    if request.password.is_empty() {
        return Err(RegistrationError::MissingPassword);
    }
    if request.password.len() > MAX_PASSWORD_BYTES {
        return Err(RegistrationError::PasswordTooLong);
    }
    let account = normalise_username(request.username, request.domain)?;
    let now_ms = crate::ids::now_ms() as i64;
    let invite = match request.token {
        Some(token) => {
            let invite = invites::usable(router.storage(), token, now_ms)
                .await?
                .map_err(RegistrationError::Invite)?;
            if invite.domain != request.domain {
                return Err(RegistrationError::Invite(Unusable::Unknown));
            }
            if let Some(fixed) = &invite.username {
                if account.node().map(|n| n.as_str()) != Some(fixed.as_str()) {
                    return Err(RegistrationError::WrongUsername(fixed.clone()));
                }
            }
            Some(invite)
        }
        None if mode == RegistrationMode::Invite => return Err(RegistrationError::InviteRequired),
        None => {
            limiter
                .check(request.source, Instant::now())
                .map_err(RegistrationError::Limited)?;
            None
        }
    };
    // Spares the PBKDF2 work for a name that is taken; the insert below still decides.
    if router
        .storage()
        .accounts
        .account_exists(account.as_str())
        .await?
    {
        return Err(RegistrationError::Conflict);
    }
    let creds = derive(request.password.to_owned(), config.auth.scram_iterations).await?;
    let key = account.to_string();
    if let Some(invite) = &invite {
        let won = router
            .storage()
            .invites
            .consume_invite(&invite.token, &key, crate::ids::now_ms() as i64)
            .await?;
        if won.is_none() {
            return Err(RegistrationError::Invite(Unusable::Used));
        }
    }
    if let Err(e) = router.storage().accounts.create_account(&key, &creds).await {
        if let Some(invite) = &invite {
            // The name was taken meanwhile: the invite was not really used.
            if let Err(e) = router
                .storage()
                .invites
                .release_invite(&invite.token, &key)
                .await
            {
                warn!(error = %e, "cannot give an invite back");
            }
        }
        return Err(e.into());
    }
    if invite.is_none() {
        limiter.record(request.source, Instant::now());
    }
    info!(%account, invited = invite.is_some(), "account registered");
    // The domain's welcome message (XEP-0133), if an administrator set one.
    crate::admin::welcome_new_account(router, &account).await;
    if let Some(invite) = invite.filter(|i| i.roster) {
        if let Some(inviter) = invite.inviter.as_deref().and_then(|i| BareJid::new(i).ok()) {
            invites::befriend(router, &account, &inviter).await;
        }
    }
    Ok(account)
}

/// SCRAM credentials for both hashes, as `corvid user add` stores them; PBKDF2 runs off the
/// threads that move stanzas, as the login path does.
pub async fn derive(
    password: String,
    iterations: u32,
) -> Result<Vec<ScramCredentials>, RegistrationError> {
    tokio::task::spawn_blocking(move || {
        [ScramHash::Sha1, ScramHash::Sha256]
            .into_iter()
            .map(|hash| crate::sasl::derive_credentials(&password, hash, iterations))
            .collect::<Result<Vec<_>, _>>()
    })
    .await
    .map_err(|_| RegistrationError::Unavailable)?
    .map_err(|e| {
        warn!(error = %e, "cannot derive credentials");
        RegistrationError::Unavailable
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_nodeprepped_or_refused() {
        assert_eq!(
            normalise_username("Alice", "example.org").unwrap().as_str(),
            "alice@example.org"
        );
        for bad in ["", "a@b", "a/b", "a b", "a\"b"] {
            assert!(normalise_username(bad, "example.org").is_err(), "{bad}");
        }
    }
}
