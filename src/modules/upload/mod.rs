//! XEP-0363 HTTP File Upload: a service at `upload.<domain>` for each hosted domain that
//! gives local users signed PUT and GET URLs on corvid's own HTTP listener
//! (`listen::upload` serves them).
//!
//! Slots are not stored: the PUT URL carries what the upload must match, signed with a secret
//! kept in storage (`slot`), so any node accepts it. Completed uploads are recorded in storage
//! (quotas, expiry, account deletion); their bytes live in a `FileStore`.

mod files;
pub mod slot;
mod sweep;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use jid::Jid;
use minidom::Element;
use tokio::sync::OnceCell;
use tracing::{debug, warn};
use xmpp_parsers::disco::{DiscoInfoResult, DiscoItemsResult, Identity};
use xmpp_parsers::http_upload::{Get, Put, SlotRequest, SlotResult};

pub use files::{valid_key, FileError, FileRead, FileStore, LocalDirStore, PendingFile};
pub use slot::Slot;

use crate::config::{Config, UploadConfig};
use crate::router::{
    Component, DiscoQuery, DiscoTarget, Item, ItemSource, Module, Registry, Router,
};
use crate::stanza::{self, set_attr, Kind, StanzaError};
use crate::storage::{Storage, StorageResult};
use crate::xml::forms::{self, FieldType};
use crate::xml::ns;

pub const HTTP_UPLOAD: &str = "urn:xmpp:http:upload:0";

/// Features of each upload service; `tests/xeps.rs` checks these against `xeps.toml`.
pub const SERVICE_FEATURES: &[&str] = &[HTTP_UPLOAD, ns::DISCO_INFO, ns::DISCO_ITEMS, ns::PING];

/// The name the slot secret is kept under in storage.
const SECRET_NAME: &str = "http-upload-slots";

/// A day, the window of `daily_quota_per_user`.
const DAY_MS: i64 = 24 * 3600 * 1000;

/// Gives `storage` the configured file store, so that deleting an account deletes its files.
pub fn attach_files(storage: Storage, config: &Config) -> Storage {
    storage.with_upload_files(Arc::new(LocalDirStore::new(&config.upload.directory)))
}

/// Deletes `owner`'s upload records and, when `storage` knows the file store, their files.
pub async fn delete_files_of(storage: &Storage, owner: &str) -> StorageResult<()> {
    let paths = storage.uploads.delete_uploads_of(owner).await?;
    if let Some(files) = &storage.upload_files {
        delete_files(files.as_ref(), &paths).await;
    }
    Ok(())
}

/// Deletes the files of these upload paths; a file already gone is no error.
async fn delete_files(files: &dyn FileStore, paths: &[String]) {
    for path in paths {
        match files.delete(token_of(path)).await {
            Ok(()) | Err(FileError::NotFound) => {}
            Err(e) => warn!(%path, error = %e, "deleting an uploaded file failed"),
        }
    }
}

/// The store key of an upload path: its token.
pub fn token_of(path: &str) -> &str {
    path.split_once('/').map_or(path, |(token, _)| token)
}

/// How the HTTP side finds the service (`Router::service`).
#[derive(Default)]
pub struct UploadHandle(OnceLock<Arc<Upload>>);

impl UploadHandle {
    pub fn get(&self) -> Option<&Arc<Upload>> {
        self.0.get()
    }
}

/// Where the HTTP listeners ended up (ports may be ephemeral), for URLs without `public_url`.
#[derive(Clone, Copy, Debug)]
struct Listener {
    scheme: &'static str,
    port: u16,
}

pub struct Upload {
    /// Service domain -> the hosted domain whose users it serves.
    services: HashMap<String, String>,
    config: UploadConfig,
    public_url: Option<String>,
    listener: OnceLock<Listener>,
    files: Arc<dyn FileStore>,
    secret: OnceCell<Vec<u8>>,
}

