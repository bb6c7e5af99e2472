//! The one attribute matching engine (DICOM PS3.4 C.2.2.2), reused by C-FIND, QIDO-RS and the
//! modality worklist.
//!
//! A query key value is parsed once into a [`Matcher`], which callers can either evaluate in
//! memory with [`Matcher::matches`] or translate into SQL (using [`like_pattern`] for wildcards
//! and the normalized forms carried by the matcher for ranges and single values).

use std::borrow::Cow;

use dicom_core::VR;
use unicode_normalization::UnicodeNormalization;

/// How a value is compared, derived from the VR of the attribute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueKind {
    Text,
    PersonName,
    Date,
    Time,
    DateTime,
    Uid,
}

impl ValueKind {
    /// Maps PN, DA, TM, DT and UI to their dedicated kinds; every other VR is plain text.
    pub fn from_vr(vr: VR) -> ValueKind {
        match vr {
            VR::PN => ValueKind::PersonName,
            VR::DA => ValueKind::Date,
            VR::TM => ValueKind::Time,
            VR::DT => ValueKind::DateTime,
            VR::UI => ValueKind::Uid,
            _ => ValueKind::Text,
        }
    }

    fn is_temporal(self) -> bool {
        matches!(self, ValueKind::Date | ValueKind::Time | ValueKind::DateTime)
    }
}

/// A parsed query key value.
#[derive(Clone, Debug, PartialEq)]
pub enum Matcher {
    /// Empty query value (or a lone "*"): every stored value matches, including absent/empty.
    Universal,
    /// Exact match. Person names are stored folded (see [`fold_person_name`]) and dates and
    /// times normalized, so the value can be compared directly with an index column.
    Single(String),
    /// Contains '*' or '?'. Person-name patterns are stored folded.
    Wildcard(String),
    /// DA/TM/DT ranges "A-B", "-B", "A-"; bounds already normalized (see below), inclusive.
    Range {
        low: Option<String>,
        high: Option<String>,
    },
    /// Backslash-separated list of UIDs (only for ValueKind::Uid).
    UidList(Vec<String>),
    /// Person names by their words (see [`crate::name_words`]): each folded word must match
    /// the start of a component of the name or of a word inside one. Never produced by
    /// [`Matcher::parse`]: C-FIND keeps the standard's whole-value matching; searches that
    /// ask for it (QIDO-RS `fuzzymatching=true`) get it from [`Matcher::name_words`].
    NameWords(Vec<String>),
}

impl Matcher {
    /// Parse a query key value already decoded to UTF-8 (may carry trailing spaces/NULs).
    pub fn parse(kind: ValueKind, raw: &str) -> Matcher {
        let value = trim_value(raw);
        if value.is_empty() || value == "*" {
            return Matcher::Universal;
        }
        match kind {
            ValueKind::Uid => parse_uid(value),
            ValueKind::PersonName => {
                // Folding can only shrink the value to nothing when it consisted of empty
                // components such as "^^", which carry no constraint at all.
                let folded = fold_person_name(value);
                if folded.is_empty() || is_all_stars(&folded) {
                    Matcher::Universal
                } else if has_wildcard(&folded) {
                    Matcher::Wildcard(folded)
                } else {
                    Matcher::Single(folded)
                }
            }
            ValueKind::Text => {
                if is_all_stars(value) {
                    Matcher::Universal
                } else if has_wildcard(value) {
                    Matcher::Wildcard(value.to_owned())
                } else {
                    Matcher::Single(value.to_owned())
                }
            }
            ValueKind::Date | ValueKind::Time | ValueKind::DateTime => parse_temporal(kind, value),
        }
    }

    /// Whether a stored value matches. `value` None means absent; empty also counts as absent.
    /// A multi-valued stored value ("A\B") matches if any of its values matches.
    pub fn matches(&self, kind: ValueKind, value: Option<&str>) -> bool {
        if *self == Matcher::Universal {
            return true;
        }
        let Some(value) = value else {
            return false;
        };
        value
            .split('\\')
            .map(trim_value)
            .filter(|v| !v.is_empty())
            .any(|v| self.matches_one(kind, v))
    }

    /// Matches a single, trimmed, non-empty stored value.
    fn matches_one(&self, kind: ValueKind, value: &str) -> bool {
        match self {
            Matcher::Universal => true,
            Matcher::Single(query) => single_matches(kind, query, value),
            Matcher::UidList(queries) => queries.iter().any(|q| single_matches(kind, q, value)),
            Matcher::NameWords(words) => crate::name_words::matches(words, &fold_person_name(value)),
            Matcher::Wildcard(pattern) => {
                if kind == ValueKind::PersonName {
                    // Folding is idempotent, so re-folding a pattern produced by `parse` is
                    // harmless and makes hand-built matchers behave the same way.
                    wildcard_matches(&fold_person_name(pattern), &fold_person_name(value))
                } else {
                    wildcard_matches(trim_value(pattern), value)
                }
            }
            Matcher::Range { low, high } => {
                let Some(value) = normalize_for_kind(kind, value) else {
                    return false;
                };
                let above_low = low
                    .as_deref()
                    .is_none_or(|low| *normalize_or_raw(kind, low) <= *value);
                let below_high = high
                    .as_deref()
                    .is_none_or(|high| *value <= *normalize_or_raw(kind, high));
                above_low && below_high
            }
        }
    }
}

