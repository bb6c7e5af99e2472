//! The message model: the bytes as received, indexed once into segments and fields.
//! Repetitions, components and sub-components are split when they are read, and values are
//! unescaped and decoded to `String` only then, so parsing allocates two small vectors per
//! segment whatever the input looks like, within [`Limits`].

use std::fmt;

use crate::{escape, Charset, Hl7Error};

/// The delimiters a message declares in MSH-1 and MSH-2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delimiters {
    pub field: u8,
    pub component: u8,
    pub repetition: u8,
    pub escape: Option<u8>,
    pub subcomponent: Option<u8>,
    /// v2.7's truncation character, the optional fifth encoding character.
    pub truncation: Option<u8>,
}

impl Default for Delimiters {
    /// `|^~\&`.
    fn default() -> Self {
        Delimiters {
            field: b'|',
            component: b'^',
            repetition: b'~',
            escape: Some(b'\\'),
            subcomponent: Some(b'&'),
            truncation: None,
        }
    }
}

impl Delimiters {
    /// Reads the field separator and the encoding characters that follow `MSH`; returns them
    /// with the length of MSH-2. Two to five encoding characters are accepted (component and
    /// repetition are the minimum any sender writes), all distinct, printable and not
    /// alphanumeric.
    fn read(after_msh: &[u8]) -> Result<(Delimiters, usize), Hl7Error> {
        let Some((&field, rest)) = after_msh.split_first() else {
            return Err(Hl7Error::BadDelimiters("no field separator after MSH"));
        };
        let len = rest
            .iter()
            .position(|&b| b == field || b == b'\r' || b == b'\n')
            .unwrap_or(rest.len());
        let enc = &rest[..len];
        if !(2..=5).contains(&enc.len()) {
            return Err(Hl7Error::BadDelimiters(
                "MSH-2 must hold two to five encoding characters",
            ));
        }
        let all = std::iter::once(&field).chain(enc);
        if all
            .clone()
            .any(|b| !b.is_ascii_graphic() || b.is_ascii_alphanumeric())
        {
            return Err(Hl7Error::BadDelimiters(
                "delimiters must be printable ASCII punctuation",
            ));
        }
        if all
            .clone()
            .enumerate()
            .any(|(i, b)| all.clone().skip(i + 1).any(|c| c == b))
        {
            return Err(Hl7Error::BadDelimiters("delimiters must all differ"));
        }
        let delimiters = Delimiters {
            field,
            component: enc[0],
            repetition: enc[1],
            escape: enc.get(2).copied(),
            subcomponent: enc.get(3).copied(),
            truncation: enc.get(4).copied(),
        };
        Ok((delimiters, enc.len()))
    }

    /// The MSH-2 value for these delimiters.
    pub fn encoding_characters(&self) -> Vec<u8> {
        let mut out = vec![self.component, self.repetition];
        out.extend(
            [self.escape, self.subcomponent, self.truncation]
                .into_iter()
                .map_while(|c| c),
        );
        out
    }
}

/// What the parser accepts; anything beyond is refused, never allocated.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Bytes in one message (also the MLLP frame limit).
    pub max_size: usize,
    pub max_segments: usize,
    /// Fields in one segment.
    pub max_fields: usize,
}

impl Default for Limits {
    /// 4 MiB, 10,000 segments, 1,000 fields per segment: far above any real ADT, order or
    /// report, including an ORU with an embedded PDF of a few MB.
    fn default() -> Self {
        Limits {
            max_size: 4 << 20,
            max_segments: 10_000,
            max_fields: 1_000,
        }
    }
}

#[derive(Clone, Debug)]
struct SegmentIndex {
    name: [u8; 3],
    /// Byte ranges of fields 1, 2, …; for MSH, field 1 is the field separator itself and
    /// field 2 the encoding characters, as the standard numbers them.
    fields: Vec<(u32, u32)>,
}

