//! QIDO-RS driven by the dicomweb-client CLI and by plain HTTP for the error cases.

use std::collections::BTreeSet;
use std::path::Path;

use pacs_testkit::server::{dicomweb_client, repo_root, valid_fixtures, ServerOptions, TestServer};

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_openpacs"))
}

fn values<'a>(results: &'a serde_json::Value, tag: &str) -> Vec<&'a serde_json::Value> {
    results
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r[tag]["Value"][0])
        .collect()
}

#[test]
fn qido_rs_searches_with_dicomweb_client() {
    let server = TestServer::start(binary(), ServerOptions::default());
    let fixtures = valid_fixtures();
    server.store_fixtures(fixtures.iter());
    let url = server.dicomweb_url();
    let studies: BTreeSet<&str> = fixtures
        .iter()
        .map(|f| f["study_instance_uid"].as_str().unwrap())
        .collect();

    let all = dicomweb_client(&url, &["search", "studies"]);
    let found: BTreeSet<&str> = values(&all, "0020000D")
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(found, studies, "every stored study, once");
    // Computed attributes come as JSON numbers; every study has its modalities.
    for r in all.as_array().unwrap() {
        assert!(r["00201208"]["Value"][0].is_u64(), "{r}");
        assert!(
            r["00081190"]["Value"][0]
                .as_str()
                .unwrap()
                .contains("/dicom-web/studies/"),
            "{r}"
        );
    }

    // A study without any Modality has no ModalitiesInStudy at all (an empty one broke OHIF's
    // study list), and empty values carry no "Value" (not [""]).
    let no_modality = fixtures
        .iter()
        .find(|f| f["path"] == "valid/sc_jpeg_baseline_no_modality.dcm")
        .unwrap();
    let found = dicomweb_client(
        &url,
        &[
            "search",
            "studies",
            "--filter",
            &format!(
                "StudyInstanceUID={}",
                no_modality["study_instance_uid"].as_str().unwrap()
            ),
        ],
    );
    assert_eq!(found.as_array().unwrap().len(), 1, "{found}");
    assert!(found[0].get("00080061").is_none(), "{found}");
    for (tag, attribute) in found[0].as_object().unwrap() {
        if let Some(values) = attribute.get("Value").and_then(|v| v.as_array()) {
            assert!(!values.iter().any(|v| v == ""), "{tag}: {attribute}");
        }
    }

    // Person names: case- and accent-insensitive, wildcard, answered in UTF-8.
    let buc = dicomweb_client(&url, &["search", "studies", "--filter", "PatientName=BUC^JEROME"]);
    assert_eq!(buc.as_array().unwrap().len(), 1, "{buc}");
    assert_eq!(buc[0]["00100010"]["Value"][0]["Alphabetic"], "Buc^Jérôme");
    let by_tag = dicomweb_client(&url, &["search", "studies", "--filter", "00100010=buc*"]);
    assert_eq!(by_tag, buc);

    // Series of one study and instances of one series, through the hierarchical resources.
    let ct = fixtures
        .iter()
        .find(|f| f["path"] == "valid/ct_series_a_1_explicit_le.dcm")
        .unwrap();
    let study = ct["study_instance_uid"].as_str().unwrap();
    let series = ct["series_instance_uid"].as_str().unwrap();
    let in_study = dicomweb_client(&url, &["search", "series", "--study", study]);
    assert_eq!(
        values(&in_study, "0020000E"),
        vec![&serde_json::json!(series)],
        "{in_study}"
    );
    let instances = dicomweb_client(
        &url,
        &["search", "instances", "--study", study, "--series", series],
    );
    let expected: BTreeSet<&str> = fixtures
        .iter()
        .filter(|f| f["series_instance_uid"] == series)
        .map(|f| f["sop_instance_uid"].as_str().unwrap())
        .collect();
    let got: BTreeSet<&str> = values(&instances, "00080018")
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(got, expected);

    // Paging.
    let first = dicomweb_client(&url, &["search", "studies", "--limit", "2"]);
    let rest = dicomweb_client(&url, &["search", "studies", "--offset", "2"]);
    assert_eq!(first.as_array().unwrap().len(), 2);
    assert_eq!(rest.as_array().unwrap().len(), studies.len() - 2);

    // Series across studies, filtered by modality.
    let mr = dicomweb_client(&url, &["search", "series", "--filter", "Modality=MR"]);
    let expected_mr = fixtures.iter().filter(|f| f["modality"] == "MR").count();
    assert_eq!(mr.as_array().unwrap().len(), expected_mr, "{mr}");
}

