//! A structural pass over encoded data sets before any parser sees them.
//!
//! dicom-rs allocates an element's declared length before reading it and parses nested
//! sequences recursively. So a few bytes from a peer could make it allocate gigabytes (a lying
//! length) or overflow the stack (thousands of nested sequences). This walker reads element
//! headers with the parser's own rules, seeks over values, and refuses a data set when a
//! declared length runs past the bytes actually present or nesting goes deeper than
//! [`MAX_DEPTH`]. It allocates nothing that depends on the input.

use std::io::{self, Read, Seek};

use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
use dicom_core::{Tag, VR};
use dicom_dictionary_std::StandardDataDictionary;

/// Deepest nesting accepted, counting sequences and items (so 32 nested sequences).
pub const MAX_DEPTH: usize = 64;

/// What checking and then parsing a data set may cost, whatever the data set declares.
///
/// A deflated data set of a megabyte can inflate to gigabytes, and the parser holds every
/// element before Pixel Data in memory: both are bounded here, while inflating and walking,
/// before anything that size exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest inflated size of a deflated data set (`max_inflated_bytes`).
    pub max_inflated: u64,
    /// Largest part of a data set the header parse holds in memory: everything before the
    /// top-level Pixel Data, or the whole data set when it has none (`max_header_bytes`).
    pub max_header: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_inflated: 128 << 20,
            max_header: 64 << 20,
        }
    }
}

const UNDEFINED: u32 = 0xFFFF_FFFF;
const PIXEL_DATA: (u16, u16) = (0x7FE0, 0x0010);

/// How the element headers of a transfer syntax are laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub explicit_vr: bool,
    pub big_endian: bool,
    pub deflated: bool,
}

impl Layout {
    /// Layout of a transfer syntax UID, as the parser will read it: byte order and data set
    /// compression come from dicom-rs's own registry, so that the walk never reads raw bytes
    /// the parser inflates (a campaign finding: JPIP HTJ2K Referenced Deflate, 1.2.4.205,
    /// was walked uncompressed while the parser inflated it and allocated a length of
    /// 0xC0C00010 read from the inflated data). Implicit VR little endian is the one syntax
    /// without explicit VRs; a syntax the registry does not know is refused by the parser, and
    /// walked as explicit VR little endian meanwhile.
    pub fn of(transfer_syntax: &str) -> Layout {
        use dicom_encoding::transfer_syntax::{Codec, Endianness, TransferSyntaxIndex};
        // The same trimming as the parser's (dicom-object's `FileMetaTable::transfer_syntax`).
        let ts = transfer_syntax.trim_end_matches(|c: char| c.is_whitespace() || c == '\0');
        let known = dicom_transfer_syntax_registry::TransferSyntaxRegistry.get(ts);
        Layout {
            explicit_vr: ts != "1.2.840.10008.1.2",
            big_endian: known.is_some_and(|t| t.endianness() == Endianness::Big),
            deflated: known.is_some_and(|t| matches!(t.codec(), Codec::Dataset(_))),
        }
    }
}

/// A source of bytes that can skip forward cheaply.
pub trait Source {
    fn read_exact(&mut self, buf: &mut [u8]) -> io::Result<()>;
    fn skip(&mut self, n: u64) -> io::Result<()>;
}

/// A seekable reader (a file, a byte slice).
pub struct Seekable<R>(pub R);

impl<R: Read + Seek> Source for Seekable<R> {
    fn read_exact(&mut self, buf: &mut [u8]) -> io::Result<()> {
        self.0.read_exact(buf)
    }

    fn skip(&mut self, n: u64) -> io::Result<()> {
        let n = i64::try_from(n).map_err(|_| io::Error::other("skip too large"))?;
        self.0.seek(io::SeekFrom::Current(n)).map(|_| ())
    }
}

/// A buffered file: skips within the buffer keep it (`seek_relative`), so walking a header of
/// short elements costs one read per 16 KiB instead of a read and a seek per element.
pub struct Buffered<R>(pub io::BufReader<R>);

impl<R: Read + Seek> Source for Buffered<R> {
    fn read_exact(&mut self, buf: &mut [u8]) -> io::Result<()> {
        self.0.read_exact(buf)
    }

    fn skip(&mut self, n: u64) -> io::Result<()> {
        let n = i64::try_from(n).map_err(|_| io::Error::other("skip too large"))?;
        self.0.seek_relative(n)
    }
}

/// A reader that can only be read forward (an inflating decoder).
pub struct Streaming<R>(pub R);