/// Checks a date, time or date-time query value as a client wrote it: empty, a single value or
/// a range, each bound valid; `Err` says what was expected, for the client to read.
pub fn check_temporal_key(kind: ValueKind, raw: &str) -> Result<(), String> {
    let value = trim_value(raw);
    if value.is_empty() || value == "*" || !kind.is_temporal() {
        return Ok(());
    }
    let valid = |v: &str| v.is_empty() || normalize_for_kind(kind, v).is_some();
    let ok = match range_separator(kind, value) {
        Some(at) => valid(trim_value(&value[..at])) && valid(trim_value(&value[at + 1..])) && value != "-",
        None => normalize_for_kind(kind, value).is_some(),
    };
    if ok {
        return Ok(());
    }
    let form = match kind {
        ValueKind::Date => "a date YYYYMMDD, or a range YYYYMMDD-YYYYMMDD (either side may be left out)",
        ValueKind::Time => "a time HHMMSS (HH, HHMM, fractions allowed), or a range of two",
        _ => "a date-time YYYYMMDDHHMMSS (shorter forms allowed), or a range of two",
    };
    Err(format!("{value:?} is not {form}"))
}

/// Trims the padding DICOM allows around values: spaces for text VRs and NUL for UI.
pub(crate) fn trim_value(s: &str) -> &str {
    s.trim_matches(|c| c == ' ' || c == '\0')
}

fn has_wildcard(s: &str) -> bool {
    s.contains(['*', '?'])
}

/// A pattern made only of '*' accepts every string, the empty one included, so it is
/// equivalent to universal matching and is parsed as such.
fn is_all_stars(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c == '*')
}

fn parse_uid(value: &str) -> Matcher {
    if !value.contains('\\') {
        // PS3.4 does not allow wildcards in UIDs, so '*' and '?' are taken literally.
        return Matcher::Single(value.to_owned());
    }
    let uids: Vec<String> = value
        .split('\\')
        .map(trim_value)
        .filter(|uid| !uid.is_empty())
        .map(str::to_owned)
        .collect();
    if uids.is_empty() {
        // A list made only of separators constrains nothing, like an empty value.
        Matcher::Universal
    } else {
        Matcher::UidList(uids)
    }
}

fn parse_temporal(kind: ValueKind, value: &str) -> Matcher {
    if let Some(separator) = range_separator(kind, value) {
        let low = parse_bound(kind, &value[..separator]);
        let high = parse_bound(kind, &value[separator + 1..]);
        return match (low, high) {
            (Some(low), Some(high)) => Matcher::Range { low, high },
            // An unparseable range is kept verbatim as a single value: it then matches no
            // well-formed stored value, both here and when compared with an index column.
            _ => Matcher::Single(value.to_owned()),
        };
    }
    if is_all_stars(value) {
        Matcher::Universal
    } else if has_wildcard(value) {
        Matcher::Wildcard(value.to_owned())
    } else {
        Matcher::Single(normalize_or_raw(kind, value).into_owned())
    }
}

/// Parses one side of a range: `Some(None)` for an open side, `None` when invalid.
fn parse_bound(kind: ValueKind, raw: &str) -> Option<Option<String>> {
    let raw = trim_value(raw);
    if raw.is_empty() {
        Some(None)
    } else {
        normalize_for_kind(kind, raw).map(Some)
    }
}

/// Finds the '-' separating the two bounds of a range, if the value is a range.
///
/// For DA and TM any '-' is the separator. A DT value may however end with a "-ZZZZ" UTC
/// offset, so a '-' followed by exactly four digits (then the end or another '-') is treated as
/// an offset when the text before it already includes at least the hour; shorter prefixes such
/// as "2020-2021" stay year ranges, which is by far the more common intent.
fn range_separator(kind: ValueKind, value: &str) -> Option<usize> {
    if kind != ValueKind::DateTime {
        return value.find('-');
    }
    let bytes = value.as_bytes();
    bytes.iter().enumerate().find_map(|(i, &b)| {
        if b != b'-' {
            return None;
        }
        let is_offset = i >= 10
            && bytes.len() >= i + 5
            && bytes[i + 1..i + 5].iter().all(u8::is_ascii_digit)
            && (bytes.len() == i + 5 || bytes[i + 5] == b'-');
        (!is_offset).then_some(i)
    })
}

/// Normalizes a value for comparison according to its kind; non-temporal kinds are returned
/// as they are. None when a temporal value is malformed.
fn normalize_for_kind(kind: ValueKind, value: &str) -> Option<String> {
    match kind {
        ValueKind::Date => normalize_date(value),
        ValueKind::Time => normalize_time(value),
        ValueKind::DateTime => normalize_datetime(value),
        ValueKind::Text | ValueKind::PersonName | ValueKind::Uid => Some(value.to_owned()),
    }
}

