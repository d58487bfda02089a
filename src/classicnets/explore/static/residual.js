// The residual view: x, F(x) and F(x) + x of every block of a ResNet-20 and of a plain-20, same input.
import { lastInput } from "./draw.js";
import { el, formatShape, mapPictures, percent, request } from "./ui.js";

const $ = (id) => document.getElementById(id);
let residualSeq = 0;

export async function showResidual() {
  const seq = ++residualSeq;
  const input = lastInput();
  const query = new URLSearchParams({ seq: String(seq) });
  if (input && input.name !== "canvas") query.set("name", input.name);
  try {
    const result = await request(`/api/residual?${query}`, { method: "POST", body: input ? input.blob : "" });
    if (seq !== residualSeq) return;
    $("residual-error").textContent = "";
    const from = input ? (input.name === "canvas" ? "your drawing" : input.name)
      : "the first digit of the embedded test split (draw or upload to use your own)";
    $("residual-nets").replaceChildren(...result.nets.map((net) => netNote(net, from)));
    $("ratios").replaceChildren(ratioChart(result.nets));
    $("residual-blocks").replaceChildren(blockTable(result.nets));
  } catch (error) {
    if (seq === residualSeq) $("residual-error").textContent = error.message;
  }
}

function netNote(net, from) {
  const note = el("p", net.source === "untrained" ? "net untrained" : "net");
  note.append(el("strong", null, net.name), ` (${net.note}): on ${from}, it answers `,
    el("strong", null, `${net.top.class} ${percent(net.top.probability)}`));
  return note;
}

// ||F(x)|| / ||x|| of each block, the two nets side by side.
function ratioChart(nets) {
  const most = Math.max(1e-12, ...nets.flatMap((net) => net.blocks.map((b) => b.ratio)));
  const chart = el("div", "ratio-chart");
  chart.append(el("h3", null, "||F(x)|| / ||x|| in each block: how much the block changes its input"));
  nets[0].blocks.forEach((block, i) => {
    const row = el("div", "ratio-row");
    row.append(el("span", "class", block.name));
    nets.forEach((net, k) => {
      const bar = el("span", `bar net${k}`);
      const fill = el("span", "fill");
      fill.style.width = `${(100 * net.blocks[i].ratio) / most}%`;
      bar.append(fill);
      row.append(bar, el("span", "value", `${net.name} ${net.blocks[i].ratio.toFixed(2)}`));
    });
    chart.append(row);
  });
  return chart;
}

function cell(maps, caption) {
  const td = el("td");
  const box = el("div", "maps");
  box.append(...mapPictures(maps, "map small"));
  td.append(box, el("div", "caption", caption));
  return td;
}

function blockTable(nets) {
  const table = el("table", "blocks");
  const head = el("tr");
  head.append(el("th", null, "block"));
  for (const net of nets) {
    const third = net.blocks[0].residual ? "F(x) + x" : "relu(F(x)): no shortcut";
    for (const what of ["x", "F(x)", third, "||F(x)|| / ||x||"]) head.append(el("th", null, `${net.name}: ${what}`));
  }
  table.append(head);
  nets[0].blocks.forEach((_, i) => {
    const row = el("tr");
    const first = nets[0].blocks[i];
    row.append(el("th", null, `${first.name}\n${formatShape(first.in_shape)} → ${formatShape(first.out_shape)}`));
    for (const net of nets) {
      const b = net.blocks[i];
      const carried = b.shortcut === "padded" ? "x, strided and zero-padded" : b.shortcut === "projection"
        ? "x, projected" : "x";
      row.append(cell(b.x, carried), cell(b.f, "F(x)"), cell(b.out, b.residual ? "F(x) + x" : "relu(F(x))"),
        el("td", "number", b.ratio.toFixed(2)));
    }
    table.append(row);
  });
  return table;
}
