//! What a tenant is billed for in a month, from the append-only metering events alone (see
//! the `metering_event` triggers): exams first stored in the month (a Study Instance UID new
//! to the tenant) with their modalities, less those deleted within the grace period after
//! their first store (wrong patient, test exam); objects and bytes stored; storage held, in
//! byte-days. Prices are the caller's. A month computed after it ended (and its grace period)
//! gives the same figures on every run and every node, whatever was deleted since.

use crate::sql::{self, Conn};
use crate::IndexError;

/// A calendar month (UTC).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Month {
    pub year: i32,
    pub month: u32,
}

impl Month {
    /// `YYYY-MM`.
    pub fn parse(text: &str) -> Option<Month> {
        let (year, month) = text.split_once('-')?;
        let (year, month) = (year.parse().ok()?, month.parse().ok()?);
        (text.len() == 7 && (1..=12).contains(&month) && (1970..=9999).contains(&year))
            .then_some(Month { year, month })
    }

    fn next(self) -> Month {
        if self.month == 12 {
            Month {
                year: self.year + 1,
                month: 1,
            }
        } else {
            Month {
                month: self.month + 1,
                ..self
            }
        }
    }

    /// The first instant of the month in the index's timestamp format.
    pub fn start(self) -> String {
        format!("{:04}-{:02}-01T00:00:00.000Z", self.year, self.month)
    }

    /// The first instant of the next month.
    pub fn end(self) -> String {
        self.next().start()
    }

    pub fn days(self) -> u32 {
        let next = self.next();
        (days_from_civil(next.year, next.month, 1) - days_from_civil(self.year, self.month, 1)) as u32
    }
}

impl std::fmt::Display for Month {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

/// Days since 1970-01-01 of a civil date (H. Hinnant's algorithm).
fn days_from_civil(year: i32, month: u32, day: u32) -> i64 {
    let y = i64::from(if month <= 2 { year - 1 } else { year });
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Milliseconds since the epoch of an index timestamp (`YYYY-MM-DDTHH:MM:SS.sssZ`).
fn millis(at: &str) -> Option<i64> {
    let b = at.as_bytes();
    if b.len() < 23 {
        return None;
    }
    let num = |range: std::ops::Range<usize>| at.get(range)?.parse::<i64>().ok();
    let days = days_from_civil(num(0..4)? as i32, num(5..7)? as u32, num(8..10)? as u32);
    Some((((days * 24 + num(11..13)?) * 60 + num(14..16)?) * 60 + num(17..19)?) * 1000 + num(20..23)?)
}

/// An exam billed in the month.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BilledExam {
    pub study_uid: String,
    pub first_stored: String,
    /// The modalities of its objects stored before the month ended, sorted.
    pub modalities: Vec<String>,
}

/// A tenant's month.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MonthUsage {
    pub exams: Vec<BilledExam>,
    /// Exams first stored in the month and deleted within the grace period: not billed.
    pub exams_not_billed: u64,
    pub objects_stored: u64,
    pub bytes_stored: u64,
    /// Bytes held at the end of each day of the month, summed: divided by the days of the
    /// month and 10^9, the GB-months of storage.
    pub byte_days: u128,
}

