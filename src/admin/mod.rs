//! Server administration as plain operations over the router and storage: who is an admin,
//! accounts (create, delete, disable, password), sessions (list, end), messages to users
//! (announcements, message of the day, welcome message), statistics, and stopping or
//! restarting the service. The XEP-0133 ad-hoc commands (`modules::adhoc`) and the command
//! line call these; neither holds logic of its own.

pub mod accounts;
pub mod lifecycle;
pub mod messages;
pub mod roles;
pub mod sessions;

pub use accounts::welcome_new_account;
pub use lifecycle::{Lifecycle, Stop};

use crate::storage::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0} does not exist")]
    NoSuchAccount(String),
    #[error("{0} already exists")]
    AccountExists(String),
    #[error("{0} is not an account of a domain this server hosts")]
    NotHosted(String),
    #[error("the password cannot be used: {0}")]
    BadPassword(String),
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
}

pub type AdminResult<T> = Result<T, AdminError>;
