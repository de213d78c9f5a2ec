//! XEP-0054 vcard-temp, with XEP-0153 vCard-based avatar hashes in presence.
//!
//! - A get on the user's own account (no `to`, or their bare JID) returns the stored vCard, or
//!   `<item-not-found/>` if there is none (what Prosody answers; XEP-0054 allows that or an
//!   empty vCard).
//! - A get on another account returns its vCard: vCards are public. With no vCard the answer
//!   is `<service-unavailable/>`, the same as for an account that does not exist, as XEP-0054
//!   §3.1 asks so that vCard lookups cannot probe for accounts.
//! - A set is only allowed on the user's own account (`<forbidden/>` otherwise). It is stored
//!   as serialized XML, at most `limits.vcard_max_bytes` bytes: larger ones are refused with
//!   `<not-acceptable/>` (type modify, with a text saying the limit) and the old vCard is kept.
//!
//! XEP-0153: the SHA-1 of the decoded `PHOTO/BINVAL` is computed at set time and stored beside
//! the vCard. Every available presence a session broadcasts without its own
//! `<x xmlns='vcard-temp:x:update'><photo/></x>` gets one with that hash (an empty `<photo/>`
//! when there is no photo), as ejabberd's mod_vcard_xupdate does. The hash is kept in memory;
//! re-announcing presence after a change is left to clients, as XEP-0153 says.
//!
//! XEP-0398: a set whose photo differs from the stored one publishes it as the XEP-0084
//! avatar (data and metadata nodes; no photo publishes an empty `<metadata/>`), and an
//! avatar published through PEP becomes the vCard's PHOTO (see `pep::avatar`), so an avatar
//! set by a vCard client shows in a PEP client and back.

use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine;
use jid::{BareJid, FullJid};
use minidom::Element;
use tracing::warn;

use super::pep::{Avatar, AvatarListener, PepHandle};
use super::user_cache::{bare_str, Invalidation, UserCache};
use crate::router::{
    IqHandler, IqRequest, IqResult, IqType, Module, PresenceObserver, Priority, Registry, Router,
    SessionEnd, SessionHook,
};
use crate::stanza::StanzaError;
use crate::storage::{StorageError, StorageResult, StoredVcard};
use crate::xml::{self, ns};

/// The cluster topic on which a node says it changed a user's vCard photo hash.
const CACHE_TOPIC: &str = "vcard-written";

#[derive(Default)]
pub struct Vcard {
    /// Photo hash per user, "" for no photo (or no vCard).
    hashes: UserCache<Arc<str>>,
    /// XEP-0398: where a new photo is published as the XEP-0084 avatar, and which tells this
    /// module of avatars published there.
    pep: Option<PepHandle>,
}

impl Vcard {
    /// A vCard module that keeps the photo and the XEP-0084 avatar of each account in step
    /// (XEP-0398). Call [`Vcard::listen`] once it is in an `Arc`.
    pub fn with_pep(pep: PepHandle) -> Vcard {
        Vcard {
            hashes: UserCache::shared(CACHE_TOPIC),
            pep: Some(pep),
        }
    }

    /// Asks the PEP service to report avatars published there.
    pub fn listen(self: &Arc<Self>) {
        if let Some(pep) = &self.pep {
            let listener: Arc<dyn AvatarListener> = self.clone();
            // Weak: the PEP state must not keep this module (which holds it) alive.
            pep.set_avatar_listener(Arc::downgrade(&listener));
        }
    }
}

impl Module for Vcard {
    fn name(&self) -> &'static str {
        "vcard"
    }

    fn register(self: Arc<Self>, registry: &mut Registry) {
        let this = self.clone();
        registry.cluster_topic(
            CACHE_TOPIC,
            Arc::new(Invalidation(Box::new(move |user| this.hashes.forget(user)))),
        );
        registry.account_iq(IqType::Get, ns::VCARD, "vCard", Arc::new(GetVcard));
        registry.account_iq(
            IqType::Set,
            ns::VCARD,
            "vCard",
            Arc::new(SetVcard(self.clone())),
        );
        registry.presence_observer(Priority::Profile, self.clone());
        registry.session_hook(Priority::Profile, self);
        registry.server_feature(ns::VCARD);
        registry.account_feature(ns::VCARD);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PhotoError {
    #[error("PHOTO/BINVAL is not valid base64")]
    NotBase64,
}

/// The image of the vCard's `PHOTO/BINVAL`, with its `TYPE` (`image/png` when it names
/// none); `None` when the vCard has no embedded photo. Base64 may be wrapped over several
/// lines, so whitespace is ignored.
pub fn photo(vcard: &Element) -> Result<Option<Avatar>, PhotoError> {
    let Some(photo) = vcard.get_child("PHOTO", ns::VCARD) else {
        return Ok(None);
    };
    let Some(binval) = photo.get_child("BINVAL", ns::VCARD) else {
        return Ok(None);
    };
    let encoded: String = binval
        .text()
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    if encoded.is_empty() {
        return Ok(None);
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| PhotoError::NotBase64)?;
    let mime = photo
        .get_child("TYPE", ns::VCARD)
        .map(|t| t.text().trim().to_owned())
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| "image/png".to_owned());
    Ok(Some(Avatar { bytes, mime }))
}

