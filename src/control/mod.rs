//! `corvid ctl`: a live server's local control socket (`[control]`), the way ejabberdctl and
//! prosodyctl's shell reach theirs. Requests are the admin operations: the ad-hoc commands
//! (XEP-0050, XEP-0133) run as the server's operator, so an operation is written once and
//! offered both to admins' XMPP clients and to the command line.

pub mod client;
pub mod cluster;
mod listener;
pub mod operator;
pub mod protocol;
pub mod render;

use std::path::PathBuf;

pub use listener::{ControlSocket, Operator};

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("control socket {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("control socket {}: another corvid server is running and answers there", .0.display())]
    InUse(PathBuf),
    #[error("control socket {}: the path exists and is not a socket; remove it or set [control] socket", .0.display())]
    NotASocket(PathBuf),
}
