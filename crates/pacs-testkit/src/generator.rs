//! Deterministic synthetic CT / MR / CR study generator.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{ensure, Context, Result};
use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::meta::FileMetaTableBuilder;
use dicom_object::InMemDicomObject;

/// Implementation Version Name written in the file meta group.
pub const IMPLEMENTATION_VERSION_NAME: &str = "OPENPACS_TESTKIT";

const MANUFACTURER: &str = "openpacs-testkit";

// ---------------------------------------------------------------------------
// Public types
// ---------------------------------------------------------------------------

/// Imaging modality of a generated study.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Modality {
    /// Computed tomography (CT Image Storage).
    Ct,
    /// Magnetic resonance (MR Image Storage).
    Mr,
    /// Computed radiography (CR Image Storage).
    Cr,
}

impl Modality {
    /// DICOM Modality (0008,0060) code.
    pub fn code(self) -> &'static str {
        match self {
            Modality::Ct => "CT",
            Modality::Mr => "MR",
            Modality::Cr => "CR",
        }
    }

    /// SOP Class UID of the images generated for this modality.
    pub fn sop_class_uid(self) -> &'static str {
        match self {
            Modality::Ct => uids::CT_IMAGE_STORAGE,
            Modality::Mr => uids::MR_IMAGE_STORAGE,
            Modality::Cr => uids::COMPUTED_RADIOGRAPHY_IMAGE_STORAGE,
        }
    }

    /// Default `(rows, columns)` for this modality.
    pub fn default_dimensions(self) -> (u16, u16) {
        match self {
            Modality::Ct => (512, 512),
            Modality::Mr => (256, 256),
            Modality::Cr => (2500, 2048), // portrait chest detector
        }
    }

    fn domain(self) -> u64 {
        match self {
            Modality::Ct => 0x4354,
            Modality::Mr => 0x4D52,
            Modality::Cr => 0x4352,
        }
    }
}

impl fmt::Display for Modality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl FromStr for Modality {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "ct" => Ok(Modality::Ct),
            "mr" => Ok(Modality::Mr),
            "cr" => Ok(Modality::Cr),
            other => Err(format!("unknown modality '{other}' (expected ct, mr or cr)")),
        }
    }
}

/// Explicit patient demographics (otherwise derived from the seed).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PatientSpec {
    /// Patient ID (0010,0020).
    pub patient_id: String,
    /// Patient's Name (0010,0010), DICOM PN syntax (`Family^Given`).
    pub patient_name: String,
    /// Patient's Birth Date (0010,0030), `YYYYMMDD`.
    pub birth_date: String,
    /// Patient's Sex (0010,0040): `M`, `F` or `O`.
    pub sex: String,
}

/// Description of a synthetic study.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StudySpec {
    /// Everything (UIDs, names, dates, pixels) derives from this seed.
    pub seed: u64,
    /// Modality of every image of the study.
    pub modality: Modality,
    /// Number of series in the study.
    pub series: u32,
    /// Number of instances in each series.
    pub instances_per_series: u32,
    /// Image rows.
    pub rows: u16,
    /// Image columns.
    pub columns: u16,
    /// Explicit patient; `None` derives one from `seed`.
    pub patient: Option<PatientSpec>,
}

impl StudySpec {
    /// One series with one instance, modality default dimensions.
    pub fn new(seed: u64, modality: Modality) -> Self {
        let (rows, columns) = modality.default_dimensions();
        StudySpec {
            seed,
            modality,
            series: 1,
            instances_per_series: 1,
            rows,
            columns,
            patient: None,
        }
    }

    /// A single-series 512x512 CT stack of `instances` slices.
    pub fn ct(seed: u64, instances: u32) -> Self {
        StudySpec {
            instances_per_series: instances,
            ..Self::new(seed, Modality::Ct)
        }
    }

    /// A single-series 256x256 MR stack of `instances` slices.
    pub fn mr(seed: u64, instances: u32) -> Self {
        StudySpec {
            instances_per_series: instances,
            ..Self::new(seed, Modality::Mr)
        }
    }

    /// A single CR chest radiograph, 2500 rows x 2048 columns.
    pub fn cr(seed: u64) -> Self {
        Self::new(seed, Modality::Cr)
    }

    /// Total number of instances (`series * instances_per_series`).
    pub fn instance_count(&self) -> u64 {
        u64::from(self.series) * u64::from(self.instances_per_series)
    }

    /// Study Instance UID of the study.
    pub fn study_instance_uid(&self) -> String {
        uid_2_25(&[D_STUDY_UID, self.seed, self.modality.domain()])
    }

    /// Series Instance UID of series `series_index` (0-based).
    pub fn series_instance_uid(&self, series_index: u32) -> String {
        uid_2_25(&[
            D_SERIES_UID,
            self.seed,
            self.modality.domain(),
            u64::from(series_index),
        ])
    }

    /// SOP Instance UID of the given (0-based) series/instance.
    pub fn sop_instance_uid(&self, series_index: u32, instance_index: u32) -> String {
        uid_2_25(&[
            D_INSTANCE_UID,
            self.seed,
            self.modality.domain(),
            u64::from(series_index),
            u64::from(instance_index),
        ])
    }

    /// Frame of Reference UID shared by all series of the study.
    pub fn frame_of_reference_uid(&self) -> String {
        uid_2_25(&[D_FOR_UID, self.seed, self.modality.domain()])
    }

    /// File name used by [`write_study`] for the given (0-based) indexes,
    /// e.g. `s001_i0001.dcm` for `(0, 0)`.
    pub fn file_name(series_index: u32, instance_index: u32) -> String {
        format!(
            "s{:03}_i{:04}.dcm",
            u64::from(series_index) + 1,
            u64::from(instance_index) + 1
        )
    }

    /// The patient of this study: the explicit one, or the one derived from
    /// the seed (depends on `seed` only, not on the modality).
    pub fn resolved_patient(&self) -> PatientSpec {
        match &self.patient {
            Some(p) => p.clone(),
            None => derive_patient(self.seed),
        }
    }

    fn validate(&self) -> Result<()> {
        ensure!(
            self.rows > 0 && self.columns > 0,
            "rows and columns must be non-zero (got {}x{})",
            self.rows,
            self.columns
        );
        Ok(())
    }
}

/// One instance written by [`write_study`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedInstance {
    /// Path of the Part 10 file.
    pub path: PathBuf,
    /// SOP Instance UID.
    pub sop_instance_uid: String,
    /// Series Instance UID.
    pub series_instance_uid: String,
    /// Study Instance UID.
    pub study_instance_uid: String,
    /// File size in bytes.
    pub size: u64,
}

/// Writes one Part 10 file per instance into `out_dir` (created if needed).
///
/// Files are named `s{series:03}_i{instance:04}.dcm` with 1-based counters
/// and are returned in series-major order.
pub fn write_study(spec: &StudySpec, out_dir: &Path) -> Result<Vec<GeneratedInstance>> {
    spec.validate()?;
    fs::create_dir_all(out_dir)
        .with_context(|| format!("creating output directory {}", out_dir.display()))?;
    let study = StudyContext::new(spec);
    let capacity = usize::try_from(spec.instance_count()).unwrap_or(0);
    let mut out = Vec::with_capacity(capacity);
    for s in 0..spec.series {
        let series = SeriesContext::new(spec, &study, s);
        for i in 0..spec.instances_per_series {
            let bytes = encode_instance(spec, &study, &series, i)?;
            let path = out_dir.join(StudySpec::file_name(s, i));
            fs::write(&path, &bytes).with_context(|| format!("writing {}", path.display()))?;
            out.push(GeneratedInstance {
                path,
                sop_instance_uid: spec.sop_instance_uid(s, i),
                series_instance_uid: series.uid.clone(),
                study_instance_uid: study.study_uid.clone(),
                size: bytes.len() as u64,
            });
        }
    }
    Ok(out)
}

