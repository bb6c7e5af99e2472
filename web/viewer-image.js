// The viewer's image arithmetic, free of the DOM so that Node can test it
// (tests/browser/viewer-image.test.mjs): reading DICOM JSON metadata, sorting a stack,
// splitting a multipart frame response, turning frame bytes into stored values, the modality
// LUT (rescale) and VOI LUT (window) of PS3.3 C.11, and measurements in modality units and mm.

/** The first value of attribute `tag` (8 hex digits) in a DICOM JSON object, or undefined. */
export function first(json, tag) {
  const value = json?.[tag]?.Value;
  return Array.isArray(value) ? value[0] : undefined;
}

/** Every value of `tag` as numbers (DS and IS may arrive as strings). */
export function numbers(json, tag) {
  const value = json?.[tag]?.Value;
  if (!Array.isArray(value)) return [];
  return value.map(Number).filter(Number.isFinite);
}

function number(json, tag, fallback) {
  const n = Number(first(json, tag));
  return first(json, tag) !== undefined && first(json, tag) !== '' && Number.isFinite(n) ? n : fallback;
}

function str(json, tag) {
  const v = first(json, tag);
  if (v === undefined || v === null) return '';
  if (typeof v === 'object') return v.Alphabetic || '';
  return String(v).trim();
}

/** Native (unencapsulated) transfer syntaxes: frames come as stored. The server decodes the
 *  others, and its decoders interleave colour samples whatever Planar Configuration said. */
const NATIVE_SYNTAXES = new Set([
  '1.2.840.10008.1.2', '1.2.840.10008.1.2.1', '1.2.840.10008.1.2.1.99', '1.2.840.10008.1.2.2',
]);

/** The first VOI LUT of the VOI LUT Sequence (0028,3010): descriptor (entries, first value
 *  mapped, bits per entry; 0 entries means 65,536) and data inline (US values or an OW's
 *  InlineBinary, little endian) or to fetch from its BulkDataURI. */
function voiLutOf(json) {
  const item = json?.['00283010']?.Value?.[0];
  const descriptor = numbers(item, '00283002');
  const data = item?.['00283006'];
  if (!item || descriptor.length !== 3 || !data) return null;
  const lut = {
    entries: descriptor[0] || 65536,
    first: descriptor[1],
    bits: descriptor[2],
    data: null,
    bulkDataURI: data.BulkDataURI || null,
    explanation: str(item, '00283003'),
  };
  if (Array.isArray(data.Value)) {
    lut.data = Uint16Array.from(data.Value.map(Number));
  } else if (data.InlineBinary) {
    lut.data = lutWords(Uint8Array.from(atob(data.InlineBinary), c => c.charCodeAt(0)));
  }
  return lut.data || lut.bulkDataURI ? lut : null;
}

/** LUT Data bytes (OW, little endian) as 16-bit words. */
export function lutWords(bytes) {
  const words = new Uint16Array(Math.floor(bytes.length / 2));
  for (let i = 0; i < words.length; i++) words[i] = bytes[2 * i] | (bytes[2 * i + 1] << 8);
  return words;
}

/** The Pixel Value Transformation (rescale) of an item of a functional groups sequence. */
function rescaleOf(group) {
  const item = group?.['00289145']?.Value?.[0];
  if (!item || first(item, '00281053') === undefined) return null;
  return { slope: number(item, '00281053', 1) || 1, intercept: number(item, '00281052', 0), type: str(item, '00281054') };
}

/** Transfer syntaxes whose decoded frames come out as RGB whatever the stored photometric
 *  interpretation says (the JPEG family decoders convert YCbCr; RLE and native keep it). */
const DECODED_TO_RGB = /^1\.2\.840\.10008\.1\.2\.4\./;