#[test]
fn qido_rs_errors_follow_ps3_18() {
    let server = TestServer::start(binary(), ServerOptions::default());
    let (status, _, body) = server.http("/dicom-web/studies?NoSuchAttribute=1");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("NoSuchAttribute"), "{body}");
    let (status, _, body) = server.http("/dicom-web/studies?limit=many");
    assert_eq!(status, 400, "{body}");
    let (status, _, body) = server.http("/dicom-web/studies?PatientID=nobody");
    assert_eq!(status, 204, "no match is 204 No Content: {body}");
    let (status, head, _) = server.http("/dicom-web/studies?ReferencedStudySequence=1");
    assert_eq!(status, 204);
    assert!(
        head.to_lowercase().contains("warning: 299"),
        "unsupported parameters are announced: {head}"
    );
    let audit = String::from_utf8_lossy(&server.cli(&["audit"]).stdout).into_owned();
    assert!(audit.contains("QIDO-RS level=STUDY"), "{audit}");
}

fn header_value(head: &str, name: &str) -> String {
    head.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
        .unwrap_or_default()
}

#[test]
fn wado_rs_returns_the_stored_objects_byte_for_byte() {
    use sha2::{Digest, Sha256};
    let server = TestServer::start(binary(), ServerOptions::default());
    let fixtures = valid_fixtures();
    server.store_fixtures(fixtures.iter());

    // Every study in its stored syntaxes: each part is a Part 10 file whose data set is the
    // one sent, byte for byte.
    let any = [(
        "Accept",
        "multipart/related; type=\"application/dicom\"; transfer-syntax=*",
    )];
    let studies: BTreeSet<&str> = fixtures
        .iter()
        .map(|f| f["study_instance_uid"].as_str().unwrap())
        .collect();
    let mut received = 0;
    for study in &studies {
        let (status, head, body) = server.http_bytes(&format!("/dicom-web/studies/{study}"), &any);
        assert_eq!(status, 200, "{head}");
        for (part_head, content) in
            pacs_testkit::server::multipart_parts(&header_value(&head, "content-type"), &body)
        {
            let offset = pacs_testkit::server::part10_dataset_offset(&content).expect("a Part 10 file");
            let sha = hex::encode(Sha256::digest(&content[offset..]));
            let entry = fixtures
                .iter()
                .find(|f| f["dataset_sha256"] == sha.as_str())
                .unwrap_or_else(|| panic!("part {part_head} of {study} matches no fixture"));
            assert!(
                part_head.contains(entry["transfer_syntax_uid"].as_str().unwrap()),
                "{part_head}"
            );
            received += 1;
        }
    }
    assert_eq!(received, fixtures.len());

    // dicomweb-client retrieves a study and a single instance.
    let ct = fixtures
        .iter()
        .find(|f| f["path"] == "valid/ct_series_a_1_explicit_le.dcm")
        .unwrap();
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().display().to_string();
    let study = ct["study_instance_uid"].as_str().unwrap();
    dicomweb_client(
        &server.dicomweb_url(),
        &[
            "retrieve",
            "studies",
            "--study",
            study,
            "full",
            "--save",
            "--output-dir",
            &dir,
        ],
    );
    let saved = std::fs::read_dir(out.path()).unwrap().count();
    assert_eq!(
        saved,
        fixtures
            .iter()
            .filter(|f| f["study_instance_uid"] == study)
            .count()
    );

    // Without transfer-syntax the client gets explicit VR little endian: converted when the
    // object is native (big endian here), 406 when it is compressed and we have no codec.
    let be = fixtures
        .iter()
        .find(|f| f["transfer_syntax_uid"] == "1.2.840.10008.1.2.2")
        .unwrap();
    let path = format!(
        "/dicom-web/studies/{}/series/{}/instances/{}",
        be["study_instance_uid"].as_str().unwrap(),
        be["series_instance_uid"].as_str().unwrap(),
        be["sop_instance_uid"].as_str().unwrap()
    );
    let (status, head, body) = server.http_bytes(&path, &[]);
    assert_eq!(status, 200, "{head}");
    let parts = pacs_testkit::server::multipart_parts(&header_value(&head, "content-type"), &body);
    assert_eq!(parts.len(), 1);
    assert!(
        parts[0].0.contains("transfer-syntax=1.2.840.10008.1.2.1"),
        "{}",
        parts[0].0
    );
    let jpeg = fixtures
        .iter()
        .find(|f| f["transfer_syntax_uid"] == "1.2.840.10008.1.2.4.50")
        .unwrap();
    // Compressed objects asked for in the default (explicit little endian) syntax are decoded.
    let (status, head, body) = server.http_bytes(
        &format!(
            "/dicom-web/studies/{}",
            jpeg["study_instance_uid"].as_str().unwrap()
        ),
        &[],
    );
    assert_eq!(status, 200, "{head}");
    let parts = pacs_testkit::server::multipart_parts(&header_value(&head, "content-type"), &body);
    assert!(!parts.is_empty());
    for (part_head, file) in &parts {
        assert!(
            part_head.contains("transfer-syntax=1.2.840.10008.1.2.1"),
            "{part_head}"
        );
        assert!(pacs_testkit::server::part10_dataset_offset(file).is_some());
    }
    // A 12-bit JPEG (no decoder) alone: refused before anything is sent. (A study holding it
    // beside convertible instances gets those, with 206: see the conformance test below.)
    let twelve_bit = fixtures
        .iter()
        .find(|f| f["transfer_syntax_uid"] == "1.2.840.10008.1.2.4.51")
        .unwrap();
    let (status, _, _) = server.http_bytes(
        &format!(
            "/dicom-web/studies/{}/series/{}/instances/{}",
            twelve_bit["study_instance_uid"].as_str().unwrap(),
            twelve_bit["series_instance_uid"].as_str().unwrap(),
            twelve_bit["sop_instance_uid"].as_str().unwrap()
        ),
        &[],
    );
    assert_eq!(status, 406);
    let (status, _, _) = server.http_bytes("/dicom-web/studies/1.2.3.4.5", &any);
    assert_eq!(status, 404);
    let (status, _, _) = server.http_bytes(&path, &[("Accept", "application/json")]);
    assert_eq!(status, 406);
}

