//! XML on the wire: stream framing with XMPP's restrictions and limits, namespaces, and one
//! serializer for everything corvid sends.

pub mod attrs;
pub mod forms;
pub mod framing;
#[cfg(test)]
mod framing_properties;
pub mod ns;
pub mod stream_error;
pub mod writer;

pub use framing::{parse_standalone, Frame, FramingError, StreamHeader, StreamParser, XmlLimits};
pub use stream_error::StreamCondition;
pub use writer::{escape_attr, escape_text, stream_element_to_bytes, to_bytes, to_string};