/** What the viewer needs of one instance, from its WADO-RS metadata (or a QIDO answer). */
export function imageInfo(json) {
  const photometricStored = str(json, '00280004').toUpperCase() || 'MONOCHROME2';
  const transferSyntax = str(json, '00083002');
  const samples = number(json, '00280002', 1);
  const photometric = samples === 3 && photometricStored.startsWith('YBR') && DECODED_TO_RGB.test(transferSyntax)
    ? 'RGB'
    : photometricStored;
  const bitsAllocated = number(json, '00280100', 16);
  const centers = numbers(json, '00281050');
  const widths = numbers(json, '00281051');
  const spacing = numbers(json, '00280030');
  const imagerSpacing = numbers(json, '00181164');
  // Rescale at the top level (classic objects), else in the functional groups of enhanced
  // multi-frame objects: shared by all frames, or one per frame.
  const shared = rescaleOf(json['52009229']?.Value?.[0]);
  const perFrame = (json['52009230']?.Value || []).map(rescaleOf);
  // Orientation likewise: top level, else the Plane Orientation Sequence of the functional
  // groups, shared or per frame.
  const planeOf = group => numbers(group?.['00209116']?.Value?.[0], '00200037');
  const frameOrientation = (json['52009230']?.Value || []).map(planeOf);
  const topOrientation = numbers(json, '00200037');
  const sharedOrientation = planeOf(json['52009229']?.Value?.[0]);
  const topLevel = first(json, '00281053') !== undefined;
  const rescale = topLevel
    ? { slope: number(json, '00281053', 1) || 1, intercept: number(json, '00281052', 0), type: str(json, '00281054') }
    : shared || perFrame[0] || null;
  return {
    studyUID: str(json, '0020000D'),
    seriesUID: str(json, '0020000E'),
    sopInstanceUID: str(json, '00080018'),
    modality: str(json, '00080060'),
    rows: number(json, '00280010', 0),
    columns: number(json, '00280011', 0),
    samplesPerPixel: samples,
    photometric,
    planarConfiguration: !transferSyntax || NATIVE_SYNTAXES.has(transferSyntax) ? number(json, '00280006', 0) : 0,
    bitsAllocated,
    bitsStored: number(json, '00280101', bitsAllocated),
    highBit: number(json, '00280102', number(json, '00280101', bitsAllocated) - 1),
    signed: number(json, '00280103', 0) === 1,
    numberOfFrames: Math.max(1, number(json, '00280008', 1)),
    slope: rescale ? rescale.slope : 1,
    intercept: rescale ? rescale.intercept : 0,
    rescaleType: rescale ? rescale.type : '',
    /** Whether stored values are known in modality units (else no unit is claimed). */
    rescaled: rescale !== null,
    frameRescale: !topLevel && !shared && perFrame.some(Boolean) ? perFrame : null,
    window: centers.length && widths.length && widths[0] >= 1 ? { center: centers[0], width: widths[0] } : null,
    voiFunction: (str(json, '00281056') || 'LINEAR').toUpperCase(),
    voiLut: voiLutOf(json),
    // Row spacing, column spacing (mm); at the patient when Pixel Spacing is there, else at
    // the detector (Imager Pixel Spacing, labelled so).
    spacing: spacing.length === 2 ? spacing : imagerSpacing.length === 2 ? imagerSpacing : null,
    spacingAtDetector: spacing.length !== 2 && imagerSpacing.length === 2,
    instanceNumber: number(json, '00200013', null),
    position: numbers(json, '00200032'),
    orientation: topOrientation.length === 6 ? topOrientation
      : sharedOrientation.length === 6 ? sharedOrientation : frameOrientation[0] || [],
    frameOrientation: frameOrientation.some(o => o.length === 6) ? frameOrientation : null,
    patientOrientation: (json['00200020']?.Value || []).map(v => String(v).trim().toUpperCase()),
    sliceLocation: number(json, '00201041', null),
    sliceThickness: number(json, '00180050', null),
    seriesNumber: number(json, '00200011', null),
    seriesDescription: str(json, '0008103E'),
    studyDescription: str(json, '00081030'),
    studyDate: str(json, '00080020'),
    patientName: str(json, '00100010'),
    patientID: str(json, '00100020'),
    patientBirthDate: str(json, '00100030'),
  };
}

