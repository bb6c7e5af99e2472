//! The third-party fixture corpus through pynetdicom: every valid file is stored and comes back
//! byte for byte; every malformed one is refused with a clear status; the server stays up.

use std::collections::BTreeMap;
use std::path::Path;

use pacs_testkit::server::{
    multipart_parts, part10_dataset_offset, pynetdicom, repo_root, ServerOptions, TestServer,
};

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_openpacs"))
}

fn manifest() -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(repo_root().join("tests/fixtures/manifest.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn port(server: &TestServer) -> String {
    server.dicom_port.to_string()
}

fn statuses(result: &serde_json::Value) -> BTreeMap<String, (Option<u64>, String)> {
    result["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| {
            let file = Path::new(r["file"].as_str().unwrap())
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            (
                file,
                (
                    r["status"].as_u64(),
                    r["error_comment"].as_str().unwrap_or("").to_string(),
                ),
            )
        })
        .collect()
}

/// Stores every valid fixture with pynetdicom (bytes as they are) and checks each got success.
fn store_valid_fixtures(server: &TestServer) -> Vec<serde_json::Value> {
    let valid: Vec<_> = manifest().into_iter().filter(|f| f["valid"] == true).collect();
    let files: Vec<String> = valid
        .iter()
        .map(|f| {
            repo_root()
                .join("tests/fixtures")
                .join(f["path"].as_str().unwrap())
                .display()
                .to_string()
        })
        .collect();
    let p = port(server);
    let mut args = vec!["store", "--port", &p];
    args.extend(files.iter().map(String::as_str));
    for (file, (status, comment)) in statuses(&pynetdicom(&args)) {
        assert_eq!(
            status,
            Some(0),
            "{file} was not stored: {comment}\n{}",
            server.log()
        );
    }
    valid
}

/// A StudyInstanceUID key listing every study of `entries` (a UID list match).
fn every_study_key(entries: &[serde_json::Value]) -> String {
    let mut studies: Vec<&str> = entries
        .iter()
        .map(|f| f["study_instance_uid"].as_str().unwrap())
        .collect();
    studies.sort();
    studies.dedup();
    format!("StudyInstanceUID={}", studies.join("\\"))
}

/// SHA-256 of a fixture's data set as it must come back: odd-length (deflated, unpadded)
/// streams get the single trailing NUL of PS3.5 §A.5.
fn expected_sha(entry: &serde_json::Value) -> String {
    use sha2::{Digest, Sha256};
    let bytes = std::fs::read(
        repo_root()
            .join("tests/fixtures")
            .join(entry["path"].as_str().unwrap()),
    )
    .unwrap();
    let offset = entry["dataset_offset"].as_u64().unwrap() as usize;
    let mut dataset = bytes[offset..].to_vec();
    if dataset.len() % 2 == 1 {
        dataset.push(0);
    } else {
        assert_eq!(
            hex::encode(Sha256::digest(&dataset)),
            entry["dataset_sha256"].as_str().unwrap()
        );
    }
    hex::encode(Sha256::digest(&dataset))
}

#[test]
fn every_valid_fixture_is_stored_and_retrieved_byte_for_byte() {
    let server = TestServer::start(binary(), ServerOptions::default());
    let valid = store_valid_fixtures(&server);
    let p = port(&server);

    // One C-GET for every study, the study UIDs as a UID list.
    let key = every_study_key(&valid);
    let manifest_path = repo_root()
        .join("tests/fixtures/manifest.json")
        .display()
        .to_string();
    let got = pynetdicom(&[
        "get",
        "--port",
        &p,
        "--model",
        "study",
        "--level",
        "STUDY",
        "-k",
        &key,
        "--contexts-from-manifest",
        &manifest_path,
    ]);
    assert_eq!(got["status"], 0, "{got}");
    assert_eq!(got["completed"].as_u64(), Some(valid.len() as u64), "{got}");
    assert_eq!(got["failed"].as_u64(), Some(0), "{got}");
    for entry in &valid {
        let uid = entry["sop_instance_uid"].as_str().unwrap();
        let received = &got["instances"][uid];
        assert_eq!(
            received["sha256"].as_str(),
            Some(expected_sha(entry).as_str()),
            "{} came back different ({received})",
            entry["path"]
        );
        assert_eq!(
            received["transfer_syntax"], entry["transfer_syntax_uid"],
            "{}",
            entry["path"]
        );
    }
}

