//! The MLLP listener under a flood of idle and slow connections (issue 14 §3): idle sockets
//! from one address cannot keep a real ADT out, a message without its end byte is dropped at
//! its deadline however slowly it drips, and refusals are reported in aggregate.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{start, TestHandler};
use pacs_hl7::{AckCode, Message, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

fn framed(m: &[u8]) -> Vec<u8> {
    [&[0x0b][..], m, &[0x1c, 0x0d]].concat()
}

fn adt(control_id: &str) -> Vec<u8> {
    format!("MSH|^~\\&|RIS|H|PACS|H|20240102||ADT^A08|{control_id}|P|2.5\rPID|1||42\r").into_bytes()
}

/// A connection from `source` (any 127/8 address is this machine), standing for another host.
async fn connect_from(source: [u8; 4], server: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((source, 0))).unwrap();
    socket.connect(server).await.unwrap()
}

/// Reads until the connection closes (or resets), at most `limit`: `Some(elapsed)` if it did.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(limit.saturating_sub(started.elapsed()), stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => continue,
        }
    }
}

/// The MSA of the answer to `message` on a new connection from 127.0.0.1.
async fn send_one(server: SocketAddr, message: &[u8]) -> Option<(String, String)> {
    let mut s = TcpStream::connect(server).await.ok()?;
    s.write_all(&framed(message)).await.ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.contains(&0x1c) {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body: Vec<u8> = buf.into_iter().filter(|b| ![0x0b, 0x1c].contains(b)).collect();
    let m = Message::parse(&body).ok()?;
    Some((m.value("MSA-1")?, m.value("MSA-2").unwrap_or_default()))
}

#[tokio::test]
async fn idle_connections_from_one_address_do_not_keep_a_real_adt_out() {
    let config = ServerConfig {
        idle_timeout: Duration::from_secs(3),
        ..ServerConfig::default()
    };
    let (per_source, cap) = (config.max_connections_per_source, config.max_connections);
    let server = start(TestHandler::new(AckCode::AA), config).await;
    let mut idle = Vec::new();
    for _ in 0..70 {
        idle.push(connect_from([127, 0, 0, 2], server.addr).await);
    }
    assert!(70 > cap, "the flood is larger than the connection cap");
    let started = Instant::now();
    let answer = send_one(server.addr, &adt("REAL1")).await;
    let took = started.elapsed();
    assert_eq!(answer, Some(("AA".into(), "REAL1".into())));
    assert!(
        took < Duration::from_secs(1),
        "real ADT answered in {took:?} during the flood"
    );
    // Past the per-source bound the server closes at once; the rest at the idle timeout.
    let closes =
        futures::future::join_all(idle.iter_mut().map(|s| closed_within(s, Duration::from_secs(6)))).await;
    let (mut at_once, mut later) = (0, 0);
    for close in closes {
        match close {
            Some(t) if t < Duration::from_secs(1) => at_once += 1,
            Some(_) => later += 1,
            None => panic!("an idle connection was still open 6 s after the flood began"),
        }
    }
    assert_eq!((at_once, later), (70 - per_source, per_source));
    server.stop().await;
}

#[tokio::test]
async fn a_message_without_its_end_byte_is_dropped_at_its_deadline_however_slowly_it_drips() {
    let config = ServerConfig {
        idle_timeout: Duration::from_secs(30),
        message_timeout: Duration::from_secs(1),
        ..ServerConfig::default()
    };
    let handler = TestHandler::new(AckCode::AA);
    let server = start(handler.clone(), config).await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let message = framed(&adt("CUT1"));
    s.write_all(&message[..20]).await.unwrap();
    let started = Instant::now();
    // One more byte every 200 ms: activity, but the message never ends.
    let (mut rd, mut wr) = s.into_split();
    let drip = tokio::spawn(async move {
        for b in &message[20..message.len() - 2] {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if wr.write_all(&[*b]).await.is_err() {
                return;
            }
        }
    });
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(Duration::from_secs(5), rd.read(&mut buf)).await;
    let took = started.elapsed();
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "closed without an answer: {closed:?}"
    );
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "dropped after {took:?}"
    );
    drip.abort();
    assert!(
        handler.seen().is_empty(),
        "nothing of the cut message was handled"
    );
    server.stop().await;
}

#[tokio::test]
async fn refused_connections_are_reported_once_per_source_and_reason_with_a_count() {
    let config = ServerConfig {
        max_connections_per_source: 2,
        idle_timeout: Duration::from_millis(700),
        refusal_report_interval: Duration::from_millis(400),
        ..ServerConfig::default()
    };
    let handler = TestHandler::new(AckCode::AA);
    let server = start(handler.clone(), config).await;
    let mut flood = Vec::new();
    for _ in 0..10 {
        flood.push(connect_from([127, 0, 0, 3], server.addr).await);
    }
    for s in &mut flood {
        assert!(closed_within(s, Duration::from_secs(3)).await.is_some());
    }
    assert!(
        common::eventually(3, || handler.refusals().len() >= 2).await,
        "{:?}",
        handler.refusals()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut reported: Vec<(String, &str, u64)> = handler
        .refusals()
        .iter()
        .map(|r| (r.source.to_string(), r.reason, r.count))
        .collect();
    reported.sort();
    assert_eq!(
        reported,
        [
            ("127.0.0.3".to_string(), "no_message", 2),
            ("127.0.0.3".to_string(), "per_source", 8)
        ]
    );
    server.stop().await;
}
