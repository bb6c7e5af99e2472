//! Timestamps and control ids for outbound messages, without a date library: HL7 wants
//! `YYYYMMDDHHMMSS` and nothing else here needs calendars.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The current time as an HL7 DTM in UTC: `YYYYMMDDHHMMSS+0000`.
pub(crate) fn now_timestamp() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format_timestamp(secs)
}

fn format_timestamp(unix_secs: u64) -> String {
    let days = (unix_secs / 86_400) as i64;
    let rem = unix_secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}{:02}{:02}{:02}+0000",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

/// A message control id (MSH-10, at most 20 characters): milliseconds since the epoch and a
/// per-process counter, unique across restarts unless the clock goes back.
pub(crate) fn new_control_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed) % 10_000_000;
    format!("{millis}{n:07}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(format_timestamp(0), "19700101000000+0000");
        assert_eq!(format_timestamp(951_782_400), "20000229000000+0000");
        assert_eq!(format_timestamp(1_704_164_645), "20240102030405+0000");
        assert_eq!(now_timestamp().len(), 19);
    }

    #[test]
    fn control_ids_differ() {
        let a = new_control_id();
        let b = new_control_id();
        assert_ne!(a, b);
        assert!(a.len() <= 20);
    }
}
