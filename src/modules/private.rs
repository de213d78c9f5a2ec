//! XEP-0049 Private XML Storage: `jabber:iq:private` get and set on one's own account.
//!
//! - Each namespace holds what the last set put under it (one element or several of that
//!   namespace, XEP-0049 §2.3); a get names one namespace with an empty element and gets that
//!   back, or the empty element itself when nothing is stored.
//! - Only the account's own sessions may use it: a request addressed to another JID gets
//!   `<forbidden/>` whether that account exists or not, so it cannot probe for accounts.
//! - `jabber:client`, `jabber:server` and `jabber:iq:private` are refused with
//!   `<not-acceptable/>` (modify); so is a set without a child. A get without a child, or
//!   asking for several namespaces, is a `<bad-request/>` (XEP-0049's "Bad Format").
//! - `[private_storage]` bounds what one namespace holds (`max_bytes`, `<not-acceptable/>`) and
//!   how many namespaces an account has (`max_namespaces`, `<resource-constraint/>`).
//! - `storage:bookmarks` (XEP-0048) is the XEP-0402 `#compat` view of the PEP bookmarks: a get
//!   reads the rooms from the `urn:xmpp:bookmarks:1` node, a set writes them there (see
//!   `pep::bookmarks`); the element itself is kept too, for its `<url/>` bookmarks.

use std::sync::Arc;

use async_trait::async_trait;
use jid::BareJid;
use minidom::Element;
use tracing::warn;

use super::pep::{PepHandle, FEATURE_BOOKMARKS_COMPAT};
use super::user_cache::bare_str;
use crate::router::{IqHandler, IqRequest, IqResult, IqType, Module, Registry, Router};
use crate::stanza::StanzaError;
use crate::storage::{PrivateXmlWrite, StorageError};
use crate::xml::{self, ns};

pub const NS_PRIVATE: &str = "jabber:iq:private";
const BOOKMARKS: &str = "storage:bookmarks";

/// Namespaces that would make the stored data look like a stanza or like this protocol.
const RESERVED: &[&str] = &[ns::CLIENT, ns::SERVER, NS_PRIVATE];

pub struct PrivateStorage {
    pep: PepHandle,
}

impl PrivateStorage {
    pub fn new(pep: PepHandle) -> PrivateStorage {
        PrivateStorage { pep }
    }
}

impl Module for PrivateStorage {
    fn name(&self) -> &'static str {
        "private"
    }

    fn register(self: Arc<Self>, registry: &mut Registry) {
        for iq_type in [IqType::Get, IqType::Set] {
            registry.account_iq(iq_type, NS_PRIVATE, "query", self.clone());
        }
        registry.server_feature(NS_PRIVATE);
        registry.account_feature(FEATURE_BOOKMARKS_COMPAT);
    }
}

fn storage_failure(e: StorageError) -> StanzaError {
    match e {
        StorageError::NotFound => StanzaError::service_unavailable(),
        e => {
            warn!(error = %e, "private XML storage failed");
            StanzaError::storage_failure()
        }
    }
}

/// The namespace of a stored element, refused if reserved.
fn namespace_of(el: &Element) -> Result<String, StanzaError> {
    let namespace = el.ns();
    if RESERVED.contains(&namespace.as_str()) {
        return Err(StanzaError::not_acceptable()
            .with_text(format!("the namespace {namespace} cannot be stored")));
    }
    Ok(namespace)
}

/// What is kept per namespace: the elements inside a `<query/>`, so several elements of one
/// namespace are one stored value.
fn wrap(elements: &[&Element]) -> Element {
    let mut query = Element::bare("query", NS_PRIVATE);
    for el in elements {
        query.append_child((*el).clone());
    }
    query
}

#[async_trait]
impl IqHandler for PrivateStorage {
    async fn handle_iq(&self, router: &Arc<Router>, request: IqRequest) -> IqResult {
        let account = request
            .account
            .as_ref()
            .ok_or_else(StanzaError::forbidden)?;
        if bare_str(&request.from) != account.as_str() {
            return Err(StanzaError::forbidden());
        }
        let query = request.payload();
        match request.iq_type {
            IqType::Get => self.get(router, account, query).await,
            IqType::Set => self.set(router, account, query).await,
        }
    }
}

