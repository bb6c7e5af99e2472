-- openpacs index, version 2: local user accounts and their credentials; deletions.
-- Passwords are stored only as argon2 PHC strings; sessions and API tokens only as the
-- SHA-256 of the secret handed to the client, so a copy of the index lets no one log in.
CREATE TABLE user_account (
    pk                  INTEGER PRIMARY KEY,
    tenant_pk           INTEGER NOT NULL REFERENCES tenant (pk),
    username            TEXT NOT NULL UNIQUE,
    password_hash       TEXT NOT NULL,
    role                TEXT NOT NULL CHECK (role IN ('admin', 'reader', 'referrer', 'uploader')),
    created_at          TEXT NOT NULL,
    password_changed_at TEXT NOT NULL
);

-- Sessions (browser log-ins) and API tokens (scripts, viewers).
CREATE TABLE credential (
    pk             INTEGER PRIMARY KEY,
    user_pk        INTEGER NOT NULL REFERENCES user_account (pk) ON DELETE CASCADE,
    kind           TEXT NOT NULL CHECK (kind IN ('session', 'token')),
    secret_sha256  TEXT NOT NULL UNIQUE,
    name           TEXT,
    created_at     TEXT NOT NULL,
    expires_at     TEXT
);
CREATE INDEX credential_user_idx ON credential (user_pk, kind);

-- Deleting a current instance (REST API, admin only) keeps the counts true as well.
CREATE TRIGGER instance_counts_delete AFTER DELETE ON instance WHEN OLD.superseded_at IS NULL
BEGIN
    UPDATE series SET num_instances = num_instances - 1 WHERE pk = OLD.series_pk;
    UPDATE study SET num_instances = num_instances - 1
    WHERE pk = (SELECT study_pk FROM series WHERE pk = OLD.series_pk);
END;

-- Blobs whose last index row was deleted, written in the same transaction as the deletion:
-- the files are removed after the commit, and start-up recovery finishes the job after a
-- crash (instead of mistaking them for orphans of an unfinished store and indexing them again).
CREATE TABLE blob_deletion (
    blob_key     TEXT PRIMARY KEY,
    requested_at TEXT NOT NULL
);
