//! The ingest pipeline shared by C-STORE and `openpacs import`.
//!
//! Bytes stream into a temporary blob (Part 10: preamble, file meta group, then the data set as
//! received). When the object is complete the header is parsed from the temporary file (never
//! the pixel data), checked, the blob is fsynced and renamed to its content path, and the index
//! writer commits the rows (after fsyncing the blob directory). Only then is success returned:
//! that is the promise an acknowledgement makes.

use std::io::{self, Read};
use std::path::Path;
use std::sync::Arc;

use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::file::ReadPreamble;
use dicom_object::meta::{FileMetaTable, FileMetaTableBuilder};
use dicom_object::{DefaultDicomObject, InMemDicomObject, OpenFileOptions};
use pacs_dimse::dataset_check;
use pacs_model::{fold_person_name, normalize_date, url_segment};
use pacs_store::{
    AuditEvent, BlobLockMode, IndexOutcome, NewInstance, PatientAttrs, SeriesAttrs, StudyAttrs, TempBlob,
};

use crate::{Archive, ArchiveError};

/// ImplementationClassUID we write in the file meta groups we create (a UUID-derived 2.25 UID).
pub const IMPLEMENTATION_CLASS_UID: &str = "2.25.223339581390848577215532102049396104441";
pub const IMPLEMENTATION_VERSION_NAME: &str = "OPENPACS_010";

/// Who sent an object, for the index and the audit trail.
#[derive(Clone, Debug, Default)]
pub struct Source {
    /// Calling AE title, or "import:<user>" for files.
    pub actor: String,
    pub peer: String,
    /// The caller audits the whole request in one line (STOW-RS: one request may carry
    /// thousands of parts); no line per object then.
    pub audited_by_caller: bool,
}

/// How a store ended, for the protocol layer to turn into a status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreResult {
    Stored,
    Duplicate,
    /// Stored and made current; the previous object with that SOP Instance UID is kept, superseded.
    Replaced,
    /// Another object with a known SOP Instance UID, not indexed: the first one stays current
    /// (duplicate policy `keep-first`); the re-send is audited.
    KeptFirst,
}

/// An object being received.
pub struct Incoming {
    archive: Arc<Archive>,
    blob: TempBlob,
    source: Source,
    /// SOP class and instance announced by the sender (C-STORE command or file meta).
    expected: Option<(String, String)>,
    /// Study the object must belong to (STOW-RS to `/studies/{study}`).
    expected_study: Option<String>,
    /// Part 10 bytes arriving before the data set offset is known (STOW-RS parts).
    pending_meta: Option<Vec<u8>>,
}

/// A refused object, with its SOP Class and Instance UIDs when they could be read.
#[derive(Debug)]
pub struct Refused {
    pub error: ArchiveError,
    pub identity: Option<(String, String)>,
}

/// What was stored, for protocol responses that name it (STOW-RS).
#[derive(Clone, Debug)]
pub struct StoredInstance {
    pub result: StoreResult,
    /// Bytes of the stored object (the blob).
    pub bytes: u64,
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    pub patient_id: String,
}

impl Archive {
    /// Starts receiving a C-STORE data set: writes the file meta group for `transfer_syntax`.
    pub fn begin_store(
        self: &Arc<Self>,
        source: Source,
        sop_class_uid: &str,
        sop_instance_uid: &str,
        transfer_syntax_uid: &str,
    ) -> Result<Incoming, ArchiveError> {
        let meta = FileMetaTableBuilder::new()
            .media_storage_sop_class_uid(sop_class_uid)
            .media_storage_sop_instance_uid(sop_instance_uid)
            .transfer_syntax(transfer_syntax_uid)
            .implementation_class_uid(IMPLEMENTATION_CLASS_UID)
            .implementation_version_name(IMPLEMENTATION_VERSION_NAME)
            .build()
            .map_err(|e| ArchiveError::Invalid(format!("cannot build file meta group: {e}")))?;
        let mut header = Vec::with_capacity(384);
        header.extend_from_slice(&[0u8; 128]);
        header.extend_from_slice(b"DICM");
        meta.write(&mut header)
            .map_err(|e| ArchiveError::Invalid(format!("cannot write file meta group: {e}")))?;
        let mut blob = self.blobs.create_temp().map_err(ArchiveError::from_io)?;
        if let Err(e) = blob.write(&header) {
            blob.discard();
            return Err(ArchiveError::from_io(e));
        }
        blob.mark_dataset_start();
        Ok(Incoming {
            archive: self.clone(),
            blob,
            source,
            expected: Some((sop_class_uid.to_string(), sop_instance_uid.to_string())),
            expected_study: None,
            pending_meta: None,
        })
    }

