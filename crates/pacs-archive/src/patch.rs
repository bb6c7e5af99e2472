//! A patient's current identity spliced into the stored bytes of an object on its way out.
//!
//! An explicit identity change (ADT update, merge, identifier change) reaches the objects
//! stored before it as a patch at retrieval. Re-encoding the object would also change what
//! nobody changed — sequence and item lengths, trailing padding, group lengths, how values
//! were padded — so the patch is spliced into the stored bytes instead: the top-level patient
//! elements are replaced (or inserted in tag order), every other byte is copied as stored, and
//! the rest of the object streams from its file as an unpatched one does. Deflated objects,
//! and character sets the new values cannot be written in, are left to re-encoding.

use dicom_encoding::text::{SpecificCharacterSet, TextCodec};
use pacs_dimse::dataset_check::{self, Layout};
use pacs_store::PatientRecord;

const SPECIFIC_CHARACTER_SET: (u16, u16) = (0x0008, 0x0005);
const PATIENT_GROUP_LENGTH: (u16, u16) = (0x0010, 0x0000);

/// One element to write: tag, VR, value as text.
struct Replacement {
    tag: (u16, u16),
    vr: [u8; 2],
    value: String,
}

/// The bytes that replace the first `consumed` bytes of `head` (the start of a stored data
/// set, from its first element) so that it carries `patient`'s identifier and the
/// demographics the RIS set, everything else unchanged; `None` when this object must be
/// re-encoded instead.
pub(crate) fn splice_patient(
    head: &[u8],
    transfer_syntax: &str,
    patient: &PatientRecord,
) -> Option<(Vec<u8>, usize)> {
    let layout = Layout::of(transfer_syntax);
    if layout.deflated {
        return None;
    }
    // Top-level elements up to the first one after the patient group, whose start ends the
    // region we may rewrite: it must lie within `head`.
    let mut starts: Vec<((u16, u16), usize)> = Vec::new();
    let mut end = None;
    dataset_check::top_level_elements(head, layout, &mut |tag, start| {
        if tag.0 > 0x0010 {
            end = Some(start as usize);
            return false;
        }
        starts.push((tag, start as usize));
        true
    })
    .ok()?;
    let end = end?;
    let element_end = |i: usize| starts.get(i + 1).map_or(end, |(_, s)| *s);

    let charset = match starts.iter().position(|(tag, _)| *tag == SPECIFIC_CHARACTER_SET) {
        Some(i) => {
            let value = element_value(&head[starts[i].1..element_end(i)], layout)?;
            String::from_utf8_lossy(value)
                .trim_matches([' ', '\0'])
                .to_string()
        }
        None => String::new(),
    };
    let mut replacements = vec![Replacement {
        tag: (0x0010, 0x0020),
        vr: *b"LO",
        value: patient.key.patient_id.clone(),
    }];
    let mut add = |tag, vr: &[u8; 2], value: Option<&str>| {
        if let Some(value) = value.filter(|v| !v.is_empty()) {
            replacements.push(Replacement {
                tag,
                vr: *vr,
                value: value.to_string(),
            });
        }
    };
    add((0x0010, 0x0021), b"LO", Some(patient.key.issuer.as_str()));
    add((0x0010, 0x0010), b"PN", patient.ris_name());
    add((0x0010, 0x0030), b"DA", patient.ris_birth_date());
    add((0x0010, 0x0040), b"CS", patient.ris_sex());
    let all_ascii = replacements.iter().all(|r| r.value.is_ascii());
    let codec = match charset.as_str() {
        "" | "ISO_IR 6" if all_ascii => None,
        // Nothing declared and a value that is not ASCII: declare UTF-8, which keeps every
        // ASCII value of the object as it was.
        "" => {
            replacements.push(Replacement {
                tag: SPECIFIC_CHARACTER_SET,
                vr: *b"CS",
                value: "ISO_IR 192".into(),
            });
            Some(SpecificCharacterSet::ISO_IR_192)
        }
        // Code extensions (ISO 2022, several values) are for re-encoding to handle.
        code if code.contains('\\') => return None,
        code => Some(SpecificCharacterSet::from_code(code)?),
    };
    replacements.sort_by_key(|r| r.tag);
    let first_tag = replacements[0].tag;
    let last_tag = replacements[replacements.len() - 1].tag;

    let region_start = starts
        .iter()
        .find(|(tag, _)| *tag >= first_tag)
        .map_or(end, |(_, s)| *s);
    let region_end = starts
        .iter()
        .find(|(tag, _)| *tag > last_tag)
        .map_or(end, |(_, s)| *s);
    let mut out = head[..region_start].to_vec();
    let mut pending = replacements.iter().peekable();
    for (i, (tag, start)) in starts.iter().enumerate() {
        if *start < region_start || *start >= region_end {
            continue;
        }
        while let Some(r) = pending.next_if(|r| r.tag < *tag) {
            encode(&mut out, r, layout, codec.as_ref())?;
        }
        let replaced = pending.peek().is_some_and(|r| r.tag == *tag);
        // A group length would no longer be true; it is retired, so it goes.
        if !replaced && *tag != PATIENT_GROUP_LENGTH {
            out.extend_from_slice(&head[*start..element_end(i)]);
        }
    }
    for r in pending {
        encode(&mut out, r, layout, codec.as_ref())?;
    }
    Some((out, region_end))
}

