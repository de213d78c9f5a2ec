-- XEP-0049 Private XML Storage: one XML fragment per account and namespace.

CREATE TABLE private_xml (
    username  TEXT NOT NULL REFERENCES accounts (username) ON DELETE CASCADE,
    -- The namespace of the stored element (e.g. 'storage:rosternotes').
    namespace TEXT NOT NULL,
    -- The element, serialized.
    xml       TEXT NOT NULL,
    PRIMARY KEY (username, namespace)
);
