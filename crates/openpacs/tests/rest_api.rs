//! The REST API under /api: searches, statistics, the study ZIP (checked with Python's
//! zipfile), deletion (admin only, audited, files removed) and the OpenAPI document.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use base64::Engine;
use pacs_testkit::server::{dataset_sha256, valid_fixtures, ServerOptions, TestServer};

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_openpacs"))
}

fn basic(user: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{user}-password"));
    format!("Basic {encoded}")
}

struct Client<'a> {
    server: &'a TestServer,
    auth: String,
}

impl Client<'_> {
    fn request(&self, method: &str, path: &str) -> (u16, Vec<u8>) {
        let (status, _, body) = self
            .server
            .http_request(method, path, &[("Authorization", &self.auth)], b"");
        (status, body)
    }

    fn json(&self, path: &str) -> serde_json::Value {
        let (status, body) = self.request("GET", path);
        assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
        serde_json::from_slice(&body).unwrap()
    }
}

fn blob_files(server: &TestServer) -> usize {
    walkdir_count(&server.data_dir.join("blobs"))
}

fn walkdir_count(dir: &Path) -> usize {
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            n += walkdir_count(&entry.path());
        } else {
            n += 1;
        }
    }
    n
}

#[test]
fn rest_api_searches_counts_downloads_and_deletes() {
    let server = TestServer::start(
        binary(),
        ServerOptions {
            users: ["admin", "reader"]
                .iter()
                .map(|u| (u.to_string(), u.to_string(), format!("{u}-password")))
                .collect(),
            ..ServerOptions::default()
        },
    );
    let fixtures = valid_fixtures();
    server.store_fixtures(fixtures.iter());
    let reader = Client {
        server: &server,
        auth: basic("reader"),
    };
    let admin = Client {
        server: &server,
        auth: basic("admin"),
    };

    // Searches go through the C-FIND matching engine.
    let found = reader.json("/api/studies?PatientID=98890234&ModalitiesInStudy=CT");
    let items = found["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{found}");
    let ct_study = items[0]["StudyInstanceUID"].as_str().unwrap().to_string();
    assert_eq!(items[0]["NumberOfStudyRelatedInstances"], 2);
    assert_eq!(items[0]["ModalitiesInStudy"], serde_json::json!(["CT"]));
    let studies: BTreeSet<&str> = fixtures
        .iter()
        .map(|f| f["study_instance_uid"].as_str().unwrap())
        .collect();
    let all = reader.json("/api/studies?limit=1000");
    assert_eq!(all["items"].as_array().unwrap().len(), studies.len());
    assert_eq!(all["more"], false);
    let first = reader.json("/api/studies?limit=10");
    assert_eq!(first["items"].as_array().unwrap().len(), 10);
    assert_eq!(first["more"], true);
    let rest = reader.json("/api/studies?limit=1000&offset=10");
    assert_eq!(rest["items"].as_array().unwrap().len(), studies.len() - 10);
    // Sorted by the server, across pages: newest first, then by name (case-insensitive).
    let keyed = |page: &serde_json::Value, key: &str| -> Vec<String> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| match &s[key] {
                serde_json::Value::String(v) => v.clone(),
                other => other.as_str().unwrap_or_default().to_string(),
            })
            .collect()
    };
    let newest = reader.json("/api/studies?limit=1000&sort=-StudyDate,-StudyTime");
    let dates = keyed(&newest, "StudyDate");
    assert_eq!(dates.len(), studies.len());
    let mut descending = dates.clone();
    descending.sort_by(|a, b| b.cmp(a));
    assert_eq!(dates, descending, "{newest}");
    assert_ne!(dates.first(), dates.last(), "the fixtures have several dates");
    let paged: Vec<String> = (0..studies.len())
        .step_by(5)
        .flat_map(|offset| {
            keyed(
                &reader.json(&format!(
                    "/api/studies?limit=5&offset={offset}&sort=-StudyDate,-StudyTime"
                )),
                "StudyInstanceUID",
            )
        })
        .collect();
    assert_eq!(
        paged,
        keyed(&newest, "StudyInstanceUID"),
        "pages follow the order"
    );
    let by_name = reader.json("/api/patients?limit=1000&sort=PatientName");
    let names: Vec<String> = by_name["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| pacs_model::fold_person_name(p["PatientName"].as_str().unwrap_or_default()))
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "names in their case- and accent-folded order");
    assert!(names.len() > 10, "{names:?}");
    assert_eq!(
        reader.request("GET", "/api/studies?sort=ModalitiesInStudy").0,
        400
    );
    assert_eq!(reader.request("GET", "/api/studies?sort=Modality").0, 400);
    assert_eq!(reader.request("GET", "/api/studies?sort=NoSuchAttribute").0, 400);
    let wildcard = reader.json("/api/patients?PatientID=9889*");
    assert_eq!(wildcard["items"][0]["PatientID"], "98890234", "{wildcard}");
    let series = reader.json(&format!("/api/studies/{ct_study}/series"));
    let series_uid = series["items"][0]["SeriesInstanceUID"]
        .as_str()
        .unwrap()
        .to_string();
    let instances = reader.json(&format!("/api/studies/{ct_study}/series/{series_uid}/instances"));
    assert_eq!(instances["items"].as_array().unwrap().len(), 2);
    assert_eq!(
        reader.json(&format!("/api/studies/{ct_study}"))["PatientID"],
        "98890234"
    );
    assert_eq!(reader.request("GET", "/api/studies/1.2.3.404").0, 404);
    assert_eq!(reader.request("GET", "/api/studies?NoSuchAttribute=1").0, 400);
    assert_eq!(reader.request("GET", "/api/studies?limit=many").0, 400);

    // Statistics.
    let stats = reader.json("/api/stats");
    assert_eq!(stats["instances"], fixtures.len());
    assert_eq!(stats["studies"], studies.len());
    let ct = stats["modalities"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["modality"] == "CT")
        .cloned()
        .unwrap();
    assert_eq!(ct["instances"], 3, "{stats}");
    assert!(stats["bytes"].as_i64().unwrap() > 0);

    // The study ZIP, opened with Python's zipfile: every entry intact, the objects as stored.
    let (status, zip) = reader.request("GET", &format!("/api/studies/{ct_study}/archive"));
    assert_eq!(status, 200);
    let dir = tempfile::tempdir().unwrap();
    let zip_path = dir.path().join("study.zip");
    std::fs::write(&zip_path, &zip).unwrap();
    let out_dir = dir.path().join("out");
    let unzip = Command::new("python3")
        .args([
            "-c",
            "import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); assert z.testzip() is None; \
             z.extractall(sys.argv[2]); print('\\n'.join(z.namelist()))",
        ])
        .arg(&zip_path)
        .arg(&out_dir)
        .output()
        .unwrap();
    assert!(
        unzip.status.success(),
        "{}",
        String::from_utf8_lossy(&unzip.stderr)
    );
    let names = String::from_utf8_lossy(&unzip.stdout).into_owned();
    assert_eq!(names.lines().count(), 2, "{names}");
    assert!(
        names.lines().all(|n| !n.contains("..") && n.ends_with(".dcm")),
        "{names}"
    );
    let extracted: BTreeSet<String> = names.lines().map(|n| dataset_sha256(&out_dir.join(n))).collect();
    let expected: BTreeSet<String> = fixtures
        .iter()
        .filter(|f| f["study_instance_uid"] == ct_study.as_str())
        .map(|f| f["dataset_sha256"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(extracted, expected);
    assert_eq!(reader.request("GET", "/api/studies/1.2.3.404/archive").0, 404);

    // Deletion: admin only, audited, files gone, counts follow.
    let one = &instances["items"][0]["SOPInstanceUID"]
        .as_str()
        .unwrap()
        .to_string();
    let instance_path = format!("/api/studies/{ct_study}/series/{series_uid}/instances/{one}");
    assert_eq!(reader.request("DELETE", &instance_path).0, 403);
    let files_before = blob_files(&server);
    let (status, body) = admin.request("DELETE", &instance_path);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let deleted: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(deleted["deletedInstances"], 1);
    assert_eq!(blob_files(&server), files_before - 1);
    assert_eq!(admin.request("DELETE", &instance_path).0, 404);
    assert_eq!(
        reader.json(&format!("/api/studies/{ct_study}"))["NumberOfStudyRelatedInstances"],
        1
    );
    let (status, _, _) = server.http_bytes(
        &format!("/dicom-web/studies/{ct_study}/series/{series_uid}/instances/{one}"),
        &[("Authorization", &reader.auth)],
    );
    assert_eq!(status, 404);
    let (status, _) = admin.request("DELETE", &format!("/api/studies/{ct_study}"));
    assert_eq!(status, 200);
    assert_eq!(reader.request("GET", &format!("/api/studies/{ct_study}")).0, 404);
    assert_eq!(reader.json("/api/stats")["instances"], fixtures.len() - 2);
    // The patient keeps their other (MR) study.
    let patient = reader.json("/api/patients?PatientID=98890234");
    assert_eq!(
        patient["items"][0]["NumberOfPatientRelatedStudies"], 1,
        "{patient}"
    );

    // The same objects can be stored again afterwards, and read back.
    server.store_fixtures(
        fixtures
            .iter()
            .filter(|f| f["study_instance_uid"] == ct_study.as_str()),
    );
    assert_eq!(
        reader.json(&format!("/api/studies/{ct_study}"))["NumberOfStudyRelatedInstances"],
        2
    );
    let (status, _, _) = server.http_bytes(
        &format!("/dicom-web/studies/{ct_study}/series/{series_uid}/instances/{one}"),
        &[("Authorization", &reader.auth)],
    );
    assert_eq!(status, 200);
    let verify = server.cli(&["verify"]);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );

    // The audit log names the administrator, through the API and the CLI alike.
    let audit = admin.json("/api/audit?limit=1000");
    let deletes: Vec<&serde_json::Value> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["event"] == "delete")
        .collect();
    assert_eq!(deletes.len(), 2, "{audit}");
    assert!(deletes.iter().all(|r| r["actor"] == "http:admin"));
    assert_eq!(reader.request("GET", "/api/audit").0, 403);
    let users = admin.json("/api/users");
    assert_eq!(users.as_array().unwrap().len(), 2);
    assert!(!users.to_string().contains("argon2"));

    // The OpenAPI document names every route of the API.
    let (status, _, body) = server.http_bytes("/api/openapi.json", &[]);
    assert_eq!(status, 200);
    let openapi: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(openapi["openapi"], "3.0.3");
    for path in [
        "/api/login",
        "/api/studies",
        "/api/studies/{study}",
        "/api/studies/{study}/archive",
        "/api/studies/{study}/series/{series}/instances/{instance}",
        "/api/stats",
        "/api/audit",
    ] {
        assert!(openapi["paths"][path].is_object(), "{path} missing");
    }
}

