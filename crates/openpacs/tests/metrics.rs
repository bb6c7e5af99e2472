//! `/metrics` as Prometheus scrapes it: every series exists from start, at zero, before any
//! traffic; then DICOM (DCMTK echoscu and storescu), DICOMweb (dicomweb-client), HL7
//! (python-hl7) and the outbound RIS queue move exactly the series they should, and the gauges
//! read from the disk and the index say what is there.

use std::path::Path;
use std::time::{Duration, Instant};

use pacs_testkit::server::{
    dcmtk, dicomweb_client, free_port, modality_image, send_hl7, ServerOptions, TestServer,
};

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_openpacs"))
}

/// One sample of the exposition text: `name{k="v",…} value`.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

struct Scrape {
    samples: Vec<Sample>,
    /// The families announced by `# TYPE` lines.
    families: Vec<String>,
}

impl Scrape {
    fn of(server: &TestServer) -> Scrape {
        let (status, _, body) = server.http_bytes("/metrics", &[]);
        assert_eq!(status, 200);
        let text = String::from_utf8(body).expect("UTF-8 exposition");
        let mut samples = Vec::new();
        let mut families = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                families.push(rest.split(' ').next().unwrap().to_owned());
                continue;
            }
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect("a sample line");
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("a number in {line:?}"));
            let (name, labels) = match series.split_once('{') {
                None => (series.to_owned(), Vec::new()),
                Some((name, labels)) => (name.to_owned(), parse_labels(labels.trim_end_matches('}'))),
            };
            samples.push(Sample { name, labels, value });
        }
        Scrape { samples, families }
    }

    /// The value of the one series with this name and (at least) these labels.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let found: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v))
            })
            .collect();
        assert_eq!(found.len(), 1, "one series {name}{labels:?}, found {found:?}");
        found[0].value
    }

    fn series(&self, name: &str) -> usize {
        self.samples.iter().filter(|s| s.name == name).count()
    }
}

/// Label values here hold no escaped quotes (route templates, fixed words, HL7 types).
fn parse_labels(text: &str) -> Vec<(String, String)> {
    text.split("\",")
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').expect("k=v");
            (k.to_owned(), v.trim_matches('"').to_owned())
        })
        .collect()
}

fn msh(kind: &str, control: &str) -> String {
    format!("MSH|^~\\&|RIS|HOSP|OPENPACS|HOSP|20261207090000||{kind}|{control}|P|2.5")
}

#[test]
fn every_metric_is_exported_at_zero_before_any_traffic() {
    let server = TestServer::start(binary(), ServerOptions::default());
    let m = Scrape::of(&server);
    for family in [
        "openpacs_dimse_associations_active",
        "openpacs_dimse_associations_total",
        "openpacs_dimse_associations_refused_total",
        "openpacs_dimse_protocol_errors_total",
        "openpacs_dimse_stores_total",
        "openpacs_dimse_store_bytes_total",
        "openpacs_dimse_store_seconds",
        "openpacs_dimse_finds_total",
        "openpacs_dimse_find_seconds",
        "openpacs_dimse_retrieves_total",
        "openpacs_dimse_retrieve_seconds",
        "openpacs_dimse_commitment_requests_total",
        "openpacs_dimse_commitment_reports_total",
        "openpacs_dimse_mpps_total",
        "openpacs_hl7_messages_total",
        "openpacs_hl7_connections_refused_total",
        "openpacs_hl7_outbound_queue_depth",
        "openpacs_hl7_outbound_delivered_total",
        "openpacs_hl7_outbound_rejected_total",
        "openpacs_hl7_outbound_failed_attempts_total",
        "openpacs_http_requests_total",
        "openpacs_http_request_seconds",
        "openpacs_http_connections_refused_total",
        "openpacs_http_bodies_cut_total",
        "openpacs_index_batch_size",
        "openpacs_index_size_bytes",
        "openpacs_index_objects",
        "openpacs_storage_used_bytes",
        "openpacs_storage_free_bytes",
        "openpacs_storage_capacity_bytes",
    ] {
        assert!(
            m.families.iter().any(|f| f == family),
            "{family} missing from the first scrape"
        );
    }
    // Counters and histograms all start at zero, labelled series included.
    for s in &m.samples {
        let gauge_read_from_disk = matches!(
            s.name.as_str(),
            "openpacs_storage_free_bytes" | "openpacs_storage_capacity_bytes" | "openpacs_index_size_bytes"
        );
        if !gauge_read_from_disk {
            assert_eq!(s.value, 0.0, "{s:?} before any traffic");
        }
    }
    assert_eq!(
        m.value("openpacs_dimse_stores_total", &[("outcome", "success")]),
        0.0
    );
    assert_eq!(
        m.value(
            "openpacs_dimse_associations_refused_total",
            &[("reason", "calling_ae")]
        ),
        0.0
    );
    assert_eq!(
        m.value(
            "openpacs_hl7_messages_total",
            &[("type", "ORM^O01"), ("outcome", "accepted")]
        ),
        0.0
    );
    assert_eq!(
        m.value(
            "openpacs_http_requests_total",
            &[
                ("route", "/dicom-web/studies"),
                ("method", "GET"),
                ("status", "2xx")
            ]
        ),
        0.0
    );
    assert_eq!(
        m.value(
            "openpacs_http_request_seconds_count",
            &[
                (
                    "route",
                    "/dicom-web/studies/{study}/series/{series}/instances/{instance}"
                ),
                ("method", "GET")
            ]
        ),
        0.0
    );
    assert_eq!(m.value("openpacs_dimse_store_seconds_count", &[]), 0.0);
    let free = m.value("openpacs_storage_free_bytes", &[]);
    let capacity = m.value("openpacs_storage_capacity_bytes", &[]);
    assert!(free > 0.0 && free <= capacity, "free {free} of {capacity}");
    assert!(
        m.value("openpacs_index_size_bytes", &[]) >= 4096.0,
        "an empty SQLite index has pages"
    );
}

