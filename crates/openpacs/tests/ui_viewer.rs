//! The web UI's image viewer in headless Chromium (`tests/browser/viewer.mjs`), and the unit
//! tests of its pixel arithmetic and orientation markers under Node
//! (`tests/browser/viewer-image.test.mjs`, `viewer-orientation.test.mjs`).
//!
//! What the browser must show is computed here, from the DICOM files themselves: for known
//! pixels of every slice of a generated two-series CT, the grey level under the object's own
//! window and under a window this test chooses (modality LUT, then the LINEAR VOI of PS3.3
//! C.11.2.1.2.1); the first slice in reading order and the HU values around an ROI; the pixel
//! spacing for a length;
//! a MONOCHROME1 pixel (inverted); an RGB pixel of a planar-configuration file; the frame count
//! of a multi-frame JPEG for cine; the orientation markers at the four edges of every
//! viewport, from each file's Image Orientation (Patient) — axial, sagittal, coronal, a double
//! oblique — or Patient Orientation. The referrer's preview mode must never touch originals.
//!
//! `VIEWER_TEST_SLICES` (default 40) sets the CT series' length; the time from the click to
//! the first image is printed and kept in `target/browser-artifacts/viewer/summary.json` (it is
//! measured, not asserted: the machines are shared).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};

use dicom_dictionary_std::tags;
use dicom_object::DefaultDicomObject;
use pacs_testkit::server::{
    dcmtk, fixture_file, modality_image, pynetdicom, repo_root, run_browser_script, valid_fixtures,
    ServerOptions, TestServer,
};
use pacs_testkit::{write_study, StudySpec};
use serde_json::json;

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_openpacs"))
}

const ADMIN: (&str, &str) = ("vw-admin", "admin-secret-pw");
const REFERRER: (&str, &str) = ("vw-referrer", "referrer-secret-pw");

#[test]
fn viewer_pixel_arithmetic_unit_tests_pass_under_node() {
    let output = Command::new("node")
        .args(["--test", "viewer-image.test.mjs", "viewer-orientation.test.mjs"])
        .current_dir(repo_root().join("tests/browser"))
        .output()
        .expect("run node --test");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // The runner's own count: the tests ran, none was skipped.
    assert!(stdout.contains("# fail 0"), "{stdout}");
    assert!(!stdout.contains("# pass 0"), "{stdout}");
}

fn text(object: &DefaultDicomObject, tag: dicom_object::Tag) -> String {
    object
        .element(tag)
        .ok()
        .and_then(|e| e.to_str().ok().map(|s| s.trim().to_string()))
        .unwrap_or_default()
}

fn float(object: &DefaultDicomObject, tag: dicom_object::Tag) -> Option<f64> {
    object.element(tag).ok().and_then(|e| e.to_float64().ok())
}

fn uint(object: &DefaultDicomObject, tag: dicom_object::Tag) -> usize {
    object
        .element(tag)
        .ok()
        .and_then(|e| e.to_int::<u32>().ok())
        .expect("integer attribute") as usize
}

/// A single-sample native object's modality values (stored × slope + intercept), row by row.
fn modality_values(object: &DefaultDicomObject) -> Vec<f64> {
    assert_eq!(uint(object, tags::BITS_ALLOCATED), 16);
    let signed = uint(object, tags::PIXEL_REPRESENTATION) == 1;
    let slope = float(object, tags::RESCALE_SLOPE).unwrap_or(1.0);
    let intercept = float(object, tags::RESCALE_INTERCEPT).unwrap_or(0.0);
    let bytes = object.element(tags::PIXEL_DATA).unwrap().to_bytes().unwrap();
    bytes
        .chunks_exact(2)
        .map(|b| {
            let stored = if signed {
                f64::from(i16::from_le_bytes([b[0], b[1]]))
            } else {
                f64::from(u16::from_le_bytes([b[0], b[1]]))
            };
            stored * slope + intercept
        })
        .collect()
}

/// PS3.3 C.11.2.1.2.1 on 0..=255, rounded as a display would.
fn linear(center: f64, width: f64, x: f64) -> u8 {
    let y = if x <= center - 0.5 - (width - 1.0) / 2.0 {
        0.0
    } else if x > center - 0.5 + (width - 1.0) / 2.0 {
        255.0
    } else {
        ((x - (center - 0.5)) / (width - 1.0) + 0.5) * 255.0
    };
    y.round() as u8
}

