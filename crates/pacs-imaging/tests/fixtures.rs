//! Rendering the repository's real fixtures. Expected pixels are computed here from the DICOM
//! data itself (stored values, rescale, window, LUTs) with the PS3.3 formulas, never copied
//! from an earlier output.

use std::path::PathBuf;

use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::DefaultDicomObject;
use image::{DynamicImage, GenericImageView};
use pacs_imaging::{
    can_decode, render, to_explicit_le, ImageFormat, RenderError, RenderParams, VoiFunction, Window,
};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn open(name: &str) -> DefaultDicomObject {
    dicom_object::open_file(fixtures().join("valid").join(name)).unwrap()
}

fn png() -> RenderParams {
    RenderParams {
        format: ImageFormat::Png,
        ..RenderParams::default()
    }
}

fn rendered(object: &DefaultDicomObject, frame: u32, params: &RenderParams) -> DynamicImage {
    image::load_from_memory(&render(object, frame, params).unwrap()).unwrap()
}

fn number(object: &DefaultDicomObject, tag: Tag) -> Option<f64> {
    object.get(tag)?.to_multi_float64().ok()?.first().copied()
}

fn uint(object: &DefaultDicomObject, tag: Tag) -> u32 {
    object.get(tag).unwrap().to_int::<u32>().unwrap()
}

/// Stored values of a native 16-bit single-frame monochrome image: masked to Bits Stored,
/// sign-extended when Pixel Representation is 1.
fn stored_16bit(object: &DefaultDicomObject) -> Vec<i64> {
    let bytes = object.get(tags::PIXEL_DATA).unwrap().to_bytes().unwrap();
    let stored = uint(object, tags::BITS_STORED);
    let signed = uint(object, tags::PIXEL_REPRESENTATION) == 1;
    bytes
        .chunks_exact(2)
        .map(|b| {
            let v = i64::from(u16::from_le_bytes([b[0], b[1]])) & ((1 << stored) - 1);
            if signed && v >= 1 << (stored - 1) {
                v - (1 << stored)
            } else {
                v
            }
        })
        .collect()
}

