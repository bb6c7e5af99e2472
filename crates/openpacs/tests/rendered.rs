//! Rendered resources, thumbnails and WADO-URI images, against the real binary. Expected pixel
//! values are computed here from the fixture's own data (stored values, rescale, the requested
//! window with the PS3.3 LINEAR formula).

use std::path::Path;

use dicom_dictionary_std::tags;
use image::{DynamicImage, GenericImageView};
use pacs_testkit::server::{repo_root, valid_fixtures, ServerOptions, TestServer};

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_openpacs"))
}

fn fixture(name: &str) -> serde_json::Value {
    valid_fixtures()
        .into_iter()
        .find(|f| f["path"] == format!("valid/{name}"))
        .unwrap_or_else(|| panic!("{name} not in the manifest"))
}

fn store(server: &TestServer, names: &[&str]) {
    let entries: Vec<serde_json::Value> = names.iter().map(|n| fixture(n)).collect();
    server.store_fixtures(entries.iter());
}

/// `/dicom-web/studies/…/series/…/instances/…` of a fixture.
fn instance_path(f: &serde_json::Value) -> String {
    format!(
        "/dicom-web/studies/{}/series/{}/instances/{}",
        f["study_instance_uid"].as_str().unwrap(),
        f["series_instance_uid"].as_str().unwrap(),
        f["sop_instance_uid"].as_str().unwrap()
    )
}

fn wado_uri(f: &serde_json::Value, extra: &str) -> String {
    format!(
        "/wado?requestType=WADO&studyUID={}&seriesUID={}&objectUID={}{extra}",
        f["study_instance_uid"].as_str().unwrap(),
        f["series_instance_uid"].as_str().unwrap(),
        f["sop_instance_uid"].as_str().unwrap()
    )
}

/// GET expecting 200 and an image of `media` type; returns it decoded.
fn get_image(server: &TestServer, path: &str, accept: &str, media: &str) -> DynamicImage {
    let (status, head, body) = server.http_bytes(path, &[("Accept", accept)]);
    assert_eq!(status, 200, "{path}: {head}\n{}", String::from_utf8_lossy(&body));
    assert!(
        head.to_ascii_lowercase()
            .contains(&format!("content-type: {media}")),
        "{path}: {head}"
    );
    image::load_from_memory(&body).unwrap()
}

/// The CT fixture's modality values (stored value × slope + intercept), row by row.
fn ct_modality_values(name: &str) -> Vec<f64> {
    let object = dicom_object::open_file(repo_root().join("tests/fixtures/valid").join(name)).unwrap();
    let number = |tag| object.get(tag).map(|e| e.to_float64().unwrap());
    let slope = number(tags::RESCALE_SLOPE).unwrap_or(1.0);
    let intercept = number(tags::RESCALE_INTERCEPT).unwrap_or(0.0);
    assert_eq!(
        object.get(tags::BITS_ALLOCATED).unwrap().to_int::<u16>().unwrap(),
        16
    );
    assert_eq!(
        object
            .get(tags::PIXEL_REPRESENTATION)
            .unwrap()
            .to_int::<u16>()
            .unwrap(),
        1
    );
    let bytes = object.get(tags::PIXEL_DATA).unwrap().to_bytes().unwrap();
    bytes
        .chunks_exact(2)
        .map(|b| f64::from(i16::from_le_bytes([b[0], b[1]])) * slope + intercept)
        .collect()
}

/// PS3.3 C.11.2.1.2.1 on 0..=255.
fn linear(center: f64, width: f64, x: f64) -> f64 {
    if x <= center - 0.5 - (width - 1.0) / 2.0 {
        0.0
    } else if x > center - 0.5 + (width - 1.0) / 2.0 {
        255.0
    } else {
        ((x - (center - 0.5)) / (width - 1.0) + 0.5) * 255.0
    }
}

/// Largest and mean absolute difference between a grey image and expected values.
fn differences(image: &DynamicImage, expected: &[f64]) -> (f64, f64) {
    let grey = image.to_luma8();
    assert_eq!(grey.len(), expected.len());
    let diffs: Vec<f64> = grey
        .iter()
        .zip(expected)
        .map(|(g, e)| (f64::from(*g) - e).abs())
        .collect();
    let max = diffs.iter().copied().fold(0.0, f64::max);
    (max, diffs.iter().sum::<f64>() / diffs.len() as f64)
}

