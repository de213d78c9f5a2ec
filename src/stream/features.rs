//! The `<stream:features/>` bodies a client sees at each step (RFC 6120 §4.3.2).

use crate::sasl::{ChannelBindings, HtMechanism, Mechanism};
use crate::xml::ns;

/// Before authentication: STARTTLS while the stream is plain, SASL mechanisms where allowed,
/// and the channel-binding types we can verify (XEP-0440).
pub fn before_auth(
    can_starttls: bool,
    tls_required: bool,
    mechanisms: Vec<Mechanism>,
    bindings: ChannelBindings,
) -> String {
    let mut out = String::new();
    if can_starttls {
        out.push_str(&format!("<starttls xmlns='{}'>", ns::TLS));
        if tls_required {
            out.push_str("<required/>");
        }
        out.push_str("</starttls>");
    }
    if !mechanisms.is_empty() {
        out.push_str(&format!("<mechanisms xmlns='{}'>", ns::SASL));
        for mechanism in &mechanisms {
            out.push_str(&format!("<mechanism>{}</mechanism>", mechanism.name()));
        }
        out.push_str("</mechanisms>");
    }
    // Only worth saying where a -PLUS mechanism can use it.
    let types = bindings.names();
    if mechanisms.iter().any(|m| m.is_plus()) && !types.is_empty() {
        out.push_str(&format!("<sasl-channel-binding xmlns='{}'>", ns::SASL_CB));
        for t in types {
            out.push_str(&format!("<channel-binding type='{t}'/>"));
        }
        out.push_str("</sasl-channel-binding>");
    }
    out
}

/// XEP-0388 SASL2 next to `<mechanisms/>`: the same password mechanisms, and what may be
/// requested inline. Bind2 can enable carbons; FAST lists its token mechanisms. Stream
/// management is not listed until inline enable/resume are wired (see `stream::bind2`).
pub fn sasl2(mechanisms: &[Mechanism], token_mechanisms: &[HtMechanism]) -> String {
    if mechanisms.is_empty() {
        return String::new();
    }
    let mut out = format!("<authentication xmlns='{}'>", ns::SASL2);
    for mechanism in mechanisms {
        out.push_str(&format!("<mechanism>{}</mechanism>", mechanism.name()));
    }
    // Stream management both ways: enabled with the binding, or resumed instead of one.
    out.push_str(&format!(
        "<inline><bind xmlns='{}'><inline><feature var='{}'/><feature var='{}'/></inline></bind>\
         <sm xmlns='{}'/>",
        ns::BIND2,
        ns::CARBONS,
        ns::SM,
        ns::SM
    ));
    if !token_mechanisms.is_empty() {
        out.push_str(&format!("<fast xmlns='{}'>", ns::FAST));
        for mechanism in token_mechanisms {
            out.push_str(&format!("<mechanism>{}</mechanism>", mechanism.name()));
        }
        out.push_str("</fast>");
    }
    out.push_str("</inline></authentication>");
    out
}

/// After a SASL2 success that bound a resource inline (XEP-0388 §2.6 sends features after
/// every success): what is left to use on the bound stream, so no `<bind/>` or `<session/>`.
pub fn after_inline_bind() -> String {
    format!(
        "<ver xmlns='{}'/><sub xmlns='{}'/><sm xmlns='{}'/><csi xmlns='{}'/>",
        ns::ROSTER_VER_FEATURE,
        ns::PRE_APPROVAL_FEATURE,
        ns::SM,
        ns::CSI
    )
}

/// After authentication: resource binding, RFC 3921 sessions marked optional for the clients
/// that still look for them, and the roster features of RFC 6121 (versioning §2.6,
/// subscription pre-approval §3.4), Stream Management (XEP-0198) and Client State Indication
/// (XEP-0352).
pub fn after_auth() -> String {
    format!(
        "<bind xmlns='{}'/><session xmlns='{}'><optional/></session>\
         <ver xmlns='{}'/><sub xmlns='{}'/><sm xmlns='{}'/><csi xmlns='{}'/>",
        ns::BIND,
        ns::SESSION,
        ns::ROSTER_VER_FEATURE,
        ns::PRE_APPROVAL_FEATURE,
        ns::SM,
        ns::CSI
    )
}
