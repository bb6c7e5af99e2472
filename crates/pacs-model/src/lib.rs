//! pacs-model: the domain vocabulary of openpacs.
//!
//! This crate holds plain types and pure functions shared by the DIMSE services, the web
//! services and the index. It performs no IO and has no async code, so every other crate can
//! depend on it without pulling in a runtime.

pub mod admission;
pub mod matching;
pub mod name_words;
pub mod uid;

pub use matching::{
    check_temporal_key, fold_person_name, like_pattern, normalize_date, normalize_datetime, normalize_time,
    Matcher, ValueKind,
};
pub use uid::{check_uid, has_leading_zero, url_segment};

/// The message of an error and of all its sources, joined with ": ". dicom-rs's errors say
/// little at the top ("Could not read data set token"); the cause (which element, at what
/// offset, what was wrong) is in their sources, and an operator needs to read it.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        // snafu errors often repeat their source's message in their own: say it once.
        if !text.ends_with(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

/// Tenant identifier; every index row carries one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(pub i64);

impl TenantId {
    /// The tenant used when a deployment does not configure multi-tenancy.
    pub const DEFAULT: TenantId = TenantId(1);
    /// The platform itself, outside every establishment: its operators' accounts and the
    /// platform's own audit trail (tenant changes, operators' log-ins, break-glass grants).
    /// It holds no patient data and no route (AE title, facility) can lead to it.
    pub const PLATFORM: TenantId = TenantId(0);
}

/// The Query/Retrieve Level (0008,0052) of a C-FIND, C-MOVE or C-GET request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QueryLevel {
    Patient,
    Study,
    Series,
    Image,
}

impl QueryLevel {
    /// Parses QueryRetrieveLevel values "PATIENT", "STUDY", "SERIES", "IMAGE" (trimmed of
    /// spaces/NUL; case-sensitive per DICOM). None otherwise.
    pub fn parse(s: &str) -> Option<QueryLevel> {
        // CS values are defined in upper case, so a lower-case level is a malformed request
        // rather than a synonym; padding, however, is legitimately present on the wire.
        match matching::trim_value(s) {
            "PATIENT" => Some(QueryLevel::Patient),
            "STUDY" => Some(QueryLevel::Study),
            "SERIES" => Some(QueryLevel::Series),
            "IMAGE" => Some(QueryLevel::Image),
            _ => None,
        }
    }

    /// The DICOM code string for this level, as it appears in (0008,0052).
    pub fn as_str(self) -> &'static str {
        match self {
            QueryLevel::Patient => "PATIENT",
            QueryLevel::Study => "STUDY",
            QueryLevel::Series => "SERIES",
            QueryLevel::Image => "IMAGE",
        }
    }
}

/// The Query/Retrieve Information Model named by the SOP Class of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InformationModel {
    PatientRoot,
    StudyRoot,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_level_parses_padded_values() {
        assert_eq!(QueryLevel::parse("PATIENT"), Some(QueryLevel::Patient));
        assert_eq!(QueryLevel::parse("STUDY "), Some(QueryLevel::Study));
        assert_eq!(QueryLevel::parse("SERIES\0"), Some(QueryLevel::Series));
        assert_eq!(QueryLevel::parse(" IMAGE \0"), Some(QueryLevel::Image));
    }

    #[test]
    fn query_level_rejects_unknown_and_lowercase() {
        assert_eq!(QueryLevel::parse("study"), None);
        assert_eq!(QueryLevel::parse(""), None);
        assert_eq!(QueryLevel::parse("INSTANCE"), None);
        assert_eq!(QueryLevel::parse("ST UDY"), None);
    }

    #[test]
    fn query_level_round_trips_through_as_str() {
        for level in [
            QueryLevel::Patient,
            QueryLevel::Study,
            QueryLevel::Series,
            QueryLevel::Image,
        ] {
            assert_eq!(QueryLevel::parse(level.as_str()), Some(level));
        }
    }

    #[test]
    fn default_tenant_is_one() {
        assert_eq!(TenantId::DEFAULT, TenantId(1));
        assert!(TenantId(1) < TenantId(2));
    }
}

/// Checks an application entity title (PS3.5: AE, at most 16 characters of the default
/// repertoire, no backslash or control character, not only spaces). The message says what is
/// wrong, for the person who typed it.
pub fn check_ae_title(ae_title: &str) -> Result<(), &'static str> {
    if ae_title.trim().is_empty() || ae_title.len() > 16 {
        return Err("an AE title has 1 to 16 characters");
    }
    if !ae_title
        .chars()
        .all(|c| c.is_ascii() && !c.is_ascii_control() && c != '\\')
    {
        return Err("an AE title uses printable ASCII characters other than backslash");
    }
    Ok(())
}

#[cfg(test)]
mod ae_title_tests {
    use super::check_ae_title;

    #[test]
    fn ae_titles_follow_the_ae_value_representation() {
        assert!(check_ae_title("STORESCP").is_ok());
        assert!(check_ae_title("WS 2").is_ok());
        assert!(check_ae_title("SIXTEEN_CHARS_OK").is_ok());
        for bad in ["", "   ", "SEVENTEEN_CHARS_X", "A\\B", "TAB\tX", "ÉCHO"] {
            assert!(check_ae_title(bad).is_err(), "{bad:?}");
        }
    }
}