impl<R: Read> Source for Streaming<R> {
    fn read_exact(&mut self, buf: &mut [u8]) -> io::Result<()> {
        self.0.read_exact(buf)
    }

    fn skip(&mut self, n: u64) -> io::Result<()> {
        let copied = io::copy(&mut (&mut self.0).take(n), &mut io::sink())?;
        if copied == n {
            Ok(())
        } else {
            Err(io::ErrorKind::UnexpectedEof.into())
        }
    }
}

/// Why a data set was refused, or the I/O error that stopped the walk.
#[derive(Debug)]
pub enum CheckError {
    Invalid(String),
    /// Well formed, perhaps, but past what the configured [`Limits`] let the server hold.
    TooLarge(String),
    Io(io::Error),
}

impl std::fmt::Display for CheckError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CheckError::Invalid(m) | CheckError::TooLarge(m) => f.write_str(m),
            CheckError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl From<io::Error> for CheckError {
    fn from(e: io::Error) -> Self {
        CheckError::Io(e)
    }
}

fn invalid<T>(msg: String) -> Result<T, CheckError> {
    Err(CheckError::Invalid(msg))
}

/// The top-level Pixel Data element found where the walk stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PixelData {
    /// Its VR ("OW" when the encoding does not say).
    pub vr: [u8; 2],
    /// Undefined length: encapsulated (compressed) fragments.
    pub encapsulated: bool,
}

/// Checks an encoded data set held in memory (identifiers, small objects).
pub fn check_bytes(
    bytes: &[u8],
    layout: Layout,
    stop_at_pixel_data: bool,
    limits: Limits,
) -> Result<(), CheckError> {
    check_slice(bytes, layout, stop_at_pixel_data, limits).map(|_| ())
}

/// Like [`check_file`] for a data set held in memory: checks it and says where its pixel data is.
pub fn check_slice(
    bytes: &[u8],
    layout: Layout,
    stop_at_pixel_data: bool,
    limits: Limits,
) -> Result<Option<PixelData>, CheckError> {
    if layout.deflated {
        let total = inflated_size(flate2::read::DeflateDecoder::new(bytes), limits)?;
        let mut source = Streaming(flate2::read::DeflateDecoder::new(bytes));
        return walk(&mut source, total, layout, stop_at_pixel_data, limits, None);
    }
    let mut source = Seekable(io::Cursor::new(bytes));
    let total = bytes.len() as u64;
    walk(&mut source, total, layout, stop_at_pixel_data, limits, None)
}

/// Checks the data set stored in a file from `offset` on (a Part 10 file after its meta group).
pub fn check_file(
    path: &std::path::Path,
    offset: u64,
    layout: Layout,
    stop_at_pixel_data: bool,
    limits: Limits,
) -> Result<Option<PixelData>, CheckError> {
    let open = || -> io::Result<io::BufReader<std::fs::File>> {
        let mut file = std::fs::File::open(path)?;
        file.seek(io::SeekFrom::Start(offset))?;
        Ok(io::BufReader::with_capacity(16 * 1024, file))
    };
    let size = std::fs::metadata(path)?.len().saturating_sub(offset);
    if layout.deflated {
        let total = inflated_size(flate2::read::DeflateDecoder::new(open()?), limits)?;
        let mut source = Streaming(flate2::read::DeflateDecoder::new(open()?));
        return walk(&mut source, total, layout, stop_at_pixel_data, limits, None);
    }
    walk(
        &mut Buffered(open()?),
        size,
        layout,
        stop_at_pixel_data,
        limits,
        None,
    )
}

/// Where each top-level element of a (not deflated) data set held in memory starts, in order,
/// until `visit` returns false: `bytes` may be the first part of a data set, as long as the
/// elements visited lie within it. Lengths and nesting are checked as [`check_slice`] does.
pub fn top_level_elements(
    bytes: &[u8],
    layout: Layout,
    visit: &mut dyn FnMut((u16, u16), u64) -> bool,
) -> Result<(), CheckError> {
    let limits = Limits {
        max_inflated: 0,
        max_header: u64::MAX,
    };
    let mut source = Seekable(io::Cursor::new(bytes));
    walk(
        &mut source,
        bytes.len() as u64,
        layout,
        false,
        limits,
        Some(visit),
    )
    .map(|_| ())
}

/// Checks that the deflated data set stored in a file from `offset` on inflates within the
/// limit, before something reads it whole into memory (a conversion, a rendering).
pub fn check_inflated_file(path: &std::path::Path, offset: u64, limits: Limits) -> Result<u64, CheckError> {
    let mut file = std::fs::File::open(path)?;
    file.seek(io::SeekFrom::Start(offset))?;
    inflated_size(
        flate2::read::DeflateDecoder::new(io::BufReader::new(file)),
        limits,
    )
}

