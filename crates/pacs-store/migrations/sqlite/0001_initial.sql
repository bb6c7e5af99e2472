-- openpacs index, version 1 (SQLite). Every row carries its tenant.
CREATE TABLE tenant (
    pk   INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);
INSERT INTO tenant (pk, name) VALUES (1, 'default');

CREATE TABLE patient (
    pk                  INTEGER PRIMARY KEY,
    tenant_pk           INTEGER NOT NULL REFERENCES tenant (pk),
    issuer              TEXT NOT NULL,
    patient_id          TEXT NOT NULL,
    patient_name        TEXT,
    patient_name_folded TEXT,
    birth_date          TEXT,
    sex                 TEXT,
    -- Objects without a Patient ID are not all one patient: each study without one gets its
    -- own patient row, keyed by the study's UID here ('' for identified patients).
    unidentified_study  TEXT NOT NULL DEFAULT '',
    UNIQUE (tenant_pk, issuer, patient_id, unidentified_study)
);
CREATE INDEX patient_name_idx ON patient (tenant_pk, patient_name_folded);
CREATE INDEX patient_id_idx ON patient (tenant_pk, patient_id);

CREATE TABLE study (
    pk                 INTEGER PRIMARY KEY,
    tenant_pk          INTEGER NOT NULL REFERENCES tenant (pk),
    patient_pk         INTEGER NOT NULL REFERENCES patient (pk),
    study_uid          TEXT NOT NULL,
    study_date         TEXT,
    study_time         TEXT,
    accession_number   TEXT,
    study_id           TEXT,
    description        TEXT,
    referring          TEXT,
    referring_folded   TEXT,
    num_instances      INTEGER NOT NULL DEFAULT 0,
    UNIQUE (tenant_pk, study_uid)
);
CREATE INDEX study_patient_idx ON study (patient_pk);
CREATE INDEX study_date_idx ON study (tenant_pk, study_date);
CREATE INDEX study_accession_idx ON study (tenant_pk, accession_number);

CREATE TABLE series (
    pk            INTEGER PRIMARY KEY,
    tenant_pk     INTEGER NOT NULL REFERENCES tenant (pk),
    study_pk      INTEGER NOT NULL REFERENCES study (pk),
    series_uid    TEXT NOT NULL,
    modality      TEXT,
    series_number TEXT,
    description   TEXT,
    body_part     TEXT,
    num_instances INTEGER NOT NULL DEFAULT 0,
    UNIQUE (tenant_pk, series_uid)
);
CREATE INDEX series_study_idx ON series (study_pk);
CREATE INDEX series_modality_idx ON series (tenant_pk, modality);

CREATE TABLE instance (
    pk              INTEGER PRIMARY KEY,
    tenant_pk       INTEGER NOT NULL REFERENCES tenant (pk),
    series_pk       INTEGER NOT NULL REFERENCES series (pk),
    sop_uid         TEXT NOT NULL,
    sop_class       TEXT NOT NULL,
    instance_number TEXT,
    -- Image attributes QIDO-RS returns for every instance by default.
    rows            TEXT,
    columns_        TEXT,
    bits_allocated  TEXT,
    number_of_frames TEXT,
    transfer_syntax TEXT NOT NULL,
    size            INTEGER NOT NULL,
    sha256          TEXT NOT NULL,
    dataset_sha256  TEXT NOT NULL,
    blob_key        TEXT NOT NULL,
    dataset_offset  INTEGER NOT NULL,
    source_ae       TEXT,
    received_at     TEXT NOT NULL,
    -- Set when a later object with the same SOP Instance UID but different bytes arrived.
    superseded_at   TEXT
);
CREATE UNIQUE INDEX instance_current_idx ON instance (tenant_pk, sop_uid) WHERE superseded_at IS NULL;
CREATE INDEX instance_sop_idx ON instance (tenant_pk, sop_uid);
CREATE INDEX instance_series_idx ON instance (series_pk);
CREATE INDEX instance_blob_idx ON instance (blob_key);

-- The full non-pixel header as DICOM JSON, for attributes the columns above do not hold.
CREATE TABLE instance_header (
    instance_pk INTEGER PRIMARY KEY REFERENCES instance (pk),
    header      TEXT NOT NULL
);

CREATE TABLE audit (
    pk         INTEGER PRIMARY KEY,
    tenant_pk  INTEGER NOT NULL REFERENCES tenant (pk),
    at         TEXT NOT NULL,
    event      TEXT NOT NULL,
    actor      TEXT NOT NULL,
    peer       TEXT NOT NULL,
    patient_id TEXT,
    study_uid  TEXT,
    outcome    TEXT NOT NULL,
    detail     TEXT
);
CREATE TRIGGER audit_append_only_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
CREATE TRIGGER audit_append_only_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;

-- Instance counts of series and studies follow the current instances, inside the engine
-- (no extra statement per stored instance).
CREATE TRIGGER instance_counts_insert AFTER INSERT ON instance WHEN NEW.superseded_at IS NULL
BEGIN
    UPDATE series SET num_instances = num_instances + 1 WHERE pk = NEW.series_pk;
    UPDATE study SET num_instances = num_instances + 1
    WHERE pk = (SELECT study_pk FROM series WHERE pk = NEW.series_pk);
END;
CREATE TRIGGER instance_counts_supersede AFTER UPDATE OF superseded_at ON instance
WHEN OLD.superseded_at IS NULL AND NEW.superseded_at IS NOT NULL
BEGIN
    UPDATE series SET num_instances = num_instances - 1 WHERE pk = OLD.series_pk;
    UPDATE study SET num_instances = num_instances - 1
    WHERE pk = (SELECT study_pk FROM series WHERE pk = OLD.series_pk);
END;
