//! The MLLP listener driven over raw TCP: ordering, bad input, limits, timeouts, shutdown.

mod common;

use std::time::Duration;

use common::{sample, start, TestHandler};
use pacs_hl7::{AckCode, Limits, Message, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn framed(m: &[u8]) -> Vec<u8> {
    [&[0x0b][..], m, &[0x1c, 0x0d]].concat()
}

/// Reads one MLLP frame; `None` when the connection closes (or resets) first.
async fn read_frame(stream: &mut TcpStream) -> Option<Message> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut byte))
            .await
            .expect("an answer or a close within 10 s")
            .unwrap_or(0);
        if n == 0 {
            return None;
        }
        match byte[0] {
            0x0b => buf.clear(),
            0x1c => return Some(Message::parse(&buf).expect("a readable ACK")),
            b => buf.push(b),
        }
    }
}

fn msa(m: &Message) -> (String, String) {
    (m.value("MSA-1").unwrap(), m.value("MSA-2").unwrap_or_default())
}

fn adt(control_id: &str) -> Vec<u8> {
    format!("MSH|^~\\&|RIS|H|PACS|H|20240102||ADT^A08|{control_id}|P|2.5\rPID|1||42\r").into_bytes()
}

fn small() -> ServerConfig {
    ServerConfig {
        limits: Limits {
            max_size: 1024,
            ..Limits::default()
        },
        ..ServerConfig::default()
    }
}

#[tokio::test]
async fn several_messages_on_one_connection_are_answered_in_order() {
    let handler = TestHandler::new(AckCode::AA);
    let server = start(handler.clone(), ServerConfig::default()).await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let mut burst = Vec::new();
    for id in ["M1", "M2", "M3"] {
        burst.extend(framed(&adt(id)));
    }
    s.write_all(&burst).await.unwrap();
    for id in ["M1", "M2", "M3"] {
        let ack = read_frame(&mut s).await.unwrap();
        assert_eq!(msa(&ack), ("AA".into(), id.into()));
    }
    let seen: Vec<_> = handler.seen().into_iter().map(|s| s.control_id).collect();
    assert_eq!(seen, ["M1", "M2", "M3"]);
    server.stop().await;
}

#[tokio::test]
async fn garbage_before_a_frame_is_skipped() {
    let server = start(TestHandler::new(AckCode::AA), ServerConfig::default()).await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(b"\r\nhello\xff\x00").await.unwrap();
    s.write_all(&framed(&adt("G1"))).await.unwrap();
    assert_eq!(
        msa(&read_frame(&mut s).await.unwrap()),
        ("AA".into(), "G1".into())
    );
    server.stop().await;
}

#[tokio::test]
async fn oversize_message_gets_ar_and_the_connection_goes_on() {
    let server = start(TestHandler::new(AckCode::AA), small()).await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let mut big = adt("BIG1");
    big.extend(format!("NTE|1||{}\r", "x".repeat(5000)).bytes());
    s.write_all(&framed(&big)).await.unwrap();
    let nak = read_frame(&mut s).await.unwrap();
    assert_eq!(msa(&nak), ("AR".into(), "BIG1".into()));
    assert_eq!(nak.value("ERR-3").as_deref(), Some("207"));
    assert!(nak
        .value("ERR-8")
        .unwrap()
        .contains("exceeds the limit of 1024 bytes"));
    s.write_all(&framed(&adt("OK1"))).await.unwrap();
    assert_eq!(
        msa(&read_frame(&mut s).await.unwrap()),
        ("AA".into(), "OK1".into())
    );
    server.stop().await;
}

