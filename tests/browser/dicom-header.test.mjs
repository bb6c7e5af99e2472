// Unit tests of web/dicom-header.js (what the upload page reads from a file before sending
// it), run by `node --test` from crates/openpacs/tests/ui_admin.rs: on every valid fixture,
// the values must be those pydicom reads from the same file.

import test from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { readHeader } from '../../web/dicom-header.js';

const fixtures = path.resolve(import.meta.dirname, '../fixtures/valid');
const files = fs.readdirSync(fixtures).filter(f => f.endsWith('.dcm')).sort();
const UNREADABLE = ['1.2.840.10008.1.2.2', '1.2.840.10008.1.2.1.99'];

/** pydicom's reading of each file: meta UIDs and the attributes, decoded in the file's
 *  character sets. */
const expected = JSON.parse(execFileSync('python3', ['-c', `
import json, sys, pydicom
out = {}
for name in sys.argv[2:]:
    ds = pydicom.dcmread(sys.argv[1] + "/" + name, stop_before_pixels=True)
    get = lambda k: str(ds.get(k, "") or "")
    out[name] = {
        "sopInstanceUID": str(ds.file_meta.get("MediaStorageSOPInstanceUID", "")),
        "transferSyntax": str(ds.file_meta.get("TransferSyntaxUID", "")),
        "patientName": get("PatientName"),
        "studyDescription": get("StudyDescription"),
        "studyDate": get("StudyDate"),
    }
print(json.dumps(out))
`, fixtures, ...files], { encoding: 'utf8' }));

test('every valid fixture reads as pydicom reads it', () => {
  assert.ok(files.length > 20, `fixtures: ${files.length}`);
  let named = 0;
  for (const name of files) {
    const bytes = new Uint8Array(fs.readFileSync(path.join(fixtures, name)).subarray(0, 64 * 1024));
    const got = readHeader(bytes);
    const want = expected[name];
    assert.equal(got.sopInstanceUID, want.sopInstanceUID, name);
    assert.equal(got.transferSyntax, want.transferSyntax, name);
    if (UNREADABLE.includes(want.transferSyntax)) {
      assert.equal(got.patientName, '', `${name}: not read`);
      continue;
    }
    // ISO 2022 escapes are not decoded: the alphabetic group (before "=") is what is shown.
    const alphabetic = v => v.split('=')[0];
    assert.equal(alphabetic(got.patientName), alphabetic(want.patientName), `${name}: PatientName`);
    assert.equal(got.studyDescription, want.studyDescription, `${name}: StudyDescription`);
    assert.equal(got.studyDate, want.studyDate, `${name}: StudyDate`);
    if (got.patientName) named++;
  }
  assert.ok(named > 15, `names read: ${named}`);
});

test('a file that is not Part 10 is null; a truncated one keeps what it read', () => {
  assert.equal(readHeader(new Uint8Array(200)), null);
  const ct = new Uint8Array(fs.readFileSync(path.join(fixtures, 'ct_explicit_le.dcm')));
  const metaOnly = readHeader(ct.subarray(0, 300));
  assert.equal(metaOnly.sopInstanceUID, expected['ct_explicit_le.dcm'].sopInstanceUID);
  assert.equal(metaOnly.patientName, '');
});
