//! Against peers no one here wrote: python-hl7 (`mllp_send`, `MLLPClient`, `create_ack`) and
//! hl7apy (strict validation), through `tests/interop/hl7_peer.py`.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{eventually, free_port, repo_root, sample, samples, start, MemoryStore, TestHandler};
use pacs_hl7::{send, AckCode, Limits, Message, Outbox, OutboxConfig, ServerConfig};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::watch;

const PIP: &str = "python3 -m pip install hl7==0.4.5 hl7apy==1.3.5";

fn python() -> Command {
    let check = Command::new("python3")
        .args(["-c", "import hl7, hl7apy"])
        .status()
        .expect("python3 runs");
    assert!(check.success(), "python-hl7 and hl7apy are missing: {PIP}");
    Command::new("python3")
}

fn peer(args: &[&str]) -> Value {
    let script = repo_root().join("tests/interop/hl7_peer.py");
    let output = python().arg(script).args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "hl7_peer.py {args:?} printed no JSON ({e}); stdout: {stdout}\nstderr: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn samples_pass_hl7apy_strict_validation() {
    for file in samples() {
        let result = peer(&["validate", path_str(&file)]);
        assert_eq!(result["valid"], true, "{}: {result}", file.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mllp_send_and_python_hl7_get_aa_for_every_sample() {
    let handler = TestHandler::new(AckCode::AA);
    let server = start(handler.clone(), ServerConfig::default()).await;
    let port = server.addr.port().to_string();
    let files = samples();

    // python-hl7's own command, one run per file (it reads `MSH|^~\&|`-led text with --loose).
    for file in &files {
        let out = tokio::task::spawn_blocking({
            let args = ["--loose", "-p", &port, "-f", path_str(file), "127.0.0.1"]
                .map(str::to_owned);
            move || {
                python()
                    .args(["-c", "import sys; from hl7.client import mllp_send; sys.argv[0] = 'mllp_send'; mllp_send()"])
                    .args(args)
                    .stderr(Stdio::inherit())
                    .output()
                    .unwrap()
            }
        })
        .await
        .unwrap();
        assert!(out.status.success(), "mllp_send {}", file.display());
        let ack = String::from_utf8_lossy(&out.stdout);
        let control_id = Message::parse(&sample(file.file_name().unwrap().to_str().unwrap()))
            .unwrap()
            .control_id();
        assert!(
            ack.contains(&format!("MSA|AA|{control_id}")),
            "{}: {ack}",
            file.display()
        );
    }

    // All samples over one connection with MLLPClient; python-hl7 reads our ACKs.
    let args: Vec<String> = ["send", "--one-connection", "--port", &port]
        .into_iter()
        .map(str::to_owned)
        .chain(files.iter().map(|f| path_str(f).to_owned()))
        .collect();
    let results =
        tokio::task::spawn_blocking(move || peer(&args.iter().map(String::as_str).collect::<Vec<_>>()))
            .await
            .unwrap();
    let results = results.as_array().unwrap();
    assert_eq!(results.len(), files.len());
    for r in results {
        assert_eq!(r["code"], "AA", "{r}");
        let control_id = r["control_id"].as_str().unwrap();
        assert!(r["ack"].as_str().unwrap().contains("|ACK^"), "{r}");
        assert!(handler.seen().iter().any(|s| s.control_id == control_id));
    }

    // Character sets came through: UTF-8 (A04) and ISO 8859-1 with a \XE9\ escape (A08).
    let seen = handler.seen();
    let name_of = |id: &str| seen.iter().find(|s| s.control_id == id).unwrap().name.clone();
    assert_eq!(
        name_of("ADT0002"),
        (Some("LEFÈVRE".into()), Some("ÉLODIE".into()))
    );
    assert_eq!(name_of("ADT0003").1.as_deref(), Some("JEAN\u{e9} PIERRE"));
    assert!(seen.iter().all(|s| s.parsed));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_corpus_gets_a_nak_or_a_close_and_the_listener_keeps_serving() {
    let config = ServerConfig {
        limits: Limits {
            max_size: 64 * 1024,
            ..Limits::default()
        },
        ..ServerConfig::default()
    };
    let server = start(TestHandler::new(AckCode::AA), config).await;
    let port = server.addr.port().to_string();
    let dir = repo_root().join("tests/hl7/malformed");
    let expected: Value = serde_json::from_slice(&std::fs::read(dir.join("expected.json")).unwrap()).unwrap();
    let expected = expected.as_object().unwrap();
    let valid = samples()[0].clone();
    for (name, want) in expected {
        let file = dir.join(name);
        let args = [
            "send".to_owned(),
            "--port".to_owned(),
            port.clone(),
            path_str(&file).to_owned(),
            path_str(&valid).to_owned(),
        ];
        let results =
            tokio::task::spawn_blocking(move || peer(&args.iter().map(String::as_str).collect::<Vec<_>>()))
                .await
                .unwrap();
        let (bad, good) = (&results[0], &results[1]);
        match want["answer"].as_str().unwrap() {
            "close" => assert!(bad["code"].is_null() && !bad["error"].is_null(), "{name}: {bad}"),
            code => {
                assert_eq!(bad["code"], code, "{name}: {bad}");
                let ack = bad["ack"].as_str().unwrap().replace('\n', "\r");
                let ack = Message::parse(ack.as_bytes()).unwrap();
                let err = ack.value("ERR-3").or_else(|| ack.value("ERR-1.4.1"));
                assert_eq!(err.as_deref(), want["error"].as_str(), "{name}: {bad}");
            }
        }
        assert_eq!(good["code"], "AA", "after {name}: {good}");
    }
    server.stop().await;
}

/// Starts `hl7_peer.py listen` on `port`; returns the child once it is listening.
async fn python_listener(port: u16, out: &Path, nak: bool) -> tokio::process::Child {
    let script = repo_root().join("tests/interop/hl7_peer.py");
    let _ = python();
    let mut cmd = tokio::process::Command::new("python3");
    cmd.arg(script)
        .args(["listen", "--port", &port.to_string(), "--out", path_str(out)])
        .args(["--max-seconds", "60"])
        .stdout(Stdio::piped())
        .kill_on_drop(true);
    if nak {
        cmd.arg("--nak");
    }
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("the listener starts")
        .unwrap()
        .unwrap();
    assert!(line.contains("listening"), "{line}");
    child
}

fn outbox_config(port: u16) -> OutboxConfig {
    OutboxConfig {
        send_timeout: Duration::from_secs(5),
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_millis(400),
        poll: Duration::from_millis(50),
        ..OutboxConfig::new(format!("127.0.0.1:{port}"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_messages_reach_a_python_ris_that_appears_later() {
    let port = free_port();
    let received = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(MemoryStore::default());
    let messages = [sample("orm_o01.hl7"), sample("oru_r01.hl7")];
    for m in &messages {
        store.push(m.clone());
    }
    let outbox = std::sync::Arc::new(Outbox::new(store.clone(), outbox_config(port)));
    let (stop, rx) = watch::channel(false);
    let worker = tokio::spawn({
        let outbox = outbox.clone();
        async move { outbox.run(rx).await }
    });
    // The port is closed: attempts fail and the messages wait.
    assert!(eventually(10, || store.errors().len() >= 2).await);
    assert_eq!(store.waiting(), 2);

    let mut ris = python_listener(port, received.path(), false).await;
    assert!(
        eventually(20, || store.waiting() == 0).await,
        "{:?}",
        outbox.counts().await
    );
    assert_eq!(outbox.counts().await.delivered, 2);
    // Received in order, byte for byte.
    for (i, m) in messages.iter().enumerate() {
        let got = std::fs::read(received.path().join(format!("{:04}.hl7", i + 1))).unwrap();
        assert_eq!(&got, m);
    }

    // The client on its own reads python-hl7's create_ack.
    let ack = send(
        ("127.0.0.1", port),
        &sample("adt_a01.hl7"),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert_eq!(ack.code, AckCode::AA);
    assert_eq!(ack.control_id, "ADT0001");

    stop.send(true).unwrap();
    worker.await.unwrap();
    ris.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_ris_refusal_sets_the_message_aside() {
    let port = free_port();
    let received = tempfile::tempdir().unwrap();
    let mut ris = python_listener(port, received.path(), true).await;
    let store = std::sync::Arc::new(MemoryStore::default());
    store.push(sample("orm_o01.hl7"));
    let outbox = std::sync::Arc::new(Outbox::new(store.clone(), outbox_config(port)));
    let (stop, rx) = watch::channel(false);
    let worker = tokio::spawn({
        let outbox = outbox.clone();
        async move { outbox.run(rx).await }
    });
    assert!(
        eventually(20, || store.waiting() == 0).await,
        "{:?}",
        outbox.counts().await
    );
    assert_eq!(outbox.counts().await.rejected, 1);
    let aside = store.set_aside();
    assert_eq!(aside.len(), 1);
    assert_eq!(aside[0].0, sample("orm_o01.hl7"));
    stop.send(true).unwrap();
    worker.await.unwrap();
    ris.kill().await.unwrap();
}
