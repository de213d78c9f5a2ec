//! Who may read a node (XEP-0060 §4.5 access models, as PEP uses them): the owner always;
//! anyone for `open`; contacts subscribed to the owner's presence (from/both on the owner's
//! roster) for `presence`; nobody else for `whitelist` (corvid keeps no whitelist but the
//! owner).

use jid::BareJid;
use minidom::Element;

use crate::router::Router;
use crate::stanza::{Condition, ErrorType, StanzaError};
use crate::storage::{AccessModel, StorageResult};
use crate::xml::ns;

pub async fn may_read(
    router: &Router,
    owner: &BareJid,
    reader: &BareJid,
    model: AccessModel,
) -> StorageResult<bool> {
    if owner == reader {
        return Ok(true);
    }
    match model {
        AccessModel::Open => Ok(true),
        AccessModel::Whitelist => Ok(false),
        AccessModel::Presence => {
            if owner.node().is_none() {
                return Ok(false);
            }
            let item = router
                .storage()
                .roster
                .roster_item(owner.as_str(), &reader.to_string())
                .await?;
            Ok(item.is_some_and(|i| i.subscription.contact_sees_user()))
        }
    }
}

/// The XEP-0060 §6.5.9 error for a reader the model keeps out.
pub fn denial(model: AccessModel) -> StanzaError {
    match model {
        AccessModel::Presence => {
            StanzaError::new(ErrorType::Auth, Condition::NotAuthorized).with_app_condition(
                Element::bare("presence-subscription-required", ns::PUBSUB_ERRORS),
            )
        }
        AccessModel::Whitelist => StanzaError::not_allowed()
            .with_app_condition(Element::bare("closed-node", ns::PUBSUB_ERRORS)),
        AccessModel::Open => StanzaError::forbidden(),
    }
}
