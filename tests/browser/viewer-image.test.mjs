// Unit tests of the viewer's image arithmetic (web/viewer-image.js), run by `node --test`
// from crates/openpacs/tests/ui_viewer.rs. Expected values are worked out from the formulas
// of PS3.3 C.11.2.1.2 and C.7.6.3.1.2 by hand, not by calling the code under test.

import test from 'node:test';
import assert from 'node:assert/strict';
import {
  voi, decodeFrame, multipartParts, sortInstances, imageInfo, stackOf, displayGrey, ellipseStats,
  lengthMm, defaultWindow, modalityUnit,
} from '../../web/viewer-image.js';

const info = (over = {}) => ({
  rows: 2, columns: 2, samplesPerPixel: 1, photometric: 'MONOCHROME2', planarConfiguration: 0,
  bitsAllocated: 16, bitsStored: 16, highBit: 15, signed: false, slope: 1, intercept: 0,
  voiFunction: 'LINEAR', spacing: null, modality: 'CT', rescaleType: '', ...over,
});

test('LINEAR window: PS3.3 C.11.2.1.2.1 thresholds and the line between', () => {
  // c = 40, w = 400: 0 at or below c - 0.5 - (w-1)/2 = -160; 255 above c - 0.5 + (w-1)/2 = 239.
  assert.equal(voi(-160, 40, 400), 0);
  assert.equal(voi(-1000, 40, 400), 0);
  assert.equal(voi(239.5, 40, 400), 255);
  // ((40 - 39.5) / 399 + 0.5) * 255 = 127.8195…
  assert.ok(Math.abs(voi(40, 40, 400) - 127.81954887) < 1e-6);
  // LINEAR_EXACT: ((x - c) / w + 0.5) * 255 between c ± w/2.
  assert.equal(voi(40, 40, 400, 'LINEAR_EXACT'), 127.5);
  assert.equal(voi(-160, 40, 400, 'LINEAR_EXACT'), 0);
  // SIGMOID at the centre is half the output range.
  assert.equal(voi(40, 40, 400, 'SIGMOID'), 127.5);
});

test('grey level: rescale, window, rounding, MONOCHROME1 inverted', () => {
  const ct = info({ slope: 1, intercept: -1024 });
  // Stored 1064 → 40 HU → 127.8 → 128 under 40/400.
  assert.equal(displayGrey(ct, 1064, { center: 40, width: 400 }), 128);
  assert.equal(displayGrey({ ...ct, photometric: 'MONOCHROME1' }, 1064, { center: 40, width: 400 }), 127);
  assert.equal(displayGrey(ct, 0, { center: 40, width: 400 }), 0);
});

test('12 bits stored in 16, signed, with other bits set: masked and sign-extended', () => {
  const i = info({ rows: 1, columns: 3, bitsStored: 12, highBit: 11, signed: true });
  // 0xF800 | 0x0800 → 0x800 (12-bit -2048); 0x07FF → 2047; 0xA001 → 1.
  const bytes = new Uint8Array([0x00, 0xf8, 0xff, 0x07, 0x01, 0xa0]);
  const d = decodeFrame(i, bytes);
  assert.deepEqual([...d.values], [-2048, 2047, 1]);
  assert.equal(d.min, -2048);
  assert.equal(d.max, 2047);
});

test('a frame shorter than its rows and columns is refused, not shown half', () => {
  assert.throws(() => decodeFrame(info(), new Uint8Array(6)), /6 bytes, 8 expected/);
  assert.throws(() => decodeFrame(info({ bitsAllocated: 1 }), new Uint8Array(8)), /1-bit/);
});

test('colour: planar RGB and YBR_FULL become interleaved RGB', () => {
  const planar = info({ rows: 1, columns: 2, samplesPerPixel: 3, photometric: 'RGB', planarConfiguration: 1, bitsAllocated: 8, bitsStored: 8, highBit: 7 });
  assert.deepEqual([...decodeFrame(planar, new Uint8Array([1, 2, 3, 4, 5, 6])).rgb], [1, 3, 5, 2, 4, 6]);
  const ybr = { ...planar, photometric: 'YBR_FULL', planarConfiguration: 0 };
  // Neutral chroma keeps the luma: grey; Cr = 255 pushes red up by 1.402 × 127.
  const rgb = decodeFrame(ybr, new Uint8Array([100, 128, 128, 100, 128, 255])).rgb;
  assert.deepEqual([...rgb.slice(0, 3)], [100, 100, 100]);
  assert.equal(rgb[3], 255); // 100 + 178.05, clamped
  assert.equal(rgb[5], 100);
});