impl Upload {
    /// The service, when it is enabled and HTTP listens.
    pub fn new(config: &Config) -> Option<Arc<Upload>> {
        if !(config.upload.enabled && config.http.enabled) {
            return None;
        }
        Some(Arc::new(Upload {
            services: config
                .hosted_domains()
                .into_iter()
                .map(|host| (config.upload.service_domain(&host.domain), host.domain))
                .collect(),
            config: config.upload.clone(),
            public_url: config
                .http
                .public_url
                .as_ref()
                .map(|url| url.trim_end_matches('/').to_owned()),
            listener: OnceLock::new(),
            files: Arc::new(LocalDirStore::new(&config.upload.directory)),
            secret: OnceCell::new(),
        }))
    }

    pub fn config(&self) -> &UploadConfig {
        &self.config
    }

    pub fn files(&self) -> &Arc<dyn FileStore> {
        &self.files
    }

    /// The slot-signing secret, made once and kept in storage for every node.
    pub async fn secret(&self, router: &Router) -> StorageResult<&[u8]> {
        self.secret
            .get_or_try_init(|| async {
                let fresh: [u8; 32] = rand::random();
                router
                    .storage()
                    .secrets
                    .server_secret(SECRET_NAME, &fresh)
                    .await
            })
            .await
            .map(Vec::as_slice)
    }

    /// The scheme, host and port URLs start with, for a user of `domain`.
    fn base_url(&self, domain: &str) -> Option<String> {
        if let Some(url) = &self.public_url {
            return Some(url.clone());
        }
        let listener = self.listener.get()?;
        // URLs name hosts in A-labels: what HTTP clients and certificate checks compare.
        let host = idna::domain_to_ascii(domain).unwrap_or_else(|_| domain.to_owned());
        Some(format!("{}://{host}:{}", listener.scheme, listener.port))
    }

    async fn slot(
        &self,
        router: &Arc<Router>,
        domain: &str,
        owner: &str,
        request: SlotRequest,
    ) -> Result<SlotResult, StanzaError> {
        if request.filename.is_empty() {
            return Err(StanzaError::bad_request().with_text("the file needs a name"));
        }
        if request.size > self.config.max_file_size {
            let mut too_large = Element::bare("file-too-large", HTTP_UPLOAD);
            let mut max = Element::bare("max-file-size", HTTP_UPLOAD);
            max.append_text_node(self.config.max_file_size.to_string());
            too_large.append_child(max);
            return Err(StanzaError::not_acceptable()
                .with_text(format!(
                    "File too large: the limit is {} bytes",
                    self.config.max_file_size
                ))
                .with_app_condition(too_large));
        }
        let content_type = normal_content_type(request.content_type.as_deref());
        if !valid_content_type(&content_type) {
            return Err(StanzaError::bad_request().with_text("content-type is not a media type"));
        }
        self.check_quotas(router, owner, request.size).await?;
        let base = self.base_url(domain).ok_or_else(|| {
            StanzaError::service_unavailable().with_text("the HTTP listener is not up")
        })?;
        let secret = self.secret(router).await.map_err(|e| {
            warn!(error = %e, "reading the upload secret failed");
            StanzaError::internal_server_error()
        })?;
        let path = format!(
            "{}/{}",
            slot::new_token(),
            slot::clean_filename(&request.filename)
        );
        let validity = i64::try_from(self.config.slot_validity_secs).unwrap_or(i64::MAX);
        let slot = Slot {
            content_type,
            path,
            owner: owner.to_owned(),
            size: request.size,
            expires: Utc::now().timestamp().saturating_add(validity),
        };
        let url = format!("{base}{}", slot::url_path(&slot.path));
        debug!(%owner, path = %slot.path, size = slot.size, "upload slot given");
        Ok(SlotResult {
            put: Put {
                url: format!("{url}?{}", slot.query(secret)),
                headers: Vec::new(),
            },
            get: Get { url },
        })
    }

