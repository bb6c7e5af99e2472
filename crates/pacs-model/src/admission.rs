//! Admission of network connections, shared by the DICOM and HL7 listeners: a bound on the
//! connections one source address may hold at once, and a tally of refused connections that is
//! reported in aggregate (one audit event per source and reason per period, with a count)
//! rather than one event per socket, so that a flood of connections cannot fill the audit log.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex, MutexGuard};

/// How many connections each source address holds, bounded by `max_per_source`.
#[derive(Debug)]
pub struct SourceLimit {
    max_per_source: usize,
    held: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection counted against its source address until dropped.
#[derive(Debug)]
pub struct SourceGuard {
    limit: Arc<SourceLimit>,
    source: IpAddr,
}

impl SourceLimit {
    pub fn new(max_per_source: usize) -> Arc<SourceLimit> {
        Arc::new(SourceLimit {
            max_per_source: max_per_source.max(1),
            held: Mutex::new(HashMap::new()),
        })
    }

    /// Counts one more connection from `source`, or `None` when it already holds the maximum.
    pub fn try_hold(self: &Arc<Self>, source: IpAddr) -> Option<SourceGuard> {
        let mut held = lock(&self.held);
        let count = held.entry(source).or_insert(0);
        if *count >= self.max_per_source {
            return None;
        }
        *count += 1;
        Some(SourceGuard {
            limit: self.clone(),
            source,
        })
    }

    /// Connections `source` holds now.
    pub fn held_by(&self, source: IpAddr) -> usize {
        lock(&self.held).get(&source).copied().unwrap_or(0)
    }
}

impl Drop for SourceGuard {
    fn drop(&mut self) {
        let mut held = lock(&self.limit.held);
        if let Some(count) = held.get_mut(&self.source) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.source);
            }
        }
    }
}

/// Refused connections from one source for one reason, since the previous report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefusalSummary {
    /// The source address; `0.0.0.0` stands for every source past [`MAX_TALLIED_SOURCES`].
    pub source: IpAddr,
    pub reason: &'static str,
    pub count: u64,
}

/// Distinct (source, reason) pairs kept between two reports; refusals from further sources are
/// counted together under `0.0.0.0`, so that many addresses cannot grow the tally without end.
pub const MAX_TALLIED_SOURCES: usize = 1024;

/// Refusals counted per source and reason until [`RefusalTally::drain`] takes them.
#[derive(Debug, Default)]
pub struct RefusalTally {
    counts: Mutex<HashMap<(IpAddr, &'static str), u64>>,
}

impl RefusalTally {
    pub fn record(&self, source: IpAddr, reason: &'static str) {
        let mut counts = lock(&self.counts);
        let key = if counts.len() < MAX_TALLIED_SOURCES || counts.contains_key(&(source, reason)) {
            (source, reason)
        } else {
            (IpAddr::V4(Ipv4Addr::UNSPECIFIED), reason)
        };
        *counts.entry(key).or_insert(0) += 1;
    }

    /// Everything counted since the previous call, sorted by source then reason.
    pub fn drain(&self) -> Vec<RefusalSummary> {
        let mut out: Vec<RefusalSummary> = lock(&self.counts)
            .drain()
            .map(|((source, reason), count)| RefusalSummary {
                source,
                reason,
                count,
            })
            .collect();
        out.sort_by(|a, b| (a.source, a.reason).cmp(&(b.source, b.reason)));
        out
    }
}

/// A poisoned lock only means another thread panicked while counting: the counts are still
/// usable, and admission must not stop because of it.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn source_limit_counts_per_address_and_releases_on_drop() {
        let limit = SourceLimit::new(2);
        let a = limit.try_hold(ip(2)).unwrap();
        let b = limit.try_hold(ip(2)).unwrap();
        assert!(limit.try_hold(ip(2)).is_none());
        let other = limit.try_hold(ip(3));
        assert!(other.is_some(), "another address has its own bound");
        drop(a);
        assert_eq!(limit.held_by(ip(2)), 1);
        assert!(limit.try_hold(ip(2)).is_some());
        drop(b);
        drop(other);
        assert_eq!(limit.held_by(ip(3)), 0);
    }

    #[test]
    fn tally_aggregates_and_drains() {
        let tally = RefusalTally::default();
        for _ in 0..5 {
            tally.record(ip(2), "pending_per_source");
        }
        tally.record(ip(2), "artim");
        tally.record(ip(3), "artim");
        assert_eq!(
            tally.drain(),
            [
                RefusalSummary {
                    source: ip(2),
                    reason: "artim",
                    count: 1
                },
                RefusalSummary {
                    source: ip(2),
                    reason: "pending_per_source",
                    count: 5
                },
                RefusalSummary {
                    source: ip(3),
                    reason: "artim",
                    count: 1
                },
            ]
        );
        assert!(tally.drain().is_empty());
    }

    #[test]
    fn tally_is_bounded_in_sources() {
        let tally = RefusalTally::default();
        for i in 0..(MAX_TALLIED_SOURCES as u32 + 500) {
            tally.record(IpAddr::from((0x0a00_0000u32 + i).to_be_bytes()), "artim");
        }
        let drained = tally.drain();
        assert_eq!(drained.len(), MAX_TALLIED_SOURCES + 1);
        let rest = drained
            .iter()
            .find(|s| s.source == IpAddr::V4(Ipv4Addr::UNSPECIFIED))
            .unwrap();
        assert_eq!(rest.count, 500);
    }
}