#[test]
fn rendered_instances_follow_the_requested_window() {
    let server = TestServer::start(binary(), ServerOptions::default());
    store(&server, &["ct_explicit_le.dcm"]);
    let ct = fixture("ct_explicit_le.dcm");
    let path = instance_path(&ct);
    let expected: Vec<f64> = ct_modality_values("ct_explicit_le.dcm")
        .into_iter()
        .map(|x| linear(40.0, 400.0, x))
        .collect();
    assert!(
        expected.iter().any(|v| *v > 0.0 && *v < 255.0),
        "window shows nothing"
    );

    // PNG: exact up to rounding.
    let png = get_image(
        &server,
        &format!("{path}/rendered?window=40,400"),
        "image/png",
        "image/png",
    );
    assert_eq!(png.dimensions(), (128, 128));
    let (max, _) = differences(&png, &expected);
    assert!(max <= 1.0, "PNG differs by {max}");

    // JPEG: close, given the compression.
    let jpeg = get_image(
        &server,
        &format!("{path}/rendered?window=40,400&quality=95"),
        "image/jpeg",
        "image/jpeg",
    );
    let (_, mean) = differences(&jpeg, &expected);
    assert!(mean <= 3.0, "JPEG mean error {mean}");
    // No Accept, */* and the accept= query parameter.
    let (status, head, body) = server.http_bytes(&format!("{path}/rendered"), &[]);
    assert_eq!(status, 200, "{head}");
    assert_eq!(&body[..2], &[0xFF, 0xD8]);
    let png = get_image(
        &server,
        &format!("{path}/rendered?accept=image/png"),
        "*/*",
        "image/png",
    );
    assert_eq!(png.dimensions(), (128, 128));

    // Viewport: fits the box, aspect ratio kept.
    let small = get_image(
        &server,
        &format!("{path}/rendered?viewport=64,32"),
        "image/jpeg",
        "image/jpeg",
    );
    assert_eq!(small.dimensions(), (32, 32));

    // Frames: the first listed frame; a frame past the end is not found.
    let frame = get_image(
        &server,
        &format!("{path}/frames/1/rendered?window=40,400"),
        "image/png",
        "image/png",
    );
    assert!(differences(&frame, &expected).0 <= 1.0);
    let (status, _, _) = server.http_bytes(&format!("{path}/frames/2/rendered"), &[]);
    assert_eq!(status, 404);

    // Client errors.
    for (query, needle) in [
        ("window=40", "center,width"),
        ("window=abc,400", "not a number"),
        ("window=40,0", "below 1"),
        ("viewport=0,10", "viewport"),
        ("quality=0", "quality"),
    ] {
        let (status, _, body) = server.http_bytes(&format!("{path}/rendered?{query}"), &[]);
        let body = String::from_utf8_lossy(&body);
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body.contains(needle), "{query}: {body}");
    }
    let (status, _, _) = server.http_bytes(&format!("{path}/rendered"), &[("Accept", "application/pdf")]);
    assert_eq!(status, 406);
    let unknown = format!(
        "/dicom-web/studies/{}/series/{}/instances/1.2.3.4/rendered",
        ct["study_instance_uid"].as_str().unwrap(),
        ct["series_instance_uid"].as_str().unwrap()
    );
    assert_eq!(server.http_bytes(&unknown, &[]).0, 404);
}

#[test]
fn thumbnails_colour_and_undecodable_objects() {
    let server = TestServer::start(binary(), ServerOptions::default());
    let names = [
        "ct_explicit_le.dcm",
        "ct_series_a_1_explicit_le.dcm",
        "ct_series_a_2_explicit_le.dcm",
        "ot_rgb_jpeg_baseline.dcm",
        "nm_jpeg_extended.dcm",
        "sr_basic_text_explicit_le.dcm",
    ];
    store(&server, &names);

    // Instance, series and study thumbnails: JPEG within 128×128.
    let ct = fixture("ct_explicit_le.dcm");
    let thumb = get_image(
        &server,
        &format!("{}/thumbnail", instance_path(&ct)),
        "image/jpeg",
        "image/jpeg",
    );
    assert_eq!(thumb.dimensions(), (128, 128));
    let series = fixture("ct_series_a_1_explicit_le.dcm");
    let series_path = format!(
        "/dicom-web/studies/{}/series/{}",
        series["study_instance_uid"].as_str().unwrap(),
        series["series_instance_uid"].as_str().unwrap()
    );
    let thumb = get_image(&server, &format!("{series_path}/thumbnail"), "*/*", "image/jpeg");
    assert_eq!(thumb.dimensions(), (128, 128));
    let thumb = get_image(
        &server,
        &format!("{series_path}/thumbnail?viewport=32,32"),
        "image/png",
        "image/png",
    );
    assert_eq!(thumb.dimensions(), (32, 32));
    let study_path = format!(
        "/dicom-web/studies/{}",
        series["study_instance_uid"].as_str().unwrap()
    );
    let thumb = get_image(
        &server,
        &format!("{study_path}/thumbnail"),
        "image/jpeg",
        "image/jpeg",
    );
    assert_eq!(thumb.dimensions(), (128, 128));
    let frame_thumb = get_image(
        &server,
        &format!("{}/frames/1/thumbnail", instance_path(&ct)),
        "image/jpeg",
        "image/jpeg",
    );
    assert_eq!(frame_thumb.dimensions(), (128, 128));
    assert_eq!(
        server.http_bytes("/dicom-web/studies/1.2.3.4/thumbnail", &[]).0,
        404
    );

    // A colour object comes out in colour.
    let colour = fixture("ot_rgb_jpeg_baseline.dcm");
    let image = get_image(
        &server,
        &format!("{}/rendered", instance_path(&colour)),
        "image/png",
        "image/png",
    )
    .to_rgb8();
    assert!(image.pixels().any(|p| p.0[0] != p.0[1] || p.0[1] != p.0[2]));

    // No pixel data: not found. 12-bit JPEG: a clean refusal, and the server keeps serving.
    let sr = fixture("sr_basic_text_explicit_le.dcm");
    assert_eq!(
        server
            .http_bytes(&format!("{}/rendered", instance_path(&sr)), &[])
            .0,
        404
    );
    let nm = fixture("nm_jpeg_extended.dcm");
    let (status, _, body) = server.http_bytes(&format!("{}/rendered", instance_path(&nm)), &[]);
    assert_eq!(status, 406, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("cannot render"));
    assert_eq!(server.http("/healthz").0, 200);
    get_image(
        &server,
        &format!("{}/rendered", instance_path(&ct)),
        "image/jpeg",
        "image/jpeg",
    );
}

