//! A re-sent object whose bytes differ from the stored one with its SOP Instance UID.
//!
//! Routers and senders re-encode what they forward (trailing padding dropped, group lengths
//! added or removed, sequences of defined or undefined length, another transfer syntax): the
//! object is the same, and the stored original is kept, whatever the policy. Otherwise the
//! tenant's [`DuplicatePolicy`] decides: the first stays (what Orthanc and dcm4chee do by
//! default) or the newest becomes current with the previous kept, superseded.

use std::path::Path;

use dicom_core::header::Header;
use dicom_core::value::Value;
use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use pacs_dimse::dataset_check::Limits;

use crate::ArchiveError;

/// What happens when an object arrives with a known SOP Instance UID and other content.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DuplicatePolicy {
    /// The object stored first stays current; the re-send is audited, not indexed.
    #[default]
    KeepFirst,
    /// The newest becomes current; the previous one is kept, superseded.
    Replace,
}

/// Whether two stored objects hold the same attribute values and pixel data, whatever their
/// encodings. Both are read whole (within `limits`): this runs only for re-sends with other
/// bytes, which are rare.
pub(crate) fn same_object(stored: &Path, received: &Path, limits: Limits) -> Result<bool, ArchiveError> {
    let a = crate::open_stored_object(stored, limits)?;
    let b = crate::open_stored_object(received, limits)?;
    let (ts_a, ts_b) = (
        a.meta().transfer_syntax().to_string(),
        b.meta().transfer_syntax().to_string(),
    );
    let native = |ts: &str| crate::retrieve::is_native(ts);
    if ts_a == ts_b || (native(&ts_a) && native(&ts_b)) {
        return Ok(same_dataset(&a, &b));
    }
    // Another compression: the same object only if both decode to the same pixels.
    let decode = |obj| pacs_imaging::to_explicit_le(obj).ok();
    Ok(match (decode(a), decode(b)) {
        (Some(a), Some(b)) => same_dataset(&a, &b),
        _ => false,
    })
}

/// Elements that say how a data set was encoded, not what it holds.
fn encoding_only(tag: Tag) -> bool {
    tag.element() == 0x0000 || tag == tags::DATA_SET_TRAILING_PADDING
}

fn same_dataset(a: &InMemDicomObject, b: &InMemDicomObject) -> bool {
    let meaningful = |o: &InMemDicomObject| -> Vec<Tag> {
        o.iter().map(|e| e.tag()).filter(|t| !encoding_only(*t)).collect()
    };
    if meaningful(a) != meaningful(b) {
        return false;
    }
    a.iter().filter(|e| !encoding_only(e.tag())).all(|ea| {
        let Some(eb) = b.get(ea.tag()) else {
            return false;
        };
        match (ea.value(), eb.value()) {
            (Value::Sequence(sa), Value::Sequence(sb)) => {
                sa.items().len() == sb.items().len()
                    && sa
                        .items()
                        .iter()
                        .zip(sb.items())
                        .all(|(ia, ib)| same_dataset(ia, ib))
            }
            (Value::PixelSequence(pa), Value::PixelSequence(pb)) => pa.fragments() == pb.fragments(),
            (Value::Primitive(_), Value::Primitive(_)) => {
                let trimmed = |v: &Value<InMemDicomObject>| {
                    let bytes = v.to_bytes().map(|b| b.into_owned()).unwrap_or_default();
                    let end = bytes
                        .iter()
                        .rposition(|c| *c != b' ' && *c != 0)
                        .map_or(0, |i| i + 1);
                    bytes[..end].to_vec()
                };
                trimmed(ea.value()) == trimmed(eb.value())
            }
            _ => false,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_core::{DataElement, PrimitiveValue, VR};

    fn object(name: &str, group_length: bool) -> InMemDicomObject {
        let mut obj = InMemDicomObject::new_empty();
        if group_length {
            obj.put(DataElement::new(
                Tag(0x0010, 0x0000),
                VR::UL,
                PrimitiveValue::from(18u32),
            ));
        }
        obj.put(DataElement::new(
            tags::PATIENT_NAME,
            VR::PN,
            PrimitiveValue::from(name),
        ));
        obj.put(DataElement::new(tags::ROWS, VR::US, PrimitiveValue::from(512u16)));
        obj
    }

    #[test]
    fn encodings_do_not_make_another_object_values_do() {
        assert!(same_dataset(
            &object("DOE^JOHN", false),
            &object("DOE^JOHN ", true)
        ));
        assert!(!same_dataset(
            &object("DOE^JOHN", false),
            &object("DOE^JANE", false)
        ));
        let mut more = object("DOE^JOHN", false);
        more.put(DataElement::new(
            tags::PATIENT_SEX,
            VR::CS,
            PrimitiveValue::from("M"),
        ));
        assert!(!same_dataset(&object("DOE^JOHN", false), &more));
    }
}
