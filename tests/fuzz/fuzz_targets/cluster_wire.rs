//! What nodes of a cluster read from Redis (`corvid::cluster::wire`): directory entries and
//! events, and the envelopes on node channels, against arbitrary bytes. Nothing may panic, and
//! whatever is accepted reads back the same after being written again.
#![no_main]

use corvid::cluster::wire::{Entry, Envelope, Event};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(envelope) = Envelope::decode(data) {
        assert_eq!(Envelope::decode(&envelope.encode()).as_ref(), Ok(&envelope));
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(event) = Event::decode(text) {
        assert_eq!(Event::decode(&event.encode()).as_ref(), Ok(&event));
    }
    if let Ok(entry) = Entry::decode(text) {
        assert_eq!(Entry::decode(&entry.encode()), Ok(entry));
    }
});
