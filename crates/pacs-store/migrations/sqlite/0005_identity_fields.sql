-- openpacs index, version 5: a retrieval returns the stored bytes unless an explicit identity
-- decision applies to the instance.
--
-- `ris_fields` says which demographics an explicit identity change set (the RIS over ADT, an
-- administrator): 1 name, 2 birth date, 4 sex. Only those, and the patient's identifier, are
-- ever patched into an object sent out; what other images of the patient said is not.
ALTER TABLE patient ADD COLUMN ris_fields INTEGER NOT NULL DEFAULT 0;
UPDATE patient SET ris_fields = (patient_name IS NOT NULL) * 1 + (birth_date IS NOT NULL) * 2
                                + (sex IS NOT NULL) * 4
WHERE ris_managed = 1;

-- Instances were marked for patching (-1) whenever their patient attributes differed from the
-- patient row, which other images of the same patient could have filled: two images of one
-- Patient ID, one without birth date, made the first go out with the second's. Those filed
-- under the patient they name, whose patient no explicit change touched, go out as stored.
UPDATE instance SET patient_revision = (
    SELECT p.revision FROM series se JOIN study s ON s.pk = se.study_pk
    JOIN patient p ON p.pk = s.patient_pk WHERE se.pk = instance.series_pk)
WHERE patient_revision = -1 AND pk IN (
    SELECT i.pk FROM instance i JOIN series se ON se.pk = i.series_pk
    JOIN study s ON s.pk = se.study_pk JOIN patient p ON p.pk = s.patient_pk
    JOIN instance_header h ON h.instance_pk = i.pk
    WHERE i.patient_revision = -1 AND p.ris_managed = 0
      AND IFNULL(json_extract(h.header, '$."00100020".Value[0]'), '') = p.patient_id);

-- Orders without a Study Instance UID get one (the worklist must answer one, PS3.4 K.6,
-- Type 1), kept with the order; images carrying it are linked to the order.
UPDATE procedure_order SET study_uid = '2.25.' || (100000000000000000 + abs(random()) % 900000000000000000)
                                        || (abs(random()) % 1000000000000000000)
WHERE study_uid IS NULL OR study_uid = '';
CREATE INDEX IF NOT EXISTS procedure_order_study_idx ON procedure_order (tenant_pk, study_uid);
