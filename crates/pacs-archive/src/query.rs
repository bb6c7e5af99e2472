//! C-FIND (and later QIDO-RS): identifier → SQL prefilter → matching engine → responses.
//!
//! The index narrows candidates with the indexed columns; every candidate is then checked by
//! the one matching engine (`pacs_model::Matcher`) against every key, reading attributes the
//! index has no column for from the stored header. Results stream out page by page, so memory
//! stays bounded whatever the query matches.

use dicom_core::header::Header;
use dicom_core::value::DataSetSequence;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use pacs_model::{InformationModel, Matcher, QueryLevel, ValueKind};
use pacs_store::columns::{self, Column};
use pacs_store::{Condition, SortKey};
use tokio::sync::mpsc;

use crate::{Archive, ArchiveError};

const PAGE: u32 = 256;
/// The largest first statement of a sorted search (see [`Archive::find_sorted`]).
const MAX_SORTED_PAGE: u64 = 5_000;

/// One key of a query identifier.
#[derive(Debug)]
struct Key {
    tag: Tag,
    vr: VR,
    kind: ValueKind,
    matcher: Matcher,
    /// A multi-valued code string key (e.g. ModalitiesInStudy `CT\MR`): matches when any of
    /// these does. Workstations send such lists although only UIDs are list-matched in PS3.4.
    any_of: Vec<Matcher>,
    /// Position in the row values when the index has a column for it at this level.
    position: Option<usize>,
}

impl Key {
    fn matches(&self, value: Option<&str>) -> bool {
        if self.any_of.is_empty() {
            self.matcher.matches(self.kind, value)
        } else {
            self.any_of.iter().any(|m| m.matches(self.kind, value))
        }
    }
}

/// A parsed C-FIND identifier.
#[derive(Debug)]
pub struct FindQuery {
    level: QueryLevel,
    keys: Vec<Key>,
    /// Specific Character Set of the query, echoed when answers are plain ASCII.
    query_charset: Option<String>,
    model: InformationModel,
}

/// Unique keys required in responses, per level (PS3.4 C.4.1.1.3): study root omits PatientID.
fn unique_keys(model: InformationModel, level: QueryLevel) -> Vec<Tag> {
    let mut keys = Vec::new();
    if model == InformationModel::PatientRoot {
        keys.push(tags::PATIENT_ID);
    }
    let depth = columns::depth(level);
    if depth >= 1 {
        keys.push(tags::STUDY_INSTANCE_UID);
    }
    if depth >= 2 {
        keys.push(tags::SERIES_INSTANCE_UID);
    }
    if depth >= 3 {
        keys.push(tags::SOP_INSTANCE_UID);
    }
    keys
}

/// The value of `tag` in a stored DICOM JSON header, in the form `vr` needs. `None` when the
/// attribute is absent or only referenced as bulk data; sequences come back empty.
fn json_value(header: &serde_json::Value, tag: Tag, vr: VR) -> Option<PrimitiveValue> {
    let entry = header.get(format!("{:04X}{:04X}", tag.group(), tag.element()))?;
    if entry.get("BulkDataURI").is_some() {
        return None;
    }
    let Some(values) = entry.get("Value").and_then(|v| v.as_array()) else {
        return Some(PrimitiveValue::Empty);
    };
    let number = |v: &serde_json::Value| {
        v.as_f64()
            .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
    };
    let text = |v: &serde_json::Value| -> Option<String> {
        match v {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            serde_json::Value::Object(pn) => {
                let groups: Vec<&str> = ["Alphabetic", "Ideographic", "Phonetic"]
                    .iter()
                    .map(|k| pn.get(*k).and_then(|g| g.as_str()).unwrap_or(""))
                    .collect();
                pn.contains_key("Alphabetic")
                    .then(|| groups.join("=").trim_end_matches('=').to_string())
            }
            _ => None,
        }
    };
    Some(match vr {
        VR::SQ => PrimitiveValue::Empty,
        VR::US => PrimitiveValue::U16(values.iter().filter_map(number).map(|n| n as u16).collect()),
        VR::SS => PrimitiveValue::I16(values.iter().filter_map(number).map(|n| n as i16).collect()),
        VR::UL => PrimitiveValue::U32(values.iter().filter_map(number).map(|n| n as u32).collect()),
        VR::SL => PrimitiveValue::I32(values.iter().filter_map(number).map(|n| n as i32).collect()),
        VR::FL => PrimitiveValue::F32(values.iter().filter_map(number).map(|n| n as f32).collect()),
        VR::FD => PrimitiveValue::F64(values.iter().filter_map(number).collect()),
        _ => PrimitiveValue::Strs(values.iter().filter_map(text).collect()),
    })
}

