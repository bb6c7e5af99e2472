//! Writing messages: a generic builder of segments and fields, and ACKs.

use crate::message::Path;
use crate::time::{new_control_id, now_timestamp};
use crate::{escape, Charset, Delimiters, Field, Hl7Error, Message};

/// MSA-1 (HL7 table 0008).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckCode {
    /// Application accept.
    AA,
    /// Application error: the message was understood but could not be processed.
    AE,
    /// Application reject: unsupported type or version, or a message that cannot be read.
    AR,
    /// Commit accept (enhanced mode).
    CA,
    CE,
    CR,
}

impl AckCode {
    pub fn as_str(self) -> &'static str {
        match self {
            AckCode::AA => "AA",
            AckCode::AE => "AE",
            AckCode::AR => "AR",
            AckCode::CA => "CA",
            AckCode::CE => "CE",
            AckCode::CR => "CR",
        }
    }

    pub fn parse(text: &str) -> Option<AckCode> {
        Some(match text {
            "AA" => AckCode::AA,
            "AE" => AckCode::AE,
            "AR" => AckCode::AR,
            "CA" => AckCode::CA,
            "CE" => AckCode::CE,
            "CR" => AckCode::CR,
            _ => return None,
        })
    }

    /// AA or CA: the receiver has the message.
    pub fn is_accept(self) -> bool {
        matches!(self, AckCode::AA | AckCode::CA)
    }
}

/// An HL7 error code (table 0357).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ErrorCode(pub u16);

impl ErrorCode {
    pub const SEGMENT_SEQUENCE: ErrorCode = ErrorCode(100);
    pub const REQUIRED_FIELD_MISSING: ErrorCode = ErrorCode(101);
    pub const DATA_TYPE: ErrorCode = ErrorCode(102);
    pub const TABLE_VALUE_NOT_FOUND: ErrorCode = ErrorCode(103);
    pub const UNSUPPORTED_MESSAGE_TYPE: ErrorCode = ErrorCode(200);
    pub const UNSUPPORTED_EVENT: ErrorCode = ErrorCode(201);
    pub const UNSUPPORTED_PROCESSING_ID: ErrorCode = ErrorCode(202);
    pub const UNSUPPORTED_VERSION: ErrorCode = ErrorCode(203);
    pub const UNKNOWN_KEY: ErrorCode = ErrorCode(204);
    pub const DUPLICATE_KEY: ErrorCode = ErrorCode(205);
    pub const RECORD_LOCKED: ErrorCode = ErrorCode(206);
    pub const INTERNAL_ERROR: ErrorCode = ErrorCode(207);

    /// The table's wording, written beside the code.
    pub fn description(self) -> &'static str {
        match self.0 {
            0 => "Message accepted",
            100 => "Segment sequence error",
            101 => "Required field missing",
            102 => "Data type error",
            103 => "Table value not found",
            200 => "Unsupported message type",
            201 => "Unsupported event code",
            202 => "Unsupported processing id",
            203 => "Unsupported version id",
            204 => "Unknown key identifier",
            205 => "Duplicate key identifier",
            206 => "Application record locked",
            _ => "Application internal error",
        }
    }
}

/// Where an error is: ERR-2 (v2.5) or the first components of ERR-1 (v2.3/2.4).
/// Zero means "not given".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ErrorLocation {
    pub segment: String,
    /// Occurrence of that segment, 1-based.
    pub sequence: u32,
    pub field: u32,
    pub repetition: u32,
    pub component: u32,
    pub subcomponent: u32,
}

impl ErrorLocation {
    /// From an HL7 path such as `PID-3` or `PID-3.1`: only the levels the path names.
    pub fn from_path(path: &str) -> Option<ErrorLocation> {
        let p = Path::parse(path).ok()?;
        let after = path.split_once('-')?.1;
        let depth = after.split(['.', '-']).count();
        let named = after.split(['.', '-']).next().is_some_and(|f| f.contains('('));
        Some(ErrorLocation {
            segment: p.segment,
            sequence: p.segment_repetition as u32,
            field: p.field as u32,
            repetition: if named || depth > 1 {
                p.repetition as u32
            } else {
                0
            },
            component: if depth > 1 { p.component as u32 } else { 0 },
            subcomponent: if depth > 2 { p.subcomponent as u32 } else { 0 },
        })
    }
}

