//! Pixel data for people: renders one frame of a DICOM image as JPEG or PNG (DICOMweb rendered
//! resources and thumbnails, WADO-URI `image/jpeg`), and decodes compressed pixel data to
//! Explicit VR Little Endian.
//!
//! `dicom-pixeldata` only decodes (its codecs: native JPEG and RLE, OpenJPEG, CharLS); the
//! display pipeline is ours, so that each step is the one PS3.3 describes: stored values
//! (masked to Bits Stored, sign-extended) → Modality LUT (LUT sequence, else rescale) → VOI
//! (the request's window, else the object's first window with its VOI LUT Function, else its
//! first VOI LUT, else the frame's min/max) → MONOCHROME1 inverted; colour images are
//! converted to RGB (YBR_FULL, YBR_FULL_422, PALETTE COLOR). Then the frame is scaled to fit
//! the viewport and encoded.
//!
//! Everything works on a decoded copy of one frame; the object passed in is never changed.
//! Memory is one frame's decoded samples plus the 8-bit output, and frames larger than
//! `MAX_FRAME_BYTES` are refused. Colour images are rendered without a window.

mod params;

use std::panic::{catch_unwind, AssertUnwindSafe};

use dicom_core::value::PrimitiveValue;
use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::DefaultDicomObject;
use dicom_pixeldata::{PhotometricInterpretation, PixelDecoder, PixelRepresentation, PlanarConfiguration};
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use image::imageops::FilterType;
use image::{ExtendedColorType, ImageBuffer, ImageEncoder, Luma, Rgb};

pub use params::{ImageFormat, RenderParams, VoiFunction, Window, MAX_VIEWPORT, THUMBNAIL_SIZE};

/// Largest decoded frame (bytes of samples) this crate will render or decode.
pub const MAX_FRAME_BYTES: u64 = 512 << 20;

/// JPEG Extended (Process 2 & 4): 12-bit in practice, which the native JPEG decoder refuses
/// (DESIGN.md §5: that needs GDCM).
const JPEG_EXTENDED: &str = "1.2.840.10008.1.2.4.51";

/// Why a frame could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// This build cannot decode or display the pixel data (no codec for the transfer syntax,
    /// a codec failure, an unsupported photometric interpretation or bit depth, a frame too
    /// large): the object exists, there is just no image of it to give.
    #[error("cannot render this object: {0}")]
    Undecodable(String),
    /// The object has no Pixel Data (an SR, a waveform, a plan…).
    #[error("the object has no pixel data")]
    NoPixelData,
    /// `number` is 1-based, as DICOMweb counts frames.
    #[error("frame {number} does not exist (the object has {count})")]
    FrameOutOfRange { number: u32, count: u32 },
    #[error("internal error: {0}")]
    Internal(String),
}

fn int(object: &DefaultDicomObject, tag: Tag) -> Option<i64> {
    object.get(tag)?.to_int::<i64>().ok()
}

/// Number of frames of an image (1 when Number of Frames is absent or nonsense).
pub fn number_of_frames(object: &DefaultDicomObject) -> u32 {
    int(object, tags::NUMBER_OF_FRAMES)
        .and_then(|n| u32::try_from(n).ok())
        .filter(|n| *n > 0)
        .unwrap_or(1)
}

/// Whether this build has a decoder for every object in `transfer_syntax`. JPEG Extended is
/// answered `false`: its usual 12-bit content cannot be decoded here.
pub fn can_decode(transfer_syntax: &str) -> bool {
    let uid = transfer_syntax.trim_end_matches(['\0', ' ']);
    uid != JPEG_EXTENDED
        && TransferSyntaxRegistry
            .get(uid)
            .is_some_and(|ts| ts.can_decode_all())
}