#[test]
fn wado_rs_metadata_comes_from_the_index_with_bulk_data_uris() {
    let server = TestServer::start(binary(), ServerOptions::default());
    let fixtures = valid_fixtures();
    let ct: Vec<&serde_json::Value> = fixtures
        .iter()
        .filter(|f| f["path"].as_str().unwrap().starts_with("valid/ct_series_a_"))
        .collect();
    server.store_fixtures(ct.iter().copied());
    let study = ct[0]["study_instance_uid"].as_str().unwrap();
    let series = ct[0]["series_instance_uid"].as_str().unwrap();

    let metadata = dicomweb_client(
        &server.dicomweb_url(),
        &[
            "retrieve", "series", "--study", study, "--series", series, "metadata",
        ],
    );
    let items = metadata.as_array().expect("a JSON array");
    assert_eq!(items.len(), ct.len());
    for item in items {
        let sop = item["00080018"]["Value"][0].as_str().unwrap();
        assert!(ct.iter().any(|f| f["sop_instance_uid"] == sop));
        assert_eq!(
            item["00100020"]["Value"][0], "98890234",
            "patient attributes are there too"
        );
        let uri = item["7FE00010"]["BulkDataURI"]
            .as_str()
            .expect("pixel data by reference");
        assert!(
            uri.starts_with("http") && uri.ends_with(&format!("/instances/{sop}/bulkdata/7FE00010")),
            "{uri}"
        );
        // The referenced pixel data has the size the image attributes announce.
        let path = uri.split_once("/dicom-web").unwrap().1;
        let (status, head, body) = server.http_bytes(&format!("/dicom-web{path}"), &[]);
        assert_eq!(status, 200, "{head}");
        let parts = pacs_testkit::server::multipart_parts(&header_value(&head, "content-type"), &body);
        let value = |tag: &str| item[tag]["Value"][0].as_u64().unwrap();
        let expected = value("00280010") * value("00280011") * value("00280100") / 8;
        assert_eq!(parts[0].1.len() as u64, expected);
    }
    let (status, _, _) = server.http_bytes(&format!("/dicom-web/studies/{study}/series/1.2.3/metadata"), &[]);
    assert_eq!(status, 404);
}

