//! Modality Worklist (PS3.4 Annex K): scheduled procedure steps from the RIS's orders, found
//! with the same matching engine as C-FIND, including keys inside the Scheduled Procedure Step
//! Sequence (station AE title, modality, start date and time range, performing physician).

use dicom_core::header::Header;
use dicom_core::value::DataSetSequence;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use pacs_model::{fold_person_name, Matcher, ValueKind};
use pacs_store::{WorklistFilter, WorklistItem};

use crate::{Archive, ArchiveError};

/// An order as the worklist data set a modality receives.
pub fn item_dataset(item: &WorklistItem) -> InMemDicomObject {
    let o = &item.order;
    let p = &item.patient;
    let mut step = InMemDicomObject::new_empty();
    let put = |obj: &mut InMemDicomObject, tag: Tag, vr: VR, value: Option<&str>| {
        let value = value.map_or(PrimitiveValue::Empty, PrimitiveValue::from);
        obj.put(DataElement::new(tag, vr, value));
    };
    put(&mut step, tags::MODALITY, VR::CS, o.modality.as_deref());
    put(
        &mut step,
        tags::SCHEDULED_STATION_AE_TITLE,
        VR::AE,
        o.station_ae.as_deref(),
    );
    put(
        &mut step,
        tags::SCHEDULED_STATION_NAME,
        VR::SH,
        o.station_name.as_deref(),
    );
    put(
        &mut step,
        tags::SCHEDULED_PROCEDURE_STEP_START_DATE,
        VR::DA,
        o.start_date.as_deref(),
    );
    put(
        &mut step,
        tags::SCHEDULED_PROCEDURE_STEP_START_TIME,
        VR::TM,
        o.start_time.as_deref(),
    );
    put(
        &mut step,
        tags::SCHEDULED_PERFORMING_PHYSICIAN_NAME,
        VR::PN,
        o.performing_physician.as_deref(),
    );
    put(
        &mut step,
        tags::SCHEDULED_PROCEDURE_STEP_DESCRIPTION,
        VR::LO,
        o.sps_description
            .as_deref()
            .or(o.requested_procedure_description.as_deref()),
    );
    put(
        &mut step,
        tags::SCHEDULED_PROCEDURE_STEP_ID,
        VR::SH,
        o.sps_id.as_deref().or(o.accession_number.as_deref()),
    );
    put(
        &mut step,
        tags::SCHEDULED_PROCEDURE_STEP_STATUS,
        VR::CS,
        Some(o.status.as_str()),
    );
    let mut ds = InMemDicomObject::new_empty();
    put(
        &mut ds,
        tags::ACCESSION_NUMBER,
        VR::SH,
        o.accession_number.as_deref(),
    );
    put(
        &mut ds,
        tags::REFERRING_PHYSICIAN_NAME,
        VR::PN,
        o.referring_physician.as_deref(),
    );
    put(&mut ds, tags::PATIENT_NAME, VR::PN, p.name.as_deref());
    put(&mut ds, tags::PATIENT_ID, VR::LO, Some(p.key.patient_id.as_str()));
    put(
        &mut ds,
        tags::ISSUER_OF_PATIENT_ID,
        VR::LO,
        Some(p.key.issuer.as_str()).filter(|i| !i.is_empty()),
    );
    put(&mut ds, tags::PATIENT_BIRTH_DATE, VR::DA, p.birth_date.as_deref());
    put(&mut ds, tags::PATIENT_SEX, VR::CS, p.sex.as_deref());
    put(&mut ds, tags::STUDY_INSTANCE_UID, VR::UI, o.study_uid.as_deref());
    put(
        &mut ds,
        tags::REQUESTED_PROCEDURE_ID,
        VR::SH,
        o.requested_procedure_id
            .as_deref()
            .or(Some(o.placer_order.as_str())),
    );
    put(
        &mut ds,
        tags::REQUESTED_PROCEDURE_DESCRIPTION,
        VR::LO,
        o.requested_procedure_description.as_deref(),
    );
    put(
        &mut ds,
        tags::PLACER_ORDER_NUMBER_IMAGING_SERVICE_REQUEST,
        VR::LO,
        Some(o.placer_order.as_str()),
    );
    put(
        &mut ds,
        tags::FILLER_ORDER_NUMBER_IMAGING_SERVICE_REQUEST,
        VR::LO,
        o.filler_order.as_deref(),
    );
    ds.put(DataElement::new(
        tags::SCHEDULED_PROCEDURE_STEP_SEQUENCE,
        VR::SQ,
        DataSetSequence::from(vec![step]),
    ));
    ds
}