/// Lower-case hex SHA-1 of the vCard's photo bytes (XEP-0153 §4.3), "" when it has none.
pub fn photo_hash(vcard: &Element) -> Result<String, PhotoError> {
    Ok(photo(vcard)?.map(|a| a.sha1_hex()).unwrap_or_default())
}

/// `<PHOTO><TYPE/><BINVAL/></PHOTO>` for an avatar.
fn photo_element(avatar: &Avatar) -> Element {
    let mut kind = Element::bare("TYPE", ns::VCARD);
    kind.append_text(avatar.mime.as_str());
    let mut binval = Element::bare("BINVAL", ns::VCARD);
    binval.append_text(base64::engine::general_purpose::STANDARD.encode(&avatar.bytes));
    let mut photo = Element::bare("PHOTO", ns::VCARD);
    photo.append_child(kind);
    photo.append_child(binval);
    photo
}

fn storage_failure(e: StorageError) -> StanzaError {
    match e {
        StorageError::NotFound => StanzaError::service_unavailable(),
        e => {
            warn!(error = %e, "vCard storage failed");
            StanzaError::storage_failure()
        }
    }
}

/// `own`: the owner asks, who may learn that there is no vCard.
async fn get(router: &Router, account: &BareJid, own: bool) -> IqResult {
    let stored = router
        .storage()
        .vcard
        .vcard(account.as_str())
        .await
        .map_err(storage_failure)?;
    let Some(stored) = stored else {
        return Err(if own {
            StanzaError::item_not_found()
        } else {
            StanzaError::service_unavailable()
        });
    };
    match xml::parse_standalone(stored.xml.as_bytes(), xml::XmlLimits::STORED) {
        Ok(vcard) => Ok(Some(vcard)),
        Err(e) => {
            warn!(error = %e, user = %account, "stored vCard does not parse");
            Err(StanzaError::internal_server_error())
        }
    }
}

impl Vcard {
    async fn hash_of(&self, router: &Router, user: &str) -> StorageResult<Arc<str>> {
        self.hashes
            .get_or_load(router, user, || async {
                let hash = router.storage().vcard.vcard_photo_hash(user).await?;
                Ok(Arc::from(hash.unwrap_or_default()))
            })
            .await
    }

    /// A client's set: stored, and a changed photo published as the XEP-0084 avatar.
    async fn set(&self, router: &Arc<Router>, account: &BareJid, vcard: &Element) -> IqResult {
        let before = self.hash_of(router, account.as_str()).await.ok();
        let avatar =
            photo(vcard).map_err(|e| StanzaError::bad_request().with_text(e.to_string()))?;
        let after = self.store(router, account, vcard).await?;
        if let Some(pep) = &self.pep {
            if before.as_deref() != Some(after.as_str()) {
                if let Err(e) = pep.publish_avatar(router, account, avatar.as_ref()).await {
                    warn!(user = %account, error = ?e, "publishing the vCard photo as avatar failed");
                }
            }
        }
        Ok(None)
    }

    /// Stores the vCard and its photo hash; returns the hash.
    async fn store(
        &self,
        router: &Router,
        account: &BareJid,
        vcard: &Element,
    ) -> Result<String, StanzaError> {
        let serialized = xml::to_string(vcard);
        let max = router
            .config()
            .account_limits(account.domain().as_str())
            .vcard_max_bytes;
        if serialized.len() > max {
            return Err(StanzaError::not_acceptable()
                .with_text(format!("a vCard may be at most {max} bytes")));
        }
        let photo_hash =
            photo_hash(vcard).map_err(|e| StanzaError::bad_request().with_text(e.to_string()))?;
        let record = StoredVcard {
            xml: serialized,
            photo_hash,
        };
        let guard = self.hashes.write_lock().await;
        router
            .storage()
            .vcard
            .set_vcard(account.as_str(), &record)
            .await
            .map_err(storage_failure)?;
        self.hashes
            .publish(
                &guard,
                router,
                account.as_str(),
                Arc::from(record.photo_hash.as_str()),
            )
            .await;
        Ok(record.photo_hash)
    }