pub(crate) async fn month(
    conn: &mut dyn Conn,
    tenant: i64,
    month: Month,
    grace_secs: u64,
) -> Result<MonthUsage, IndexError> {
    let (start, end) = (month.start(), month.end());
    let mut usage = MonthUsage::default();
    // Every event of the studies first stored in the month, up to its end.
    let rows: Vec<(String, String, String, Option<String>)> = sql::query_as(
        "SELECT e.study_uid, e.kind, e.at, e.modality FROM metering_event e
         WHERE e.tenant_pk = ? AND e.at < ? AND e.study_uid IN (
             SELECT study_uid FROM metering_event WHERE tenant_pk = ? AND kind = 'stored'
             GROUP BY study_uid HAVING min(at) >= ? AND min(at) < ?)
         ORDER BY e.study_uid, e.at",
    )
    .bind(tenant)
    .bind(&end)
    .bind(tenant)
    .bind(&start)
    .bind(&end)
    .fetch_all(&mut *conn)
    .await?;
    let grace = i64::try_from(grace_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    for study in rows.chunk_by(|a, b| a.0 == b.0) {
        let first = study
            .iter()
            .find(|r| r.1 == "stored")
            .map(|r| r.2.clone())
            .unwrap_or_default();
        let deadline = millis(&first).map_or(i64::MIN, |f| f.saturating_add(grace));
        // Objects it held when the grace period ended: none left means a mistake undone.
        let held_after_grace: i64 = study
            .iter()
            .filter(|r| millis(&r.2).is_some_and(|at| at <= deadline))
            .map(|r| if r.1 == "stored" { 1 } else { -1 })
            .sum();
        if held_after_grace <= 0 {
            usage.exams_not_billed += 1;
            continue;
        }
        let mut modalities: Vec<String> = study
            .iter()
            .filter(|r| r.1 == "stored")
            .filter_map(|r| r.3.clone())
            .filter(|m| !m.is_empty())
            .collect();
        modalities.sort();
        modalities.dedup();
        usage.exams.push(BilledExam {
            study_uid: study[0].0.clone(),
            first_stored: first,
            modalities,
        });
    }
    let (objects, bytes): (i64, Option<i64>) = sql::query_as(
        "SELECT count(*), CAST(sum(bytes) AS BIGINT) FROM metering_event
         WHERE tenant_pk = ? AND kind = 'stored' AND at >= ? AND at < ?",
    )
    .bind(tenant)
    .bind(&start)
    .bind(&end)
    .fetch_one(&mut *conn)
    .await?;
    usage.objects_stored = objects.max(0) as u64;
    usage.bytes_stored = bytes.unwrap_or(0).max(0) as u64;
    // Storage: what was held when the month began, then each day's changes.
    let held: Option<i64> = sql::query_scalar(
        "SELECT CAST(sum(CASE kind WHEN 'stored' THEN bytes ELSE -bytes END) AS BIGINT) FROM metering_event
         WHERE tenant_pk = ? AND at < ?",
    )
    .bind(tenant)
    .bind(&start)
    .fetch_one(&mut *conn)
    .await?;
    let daily: Vec<(String, i64)> = sql::query_as(
        "SELECT substr(at, 1, 10), CAST(sum(CASE kind WHEN 'stored' THEN bytes ELSE -bytes END) AS BIGINT)
         FROM metering_event WHERE tenant_pk = ? AND at >= ? AND at < ?
         GROUP BY substr(at, 1, 10) ORDER BY 1",
    )
    .bind(tenant)
    .bind(&start)
    .bind(&end)
    .fetch_all(&mut *conn)
    .await?;
    let mut held = held.unwrap_or(0);
    let mut changes = daily.into_iter().peekable();
    for day in 1..=month.days() {
        let date = format!("{:04}-{:02}-{day:02}", month.year, month.month);
        while let Some((_, delta)) = changes.next_if(|(d, _)| *d <= date) {
            held += delta;
        }
        usage.byte_days += held.max(0) as u128;
    }
    Ok(usage)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_and_timestamps() {
        let november = Month::parse("2026-11").unwrap();
        assert_eq!(
            (
                november.start().as_str(),
                november.end().as_str(),
                november.days()
            ),
            ("2026-11-01T00:00:00.000Z", "2026-12-01T00:00:00.000Z", 30)
        );
        assert_eq!(Month::parse("2024-02").unwrap().days(), 29);
        assert_eq!(Month::parse("2026-12").unwrap().end(), "2027-01-01T00:00:00.000Z");
        for bad in ["2026-13", "2026-1", "26-11", "2026/11", "2026-00"] {
            assert!(Month::parse(bad).is_none(), "{bad}");
        }
        assert_eq!(millis("1970-01-02T00:00:01.500Z"), Some(86_401_500));
        assert_eq!(
            millis("2026-12-08T04:50:00.000Z").unwrap() - millis("2026-12-07T04:50:00.000Z").unwrap(),
            86_400_000
        );
    }
}

#[cfg(test)]
mod month_tests {
    use super::*;
    use crate::index::tests::{instance, test_index};
    use crate::{AuditEvent, DeleteScope, Index, IndexOutcome};
    use pacs_model::TenantId;

    /// Exams, objects, bytes and byte-days from the events the triggers wrote; a study
    /// deleted within the grace period is not billed, one deleted after it still is, and the
    /// deletion changes nothing of the month's exams.
    #[tokio::test]
    async fn a_month_is_computed_from_the_metering_events() {
        let dir = tempfile::tempdir().unwrap();
        let index = test_index(dir.path()).await;
        let store = |sop: &str, study: &str, series: &str, modality: &str| {
            let mut object = instance(sop, &format!("{sop}-data"));
            object.study.study_uid = study.into();
            object.series.series_uid = series.into();
            object.series.modality = Some(modality.into());
            object.size = 1000;
            object.audit = None;
            index.add_instance(object)
        };
        // A PET/CT (two series), an MR, and a CT deleted at once.
        for (sop, study, series, modality) in [
            ("1.1.1", "1.1", "1.1.10", "CT"),
            ("1.1.2", "1.1", "1.1.20", "PT"),
            ("1.2.1", "1.2", "1.2.10", "MR"),
            ("1.3.1", "1.3", "1.3.10", "CT"),
        ] {
            assert!(matches!(
                store(sop, study, series, modality).await.unwrap(),
                IndexOutcome::Stored { .. }
            ));
        }
        // A re-send of the same object is no new event.
        assert!(matches!(
            store("1.2.1", "1.2", "1.2.10", "MR").await.unwrap(),
            IndexOutcome::Duplicate { .. }
        ));
        let delete = |study: &str| DeleteScope {
            tenant: 1,
            study_uid: study.into(),
            series_uid: None,
            sop_uid: None,
        };
        index.delete(delete("1.3"), AuditEvent::default()).await.unwrap();
        let at: String = sql::query_scalar("SELECT min(at) FROM metering_event")
            .fetch_one(&mut *index.test_conn().await)
            .await
            .unwrap();
        let month = Month::parse(&at[..7]).unwrap();
        let usage = index.billing_month(TenantId(1), month, 3600).await.unwrap();
        let exams: Vec<(&str, Vec<&str>)> = usage
            .exams
            .iter()
            .map(|e| {
                (
                    e.study_uid.as_str(),
                    e.modalities.iter().map(String::as_str).collect(),
                )
            })
            .collect();
        assert_eq!(exams, [("1.1", vec!["CT", "PT"]), ("1.2", vec!["MR"])]);
        assert_eq!(usage.exams_not_billed, 1, "1.3 deleted within the grace period");
        assert_eq!((usage.objects_stored, usage.bytes_stored), (4, 4000));
        // 3000 bytes held since today, to the month's end.
        let today: u32 = at[8..10].parse().unwrap();
        assert_eq!(usage.byte_days, 3000 * u128::from(month.days() - today + 1));
        // With no grace period, the deleted CT was an exam; deleting another study later does
        // not change what was billed.
        let without_grace = index.billing_month(TenantId(1), month, 0).await.unwrap();
        assert_eq!(without_grace.exams.len(), 3);
        index.delete(delete("1.2"), AuditEvent::default()).await.unwrap();
        let again = index.billing_month(TenantId(1), month, 0).await.unwrap();
        assert_eq!(again.exams, without_grace.exams);
        // A closed month: the same events moved to January 2026 (as if made then). Deleting
        // the last study now changes nothing of January's bill, storage included.
        sql::query("UPDATE metering_event SET at = '2026-01-15' || substr(at, 11)")
            .execute(&mut *index.test_conn().await)
            .await
            .unwrap();
        let january = Month::parse("2026-01").unwrap();
        let closed = index.billing_month(TenantId(1), january, 0).await.unwrap();
        assert_eq!(closed.exams.len(), 3);
        index.delete(delete("1.1"), AuditEvent::default()).await.unwrap();
        assert_eq!(
            index.billing_month(TenantId(1), january, 0).await.unwrap(),
            closed
        );
        // Another tenant's month is its own.
        crate::index::tests::add_tenant(&index, 2, "other").await;
        assert_eq!(
            index.billing_month(TenantId(2), month, 0).await.unwrap(),
            MonthUsage::default()
        );
    }
}