/// The VR the standard dictionary gives a tag.
fn dictionary_vr(tag: Tag) -> Option<VR> {
    use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
    dicom_dictionary_std::StandardDataDictionary
        .by_tag(tag)
        .map(|e| e.vr().relaxed())
}

/// The QueryRetrieveLevel of an identifier, checked against the information model.
pub(crate) fn query_level(
    model: InformationModel,
    identifier: &InMemDicomObject,
) -> Result<QueryLevel, ArchiveError> {
    let level_text = crate::ingest::text(identifier, tags::QUERY_RETRIEVE_LEVEL)
        .ok_or_else(|| ArchiveError::MissingAttribute("QueryRetrieveLevel".into()))?;
    let level = QueryLevel::parse(&level_text)
        .ok_or_else(|| ArchiveError::Invalid(format!("unknown QueryRetrieveLevel {level_text:?}")))?;
    if model == InformationModel::StudyRoot && level == QueryLevel::Patient {
        return Err(ArchiveError::Invalid(
            "PATIENT level is not part of the Study Root model".into(),
        ));
    }
    Ok(level)
}

impl FindQuery {
    /// Reads the level and keys of an identifier.
    pub fn parse(model: InformationModel, identifier: &InMemDicomObject) -> Result<FindQuery, ArchiveError> {
        let level = query_level(model, identifier)?;
        let positions: Vec<&Column> = columns::columns_for(level).collect();
        let mut keys = Vec::new();
        for element in identifier.iter() {
            let tag = element.tag();
            if tag == tags::QUERY_RETRIEVE_LEVEL
                || tag == tags::SPECIFIC_CHARACTER_SET
                || tag.group() == 0x0002
                // Group lengths are encoding details, not keys.
                || tag.element() == 0x0000
            {
                continue;
            }
            // The attribute's own VR decides how it matches (and which index column form it
            // is compared with), whatever VR the identifier used (UN, or a wrong one).
            let vr = match element.vr() {
                VR::UN => dictionary_vr(tag).unwrap_or(VR::UN),
                vr => vr,
            };
            let column = columns::column_for_tag((tag.group(), tag.element()));
            let kind = column.map_or_else(|| ValueKind::from_vr(vr), |c| c.kind);
            let matcher = if vr == VR::SQ {
                // Sequence matching is not supported: the key is returned, never filtered on.
                Matcher::Universal
            } else {
                let raw = match element.vr() {
                    VR::UN => element
                        .value()
                        .to_bytes()
                        .map(|b| String::from_utf8_lossy(&b).into_owned())
                        .unwrap_or_default(),
                    _ => element.to_str().map(|s| s.into_owned()).unwrap_or_default(),
                };
                Matcher::parse(kind, &raw)
            };
            let (matcher, any_of) = match &matcher {
                Matcher::Single(v) if vr == VR::CS && v.contains('\\') => (
                    Matcher::Universal,
                    v.split('\\').map(|one| Matcher::parse(kind, one)).collect(),
                ),
                _ => (matcher, Vec::new()),
            };
            let position = positions
                .iter()
                .position(|c| c.tag == (tag.group(), tag.element()));
            keys.push(Key {
                tag,
                vr,
                kind,
                matcher,
                any_of,
                position,
            });
        }
        for tag in unique_keys(model, level) {
            if !keys.iter().any(|k| k.tag == tag) {
                let vr = if tag == tags::PATIENT_ID { VR::LO } else { VR::UI };
                let position = positions
                    .iter()
                    .position(|c| c.tag == (tag.group(), tag.element()));
                keys.push(Key {
                    tag,
                    vr,
                    kind: ValueKind::from_vr(vr),
                    matcher: Matcher::Universal,
                    any_of: Vec::new(),
                    position,
                });
            }
        }
        keys.sort_by_key(|k| k.tag);
        Ok(FindQuery {
            level,
            keys,
            query_charset: crate::ingest::text(identifier, tags::SPECIFIC_CHARACTER_SET),
            model,
        })
    }