#[test]
fn wado_uri_renders_images_and_decodes_to_little_endian() {
    let server = TestServer::start(binary(), ServerOptions::default());
    store(
        &server,
        &[
            "ct_explicit_le.dcm",
            "mr_jpegls_lossless.dcm",
            "nm_jpeg_extended.dcm",
        ],
    );
    let ct = fixture("ct_explicit_le.dcm");

    // image/jpeg is the default content type.
    let (status, head, body) = server.http_bytes(&wado_uri(&ct, ""), &[]);
    assert_eq!(status, 200, "{head}");
    assert!(
        head.to_ascii_lowercase().contains("content-type: image/jpeg"),
        "{head}"
    );
    assert_eq!(image::load_from_memory(&body).unwrap().dimensions(), (128, 128));

    let expected: Vec<f64> = ct_modality_values("ct_explicit_le.dcm")
        .into_iter()
        .map(|x| linear(40.0, 400.0, x))
        .collect();
    let png = get_image(
        &server,
        &wado_uri(&ct, "&contentType=image/png&windowCenter=40&windowWidth=400"),
        "*/*",
        "image/png",
    );
    assert!(differences(&png, &expected).0 <= 1.0);
    let jpeg = get_image(
        &server,
        &wado_uri(
            &ct,
            "&contentType=image/jpeg&windowCenter=40&windowWidth=400&imageQuality=95&frameNumber=1",
        ),
        "*/*",
        "image/jpeg",
    );
    assert!(differences(&jpeg, &expected).1 <= 3.0);
    let small = get_image(&server, &wado_uri(&ct, "&rows=64"), "*/*", "image/jpeg");
    assert_eq!(small.dimensions(), (64, 64));
    let (status, _, _) = server.http_bytes(&wado_uri(&ct, "&windowCenter=40"), &[]);
    assert_eq!(status, 400);
    let (status, _, _) = server.http_bytes(&wado_uri(&ct, "&contentType=application/pdf"), &[]);
    assert_eq!(status, 406);

    // A JPEG-LS object asked for in explicit VR little endian is decoded.
    let mr = fixture("mr_jpegls_lossless.dcm");
    let (status, head, body) = server.http_bytes(
        &wado_uri(
            &mr,
            "&contentType=application/dicom&transferSyntax=1.2.840.10008.1.2.1",
        ),
        &[],
    );
    assert_eq!(status, 200, "{head}");
    let object = dicom_object::OpenFileOptions::new()
        .from_reader(std::io::Cursor::new(&body[128..]))
        .unwrap();
    assert_eq!(
        object.meta().transfer_syntax().trim_end_matches('\0'),
        "1.2.840.10008.1.2.1"
    );
    assert_eq!(
        object.get(tags::PIXEL_DATA).unwrap().to_bytes().unwrap().len(),
        64 * 64 * 2
    );
    // 12-bit JPEG cannot be decoded here: still 406.
    let nm = fixture("nm_jpeg_extended.dcm");
    let (status, _, _) = server.http_bytes(
        &wado_uri(
            &nm,
            "&contentType=application/dicom&transferSyntax=1.2.840.10008.1.2.1",
        ),
        &[],
    );
    assert_eq!(status, 406);
    assert_eq!(server.http("/healthz").0, 200);
}
