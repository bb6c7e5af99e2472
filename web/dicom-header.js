// The beginning of a DICOM Part 10 file, read in the browser before it is sent: its SOP
// Instance UID (from the file meta group, to match the STOW-RS answer to the file) and the
// patient's name, study description and date (to say what was sent, for people who may not
// search the archive and so cannot ask the server). Free of the DOM: unit-tested under Node.

/** Explicit VR: these VRs have a 4-byte length after 2 reserved bytes. */
const LONG_VRS = new Set(['OB', 'OD', 'OF', 'OL', 'OV', 'OW', 'SQ', 'SV', 'UC', 'UN', 'UR', 'UT', 'UV']);
const UNDEFINED = 0xFFFFFFFF;
const IMPLICIT_LE = '1.2.840.10008.1.2';
/** Syntaxes whose data set this does not read: big endian, and deflated. Every other one
 *  (compressed ones included: their header is explicit VR little endian) is read. */
const UNREADABLE = new Set(['1.2.840.10008.1.2.2', '1.2.840.10008.1.2.1.99']);
/** The text decoder for each Specific Character Set (the first value's, ISO 2022 prefix aside). */
const CHARSETS = {
  'ISO_IR 6': 'windows-1252', 'ISO_IR 100': 'iso-8859-1', 'ISO_IR 101': 'iso-8859-2',
  'ISO_IR 109': 'iso-8859-3', 'ISO_IR 110': 'iso-8859-4', 'ISO_IR 144': 'iso-8859-5',
  'ISO_IR 127': 'iso-8859-6', 'ISO_IR 126': 'iso-8859-7', 'ISO_IR 138': 'iso-8859-8',
  'ISO_IR 148': 'iso-8859-9', 'ISO_IR 203': 'iso-8859-15', 'ISO_IR 13': 'shift_jis',
  'ISO_IR 166': 'windows-874', 'ISO_IR 192': 'utf-8', GB18030: 'gb18030', GBK: 'gbk',
};
const STUDY_DATE = 0x00080020;
const STUDY_DESCRIPTION = 0x00081030;
const CHARSET = 0x00080005;
const PATIENT_NAME = 0x00100010;

/** `{sopInstanceUID, transferSyntax, patientName, studyDescription, studyDate}` of a file's
 *  first bytes (Uint8Array), or null when they are not Part 10 ("DICM" after the preamble).
 *  What cannot be read (absent, past the bytes given, deflated or big endian) is ''. */
export function readHeader(bytes) {
  if (bytes.length < 132 || String.fromCharCode(...bytes.subarray(128, 132)) !== 'DICM') return null;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const found = { sopInstanceUID: '', transferSyntax: '', patientName: '', studyDescription: '', studyDate: '' };
  const ascii = (start, length) => new TextDecoder('ascii').decode(bytes.subarray(start, start + length)).replace(/[\0\s]+$/, '').trim();
  // The file meta group: always explicit VR little endian.
  let at = 132;
  for (;;) {
    const el = element(view, at, true);
    if (!el || el.group !== 0x0002) break;
    if (el.length === UNDEFINED || el.end > bytes.length) return found;
    if (el.tag === 0x00020003) found.sopInstanceUID = ascii(el.value, el.length);
    if (el.tag === 0x00020010) found.transferSyntax = ascii(el.value, el.length);
    at = el.end;
  }
  if (!found.transferSyntax || UNREADABLE.has(found.transferSyntax)) return found;
  const explicit = found.transferSyntax !== IMPLICIT_LE;
  let charset = 'windows-1252';
  const text = (start, length) => {
    try {
      return new TextDecoder(charset).decode(bytes.subarray(start, start + length)).replace(/[\0\s]+$/, '').trim();
    } catch {
      return ascii(start, length);
    }
  };
  while (at < bytes.length) {
    const el = element(view, at, explicit);
    if (!el || el.tag > PATIENT_NAME) break;
    const end = el.length === UNDEFINED ? skipUndefined(view, el.value, explicit) : el.end;
    if (end === null || end > bytes.length) break;
    if (el.tag === CHARSET) {
      const first = ascii(el.value, el.length).split('\\')[0].replace(/^ISO 2022 IR /, 'ISO_IR ');
      charset = CHARSETS[first] || charset;
    }
    if (el.tag === STUDY_DATE) found.studyDate = ascii(el.value, el.length);
    if (el.tag === STUDY_DESCRIPTION) found.studyDescription = text(el.value, el.length);
    if (el.tag === PATIENT_NAME) found.patientName = text(el.value, el.length);
    at = end;
  }
  return found;
}

/** The element header at `at`: tag, where its value starts and ends (null past the bytes). */
function element(view, at, explicit) {
  if (at + 8 > view.byteLength) return null;
  const group = view.getUint16(at, true);
  const tag = (group << 16 | view.getUint16(at + 2, true)) >>> 0;
  let length;
  let value;
  if (group === 0xFFFE || !explicit) {
    // Items and delimiters have no VR, whatever the syntax.
    length = view.getUint32(at + 4, true);
    value = at + 8;
  } else {
    const vr = String.fromCharCode(view.getUint8(at + 4), view.getUint8(at + 5));
    if (LONG_VRS.has(vr)) {
      if (at + 12 > view.byteLength) return null;
      length = view.getUint32(at + 8, true);
      value = at + 12;
    } else {
      length = view.getUint16(at + 6, true);
      value = at + 8;
    }
  }
  return { group, tag, length, value, end: value + length };
}

/** Where an undefined-length value (a sequence, or encapsulated pixel data) starting at `at`
 *  ends, past its delimiter; null when the bytes given end first. */
function skipUndefined(view, at, explicit) {
  let pos = at;
  for (;;) {
    const el = element(view, pos, explicit);
    if (!el) return null;
    if (el.tag === 0xFFFEE0DD || el.tag === 0xFFFEE00D) return el.value; // delimiters: length 0
    if (el.length === UNDEFINED) {
      // An item of undefined length holds elements, each possibly a nested sequence.
      pos = skipUndefined(view, el.value, explicit);
      if (pos === null) return null;
    } else {
      pos = el.end;
    }
  }
}
