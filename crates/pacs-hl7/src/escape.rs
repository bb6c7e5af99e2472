//! Escape sequences (HL7 v2.5 §2.7).
//!
//! Reading: `\F\ \S\ \T\ \R\ \E\` (and v2.7's `\P\`) become the delimiter they name;
//! `\Xhh…\` becomes the bytes it spells, which are then decoded in the message's character set
//! like the rest of the value; `\.br\` becomes a newline. Every other sequence — the other
//! formatting commands (`\.sp\`, `\.in\`, `\H\`, `\N\`…), character set switches (`\C..\`,
//! `\M..\`), locally defined `\Z..\` and malformed ones (odd hex digits, no closing escape
//! character) — is kept as it was written, so nothing a sender wrote is silently lost.
//!
//! Writing: delimiters are escaped, a newline becomes `\.br\` and a carriage return
//! `\X0D\` (a raw CR would end the segment).

use crate::{Charset, Delimiters};

/// Appends the unescaped bytes of one leaf value (a component or sub-component).
pub(crate) fn unescape(bytes: &[u8], d: &Delimiters, out: &mut Vec<u8>) {
    let Some(esc) = d.escape else {
        out.extend_from_slice(bytes);
        return;
    };
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b != esc {
            out.push(b);
            i += 1;
            continue;
        }
        let Some(len) = bytes[i + 1..].iter().position(|&c| c == esc) else {
            out.extend_from_slice(&bytes[i..]);
            return;
        };
        let seq = &bytes[i + 1..i + 1 + len];
        let known = match seq {
            b"F" => Some(d.field),
            b"S" => Some(d.component),
            b"R" => Some(d.repetition),
            b"E" => Some(esc),
            b"T" => d.subcomponent,
            b"P" => d.truncation,
            b".br" => Some(b'\n'),
            _ => None,
        };
        if let Some(c) = known {
            out.push(c);
        } else if !decode_hex(seq, out) {
            out.extend_from_slice(&bytes[i..i + len + 2]);
        }
        i += len + 2;
    }
}

/// Decodes `Xhhhh…` into `out`; false (and nothing written) if `seq` is not that.
fn decode_hex(seq: &[u8], out: &mut Vec<u8>) -> bool {
    let Some(hex) = seq.strip_prefix(b"X") else {
        return false;
    };
    if hex.is_empty() || hex.len() % 2 != 0 || !hex.iter().all(u8::is_ascii_hexdigit) {
        return false;
    }
    let digit = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
    out.extend(hex.chunks(2).map(|p| digit(p[0]) << 4 | digit(p[1])));
    true
}

/// Appends `text` escaped for a leaf value and encoded in `charset`; on a character the
/// character set cannot write, returns it (or, when `lossy`, writes `?` instead).
pub(crate) fn escape(
    text: &str,
    d: &Delimiters,
    charset: Charset,
    lossy: bool,
    out: &mut Vec<u8>,
) -> Result<(), char> {
    let esc = d.escape.unwrap_or(b'\\');
    for c in text.chars() {
        let named = match u8::try_from(c) {
            Ok(b) if b == d.field => Some(b'F'),
            Ok(b) if b == d.component => Some(b'S'),
            Ok(b) if b == d.repetition => Some(b'R'),
            Ok(b) if b == esc => Some(b'E'),
            Ok(b) if Some(b) == d.subcomponent => Some(b'T'),
            Ok(b) if Some(b) == d.truncation => Some(b'P'),
            _ => None,
        };
        if let Some(name) = named {
            out.extend_from_slice(&[esc, name, esc]);
        } else if c == '\n' {
            out.extend_from_slice(&[esc, b'.', b'b', b'r', esc]);
        } else if c == '\r' {
            out.extend_from_slice(&[esc, b'X', b'0', b'D', esc]);
        } else if !charset.encode_char(c, out) {
            if !lossy {
                return Err(c);
            }
            out.push(b'?');
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn un(s: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        unescape(s, &Delimiters::default(), &mut out);
        out
    }

    #[test]
    fn named_sequences() {
        assert_eq!(un(br"a\F\b\S\c\T\d\R\e\E\f"), b"a|b^c&d~e\\f");
        assert_eq!(un(br"line1\.br\line2"), b"line1\nline2");
        assert_eq!(un(br"\X0D0A\"), b"\r\n");
    }

    #[test]
    fn unknown_and_malformed_sequences_are_kept() {
        assert_eq!(un(br"\H\bold\N\"), br"\H\bold\N\");
        assert_eq!(un(br"\X0\"), br"\X0\");
        assert_eq!(un(br"\XZZ\"), br"\XZZ\");
        assert_eq!(un(br"dangling \F"), br"dangling \F");
        assert_eq!(un(br"\\"), br"\\");
    }

    #[test]
    fn escape_round_trip() {
        let d = Delimiters::default();
        let text = "a|b^c&d~e\\f\nnext\rend é";
        let mut out = Vec::new();
        escape(text, &d, Charset::Utf8, false, &mut out).unwrap();
        assert_eq!(
            out,
            "a\\F\\b\\S\\c\\T\\d\\R\\e\\E\\f\\.br\\next\\X0D\\end é".as_bytes()
        );
        assert_eq!(un(&out), text.as_bytes());
        assert_eq!(escape("é", &d, Charset::Ascii, false, &mut out), Err('é'));
        out.clear();
        escape("é", &d, Charset::Ascii, true, &mut out).unwrap();
        assert_eq!(out, b"?");
    }
}