/// A parsed HL7 v2 message.
#[derive(Clone)]
pub struct Message {
    raw: Vec<u8>,
    delimiters: Delimiters,
    charset: Charset,
    /// What values are decoded with: `charset`, except that a message declaring ASCII (or
    /// nothing) that contains 8-bit bytes is read as UTF-8 when it is valid UTF-8 and as
    /// ISO 8859-1 otherwise, as such senders mean in practice.
    text_charset: Charset,
    segments: Vec<SegmentIndex>,
}

impl fmt::Debug for Message {
    // Never prints values: messages carry patient data.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("type", &self.message_type().to_string())
            .field("control_id", &self.control_id())
            .field("segments", &self.segments.len())
            .field("bytes", &self.raw.len())
            .finish()
    }
}

/// MSH-9: message code, trigger event, message structure.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MessageType {
    pub code: String,
    pub trigger: String,
    pub structure: String,
}

impl fmt::Display for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}^{}", self.code, self.trigger)?;
        if !self.structure.is_empty() {
            write!(f, "^{}", self.structure)?;
        }
        Ok(())
    }
}

impl Message {
    /// Parses a message with the default [`Limits`].
    pub fn parse(bytes: &[u8]) -> Result<Message, Hl7Error> {
        Message::parse_with(bytes, &Limits::default())
    }

    /// Parses a message: segments separated by CR, LF or CRLF; delimiters from MSH-1/MSH-2;
    /// the character set from MSH-18; MSH-9, MSH-10 and MSH-12 must be present.
    pub fn parse_with(bytes: &[u8], limits: &Limits) -> Result<Message, Hl7Error> {
        let mut message = Message::index(bytes, limits, false)?;
        message.charset = Charset::from_label(&message.charset_label())?;
        message.text_charset = match message.charset.validate(&message.raw) {
            Ok(()) => message.charset,
            Err(_) if message.charset == Charset::Ascii => {
                if Charset::Utf8.validate(&message.raw).is_ok() {
                    Charset::Utf8
                } else {
                    Charset::Latin1
                }
            }
            Err(offset) => {
                return Err(Hl7Error::InvalidText {
                    charset: message.charset.name(),
                    offset,
                })
            }
        };
        for (path, field) in [("MSH-9", 9), ("MSH-10", 10), ("MSH-12", 12)] {
            let present = message.header().field(field).and_then(|f| f.value()).is_some();
            if !present {
                return Err(Hl7Error::MissingField(path));
            }
        }
        Ok(message)
    }

    /// Reads only the MSH segment, as far as it goes, to answer a message that cannot be
    /// parsed whole (or was cut short). Required fields may be missing; an unknown character
    /// set is read as ASCII.
    pub fn parse_header(bytes: &[u8], limits: &Limits) -> Result<Message, Hl7Error> {
        let mut message = Message::index(bytes, limits, true)?;
        let charset = Charset::from_label(&message.charset_label()).unwrap_or(Charset::Ascii);
        message.charset = charset;
        message.text_charset = if charset.validate(&message.raw).is_ok() {
            charset
        } else if Charset::Utf8.validate(&message.raw).is_ok() {
            Charset::Utf8
        } else {
            Charset::Latin1
        };
        Ok(message)
    }

    fn index(bytes: &[u8], limits: &Limits, header_only: bool) -> Result<Message, Hl7Error> {
        let max = limits.max_size.min(u32::MAX as usize);
        if bytes.len() > max {
            return Err(Hl7Error::TooLarge {
                size: bytes.len(),
                max,
            });
        }
        let mut start = if bytes.starts_with(b"\xEF\xBB\xBF") { 3 } else { 0 };
        while bytes.get(start).is_some_and(|b| b.is_ascii_whitespace()) {
            start += 1;
        }
        if !bytes[start..].starts_with(b"MSH") {
            return Err(Hl7Error::MissingMsh);
        }
        let (delimiters, msh2_len) = Delimiters::read(&bytes[start + 3..])?;
        let mut segments: Vec<SegmentIndex> = Vec::new();
        let mut pos = start;
        while pos < bytes.len() {
            let end = bytes[pos..]
                .iter()
                .position(|&b| b == b'\r' || b == b'\n')
                .map_or(bytes.len(), |p| pos + p);
            if end > pos {
                if segments.len() == limits.max_segments {
                    return Err(Hl7Error::TooMany {
                        what: "segments",
                        max: limits.max_segments,
                    });
                }
                let number = segments.len() + 1;
                let segment = index_segment(bytes, pos, end, &delimiters, msh2_len, limits, number)?;
                segments.push(segment);
                if header_only {
                    pos = end;
                    break;
                }
            }
            pos = end + 1;
        }
        Ok(Message {
            raw: bytes[..pos.min(bytes.len())].to_vec(),
            delimiters,
            charset: Charset::Ascii,
            text_charset: Charset::Ascii,
            segments,
        })
    }