/// Like [`normalize_for_kind`], but falls back to the trimmed raw text, so that malformed
/// values can still be compared verbatim.
fn normalize_or_raw(kind: ValueKind, value: &str) -> Cow<'_, str> {
    let value = trim_value(value);
    if !kind.is_temporal() {
        return Cow::Borrowed(value);
    }
    match normalize_for_kind(kind, value) {
        Some(normalized) => Cow::Owned(normalized),
        None => Cow::Borrowed(value),
    }
}

fn single_matches(kind: ValueKind, query: &str, value: &str) -> bool {
    match kind {
        ValueKind::PersonName => fold_person_name(query) == fold_person_name(value),
        ValueKind::Date | ValueKind::Time | ValueKind::DateTime => {
            normalize_or_raw(kind, query) == normalize_or_raw(kind, value)
        }
        ValueKind::Text | ValueKind::Uid => trim_value(query) == value,
    }
}

/// Iterative wildcard matching over Unicode scalar values.
///
/// Only the most recent '*' is ever revisited: any earlier star can absorb whatever a later
/// one would, so the worst case is O(pattern × text) instead of exponential.
pub(crate) fn wildcard_matches(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    let (mut p, mut t) = (0, 0);
    // Position of the last '*' seen and the text position it currently stretches to.
    let mut backtrack: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == '?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == '*' {
            backtrack = Some((p, t));
            p += 1;
        } else if let Some((star, star_t)) = backtrack {
            backtrack = Some((star, star_t + 1));
            p = star + 1;
            t = star_t + 1;
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

/// Folding for person-name matching: Unicode NFD, combining marks removed, lowercased, trailing empty
/// components ('^' and '=' groups) and surrounding spaces removed, so "Lefèvre^Hélène^^" and "LEFEVRE^HELENE" fold equal.
/// Used both for the index column and for query values. Wildcards '*' '?' pass through unchanged.
pub fn fold_person_name(s: &str) -> String {
    let mut folded = String::with_capacity(s.len());
    for c in s.nfd().filter(|&c| !is_diacritic(c)) {
        for lower in c.to_lowercase() {
            // Two lower-case letters have a caseless equivalent that `to_lowercase` alone does
            // not produce: "STRASSE" must meet "Straße", and a final sigma "ς" must meet the
            // "σ" that an upper-case "Σ" lowercases to.
            match lower {
                'ß' => folded.push_str("ss"),
                'ς' => folded.push('σ'),
                other => folded.push(other),
            }
        }
    }
    // Recomposing keeps the marks that were deliberately not stripped (kana voicing, for
    // instance) attached to their base character, so '?' still matches one visible letter.
    let folded: String = folded.nfc().collect();
    trim_name_structure(&folded)
}

/// Whether a character is a diacritic that name matching should ignore.
///
/// Only the combining blocks used for Latin, Greek and Cyrillic accents are removed: other
/// scripts use combining marks to tell distinct sounds apart (the Japanese voicing mark turns
/// "カ" (ka) into "ガ" (ga)), and erasing them would merge different names.
fn is_diacritic(c: char) -> bool {
    matches!(
        c,
        '\u{0300}'..='\u{036F}'
            | '\u{1AB0}'..='\u{1AFF}'
            | '\u{1DC0}'..='\u{1DFF}'
            | '\u{20D0}'..='\u{20FF}'
            | '\u{FE20}'..='\u{FE2F}'
    )
}

/// Removes the padding around each component and the empty trailing components and groups,
/// which DICOM considers insignificant ("Dupont^Jean^^^" is "Dupont^Jean").
fn trim_name_structure(name: &str) -> String {
    let mut groups: Vec<String> = trim_value(name)
        .split('=')
        .map(|group| {
            let mut components: Vec<&str> = group.split('^').map(trim_value).collect();
            while components.last().is_some_and(|c| c.is_empty()) {
                components.pop();
            }
            components.join("^")
        })
        .collect();
    while groups.last().is_some_and(|g| g.is_empty()) {
        groups.pop();
    }
    groups.join("=")
}

/// Turn a DICOM wildcard pattern into a SQL LIKE pattern to be used with `ESCAPE '\'`:
/// '*' -> '%', '?' -> '_', and literal '%', '_', '\' escaped with '\'.
pub fn like_pattern(wildcard: &str) -> String {
    let mut like = String::with_capacity(wildcard.len() + 4);
    for c in wildcard.chars() {
        match c {
            '*' => like.push('%'),
            '?' => like.push('_'),
            '%' | '_' | '\\' => {
                like.push('\\');
                like.push(c);
            }
            other => like.push(other),
        }
    }
    like
}

/// Converts a short run of ASCII digits into its numeric value.
///
/// Callers validate the digits beforehand; a stray non-digit counts as zero instead of
/// panicking, so a missed check can at worst misjudge a value, never crash the server.
fn digits_value(digits: &[u8]) -> u32 {
    digits
        .iter()
        .fold(0, |acc, &d| acc * 10 + char::from(d).to_digit(10).unwrap_or(0))
}

fn all_digits(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit())
}

