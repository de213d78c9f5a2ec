//! Why a stream ends, as every part of a stream (negotiation, SASL, the bound session) reports
//! it: the goodbye is chosen from it once, at the end.

use minidom::Element;

use super::resumption::Takeover;
use super::transport::TransportError;
use crate::xml::StreamCondition;

#[derive(Debug)]
pub enum End {
    /// We close with this RFC 6120 §4.9.3 condition.
    Error(StreamCondition, Option<String>),
    /// We close with this condition and an application-specific condition element.
    ErrorWith(StreamCondition, Box<Element>),
    /// The peer sent `</stream:stream>`: answer in kind.
    PeerClosed,
    /// The connection broke: nothing more can be sent.
    Disconnected,
    /// The client stopped reading: its queue filled while a write to it was blocked. A stream
    /// error could only sit behind the blocked bytes (perhaps after half a stanza), so the
    /// connection is just closed.
    Stalled,
    /// A resuming connection asked for this session's state (XEP-0198 §5): hand it over and
    /// close the connection without another byte, since the client has moved on.
    TakenOver(Takeover),
}

impl From<TransportError> for End {
    fn from(e: TransportError) -> Self {
        match e {
            TransportError::Framing(f) => End::Error(f.condition(), Some(f.to_string())),
            TransportError::Io(_) | TransportError::Disconnected => End::Disconnected,
        }
    }
}

impl From<std::io::Error> for End {
    fn from(_: std::io::Error) -> Self {
        End::Disconnected
    }
}