    /// Starts receiving a whole Part 10 file as a stream (a STOW-RS part), kept byte for byte.
    pub fn begin_part10(
        self: &Arc<Self>,
        source: Source,
        expected_study: Option<String>,
    ) -> Result<Incoming, ArchiveError> {
        let blob = self.blobs.create_temp().map_err(ArchiveError::from_io)?;
        Ok(Incoming {
            archive: self.clone(),
            blob,
            source,
            expected: None,
            expected_study,
            pending_meta: Some(Vec::with_capacity(144)),
        })
    }

    /// Imports one Part 10 file as it is (its own file meta group kept byte for byte).
    pub async fn import_file(
        self: &Arc<Self>,
        path: &Path,
        source: Source,
    ) -> Result<StoreResult, ArchiveError> {
        let archive = self.clone();
        let path = path.to_path_buf();
        let incoming = tokio::task::spawn_blocking(move || -> Result<Incoming, ArchiveError> {
            let (_, offset) = read_part10_meta(&path)?;
            let mut file = std::fs::File::open(&path).map_err(ArchiveError::from_io)?;
            let mut blob = archive.blobs.create_temp().map_err(ArchiveError::from_io)?;
            blob.set_dataset_offset(offset);
            let copied = (|| -> io::Result<()> {
                use std::io::Seek;
                file.seek(io::SeekFrom::Start(0))?;
                let mut buf = vec![0u8; 256 * 1024];
                loop {
                    let n = file.read(&mut buf)?;
                    if n == 0 {
                        return Ok(());
                    }
                    blob.write(&buf[..n])?;
                }
            })();
            if let Err(e) = copied {
                blob.discard();
                return Err(ArchiveError::from_io(e));
            }
            Ok(Incoming {
                archive,
                blob,
                source,
                expected: None,
                expected_study: None,
                pending_meta: None,
            })
        })
        .await
        .map_err(|e| ArchiveError::Internal(e.to_string()))??;
        incoming.finish().await
    }
}

/// The file meta group of a Part 10 file and the offset where its data set starts (after the
/// preamble, "DICM" and the meta group).
pub fn read_part10_meta(path: &Path) -> Result<(FileMetaTable, u64), ArchiveError> {
    let file = std::fs::File::open(path).map_err(ArchiveError::from_io)?;
    part10_meta_from(file)
}

/// [`read_part10_meta`] from the first bytes of a Part 10 file, however they are held.
fn part10_meta_from(mut file: impl Read) -> Result<(FileMetaTable, u64), ArchiveError> {
    /// File meta groups are a few hundred bytes; a larger one is not a DICOM file we accept.
    const MAX_META: u32 = 64 * 1024;
    let not_part10 = |why: &str| ArchiveError::NotPart10(format!("not a DICOM Part 10 file ({why})"));
    let mut head = [0u8; 144];
    file.read_exact(&mut head).map_err(|_| not_part10("too short"))?;
    if &head[128..132] != b"DICM" {
        return Err(not_part10("no DICM prefix"));
    }
    // (0002,0000) UL 4: the group length, which bounds everything the meta parser reads.
    if head[132..136] != [0x02, 0x00, 0x00, 0x00] || &head[136..138] != b"UL" {
        return Err(not_part10("no File Meta Information Group Length"));
    }
    let group_len = u32::from_le_bytes([head[140], head[141], head[142], head[143]]);
    if group_len > MAX_META {
        return Err(not_part10("file meta group too large"));
    }
    let mut group = vec![0u8; group_len as usize];
    file.read_exact(&mut group)
        .map_err(|_| not_part10("truncated file meta group"))?;
    let layout = dataset_check::Layout::of("1.2.840.10008.1.2.1");
    dataset_check::check_bytes(&group, layout, false, dataset_check::Limits::default())
        .map_err(|e| ArchiveError::NotPart10(format!("not a DICOM Part 10 file: {e}")))?;
    let meta = FileMetaTable::from_reader(io::Cursor::new(&head[128..]).chain(&group[..]))
        .map_err(|e| ArchiveError::NotPart10(format!("not a DICOM Part 10 file: {e}")))?;
    Ok((meta, 144 + u64::from(group_len)))
}

