//! Unique identifiers (PS3.5 §9.1) received from peers, and how they go into URLs.
//!
//! A UID names a study, series or instance in every URL openpacs hands out and in every route
//! it serves, so a value that is not a UID must never be indexed: `thumbnail` as a Study
//! Instance UID would make `/studies/thumbnail` ambiguous, `a/b` would add a path segment.

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Longest UID PS3.5 allows.
pub const MAX_UID_LEN: usize = 64;

/// Checks that `uid` is a UID openpacs can index and put in a URL: 1 to 64 characters, digits
/// and dots only, no empty component. The answer says what is wrong, short enough for a DIMSE
/// Error Comment.
///
/// A component with a leading zero (`1.02.3`) breaks PS3.5 too, but some modalities send such
/// UIDs, and refusing their images would lose them. They are accepted (callers warn, see
/// [`has_leading_zero`]): a value of digits and dots cannot change what a URL means.
pub fn check_uid(uid: &str) -> Result<(), &'static str> {
    if uid.is_empty() {
        return Err("must not be empty");
    }
    if uid.len() > MAX_UID_LEN {
        return Err("must be at most 64 characters");
    }
    if !uid.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err("must be digits and dots");
    }
    if uid.split('.').any(str::is_empty) {
        return Err("must have no empty component");
    }
    Ok(())
}

/// Whether a component of `uid` has a leading zero (`1.02`), which PS3.5 forbids and
/// [`check_uid`] tolerates.
pub fn has_leading_zero(uid: &str) -> bool {
    uid.split('.').any(|c| c.len() > 1 && c.starts_with('0'))
}

/// What [`url_segment`] leaves as it is: the unreserved characters of RFC 3986.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'.')
    .remove(b'-')
    .remove(b'_')
    .remove(b'~');

/// `value` as one URL path segment: everything but RFC 3986's unreserved characters
/// percent-escaped. A checked UID comes out unchanged; anything indexed before UIDs were
/// checked can still not add a segment, a query or a quote to a URL we hand out.
pub fn url_segment(value: &str) -> String {
    utf8_percent_encode(value, SEGMENT).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_are_digits_and_dots_in_non_empty_components() {
        for good in [
            "1.2.840.10008.1.2.1",
            "2.25.329800735698586629295641978511506172918",
            "1",
        ] {
            assert_eq!(check_uid(good), Ok(()), "{good}");
        }
        assert_eq!(check_uid(&"1".repeat(64)), Ok(()));
        for bad in [
            "",
            "thumbnail",
            "rendered",
            "1.2/3",
            "1.2.3 ",
            "1..2",
            ".1.2",
            "1.2.",
            "1.2.3%2F4",
            "１.２",
        ] {
            assert!(check_uid(bad).is_err(), "{bad:?}");
        }
        assert!(check_uid(&"1".repeat(65)).is_err());
        // Tolerated, with a warning from the caller.
        assert_eq!(check_uid("1.02.3"), Ok(()));
        assert!(has_leading_zero("1.02.3") && has_leading_zero("00.1"));
        assert!(!has_leading_zero("1.0.3") && !has_leading_zero("10.20"));
    }

    #[test]
    fn url_segments_escape_everything_that_could_change_a_url() {
        assert_eq!(url_segment("1.2.840.10008"), "1.2.840.10008");
        assert_eq!(url_segment("a/b?c#d"), "a%2Fb%3Fc%23d");
        assert_eq!(url_segment("x\"y\\z%"), "x%22y%5Cz%25");
        assert_eq!(url_segment("é"), "%C3%A9");
    }
}