test('metadata: a JPEG-compressed YBR object is shown as RGB once decoded', () => {
  const json = {
    '00280004': { vr: 'CS', Value: ['YBR_FULL_422'] },
    '00280002': { vr: 'US', Value: [3] },
    '00083002': { vr: 'UI', Value: ['1.2.840.10008.1.2.4.50'] },
    '00281050': { vr: 'DS', Value: ['40', '400'] },
    '00281051': { vr: 'DS', Value: [400, 1500] },
    '00280030': { vr: 'DS', Value: ['0.5', '0.25'] },
  };
  const i = imageInfo(json);
  assert.equal(i.photometric, 'RGB');
  assert.deepEqual(i.window, { center: 40, width: 400 });
  assert.deepEqual(i.spacing, [0.5, 0.25]);
  // Native YBR_FULL stays what it is.
  json['00083002'].Value = ['1.2.840.10008.1.2.1'];
  assert.equal(imageInfo(json).photometric, 'YBR_FULL_422');
});

test('enhanced objects: rescale from the functional groups; no HU claimed without one', () => {
  const seq = items => ({ vr: 'SQ', Value: items });
  const pvt = (slope, intercept) => ({ '00289145': seq([{ '00281053': { vr: 'DS', Value: [slope] }, '00281052': { vr: 'DS', Value: [intercept] } }]) });
  const base = { '00080060': { vr: 'CS', Value: ['CT'] }, '00280008': { vr: 'IS', Value: [2] } };
  const shared = imageInfo({ ...base, '52009229': seq([pvt(1, -1024)]) });
  assert.equal(shared.intercept, -1024);
  assert.equal(modalityUnit(shared), 'HU');
  const perFrame = imageInfo({ ...base, '52009230': seq([pvt(1, -1024), pvt(2, -2048)]) });
  const frames = stackOf([{ ...perFrame, sopInstanceUID: 'e', instanceNumber: 1, position: [], orientation: [] }]);
  assert.deepEqual(frames.map(f => [f.info.slope, f.info.intercept]), [[1, -1024], [2, -2048]]);
  const bare = imageInfo(base);
  assert.equal(bare.rescaled, false);
  assert.equal(modalityUnit(bare), '');
});

test('a decoded RLE colour frame is interleaved whatever the stored Planar Configuration', () => {
  const json = {
    '00280002': { vr: 'US', Value: [3] }, '00280004': { vr: 'CS', Value: ['RGB'] },
    '00280006': { vr: 'US', Value: [1] }, '00280100': { vr: 'US', Value: [8] },
    '00280010': { vr: 'US', Value: [1] }, '00280011': { vr: 'US', Value: [2] },
    '00083002': { vr: 'UI', Value: ['1.2.840.10008.1.2.5'] },
  };
  const rle = imageInfo(json);
  assert.equal(rle.planarConfiguration, 0);
  assert.deepEqual([...decodeFrame(rle, new Uint8Array([10, 20, 30, 40, 50, 60])).rgb], [10, 20, 30, 40, 50, 60]);
  json['00083002'].Value = ['1.2.840.10008.1.2.1'];
  assert.equal(imageInfo(json).planarConfiguration, 1);
});

test('palette colour is refused with a reason, not shown as grey indices', () => {
  assert.throws(() => decodeFrame(info({ photometric: 'PALETTE COLOR', bitsAllocated: 8 }), new Uint8Array(4)), /preview/);
});

test('multipart: parts split at the boundary, binary bodies intact', () => {
  const body = new Uint8Array([13, 10, 45, 45, 0, 255]); // CRLF and "--" inside the data
  const enc = new TextEncoder();
  const chunks = [
    enc.encode('--b1\r\nContent-Type: application/octet-stream\r\n\r\n'), body,
    enc.encode('\r\n--b1\r\nContent-Type: application/octet-stream\r\n\r\n'), new Uint8Array([7]),
    enc.encode('\r\n--b1--\r\n'),
  ];
  const all = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let at = 0;
  for (const c of chunks) {
    all.set(c, at);
    at += c.length;
  }
  const parts = multipartParts(all.buffer, 'multipart/related; type="application/octet-stream"; boundary=b1');
  assert.equal(parts.length, 2);
  assert.deepEqual([...parts[0]], [...body]);
  assert.deepEqual([...parts[1]], [7]);
  assert.throws(() => multipartParts(all.buffer.slice(0, all.length - 10), 'multipart/related; boundary=b1'), /truncated/);
});