impl Incoming {
    /// Appends received bytes (the data set for C-STORE, the whole file for STOW-RS).
    pub fn write(&mut self, chunk: &[u8]) -> Result<(), ArchiveError> {
        let Some(head) = self.pending_meta.as_mut() else {
            return self.blob.write(chunk).map_err(ArchiveError::from_io);
        };
        // A Part 10 stream: the data set offset (which starts the data set hash) is known once
        // the preamble, "DICM" and the File Meta Information Group Length have arrived.
        head.extend_from_slice(chunk);
        if head.len() < 144 {
            return Ok(());
        }
        if &head[128..132] != b"DICM" || head[132..136] != [0x02, 0x00, 0x00, 0x00] {
            return Err(ArchiveError::NotPart10(
                "not a DICOM Part 10 file (no DICM prefix or group length)".into(),
            ));
        }
        let group_len = u32::from_le_bytes([head[140], head[141], head[142], head[143]]);
        let bytes = std::mem::take(head);
        self.pending_meta = None;
        self.blob.set_dataset_offset(144 + u64::from(group_len));
        self.blob.write(&bytes).map_err(ArchiveError::from_io)
    }

    /// Drops a partial object (association aborted, refusal): nothing remains on disk.
    pub fn abort(self) {
        self.blob.discard();
    }

    /// The object is complete: parse, check, make durable, index. Refusals are audited.
    pub async fn finish(self) -> Result<StoreResult, ArchiveError> {
        self.finish_detailed()
            .await
            .map(|s| s.result)
            .map_err(|r| r.error)
    }

    /// Like [`Incoming::finish`], naming what was stored, or what was refused when its UIDs
    /// could be read (STOW-RS reports them in FailedSOPSequence).
    pub async fn finish_detailed(self) -> Result<StoredInstance, Refused> {
        let archive = self.archive.clone();
        let source = self.source.clone();
        let mut identity = None;
        let result = self.make_durable(&mut identity).await;
        crate::metrics::tenant_store(&archive.name, result.as_ref().ok());
        match result {
            Ok(stored) => Ok(stored),
            Err(error) => {
                if !source.audited_by_caller {
                    archive.audit_store_refusal(&source, &error).await;
                }
                Err(Refused { error, identity })
            }
        }
    }