#[test]
fn malformed_objects_are_refused_and_the_server_keeps_serving() {
    let mut server = TestServer::start(binary(), ServerOptions::default());
    let dir = repo_root().join("tests/fixtures/malformed");
    let p = port(&server);
    let files: Vec<String> = ["truncated.dcm", "bad_vr.dcm", "missing_uids.dcm"]
        .iter()
        .map(|f| dir.join(f).display().to_string())
        .collect();
    let mut args = vec!["store", "--port", &p];
    args.extend(files.iter().map(String::as_str));
    let result = statuses(&pynetdicom(&args));
    let (status, comment) = &result["truncated.dcm"];
    assert_eq!(*status, Some(0xC000), "{comment}");
    assert!(
        comment.contains("declares") || comment.contains("cannot parse"),
        "{comment}"
    );
    let (status, comment) = &result["bad_vr.dcm"];
    assert_eq!(*status, Some(0xC000), "{comment}");
    assert!(
        comment.contains("declares") || comment.contains("cannot parse"),
        "{comment}"
    );
    let (status, comment) = &result["missing_uids.dcm"];
    assert_eq!(*status, Some(0xA900), "{comment}");
    assert!(comment.contains("StudyInstanceUID"), "{comment}");

    assert!(server.is_running());
    // bad_vr.dcm declares a ~900 MB element in 4 KB: refused before anything that size is
    // allocated (regression: the parser used to allocate the declared length).
    let peak_kb = server.peak_rss_kib();
    assert!(
        peak_kb < 200 * 1024,
        "peak RSS {peak_kb} kB after malformed objects"
    );
    assert_eq!(pynetdicom(&["echo", "--port", &p])["status"], 0);
    let found = pynetdicom(&["find", "--port", &p, "--level", "IMAGE", "-k", "SOPInstanceUID="]);
    assert_eq!(
        found["matches"].as_array().map(Vec::len),
        Some(0),
        "nothing refused is indexed: {found}"
    );
    let leftovers: Vec<_> = std::fs::read_dir(server.data_dir.join("tmp")).unwrap().collect();
    assert!(leftovers.is_empty(), "no temporary file left: {leftovers:?}");
    assert!(server.stop().success());
}