    fn charset_label(&self) -> String {
        let label = self
            .header()
            .field(18)
            .and_then(|f| f.repetitions().next())
            .and_then(|r| r.components().next())
            .map(|c| c.raw())
            .unwrap_or_default();
        // Escaped like any value: with `/` among the delimiters, `8859/1` can only be written
        // `8859\T\1` (or `8859/E/1` when `/` is the escape character), as our own ACKs do.
        let mut unescaped = Vec::with_capacity(label.len());
        escape::unescape(label, &self.delimiters, &mut unescaped);
        Charset::Latin1.decode(&unescaped)
    }

    /// The bytes the message was parsed from (for a header-only parse, up to the end of MSH).
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    pub fn delimiters(&self) -> &Delimiters {
        &self.delimiters
    }

    /// The character set MSH-18 declares.
    pub fn charset(&self) -> Charset {
        self.charset
    }

    /// The character set values are actually decoded with (see [`Message`]'s fields).
    pub fn text_charset(&self) -> Charset {
        self.text_charset
    }

    /// The MSH segment.
    pub fn header(&self) -> Segment<'_> {
        Segment { msg: self, index: 0 }
    }

    /// Every segment, in order.
    pub fn all_segments(&self) -> impl Iterator<Item = Segment<'_>> {
        (0..self.segments.len()).map(move |index| Segment { msg: self, index })
    }

    /// The segments named `name`, in order.
    pub fn segments(&self, name: &str) -> impl Iterator<Item = Segment<'_>> + '_ {
        let key: Option<[u8; 3]> = name.as_bytes().try_into().ok();
        self.all_segments()
            .filter(move |s| Some(s.msg.segments[s.index].name) == key)
    }

    /// The first segment named `name`.
    pub fn segment(&self, name: &str) -> Option<Segment<'_>> {
        self.segments(name).next()
    }

    /// Field `n` of the first segment named `segment`.
    pub fn field(&self, segment: &str, n: usize) -> Option<Field<'_>> {
        self.segment(segment)?.field(n)
    }

    /// The value at an HL7 path such as `PID-3.1`, `PID-3(2).4.1` or `OBX(3)-5` (see
    /// [`Path`]), unescaped and decoded; `None` when it is absent or empty, or when the path
    /// does not parse. HL7's explicit null `""` is returned as the two quote characters.
    pub fn value(&self, path: &str) -> Option<String> {
        let path = Path::parse(path).ok()?;
        self.segments(&path.segment)
            .nth(path.segment_repetition - 1)?
            .field(path.field)?
            .repetition(path.repetition)?
            .component(path.component)?
            .subcomponent(path.subcomponent)
    }

    /// MSH-9.
    pub fn message_type(&self) -> MessageType {
        let v = |c| self.value(&format!("MSH-9.{c}")).unwrap_or_default();
        MessageType {
            code: v(1),
            trigger: v(2),
            structure: v(3),
        }
    }

    /// MSH-10, the message control id.
    pub fn control_id(&self) -> String {
        self.value("MSH-10").unwrap_or_default()
    }

    /// MSH-12.1, the version id (`2.3`, `2.5.1`…).
    pub fn version(&self) -> String {
        self.value("MSH-12").unwrap_or_default()
    }

    /// MSH-11.1, the processing id (`P`, `T`, `D`).
    pub fn processing_id(&self) -> String {
        self.value("MSH-11").unwrap_or_default()
    }

    fn decode_leaf(&self, bytes: &[u8], literal: bool) -> Option<String> {
        if bytes.is_empty() {
            return None;
        }
        if literal {
            return Some(Charset::Latin1.decode(bytes));
        }
        let mut out = Vec::with_capacity(bytes.len());
        escape::unescape(bytes, &self.delimiters, &mut out);
        Some(self.text_charset.decode(&out))
    }
}