fn text(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
    obj.get(tag)
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim_end_matches(['\0', ' ']).to_string())
        .filter(|s| !s.is_empty())
}

fn first_item(obj: &InMemDicomObject, tag: Tag) -> Option<&InMemDicomObject> {
    obj.get(tag)
        .and_then(|e| e.items())
        .and_then(|items| items.first())
}

/// Whether every key of `identifier` with a value matches `item` (recursing into sequences:
/// the item of a key sequence must match some item of the stored sequence).
pub fn matches(identifier: &InMemDicomObject, item: &InMemDicomObject) -> bool {
    identifier.iter().all(|key| {
        let tag = key.tag();
        if tag == tags::SPECIFIC_CHARACTER_SET || tag.group() == 0x0002 {
            return true;
        }
        if let Some(key_items) = key.items() {
            let Some(key_item) = key_items.first() else {
                return true;
            };
            let stored = item.get(tag).and_then(|e| e.items()).unwrap_or(&[]);
            return stored.iter().any(|s| matches(key_item, s));
        }
        let Ok(raw) = key.to_str() else { return true };
        let kind = ValueKind::from_vr(key.vr());
        let matcher = Matcher::parse(kind, &raw);
        let value = text(item, tag);
        let value = match kind {
            ValueKind::PersonName => value.map(|v| fold_person_name(&v)),
            _ => value,
        };
        matcher.matches(kind, value.as_deref())
    })
}

/// The response for a match: the keys the identifier asked for, with the item's values.
pub fn response(identifier: &InMemDicomObject, item: &InMemDicomObject) -> InMemDicomObject {
    let mut out = InMemDicomObject::new_empty();
    for key in identifier.iter() {
        let tag = key.tag();
        if tag == tags::SPECIFIC_CHARACTER_SET || tag.group() == 0x0002 {
            continue;
        }
        match (key.items(), item.get(tag)) {
            (Some(key_items), Some(stored)) => {
                let stored_items = stored.items().unwrap_or(&[]);
                let answered: Vec<InMemDicomObject> = match key_items.first() {
                    Some(key_item) => stored_items
                        .iter()
                        .filter(|s| matches(key_item, s))
                        .map(|s| response(key_item, s))
                        .collect(),
                    None => stored_items.to_vec(),
                };
                out.put(DataElement::new(tag, VR::SQ, DataSetSequence::from(answered)));
            }
            (_, Some(stored)) => {
                out.put(stored.clone());
            }
            (_, None) => {
                out.put(DataElement::new(tag, key.vr(), PrimitiveValue::Empty));
            }
        }
    }
    let non_ascii = out.iter().any(|e| e.to_str().is_ok_and(|s| !s.is_ascii()))
        || text(item, tags::PATIENT_NAME).is_some_and(|n| !n.is_ascii());
    if non_ascii {
        out.put(DataElement::new(
            tags::SPECIFIC_CHARACTER_SET,
            VR::CS,
            PrimitiveValue::from("ISO_IR 192"),
        ));
    }
    out
}

/// The SQL prefilter a worklist identifier allows (single values and date ranges in the
/// Scheduled Procedure Step Sequence); the matching engine decides the rest.
fn prefilter(identifier: &InMemDicomObject) -> WorklistFilter {
    let Some(step) = first_item(identifier, tags::SCHEDULED_PROCEDURE_STEP_SEQUENCE) else {
        return WorklistFilter::default();
    };
    let single = |tag| match text(step, tag).map(|v| Matcher::parse(ValueKind::Text, &v)) {
        Some(Matcher::Single(v)) => Some(v),
        _ => None,
    };
    let (date_from, date_to) = match text(step, tags::SCHEDULED_PROCEDURE_STEP_START_DATE)
        .map(|v| Matcher::parse(ValueKind::Date, &v))
    {
        Some(Matcher::Single(d)) => (Some(d.clone()), Some(d)),
        Some(Matcher::Range { low, high }) => (low, high),
        _ => (None, None),
    };
    WorklistFilter {
        modality: single(tags::MODALITY),
        station_ae: single(tags::SCHEDULED_STATION_AE_TITLE),
        date_from,
        date_to,
        ..WorklistFilter::default()
    }
}

