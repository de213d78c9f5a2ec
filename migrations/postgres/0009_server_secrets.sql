-- Secrets generated once per installation (see src/storage/secrets.rs).
CREATE TABLE server_secrets (
    name  TEXT  NOT NULL PRIMARY KEY,
    value BYTEA NOT NULL
);