/** The instances of a series in reading order: along the slice normal when every instance
 *  has a position and one orientation (in the direction the Instance Numbers run, i.e. the
 *  acquisition's: head first for a head-to-feet CT), else by Instance Number, then by UID. */
export function sortInstances(infos) {
  const list = [...infos];
  const o = list[0]?.orientation;
  const positioned = o?.length === 6
    && list.every(i => i.position.length === 3 && i.orientation.length === 6
      && i.orientation.every((v, k) => Math.abs(v - o[k]) < 1e-4));
  if (positioned) {
    const normal = [o[1] * o[5] - o[2] * o[4], o[2] * o[3] - o[0] * o[5], o[0] * o[4] - o[1] * o[3]];
    const along = i => i.position[0] * normal[0] + i.position[1] * normal[1] + i.position[2] * normal[2];
    const distinct = new Set(list.map(i => along(i).toFixed(3)));
    if (distinct.size === list.length) {
      list.sort((a, b) => along(a) - along(b));
      const [head, tail] = [list[0].instanceNumber, list[list.length - 1].instanceNumber];
      return head !== null && tail !== null && head > tail ? list.reverse() : list;
    }
  }
  return list.sort((a, b) => (a.instanceNumber ?? Infinity) - (b.instanceNumber ?? Infinity)
    || a.sopInstanceUID.localeCompare(b.sopInstanceUID));
}

/** The frames of a sorted series as stack entries, one per frame of each instance. */
export function stackOf(sortedInfos) {
  const stack = [];
  for (const info of sortedInfos) {
    for (let frame = 1; frame <= info.numberOfFrames; frame++) {
      const own = info.frameRescale?.[frame - 1];
      let frameInfo = own ? { ...info, slope: own.slope, intercept: own.intercept, rescaleType: own.type } : info;
      const plane = info.frameOrientation?.[frame - 1];
      if (plane?.length === 6) frameInfo = { ...frameInfo, orientation: plane };
      stack.push({ info: frameInfo, frame, key: `${info.sopInstanceUID}/${frame}` });
    }
  }
  return stack;
}

/** The body of each part of a `multipart/related` response, as Uint8Array views. */
export function multipartParts(buffer, contentType) {
  const match = /boundary="?([^";,]+)"?/i.exec(contentType || '');
  if (!match) {
    throw new Error(`no boundary in ${contentType}`);
  }
  const bytes = new Uint8Array(buffer);
  const delimiter = new TextEncoder().encode(`--${match[1]}`);
  const find = (from) => {
    outer: for (let i = from; i <= bytes.length - delimiter.length; i++) {
      for (let k = 0; k < delimiter.length; k++) {
        if (bytes[i + k] !== delimiter[k]) continue outer;
      }
      return i;
    }
    return -1;
  };
  const parts = [];
  let at = find(0);
  while (at >= 0) {
    const afterDelimiter = at + delimiter.length;
    if (bytes[afterDelimiter] === 0x2d && bytes[afterDelimiter + 1] === 0x2d) break; // "--": the end
    // Headers end at the first empty line.
    let body = -1;
    for (let i = afterDelimiter; i < bytes.length - 3; i++) {
      if (bytes[i] === 13 && bytes[i + 1] === 10 && bytes[i + 2] === 13 && bytes[i + 3] === 10) {
        body = i + 4;
        break;
      }
    }
    if (body < 0) throw new Error('a part has no end of headers');
    const next = find(body);
    if (next < 0) throw new Error('the multipart response is truncated');
    // The CRLF before the next delimiter belongs to the delimiter.
    const end = bytes[next - 2] === 13 && bytes[next - 1] === 10 ? next - 2 : next;
    parts.push(bytes.subarray(body, end));
    at = next;
  }
  return parts;
}

