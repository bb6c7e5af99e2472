//! C-GET / C-MOVE: which instances an identifier designates, and their bytes.

use std::io::Cursor;

use dicom_dictionary_std::tags;
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use pacs_model::{InformationModel, Matcher, QueryLevel, ValueKind};
use pacs_store::{columns, Condition, InstanceLocation, PatientRecord};
use tokio::io::AsyncReadExt;

use crate::{Archive, ArchiveError};

const PAGE: u32 = 1000;

/// Transfer syntaxes whose data sets we can re-encode without touching pixel data codecs.
const NATIVE_SYNTAXES: &[&str] = &[
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2.2",
    "1.2.840.10008.1.2.1.99",
];
const LITTLE_ENDIAN_TARGETS: &[&str] = &["1.2.840.10008.1.2", "1.2.840.10008.1.2.1"];

/// Puts the patient's current identity and demographics (from the RIS) into a copy of an
/// object being sent. Values the RIS did not give are left as stored.
pub fn patch_patient(obj: &mut InMemDicomObject, p: &pacs_store::PatientRecord) {
    use dicom_core::{DataElement, PrimitiveValue, VR};
    let mut put = |tag, vr, value: &str| {
        obj.put(DataElement::new(tag, vr, PrimitiveValue::from(value)));
    };
    put(tags::PATIENT_ID, VR::LO, &p.key.patient_id);
    if !p.key.issuer.is_empty() {
        put(tags::ISSUER_OF_PATIENT_ID, VR::LO, &p.key.issuer);
    }
    // Only what an explicit identity change set: not what other images of the patient said.
    if let Some(name) = p.ris_name() {
        put(tags::PATIENT_NAME, VR::PN, name);
    }
    if let Some(date) = p.ris_birth_date() {
        put(tags::PATIENT_BIRTH_DATE, VR::DA, date);
    }
    if let Some(sex) = p.ris_sex() {
        put(tags::PATIENT_SEX, VR::CS, sex);
    }
    // Non-ASCII values need a character set that can carry them.
    let needs_charset = [p.ris_name(), Some(p.key.patient_id.as_str())]
        .iter()
        .any(|v| v.is_some_and(|v| !v.is_ascii()));
    if needs_charset && obj.get(tags::SPECIFIC_CHARACTER_SET).is_none() {
        obj.put(DataElement::new(
            tags::SPECIFIC_CHARACTER_SET,
            VR::CS,
            PrimitiveValue::from("ISO_IR 192"),
        ));
    }
}

/// Whether a transfer syntax is native (uncompressed: implicit or explicit VR, either endian).
pub(crate) fn is_native(transfer_syntax: &str) -> bool {
    NATIVE_SYNTAXES.contains(&transfer_syntax.trim_end_matches(['\0', ' ']))
}

/// What a retrieval sends: the data set alone (DIMSE) or the whole Part 10 file (WADO-RS).
#[derive(Clone, Copy)]
enum Framing {
    DatasetOnly,
    Part10,
}

/// Frames as stored.
pub enum Frames {
    Native(Vec<Vec<u8>>),
    Encapsulated(Vec<Vec<u8>>),
}

/// The bitstream of frame `n` (1-based): all fragments for a single frame, one fragment per
/// frame when the counts agree, else the Basic Offset Table delimits them.
fn encapsulated_frame(
    fragments: &[Vec<u8>],
    offsets: &[u32],
    count: u64,
    n: usize,
) -> Result<Vec<u8>, ArchiveError> {
    if count == 1 {
        return Ok(fragments.concat());
    }
    if fragments.len() as u64 == count {
        return Ok(fragments[n - 1].clone());
    }
    if offsets.len() as u64 != count {
        return Err(ArchiveError::Invalid(
            "frames cannot be delimited (no Basic Offset Table)".into(),
        ));
    }
    // Offsets count bytes of fragment items, each with an 8-byte item header.
    let start = u64::from(offsets[n - 1]);
    let end = offsets.get(n).map(|o| u64::from(*o)).unwrap_or(u64::MAX);
    let mut position = 0u64;
    let mut frame = Vec::new();
    for fragment in fragments {
        if position >= start && position < end {
            frame.extend_from_slice(fragment);
        }
        position += 8 + fragment.len() as u64;
    }
    Ok(frame)
}