#[test]
fn numbers_kept_as_text_sort_as_numbers() {
    let server = TestServer::start(
        binary(),
        ServerOptions {
            users: vec![("reader".into(), "reader".into(), "reader-password".into())],
            ..ServerOptions::default()
        },
    );
    let reader = Client {
        server: &server,
        auth: basic("reader"),
    };
    // Series 2 before series 10.
    let generated = tempfile::tempdir().unwrap();
    let mut spec = pacs_testkit::StudySpec::ct(77, 1);
    spec.series = 11;
    spec.rows = 16;
    spec.columns = 16;
    let files = pacs_testkit::write_study(&spec, generated.path()).unwrap();
    let stored = pacs_testkit::server::dcmtk("storescu")
        .args([
            "-aec",
            &server.ae_title,
            "127.0.0.1",
            &server.dicom_port.to_string(),
            "+sd",
        ])
        .arg(generated.path())
        .output()
        .unwrap();
    assert!(
        stored.status.success(),
        "{}",
        String::from_utf8_lossy(&stored.stderr)
    );
    let study = &files[0].study_instance_uid;
    let numbers = |sort: &str| -> Vec<i64> {
        reader.json(&format!("/api/studies/{study}/series?sort={sort}"))["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["SeriesNumber"].as_i64().expect("SeriesNumber as a number"))
            .collect()
    };
    let ascending = numbers("SeriesNumber");
    assert_eq!(ascending.len(), 11);
    assert!(ascending.windows(2).all(|w| w[0] < w[1]), "{ascending:?}");
    let descending = numbers("-SeriesNumber");
    assert!(descending.windows(2).all(|w| w[0] > w[1]), "{descending:?}");
}

/// Issue 15 §3: "elodie" found nothing, as names matched only from the start of the whole
/// value. With `fuzzymatching=true` (what the UI sends) each word typed matches the start of
/// any name component, or of a word inside one; without it, and in C-FIND, the standard's
/// whole-value matching stays.
#[test]
fn a_given_name_finds_the_patient_with_fuzzy_matching() {
    let server = TestServer::start(
        binary(),
        ServerOptions {
            users: vec![("reader".into(), "reader".into(), "reader-password".into())],
            ..ServerOptions::default()
        },
    );
    let reader = Client {
        server: &server,
        auth: basic("reader"),
    };
    let dir = tempfile::tempdir().unwrap();
    let names = [
        ("durand", "DURAND^ÉLODIE"),
        ("martin", "MARTIN^MARIE-ELODIE"),
        ("elodie-family", "ELODIE^PAUL"),
        ("belodie", "BELODIE^JEAN"),
    ];
    let mut files = Vec::new();
    let mut study_of = std::collections::BTreeMap::new();
    for (i, (key, name)) in names.iter().enumerate() {
        let study = format!("1.2.826.0.1.3680043.10.543.1515.{i}");
        files.push(pacs_testkit::server::modality_image(
            dir.path(),
            &format!("{key}.dcm"),
            &[
                ("PatientName", name),
                ("PatientID", &format!("PN15-{i}")),
                ("StudyInstanceUID", &study),
                ("SpecificCharacterSet", "ISO_IR 192"),
            ],
        ));
        study_of.insert(*key, study);
    }
    let port = server.dicom_port.to_string();
    let mut args = vec!["store", "--port", port.as_str()];
    args.extend(files.iter().map(String::as_str));
    let stored = pacs_testkit::server::pynetdicom(&args);
    assert!(
        stored["results"]
            .as_array()
            .is_some_and(|r| r.iter().all(|r| r["status"] == 0)),
        "{stored}"
    );
    let found = |path: &str| -> BTreeSet<String> {
        reader.json(path)["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["StudyInstanceUID"].as_str().unwrap().to_string())
            .collect()
    };
    let studies = |keys: &[&str]| -> BTreeSet<String> { keys.iter().map(|k| study_of[k].clone()).collect() };

    assert_eq!(
        found("/api/studies?PatientName=elodie&fuzzymatching=true"),
        studies(&["durand", "martin", "elodie-family"])
    );
    assert_eq!(
        found("/api/studies?PatientName=%C3%89lo%20dur&fuzzymatching=true"),
        studies(&["durand"])
    );
    // Wildcards still work: inside a word, or on the whole value when it has a '^'.
    assert_eq!(
        found("/api/studies?PatientName=*lodie&fuzzymatching=true"),
        studies(&["durand", "martin", "elodie-family", "belodie"])
    );
    assert_eq!(
        found("/api/studies?PatientName=durand%5Eel*&fuzzymatching=true"),
        studies(&["durand"])
    );
    // Without fuzzy matching: the whole value, as PS3.4 C.2.2.2.4 says.
    assert_eq!(found("/api/studies?PatientName=elodie"), BTreeSet::new());
    assert_eq!(
        found("/api/studies?PatientName=elodie*"),
        studies(&["elodie-family"])
    );
    assert_eq!(
        reader
            .request("GET", "/api/studies?PatientName=elodie&fuzzymatching=maybe")
            .0,
        400
    );

    // QIDO-RS: the same rule with fuzzymatching=true, the standard's without.
    let qido = |query: &str| -> (u16, BTreeSet<String>) {
        let (status, body) = reader.request("GET", &format!("/dicom-web/studies?{query}"));
        let uids = if status == 200 {
            serde_json::from_slice::<Vec<serde_json::Value>>(&body)
                .unwrap()
                .iter()
                .map(|s| s["0020000D"]["Value"][0].as_str().unwrap().to_string())
                .collect()
        } else {
            BTreeSet::new()
        };
        (status, uids)
    };
    assert_eq!(
        qido("PatientName=elodie&fuzzymatching=true"),
        (200, studies(&["durand", "martin", "elodie-family"]))
    );
    assert_eq!(qido("PatientName=elodie").1, BTreeSet::new());

    // C-FIND (pynetdicom): whole-value matching.
    let find = |name: &str| {
        let key = format!("PatientName={name}");
        let found = pacs_testkit::server::pynetdicom(&[
            "find",
            "--port",
            port.as_str(),
            "--level",
            "STUDY",
            "-k",
            key.as_str(),
            "-k",
            "StudyInstanceUID=",
        ]);
        assert_eq!(found["status"], 0, "{found}");
        found["matches"].as_array().map_or(0, Vec::len)
    };
    assert_eq!(find("elodie"), 0);
    assert_eq!(find("ELODIE*"), 1);
}
