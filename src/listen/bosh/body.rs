//! The `<body/>` wrapper of XEP-0124: what a request carries, read through the same limits as
//! any stanza, and the wrappers of our answers.

use minidom::{Element, Node};

use crate::xml::{self, ns, FramingError, XmlLimits};

pub const NS_HTTPBIND: &str = "http://jabber.org/protocol/httpbind";
/// XEP-0206's attributes on the wrapper (`xmpp:version`, `xmpp:restart`).
pub const NS_XBOSH: &str = "urn:xmpp:xbosh";

/// A request's `<body/>`, its attributes read, its payloads in `jabber:client` and the other
/// namespaces they declare.
#[derive(Debug)]
pub struct Body {
    pub rid: u64,
    pub sid: Option<String>,
    pub to: Option<String>,
    pub lang: Option<String>,
    pub wait: Option<u64>,
    pub hold: Option<u64>,
    pub ver: Option<String>,
    /// `xmpp:version`: "1.0" for an XMPP 1.0 stream (XEP-0206 §6).
    pub xmpp_version: Option<String>,
    /// `xmpp:restart='true'`: a new stream starts, after SASL success (XEP-0206 §9).
    pub restart: bool,
    /// `type='terminate'`: the client ends the session.
    pub terminate: bool,
    /// `pause`: the client will not send for this many seconds (XEP-0124 §10).
    pub pause: Option<u64>,
    pub payloads: Vec<Element>,
}

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error(transparent)]
    Xml(#[from] FramingError),
    #[error("the request is not a <body/> in {NS_HTTPBIND}")]
    NotBody,
    #[error("the body has no valid 'rid'")]
    MissingRid,
    #[error("attribute '{0}' is not a number")]
    NotANumber(&'static str),
}

/// Reads one request body, limited like a stanza: the wrapper counts against the size and the
/// depth its payloads may have.
pub fn parse(data: &[u8], limits: XmlLimits) -> Result<Body, BodyError> {
    let mut el = xml::parse_standalone(data, limits)?;
    if !el.is("body", NS_HTTPBIND) {
        return Err(BodyError::NotBody);
    }
    let rid = number(&el, "rid")?.ok_or(BodyError::MissingRid)?;
    let text = |name: &str| el.attr(name).map(str::to_owned);
    let body = Body {
        rid,
        sid: text("sid"),
        to: text("to"),
        lang: el.attr_ns(ns::XML, "lang").map(str::to_owned),
        wait: number(&el, "wait")?,
        hold: number(&el, "hold")?,
        ver: text("ver"),
        xmpp_version: el.attr_ns(NS_XBOSH, "version").map(str::to_owned),
        restart: matches!(el.attr_ns(NS_XBOSH, "restart"), Some("true" | "1")),
        terminate: el.attr("type") == Some("terminate"),
        pause: number(&el, "pause")?,
        payloads: Vec::new(),
    };
    let payloads = el
        .take_nodes()
        .into_iter()
        .filter_map(|node| match node {
            Node::Element(child) => Some(into_client_namespace(child)),
            Node::Text(_) => None,
        })
        .collect();
    Ok(Body { payloads, ..body })
}

fn number(el: &Element, name: &'static str) -> Result<Option<u64>, BodyError> {
    el.attr(name)
        .map(|v| v.trim().parse().map_err(|_| BodyError::NotANumber(name)))
        .transpose()
}

/// A payload written without its own `xmlns` is in the wrapper's namespace as parsed; it is
/// meant as a `jabber:client` stanza (XEP-0206 §8 wraps stanzas of the client stream), so its
/// elements in the wrapper's namespace move there. Recursion is bounded by the depth limit.
fn into_client_namespace(mut el: Element) -> Element {
    if el.ns() != NS_HTTPBIND {
        return el;
    }
    let mut moved = Element::bare(el.name(), ns::CLIENT);
    *moved.attrs_mut() = el.attrs().clone();
    for node in el.take_nodes() {
        match node {
            Node::Element(child) => {
                moved.append_child(into_client_namespace(child));
            }
            Node::Text(text) => moved.append_text(text),
        }
    }
    moved
}

/// The opening tag of every answer: payloads written after it declare their own namespaces,
/// the `stream:` prefix is bound for features and errors (XEP-0206 §7).
pub fn open_tag(attrs: &[(&str, &str)], terminate: Option<Option<&str>>) -> String {
    let mut out = format!(
        "<body xmlns='{NS_HTTPBIND}' xmlns:stream='{}' xmlns:xmpp='{NS_XBOSH}'",
        ns::STREAM
    );
    if let Some(condition) = terminate {
        out.push_str(" type='terminate'");
        if let Some(condition) = condition {
            out.push_str(&format!(" condition='{}'", xml::escape_attr(condition)));
        }
    }
    for (name, value) in attrs {
        out.push_str(&format!(" {name}='{}'", xml::escape_attr(value)));
    }
    out.push('>');
    out
}

/// A body that ends the session with a XEP-0124 §17 condition and carries nothing.
pub fn terminate(condition: &str) -> String {
    format!("{}</body>", open_tag(&[], Some(Some(condition))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> XmlLimits {
        XmlLimits::with_max_size(4096)
    }

    #[test]
    fn reads_attributes_and_payloads() {
        let body = parse(
            b"<body xmlns='http://jabber.org/protocol/httpbind' rid='42' sid='s1' \
              xmlns:xmpp='urn:xmpp:xbosh' xmpp:restart='true' wait='30'>\
              <message xmlns='jabber:client' to='a@localhost'><body>hi</body></message>\
              <presence/></body>",
            limits(),
        )
        .unwrap();
        assert_eq!(body.rid, 42);
        assert_eq!(body.sid.as_deref(), Some("s1"));
        assert_eq!(body.wait, Some(30));
        assert!(body.restart);
        assert!(!body.terminate);
        assert_eq!(body.payloads.len(), 2);
        assert!(body.payloads[0].is("message", ns::CLIENT));
        assert!(body.payloads[1].is("presence", ns::CLIENT));
    }

    #[test]
    fn refuses_what_is_not_a_body() {
        assert!(matches!(
            parse(b"<body rid='1'/>", limits()),
            Err(BodyError::NotBody)
        ));
        assert!(matches!(
            parse(
                b"<body xmlns='http://jabber.org/protocol/httpbind'/>",
                limits()
            ),
            Err(BodyError::MissingRid)
        ));
        assert!(matches!(
            parse(
                b"<body xmlns='http://jabber.org/protocol/httpbind' rid='x'/>",
                limits()
            ),
            Err(BodyError::NotANumber("rid"))
        ));
        assert!(matches!(
            parse(
                b"<body xmlns='http://jabber.org/protocol/httpbind' rid='1'>",
                limits()
            ),
            Err(BodyError::Xml(_))
        ));
        let big = format!(
            "<body xmlns='http://jabber.org/protocol/httpbind' rid='1'>{}</body>",
            "<presence/>".repeat(1000)
        );
        assert!(matches!(
            parse(big.as_bytes(), limits()),
            Err(BodyError::Xml(_))
        ));
    }
}
