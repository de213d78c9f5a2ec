//! XEP-0049 Private XML Storage: one serialized element per account and namespace.

use async_trait::async_trait;

use super::StorageResult;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrivateXmlWrite {
    Stored,
    /// The account already stores `max_namespaces` other namespaces; nothing was stored.
    Full,
}

#[async_trait]
pub trait PrivateXmlStore: Send + Sync {
    /// The element stored under `namespace`, serialized; `None` if there is none.
    async fn private_xml(&self, username: &str, namespace: &str) -> StorageResult<Option<String>>;
    /// Inserts or replaces the element stored under `namespace`, unless that would make the
    /// account store more than `max_namespaces` namespaces. `NotFound` if the account does not
    /// exist.
    async fn set_private_xml(
        &self,
        username: &str,
        namespace: &str,
        xml: &str,
        max_namespaces: u32,
    ) -> StorageResult<PrivateXmlWrite>;
}
