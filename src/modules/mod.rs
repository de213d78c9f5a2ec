//! One module per feature; each registers its handlers with the router at start-up.

pub mod blocking;
pub mod carbons;
pub mod disco;
pub mod last_activity;
pub mod mam;
pub mod muc;
pub mod offline;
pub mod pep;
pub mod ping;
pub mod presence;
pub mod push;
pub mod roster;
mod user_cache;
pub mod vcard;
pub mod version;

use std::sync::Arc;

use crate::config::Config;
use crate::router::Module;

/// Every module the server runs, in registration order. `config` decides the optional ones
/// (MUC) and where they live.
pub fn all(config: &Config) -> Vec<Arc<dyn Module>> {
    let mam = Arc::new(mam::Mam::new(config));
    let archiver = mam.archiver();
    let mut modules: Vec<Arc<dyn Module>> = vec![
        Arc::new(disco::Disco),
        Arc::new(ping::Ping),
        Arc::new(version::Version),
        Arc::new(roster::Roster),
        Arc::new(presence::Presence::new(config)),
        Arc::new(last_activity::LastActivity::default()),
        Arc::new(offline::Offline::default()),
        // Amends messages (stanza-ids), so before any module that copies them (carbons).
        mam,
        Arc::new(blocking::Blocking::default()),
        Arc::new(vcard::Vcard::default()),
        Arc::new(pep::Pep::default()),
        // After every module that amends messages (the archive's stanza-id), so copies
        // carry the amended message.
        Arc::new(carbons::Carbons),
        Arc::new(push::Push),
    ];
    if let Some(muc) = muc::Muc::new(config, archiver) {
        modules.push(muc);
    }
    modules
}
