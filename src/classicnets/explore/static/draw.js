// The draw view: a canvas (mouse, touch, pen), uploads, and the network's answer layer by layer.
import { bars, debounce, drawImage, el, formatShape, mapPictures, paintMaps, percent, picture, request } from "./ui.js";

// Black strokes 18 px wide with round ends on a white 280-px canvas: how tests/paper_digits.py
// draws its canvas digits, which lenet5-digits reads right at 99.6-100%.
const PEN = 18;
const WAIT_MS = 16; // pointer events closer than one frame make one request

const state = {
  model: null, // the trained model answering
  seq: 0, // the number of the last request sent...
  shown: 0, // ...and of the last answer shown: an answer older than that is stale and dropped
  inked: false, // whether the canvas has strokes (a blank canvas is not sent)
  last: null, // {blob, name} of the last input sent, resent when the model changes
  answered: null, // {blob, name} of the last input answered (not blank): the residual view's input
  busy: false, // one request at a time: while one is out, only the newest input waits
  queued: null,
  penAt: 0, // when the pen last moved (performance.now())...
  sentPenAt: -1, // ...and when it had, for the last drawing sent
  side: 112, // the side the drawing is sent at (setDrawModel)
};
// The layers on the page, and what they are (names, shapes, maps shown): an answer of the same
// shape repaints them in place.
let layerViews = { key: "", views: [] };
// For benchmarks/bench_explore.py: per answer drawn, milliseconds since its request was sent and
// since the input it answers was last changed (the pen's last move, or the file's choice).
window.exploreTimings = [];

const $ = (id) => document.getElementById(id);

export function lastInput() {
  return state.answered;
}

// The model that answers. The drawing is sent at 4x the side of the images it was trained on (112
// px for 28-px digits, at most the canvas's 280): the reading fits a digit into 20 x 20 pixels, so
// more pixels only cost time (at 280 px the reading of tests/paper_digits.py's canvas digits took
// 4x as long as at 112, with the same answers).
export function setDrawModel(name, note, dataSide) {
  state.model = name;
  state.side = Math.min(280, 4 * dataSide);
  $("draw-model").textContent = note;
  if (state.last) send(state.last.blob, state.last.name, performance.now());
}

export function setupDraw() {
  const canvas = $("draw");
  blank(canvas);
  penEvents(canvas);
  $("clear").addEventListener("click", () => clear(canvas));
  $("upload").addEventListener("change", (event) => {
    const file = event.target.files[0];
    if (file) takeFile(canvas, file);
  });
  const pad = $("pad");
  pad.addEventListener("dragover", (event) => event.preventDefault());
  pad.addEventListener("drop", (event) => {
    event.preventDefault();
    const file = event.dataTransfer.files[0];
    if (file) takeFile(canvas, file);
  });
}

function blank(canvas) {
  const context = canvas.getContext("2d");
  context.fillStyle = "#fff";
  context.fillRect(0, 0, canvas.width, canvas.height);
}

function penEvents(canvas) {
  const context = canvas.getContext("2d");
  const sendDrawing = debounce(() => sendCanvas(canvas), WAIT_MS);
  let last = null;
  const at = (event) => {
    const box = canvas.getBoundingClientRect();
    return [((event.clientX - box.left) * canvas.width) / box.width,
      ((event.clientY - box.top) * canvas.height) / box.height];
  };
  const line = (from, to) => {
    state.penAt = performance.now();
    Object.assign(context, { lineWidth: PEN, lineCap: "round", lineJoin: "round", strokeStyle: "#000" });
    context.beginPath();
    context.moveTo(...from);
    context.lineTo(...to);
    context.stroke();
  };
  canvas.addEventListener("pointerdown", (event) => {
    event.preventDefault();
    canvas.setPointerCapture(event.pointerId);
    last = at(event);
    line(last, last);
    state.inked = true;
    sendDrawing();
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!last) return;
    const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [event];
    for (const e of events.length ? events : [event]) {
      const point = at(e);
      line(last, point);
      last = point;
    }
    sendDrawing(); // live: while the pen moves, each pause sends the drawing so far
  });
  const lift = () => {
    if (last) sendCanvas(canvas); // the pen is up: the drawing is finished, send it now
    last = null;
  };
  for (const name of ["pointerup", "pointercancel", "lostpointercapture"]) canvas.addEventListener(name, lift);
}

