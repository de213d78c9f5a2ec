//! XEP-0054 vCards, with the XEP-0153 photo hash kept beside each one.

use async_trait::async_trait;

use super::StorageResult;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredVcard {
    /// The `<vCard xmlns='vcard-temp'/>` element, serialized.
    pub xml: String,
    /// Lower-case hex SHA-1 of the photo's bytes, empty when the vCard has no photo.
    pub photo_hash: String,
}

#[async_trait]
pub trait VcardStore: Send + Sync {
    async fn vcard(&self, username: &str) -> StorageResult<Option<StoredVcard>>;
    /// Only the photo hash, for presence decoration: `None` when the user has no vCard.
    async fn vcard_photo_hash(&self, username: &str) -> StorageResult<Option<String>>;
    /// Inserts or replaces the vCard. `NotFound` if the account does not exist.
    async fn set_vcard(&self, username: &str, vcard: &StoredVcard) -> StorageResult<()>;
}