#[allow(clippy::too_many_arguments)]
fn index_segment(
    bytes: &[u8],
    start: usize,
    end: usize,
    d: &Delimiters,
    msh2_len: usize,
    limits: &Limits,
    number: usize,
) -> Result<SegmentIndex, Hl7Error> {
    let line = &bytes[start..end];
    let id_ok = line.len() >= 3
        && line[0].is_ascii_uppercase()
        && line[1..3]
            .iter()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        && (line.len() == 3 || line[3] == d.field);
    if !id_ok {
        return Err(Hl7Error::BadSegment {
            index: number,
            reason: "the segment id is not three capital letters or digits and a field separator",
        });
    }
    let name = [line[0], line[1], line[2]];
    let is_msh = &name == b"MSH";
    if is_msh != (number == 1) {
        return Err(Hl7Error::BadSegment {
            index: number,
            reason: "MSH must be the first segment, and only once (batches are not supported)",
        });
    }
    let at = |p: usize| p as u32;
    let mut fields = Vec::new();
    let mut p = start + 3;
    if is_msh {
        fields.push((at(p), at(p + 1)));
        fields.push((at(p + 1), at(p + 1 + msh2_len)));
        p += 1 + msh2_len;
    }
    while p < end {
        let f_start = p + 1;
        let f_end = bytes[f_start..end]
            .iter()
            .position(|&b| b == d.field)
            .map_or(end, |x| f_start + x);
        if fields.len() == limits.max_fields {
            return Err(Hl7Error::TooMany {
                what: "fields in a segment",
                max: limits.max_fields,
            });
        }
        fields.push((at(f_start), at(f_end)));
        p = f_end;
    }
    Ok(SegmentIndex { name, fields })
}

/// Splits on `sep`, or not at all when the delimiter is not defined.
fn split(bytes: &[u8], sep: Option<u8>) -> impl Iterator<Item = &[u8]> {
    let mut done = false;
    let mut rest = bytes;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        match sep.and_then(|s| rest.iter().position(|&b| b == s)) {
            Some(i) => {
                let piece = &rest[..i];
                rest = &rest[i + 1..];
                Some(piece)
            }
            None => {
                done = true;
                Some(rest)
            }
        }
    })
}

/// One segment of a [`Message`].
#[derive(Clone, Copy)]
pub struct Segment<'m> {
    msg: &'m Message,
    index: usize,
}

impl<'m> Segment<'m> {
    /// The three-character segment id.
    pub fn name(&self) -> &'m str {
        std::str::from_utf8(&self.msg.segments[self.index].name).unwrap_or("")
    }

    /// Position in the message, 1 for MSH (ERR-2's segment sequence counts per name, see
    /// [`Segment::sequence`]).
    pub fn position(&self) -> usize {
        self.index + 1
    }

    /// The 1-based occurrence of this segment among those with the same name.
    pub fn sequence(&self) -> usize {
        let name = self.msg.segments[self.index].name;
        self.msg.segments[..=self.index]
            .iter()
            .filter(|s| s.name == name)
            .count()
    }

    /// How many fields the segment has (trailing empty fields are counted as written).
    pub fn field_count(&self) -> usize {
        self.msg.segments[self.index].fields.len()
    }

    /// Field `n` (1-based, numbered as the standard numbers them, MSH-1 included).
    pub fn field(&self, n: usize) -> Option<Field<'m>> {
        let &(start, end) = self.msg.segments[self.index].fields.get(n.checked_sub(1)?)?;
        let literal = self.index == 0 && n <= 2;
        Some(Field(Piece {
            msg: self.msg,
            bytes: &self.msg.raw[start as usize..end as usize],
            literal,
        }))
    }
}

