//! XEP-0313 §7 archiving preferences: the `<prefs/>` element, and the decision they make.

use jid::Jid;
use minidom::Element;

use crate::stanza::{self, StanzaError};
use crate::storage::{ArchiveDefault, ArchivePrefs};
use crate::xml::ns;

/// What the preferences say about a message with `with` (a bare JID).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Archive,
    Skip,
    /// Archive if `with` is in the owner's roster.
    IfInRoster,
}

/// The never-list wins over the always-list, both over the default (XEP-0313 §7).
pub fn decide(prefs: &ArchivePrefs, with: &str) -> Decision {
    if prefs.never.iter().any(|j| j == with) {
        return Decision::Skip;
    }
    if prefs.always.iter().any(|j| j == with) {
        return Decision::Archive;
    }
    match prefs.default {
        ArchiveDefault::Always => Decision::Archive,
        ArchiveDefault::Never => Decision::Skip,
        ArchiveDefault::Roster => Decision::IfInRoster,
    }
}

/// Parses a `<prefs/>` set. `default` is required; JIDs are normalised to bare JIDs.
pub fn parse(prefs: &Element) -> Result<ArchivePrefs, StanzaError> {
    let default = prefs
        .attr("default")
        .and_then(ArchiveDefault::parse)
        .ok_or_else(|| {
            StanzaError::bad_request().with_text("default must be always, never or roster")
        })?;
    let list = |name: &str| -> Result<Vec<String>, StanzaError> {
        let mut jids = Vec::new();
        if let Some(list) = prefs.get_child(name, ns::MAM) {
            for item in list.children().filter(|c| c.is("jid", ns::MAM)) {
                let jid = Jid::new(item.text().trim())
                    .map_err(|_| StanzaError::jid_malformed())?
                    .to_bare()
                    .to_string();
                if !jids.contains(&jid) {
                    jids.push(jid);
                }
            }
        }
        Ok(jids)
    };
    Ok(ArchivePrefs {
        default,
        always: list("always")?,
        never: list("never")?,
    })
}

pub fn to_element(prefs: &ArchivePrefs) -> Element {
    let mut el = Element::bare("prefs", ns::MAM);
    stanza::set_attr(&mut el, "default", prefs.default.as_str());
    for (name, jids) in [("always", &prefs.always), ("never", &prefs.never)] {
        let mut list = Element::bare(name, ns::MAM);
        for jid in jids {
            list.append_child(
                Element::builder("jid", ns::MAM)
                    .append(jid.as_str())
                    .build(),
            );
        }
        el.append_child(list);
    }
    el
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_beats_always_beats_default() {
        let prefs = ArchivePrefs {
            default: ArchiveDefault::Roster,
            always: vec!["a@x".into(), "b@x".into()],
            never: vec!["b@x".into()],
        };
        assert_eq!(decide(&prefs, "a@x"), Decision::Archive);
        assert_eq!(decide(&prefs, "b@x"), Decision::Skip);
        assert_eq!(decide(&prefs, "c@x"), Decision::IfInRoster);
    }

    #[test]
    fn parse_and_serialize_roundtrip() {
        let el: Element = "<prefs xmlns='urn:xmpp:mam:2' default='never'>\
            <always><jid>Romeo@Montague.lit/phone</jid></always><never/></prefs>"
            .parse()
            .unwrap();
        let prefs = parse(&el).unwrap();
        assert_eq!(prefs.default, ArchiveDefault::Never);
        assert_eq!(prefs.always, vec!["romeo@montague.lit".to_string()]);
        assert!(prefs.never.is_empty());
        assert_eq!(parse(&to_element(&prefs)).unwrap(), prefs);
        let bad: Element = "<prefs xmlns='urn:xmpp:mam:2'/>".parse().unwrap();
        assert!(parse(&bad).is_err());
    }
}
