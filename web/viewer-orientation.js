// Orientation markers: which way the patient lies at each edge of a viewport, from Image
// Orientation (Patient) (0020,0037) — or, for projection images without it, Patient
// Orientation (0020,0020) — and the way the image is turned on screen. Free of the DOM so that
// Node can test it (tests/browser/viewer-orientation.test.mjs).
//
// DICOM's patient coordinates (PS3.3 C.7.6.2.1.1) run towards the patient's Left (+x),
// Posterior (+y) and Head (+z). The first three values of Image Orientation (Patient) are the
// direction of a row (towards the right-hand edge of the image as stored), the last three that
// of a column (towards the bottom edge).

/** The letters of each axis, for the positive and the negative direction. */
const AXES = [['L', 'R'], ['P', 'A'], ['H', 'F']];
const OPPOSITE = { L: 'R', R: 'L', A: 'P', P: 'A', H: 'F', F: 'H' };
/** A direction's letters name every axis it follows by at least this cosine (about 14.5° off
 *  the plane of the other two): "L" for an axial row, "LP" for one turned 30° in the plane,
 *  and not "LPH" for a slice tilted by a degree, whose third component means nothing to a
 *  reader. The largest component always gives the first letter. */
export const OBLIQUE_COSINE = 0.25;

/** The letters of a direction in patient coordinates, its largest component first ("L",
 *  "LP", "PFR"…); '' for a vector that is not one (missing, or all zero). */
export function directionLetters(v) {
  if (!Array.isArray(v) || v.length !== 3 || !v.every(Number.isFinite)) return '';
  const length = Math.hypot(...v);
  if (length < 1e-6) return '';
  const parts = v.map((c, axis) => ({ axis, c: c / length }))
    .sort((a, b) => Math.abs(b.c) - Math.abs(a.c) || a.axis - b.axis);
  return parts
    .filter((p, k) => k === 0 || Math.abs(p.c) >= OBLIQUE_COSINE)
    .map(p => AXES[p.axis][p.c > 0 ? 0 : 1])
    .join('');
}

/** The opposite of a Patient Orientation value ("AFR" → "PHL"). */
function opposite(letters) {
  return [...letters].map(l => OPPOSITE[l] || '').join('');
}

/** Where the screen's right and down point in patient coordinates (or, for Patient
 *  Orientation, in letters), once the image is turned: `view.rotate` quarter turns clockwise
 *  first, then `view.flipH` (left and right swapped) and `view.flipV` (top and bottom). */
function screenAxes(right, down, negate, view) {
  let r = right;
  let d = down;
  const quarterTurns = ((Math.round(view.rotate || 0) % 4) + 4) % 4;
  for (let k = 0; k < quarterTurns; k++) {
    // Turned a quarter clockwise, what pointed up points right, and what pointed right, down.
    [r, d] = [negate(d), r];
  }
  if (view.flipH) r = negate(r);
  if (view.flipV) d = negate(d);
  return { r, d };
}

/** The markers at the four edges of an image (`{left, right, top, bottom}`, each a string of
 *  letters) for `info` ({orientation: the six values of (0020,0037), patientOrientation: the
 *  values of (0020,0020)}) shown turned by `view`; null when the object says nothing of its
 *  orientation. */
export function orientationMarkers(info, view = {}) {
  const iop = info?.orientation;
  if (Array.isArray(iop) && iop.length === 6 && iop.every(Number.isFinite)) {
    const neg = v => v.map(c => -c);
    const { r, d } = screenAxes(iop.slice(0, 3), iop.slice(3, 6), neg, view);
    const markers = { left: directionLetters(neg(r)), right: directionLetters(r), top: directionLetters(neg(d)), bottom: directionLetters(d) };
    return markers.right && markers.bottom ? markers : null;
  }
  const po = info?.patientOrientation;
  if (Array.isArray(po) && po.length === 2 && po.every(v => /^[LRAPHF]+$/.test(v))) {
    const { r, d } = screenAxes(po[0], po[1], opposite, view);
    return { left: opposite(r), right: r, top: opposite(d), bottom: d };
  }
  return null;
}

/** How an image of `w` × `h` pixels lies once turned by `view` (the same turns as
 *  orientationMarkers: quarter turns clockwise, then flips): its displayed size and the affine
 *  map from image pixels (x, y) to displayed pixels (u, v) = (a·x + c·y + e, b·x + d·y + f),
 *  in the order the canvas's `transform()` takes them. */
export function viewMatrix(w, h, view = {}) {
  const quarterTurns = ((Math.round(view.rotate || 0) % 4) + 4) % 4;
  // (u, v) for each quarter turn: 0 (x, y); 1 (h − y, x); 2 (w − x, h − y); 3 (y, w − x).
  let [a, b, c, d, e, f] = [
    [1, 0, 0, 1, 0, 0],
    [0, 1, -1, 0, h, 0],
    [-1, 0, 0, -1, w, h],
    [0, -1, 1, 0, 0, w],
  ][quarterTurns];
  const width = quarterTurns % 2 ? h : w;
  const height = quarterTurns % 2 ? w : h;
  if (view.flipH) [a, c, e] = [-a, -c, width - e];
  if (view.flipV) [b, d, f] = [-b, -d, height - f];
  return { a, b, c, d, e, f, width, height };
}

/** Image pixel coordinates → displayed ones, and back, under a viewMatrix. */
export function toView(m, p) {
  return { x: m.a * p.x + m.c * p.y + m.e, y: m.b * p.x + m.d * p.y + m.f };
}

export function fromView(m, q) {
  // The matrices are turns and flips: their inverse is their transpose.
  const [x, y] = [q.x - m.e, q.y - m.f];
  return { x: m.a * x + m.b * y, y: m.c * x + m.d * y };
}