#[tokio::test]
async fn truncated_frames_get_ar_when_their_header_is_readable() {
    let server = start(TestHandler::new(AckCode::AA), ServerConfig::default()).await;
    // Cut by a new start block: the cut frame is refused, the next one accepted.
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let mut input = vec![0x0b];
    input.extend(&adt("CUT1")[..46]);
    input.extend(framed(&adt("WHOLE1")));
    s.write_all(&input).await.unwrap();
    let nak = read_frame(&mut s).await.unwrap();
    assert_eq!(msa(&nak), ("AR".into(), "CUT1".into()));
    assert!(nak.value("ERR-8").unwrap().contains("cut before its end block"));
    assert_eq!(
        msa(&read_frame(&mut s).await.unwrap()),
        ("AA".into(), "WHOLE1".into())
    );

    // Cut by the end of input: answered if the peer still reads, then closed.
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(&[&[0x0b][..], &adt("CUT2")[..45]].concat())
        .await
        .unwrap();
    s.shutdown().await.unwrap();
    let nak = read_frame(&mut s).await.unwrap();
    assert_eq!(msa(&nak), ("AR".into(), "CUT2".into()));
    assert!(read_frame(&mut s).await.is_none());
    server.stop().await;
}

#[tokio::test]
async fn unreadable_message_closes_only_its_connection() {
    let server = start(TestHandler::new(AckCode::AA), ServerConfig::default()).await;
    let mut other = TcpStream::connect(server.addr).await.unwrap();
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(&framed(b"PID|1||no header\r")).await.unwrap();
    assert!(read_frame(&mut s).await.is_none());
    other.write_all(&framed(&adt("STILL1"))).await.unwrap();
    assert_eq!(
        msa(&read_frame(&mut other).await.unwrap()),
        ("AA".into(), "STILL1".into())
    );
    server.stop().await;
}

#[tokio::test]
async fn endless_garbage_closes_the_connection() {
    let server = start(TestHandler::new(AckCode::AA), small()).await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    // The server may close (and reset) while this is still being written.
    let _ = s.write_all(&[b'z'; 4000]).await;
    assert!(read_frame(&mut s).await.is_none());
    server.stop().await;
}

#[tokio::test]
async fn idle_connections_are_closed() {
    let config = ServerConfig {
        idle_timeout: Duration::from_millis(200),
        ..ServerConfig::default()
    };
    let server = start(TestHandler::new(AckCode::AA), config).await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(&framed(&adt("I1"))).await.unwrap();
    assert!(read_frame(&mut s).await.is_some());
    let started = std::time::Instant::now();
    assert!(read_frame(&mut s).await.is_none());
    assert!(started.elapsed() >= Duration::from_millis(150));
    server.stop().await;
}

#[tokio::test]
async fn connections_beyond_the_cap_are_closed_at_once() {
    let config = ServerConfig {
        max_connections: 1,
        ..ServerConfig::default()
    };
    let server = start(TestHandler::new(AckCode::AA), config).await;
    let mut first = TcpStream::connect(server.addr).await.unwrap();
    first.write_all(&framed(&adt("C1"))).await.unwrap();
    assert!(read_frame(&mut first).await.is_some());
    let mut second = TcpStream::connect(server.addr).await.unwrap();
    let _ = second.write_all(&framed(&adt("C2"))).await;
    let started = std::time::Instant::now();
    assert!(read_frame(&mut second).await.is_none(), "refused, not queued");
    assert!(started.elapsed() < Duration::from_secs(2));
    drop(first);
    // The slot is free again once the server has seen the first connection go.
    let mut answer = None;
    for _ in 0..50 {
        let mut third = TcpStream::connect(server.addr).await.unwrap();
        let _ = third.write_all(&framed(&adt("C3"))).await;
        answer = read_frame(&mut third).await;
        if answer.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(msa(&answer.unwrap()), ("AA".into(), "C3".into()));
    server.stop().await;
}

#[tokio::test]
async fn shutdown_closes_idle_connections_and_returns() {
    let server = start(TestHandler::new(AckCode::AA), ServerConfig::default()).await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(&framed(&sample("adt_a01.hl7"))).await.unwrap();
    assert!(read_frame(&mut s).await.is_some());
    let addr = server.addr;
    server.stop().await;
    assert!(read_frame(&mut s).await.is_none());
    assert!(TcpStream::connect(addr).await.is_err());
}
