//! Accounts as an administrator changes them. Each change that takes a right away (delete,
//! disable) also ends the account's live sessions at once; a new password ends nothing live
//! but revokes FAST tokens (the account store does).

use std::sync::Arc;

use jid::{BareJid, Jid};
use tracing::info;

use super::{messages, sessions, AdminError, AdminResult};
use crate::router::Router;
use crate::storage::{ScramCredentials, ScramHash, StorageError};
use crate::xml::StreamCondition;

/// The account's own domain must be one this server hosts.
fn check_hosted(router: &Router, user: &BareJid) -> AdminResult<()> {
    if user.node().is_some() && router.is_hosted(user.domain().as_str()) {
        Ok(())
    } else {
        Err(AdminError::NotHosted(user.to_string()))
    }
}

fn not_found_as(user: &BareJid) -> impl FnOnce(StorageError) -> AdminError + '_ {
    move |e| match e {
        StorageError::NotFound => AdminError::NoSuchAccount(user.to_string()),
        StorageError::Conflict => AdminError::AccountExists(user.to_string()),
        e => AdminError::Storage(e),
    }
}

fn credentials(router: &Router, password: &str) -> AdminResult<Vec<ScramCredentials>> {
    let iterations = router.config().auth.scram_iterations;
    [ScramHash::Sha1, ScramHash::Sha256]
        .into_iter()
        .map(|hash| {
            crate::sasl::derive_credentials(password, hash, iterations)
                .map_err(|e| AdminError::BadPassword(e.to_string()))
        })
        .collect()
}

/// Creates the account and sends it the welcome message, if one is set.
pub async fn create_account(
    router: &Arc<Router>,
    user: &BareJid,
    password: &str,
) -> AdminResult<()> {
    check_hosted(router, user)?;
    let creds = credentials(router, password)?;
    router
        .storage()
        .accounts
        .create_account(user.as_str(), &creds)
        .await
        .map_err(not_found_as(user))?;
    info!(%user, "account created by an administrator");
    welcome_new_account(router, user).await;
    Ok(())
}

/// Sends the welcome message of `user`'s domain, if one is set, to a just-created account:
/// whatever created it (an administrator, `corvid user add` against the running server,
/// in-band registration) calls this. The account has no session yet, so the message waits in
/// offline storage.
pub async fn welcome_new_account(router: &Arc<Router>, user: &BareJid) {
    match messages::welcome(router, user.domain().as_str()).await {
        Ok(Some(text)) => messages::send_to_account(router, user, &text).await,
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, %user, "welcome message lookup failed"),
    }
}

/// `welcome_new_account` without a running server (`corvid user add`): the welcome message
/// goes straight to the account's offline storage, under an id from a node number of the
/// command line's own, so it can never collide with the server's ids.
pub async fn welcome_stored(
    storage: &crate::storage::Storage,
    config: &crate::config::Config,
    user: &BareJid,
) -> AdminResult<()> {
    let domain = user.domain().as_str();
    let Some(text) = storage
        .admin
        .setting(&messages::welcome_setting(domain))
        .await?
    else {
        return Ok(());
    };
    let Some(node) = storage
        .nodes
        .node_number("corvid-command-line", crate::ids::NODES)
        .await?
    else {
        return Ok(());
    };
    let mut message = messages::server_message(domain, "normal", &text);
    crate::stanza::set_attr(&mut message, "to", user.to_string());
    let id = crate::ids::IdGenerator::new(node).next_id();
    let stored = crate::storage::OfflineMessage {
        id,
        received_at_ms: crate::ids::IdGenerator::timestamp_ms(id),
        stanza: crate::xml::to_string(&message),
    };
    let cap = config.account_limits(domain).offline_messages_per_user;
    storage.offline.push(user.as_str(), &stored, cap).await?;
    Ok(())
}

/// Ends the account's sessions, then deletes it with everything stored for it.
pub async fn delete_account(router: &Arc<Router>, user: &BareJid) -> AdminResult<()> {
    check_hosted(router, user)?;
    router
        .storage()
        .delete_account_and_archive(user.as_str())
        .await
        .map_err(not_found_as(user))?;
    sessions::end_sessions(
        router,
        &Jid::from(user.clone()),
        StreamCondition::NotAuthorized,
        "account deleted",
    );
    info!(%user, "account deleted by an administrator");
    Ok(())
}

/// Disables the account (its sessions end, logins fail with `<account-disabled/>`) or
/// enables it again.
pub async fn set_disabled(router: &Arc<Router>, user: &BareJid, disabled: bool) -> AdminResult<()> {
    check_hosted(router, user)?;
    router
        .storage()
        .admin
        .set_disabled(user.as_str(), disabled)
        .await
        .map_err(not_found_as(user))?;
    if disabled {
        sessions::end_sessions(
            router,
            &Jid::from(user.clone()),
            StreamCondition::NotAuthorized,
            "account disabled",
        );
    }
    info!(%user, disabled, "account status changed by an administrator");
    Ok(())
}

/// Replaces the password; the account's FAST tokens go with the old one.
pub async fn change_password(router: &Router, user: &BareJid, password: &str) -> AdminResult<()> {
    check_hosted(router, user)?;
    let creds = credentials(router, password)?;
    router
        .storage()
        .accounts
        .set_credentials(user.as_str(), &creds)
        .await
        .map_err(not_found_as(user))?;
    info!(%user, "password changed by an administrator");
    Ok(())
}

/// Fails with `NoSuchAccount` when the account does not exist.
pub async fn require_account(router: &Router, user: &BareJid) -> AdminResult<()> {
    check_hosted(router, user)?;
    if router
        .storage()
        .accounts
        .account_exists(user.as_str())
        .await?
    {
        Ok(())
    } else {
        Err(AdminError::NoSuchAccount(user.to_string()))
    }
}

/// Registered accounts of the domains `visible` accepts, sorted.
pub async fn registered(
    router: &Router,
    visible: impl Fn(&str) -> bool,
) -> AdminResult<Vec<String>> {
    let all = router.storage().accounts.list_accounts().await?;
    Ok(all.into_iter().filter(|a| visible(domain_of(a))).collect())
}

/// Disabled accounts of the domains `visible` accepts, sorted.
pub async fn disabled(router: &Router, visible: impl Fn(&str) -> bool) -> AdminResult<Vec<String>> {
    let all = router.storage().admin.disabled_accounts().await?;
    Ok(all.into_iter().filter(|a| visible(domain_of(a))).collect())
}

fn domain_of(account: &str) -> &str {
    account.rsplit_once('@').map_or(account, |(_, d)| d)
}

/// Per-user statistics (XEP-0133 §4.10): the roster's size and the online resources.
#[derive(Debug, Clone)]
pub struct UserStats {
    pub roster_size: usize,
    pub online_resources: Vec<String>,
}

pub async fn user_stats(router: &Router, user: &BareJid) -> AdminResult<UserStats> {
    require_account(router, user).await?;
    let (_, roster) = router.storage().roster.roster(user.as_str()).await?;
    let mut online_resources: Vec<String> = router
        .bound_resources(user)
        .iter()
        .map(|jid| jid.resource().to_string())
        .collect();
    online_resources.sort();
    Ok(UserStats {
        roster_size: roster.len(),
        online_resources,
    })
}