/// Checks what can be checked before decoding: pixel data present, frame in range, a decoder
/// for the transfer syntax, a frame of reasonable size.
fn check_decodable(object: &DefaultDicomObject, frame_index: u32) -> Result<(), RenderError> {
    if object.get(tags::PIXEL_DATA).is_none() {
        return Err(RenderError::NoPixelData);
    }
    let count = number_of_frames(object);
    if frame_index >= count {
        return Err(RenderError::FrameOutOfRange {
            number: frame_index.saturating_add(1),
            count,
        });
    }
    let uid = object.meta().transfer_syntax().trim_end_matches(['\0', ' ']);
    match TransferSyntaxRegistry.get(uid) {
        None => return Err(RenderError::Undecodable(format!("unknown transfer syntax {uid}"))),
        Some(ts) if !ts.can_decode_all() => {
            return Err(RenderError::Undecodable(format!(
                "no decoder for transfer syntax {uid} ({})",
                ts.name()
            )))
        }
        Some(_) => {}
    }
    let dimension = |tag| int(object, tag).filter(|v| *v > 0).map(|v| v as u64);
    let (Some(rows), Some(columns)) = (dimension(tags::ROWS), dimension(tags::COLUMNS)) else {
        return Err(RenderError::Undecodable("Rows or Columns missing or zero".into()));
    };
    let samples = dimension(tags::SAMPLES_PER_PIXEL).unwrap_or(1);
    let bytes = dimension(tags::BITS_ALLOCATED).unwrap_or(8).div_ceil(8);
    if rows * columns * samples * bytes > MAX_FRAME_BYTES {
        return Err(RenderError::Undecodable(format!(
            "a {columns}×{rows} frame is larger than the {} MiB this server renders",
            MAX_FRAME_BYTES >> 20
        )));
    }
    Ok(())
}

/// Renders frame `frame_index` (0-based) of `object` as `params` say.
pub fn render(
    object: &DefaultDicomObject,
    frame_index: u32,
    params: &RenderParams,
) -> Result<Vec<u8>, RenderError> {
    check_decodable(object, frame_index)?;
    // Codecs are third-party code fed with received bytes: a panic in one is a decoding
    // failure of this object, not of the server.
    let decoded = catch_unwind(AssertUnwindSafe(|| object.decode_pixel_data_frame(frame_index)))
        .map_err(|_| RenderError::Undecodable("the decoder failed on this pixel data".into()))?
        .map_err(|e| RenderError::Undecodable(pacs_model::error_chain(&e)))?;
    let width = decoded.columns();
    let height = decoded.rows();
    let pixels = width as usize * height as usize;
    let frame = Frame::new(&decoded, pixels)?;
    let image = match decoded.photometric_interpretation() {
        PhotometricInterpretation::Monochrome1 | PhotometricInterpretation::Monochrome2 => {
            let mut grey = monochrome(object, &decoded, &frame, params.window)?;
            if decoded.photometric_interpretation() == &PhotometricInterpretation::Monochrome1 {
                grey.iter_mut().for_each(|v| *v = 255 - *v);
            }
            Image::Grey(grey)
        }
        PhotometricInterpretation::PaletteColor => Image::Rgb(palette(object, &frame)?),
        PhotometricInterpretation::Rgb
        | PhotometricInterpretation::YbrFull
        | PhotometricInterpretation::YbrFull422 => Image::Rgb(colour(&decoded, pixels)?),
        other => {
            return Err(RenderError::Undecodable(format!(
                "photometric interpretation {other} is not supported"
            )))
        }
    };
    encode(image, width, height, params)
}

/// Decodes compressed pixel data and returns the object in Explicit VR Little Endian (native
/// objects only change their transfer syntax). Photometric Interpretation becomes what the
/// decoder produced (RGB for colour), Planar Configuration 0. The caller's copy is consumed;
/// the stored original is never touched.
pub fn to_explicit_le(mut object: DefaultDicomObject) -> Result<DefaultDicomObject, RenderError> {
    use dicom_pixeldata::Transcode;
    use dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN;

    let uid = object
        .meta()
        .transfer_syntax()
        .trim_end_matches(['\0', ' '])
        .to_string();
    if !can_decode(&uid) {
        return Err(RenderError::Undecodable(format!(
            "no decoder for transfer syntax {uid}"
        )));
    }
    let encapsulated = object
        .get(tags::PIXEL_DATA)
        .is_some_and(|p| p.value().fragments().is_some());
    if encapsulated {
        check_decodable(&object, 0)?;
    }
    catch_unwind(AssertUnwindSafe(|| {
        object.transcode(&EXPLICIT_VR_LITTLE_ENDIAN.erased())
    }))
    .map_err(|_| RenderError::Undecodable("the decoder failed on this pixel data".into()))?
    .map_err(|e| RenderError::Undecodable(pacs_model::error_chain(&e)))?;
    if encapsulated {
        object.remove_element(tags::ENCAPSULATED_PIXEL_DATA_VALUE_TOTAL_LENGTH);
        if int(&object, tags::SAMPLES_PER_PIXEL).unwrap_or(1) > 1 {
            object.put(dicom_core::DataElement::new(
                tags::PLANAR_CONFIGURATION,
                dicom_core::VR::US,
                PrimitiveValue::from(0u16),
            ));
        }
    }
    Ok(object)
}