/// What is read of a stored object when it is opened, on the file backend in the same
/// blocking task as the open and the seek: all of most instances (a 512×512 CT image is
/// 0.5 MiB), so that sending one costs a single hand-over to the blocking pool instead of one
/// per open, seek and 256 KiB read. Larger objects continue in 256 KiB pieces. One such
/// buffer per instance being sent.
const RETRIEVE_HEAD: u64 = 1024 * 1024;

/// An instance opened for sending: a reader over exactly `len` bytes of data set.
pub struct OpenedDataset {
    pub reader: Box<dyn tokio::io::AsyncRead + Send + Unpin>,
    pub len: u64,
}

impl Archive {
    /// Instances designated by a retrieve identifier (its unique keys), current objects only.
    pub async fn resolve_retrieve(
        &self,
        model: InformationModel,
        identifier: &InMemDicomObject,
    ) -> Result<Vec<InstanceLocation>, ArchiveError> {
        let level = crate::query::query_level(model, identifier)?;
        let mut conditions = Vec::new();
        for (tag, kind) in [
            (tags::PATIENT_ID, ValueKind::Text),
            (tags::STUDY_INSTANCE_UID, ValueKind::Uid),
            (tags::SERIES_INSTANCE_UID, ValueKind::Uid),
            (tags::SOP_INSTANCE_UID, ValueKind::Uid),
        ] {
            let Some(value) = crate::ingest::text(identifier, tag) else {
                continue;
            };
            let matcher = Matcher::parse(kind, &value);
            if matcher == Matcher::Universal {
                continue;
            }
            if let Some(column) = columns::column_for_tag((tag.group(), tag.element())) {
                conditions.push(Condition { column, matcher });
            }
        }
        // The usual retrieve — one study, one of its series, or one instance — goes through the
        // unique UID indexes directly (a series of 1,000 instances: 3 ms instead of 14).
        // Ok(None): no condition on this key; Ok(Some(uid)): one exact value; Err: a list.
        let exact = |tag: dicom_core::Tag| -> Result<Option<&str>, ()> {
            let column = columns::column_for_tag((tag.group(), tag.element()));
            match conditions
                .iter()
                .find(|c| column.is_some_and(|col| std::ptr::eq(col, c.column)))
            {
                None => Ok(None),
                Some(Condition {
                    matcher: Matcher::Single(uid),
                    ..
                }) => Ok(Some(uid.as_str())),
                Some(_) => Err(()),
            }
        };
        if let (Ok(None), Ok(Some(study)), Ok(series), Ok(sop)) = (
            exact(tags::PATIENT_ID),
            exact(tags::STUDY_INSTANCE_UID),
            exact(tags::SERIES_INSTANCE_UID),
            exact(tags::SOP_INSTANCE_UID),
        ) {
            return self.instances_in(study, series, sop).await;
        }
        if conditions.is_empty() {
            // A retrieve without any unique key would send the whole archive.
            return Err(ArchiveError::MissingAttribute(format!(
                "a unique key for the {} level",
                level.as_str()
            )));
        }
        self.instances_matching(&conditions).await
    }

    /// Current instances of a study, or of one of its series, or one instance (WADO-RS).
    pub async fn instances_in(
        &self,
        study: &str,
        series: Option<&str>,
        sop_instance: Option<&str>,
    ) -> Result<Vec<InstanceLocation>, ArchiveError> {
        Ok(self.index.instances_in(study, series, sop_instance).await?)
    }