/// Returns the complete Part 10 file (preamble, meta group, data set) of one
/// instance without touching the disk. Indexes are 0-based.
pub fn instance_bytes(spec: &StudySpec, series_index: u32, instance_index: u32) -> Result<Vec<u8>> {
    spec.validate()?;
    ensure!(
        series_index < spec.series,
        "series index {series_index} out of range (study has {} series)",
        spec.series
    );
    ensure!(
        instance_index < spec.instances_per_series,
        "instance index {instance_index} out of range (series have {} instances)",
        spec.instances_per_series
    );
    let study = StudyContext::new(spec);
    let series = SeriesContext::new(spec, &study, series_index);
    encode_instance(spec, &study, &series, instance_index)
}

// ---------------------------------------------------------------------------
// Hashing and PRNG (hand-rolled so output never changes with dependency
// upgrades)
// ---------------------------------------------------------------------------

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

const D_STUDY_UID: u64 = 1;
const D_SERIES_UID: u64 = 2;
const D_INSTANCE_UID: u64 = 3;
const D_FOR_UID: u64 = 4;
const D_IMPL_UID: u64 = 5;
const D_PATIENT: u64 = 10;
const D_STUDY: u64 = 11;
const D_SERIES: u64 = 12;
const D_PIXELS: u64 = 13;

/// SplitMix64 finalizer (a bijection on u64).
fn fmix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn hash_with(salt: u64, parts: &[u64]) -> u64 {
    let mut h = fmix64(0x6F70_656E_7061_6373 ^ salt.wrapping_mul(GOLDEN));
    for &p in parts {
        h = fmix64(h.wrapping_add(GOLDEN) ^ fmix64(p.wrapping_add(GOLDEN)));
    }
    fmix64(h ^ parts.len() as u64)
}

fn hash(parts: &[u64]) -> u64 {
    hash_with(0, parts)
}

/// `2.25.<decimal>` UID from a 128-bit hash shaped as a version 4 UUID
/// (at most 44 characters).
fn uid_2_25(parts: &[u64]) -> String {
    let hi = hash_with(0xA1, parts);
    let lo = hash_with(0xB2, parts);
    let mut v = (u128::from(hi) << 64) | u128::from(lo);
    v = (v & !(0xF_u128 << 76)) | (0x4_u128 << 76); // version 4
    v = (v & !(0x3_u128 << 62)) | (0x2_u128 << 62); // RFC 4122 variant
    format!("2.25.{v}")
}

/// Implementation Class UID of the testkit (constant).
fn implementation_class_uid() -> String {
    uid_2_25(&[D_IMPL_UID, 0x0074_6573_746B_6974])
}

/// Small deterministic generator for attribute choices.
struct SplitMix(u64);

