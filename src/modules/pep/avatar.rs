//! XEP-0398 User Avatar to vCard-Based Avatars Conversion, the PEP half.
//!
//! When the owner publishes XEP-0084 metadata, the image it names is read from the data node
//! and handed to the [`AvatarListener`] (the vCard module, which puts it in the vCard-temp
//! PHOTO); an empty `<metadata/>` (avatar disabled, XEP-0084 §4.6) removes it. The other way,
//! [`PepHandle::publish_avatar`] publishes a vCard photo as data and metadata items. Both
//! directions write without calling the other back, so a change never echoes.
//!
//! The metadata is read by hand rather than with xmpp-parsers' `avatar::Metadata`: its
//! hex parser slices the `id` attribute by bytes and would panic on a non-ASCII id sent by a
//! client.

use std::fmt::Write as _;
use std::sync::{Arc, Weak};

use async_trait::async_trait;
use base64::Engine;
use jid::BareJid;
use minidom::Element;
use sha1::{Digest, Sha1};
use tracing::{debug, warn};

use super::bookmarks::{ensure_node, put_item, PepHandle};
use super::{store, Ctx};
use crate::router::Router;
use crate::stanza::{self, StanzaError};

pub const DATA: &str = "urn:xmpp:avatar:data";
pub const METADATA: &str = "urn:xmpp:avatar:metadata";
pub const FEATURE_CONVERSION: &str = "urn:xmpp:pep-vcard-conversion:0";

/// An avatar image as both protocols carry it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Avatar {
    pub bytes: Vec<u8>,
    /// Its media type (`image/png`, …).
    pub mime: String,
}

impl Avatar {
    /// Lower-case hex SHA-1 of the image: its XEP-0084 item id and XEP-0153 hash.
    pub fn sha1_hex(&self) -> String {
        let mut hex = String::with_capacity(40);
        for byte in Sha1::digest(&self.bytes) {
            let _ = write!(hex, "{byte:02x}");
        }
        hex
    }
}

/// Told when the owner's avatar changed through PEP.
#[async_trait]
pub trait AvatarListener: Send + Sync {
    /// `None`: the owner disabled their avatar.
    async fn avatar_published(&self, router: &Arc<Router>, owner: &BareJid, avatar: Option<Avatar>);
}

