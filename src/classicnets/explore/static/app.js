// The page: the model menu, the four views, and which one is shown (also in the address's #).
import { setDrawModel, setupDraw } from "./draw.js";
import { showResidual } from "./residual.js";
import { el, percent, request } from "./ui.js";
import { refreshArchitecture, setArchitecture, setupArchitecture, setupCost } from "./views.js";

const $ = (id) => document.getElementById(id);
const VIEWS = ["draw", "architectures", "residual", "cost"];
const page = { trained: {}, zoo: [], view: "draw" };

function trainedNote(t) {
  const accuracy = t.test_accuracy ? `, ${percent(t.test_accuracy)} on its test split` : "";
  const where = t.source === "checkpoint" ? "your checkpoint" : "shipped weights";
  return `${t.name}: ${t.model} trained on ${t.dataset || "its data"} (${where}${accuracy})`;
}

function fillMenu(models) {
  const menu = $("model-select");
  const trained = el("optgroup");
  trained.label = "trained: draw on these";
  for (const t of models.models) trained.append(new Option(t.name, t.name));
  const zoo = el("optgroup");
  zoo.label = "architectures (no weights)";
  for (const name of models.zoo) zoo.append(new Option(name, name));
  menu.replaceChildren(trained, zoo);
  menu.value = models.default;
}

// A choice in the menu: trained weights answer the drawings; any choice is shown as an architecture.
function choose(name) {
  const t = page.trained[name];
  if (t) {
    const [c, h, w] = t.input_size;
    setDrawModel(name, trainedNote(t), Math.max(...t.data_size));
    setArchitecture(name, { c, h, w, classes: t.classes.length });
  } else {
    setArchitecture(name, { c: "", h: "", w: "", classes: "" });
  }
  if (!t && page.view === "draw") showView("architectures");
  else if (page.view === "architectures") refreshArchitecture();
}

function showView(view) {
  page.view = VIEWS.includes(view) ? view : "draw";
  for (const v of VIEWS) $(`view-${v}`).hidden = v !== page.view;
  for (const button of $("tabs").querySelectorAll("button")) {
    button.classList.toggle("active", button.dataset.view === page.view);
  }
  if (location.hash !== `#${page.view}`) history.replaceState(null, "", `#${page.view}`);
  if (page.view === "residual") showResidual();
  if (page.view === "architectures") refreshArchitecture();
}

async function start() {
  setupDraw();
  setupArchitecture();
  setupCost();
  for (const button of $("tabs").querySelectorAll("button")) {
    button.addEventListener("click", () => showView(button.dataset.view));
  }
  const models = await request("/api/models");
  page.zoo = models.zoo;
  for (const t of models.models) page.trained[t.name] = t;
  fillMenu(models);
  $("model-select").addEventListener("change", (event) => choose(event.target.value));
  choose(models.default);
  showView(location.hash.slice(1));
  document.body.dataset.ready = "true"; // for tests: the menu is filled and the views are wired
}

start().catch((error) => {
  document.body.prepend(el("p", "error", `The explorer could not start: ${error.message}`));
});
