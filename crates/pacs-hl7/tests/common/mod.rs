//! What the integration tests share: a handler standing in for the application, a listener
//! on a free port, and the paths of the test messages.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pacs_hl7::{
    ack, serve, AckCode, ErrorCode, ErrorDetail, Message, MessageHandler, ParsedOrRaw, RefusalSummary,
    ServerConfig,
};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Accepts ADT, ORM, OMI and ORU (answering `answer`), refuses other types with AR 200, and
/// answers unreadable messages with the standard NAK. Records what it saw.
pub struct TestHandler {
    pub answer: AckCode,
    pub seen: Mutex<Vec<Seen>>,
    /// What the listener reported as refused, in order.
    pub refusals: Mutex<Vec<RefusalSummary>>,
}

#[derive(Clone, Debug)]
pub struct Seen {
    pub control_id: String,
    pub message_type: String,
    /// PID-5.1 and PID-5.2, to check character sets end to end.
    pub name: (Option<String>, Option<String>),
    pub parsed: bool,
}

impl TestHandler {
    pub fn new(answer: AckCode) -> Arc<TestHandler> {
        Arc::new(TestHandler {
            answer,
            seen: Mutex::new(Vec::new()),
            refusals: Mutex::new(Vec::new()),
        })
    }

    pub fn refusals(&self) -> Vec<RefusalSummary> {
        self.refusals.lock().unwrap().clone()
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

#[async_trait::async_trait]
impl MessageHandler for TestHandler {
    async fn connections_refused(&self, summary: &RefusalSummary, _period: Duration) {
        self.refusals.lock().unwrap().push(summary.clone());
    }

    async fn handle(&self, message: ParsedOrRaw, _peer: SocketAddr) -> Option<Vec<u8>> {
        match message {
            ParsedOrRaw::Parsed(m) => {
                let kind = m.message_type();
                self.seen.lock().unwrap().push(Seen {
                    control_id: m.control_id(),
                    message_type: kind.to_string(),
                    name: (m.value("PID-5.1"), m.value("PID-5.2")),
                    parsed: true,
                });
                if ["ADT", "ORM", "OMI", "ORU"].contains(&kind.code.as_str()) {
                    Some(ack(&m, self.answer, None))
                } else {
                    let e = ErrorDetail::new(
                        ErrorCode::UNSUPPORTED_MESSAGE_TYPE,
                        format!("{} is not supported", kind.code),
                    )
                    .at("MSH-9");
                    Some(ack(&m, AckCode::AR, Some(&e)))
                }
            }
            ParsedOrRaw::Raw(raw) => {
                self.seen.lock().unwrap().push(Seen {
                    control_id: raw.header.as_ref().map(Message::control_id).unwrap_or_default(),
                    message_type: String::new(),
                    name: (None, None),
                    parsed: false,
                });
                raw.nak()
            }
        }
    }
}

pub struct Server {
    pub addr: SocketAddr,
    pub shutdown: watch::Sender<bool>,
    pub task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    pub async fn stop(self) {
        self.shutdown.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("serve stops")
            .unwrap()
            .unwrap();
    }
}

pub async fn start_on(
    listener: TcpListener,
    handler: Arc<dyn MessageHandler>,
    config: ServerConfig,
) -> Server {
    let addr = listener.local_addr().unwrap();
    let (shutdown, rx) = watch::channel(false);
    let task = tokio::spawn(serve(listener, handler, config, rx));
    Server { addr, shutdown, task }
}

pub async fn start(handler: Arc<dyn MessageHandler>, config: ServerConfig) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    start_on(listener, handler, config).await
}

/// A port nothing listens on (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn samples() -> Vec<PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(repo_root().join("tests/hl7/samples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "hl7"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 7, "{files:?}");
    files
}

/// A sample with CR segment separators, as it goes on the wire.
pub fn sample(name: &str) -> Vec<u8> {
    let bytes = std::fs::read(repo_root().join("tests/hl7/samples").join(name)).unwrap();
    let mut out: Vec<u8> = bytes
        .into_iter()
        .map(|b| if b == b'\n' { b'\r' } else { b })
        .collect();
    while out.last() == Some(&b'\r') {
        out.pop();
    }
    out.push(b'\r');
    out
}

/// Waits until `check` holds, for at most `secs` seconds.
pub async fn eventually(secs: u64, mut check: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while tokio::time::Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    check()
}

/// An outbox store in memory, as the job table is on disk: messages in order, the oldest
/// held back while its back-off runs, refused ones set aside.
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<MemoryQueue>,
}

#[derive(Default)]
struct MemoryQueue {
    next_id: i64,
    /// (id, message, attempts, not before)
    waiting: std::collections::VecDeque<(i64, Vec<u8>, u32, std::time::Instant)>,
    set_aside: Vec<(Vec<u8>, String)>,
    errors: Vec<String>,
}

impl MemoryStore {
    pub fn push(&self, message: Vec<u8>) -> i64 {
        let mut q = self.inner.lock().unwrap();
        q.next_id += 1;
        let id = q.next_id;
        q.waiting.push_back((id, message, 0, std::time::Instant::now()));
        id
    }

    pub fn waiting(&self) -> usize {
        self.inner.lock().unwrap().waiting.len()
    }

    pub fn set_aside(&self) -> Vec<(Vec<u8>, String)> {
        self.inner.lock().unwrap().set_aside.clone()
    }

    /// The error of each failed attempt, in order.
    pub fn errors(&self) -> Vec<String> {
        self.inner.lock().unwrap().errors.clone()
    }
}

#[async_trait::async_trait]
impl pacs_hl7::OutboxStore for MemoryStore {
    async fn next(&self) -> Result<Option<pacs_hl7::Outgoing>, String> {
        let mut q = self.inner.lock().unwrap();
        match q.waiting.front_mut() {
            Some((id, message, attempts, not_before)) if *not_before <= std::time::Instant::now() => {
                *attempts += 1;
                Ok(Some(pacs_hl7::Outgoing {
                    id: *id,
                    message: message.clone(),
                    attempts: *attempts,
                }))
            }
            _ => Ok(None),
        }
    }

    async fn keep(&self, _id: i64) -> Result<bool, String> {
        Ok(true)
    }

    async fn record(&self, id: i64, attempt: &pacs_hl7::Attempt) -> Result<(), String> {
        let mut q = self.inner.lock().unwrap();
        let Some(front) = q.waiting.front_mut().filter(|f| f.0 == id) else {
            return Err(format!("{id} is not the message handed out"));
        };
        match attempt {
            pacs_hl7::Attempt::Delivered(_) => {
                q.waiting.pop_front();
            }
            pacs_hl7::Attempt::Refused(why) => {
                let (_, message, ..) = q.waiting.pop_front().unwrap();
                q.set_aside.push((message, why.clone()));
            }
            pacs_hl7::Attempt::Failed { error, retry_in } => {
                front.3 = std::time::Instant::now() + *retry_in;
                q.errors.push(error.clone());
            }
        }
        Ok(())
    }

    async fn pending(&self) -> Result<u64, String> {
        Ok(MemoryStore::waiting(self) as u64)
    }
}
