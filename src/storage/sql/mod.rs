//! The SQL behind every store, written once for both backends.
//!
//! Queries use numbered placeholders (`$1`, `$2`, …), which PostgreSQL requires and sqlx's
//! SQLite driver binds by number too, so one string serves both. The few places where the two
//! databases differ in syntax or in how a write transaction keeps other writers out come from
//! the backend's [`Dialect`]. Elsewhere the spelling both accept is used: `CAST(… AS BIGINT)`
//! rather than `::BIGINT`, `ON CONFLICT DO NOTHING` rather than `INSERT OR IGNORE`, `FALSE`,
//! and booleans bound and read as `bool` (SQLite keeps storing 0 and 1, as its CHECKs require).
//!
//! Each concern is a macro that implements its store trait for one backend type, instantiated
//! by `sqlite.rs` and `postgres.rs` through [`sql_stores!`]. Macros rather than code generic over
//! `sqlx::Database`: with concrete pool and row types every bind and decode is checked as
//! written, instead of behind higher-ranked `Executor` and per-column-type bounds repeated on
//! every impl, which generic sqlx code inside `async_trait`'s `Send` futures is prone to fail
//! with "not general enough" errors. (`sqlx::Any` would route every value through its own
//! narrower set of types; concrete types keep each driver's own encoding and decoding.)
//! Each expansion sits in a `const _` block, so one concern's helpers cannot clash with
//! another's.
//!
//! A backend type taking part has a `pool` field (its `sqlx::Pool`) and implements [`Dialect`].

pub(crate) mod accounts;
pub(crate) mod admin;
pub(crate) mod archive;
pub(crate) mod blocking;
pub(crate) mod fast;
pub(crate) mod invites;
pub(crate) mod muc;
pub(crate) mod nodes;
pub(crate) mod pep;
pub(crate) mod pep_subscriptions;
pub(crate) mod private_xml;
pub(crate) mod push;
pub(crate) mod roster;
pub(crate) mod secrets;
pub(crate) mod uploads;
pub(crate) mod vcard;

/// What differs between the backends' SQL, and how each keeps concurrent writers apart.
pub(crate) trait Dialect {
    /// Starts every transaction that writes.
    const BEGIN_WRITE: &'static str;
    /// Ends a SELECT, inside a write transaction, whose rows decide what the transaction writes
    /// next: keeps other writers of those rows waiting until commit, where that takes a lock.
    const LOCK_ROWS: &'static str;
    /// A `LIMIT` value the backend binds.
    type Limit;
    /// The `LIMIT` value for at most `max` rows, or for every row when `max` is `None`.
    fn row_limit(max: Option<u32>) -> Self::Limit;
}

/// Implements every store trait for `$storage`, whose `pool` runs `$db`.
macro_rules! sql_stores {
    ($storage:ty, $db:ty) => {
        $crate::storage::sql::accounts::account_stores!($storage, $db);
        $crate::storage::sql::admin::admin_store!($storage, $db);
        $crate::storage::sql::archive::archive_store!($storage, $db);
        $crate::storage::sql::blocking::blocklist_store!($storage, $db);
        $crate::storage::sql::fast::fast_token_store!($storage, $db);
        $crate::storage::sql::invites::invite_store!($storage, $db);
        $crate::storage::sql::muc::muc_store!($storage, $db);
        $crate::storage::sql::nodes::node_store!($storage, $db);
        $crate::storage::sql::pep::pep_store!($storage, $db);
        $crate::storage::sql::pep_subscriptions::pep_subscription_store!($storage, $db);
        $crate::storage::sql::private_xml::private_xml_store!($storage, $db);
        $crate::storage::sql::push::push_store!($storage, $db);
        $crate::storage::sql::roster::roster_stores!($storage, $db);
        $crate::storage::sql::secrets::server_secret_store!($storage, $db);
        $crate::storage::sql::uploads::upload_store!($storage, $db);
        $crate::storage::sql::vcard::vcard_store!($storage, $db);
    };
}

pub(crate) use sql_stores;