impl SplitMix {
    fn new(parts: &[u64]) -> Self {
        SplitMix(hash(parts))
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GOLDEN);
        fmix64(self.0)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    fn range_u32(&mut self, lo: u32, hi_inclusive: u32) -> u32 {
        lo + self.below(u64::from(hi_inclusive - lo) + 1) as u32
    }

    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

// ---------------------------------------------------------------------------
// Demographics
// ---------------------------------------------------------------------------

/// (family name, given name, sex)
const PATIENT_NAMES: &[(&str, &str, &str)] = &[
    ("Lefèvre", "Hélène", "F"),
    ("Dupont", "Jean", "M"),
    ("Bénard", "Zoé", "F"),
    ("Martin", "Amélie", "F"),
    ("Girard", "François", "M"),
    ("Moreau", "Chloé", "F"),
    ("Rousseau", "Jérôme", "M"),
    ("Faure", "Anaïs", "F"),
    ("Mercier", "Noël", "M"),
    ("Lemaître", "Cécile", "F"),
    ("Gauthier", "Benoît", "M"),
    ("Leroy", "Gaëlle", "F"),
    ("Durand", "Théo", "M"),
    ("Fournier", "Loïc", "M"),
    ("Chevalier", "Agnès", "F"),
    ("Petit", "Pierre", "M"),
];

const REFERRING_PHYSICIANS: &[&str] = &[
    "Lambert^Élodie^^Dr",
    "Petit^Stéphane^^Dr",
    "Garnier^Maëlle^^Dr",
    "Roux^Étienne^^Dr",
    "Blanc^Françoise^^Dr",
];

const INSTITUTIONS: &[&str] = &[
    "Hôpital Saint-Éloi (synthétique)",
    "CHU de Nantes (synthétique)",
    "Clinique des Cèdres (synthétique)",
];

fn derive_patient(seed: u64) -> PatientSpec {
    let mut r = SplitMix::new(&[D_PATIENT, seed]);
    let (family, given, sex) = *r.pick(PATIENT_NAMES);
    let id = r.below(100_000_000);
    let year = r.range_u32(1935, 2008);
    let month = r.range_u32(1, 12);
    let day = r.range_u32(1, 28);
    PatientSpec {
        patient_id: format!("P{id:08}"),
        patient_name: format!("{family}^{given}"),
        birth_date: format!("{year:04}{month:02}{day:02}"),
        sex: sex.to_string(),
    }
}

/// Age string (`nnnY`) at `study_date`, if the birth date is a valid `YYYYMMDD`.
fn patient_age(birth_date: &str, study_date: &str) -> Option<String> {
    fn parse(d: &str) -> Option<(u32, u32)> {
        if d.len() != 8 || !d.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some((d[..4].parse().ok()?, d[4..].parse().ok()?))
    }
    let (by, bmd) = parse(birth_date)?;
    let (sy, smd) = parse(study_date)?;
    let mut age = sy.checked_sub(by)?;
    if smd < bmd {
        age = age.checked_sub(1)?;
    }
    (age <= 999).then(|| format!("{age:03}Y"))
}

// ---------------------------------------------------------------------------
// Study / series contexts
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Anatomy {
    Head,
    Chest,
    Abdomen,
}

/// (StudyDescription, BodyPartExamined, phantom)
fn study_protocols(modality: Modality) -> &'static [(&'static str, &'static str, Anatomy)] {
    match modality {
        Modality::Ct => &[
            ("CT THORAX SANS INJECTION", "CHEST", Anatomy::Chest),
            ("CT THORAX AVEC INJECTION", "CHEST", Anatomy::Chest),
            ("CT ABDOMEN PELVIS AVEC INJECTION", "ABDOMEN", Anatomy::Abdomen),
            ("CT CRÂNE SANS INJECTION", "HEAD", Anatomy::Head),
        ],
        Modality::Mr => &[
            ("IRM CÉRÉBRALE", "BRAIN", Anatomy::Head),
            ("IRM ENCÉPHALE AVEC GADOLINIUM", "BRAIN", Anatomy::Head),
            ("IRM ABDOMINALE", "ABDOMEN", Anatomy::Abdomen),
        ],
        Modality::Cr => &[
            ("RADIOGRAPHIE THORAX", "CHEST", Anatomy::Chest),
            ("RX THORAX FACE ET PROFIL", "CHEST", Anatomy::Chest),
        ],
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Contrast {
    T1,
    T2,
}

#[derive(Debug, Clone, Copy)]
struct SeriesProtocol {
    description: &'static str,
    /// Slice thickness (CT/MR) in mm.
    thickness: f64,
    /// CT kernel, MR scanning sequence, CR view position.
    technique: &'static str,
    window_center: i32,
    window_width: i32,
    /// MR repetition / echo time (ms).
    tr: f64,
    te: f64,
    contrast: Contrast,
}

const fn ct_series(
    description: &'static str,
    thickness: f64,
    kernel: &'static str,
    wc: i32,
    ww: i32,
) -> SeriesProtocol {
    SeriesProtocol {
        description,
        thickness,
        technique: kernel,
        window_center: wc,
        window_width: ww,
        tr: 0.0,
        te: 0.0,
        contrast: Contrast::T1,
    }
}

const fn mr_series(
    description: &'static str,
    thickness: f64,
    sequence: &'static str,
    contrast: Contrast,
    tr: f64,
    te: f64,
) -> SeriesProtocol {
    let (wc, ww) = match contrast {
        Contrast::T1 => (700, 1400),
        Contrast::T2 => (900, 2000),
    };
    SeriesProtocol {
        description,
        thickness,
        technique: sequence,
        window_center: wc,
        window_width: ww,
        tr,
        te,
        contrast,
    }
}

const fn cr_series(description: &'static str, view: &'static str) -> SeriesProtocol {
    SeriesProtocol {
        description,
        thickness: 0.0,
        technique: view,
        window_center: 2200,
        window_width: 3600,
        tr: 0.0,
        te: 0.0,
        contrast: Contrast::T1,
    }
}

fn series_protocols(modality: Modality, anatomy: Anatomy) -> &'static [SeriesProtocol] {
    const CT_CHEST: &[SeriesProtocol] = &[
        ct_series("Thorax 1.25mm", 1.25, "STANDARD", 40, 400),
        ct_series("Thorax parenchyme 1.25mm", 1.25, "LUNG", -600, 1500),
        ct_series("Thorax 5mm", 5.0, "STANDARD", 40, 400),
        ct_series("Médiastin 2.5mm", 2.5, "SOFT", 50, 350),
    ];
    const CT_ABDOMEN: &[SeriesProtocol] = &[
        ct_series("Abdomen portal 2.5mm", 2.5, "STANDARD", 50, 350),
        ct_series("Abdomen 5mm", 5.0, "STANDARD", 40, 400),
        ct_series("Abdomen artériel 1.25mm", 1.25, "SOFT", 60, 400),
        ct_series("Os 1.25mm", 1.25, "BONE", 500, 2000),
    ];
    const CT_HEAD: &[SeriesProtocol] = &[
        ct_series("Crâne 5mm", 5.0, "H30s", 40, 80),
        ct_series("Crâne 2mm", 2.0, "H40s", 40, 80),
        ct_series("Crâne os 1mm", 1.0, "H70h", 600, 2800),
    ];
    const MR_HEAD: &[SeriesProtocol] = &[
        mr_series("AX T1 SE", 5.0, "SE", Contrast::T1, 500.0, 15.0),
        mr_series("AX T2 TSE", 5.0, "SE", Contrast::T2, 4000.0, 100.0),
        mr_series("AX FLAIR", 5.0, "SE\\IR", Contrast::T1, 9000.0, 120.0),
        mr_series("AX T2* GRE", 5.0, "GR", Contrast::T2, 600.0, 20.0),
    ];
    const MR_ABDOMEN: &[SeriesProtocol] = &[
        mr_series("AX T2 HASTE", 6.0, "SE", Contrast::T2, 1200.0, 90.0),
        mr_series("AX T1 IN-PHASE", 6.0, "GR", Contrast::T1, 150.0, 4.6),
        mr_series("AX T1 VIBE GADO", 3.0, "GR", Contrast::T1, 4.0, 1.5),
    ];
    const CR_CHEST: &[SeriesProtocol] = &[cr_series("Thorax face", "PA"), cr_series("Thorax profil", "LL")];
    match (modality, anatomy) {
        (Modality::Ct, Anatomy::Chest) => CT_CHEST,
        (Modality::Ct, Anatomy::Abdomen) => CT_ABDOMEN,
        (Modality::Ct, Anatomy::Head) => CT_HEAD,
        (Modality::Mr, Anatomy::Head) => MR_HEAD,
        (Modality::Mr, _) => MR_ABDOMEN,
        (Modality::Cr, _) => CR_CHEST,
    }
}

struct StudyContext {
    patient: PatientSpec,
    patient_age: Option<String>,
    study_uid: String,
    for_uid: String,
    study_date: String,
    /// Seconds since midnight.
    study_time: u32,
    accession_number: String,
    study_id: String,
    study_description: &'static str,
    body_part: &'static str,
    anatomy: Anatomy,
    referring_physician: &'static str,
    institution: &'static str,
    /// First protocol used by series 0.
    protocol_offset: u64,
    /// Field of view (mm) across the larger image dimension (CT/MR) or
    /// detector pixel pitch (CR, mm).
    fov: f64,
    /// Table position of the first slice (mm).
    z_start: f64,
    /// Phantom phase offset.
    phase: f64,
}

impl StudyContext {
    fn new(spec: &StudySpec) -> Self {
        let m = spec.modality;
        let mut r = SplitMix::new(&[D_STUDY, spec.seed, m.domain()]);
        let year = r.range_u32(2015, 2026);
        let month = r.range_u32(1, 12);
        let day = r.range_u32(1, 28);
        let study_date = format!("{year:04}{month:02}{day:02}");
        let study_time = r.range_u32(7 * 3600, 19 * 3600);
        let accession_number = format!("A{:010}", r.below(10_000_000_000));
        let study_id = format!("{}", r.range_u32(1, 99_999_999));
        let &(study_description, body_part, anatomy) = r.pick(study_protocols(m));
        let referring_physician = *r.pick(REFERRING_PHYSICIANS);
        let institution = *r.pick(INSTITUTIONS);
        let protocol_offset = r.next_u64();
        let fov = match (m, anatomy) {
            (Modality::Ct, Anatomy::Head) => 220.0 + 5.0 * r.below(9) as f64,
            (Modality::Ct, _) => 320.0 + 10.0 * r.below(10) as f64,
            (Modality::Mr, Anatomy::Head) => 220.0 + 10.0 * r.below(4) as f64,
            (Modality::Mr, _) => 340.0 + 10.0 * r.below(6) as f64,
            (Modality::Cr, _) => [0.139, 0.143, 0.148, 0.16][r.below(4) as usize],
        };
        let z_start = -(r.below(200) as f64);
        let phase = r.unit() * std::f64::consts::TAU;
        let patient = spec.resolved_patient();
        let patient_age = patient_age(&patient.birth_date, &study_date);
        StudyContext {
            patient,
            patient_age,
            study_uid: spec.study_instance_uid(),
            for_uid: spec.frame_of_reference_uid(),
            study_date,
            study_time,
            accession_number,
            study_id,
            study_description,
            body_part,
            anatomy,
            referring_physician,
            institution,
            protocol_offset,
            fov,
            z_start,
            phase,
        }
    }
}

struct SeriesContext {
    index: u32,
    uid: String,
    protocol: SeriesProtocol,
    /// Seconds since midnight.
    series_time: u32,
}

impl SeriesContext {
    fn new(spec: &StudySpec, study: &StudyContext, index: u32) -> Self {
        let protocols = series_protocols(spec.modality, study.anatomy);
        let pos = study.protocol_offset.wrapping_add(u64::from(index)) % protocols.len() as u64;
        let mut r = SplitMix::new(&[D_SERIES, spec.seed, spec.modality.domain(), u64::from(index)]);
        let series_time = study.study_time + 120 * index.min(1000) + r.range_u32(0, 59);
        SeriesContext {
            index,
            uid: spec.series_instance_uid(index),
            protocol: protocols[pos as usize],
            series_time,
        }
    }
}

fn format_time(seconds: u64) -> String {
    let s = seconds % 86_400;
    format!("{:02}{:02}{:02}", s / 3600, (s / 60) % 60, s % 60)
}

/// Decimal String value: the shortest exact representation when it fits in
/// 16 characters, otherwise rounded to fit.
fn ds(v: f64) -> String {
    let v = if v == 0.0 { 0.0 } else { v }; // no "-0"
    let s = format!("{v}");
    if s.len() <= 16 {
        return s;
    }
    for decimals in (0..=15).rev() {
        let mut s = format!("{v:.decimals$}");
        if s.contains('.') {
            let trimmed = s.trim_end_matches('0').trim_end_matches('.').len();
            s.truncate(trimmed);
        }
        if s.len() <= 16 {
            return s;
        }
    }
    format!("{v:.3e}")
}

// ---------------------------------------------------------------------------
// Pixel phantom
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
enum Tissue {
    Air,
    Fat,
    Soft,
    Organ,
    Enhancing,
    Bone,
    Lung,
    Csf,
    Brain,
}

/// Tissue value: Hounsfield units for CT, signal for MR / CR.
fn tissue_value(modality: Modality, contrast: Contrast, t: Tissue) -> i32 {
    use Tissue::*;
    match modality {
        Modality::Ct => match t {
            Air => -1000,
            Fat => -100,
            Soft => 40,
            Organ => 60,
            Enhancing => 180,
            Bone => 900,
            Lung => -850,
            Csf => 8,
            Brain => 35,
        },
        Modality::Mr => match (contrast, t) {
            (_, Air) => 0,
            (Contrast::T1, Fat) => 1400,
            (Contrast::T1, Soft) => 600,
            (Contrast::T1, Organ) => 800,
            (Contrast::T1, Enhancing) => 1200,
            (Contrast::T1, Bone) => 150,
            (Contrast::T1, Lung) => 40,
            (Contrast::T1, Csf) => 200,
            (Contrast::T1, Brain) => 700,
            (Contrast::T2, Fat) => 1100,
            (Contrast::T2, Soft) => 500,
            (Contrast::T2, Organ) => 450,
            (Contrast::T2, Enhancing) => 1600,
            (Contrast::T2, Bone) => 100,
            (Contrast::T2, Lung) => 30,
            (Contrast::T2, Csf) => 2000,
            (Contrast::T2, Brain) => 900,
        },
        Modality::Cr => match t {
            Air => 400,
            Fat => 1800,
            Soft | Brain | Csf => 2200,
            Organ => 2400,
            Enhancing => 2600,
            Bone => 3400,
            Lung => 1100,
        },
    }
}

/// Ellipse in normalised image coordinates (-1..1 on both axes).
#[derive(Debug, Clone, Copy)]
struct Shape {
    cx: f64,
    cy: f64,
    rx: f64,
    ry: f64,
    tissue: Tissue,
}

const fn sh(cx: f64, cy: f64, rx: f64, ry: f64, tissue: Tissue) -> Shape {
    Shape {
        cx,
        cy,
        rx,
        ry,
        tissue,
    }
}

/// Shapes, painted in order, for a slice at table position `z` (mm).
fn phantom_shapes(modality: Modality, anatomy: Anatomy, z: f64, phase: f64) -> Vec<Shape> {
    use Tissue::*;
    let p = z / 40.0 + phase;
    let (s, c) = p.sin_cos();
    if modality == Modality::Cr {
        // Frontal chest projection; `z` only jitters the positioning.
        let dx = 0.02 * s;
        return vec![
            sh(dx, 0.05, 0.82, 0.97, Fat),
            sh(dx, 0.05, 0.76, 0.92, Soft),
            sh(dx - 0.36, -0.1, 0.27, 0.6, Lung),
            sh(dx + 0.36, -0.1, 0.27, 0.6, Lung),
            sh(dx + 0.12, 0.22, 0.26, 0.24, Organ),
            sh(dx, 0.0, 0.07, 0.97, Bone),
            sh(dx - 0.3, -0.55, 0.25, 0.03, Bone),
            sh(dx + 0.3, -0.55, 0.25, 0.03, Bone),
        ];
    }
    match anatomy {
        Anatomy::Head => {
            // Head narrows towards the vertex.
            let k = 0.78 + 0.2 * c;
            vec![
                sh(0.0, 0.0, 0.74 * k, 0.88 * k, Fat),
                sh(0.0, 0.0, 0.7 * k, 0.84 * k, Bone),
                sh(0.0, 0.0, 0.64 * k, 0.78 * k, Brain),
                sh(-0.12 * k, -0.05 + 0.05 * s, 0.06, 0.2 * k * c.abs(), Csf),
                sh(0.12 * k, -0.05 + 0.05 * s, 0.06, 0.2 * k * c.abs(), Csf),
                sh(
                    0.35 * (1.3 * p).cos(),
                    0.35 * (1.3 * p).sin(),
                    0.07,
                    0.07,
                    Enhancing,
                ),
            ]
        }
        Anatomy::Chest => {
            let lung = 0.8 + 0.2 * s;
            vec![
                sh(0.0, 0.0, 0.86, 0.62, Fat),
                sh(0.0, 0.0, 0.8, 0.56, Soft),
                sh(-0.4, -0.05, 0.3 * lung, 0.42 * lung, Lung),
                sh(0.4, -0.05, 0.3 * lung, 0.42 * lung, Lung),
                sh(0.1, 0.08, 0.22 * (0.6 + 0.4 * c), 0.2 * (0.6 + 0.4 * c), Organ),
                sh(-0.08, 0.3, 0.05, 0.05, Enhancing),
                sh(0.0, 0.45, 0.09, 0.08, Bone),
                sh(0.0, 0.45, 0.03, 0.03, Csf),
                sh(0.4 + 0.1 * c, -0.1 + 0.2 * s, 0.03, 0.03, Soft),
            ]
        }
        Anatomy::Abdomen => {
            let kidney = 0.1 * c.abs();
            vec![
                sh(0.0, 0.0, 0.88, 0.66, Fat),
                sh(0.0, 0.0, 0.8, 0.58, Soft),
                sh(-0.35, -0.05, 0.32, 0.3 * (0.6 + 0.4 * s), Organ),
                sh(-0.35, 0.3, kidney, kidney * 1.3, Organ),
                sh(0.35, 0.3, kidney, kidney * 1.3, Organ),
                sh(0.05, 0.3, 0.045, 0.045, Enhancing),
                sh(0.0, 0.46, 0.09, 0.08, Bone),
                sh(0.0, 0.46, 0.03, 0.03, Csf),
                sh(0.3 + 0.15 * (2.0 * p).cos(), -0.2 + 0.1 * s, 0.05, 0.05, Air),
            ]
        }
    }
}

/// Pixel-space ellipse (centre and radii in pixels).
struct PixelEllipse {
    cx: f64,
    cy: f64,
    rx: f64,
    ry: f64,
}

impl PixelEllipse {
    fn new(rows: usize, cols: usize, e: &Shape) -> Self {
        let half_c = cols as f64 / 2.0;
        let half_r = rows as f64 / 2.0;
        PixelEllipse {
            cx: half_c * (1.0 + e.cx),
            cy: half_r * (1.0 + e.cy),
            rx: half_c * e.rx,
            ry: half_r * e.ry,
        }
    }