/// A multipart/related body of application/dicom parts.
fn multipart(boundary: &str, parts: &[&[u8]]) -> Vec<u8> {
    let mut body = Vec::new();
    for part in parts {
        body.extend_from_slice(format!("--{boundary}\r\nContent-Type: application/dicom\r\n\r\n").as_bytes());
        body.extend_from_slice(part);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    body
}

#[test]
fn stow_rs_stores_parts_atomically_and_answers_per_part() {
    let server = TestServer::start(
        binary(),
        ServerOptions {
            extra_toml: "stow_max_part_bytes = 20000\n".into(),
            ..ServerOptions::default()
        },
    );
    let fixture = |name: &str| std::fs::read(repo_root().join("tests/fixtures").join(name)).unwrap();
    let url = server.dicomweb_url();

    // dicomweb-client stores two files; QIDO then finds them.
    let paths = ["valid/ct_series_a_1_explicit_le.dcm", "valid/mr_explicit_le.dcm"];
    let files: Vec<String> = paths
        .iter()
        .map(|p| repo_root().join("tests/fixtures").join(p).display().to_string())
        .collect();
    let mut args = vec!["store", "instances"];
    args.extend(files.iter().map(String::as_str));
    dicomweb_client(&url, &args);
    let found = dicomweb_client(&url, &["search", "instances"]);
    assert_eq!(found.as_array().unwrap().len(), 2, "{found}");

    let ct = fixture("valid/ct_series_a_2_explicit_le.dcm");
    let broken = fixture("malformed/missing_uids.dcm");
    let content_type = "multipart/related; type=\"application/dicom\"; boundary=XYZ";
    let post =
        |path: &str, body: &[u8], ct: &str| server.http_request("POST", path, &[("Content-Type", ct)], body);

    // One good part, one refused: 202 with one reference and one failure.
    let (status, _, body) = post(
        "/dicom-web/studies",
        &multipart("XYZ", &[&ct, &broken]),
        content_type,
    );
    assert_eq!(status, 202, "{}", String::from_utf8_lossy(&body));
    let response: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(response["00081199"]["Value"].as_array().unwrap().len(), 1);
    assert_eq!(response["00081198"]["Value"][0]["00081197"]["Value"][0], 0xA900);
    let retrieve = response["00081199"]["Value"][0]["00081190"]["Value"][0]
        .as_str()
        .unwrap();
    // The stored object is the posted file, byte for byte.
    let path = retrieve.split_once("/dicom-web").unwrap().1;
    let any = [(
        "Accept",
        "multipart/related; type=\"application/dicom\"; transfer-syntax=*",
    )];
    let (status, head, got) = server.http_bytes(&format!("/dicom-web{path}"), &any);
    assert_eq!(status, 200);
    let parts = pacs_testkit::server::multipart_parts(&header_value(&head, "content-type"), &got);
    assert_eq!(parts[0].1, ct);

    // Every part for another study than the URL's: 409, nothing stored, and the refused
    // instance named in FailedSOPSequence.
    let (status, _, body) = post(
        "/dicom-web/studies/1.2.3.4",
        &multipart("XYZ", &[&ct]),
        content_type,
    );
    assert_eq!(status, 409);
    let response: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let failed = &response["00081198"]["Value"][0];
    assert_eq!(
        failed["00081155"]["Value"][0], "1.3.6.1.4.1.5962.1.1.0.0.0.1194734704.16302.0.5",
        "{response}"
    );
    assert_eq!(failed["00081150"]["Value"][0], "1.2.840.10008.5.1.4.1.1.2");
    // Malformed bodies and wrong media types.
    let (status, _, _) = post(
        "/dicom-web/studies",
        b"--XYZ\r\nContent-Type: application/dicom\r\n\r\nDICM",
        content_type,
    );
    assert_eq!(status, 400);
    let (status, _, _) = post("/dicom-web/studies", &ct, "application/dicom");
    assert_eq!(status, 415);
    // A part over the configured limit: 413, and it is not stored.
    let big = fixture("valid/ct_explicit_le.dcm");
    assert!(big.len() > 20_000);
    let (status, _, body) = post("/dicom-web/studies", &multipart("XYZ", &[&big]), content_type);
    assert_eq!(status, 413, "{}", String::from_utf8_lossy(&body));
    // A declared length past the request limit: 413 at once, without waiting for the body.
    let started = std::time::Instant::now();
    let (status, _, body) = server.http_request(
        "POST",
        "/dicom-web/studies",
        &[
            ("Content-Type", content_type),
            ("Content-Length", "1000000000000"),
        ],
        b"",
    );
    assert_eq!(status, 413, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("limit"));
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    assert_eq!(server.http("/healthz").0, 200);
    let instances = dicomweb_client(&url, &["search", "instances"]);
    assert_eq!(
        instances.as_array().unwrap().len(),
        3,
        "two from dicomweb-client, one from the 202"
    );
    let leftovers: Vec<_> = std::fs::read_dir(server.data_dir.join("tmp")).unwrap().collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn wado_rs_frames_native_and_compressed() {
    let server = TestServer::start(binary(), ServerOptions::default());
    let fixtures = valid_fixtures();
    let pick = |name: &str| fixtures.iter().find(|f| f["path"] == name).unwrap().clone();
    let native = pick("valid/ct_series_a_1_explicit_le.dcm");
    let jpeg = pick("valid/us_multiframe_jpeg_baseline.dcm");
    server.store_fixtures([&native, &jpeg]);
    let frames_path = |f: &serde_json::Value, list: &str| {
        format!(
            "/dicom-web/studies/{}/series/{}/instances/{}/frames/{list}",
            f["study_instance_uid"].as_str().unwrap(),
            f["series_instance_uid"].as_str().unwrap(),
            f["sop_instance_uid"].as_str().unwrap()
        )
    };

    // Native: the frame is the pixel data of its size (rows × columns × 2 bytes here).
    let (status, head, body) = server.http_bytes(&frames_path(&native, "1"), &[]);
    assert_eq!(status, 200, "{head}");
    let parts = pacs_testkit::server::multipart_parts(&header_value(&head, "content-type"), &body);
    assert_eq!(parts.len(), 1);
    let meta = dicomweb_client(
        &server.dicomweb_url(),
        &[
            "retrieve",
            "instances",
            "--study",
            native["study_instance_uid"].as_str().unwrap(),
            "--series",
            native["series_instance_uid"].as_str().unwrap(),
            "--instance",
            native["sop_instance_uid"].as_str().unwrap(),
            "metadata",
        ],
    );
    let value = |tag: &str| {
        meta[tag]["Value"][0]
            .as_u64()
            .or_else(|| meta[0][tag]["Value"][0].as_u64())
            .unwrap()
    };
    assert_eq!(parts[0].1.len() as u64, value("00280010") * value("00280011") * 2);

    // Compressed, multi-frame: the stored JPEG bitstream of each asked frame.
    let jpeg_accept = [("Accept", "multipart/related; type=\"image/jpeg\"")];
    let (status, head, body) = server.http_bytes(&frames_path(&jpeg, "1,30"), &jpeg_accept);
    assert_eq!(status, 200, "{head}");
    let parts = pacs_testkit::server::multipart_parts(&header_value(&head, "content-type"), &body);
    assert_eq!(parts.len(), 2);
    for (part_head, frame) in &parts {
        assert!(part_head.contains("image/jpeg"), "{part_head}");
        assert_eq!(&frame[..2], &[0xFF, 0xD8], "a JPEG bitstream starts with SOI");
    }
    // Asked as octet-stream, the frames are decoded: rows × columns × 3 bytes of RGB, close to
    // what an independent JPEG decoder (the image crate) makes of the stored bitstream.
    let stored_first = parts[0].1.clone();
    let (status, head, body) = server.http_bytes(&frames_path(&jpeg, "1,30"), &[]);
    assert_eq!(status, 200, "{head}");
    let decoded = pacs_testkit::server::multipart_parts(&header_value(&head, "content-type"), &body);
    assert_eq!(decoded.len(), 2);
    let reference = image::load_from_memory(&stored_first).unwrap().to_rgb8();
    let (width, height) = reference.dimensions();
    assert_eq!(decoded[0].1.len() as u32, width * height * 3);
    let total: u64 = decoded[0]
        .1
        .iter()
        .zip(reference.as_raw())
        .map(|(a, b)| u64::from(a.abs_diff(*b)))
        .sum();
    let mean = total as f64 / decoded[0].1.len() as f64;
    assert!(
        mean < 3.0,
        "decoded frame differs from the reference decoder by {mean} on average"
    );
    // Out-of-range frames do not exist; a list that is not one is refused.
    assert_eq!(server.http_bytes(&frames_path(&jpeg, "31"), &jpeg_accept).0, 404);
    assert_eq!(server.http_bytes(&frames_path(&jpeg, "x"), &jpeg_accept).0, 400);
}

#[test]
fn wado_uri_returns_the_stored_file() {
    let server = TestServer::start(binary(), ServerOptions::default());
    let fixtures = valid_fixtures();
    let ct = fixtures
        .iter()
        .find(|f| f["path"] == "valid/ct_series_a_1_explicit_le.dcm")
        .unwrap();
    server.store_fixtures([ct]);
    let query = format!(
        "/wado?requestType=WADO&studyUID={}&seriesUID={}&objectUID={}",
        ct["study_instance_uid"].as_str().unwrap(),
        ct["series_instance_uid"].as_str().unwrap(),
        ct["sop_instance_uid"].as_str().unwrap()
    );
    let (status, head, body) = server.http_bytes(&format!("{query}&contentType=application/dicom"), &[]);
    assert_eq!(status, 200, "{head}");
    assert!(header_value(&head, "content-type").starts_with("application/dicom"));
    let offset = pacs_testkit::server::part10_dataset_offset(&body).expect("a Part 10 file");
    use sha2::{Digest, Sha256};
    assert_eq!(
        hex::encode(Sha256::digest(&body[offset..])),
        ct["dataset_sha256"].as_str().unwrap()
    );
    // Without a contentType, WADO-URI answers a rendered JPEG (tests/rendered.rs checks pixels).
    let (status, head, body) = server.http_bytes(&query, &[]);
    assert_eq!(status, 200, "{head}");
    assert!(header_value(&head, "content-type").starts_with("image/jpeg"));
    assert_eq!(&body[..2], &[0xFF, 0xD8]);
    assert_eq!(server.http_bytes("/wado?requestType=WADO&studyUID=1", &[]).0, 400);
    assert_eq!(
        server
            .http_bytes(
                "/wado?requestType=WADO&studyUID=1&seriesUID=2&objectUID=3&contentType=application/dicom",
                &[]
            )
            .0,
        404
    );
}

/// Regressions (issue 15 §5): comma UID lists found nothing, invalid dates answered 204,
/// ModalitiesInStudy came back as one string "CT\\MR", one instance that could not be
/// converted made WADO-RS refuse a whole study, a non-DICOM STOW part had no reason of its own.
#[test]
fn qido_and_wado_rs_conformance_uid_lists_dates_values_and_partial_retrieval() {
    let server = TestServer::start(binary(), ServerOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let url = server.dicomweb_url();
    let fixtures = valid_fixtures();
    server.store_fixtures(fixtures.iter());
    let ct = "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322";
    let mr = "1.3.6.1.4.1.5962.1.1.0.0.0.1196533885.18148.0.133";

    // UID lists with commas (PS3.18 §8.3.4.1), as with backslashes; dicomweb-client as the peer.
    let found = dicomweb_client(
        &url,
        &[
            "search",
            "studies",
            "--filter",
            &format!("StudyInstanceUID={ct},{mr}"),
        ],
    );
    let mut uids: Vec<&str> = found
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["0020000D"]["Value"][0].as_str().unwrap())
        .collect();
    uids.sort();
    assert_eq!(uids, [mr, ct], "{found}");

    // Invalid dates: 400 saying what is expected, on QIDO and on the REST searches.
    for date in [
        "2020XYZ",
        "2024-13-45",
        "2024-01-15",
        "20241345",
        "2020-2021-2022",
    ] {
        for path in ["/dicom-web/studies", "/api/studies"] {
            let (status, _, body) = server.http(&format!("{path}?StudyDate={date}"));
            assert_eq!(status, 400, "{path} StudyDate={date}: {body}");
            assert!(body.contains("YYYYMMDD"), "{path} {date}: {body}");
        }
    }
    for date in ["20040119", "20040101-20041231", "-20041231", "20040101-"] {
        let (status, _, body) = server.http(&format!("/dicom-web/studies?StudyDate={date}"));
        assert!(status == 200 || status == 204, "{date}: {status} {body}");
    }

    // A study of two modalities: ModalitiesInStudy is an array of two values.
    let study = "1.2.826.0.1.3680043.10.1505.1";
    let images: Vec<String> = ["CT", "MR"]
        .iter()
        .map(|m| {
            pacs_testkit::server::modality_image(
                dir.path(),
                &format!("{m}.dcm"),
                &[("StudyInstanceUID", study), ("Modality", m)],
            )
        })
        .collect();
    let mut args = vec!["store", "instances"];
    args.extend(images.iter().map(String::as_str));
    dicomweb_client(&url, &args);
    let found = dicomweb_client(
        &url,
        &[
            "search",
            "studies",
            "--filter",
            &format!("StudyInstanceUID={study}"),
        ],
    );
    let modalities = &found[0]["00080061"]["Value"];
    assert_eq!(modalities, &serde_json::json!(["CT", "MR"]), "{found}");
    let (_, _, body) = server.http(&format!("/api/studies?StudyInstanceUID={study}"));
    let rest: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        rest["items"][0]["ModalitiesInStudy"],
        serde_json::json!(["CT", "MR"]),
        "{rest}"
    );

    // A study with a JPEG 2000 image (decodable) and a 12-bit JPEG one (not, without GDCM):
    // in explicit VR little endian, the first comes with 206 and a Warning naming the second.
    let nm = "1.3.6.1.4.1.5962.1.2.8.20040826185059.5457";
    let not_decodable = "1.3.6.1.4.1.5962.1.1.8.1.5.20040826185059.5457";
    let accept = "multipart/related; type=\"application/dicom\"; transfer-syntax=1.2.840.10008.1.2.1";
    let (status, head, body) = server.http_bytes(&format!("/dicom-web/studies/{nm}"), &[("Accept", accept)]);
    assert_eq!(status, 206, "{head}");
    assert!(
        head.to_ascii_lowercase().contains("warning: 299") && head.contains(not_decodable),
        "{head}"
    );
    let content_type = head
        .lines()
        .find_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        })
        .map(|(_, v)| v.trim().to_string())
        .unwrap();
    let parts = pacs_testkit::server::multipart_parts(&content_type, &body);
    assert_eq!(parts.len(), 1, "one of two instances delivered");

    // STOW-RS: a part that is not DICOM at all has its own reason (0xC001), a malformed
    // DICOM object whose file meta group names it is referenced with 0xC000 or 0xA900.
    let malformed = std::fs::read(repo_root().join("tests/fixtures/malformed/missing_uids.dcm")).unwrap();
    let body = multipart("P", &[b"this is a text file, not an image", &malformed]);
    let (status, _, answer) = server.http_request(
        "POST",
        "/dicom-web/studies",
        &[(
            "Content-Type",
            "multipart/related; type=\"application/dicom\"; boundary=P",
        )],
        &body,
    );
    let answer: serde_json::Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(status, 409, "{answer}");
    let failed = answer["00081198"]["Value"].as_array().unwrap();
    assert_eq!(failed.len(), 2, "{answer}");
    let reasons: Vec<u64> = failed
        .iter()
        .map(|f| f["00081197"]["Value"][0].as_u64().unwrap())
        .collect();
    assert_eq!(reasons[0], 0xC001, "{answer}");
    assert!(reasons[1] == 0xC000 || reasons[1] == 0xA900, "{answer}");
    assert!(failed[0].get("00081155").is_none(), "{answer}");
    assert!(
        failed[1]["00081155"]["Value"][0].is_string(),
        "the malformed object is named: {answer}"
    );
}
