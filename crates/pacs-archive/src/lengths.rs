//! A cheap structural pass over a received data set before it is parsed: every declared
//! element length must fit in the bytes that are actually there.
//!
//! The parser allocates a value's declared length before reading it, so a 4 KB object that
//! declares a 900 MB element would make it allocate 900 MB. Walking the element headers first
//! (reading headers, seeking over values) bounds every allocation the parser makes by the size
//! of what was received.

use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use crate::ArchiveError;

const UNDEFINED: u32 = 0xFFFF_FFFF;

/// How the data set is encoded, as far as its element headers are concerned.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Encoding {
    pub explicit_vr: bool,
    pub big_endian: bool,
}

impl Encoding {
    /// Header layout of a transfer syntax; `None` when its headers cannot be walked without
    /// decoding (deflate) or the syntax is unknown: those are left to the parser.
    pub(crate) fn of(transfer_syntax: &str) -> Option<Encoding> {
        match transfer_syntax {
            "1.2.840.10008.1.2" => Some(Encoding {
                explicit_vr: false,
                big_endian: false,
            }),
            "1.2.840.10008.1.2.2" => Some(Encoding {
                explicit_vr: true,
                big_endian: true,
            }),
            "1.2.840.10008.1.2.1.99" | "1.2.840.10008.1.2.4.95" => None,
            ts if ts.starts_with("1.2.840.10008.1.2") => Some(Encoding {
                explicit_vr: true,
                big_endian: false,
            }),
            _ => None,
        }
    }
}

/// Checks the element lengths of the data set stored in `path` from `offset` on.
pub(crate) fn check(path: &Path, offset: u64, encoding: Encoding) -> Result<(), ArchiveError> {
    let file = std::fs::File::open(path).map_err(ArchiveError::from_io)?;
    let size = file.metadata().map_err(ArchiveError::from_io)?.len();
    let mut r = BufReader::with_capacity(16 * 1024, file);
    r.seek(SeekFrom::Start(offset)).map_err(ArchiveError::from_io)?;
    walk(&mut r, size.saturating_sub(offset), encoding).map_err(|e| match e {
        Walk::Io(e) => ArchiveError::from_io(e),
        Walk::Invalid(m) => ArchiveError::Invalid(m),
    })
}

enum Walk {
    Io(io::Error),
    Invalid(String),
}

impl From<io::Error> for Walk {
    fn from(e: io::Error) -> Self {
        Walk::Io(e)
    }
}

struct Cursor<'a, R> {
    r: &'a mut R,
    remaining: u64,
    big_endian: bool,
}

impl<R: Read + Seek> Cursor<'_, R> {
    fn u16(&mut self) -> Result<u16, Walk> {
        let mut b = [0u8; 2];
        self.r.read_exact(&mut b)?;
        self.remaining -= 2;
        Ok(if self.big_endian {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        })
    }

    fn u32(&mut self) -> Result<u32, Walk> {
        let mut b = [0u8; 4];
        self.r.read_exact(&mut b)?;
        self.remaining -= 4;
        Ok(if self.big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        })
    }

    fn vr(&mut self) -> Result<[u8; 2], Walk> {
        let mut b = [0u8; 2];
        self.r.read_exact(&mut b)?;
        self.remaining -= 2;
        Ok(b)
    }

    fn skip(&mut self, tag: (u16, u16), len: u32) -> Result<(), Walk> {
        if u64::from(len) > self.remaining {
            return Err(Walk::Invalid(format!(
                "element ({:04X},{:04X}) declares {len} bytes but only {} remain",
                tag.0, tag.1, self.remaining
            )));
        }
        self.r.seek_relative(i64::from(len))?;
        self.remaining -= u64::from(len);
        Ok(())
    }
}

/// VRs with a 2-byte reserved field and a 4-byte length in explicit VR.
fn long_length(vr: [u8; 2]) -> bool {
    matches!(
        &vr,
        b"OB" | b"OW" | b"OF" | b"OD" | b"OL" | b"OV" | b"SQ" | b"UT" | b"UN" | b"UC" | b"UR" | b"SV" | b"UV"
    )
}