enum Image {
    Grey(Vec<u8>),
    Rgb(Vec<u8>),
}

/// Stored sample values of a decoded single-sample frame, masked to Bits Stored and
/// sign-extended when Pixel Representation says so.
struct Frame<'a> {
    data: &'a [u8],
    bytes: usize,
    shift: u32,
    mask: u32,
    sign_bit: Option<u32>,
    pixels: usize,
}

impl<'a> Frame<'a> {
    fn new(decoded: &'a dicom_pixeldata::DecodedPixelData<'_>, pixels: usize) -> Result<Self, RenderError> {
        let bytes = match decoded.bits_allocated() {
            // The decoder expands 1-bit samples to one byte each (0 or 255).
            1 | 8 => 1,
            16 => 2,
            32 => 4,
            other => {
                return Err(RenderError::Undecodable(format!(
                    "{other} bits allocated is not supported"
                )))
            }
        };
        let stored = u32::from(decoded.bits_stored()).clamp(1, 32);
        let stored = if decoded.bits_allocated() == 1 { 8 } else { stored };
        let high = u32::from(decoded.high_bit());
        let shift = if decoded.bits_allocated() == 1 {
            0
        } else {
            (high + 1).saturating_sub(stored).min(31)
        };
        let samples = usize::from(decoded.samples_per_pixel().max(1));
        let needed = pixels * samples * bytes;
        // YBR_FULL_422 native frames hold two samples per pixel.
        let minimum = if decoded.photometric_interpretation() == &PhotometricInterpretation::YbrFull422 {
            pixels * 2 * bytes
        } else {
            needed
        };
        if decoded.data().len() < minimum {
            return Err(RenderError::Undecodable(format!(
                "pixel data has {} bytes, the frame needs {needed}",
                decoded.data().len()
            )));
        }
        Ok(Frame {
            data: decoded.data(),
            bytes,
            shift,
            mask: if stored >= 32 {
                u32::MAX
            } else {
                (1u32 << stored) - 1
            },
            sign_bit: (decoded.pixel_representation() == PixelRepresentation::Signed && stored < 32)
                .then_some(1u32 << (stored - 1)),
            pixels,
        })
    }

    /// The smallest and largest values [`Frame::sample`] can return.
    fn stored_range(&self) -> (i64, i64) {
        match self.sign_bit {
            Some(bit) => (-i64::from(bit), i64::from(bit) - 1),
            None => (0, i64::from(self.mask)),
        }
    }

    /// The stored value of sample `i` (counting samples, not pixels).
    fn sample(&self, i: usize) -> i64 {
        let at = i * self.bytes;
        let raw = match self.bytes {
            1 => u32::from(self.data[at]),
            2 => u32::from(u16::from_ne_bytes([self.data[at], self.data[at + 1]])),
            _ => u32::from_ne_bytes([
                self.data[at],
                self.data[at + 1],
                self.data[at + 2],
                self.data[at + 3],
            ]),
        };
        let v = (raw >> self.shift) & self.mask;
        match self.sign_bit {
            Some(bit) if v & bit != 0 => i64::from(v) - 2 * i64::from(bit),
            _ => i64::from(v),
        }
    }
}

/// A LUT as PS3.3 C.11.1.1 describes it: values below the first mapped one take the first
/// entry, values past the end the last.
struct Lut {
    first: i64,
    entries: Vec<u16>,
    bits: u32,
}