/// Stored value → modality value (Rescale Slope / Intercept, identity when absent).
fn modality_values(object: &DefaultDicomObject) -> Vec<f64> {
    let slope = number(object, tags::RESCALE_SLOPE).unwrap_or(1.0);
    let intercept = number(object, tags::RESCALE_INTERCEPT).unwrap_or(0.0);
    stored_16bit(object)
        .into_iter()
        .map(|v| v as f64 * slope + intercept)
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

/// PS3.3 C.11.2.1.3.2 on 0..=255.
fn linear_exact(center: f64, width: f64, x: f64) -> f64 {
    if x <= center - width / 2.0 {
        0.0
    } else if x > center + width / 2.0 {
        255.0
    } else {
        ((x - center) / width + 0.5) * 255.0
    }
}

fn assert_grey_matches(image: &DynamicImage, expected: &[f64], tolerance: f64, what: &str) {
    let grey = image.to_luma8();
    assert_eq!(grey.len(), expected.len(), "{what}: pixel count");
    for (i, (got, want)) in grey.iter().zip(expected).enumerate() {
        let diff = (f64::from(*got) - want).abs();
        assert!(
            diff <= tolerance,
            "{what}: pixel {i} is {got}, expected {want:.2}"
        );
    }
    // Sanity: the window is not flattening everything to one value.
    assert!(
        grey.iter().any(|v| *v != grey.as_raw()[0]),
        "{what}: a uniform image"
    );
}

#[test]
fn ct_window_from_the_object_with_rescale() {
    let object = open("ct_series_a_1_explicit_le.dcm");
    let (center, width) = (
        number(&object, tags::WINDOW_CENTER).unwrap(),
        number(&object, tags::WINDOW_WIDTH).unwrap(),
    );
    let expected: Vec<f64> = modality_values(&object)
        .into_iter()
        .map(|x| linear(center, width, x))
        .collect();
    assert_grey_matches(&rendered(&object, 0, &png()), &expected, 1.0, "object window");
}

#[test]
fn ct_window_from_the_request_wins() {
    for object in [open("ct_explicit_le.dcm"), open("ct_series_a_1_explicit_le.dcm")] {
        let values = modality_values(&object);
        for (function, formula) in [
            (VoiFunction::Linear, linear as fn(f64, f64, f64) -> f64),
            (VoiFunction::LinearExact, linear_exact),
            (VoiFunction::Sigmoid, |c: f64, w: f64, x: f64| {
                255.0 / (1.0 + (-4.0 * (x - c) / w).exp())
            }),
        ] {
            let params = RenderParams {
                window: Some(Window {
                    center: 40.0,
                    width: 400.0,
                    function,
                }),
                ..png()
            };
            let expected: Vec<f64> = values.iter().map(|x| formula(40.0, 400.0, *x)).collect();
            assert_grey_matches(
                &rendered(&object, 0, &params),
                &expected,
                1.0,
                &format!("{function:?}"),
            );
        }
    }
}

#[test]
fn without_a_window_the_frame_min_max_is_used() {
    let object = open("ct_explicit_le.dcm");
    assert!(
        object.get(tags::WINDOW_CENTER).is_none(),
        "fixture changed: it has a window now"
    );
    let values = modality_values(&object);
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let expected: Vec<f64> = values.iter().map(|x| (x - min) / (max - min) * 255.0).collect();
    assert_grey_matches(&rendered(&object, 0, &png()), &expected, 1.0, "min/max");
}

#[test]
fn monochrome1_is_inverted_after_the_window() {
    // A copy made MONOCHROME1: exactly the inverse of the MONOCHROME2 rendering.
    let original = open("ct_series_a_1_explicit_le.dcm");
    let mut inverted = original.clone();
    inverted.put(DataElement::new(
        tags::PHOTOMETRIC_INTERPRETATION,
        VR::CS,
        PrimitiveValue::from("MONOCHROME1"),
    ));
    let normal = rendered(&original, 0, &png()).to_luma8();
    let expected: Vec<f64> = normal.iter().map(|v| 255.0 - f64::from(*v)).collect();
    assert_grey_matches(
        &rendered(&inverted, 0, &png()),
        &expected,
        0.0,
        "MONOCHROME1 copy",
    );
    assert_eq!(
        original
            .get(tags::PHOTOMETRIC_INTERPRETATION)
            .unwrap()
            .to_str()
            .unwrap(),
        "MONOCHROME2"
    );

    // A CR stored as MONOCHROME1 with 12 bits stored, a fractional slope and its own window.
    let cr = open("cr_explicit_le.dcm");
    let (center, width) = (
        number(&cr, tags::WINDOW_CENTER).unwrap(),
        number(&cr, tags::WINDOW_WIDTH).unwrap(),
    );
    let expected: Vec<f64> = modality_values(&cr)
        .into_iter()
        .map(|x| 255.0 - linear(center, width, x))
        .collect();
    assert_grey_matches(&rendered(&cr, 0, &png()), &expected, 1.0, "CR MONOCHROME1");
}

#[test]
fn jpeg_is_close_to_the_exact_rendering() {
    let object = open("ct_explicit_le.dcm");
    let exact = rendered(&object, 0, &png()).to_luma8();
    let expected: Vec<f64> = exact.iter().map(|v| f64::from(*v)).collect();
    let params = RenderParams {
        quality: 100,
        ..RenderParams::default()
    };
    let jpeg = rendered(&object, 0, &params);
    let grey = jpeg.to_luma8();
    let mean_error = grey
        .iter()
        .zip(&expected)
        .map(|(a, b)| (f64::from(*a) - b).abs())
        .sum::<f64>()
        / expected.len() as f64;
    assert!(mean_error < 2.0, "mean error {mean_error}");
}

#[test]
fn png_and_jpeg_have_their_signatures() {
    let object = open("ct_explicit_le.dcm");
    let png_bytes = render(&object, 0, &png()).unwrap();
    assert_eq!(&png_bytes[..8], b"\x89PNG\r\n\x1a\n");
    let jpeg_bytes = render(&object, 0, &RenderParams::default()).unwrap();
    assert_eq!(&jpeg_bytes[..3], &[0xFF, 0xD8, 0xFF]);
    assert_eq!(&jpeg_bytes[jpeg_bytes.len() - 2..], &[0xFF, 0xD9]);
}

#[test]
fn viewport_keeps_the_aspect_ratio() {
    let nm = open("nm_jpeg2000.dcm");
    let (columns, rows) = (uint(&nm, tags::COLUMNS), uint(&nm, tags::ROWS));
    assert_eq!((columns, rows), (256, 1024), "fixture changed");
    let fit = |object: &DefaultDicomObject, viewport| {
        let params = RenderParams {
            viewport: Some(viewport),
            ..png()
        };
        rendered(object, 0, &params).dimensions()
    };
    assert_eq!(fit(&nm, (64, 64)), (16, 64));
    assert_eq!(fit(&nm, (128, 2048)), (128, 512));
    let ct = open("ct_explicit_le.dcm");
    assert_eq!(fit(&ct, (64, 32)), (32, 32));
    assert_eq!(fit(&ct, (512, 300)), (300, 300), "scaled up to fit the box");
    let thumbnail = image::load_from_memory(&render(&nm, 0, &RenderParams::thumbnail()).unwrap()).unwrap();
    assert_eq!(thumbnail.dimensions(), (32, 128));
}

#[test]
fn native_colour_is_rendered_as_stored() {
    // Interleaved RGB, implicit VR LE.
    let object = open("ot_rgb_implicit_le.dcm");
    let stored = object.get(tags::PIXEL_DATA).unwrap().to_bytes().unwrap();
    let image = rendered(&object, 0, &png()).to_rgb8();
    assert_eq!(image.as_raw().as_slice(), &stored[..image.as_raw().len()]);

    // Planar RGB (Planar Configuration 1), explicit VR big endian.
    let object = open("us_rgb_explicit_be.dcm");
    assert_eq!(uint(&object, tags::PLANAR_CONFIGURATION), 1);
    let stored = object.get(tags::PIXEL_DATA).unwrap().to_bytes().unwrap();
    let image = rendered(&object, 0, &png()).to_rgb8();
    let n = image.width() as usize * image.height() as usize;
    for (i, pixel) in image.pixels().enumerate() {
        assert_eq!(
            pixel.0,
            [stored[i], stored[n + i], stored[2 * n + i]],
            "pixel {i}"
        );
    }
}

#[test]
fn palette_colour_goes_through_its_luts() {
    let object = open("us_palette_explicit_le.dcm");
    let stored = object.get(tags::PIXEL_DATA).unwrap().to_bytes().unwrap();
    let lut = |descriptor: Tag, data: Tag| {
        let d = object.get(descriptor).unwrap().to_multi_int::<i64>().unwrap();
        let words: Vec<u16> = object
            .get(data)
            .unwrap()
            .to_bytes()
            .unwrap()
            .chunks_exact(2)
            .map(|w| u16::from_le_bytes([w[0], w[1]]))
            .collect();
        (d[1], d[2], words)
    };
    let luts = [
        lut(
            tags::RED_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
            tags::RED_PALETTE_COLOR_LOOKUP_TABLE_DATA,
        ),
        lut(
            tags::GREEN_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
            tags::GREEN_PALETTE_COLOR_LOOKUP_TABLE_DATA,
        ),
        lut(
            tags::BLUE_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
            tags::BLUE_PALETTE_COLOR_LOOKUP_TABLE_DATA,
        ),
    ];
    assert!(luts.iter().all(|(_, bits, _)| *bits == 16), "fixture changed");
    let image = rendered(&object, 0, &png()).to_rgb8();
    let mut colourful = false;
    for (i, pixel) in image.pixels().enumerate() {
        let index = i64::from(stored[i]);
        let want = luts.each_ref().map(|(first, _, words)| {
            let at = (index - first).clamp(0, words.len() as i64 - 1) as usize;
            (words[at] >> 8) as u8
        });
        assert_eq!(pixel.0, want, "pixel {i} (index {index})");
        colourful |= want[0] != want[1] || want[1] != want[2];
    }
    assert!(colourful);
}

#[test]
fn compressed_colour_is_rendered_in_colour() {
    // The secondary captures show a red band at the top: whatever the JPEG colour space,
    // it must come out red.
    for name in [
        "ot_rgb_jpeg_baseline.dcm",
        "ot_rgb_jpeg_baseline_422.dcm",
        "ot_rgb_jpeg_baseline_rgb_colorspace.dcm",
        "ot_rgb_jpeg_lossless_sv1.dcm",
    ] {
        let image = rendered(&open(name), 0, &png()).to_rgb8();
        let [r, g, b] = image.get_pixel(50, 3).0;
        assert!(r > 200 && g < 60 && b < 60, "{name}: top band is {r},{g},{b}");
    }
    for name in [
        "us_multiframe_jpeg_baseline.dcm",
        "us_jpeg2000_lossless.dcm",
        "sc_jpeg_baseline_no_modality.dcm",
    ] {
        let object = open(name);
        let last = pacs_imaging::number_of_frames(&object) - 1;
        let image = rendered(&object, last, &png()).to_rgb8();
        assert!(
            image.pixels().any(|p| p.0[0] != p.0[1] || p.0[1] != p.0[2]),
            "{name}: no colour"
        );
    }
}

#[test]
fn every_fixture_renders_or_fails_cleanly() {
    let manifest: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("manifest.json")).unwrap()).unwrap();
    for entry in manifest.iter().filter(|e| e["valid"] == true) {
        let path = entry["path"].as_str().unwrap();
        let object = dicom_object::open_file(fixtures().join(path)).unwrap();
        let frames = pacs_imaging::number_of_frames(&object);
        for frame in [0, frames - 1] {
            match render(&object, frame, &RenderParams::default()) {
                Ok(bytes) => {
                    let image = image::load_from_memory(&bytes).unwrap();
                    assert_eq!(
                        image.dimensions(),
                        (uint(&object, tags::COLUMNS), uint(&object, tags::ROWS)),
                        "{path}"
                    );
                }
                Err(RenderError::NoPixelData) => {
                    assert!(object.get(tags::PIXEL_DATA).is_none(), "{path}")
                }
                Err(RenderError::Undecodable(message)) => {
                    // Known: 12-bit JPEG needs GDCM; 32-bit RLE has no decoder here.
                    assert!(
                        path.ends_with("nm_jpeg_extended.dcm") || path.ends_with("rtdose_rle_multiframe.dcm"),
                        "{path}: {message}"
                    );
                }
                Err(e) => panic!("{path}: {e}"),
            }
        }
        assert!(
            matches!(
                render(&object, frames, &RenderParams::default()),
                Err(RenderError::FrameOutOfRange { .. } | RenderError::NoPixelData)
            ),
            "{path}: frame past the end"
        );
    }
}