/// One error reported in an ACK's ERR segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorDetail {
    pub code: ErrorCode,
    /// A sentence for a person; never internals.
    pub text: String,
    pub location: Option<ErrorLocation>,
}

impl ErrorDetail {
    pub fn new(code: ErrorCode, text: impl Into<String>) -> ErrorDetail {
        ErrorDetail {
            code,
            text: text.into(),
            location: None,
        }
    }

    /// The same, located at an HL7 path (`PID-3`).
    pub fn at(mut self, path: &str) -> ErrorDetail {
        self.location = ErrorLocation::from_path(path);
        self
    }

    /// What to report for a message that could not be read.
    pub fn from_error(error: &Hl7Error) -> ErrorDetail {
        ErrorDetail {
            code: error.error_code(),
            text: error.to_string(),
            location: error.location(),
        }
    }
}

/// Builds an acknowledgement of `original`: MSH with sender and receiver swapped, a new
/// control id and timestamp, the original's delimiters, character set (as read), processing
/// id and version; MSA with the code, the original control id and the error text; and, when there is
/// an error, an ERR segment in the form the original's version defines (ERR-1 for 2.3 and 2.4,
/// ERR-2/3/4/8 from 2.5 on). Characters the character set cannot write become `?`.
pub fn ack(original: &Message, code: AckCode, error: Option<&ErrorDetail>) -> Vec<u8> {
    let mut b = MessageBuilder::new(*original.delimiters(), original.text_charset());
    let header = original.header();
    let version = original.version();
    let msh = b.header();
    // MSH-18 is not copied: the builder writes the label of the character set the ACK is
    // actually encoded in, which differs from the original's label when that one was wrong
    // (undeclared 8-bit text, an unknown set, bytes invalid in the declared one).
    for (to, from) in [(3, 5), (4, 6), (5, 3), (6, 4), (11, 11), (12, 12)] {
        match header.field(from) {
            Some(field) => msh.copy_field(to, &field),
            None => msh.set(to, ""),
        };
    }
    msh.set(10, &new_control_id());
    if version.is_empty() {
        // A header cut short: answer in the version this crate writes by default.
        msh.set(12, "2.5");
    }
    msh.set_at(9, 1, 1, 1, "ACK");
    msh.set_at(9, 1, 2, 1, &original.message_type().trigger);
    if !before(&version, (2, 3, 1)) {
        msh.set_at(9, 1, 3, 1, "ACK");
    }
    let msa = b.append("MSA");
    msa.set(1, code.as_str()).set(2, &original.control_id());
    if let Some(e) = error {
        msa.set(3, &e.text);
        let err = b.append("ERR");
        let loc = e.location.clone().unwrap_or_default();
        let num = |n: u32| if n == 0 { String::new() } else { n.to_string() };
        if before(&version, (2, 5, 0)) {
            // ERR-1 (ELD): segment ^ sequence ^ field ^ code&text&table.
            err.set_at(1, 1, 1, 1, &loc.segment)
                .set_at(1, 1, 2, 1, &num(loc.sequence))
                .set_at(1, 1, 3, 1, &num(loc.field))
                .set_at(1, 1, 4, 1, &e.code.0.to_string())
                .set_at(1, 1, 4, 2, e.code.description())
                .set_at(1, 1, 4, 3, "HL70357");
        } else {
            if e.location.is_some() {
                let parts = [
                    loc.segment.clone(),
                    num(loc.sequence),
                    num(loc.field),
                    num(loc.repetition),
                    num(loc.component),
                    num(loc.subcomponent),
                ];
                for (i, part) in parts.iter().enumerate() {
                    err.set_at(2, 1, i + 1, 1, part);
                }
            }
            err.set_at(3, 1, 1, 1, &e.code.0.to_string())
                .set_at(3, 1, 2, 1, e.code.description())
                .set_at(3, 1, 3, 1, "HL70357")
                .set(4, "E")
                .set(8, &e.text);
        }
    }
    b.to_bytes_lossy()
}