impl Lut {
    fn from_item(
        descriptor: &[i64],
        data: &dicom_core::value::Value<dicom_object::InMemDicomObject>,
    ) -> Option<Lut> {
        let (count, first, bits) = match descriptor {
            [count, first, bits] => (*count, *first, *bits),
            _ => return None,
        };
        let count = if count == 0 { 65536 } else { count as usize };
        let bits = bits.clamp(1, 16) as u32;
        let entries: Vec<u16> = match data.primitive()? {
            PrimitiveValue::U16(v) => v.to_vec(),
            PrimitiveValue::I16(v) => v.iter().map(|x| *x as u16).collect(),
            // 8-bit entries are stored one per byte (PS3.3 C.7.6.3.1.5).
            PrimitiveValue::U8(b) if bits <= 8 && b.len() < 2 * count => {
                b.iter().map(|x| u16::from(*x)).collect()
            }
            PrimitiveValue::U8(b) => b
                .chunks_exact(2)
                .map(|w| u16::from_le_bytes([w[0], w[1]]))
                .collect(),
            _ => return None,
        };
        let entries = if entries.len() < count && bits <= 8 && entries.len() * 2 >= count {
            // 8-bit entries packed two per 16-bit word.
            entries
                .iter()
                .flat_map(|w| w.to_le_bytes())
                .map(u16::from)
                .take(count)
                .collect()
        } else {
            entries
        };
        (!entries.is_empty()).then_some(Lut { first, entries, bits })
    }

    fn get(&self, value: i64) -> u16 {
        let index = (value - self.first).clamp(0, self.entries.len() as i64 - 1);
        self.entries[index as usize]
    }

    /// The entry for `value` on 0..=255.
    fn get_8bit(&self, value: i64) -> u8 {
        let e = u32::from(self.get(value)).min((1 << self.bits) - 1);
        if self.bits > 8 {
            (e >> (self.bits - 8)) as u8
        } else {
            e as u8
        }
    }
}

fn lut_in(item: &dicom_object::InMemDicomObject, descriptor: Tag, data: Tag) -> Option<Lut> {
    let descriptor = item.get(descriptor)?.to_multi_int::<i64>().ok()?;
    Lut::from_item(&descriptor, item.get(data)?.value())
}

/// The VOI transformation to 0.0..=255.0.
enum Voi {
    Window(Window),
    Lut(Lut),
}

impl Voi {
    fn apply(&self, x: f64) -> f64 {
        match self {
            Voi::Window(w) => window(w, x),
            Voi::Lut(lut) => {
                let max = f64::from((1u32 << lut.bits) - 1);
                f64::from(lut.get(x.floor() as i64)) / max * 255.0
            }
        }
    }
}

/// PS3.3 C.11.2.1.2.1 (LINEAR), C.11.2.1.3.2 (LINEAR_EXACT), C.11.2.1.3.1 (SIGMOID), with an
/// output range of 0..=255.
fn window(w: &Window, x: f64) -> f64 {
    let (c, width) = (w.center, w.width);
    match w.function {
        VoiFunction::Linear => {
            if x <= c - 0.5 - (width - 1.0) / 2.0 {
                0.0
            } else if x > c - 0.5 + (width - 1.0) / 2.0 {
                255.0
            } else {
                ((x - (c - 0.5)) / (width - 1.0) + 0.5) * 255.0
            }
        }
        VoiFunction::LinearExact => {
            if x <= c - width / 2.0 {
                0.0
            } else if x > c + width / 2.0 {
                255.0
            } else {
                ((x - c) / width + 0.5) * 255.0
            }
        }
        VoiFunction::Sigmoid => 255.0 / (1.0 + (-4.0 * (x - c) / width).exp()),
    }
}

