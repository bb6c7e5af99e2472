-- openpacs index, version 3: the RIS workflow (patient identity from ADT, orders and their
-- scheduled procedure steps, MPPS, reports, study completion).

-- Demographics the RIS sent win over those of the images: once `ris_managed`, images no longer
-- overwrite them. `revision` takes a new value (from a counter shared by all patients) at every
-- change of a patient's identity or demographics; each instance records the revision it was
-- stored under and is patched at retrieval when the two differ (the stored bytes never change).
ALTER TABLE patient ADD COLUMN ris_managed INTEGER NOT NULL DEFAULT 0;
ALTER TABLE patient ADD COLUMN revision INTEGER NOT NULL DEFAULT 0;
-- Set on the patient merged away (A40); ingest follows it, so late images join the survivor.
ALTER TABLE patient ADD COLUMN merged_into INTEGER REFERENCES patient (pk);
ALTER TABLE instance ADD COLUMN patient_revision INTEGER NOT NULL DEFAULT 0;

CREATE TABLE revision_counter (value INTEGER NOT NULL);
INSERT INTO revision_counter (value) VALUES (0);

-- A40 merges, kept so that an administrator can undo one.
CREATE TABLE patient_merge (
    pk          INTEGER PRIMARY KEY,
    tenant_pk   INTEGER NOT NULL REFERENCES tenant (pk),
    survivor_pk INTEGER NOT NULL REFERENCES patient (pk),
    merged_pk   INTEGER NOT NULL REFERENCES patient (pk),
    -- The studies that moved, as a JSON array of study pks.
    moved_studies TEXT NOT NULL,
    at          TEXT NOT NULL,
    actor       TEXT NOT NULL,
    undone_at   TEXT
);

-- Orders (ORM^O01, OMI^O23): one row per requested procedure / scheduled procedure step,
-- which is what a Modality Worklist item is.
CREATE TABLE procedure_order (
    pk                   INTEGER PRIMARY KEY,
    tenant_pk            INTEGER NOT NULL REFERENCES tenant (pk),
    patient_pk           INTEGER NOT NULL REFERENCES patient (pk),
    placer_order         TEXT NOT NULL,
    filler_order         TEXT,
    accession_number     TEXT,
    requested_procedure_id TEXT,
    requested_procedure_description TEXT,
    study_uid            TEXT,
    sps_id               TEXT,
    sps_description      TEXT,
    station_ae           TEXT,
    station_name         TEXT,
    modality             TEXT,
    start_date           TEXT,
    start_time           TEXT,
    performing_physician TEXT,
    referring_physician  TEXT,
    -- SCHEDULED, IN PROGRESS, COMPLETED, DISCONTINUED (cancelled orders are DISCONTINUED).
    status               TEXT NOT NULL DEFAULT 'SCHEDULED',
    created_at           TEXT NOT NULL,
    updated_at           TEXT NOT NULL,
    UNIQUE (tenant_pk, placer_order)
);
CREATE INDEX order_accession_idx ON procedure_order (tenant_pk, accession_number);
CREATE INDEX order_worklist_idx ON procedure_order (tenant_pk, status, start_date);

-- Modality Performed Procedure Steps, with their last data set as DICOM JSON.
CREATE TABLE mpps (
    pk            INTEGER PRIMARY KEY,
    tenant_pk     INTEGER NOT NULL REFERENCES tenant (pk),
    sop_uid       TEXT NOT NULL,
    status        TEXT NOT NULL,
    accession_number TEXT,
    study_uid     TEXT,
    dataset       TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    UNIQUE (tenant_pk, sop_uid)
);

-- Reports (ORU^R01), linked to a study by accession number or Study Instance UID.
CREATE TABLE report (
    pk               INTEGER PRIMARY KEY,
    tenant_pk        INTEGER NOT NULL REFERENCES tenant (pk),
    study_uid        TEXT,
    accession_number TEXT,
    -- P (preliminary), F (final), C (corrected).
    status           TEXT NOT NULL,
    text             TEXT NOT NULL,
    author           TEXT,
    observed_at      TEXT,
    received_at      TEXT NOT NULL,
    control_id       TEXT
);
CREATE INDEX report_study_idx ON report (tenant_pk, study_uid);
CREATE INDEX report_accession_idx ON report (tenant_pk, accession_number);

-- Study completion without MPPS: the last arrival, and whether the RIS was told.
ALTER TABLE study ADD COLUMN last_received_at TEXT;
ALTER TABLE study ADD COLUMN completion_notified_at TEXT;
-- Reconciliation: the order a study was matched to, or why it needs review.
ALTER TABLE study ADD COLUMN order_pk INTEGER REFERENCES procedure_order (pk);
ALTER TABLE study ADD COLUMN review_reason TEXT;
