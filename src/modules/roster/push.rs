//! Roster pushes (RFC 6121 §2.1.6): every change goes to each of the user's interested
//! resources, stamped with the roster's new version.

use jid::BareJid;
use minidom::Element;

use crate::router::Router;
use crate::stanza;
use crate::xml::ns;

pub fn push(router: &Router, user: &BareJid, version: i64, item: Element) {
    let Some(interested) = router.session_flag(super::INTERESTED) else {
        return;
    };
    let targets = router.resources_with_flag(user, interested);
    if targets.is_empty() {
        return;
    }
    let mut query = Element::bare("query", ns::ROSTER);
    stanza::set_attr(&mut query, "ver", version.to_string());
    query.append_child(item);
    for target in targets {
        let mut iq = Element::bare("iq", ns::CLIENT);
        stanza::set_attr(&mut iq, "type", "set");
        stanza::set_attr(&mut iq, "id", format!("push-{}", router.ids().next_id()));
        stanza::set_attr(&mut iq, "from", user.to_string());
        stanza::set_attr(&mut iq, "to", target.to_string());
        iq.append_child(query.clone());
        let _ = router.deliver_to_session(&target, iq);
    }
}