    pub fn level(&self) -> QueryLevel {
        self.level
    }

    /// Person-name keys match by words from then on (`pacs_model::name_words`: "elodie"
    /// finds `DURAND^ELODIE`), for searches that ask for it (QIDO-RS and REST
    /// `fuzzymatching=true`); C-FIND never does.
    pub fn match_names_by_words(&mut self) {
        for key in self.keys.iter_mut().filter(|k| k.kind == ValueKind::PersonName) {
            key.matcher = std::mem::replace(&mut key.matcher, Matcher::Universal).into_name_words();
        }
    }

    /// Value of a key in the query, if it is a single value (used for audit).
    pub fn single_value(&self, tag: Tag) -> Option<&str> {
        self.keys
            .iter()
            .find(|k| k.tag == tag)
            .and_then(|k| match &k.matcher {
                Matcher::Single(v) => Some(v.as_str()),
                _ => None,
            })
    }

    /// Index conditions for the keys that have a filterable column.
    pub(crate) fn conditions(&self) -> Vec<Condition> {
        self.keys
            .iter()
            .filter(|k| k.matcher != Matcher::Universal)
            .filter_map(|k| {
                let column = columns::column_for_tag((k.tag.group(), k.tag.element()))?;
                (columns::depth(column.level) <= columns::depth(self.level)).then(|| Condition {
                    column,
                    matcher: k.matcher.clone(),
                })
            })
            .collect()
    }
}

/// A value found for a key: from an index column (text) or from the stored header.
enum Found {
    Text(String),
    Element(PrimitiveValue),
    Absent,
}

impl Archive {
    /// Streams the matches of `query` into `results`; stops early when the receiver is gone.
    pub async fn find(
        &self,
        query: &FindQuery,
        results: &mpsc::Sender<InMemDicomObject>,
    ) -> Result<u64, ArchiveError> {
        self.find_sorted(query, &[], 0, results).await
    }

    /// [`Archive::find`] with the matches in the order of `sort` (in index order when empty).
    /// `expected` is how many matches the caller will read at least (its page's offset and
    /// size): a sorted query reads that many rows in its first statement rather than sorting
    /// the whole result again for every page of [`PAGE`] rows it skips.
    pub async fn find_sorted(
        &self,
        query: &FindQuery,
        sort: &[SortKey],
        expected: usize,
        results: &mpsc::Sender<InMemDicomObject>,
    ) -> Result<u64, ArchiveError> {
        let conditions = query.conditions();
        let mut after = 0;
        let mut offset = 0u64;
        let mut sent = 0u64;
        loop {
            let rows = if sort.is_empty() {
                self.index.query(query.level, &conditions, after, PAGE).await?
            } else {
                // At most MAX_SORTED_PAGE rows at once: memory stays bounded.
                let rows = if offset == 0 {
                    (expected as u64).clamp(u64::from(PAGE), MAX_SORTED_PAGE) as u32
                } else {
                    PAGE
                };
                self.index
                    .query_sorted(query.level, &conditions, sort, offset, rows)
                    .await?
            };
            let Some(last) = rows.last() else { break };
            after = last.pk;
            offset += rows.len() as u64;
            for row in rows {
                let mut header: Option<Option<serde_json::Value>> = None;
                let mut values = Vec::with_capacity(query.keys.len());
                let mut matched = true;
                for key in &query.keys {
                    let found = match key.position {
                        Some(i) => row.values[i].clone().map_or(Found::Absent, Found::Text),
                        // Answered by the archive itself (see `response`), not from the header.
                        None if key.tag == tags::INSTANCE_AVAILABILITY
                            || key.tag == tags::RETRIEVE_AE_TITLE =>
                        {
                            Found::Absent
                        }
                        None => {
                            if header.is_none() {
                                header = Some(self.load_header(query.level, row.pk).await?);
                            }
                            match header
                                .as_ref()
                                .and_then(|h| h.as_ref())
                                .and_then(|h| json_value(h, key.tag, key.vr))
                            {
                                Some(v) => Found::Element(v),
                                None => Found::Absent,
                            }
                        }
                    };
                    let text = match &found {
                        Found::Text(t) => Some(t.clone()),
                        Found::Element(v) => Some(v.to_str().into_owned()),
                        Found::Absent => None,
                    };
                    if !key.matches(text.as_deref()) {
                        matched = false;
                        break;
                    }
                    values.push(found);
                }
                if !matched {
                    continue;
                }
                let response = self.response(query, values);
                if results.send(response).await.is_err() {
                    return Ok(sent);
                }
                sent += 1;
            }
        }
        Ok(sent)
    }