fn monochrome(
    object: &DefaultDicomObject,
    decoded: &dicom_pixeldata::DecodedPixelData<'_>,
    frame: &Frame<'_>,
    requested: Option<Window>,
) -> Result<Vec<u8>, RenderError> {
    let modality_lut = object
        .get(tags::MODALITY_LUT_SEQUENCE)
        .and_then(|s| s.items()?.first())
        .and_then(|item| lut_in(item, tags::LUT_DESCRIPTOR, tags::LUT_DATA));
    let rescale = decoded
        .rescale()
        .ok()
        .and_then(|r| r.first().copied())
        .filter(|r| r.slope.is_finite() && r.intercept.is_finite() && r.slope != 0.0);
    let modality = |stored: i64| -> f64 {
        match (&modality_lut, rescale) {
            (Some(lut), _) => f64::from(lut.get(stored)),
            (None, Some(r)) => stored as f64 * r.slope + r.intercept,
            (None, None) => stored as f64,
        }
    };
    let from_object = || -> Option<Voi> {
        let function = decoded
            .voi_lut_function()
            .ok()
            .flatten()
            .and_then(|f| f.first().copied())
            .map(|f| match f {
                dicom_pixeldata::VoiLutFunction::Linear => VoiFunction::Linear,
                dicom_pixeldata::VoiLutFunction::LinearExact => VoiFunction::LinearExact,
                dicom_pixeldata::VoiLutFunction::Sigmoid => VoiFunction::Sigmoid,
            })
            .unwrap_or_default();
        let window = decoded
            .window()
            .ok()
            .flatten()
            .and_then(|w| w.first().copied())
            .map(|w| Window {
                center: w.center,
                width: w.width,
                function,
            });
        if let Some(w) = window.filter(|w| w.validate().is_ok()) {
            return Some(Voi::Window(w));
        }
        let lut = decoded.voi_lut_sequence().ok().flatten()?.first()?;
        (!lut.data.is_empty()).then(|| {
            Voi::Lut(Lut {
                first: i64::from(lut.min_pixel_value),
                entries: lut.data.clone(),
                bits: u32::from(lut.bits_stored).clamp(1, 16),
            })
        })
    };
    let voi = match requested.map(Voi::Window).or_else(from_object) {
        Some(v) => v,
        None => {
            let (mut min, mut max) = (f64::INFINITY, f64::NEG_INFINITY);
            for i in 0..frame.pixels {
                let v = modality(frame.sample(i));
                min = min.min(v);
                max = max.max(v);
            }
            if max <= min {
                // A uniform frame: mid-grey rather than a division by zero.
                return Ok(vec![128; frame.pixels]);
            }
            Voi::Window(Window {
                center: (min + max) / 2.0,
                width: max - min,
                function: VoiFunction::LinearExact,
            })
        }
    };
    Ok(map_samples(frame, |stored| {
        voi.apply(modality(stored)).round().clamp(0.0, 255.0) as u8
    }))
}

/// `grey` of every sample of `frame`. With fewer possible stored values than pixels (65,536
/// for a 16-bit CT frame of 262,144 pixels) each value is worked out once and every pixel
/// becomes a table look-up: the modality and VOI arithmetic was most of a rendered frame.
fn map_samples(frame: &Frame<'_>, grey: impl Fn(i64) -> u8) -> Vec<u8> {
    let (low, high) = frame.stored_range();
    if high - low < frame.pixels as i64 {
        let table: Vec<u8> = (low..=high).map(&grey).collect();
        return (0..frame.pixels)
            .map(|i| table[(frame.sample(i) - low) as usize])
            .collect();
    }
    (0..frame.pixels).map(|i| grey(frame.sample(i))).collect()
}

fn palette(object: &DefaultDicomObject, frame: &Frame<'_>) -> Result<Vec<u8>, RenderError> {
    let lut = |descriptor, data| {
        lut_in(object, descriptor, data).ok_or_else(|| {
            RenderError::Undecodable("palette colour LUTs missing or not supported (segmented?)".into())
        })
    };
    let red = lut(
        tags::RED_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
        tags::RED_PALETTE_COLOR_LOOKUP_TABLE_DATA,
    )?;
    let green = lut(
        tags::GREEN_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
        tags::GREEN_PALETTE_COLOR_LOOKUP_TABLE_DATA,
    )?;
    let blue = lut(
        tags::BLUE_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
        tags::BLUE_PALETTE_COLOR_LOOKUP_TABLE_DATA,
    )?;
    let mut out = Vec::with_capacity(frame.pixels * 3);
    for i in 0..frame.pixels {
        let v = frame.sample(i);
        out.extend_from_slice(&[red.get_8bit(v), green.get_8bit(v), blue.get_8bit(v)]);
    }
    Ok(out)
}

/// PS3.3 C.7.6.3.1.2: YBR_FULL back to RGB.
fn ybr_to_rgb(y: f64, cb: f64, cr: f64) -> [u8; 3] {
    let clamp = |v: f64| v.round().clamp(0.0, 255.0) as u8;
    [
        clamp(y + 1.402 * (cr - 128.0)),
        clamp(y - 0.344136 * (cb - 128.0) - 0.714136 * (cr - 128.0)),
        clamp(y + 1.772 * (cb - 128.0)),
    ]
}