    /// Current instances whose index columns satisfy every condition, page by page.
    async fn instances_matching(
        &self,
        conditions: &[Condition],
    ) -> Result<Vec<InstanceLocation>, ArchiveError> {
        let mut out = Vec::new();
        let mut after = 0;
        loop {
            let rows = self
                .index
                .query(QueryLevel::Image, conditions, after, PAGE)
                .await?;
            let Some(last) = rows.last() else { break };
            after = last.pk;
            for row in rows {
                // The SQL filter is exact for unique keys except wildcards; re-check to be sure.
                let matches = conditions.iter().all(|c| {
                    let pos =
                        columns::columns_for(QueryLevel::Image).position(|col| std::ptr::eq(col, c.column));
                    pos.is_none_or(|p| c.matcher.matches(c.column.kind, row.values[p].as_deref()))
                });
                if let (true, Some(location)) = (matches, row.instance) {
                    out.push(location);
                }
            }
        }
        Ok(out)
    }

    /// Opens an instance as a whole Part 10 file in `target` syntax: the stored file as it is
    /// when the syntax matches, else a converted copy (in memory, one instance at a time).
    pub async fn open_part10(
        &self,
        location: &InstanceLocation,
        target: &str,
    ) -> Result<OpenedDataset, ArchiveError> {
        self.open_as(location, target, Framing::Part10).await
    }

    /// The current patient record of each of these instances whose patient's identity changed
    /// since it was stored (one query per 500 instances), for retrievals that send many
    /// instances: [`Archive::open_part10_patched`] then needs no query per instance.
    pub async fn patient_patches(
        &self,
        locations: &[InstanceLocation],
    ) -> Result<std::collections::HashMap<i64, PatientRecord>, ArchiveError> {
        let pks: Vec<i64> = locations.iter().map(|l| l.pk).collect();
        Ok(self.index.patient_patches(&pks).await?.into_iter().collect())
    }

    /// [`Archive::open_part10`] with the patient patch already looked up
    /// ([`Archive::patient_patches`]).
    pub async fn open_part10_patched(
        &self,
        location: &InstanceLocation,
        patch: Option<PatientRecord>,
        target: &str,
    ) -> Result<OpenedDataset, ArchiveError> {
        self.open_with(location, patch, target, Framing::Part10).await
    }

    /// An instance's bytes in `target` syntax: a stream over the stored file when the syntax
    /// matches, else a converted copy made in memory (one instance at a time), its pixel data
    /// decoded first when the stored syntax is compressed.
    async fn open_as(
        &self,
        location: &InstanceLocation,
        target: &str,
        framing: Framing,
    ) -> Result<OpenedDataset, ArchiveError> {
        // Identity changed by the RIS since the object was stored: a patched copy, never the
        // stored bytes changed.
        let patch = self
            .index
            .patient_patches(&[location.pk])
            .await?
            .pop()
            .map(|(_, p)| p);
        self.open_with(location, patch, target, framing).await
    }

    /// A stored instance as a local file, for the DICOM parser (a downloaded copy, removed
    /// when dropped, when blobs are not on a local disk).
    pub async fn local_blob(
        &self,
        location: &InstanceLocation,
    ) -> Result<pacs_store::LocalBlob, ArchiveError> {
        self.blobs
            .local(&location.blob_key)
            .await
            .map_err(ArchiveError::from_io)
    }