/// The letters of a direction in patient coordinates (+x left, +y posterior, +z head: PS3.3
/// C.7.6.2.1.1): the largest component's first, then every other component of magnitude 0.25
/// or more (the rule the viewer states), largest first.
fn letters(v: [f64; 3]) -> String {
    let names = [('L', 'R'), ('P', 'A'), ('H', 'F')];
    let mut axes: Vec<usize> = vec![0, 1, 2];
    axes.sort_by(|&a, &b| v[b].abs().total_cmp(&v[a].abs()));
    axes.iter()
        .enumerate()
        .filter(|&(k, &axis)| k == 0 || v[axis].abs() >= 0.25)
        .map(|(_, &axis)| {
            if v[axis] > 0.0 {
                names[axis].0
            } else {
                names[axis].1
            }
        })
        .collect()
}

/// The markers a viewport must show at its left, right, top and bottom edges for an image
/// shown as stored: rows run to the right (the first three direction cosines), columns down.
fn markers_of(object: &DefaultDicomObject) -> serde_json::Value {
    let iop = object
        .element(tags::IMAGE_ORIENTATION_PATIENT)
        .ok()
        .and_then(|e| e.to_multi_float64().ok())
        .filter(|v| v.len() == 6);
    let [left, right, top, bottom] = match iop {
        Some(v) => {
            let row = [v[0], v[1], v[2]];
            let column = [v[3], v[4], v[5]];
            let minus = |d: [f64; 3]| d.map(|c| -c);
            [
                letters(minus(row)),
                letters(row),
                letters(minus(column)),
                letters(column),
            ]
        }
        None => {
            // Patient Orientation: the directions of the rows and of the columns, in letters.
            let po = text(object, tags::PATIENT_ORIENTATION);
            let (row, column) = po.split_once('\\').expect("Patient Orientation");
            let opposite = |s: &str| -> String {
                s.chars()
                    .map(|c| match c {
                        'L' => 'R',
                        'R' => 'L',
                        'A' => 'P',
                        'P' => 'A',
                        'H' => 'F',
                        _ => 'H',
                    })
                    .collect()
            };
            [
                opposite(row),
                row.to_string(),
                opposite(column),
                column.to_string(),
            ]
        }
    };
    json!({ "left": left, "right": right, "top": top, "bottom": bottom })
}

fn fixture(name: &str) -> serde_json::Value {
    valid_fixtures()
        .into_iter()
        .find(|f| f["path"] == format!("valid/{name}"))
        .unwrap_or_else(|| panic!("{name} not in the manifest"))
}

