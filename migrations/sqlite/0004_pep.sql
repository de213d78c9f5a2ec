-- Personal eventing (XEP-0163): each account's pubsub nodes and their items.

CREATE TABLE pep_nodes (
    owner          TEXT    NOT NULL REFERENCES accounts (username) ON DELETE CASCADE,
    node           TEXT    NOT NULL,
    access_model   TEXT    NOT NULL CHECK (access_model IN ('open', 'presence', 'whitelist')),
    max_items      INTEGER NOT NULL CHECK (max_items >= 1),
    persist_items  INTEGER NOT NULL CHECK (persist_items IN (0, 1)),
    send_last_item TEXT    NOT NULL CHECK (send_last_item IN ('never', 'on_sub', 'on_sub_and_presence')),
    PRIMARY KEY (owner, node)
);

CREATE TABLE pep_items (
    owner   TEXT    NOT NULL,
    node    TEXT    NOT NULL,
    item_id TEXT    NOT NULL,
    -- Time-sortable id given at publication: the order of the items, newest highest.
    seq     INTEGER NOT NULL,
    -- The payload element as XML.
    payload TEXT    NOT NULL,
    PRIMARY KEY (owner, node, item_id),
    FOREIGN KEY (owner, node) REFERENCES pep_nodes (owner, node) ON DELETE CASCADE
);

CREATE INDEX pep_items_by_seq ON pep_items (owner, node, seq);