/** A frame's stored values: for single-sample images an Int16/Uint16/Int8/Uint8/Int32/Uint32
 *  array (masked to Bits Stored and sign-extended when the Pixel Representation says so), for
 *  colour images interleaved 8-bit RGB. Throws on what the viewer cannot show. */
export function decodeFrame(info, bytes) {
  const pixels = info.rows * info.columns;
  const bytesPerSample = info.bitsAllocated / 8;
  if (![8, 16, 32].includes(info.bitsAllocated)) {
    throw new Error(`${info.bitsAllocated}-bit pixels are not shown by this viewer`);
  }
  if (info.photometric === 'PALETTE COLOR') {
    throw new Error('palette colour images are shown in preview mode only');
  }
  if (info.samplesPerPixel === 3) {
    return { rgb: toRgb(info, bytes), min: 0, max: 255 };
  }
  if (info.samplesPerPixel !== 1) {
    throw new Error(`${info.samplesPerPixel} samples per pixel are not shown by this viewer`);
  }
  const need = pixels * bytesPerSample;
  if (bytes.length < need) {
    throw new Error(`the frame has ${bytes.length} bytes, ${need} expected`);
  }
  // A copy: aligned for the typed array, and independent of the response buffer.
  const copy = bytes.slice(0, need).buffer;
  const Type = {
    8: info.signed ? Int8Array : Uint8Array,
    16: info.signed ? Int16Array : Uint16Array,
    32: info.signed ? Int32Array : Uint32Array,
  }[info.bitsAllocated];
  const values = new Type(copy);
  const shift = info.highBit + 1 - info.bitsStored;
  if (info.bitsStored < info.bitsAllocated || shift > 0) {
    const mask = info.bitsStored >= 32 ? 0xffffffff : (2 ** info.bitsStored) - 1;
    const signBit = 2 ** (info.bitsStored - 1);
    for (let i = 0; i < values.length; i++) {
      let v = (values[i] >>> shift) & mask;
      if (info.signed && v >= signBit) v -= 2 * signBit;
      values[i] = v;
    }
  }
  let min = Infinity;
  let max = -Infinity;
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (v < min) min = v;
    if (v > max) max = v;
  }
  return { values, min, max };
}

function clamp8(v) {
  return v < 0 ? 0 : v > 255 ? 255 : Math.round(v);
}

/** Interleaved 8-bit RGB from RGB (either planar configuration), YBR_FULL and native
 *  YBR_FULL_422 (PS3.3 C.7.6.3.1.2: full-range YCbCr, ITU-R BT.601 coefficients). */
function toRgb(info, bytes) {
  if (info.bitsAllocated !== 8) {
    throw new Error(`${info.bitsAllocated}-bit colour is not shown by this viewer`);
  }
  const pixels = info.rows * info.columns;
  const out = new Uint8ClampedArray(pixels * 3);
  const kind = info.photometric;
  if (kind === 'YBR_FULL_422') {
    // Two luma samples share one Cb and one Cr: Y Y Cb Cr.
    if (bytes.length < pixels * 2) throw new Error('the frame is too short');
    for (let p = 0, i = 0; p < pixels; p += 2, i += 4) {
      const cb = bytes[i + 2] - 128;
      const cr = bytes[i + 3] - 128;
      for (let k = 0; k < 2 && p + k < pixels; k++) {
        const y = bytes[i + k];
        out[(p + k) * 3] = clamp8(y + 1.402 * cr);
        out[(p + k) * 3 + 1] = clamp8(y - 0.344136 * cb - 0.714136 * cr);
        out[(p + k) * 3 + 2] = clamp8(y + 1.772 * cb);
      }
    }
    return out;
  }
  if (bytes.length < pixels * 3) throw new Error('the frame is too short');
  const planar = info.planarConfiguration === 1;
  const sample = (p, c) => (planar ? bytes[c * pixels + p] : bytes[p * 3 + c]);
  if (kind === 'RGB') {
    for (let p = 0; p < pixels; p++) {
      out[p * 3] = sample(p, 0);
      out[p * 3 + 1] = sample(p, 1);
      out[p * 3 + 2] = sample(p, 2);
    }
    return out;
  }
  if (kind === 'YBR_FULL') {
    for (let p = 0; p < pixels; p++) {
      const y = sample(p, 0);
      const cb = sample(p, 1) - 128;
      const cr = sample(p, 2) - 128;
      out[p * 3] = clamp8(y + 1.402 * cr);
      out[p * 3 + 1] = clamp8(y - 0.344136 * cb - 0.714136 * cr);
      out[p * 3 + 2] = clamp8(y + 1.772 * cb);
    }
    return out;
  }
  throw new Error(`photometric interpretation ${kind} is not shown by this viewer`);
}

