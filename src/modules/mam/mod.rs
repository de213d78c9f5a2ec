//! XEP-0313 Message Archive Management (`urn:xmpp:mam:2` and `#extended`) for every account,
//! with XEP-0359 stanza-ids and XEP-0059 paging.
//!
//! - Archiving: a `MessageHook`. Every chat/normal message with a body (or an end-to-end
//!   encrypted payload) that a local user sends or receives is archived in that user's archive,
//!   unless the sender asked otherwise (XEP-0334) or the user's preferences say no. A message
//!   between two local users is archived twice, once per archive, each with its own id. The
//!   message then carries `<stanza-id by='<archive JID>' id='<id>'/>`; a stanza-id claiming
//!   the archive's JID that arrived with the message is removed first (XEP-0359 §6).
//! - Writes never wait on storage: records go to `writer::Writer`, which also keeps the queue
//!   in id order (see there for why that matters for `after-id` catch-up).
//! - Queries (`query.rs`), form discovery, `<metadata/>` and `<prefs/>` are account IQs
//!   (`iq.rs`) answered only to the archive's owner.
//! - Retention: `mam.max_messages_per_user` and `mam.expire_after_days`, applied by the writer.
//! - MUC rooms archive their groupchat messages through `Archiver` (shared with the MUC
//!   module): owner and `with` are the room's bare JID, the archive id is the room's stanza-id,
//!   and the room answers queries on its own JID (`muc/mod.rs`).

mod eligibility;
mod iq;
// Public for the fuzz targets in tests/fuzz, which feed them arbitrary queries.
pub mod form;
mod prefs;
mod query;
pub mod rsm;
mod writer;

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use jid::{BareJid, FullJid, Jid};
use minidom::Element;
use tracing::warn;

use super::user_cache::{bare_str, Invalidation, UserCache};
use crate::config::Config;
use crate::router::{
    IqHandler, IqResult, IqType, MessageHook, Module, Priority, Registry, Router, SessionEnd,
    SessionHook, ShutdownHook,
};
use crate::stanza::{self, StanzaError};
use crate::storage::{ArchiveDefault, ArchivePrefs, ArchivedMessage, StorageResult};
use crate::xml::{self, ns};

/// The cluster topic on which a node says it changed a user's archive preferences.
const PREFS_TOPIC: &str = "mam-prefs-written";

pub use eligibility::worth_archiving;

/// The archive as other modules use it: MUC rooms archive their groupchat messages here, in
/// the same ordered writer as the account archives.
pub struct Archiver {
    writer: OnceLock<writer::Writer>,
    limits: query::Limits,
}

impl Archiver {
    /// The writer, started on first use (on the server's runtime).
    fn writer(&self, router: &Router) -> &writer::Writer {
        self.writer.get_or_init(|| {
            writer::Writer::spawn(router.storage().archive.clone(), &router.config().mam)
        })
    }

    /// Queues `stanza` (serialized) for `owner`'s archive and returns its id, which is the
    /// stanza-id to put on the message. `None` if the server is shutting down. An error when
    /// the archive cannot take it while its storage is failing (see `writer::Writer`): the
    /// caller refuses the message with it rather than deliver it unarchived.
    pub async fn append(
        &self,
        router: &Router,
        owner: &str,
        with: &str,
        outgoing: bool,
        stanza: String,
    ) -> Result<Option<i64>, StanzaError> {
        let record = ArchivedMessage {
            owner: owner.to_string(),
            id: 0,
            timestamp_ms: 0,
            with: with.to_string(),
            outgoing,
            stanza,
        };
        match self.writer(router).archive(router.ids(), record).await {
            Ok(id) => Ok(Some(id)),
            Err(writer::Refused::Stopped) => Ok(None),
            Err(writer::Refused::Unavailable) => {
                warn!(
                    owner,
                    "archive queue full while its storage fails: message refused"
                );
                Err(StanzaError::resource_constraint()
                    .with_text("The message archive is unavailable; try again later"))
            }
        }
    }

    /// Waits until what was queued before is committed, for a query to see it; an error of
    /// type `wait` while the archive's storage is failing.
    async fn flushed(&self, router: &Router) -> Result<(), StanzaError> {
        match self.writer(router).flush().await {
            Ok(()) | Err(writer::Refused::Stopped) => Ok(()),
            Err(writer::Refused::Unavailable) => {
                warn!("archive query while its storage fails: refused");
                Err(StanzaError::storage_failure())
            }
        }
    }