    /// `identity` receives the SOP Class and Instance UIDs as soon as they are known: from the
    /// parsed header, or from the file meta group when the data set could not be parsed.
    async fn make_durable(
        self,
        identity: &mut Option<(String, String)>,
    ) -> Result<StoredInstance, ArchiveError> {
        let Incoming {
            archive,
            blob,
            source,
            expected,
            expected_study,
            pending_meta,
        } = self;
        if pending_meta.is_some() {
            return Err(ArchiveError::NotPart10(
                "not a DICOM Part 10 file (too short)".into(),
            ));
        }
        let mut blob = blob;
        // Everything written must be in the file before it is parsed from disk; its fdatasync
        // runs meanwhile (the file backend's commit waits for it before the rename).
        if let Err(e) = blob.start_sync() {
            blob.discard();
            return Err(ArchiveError::from_io(e));
        }
        // The key is held from here to the index commit: a removal of a blob with these very
        // bytes (on any node) cannot find it unreferenced, then delete it under this store.
        let no_blob_removal = match archive
            .system
            .lock_blob(&blob.content_key(), BlobLockMode::Store)
            .await
        {
            Ok(lock) => lock,
            Err(e) => {
                blob.discard();
                return Err(e.into());
            }
        };
        // Parsing, checking and making the blob durable run in one blocking task: one thread
        // hand-over per object instead of two.
        let blobs = archive.clone();
        let limits = archive.limits;
        let dataset_offset = blob.dataset_offset();
        let durable = tokio::task::spawn_blocking(move || {
            let object = match blob.contents() {
                Some(bytes) => Object::Bytes(bytes),
                None => Object::File(blob.path()),
            };
            let parsed = check_then_parse(object, dataset_offset, expected.as_ref(), limits);
            let instance = match parsed {
                Ok(instance) => instance,
                Err(e) => {
                    let identity =
                        (dataset_offset > 0)
                            .then(|| object.meta().ok())
                            .flatten()
                            .map(|(meta, _)| {
                                let clean = |s: &str| s.trim_end_matches(['\0', ' ']).to_string();
                                (
                                    clean(&meta.media_storage_sop_class_uid),
                                    clean(&meta.media_storage_sop_instance_uid),
                                )
                            });
                    blob.discard();
                    return Err((e, identity));
                }
            };
            let identity = Some((instance.sop_class.clone(), instance.sop_uid.clone()));
            if let Some(study) = expected_study.filter(|s| *s != instance.study.study_uid) {
                blob.discard();
                let e = ArchiveError::Mismatch(format!(
                    "Study Instance UID {} differs from the request's {study}",
                    instance.study.study_uid
                ));
                return Err((e, identity));
            }
            match blobs.blobs.commit(blob) {
                Ok(committed) => Ok((instance, committed)),
                Err(e) => Err((ArchiveError::from_io(e), identity)),
            }
        })
        .await
        .map_err(|e| ArchiveError::Internal(e.to_string()))?;
        let (mut instance, committed) = match durable {
            Ok(done) => done,
            Err((e, known)) => {
                *identity = known;
                return Err(e);
            }
        };
        *identity = Some((instance.sop_class.clone(), instance.sop_uid.clone()));
        instance.patient.issuer = archive.patient_domain(&instance.patient.issuer);
        instance.correct_from_orders = archive.correct_from_orders;
        instance.check_quota = archive.quota_bytes.is_some();
        instance.size = committed.size;
        instance.sha256 = committed.key.clone();
        instance.dataset_sha256 = committed.dataset_sha256.clone();
        instance.dataset_offset = dataset_offset;
        instance.source_ae = Some(source.actor.clone());
        instance.audit = (!source.audited_by_caller).then(|| AuditEvent {
            event: "store".into(),
            actor: source.actor.clone(),
            peer: source.peer.clone(),
            patient_id: Some(instance.patient.patient_id.clone()),
            study_uid: Some(instance.study.study_uid.clone()),
            outcome: "success".into(),
            detail: Some(instance.sop_uid.clone()),
            ..AuditEvent::default()
        });
        let sop_uid = instance.sop_uid.clone();
        let mut stored = StoredInstance {
            result: StoreResult::Stored,
            bytes: committed.size,
            sop_class_uid: instance.sop_class.clone(),
            sop_instance_uid: instance.sop_uid.clone(),
            study_instance_uid: instance.study.study_uid.clone(),
            series_instance_uid: instance.series.series_uid.clone(),
            patient_id: instance.patient.patient_id.clone(),
        };
        let audit = instance.audit.clone();
        let mut outcome = archive.index.add_instance(instance.clone()).await?;
        if let IndexOutcome::Differs { pk, dataset_sha256 } = &outcome {
            // Known SOP Instance UID, other bytes: the same object re-encoded, or another one.
            let existing = archive.index.instance(*pk).await?;
            let kept = match existing {
                Some(l) => archive.blobs.local(&l.blob_key).await.ok(),
                None => None,
            };
            let same = match (kept, archive.blobs.local(&committed.key).await.ok()) {
                (Some(kept), Some(received)) => {
                    let limits = archive.limits;
                    tokio::task::spawn_blocking(move || {
                        crate::duplicates::same_object(kept.path(), received.path(), limits)
                    })
                    .await
                    .map_err(|e| ArchiveError::Internal(e.to_string()))?
                    .unwrap_or(false)
                }
                _ => false,
            };
            let previous = dataset_sha256.clone();
            let received = instance.dataset_sha256.clone();
            let resend = |outcome: &str, detail: String| AuditEvent {
                outcome: outcome.into(),
                detail: Some(detail),
                ..audit.clone().unwrap_or_default()
            };
            if same {
                archive
                    .record(resend(
                        "duplicate",
                        format!("{sop_uid}: the same object re-encoded (data set SHA-256 {received}); the stored one ({previous}) kept"),
                    ))
                    .await;
                stored.result = StoreResult::Duplicate;
                return Ok(stored);
            }
            if archive.duplicate_policy == crate::duplicates::DuplicatePolicy::KeepFirst {
                archive
                    .record(resend(
                        "kept-first",
                        format!("{sop_uid}: another object with this SOP Instance UID (data set SHA-256 {received}) not indexed; the first ({previous}) stays current"),
                    ))
                    .await;
                stored.result = StoreResult::KeptFirst;
                return Ok(stored);
            }
            instance.replace_current = true;
            instance.audit = audit.map(|e| AuditEvent {
                event: "replace".into(),
                detail: Some(format!(
                    "{sop_uid}: data set SHA-256 {previous} replaced by {received}, the previous kept superseded"
                )),
                ..e
            });
            outcome = archive.index.add_instance(instance).await?;
        }
        stored.result = match outcome {
            IndexOutcome::QuotaExceeded { quota, stored } => {
                // Nothing of it is kept: the blob goes unless another row holds the same bytes
                // (removed under its exclusive lock, after a fresh look at the index).
                drop(no_blob_removal);
                archive.remove_deleted_blobs(vec![committed.key.clone()]).await?;
                return Err(ArchiveError::QuotaExceeded(format!(
                    "{sop_uid}: {} bytes more than the {quota} allowed ({stored} held)",
                    (stored + committed.size).saturating_sub(quota)
                )));
            }
            IndexOutcome::Differs { .. } => {
                return Err(ArchiveError::Internal(
                    "the index refused a replacement it was told to make".into(),
                ))
            }
            IndexOutcome::Stored { .. } => StoreResult::Stored,
            IndexOutcome::Replaced { .. } => {
                tracing::info!(sop = %sop_uid, "object with a known SOP Instance UID but different content: new one current, previous kept as superseded");
                StoreResult::Replaced
            }
            IndexOutcome::Duplicate { .. } => {
                // Same data set already current. A C-STORE re-sent gives the same file, hence
                // the same blob: nothing was added. The same data set wrapped in another file
                // meta group (an import of a file received before) left a second, unreferenced
                // blob; it is not deleted here, where a concurrent store of the same bytes could
                // be relying on it, but by start-up recovery, before anything is accepted.
                tracing::debug!(blob = %committed.key, "duplicate data set");
                StoreResult::Duplicate
            }
        };
        Ok(stored)
    }
}

