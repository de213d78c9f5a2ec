//! XEP-0077 for an account that is logged in, whatever the domain's `registration` mode:
//! change the password (§3.3) and cancel the registration (§3.2). Account creation before
//! authentication is the stream's (`crate::stream::register`).

use std::sync::Arc;

use async_trait::async_trait;
use jid::{BareJid, Jid};
use tracing::{info, warn};

use crate::modules::roster::subscription::subscription_stanza;
use crate::registration::query::{self, Request};
use crate::registration::{self, RegistrationError, NS_REGISTER};
use crate::router::{IqHandler, IqRequest, IqResult, IqType, Module, Registry, Router};
use crate::stanza::StanzaError;
use crate::storage::StorageError;

pub struct Register;

impl Module for Register {
    fn name(&self) -> &'static str {
        "register"
    }

    fn register(self: Arc<Self>, registry: &mut Registry) {
        let handler = Arc::new(AccountIq);
        registry.server_iq(IqType::Get, NS_REGISTER, "query", handler.clone());
        registry.server_iq(IqType::Set, NS_REGISTER, "query", handler);
        registry.server_feature(NS_REGISTER);
    }
}

struct AccountIq;

/// The account asking: a local user's own session, addressing the server.
fn asker(router: &Router, request: &IqRequest) -> Result<BareJid, StanzaError> {
    let full = request
        .from
        .try_as_full()
        .map_err(|_| StanzaError::forbidden())?;
    let bare = full.to_bare();
    let own = request.account.as_ref().is_none_or(|a| *a == bare);
    if !own || !router.is_hosted(bare.domain().as_str()) {
        return Err(StanzaError::forbidden());
    }
    Ok(bare)
}

#[async_trait]
impl IqHandler for AccountIq {
    async fn handle_iq(&self, router: &Arc<Router>, request: IqRequest) -> IqResult {
        let user = asker(router, &request)?;
        let localpart = user.node().map(|n| n.to_string()).unwrap_or_default();
        if request.iq_type == IqType::Get {
            return Ok(Some(query::registered(&localpart)));
        }
        match query::parse(request.payload()) {
            Request::Remove => remove(router, &user).await.map(|()| None),
            Request::Set { username, password } => {
                // §3.3: the username names the account itself; anything else is not ours
                // to change.
                if let Some(name) = username.as_deref().filter(|n| !n.is_empty()) {
                    let named = registration::normalise_username(name, user.domain().as_str());
                    if named.ok().as_ref() != Some(&user) {
                        return Err(StanzaError::not_allowed()
                            .with_text("only your own password can be changed"));
                    }
                }
                let password = password.unwrap_or_default();
                if password.is_empty() {
                    return Err(RegistrationError::MissingPassword.stanza_error());
                }
                change_password(router, &user, password)
                    .await
                    .map(|()| None)
            }
        }
    }
}

async fn change_password(
    router: &Arc<Router>,
    user: &BareJid,
    password: String,
) -> Result<(), StanzaError> {
    let iterations = router.config().auth.scram_iterations;
    let creds = registration::derive(password, iterations)
        .await
        .map_err(|e| e.stanza_error())?;
    // Revokes the account's FAST tokens too, as any password change must.
    match router
        .storage()
        .accounts
        .set_credentials(user.as_str(), &creds)
        .await
    {
        Ok(()) => {
            info!(%user, "password changed in-band");
            Ok(())
        }
        Err(StorageError::NotFound) => Err(StanzaError::item_not_found()),
        Err(e) => {
            warn!(error = %e, %user, "cannot change a password");
            Err(StanzaError::storage_failure())
        }
    }
}

/// §3.2: subscriptions cancelled both ways, the account and everything stored for it deleted
/// (as `corvid user del` does, archive included), and every session of it ended with
/// `<not-authorized/>` once the answer has gone out.
async fn remove(router: &Arc<Router>, user: &BareJid) -> Result<(), StanzaError> {
    let storage = router.storage();
    let items = match storage.roster.roster(user.as_str()).await {
        Ok((_, items)) => items,
        Err(e) => {
            warn!(error = %e, %user, "cannot read the roster of an account being removed");
            return Err(StanzaError::storage_failure());
        }
    };
    let from = Jid::from(user.clone());
    for item in items {
        let Ok(contact) = BareJid::new(&item.contact) else {
            continue;
        };
        if item.subscription.contact_sees_user() {
            let stanza = subscription_stanza(user, &contact, "unsubscribed");
            router
                .route_from_user(&from, Jid::from(contact.clone()), stanza)
                .await;
        }
        if item.subscription.user_sees_contact() || item.ask {
            let stanza = subscription_stanza(user, &contact, "unsubscribe");
            router
                .route_from_user(&from, Jid::from(contact.clone()), stanza)
                .await;
        }
    }
    match storage.accounts.delete_account(user.as_str()).await {
        Ok(()) | Err(StorageError::NotFound) => {}
        Err(e) => {
            warn!(error = %e, %user, "cannot delete an account");
            return Err(StanzaError::storage_failure());
        }
    }
    // Keyed by JID, not by account (rooms have archives too): not deleted with the account.
    if let Err(e) = storage.archive.archive_delete_owner(user.as_str()).await {
        warn!(error = %e, %user, "cannot delete a removed account's archive");
    }
    info!(%user, "account removed in-band");
    crate::admin::sessions::end_sessions(
        router,
        &jid::Jid::from(user.clone()),
        crate::xml::StreamCondition::NotAuthorized,
        "the account has been removed",
    );
    Ok(())
}
