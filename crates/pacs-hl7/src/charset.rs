//! Character sets named by MSH-18 (HL7 table 0211).
//!
//! Supported: ASCII (MSH-18 empty or `ASCII`), `8859/1`, `8859/15` and `UNICODE UTF-8` (also
//! spelled `UTF-8`/`UTF8`, and `ISO-8859-1`/`ISO-8859-15` as some senders write). Every one of
//! them is ASCII-compatible, which is what lets the parser split on delimiter bytes before
//! decoding. Anything else (ISO 2022 sets, UTF-16, GB 18030…) is refused with
//! [`Hl7Error::UnsupportedCharset`] rather than guessed.

use std::borrow::Cow;

use crate::Hl7Error;

/// A character set a message is written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Charset {
    /// 7-bit ASCII, the default when MSH-18 is empty.
    Ascii,
    /// ISO 8859-1 (`8859/1`).
    Latin1,
    /// ISO 8859-15 (`8859/15`): Latin-1 with the euro sign and eight other changes.
    Latin9,
    /// UTF-8 (`UNICODE UTF-8`).
    Utf8,
}

/// The eight code points where ISO 8859-15 differs from ISO 8859-1.
const LATIN9_DIFF: [(u8, char); 8] = [
    (0xA4, '\u{20AC}'),
    (0xA6, '\u{0160}'),
    (0xA8, '\u{0161}'),
    (0xB4, '\u{017D}'),
    (0xB8, '\u{017E}'),
    (0xBC, '\u{0152}'),
    (0xBD, '\u{0153}'),
    (0xBE, '\u{0178}'),
];

impl Charset {
    /// Reads the first repetition of MSH-18.
    pub fn from_label(label: &str) -> Result<Charset, Hl7Error> {
        let upper = label.trim().to_ascii_uppercase();
        match upper.as_str() {
            "" | "ASCII" => Ok(Charset::Ascii),
            "8859/1" | "ISO-8859-1" | "ISO8859-1" | "ISO_8859-1" => Ok(Charset::Latin1),
            "8859/15" | "ISO-8859-15" | "ISO8859-15" | "ISO_8859-15" => Ok(Charset::Latin9),
            "UNICODE UTF-8" | "UTF-8" | "UTF8" => Ok(Charset::Utf8),
            _ => Err(Hl7Error::UnsupportedCharset(label.chars().take(64).collect())),
        }
    }

    /// The MSH-18 value that names this character set (empty for ASCII, the default).
    pub fn label(self) -> &'static str {
        match self {
            Charset::Ascii => "",
            Charset::Latin1 => "8859/1",
            Charset::Latin9 => "8859/15",
            Charset::Utf8 => "UNICODE UTF-8",
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Charset::Ascii => "ASCII",
            Charset::Latin1 => "ISO 8859-1",
            Charset::Latin9 => "ISO 8859-15",
            Charset::Utf8 => "UTF-8",
        }
    }

    /// Checks that `bytes` are text in this character set; returns the offset of the first
    /// byte that is not.
    pub(crate) fn validate(self, bytes: &[u8]) -> Result<(), usize> {
        match self {
            Charset::Ascii => match bytes.iter().position(|b| *b >= 0x80) {
                Some(offset) => Err(offset),
                None => Ok(()),
            },
            Charset::Latin1 | Charset::Latin9 => Ok(()),
            Charset::Utf8 => std::str::from_utf8(bytes)
                .map(|_| ())
                .map_err(|e| e.valid_up_to()),
        }
    }

    /// Decodes bytes, replacing what is not valid in this character set with U+FFFD. Only
    /// `\X..\` escapes can bring invalid bytes here: the parser validated the message itself.
    pub(crate) fn decode(self, bytes: &[u8]) -> String {
        match self {
            Charset::Ascii => bytes
                .iter()
                .map(|&b| if b < 0x80 { b as char } else { '\u{FFFD}' })
                .collect(),
            Charset::Latin1 => bytes.iter().map(|&b| b as char).collect(),
            Charset::Latin9 => bytes
                .iter()
                .map(|&b| {
                    LATIN9_DIFF
                        .iter()
                        .find(|(byte, _)| *byte == b)
                        .map_or(b as char, |(_, c)| *c)
                })
                .collect(),
            Charset::Utf8 => match String::from_utf8_lossy(bytes) {
                Cow::Borrowed(s) => s.to_owned(),
                Cow::Owned(s) => s,
            },
        }
    }

    /// Appends the encoding of `c`, or returns false when this character set cannot write it.
    pub(crate) fn encode_char(self, c: char, out: &mut Vec<u8>) -> bool {
        let code = c as u32;
        let byte = match self {
            Charset::Utf8 => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                return true;
            }
            Charset::Ascii if code < 0x80 => code as u8,
            Charset::Latin1 if code < 0x100 => code as u8,
            Charset::Latin9 => {
                if let Some((b, _)) = LATIN9_DIFF.iter().find(|(_, ch)| *ch == c) {
                    *b
                } else if code < 0x100 && !LATIN9_DIFF.iter().any(|(b, _)| u32::from(*b) == code) {
                    code as u8
                } else {
                    return false;
                }
            }
            _ => return false,
        };
        out.push(byte);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(Charset::from_label("").unwrap(), Charset::Ascii);
        assert_eq!(Charset::from_label("8859/1").unwrap(), Charset::Latin1);
        assert_eq!(Charset::from_label("8859/15").unwrap(), Charset::Latin9);
        assert_eq!(Charset::from_label("UNICODE UTF-8").unwrap(), Charset::Utf8);
        assert_eq!(Charset::from_label("utf-8").unwrap(), Charset::Utf8);
        assert!(matches!(
            Charset::from_label("ISO IR87"),
            Err(Hl7Error::UnsupportedCharset(s)) if s == "ISO IR87"
        ));
    }

    #[test]
    fn latin9_round_trip() {
        let text = "€ Šš Žž Œœ Ÿ é";
        let mut out = Vec::new();
        for c in text.chars() {
            assert!(Charset::Latin9.encode_char(c, &mut out), "{c}");
        }
        assert_eq!(Charset::Latin9.decode(&out), text);
        assert!(!Charset::Latin9.encode_char('\u{A4}', &mut out));
        assert!(!Charset::Latin1.encode_char('€', &mut out));
        assert!(!Charset::Ascii.encode_char('é', &mut out));
    }
}