impl PrivateStorage {
    async fn stored(
        &self,
        router: &Router,
        account: &BareJid,
        namespace: &str,
    ) -> Result<Option<Element>, StanzaError> {
        let stored = router
            .storage()
            .private_xml
            .private_xml(account.as_str(), namespace)
            .await
            .map_err(storage_failure)?;
        let Some(stored) = stored else {
            return Ok(None);
        };
        match xml::parse_standalone(stored.as_bytes(), xml::XmlLimits::STORED) {
            Ok(query) => Ok(Some(query)),
            Err(e) => {
                warn!(error = %e, user = %account, %namespace, "stored private XML does not parse");
                Err(StanzaError::internal_server_error())
            }
        }
    }

    async fn get(&self, router: &Arc<Router>, account: &BareJid, query: &Element) -> IqResult {
        let mut children = query.children();
        let asked = match (children.next(), children.next()) {
            (Some(asked), None) => asked,
            (None, _) => {
                return Err(StanzaError::bad_request().with_text("name one namespace to get"))
            }
            (Some(_), Some(_)) => {
                return Err(StanzaError::bad_request().with_text("one namespace per get"))
            }
        };
        let namespace = namespace_of(asked)?;
        let stored = self.stored(router, account, &namespace).await?;
        let mut result = Element::bare("query", NS_PRIVATE);
        if namespace == BOOKMARKS {
            let keep = stored
                .as_ref()
                .and_then(|q| q.children().find(|c| c.is("storage", BOOKMARKS)));
            let storage = self.pep.legacy_bookmarks(router, account, keep).await?;
            result.append_child(storage);
            return Ok(Some(result));
        }
        match stored {
            Some(stored) => {
                for child in stored.children() {
                    result.append_child(child.clone());
                }
            }
            // Nothing stored: the empty element that was asked for (XEP-0049 §2.3).
            None => {
                result.append_child(Element::bare(asked.name(), namespace.as_str()));
            }
        }
        Ok(Some(result))
    }

    async fn set(&self, router: &Arc<Router>, account: &BareJid, query: &Element) -> IqResult {
        if query.children().next().is_none() {
            return Err(StanzaError::not_acceptable().with_text("nothing to store"));
        }
        // Every element is checked before anything is written.
        let mut by_namespace: Vec<(String, Vec<&Element>)> = Vec::new();
        for child in query.children() {
            let namespace = namespace_of(child)?;
            match by_namespace.iter_mut().find(|(n, _)| *n == namespace) {
                Some((_, elements)) => elements.push(child),
                None => by_namespace.push((namespace, vec![child])),
            }
        }
        let limits = &router.config().private_storage;
        let mut writes = Vec::new();
        for (namespace, elements) in &by_namespace {
            if namespace == BOOKMARKS {
                match elements.as_slice() {
                    [storage] if storage.name() == "storage" => {
                        super::pep::check_legacy_bookmarks(storage)?
                    }
                    _ => {
                        return Err(StanzaError::bad_request()
                            .with_text("bookmarks are one <storage xmlns='storage:bookmarks'/>"))
                    }
                }
            }
            let serialized = xml::to_string(&wrap(elements));
            if serialized.len() > limits.max_bytes {
                return Err(StanzaError::not_acceptable().with_text(format!(
                    "at most {} bytes may be stored per namespace",
                    limits.max_bytes
                )));
            }
            writes.push((namespace, serialized, elements));
        }
        for (namespace, serialized, elements) in writes {
            let written = router
                .storage()
                .private_xml
                .set_private_xml(
                    account.as_str(),
                    namespace,
                    &serialized,
                    limits.max_namespaces,
                )
                .await
                .map_err(storage_failure)?;
            if written == PrivateXmlWrite::Full {
                return Err(StanzaError::resource_constraint().with_text(format!(
                    "at most {} namespaces may be stored",
                    limits.max_namespaces
                )));
            }
            if namespace == BOOKMARKS {
                self.pep
                    .set_legacy_bookmarks(router, account, elements[0])
                    .await?;
            }
        }
        Ok(None)
    }
}
