-- XEP-0357 push registrations, one per (app server, node) and account.
CREATE TABLE push_registrations (
    username        TEXT   NOT NULL REFERENCES accounts (username) ON DELETE CASCADE,
    service         TEXT   NOT NULL,
    node            TEXT   NOT NULL,
    -- The client's publish-options form, serialized; sent back with every notification.
    publish_options TEXT,
    -- A time-sortable id (see src/ids.rs) of the last enable: the oldest go first past the
    -- cap, and two enables in one millisecond still have an order.
    enabled_id      BIGINT NOT NULL,
    PRIMARY KEY (username, service, node)
);
