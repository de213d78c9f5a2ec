-- Personal eventing (XEP-0163): each account's pubsub nodes and their items.

CREATE TABLE pep_nodes (
    owner          TEXT COLLATE "C" NOT NULL REFERENCES accounts (username) ON DELETE CASCADE,
    node           TEXT COLLATE "C" NOT NULL,
    access_model   TEXT             NOT NULL CHECK (access_model IN ('open', 'presence', 'whitelist')),
    max_items      BIGINT           NOT NULL CHECK (max_items >= 1),
    persist_items  BOOLEAN          NOT NULL,
    send_last_item TEXT             NOT NULL CHECK (send_last_item IN ('never', 'on_sub', 'on_sub_and_presence')),
    PRIMARY KEY (owner, node)
);

CREATE TABLE pep_items (
    owner   TEXT COLLATE "C" NOT NULL,
    node    TEXT COLLATE "C" NOT NULL,
    item_id TEXT COLLATE "C" NOT NULL,
    -- Time-sortable id given at publication: the order of the items, newest highest.
    seq     BIGINT           NOT NULL,
    -- The payload element as XML.
    payload TEXT             NOT NULL,
    PRIMARY KEY (owner, node, item_id),
    FOREIGN KEY (owner, node) REFERENCES pep_nodes (owner, node) ON DELETE CASCADE
);

CREATE INDEX pep_items_by_seq ON pep_items (owner, node, seq);
