//! Per-exam billing (issue 17 §4): a scripted month of activity for two tenants — a PET/CT,
//! a CT of two images re-sent, an MR deleted after the grace period, a CT deleted within it —
//! whose bill equals the table worked out by hand below, and stays the same after a restart
//! and after deleting studies.

use std::path::Path;

use pacs_testkit::server::{describe, modality_image, pynetdicom, repo_root, ServerOptions, TestServer};

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_openpacs"))
}

const TARIFFS: &str = "[billing]\n\
    currency = \"EUR\"\n\
    exam_price = 1.0\n\
    grace_hours = 0.001\n\
    modality_precedence = [\"PT\", \"CT\", \"MR\"]\n\
    [billing.exam_prices]\n\
    CT = 2.15\n\
    PT = 10.0\n\
    MR = 5.5\n";

fn store(server: &TestServer, called: &str, files: &[&str]) {
    let port = server.dicom_port.to_string();
    let mut args = vec!["store", "--port", &port, "--aec", called];
    args.extend(files);
    let out = pynetdicom(&args);
    let results = out["results"].as_array().cloned().unwrap_or_default();
    assert!(
        results.len() == files.len() && results.iter().all(|r| r["status"] == 0),
        "{out}"
    );
}

/// One tenant's bill: its name, its exam lines (item, quantity, amount in cents), its total.
type TenantBill = (String, Vec<(String, f64, i64)>, i64);

/// The month's bill (the JSON text, and each tenant's exam lines and total).
fn bill(server: &TestServer, month: &str) -> (String, Vec<TenantBill>) {
    let text = server.cli_ok(&["billing", "--month", month, "--format", "json"]);
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let tenants = json
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let lines = t["lines"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|l| l["item"] != "storage GB-month")
                .map(|l| {
                    (
                        l["item"].as_str().unwrap().to_string(),
                        l["quantity"].as_f64().unwrap(),
                        l["amountCents"].as_i64().unwrap(),
                    )
                })
                .collect();
            (
                t["tenant"].as_str().unwrap().to_string(),
                lines,
                t["totalCents"].as_i64().unwrap(),
            )
        })
        .collect();
    (text, tenants)
}

/// Deletes a study through the REST API with an administrator's token.
fn delete(server: &TestServer, token: &str, study: &str) {
    let (status, _, _) = server.http_request(
        "DELETE",
        &format!("/api/studies/{study}"),
        &[("Authorization", token)],
        &[],
    );
    assert!(status == 200 || status == 204, "delete {study}: {status}");
}

#[test]
fn a_month_of_activity_is_billed_per_exam_as_worked_out_by_hand() {
    let mut server = TestServer::start(
        binary(),
        ServerOptions {
            extra_toml: TARIFFS.into(),
            ..ServerOptions::default()
        },
    );
    server.cli_ok(&["tenant", "add", "hopa", "--ae", "HOPA"]);
    server.cli_ok(&["tenant", "add", "hopb", "--ae", "HOPB"]);
    let admin = server.add_user("alice", "hopa", "admin", "a-long-secret-pw");
    assert!(admin.status.success(), "{}", describe(&admin));
    let token = format!(
        "Bearer {}",
        server
            .cli_ok(&["user", "token", "alice", "--tenant", "hopa"])
            .trim()
    );
    server.wait_for_tenants();
    let dir = server.work_dir.clone();
    let image = |name: &str, study: &str, modality: &str| {
        modality_image(&dir, name, &[("StudyInstanceUID", study), ("Modality", modality)])
    };
    let fixture = repo_root()
        .join("tests/fixtures/valid/ct_explicit_le.dcm")
        .display()
        .to_string();
    let pet_ct = "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322";
    let (ct, mr, mistake, other) = ("2.25.1001", "2.25.1002", "2.25.1003", "2.25.1004");
    // Montélimar-like tenant A: a PET/CT (its CT series is the fixture's), a CT of two images
    // re-sent once, an MR, and a CT sent by mistake and deleted at once.
    let pt = image("pt.dcm", pet_ct, "PT");
    store(&server, "HOPA", &[&fixture, &pt]);
    let (ct1, ct2) = (image("ct1.dcm", ct, "CT"), image("ct2.dcm", ct, "CT"));
    store(&server, "HOPA", &[&ct1, &ct2]);
    store(&server, "HOPA", &[&ct1]);
    store(&server, "HOPA", &[&image("mr.dcm", mr, "MR")]);
    store(&server, "HOPA", &[&image("mistake.dcm", mistake, "CT")]);
    delete(&server, &token, mistake);
    // Tenant B: one CT.
    store(&server, "HOPB", &[&image("other.dcm", other, "CT")]);
    // The MR is deleted once the grace period (3.6 s) is over: it stays billed.
    std::thread::sleep(std::time::Duration::from_millis(4000));
    delete(&server, &token, mr);

    let listed: serde_json::Value =
        serde_json::from_str(&server.cli_ok(&["tenant", "list", "--format", "json"])).unwrap();
    let month = listed[1]["createdAt"].as_str().unwrap()[..7].to_string();
    let (text, tenants) = bill(&server, &month);
    let line = |item: &str, quantity: f64, cents: i64| (item.to_string(), quantity, cents);
    // Worked out by hand: A's PET/CT is a PT exam (10.00), its CT one CT exam (2.15, the
    // re-send adds nothing), its MR 5.50; the mistake is not billed. B: one CT.
    assert_eq!(
        tenants,
        [
            ("default".to_string(), vec![], 0),
            (
                "hopa".to_string(),
                vec![
                    line("exam CT", 1.0, 215),
                    line("exam MR", 1.0, 550),
                    line("exam PT", 1.0, 1000)
                ],
                1765
            ),
            ("hopb".to_string(), vec![line("exam CT", 1.0, 215)], 215),
        ],
        "{text}"
    );
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json[1]["objectsStored"], 6, "the re-send is not counted: {text}");
    assert_eq!(json[1]["examsNotBilled"], 1, "{text}");
    // The same bill after a restart; and after deleting the billed studies, the same exams
    // (the storage held changes while the month is open: a closed month's does not, see
    // pacs_store::billing's tests).
    assert!(server.stop().success());
    server.restart();
    assert_eq!(bill(&server, &month).0, text);
    delete(&server, &token, ct);
    delete(&server, &token, pet_ct);
    assert_eq!(bill(&server, &month).1, tenants);
    // The other formats say the same.
    let csv = server.cli_ok(&[
        "billing", "--month", &month, "--tenant", "hopa", "--format", "csv",
    ]);
    assert!(
        csv.starts_with("tenant,month,item,quantity,unit_price,amount,currency\n"),
        "{csv}"
    );
    assert!(
        csv.contains(&format!("hopa,{month},exam PT,1,10,10.00,EUR")),
        "{csv}"
    );
    let table = server.cli_ok(&["billing", "--month", &month, "--tenant", "hopb"]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("hopb") && l.contains("total") && l.ends_with("2.15")),
        "{table}"
    );
    let bad = server.cli(&["billing", "--month", "2026-13"]);
    assert!(describe(&bad).contains("YYYY-MM"), "{}", describe(&bad));
}