fn colour(decoded: &dicom_pixeldata::DecodedPixelData<'_>, pixels: usize) -> Result<Vec<u8>, RenderError> {
    if decoded.samples_per_pixel() != 3 {
        return Err(RenderError::Undecodable(format!(
            "{} samples per pixel for {}",
            decoded.samples_per_pixel(),
            decoded.photometric_interpretation()
        )));
    }
    let frame = Frame {
        sign_bit: None,
        ..Frame::new(decoded, pixels)?
    };
    // Colour samples of more than 8 bits keep their top 8.
    let stored = u32::from(decoded.bits_stored()).min(frame.mask.count_ones());
    let to_8bit = |v: i64| (v.max(0) >> stored.saturating_sub(8)).min(255) as u8;
    let pi = decoded.photometric_interpretation();
    let subsampled =
        pi == &PhotometricInterpretation::YbrFull422 && decoded.data().len() < pixels * 3 * frame.bytes;
    let mut out = Vec::with_capacity(pixels * 3);
    if subsampled {
        // Y1 Y2 Cb Cr for each pair of pixels (PS3.3 C.7.6.3.1.2).
        if decoded.columns() % 2 != 0 {
            return Err(RenderError::Undecodable(
                "YBR_FULL_422 with an odd number of columns".into(),
            ));
        }
        for i in 0..pixels {
            let pair = i / 2 * 4;
            let y = to_8bit(frame.sample(pair + i % 2));
            let cb = to_8bit(frame.sample(pair + 2));
            let cr = to_8bit(frame.sample(pair + 3));
            out.extend_from_slice(&ybr_to_rgb(f64::from(y), f64::from(cb), f64::from(cr)));
        }
        return Ok(out);
    }
    let planar = decoded.planar_configuration() == PlanarConfiguration::PixelFirst;
    for i in 0..pixels {
        let s = |c: usize| to_8bit(frame.sample(if planar { c * pixels + i } else { i * 3 + c }));
        let (a, b, c) = (s(0), s(1), s(2));
        if pi == &PhotometricInterpretation::Rgb {
            out.extend_from_slice(&[a, b, c]);
        } else {
            out.extend_from_slice(&ybr_to_rgb(f64::from(a), f64::from(b), f64::from(c)));
        }
    }
    Ok(out)
}

/// The size of a `width`×`height` image scaled to fit in `viewport`, aspect ratio kept. It
/// scales up as well as down: the result touches the box on one side and never exceeds it.
pub fn fitted_size(width: u32, height: u32, viewport: (u32, u32)) -> (u32, u32) {
    let (vw, vh) = (viewport.0.min(MAX_VIEWPORT), viewport.1.min(MAX_VIEWPORT));
    let scale = (f64::from(viewport.0) / f64::from(width)).min(f64::from(viewport.1) / f64::from(height));
    let side = |v: u32, limit: u32| ((f64::from(v) * scale).round() as u32).clamp(1, limit);
    (side(width, vw), side(height, vh))
}