/** A stored value in modality units (the modality LUT as a linear rescale). */
export function modalityValue(info, stored) {
  return stored * info.slope + info.intercept;
}

/** The VOI LUT function of PS3.3 C.11.2.1.2 mapping a modality value to 0…255 (unrounded). */
export function voi(x, center, width, fn = 'LINEAR') {
  if (fn === 'SIGMOID') {
    return 255 / (1 + Math.exp(-4 * (x - center) / width));
  }
  if (fn === 'LINEAR_EXACT') {
    if (x <= center - width / 2) return 0;
    if (x > center + width / 2) return 255;
    return ((x - center) / width + 0.5) * 255;
  }
  if (width <= 1) {
    return x <= center - 0.5 ? 0 : 255;
  }
  if (x <= center - 0.5 - (width - 1) / 2) return 0;
  if (x > center - 0.5 + (width - 1) / 2) return 255;
  return ((x - (center - 0.5)) / (width - 1) + 0.5) * 255;
}

/** The grey level shown for a stored value: modality LUT, VOI, then MONOCHROME1 inverted. */
export function displayGrey(info, stored, window) {
  const x = modalityValue(info, stored);
  const grey = window.lut ? lutGrey(window.lut, x) : Math.round(voi(x, window.center, window.width, window.fn || info.voiFunction));
  return info.photometric === 'MONOCHROME1' ? 255 - grey : grey;
}

/** A VOI LUT's output for modality value x, on 0…255: values below the first mapped one
 *  take the first entry, above the last the last (PS3.3 C.11.2.1.1). */
export function lutGrey(lut, x) {
  const i = Math.min(lut.entries - 1, Math.max(0, Math.round(x) - lut.first));
  const max = 2 ** lut.bits - 1;
  return Math.round((Math.min(lut.data[i] ?? 0, max) * 255) / max);
}

/** The window a VOI LUT roughly stands for: where a drag starts from. */
export function lutWindow(lut) {
  return { center: lut.first + lut.entries / 2, width: lut.entries, fn: 'LINEAR' };
}

/** The window shown when the user has not chosen one: the object's window, else its VOI LUT
 *  (once its data is there), else its value range. */
export function defaultWindow(info, decoded) {
  if (info.window) {
    return { ...info.window, fn: info.voiFunction };
  }
  if (info.voiLut?.data && !decoded.rgb) {
    return { lut: info.voiLut };
  }
  if (decoded.rgb) {
    return { center: 127.5, width: 256, fn: 'LINEAR' };
  }
  const a = modalityValue(info, decoded.min);
  const b = modalityValue(info, decoded.max);
  const lo = Math.min(a, b);
  const hi = Math.max(a, b);
  return { center: (lo + hi) / 2, width: Math.max(1, hi - lo), fn: 'LINEAR_EXACT' };
}