    /// Half-open column range `[x0, x1)` of pixel centres inside the
    /// ellipse on row `y` (empty when `x0 >= x1`).
    fn span(&self, y: usize, cols: usize) -> (usize, usize) {
        if self.rx <= 0.0 || self.ry <= 0.0 {
            return (0, 0);
        }
        let dy = (y as f64 + 0.5 - self.cy) / self.ry;
        let t = 1.0 - dy * dy;
        if t <= 0.0 {
            return (0, 0);
        }
        let hw = self.rx * t.sqrt();
        let x0 = (self.cx - hw - 0.5).ceil().max(0.0) as usize;
        let x1 = ((self.cx + hw - 0.5).floor() + 1.0).max(0.0) as usize;
        (x0.min(cols), x1.min(cols))
    }
}

/// Fills `buf` (row-major, `cols` wide) with `value` inside the ellipse.
fn fill_ellipse(buf: &mut [u16], rows: usize, cols: usize, e: &Shape, value: u16) {
    let pe = PixelEllipse::new(rows, cols, e);
    if pe.rx <= 0.0 || pe.ry <= 0.0 {
        return;
    }
    let y0 = (pe.cy - pe.ry).floor().max(0.0) as usize;
    let y1 = ((pe.cy + pe.ry).ceil().max(0.0) as usize).min(rows);
    for y in y0..y1 {
        let (x0, x1) = pe.span(y, cols);
        if x0 < x1 {
            buf[y * cols + x0..y * cols + x1].fill(value);
        }
    }
}

/// Pixel encoding parameters for a modality.
struct PixelFormat {
    signed: bool,
    bits_stored: u16,
    /// Added to the tissue value to obtain the stored value (CT: -intercept).
    offset: i32,
    /// Triangular noise amplitude in stored units.
    noise: i32,
}

impl PixelFormat {
    fn of(modality: Modality) -> Self {
        match modality {
            Modality::Ct => PixelFormat {
                signed: true,
                bits_stored: 12,
                offset: 1024,
                noise: 14,
            },
            Modality::Mr => PixelFormat {
                signed: false,
                bits_stored: 16,
                offset: 0,
                noise: 30,
            },
            Modality::Cr => PixelFormat {
                signed: false,
                bits_stored: 16,
                offset: 0,
                noise: 60,
            },
        }
    }