    /// The daily quota of `owner` and the total quota, with when to retry if one is used up.
    /// Checked when a slot is given and again when its PUT starts, so that slots collected
    /// in advance cannot add up past a quota.
    pub async fn check_quotas(
        &self,
        router: &Router,
        owner: &str,
        size: u64,
    ) -> Result<(), StanzaError> {
        let storage = router.storage();
        let failed = |e| {
            warn!(error = %e, "reading upload usage failed");
            StanzaError::internal_server_error()
        };
        let now = Utc::now().timestamp_millis();
        if self.config.daily_quota_per_user > 0 {
            let usage = storage
                .uploads
                .upload_usage(owner, now - DAY_MS)
                .await
                .map_err(failed)?;
            if usage.bytes.saturating_add(size) > self.config.daily_quota_per_user {
                return Err(quota_error(
                    "Daily upload quota used up",
                    usage.oldest_ms.map(|oldest| oldest + DAY_MS),
                ));
            }
        }
        if self.config.total_quota > 0 {
            let usage = storage.uploads.upload_total().await.map_err(failed)?;
            if usage.bytes.saturating_add(size) > self.config.total_quota {
                let expiry = i64::try_from(self.config.expire_after_secs)
                    .unwrap_or(i64::MAX / 1000)
                    .saturating_mul(1000);
                return Err(quota_error(
                    "The server's upload space is used up",
                    usage.oldest_ms.map(|oldest| oldest.saturating_add(expiry)),
                ));
            }
        }
        Ok(())
    }

    async fn service_iq(&self, router: &Arc<Router>, service: &str, domain: &str, iq: Element) {
        if !matches!(stanza::stanza_type(&iq), "get" | "set") {
            return;
        }
        let Some(payload) = stanza::iq_payload(&iq).cloned() else {
            router.bounce(&iq, StanzaError::bad_request());
            return;
        };
        let is_get = stanza::stanza_type(&iq) == "get";
        let answer = if is_get && payload.is("query", ns::DISCO_INFO) {
            Ok(Some(self.info(&payload)))
        } else if is_get && payload.is("query", ns::DISCO_ITEMS) {
            Ok(Some(
                DiscoItemsResult {
                    node: payload.attr("node").map(str::to_owned),
                    items: Vec::new(),
                    rsm: None,
                }
                .into(),
            ))
        } else if is_get && payload.is("ping", ns::PING) {
            Ok(None)
        } else if payload.is("request", HTTP_UPLOAD) {
            self.request(router, service, domain, &iq, payload).await
        } else {
            Err(StanzaError::service_unavailable())
        };
        match answer {
            Ok(payload) => router.send_reply(stanza::iq_result(&iq, payload, service)),
            Err(error) => router.bounce(&iq, error),
        }
    }

    async fn request(
        &self,
        router: &Arc<Router>,
        service: &str,
        domain: &str,
        iq: &Element,
        payload: Element,
    ) -> Result<Option<Element>, StanzaError> {
        if stanza::stanza_type(iq) != "get" {
            return Err(StanzaError::bad_request().with_text("slot requests are IQ get"));
        }
        // Only users of the domain this service belongs to: the server pays for the disk.
        let owner = iq
            .attr("from")
            .and_then(|from| Jid::new(from).ok())
            .filter(|from| from.node().is_some() && from.domain().as_str() == domain)
            .map(|from| from.to_bare().to_string())
            .ok_or_else(|| {
                StanzaError::not_allowed()
                    .with_text(format!("Only users of {domain} may upload to {service}"))
            })?;
        let request = slot_request(&payload)?;
        let slot = self.slot(router, domain, &owner, request).await?;
        Ok(Some(slot.into()))
    }

    /// disco#info: identity, features and the XEP-0128 form with the size limit (§2).
    fn info(&self, request: &Element) -> Element {
        let form = forms::result(
            HTTP_UPLOAD,
            vec![forms::field(
                "max-file-size",
                FieldType::TextSingle,
                "",
                &self.config.max_file_size.to_string(),
            )],
        );
        DiscoInfoResult {
            node: request.attr("node").map(str::to_owned),
            identities: vec![Identity {
                category: "store".to_owned(),
                type_: "file".to_owned(),
                lang: None,
                name: Some("HTTP File Upload".to_owned()),
            }],
            features: SERVICE_FEATURES.iter().map(|&f| f.to_owned()).collect(),
            extensions: vec![form],
        }
        .into()
    }
}