#[derive(Clone, Copy)]
struct Piece<'m> {
    msg: &'m Message,
    bytes: &'m [u8],
    /// MSH-1 and MSH-2: never split or unescaped.
    literal: bool,
}

impl<'m> Piece<'m> {
    fn children(self, sep: Option<u8>) -> impl Iterator<Item = Piece<'m>> {
        let sep = if self.literal { None } else { sep };
        split(self.bytes, sep).map(move |bytes| Piece { bytes, ..self })
    }

    fn nth(self, sep: Option<u8>, n: usize) -> Option<Piece<'m>> {
        self.children(sep).nth(n.checked_sub(1)?)
    }
}

/// A field: one or more repetitions.
#[derive(Clone, Copy)]
pub struct Field<'m>(Piece<'m>);
/// One repetition of a field: components.
#[derive(Clone, Copy)]
pub struct Repetition<'m>(Piece<'m>);
/// One component: sub-components.
#[derive(Clone, Copy)]
pub struct Component<'m>(Piece<'m>);

impl<'m> Field<'m> {
    /// The field as written (escaped, in the message's character set).
    pub fn raw(&self) -> &'m [u8] {
        self.0.bytes
    }
    pub fn is_empty(&self) -> bool {
        self.0.bytes.is_empty()
    }
    pub fn repetitions(&self) -> impl Iterator<Item = Repetition<'m>> {
        self.0
            .children(Some(self.0.msg.delimiters.repetition))
            .map(Repetition)
    }
    /// Repetition `r` (1-based).
    pub fn repetition(&self, r: usize) -> Option<Repetition<'m>> {
        self.0
            .nth(Some(self.0.msg.delimiters.repetition), r)
            .map(Repetition)
    }
    /// Component `c` of the first repetition.
    pub fn component(&self, c: usize) -> Option<Component<'m>> {
        self.repetition(1)?.component(c)
    }
    /// The first sub-component of the first component of the first repetition.
    pub fn value(&self) -> Option<String> {
        self.repetition(1)?.value()
    }
}

impl<'m> Repetition<'m> {
    pub fn raw(&self) -> &'m [u8] {
        self.0.bytes
    }
    pub fn components(&self) -> impl Iterator<Item = Component<'m>> {
        self.0
            .children(Some(self.0.msg.delimiters.component))
            .map(Component)
    }
    /// Component `c` (1-based).
    pub fn component(&self, c: usize) -> Option<Component<'m>> {
        self.0
            .nth(Some(self.0.msg.delimiters.component), c)
            .map(Component)
    }
    pub fn value(&self) -> Option<String> {
        self.component(1)?.value()
    }
}

impl<'m> Component<'m> {
    pub fn raw(&self) -> &'m [u8] {
        self.0.bytes
    }
    /// The sub-components, unescaped and decoded (`None` for an empty one).
    pub fn subcomponents(&self) -> impl Iterator<Item = Option<String>> + 'm {
        let piece = self.0;
        piece
            .children(piece.msg.delimiters.subcomponent)
            .map(move |p| piece.msg.decode_leaf(p.bytes, p.literal))
    }
    /// Sub-component `s` (1-based), unescaped and decoded.
    pub fn subcomponent(&self, s: usize) -> Option<String> {
        let piece = self.0;
        let sub = piece.nth(piece.msg.delimiters.subcomponent, s)?;
        piece.msg.decode_leaf(sub.bytes, sub.literal)
    }
    /// The first sub-component.
    pub fn value(&self) -> Option<String> {
        self.subcomponent(1)
    }
}