    fn range(&self) -> (i32, i32) {
        if self.signed {
            let h = 1i32 << (self.bits_stored - 1);
            (-h, h - 1)
        } else {
            (0, (1i32 << self.bits_stored) - 1)
        }
    }

    /// Stored value (as the u16 bit pattern written to PixelData).
    fn store(&self, value: i32) -> u16 {
        let (lo, hi) = self.range();
        let v = (value + self.offset).clamp(lo, hi);
        if self.signed {
            v as i16 as u16
        } else {
            v as u16
        }
    }
}

/// CT padding outside the reconstruction circle, in HU.
const CT_PADDING_HU: i32 = -2000;

/// Generates one slice. `z` is the table position in mm.
fn generate_pixels(
    spec: &StudySpec,
    study: &StudyContext,
    series: &SeriesContext,
    instance_index: u32,
    z: f64,
) -> Vec<u16> {
    let rows = usize::from(spec.rows);
    let cols = usize::from(spec.columns);
    let m = spec.modality;
    let fmt = PixelFormat::of(m);
    let contrast = series.protocol.contrast;
    let value = |t: Tissue| fmt.store(tissue_value(m, contrast, t));

    let mut buf = vec![value(Tissue::Air); rows * cols];
    for shape in phantom_shapes(m, study.anatomy, z, study.phase) {
        fill_ellipse(&mut buf, rows, cols, &shape, value(shape.tissue));
    }

    // Seeded noise: xorshift64*, 16 bits per pixel, triangular distribution.
    let mut state = hash(&[
        D_PIXELS,
        spec.seed,
        m.domain(),
        u64::from(series.index),
        u64::from(instance_index),
    ]) | 1;
    let amp = fmt.noise;
    let (lo, hi) = fmt.range();
    for chunk in buf.chunks_mut(4) {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        let mut bits = state.wrapping_mul(0x2545_F491_4F6C_DD1D);
        for px in chunk {
            let n = ((bits & 0xFF) + ((bits >> 8) & 0xFF)) as i32 - 255;
            bits >>= 16;
            let noise = n * amp / 256;
            *px = if fmt.signed {
                (i32::from(*px as i16) + noise).clamp(lo, hi) as i16 as u16
            } else {
                (i32::from(*px) + noise).clamp(lo, hi) as u16
            };
        }
    }

    if m == Modality::Ct {
        // Outside the circular reconstruction field of view.
        let pad = fmt.store(CT_PADDING_HU);
        let side = rows.min(cols) as f64;
        let circle = sh(0.0, 0.0, side / cols as f64, side / rows as f64, Tissue::Air);
        let fov = PixelEllipse::new(rows, cols, &circle);
        for (y, row) in buf.chunks_mut(cols).enumerate() {
            let (x0, x1) = fov.span(y, cols);
            if x0 < x1 {
                row[..x0].fill(pad);
                row[x1..].fill(pad);
            } else {
                row.fill(pad);
            }
        }
    }
    buf
}

// ---------------------------------------------------------------------------
// DICOM encoding
// ---------------------------------------------------------------------------

fn strs<I, S>(values: I) -> PrimitiveValue
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    PrimitiveValue::Strs(values.into_iter().map(Into::into).collect())
}