impl Archive {
    async fn audit_store_refusal(&self, source: &Source, error: &ArchiveError) {
        // An object past the configured bounds is what an attack looks like (a deflate bomb):
        // its own event, so that it stands out from ordinary refusals.
        let event = if matches!(error, ArchiveError::LimitExceeded(_)) {
            "security"
        } else {
            "store"
        };
        let event = AuditEvent {
            event: event.into(),
            actor: source.actor.clone(),
            peer: source.peer.clone(),
            outcome: "refused".into(),
            detail: Some(error.to_string()),
            ..AuditEvent::default()
        };
        if let Err(e) = self.index.audit(event).await {
            tracing::error!(error = %e, "cannot write audit record");
        }
    }
}

/// Checks and parses a whole Part 10 object held in memory, exactly as an object received by
/// C-STORE, STOW-RS or import is before it is indexed: file meta group, structural check of the
/// data set within `limits`, header parse up to Pixel Data, identifying UIDs, header JSON. For
/// the fuzz targets and tests that feed it arbitrary bytes.
pub fn check_and_parse_part10(
    bytes: &[u8],
    limits: dataset_check::Limits,
) -> Result<NewInstance, ArchiveError> {
    let (_, dataset_offset) = part10_meta_from(bytes)?;
    check_then_parse(Object::Bytes(bytes), dataset_offset, None, limits)
}