fn encode(image: Image, width: u32, height: u32, params: &RenderParams) -> Result<Vec<u8>, RenderError> {
    let target = params
        .viewport
        .map(|v| fitted_size(width, height, v))
        .unwrap_or((width, height));
    let bad_buffer = || RenderError::Internal("image buffer of the wrong size".into());
    let (data, color, (w, h)) = match image {
        Image::Grey(data) => {
            let buffer = ImageBuffer::<Luma<u8>, _>::from_raw(width, height, data).ok_or_else(bad_buffer)?;
            let buffer = if target == (width, height) {
                buffer
            } else {
                image::imageops::resize(&buffer, target.0, target.1, FilterType::Triangle)
            };
            (buffer.into_raw(), ExtendedColorType::L8, target)
        }
        Image::Rgb(data) => {
            let buffer = ImageBuffer::<Rgb<u8>, _>::from_raw(width, height, data).ok_or_else(bad_buffer)?;
            let buffer = if target == (width, height) {
                buffer
            } else {
                image::imageops::resize(&buffer, target.0, target.1, FilterType::Triangle)
            };
            (buffer.into_raw(), ExtendedColorType::Rgb8, target)
        }
    };
    let mut out = Vec::new();
    let written = match params.format {
        // jpeg-encoder rather than `image`'s own encoder: a 512×512 CT frame took 29 % of a
        // rendered request's CPU there. Colour keeps `image`'s 4:2:2 subsampling.
        ImageFormat::Jpeg => {
            let (width, height) = match (u16::try_from(w), u16::try_from(h)) {
                (Ok(width), Ok(height)) => (width, height),
                _ => {
                    return Err(RenderError::Internal(format!(
                        "a {w}×{h} image is too large for JPEG"
                    )))
                }
            };
            let mut encoder = jpeg_encoder::Encoder::new(&mut out, params.quality.clamp(1, 100));
            encoder.set_sampling_factor(jpeg_encoder::SamplingFactor::F_2_1);
            let colour = match color {
                ExtendedColorType::Rgb8 => jpeg_encoder::ColorType::Rgb,
                _ => jpeg_encoder::ColorType::Luma,
            };
            encoder
                .encode(&data, width, height, colour)
                .map_err(|e| e.to_string())
        }
        ImageFormat::Png => image::codecs::png::PngEncoder::new(&mut out)
            .write_image(&data, w, h, color)
            .map_err(|e| e.to_string()),
    };
    written.map_err(|e| RenderError::Internal(format!("cannot encode the image: {e}")))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_look_up_table_gives_what_the_arithmetic_gives() {
        // A curve, not a line, over signed 12-bit values stored high in 16-bit samples.
        let grey = |v: i64| ((v as f64 / 700.0).sin() * 127.5 + 127.5).round() as u8;
        let samples: Vec<u8> = (0..6000u32)
            .flat_map(|i| {
                let stored = (i.wrapping_mul(2_654_435_761) >> 20) & 0x0FFF; // spread over both signs
                ((stored << 4) as u16).to_ne_bytes()
            })
            .collect();
        let frame = Frame {
            data: &samples,
            bytes: 2,
            shift: 4,
            mask: 0x0FFF,
            sign_bit: Some(0x0800),
            pixels: 6000,
        };
        assert_eq!(frame.stored_range(), (-2048, 2047));
        let direct: Vec<u8> = (0..frame.pixels).map(|i| grey(frame.sample(i))).collect();
        assert!(direct.iter().any(|&g| g < 20) && direct.iter().any(|&g| g > 235));
        // 4,096 possible values for 6,000 pixels: the table is used.
        assert_eq!(map_samples(&frame, grey), direct);
        // Fewer pixels than values: computed one by one, same answer.
        let few = Frame { pixels: 100, ..frame };
        assert_eq!(map_samples(&few, grey), direct[..100]);
    }

    #[test]
    fn linear_window_follows_ps3_3() {
        let w = |c, width| Window {
            center: c,
            width,
            function: VoiFunction::Linear,
        };
        // Center 0.5, width 2: x <= -0.5 → 0, x > 0.5 → 255, in between linear.
        assert_eq!(window(&w(0.5, 2.0), -0.5), 0.0);
        assert_eq!(window(&w(0.5, 2.0), 0.6), 255.0);
        assert_eq!(window(&w(0.5, 2.0), 0.0), 127.5);
        // Width 1 is a threshold at center - 0.5.
        assert_eq!(window(&w(10.0, 1.0), 9.5), 0.0);
        assert_eq!(window(&w(10.0, 1.0), 9.6), 255.0);
        let exact = Window {
            function: VoiFunction::LinearExact,
            ..w(100.0, 50.0)
        };
        assert_eq!(window(&exact, 75.0), 0.0);
        assert_eq!(window(&exact, 100.0), 127.5);
        assert_eq!(window(&exact, 125.0), 255.0);
        let sigmoid = Window {
            function: VoiFunction::Sigmoid,
            ..w(100.0, 50.0)
        };
        assert_eq!(window(&sigmoid, 100.0), 127.5);
    }

    #[test]
    fn viewport_keeps_the_aspect_ratio() {
        assert_eq!(fitted_size(512, 256, (128, 128)), (128, 64));
        assert_eq!(fitted_size(256, 512, (128, 128)), (64, 128));
        assert_eq!(fitted_size(16, 16, (64, 32)), (32, 32));
        assert_eq!(fitted_size(100, 50, (u32::MAX, 25)), (50, 25));
        assert_eq!(fitted_size(1, 10000, (128, 128)), (1, 128));
    }

    #[test]
    fn ybr_grey_stays_grey() {
        assert_eq!(ybr_to_rgb(100.0, 128.0, 128.0), [100, 100, 100]);
    }
}