/// The `<request/>`'s attributes. Read by hand: xmpp-parsers 0.23's `SlotRequest` refuses a
/// request without `content-type`, which XEP-0363 §4 makes optional.
fn slot_request(payload: &Element) -> Result<SlotRequest, StanzaError> {
    let filename = payload.attr("filename");
    let size = payload
        .attr("size")
        .and_then(|s| s.trim().parse::<u64>().ok());
    let (Some(filename), Some(size)) = (filename, size) else {
        return Err(StanzaError::bad_request().with_text("filename and size are required"));
    };
    Ok(SlotRequest {
        filename: filename.to_owned(),
        size,
        content_type: payload.attr("content-type").map(str::to_owned),
    })
}

/// What a slot's Content-Type is when the client named none, and how types compare: a PUT
/// must send the same.
pub fn normal_content_type(content_type: Option<&str>) -> String {
    match content_type.map(str::trim).filter(|t| !t.is_empty()) {
        Some(t) => t.to_owned(),
        None => "application/octet-stream".to_owned(),
    }
}

/// `type/subtype` with optional parameters, in visible ASCII: what a Content-Type header can
/// carry back unchanged on download.
fn valid_content_type(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    content_type.len() <= 255
        && content_type.bytes().all(|b| (0x20..0x7f).contains(&b))
        && essence
            .split_once('/')
            .is_some_and(|(kind, sub)| token(kind) && token(sub))
}

/// `resource-constraint` (wait) with `<retry stamp/>` when a time is known (XEP-0363 §4).
fn quota_error(text: &str, retry_ms: Option<i64>) -> StanzaError {
    let error = StanzaError::resource_constraint().with_text(text);
    match retry_ms.and_then(DateTime::<Utc>::from_timestamp_millis) {
        Some(at) => {
            let mut retry = Element::bare("retry", HTTP_UPLOAD);
            set_attr(
                &mut retry,
                "stamp",
                at.to_rfc3339_opts(SecondsFormat::Secs, true),
            );
            error.with_app_condition(retry)
        }
        None => error,
    }
}

/// Called once the HTTP listeners are bound: URLs can name their ports, and expired files
/// start being swept.
pub fn listening(router: &Arc<Router>, http: Option<SocketAddr>, https: Option<SocketAddr>) {
    let Some(upload) = router
        .service::<UploadHandle>()
        .and_then(|handle| handle.get().cloned())
    else {
        return;
    };
    let listener = match (https, http) {
        (Some(addr), _) => Listener {
            scheme: "https",
            port: addr.port(),
        },
        (None, Some(addr)) => Listener {
            scheme: "http",
            port: addr.port(),
        },
        (None, None) => return,
    };
    let _ = upload.listener.set(listener);
    tokio::spawn(sweep::run(router.clone(), upload));
}

impl Module for Upload {
    fn name(&self) -> &'static str {
        "upload"
    }

    fn register(self: Arc<Self>, registry: &mut Registry) {
        for service in self.services.keys() {
            registry.component(service.clone(), self.clone());
        }
        let _ = registry.service::<UploadHandle>().0.set(self.clone());
        // How clients find the service: an item of the server (XEP-0363 §2).
        registry.disco_items(DiscoTarget::Server, self);
    }
}

#[async_trait]
impl ItemSource for Upload {
    async fn items(&self, _router: &Arc<Router>, query: &DiscoQuery<'_>) -> Vec<Item> {
        let mut items: Vec<Item> = self
            .services
            .iter()
            .filter(|(_, host)| host.as_str() == query.domain)
            .map(|(service, _)| Item::new(service.clone()))
            .collect();
        items.sort_by(|a, b| a.jid.cmp(&b.jid));
        items
    }
}

#[async_trait]
impl Component for Upload {
    async fn handle(&self, router: &Arc<Router>, kind: Kind, to: Jid, stanza: Element) {
        let service = to.domain().as_str();
        let Some(domain) = self.services.get(service) else {
            return;
        };
        match kind {
            Kind::Iq if to.node().is_none() && to.resource().is_none() => {
                self.service_iq(router, service, domain, stanza).await
            }
            Kind::Iq | Kind::Message
                if !stanza::is_error(&stanza) && stanza::stanza_type(&stanza) != "result" =>
            {
                router.bounce(&stanza, StanzaError::service_unavailable());
            }
            _ => {}
        }
    }
}
