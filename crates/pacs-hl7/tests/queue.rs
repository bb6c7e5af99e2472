//! The persisted retry queue against our own listener.

mod common;

use std::time::Duration;

use common::{eventually, free_port, start, start_on, TestHandler};
use pacs_hl7::{AckCode, Hl7Error, MessageBuilder, QueueConfig, RetryQueue, ServerConfig};
use tokio::net::TcpListener;
use tokio::sync::watch;

fn config(port: u16) -> QueueConfig {
    QueueConfig {
        send_timeout: Duration::from_secs(5),
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(200),
        ..QueueConfig::new(format!("127.0.0.1:{port}"))
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

fn files(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn unreachable_destination_keeps_the_message_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (message, control_id) = completion("ACC1");

    // First run: nobody listens; the message stays, attempts are counted.
    let queue = RetryQueue::open(dir.path(), config(port)).unwrap();
    let name = queue.enqueue(message.clone()).await.unwrap();
    assert_eq!(std::fs::read(dir.path().join(&name)).unwrap(), message);
    let (stop, rx) = watch::channel(false);
    let worker = tokio::spawn({
        let queue = queue.clone();
        async move { queue.run(rx).await }
    });
    assert!(eventually(10, || queue.counts().failed_attempts >= 3).await);
    assert_eq!(queue.counts().pending, 1);
    stop.send(true).unwrap();
    worker.await.unwrap();
    drop(queue);
    assert_eq!(files(dir.path()), std::slice::from_ref(&name));

    // Restart: the queue finds the message and delivers it once the peer is there.
    let handler = TestHandler::new(AckCode::AA);
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let server = start_on(listener, handler.clone(), ServerConfig::default()).await;
    let queue = RetryQueue::open(dir.path(), config(port)).unwrap();
    assert_eq!(queue.counts().pending, 1);
    let (stop, rx) = watch::channel(false);
    let worker = tokio::spawn({
        let queue = queue.clone();
        async move { queue.run(rx).await }
    });
    assert!(eventually(10, || queue.counts().delivered == 1).await);
    let counts = queue.counts();
    assert_eq!((counts.pending, counts.rejected), (0, 0));
    assert!(files(dir.path()).is_empty());
    let seen = handler.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].control_id, control_id);
    assert_eq!(seen[0].message_type, "ORM^O01^ORM_O01");

    // A message queued while the worker idles goes at once; names keep increasing.
    let (second, _) = completion("ACC2");
    let second_name = queue.enqueue(second).await.unwrap();
    assert!(second_name > name);
    assert!(eventually(10, || queue.counts().delivered == 2).await);
    stop.send(true).unwrap();
    worker.await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn refused_messages_go_to_rejected_and_the_rest_is_delivered() {
    for refusal in [AckCode::AR, AckCode::AE] {
        let dir = tempfile::tempdir().unwrap();
        let server = start(TestHandler::new(refusal), ServerConfig::default()).await;
        let queue = RetryQueue::open(dir.path(), config(server.addr.port())).unwrap();
        let (message, _) = completion("ACC3");
        let name = queue.enqueue(message.clone()).await.unwrap();
        let (stop, rx) = watch::channel(false);
        let worker = tokio::spawn({
            let queue = queue.clone();
            async move { queue.run(rx).await }
        });
        assert!(
            eventually(10, || queue.counts().rejected == 1).await,
            "{refusal:?}"
        );
        let counts = queue.counts();
        assert_eq!(
            (counts.pending, counts.delivered, counts.failed_attempts),
            (0, 0, 0)
        );
        assert!(files(dir.path()).is_empty());
        assert_eq!(
            std::fs::read(dir.path().join("rejected").join(&name)).unwrap(),
            message
        );
        stop.send(true).unwrap();
        worker.await.unwrap();
        server.stop().await;

        // Reopening counts only what is pending and numbers after the rejected file.
        let queue = RetryQueue::open(dir.path(), config(1)).unwrap();
        assert_eq!(queue.counts().pending, 0);
        let (again, _) = completion("ACC4");
        assert!(queue.enqueue(again).await.unwrap() > name);
    }
}

#[tokio::test]
async fn enqueue_refuses_what_could_never_be_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let queue = RetryQueue::open(dir.path(), config(1)).unwrap();
    assert!(matches!(
        queue.enqueue(b"PID|1\r".to_vec()).await,
        Err(Hl7Error::MissingMsh)
    ));
    assert!(matches!(
        queue
            .enqueue(b"MSH|^~\\&|A|B|C|D|1||ORM^O01||P|2.5\r".to_vec())
            .await,
        Err(Hl7Error::MissingField("MSH-10"))
    ));
    assert_eq!(queue.counts().pending, 0);
    assert!(files(dir.path()).is_empty());
}

#[tokio::test]
async fn leftover_temporary_files_are_removed_on_open() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(".00000000000000000007.tmp"), b"half").unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"not ours").unwrap();
    let queue = RetryQueue::open(dir.path(), config(1)).unwrap();
    assert_eq!(queue.counts().pending, 0);
    assert_eq!(files(dir.path()), ["notes.txt"]);
}
