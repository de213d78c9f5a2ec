-- Node numbers for the sortable message ids (see src/storage/nodes.rs): each node name gets
-- one number for good, and no two names share one.
CREATE TABLE cluster_nodes (
    name   TEXT    NOT NULL PRIMARY KEY,
    number INTEGER NOT NULL UNIQUE
);