/// The stored header JSON of any data set (DICOM JSON without Pixel Data and large binary
/// values, those listed as `BulkDataURI`s under `bulk_prefix`), as ingest writes it.
pub fn header_json_of(obj: &InMemDicomObject, bulk_prefix: &str) -> Result<String, ArchiveError> {
    header_json(obj, None, bulk_prefix)
}

/// Reads the transfer syntax from the file meta group, walks the element lengths (so that a
/// lying length cannot make the parser allocate it), then parses the header.
fn check_then_parse(
    object: Object,
    dataset_offset: u64,
    expected: Option<&(String, String)>,
    limits: dataset_check::Limits,
) -> Result<NewInstance, ArchiveError> {
    let (meta, _) = object.meta()?;
    let layout = dataset_check::Layout::of(meta.transfer_syntax());
    let checked = match object {
        Object::File(path) => dataset_check::check_file(path, dataset_offset, layout, true, limits),
        Object::Bytes(bytes) => {
            let dataset = usize::try_from(dataset_offset)
                .ok()
                .and_then(|start| bytes.get(start..))
                .ok_or_else(|| ArchiveError::Invalid("data set offset beyond the object".into()))?;
            dataset_check::check_slice(dataset, layout, true, limits)
        }
    };
    let pixel_data = checked.map_err(ArchiveError::from)?;
    parse_header(object, expected, pixel_data)
}

/// A received object to parse: still whole in memory (most objects up to
/// [`pacs_store::blob::WRITE_BUFFER`]), or in its temporary file.
#[derive(Clone, Copy)]
pub(crate) enum Object<'a> {
    File(&'a Path),
    Bytes(&'a [u8]),
}

impl Object<'_> {
    fn meta(self) -> Result<(FileMetaTable, u64), ArchiveError> {
        match self {
            Object::File(path) => read_part10_meta(path),
            Object::Bytes(bytes) => part10_meta_from(bytes),
        }
    }
}

/// Largest value of a binary element kept in the stored header; bigger ones (private blobs,
/// overlays, icons) are left in the original object only.
const MAX_HEADER_BINARY: u32 = 1024;