#[test]
fn viewer_shows_the_right_pixels_scrolls_measures_and_keeps_referrers_on_previews() {
    let users = [(ADMIN, "admin"), (REFERRER, "referrer")]
        .iter()
        .map(|((u, p), r)| (u.to_string(), r.to_string(), p.to_string()))
        .collect();
    let server = TestServer::start(
        binary(),
        ServerOptions {
            users,
            ..ServerOptions::default()
        },
    );

    // A generated CT study of two series, stored with DCMTK's storescu as a modality would.
    let slices: u32 = std::env::var("VIEWER_TEST_SLICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let dir = tempfile::tempdir().unwrap();
    let mut spec = StudySpec::ct(4242, slices);
    spec.series = 2;
    let files = write_study(&spec, dir.path()).expect("generate the CT study");
    let status = dcmtk("storescu")
        .args([
            "-aec",
            &server.ae_title,
            "127.0.0.1",
            &server.dicom_port.to_string(),
            "+sd",
        ])
        .arg(dir.path())
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "storescu of the generated study");
    let fixtures = [
        fixture("cr_explicit_le.dcm"),
        fixture("us_rgb_explicit_be.dcm"),
        fixture("us_multiframe_jpeg_baseline.dcm"),
    ];
    server.store_fixtures(fixtures.iter());

    // One study, one series per orientation: written by pydicom, stored with pynetdicom.
    let oriented_dir = tempfile::tempdir().unwrap();
    let oriented_study = "1.2.826.0.1.3680043.10.543.1520";
    let orientations = [
        ("axial", "1\\0\\0\\0\\1\\0", ""),
        ("sagittal", "0\\1\\0\\0\\0\\-1", ""),
        ("coronal", "1\\0\\0\\0\\0\\-1", ""),
        ("oblique", "0.866025\\0.5\\0\\-0.433013\\0.75\\-0.5", ""),
        ("projection", "", "A\\F"),
    ];
    let mut oriented = Vec::new();
    for (number, (name, iop, po)) in orientations.iter().enumerate() {
        let series_number = (number + 1).to_string();
        let file = modality_image(
            oriented_dir.path(),
            &format!("{name}.dcm"),
            &[
                ("StudyInstanceUID", oriented_study),
                ("SeriesNumber", &series_number),
                ("SeriesDescription", name),
                ("ImageOrientationPatient", iop),
                ("PatientOrientation", po),
            ],
        );
        let object = dicom_object::open_file(&file).unwrap();
        oriented.push(json!({
            "name": name,
            "series": text(&object, tags::SERIES_INSTANCE_UID),
            "markers": markers_of(&object),
            "rows": uint(&object, tags::ROWS),
        }));
        let port = server.dicom_port.to_string();
        let stored = pynetdicom(&["store", "--port", &port, &file]);
        assert_eq!(stored["results"][0]["status"], 0, "{stored}");
    }

    // Expected pixels of every CT slice, from the files.
    let objects: Vec<DefaultDicomObject> = files
        .iter()
        .map(|f| dicom_object::open_file(&f.path).unwrap())
        .collect();
    let first = &objects[0];
    let (rows, columns) = (uint(first, tags::ROWS), uint(first, tags::COLUMNS));
    let pixels = [(columns / 2, rows / 2), (columns / 3, rows / 2 + rows / 8)];
    let first_values = modality_values(first);
    // A window centred just off the first pixel's value, so that it lands mid-grey.
    let custom = (
        (first_values[pixels[0].1 * columns + pixels[0].0] + 23.0).round(),
        157.0,
    );
    // An ROI of about 60 × 40 pixels around the first pixel.
    let roi = (
        (pixels[0].0 as f64 - 30.0, pixels[0].1 as f64 - 20.0),
        (pixels[0].0 as f64 + 30.0, pixels[0].1 as f64 + 20.0),
    );
    let mut instances = BTreeMap::new();
    let mut series = std::collections::BTreeSet::new();
    for object in &objects {
        let values = modality_values(object);
        let (wc, ww) = (
            object
                .element(tags::WINDOW_CENTER)
                .unwrap()
                .to_multi_float64()
                .unwrap()[0],
            object
                .element(tags::WINDOW_WIDTH)
                .unwrap()
                .to_multi_float64()
                .unwrap()[0],
        );
        let at = |(x, y): (usize, usize)| values[y * columns + x];
        series.insert(text(object, tags::SERIES_INSTANCE_UID));
        instances.insert(
            text(object, tags::SOP_INSTANCE_UID),
            json!({
                "series": text(object, tags::SERIES_INSTANCE_UID),
                "modality": pixels.iter().map(|p| at(*p)).collect::<Vec<_>>(),
                "default": pixels.iter().map(|p| linear(wc, ww, at(*p))).collect::<Vec<_>>(),
                "custom": pixels.iter().map(|p| linear(custom.0, custom.1, at(*p))).collect::<Vec<_>>(),
            }),
        );
    }
    // The first slice in reading order (the acquisition's: lowest Instance Number), and the
    // modality values around the ROI on it: the browser script computes the ROI's expected
    // statistics from these for the exact points its mouse landed on.
    let instance_number = |o: &DefaultDicomObject| uint(o, tags::INSTANCE_NUMBER);
    let top = objects
        .iter()
        .filter(|o| text(o, tags::SERIES_INSTANCE_UID) == text(first, tags::SERIES_INSTANCE_UID))
        .min_by_key(|o| instance_number(o))
        .unwrap();
    let top_values = modality_values(top);
    let (x0, y0) = (roi.0 .0 as usize - 4, roi.0 .1 as usize - 4);
    let (box_w, box_h) = (
        (roi.1 .0 - roi.0 .0) as usize + 8,
        (roi.1 .1 - roi.0 .1) as usize + 8,
    );
    let roi_box: Vec<f64> = (y0..y0 + box_h)
        .flat_map(|y| top_values[y * columns + x0..y * columns + x0 + box_w].to_vec())
        .collect();
    let spacing = first
        .element(tags::PIXEL_SPACING)
        .unwrap()
        .to_multi_float64()
        .unwrap();

    // MONOCHROME1: the grey under a chosen window is inverted.
    let cr = &fixtures[0];
    let cr_object = dicom_object::open_file(fixture_file(cr)).unwrap();
    assert_eq!(text(&cr_object, tags::PHOTOMETRIC_INTERPRETATION), "MONOCHROME1");
    let cr_columns = uint(&cr_object, tags::COLUMNS);
    let cr_values = modality_values(&cr_object);
    let cr_pixel = (cr_columns / 2, uint(&cr_object, tags::ROWS) / 2);
    let cr_value = cr_values[cr_pixel.1 * cr_columns + cr_pixel.0];
    let (lo, hi) = cr_values
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
    let cr_window = (((lo + hi) / 2.0).round(), (hi - lo).max(2.0).round());
    let cr_grey = 255 - linear(cr_window.0, cr_window.1, cr_value);

    // RGB, planar configuration 1 (colour-by-plane).
    let us = &fixtures[1];
    let us_object = dicom_object::open_file(fixture_file(us)).unwrap();
    assert_eq!(uint(&us_object, tags::PLANAR_CONFIGURATION), 1);
    let (us_rows, us_columns) = (uint(&us_object, tags::ROWS), uint(&us_object, tags::COLUMNS));
    let us_bytes = us_object.element(tags::PIXEL_DATA).unwrap().to_bytes().unwrap();
    let us_pixel = (us_columns / 2, us_rows / 2);
    let plane = us_rows * us_columns;
    let offset = us_pixel.1 * us_columns + us_pixel.0;
    let us_rgb: Vec<u8> = (0..3).map(|c| us_bytes[c * plane + offset]).collect();

    // A VOI LUT instead of a window: the CR with its window replaced by a 12-bit gamma LUT of
    // 1,000 entries (2,000 bytes: sent as bulk data, not inline in the metadata), written by
    // pydicom; the expected grey is read back from the file's own LUT.
    let lut_file = dir.path().join("cr_voi_lut.dcm");
    let made = Command::new("python3")
        .arg("-c")
        .arg(
            "import sys, pydicom\n\
             from pydicom.dataset import Dataset\n\
             from pydicom.uid import generate_uid\n\
             d = pydicom.dcmread(sys.argv[1])\n\
             for k in ('WindowCenter', 'WindowWidth'):\n    if k in d: delattr(d, k)\n\
             n, first = 1000, 1500\n\
             item = Dataset()\n\
             item.LUTDescriptor = [n, first, 12]\n\
             item.LUTExplanation = 'GAMMA TEST'\n\
             data = [round(4095 * (i / (n - 1)) ** 0.5) for i in range(n)]\n\
             item.add_new(0x00283006, 'OW', b''.join(v.to_bytes(2, 'little') for v in data))\n\
             d.VOILUTSequence = [item]\n\
             d.StudyInstanceUID = generate_uid(); d.SeriesInstanceUID = generate_uid()\n\
             d.SOPInstanceUID = generate_uid(); d.file_meta.MediaStorageSOPInstanceUID = d.SOPInstanceUID\n\
             d.save_as(sys.argv[2])\n",
        )
        .arg(fixture_file(cr))
        .arg(&lut_file)
        .output()
        .expect("run python3");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let status = dcmtk("storescu")
        .args([
            "-aec",
            &server.ae_title,
            "127.0.0.1",
            &server.dicom_port.to_string(),
        ])
        .arg(&lut_file)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "storescu of the VOI LUT object");
    let lut_object = dicom_object::open_file(&lut_file).unwrap();
    let lut_item = lut_object
        .element(tags::VOILUT_SEQUENCE)
        .unwrap()
        .items()
        .unwrap()[0]
        .clone();
    let descriptor: Vec<i64> = lut_item
        .element(tags::LUT_DESCRIPTOR)
        .unwrap()
        .to_multi_int::<i64>()
        .unwrap();
    let lut_bytes = lut_item.element(tags::LUT_DATA).unwrap().to_bytes().unwrap();
    let lut: Vec<u16> = lut_bytes
        .chunks_exact(2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .collect();
    let lut_value = modality_values(&lut_object)[cr_pixel.1 * cr_columns + cr_pixel.0];
    let index = (lut_value.round() as i64 - descriptor[1]).clamp(0, descriptor[0] - 1) as usize;
    let max = f64::from((1u32 << descriptor[2]) - 1);
    let lut_grey = 255 - ((f64::from(lut[index]).min(max) * 255.0) / max).round() as u8;

    let multi = &fixtures[2];
    let multi_object = dicom_object::open_file(fixture_file(multi)).unwrap();
    let frames: u32 = text(&multi_object, tags::NUMBER_OF_FRAMES).parse().unwrap();

    let uid = |f: &serde_json::Value, k: &str| f[k].as_str().unwrap().to_string();
    let expectations = json!({
        "study": text(first, tags::STUDY_INSTANCE_UID),
        "series": series,
        "slices": slices,
        "pixels": pixels.iter().map(|(x, y)| json!({"x": x, "y": y})).collect::<Vec<_>>(),
        "customWindow": { "center": custom.0, "width": custom.1 },
        "pixelSpacing": spacing,
        "firstSlice": text(top, tags::SOP_INSTANCE_UID),
        "roi": {
            "a": {"x": roi.0.0, "y": roi.0.1}, "b": {"x": roi.1.0, "y": roi.1.1},
            "box": {"x": x0, "y": y0, "width": box_w, "height": box_h, "values": roi_box},
        },
        "instances": instances,
        "monochrome1": {
            "study": uid(cr, "study_instance_uid"), "series": uid(cr, "series_instance_uid"),
            "pixel": {"x": cr_pixel.0, "y": cr_pixel.1},
            "window": {"center": cr_window.0, "width": cr_window.1}, "grey": cr_grey,
        },
        "voiLut": {
            "study": text(&lut_object, tags::STUDY_INSTANCE_UID),
            "series": text(&lut_object, tags::SERIES_INSTANCE_UID),
            "pixel": {"x": cr_pixel.0, "y": cr_pixel.1}, "grey": lut_grey,
        },
        "rgb": {
            "study": uid(us, "study_instance_uid"), "series": uid(us, "series_instance_uid"),
            "pixel": {"x": us_pixel.0, "y": us_pixel.1}, "rgb": us_rgb,
        },
        "orientation": { "study": oriented_study, "series": oriented, "ct": markers_of(first) },
        "multiframe": {
            "study": uid(multi, "study_instance_uid"), "series": uid(multi, "series_instance_uid"),
            "frames": frames,
        },
    });
    let artifacts = repo_root().join("target/browser-artifacts/viewer");
    let _ = std::fs::remove_dir_all(&artifacts);
    std::fs::create_dir_all(&artifacts).unwrap();
    let expect_file = artifacts.join("expected.json");
    std::fs::write(&expect_file, serde_json::to_vec_pretty(&expectations).unwrap()).unwrap();

    let args: Vec<String> = vec![
        "--server".into(),
        format!("http://127.0.0.1:{}", server.http_port),
        "--artifacts".into(),
        artifacts.display().to_string(),
        "--expected".into(),
        expect_file.display().to_string(),
        "--admin".into(),
        format!("{}:{}", ADMIN.0, ADMIN.1),
        "--referrer".into(),
        format!("{}:{}", REFERRER.0, REFERRER.1),
    ];
    let run = run_browser_script("viewer.mjs", &args);
    let summary = &run.summary;
    let report = format!(
        "failures: {:#}\npage errors: {:#}\nHTTP errors: {:#}\nchecks: {}\ntimings: {:#}\n\
         summary and screenshots: {}",
        summary["failures"],
        summary["pageErrors"],
        summary["httpErrors"],
        summary["checks"],
        summary["timings"],
        artifacts.display()
    );
    eprintln!("{report}");
    run.assert_passed(&report);
    // The script really compared pixels: one check per pixel per stage at least.
    assert!(summary["checks"].as_u64().unwrap_or(0) >= 20, "{report}");
}
