//! RFC 6121 rosters: the `jabber:iq:roster` protocol (§2), roster pushes, versioning (§2.6),
//! and the subscription state machine (§3, Appendix A) that the presence module drives.

mod iq;
pub mod items;
mod locks;
pub mod push;
pub mod subscription;
pub mod table;

use std::sync::Arc;

use crate::router::{IqType, Module, Registry};
use crate::xml::ns;

/// The flag of sessions that fetched the roster and so get its pushes (RFC 6121 §2.1.6).
pub const INTERESTED: &str = "roster-interested";

pub struct Roster;

impl Module for Roster {
    fn name(&self) -> &'static str {
        "roster"
    }

    fn register(self: Arc<Self>, registry: &mut Registry) {
        registry.session_flag(INTERESTED);
        registry.account_iq(IqType::Get, ns::ROSTER, "query", Arc::new(iq::GetRoster));
        registry.account_iq(IqType::Set, ns::ROSTER, "query", Arc::new(iq::SetRoster));
    }
}