    /// [`Archive::open_as`] once the patient patch (if any) is known.
    async fn open_with(
        &self,
        location: &InstanceLocation,
        patch: Option<PatientRecord>,
        target: &str,
        framing: Framing,
    ) -> Result<OpenedDataset, ArchiveError> {
        if location.transfer_syntax == target {
            let start = match framing {
                Framing::DatasetOnly => location.dataset_offset,
                Framing::Part10 => 0,
            };
            // Where the data set starts in what is read.
            let dataset_at = (location.dataset_offset - start) as usize;
            let len = location.size.saturating_sub(start);
            let (head, rest) = self
                .blobs
                .open_head(&location.blob_key, start, RETRIEVE_HEAD)
                .await
                .map_err(ArchiveError::from_io)?;
            let read = head.len() as u64;
            // A patch goes into the stored bytes, the rest of the object untouched.
            let head = match &patch {
                None => Some(head),
                Some(p) => {
                    let stored = location.transfer_syntax.clone();
                    let p = p.clone();
                    tokio::task::spawn_blocking(move || {
                        head.get(dataset_at..).and_then(|dataset| {
                            crate::patch::splice_patient(dataset, &stored, &p).map(|(prefix, consumed)| {
                                let mut out = head[..dataset_at].to_vec();
                                out.extend_from_slice(&prefix);
                                out.extend_from_slice(&dataset[consumed..]);
                                out
                            })
                        })
                    })
                    .await
                    .map_err(|e| ArchiveError::Internal(e.to_string()))?
                }
            };
            if let Some(head) = head {
                // The rest, if any, in 256 KiB pieces: the sender asks for one PDU's worth at
                // a time.
                let rest = rest.take(len.saturating_sub(read));
                return Ok(OpenedDataset {
                    len: head.len() as u64 + rest.limit(),
                    reader: Box::new(Cursor::new(head).chain(rest)),
                });
            }
            // A patch that cannot be spliced: re-encoded below.
        }
        if !Self::can_send_as(&location.transfer_syntax, target) {
            return Err(ArchiveError::Invalid(format!(
                "cannot convert {} to {target}",
                location.transfer_syntax
            )));
        }
        if let Some(p) = &patch {
            tracing::debug!(sop = %location.sop_uid, patient = %p.key.patient_id, "patient attributes patched on retrieval");
        }
        let target = target.to_string();
        let stored = location.transfer_syntax.clone();
        let limits = self.limits;
        let local = self.local_blob(location).await?;
        let bytes = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, ArchiveError> {
            let mut obj = crate::open_stored_object(local.path(), limits)?;
            if let Some(p) = &patch {
                patch_patient(&mut obj, p);
            }
            if stored != target && !NATIVE_SYNTAXES.contains(&stored.as_str()) {
                obj = pacs_imaging::to_explicit_le(obj)
                    .map_err(|e| ArchiveError::Invalid(format!("cannot decode {stored}: {e}")))?;
            }
            let ts = TransferSyntaxRegistry
                .get(&target)
                .ok_or_else(|| ArchiveError::Invalid(format!("unknown transfer syntax {target}")))?;
            let mut out = Vec::new();
            let written = match framing {
                Framing::DatasetOnly => obj.write_dataset_with_ts(&mut out, ts),
                Framing::Part10 => {
                    obj.meta_mut().set_transfer_syntax(ts);
                    obj.write_all(&mut out)
                }
            };
            written.map_err(|e| ArchiveError::Invalid(format!("cannot re-encode: {e}")))?;
            Ok(out)
        })
        .await
        .map_err(|e| ArchiveError::Internal(e.to_string()))??;
        let len = bytes.len() as u64;
        Ok(OpenedDataset {
            reader: Box::new(Cursor::new(bytes)),
            len,
        })
    }

    /// The raw value of one element of a stored instance (WADO-RS bulk data), read into memory
    /// (one instance at a time). `Ok(None)`: no such element. Encapsulated pixel data has no
    /// single value and is refused.
    pub async fn bulk_value(
        &self,
        location: &InstanceLocation,
        group: u16,
        element: u16,
    ) -> Result<Option<Vec<u8>>, ArchiveError> {
        let local = self.local_blob(location).await?;
        let limits = self.limits;
        tokio::task::spawn_blocking(move || {
            let obj = crate::open_stored_object(local.path(), limits)?;
            let Some(e) = obj.get(dicom_core::Tag(group, element)) else {
                return Ok(None);
            };
            e.value()
                .to_bytes()
                .map(|b| Some(b.into_owned()))
                .map_err(|_| ArchiveError::Invalid("encapsulated pixel data is served as frames".into()))
        })
        .await
        .map_err(|e| ArchiveError::Internal(e.to_string()))?
    }

    /// Frames of an instance (1-based numbers), as stored: uncompressed frame bytes for native
    /// syntaxes, the compressed bitstream of each frame for encapsulated ones. The object is
    /// read into memory, one instance at a time.
    /// With `decode`, compressed frames are decoded and returned as native ones.
    pub async fn frames(
        &self,
        location: &InstanceLocation,
        numbers: &[u32],
        decode: bool,
    ) -> Result<Frames, ArchiveError> {
        let local = self.local_blob(location).await?;
        let numbers = numbers.to_vec();
        let limits = self.limits;
        tokio::task::spawn_blocking(move || {
            let mut obj = crate::open_stored_object(local.path(), limits)?;
            let encapsulated = obj
                .get(tags::PIXEL_DATA)
                .is_some_and(|p| p.value().fragments().is_some());
            if decode && encapsulated {
                obj = pacs_imaging::to_explicit_le(obj)
                    .map_err(|e| ArchiveError::Invalid(format!("cannot decode these frames: {e}")))?;
            }
            let number = |tag| crate::ingest::text(&obj, tag).and_then(|v| v.trim().parse::<u64>().ok());
            let count = number(tags::NUMBER_OF_FRAMES).unwrap_or(1).max(1);
            if let Some(n) = numbers.iter().find(|n| **n == 0 || u64::from(**n) > count) {
                return Err(ArchiveError::MissingAttribute(format!(
                    "frame {n} (the instance has {count})"
                )));
            }
            let pixels = obj
                .get(tags::PIXEL_DATA)
                .ok_or_else(|| ArchiveError::MissingAttribute("PixelData".into()))?;
            if let Some(fragments) = pixels.value().fragments() {
                let offsets = pixels.value().offset_table().unwrap_or(&[]);
                let frames = numbers
                    .iter()
                    .map(|n| encapsulated_frame(fragments, offsets, count, *n as usize))
                    .collect::<Result<_, _>>()?;
                return Ok(Frames::Encapsulated(frames));
            }
            let bits = number(tags::BITS_ALLOCATED).unwrap_or(16);
            if bits % 8 != 0 {
                return Err(ArchiveError::Invalid(format!(
                    "{bits}-bit frames are not served yet"
                )));
            }
            let size = number(tags::ROWS).unwrap_or(0)
                * number(tags::COLUMNS).unwrap_or(0)
                * number(tags::SAMPLES_PER_PIXEL).unwrap_or(1)
                * (bits / 8);
            let bytes = pixels
                .value()
                .to_bytes()
                .map_err(|e| ArchiveError::Invalid(format!("unreadable pixel data: {e}")))?;
            let frames = numbers
                .iter()
                .map(|n| {
                    let start = (u64::from(*n) - 1) * size;
                    bytes
                        .get(start as usize..(start + size) as usize)
                        .map(<[u8]>::to_vec)
                        .ok_or_else(|| ArchiveError::Invalid(format!("pixel data too short for frame {n}")))
                })
                .collect::<Result<_, _>>()?;
            Ok(Frames::Native(frames))
        })
        .await
        .map_err(|e| ArchiveError::Internal(e.to_string()))?
    }

    /// Whether an instance stored in `stored` can be sent as `target`: the same syntax, or
    /// little endian from a native syntax or from a compressed one we can decode.
    pub fn can_send_as(stored: &str, target: &str) -> bool {
        stored == target
            || (LITTLE_ENDIAN_TARGETS.contains(&target)
                && (NATIVE_SYNTAXES.contains(&stored) || pacs_imaging::can_decode(stored)))
    }

    /// Opens the data set of an instance in `target` syntax: the original bytes when it is the
    /// stored syntax, a re-encoded copy (in memory, one instance at a time) otherwise.
    pub async fn open_dataset(&self, pk: i64, target: &str) -> Result<OpenedDataset, ArchiveError> {
        // One query for the location and the patient patch: this runs once per instance sent.
        let (location, patch) = self
            .index
            .instance_for_retrieval(pk)
            .await?
            .ok_or_else(|| ArchiveError::Invalid(format!("instance {pk} not in the index")))?;
        self.open_with(&location, patch, target, Framing::DatasetOnly)
            .await
    }
}