    /// Answers a MAM `<query/>` get (the form) or set from `from` on `owner`'s archive. For a
    /// component such as a MUC room, whose IQs reach it unsorted; accounts have a handler per
    /// type (`iq.rs`).
    pub async fn query(
        &self,
        router: &Arc<Router>,
        payload: &Element,
        iq_type: IqType,
        from: &Jid,
        owner: &str,
    ) -> IqResult {
        match iq_type {
            IqType::Get => Ok(Some(form::template())),
            IqType::Set => self.search(router, payload, from, owner).await,
        }
    }

    /// Runs a `<query/>` set from `from` on `owner`'s archive, once what was queued before is
    /// committed so that the query sees it.
    async fn search(
        &self,
        router: &Arc<Router>,
        payload: &Element,
        from: &Jid,
        owner: &str,
    ) -> IqResult {
        self.flushed(router).await?;
        query::run(router, payload, from, owner, &self.limits).await
    }

    /// Deletes `owner`'s archive after whatever is still queued for it (a room that is gone).
    pub fn delete(&self, owner: &str) {
        if let Some(writer) = self.writer.get() {
            writer.delete_owner(owner.to_string());
        }
    }
}

pub struct Mam {
    /// `[mam] enabled`: when false the module registers nothing.
    enabled: bool,
    archiver: Arc<Archiver>,
    /// Each user's preferences, read on every archived message.
    prefs: UserCache<Arc<ArchivePrefs>>,
    default_prefs: Arc<ArchivePrefs>,
}

impl Mam {
    pub fn new(config: &Config) -> Mam {
        let mam = &config.mam;
        Mam {
            enabled: mam.enabled,
            archiver: Arc::new(Archiver {
                writer: OnceLock::new(),
                limits: query::Limits {
                    default_page: mam.default_page_size,
                    // A page is queued to the session at once: keep well inside its queue.
                    max_page: mam
                        .max_page_size
                        .min(u32::try_from(config.limits.session_queue / 4).unwrap_or(u32::MAX))
                        .max(1),
                },
            }),
            prefs: UserCache::shared(PREFS_TOPIC),
            default_prefs: Arc::new(ArchivePrefs {
                default: ArchiveDefault::parse(&mam.default).unwrap_or(ArchiveDefault::Always),
                always: Vec::new(),
                never: Vec::new(),
            }),
        }
    }

    /// The shared archive, for modules that archive on their own (MUC); `None` when disabled.
    pub fn archiver(&self) -> Option<Arc<Archiver>> {
        self.enabled.then(|| self.archiver.clone())
    }

    async fn prefs_of(&self, router: &Router, owner: &str) -> StorageResult<Arc<ArchivePrefs>> {
        self.prefs
            .get_or_load(router, owner, || async {
                Ok(router
                    .storage()
                    .archive
                    .archive_prefs(owner)
                    .await?
                    .map(Arc::new)
                    .unwrap_or_else(|| self.default_prefs.clone()))
            })
            .await
    }

    /// Whether `owner`'s preferences let a message with `with` (bare) be archived.
    async fn allowed(&self, router: &Router, owner: &BareJid, with: &str) -> bool {
        let prefs = match self.prefs_of(router, owner.as_str()).await {
            Ok(prefs) => prefs,
            Err(e) => {
                warn!(error = %e, "reading archive preferences failed");
                self.default_prefs.clone()
            }
        };
        match prefs::decide(&prefs, with) {
            prefs::Decision::Archive => true,
            prefs::Decision::Skip => false,
            prefs::Decision::IfInRoster => {
                if owner.node().is_none() {
                    return false;
                }
                match router
                    .storage()
                    .roster
                    .roster_item(owner.as_str(), with)
                    .await
                {
                    Ok(item) => item.is_some(),
                    Err(e) => {
                        warn!(error = %e, "roster lookup for archiving failed");
                        false
                    }
                }
            }
        }
    }

    /// Archives `message` in `owner`'s archive (if eligible) and marks it with the stanza-id;
    /// an error refuses the message (the archive cannot take it now).
    async fn archive(
        &self,
        router: &Router,
        owner: &BareJid,
        with: &str,
        outgoing: bool,
        message: &mut Element,
    ) -> Result<(), StanzaError> {
        eligibility::strip_stanza_ids(message, owner.as_str());
        if !worth_archiving(message) || !self.allowed(router, owner, with).await {
            return Ok(());
        }
        let stanza = xml::to_string(message);
        let id = self
            .archiver
            .append(router, owner.as_str(), with, outgoing, stanza)
            .await?;
        if let Some(id) = id {
            message.append_child(eligibility::stanza_id(id, owner.as_str()));
        }
        Ok(())
    }