impl Archive {
    /// Worklist items matching a Modality Worklist C-FIND identifier, as response data sets.
    pub async fn worklist_find(
        &self,
        identifier: &InMemDicomObject,
    ) -> Result<Vec<InMemDicomObject>, ArchiveError> {
        let candidates = self.index.worklist(prefilter(identifier)).await?;
        Ok(candidates
            .iter()
            .map(item_dataset)
            .filter(|item| matches(identifier, item))
            .map(|item| response(identifier, &item))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pacs_store::{Order, PatientKey, PatientRecord};

    fn item(modality: &str, station: &str, date: &str, name: &str) -> InMemDicomObject {
        item_dataset(&WorklistItem {
            order: Order {
                placer_order: "O1".into(),
                accession_number: Some("ACC1".into()),
                modality: Some(modality.into()),
                station_ae: Some(station.into()),
                start_date: Some(date.into()),
                start_time: Some("101500".into()),
                status: "SCHEDULED".into(),
                ..Order::default()
            },
            patient: PatientRecord {
                key: PatientKey {
                    issuer: String::new(),
                    patient_id: "P1".into(),
                },
                name: Some(name.into()),
                ..PatientRecord::default()
            },
        })
    }

    fn identifier(keys: &[(Tag, VR, &str)], step: &[(Tag, VR, &str)]) -> InMemDicomObject {
        let mut obj = InMemDicomObject::new_empty();
        for (tag, vr, value) in keys {
            obj.put(DataElement::new(*tag, *vr, PrimitiveValue::from(*value)));
        }
        let mut sps = InMemDicomObject::new_empty();
        for (tag, vr, value) in step {
            sps.put(DataElement::new(*tag, *vr, PrimitiveValue::from(*value)));
        }
        obj.put(DataElement::new(
            tags::SCHEDULED_PROCEDURE_STEP_SEQUENCE,
            VR::SQ,
            DataSetSequence::from(vec![sps]),
        ));
        obj
    }

    #[test]
    fn keys_inside_the_step_sequence_match_with_the_cfind_rules() {
        let ct = item("CT", "CT_1", "20261128", "Lefèvre^Hélène");
        let by_station = identifier(
            &[(tags::PATIENT_NAME, VR::PN, "")],
            &[
                (tags::SCHEDULED_STATION_AE_TITLE, VR::AE, "CT_1"),
                (tags::MODALITY, VR::CS, "CT"),
                (
                    tags::SCHEDULED_PROCEDURE_STEP_START_DATE,
                    VR::DA,
                    "20261101-20261130",
                ),
            ],
        );
        assert!(matches(&by_station, &ct));
        let other_station = identifier(&[], &[(tags::SCHEDULED_STATION_AE_TITLE, VR::AE, "MR_1")]);
        assert!(!matches(&other_station, &ct));
        let later = identifier(
            &[],
            &[(tags::SCHEDULED_PROCEDURE_STEP_START_DATE, VR::DA, "20261201-")],
        );
        assert!(!matches(&later, &ct));
        // Person names: case- and accent-insensitive wildcards, as in C-FIND.
        let name = identifier(&[(tags::PATIENT_NAME, VR::PN, "lefevre*")], &[]);
        assert!(matches(&name, &ct));
        let accession = identifier(&[(tags::ACCESSION_NUMBER, VR::SH, "ACC2")], &[]);
        assert!(!matches(&accession, &ct));

        // The response carries what was asked, the step sequence filtered to the asked keys.
        let answer = response(&by_station, &ct);
        assert_eq!(
            text(&answer, tags::PATIENT_NAME).as_deref(),
            Some("Lefèvre^Hélène")
        );
        assert_eq!(
            text(&answer, tags::SPECIFIC_CHARACTER_SET).as_deref(),
            Some("ISO_IR 192")
        );
        let step = first_item(&answer, tags::SCHEDULED_PROCEDURE_STEP_SEQUENCE).unwrap();
        assert_eq!(text(step, tags::MODALITY).as_deref(), Some("CT"));
        assert!(step.get(tags::SCHEDULED_STATION_NAME).is_none(), "not asked for");
        assert!(answer.get(tags::ACCESSION_NUMBER).is_none(), "not asked for");
        let filter = prefilter(&by_station);
        assert_eq!(filter.modality.as_deref(), Some("CT"));
        assert_eq!(filter.date_from.as_deref(), Some("20261101"));
        assert_eq!(filter.date_to.as_deref(), Some("20261130"));
    }
}
