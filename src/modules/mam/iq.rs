//! The archive's account IQs, one handler per payload and type. Every one is wrapped in
//! `OwnerOnly`, which checks the sender in `authorize`, so that someone else's archive is
//! refused the same way whatever type they used, `<metadata/>` in a set included.

use std::sync::Arc;

use async_trait::async_trait;
use jid::BareJid;
use minidom::Element;

use super::{form, prefs, query, Archiver, Mam};
use crate::modules::user_cache::bare_str;
use crate::router::{IqHandler, IqRequest, IqResult, Router};
use crate::stanza::{self, StanzaError};
use crate::xml::ns;

/// The archive's owner, who alone may read or configure it (XEP-0313 §4).
fn owner(request: &IqRequest) -> Result<&BareJid, StanzaError> {
    match &request.account {
        None => Err(StanzaError::service_unavailable()),
        Some(owner) if bare_str(&request.from) != owner.as_str() => Err(StanzaError::forbidden()),
        Some(owner) => Ok(owner),
    }
}

/// One archive request, answered for its owner.
#[async_trait]
pub(super) trait OwnerIq: Send + Sync {
    async fn answer(&self, router: &Arc<Router>, request: &IqRequest, owner: &BareJid) -> IqResult;
}

/// Registers an `OwnerIq` as a handler that only the archive's owner gets through.
pub(super) struct OwnerOnly<T>(pub(super) T);

#[async_trait]
impl<T: OwnerIq> IqHandler for OwnerOnly<T> {
    fn authorize(&self, request: &IqRequest) -> Result<(), StanzaError> {
        owner(request).map(|_| ())
    }

    async fn handle_iq(&self, router: &Arc<Router>, request: IqRequest) -> IqResult {
        let owner = owner(&request)?;
        self.0.answer(router, &request, owner).await
    }
}

/// A `<query/>` get: the form a client fetches to learn the fields.
pub(super) struct QueryForm;

#[async_trait]
impl OwnerIq for QueryForm {
    async fn answer(
        &self,
        _router: &Arc<Router>,
        _request: &IqRequest,
        _owner: &BareJid,
    ) -> IqResult {
        Ok(Some(form::template()))
    }
}

/// A `<query/>` set: the query itself.
pub(super) struct Query(pub(super) Arc<Archiver>);

#[async_trait]
impl OwnerIq for Query {
    async fn answer(&self, router: &Arc<Router>, request: &IqRequest, owner: &BareJid) -> IqResult {
        self.0
            .search(router, request.payload(), &request.from, owner.as_str())
            .await
    }
}

pub(super) struct Metadata(pub(super) Arc<Archiver>);

#[async_trait]
impl OwnerIq for Metadata {
    async fn answer(
        &self,
        router: &Arc<Router>,
        _request: &IqRequest,
        owner: &BareJid,
    ) -> IqResult {
        self.0.flushed(router).await?;
        let bounds = router
            .storage()
            .archive
            .archive_bounds(owner.as_str())
            .await
            .map_err(query::storage_failure)?;
        let mut metadata = Element::bare("metadata", ns::MAM);
        if let Some((first, last)) = bounds {
            for (name, bound) in [("start", first), ("end", last)] {
                let mut el = Element::bare(name, ns::MAM);
                stanza::set_attr(&mut el, "id", bound.id.to_string());
                stanza::set_attr(&mut el, "timestamp", query::stamp(bound.timestamp_ms));
                metadata.append_child(el);
            }
        }
        Ok(Some(metadata))
    }
}

/// Holds the module for its cache of preferences, which archiving reads.
pub(super) struct GetPrefs(pub(super) Arc<Mam>);

#[async_trait]
impl OwnerIq for GetPrefs {
    async fn answer(
        &self,
        router: &Arc<Router>,
        _request: &IqRequest,
        owner: &BareJid,
    ) -> IqResult {
        let prefs = self
            .0
            .prefs_of(router, owner.as_str())
            .await
            .map_err(query::storage_failure)?;
        Ok(Some(prefs::to_element(&prefs)))
    }
}

/// Holds the module for its cache of preferences, which a change replaces.
pub(super) struct SetPrefs(pub(super) Arc<Mam>);

#[async_trait]
impl OwnerIq for SetPrefs {
    async fn answer(&self, router: &Arc<Router>, request: &IqRequest, owner: &BareJid) -> IqResult {
        let new = prefs::parse(request.payload())?;
        let cache = &self.0.prefs;
        let guard = cache.write_lock().await;
        router
            .storage()
            .archive
            .set_archive_prefs(owner.as_str(), &new)
            .await
            .map_err(query::storage_failure)?;
        let reply = prefs::to_element(&new);
        cache
            .publish(&guard, router, owner.as_str(), Arc::new(new))
            .await;
        Ok(Some(reply))
    }
}