/// Whether version text such as `2.3.1` is before `(major, minor, patch)`; an unreadable
/// version counts as recent.
fn before(version: &str, than: (u32, u32, u32)) -> bool {
    let mut parts = version.split('.').map(|p| p.trim().parse::<u32>().ok());
    let mut next = || parts.next().flatten().unwrap_or(0);
    let v = (next(), next(), next());
    v.0 != 0 && v < than
}

type Tree = Vec<Vec<Vec<String>>>;

/// One segment under construction: fields → repetitions → components → sub-components, as
/// plain text (escaped when written).
#[derive(Clone, Debug)]
pub struct SegmentBuilder {
    name: String,
    fields: Vec<Tree>,
}

impl SegmentBuilder {
    /// Indices above this are ignored (a programming error, not a message).
    const MAX_INDEX: usize = 9_999;

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sets field `n` to a single value (its first component).
    pub fn set(&mut self, n: usize, value: &str) -> &mut Self {
        self.set_at(n, 1, 1, 1, value)
    }

    /// Sets field `n` to components `values` (first repetition).
    pub fn components(&mut self, n: usize, values: &[&str]) -> &mut Self {
        for (i, v) in values.iter().enumerate() {
            self.set_at(n, 1, i + 1, 1, v);
        }
        self
    }

    /// Sets one sub-component, all indices 1-based; MSH-1 and MSH-2 come from the delimiters
    /// and cannot be set.
    pub fn set_at(
        &mut self,
        field: usize,
        repetition: usize,
        component: usize,
        subcomponent: usize,
        value: &str,
    ) -> &mut Self {
        let indices = [field, repetition, component, subcomponent];
        let valid = indices.iter().all(|i| (1..=Self::MAX_INDEX).contains(i));
        debug_assert!(valid, "HL7 index out of range: {indices:?}");
        if !valid || (self.name == "MSH" && field <= 2) {
            return self;
        }
        fn slot<T: Default>(v: &mut Vec<T>, i: usize) -> &mut T {
            if v.len() < i {
                v.resize_with(i, T::default);
            }
            &mut v[i - 1]
        }
        let f = slot(&mut self.fields, field);
        let r = slot(f, repetition);
        let c = slot(r, component);
        *slot(c, subcomponent) = value.to_owned();
        self
    }

    /// Replaces field `n` by a copy of a parsed field, every repetition, component and
    /// sub-component (unescaped here, escaped again for this message's delimiters).
    pub fn copy_field(&mut self, n: usize, from: &Field<'_>) -> &mut Self {
        if let Some(f) = n.checked_sub(1).and_then(|i| self.fields.get_mut(i)) {
            f.clear();
        }
        for (r, rep) in from.repetitions().enumerate() {
            for (c, comp) in rep.components().enumerate() {
                for (s, sub) in comp.subcomponents().enumerate() {
                    self.set_at(n, r + 1, c + 1, s + 1, sub.as_deref().unwrap_or(""));
                }
            }
        }
        self
    }

    fn write(
        &self,
        d: &Delimiters,
        charset: Charset,
        lossy: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), Hl7Error> {
        out.extend_from_slice(self.name.as_bytes());
        let first = if self.name == "MSH" {
            out.push(d.field);
            out.extend_from_slice(&d.encoding_characters());
            3
        } else {
            1
        };
        let used = trimmed_len(&self.fields, |f| f.iter().all(|r| rep_is_empty(r)));
        for field in self.fields.iter().take(used).skip(first - 1) {
            out.push(d.field);
            let reps = trimmed_len(field, |r| rep_is_empty(r));
            for (ri, rep) in field.iter().take(reps).enumerate() {
                if ri > 0 {
                    out.push(d.repetition);
                }
                let comps = trimmed_len(rep, |c| c.iter().all(String::is_empty));
                for (ci, comp) in rep.iter().take(comps).enumerate() {
                    if ci > 0 {
                        out.push(d.component);
                    }
                    let subs = trimmed_len(comp, String::is_empty);
                    for (si, sub) in comp.iter().take(subs).enumerate() {
                        if si > 0 {
                            out.push(d.subcomponent.unwrap_or(b'&'));
                        }
                        escape::escape(sub, d, charset, lossy, out).map_err(|ch| Hl7Error::Unencodable {
                            ch,
                            charset: charset.name(),
                        })?;
                    }
                }
            }
        }
        out.push(b'\r');
        Ok(())
    }
}