/// An HL7 path, `SEG[(k)]-F[(r)][.C[.S]]`: segment id and occurrence, field and repetition,
/// component, sub-component; all 1-based, and those left out are 1 (so `PID-5` reads
/// `PID-5.1.1`, as HAPI's terser does). `-` is accepted in place of `.`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Path {
    pub segment: String,
    pub segment_repetition: usize,
    pub field: usize,
    pub repetition: usize,
    pub component: usize,
    pub subcomponent: usize,
}

impl Path {
    /// The largest index a path may hold.
    const MAX_INDEX: usize = 9_999;

    pub fn parse(text: &str) -> Result<Path, Hl7Error> {
        let bad = || Hl7Error::BadPath(text.chars().take(64).collect());
        let (segment_part, rest) = text.split_once('-').ok_or_else(bad)?;
        let (segment, segment_repetition) = split_index(segment_part).ok_or_else(bad)?;
        let id_ok = segment.len() == 3
            && segment
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
        if !id_ok {
            return Err(bad());
        }
        let mut parts = rest.split(['.', '-']);
        let (field, repetition) = split_index(parts.next().ok_or_else(bad)?).ok_or_else(bad)?;
        let field: usize = number(field).ok_or_else(bad)?;
        let mut next = || match parts.next() {
            None => Some(1),
            Some(p) => number(p),
        };
        let component = next().ok_or_else(bad)?;
        let subcomponent = next().ok_or_else(bad)?;
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(Path {
            segment: segment.to_owned(),
            segment_repetition,
            field,
            repetition,
            component,
            subcomponent,
        })
    }
}

/// `NAME(3)` → (`NAME`, 3); `NAME` → (`NAME`, 1).
fn split_index(text: &str) -> Option<(&str, usize)> {
    match text.split_once('(') {
        None => Some((text, 1)),
        Some((name, rest)) => Some((name, number(rest.strip_suffix(')')?)?)),
    }
}