function sendCanvas(canvas) {
  if (!state.inked || state.penAt === state.sentPenAt) return; // nothing drawn since the last one sent
  const at = state.penAt;
  state.sentPenAt = at;
  send(greyImage(canvas, state.side), "canvas", at);
}

// The drawing as a PGM file (a 15-byte header, then one grey byte a pixel), `side` pixels square:
// made at once, where canvas.toBlob waits for the browser's idle time (up to a second on a busy page).
function greyImage(canvas, side) {
  const small = el("canvas");
  small.width = small.height = side;
  const context = small.getContext("2d", { willReadFrequently: true });
  context.imageSmoothingQuality = "high";
  context.drawImage(canvas, 0, 0, side, side);
  const rgba = context.getImageData(0, 0, side, side).data;
  const header = new TextEncoder().encode(`P5\n${side} ${side}\n255\n`);
  const bytes = new Uint8Array(header.length + side * side);
  bytes.set(header);
  for (let i = 0; i < side * side; i++) bytes[header.length + i] = rgba[4 * i]; // the strokes are black on white
  return new Blob([bytes], { type: "image/x-portable-graymap" });
}

async function takeFile(canvas, file) {
  blank(canvas);
  state.inked = false;
  try { // show it on the pad; what is sent is the file itself, as it is
    const bitmap = await createImageBitmap(file);
    const scale = Math.min(canvas.width / bitmap.width, canvas.height / bitmap.height);
    const w = bitmap.width * scale;
    const h = bitmap.height * scale;
    canvas.getContext("2d").drawImage(bitmap, (canvas.width - w) / 2, (canvas.height - h) / 2, w, h);
  } catch {
    // the browser cannot show it; the server will say whether it can read it
  }
  send(file, file.name, performance.now());
}

function clear(canvas) {
  blank(canvas);
  state.inked = false;
  state.last = null;
  state.sentPenAt = -1;
  state.answered = null;
  state.queued = null;
  state.shown = ++state.seq; // answers still on their way are for a drawing that is gone
  noPrediction("draw something", "");
  for (const id of ["probabilities", "layers"]) $(id).replaceChildren();
  layerViews = { key: "", views: [] };
  $("rbf").hidden = true;
  blank($("seen"));
}

// Send an input; while an answer is awaited, keep only the newest input and send it next, so a
// fast pen never builds a queue of drawings the server must answer one by one.
async function send(blob, name, inputAt) {
  if (state.busy) {
    state.queued = { blob, name, inputAt };
    return;
  }
  state.busy = true;
  try {
    await exchange(blob, name, inputAt);
  } finally {
    state.busy = false;
    const next = state.queued;
    state.queued = null;
    if (next) send(next.blob, next.name, next.inputAt);
  }
}

async function exchange(blob, name, inputAt) {
  const seq = ++state.seq;
  state.last = { blob, name };
  const started = performance.now();
  const query = new URLSearchParams({ model: state.model, seq: String(seq) });
  if (name !== "canvas") query.set("name", name);
  try {
    const result = await request(`/api/predict?${query}`, { method: "POST", body: blob });
    if (seq < state.shown) return;
    state.shown = seq;
    if (result.blank) {
      noPrediction("draw something", "");
      return;
    }
    state.answered = { blob, name };
    const answered = performance.now();
    show(result, name);
    const shown = performance.now();
    requestAnimationFrame(() => { // the frame that paints the answer
      const now = performance.now();
      if (window.exploreTimings.length >= 1000) window.exploreTimings.shift();
      window.exploreTimings.push({ seq, model: result.model, sinceInputMs: now - inputAt, requestMs: now - started,
        answerMs: answered - started, showMs: shown - answered, serverMs: result.server.ms });
    });
  } catch (error) {
    if (seq < state.shown) return;
    state.shown = seq;
    noPrediction("no prediction", error.message);
  }
}

