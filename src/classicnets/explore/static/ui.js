// What the views share: requests to the server, and pictures of maps and vectors.

// A request to the server; a refusal throws an Error with the server's own message.
export async function request(url, options = {}) {
  const response = await fetch(url, options);
  const kind = response.headers.get("Content-Type") || "";
  const body = kind.startsWith("application/json") ? await response.json() : await response.text();
  if (!response.ok) {
    const error = new Error(body && body.error ? body.error : `${response.status} ${response.statusText}`);
    error.status = response.status;
    throw error;
  }
  return body;
}

export function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

// (C, H, W) as the summary writes it: "28 x 28 x 6"; a vector is its length.
export function formatShape(shape) {
  return shape.length === 1 ? String(shape[0]) : [...shape.slice(1), shape[0]].join(" x ");
}

export function percent(p) {
  return `${(100 * p).toFixed(1)}%`;
}

function bytesOf(base64) {
  const text = atob(base64);
  const bytes = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
  return bytes;
}

// 256 colours between the stops, as a flat [r, g, b, r, g, b, ...] table.
function ramp(stops) {
  const table = new Uint8Array(256 * 3);
  for (let i = 0; i < 256; i++) {
    const at = (i / 255) * (stops.length - 1);
    const k = Math.min(Math.floor(at), stops.length - 2);
    const t = at - k;
    for (let c = 0; c < 3; c++) table[3 * i + c] = Math.round(stops[k][c] * (1 - t) + stops[k + 1][c] * t);
  }
  return table;
}

// Non-negative values: viridis (dark is zero); signed: blue, white at zero, red.
const COLOURS = {
  positive: ramp([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]]),
  signed: ramp([[33, 102, 172], [146, 197, 222], [247, 247, 247], [244, 165, 130], [178, 24, 43]]),
  grey: ramp([[0, 0, 0], [255, 255, 255]]),
};

// One picture from `bytes` (0-255 values) starting at `offset`, coloured by `scale`.
export function picture(bytes, offset, width, height, scale, className = "map") {
  const canvas = el("canvas", className);
  paint(canvas, bytes, offset, width, height, scale);
  return canvas;
}

// The same, into a canvas the page has already: a new answer repaints the maps in place, rather
// than building the page anew (what made a busy browser slow to show it).
function paint(canvas, bytes, offset, width, height, scale) {
  if (canvas.width !== width) canvas.width = width;
  if (canvas.height !== height) canvas.height = height;
  const context = canvas.getContext("2d");
  const image = context.createImageData(width, height);
  const table = COLOURS[scale] || COLOURS.grey;
  const out = image.data;
  for (let i = 0; i < width * height; i++) {
    const v = 3 * bytes[offset + i];
    out[4 * i] = table[v];
    out[4 * i + 1] = table[v + 1];
    out[4 * i + 2] = table[v + 2];
    out[4 * i + 3] = 255;
  }
  context.putImageData(image, 0, 0);
}

// The maps of a layer as the server sends them ({count, height, width, data, scale, channels}),
// painted into `canvases`, one a map.
export function paintMaps(canvases, maps) {
  const bytes = bytesOf(maps.data);
  const size = maps.height * maps.width;
  maps.channels.forEach((channel, k) => {
    paint(canvases[k], bytes, k * size, maps.width, maps.height, maps.scale);
    canvases[k].title = `map ${channel}`;
  });
  return canvases;
}

export function mapPictures(maps, className = "map") {
  return paintMaps(maps.channels.map(() => el("canvas", className)), maps);
}

// What the network is given to look at: uint8 (H, W, C) bytes, grey or colour.
export function drawImage(canvas, image) {
  const bytes = bytesOf(image.data);
  canvas.width = image.width;
  canvas.height = image.height;
  const context = canvas.getContext("2d");
  const out = context.createImageData(image.width, image.height);
  const c = image.channels;
  for (let i = 0; i < image.width * image.height; i++) {
    for (let k = 0; k < 3; k++) out.data[4 * i + k] = bytes[c * i + (c === 1 ? 0 : k)];
    out.data[4 * i + 3] = 255;
  }
  context.putImageData(out, 0, 0);
}

// A vector as bars about a zero line: positive up, negative down (into `canvas`, or a new one).
export function bars(values, total, canvas = el("canvas", "bars")) {
  const step = Math.max(1, Math.min(6, Math.floor(720 / values.length)));
  canvas.width = Math.max(values.length * step, 60);
  canvas.height = 64;
  const context = canvas.getContext("2d");
  const peak = Math.max(1e-12, ...values.map(Math.abs));
  const negative = values.some((v) => v < 0);
  const zero = negative ? canvas.height / 2 : canvas.height - 1;
  const reach = negative ? canvas.height / 2 - 1 : canvas.height - 2;
  values.forEach((v, i) => {
    const h = (Math.abs(v) / peak) * reach;
    context.fillStyle = v < 0 ? "#2166ac" : "#b2182b";
    context.fillRect(i * step, v < 0 ? zero : zero - h, Math.max(1, step - 1), Math.max(h, 0.5));
  });
  context.fillStyle = "#888";
  context.fillRect(0, zero, canvas.width, 1);
  canvas.title = `${total} values, largest |value| ${peak.toPrecision(3)}`;
  return canvas;
}

// Call `run` `wait` ms after the last call (a burst of pointer moves makes one request).
export function debounce(run, wait) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => run(...args), wait);
  };
}