fn is_sha1_hex(id: &str) -> bool {
    id.len() == 40 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// What a published `<metadata/>` says: `Ok(None)` for "no avatar", `Ok(Some((id, type)))`
/// for the image kept in the data node, `Err(())` for metadata that names no such image
/// (only URLs, or malformed), which leaves the vCard alone.
fn read_metadata(metadata: &Element) -> Result<Option<(String, String)>, ()> {
    let infos: Vec<&Element> = metadata
        .children()
        .filter(|c| c.is("info", METADATA))
        .collect();
    if infos.is_empty() {
        return Ok(None);
    }
    infos
        .into_iter()
        .filter(|info| info.attr("url").is_none())
        .find_map(|info| {
            let id = info.attr("id")?.to_ascii_lowercase();
            let mime = info.attr("type")?;
            is_sha1_hex(&id).then(|| (id, mime.to_owned()))
        })
        .map(Some)
        .ok_or(())
}

/// After the owner published `payload` to `node`: a new avatar for the listener.
pub(super) async fn after_publish(ctx: &Ctx<'_>, node: &str, payload: &Element) {
    if node != METADATA || !payload.is("metadata", METADATA) {
        return;
    }
    let Some(listener) = ctx.state.avatar_listener.get().and_then(Weak::upgrade) else {
        return;
    };
    let avatar = match read_metadata(payload) {
        Ok(None) => None,
        Ok(Some((id, mime))) => match image(ctx, &id).await {
            Some(bytes) => Some(Avatar { bytes, mime }),
            None => return,
        },
        Err(()) => {
            debug!(owner = %ctx.owner, "avatar metadata without a PEP-stored image");
            return;
        }
    };
    listener
        .avatar_published(ctx.router, &ctx.owner, avatar)
        .await;
}

/// The image with this id from the data node, if it is there and its hash matches.
async fn image(ctx: &Ctx<'_>, id: &str) -> Option<Vec<u8>> {
    let config = ctx
        .storage()
        .pep_node(&ctx.owner_name, DATA)
        .await
        .ok()
        .flatten()?;
    let items = store::items_by_id(ctx, DATA, &config, &[id.to_owned()])
        .await
        .ok()?;
    let payload = store::payload(items.last()?)?;
    let data = xmpp_parsers::avatar::Data::try_from(payload).ok()?;
    let avatar = Avatar {
        bytes: data.data,
        mime: String::new(),
    };
    if avatar.sha1_hex() != id {
        warn!(owner = %ctx.owner, %id, "avatar data does not match its id; vCard left alone");
        return None;
    }
    Some(avatar.bytes)
}

fn metadata_element(avatar: Option<&Avatar>) -> Element {
    let mut metadata = Element::bare("metadata", METADATA);
    if let Some(avatar) = avatar {
        let mut info = Element::bare("info", METADATA);
        stanza::set_attr(&mut info, "bytes", avatar.bytes.len().to_string());
        stanza::set_attr(&mut info, "id", avatar.sha1_hex());
        stanza::set_attr(&mut info, "type", avatar.mime.as_str());
        metadata.append_child(info);
    }
    metadata
}

impl PepHandle {
    /// Sets the listener told of avatars published through PEP (the vCard module).
    pub fn set_avatar_listener(&self, listener: Weak<dyn AvatarListener>) {
        if self.state.avatar_listener.set(listener).is_err() {
            warn!("a second avatar listener was ignored");
        }
    }

    /// Publishes a vCard photo as the owner's XEP-0084 avatar (data, then metadata, as
    /// XEP-0084 §4.1 orders them); `None` publishes an empty `<metadata/>` if the owner has an
    /// avatar node.
    pub async fn publish_avatar(
        &self,
        router: &Arc<Router>,
        owner: &BareJid,
        avatar: Option<&Avatar>,
    ) -> Result<(), StanzaError> {
        let ctx = Ctx::new(router, &self.state, owner.clone(), owner.clone())
            .ok_or_else(StanzaError::service_unavailable)?;
        let defaults = super::config::default_config(ctx.limits());
        let Some(avatar) = avatar else {
            let existing = ctx
                .storage()
                .pep_node(&ctx.owner_name, METADATA)
                .await
                .map_err(store::storage_error)?;
            if let Some(config) = existing {
                let id = ctx.router.ids().next_id().to_string();
                put_item(&ctx, METADATA, &config, &id, metadata_element(None)).await?;
            }
            return Ok(());
        };
        let id = avatar.sha1_hex();
        let mut data = Element::bare("data", DATA);
        data.append_text(base64::engine::general_purpose::STANDARD.encode(&avatar.bytes));
        let config = ensure_node(&ctx, DATA, defaults).await?;
        put_item(&ctx, DATA, &config, &id, data).await?;
        let config = ensure_node(&ctx, METADATA, defaults).await?;
        put_item(&ctx, METADATA, &config, &id, metadata_element(Some(avatar))).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn el(xml: &str) -> Element {
        xml.parse().unwrap()
    }

    #[test]
    fn metadata_names_the_pep_image_or_nothing() {
        let id = "aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d";
        let meta = el(&format!(
            "<metadata xmlns='{METADATA}'><info id='{id}' bytes='5' type='image/gif' \
             url='https://e/a.gif'/><info id='{}' bytes='5' type='image/png'/></metadata>",
            id.to_uppercase()
        ));
        assert_eq!(
            read_metadata(&meta),
            Ok(Some((id.to_owned(), "image/png".to_owned())))
        );
        assert_eq!(
            read_metadata(&el(&format!("<metadata xmlns='{METADATA}'/>"))),
            Ok(None)
        );
        let odd = el(&format!(
            "<metadata xmlns='{METADATA}'><info id='aé' bytes='1' type='image/png'/></metadata>"
        ));
        assert_eq!(read_metadata(&odd), Err(()));
    }

    #[test]
    fn metadata_element_describes_the_image() {
        let avatar = Avatar {
            bytes: b"hello".to_vec(),
            mime: "image/png".into(),
        };
        let meta = metadata_element(Some(&avatar));
        let info = meta.get_child("info", METADATA).unwrap();
        assert_eq!(
            info.attr("id"),
            Some("aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d")
        );
        assert_eq!(info.attr("bytes"), Some("5"));
        assert_eq!(read_metadata(&meta).unwrap().unwrap().1, "image/png");
    }
}