#[test]
fn find_matching_rules_and_cancel_with_pynetdicom() {
    let server = TestServer::start(binary(), ServerOptions::default());
    let p = port(&server);
    let fixtures = repo_root().join("tests/fixtures/valid");
    let files: Vec<String> = std::fs::read_dir(&fixtures)
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .collect();
    let mut args = vec!["store", "--port", &p];
    args.extend(files.iter().map(String::as_str));
    pynetdicom(&args);

    let find = |keys: &[&str]| {
        let mut args = vec![
            "find",
            "--port",
            p.as_str(),
            "--level",
            "STUDY",
            "--charset",
            "ISO_IR 192",
        ];
        for k in keys {
            args.push("-k");
            args.push(k);
        }
        pynetdicom(&args)
    };
    let names = |r: &serde_json::Value| -> Vec<String> {
        r["matches"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["PatientName"].as_str().unwrap_or("").to_string())
            .collect()
    };

    // Case- and accent-insensitive person names, answered in UTF-8.
    let r = find(&["PatientName=BUC^JEROME", "StudyInstanceUID="]);
    assert_eq!(names(&r), vec!["Buc^Jérôme".to_string()], "{r}");
    assert!(
        r["specific_character_set"].to_string().contains("ISO_IR 192"),
        "{r}"
    );
    let r = find(&["PatientName=äneas*", "StudyInstanceUID="]);
    assert_eq!(names(&r), vec!["Äneas^Rüdiger".to_string()], "{r}");
    let r = find(&["PatientName=?neas^R?diger", "StudyInstanceUID="]);
    assert_eq!(names(&r).len(), 1, "{r}");

    // Date ranges, open and closed, combined with a modality.
    let all = find(&["StudyDate=", "StudyInstanceUID="]);
    let dates: Vec<String> = all["matches"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["StudyDate"].as_str().map(str::to_string))
        .filter(|d| !d.is_empty())
        .collect();
    assert!(dates.len() > 3, "{all}");
    let mut sorted = dates.clone();
    sorted.sort();
    let pivot = &sorted[sorted.len() / 2];
    let before = find(&[&format!("StudyDate=-{pivot}"), "StudyInstanceUID="]);
    let after = find(&[&format!("StudyDate={pivot}-"), "StudyInstanceUID="]);
    let at = find(&[&format!("StudyDate={pivot}"), "StudyInstanceUID="]);
    let n = |r: &serde_json::Value| r["matches"].as_array().unwrap().len();
    assert_eq!(
        n(&before),
        sorted.iter().filter(|d| *d <= pivot).count(),
        "{before}"
    );
    assert_eq!(
        n(&after),
        sorted.iter().filter(|d| *d >= pivot).count(),
        "{after}"
    );
    assert_eq!(n(&at), sorted.iter().filter(|d| *d == pivot).count(), "{at}");
    let ct = find(&[
        "ModalitiesInStudy=CT",
        "StudyInstanceUID=",
        &format!("StudyDate=19000101-{}", sorted.last().unwrap()),
    ]);
    assert!(
        ct["matches"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["ModalitiesInStudy"].as_str().unwrap_or("").contains("CT")),
        "{ct}"
    );
    assert!(n(&ct) >= 2, "{ct}");

    // A list of modalities matches studies with any of them.
    let ct_or_mr = find(&["ModalitiesInStudy=CT\\MR", "StudyInstanceUID="]);
    let only_ct = find(&["ModalitiesInStudy=CT", "StudyInstanceUID="]);
    let only_mr = find(&["ModalitiesInStudy=MR", "StudyInstanceUID="]);
    assert!(n(&only_ct) > 0 && n(&only_mr) > 0, "{only_ct} {only_mr}");
    assert_eq!(n(&ct_or_mr), n(&only_ct) + n(&only_mr), "{ct_or_mr}");

    // Only the requested keys plus the required ones come back.
    let r = find(&["PatientID=98890234", "StudyInstanceUID="]);
    for m in r["matches"].as_array().unwrap() {
        let mut keys: Vec<&str> = m.as_object().unwrap().keys().map(String::as_str).collect();
        keys.retain(|k| *k != "SpecificCharacterSet");
        keys.sort();
        assert_eq!(
            keys,
            vec!["PatientID", "QueryRetrieveLevel", "StudyInstanceUID"],
            "{m}"
        );
    }
    assert_eq!(n(&r), 2, "two studies for that patient: {r}");

    // A key the index has no column for is answered from the stored header.
    let r = find(&["PatientID=98890234", "StudyInstanceUID=", "InstitutionName="]);
    assert_eq!(n(&r), 2, "{r}");

    // Patient level with computed counts (Patient Root).
    let r = pynetdicom(&[
        "find",
        "--port",
        &p,
        "--model",
        "patient",
        "--level",
        "PATIENT",
        "-k",
        "PatientID=98890234",
        "-k",
        "NumberOfPatientRelatedStudies=",
        "-k",
        "NumberOfPatientRelatedInstances=",
    ]);
    assert_eq!(r["matches"][0]["NumberOfPatientRelatedStudies"], "2", "{r}");
    assert_eq!(r["matches"][0]["NumberOfPatientRelatedInstances"], "3", "{r}");

    // C-CANCEL before the first match: cancel status, no match.
    let r = pynetdicom(&[
        "find",
        "--port",
        &p,
        "--level",
        "IMAGE",
        "-k",
        "SOPInstanceUID=",
        "--cancel-after",
        "0",
    ]);
    assert_eq!(r["status"], 0xFE00, "{r}");
}

/// SHA-256 of the data set of Part 10 bytes as received.
fn received_sha(part10: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let offset = part10_dataset_offset(part10).expect("a Part 10 object");
    hex::encode(Sha256::digest(&part10[offset..]))
}