fn rep_is_empty(rep: &[Vec<String>]) -> bool {
    rep.iter().all(|c| c.iter().all(String::is_empty))
}

/// Length without the trailing empty items.
fn trimmed_len<T>(items: &[T], empty: impl Fn(&T) -> bool) -> usize {
    items.iter().rposition(|i| !empty(i)).map_or(0, |p| p + 1)
}

/// A message under construction. Values are plain text; delimiters in them are escaped and
/// the text is encoded in the builder's character set when the message is written.
#[derive(Clone, Debug)]
pub struct MessageBuilder {
    delimiters: Delimiters,
    charset: Charset,
    segments: Vec<SegmentBuilder>,
}

impl MessageBuilder {
    /// A message with only MSH-1, MSH-2, MSH-7 (now) and MSH-18 (the character set) set.
    /// Delimiters without an escape or sub-component character are replaced by `|^~\&`,
    /// since values must be escapable.
    pub fn new(delimiters: Delimiters, charset: Charset) -> MessageBuilder {
        let delimiters = if delimiters.escape.is_some() && delimiters.subcomponent.is_some() {
            delimiters
        } else {
            Delimiters::default()
        };
        let mut b = MessageBuilder {
            delimiters,
            charset,
            segments: Vec::new(),
        };
        b.append("MSH").set(7, &now_timestamp()).set(18, charset.label());
        b
    }

    /// A new message of type `code^trigger^structure` in `version`, UTF-8, with a fresh
    /// control id and processing id `P`; sender and receiver (MSH-3 to MSH-6) are the
    /// caller's to set.
    pub fn message(code: &str, trigger: &str, structure: &str, version: &str) -> MessageBuilder {
        let mut b = MessageBuilder::new(Delimiters::default(), Charset::Utf8);
        b.header()
            .components(9, &[code, trigger, structure])
            .set(10, &new_control_id())
            .set(11, "P")
            .set(12, version);
        b
    }

    /// The MSH segment.
    pub fn header(&mut self) -> &mut SegmentBuilder {
        &mut self.segments[0]
    }

    /// Appends a segment. The name should be three capital letters or digits; anything else
    /// is written as given, so keep names to literals.
    pub fn append(&mut self, name: &str) -> &mut SegmentBuilder {
        self.segments.push(SegmentBuilder {
            name: name.to_owned(),
            fields: Vec::new(),
        });
        let last = self.segments.len() - 1;
        &mut self.segments[last]
    }

    /// Sets the value at an HL7 path (`PID-5.2`, `OBX(2)-5`); the segment occurrence after the
    /// last existing one is appended, later ones are an error, as are MSH-1 and MSH-2.
    pub fn set(&mut self, path: &str, value: &str) -> Result<&mut Self, Hl7Error> {
        let p = Path::parse(path)?;
        if p.segment == "MSH" && (p.field <= 2 || p.segment_repetition > 1) {
            return Err(Hl7Error::BadPath(path.to_owned()));
        }
        let existing = self.segments.iter().filter(|s| s.name == p.segment).count();
        let segment = if p.segment_repetition == existing + 1 {
            self.append(&p.segment)
        } else {
            let index = self
                .segments
                .iter()
                .enumerate()
                .filter(|(_, s)| s.name == p.segment)
                .nth(p.segment_repetition - 1)
                .map(|(i, _)| i)
                .ok_or_else(|| Hl7Error::BadPath(path.to_owned()))?;
            &mut self.segments[index]
        };
        segment.set_at(p.field, p.repetition, p.component, p.subcomponent, value);
        Ok(self)
    }

