-- Administration (XEP-0133): accounts an administrator disabled, the time of each account's
-- last successful login, and server settings administrators change at run time (message of
-- the day, welcome message, admin list edits) as a small key-value table.

CREATE TABLE account_admin (
    username      TEXT    COLLATE "C" NOT NULL PRIMARY KEY REFERENCES accounts (username) ON DELETE CASCADE,
    disabled      BOOLEAN NOT NULL DEFAULT FALSE,
    -- Milliseconds since the Unix epoch; NULL until the first login.
    last_login_ms BIGINT
);

CREATE INDEX account_admin_disabled ON account_admin (disabled) WHERE disabled;

CREATE TABLE server_settings (
    name  TEXT NOT NULL PRIMARY KEY,
    value TEXT NOT NULL
);
