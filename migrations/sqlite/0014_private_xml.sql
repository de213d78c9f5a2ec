-- XEP-0049 Private XML Storage: one XML fragment per account and namespace; and explicit
-- XEP-0060 subscriptions to PEP nodes.

CREATE TABLE private_xml (
    username  TEXT NOT NULL REFERENCES accounts (username) ON DELETE CASCADE,
    -- The namespace of the stored element (e.g. 'storage:rosternotes').
    namespace TEXT NOT NULL,
    -- The element, serialized.
    xml       TEXT NOT NULL,
    PRIMARY KEY (username, namespace)
);

-- Explicit subscriptions (XEP-0060 §6.1) to a PEP node, beside the implicit presence-based ones;
-- `subscriber` is the JID the subscriber gave (bare or full). They go with the node.
CREATE TABLE pep_subscriptions (
    owner      TEXT NOT NULL,
    node       TEXT NOT NULL,
    subscriber TEXT NOT NULL,
    PRIMARY KEY (owner, node, subscriber),
    FOREIGN KEY (owner, node) REFERENCES pep_nodes (owner, node) ON DELETE CASCADE
);