fn number(text: &str) -> Option<usize> {
    if text.is_empty() || text.len() > 4 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: usize = text.parse().ok()?;
    (1..=Path::MAX_INDEX).contains(&n).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADT: &str = "MSH|^~\\&|RIS|HOSP|PACS|HOSP|20240102030405||ADT^A01^ADT_A01|MSG0001|P|2.5.1\r\
                       EVN|A01|20240102030405\r\
                       PID|1||12345^^^HOSP^MR~1850112345678^^^INS^NH||DOE^JOHN^Q\\S\\R||19800101|M\r\
                       PV1|1|O\r";

    #[test]
    fn reads_header_and_paths() {
        let m = Message::parse(ADT.as_bytes()).unwrap();
        assert_eq!(
            m.message_type(),
            MessageType {
                code: "ADT".into(),
                trigger: "A01".into(),
                structure: "ADT_A01".into()
            }
        );
        assert_eq!(m.control_id(), "MSG0001");
        assert_eq!(m.version(), "2.5.1");
        assert_eq!(m.processing_id(), "P");
        assert_eq!(m.value("MSH-1").as_deref(), Some("|"));
        assert_eq!(m.value("MSH-2").as_deref(), Some("^~\\&"));
        assert_eq!(m.value("PID-3").as_deref(), Some("12345"));
        assert_eq!(m.value("PID-3.4").as_deref(), Some("HOSP"));
        assert_eq!(m.value("PID-3(2).1").as_deref(), Some("1850112345678"));
        assert_eq!(m.value("PID-3(2)-5").as_deref(), Some("NH"));
        assert_eq!(m.value("PID-3(3).1"), None);
        assert_eq!(m.value("PID-5.3").as_deref(), Some("Q^R"));
        assert_eq!(m.value("PID-4"), None);
        assert_eq!(m.value("ZZZ-1"), None);
        assert_eq!(m.value("bad path"), None);
        let pid3 = m.field("PID", 3).unwrap();
        let ids: Vec<_> = pid3.repetitions().map(|r| r.value().unwrap()).collect();
        assert_eq!(ids, ["12345", "1850112345678"]);
        assert_eq!(m.all_segments().count(), 4);
        assert_eq!(m.segments("PV1").count(), 1);
        assert_eq!(m.header().field_count(), 12);
    }

    #[test]
    fn tolerates_lf_and_crlf() {
        for sep in ["\n", "\r\n"] {
            let text = ADT.replace('\r', sep);
            let m = Message::parse(text.as_bytes()).unwrap();
            assert_eq!(m.all_segments().count(), 4, "{sep:?}");
            assert_eq!(m.value("PID-8").as_deref(), Some("M"));
        }
    }

    #[test]
    fn other_delimiters_are_honoured() {
        let text = "MSH#*$!@%#RIS#HOSP#PACS#HOSP#20240102##ORM*O01#42#P#2.3\r\
                    PID#1##A1*!S!*B$A2##DOE*JANE@X!T!Y!F!!R!\r";
        let m = Message::parse(text.as_bytes()).unwrap();
        let d = m.delimiters();
        assert_eq!((d.field, d.component, d.repetition), (b'#', b'*', b'$'));
        assert_eq!(
            (d.escape, d.subcomponent, d.truncation),
            (Some(b'!'), Some(b'@'), Some(b'%'))
        );
        assert_eq!(m.value("MSH-2").as_deref(), Some("*$!@%"));
        assert_eq!(m.message_type().trigger, "O01");
        assert_eq!(m.value("PID-3.2").as_deref(), Some("*"));
        assert_eq!(m.value("PID-3(2)").as_deref(), Some("A2"));
        assert_eq!(m.value("PID-5.2.1").as_deref(), Some("JANE"));
        assert_eq!(m.value("PID-5.2.2").as_deref(), Some("X@Y#$"));
    }

    #[test]
    fn hex_escapes_decode_in_the_message_charset() {
        let latin1 = b"MSH|^~\\&|A|B|C|D|20240101||ADT^A08|1|P|2.4||||||8859/1\r\
                       PID|1||1||M\\XE9\\LANIE^\xC9LODIE\r";
        let m = Message::parse(latin1).unwrap();
        assert_eq!(m.charset(), Charset::Latin1);
        assert_eq!(m.value("PID-5.1").as_deref(), Some("MéLANIE"));
        assert_eq!(m.value("PID-5.2").as_deref(), Some("ÉLODIE"));

        let utf8 = "MSH|^~\\&|A|B|C|D|20240101||ADT^A08|1|P|2.5|||||FR|UNICODE UTF-8\r\
                    PID|1||1||M\\XC3A9\\LANIE^ÉLODIE\r";
        let m = Message::parse(utf8.as_bytes()).unwrap();
        assert_eq!(m.charset(), Charset::Utf8);
        assert_eq!(m.value("PID-5.1").as_deref(), Some("MéLANIE"));
        assert_eq!(m.value("PID-5.2").as_deref(), Some("ÉLODIE"));

        let latin9 = b"MSH|^~\\&|A|B|C|D|20240101||ADT^A08|1|P|2.5|||||FR|8859/15\r\
                       NTE|1||\xA4 5 \\XBD\\\r";
        let m = Message::parse(latin9).unwrap();
        assert_eq!(m.value("NTE-3").as_deref(), Some("€ 5 œ"));
    }

    #[test]
    fn undeclared_charset_is_read_leniently() {
        let utf8 = "MSH|^~\\&|A|B|C|D|20240101||ADT^A08|1|P|2.5\rPID|1||1||ÉLODIE\r";
        let m = Message::parse(utf8.as_bytes()).unwrap();
        assert_eq!((m.charset(), m.text_charset()), (Charset::Ascii, Charset::Utf8));
        assert_eq!(m.value("PID-5").as_deref(), Some("ÉLODIE"));
        let latin1 = b"MSH|^~\\&|A|B|C|D|20240101||ADT^A08|1|P|2.5\rPID|1||1||\xC9LODIE\r";
        let m = Message::parse(latin1).unwrap();
        assert_eq!(m.text_charset(), Charset::Latin1);
        assert_eq!(m.value("PID-5").as_deref(), Some("ÉLODIE"));
    }

    #[test]
    fn charset_errors_are_clear() {
        let unknown = b"MSH|^~\\&|A|B|C|D|20240101||ADT^A08|1|P|2.5|||||JP|ISO IR87\r";
        let err = Message::parse(unknown).unwrap_err();
        assert!(
            matches!(&err, Hl7Error::UnsupportedCharset(c) if c == "ISO IR87"),
            "{err}"
        );
        assert_eq!(err.location().unwrap().field, 18);
        let bad_utf8 = b"MSH|^~\\&|A|B|C|D|20240101||ADT^A08|1|P|2.5|||||FR|UNICODE UTF-8\rPID|1||\xC9\r";
        assert!(matches!(
            Message::parse(bad_utf8),
            Err(Hl7Error::InvalidText { charset: "UTF-8", .. })
        ));
    }

    #[test]
    fn structural_errors() {
        let cases: [(&[u8], &str); 8] = [
            (b"", "MissingMsh"),
            (b"PID|1\r", "MissingMsh"),
            (b"MSH", "BadDelimiters"),
            (b"MSH|||||\r", "BadDelimiters"),
            (b"MSH|^^\\&|\r", "BadDelimiters"),
            (b"MSHa^~\\&|\r", "BadDelimiters"),
            (b"MSH|^~\\&|A|B|C|D|1||ADT^A01|1|P|2.5\rpid|1\r", "BadSegment"),
            (
                b"MSH|^~\\&|A|B|C|D|1||ADT^A01|1|P|2.5\rPID|1\rMSH|^~\\&|\r",
                "BadSegment",
            ),
        ];
        for (input, want) in cases {
            let err = Message::parse(input).unwrap_err();
            assert!(format!("{err:?}").starts_with(want), "{input:?}: {err:?}");
        }
        let truncated = b"MSH|^~\\&|A|B|C|D|1||ADT^A01";
        assert!(matches!(
            Message::parse(truncated),
            Err(Hl7Error::MissingField("MSH-10"))
        ));
        let header = Message::parse_header(truncated, &Limits::default()).unwrap();
        assert_eq!(header.message_type().trigger, "A01");
        assert_eq!(header.control_id(), "");
    }

    #[test]
    fn limits_are_enforced() {
        let limits = Limits {
            max_size: 200,
            max_segments: 3,
            max_fields: 20,
        };
        let base = "MSH|^~\\&|A|B|C|D|1||ADT^A01|1|P|2.5\r";
        assert!(Message::parse_with(base.as_bytes(), &limits).is_ok());
        let big = format!("{base}NTE|{}\r", "x".repeat(200));
        assert!(matches!(
            Message::parse_with(big.as_bytes(), &limits),
            Err(Hl7Error::TooLarge { max: 200, .. })
        ));
        let many = format!("{base}NTE\rNTE\rNTE\r");
        assert!(matches!(
            Message::parse_with(many.as_bytes(), &limits),
            Err(Hl7Error::TooMany { what: "segments", .. })
        ));
        let wide = format!("{base}NTE{}\r", "|".repeat(21));
        assert!(matches!(
            Message::parse_with(wide.as_bytes(), &limits),
            Err(Hl7Error::TooMany {
                what: "fields in a segment",
                ..
            })
        ));
    }

    #[test]
    fn paths() {
        let p = Path::parse("OBX(2)-5(3).1.2").unwrap();
        assert_eq!(
            (
                p.segment.as_str(),
                p.segment_repetition,
                p.field,
                p.repetition,
                p.component,
                p.subcomponent
            ),
            ("OBX", 2, 5, 3, 1, 2)
        );
        assert_eq!(Path::parse("PID-3").unwrap().component, 1);
        for bad in [
            "PID",
            "PID-",
            "PID-0",
            "pid-3",
            "PID-3.1.1.1",
            "PID-3(0)",
            "PID-99999",
            "PIDX-1",
            "PID-3(2",
        ] {
            assert!(Path::parse(bad).is_err(), "{bad}");
        }
    }
}