/// The HTTP retrieval paths send the stored bytes when no conversion is asked for: WADO-RS
/// with `transfer-syntax=*`, WADO-URI in the stored syntax (its default), and the study ZIP.
/// (C-GET and C-MOVE are checked by the tests around this one.)
#[test]
fn every_valid_fixture_comes_back_byte_for_byte_over_wado_rs_wado_uri_and_zip() {
    let server = TestServer::start(binary(), ServerOptions::default());
    let valid = store_valid_fixtures(&server);
    let accept = "multipart/related; type=\"application/dicom\"; transfer-syntax=*";
    let dir = tempfile::tempdir().unwrap();
    let mut studies: BTreeMap<&str, Vec<&serde_json::Value>> = BTreeMap::new();
    for entry in &valid {
        studies
            .entry(entry["study_instance_uid"].as_str().unwrap())
            .or_default()
            .push(entry);
    }
    for (study, entries) in &studies {
        let (status, head, body) =
            server.http_bytes(&format!("/dicom-web/studies/{study}"), &[("Accept", accept)]);
        assert_eq!(status, 200, "{study}: {head}");
        let content_type = head
            .lines()
            .find_map(|l| {
                l.split_once(':')
                    .filter(|(k, _)| k.eq_ignore_ascii_case("content-type"))
            })
            .map(|(_, v)| v.trim().to_string())
            .unwrap();
        let by_sha: Vec<String> = multipart_parts(&content_type, &body)
            .iter()
            .map(|(_, part)| received_sha(part))
            .collect();
        let (status, _, zip) = server.http_bytes(&format!("/api/studies/{study}/archive"), &[]);
        assert_eq!(status, 200, "{study}");
        let zip_path = dir.path().join("study.zip");
        std::fs::write(&zip_path, zip).unwrap();
        // Python's zipfile, not ours: the SHA-256 of each member's data set.
        let listed = std::process::Command::new("python3")
            .args([
                "-c",
                "import sys, zipfile, hashlib\n\
                 z = zipfile.ZipFile(sys.argv[1])\n\
                 for n in z.namelist():\n\
                 \x20   b = z.read(n)\n\
                 \x20   off = 144 + int.from_bytes(b[140:144], 'little')\n\
                 \x20   print(hashlib.sha256(b[off:]).hexdigest())",
            ])
            .arg(&zip_path)
            .output()
            .unwrap();
        assert!(
            listed.status.success(),
            "{}",
            String::from_utf8_lossy(&listed.stderr)
        );
        let zipped: Vec<String> = String::from_utf8_lossy(&listed.stdout)
            .lines()
            .map(String::from)
            .collect();
        for entry in entries {
            // Over HTTP a data set goes out as stored, odd length included: only DIMSE pads.
            let expected = entry["dataset_sha256"].as_str().unwrap().to_string();
            let path = entry["path"].as_str().unwrap();
            assert!(by_sha.contains(&expected), "WADO-RS changed {path}");
            assert!(zipped.contains(&expected), "the ZIP changed {path}");
            let (status, _, object) = server.http_bytes(
                &format!(
                    "/wado?requestType=WADO&studyUID={study}&seriesUID={}&objectUID={}&contentType=application/dicom",
                    entry["series_instance_uid"].as_str().unwrap(),
                    entry["sop_instance_uid"].as_str().unwrap()
                ),
                &[],
            );
            assert_eq!(status, 200, "{path}");
            assert_eq!(received_sha(&object), expected, "WADO-URI changed {path}");
        }
    }
}

#[test]
fn pynetdicom_move_delivers_every_fixture_in_its_stored_syntax() {
    let dest = pacs_testkit::server::free_port();
    let server = TestServer::start(binary(), ServerOptions::with_peer("PEERPY", dest));
    let p = port(&server);
    let valid = store_valid_fixtures(&server);

    let key = every_study_key(&valid);
    let dest_port = dest.to_string();
    let moved = pynetdicom(&[
        "move",
        "--port",
        &p,
        "--dest",
        "PEERPY",
        "--listen",
        &dest_port,
        "--listen-addr",
        "127.0.0.1",
        "--level",
        "STUDY",
        "-k",
        &key,
    ]);
    assert_eq!(moved["status"], 0, "{moved}");
    assert_eq!(moved["completed"].as_u64(), Some(valid.len() as u64), "{moved}");
    for entry in &valid {
        let received = &moved["instances"][entry["sop_instance_uid"].as_str().unwrap()];
        assert_eq!(
            received["sha256"].as_str(),
            Some(expected_sha(entry).as_str()),
            "{}: {received}",
            entry["path"]
        );
        assert_eq!(
            received["transfer_syntax"], entry["transfer_syntax_uid"],
            "{}",
            entry["path"]
        );
    }
}