/// The value of one encoded element (its header skipped).
fn element_value(element: &[u8], layout: Layout) -> Option<&[u8]> {
    let header = if !layout.explicit_vr {
        8
    } else if matches!(
        element.get(4..6)?,
        b"OB" | b"OW" | b"OF" | b"SQ" | b"UT" | b"UN" | b"UC" | b"UR"
    ) {
        12
    } else {
        8
    };
    element.get(header..)
}

fn encode(
    out: &mut Vec<u8>,
    r: &Replacement,
    layout: Layout,
    codec: Option<&SpecificCharacterSet>,
) -> Option<()> {
    let mut value = match codec {
        Some(codec) => codec.encode(&r.value).ok()?,
        None => r.value.clone().into_bytes(),
    };
    if value.len() % 2 == 1 {
        value.push(b' ');
    }
    let len = u16::try_from(value.len()).ok()?;
    let (group, element) = r.tag;
    if layout.big_endian {
        out.extend_from_slice(&group.to_be_bytes());
        out.extend_from_slice(&element.to_be_bytes());
    } else {
        out.extend_from_slice(&group.to_le_bytes());
        out.extend_from_slice(&element.to_le_bytes());
    }
    if layout.explicit_vr {
        out.extend_from_slice(&r.vr);
        if layout.big_endian {
            out.extend_from_slice(&len.to_be_bytes());
        } else {
            out.extend_from_slice(&len.to_le_bytes());
        }
    } else {
        out.extend_from_slice(&u32::from(len).to_le_bytes());
    }
    out.extend_from_slice(&value);
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_dictionary_std::tags;
    use dicom_encoding::TransferSyntaxIndex;
    use dicom_object::InMemDicomObject;

    const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";
    const IMPLICIT_LE: &str = "1.2.840.10008.1.2";
    const EXPLICIT_BE: &str = "1.2.840.10008.1.2.2";

    /// An object with what re-encoding would change: a sequence of undefined length, a
    /// private element, patient attributes with and without values.
    fn object(charset: Option<&str>) -> InMemDicomObject {
        let mut obj = InMemDicomObject::new_empty();
        if let Some(cs) = charset {
            obj.put(DataElement::new(
                tags::SPECIFIC_CHARACTER_SET,
                VR::CS,
                PrimitiveValue::from(cs),
            ));
        }
        obj.put(DataElement::new(
            tags::SOP_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from("1.2.3.4"),
        ));
        obj.put(DataElement::new(
            tags::PATIENT_NAME,
            VR::PN,
            PrimitiveValue::from("OLD^NAME"),
        ));
        obj.put(DataElement::new(
            tags::PATIENT_ID,
            VR::LO,
            PrimitiveValue::from("P1"),
        ));
        obj.put(DataElement::new(
            tags::PATIENT_BIRTH_DATE,
            VR::DA,
            PrimitiveValue::Empty,
        ));
        obj.put(DataElement::new(
            tags::PATIENT_SEX,
            VR::CS,
            PrimitiveValue::from("M"),
        ));
        obj.put(DataElement::new(
            tags::STUDY_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from("1.2.3"),
        ));
        obj
    }

    fn encoded(obj: &InMemDicomObject, ts: &str) -> Vec<u8> {
        let ts = dicom_transfer_syntax_registry::TransferSyntaxRegistry
            .get(ts)
            .unwrap();
        let mut out = Vec::new();
        obj.write_dataset_with_ts(&mut out, ts).unwrap();
        out
    }

    fn patient(name: Option<&str>, fields: i64) -> PatientRecord {
        PatientRecord {
            key: pacs_store::PatientKey {
                issuer: "HOSP".into(),
                patient_id: "P2".into(),
            },
            name: name.map(String::from),
            birth_date: Some("19990101".into()),
            sex: Some("F".into()),
            ris_fields: fields,
            ..PatientRecord::default()
        }
    }

    fn spliced(bytes: &[u8], ts: &str, p: &PatientRecord) -> InMemDicomObject {
        let (prefix, consumed) = splice_patient(bytes, ts, p).expect("spliced");
        let mut out = prefix;
        out.extend_from_slice(&bytes[consumed..]);
        let ts = dicom_transfer_syntax_registry::TransferSyntaxRegistry
            .get(ts)
            .unwrap();
        InMemDicomObject::read_dataset_with_ts(&out[..], ts).unwrap()
    }

    fn text(obj: &InMemDicomObject, tag: dicom_core::Tag) -> String {
        obj.element(tag).unwrap().to_str().unwrap().trim().to_string()
    }

    #[test]
    fn only_the_identifier_and_the_ris_set_demographics_change_in_every_native_syntax() {
        for ts in [EXPLICIT_LE, IMPLICIT_LE, EXPLICIT_BE] {
            let bytes = encoded(&object(None), ts);
            let p = patient(Some("NEW^NAME"), PatientRecord::RIS_NAME);
            let obj = spliced(&bytes, ts, &p);
            assert_eq!(text(&obj, tags::PATIENT_ID), "P2", "{ts}");
            assert_eq!(text(&obj, tags::ISSUER_OF_PATIENT_ID), "HOSP", "{ts}");
            assert_eq!(text(&obj, tags::PATIENT_NAME), "NEW^NAME", "{ts}");
            // Not set by the RIS: as stored.
            assert_eq!(text(&obj, tags::PATIENT_SEX), "M", "{ts}");
            assert_eq!(text(&obj, tags::PATIENT_BIRTH_DATE), "", "{ts}");
            assert_eq!(text(&obj, tags::STUDY_INSTANCE_UID), "1.2.3", "{ts}");
            // Everything after the patient group is the stored bytes.
            let (prefix, consumed) = splice_patient(&bytes, ts, &p).unwrap();
            assert!(consumed < bytes.len() && prefix.len() > consumed, "{ts}");
        }
    }

    #[test]
    fn a_non_ascii_name_is_written_in_the_objects_character_set() {
        let p = patient(Some("DURAND^ÉLODIE"), PatientRecord::RIS_NAME);
        let bytes = encoded(&object(Some("ISO_IR 100")), EXPLICIT_LE);
        let (prefix, _) = splice_patient(&bytes, EXPLICIT_LE, &p).unwrap();
        assert!(prefix.windows(7).any(|w| w == b"DURAND^"));
        assert!(prefix.contains(&0xC9), "É in ISO 8859-1");
        assert_eq!(
            text(&spliced(&bytes, EXPLICIT_LE, &p), tags::PATIENT_NAME),
            "DURAND^ÉLODIE"
        );
        // No character set declared: UTF-8 is declared for it.
        let bytes = encoded(&object(None), EXPLICIT_LE);
        let obj = spliced(&bytes, EXPLICIT_LE, &p);
        assert_eq!(text(&obj, tags::SPECIFIC_CHARACTER_SET), "ISO_IR 192");
        assert_eq!(text(&obj, tags::PATIENT_NAME), "DURAND^ÉLODIE");
        // Code extensions are left to re-encoding.
        let bytes = encoded(&object(Some("\\ISO 2022 IR 87")), EXPLICIT_LE);
        assert!(splice_patient(&bytes, EXPLICIT_LE, &p).is_none());
    }
}