/// Walks headers linearly: sequence and item headers are stepped into, values are skipped.
fn walk<R: Read + Seek>(r: &mut R, remaining: u64, encoding: Encoding) -> Result<(), Walk> {
    let mut c = Cursor {
        r,
        remaining,
        big_endian: encoding.big_endian,
    };
    // A lone trailing padding byte or two is tolerated; anything shorter than a header ends it.
    while c.remaining >= 8 {
        let tag = (c.u16()?, c.u16()?);
        if tag.0 == 0xFFFE {
            // Item and delimiters: a length, no VR. Items are stepped into.
            let _ = c.u32()?;
            continue;
        }
        let (vr, len) = if encoding.explicit_vr {
            let vr = c.vr()?;
            if long_length(vr) {
                let _reserved = c.u16()?;
                (Some(vr), c.u32()?)
            } else {
                (Some(vr), u32::from(c.u16()?))
            }
        } else {
            (None, c.u32()?)
        };
        if tag == (0x7FE0, 0x0010) && len == UNDEFINED {
            // Encapsulated pixel data: fragments (items) follow; at top level it is the end of
            // what the index parses, so stop here.
            return Ok(());
        }
        if len == UNDEFINED {
            if vr == Some(*b"UN") {
                // Undefined-length UN is implicit VR inside: not walked; the parser copes.
                return Ok(());
            }
            continue;
        }
        if vr == Some(*b"SQ") {
            // Defined-length sequence: its items follow inline and are walked too.
            if u64::from(len) > c.remaining {
                return Err(Walk::Invalid(format!(
                    "sequence ({:04X},{:04X}) declares {len} bytes but only {} remain",
                    tag.0, tag.1, c.remaining
                )));
            }
            continue;
        }
        c.skip(tag, len)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPLICIT: Encoding = Encoding {
        explicit_vr: true,
        big_endian: false,
    };

    fn run(bytes: &[u8], encoding: Encoding) -> Result<(), String> {
        let mut r = io::Cursor::new(bytes.to_vec());
        walk(&mut r, bytes.len() as u64, encoding).map_err(|e| match e {
            Walk::Io(e) => format!("io: {e}"),
            Walk::Invalid(m) => m,
        })
    }

    #[test]
    fn well_formed_elements_and_sequences_pass() {
        let mut b = Vec::new();
        // (0010,0010) PN "AB"
        b.extend_from_slice(&[0x10, 0, 0x10, 0, b'P', b'N', 2, 0, b'A', b'B']);
        // (0008,1140) SQ undefined length, one item undefined length with (0008,1150) UI "1\0"
        b.extend_from_slice(&[0x08, 0, 0x40, 0x11, b'S', b'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF]);
        b.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
        b.extend_from_slice(&[0x08, 0, 0x50, 0x11, b'U', b'I', 2, 0, b'1', 0]);
        b.extend_from_slice(&[0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0]);
        b.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
        // (7FE0,0010) OW 4 bytes
        b.extend_from_slice(&[0xE0, 0x7F, 0x10, 0, b'O', b'W', 0, 0, 4, 0, 0, 0, 1, 2, 3, 4]);
        assert_eq!(run(&b, EXPLICIT), Ok(()));
    }

    #[test]
    fn a_length_past_the_end_is_refused_without_allocating_it() {
        // (0009,0010) OB declaring 900 MB with 4 bytes present.
        let b = [
            0x09, 0, 0x10, 0, b'O', b'B', 0, 0, 0x00, 0x00, 0xA5, 0x35, 1, 2, 3, 4,
        ];
        let err = run(&b, EXPLICIT).unwrap_err();
        assert!(err.contains("(0009,0010) declares"), "{err}");
        // Implicit VR: 4-byte length.
        let b = [0x10, 0, 0x10, 0, 0xFF, 0xFF, 0x00, 0x00, b'A', b'B'];
        let implicit = Encoding {
            explicit_vr: false,
            big_endian: false,
        };
        assert!(run(&b, implicit).is_err());
    }

    #[test]
    fn big_endian_lengths_are_read_big_endian() {
        // (0010,0010) PN length 2, big endian.
        let b = [
            0, 0x10, 0, 0x10, b'P', b'N', 0, 2, b'A', b'B', 0, 0x10, 0, 0x20, b'L', b'O', 0, 2, b'X', b' ',
        ];
        let be = Encoding {
            explicit_vr: true,
            big_endian: true,
        };
        assert_eq!(run(&b, be), Ok(()));
        let mut bad = b;
        bad[7] = 200;
        assert!(run(&bad, be).is_err());
    }
}
