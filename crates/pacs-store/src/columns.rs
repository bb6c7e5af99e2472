//! The attributes the index keeps in columns, per level, with the SQL that reads and filters
//! them. Everything else comes from the stored header of an instance.

use pacs_model::{QueryLevel, ValueKind};

/// One indexed attribute.
#[derive(Debug)]
pub struct Column {
    /// DICOM tag (group, element).
    pub tag: (u16, u16),
    pub level: QueryLevel,
    /// SQL expression that yields the value in a SELECT.
    pub select: &'static str,
    /// SQL expression to filter on (folded for names), or None for computed attributes.
    pub filter: Option<&'static str>,
    pub kind: ValueKind,
}

const fn col(
    tag: (u16, u16),
    level: QueryLevel,
    select: &'static str,
    filter: Option<&'static str>,
    kind: ValueKind,
) -> Column {
    Column {
        tag,
        level,
        select,
        filter,
        kind,
    }
}

use QueryLevel::{Image, Patient, Series, Study};
use ValueKind::{Date, PersonName, Text, Time, Uid};

/// All indexed attributes. Query rows return them in this order (only those of the query's
/// level and above).
pub const COLUMNS: &[Column] = &[
    col((0x0010, 0x0020), Patient, "p.patient_id", Some("p.patient_id"), Text),
    col((0x0010, 0x0021), Patient, "p.issuer", Some("p.issuer"), Text),
    col((0x0010, 0x0010), Patient, "p.patient_name", Some("p.patient_name_folded"), PersonName),
    col((0x0010, 0x0030), Patient, "p.birth_date", Some("p.birth_date"), Date),
    col((0x0010, 0x0040), Patient, "p.sex", Some("p.sex"), Text),
    col(
        (0x0020, 0x1200),
        Patient,
        "(SELECT COUNT(*) FROM study s2 WHERE s2.patient_pk = p.pk AND s2.num_instances > 0)",
        None,
        Text,
    ),
    col(
        (0x0020, 0x1202),
        Patient,
        "(SELECT COUNT(*) FROM series se2 JOIN study s2 ON se2.study_pk = s2.pk WHERE s2.patient_pk = p.pk AND se2.num_instances > 0)",
        None,
        Text,
    ),
    col(
        (0x0020, 0x1204),
        Patient,
        "(SELECT CAST(COALESCE(SUM(s2.num_instances), 0) AS BIGINT) FROM study s2 WHERE s2.patient_pk = p.pk)",
        None,
        Text,
    ),
    col((0x0020, 0x000D), Study, "st.study_uid", Some("st.study_uid"), Uid),
    col((0x0008, 0x0020), Study, "st.study_date", Some("st.study_date"), Date),
    col((0x0008, 0x0030), Study, "st.study_time", None, Time),
    col((0x0008, 0x0050), Study, "st.accession_number", Some("st.accession_number"), Text),
    col((0x0020, 0x0010), Study, "st.study_id", Some("st.study_id"), Text),
    col((0x0008, 0x1030), Study, "st.description", Some("st.description"), Text),
    col((0x0008, 0x0090), Study, "st.referring", Some("st.referring_folded"), PersonName),
    col(
        (0x0008, 0x0061),
        Study,
        "(SELECT string_agg(m, '\\' ORDER BY m) FROM (SELECT DISTINCT se2.modality AS m FROM series se2 WHERE se2.study_pk = st.pk AND se2.num_instances > 0 AND se2.modality IS NOT NULL) AS modalities)",
        None,
        Text,
    ),
    col(
        (0x0020, 0x1206),
        Study,
        "(SELECT COUNT(*) FROM series se2 WHERE se2.study_pk = st.pk AND se2.num_instances > 0)",
        None,
        Text,
    ),
    col((0x0020, 0x1208), Study, "st.num_instances", None, Text),
    col((0x0020, 0x000E), Series, "se.series_uid", Some("se.series_uid"), Uid),
    col((0x0008, 0x0060), Series, "se.modality", Some("se.modality"), Text),
    col((0x0020, 0x0011), Series, "se.series_number", Some("se.series_number"), Text),
    col((0x0008, 0x103E), Series, "se.description", Some("se.description"), Text),
    col((0x0018, 0x0015), Series, "se.body_part", Some("se.body_part"), Text),
    col((0x0020, 0x1209), Series, "se.num_instances", None, Text),
    col((0x0008, 0x0018), Image, "i.sop_uid", Some("i.sop_uid"), Uid),
    col((0x0008, 0x0016), Image, "i.sop_class", Some("i.sop_class"), Uid),
    col((0x0020, 0x0013), Image, "i.instance_number", Some("i.instance_number"), Text),
    col((0x0028, 0x0010), Image, "i.rows", Some("i.rows"), Text),
    col((0x0028, 0x0011), Image, "i.columns_", Some("i.columns_"), Text),
    col((0x0028, 0x0100), Image, "i.bits_allocated", Some("i.bits_allocated"), Text),
    col((0x0028, 0x0008), Image, "i.number_of_frames", Some("i.number_of_frames"), Text),
];

/// Depth of a level: patient 0 … image 3.
pub fn depth(level: QueryLevel) -> u8 {
    match level {
        Patient => 0,
        Study => 1,
        Series => 2,
        Image => 3,
    }
}

/// The columns a query at `level` returns, in row order.
pub fn columns_for(level: QueryLevel) -> impl Iterator<Item = &'static Column> {
    COLUMNS.iter().filter(move |c| depth(c.level) <= depth(level))
}

/// The indexed column for a tag, if any.
pub fn column_for_tag(tag: (u16, u16)) -> Option<&'static Column> {
    COLUMNS.iter().find(|c| c.tag == tag)
}