/// Splits off a fractional second and checks it has at most six digits.
fn split_fraction(s: &str) -> Option<(&str, &str)> {
    match s.split_once('.') {
        Some((main, fraction)) if fraction.len() <= 6 && all_digits(fraction) => Some((main, fraction)),
        Some(_) => None,
        None => Some((s, "")),
    }
}

/// Validates "HH[MM[SS]]" digits (already checked to be ASCII) and returns them zero-filled
/// to six digits.
fn time_of_day(digits: &str) -> Option<String> {
    let bytes = digits.as_bytes();
    if !matches!(bytes.len(), 0 | 2 | 4 | 6) {
        return None;
    }
    let field = |start: usize| bytes.get(start..start + 2).map_or(0, digits_value);
    let (hours, minutes, seconds) = (field(0), field(2), field(4));
    // A seconds value of 60 is allowed because DICOM times may record a leap second.
    if hours > 23 || minutes > 59 || seconds > 60 {
        return None;
    }
    Some(format!("{hours:02}{minutes:02}{seconds:02}"))
}

/// Normalizes a DA value to "YYYYMMDD", accepting the legacy ACR-NEMA "YYYY.MM.DD" form.
/// None when not a valid date.
pub fn normalize_date(s: &str) -> Option<String> {
    let s = trim_value(s);
    let bytes = s.as_bytes();
    let compact: Cow<'_, str> = if bytes.len() == 10 && bytes[4] == b'.' && bytes[7] == b'.' {
        Cow::Owned(s.replace('.', ""))
    } else {
        Cow::Borrowed(s)
    };
    if compact.len() != 8 || !all_digits(&compact) {
        return None;
    }
    let bytes = compact.as_bytes();
    let month = digits_value(&bytes[4..6]);
    let day = digits_value(&bytes[6..8]);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    Some(compact.into_owned())
}

/// Normalize a TM value to "HHMMSS.FFFFFF" (missing parts zero-filled; accepts legacy "HH:MM:SS"). None when not a time.
pub fn normalize_time(s: &str) -> Option<String> {
    let s = trim_value(s);
    let (main, fraction) = split_fraction(s)?;
    let digits: Cow<'_, str> = if main.contains(':') {
        // The legacy ACR-NEMA form separates every field with a colon, each exactly two digits.
        let fields: Vec<&str> = main.split(':').collect();
        if fields.len() > 3 || fields.iter().any(|f| f.len() != 2) {
            return None;
        }
        Cow::Owned(fields.concat())
    } else {
        Cow::Borrowed(main)
    };
    if digits.is_empty() || !all_digits(&digits) {
        return None;
    }
    // A fraction only makes sense once the seconds are given.
    if main.len() != s.len() && digits.len() != 6 {
        return None;
    }
    let time = time_of_day(&digits)?;
    Some(format!("{time}.{fraction:0<6}"))
}

