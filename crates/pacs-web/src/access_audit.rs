//! Audit of viewing sessions: a viewer fetches a study one frame, rendering or bulk value at a
//! time, and one audit line per request (85 after a few minutes of scrolling) buried what
//! matters. Instead, in the shape of PS3.15's "DICOM Instances Accessed": the first request of
//! a user for a study and kind of access is audited at once (so "who saw this patient" never
//! waits), later ones are counted, and when the session has been quiet for
//! [`SESSION_IDLE`] one line sums it up: requests, series and instances, first and last time.
//! The audit line itself names the patient (`Archive::record`).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use pacs_archive::Platform;
use pacs_model::TenantId;
use pacs_store::AuditEvent;

/// A session ends after this long without a request of its kind for its study.
pub(crate) const SESSION_IDLE: Duration = Duration::from_secs(300);
/// Sessions followed at once; past this, requests are audited one by one (memory stays
/// bounded whatever the number of users and studies).
const MAX_SESSIONS: usize = 10_000;

/// The kinds of access a viewer repeats per frame or instance.
pub(crate) fn aggregated(event: &str) -> bool {
    matches!(
        event,
        "retrieve-frames" | "retrieve-rendered" | "retrieve-thumbnail" | "retrieve-bulkdata"
    )
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    /// Whose log the lines go to: the same user name and study UID in two tenants are two
    /// sessions.
    tenant: i64,
    actor: String,
    study: String,
    event: String,
}

struct Session {
    peer: String,
    series: HashSet<String>,
    instances: HashSet<String>,
    requests: u64,
    started: SystemTime,
    last: Instant,
}

/// Viewing sessions in progress (per server process).
#[derive(Clone, Default)]
pub(crate) struct AccessSessions {
    sessions: Arc<Mutex<HashMap<Key, Session>>>,
}

/// What to audit for one request.
pub(crate) struct Access<'a> {
    pub tenant: i64,
    pub actor: String,
    pub peer: String,
    pub study: &'a str,
    pub series: &'a str,
    pub instance: &'a str,
    pub event: &'a str,
}

impl AccessSessions {
    /// Counts a successful access; returns the audit lines to write now: the session's
    /// opening line when it is new (and the summary of an earlier one it replaces), nothing
    /// while it goes on.
    pub(crate) fn record(&self, access: Access<'_>) -> Vec<AuditEvent> {
        let key = Key {
            tenant: access.tenant,
            actor: access.actor.clone(),
            study: access.study.to_string(),
            event: access.event.to_string(),
        };
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let mut lines = Vec::new();
        if let Some(session) = sessions.get_mut(&key) {
            if session.last.elapsed() < SESSION_IDLE {
                session.series.insert(access.series.to_string());
                session.instances.insert(access.instance.to_string());
                session.requests += 1;
                session.last = Instant::now();
                return lines;
            }
        }
        if let Some(ended) = sessions.remove(&key) {
            lines.push(summary(&key, &ended));
        }
        lines.push(AuditEvent {
            tenant: access.tenant,
            event: access.event.into(),
            actor: access.actor,
            peer: access.peer.clone(),
            study_uid: Some(access.study.into()),
            outcome: "success".into(),
            detail: Some(format!(
                "viewing started: series {} instance {}; later requests summed up when the session ends",
                access.series, access.instance
            )),
            ..AuditEvent::default()
        });
        if sessions.len() < MAX_SESSIONS {
            sessions.insert(
                key,
                Session {
                    peer: access.peer,
                    series: HashSet::from([access.series.to_string()]),
                    instances: HashSet::from([access.instance.to_string()]),
                    requests: 1,
                    started: SystemTime::now(),
                    last: Instant::now(),
                },
            );
        }
        lines
    }

    /// Removes the sessions quiet for `idle` and returns their summaries.
    pub(crate) fn ended(&self, idle: Duration) -> Vec<AuditEvent> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let done: Vec<Key> = sessions
            .iter()
            .filter(|(_, s)| s.last.elapsed() >= idle)
            .map(|(k, _)| k.clone())
            .collect();
        done.into_iter()
            .filter_map(|k| sessions.remove(&k).map(|s| summary(&k, &s)))
            .collect()
    }

    /// Writes the summaries of ended sessions every minute, each in its tenant's log, as long
    /// as the platform lives.
    pub(crate) fn spawn_flusher(&self, platform: &Arc<Platform>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let sessions = self.clone();
        let platform = Arc::downgrade(platform);
        runtime.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                let Some(platform) = platform.upgrade() else {
                    return;
                };
                for line in sessions.ended(SESSION_IDLE) {
                    if let Some(archive) = platform.archive(TenantId(line.tenant)) {
                        archive.record(line).await;
                    }
                }
            }
        });
    }
}

fn summary(key: &Key, s: &Session) -> AuditEvent {
    let seconds = s.started.elapsed().map(|d| d.as_secs()).unwrap_or(0);
    AuditEvent {
        tenant: key.tenant,
        event: key.event.clone(),
        actor: key.actor.clone(),
        peer: s.peer.clone(),
        study_uid: Some(key.study.clone()),
        outcome: "success".into(),
        detail: Some(format!(
            "viewing session: requests={} series={} instances={} over {seconds} s",
            s.requests,
            s.series.len(),
            s.instances.len()
        )),
        ..AuditEvent::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access<'a>(actor: &str, instance: &'a str, event: &'a str) -> Access<'a> {
        Access {
            tenant: 1,
            actor: actor.into(),
            peer: "127.0.0.1:1".into(),
            study: "1.2.3",
            series: "1.2.3.4",
            instance,
            event,
        }
    }

    #[test]
    fn a_viewing_session_gives_one_line_at_its_start_and_one_summary_at_its_end() {
        let sessions = AccessSessions::default();
        assert_eq!(
            sessions.record(access("http:ana", "1", "retrieve-frames")).len(),
            1
        );
        for i in 0..84 {
            let instance = format!("{}", i % 20);
            assert!(sessions
                .record(access("http:ana", &instance, "retrieve-frames"))
                .is_empty());
        }
        // Another user, another kind: sessions of their own.
        assert_eq!(
            sessions.record(access("http:bob", "1", "retrieve-frames")).len(),
            1
        );
        assert_eq!(
            sessions
                .record(access("http:ana", "1", "retrieve-rendered"))
                .len(),
            1
        );
        assert!(sessions.ended(SESSION_IDLE).is_empty(), "nothing quiet yet");
        let ended = sessions.ended(Duration::ZERO);
        assert_eq!(ended.len(), 3);
        let ana = ended
            .iter()
            .find(|e| e.actor == "http:ana" && e.event == "retrieve-frames")
            .unwrap();
        let detail = ana.detail.as_deref().unwrap();
        assert!(
            detail.contains("requests=85") && detail.contains("instances=20"),
            "{detail}"
        );
        // After the summary, the next request opens a new session.
        assert_eq!(
            sessions.record(access("http:ana", "1", "retrieve-frames")).len(),
            1
        );
    }
}