#[test]
fn twelve_bit_jpeg_is_a_clean_refusal() {
    let object = open("nm_jpeg_extended.dcm");
    let error = render(&object, 0, &RenderParams::default()).unwrap_err();
    assert!(matches!(error, RenderError::Undecodable(_)), "{error}");
    assert!(!can_decode("1.2.840.10008.1.2.4.51"));
    assert!(matches!(to_explicit_le(object), Err(RenderError::Undecodable(_))));
}

#[test]
fn compressed_objects_decode_to_explicit_little_endian() {
    for name in [
        "mr_jpegls_lossless.dcm",
        "nm_jpeg2000.dcm",
        "us_multiframe_jpeg_baseline.dcm",
    ] {
        let original = open(name);
        let stored_ts = original
            .meta()
            .transfer_syntax()
            .trim_end_matches('\0')
            .to_string();
        assert!(can_decode(&stored_ts), "{name}");
        let converted = to_explicit_le(original.clone()).unwrap();
        assert_eq!(
            converted.meta().transfer_syntax().trim_end_matches('\0'),
            "1.2.840.10008.1.2.1"
        );
        // Written and read back, it is a plain native object of the right size.
        let mut bytes = Vec::new();
        converted.write_all(&mut bytes).unwrap();
        let reread = dicom_object::OpenFileOptions::new()
            .from_reader(std::io::Cursor::new(&bytes[128..]))
            .unwrap();
        let frame_bytes = uint(&reread, tags::ROWS)
            * uint(&reread, tags::COLUMNS)
            * uint(&reread, tags::SAMPLES_PER_PIXEL)
            * (uint(&reread, tags::BITS_ALLOCATED) / 8);
        let pixel_data = reread.get(tags::PIXEL_DATA).unwrap().to_bytes().unwrap();
        assert!(
            pixel_data.len() as u32 >= frame_bytes * pacs_imaging::number_of_frames(&reread),
            "{name}"
        );
        // Lossless or not, the decoded pixels are the same ones rendered from the original.
        let last = pacs_imaging::number_of_frames(&original) - 1;
        assert_eq!(
            rendered(&reread, last, &png()).to_rgb8(),
            rendered(&original, last, &png()).to_rgb8(),
            "{name}"
        );
    }
}
