-- Multi-User Chat (XEP-0045): persistent rooms and their affiliation lists.

CREATE TABLE muc_rooms (
    jid          TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    -- The room configuration as the MUC module serializes it (JSON).
    config       TEXT NOT NULL,
    subject      TEXT NOT NULL,
    subject_nick TEXT NOT NULL
);

CREATE TABLE muc_affiliations (
    room        TEXT COLLATE "C" NOT NULL REFERENCES muc_rooms (jid) ON DELETE CASCADE,
    jid         TEXT COLLATE "C" NOT NULL,
    affiliation TEXT NOT NULL CHECK (affiliation IN ('owner', 'admin', 'member', 'outcast')),
    PRIMARY KEY (room, jid)
);