/// A Part 10 file around `dataset` (explicit VR little endian), with a fresh SOP Instance UID.
fn part10(dataset: &[u8], sop_instance_uid: &str) -> Vec<u8> {
    fn element(out: &mut Vec<u8>, element: u16, vr: &[u8; 2], value: &[u8]) {
        let mut value = value.to_vec();
        if value.len() % 2 == 1 {
            value.push(0);
        }
        out.extend_from_slice(&[0x02, 0x00]);
        out.extend_from_slice(&element.to_le_bytes());
        out.extend_from_slice(vr);
        if vr == b"OB" {
            out.extend_from_slice(&[0, 0]);
            out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        } else {
            out.extend_from_slice(&(value.len() as u16).to_le_bytes());
        }
        out.extend_from_slice(&value);
    }
    let mut group = Vec::new();
    element(&mut group, 0x0001, b"OB", &[0, 1]);
    element(&mut group, 0x0002, b"UI", b"1.2.840.10008.5.1.4.1.1.7");
    element(&mut group, 0x0003, b"UI", sop_instance_uid.as_bytes());
    element(&mut group, 0x0010, b"UI", b"1.2.840.10008.1.2.1");
    let mut out = vec![0u8; 128];
    out.extend_from_slice(b"DICM");
    out.extend_from_slice(&[0x02, 0x00, 0x00, 0x00, b'U', b'L', 4, 0]);
    out.extend_from_slice(&(group.len() as u32).to_le_bytes());
    out.extend_from_slice(&group);
    out.extend_from_slice(dataset);
    out
}

#[test]
fn hostile_data_sets_are_refused_without_exhausting_the_server() {
    let mut server = TestServer::start(binary(), ServerOptions::default());
    let dir = tempfile::tempdir().unwrap();
    // 12 bytes whose unknown VR hides a 4 GB length (the parser used to reserve 3.9 GB).
    let lying = part10(
        &[
            0x09, 0x00, 0x10, 0x00, b'Z', b'Z', 0x00, 0x00, 0x00, 0x00, 0x00, 0xF0,
        ],
        "2.25.901",
    );
    // 5,000 nested sequences (the parser used to overflow its stack and abort the process).
    let mut nested = Vec::new();
    for _ in 0..5000 {
        nested.extend_from_slice(&[0x08, 0, 0x40, 0x11, b'S', b'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF]);
        nested.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
    }
    let nested = part10(&nested, "2.25.902");
    let paths = [dir.path().join("lying.dcm"), dir.path().join("nested.dcm")];
    std::fs::write(&paths[0], lying).unwrap();
    std::fs::write(&paths[1], nested).unwrap();
    let p = port(&server);
    let files: Vec<String> = paths.iter().map(|f| f.display().to_string()).collect();
    let mut args = vec!["store", "--port", &p];
    args.extend(files.iter().map(String::as_str));
    let result = statuses(&pynetdicom(&args));
    assert_eq!(result["lying.dcm"].0, Some(0xC000), "{:?}", result["lying.dcm"]);
    assert_eq!(result["nested.dcm"].0, Some(0xC000), "{:?}", result["nested.dcm"]);
    assert!(
        result["nested.dcm"].1.contains("nested deeper"),
        "{:?}",
        result["nested.dcm"]
    );
    assert!(server.is_running(), "{}", server.log());
    let peak_kb = server.peak_rss_kib();
    assert!(peak_kb < 200 * 1024, "peak RSS {peak_kb} kB");
    assert_eq!(pynetdicom(&["echo", "--port", &p])["status"], 0);
    assert!(server.stop().success());
}
