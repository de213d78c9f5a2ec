//! XEP-0386 Bind 2: the resource bound inside the SASL2 `<authenticate/>`, with the session
//! features the client wants switched on from its first stanza (carbons, stream management).

use jid::FullJid;
use minidom::Element;
use sha2::{Digest, Sha256};

use super::sm::SmGrant;
use crate::router::Router;
use crate::xml::ns;

/// Longest tag kept in a resource: the tag names the client software, a few words at most.
const MAX_TAG_CHARS: usize = 32;

/// What the client asked for beyond authentication, carried from the negotiation into the
/// start of the bound session.
#[derive(Debug, Default)]
pub struct InlineRequests {
    /// Requests for features modules switch on (`Router::enable_inline`), such as
    /// `<enable xmlns='urn:xmpp:carbons:2'/>`.
    pub features: Vec<Element>,
    /// Stream management enabled inside Bind2; its `<enabled/>` went out in `<bound/>`.
    pub sm: Option<SmGrant>,
}

/// A parsed `<bind xmlns='urn:xmpp:bind:0'/>`.
#[derive(Debug, Default)]
pub struct BindRequest {
    pub tag: Option<String>,
    /// Every other child: requests for features modules may have registered.
    pub features: Vec<Element>,
    pub sm_enable: Option<Element>,
}

impl BindRequest {
    /// Unknown children are ignored: Bind2 is extensible, and an inline feature we do not
    /// advertise is one the client should not have asked for.
    pub fn parse(bind: &Element) -> BindRequest {
        let tag = bind
            .get_child("tag", ns::BIND2)
            .map(|t| sanitize_tag(&t.text()))
            .filter(|t| !t.is_empty());
        BindRequest {
            tag,
            features: bind
                .children()
                .filter(|child| !child.has_ns(ns::BIND2) && !child.has_ns(ns::SM))
                .cloned()
                .collect(),
            sm_enable: bind.get_child("enable", ns::SM).cloned(),
        }
    }
}

/// The tag as a resource prefix: printable, no spaces or slashes, short.
fn sanitize_tag(tag: &str) -> String {
    tag.trim()
        .chars()
        .filter(|c| !c.is_control() && !c.is_whitespace() && *c != '/' && *c != '@')
        .take(MAX_TAG_CHARS)
        .collect()
}

/// Binds `username`'s resource as XEP-0386 §3 suggests: the client's tag, then a suffix that
/// is stable per client (a hash of its SASL2 user-agent id, so a reconnecting client gets its
/// resource back and replaces its own stale session) or random when the client gave no id.
pub fn bind(
    username: &str,
    domain: &str,
    request: &BindRequest,
    client_id: Option<&str>,
    random: impl Fn() -> String,
) -> Option<FullJid> {
    let suffix = match client_id {
        Some(id) => stable_suffix(username, id),
        None => random(),
    };
    let with_tag = request
        .tag
        .as_deref()
        .and_then(|tag| FullJid::new(&format!("{username}@{domain}/{tag}.{suffix}")).ok());
    // A tag that resourceprep refuses is dropped rather than failing the login.
    with_tag.or_else(|| FullJid::new(&format!("{username}@{domain}/{suffix}")).ok())
}

/// 32 bits of SHA-256 over account and client: enough to keep one account's devices apart,
/// and the user-agent id itself (which FAST tokens are bound to) is not revealed.
fn stable_suffix(username: &str, client_id: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(b"corvid bind2 resource\0");
    hash.update(username.as_bytes());
    hash.update(b"\0");
    hash.update(client_id.as_bytes());
    hash.finalize()[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The `<bound/>` for `<success/>`, with the answers to inline requests that have one (stream
/// management's `<enabled/>`).
pub fn bound_element(answers: impl IntoIterator<Item = Element>) -> Element {
    let mut bound = Element::bare("bound", ns::BIND2);
    for answer in answers {
        bound.append_child(answer);
    }
    bound
}

/// Switches on what the client asked for inline, once the session is registered with the
/// router: the modules that registered those features keep their own per-session state.
pub fn apply_after_bind(router: &Router, jid: &FullJid, inline: &InlineRequests) {
    router.enable_inline(jid, &inline.features);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(xml: &str) -> BindRequest {
        BindRequest::parse(&xml.parse::<Element>().unwrap())
    }

    #[test]
    fn parses_tag_and_inline_enables() {
        let r = parse(
            "<bind xmlns='urn:xmpp:bind:0'><tag> Conv ersations/x </tag>\
             <enable xmlns='urn:xmpp:carbons:2'/><enable xmlns='urn:xmpp:sm:3' resume='true'/>\
             </bind>",
        );
        assert_eq!(r.tag.as_deref(), Some("Conversationsx"));
        assert_eq!(r.features.len(), 1);
        assert!(r.features[0].is("enable", ns::CARBONS));
        assert_eq!(r.sm_enable.unwrap().attr("resume"), Some("true"));
        let r = parse("<bind xmlns='urn:xmpp:bind:0'><tag/></bind>");
        assert_eq!(r.tag, None);
        assert!(r.features.is_empty());
    }

    #[test]
    fn resource_is_stable_per_client_and_user() {
        let req = parse("<bind xmlns='urn:xmpp:bind:0'><tag>App</tag></bind>");
        let rnd = || "rnd".to_string();
        let a = bind("u", "d", &req, Some("id-1"), rnd).unwrap();
        assert_eq!(a, bind("u", "d", &req, Some("id-1"), rnd).unwrap());
        assert!(a.resource().as_str().starts_with("App."));
        assert_ne!(a, bind("u", "d", &req, Some("id-2"), rnd).unwrap());
        assert_ne!(
            a.resource(),
            bind("v", "d", &req, Some("id-1"), rnd).unwrap().resource()
        );
        assert_eq!(
            bind("u", "d", &req, None, rnd).unwrap().to_string(),
            "u@d/App.rnd"
        );
        let untagged = bind("u", "d", &BindRequest::default(), None, rnd).unwrap();
        assert_eq!(untagged.to_string(), "u@d/rnd");
    }
}