function noPrediction(text, error) {
  const prediction = $("prediction");
  prediction.textContent = text;
  delete prediction.dataset.for;
  $("draw-error").textContent = error;
}

function show(result, name) {
  const best = result.top[0];
  const prediction = $("prediction");
  prediction.textContent = `${best.class} ${percent(best.probability)}`;
  prediction.dataset.for = name;
  $("draw-error").textContent = "";
  $("probabilities").replaceChildren(...result.top.map(probabilityRow));
  drawImage($("seen"), result.input);
  showLayers(result.layers);
  showRbf(result.rbf);
}

function showLayers(layers) {
  const key = layers.map((l) => `${l.name} ${l.kind} ${l.shape} ${l.count || l.values.length}`).join("|");
  if (key === layerViews.key) {
    layers.forEach((layer, i) => {
      const view = layerViews.views[i];
      if (layer.kind === "maps") paintMaps(view.pictures, layer);
      else bars(layer.values, layer.total, view.pictures[0]);
    });
    return;
  }
  layerViews = { key, views: layers.map(layerView) };
  $("layers").replaceChildren(...layerViews.views.map((view) => view.node));
}

function probabilityRow(entry) {
  const row = el("div", "probability");
  const bar = el("span", "bar");
  const fill = el("span", "fill");
  fill.style.width = percent(entry.probability);
  bar.append(fill);
  row.append(el("span", "class", entry.class), bar, el("span", "value", percent(entry.probability)));
  return row;
}

function layerView(layer) {
  const node = el("div", "layer");
  node.dataset.testid = "layer";
  const title = el("h3");
  title.append(el("span", "name", layer.name), el("span", "types", layer.types.join(" → ")),
    el("span", "shape", formatShape(layer.shape)));
  node.append(title);
  let pictures;
  if (layer.kind === "maps") {
    const channels = layer.shape[0];
    if (layer.count < channels) node.append(el("p", "note", `the ${layer.count} most active of ${channels} maps`));
    const maps = el("div", "maps");
    pictures = mapPictures(layer);
    maps.append(...pictures);
    node.append(maps);
  } else {
    if (layer.total > layer.values.length) node.append(el("p", "note", `the first ${layer.values.length} of ${layer.total}`));
    pictures = [bars(layer.values, layer.total)];
    node.append(pictures[0]);
  }
  return { node, pictures };
}

// Values about zero as 0-255 bytes, 128 being zero, `peak` being 255.
function signedBytes(values, peak) {
  return Uint8Array.from(values, (v) => Math.max(0, Math.min(255, Math.round((v / peak) * 127.5 + 127.5))));
}

// lenet5_1998's output layer: F6's 84 values beside each class's 7x12 prototype, with the distance.
function showRbf(rbf) {
  const box = $("rbf");
  box.hidden = !rbf;
  if (!rbf) return;
  const nearest = rbf.distances.indexOf(Math.min(...rbf.distances));
  const f6 = el("figure", "prototype");
  const f6Peak = Math.max(1e-12, ...rbf.f6.map(Math.abs)); // its own scale: the pattern, not the size
  f6.append(picture(signedBytes(rbf.f6, f6Peak), 0, rbf.width, rbf.height, "signed", "proto"),
    el("figcaption", null, "F6"));
  const prototypes = rbf.prototypes.map((code, i) => {
    const figure = el("figure", i === nearest ? "prototype nearest" : "prototype");
    figure.append(picture(signedBytes(code, 1), 0, rbf.width, rbf.height, "signed", "proto"),
      el("figcaption", null, `${i}: ${rbf.distances[i].toFixed(1)}`));
    return figure;
  });
  const row = el("div", "prototypes");
  row.append(f6, ...prototypes);
  box.replaceChildren(el("h3", null, "RBF output: squared distance from F6's 84 outputs to each class's "
    + "fixed 7x12 prototype (the smallest wins)"), row);
}
