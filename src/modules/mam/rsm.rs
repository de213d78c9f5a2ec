//! XEP-0059 Result Set Management, as XEP-0313 uses it.

use minidom::Element;

use crate::stanza::{self, StanzaError};
use crate::xml::ns;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RsmRequest {
    pub max: Option<u32>,
    pub after: Option<String>,
    /// `Some(None)`: an empty `<before/>`, i.e. the last page.
    pub before: Option<Option<String>>,
}

pub fn parse(query: &Element) -> Result<RsmRequest, StanzaError> {
    let Some(set) = query.get_child("set", ns::RSM) else {
        return Ok(RsmRequest::default());
    };
    let mut out = RsmRequest::default();
    if let Some(max) = set.get_child("max", ns::RSM) {
        out.max = Some(
            max.text()
                .trim()
                .parse()
                .map_err(|_| StanzaError::bad_request().with_text("<max/> is not a number"))?,
        );
    }
    if let Some(after) = set.get_child("after", ns::RSM) {
        let after = after.text().trim().to_string();
        if after.is_empty() {
            return Err(StanzaError::bad_request().with_text("<after/> needs an id"));
        }
        out.after = Some(after);
    }
    if let Some(before) = set.get_child("before", ns::RSM) {
        let before = before.text().trim().to_string();
        out.before = Some(Some(before).filter(|b| !b.is_empty()));
    }
    if set.has_child("index", ns::RSM) {
        // Paging by offset would need a count per page; ids are what MAM clients use.
        return Err(StanzaError::feature_not_implemented()
            .with_text("RSM <index/> is not supported, page with <after/> or <before/>"));
    }
    Ok(out)
}

/// The `<set/>` of a reply: `first`/`last` (with the first's index when known) for a non-empty
/// page, and `count` always.
pub fn reply(first: Option<(&str, Option<u64>)>, last: Option<&str>, count: u64) -> Element {
    let mut set = Element::bare("set", ns::RSM);
    if let Some((id, index)) = first {
        let mut el = Element::builder("first", ns::RSM).append(id).build();
        if let Some(index) = index {
            stanza::set_attr(&mut el, "index", index.to_string());
        }
        set.append_child(el);
    }
    if let Some(id) = last {
        set.append_child(Element::builder("last", ns::RSM).append(id).build());
    }
    set.append_child(
        Element::builder("count", ns::RSM)
            .append(count.to_string())
            .build(),
    );
    set
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_max_after_and_empty_before() {
        let q: Element =
            "<query xmlns='urn:xmpp:mam:2'><set xmlns='http://jabber.org/protocol/rsm'>\
            <max>10</max><before/></set></query>"
                .parse()
                .unwrap();
        let r = parse(&q).unwrap();
        assert_eq!(r.max, Some(10));
        assert_eq!(r.before, Some(None));
        assert_eq!(r.after, None);
        let q: Element =
            "<query xmlns='urn:xmpp:mam:2'><set xmlns='http://jabber.org/protocol/rsm'>\
            <max>ten</max></set></query>"
                .parse()
                .unwrap();
        assert!(parse(&q).is_err());
    }
}