    /// Puts an avatar published through PEP in the vCard's PHOTO (or takes it out).
    async fn store_photo(
        &self,
        router: &Router,
        owner: &BareJid,
        avatar: Option<Avatar>,
    ) -> Result<(), StanzaError> {
        let stored = router
            .storage()
            .vcard
            .vcard(owner.as_str())
            .await
            .map_err(storage_failure)?;
        let mut vcard = match stored {
            Some(stored) => xml::parse_standalone(stored.xml.as_bytes(), xml::XmlLimits::STORED)
                .map_err(|e| {
                    warn!(error = %e, user = %owner, "stored vCard does not parse");
                    StanzaError::internal_server_error()
                })?,
            None if avatar.is_none() => return Ok(()),
            None => Element::bare("vCard", ns::VCARD),
        };
        while vcard.remove_child("PHOTO", ns::VCARD).is_some() {}
        if let Some(avatar) = &avatar {
            vcard.append_child(photo_element(avatar));
        }
        self.store(router, owner, &vcard).await.map(|_| ())
    }
}

#[async_trait]
impl AvatarListener for Vcard {
    async fn avatar_published(
        &self,
        router: &Arc<Router>,
        owner: &BareJid,
        avatar: Option<Avatar>,
    ) {
        if let Err(e) = self.store_photo(router, owner, avatar).await {
            warn!(user = %owner, error = ?e, "putting the PEP avatar in the vCard failed");
        }
    }
}

/// The account a vCard IQ is about, and whether the sender is its owner.
fn addressed(request: &IqRequest) -> Result<(&BareJid, bool), StanzaError> {
    let account = request
        .account
        .as_ref()
        .ok_or_else(StanzaError::service_unavailable)?;
    Ok((account, bare_str(&request.from) == account.as_str()))
}

/// vCards are public: anyone may read any account's (XEP-0054 §3.1).
struct GetVcard;

#[async_trait]
impl IqHandler for GetVcard {
    async fn handle_iq(&self, router: &Arc<Router>, request: IqRequest) -> IqResult {
        let (account, own) = addressed(&request)?;
        get(router, account, own).await
    }
}

/// Holds the module for its photo hashes, which a new vCard replaces.
struct SetVcard(Arc<Vcard>);

#[async_trait]
impl IqHandler for SetVcard {
    async fn handle_iq(&self, router: &Arc<Router>, request: IqRequest) -> IqResult {
        let (account, own) = addressed(&request)?;
        if !own {
            return Err(StanzaError::forbidden());
        }
        self.0.set(router, account, request.payload()).await
    }
}

#[async_trait]
impl PresenceObserver for Vcard {
    async fn decorate(&self, router: &Arc<Router>, from: &FullJid, presence: &mut Element) {
        // Only available presence carries an avatar; unavailable and subscriptions do not.
        if presence.attr("type").is_some() {
            return;
        }
        if let Some(update) = presence.get_child("x", ns::VCARD_UPDATE) {
            // The client said what it knows; an `<x/>` without `<photo/>` only means "not
            // ready", and we do know, so that one is replaced.
            if update.has_child("photo", ns::VCARD_UPDATE) {
                return;
            }
            presence.remove_child("x", ns::VCARD_UPDATE);
        }
        let hash = match self.hash_of(router, bare_str(from)).await {
            Ok(hash) => hash,
            Err(e) => {
                warn!(error = %e, "loading a vCard photo hash failed; presence left as is");
                return;
            }
        };
        let mut photo = Element::bare("photo", ns::VCARD_UPDATE);
        if !hash.is_empty() {
            photo.append_text(&*hash);
        }
        let mut update = Element::bare("x", ns::VCARD_UPDATE);
        update.append_child(photo);
        presence.append_child(update);
    }
}

#[async_trait]
impl SessionHook for Vcard {
    async fn ended(
        &self,
        router: &Arc<Router>,
        session: &FullJid,
        _was_available: bool,
        _why: SessionEnd,
    ) {
        let user = session.to_bare();
        if !router.has_sessions(&user) {
            self.hashes.forget(user.as_str());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vcard(inner: &str) -> Element {
        format!("<vCard xmlns='vcard-temp'>{inner}</vCard>")
            .parse()
            .unwrap()
    }

    #[test]
    fn photo_hash_is_sha1_of_the_decoded_binval() {
        // "hello" in base64, wrapped, with surrounding whitespace.
        let v = vcard("<PHOTO><TYPE>image/png</TYPE><BINVAL>\n aGVs\n bG8=\n</BINVAL></PHOTO>");
        assert_eq!(
            photo_hash(&v).unwrap(),
            "aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d"
        );
    }

    #[test]
    fn no_photo_is_an_empty_hash_and_bad_base64_an_error() {
        assert_eq!(photo_hash(&vcard("<FN>A</FN>")).unwrap(), "");
        assert_eq!(
            photo_hash(&vcard("<PHOTO><EXTVAL>http://x</EXTVAL></PHOTO>")).unwrap(),
            ""
        );
        assert!(photo_hash(&vcard("<PHOTO><BINVAL>***</BINVAL></PHOTO>")).is_err());
    }
}