/// Inflates into nothing, stopping one byte past the limit: memory stays one buffer whatever
/// the stream's ratio.
fn inflated_size<R: Read>(decoder: R, limits: Limits) -> Result<u64, CheckError> {
    let max = limits.max_inflated;
    let n = io::copy(&mut decoder.take(max + 1), &mut io::sink())
        .map_err(|e| CheckError::Invalid(format!("deflated data set does not inflate: {e}")))?;
    if n > max {
        // Short enough for a DIMSE Error Comment (64 characters).
        return Err(CheckError::TooLarge(format!(
            "deflated data set exceeds max_inflated_bytes ({max})"
        )));
    }
    Ok(n)
}

/// VRs whose explicit header has a 2-byte length; every other VR, unknown ones included, has
/// two reserved bytes and a 4-byte length (that is how the parser reads them).
fn short_length(vr: [u8; 2]) -> bool {
    matches!(
        &vr,
        b"AE"
            | b"AS"
            | b"AT"
            | b"CS"
            | b"DA"
            | b"DS"
            | b"DT"
            | b"FL"
            | b"FD"
            | b"IS"
            | b"LO"
            | b"LT"
            | b"PN"
            | b"SH"
            | b"SL"
            | b"SS"
            | b"ST"
            | b"TM"
            | b"UI"
            | b"UL"
            | b"US"
    )
}

/// The VR the parser gives an element: the one written (an unknown one read as UN), or with
/// implicit VR the dictionary's (OW for Pixel Data and overlays), as `dicom-encoding` decides.
fn parsed_vr(tag: (u16, u16), written: Option<[u8; 2]>) -> VR {
    match written {
        Some(bytes) => VR::from_binary(bytes).unwrap_or(VR::UN),
        None if tag == PIXEL_DATA || (tag.0 >> 8 == 0x60 && tag.1 == 0x3000) => VR::OW,
        None => StandardDataDictionary
            .by_tag(Tag(tag.0, tag.1))
            .map_or(VR::UN, |e| e.vr().relaxed()),
    }
}

/// Size of one value of a binary numeric VR (1 for every other VR).
fn value_size(vr: VR) -> u32 {
    match vr {
        VR::US | VR::SS | VR::OW => 2,
        VR::UL | VR::SL | VR::OL | VR::FL | VR::OF | VR::AT => 4,
        VR::FD | VR::OD | VR::SV | VR::UV | VR::OV => 8,
        _ => 1,
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum FrameKind {
    Sequence,
    Item,
    /// Encapsulated pixel data: its items are fragments of raw bytes, not data sets.
    Fragments,
}

#[derive(Clone, Copy)]
struct Frame {
    kind: FrameKind,
    /// End position for a defined length, `None` for an undefined one (ends at a delimiter).
    end: Option<u64>,
    explicit_vr: bool,
}

struct Walker<'a, S> {
    source: &'a mut S,
    pos: u64,
    total: u64,
    /// Where the innermost item or sequence of defined length that holds `pos` ends (`total`
    /// outside any): no element may run past it.
    bound: u64,
    big_endian: bool,
}

impl<S: Source> Walker<'_, S> {
    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], CheckError> {
        let mut b = [0u8; N];
        self.source.read_exact(&mut b)?;
        self.pos += N as u64;
        Ok(b)
    }

    fn u16(&mut self) -> Result<u16, CheckError> {
        let b = self.bytes::<2>()?;
        Ok(if self.big_endian {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        })
    }

    fn u32(&mut self) -> Result<u32, CheckError> {
        let b = self.bytes::<4>()?;
        Ok(if self.big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        })
    }

    fn remaining(&self) -> u64 {
        self.bound.saturating_sub(self.pos)
    }

    fn fits(&self, tag: (u16, u16), len: u32) -> Result<(), CheckError> {
        if u64::from(len) > self.remaining() {
            return invalid(format!(
                "element ({:04X},{:04X}) declares {len} bytes but only {} remain",
                tag.0,
                tag.1,
                self.remaining()
            ));
        }
        Ok(())
    }

    fn skip(&mut self, tag: (u16, u16), len: u32) -> Result<(), CheckError> {
        self.fits(tag, len)?;
        self.source.skip(u64::from(len))?;
        self.pos += u64::from(len);
        Ok(())
    }
}