/** Fills `rgba` (Uint8ClampedArray of rows×columns×4, e.g. an ImageData's) with the frame as
 *  shown under `window`. Grey images go through a lookup table over the stored values when
 *  they are 8- or 16-bit, so a window change costs one pass over the pixels. */
export function renderInto(rgba, info, decoded, window) {
  if (decoded.rgb) {
    const rgb = decoded.rgb;
    for (let p = 0, q = 0; p < rgb.length; p += 3, q += 4) {
      rgba[q] = rgb[p];
      rgba[q + 1] = rgb[p + 1];
      rgba[q + 2] = rgb[p + 2];
      rgba[q + 3] = 255;
    }
    return;
  }
  const { values, min, max } = decoded;
  const grey = v => displayGrey(info, v, window);
  if (info.bitsAllocated <= 16 && values.length > max - min) {
    const lut = new Uint8ClampedArray(max - min + 1);
    for (let v = min; v <= max; v++) lut[v - min] = grey(v);
    for (let i = 0, q = 0; i < values.length; i++, q += 4) {
      const g = lut[values[i] - min];
      rgba[q] = g;
      rgba[q + 1] = g;
      rgba[q + 2] = g;
      rgba[q + 3] = 255;
    }
    return;
  }
  for (let i = 0, q = 0; i < values.length; i++, q += 4) {
    const g = grey(values[i]);
    rgba[q] = g;
    rgba[q + 1] = g;
    rgba[q + 2] = g;
    rgba[q + 3] = 255;
  }
}

/** Distance between two image points (column, row) in mm, or null without a pixel spacing. */
export function lengthMm(info, a, b) {
  if (!info.spacing) return null;
  const [rowSpacing, columnSpacing] = info.spacing;
  return Math.hypot((b.x - a.x) * columnSpacing, (b.y - a.y) * rowSpacing);
}

/** Mean, standard deviation (population), min, max and count of the modality values inside
 *  the ellipse inscribed in the rectangle from `a` to `b` (image coordinates, pixel centres at
 *  x + 0.5), and its area in mm² when the spacing is known. */
export function ellipseStats(info, decoded, a, b) {
  if (!decoded.values) return null;
  const cx = (a.x + b.x) / 2;
  const cy = (a.y + b.y) / 2;
  const rx = Math.abs(b.x - a.x) / 2;
  const ry = Math.abs(b.y - a.y) / 2;
  if (rx < 0.5 || ry < 0.5) return null;
  let n = 0;
  let sum = 0;
  let sumSq = 0;
  let min = Infinity;
  let max = -Infinity;
  const y0 = Math.max(0, Math.floor(cy - ry));
  const y1 = Math.min(info.rows - 1, Math.ceil(cy + ry));
  const x0 = Math.max(0, Math.floor(cx - rx));
  const x1 = Math.min(info.columns - 1, Math.ceil(cx + rx));
  for (let y = y0; y <= y1; y++) {
    const dy = (y + 0.5 - cy) / ry;
    for (let x = x0; x <= x1; x++) {
      const dx = (x + 0.5 - cx) / rx;
      if (dx * dx + dy * dy > 1) continue;
      const v = modalityValue(info, decoded.values[y * info.columns + x]);
      n++;
      sum += v;
      sumSq += v * v;
      if (v < min) min = v;
      if (v > max) max = v;
    }
  }
  if (!n) return null;
  const mean = sum / n;
  const sd = Math.sqrt(Math.max(0, sumSq / n - mean * mean));
  const area = info.spacing ? n * info.spacing[0] * info.spacing[1] : null;
  return { mean, sd, min, max, count: n, areaMm2: area };
}

/** The unit of modality values: HU for CT (or when Rescale Type says so), else none. */
export function modalityUnit(info) {
  if (info.rescaleType) return info.rescaleType === 'US' ? '' : info.rescaleType;
  return info.modality === 'CT' && info.rescaled ? 'HU' : '';
}
