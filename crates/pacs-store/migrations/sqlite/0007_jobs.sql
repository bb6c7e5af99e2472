-- openpacs index, version 7: durable jobs, shared by every node of an installation (outbound
-- HL7 now; storage-commitment reports, C-MOVE retries and fixity checks later). A job is
-- written in the transaction of the change that causes it and claimed with a lease: a node
-- that dies leaves its jobs to be taken over once their lease has expired. Jobs of one
-- `queue_key` run one at a time, in key order (an HL7 destination needs its messages in
-- sequence). Timestamps are text in the index's one format, compared as text.
CREATE TABLE job (
    pk           INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_pk    INTEGER NOT NULL REFERENCES tenant (pk),
    kind         TEXT NOT NULL,
    queue_key    TEXT NOT NULL,
    payload      BLOB NOT NULL,
    -- What the job is about, for the operator's list; never parsed.
    summary      TEXT NOT NULL DEFAULT '',
    state        TEXT NOT NULL CHECK (state IN ('pending', 'running', 'done', 'failed')),
    attempts     INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    last_error   TEXT,
    not_before   TEXT NOT NULL,
    lease_owner  TEXT,
    lease_until  TEXT,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL
);
-- What a claim reads: the work still open, queue by queue in order.
CREATE INDEX job_open_idx ON job (queue_key, pk) WHERE state IN ('pending', 'running');
-- What the operator lists.
CREATE INDEX job_state_idx ON job (tenant_pk, state, pk);
