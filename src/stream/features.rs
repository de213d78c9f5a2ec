//! The children of the `<stream:features/>` a client sees at each step (RFC 6120 §4.3.2).

use minidom::Element;

use crate::sasl::{ChannelBindings, HtMechanism, Mechanism};
use crate::stanza::set_attr;
use crate::xml::ns;

/// Before authentication: STARTTLS while the stream is plain, SASL mechanisms where allowed,
/// and the channel-binding types we can verify (XEP-0440).
pub fn before_auth(
    can_starttls: bool,
    tls_required: bool,
    mechanisms: Vec<Mechanism>,
    bindings: ChannelBindings,
) -> Vec<Element> {
    let mut features = Vec::new();
    if can_starttls {
        let mut starttls = Element::bare("starttls", ns::TLS);
        if tls_required {
            starttls.append_child(Element::bare("required", ns::TLS));
        }
        features.push(starttls);
    }
    if !mechanisms.is_empty() {
        let names = mechanisms.iter().map(|m| m.name());
        features.push(mechanism_list("mechanisms", ns::SASL, names));
    }
    // Only worth saying where a -PLUS mechanism can use it.
    let types = bindings.names();
    if mechanisms.iter().any(|m| m.is_plus()) && !types.is_empty() {
        let mut list = Element::bare("sasl-channel-binding", ns::SASL_CB);
        for t in types {
            let mut binding = Element::bare("channel-binding", ns::SASL_CB);
            set_attr(&mut binding, "type", t);
            list.append_child(binding);
        }
        features.push(list);
    }
    features
}

/// XEP-0388 SASL2 next to `<mechanisms/>`: the same password mechanisms, and what may be
/// requested inline. Bind2 can enable the features modules registered (carbons) and stream
/// management; FAST lists its token mechanisms.
pub fn sasl2<'a>(
    mechanisms: &[Mechanism],
    token_mechanisms: &[HtMechanism],
    inline_features: impl IntoIterator<Item = &'a str>,
) -> Option<Element> {
    if mechanisms.is_empty() {
        return None;
    }
    let names = mechanisms.iter().map(|m| m.name());
    let mut authentication = mechanism_list("authentication", ns::SASL2, names);
    let mut bind_inline = Element::bare("inline", ns::BIND2);
    // What modules registered (carbons, say), then stream management, which the stream runs.
    for var in inline_features.into_iter().chain([ns::SM]) {
        let mut feature = Element::bare("feature", ns::BIND2);
        set_attr(&mut feature, "var", var);
        bind_inline.append_child(feature);
    }
    let mut bind = Element::bare("bind", ns::BIND2);
    bind.append_child(bind_inline);
    let mut inline = Element::bare("inline", ns::SASL2);
    inline.append_child(bind);
    // Stream management both ways: enabled with the binding, or resumed instead of one.
    inline.append_child(Element::bare("sm", ns::SM));
    if !token_mechanisms.is_empty() {
        let names = token_mechanisms.iter().map(|m| m.name());
        inline.append_child(mechanism_list("fast", ns::FAST, names));
    }
    authentication.append_child(inline);
    Some(authentication)
}

/// After a SASL2 success that bound a resource inline (XEP-0388 §2.6 sends features after
/// every success): what is left to use on the bound stream, so no `<bind/>` or `<session/>`.
pub fn after_inline_bind() -> Vec<Element> {
    vec![
        Element::bare("ver", ns::ROSTER_VER_FEATURE),
        Element::bare("sub", ns::PRE_APPROVAL_FEATURE),
        Element::bare("sm", ns::SM),
        Element::bare("csi", ns::CSI),
    ]
}

/// After authentication: resource binding, RFC 3921 sessions marked optional for the clients
/// that still look for them, and the roster features of RFC 6121 (versioning §2.6,
/// subscription pre-approval §3.4), Stream Management (XEP-0198) and Client State Indication
/// (XEP-0352).
pub fn after_auth(max_stanza_size: usize) -> Vec<Element> {
    let mut session = Element::bare("session", ns::SESSION);
    session.append_child(Element::bare("optional", ns::SESSION));
    let mut features = vec![Element::bare("bind", ns::BIND), session];
    features.extend(after_inline_bind());
    features.push(stream_limits(max_stanza_size, None));
    features
}

/// XEP-0478: the largest stanza the stream accepts (larger ones end it with
/// `<policy-violation/>`), and how long it may stay silent before it is closed, if it may not
/// forever. Client and server streams advertise it alike.
pub fn stream_limits(max_bytes: usize, idle_seconds: Option<u64>) -> Element {
    let mut limits = Element::bare("limits", ns::STREAM_LIMITS);
    limits.append_child(
        Element::builder("max-bytes", ns::STREAM_LIMITS)
            .append(max_bytes.to_string())
            .build(),
    );
    if let Some(idle) = idle_seconds {
        limits.append_child(
            Element::builder("idle-seconds", ns::STREAM_LIMITS)
                .append(idle.to_string())
                .build(),
        );
    }
    limits
}

/// `<name xmlns='namespace'><mechanism>…</mechanism>…</name>`, the shape SASL, SASL2 and FAST
/// list their mechanisms in.
fn mechanism_list<'a>(
    name: &str,
    namespace: &str,
    mechanisms: impl IntoIterator<Item = &'a str>,
) -> Element {
    let mut list = Element::bare(name, namespace);
    for mechanism in mechanisms {
        let mut el = Element::bare("mechanism", namespace);
        el.append_text(mechanism);
        list.append_child(el);
    }
    list
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::{stream_element_to_bytes, to_string};

    fn features(children: Vec<Element>) -> String {
        let el = Element::builder("features", ns::STREAM)
            .append_all(children)
            .build();
        String::from_utf8(stream_element_to_bytes(&el, false)).unwrap()
    }

    #[test]
    fn after_auth_is_what_it_always_was() {
        assert_eq!(
            features(after_auth(262_144)),
            "<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>\
             <session xmlns='urn:ietf:params:xml:ns:xmpp-session'><optional/></session>\
             <ver xmlns='urn:xmpp:features:rosterver'/><sub xmlns='urn:xmpp:features:pre-approval'/>\
             <sm xmlns='urn:xmpp:sm:3'/><csi xmlns='urn:xmpp:csi:0'/>\
             <limits xmlns='urn:xmpp:stream-limits:0'><max-bytes>262144</max-bytes></limits>\
             </stream:features>"
        );
    }

    #[test]
    fn sasl2_lists_mechanisms_and_inline_features() {
        assert_eq!(sasl2(&[], &[HtMechanism::Sha256None], [ns::CARBONS]), None);
        let el = sasl2(
            &[Mechanism::Plain],
            &[HtMechanism::Sha256None],
            [ns::CARBONS],
        )
        .unwrap();
        assert_eq!(
            to_string(&el),
            "<authentication xmlns='urn:xmpp:sasl:2'><mechanism>PLAIN</mechanism><inline>\
             <bind xmlns='urn:xmpp:bind:0'><inline><feature var='urn:xmpp:carbons:2'/>\
             <feature var='urn:xmpp:sm:3'/></inline></bind><sm xmlns='urn:xmpp:sm:3'/>\
             <fast xmlns='urn:xmpp:fast:0'><mechanism>HT-SHA-256-NONE</mechanism></fast>\
             </inline></authentication>"
        );
    }
}