fn push(frames: &mut Vec<Frame>, frame: Frame) -> Result<(), CheckError> {
    if frames.len() >= MAX_DEPTH {
        return invalid(format!("sequences nested deeper than {MAX_DEPTH} levels"));
    }
    frames.push(frame);
    Ok(())
}

/// Walks element headers linearly; sequences and items are entered, values skipped.
/// Walks the data set; returns the top-level Pixel Data header when the walk stopped there.
fn walk<S: Source>(
    source: &mut S,
    total: u64,
    layout: Layout,
    stop_at_pixel_data: bool,
    limits: Limits,
    mut visit: Option<&mut dyn FnMut((u16, u16), u64) -> bool>,
) -> Result<Option<PixelData>, CheckError> {
    // What the parser will hold: up to Pixel Data when it stops there, else everything.
    let held_in_memory = |end: u64| -> Result<(), CheckError> {
        if end > limits.max_header {
            let what = if stop_at_pixel_data {
                "header before Pixel Data"
            } else {
                "data set"
            };
            return Err(CheckError::TooLarge(format!(
                "{what} exceeds max_header_bytes ({})",
                limits.max_header
            )));
        }
        Ok(())
    };
    let mut w = Walker {
        source,
        pos: 0,
        total,
        bound: total,
        big_endian: layout.big_endian,
    };
    let mut frames: Vec<Frame> = Vec::new();
    loop {
        // Leave the frames whose defined length is used up.
        while let Some(end) = frames.last().and_then(|f| f.end) {
            if w.pos < end {
                break;
            }
            if w.pos > end {
                return invalid("an item or sequence overruns its declared length".into());
            }
            frames.pop();
        }
        // An undefined length inside a defined one must end (at its delimiter) before the
        // defined one does: the parser, which trusts the delimiters, would otherwise read on
        // past that end while this walk stopped, and the two would no longer agree on where
        // the next element starts (a fuzz finding: 851 bytes that made the parser allocate
        // 540 MiB for a "length" the walk never read).
        let enclosing_end = frames.iter().filter_map(|f| f.end).min();
        w.bound = enclosing_end.unwrap_or(total);
        if enclosing_end.is_some_and(|end| end <= w.pos) {
            return invalid(
                "a sequence or item of undefined length is not closed before the item or \
                 sequence that holds it ends"
                    .into(),
            );
        }
        // Fewer bytes than an element header: the parser stops there, allocating nothing.
        if w.total.saturating_sub(w.pos) < 8 {
            return Ok(None);
        }
        if w.remaining() < 8 {
            return invalid("an item or sequence ends inside an element header".into());
        }
        let explicit_vr = frames.last().map_or(layout.explicit_vr, |f| f.explicit_vr);
        let start = w.pos;
        let tag = (w.u16()?, w.u16()?);
        // A sequence holds items and nothing else (PS3.5 §7.5); the parser reads anything
        // else there as it can, which this walk cannot follow.
        let in_sequence = frames
            .last()
            .is_some_and(|f| matches!(f.kind, FrameKind::Sequence | FrameKind::Fragments));
        if in_sequence && tag != (0xFFFE, 0xE000) && tag != (0xFFFE, 0xE0DD) {
            return invalid(format!(
                "element ({:04X},{:04X}) stands in a sequence where an item should begin",
                tag.0, tag.1
            ));
        }
        if frames.is_empty() && tag.0 != 0xFFFE {
            if let Some(visit) = visit.as_mut() {
                if !visit(tag, start) {
                    return Ok(None);
                }
            }
        }
        if tag.0 == 0xFFFE {
            let len = w.u32()?;
            // A delimiter's length is 0 (PS3.5 §7.5): where the parser does not take it for a
            // delimiter it reads a value of that length, allocated first (four fuzz findings:
            // 0xE0000000, 0x80000000, 0x37068600 and 0x25000000 bytes).
            if matches!(tag.1, 0xE00D | 0xE0DD) && len != 0 {
                return invalid(format!(
                    "({:04X},{:04X}) of {len} bytes: a delimiter has no value",
                    tag.0, tag.1
                ));
            }
            match tag.1 {
                0xE000 => {
                    if frames.last().is_some_and(|f| f.kind == FrameKind::Fragments) {
                        if len == UNDEFINED {
                            return invalid("pixel data fragment of undefined length".into());
                        }
                        w.skip(tag, len)?;
                        continue;
                    }
                    if !in_sequence {
                        return invalid("an item stands outside any sequence".into());
                    }
                    let end = if len == UNDEFINED {
                        None
                    } else {
                        w.fits(tag, len)?;
                        Some(w.pos + u64::from(len))
                    };
                    push(
                        &mut frames,
                        Frame {
                            kind: FrameKind::Item,
                            end,
                            explicit_vr,
                        },
                    )?;
                }
                // A delimiter closes the innermost item or sequence, and only one of undefined
                // length: the parser takes it for the end of whatever it is in. A sequence
                // delimiter in an item left open was taken here for the end of both, while the
                // parser ended the item only and read on inside the sequence, where the
                // top-level Pixel Data this walk stopped at became a nested one the parser read
                // (a part10_header campaign finding: a basic offset table of 0x36000004
                // entries, 3.4 GiB).
                0xE00D
                    if frames
                        .last()
                        .is_some_and(|f| f.kind == FrameKind::Item && f.end.is_none()) =>
                {
                    frames.pop();
                }
                0xE0DD
                    if frames.last().is_some_and(|f| {
                        matches!(f.kind, FrameKind::Sequence | FrameKind::Fragments) && f.end.is_none()
                    }) =>
                {
                    frames.pop();
                }
                // Outside any sequence the parser skips a delimiter of length 0. Anywhere, it
                // reads one it does not take for a delimiter as a value of its length, allocated
                // first (two fuzz findings: stray (FFFE,E0DD) of 0xE0000000 and 0x25000000
                // bytes).
                0xE00D | 0xE0DD if len == 0 && frames.is_empty() => {}
                _ => {
                    return invalid(format!(
                        "({:04X},{:04X}) of {len} bytes is not an item or a delimiter where it stands",
                        tag.0, tag.1
                    ))
                }
            }
            continue;
        }
        let (vr, len) = if explicit_vr {
            let vr = w.bytes::<2>()?;
            if short_length(vr) {
                (Some(vr), u32::from(w.u16()?))
            } else {
                let _reserved = w.u16()?;
                (Some(vr), w.u32()?)
            }
        } else {
            (None, w.u32()?)
        };
        if tag == PIXEL_DATA && frames.is_empty() && stop_at_pixel_data {
            held_in_memory(w.pos)?;
            // The value itself is not walked, but it must be there whole: a truncated image is
            // refused rather than stored and served broken.
            if len != UNDEFINED && w.pos.saturating_add(u64::from(len)) > w.total {
                return invalid(format!(
                    "Pixel Data length {len} exceeds the {} bytes left in the data set",
                    w.total.saturating_sub(w.pos)
                ));
            }
            return Ok(Some(PixelData {
                vr: vr.unwrap_or(*b"OW"),
                encapsulated: len == UNDEFINED,
            }));
        }
        if len == UNDEFINED {
            let kind = if tag == PIXEL_DATA {
                FrameKind::Fragments
            } else {
                FrameKind::Sequence
            };
            // An undefined-length UN holds implicit VR little endian (PS3.5 §6.2.2).
            let inner_explicit = explicit_vr && vr != Some(*b"UN");
            push(
                &mut frames,
                Frame {
                    kind,
                    end: None,
                    explicit_vr: inner_explicit,
                },
            )?;
            continue;
        }
        let is_sequence = match vr {
            Some(vr) => &vr == b"SQ",
            // Implicit VR: the parser knows sequences from the dictionary.
            None => StandardDataDictionary
                .by_tag(Tag(tag.0, tag.1))
                .is_some_and(|e| e.vr().relaxed() == VR::SQ),
        };
        if is_sequence {
            w.fits(tag, len)?;
            let end = Some(w.pos + u64::from(len));
            push(
                &mut frames,
                Frame {
                    kind: FrameKind::Sequence,
                    end,
                    explicit_vr,
                },
            )?;
            continue;
        }
        // A length past the end is a lie, said as such; a true one may still be too much.
        w.fits(tag, len)?;
        held_in_memory(w.pos.saturating_add(u64::from(len)))?;
        // The parser reads binary numbers in whole values and leaves the rest of the length
        // unread, so from there on it would read headers out of the middle of values (and
        // allocate the length it finds there), where this walk reads the next element.
        let unit = value_size(parsed_vr(tag, vr));
        if len % unit != 0 {
            return invalid(format!(
                "element ({:04X},{:04X}) has {len} bytes, not a whole number of {unit}-byte values",
                tag.0, tag.1
            ));
        }
        w.skip(tag, len)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPLICIT: Layout = Layout {
        explicit_vr: true,
        big_endian: false,
        deflated: false,
    };
    const IMPLICIT: Layout = Layout {
        explicit_vr: false,
        big_endian: false,
        deflated: false,
    };

    fn run(bytes: &[u8], layout: Layout) -> Result<(), String> {
        check_bytes(bytes, layout, true, Limits::default()).map_err(|e| e.to_string())
    }

    #[test]
    fn well_formed_elements_and_sequences_pass() {
        let mut b = Vec::new();
        b.extend_from_slice(&[0x10, 0, 0x10, 0, b'P', b'N', 2, 0, b'A', b'B']);
        b.extend_from_slice(&[0x08, 0, 0x40, 0x11, b'S', b'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF]);
        b.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
        b.extend_from_slice(&[0x08, 0, 0x50, 0x11, b'U', b'I', 2, 0, b'1', 0]);
        b.extend_from_slice(&[0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0]);
        b.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
        b.extend_from_slice(&[0xE0, 0x7F, 0x10, 0, b'O', b'W', 0, 0, 4, 0, 0, 0, 1, 2, 3, 4]);
        assert_eq!(run(&b, EXPLICIT), Ok(()));
    }

    #[test]
    fn a_length_past_the_end_is_refused() {
        let b = [
            0x09, 0, 0x10, 0, b'O', b'B', 0, 0, 0x00, 0x00, 0xA5, 0x35, 1, 2, 3, 4,
        ];
        assert!(run(&b, EXPLICIT).unwrap_err().contains("(0009,0010) declares"));
        let b = [0x10, 0, 0x10, 0, 0xFF, 0xFF, 0x00, 0x00, b'A', b'B'];
        assert!(run(&b, IMPLICIT).is_err());
    }

    #[test]
    fn an_unknown_vr_is_read_with_a_four_byte_length_like_the_parser_does() {
        // Regression: 12 bytes made the parser reserve 3.9 GB ("ZZ" read as UN).
        let b = [
            0x09, 0x00, 0x10, 0x00, b'Z', b'Z', 0x00, 0x00, 0x00, 0x00, 0x00, 0xF0,
        ];
        assert!(run(&b, EXPLICIT).is_err());
    }

    #[test]
    fn a_binary_value_of_a_partial_length_is_refused() {
        // FL of 255 bytes: the parser reads 63 floats and then headers 3 bytes off, where a
        // "length" of 0x14000042 made it allocate 320 MiB (fuzz finding, stow_multipart).
        let mut b = vec![0x27, 0x00, 0x4B, 0x10, b'F', b'L', 255, 0];
        b.resize(b.len() + 255, 0);
        let error = run(&b, EXPLICIT).unwrap_err();
        assert!(error.contains("not a whole number of 4-byte values"), "{error}");
        // Implicit VR: the dictionary's VR (Rows is US) decides the same way.
        let rows = [0x28, 0x00, 0x10, 0x00, 3, 0, 0, 0, 1, 2, 3];
        assert!(run(&rows, IMPLICIT).unwrap_err().contains("2-byte values"));
        let rows = [0x28, 0x00, 0x10, 0x00, 2, 0, 0, 0, 1, 2];
        assert_eq!(run(&rows, IMPLICIT), Ok(()));
    }

    #[test]
    fn an_item_tag_that_is_neither_item_nor_delimiter_is_refused() {
        // (FFFE,FFFF) of 0xFFFF0400 bytes: the parser read it as a UN value and reserved
        // 4 GiB for it (fuzz finding, dataset_check), implicit and explicit VR alike.
        let b = [
            0xFE, 0xFF, 0xFF, 0xFF, 0x00, 0x04, 0xFF, 0xFF, 0xBE, 0x08, 0x04, 0xA7, 0x08,
        ];
        for layout in [IMPLICIT, EXPLICIT] {
            let error = run(&b, layout).unwrap_err();
            assert!(error.contains("(FFFE,FFFF)"), "{error}");
        }
        // An item delimiter outside an item, with a length; a sequence delimiter too.
        let b = [0xFE, 0xFF, 0x0D, 0xE0, 0x10, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8];
        assert!(run(&b, EXPLICIT).is_err());
        let b = [0xFE, 0xFF, 0xDD, 0xE0, 0x00, 0, 0, 0xE0, 1, 2, 3, 4, 5, 6, 7, 8];
        let error = run(&b, EXPLICIT).unwrap_err();
        assert!(error.contains("(FFFE,E0DD) of 3758096384 bytes"), "{error}");
        // Without a length, a stray delimiter is a value of nothing, to the parser too.
        let b = [0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0];
        assert_eq!(run(&b, EXPLICIT), Ok(()));
    }

    #[test]
    fn a_sequence_holds_items_only() {
        // An item at the top level, outside any sequence.
        let b = [0xFE, 0xFF, 0x00, 0xE0, 2, 0, 0, 0, 0x41, 0x42];
        assert!(run(&b, EXPLICIT).unwrap_err().contains("outside any sequence"));
        // An element where the sequence's first item should begin.
        let mut b = Vec::new();
        b.extend_from_slice(&[0x08, 0, 0x40, 0x11, b'S', b'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF]);
        b.extend_from_slice(&[0x10, 0, 0x10, 0, b'P', b'N', 2, 0, b'A', b'B']);
        let error = run(&b, EXPLICIT).unwrap_err();
        assert!(error.contains("(0010,0010) stands in a sequence"), "{error}");
    }

    #[test]
    fn a_delimiter_closes_only_the_innermost_item_or_sequence() {
        let sequence = [0x08, 0, 0x40, 0x11, b'S', b'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF];
        let item = [0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF];
        let name = [0x10, 0, 0x10, 0, b'P', b'N', 2, 0, b'A', b'B'];
        let item_end = [0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0];
        let sequence_end = [0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0];
        let closed = [&sequence[..], &item, &name, &item_end, &sequence_end, &name].concat();
        run(&closed, EXPLICIT).unwrap();
        // The sequence delimiter while its item is still open: the parser ends the item only.
        let open = [&sequence[..], &item, &name, &sequence_end, &name].concat();
        let error = run(&open, EXPLICIT).unwrap_err();
        assert!(
            error.contains("(FFFE,E0DD) of 0 bytes is not an item or a delimiter"),
            "{error}"
        );
        // An item delimiter in an item of defined length.
        let defined = [0xFE, 0xFF, 0x00, 0xE0, 18, 0, 0, 0];
        let inside = [&sequence[..], &defined, &name, &item_end, &sequence_end].concat();
        let error = run(&inside, EXPLICIT).unwrap_err();
        assert!(
            error.contains("(FFFE,E00D) of 0 bytes is not an item or a delimiter"),
            "{error}"
        );
    }

    #[test]
    fn an_undefined_length_must_close_before_the_defined_length_around_it_ends() {
        // A sequence of 26 bytes whose item (undefined length) holds a PN of 2 bytes and is
        // still open when the sequence's 26 bytes are used up: what follows would be read by
        // the parser as part of the item, by this walk as the next top-level element.
        let mut b = Vec::new();
        b.extend_from_slice(&[0x08, 0, 0x40, 0x11, b'S', b'Q', 0, 0, 18, 0, 0, 0]);
        b.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
        b.extend_from_slice(&[0x10, 0, 0x10, 0, b'P', b'N', 2, 0, b'A', b'B']);
        b.extend_from_slice(&[0x10, 0, 0x20, 0, b'L', b'O', 2, 0, b'I', b'D']);
        let error = run(&b, EXPLICIT).unwrap_err();
        assert!(error.contains("not closed before"), "{error}");
        // Closed in time, it passes.
        let mut b = Vec::new();
        b.extend_from_slice(&[0x08, 0, 0x40, 0x11, b'S', b'Q', 0, 0, 26, 0, 0, 0]);
        b.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
        b.extend_from_slice(&[0x10, 0, 0x10, 0, b'P', b'N', 2, 0, b'A', b'B']);
        b.extend_from_slice(&[0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0]);
        b.extend_from_slice(&[0x10, 0, 0x20, 0, b'L', b'O', 2, 0, b'I', b'D']);
        assert_eq!(run(&b, EXPLICIT), Ok(()));
        // An element running past its item's defined end.
        let mut b = Vec::new();
        b.extend_from_slice(&[0x08, 0, 0x40, 0x11, b'S', b'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF]);
        b.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 10, 0, 0, 0]);
        b.extend_from_slice(&[0x10, 0, 0x10, 0, b'P', b'N', 4, 0, b'A', b'B', b'C', b'D']);
        b.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
        assert!(run(&b, EXPLICIT)
            .unwrap_err()
            .contains("(0010,0010) declares 4 bytes"));
    }

    #[test]
    fn deep_nesting_is_refused_before_the_parser_recurses() {
        let mut b = Vec::new();
        for _ in 0..5000 {
            b.extend_from_slice(&[0x08, 0, 0x40, 0x11, b'S', b'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF]);
            b.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
        }
        assert!(run(&b, EXPLICIT).unwrap_err().contains("nested deeper"));
    }

    #[test]
    fn undefined_length_un_is_walked_as_implicit_vr() {
        let mut b = Vec::new();
        b.extend_from_slice(&[0x09, 0, 0x10, 0x10, b'U', b'N', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF]);
        b.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
        // Implicit inside: (0009,1011) with a 4-byte length far past the end.
        b.extend_from_slice(&[0x09, 0, 0x11, 0x10, 0x00, 0x00, 0x00, 0x70]);
        assert!(run(&b, EXPLICIT).is_err());
    }

    #[test]
    fn encapsulated_fragments_are_skipped_not_parsed() {
        let mut b = Vec::new();
        // Icon Image Sequence with an item holding encapsulated pixel data.
        b.extend_from_slice(&[0x88, 0, 0x00, 0x02, b'S', b'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF]);
        b.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
        b.extend_from_slice(&[0xE0, 0x7F, 0x10, 0, b'O', b'B', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF]);
        b.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 4, 0, 0, 0, 0xFE, 0xFF, 0x00, 0xE0]);
        b.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
        b.extend_from_slice(&[0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0]);
        b.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
        b.extend_from_slice(&[0x10, 0, 0x10, 0, b'P', b'N', 2, 0, b'A', b'B']);
        assert_eq!(run(&b, EXPLICIT), Ok(()));
    }

    #[test]
    fn big_endian_lengths_are_read_big_endian() {
        let b = [
            0, 0x10, 0, 0x10, b'P', b'N', 0, 2, b'A', b'B', 0, 0x10, 0, 0x20, b'L', b'O', 0, 2, b'X', b' ',
        ];
        let be = Layout::of("1.2.840.10008.1.2.2");
        assert_eq!(run(&b, be), Ok(()));
        let mut bad = b;
        bad[7] = 200;
        assert!(run(&bad, be).is_err());
    }

    #[test]
    fn deflated_data_sets_are_inflated_then_walked() {
        use std::io::Write;
        let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(&[0x09, 0, 0x10, 0, b'O', b'B', 0, 0, 0x00, 0x00, 0xA5, 0x35, 1, 2])
            .unwrap();
        let bytes = enc.finish().unwrap();
        assert!(run(&bytes, Layout::of("1.2.840.10008.1.2.1.99")).is_err());
    }

    /// A private OB element of `len` zero bytes, then a tiny Pixel Data.
    fn big_element_then_pixels(len: u32) -> Vec<u8> {
        let mut b = vec![0x09, 0, 0x10, 0x10, b'O', b'B', 0, 0];
        b.extend_from_slice(&len.to_le_bytes());
        b.resize(b.len() + len as usize, 0);
        b.extend_from_slice(&[0xE0, 0x7F, 0x10, 0, b'O', b'W', 0, 0, 2, 0, 0, 0, 1, 2]);
        b
    }

    fn deflate(bytes: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn a_deflate_bomb_is_refused_at_the_inflated_limit() {
        // 8 MiB of zeros deflate to a few KiB; the limit is what the stream may inflate to.
        let bomb = deflate(&big_element_then_pixels(8 << 20));
        assert!(bomb.len() < 64 << 10, "{} bytes", bomb.len());
        let deflated = Layout::of("1.2.840.10008.1.2.1.99");
        let small = Limits {
            max_inflated: 1 << 20,
            max_header: 64 << 20,
        };
        let error = check_slice(&bomb, deflated, true, small).unwrap_err();
        assert!(matches!(error, CheckError::TooLarge(_)), "{error}");
        assert!(error.to_string().contains("max_inflated_bytes"), "{error}");
        assert!(check_slice(&bomb, deflated, true, Limits::default()).is_ok());
    }

    #[test]
    fn attributes_before_pixel_data_are_bounded_by_the_header_limit() {
        let object = big_element_then_pixels(2 << 20);
        let limits = Limits {
            max_inflated: 128 << 20,
            max_header: 1 << 20,
        };
        for (bytes, layout) in [
            (object.clone(), EXPLICIT),
            (deflate(&object), Layout::of("1.2.840.10008.1.2.1.99")),
        ] {
            let error = check_slice(&bytes, layout, true, limits).unwrap_err();
            assert!(matches!(error, CheckError::TooLarge(_)), "{error}");
            assert!(error.to_string().contains("before Pixel Data"), "{error}");
        }
        // Pixel data itself is not held by the header parse: a large image passes.
        let mut image = vec![0x10, 0, 0x10, 0, b'P', b'N', 2, 0, b'A', b'B'];
        image.extend_from_slice(&[0xE0, 0x7F, 0x10, 0, b'O', b'W', 0, 0]);
        image.extend_from_slice(&(4u32 << 20).to_le_bytes());
        image.resize(image.len() + (4 << 20), 0);
        assert!(check_slice(&image, EXPLICIT, true, limits).is_ok());
    }
}
