//! What administration (XEP-0133) keeps: accounts an administrator disabled, each account's
//! last login, and settings changed at run time (message of the day, welcome message, admin
//! list edits) under a name.

use async_trait::async_trait;

use super::StorageResult;

#[async_trait]
pub trait AdminStore: Send + Sync {
    /// Disables or re-enables the account; `NotFound` if there is none.
    async fn set_disabled(&self, username: &str, disabled: bool) -> StorageResult<()>;
    /// False for an account that does not exist.
    async fn is_disabled(&self, username: &str) -> StorageResult<bool>;
    /// Disabled accounts, sorted.
    async fn disabled_accounts(&self) -> StorageResult<Vec<String>>;
    /// Records a successful login at `at_ms` (milliseconds since the Unix epoch); an account
    /// that went away meanwhile is ignored.
    async fn record_login(&self, username: &str, at_ms: i64) -> StorageResult<()> {
        self.record_logins(&[(username.to_owned(), at_ms)]).await
    }
    /// `record_login` for each `(username, at_ms)`, in one transaction.
    async fn record_logins(&self, logins: &[(String, i64)]) -> StorageResult<()>;
    /// The time of the last successful login, `None` when there was none since it was kept.
    async fn last_login(&self, username: &str) -> StorageResult<Option<i64>>;
    async fn setting(&self, name: &str) -> StorageResult<Option<String>>;
    /// Stores `value` under `name`, or removes the setting for `None`.
    async fn set_setting(&self, name: &str, value: Option<&str>) -> StorageResult<()>;
    /// Writes what a wrapper keeps in memory (`login_times`); the database stores keep none.
    async fn flush(&self) -> StorageResult<()> {
        Ok(())
    }
}