/// Parses what the index needs from a complete Part 10 file, stopping before the pixel data.
pub(crate) fn parse_header(
    object: Object,
    expected: Option<&(String, String)>,
    pixel_data: Option<dataset_check::PixelData>,
) -> Result<NewInstance, ArchiveError> {
    let options = OpenFileOptions::new().read_until(tags::PIXEL_DATA);
    let opened = match object {
        Object::File(path) => options.open_file(path),
        // From "DICM" on: the preamble is not part of what `from_reader` reads.
        Object::Bytes(bytes) => options
            .read_preamble(ReadPreamble::Never)
            .from_reader(bytes.get(128..).unwrap_or_default()),
    };
    let obj: DefaultDicomObject = opened.map_err(|e| {
        ArchiveError::Invalid(format!(
            "the data set is damaged (an element's tag, VR or length, or a sequence's \
                 item or delimiter, is not where or what it should be); the parser said: {}",
            pacs_model::error_chain(&e)
        ))
    })?;
    let required = |tag: Tag, name: &str| {
        text(&obj, tag).ok_or_else(|| ArchiveError::MissingAttribute(name.to_string()))
    };
    let sop_uid = required(tags::SOP_INSTANCE_UID, "SOPInstanceUID")?;
    let sop_class = required(tags::SOP_CLASS_UID, "SOPClassUID")?;
    let study_uid = required(tags::STUDY_INSTANCE_UID, "StudyInstanceUID")?;
    let series_uid = required(tags::SERIES_INSTANCE_UID, "SeriesInstanceUID")?;
    for (name, uid) in [
        ("StudyInstanceUID", &study_uid),
        ("SeriesInstanceUID", &series_uid),
        ("SOPInstanceUID", &sop_uid),
    ] {
        check_received_uid(name, uid)?;
    }
    if let Some((class, instance)) = expected {
        if *class != sop_class {
            return Err(ArchiveError::Mismatch(format!(
                "data set SOP Class UID {sop_class} differs from the command's {class}"
            )));
        }
        if *instance != sop_uid {
            // The object is what it says it is: it is indexed under the data set's UID, as
            // DCMTK and Orthanc do. The sender is told nothing new; the log keeps the trace.
            tracing::warn!(command = %instance, dataset = %sop_uid, "C-STORE SOP Instance UID differs from the data set's; indexed under the data set's");
        }
    }
    let transfer_syntax = obj.meta().transfer_syntax().to_string();
    let name = text(&obj, tags::PATIENT_NAME);
    let referring = text(&obj, tags::REFERRING_PHYSICIAN_NAME);
    let header_json = header_json(
        &obj,
        pixel_data,
        &format!(
            "studies/{}/series/{}/instances/{}/bulkdata/",
            url_segment(&study_uid),
            url_segment(&series_uid),
            url_segment(&sop_uid)
        ),
    )?;
    let patient_id = text(&obj, tags::PATIENT_ID).unwrap_or_default();
    let unidentified_study = if patient_id.is_empty() {
        study_uid.clone()
    } else {
        String::new()
    };
    Ok(NewInstance {
        patient: PatientAttrs {
            issuer: text(&obj, tags::ISSUER_OF_PATIENT_ID).unwrap_or_default(),
            patient_id,
            unidentified_study,
            name_folded: name.as_deref().map(fold_person_name),
            name,
            birth_date: text(&obj, tags::PATIENT_BIRTH_DATE).map(|d| normalize_date(&d).unwrap_or(d)),
            sex: text(&obj, tags::PATIENT_SEX),
        },
        study: StudyAttrs {
            study_uid,
            date: text(&obj, tags::STUDY_DATE).map(|d| normalize_date(&d).unwrap_or(d)),
            time: text(&obj, tags::STUDY_TIME),
            accession_number: text(&obj, tags::ACCESSION_NUMBER),
            study_id: text(&obj, tags::STUDY_ID),
            description: text(&obj, tags::STUDY_DESCRIPTION),
            referring_folded: referring.as_deref().map(fold_person_name),
            referring,
        },
        series: SeriesAttrs {
            series_uid,
            modality: text(&obj, tags::MODALITY),
            series_number: text(&obj, tags::SERIES_NUMBER),
            description: text(&obj, tags::SERIES_DESCRIPTION),
            body_part: text(&obj, tags::BODY_PART_EXAMINED),
        },
        sop_uid,
        sop_class,
        instance_number: text(&obj, tags::INSTANCE_NUMBER),
        rows: text(&obj, tags::ROWS),
        columns: text(&obj, tags::COLUMNS),
        bits_allocated: text(&obj, tags::BITS_ALLOCATED),
        number_of_frames: text(&obj, tags::NUMBER_OF_FRAMES),
        transfer_syntax,
        header_json,
        ..NewInstance::default()
    })
}

/// Refuses an identifying UID that is not one (`pacs_model::check_uid`): it would be indexed
/// and become part of every URL naming the object. Every ingest path (C-STORE, STOW-RS,
/// import, retrieval from a peer) parses through here, so this is the one check. A leading
/// zero in a component is tolerated with a warning (some modalities send them).
fn check_received_uid(name: &str, uid: &str) -> Result<(), ArchiveError> {
    if let Err(why) = pacs_model::check_uid(uid) {
        let shown: String = uid.chars().take(pacs_model::uid::MAX_UID_LEN).collect();
        return Err(ArchiveError::Mismatch(format!("{name} {why}: {shown:?}")));
    }
    if pacs_model::has_leading_zero(uid) {
        tracing::warn!(attribute = name, %uid, "UID component with a leading zero (PS3.5 9.1); accepted");
    }
    Ok(())
}

/// A trimmed, non-empty string value. Elements sent with VR UN (some writers do that for
/// attributes they do not know) hold the raw text bytes.
pub(crate) fn text(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
    let element = obj.get(tag)?;
    let value = if element.vr() == dicom_core::VR::UN {
        let bytes = element.value().to_bytes().ok()?;
        std::borrow::Cow::Owned(String::from_utf8_lossy(&bytes).into_owned())
    } else {
        element.to_str().ok()?
    };
    let trimmed = value.trim_matches(|c: char| c == ' ' || c == '\0');
    (!trimmed.is_empty()).then(|| trimmed.to_string())
}

