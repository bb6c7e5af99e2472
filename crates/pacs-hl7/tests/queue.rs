//! The outbound sender against our own listener, over a store in memory (openpacs's is the
//! job table: see pacs-archive's `hl7_outbox`).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{eventually, free_port, start, start_on, MemoryStore, TestHandler};
use pacs_hl7::{AckCode, MessageBuilder, Outbox, OutboxConfig, ServerConfig};
use tokio::net::TcpListener;
use tokio::sync::watch;

fn config(port: u16) -> OutboxConfig {
    OutboxConfig {
        send_timeout: Duration::from_secs(5),
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(200),
        poll: Duration::from_millis(20),
        ..OutboxConfig::new(format!("127.0.0.1:{port}"))
    }
}

fn completion(accession: &str) -> (Vec<u8>, String) {
    let mut b = MessageBuilder::message("ORM", "O01", "ORM_O01", "2.5");
    b.header().set(3, "OPENPACS").set(5, "RIS");
    b.set("PID-3", "100001").unwrap();
    b.set("ORC-1", "SC").unwrap();
    b.set("ORC-5", "CM").unwrap();
    b.set("OBR-18", accession).unwrap();
    (b.to_bytes().unwrap(), b.control_id().to_owned())
}

fn start_sender(
    outbox: &Arc<Outbox<Arc<MemoryStore>>>,
) -> (watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let (stop, rx) = watch::channel(false);
    let runner = outbox.clone();
    (stop, tokio::spawn(async move { runner.run(rx).await }))
}

#[tokio::test]
async fn messages_wait_for_an_unreachable_destination_then_go_in_order() {
    let port = free_port();
    let store = Arc::new(MemoryStore::default());
    let (first, first_id) = completion("ACC1");
    let (second, second_id) = completion("ACC2");
    store.push(first);
    store.push(second);

    // Nobody listens: attempts fail with a growing wait, both messages stay, in order.
    let outbox = Arc::new(Outbox::new(store.clone(), config(port)));
    let (stop, worker) = start_sender(&outbox);
    assert!(eventually(10, || store.errors().len() >= 3).await);
    let counts = outbox.counts().await;
    assert_eq!(counts.pending, 2);
    assert!(counts.failed_attempts >= 3);
    assert_eq!((counts.delivered, counts.rejected), (0, 0));

    // The peer appears: both are delivered, the first first.
    let handler = TestHandler::new(AckCode::AA);
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let server = start_on(listener, handler.clone(), ServerConfig::default()).await;
    assert!(eventually(10, || store.waiting() == 0).await);
    let seen: Vec<String> = handler.seen().into_iter().map(|s| s.control_id).collect();
    assert_eq!(seen, [first_id, second_id]);
    assert_eq!(handler.seen()[0].message_type, "ORM^O01^ORM_O01");
    let counts = outbox.counts().await;
    assert_eq!((counts.pending, counts.delivered, counts.rejected), (0, 2, 0));

    // A message queued while the sender idles goes at once when it is woken.
    let (third, third_id) = completion("ACC3");
    store.push(third);
    outbox.waker().notify_one();
    assert!(eventually(10, || handler.seen().len() == 3).await);
    assert_eq!(handler.seen()[2].control_id, third_id);
    stop.send(true).unwrap();
    worker.await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn refused_messages_are_set_aside_and_the_rest_is_delivered() {
    for refusal in [AckCode::AR, AckCode::AE] {
        let server = start(TestHandler::new(refusal), ServerConfig::default()).await;
        let store = Arc::new(MemoryStore::default());
        let (message, _) = completion("ACC3");
        store.push(message.clone());
        let outbox = Arc::new(Outbox::new(store.clone(), config(server.addr.port())));
        let (stop, worker) = start_sender(&outbox);
        assert!(eventually(10, || store.waiting() == 0).await, "{refusal:?}");
        let counts = outbox.counts().await;
        assert_eq!(
            (counts.rejected, counts.delivered, counts.failed_attempts),
            (1, 0, 0)
        );
        let aside = store.set_aside();
        assert_eq!(aside.len(), 1);
        assert_eq!(aside[0].0, message);
        assert!(aside[0].1.starts_with(refusal.as_str()), "{}", aside[0].1);
        stop.send(true).unwrap();
        worker.await.unwrap();
        server.stop().await;
    }
}

#[tokio::test]
async fn a_message_that_could_never_be_accepted_is_set_aside_at_once() {
    // A peer that would answer, were the message readable.
    let server = start(TestHandler::new(AckCode::AA), ServerConfig::default()).await;
    let store = Arc::new(MemoryStore::default());
    store.push(b"PID|1\r".to_vec());
    store.push(b"MSH|^~\\&|A|B|C|D|1||ORM^O01||P|2.5\r".to_vec());
    let outbox = Arc::new(Outbox::new(store.clone(), config(server.addr.port())));
    let (stop, worker) = start_sender(&outbox);
    assert!(eventually(10, || store.waiting() == 0).await);
    let reasons: Vec<String> = store.set_aside().into_iter().map(|(_, why)| why).collect();
    // No MSH: never sent. No control id: the peer refuses it (and would again).
    assert_eq!(reasons.len(), 2);
    assert!(reasons[0].starts_with("unsendable"), "{reasons:?}");
    assert!(
        reasons[1].starts_with("AR") && reasons[1].contains("MSH-10"),
        "{reasons:?}"
    );
    assert!(store.errors().is_empty(), "never retried");
    stop.send(true).unwrap();
    worker.await.unwrap();
    server.stop().await;
}