    /// The stored header of a row as JSON (parsed once per row, never into a full object).
    async fn load_header(
        &self,
        level: QueryLevel,
        pk: i64,
    ) -> Result<Option<serde_json::Value>, ArchiveError> {
        let Some(json) = self.index.header(level, pk).await? else {
            return Ok(None);
        };
        match serde_json::from_str(&json) {
            Ok(v) => Ok(Some(v)),
            Err(e) => {
                tracing::warn!(error = %e, pk, "stored header unreadable; treating attributes as absent");
                Ok(None)
            }
        }
    }

    fn response(&self, query: &FindQuery, values: Vec<Found>) -> InMemDicomObject {
        let mut obj = InMemDicomObject::new_empty();
        let mut non_ascii = false;
        obj.put(DataElement::new(
            tags::QUERY_RETRIEVE_LEVEL,
            VR::CS,
            PrimitiveValue::from(query.level.as_str()),
        ));
        for (key, found) in query.keys.iter().zip(values) {
            if key.vr == VR::SQ {
                obj.put(DataElement::new(
                    key.tag,
                    VR::SQ,
                    DataSetSequence::<InMemDicomObject>::empty(),
                ));
                continue;
            }
            let value = if key.tag == tags::RETRIEVE_AE_TITLE {
                PrimitiveValue::from(self.ae_title.as_str())
            } else if key.tag == tags::INSTANCE_AVAILABILITY {
                PrimitiveValue::from("ONLINE")
            } else {
                match found {
                    // Binary numbers kept as text in the index go back to their binary form.
                    Found::Text(t) if matches!(key.vr, VR::US | VR::SS | VR::UL | VR::SL) => match key.vr {
                        VR::US => t.trim().parse::<u16>().map(PrimitiveValue::from),
                        VR::SS => t.trim().parse::<i16>().map(PrimitiveValue::from),
                        VR::UL => t.trim().parse::<u32>().map(PrimitiveValue::from),
                        _ => t.trim().parse::<i32>().map(PrimitiveValue::from),
                    }
                    .unwrap_or(PrimitiveValue::Empty),
                    Found::Text(t) => {
                        non_ascii |= !t.is_ascii();
                        PrimitiveValue::from(t)
                    }
                    Found::Element(v) => {
                        if let PrimitiveValue::Str(s) = &v {
                            non_ascii |= !s.is_ascii();
                        }
                        if let PrimitiveValue::Strs(s) = &v {
                            non_ascii |= s.iter().any(|s| !s.is_ascii());
                        }
                        v
                    }
                    Found::Absent => PrimitiveValue::Empty,
                }
            };
            obj.put(DataElement::new(key.tag, key.vr, value));
        }
        let _ = query.model;
        if non_ascii {
            obj.put(DataElement::new(
                tags::SPECIFIC_CHARACTER_SET,
                VR::CS,
                PrimitiveValue::from("ISO_IR 192"),
            ));
        } else if let Some(cs) = &query.query_charset {
            obj.put(DataElement::new(
                tags::SPECIFIC_CHARACTER_SET,
                VR::CS,
                PrimitiveValue::from(cs.as_str()),
            ));
        }
        obj
    }
}
