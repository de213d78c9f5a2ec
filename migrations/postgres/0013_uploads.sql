-- XEP-0363 HTTP File Upload: one row per file stored, written when its PUT completed. Quotas
-- count these rows; the sweep deletes them (and their files) once expired, and an account's go
-- with it (Storage::delete_account_and_archive), so no foreign key.
CREATE TABLE uploads (
    -- The URL path under /upload/: '<random token>/<file name>'.
    path          TEXT COLLATE "C" PRIMARY KEY,
    -- The uploader's bare JID.
    owner         TEXT COLLATE "C" NOT NULL,
    size          BIGINT NOT NULL,
    content_type  TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL
);
CREATE INDEX uploads_owner ON uploads (owner, created_at_ms);
CREATE INDEX uploads_created ON uploads (created_at_ms);
