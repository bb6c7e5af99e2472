-- openpacs index, version 8: tenants made real. Each establishment of a shared platform is a
-- tenant with its own called AE titles (which route DIMSE associations to it) and HL7
-- receiving facilities (MSH-6, which route messages to it); an AE title or a facility names
-- one tenant at most. User names are unique per tenant, no longer across the installation.
ALTER TABLE tenant ADD COLUMN title TEXT NOT NULL DEFAULT '';
ALTER TABLE tenant ADD COLUMN disabled INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tenant ADD COLUMN quota_bytes INTEGER;
ALTER TABLE tenant ADD COLUMN issuer_of_patient_id TEXT NOT NULL DEFAULT '';
ALTER TABLE tenant ADD COLUMN created_at TEXT NOT NULL DEFAULT '';
-- Bytes of the blobs the tenant's instance rows (current and superseded) hold, kept by the
-- triggers below in the transaction of each change: what a quota is checked against.
ALTER TABLE tenant ADD COLUMN stored_bytes INTEGER NOT NULL DEFAULT 0;
UPDATE tenant SET stored_bytes = (SELECT COALESCE(SUM(size), 0) FROM instance WHERE tenant_pk = tenant.pk);
CREATE TRIGGER tenant_bytes_insert AFTER INSERT ON instance
BEGIN
    UPDATE tenant SET stored_bytes = stored_bytes + NEW.size WHERE pk = NEW.tenant_pk;
END;
CREATE TRIGGER tenant_bytes_delete AFTER DELETE ON instance
BEGIN
    UPDATE tenant SET stored_bytes = stored_bytes - OLD.size WHERE pk = OLD.tenant_pk;
END;
UPDATE tenant SET created_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE created_at = '';

-- The platform itself (TenantId::PLATFORM): operators' accounts and the platform's audit.
INSERT INTO tenant (pk, name, title, created_at) SELECT 0, 'platform', 'the platform', created_at FROM tenant WHERE pk = 1;

-- Break-glass: a platform operator's time-limited read access to one tenant, granted for a
-- stated reason and audited in the tenant's own log.
CREATE TABLE access_grant (
    pk         INTEGER PRIMARY KEY,
    tenant_pk  INTEGER NOT NULL REFERENCES tenant (pk),
    operator   TEXT NOT NULL,
    reason     TEXT NOT NULL,
    granted_at TEXT NOT NULL,
    expires_at TEXT NOT NULL
);
CREATE INDEX access_grant_idx ON access_grant (tenant_pk, operator, expires_at);

CREATE TABLE tenant_ae (
    ae_title  TEXT PRIMARY KEY,
    tenant_pk INTEGER NOT NULL REFERENCES tenant (pk)
);
CREATE TABLE tenant_hl7_facility (
    facility  TEXT PRIMARY KEY,
    tenant_pk INTEGER NOT NULL REFERENCES tenant (pk)
);

-- SQLite cannot drop a column's UNIQUE: the two account tables are rebuilt (credentials first,
-- so that dropping the accounts cascades to nothing), the platform operator's role admitted.
CREATE TABLE user_account_v8 (
    pk                  INTEGER PRIMARY KEY,
    tenant_pk           INTEGER NOT NULL REFERENCES tenant (pk),
    username            TEXT NOT NULL,
    password_hash       TEXT NOT NULL,
    role                TEXT NOT NULL CHECK (role IN ('admin', 'reader', 'referrer', 'uploader', 'operator')),
    created_at          TEXT NOT NULL,
    password_changed_at TEXT NOT NULL,
    locked_until        TEXT,
    UNIQUE (tenant_pk, username)
);
INSERT INTO user_account_v8 (pk, tenant_pk, username, password_hash, role, created_at, password_changed_at,
                             locked_until)
SELECT pk, tenant_pk, username, password_hash, role, created_at, password_changed_at, locked_until
FROM user_account;
CREATE TABLE credential_v8 (
    pk             INTEGER PRIMARY KEY,
    user_pk        INTEGER NOT NULL REFERENCES user_account_v8 (pk) ON DELETE CASCADE,
    kind           TEXT NOT NULL CHECK (kind IN ('session', 'token')),
    secret_sha256  TEXT NOT NULL UNIQUE,
    name           TEXT,
    created_at     TEXT NOT NULL,
    expires_at     TEXT
);
INSERT INTO credential_v8 (pk, user_pk, kind, secret_sha256, name, created_at, expires_at)
SELECT pk, user_pk, kind, secret_sha256, name, created_at, expires_at FROM credential;
DROP TABLE credential;
DROP TABLE user_account;
ALTER TABLE user_account_v8 RENAME TO user_account;
ALTER TABLE credential_v8 RENAME TO credential;
CREATE INDEX credential_user_idx ON credential (user_pk, kind);

-- Metering (billing per exam): append-only events written by these triggers in the
-- transaction of each instance row's insertion or deletion, whatever the way in (C-STORE,
-- STOW-RS, import, recovery). Deleting a study leaves its events: a closed month's bill is
-- computed from them alone and is the same on every run.
-- No key of its own: on PostgreSQL a sequence used by the trigger would change what
-- lastval() says to the instance's insertion.
CREATE TABLE metering_event (
    tenant_pk INTEGER NOT NULL REFERENCES tenant (pk),
    at        TEXT NOT NULL,
    kind      TEXT NOT NULL CHECK (kind IN ('stored', 'deleted')),
    study_uid TEXT NOT NULL,
    modality  TEXT,
    bytes     INTEGER NOT NULL
);
CREATE INDEX metering_event_at_idx ON metering_event (tenant_pk, at);
CREATE INDEX metering_event_study_idx ON metering_event (tenant_pk, study_uid);
CREATE TRIGGER metering_stored AFTER INSERT ON instance
BEGIN
    INSERT INTO metering_event (tenant_pk, at, kind, study_uid, modality, bytes)
    SELECT NEW.tenant_pk, NEW.received_at, 'stored', st.study_uid, se.modality, NEW.size
    FROM series se JOIN study st ON st.pk = se.study_pk WHERE se.pk = NEW.series_pk;
END;
CREATE TRIGGER metering_deleted AFTER DELETE ON instance
BEGIN
    INSERT INTO metering_event (tenant_pk, at, kind, study_uid, modality, bytes)
    SELECT OLD.tenant_pk, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), 'deleted', st.study_uid, se.modality, OLD.size
    FROM series se JOIN study st ON st.pk = se.study_pk WHERE se.pk = OLD.series_pk;
END;