fn encode_instance(
    spec: &StudySpec,
    study: &StudyContext,
    series: &SeriesContext,
    instance_index: u32,
) -> Result<Vec<u8>> {
    let m = spec.modality;
    let proto = &series.protocol;
    let fmt = PixelFormat::of(m);
    let sop_uid = spec.sop_instance_uid(series.index, instance_index);
    let rows = spec.rows;
    let cols = spec.columns;

    // Geometry: square pixels, FOV across the larger dimension.
    let pixel_spacing = match m {
        Modality::Cr => study.fov,
        _ => study.fov / f64::from(rows.max(cols)),
    };
    let thickness = proto.thickness;
    let z = study.z_start - f64::from(instance_index) * thickness;

    let pixels = generate_pixels(spec, study, series, instance_index, z);
    let mut pixel_bytes = Vec::with_capacity(pixels.len() * 2);
    for p in &pixels {
        pixel_bytes.extend_from_slice(&p.to_le_bytes());
    }
    ensure!(
        pixel_bytes.len() < u32::MAX as usize,
        "pixel data too large ({} bytes)",
        pixel_bytes.len()
    );

    let mut obj = InMemDicomObject::new_empty();
    let mut put = |tag: Tag, vr: VR, v: PrimitiveValue| {
        obj.put(DataElement::new(tag, vr, v));
    };
    let s = |v: &str| PrimitiveValue::from(v);

    // SOP common / general study / patient
    put(tags::SPECIFIC_CHARACTER_SET, VR::CS, s("ISO_IR 192"));
    let image_type: &[&str] = match m {
        Modality::Ct => &["ORIGINAL", "PRIMARY", "AXIAL"],
        _ => &["ORIGINAL", "PRIMARY"],
    };
    put(tags::IMAGE_TYPE, VR::CS, strs(image_type.iter().copied()));
    put(tags::SOP_CLASS_UID, VR::UI, s(m.sop_class_uid()));
    put(tags::SOP_INSTANCE_UID, VR::UI, s(&sop_uid));
    put(tags::STUDY_DATE, VR::DA, s(&study.study_date));
    put(tags::SERIES_DATE, VR::DA, s(&study.study_date));
    put(tags::ACQUISITION_DATE, VR::DA, s(&study.study_date));
    put(tags::CONTENT_DATE, VR::DA, s(&study.study_date));
    put(tags::STUDY_TIME, VR::TM, s(&format_time(study.study_time.into())));
    put(
        tags::SERIES_TIME,
        VR::TM,
        s(&format_time(series.series_time.into())),
    );
    let content_time = u64::from(series.series_time) + u64::from(instance_index) / 4;
    put(tags::ACQUISITION_TIME, VR::TM, s(&format_time(content_time)));
    put(tags::CONTENT_TIME, VR::TM, s(&format_time(content_time)));
    put(tags::ACCESSION_NUMBER, VR::SH, s(&study.accession_number));
    put(tags::MODALITY, VR::CS, s(m.code()));
    put(tags::MANUFACTURER, VR::LO, s(MANUFACTURER));
    put(tags::INSTITUTION_NAME, VR::LO, s(study.institution));
    put(
        tags::REFERRING_PHYSICIAN_NAME,
        VR::PN,
        s(study.referring_physician),
    );
    put(tags::STATION_NAME, VR::SH, s(&format!("TESTKIT-{}1", m.code())));
    put(tags::STUDY_DESCRIPTION, VR::LO, s(study.study_description));
    put(tags::SERIES_DESCRIPTION, VR::LO, s(proto.description));
    put(
        tags::MANUFACTURER_MODEL_NAME,
        VR::LO,
        s(&format!("Synthetic {}", m.code())),
    );
    put(tags::PATIENT_NAME, VR::PN, s(&study.patient.patient_name));
    put(tags::PATIENT_ID, VR::LO, s(&study.patient.patient_id));
    put(tags::PATIENT_BIRTH_DATE, VR::DA, s(&study.patient.birth_date));
    put(tags::PATIENT_SEX, VR::CS, s(&study.patient.sex));
    if let Some(age) = &study.patient_age {
        put(tags::PATIENT_AGE, VR::AS, s(age));
    }
    put(tags::BODY_PART_EXAMINED, VR::CS, s(study.body_part));
    put(tags::SOFTWARE_VERSIONS, VR::LO, s(env!("CARGO_PKG_VERSION")));

    // Modality specific acquisition attributes
    match m {
        Modality::Ct => {
            put(tags::SLICE_THICKNESS, VR::DS, s(&ds(thickness)));
            put(tags::KVP, VR::DS, s("120"));
            put(
                tags::RECONSTRUCTION_DIAMETER,
                VR::DS,
                s(&ds(pixel_spacing * f64::from(rows.max(cols)))),
            );
            put(tags::CONVOLUTION_KERNEL, VR::SH, s(proto.technique));
            put(tags::PATIENT_POSITION, VR::CS, s("HFS"));
        }
        Modality::Mr => {
            put(tags::SCANNING_SEQUENCE, VR::CS, strs(proto.technique.split('\\')));
            put(tags::SEQUENCE_VARIANT, VR::CS, s("NONE"));
            put(tags::MR_ACQUISITION_TYPE, VR::CS, s("2D"));
            put(tags::SLICE_THICKNESS, VR::DS, s(&ds(thickness)));
            put(tags::REPETITION_TIME, VR::DS, s(&ds(proto.tr)));
            put(tags::ECHO_TIME, VR::DS, s(&ds(proto.te)));
            put(tags::MAGNETIC_FIELD_STRENGTH, VR::DS, s("1.5"));
            put(tags::SPACING_BETWEEN_SLICES, VR::DS, s(&ds(thickness)));
            put(tags::PATIENT_POSITION, VR::CS, s("HFS"));
        }
        Modality::Cr => {
            put(tags::VIEW_POSITION, VR::CS, s(proto.technique));
            put(
                tags::IMAGER_PIXEL_SPACING,
                VR::DS,
                strs([ds(pixel_spacing), ds(pixel_spacing)]),
            );
        }
    }

    // Series / instance identification
    put(tags::STUDY_INSTANCE_UID, VR::UI, s(&study.study_uid));
    put(tags::SERIES_INSTANCE_UID, VR::UI, s(&series.uid));
    put(tags::STUDY_ID, VR::SH, s(&study.study_id));
    put(tags::SERIES_NUMBER, VR::IS, s(&(series.index + 1).to_string()));
    put(tags::ACQUISITION_NUMBER, VR::IS, s("1"));
    put(
        tags::INSTANCE_NUMBER,
        VR::IS,
        s(&(u64::from(instance_index) + 1).to_string()),
    );
    put(tags::FRAME_OF_REFERENCE_UID, VR::UI, s(&study.for_uid));
    put(tags::POSITION_REFERENCE_INDICATOR, VR::LO, PrimitiveValue::Empty);

    // Geometry
    match m {
        Modality::Ct | Modality::Mr => {
            let x0 = -pixel_spacing * f64::from(cols) / 2.0 + pixel_spacing / 2.0;
            let y0 = -pixel_spacing * f64::from(rows) / 2.0 + pixel_spacing / 2.0;
            put(
                tags::IMAGE_POSITION_PATIENT,
                VR::DS,
                strs([ds(x0), ds(y0), ds(z)]),
            );
            put(
                tags::IMAGE_ORIENTATION_PATIENT,
                VR::DS,
                strs(["1", "0", "0", "0", "1", "0"]),
            );
            put(tags::SLICE_LOCATION, VR::DS, s(&ds(z)));
        }
        Modality::Cr => {
            put(tags::PATIENT_ORIENTATION, VR::CS, strs(["L", "F"]));
        }
    }

    // Image pixel module
    put(tags::SAMPLES_PER_PIXEL, VR::US, PrimitiveValue::from(1u16));
    put(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, s("MONOCHROME2"));
    put(tags::ROWS, VR::US, PrimitiveValue::from(rows));
    put(tags::COLUMNS, VR::US, PrimitiveValue::from(cols));
    let ps = ds(pixel_spacing);
    put(tags::PIXEL_SPACING, VR::DS, strs([ps.clone(), ps]));
    put(tags::BITS_ALLOCATED, VR::US, PrimitiveValue::from(16u16));
    put(tags::BITS_STORED, VR::US, PrimitiveValue::from(fmt.bits_stored));
    put(tags::HIGH_BIT, VR::US, PrimitiveValue::from(fmt.bits_stored - 1));
    put(
        tags::PIXEL_REPRESENTATION,
        VR::US,
        PrimitiveValue::from(u16::from(fmt.signed)),
    );
    if m == Modality::Ct {
        let pad = fmt.store(CT_PADDING_HU) as i16;
        put(tags::PIXEL_PADDING_VALUE, VR::SS, PrimitiveValue::from(pad));
    }
    put(tags::WINDOW_CENTER, VR::DS, s(&proto.window_center.to_string()));
    put(tags::WINDOW_WIDTH, VR::DS, s(&proto.window_width.to_string()));
    if m == Modality::Ct {
        put(tags::RESCALE_INTERCEPT, VR::DS, s("-1024"));
        put(tags::RESCALE_SLOPE, VR::DS, s("1"));
        put(tags::RESCALE_TYPE, VR::LO, s("HU"));
    }
    put(tags::LOSSY_IMAGE_COMPRESSION, VR::CS, s("00"));
    put(tags::PIXEL_DATA, VR::OW, PrimitiveValue::from(pixel_bytes));

    let meta = FileMetaTableBuilder::new()
        .media_storage_sop_class_uid(m.sop_class_uid())
        .media_storage_sop_instance_uid(sop_uid.as_str())
        .transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN)
        .implementation_class_uid(implementation_class_uid())
        .implementation_version_name(IMPLEMENTATION_VERSION_NAME);
    let file = obj.with_meta(meta).context("building file meta group")?;

    let expected = rows as usize * cols as usize * 2 + 4096;
    let mut out = Vec::with_capacity(expected);
    file.write_all(&mut out).context("encoding DICOM Part 10 file")?;
    Ok(out)
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::time::Instant;

    /// Self-cleaning temporary directory (no extra dependency needed).
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("pacs-testkit-{}-{}", name, std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn small_ct(seed: u64, instances: u32) -> StudySpec {
        StudySpec {
            rows: 64,
            columns: 64,
            ..StudySpec::ct(seed, instances)
        }
    }

    fn str_of(obj: &InMemDicomObject, tag: Tag) -> String {
        obj.element(tag)
            .unwrap()
            .to_str()
            .unwrap()
            .trim_end_matches(['\0', ' '])
            .to_string()
    }

    #[test]
    fn same_seed_gives_identical_bytes() {
        for spec in [StudySpec::ct(7, 3), StudySpec::mr(7, 3), StudySpec::cr(7)] {
            let a = instance_bytes(&spec, 0, 0).unwrap();
            let b = instance_bytes(&spec, 0, 0).unwrap();
            assert_eq!(a, b, "{:?}", spec.modality);
        }
        let a = TempDir::new("det-a");
        let b = TempDir::new("det-b");
        let spec = StudySpec {
            series: 2,
            ..small_ct(11, 4)
        };
        let fa = write_study(&spec, &a.0).unwrap();
        let fb = write_study(&spec, &b.0).unwrap();
        assert_eq!(fa.len(), 8);
        for (x, y) in fa.iter().zip(&fb) {
            assert_eq!(fs::read(&x.path).unwrap(), fs::read(&y.path).unwrap());
            assert_eq!(x.sop_instance_uid, y.sop_instance_uid);
        }
        // write_study and instance_bytes agree.
        assert_eq!(
            fs::read(&fa[5].path).unwrap(),
            instance_bytes(&spec, 1, 1).unwrap()
        );
        assert!(fa[5].path.ends_with("s002_i0002.dcm"));
    }

    #[test]
    fn different_seeds_give_different_uids() {
        let a = StudySpec::ct(1, 10);
        let b = StudySpec::ct(2, 10);
        assert_ne!(a.study_instance_uid(), b.study_instance_uid());
        assert_ne!(a.series_instance_uid(0), b.series_instance_uid(0));
        assert_ne!(a.sop_instance_uid(0, 0), b.sop_instance_uid(0, 0));
        assert_ne!(a.frame_of_reference_uid(), b.frame_of_reference_uid());
        // Same seed, other modality: different study.
        let c = StudySpec::mr(1, 10);
        assert_ne!(a.study_instance_uid(), c.study_instance_uid());
        assert_ne!(a.sop_instance_uid(0, 0), c.sop_instance_uid(0, 0));
        assert_ne!(
            instance_bytes(&small_ct(1, 1), 0, 0).unwrap(),
            instance_bytes(&small_ct(2, 1), 0, 0).unwrap()
        );
    }

    #[test]
    fn sop_uids_unique_and_short() {
        let spec = StudySpec {
            series: 5,
            ..small_ct(3, 10)
        };
        let dir = TempDir::new("uids");
        let files = write_study(&spec, &dir.0).unwrap();
        assert_eq!(files.len(), 50);
        let mut seen = HashSet::new();
        for f in &files {
            for uid in [&f.sop_instance_uid, &f.series_instance_uid, &f.study_instance_uid] {
                assert!(uid.len() <= 64, "{uid}");
                assert!(uid.starts_with("2.25."), "{uid}");
                let digits = &uid[5..];
                assert!(digits.bytes().all(|b| b.is_ascii_digit()));
                assert!(!digits.starts_with('0') || digits == "0");
            }
            assert!(seen.insert(f.sop_instance_uid.clone()));
            assert_eq!(f.size, fs::metadata(&f.path).unwrap().len());
        }
        let series: HashSet<_> = files.iter().map(|f| &f.series_instance_uid).collect();
        assert_eq!(series.len(), 5);
        let studies: HashSet<_> = files.iter().map(|f| &f.study_instance_uid).collect();
        assert_eq!(studies.len(), 1);
    }

    #[test]
    fn ct_file_reads_back() {
        let dir = TempDir::new("readback-ct");
        let spec = StudySpec::ct(5, 2);
        let files = write_study(&spec, &dir.0).unwrap();
        let obj = dicom_object::open_file(&files[1].path).unwrap();

        let meta = obj.meta();
        assert_eq!(
            meta.transfer_syntax().trim_end_matches('\0'),
            uids::EXPLICIT_VR_LITTLE_ENDIAN
        );
        assert_eq!(
            meta.media_storage_sop_class_uid().trim_end_matches('\0'),
            uids::CT_IMAGE_STORAGE
        );
        assert_eq!(
            meta.media_storage_sop_instance_uid().trim_end_matches('\0'),
            files[1].sop_instance_uid
        );
        assert!(meta
            .implementation_class_uid()
            .trim_end_matches('\0')
            .starts_with("2.25."));
        assert_eq!(
            meta.implementation_version_name().map(|s| s.trim_end()),
            Some(IMPLEMENTATION_VERSION_NAME)
        );

        assert_eq!(obj.element(tags::ROWS).unwrap().to_int::<u16>().unwrap(), 512);
        assert_eq!(obj.element(tags::COLUMNS).unwrap().to_int::<u16>().unwrap(), 512);
        assert_eq!(str_of(&obj, tags::SOP_INSTANCE_UID), files[1].sop_instance_uid);
        assert_eq!(
            str_of(&obj, tags::STUDY_INSTANCE_UID),
            files[1].study_instance_uid
        );
        assert_eq!(str_of(&obj, tags::SPECIFIC_CHARACTER_SET), "ISO_IR 192");
        assert_eq!(str_of(&obj, tags::MODALITY), "CT");
        assert_eq!(str_of(&obj, tags::MANUFACTURER), "openpacs-testkit");
        assert_eq!(str_of(&obj, tags::INSTANCE_NUMBER), "2");
        assert_eq!(str_of(&obj, tags::RESCALE_INTERCEPT), "-1024");
        assert_eq!(
            obj.element(tags::BITS_STORED).unwrap().to_int::<u16>().unwrap(),
            12
        );
        assert_eq!(
            obj.element(tags::PIXEL_REPRESENTATION)
                .unwrap()
                .to_int::<u16>()
                .unwrap(),
            1
        );
        for tag in [
            tags::PATIENT_BIRTH_DATE,
            tags::PATIENT_SEX,
            tags::STUDY_DATE,
            tags::STUDY_TIME,
            tags::SERIES_DATE,
            tags::ACCESSION_NUMBER,
            tags::STUDY_ID,
            tags::STUDY_DESCRIPTION,
            tags::REFERRING_PHYSICIAN_NAME,
            tags::SERIES_NUMBER,
            tags::SERIES_DESCRIPTION,
            tags::BODY_PART_EXAMINED,
            tags::FRAME_OF_REFERENCE_UID,
            tags::IMAGE_POSITION_PATIENT,
            tags::IMAGE_ORIENTATION_PATIENT,
            tags::SLICE_THICKNESS,
            tags::PIXEL_SPACING,
            tags::SAMPLES_PER_PIXEL,
            tags::PHOTOMETRIC_INTERPRETATION,
            tags::BITS_ALLOCATED,
            tags::HIGH_BIT,
            tags::RESCALE_SLOPE,
            tags::WINDOW_CENTER,
            tags::WINDOW_WIDTH,
        ] {
            assert!(obj.element(tag).is_ok(), "missing {tag}");
        }
        // Stack geometry: slice 2 is one slice thickness below slice 1.
        let z = |o: &InMemDicomObject| {
            o.element(tags::IMAGE_POSITION_PATIENT)
                .unwrap()
                .to_multi_float64()
                .unwrap()[2]
        };
        let first = dicom_object::open_file(&files[0].path).unwrap();
        let thickness = obj.element(tags::SLICE_THICKNESS).unwrap().to_float64().unwrap();
        assert!((z(&first) - z(&obj) - thickness).abs() < 1e-6);
        let pn = str_of(&obj, tags::PATIENT_NAME);
        assert_eq!(pn, spec.resolved_patient().patient_name);
        assert!(str_of(&obj, tags::PATIENT_ID).starts_with('P'));

        let pd = obj.element(tags::PIXEL_DATA).unwrap();
        assert_eq!(pd.vr(), VR::OW);
        let bytes = pd.to_bytes().unwrap();
        assert_eq!(bytes.len(), 512 * 512 * 2);
        let first = &bytes[..2];
        assert!(bytes.chunks(2).any(|c| c != first), "constant pixels");
        // Slices differ from each other.
        let other = dicom_object::open_file(&files[0].path).unwrap();
        assert_ne!(
            other.element(tags::PIXEL_DATA).unwrap().to_bytes().unwrap(),
            bytes
        );
    }

    #[test]
    fn mr_and_cr_read_back() {
        let dir = TempDir::new("readback-mrcr");
        for (spec, rows, cols, class) in [
            (StudySpec::mr(9, 1), 256usize, 256usize, uids::MR_IMAGE_STORAGE),
            (
                StudySpec {
                    rows: 300,
                    columns: 200,
                    ..StudySpec::cr(9)
                },
                300,
                200,
                uids::COMPUTED_RADIOGRAPHY_IMAGE_STORAGE,
            ),
        ] {
            let sub = dir.0.join(spec.modality.code());
            let files = write_study(&spec, &sub).unwrap();
            let obj = dicom_object::open_file(&files[0].path).unwrap();
            assert_eq!(str_of(&obj, tags::SOP_CLASS_UID), class);
            assert_eq!(obj.element(tags::ROWS).unwrap().to_int::<usize>().unwrap(), rows);
            assert_eq!(
                obj.element(tags::COLUMNS).unwrap().to_int::<usize>().unwrap(),
                cols
            );
            assert_eq!(
                obj.element(tags::BITS_STORED).unwrap().to_int::<u16>().unwrap(),
                16
            );
            assert_eq!(
                obj.element(tags::PIXEL_REPRESENTATION)
                    .unwrap()
                    .to_int::<u16>()
                    .unwrap(),
                0
            );
            let bytes = obj.element(tags::PIXEL_DATA).unwrap().to_bytes().unwrap();
            assert_eq!(bytes.len(), rows * cols * 2);
            assert!(bytes.chunks(2).any(|c| c != &bytes[..2]));
        }
    }

    #[test]
    fn derived_patients_use_french_names() {
        let names: HashSet<String> = (0..500).map(|seed| derive_patient(seed).patient_name).collect();
        for expected in ["Lefèvre^Hélène", "Dupont^Jean", "Bénard^Zoé"] {
            assert!(names.contains(expected), "{expected} never chosen");
        }
        let p = derive_patient(42);
        assert_eq!(p, derive_patient(42));
        assert!(p.patient_id.starts_with('P'));
        assert!(p.patient_id[1..].bytes().all(|b| b.is_ascii_digit()));
        assert_eq!(p.birth_date.len(), 8);
        assert!(p.sex == "M" || p.sex == "F");
    }

    #[test]
    fn explicit_patient_is_used() {
        let patient = PatientSpec {
            patient_id: "P123".into(),
            patient_name: "Müller^Anaëlle".into(),
            birth_date: "19800229".into(),
            sex: "F".into(),
        };
        let spec = StudySpec {
            patient: Some(patient.clone()),
            ..small_ct(1, 1)
        };
        let dir = TempDir::new("patient");
        let files = write_study(&spec, &dir.0).unwrap();
        let obj = dicom_object::open_file(&files[0].path).unwrap();
        assert_eq!(str_of(&obj, tags::PATIENT_NAME), "Müller^Anaëlle");
        assert_eq!(str_of(&obj, tags::PATIENT_ID), "P123");
        assert_eq!(str_of(&obj, tags::PATIENT_BIRTH_DATE), "19800229");
    }

    #[test]
    fn study_dates_in_range() {
        for seed in 0..200 {
            let spec = StudySpec::ct(seed, 1);
            let ctx = StudyContext::new(&spec);
            let year: u32 = ctx.study_date[..4].parse().unwrap();
            assert!((2015..=2026).contains(&year));
            assert!(ctx.accession_number.len() <= 16);
            assert!(ctx.study_id.len() <= 16);
        }
    }

    #[test]
    fn prefix_stable_when_growing_study() {
        let small = small_ct(21, 3);
        let big = StudySpec {
            series: 2,
            ..small_ct(21, 10)
        };
        assert_eq!(
            instance_bytes(&small, 0, 2).unwrap(),
            instance_bytes(&big, 0, 2).unwrap()
        );
    }

    #[test]
    fn rejects_bad_input() {
        let spec = small_ct(1, 2);
        assert!(instance_bytes(&spec, 1, 0).is_err());
        assert!(instance_bytes(&spec, 0, 2).is_err());
        let zero = StudySpec { rows: 0, ..spec };
        assert!(instance_bytes(&zero, 0, 0).is_err());
        assert_eq!("CT".parse::<Modality>(), Ok(Modality::Ct));
        assert!("xa".parse::<Modality>().is_err());
    }

    #[test]
    fn ds_formatting() {
        assert_eq!(ds(1.25), "1.25");
        assert_eq!(ds(5.0), "5");
        assert_eq!(ds(-0.0), "0");
        assert_eq!(ds(-174.65625), "-174.65625");
        assert_eq!(ds(0.4296875), "0.4296875");
        assert_eq!(ds(1.0 / 3.0), "0.33333333333333");
        assert!(ds(-123456.0 / 7.0).len() <= 16);
        assert!(ds(1e300).len() <= 16);
    }

    #[test]
    fn slice_generation_is_fast() {
        let spec = StudySpec::ct(1, 1);
        let study = StudyContext::new(&spec);
        let series = SeriesContext::new(&spec, &study, 0);
        let start = Instant::now();
        let n = 10;
        for i in 0..n {
            let px = generate_pixels(&spec, &study, &series, i, f64::from(i));
            assert_eq!(px.len(), 512 * 512);
        }
        let per_slice = start.elapsed() / n;
        eprintln!("512x512 CT slice generated in {per_slice:?}");
        // Generous bound so debug builds pass; release is ~1 ms.
        assert!(per_slice.as_millis() < 200, "{per_slice:?} per slice");
    }
}
