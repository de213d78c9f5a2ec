//! One module per feature; each registers its handlers with the router at start-up.

pub mod adhoc;
pub mod blocking;
pub mod carbons;
pub mod component;
pub mod disco;
pub mod entity_time;
pub mod extdisco;
pub mod last_activity;
pub mod mam;
mod message_kinds;
pub mod muc;
pub mod offline;
pub mod pep;
pub mod ping;
pub mod presence;
pub mod private;
pub mod push;
pub mod register;
pub mod roster;
mod server_info;
pub mod upload;
mod user_cache;
pub mod vcard;
pub mod version;

use std::sync::Arc;

use crate::config::Config;
use crate::router::Module;

/// Every module the server runs. Their order here matters to nothing: hooks run in the order
/// of their `Priority`, and IQ handlers and disco contributions are keyed, not listed.
/// `config` decides the optional ones (MUC) and where they live.
pub fn all(config: &Config) -> Vec<Arc<dyn Module>> {
    let mam = Arc::new(mam::Mam::new(config));
    let archiver = mam.archiver();
    let pep = Arc::new(pep::Pep::default());
    let vcard = Arc::new(vcard::Vcard::with_pep(pep.handle()));
    vcard.listen();
    let mut modules: Vec<Arc<dyn Module>> = vec![
        Arc::new(disco::Disco),
        Arc::new(ping::Ping),
        Arc::new(version::Version),
        Arc::new(entity_time::EntityTime),
        Arc::new(roster::Roster),
        Arc::new(presence::Presence::new(config)),
        Arc::new(last_activity::LastActivity::default()),
        Arc::new(offline::Offline::default()),
        mam,
        Arc::new(blocking::Blocking::default()),
        vcard,
        Arc::new(private::PrivateStorage::new(pep.handle())),
        pep,
        Arc::new(carbons::Carbons),
        Arc::new(push::Push),
        Arc::new(adhoc::Adhoc::new(config)),
        Arc::new(register::Register),
        Arc::new(crate::invites::Pars),
        Arc::new(crate::invites::InviteCommands::new(config)),
        Arc::new(extdisco::ExtDisco::new(config)),
    ];
    if let Some(muc) = muc::Muc::new(config, archiver) {
        modules.push(muc);
    }
    if let Some(upload) = upload::Upload::new(config) {
        modules.push(upload);
    }
    modules.extend(crate::stream::cluster_resume::module(config));
    modules
}
