//! Per-session flags that modules own: a module declares one at registration (carbons
//! enabled, roster fetched) and sets it on its sessions; the router stores the bits and never
//! interprets them. Bits, not a map per session: they cost nothing per idle session.

use tracing::error;

/// One flag: a single bit of `SessionFlags`. A flag whose registration failed (too many
/// declared) is the empty mask: setting it does nothing and no session ever has it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SessionFlag(u32);

impl SessionFlag {
    /// The session's client is not connected right now: its connection broke and the session
    /// waits to be resumed (XEP-0198), so stanzas queue up unread. The only flag the router
    /// itself declares: who delivers a message (push notifications, a cluster node) needs to
    /// know whether anyone will read it soon, whatever kept the session alive.
    pub const DISCONNECTED: SessionFlag = SessionFlag(1);
}

/// The set of flags a session has.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionFlags(u32);

impl SessionFlags {
    /// The bits, for sharing a session's flags with other nodes of a cluster (whose modules
    /// declare the same flags in the same order).
    pub fn bits(self) -> u32 {
        self.0
    }

    pub fn from_bits(bits: u32) -> SessionFlags {
        SessionFlags(bits)
    }

    pub fn contains(self, flag: SessionFlag) -> bool {
        flag.0 != 0 && self.0 & flag.0 == flag.0
    }

    pub fn with(self, flag: SessionFlag, on: bool) -> SessionFlags {
        if on {
            SessionFlags(self.0 | flag.0)
        } else {
            SessionFlags(self.0 & !flag.0)
        }
    }
}

/// The flags declared so far, by name: a name declared twice is one flag, so code that has
/// no module instance at hand (a free function, the stream) finds it again by name.
#[derive(Default)]
pub(super) struct FlagNames {
    names: Vec<&'static str>,
}

impl FlagNames {
    /// Bit 0 is `DISCONNECTED`.
    const FIRST_FREE: usize = 1;

    pub(super) fn declare(&mut self, name: &'static str) -> SessionFlag {
        if let Some(flag) = self.find(name) {
            return flag;
        }
        let bit = Self::FIRST_FREE + self.names.len();
        if bit >= u32::BITS as usize {
            error!(
                flag = name,
                "too many session flags declared; this one stays unset"
            );
            return SessionFlag(0);
        }
        self.names.push(name);
        SessionFlag(1 << bit)
    }

    pub(super) fn find(&self, name: &str) -> Option<SessionFlag> {
        self.names
            .iter()
            .position(|declared| *declared == name)
            .map(|i| SessionFlag(1 << (Self::FIRST_FREE + i)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_share_a_flag_and_distinct_names_get_distinct_bits() {
        let mut names = FlagNames::default();
        let carbons = names.declare("carbons");
        let roster = names.declare("roster");
        assert_ne!(carbons, roster);
        assert_ne!(carbons, SessionFlag::DISCONNECTED);
        assert_eq!(names.declare("carbons"), carbons);
        assert_eq!(names.find("roster"), Some(roster));
        let flags = SessionFlags::default().with(carbons, true);
        assert!(flags.contains(carbons));
        assert!(!flags.contains(roster));
        assert!(!flags.with(carbons, false).contains(carbons));
    }

    #[test]
    fn a_flag_beyond_the_last_bit_is_never_set() {
        const NAMES: [&str; 32] = [
            "f0", "f1", "f2", "f3", "f4", "f5", "f6", "f7", "f8", "f9", "f10", "f11", "f12", "f13",
            "f14", "f15", "f16", "f17", "f18", "f19", "f20", "f21", "f22", "f23", "f24", "f25",
            "f26", "f27", "f28", "f29", "f30", "f31",
        ];
        let mut names = FlagNames::default();
        let flags: Vec<SessionFlag> = NAMES.iter().map(|n| names.declare(n)).collect();
        let overflow = flags[31];
        assert_eq!(overflow, SessionFlag(0));
        let all = flags
            .iter()
            .fold(SessionFlags::default(), |set, flag| set.with(*flag, true));
        assert!(!all.contains(overflow));
        assert!(all.contains(flags[30]));
    }
}
