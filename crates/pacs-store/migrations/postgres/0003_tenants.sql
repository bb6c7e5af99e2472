-- openpacs index on PostgreSQL, version 3: the SQLite index's version 8 (tenants with their
-- AE titles and HL7 facilities; user names unique per tenant; the operator role).
ALTER TABLE tenant ADD COLUMN title TEXT COLLATE "C" NOT NULL DEFAULT '';
ALTER TABLE tenant ADD COLUMN disabled BIGINT NOT NULL DEFAULT 0;
ALTER TABLE tenant ADD COLUMN quota_bytes BIGINT;
ALTER TABLE tenant ADD COLUMN issuer_of_patient_id TEXT COLLATE "C" NOT NULL DEFAULT '';
ALTER TABLE tenant ADD COLUMN created_at TEXT COLLATE "C" NOT NULL DEFAULT '';
ALTER TABLE tenant ADD COLUMN stored_bytes BIGINT NOT NULL DEFAULT 0;
UPDATE tenant SET stored_bytes = (SELECT COALESCE(SUM(size), 0) FROM instance WHERE tenant_pk = tenant.pk);
CREATE FUNCTION tenant_bytes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        UPDATE tenant SET stored_bytes = stored_bytes + NEW.size WHERE pk = NEW.tenant_pk;
    ELSE
        UPDATE tenant SET stored_bytes = stored_bytes - OLD.size WHERE pk = OLD.tenant_pk;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER tenant_bytes AFTER INSERT OR DELETE ON instance FOR EACH ROW EXECUTE FUNCTION tenant_bytes();
UPDATE tenant SET created_at = to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
WHERE created_at = '';

-- The platform itself (TenantId::PLATFORM): operators' accounts and the platform's audit.
INSERT INTO tenant (pk, name, title, created_at) SELECT 0, 'platform', 'the platform', created_at FROM tenant WHERE pk = 1;

CREATE TABLE tenant_ae (
    ae_title  TEXT COLLATE "C" PRIMARY KEY,
    tenant_pk BIGINT NOT NULL REFERENCES tenant (pk)
);
CREATE TABLE tenant_hl7_facility (
    facility  TEXT COLLATE "C" PRIMARY KEY,
    tenant_pk BIGINT NOT NULL REFERENCES tenant (pk)
);

ALTER TABLE user_account DROP CONSTRAINT user_account_username_key;
ALTER TABLE user_account ADD CONSTRAINT user_account_tenant_username_key UNIQUE (tenant_pk, username);
ALTER TABLE user_account DROP CONSTRAINT user_account_role_check;
ALTER TABLE user_account ADD CONSTRAINT user_account_role_check
    CHECK (role IN ('admin', 'reader', 'referrer', 'uploader', 'operator'));
