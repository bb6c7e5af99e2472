// Unit tests of the viewer's orientation markers (web/viewer-orientation.js), run by
// `node --test` from crates/openpacs/tests/ui_viewer.rs. The expected letters are worked out
// by hand from PS3.3 C.7.6.2.1.1 (patient coordinates: +x Left, +y Posterior, +z Head; the
// first direction cosines are a row's, towards the right-hand edge; the last, a column's).

import test from 'node:test';
import assert from 'node:assert/strict';
import { directionLetters, orientationMarkers, viewMatrix, toView, fromView } from '../../web/viewer-orientation.js';

const markers = (orientation, view) => orientationMarkers({ orientation }, view);

test('axial, sagittal and coronal images', () => {
  // Axial seen from the feet: the patient's right on the screen's left, anterior at the top.
  assert.deepEqual(markers([1, 0, 0, 0, 1, 0]), { left: 'R', right: 'L', top: 'A', bottom: 'P' });
  // Sagittal: rows run posterior, columns feet-wards.
  assert.deepEqual(markers([0, 1, 0, 0, 0, -1]), { left: 'A', right: 'P', top: 'H', bottom: 'F' });
  // Coronal: rows run to the left, columns feet-wards.
  assert.deepEqual(markers([1, 0, 0, 0, 0, -1]), { left: 'R', right: 'L', top: 'H', bottom: 'F' });
  // Prone, feet first: everything the other way round.
  assert.deepEqual(markers([-1, 0, 0, 0, -1, 0]), { left: 'L', right: 'R', top: 'P', bottom: 'A' });
});

test('oblique images name their dominant directions, largest first', () => {
  // Rows turned 30° from left towards posterior; columns 0.75 posterior, 0.5 feet, 0.433 right.
  assert.deepEqual(markers([0.866025, 0.5, 0, -0.433013, 0.75, -0.5]),
    { left: 'RA', right: 'LP', top: 'AHL', bottom: 'PFR' });
  // One degree of tilt is not an oblique: sin 1° = 0.0175 < 0.25.
  assert.deepEqual(markers([0.99985, 0.017452, 0, -0.017452, 0.99985, 0]), { left: 'R', right: 'L', top: 'A', bottom: 'P' });
  // 20° (sin = 0.342) is.
  assert.equal(directionLetters([0.939693, 0, 0.342020]), 'LH');
  // A tie keeps the axes' order (x, y, z).
  assert.equal(directionLetters([0.707107, -0.707107, 0]), 'LA');
  // Not normalised: the same directions.
  assert.equal(directionLetters([0, 0, -3]), 'F');
  assert.equal(directionLetters([0, 0, 0]), '');
});

test('flips and quarter turns move the markers with the image', () => {
  const axial = [1, 0, 0, 0, 1, 0];
  assert.deepEqual(markers(axial, { flipH: true }), { left: 'L', right: 'R', top: 'A', bottom: 'P' });
  assert.deepEqual(markers(axial, { flipV: true }), { left: 'R', right: 'L', top: 'P', bottom: 'A' });
  // A quarter turn clockwise: the anterior side, at the top, comes to the right.
  assert.deepEqual(markers(axial, { rotate: 1 }), { left: 'P', right: 'A', top: 'R', bottom: 'L' });
  assert.deepEqual(markers(axial, { rotate: 2 }), { left: 'L', right: 'R', top: 'P', bottom: 'A' });
  assert.deepEqual(markers(axial, { rotate: -1 }), markers(axial, { rotate: 3 }));
  assert.deepEqual(markers(axial, { rotate: 4 }), markers(axial));
  // Turned, then flipped left-right.
  assert.deepEqual(markers(axial, { rotate: 1, flipH: true }), { left: 'A', right: 'P', top: 'R', bottom: 'L' });
});

test('projection images without Image Orientation use Patient Orientation', () => {
  const cr = { patientOrientation: ['A', 'F'] };
  assert.deepEqual(orientationMarkers(cr), { left: 'P', right: 'A', top: 'H', bottom: 'F' });
  assert.deepEqual(orientationMarkers({ patientOrientation: ['L', 'FP'] }), { left: 'R', right: 'L', top: 'HA', bottom: 'FP' });
  assert.deepEqual(orientationMarkers(cr, { rotate: 1 }), { left: 'F', right: 'H', top: 'P', bottom: 'A' });
  assert.equal(orientationMarkers({ patientOrientation: ['X', 'F'] }), null);
  assert.equal(orientationMarkers({ orientation: [], patientOrientation: [] }), null);
  assert.equal(orientationMarkers({ orientation: [1, 0, 0, 0, 1] }), null);
});

test('the displayed image follows the same turns as the markers', () => {
  // A 4 × 2 image: corners (0, 0) top-left and (4, 0) top-right.
  const turned = viewMatrix(4, 2, { rotate: 1 });
  assert.equal(turned.width, 2);
  assert.equal(turned.height, 4);
  // A quarter turn clockwise: the top-left corner goes to the top-right, the top-right to the
  // bottom-right.
  assert.deepEqual(toView(turned, { x: 0, y: 0 }), { x: 2, y: 0 });
  assert.deepEqual(toView(turned, { x: 4, y: 0 }), { x: 2, y: 4 });
  assert.deepEqual(toView(viewMatrix(4, 2, { flipH: true }), { x: 1, y: 0 }), { x: 3, y: 0 });
  assert.deepEqual(toView(viewMatrix(4, 2, { flipV: true }), { x: 1, y: 0 }), { x: 1, y: 2 });
  assert.deepEqual(toView(viewMatrix(4, 2, { rotate: 2 }), { x: 1, y: 0.5 }), { x: 3, y: 1.5 });
  // Every turn and flip goes back where it came from.
  for (const rotate of [0, 1, 2, 3]) {
    for (const flipH of [false, true]) {
      for (const flipV of [false, true]) {
        const m = viewMatrix(4, 2, { rotate, flipH, flipV });
        const back = fromView(m, toView(m, { x: 1.25, y: 0.5 }));
        assert.ok(Math.abs(back.x - 1.25) < 1e-9 && Math.abs(back.y - 0.5) < 1e-9, JSON.stringify({ rotate, flipH, flipV, back }));
      }
    }
  }
  // The image's top edge (anterior in an axial image) is where the markers say it is: right.
  const top = toView(turned, { x: 2, y: 0 });
  assert.equal(top.x, turned.width);
  assert.equal(markers([1, 0, 0, 0, 1, 0], { rotate: 1 }).right, 'A');
});