/// Normalize a DT value to "YYYYMMDDHHMMSS.FFFFFF" (missing parts: month/day 01, time zero-filled; a trailing +/-ZZZZ offset is ignored). None when invalid.
pub fn normalize_datetime(s: &str) -> Option<String> {
    let s = trim_value(s);
    let bytes = s.as_bytes();
    let s = match bytes.len().checked_sub(5) {
        Some(sign) if matches!(bytes[sign], b'+' | b'-') && all_digits(&s[sign + 1..]) => &s[..sign],
        _ => s,
    };
    let (main, fraction) = split_fraction(s)?;
    if !all_digits(main) || !matches!(main.len(), 4 | 6 | 8 | 10 | 12 | 14) {
        return None;
    }
    if main.len() != s.len() && main.len() != 14 {
        return None;
    }
    let bytes = main.as_bytes();
    let month = bytes.get(4..6).map_or(1, digits_value);
    let day = bytes.get(6..8).map_or(1, digits_value);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let time = time_of_day(main.get(8..).unwrap_or(""))?;
    Some(format!(
        "{year}{month:02}{day:02}{time}.{fraction:0<6}",
        year = &main[..4]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn single(s: &str) -> Matcher {
        Matcher::Single(s.to_owned())
    }

    fn range(low: Option<&str>, high: Option<&str>) -> Matcher {
        Matcher::Range {
            low: low.map(str::to_owned),
            high: high.map(str::to_owned),
        }
    }

    fn matches(kind: ValueKind, query: &str, value: &str) -> bool {
        Matcher::parse(kind, query).matches(kind, Some(value))
    }

    #[test]
    fn value_kind_from_vr() {
        assert_eq!(ValueKind::from_vr(VR::PN), ValueKind::PersonName);
        assert_eq!(ValueKind::from_vr(VR::DA), ValueKind::Date);
        assert_eq!(ValueKind::from_vr(VR::TM), ValueKind::Time);
        assert_eq!(ValueKind::from_vr(VR::DT), ValueKind::DateTime);
        assert_eq!(ValueKind::from_vr(VR::UI), ValueKind::Uid);
        assert_eq!(ValueKind::from_vr(VR::LO), ValueKind::Text);
        assert_eq!(ValueKind::from_vr(VR::CS), ValueKind::Text);
    }

    #[test]
    fn empty_and_lone_star_are_universal() {
        for kind in [
            ValueKind::Text,
            ValueKind::PersonName,
            ValueKind::Date,
            ValueKind::Time,
            ValueKind::DateTime,
            ValueKind::Uid,
        ] {
            assert_eq!(Matcher::parse(kind, ""), Matcher::Universal);
            assert_eq!(Matcher::parse(kind, "  \0"), Matcher::Universal);
            assert_eq!(Matcher::parse(kind, "*"), Matcher::Universal);
            assert_eq!(Matcher::parse(kind, "* "), Matcher::Universal);
        }
        assert_eq!(Matcher::parse(ValueKind::Text, "***"), Matcher::Universal);
        assert_eq!(Matcher::parse(ValueKind::PersonName, "^^="), Matcher::Universal);
    }

    #[test]
    fn universal_matches_absent_and_empty() {
        let m = Matcher::Universal;
        assert!(m.matches(ValueKind::Text, None));
        assert!(m.matches(ValueKind::Text, Some("")));
        assert!(m.matches(ValueKind::Date, Some("garbage")));
        assert!(m.matches(ValueKind::PersonName, Some("Dupont")));
    }

    #[test]
    fn absent_or_empty_never_matches_a_constraint() {
        let matchers = [
            (ValueKind::Text, Matcher::parse(ValueKind::Text, "ABC")),
            (ValueKind::Text, Matcher::parse(ValueKind::Text, "A*")),
            (ValueKind::Text, Matcher::parse(ValueKind::Text, "*?")),
            (ValueKind::Date, Matcher::parse(ValueKind::Date, "20200101-")),
            (ValueKind::Date, Matcher::parse(ValueKind::Date, "-")),
            (ValueKind::Uid, Matcher::parse(ValueKind::Uid, "1.2\\1.3")),
        ];
        for (kind, m) in &matchers {
            assert!(!m.matches(*kind, None), "{m:?} matched None");
            assert!(!m.matches(*kind, Some("")), "{m:?} matched empty");
            assert!(!m.matches(*kind, Some(" \0 ")), "{m:?} matched padding");
            assert!(!m.matches(*kind, Some("\\")), "{m:?} matched empty values");
        }
    }

    #[test]
    fn text_single_is_exact_and_case_sensitive() {
        assert_eq!(Matcher::parse(ValueKind::Text, "CT "), single("CT"));
        assert!(matches(ValueKind::Text, "CT", "CT"));
        assert!(matches(ValueKind::Text, "CT\0", " CT  "));
        assert!(!matches(ValueKind::Text, "CT", "ct"));
        assert!(!matches(ValueKind::Text, "CT", "CTA"));
        // Accents are significant outside person names.
        assert!(!matches(ValueKind::Text, "Hopital", "Hôpital"));
    }

    #[test]
    fn text_never_becomes_a_range() {
        assert_eq!(Matcher::parse(ValueKind::Text, "A-B"), single("A-B"));
        assert!(matches(ValueKind::Text, "A-B", "A-B"));
        assert!(!matches(ValueKind::Text, "A-C", "A-B"));
    }

    #[test]
    fn text_wildcards() {
        assert_eq!(
            Matcher::parse(ValueKind::Text, "AB*"),
            Matcher::Wildcard("AB*".into())
        );
        assert!(matches(ValueKind::Text, "AB*", "AB"));
        assert!(matches(ValueKind::Text, "AB*", "ABCDE"));
        assert!(!matches(ValueKind::Text, "AB*", "ab"));
        assert!(matches(ValueKind::Text, "A?C", "ABC"));
        assert!(!matches(ValueKind::Text, "A?C", "AC"));
        assert!(!matches(ValueKind::Text, "A?C", "ABBC"));
        assert!(matches(ValueKind::Text, "*CHEST*", "CT CHEST W/O"));
        assert!(matches(ValueKind::Text, "*", "anything"));
    }

    #[test]
    fn question_mark_matches_one_unicode_character() {
        assert!(matches(ValueKind::Text, "H?pital", "Hôpital"));
        assert!(!matches(ValueKind::Text, "H??pital", "Hôpital"));
        assert!(matches(ValueKind::Text, "??", "日本"));
        assert!(matches(ValueKind::Text, "M?ller", "Müller"));
    }

    #[test]
    fn wildcard_engine_edge_cases() {
        assert!(wildcard_matches("", ""));
        assert!(!wildcard_matches("", "a"));
        assert!(wildcard_matches("**", ""));
        assert!(wildcard_matches("a*b*c", "aXXbYYc"));
        assert!(wildcard_matches("a*b*c", "abcbc"));
        assert!(!wildcard_matches("a*b*c", "abcb"));
        assert!(wildcard_matches("*?", "x"));
        assert!(!wildcard_matches("*?", ""));
        assert!(wildcard_matches("*ab", "aaab"));
    }

    #[test]
    fn pathological_wildcard_is_fast() {
        let text = "a".repeat(200_000);
        let start = Instant::now();
        assert!(!wildcard_matches("*a*a*a*a*a*a*b", &text));
        assert!(wildcard_matches("*a*a*a*a*a*a*", &text));
        assert!(!matches(ValueKind::Text, "*a*a*a*a*a*a*b", &text));
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn fold_person_name_examples() {
        assert_eq!(fold_person_name("Lefèvre^Hélène^^"), "lefevre^helene");
        assert_eq!(
            fold_person_name("Lefèvre^Hélène^^"),
            fold_person_name("LEFEVRE^HELENE")
        );
        assert_eq!(fold_person_name("Müller"), "muller");
        assert_eq!(fold_person_name("Ñúñez^José"), "nunez^jose");
        assert_eq!(fold_person_name("  Dupont^Jean^^^ "), "dupont^jean");
        assert_eq!(fold_person_name("Dupont^^Jean"), "dupont^^jean");
        assert_eq!(fold_person_name("Dupont ^ Jean"), "dupont^jean");
        assert_eq!(fold_person_name("Dupont^Jean^^^=="), "dupont^jean");
        assert_eq!(fold_person_name("=山田^太郎"), "=山田^太郎");
        assert_eq!(fold_person_name("Straße"), fold_person_name("STRASSE"));
        assert_eq!(fold_person_name("ΣΩΚΡΑΤΗΣ"), fold_person_name("Σωκράτης"));
        assert_eq!(fold_person_name("Lef?vre*"), "lef?vre*");
        assert_eq!(fold_person_name(""), "");
    }

    #[test]
    fn fold_person_name_handles_decomposed_input_and_is_idempotent() {
        // "Hélène" written with combining accents, as some systems store it.
        let decomposed = "He\u{301}le\u{300}ne";
        assert_eq!(fold_person_name(decomposed), "helene");
        for name in ["Lefèvre^Hélène^^", "İzmir", "ガッツ^太郎", "Ñúñez"] {
            let once = fold_person_name(name);
            assert_eq!(fold_person_name(&once), once);
        }
    }

    #[test]
    fn fold_person_name_keeps_kana_voicing() {
        assert_ne!(fold_person_name("ガトウ"), fold_person_name("カトウ"));
    }

    #[test]
    fn person_name_single_is_case_and_accent_insensitive() {
        let pn = ValueKind::PersonName;
        assert_eq!(Matcher::parse(pn, "DUPONT^JEAN"), single("dupont^jean"));
        assert!(matches(pn, "DUPONT^JEAN", "Dupont^Jean^^^"));
        assert!(matches(pn, "LEFEVRE^HELENE", "Lefèvre^Hélène"));
        assert!(matches(pn, "lefèvre^hélène^^", "LEFEVRE^HELENE"));
        assert!(matches(pn, "MULLER", "Müller"));
        assert!(matches(pn, "nunez", "Ñúñez"));
        assert!(!matches(pn, "DUPONT", "Dupont^Jean"));
        assert!(!matches(pn, "DUPONT^JEANNE", "Dupont^Jean"));
    }

    #[test]
    fn person_name_wildcards() {
        let pn = ValueKind::PersonName;
        assert_eq!(
            Matcher::parse(pn, "LEFEVRE*"),
            Matcher::Wildcard("lefevre*".into())
        );
        assert!(matches(pn, "lefevre*", "Lefèvre^Hélène"));
        assert!(matches(pn, "LEF?VRE^*", "Lefèvre^Hélène"));
        assert!(matches(pn, "*hélène", "LEFEVRE^HELENE"));
        assert!(matches(pn, "M?LLER", "Müller"));
        assert!(matches(pn, "Ñ*", "Nunez^Maria"));
        assert!(!matches(pn, "martin*", "Lefèvre^Hélène"));
    }

    #[test]
    fn uid_matching() {
        let ui = ValueKind::Uid;
        assert_eq!(Matcher::parse(ui, "1.2.840.10008\0"), single("1.2.840.10008"));
        assert!(matches(ui, "1.2.840.10008\0", "1.2.840.10008"));
        assert!(!matches(ui, "1.2.840.10008", "1.2.840.100081"));
        // Wildcards are literal for UIDs.
        assert_eq!(Matcher::parse(ui, "1.2.*"), single("1.2.*"));
        assert!(!matches(ui, "1.2.*", "1.2.3"));
        assert!(!matches(ui, "1.2.?", "1.2.3"));
    }

    #[test]
    fn uid_lists() {
        let ui = ValueKind::Uid;
        assert_eq!(
            Matcher::parse(ui, "1.2.3\\1.2.4 \\\\ 1.2.5\0"),
            Matcher::UidList(vec!["1.2.3".into(), "1.2.4".into(), "1.2.5".into()])
        );
        assert!(matches(ui, "1.2.3\\1.2.4", "1.2.4"));
        assert!(matches(ui, "1.2.3\\1.2.4", "1.2.3"));
        assert!(!matches(ui, "1.2.3\\1.2.4", "1.2.5"));
        assert!(matches(ui, "1.2.3\\1.2.4", "1.2.9\\1.2.4"));
        assert_eq!(Matcher::parse(ui, "\\"), Matcher::Universal);
    }

    #[test]
    fn multi_valued_stored_values_match_any() {
        assert!(matches(ValueKind::Text, "MR", "CT\\MR"));
        assert!(matches(ValueKind::Text, "M*", "CT\\MR"));
        assert!(!matches(ValueKind::Text, "PT", "CT\\MR"));
        assert!(matches(ValueKind::PersonName, "DUPONT", "Martin\\Dupont^"));
        assert!(matches(
            ValueKind::Date,
            "20200101-20200131",
            "20191231\\20200115"
        ));
        assert!(!matches(
            ValueKind::Date,
            "20200101-20200131",
            "20191231\\20200215"
        ));
    }

    #[test]
    fn date_single_and_legacy_form() {
        let da = ValueKind::Date;
        assert_eq!(Matcher::parse(da, "20200115 "), single("20200115"));
        assert_eq!(Matcher::parse(da, "2020.01.15"), single("20200115"));
        assert!(matches(da, "20200115", "20200115"));
        assert!(matches(da, "20200115", "2020.01.15"));
        assert!(matches(da, "2020.01.15", "20200115"));
        assert!(!matches(da, "20200115", "20200116"));
    }

    #[test]
    fn date_ranges() {
        let da = ValueKind::Date;
        assert_eq!(
            Matcher::parse(da, "20200101-20200131"),
            range(Some("20200101"), Some("20200131"))
        );
        assert_eq!(Matcher::parse(da, "-20200131"), range(None, Some("20200131")));
        assert_eq!(Matcher::parse(da, "20200101-"), range(Some("20200101"), None));
        assert_eq!(
            Matcher::parse(da, "2020.01.01-2020.01.31"),
            range(Some("20200101"), Some("20200131"))
        );
        let closed = "20200101-20200131";
        assert!(matches(da, closed, "20200101"));
        assert!(matches(da, closed, "20200131"));
        assert!(matches(da, closed, "20200115"));
        assert!(!matches(da, closed, "20191231"));
        assert!(!matches(da, closed, "20200201"));
        assert!(matches(da, "-20200131", "19000101"));
        assert!(!matches(da, "-20200131", "20200201"));
        assert!(matches(da, "20200101-", "29991231"));
        assert!(!matches(da, "20200101-", "20191231"));
        assert!(!matches(da, "20200131-20200101", "20200115"));
    }

    #[test]
    fn malformed_dates() {
        let da = ValueKind::Date;
        // An unnormalizable stored value never falls within a range.
        assert!(!matches(da, "-20200131", "2020011"));
        assert!(!matches(da, "-20200131", "UNKNOWN"));
        assert!(!matches(da, "19000101-", "20201301"));
        // A malformed range is kept verbatim and matches nothing real.
        assert_eq!(Matcher::parse(da, "2020-01-01"), single("2020-01-01"));
        assert!(!matches(da, "2020-01-01", "20200101"));
        assert_eq!(normalize_date("20200230"), Some("20200230".into()));
        assert_eq!(normalize_date("20201301"), None);
        assert_eq!(normalize_date("20200100"), None);
        assert_eq!(normalize_date("2020/01/01"), None);
    }

    #[test]
    fn normalize_time_forms() {
        assert_eq!(normalize_time("10").as_deref(), Some("100000.000000"));
        assert_eq!(normalize_time("1030").as_deref(), Some("103000.000000"));
        assert_eq!(normalize_time("103015").as_deref(), Some("103015.000000"));
        assert_eq!(normalize_time("103015.5").as_deref(), Some("103015.500000"));
        assert_eq!(normalize_time("103015.123456 ").as_deref(), Some("103015.123456"));
        assert_eq!(normalize_time("10:30:15").as_deref(), Some("103015.000000"));
        assert_eq!(normalize_time("10:30").as_deref(), Some("103000.000000"));
        assert_eq!(normalize_time("10:30:15.25").as_deref(), Some("103015.250000"));
        assert_eq!(normalize_time("235960").as_deref(), Some("235960.000000"));
        assert_eq!(normalize_time("2400"), None);
        assert_eq!(normalize_time("1060"), None);
        assert_eq!(normalize_time("103"), None);
        assert_eq!(normalize_time("1030.5"), None);
        assert_eq!(normalize_time("103015.1234567"), None);
        assert_eq!(normalize_time("10:3:15"), None);
        assert_eq!(normalize_time("ab"), None);
        assert_eq!(normalize_time(""), None);
        assert_eq!(normalize_time("１０"), None);
    }

    #[test]
    fn time_single_and_ranges() {
        let tm = ValueKind::Time;
        assert_eq!(Matcher::parse(tm, "1030"), single("103000.000000"));
        assert!(matches(tm, "1030", "103000"));
        assert!(matches(tm, "1030", "10:30:00.000"));
        assert!(!matches(tm, "1030", "103015"));
        assert_eq!(
            Matcher::parse(tm, "0800-1100"),
            range(Some("080000.000000"), Some("110000.000000"))
        );
        assert!(matches(tm, "0800-1100", "0800"));
        assert!(matches(tm, "0800-1100", "093000.5"));
        assert!(matches(tm, "-1100", "110000.000000"));
        assert!(matches(tm, "-1100", "11"));
        assert!(!matches(tm, "-1100", "110000.000001"));
        assert!(!matches(tm, "-1100", "1101"));
        assert!(matches(tm, "10:00-", "235959"));
        assert!(!matches(tm, "10:00-", "0959"));
        assert!(!matches(tm, "-1100", "not a time"));
    }

    #[test]
    fn normalize_datetime_forms() {
        assert_eq!(
            normalize_datetime("2020").as_deref(),
            Some("20200101000000.000000")
        );
        assert_eq!(
            normalize_datetime("202003").as_deref(),
            Some("20200301000000.000000")
        );
        assert_eq!(
            normalize_datetime("20200315").as_deref(),
            Some("20200315000000.000000")
        );
        assert_eq!(
            normalize_datetime("2020031514").as_deref(),
            Some("20200315140000.000000")
        );
        assert_eq!(
            normalize_datetime("20200315143059.12").as_deref(),
            Some("20200315143059.120000")
        );
        assert_eq!(
            normalize_datetime("20200315143059+0100").as_deref(),
            Some("20200315143059.000000")
        );
        assert_eq!(
            normalize_datetime("20200315143059.5-0500 ").as_deref(),
            Some("20200315143059.500000")
        );
        assert_eq!(normalize_datetime("20201315"), None);
        assert_eq!(normalize_datetime("202003151"), None);
        assert_eq!(normalize_datetime("2020031525"), None);
        assert_eq!(normalize_datetime("20200315.5"), None);
        assert_eq!(normalize_datetime("2020-03-15"), None);
        assert_eq!(normalize_datetime("+0100"), None);
        assert_eq!(normalize_datetime(""), None);
    }

    #[test]
    fn datetime_single_and_ranges() {
        let dt = ValueKind::DateTime;
        assert_eq!(
            Matcher::parse(dt, "20200315143059"),
            single("20200315143059.000000")
        );
        assert!(matches(dt, "20200315143059", "20200315143059.000000+0100"));
        assert_eq!(
            Matcher::parse(dt, "20200101-20200201"),
            range(Some("20200101000000.000000"), Some("20200201000000.000000"))
        );
        assert!(matches(dt, "20200101-20200201", "20200115120000"));
        assert!(matches(dt, "20200101-20200201", "20200201"));
        assert!(!matches(dt, "20200101-20200201", "20200201000000.000001"));
        assert!(matches(dt, "-2020", "2019"));
        assert!(matches(dt, "2020-", "20200101000000"));
        assert!(!matches(dt, "2020-", "2019123123"));
        assert!(!matches(dt, "2020-", "garbage"));
        assert_eq!(
            Matcher::parse(dt, "2020-2021"),
            range(Some("20200101000000.000000"), Some("20210101000000.000000"))
        );
    }

    #[test]
    fn datetime_negative_offsets_are_not_separators() {
        let dt = ValueKind::DateTime;
        assert_eq!(
            Matcher::parse(dt, "20200315143059-0500"),
            single("20200315143059.000000")
        );
        assert_eq!(
            Matcher::parse(dt, "20200315120000-0500-20200315130000-0500"),
            range(Some("20200315120000.000000"), Some("20200315130000.000000"))
        );
        assert_eq!(
            Matcher::parse(dt, "-20200315130000-0500"),
            range(None, Some("20200315130000.000000"))
        );
        assert_eq!(
            Matcher::parse(dt, "20200315120000-0500-"),
            range(Some("20200315120000.000000"), None)
        );
    }

    #[test]
    fn temporal_wildcards_compare_raw_text() {
        let da = ValueKind::Date;
        assert_eq!(Matcher::parse(da, "2020*"), Matcher::Wildcard("2020*".into()));
        assert!(matches(da, "2020*", "20200315"));
        assert!(!matches(da, "2020*", "20210315"));
    }

    #[test]
    fn hand_built_matchers_are_normalized_when_matching() {
        // Callers may construct matchers directly; un-normalized bounds still behave.
        let m = range(Some("0800"), Some("11"));
        assert!(m.matches(ValueKind::Time, Some("1100")));
        assert!(!m.matches(ValueKind::Time, Some("0759")));
        let m = single("DUPONT^JEAN");
        assert!(m.matches(ValueKind::PersonName, Some("dupont^jean^^")));
        let m = Matcher::Wildcard("LEF*".into());
        assert!(m.matches(ValueKind::PersonName, Some("Lefèvre")));
    }

    #[test]
    fn like_pattern_translation_and_escaping() {
        assert_eq!(like_pattern("lefevre*"), "lefevre%");
        assert_eq!(like_pattern("a?c"), "a_c");
        assert_eq!(like_pattern("100%"), "100\\%");
        assert_eq!(like_pattern("a_b*"), "a\\_b%");
        assert_eq!(like_pattern("a\\b"), "a\\\\b");
        assert_eq!(like_pattern("*%_?\\"), "%\\%\\__\\\\");
        assert_eq!(like_pattern("Hélène"), "Hélène");
        assert_eq!(like_pattern(""), "");
    }
}
