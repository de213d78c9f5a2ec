//! Where each hook runs among the hooks of its kind. The whole server's order is written here,
//! in one place, so that the order modules happen to register in changes nothing.

use std::sync::Arc;

/// A hook's place: earlier variants run first. Hooks of one kind with the same priority run in
/// the order of their modules' names (and, within a module, of registration), so two hooks may
/// share a priority only when neither depends on the other.
///
/// Where today's hooks sit:
///
/// | priority   | session hooks | stanza filters | message hooks | presence observers | remote-domain hooks |
/// |------------|---------------|----------------|---------------|--------------------|---------------------|
/// | `Prelude`  | muc           |                |               |                    |                     |
/// | `Presence` | presence      |                |               |                    | muc, presence       |
/// | `Policy`   | blocking      | blocking       |               |                    |                     |
/// | `Offline`  | offline       |                |               |                    |                     |
/// | `Archive`  | mam           |                | mam           |                    |                     |
/// | `Profile`  | pep, vcard    |                |               | pep, vcard         | pep                 |
/// | `Copies`   |               |                | carbons       |                    |                     |
/// | `Notify`   | muc           |                | push          |                    |                     |
///
/// Shutdown hooks (only mam's) take `Archive`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    /// Notes what later hooks of the same moment need and cannot be told (MUC noting why a
    /// session ends, for the rooms its unavailable presence then reaches). Changes nothing.
    Prelude,
    /// The session's own presence (RFC 6121 §4): a session that ends goes unavailable to its
    /// contacts before anything else about it is torn down.
    Presence,
    /// Policy that may refuse or drop a stanza (XEP-0191 blocking): decided before anything
    /// records, copies or stores what it would refuse.
    Policy,
    /// Offline storage (XEP-0160): stored messages reach a session as soon as it is available.
    Offline,
    /// The archive (XEP-0313). It amends messages (the XEP-0359 stanza-id), so it runs before
    /// anything that copies them.
    Archive,
    /// Per-account data that travels with presence (the vCard photo hash, PEP items).
    Profile,
    /// Copies to the account's other resources (XEP-0280): after every hook that amends a
    /// message, so copies carry the amended message.
    Copies,
    /// Notifications to outside services (XEP-0357 push): last, about the message as it was
    /// finally routed.
    Notify,
}

/// One kind of hook, kept sorted by (priority, module name) as hooks are added.
pub struct Ordered<T: ?Sized> {
    entries: Vec<Entry<T>>,
}

struct Entry<T: ?Sized> {
    priority: Priority,
    module: &'static str,
    hook: Arc<T>,
}

impl<T: ?Sized> Default for Ordered<T> {
    fn default() -> Self {
        Ordered {
            entries: Vec::new(),
        }
    }
}

impl<T: ?Sized> Ordered<T> {
    /// Adds `hook` after every hook that sorts before it or equal to it, so a module's own
    /// hooks of one priority keep the order it registered them in.
    pub fn insert(&mut self, priority: Priority, module: &'static str, hook: Arc<T>) {
        let at = self
            .entries
            .partition_point(|e| (e.priority, e.module) <= (priority, module));
        self.entries.insert(
            at,
            Entry {
                priority,
                module,
                hook,
            },
        );
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<T>> {
        self.entries.iter().map(|e| &e.hook)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_comes_from_priority_then_module_name_not_insertion() {
        let mut hooks: Ordered<str> = Ordered::default();
        hooks.insert(Priority::Notify, "push", Arc::from("push"));
        hooks.insert(Priority::Copies, "carbons", Arc::from("carbons"));
        hooks.insert(Priority::Profile, "vcard", Arc::from("vcard"));
        hooks.insert(Priority::Profile, "pep", Arc::from("pep"));
        hooks.insert(Priority::Archive, "mam", Arc::from("mam"));
        hooks.insert(Priority::Archive, "mam", Arc::from("mam-second"));
        let order: Vec<&str> = hooks.iter().map(|h| &**h).collect();
        assert_eq!(
            order,
            ["mam", "mam-second", "pep", "vcard", "carbons", "push"]
        );
    }
}