#[test]
fn dicom_http_and_hl7_traffic_move_the_metrics_they_name() {
    let dir = tempfile::tempdir().unwrap();
    // A RIS address nothing listens on: the end-of-exam notice waits in the outbound queue.
    let ris_port = free_port();
    let server = TestServer::start(
        binary(),
        ServerOptions {
            extra_toml: format!(
                "ris_address = \"127.0.0.1:{ris_port}\"\nstudy_stable_secs = 1\nmetrics_count_secs = 0\n"
            ),
            ..ServerOptions::default()
        },
    );
    let port = server.dicom_port.to_string();

    let echo = dcmtk("echoscu")
        .args(["-aec", "OPENPACS", "127.0.0.1", &port])
        .output()
        .unwrap();
    assert!(echo.status.success(), "{}", String::from_utf8_lossy(&echo.stderr));

    let study = "1.2.826.0.1.3680043.10.543.700";
    let acks = send_hl7(
        server.hl7_port,
        dir.path(),
        &[
            &format!(
                "{}\nPID|1||P700^^^HOSP^PI||MARTIN^LEA||19800315|F",
                msh("ADT^A01^ADT_A01", "M1")
            ),
            &format!(
                "{}\nPID|1||P700^^^HOSP^PI||MARTIN^LEA||19800315|F\n\
                 ORC|NW|PO700|FO700||SC||1^^^20261207100000^^R||20261207090000\n\
                 OBR|1|PO700|FO700|CTTHORAX^CT thorax^L||||||||||||||ACC700|RP700|SPS700|CT_1|||CT\n\
                 ZDS|{study}^^Application^DICOM",
                msh("ORM^O01^ORM_O01", "M2")
            ),
            &format!("{}\nPID|1||P700^^^HOSP^PI", msh("ADT^A99", "M3")),
            &format!("{}\nPID|1||NOBODY^^^HOSP^PI||X^Y", msh("ADT^A08^ADT_A01", "M4")),
        ],
    );
    let codes: Vec<&str> = acks.iter().map(|a| a["code"].as_str().unwrap()).collect();
    assert_eq!(codes, ["AA", "AA", "AR", "AE"], "{acks:?}");

    let image = modality_image(
        dir.path(),
        "ct.dcm",
        &[
            ("PatientID", "P700"),
            ("IssuerOfPatientID", "HOSP"),
            ("PatientName", "MARTIN^LEA"),
            ("AccessionNumber", "ACC700"),
            ("StudyInstanceUID", study),
        ],
    );
    let size = std::fs::metadata(&image).unwrap().len() as f64;
    let store = dcmtk("storescu")
        .args(["-aec", "OPENPACS", "127.0.0.1", &port, &image])
        .output()
        .unwrap();
    assert!(
        store.status.success(),
        "{}",
        String::from_utf8_lossy(&store.stderr)
    );

    let found = dicomweb_client(&server.dicomweb_url(), &["search", "studies"]);
    assert_eq!(found.as_array().map(Vec::len), Some(1), "{found}");
    let (status, _, _) = server.http_bytes("/dicom-web/studies/1.2.3.4/metadata", &[]);
    assert_eq!(status, 404);

    // The study has been stable for study_stable_secs: its end is reported to the RIS, which
    // does not answer, so the notice waits in the queue.
    let deadline = Instant::now() + Duration::from_secs(30);
    let m = loop {
        let m = Scrape::of(&server);
        if m.value("openpacs_hl7_outbound_queue_depth", &[]) >= 1.0 || Instant::now() > deadline {
            break m;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(
        m.value("openpacs_hl7_outbound_queue_depth", &[]),
        1.0,
        "{}",
        server.log()
    );

    assert_eq!(m.value("openpacs_dimse_associations_total", &[]), 2.0);
    assert_eq!(m.value("openpacs_dimse_associations_active", &[]), 0.0);
    assert_eq!(
        m.value("openpacs_dimse_stores_total", &[("outcome", "success")]),
        1.0
    );
    assert_eq!(
        m.value("openpacs_dimse_stores_total", &[("outcome", "failure")]),
        0.0
    );
    assert_eq!(m.value("openpacs_dimse_store_seconds_count", &[]), 1.0);
    let received = m.value("openpacs_dimse_store_bytes_total", &[]);
    assert!(
        received > size / 2.0 && received <= size,
        "{received} bytes received of a {size}-byte file"
    );

    let hl7 = |kind, outcome| {
        m.value(
            "openpacs_hl7_messages_total",
            &[("type", kind), ("outcome", outcome)],
        )
    };
    assert_eq!(hl7("ADT^A01", "accepted"), 1.0);
    assert_eq!(hl7("ORM^O01", "accepted"), 1.0);
    assert_eq!(hl7("other", "rejected"), 1.0, "ADT^A99 counts as other");
    assert_eq!(hl7("ADT^A08", "error"), 1.0, "an update of an unknown patient");
    assert_eq!(hl7("ADT^A08", "accepted"), 0.0);

    let http = |route, status| {
        m.value(
            "openpacs_http_requests_total",
            &[("route", route), ("method", "GET"), ("status", status)],
        )
    };
    assert_eq!(http("/dicom-web/studies", "2xx"), 1.0);
    assert_eq!(http("/dicom-web/studies/{study}/metadata", "4xx"), 1.0);
    assert_eq!(
        m.value(
            "openpacs_http_request_seconds_count",
            &[("route", "/dicom-web/studies"), ("method", "GET")]
        ),
        1.0
    );

    assert_eq!(m.value("openpacs_index_objects", &[("level", "instance")]), 1.0);
    assert_eq!(m.value("openpacs_index_objects", &[("level", "study")]), 1.0);
    assert_eq!(m.value("openpacs_index_objects", &[("level", "patient")]), 1.0);
    let used = m.value("openpacs_storage_used_bytes", &[]);
    assert!(
        used >= received && used <= size + 1024.0,
        "used {used} for one {size}-byte object"
    );
    assert!(m.value("openpacs_index_size_bytes", &[]) > 0.0);
}

#[test]
fn requests_cannot_create_series_at_will() {
    let server = TestServer::start(binary(), ServerOptions::default());
    let before = Scrape::of(&server).series("openpacs_http_requests_total");
    for i in 0..40 {
        server.http_bytes(&format!("/no/such/page/{i}"), &[]);
        server.http_request(&format!("BREW{i}"), &format!("/x{i}"), &[], b"");
        server.http_bytes(&format!("/dicom-web/studies/1.2.{i}/metadata"), &[]);
    }
    let after = Scrape::of(&server);
    // Unknown paths count under one "fallback" route, unknown methods under "other", and a
    // route's parameters under its template: a handful of new series, not 120.
    let grown = after.series("openpacs_http_requests_total") - before;
    assert!(grown <= 4, "{grown} new series");
    assert_eq!(
        after.value(
            "openpacs_http_requests_total",
            &[
                ("route", "/dicom-web/studies/{study}/metadata"),
                ("method", "GET"),
                ("status", "4xx")
            ]
        ),
        40.0
    );
}