/// The header kept for queries and metadata: DICOM JSON without Pixel Data and without
/// binary values over [`MAX_HEADER_BINARY`]; those are listed with a `BulkDataURI` relative to
/// the DICOMweb root (`studies/…/instances/…/bulkdata/ggggeeee`), which the web layer makes
/// absolute with a plain text substitution.
fn header_json(
    obj: &InMemDicomObject,
    pixel_data: Option<dataset_check::PixelData>,
    bulk_prefix: &str,
) -> Result<String, ArchiveError> {
    use dicom_core::header::{HasLength, Header};
    use dicom_core::VR;
    let mut header = obj.clone();
    let mut bulk: Vec<(Tag, String)> = Vec::new();
    header.retain(|e| {
        let binary = matches!(
            e.vr(),
            VR::OB | VR::OW | VR::OF | VR::OD | VR::OL | VR::OV | VR::UN
        );
        let keep = !(binary && e.length().get().is_none_or(|l| l > MAX_HEADER_BINARY));
        if !keep {
            bulk.push((e.tag(), e.vr().to_string().to_string()));
        }
        keep
    });
    if let Some(pixels) = pixel_data {
        bulk.push((tags::PIXEL_DATA, String::from_utf8_lossy(&pixels.vr).into_owned()));
    }
    let mut json = dicom_json::to_value(&header)
        .map_err(|e| ArchiveError::Invalid(format!("cannot encode header: {e}")))?;
    if let Some(map) = json.as_object_mut() {
        for (tag, vr) in bulk {
            let key = format!("{:04X}{:04X}", tag.group(), tag.element());
            map.insert(
                key.clone(),
                serde_json::json!({ "vr": vr, "BulkDataURI": format!("{bulk_prefix}{key}") }),
            );
        }
    }
    Ok(json.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Objects that fit in a blob's write buffer are checked and parsed from memory, larger
    /// ones from their file: both must find the same header, pixel data and identifiers.
    #[test]
    fn an_object_parses_the_same_from_memory_and_from_its_file() {
        let dir = tempfile::tempdir().unwrap();
        for (rows, columns) in [(64, 64), (512, 512)] {
            let mut spec = pacs_testkit::StudySpec::ct(11, 1);
            spec.rows = rows;
            spec.columns = columns;
            let bytes = pacs_testkit::instance_bytes(&spec, 0, 0).unwrap();
            let path = dir.path().join(format!("{rows}.dcm"));
            std::fs::write(&path, &bytes).unwrap();
            let (_, offset) = read_part10_meta(&path).unwrap();
            assert_eq!(part10_meta_from(&bytes[..]).unwrap().1, offset);
            let limits = dataset_check::Limits::default();
            let from_file = check_then_parse(Object::File(&path), offset, None, limits).unwrap();
            let from_memory = check_then_parse(Object::Bytes(&bytes), offset, None, limits).unwrap();
            assert_eq!(
                format!("{from_file:?}"),
                format!("{from_memory:?}"),
                "{rows}×{columns}"
            );
            assert_eq!(from_memory.sop_uid, spec.sop_instance_uid(0, 0));
            assert!(
                from_memory.header_json.contains("BulkDataURI"),
                "pixel data located: {}",
                from_memory.header_json
            );
        }
    }

    /// A truncated object in memory is refused with a clear error, as from a file.
    #[test]
    fn a_truncated_object_in_memory_is_refused() {
        let mut spec = pacs_testkit::StudySpec::ct(12, 1);
        spec.rows = 64;
        spec.columns = 64;
        let bytes = pacs_testkit::instance_bytes(&spec, 0, 0).unwrap();
        let (_, offset) = part10_meta_from(&bytes[..]).unwrap();
        for cut in [100, 200, offset as usize + 10, bytes.len() - 100] {
            let object = Object::Bytes(&bytes[..cut]);
            let error = check_then_parse(object, offset, None, dataset_check::Limits::default()).unwrap_err();
            assert!(
                matches!(error, ArchiveError::Invalid(_) | ArchiveError::NotPart10(_)),
                "cut at {cut}: {error}"
            );
        }
    }
}
