//! One module per feature; each registers its handlers with the router at start-up.

pub mod disco;
pub mod offline;
pub mod pep;
pub mod ping;
pub mod presence;
pub mod version;

use std::sync::Arc;

use crate::router::Module;

/// Every module the server runs, in registration order.
pub fn all() -> Vec<Arc<dyn Module>> {
    vec![
        Arc::new(disco::Disco),
        Arc::new(ping::Ping),
        Arc::new(version::Version),
        Arc::new(presence::Presence),
        Arc::new(offline::Offline),
        Arc::new(pep::Pep::default()),
    ]
}