test('stack order: along the slice normal, else by Instance Number; frames expanded', () => {
  const axial = [1, 0, 0, 0, 1, 0];
  const mk = (uid, z, n, frames = 1) => ({ sopInstanceUID: uid, position: [0, 0, z], orientation: axial, instanceNumber: n, numberOfFrames: frames });
  // Positions give the order, Instance Numbers its direction: numbered from the head (z = 10)
  // down, the head comes first even though c (0) was numbered last.
  assert.deepEqual(sortInstances([mk('a', 10, 1), mk('b', -5, 2), mk('c', 0, 3)]).map(i => i.sopInstanceUID), ['a', 'c', 'b']);
  // Numbered from the feet up: feet first.
  assert.deepEqual(sortInstances([mk('a', 10, 3), mk('b', -5, 1), mk('c', 0, 2)]).map(i => i.sopInstanceUID), ['b', 'c', 'a']);
  // Without positions: Instance Number.
  const bare = [{ ...mk('a', 0, 3), position: [] }, { ...mk('b', 0, 1), position: [] }];
  assert.deepEqual(sortInstances(bare).map(i => i.sopInstanceUID), ['b', 'a']);
  assert.deepEqual(stackOf([mk('m', 0, 1, 3)]).map(e => e.key), ['m/1', 'm/2', 'm/3']);
});

test('measurements: length in mm from Pixel Spacing (row, column); ROI mean and SD', () => {
  const i = info({ rows: 10, columns: 10, spacing: [2, 0.5] });
  // 4 columns across (0.5 mm each) and 3 rows down (2 mm each): hypot(2, 6).
  assert.ok(Math.abs(lengthMm(i, { x: 1, y: 1 }, { x: 5, y: 4 }) - Math.hypot(2, 6)) < 1e-9);
  assert.equal(lengthMm({ ...i, spacing: null }, { x: 0, y: 0 }, { x: 1, y: 1 }), null);
  // Left half 100, right half 200 (stored), rescaled by 2 and -10: 190 and 390.
  const values = new Int16Array(100).map((_, k) => (k % 10 < 5 ? 100 : 200));
  const rescaled = { ...i, slope: 2, intercept: -10 };
  const whole = ellipseStats(rescaled, { values }, { x: 0, y: 0 }, { x: 10, y: 10 });
  // The inscribed circle is symmetric about x = 5: as many pixels on each side.
  assert.equal(whole.mean, 290);
  assert.equal(whole.sd, 100);
  assert.equal(whole.areaMm2, whole.count * 1);
  const left = ellipseStats(rescaled, { values }, { x: 0, y: 0 }, { x: 4, y: 4 });
  assert.equal(left.mean, 190);
  assert.equal(left.sd, 0);
});

test('default window: the object\'s, else the rescaled value range', () => {
  assert.deepEqual(defaultWindow(info({ window: { center: 40, width: 400 } }), { min: 0, max: 1 }), { center: 40, width: 400, fn: 'LINEAR' });
  const w = defaultWindow(info({ slope: 1, intercept: -1024 }), { min: 0, max: 2048 });
  assert.deepEqual(w, { center: 0, width: 2048, fn: 'LINEAR_EXACT' });
});

test('VOI LUT: inline US values or OW InlineBinary; clamped below and above its range', () => {
  const lutJson = data => ({
    '00281050': undefined,
    '00283010': { vr: 'SQ', Value: [{ '00283002': { vr: 'US', Value: [3, 100, 8] }, '00283006': data }] },
  });
  const inline = imageInfo(lutJson({ vr: 'US', Value: [0, 128, 255] }));
  assert.deepEqual([...inline.voiLut.data], [0, 128, 255]);
  // OW little endian: 0x0000, 0x0080, 0x00ff.
  const binary = imageInfo(lutJson({ vr: 'OW', InlineBinary: Buffer.from([0, 0, 128, 0, 255, 0]).toString('base64') }));
  assert.deepEqual([...binary.voiLut.data], [0, 128, 255]);
  const window = defaultWindow(inline, { min: 0, max: 1 });
  assert.ok(window.lut);
  // Modality value 101 → entry 1 (128 of 255); below 100 → entry 0; above 102 → entry 2.
  assert.equal(displayGrey({ ...inline, photometric: 'MONOCHROME2' }, 101, window), 128);
  assert.equal(displayGrey({ ...inline, photometric: 'MONOCHROME2' }, 5, window), 0);
  assert.equal(displayGrey({ ...inline, photometric: 'MONOCHROME2' }, 500, window), 255);
  // Bulk data: fetched later, so no LUT window until it is there.
  const bulk = imageInfo(lutJson({ vr: 'OW', BulkDataURI: 'http://x/bulk' }));
  assert.equal(bulk.voiLut.data, null);
  assert.equal(defaultWindow(bulk, { min: 0, max: 10 }).lut, undefined);
});
