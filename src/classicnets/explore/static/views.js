// The architecture and 1x1-arithmetic views: what classicnets summary, draw, models NAME and cost show.
import { debounce, el, request } from "./ui.js";

const $ = (id) => document.getElementById(id);
let architecture = { model: null, seq: 0, drawing: null };

// The model the view shows (a zoo name or trained weights); `size` {c, h, w, classes} fills the form
// (blanks: the model's native size). It is asked for when the view is shown (refreshArchitecture):
// the first drawing starts matplotlib, seconds of work that the page's first load need not wait for.
export function setArchitecture(model, size) {
  architecture.model = model;
  const form = $("arch-form");
  for (const key of ["c", "h", "w", "classes"]) form.elements[key].value = size[key];
}

export function setupArchitecture() {
  const form = $("arch-form");
  form.addEventListener("submit", (event) => event.preventDefault());
  form.addEventListener("input", debounce(refreshArchitecture, 250));
}

export async function refreshArchitecture() {
  const seq = ++architecture.seq;
  const query = new URLSearchParams({ model: architecture.model });
  for (const [key, value] of new FormData($("arch-form"))) if (value !== "") query.set(key, value);
  try {
    const summary = await request(`/api/summary?${query}`);
    if (seq !== architecture.seq) return; // the form changed since: a newer answer is coming
    $("arch-error").textContent = "";
    fillBlanks(summary);
    showSummary(summary);
    showCard(summary.card);
    await showDrawing(query, seq);
  } catch (error) {
    if (seq === architecture.seq) $("arch-error").textContent = error.message;
  }
}

// A zoo model chosen with an empty form: show the size it was drawn at, its native one.
function fillBlanks(summary) {
  const form = $("arch-form").elements;
  const [c, h, w] = summary.input_size;
  for (const [key, value] of Object.entries({ c, h, w, classes: summary.num_classes })) {
    if (form[key].value === "") form[key].value = value;
  }
}

function showSummary(summary) {
  const table = $("summary");
  const head = el("tr");
  head.append(...summary.header.map((h) => el("th", null, h)));
  const rows = summary.rows.map((cells) => {
    const row = el("tr");
    row.append(...cells.map((c, i) => el("td", i >= 2 ? "number" : null, c)));
    return row;
  });
  const totals = summary.totals.map(([what, value]) => {
    const row = el("tr", "total");
    const cell = el("td", null, value);
    cell.colSpan = 3;
    row.append(el("th", null, what), cell);
    row.firstChild.colSpan = 2;
    return row;
  });
  const caption = el("caption", null, `${summary.model}, ${summary.num_classes} classes`);
  const thead = el("thead");
  thead.append(head);
  const body = el("tbody");
  body.append(...rows);
  const foot = el("tfoot");
  foot.append(...totals);
  table.replaceChildren(caption, thead, body, foot);
}

function showCard(card) {
  const list = el("dl");
  const facts = [["paper", `${card.paper} (${card.reference})`], ["introduced", card.introduced],
    ["native input", `${card.input_size.join(" x ")} (C x H x W), ${card.num_classes} classes`],
    ["parameters (published)", card.params.toLocaleString("en-US")],
    ["torchvision", card.torchvision_name || "none"], ["notes", card.notes]];
  for (const [what, value] of facts) if (value) list.append(el("dt", null, what), el("dd", null, value));
  $("card").replaceChildren(el("h3", null, `${card.name} (${card.family})`), list);
}

async function showDrawing(query, seq) {
  $("drawing-note").textContent = "drawing...";
  const svg = await request(`/api/drawing?${query}`);
  if (seq !== architecture.seq) return;
  if (architecture.drawing) URL.revokeObjectURL(architecture.drawing);
  architecture.drawing = URL.createObjectURL(new Blob([svg], { type: "image/svg+xml" }));
  $("drawing").src = architecture.drawing;
  $("drawing-note").textContent = "classicnets draw: each box a feature map, H x W x C";
}

// ---- 1x1 arithmetic --------------------------------------------------------------------------

let costSeq = 0;

export function setupCost() {
  const form = $("cost-form");
  form.addEventListener("submit", (event) => event.preventDefault());
  form.addEventListener("input", debounce(refreshCost, 120));
  refreshCost();
}

function millions(n) {
  return n >= 1e9 ? `${(n / 1e9).toFixed(1)} G` : `${(n / 1e6).toFixed(1)} M`;
}

async function refreshCost() {
  const seq = ++costSeq;
  const form = $("cost-form").elements;
  const ask = (layers) => request(`/api/cost?${new URLSearchParams({ input: form.input.value, layers })}`);
  try {
    const [direct, bottleneck] = await Promise.all([ask(form.direct.value), ask(form.bottleneck.value)]);
    if (seq !== costSeq) return;
    $("cost-error").textContent = "";
    $("cost-direct").textContent = direct.table;
    $("cost-bottleneck").textContent = bottleneck.table;
    showCostBars(direct.total, bottleneck.total);
  } catch (error) {
    if (seq === costSeq) $("cost-error").textContent = error.message;
  }
}

function showCostBars(direct, bottleneck) {
  const most = Math.max(direct, bottleneck, 1);
  const rows = [["directly", direct], ["through a bottleneck", bottleneck]].map(([what, total]) => {
    const row = el("div", "cost-bar");
    const bar = el("span", "bar");
    const fill = el("span", "fill");
    fill.style.width = `${(100 * total) / most}%`;
    bar.append(fill);
    row.append(el("span", "class", what), bar, el("span", "value", `${millions(total)} multiply-adds`));
    return row;
  });
  const ratio = bottleneck > 0 ? direct / bottleneck : 0;
  const summary = el("p", "note", ratio >= 1 ? `the bottleneck does ${ratio.toFixed(1)}x less arithmetic`
    : `the bottleneck does ${(1 / ratio).toFixed(1)}x more arithmetic`);
  $("cost-bars").replaceChildren(...rows, summary);
}