    /// An account that can have an archive: it has a session, or it exists in storage.
    async fn has_account(&self, router: &Router, user: &BareJid) -> bool {
        if router.has_sessions(user) {
            return true;
        }
        if user.node().is_none() {
            return false;
        }
        router
            .storage()
            .accounts
            .account_exists(user.as_str())
            .await
            .unwrap_or(false)
    }
}

impl Module for Mam {
    fn name(&self) -> &'static str {
        "mam"
    }

    fn register(self: Arc<Self>, registry: &mut Registry) {
        if !self.enabled {
            return;
        }
        let this = self.clone();
        registry.cluster_topic(
            PREFS_TOPIC,
            Arc::new(Invalidation(Box::new(move |user| this.prefs.forget(user)))),
        );
        registry.message_hook(Priority::Archive, self.clone());
        let archiver = &self.archiver;
        // A `<query/>` get asks for the form (XEP-0313 §4.1.5), a set runs the query.
        let handlers: [(IqType, &str, Arc<dyn IqHandler>); 5] = [
            (IqType::Get, "query", Arc::new(iq::OwnerOnly(iq::QueryForm))),
            (
                IqType::Set,
                "query",
                Arc::new(iq::OwnerOnly(iq::Query(archiver.clone()))),
            ),
            (
                IqType::Get,
                "metadata",
                Arc::new(iq::OwnerOnly(iq::Metadata(archiver.clone()))),
            ),
            (
                IqType::Get,
                "prefs",
                Arc::new(iq::OwnerOnly(iq::GetPrefs(self.clone()))),
            ),
            (
                IqType::Set,
                "prefs",
                Arc::new(iq::OwnerOnly(iq::SetPrefs(self.clone()))),
            ),
        ];
        for (iq_type, payload, handler) in handlers {
            registry.account_iq(iq_type, ns::MAM, payload, handler);
        }
        registry.session_hook(Priority::Archive, self.clone());
        registry.shutdown_hook(Priority::Archive, self);
        registry.account_feature(ns::MAM);
        registry.account_feature(ns::MAM_EXTENDED);
        registry.account_feature(ns::STANZA_ID);
    }
}

#[async_trait]
impl MessageHook for Mam {
    async fn outgoing(
        &self,
        router: &Arc<Router>,
        from: &FullJid,
        to: &Jid,
        message: &mut Element,
    ) -> Result<(), StanzaError> {
        let owner = from.to_bare();
        let with = bare_str(to).to_owned();
        if message.attr("from").is_none() {
            stanza::set_attr(message, "from", from.to_string());
        }
        self.archive(router, &owner, &with, true, message).await
    }

    async fn incoming(
        &self,
        router: &Arc<Router>,
        to: &BareJid,
        message: &mut Element,
    ) -> Result<(), StanzaError> {
        let Some(with) = message
            .attr("from")
            .and_then(|f| Jid::new(f).ok())
            .map(|f| bare_str(&f).to_owned())
        else {
            return Ok(());
        };
        if !self.has_account(router, to).await {
            eligibility::strip_stanza_ids(message, to.as_str());
            return Ok(());
        }
        self.archive(router, to, &with, false, message).await
    }
}

/// How long shutdown waits for the archive's storage when it is failing: long enough to ride
/// out a database restart, short enough that a stop is not held up for good.
const SHUTDOWN_ARCHIVE_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// Rows still queued in the writer are committed before storage closes.
#[async_trait]
impl ShutdownHook for Mam {
    async fn shutdown(&self, _router: &Arc<Router>) {
        if let Some(writer) = self.archiver.writer.get() {
            writer.flush_before_shutdown(SHUTDOWN_ARCHIVE_GRACE).await;
        }
    }
}

#[async_trait]
impl SessionHook for Mam {
    async fn ended(
        &self,
        router: &Arc<Router>,
        session: &FullJid,
        _was_available: bool,
        _why: SessionEnd,
    ) {
        let user = session.to_bare();
        if !router.has_sessions(&user) {
            self.prefs.forget(user.as_str());
        }
    }
}
