//! pacs-testkit: deterministic synthetic DICOM studies for tests and benchmarks.
//!
//! Everything a generated study contains (UIDs, patient demographics, dates,
//! geometry and pixel data) is derived from [`StudySpec::seed`] through a fixed
//! hash, so the same spec always yields byte-identical Part 10 files.
//!
//! ```no_run
//! use pacs_testkit::{write_study, StudySpec};
//!
//! let spec = StudySpec::ct(42, 20);
//! let files = write_study(&spec, std::path::Path::new("/tmp/study")).unwrap();
//! assert_eq!(files.len(), 20);
//! ```
//!
//! Identity model:
//! - the patient depends only on `seed` (a CT and an MR study with the same
//!   seed belong to the same patient) unless [`StudySpec::patient`] is given;
//! - study-level attributes and UIDs depend on `(seed, modality)`;
//! - series and instance UIDs depend on `(seed, modality, series, instance)`
//!   only, so raising `instances_per_series` or `series` keeps the existing
//!   instances unchanged (prefix-stable). Pixel content additionally depends on
//!   `rows`/`columns`.

mod generator;

pub use generator::{
    instance_bytes, write_study, GeneratedInstance, Modality, PatientSpec, StudySpec,
    IMPLEMENTATION_VERSION_NAME,
};

pub mod garage;
pub mod postgres;
pub mod proxy;
pub mod server;
