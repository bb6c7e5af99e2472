-- openpacs index, version 4: the DICOM AE table and audit log searches.
-- Application entities an administrator manages from the web UI or the REST API (C-MOVE
-- destinations, storage commitment requesters), besides the read-only ones of the
-- configuration file. AE titles are compared exactly, as DICOM does.
CREATE TABLE application_entity (
    pk          INTEGER PRIMARY KEY,
    tenant_pk   INTEGER NOT NULL REFERENCES tenant (pk),
    ae_title    TEXT NOT NULL,
    host        TEXT NOT NULL,
    port        INTEGER NOT NULL CHECK (port BETWEEN 1 AND 65535),
    description TEXT,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    UNIQUE (tenant_pk, ae_title)
);

-- The audit log is searched by user and by patient (newest first, page by page).
CREATE INDEX audit_actor_idx ON audit (tenant_pk, actor);
CREATE INDEX audit_patient_idx ON audit (tenant_pk, patient_id);