    /// MSH-10 as set.
    pub fn control_id(&self) -> &str {
        self.segments[0]
            .fields
            .get(9)
            .and_then(|f| f.first())
            .and_then(|r| r.first())
            .and_then(|c| c.first())
            .map_or("", String::as_str)
    }

    /// The encoded message; fails on a character the character set cannot write.
    pub fn to_bytes(&self) -> Result<Vec<u8>, Hl7Error> {
        self.write(false)
    }

    /// The encoded message, with `?` for characters the character set cannot write.
    pub fn to_bytes_lossy(&self) -> Vec<u8> {
        self.write(true).unwrap_or_default()
    }

    fn write(&self, lossy: bool) -> Result<Vec<u8>, Hl7Error> {
        let mut out = Vec::new();
        for segment in &self.segments {
            segment.write(&self.delimiters, self.charset, lossy, &mut out)?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_escapes_and_round_trips() {
        let mut b = MessageBuilder::message("ORM", "O01", "ORM_O01", "2.5");
        b.header().set(3, "OPENPACS").set(5, "RIS");
        b.set("PID-3.1", "12|34").unwrap();
        b.set("PID-3.4", "HOSP").unwrap();
        b.set("PID-5.1", "O'NÉIL^SMITH").unwrap();
        b.set("PID-3(2).1", "X&Y~Z\\").unwrap();
        b.set("ORC-1", "SC").unwrap();
        b.set("ORC-5", "CM").unwrap();
        b.set("NTE-3", "line 1\nline 2").unwrap();
        b.set("NTE(2)-3", "second").unwrap();
        assert!(b.set("NTE(4)-3", "gap").is_err());
        assert!(b.set("MSH-2", "x").is_err());
        let bytes = b.to_bytes().unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.starts_with("MSH|^~\\&|OPENPACS||RIS||"), "{text}");
        assert!(text.contains("|ORM^O01^ORM_O01|"), "{text}");
        assert!(
            text.contains("PID|||12\\F\\34^^^HOSP~X\\T\\Y\\R\\Z\\E\\||O'NÉIL\\S\\SMITH\r"),
            "{text}"
        );
        assert!(
            text.contains("NTE|||line 1\\.br\\line 2\rNTE|||second\r"),
            "{text}"
        );
        let m = Message::parse(&bytes).unwrap();
        assert_eq!(m.control_id(), b.control_id());
        assert_eq!(m.charset(), Charset::Utf8);
        assert_eq!(m.value("PID-3").as_deref(), Some("12|34"));
        assert_eq!(m.value("PID-3(2)").as_deref(), Some("X&Y~Z\\"));
        assert_eq!(m.value("PID-5").as_deref(), Some("O'NÉIL^SMITH"));
        assert_eq!(m.value("NTE-3").as_deref(), Some("line 1\nline 2"));
        assert_eq!(m.value("ORC-5").as_deref(), Some("CM"));
    }

    #[test]
    fn unencodable_characters() {
        let mut b = MessageBuilder::new(Delimiters::default(), Charset::Latin1);
        b.set("MSH-9", "ADT").unwrap();
        b.set("PID-5", "Zoë €").unwrap();
        assert!(matches!(b.to_bytes(), Err(Hl7Error::Unencodable { ch: '€', .. })));
        let lossy = b.to_bytes_lossy();
        assert!(lossy.ends_with(b"PID|||||Zo\xEB ?\r"), "{lossy:?}");
        assert!(String::from_utf8_lossy(&lossy).contains("|8859/1\r"));
    }

    const V25: &str = "MSH|^~\\&|RIS|HOSP|PACS|RAD|20240102||ADT^A08^ADT_A01|CTRL42|P|2.5.1|||AL|NE||UNICODE UTF-8\rPID|1||X\r";
    const V23: &str = "MSH|^~\\&|RIS|HOSP|PACS|RAD|20240102||ADT^A08|CTRL23|P|2.3\rPID|1||X\r";

    #[test]
    fn ack_accept() {
        let original = Message::parse(V25.as_bytes()).unwrap();
        let bytes = ack(&original, AckCode::AA, None);
        let a = Message::parse(&bytes).unwrap();
        assert_eq!(a.value("MSH-3").as_deref(), Some("PACS"));
        assert_eq!(a.value("MSH-4").as_deref(), Some("RAD"));
        assert_eq!(a.value("MSH-5").as_deref(), Some("RIS"));
        assert_eq!(a.value("MSH-6").as_deref(), Some("HOSP"));
        assert_eq!(a.message_type().to_string(), "ACK^A08^ACK");
        assert_ne!(a.control_id(), "CTRL42");
        assert_eq!(a.version(), "2.5.1");
        assert_eq!(a.processing_id(), "P");
        assert_eq!(a.charset(), Charset::Utf8);
        assert_eq!(a.value("MSA-1").as_deref(), Some("AA"));
        assert_eq!(a.value("MSA-2").as_deref(), Some("CTRL42"));
        assert!(a.segment("ERR").is_none());
        assert_eq!(a.value("MSH-7").map(|t| t.len()), Some(19));
    }

    #[test]
    fn ack_error_v25() {
        let original = Message::parse(V25.as_bytes()).unwrap();
        let e = ErrorDetail::new(ErrorCode::UNKNOWN_KEY, "unknown patient X|1").at("PID-3");
        let bytes = ack(&original, AckCode::AE, Some(&e));
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(
            text.ends_with("MSA|AE|CTRL42|unknown patient X\\F\\1\rERR||PID^1^3|204^Unknown key identifier^HL70357|E||||unknown patient X\\F\\1\r"),
            "{text}"
        );
        let a = Message::parse(&bytes).unwrap();
        assert_eq!(a.value("ERR-3").as_deref(), Some("204"));
        assert_eq!(a.value("ERR-8").as_deref(), Some("unknown patient X|1"));
    }

    #[test]
    fn ack_error_v23_uses_err1() {
        let original = Message::parse(V23.as_bytes()).unwrap();
        let e = ErrorDetail::new(ErrorCode::REQUIRED_FIELD_MISSING, "PID-3 is empty").at("PID-3");
        let text = String::from_utf8(ack(&original, AckCode::AE, Some(&e))).unwrap();
        assert!(text.contains("|ACK^A08|"), "{text}");
        assert!(
            text.ends_with("MSA|AE|CTRL23|PID-3 is empty\rERR|PID^1^3^101&Required field missing&HL70357\r"),
            "{text}"
        );
    }

    #[test]
    fn ack_of_a_header_only_message() {
        let raw = b"MSH|^~\\&|RIS|HOSP|PACS|RAD|1||ORU^R01|C9|P|2.4\rOBX|1|TX|\xff";
        let header = Message::parse_header(raw, &Default::default()).unwrap();
        let e = ErrorDetail::from_error(&Hl7Error::MissingField("MSH-9"));
        let a = Message::parse(&ack(&header, AckCode::AR, Some(&e))).unwrap();
        assert_eq!(a.value("MSA-1").as_deref(), Some("AR"));
        assert_eq!(a.value("MSA-2").as_deref(), Some("C9"));
        assert_eq!(a.value("ERR-1.1").as_deref(), Some("MSH"));
        assert_eq!(a.value("ERR-1.3").as_deref(), Some("9"));
        assert_eq!(a.value("ERR-1.4.1").as_deref(), Some("101"));
    }

    #[test]
    fn locations() {
        let l = ErrorLocation::from_path("PID-3.1").unwrap();
        assert_eq!((l.field, l.repetition, l.component, l.subcomponent), (3, 1, 1, 0));
        let l = ErrorLocation::from_path("OBX(2)-5").unwrap();
        assert_eq!((l.sequence, l.field, l.repetition, l.component), (2, 5, 0, 0));
    }
}
