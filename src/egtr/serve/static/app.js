// The egtr serve page: upload an image, show boxes and the scene graph side by side, filter client-side.
// Plain DOM + SVG, no third-party code, so the page works offline.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
const FETCH_TOP_K = 100; // the answer holds this many relations; the sliders filter within it
const $ = (id) => document.getElementById(id);
const state = { file: null, imageUrl: null, graph: null, pinned: null, asked: 0 };
const RESULT_CONTROLS = ["topk", "threshold", "download-json", "download-png"];

// Same colours as egtr's drawings (egtr.inference.visualize.object_colours): golden-ratio hues, alternating brightness.
function objectColour(index) {
  const hue = (index * 0.618033988749895) % 1, s = 0.75, v = index % 2 ? 0.95 : 0.7;
  const f = (n) => { const k = (n + hue * 6) % 6; return v - v * s * Math.max(0, Math.min(k, 4 - k, 1)); };
  const hex = (x) => Math.round(x * 255).toString(16).padStart(2, "0");
  return "#" + hex(f(5)) + hex(f(3)) + hex(f(1));
}

// `style` is an object of CSS properties, set through the CSSOM: the server's Content-Security-Policy refuses style
// attributes (style-src 'self'), and with them any style an injected attribute could bring.
function el(name, attributes = {}, parent = null) {
  const node = document.createElementNS(SVG_NS, name);
  for (const [key, value] of Object.entries(attributes)) {
    if (key === "style") for (const [property, setting] of Object.entries(value)) node.style.setProperty(property, setting);
    else node.setAttribute(key, value);
  }
  if (parent) parent.appendChild(node);
  return node;
}

function setStatus(text) { $("status").textContent = text; }

function headers() {
  const key = $("api-key").value.trim();
  return key ? { Authorization: "Bearer " + key } : {};
}

async function describeModel() {
  const answer = await fetch("/v1/model", { headers: headers() });
  if (answer.status === 401) { $("key-row").hidden = false; $("model-line").textContent = "this server needs an API key"; return; }
  const model = await answer.json();
  const c = model.config;
  $("model-line").textContent = `${model.model || "model"} · ${c.backbone}, ${c.num_labels} classes, ` +
    `${c.num_rel_labels} predicates · ${model.runtime.device} ${model.runtime.dtype}`;
}

// ---------------------------------------------------------------------------------------------- requests
// The graph on screen, the file it belongs to and the downloads always go together: while a new image is asked
// about nothing can be downloaded, a failed upload clears the previous result (its JSON must not be saved under the
// new file's name), and an answer that a newer upload has overtaken is dropped.
async function predict(file) {
  const asked = ++state.asked;
  enableResultControls(false);
  setStatus(`Predicting ${file.name || "image"}…`);
  const form = new FormData();
  form.append("image", file, file.name || "image");
  let answer, body;
  try {
    answer = await fetch(`/v1/scene-graphs?top_k=${FETCH_TOP_K}`, { method: "POST", body: form, headers: headers() });
    body = await answer.json().catch(() => ({}));
  } catch (error) {
    if (asked === state.asked) { clearResult(); setStatus(`The server did not answer (${error}).`); }
    return;
  }
  if (asked !== state.asked) return;
  if (!answer.ok) {
    clearResult();
    if (answer.status === 401) $("key-row").hidden = false;
    setStatus(`Error ${answer.status}: ${body.message || answer.statusText}`);
    return;
  }
  if (state.imageUrl) URL.revokeObjectURL(state.imageUrl);
  state.imageUrl = URL.createObjectURL(file);
  state.file = file;
  state.graph = body;
  state.pinned = null;
  render();
  const n = body.relations.length;
  $("topk").max = Math.max(1, n);
  $("topk").value = Math.min(20, Math.max(1, n));
  const best = n ? body.relations[0].score : 1;
  $("threshold").max = best.toPrecision(3);
  $("threshold").step = (best / 200).toPrecision(2);
  $("threshold").value = 0;
  enableResultControls(true);
  applyFilters();
}

function enableResultControls(enabled) { for (const id of RESULT_CONTROLS) $(id).disabled = !enabled; }

function clearResult() {
  if (state.imageUrl) URL.revokeObjectURL(state.imageUrl);
  Object.assign(state, { file: null, imageUrl: null, graph: null, pinned: null });
  $("image-view").replaceChildren();
  clearGraphView();
  $("triplets").querySelector("tbody").replaceChildren();
  highlight(null);
  enableResultControls(false);
}

function clearGraphView() {
  for (const child of [...$("graph-view").children]) if (child.tagName !== "defs") child.remove(); // keeps the arrow marker
}

async function loadExample(name) {
  const answer = await fetch(`/examples/${name}`);
  const blob = await answer.blob();
  await predict(new File([blob], name, { type: blob.type }));
}

function download(blob, name) {
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = name;
  document.body.appendChild(link);
  link.click();
  setTimeout(() => { URL.revokeObjectURL(link.href); link.remove(); }, 1000);
}

function stem() { return (state.file && state.file.name ? state.file.name.replace(/\.[^.]*$/, "") : "image") + "_graph"; }

async function downloadPng() {
  const form = new FormData();
  form.append("image", state.file, state.file.name || "image");
  const query = `top_k=${$("topk").value}&score_threshold=${$("threshold").value}&format=png`;
  setStatus("Drawing…");
  const answer = await fetch(`/v1/scene-graphs/drawing?${query}`, { method: "POST", body: form, headers: headers() });
  if (!answer.ok) { setStatus(`Error ${answer.status} while drawing`); return; }
  download(await answer.blob(), stem() + ".png");
  setStatus("PNG downloaded.");
}

// ---------------------------------------------------------------------------------------------- drawing
function render() {
  const graph = state.graph, { width, height } = graph.image_size;
  const image = $("image-view");
  image.replaceChildren();
  image.setAttribute("viewBox", `0 0 ${width} ${height}`);
  el("image", { href: state.imageUrl, x: 0, y: 0, width, height }, image);
  const scale = Math.max(width, height) / 700; // text size independent of the image resolution
  graph.objects.forEach((object, index) => {
    const [x1, y1, x2, y2] = object.box, colour = objectColour(index);
    const group = el("g", { class: "box", "data-object": index, tabindex: 0, role: "button",
      "aria-label": `object ${index}: ${object.label_name}, score ${object.score.toFixed(2)}` }, image);
    el("rect", { class: "hit", x: x1, y: y1, width: x2 - x1, height: y2 - y1 }, group);
    el("rect", { x: x1, y: y1, width: x2 - x1, height: y2 - y1, stroke: colour }, group);
    const label = el("text", { x: x1 + 3 * scale, y: y1 + 14 * scale, fill: colour, style: { "font-size": `${13 * scale}px`, "stroke-width": `${3 * scale}px` } }, group);
    label.textContent = `${index} ${object.label_name}`;
  });
  renderTable(graph);
}

// A small force layout over the shown objects: nodes start at their box centres (the graph keeps the picture's
// rough geometry), repel each other, relations pull their two ends together; the result is scaled to fill the view.
function layout(graph, objects, relations, width, height) {
  const { width: w, height: h } = graph.image_size;
  const points = new Map();
  objects.forEach((index, i) => {
    const box = graph.objects[index].box;
    points.set(index, { x: ((box[0] + box[2]) / 2 / Math.max(w, 1)) * width + (i % 7) - 3,
      y: ((box[1] + box[3]) / 2 / Math.max(h, 1)) * height + ((i * 3) % 7) - 3 });
  });
  const list = [...points.values()], steps = 300;
  for (let step = 0; step < steps; step++) {
    const force = new Map(list.map((p) => [p, { x: 0, y: 0 }]));
    for (let i = 0; i < list.length; i++) for (let j = i + 1; j < list.length; j++) {
      const a = list[i], b = list[j], dx = a.x - b.x, dy = a.y - b.y;
      const d = Math.max(Math.hypot(dx, dy), 1), push = 40000 / (d * d);
      force.get(a).x += push * dx / d; force.get(a).y += push * dy / d;
      force.get(b).x -= push * dx / d; force.get(b).y -= push * dy / d;
    }
    for (const r of relations) {
      const a = points.get(r.subject), b = points.get(r.object), dx = b.x - a.x, dy = b.y - a.y;
      const d = Math.max(Math.hypot(dx, dy), 1), pull = (d - 200) * 0.03;
      force.get(a).x += pull * dx / d; force.get(a).y += pull * dy / d;
      force.get(b).x -= pull * dx / d; force.get(b).y -= pull * dy / d;
    }
    const cooling = 1 - step / steps;
    for (const p of list) {
      const f = force.get(p);
      p.x += Math.max(-25, Math.min(25, f.x)) * cooling;
      p.y += Math.max(-25, Math.min(25, f.y)) * cooling;
    }
  }
  const xs = list.map((p) => p.x), ys = list.map((p) => p.y), margin = { x: 70, y: 45 };
  const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  for (const p of list) {
    p.x = x1 > x0 ? margin.x + ((p.x - x0) / (x1 - x0)) * (width - 2 * margin.x) : width / 2;
    p.y = y1 > y0 ? margin.y + ((p.y - y0) / (y1 - y0)) * (height - 2 * margin.y) : height / 2;
  }
  return points;
}

function renderGraph(graph, shown) {
  const view = $("graph-view");
  clearGraphView();
  const relations = graph.relations.filter((r, rank) => shown.has(rank));
  const objects = [...new Set(relations.flatMap((r) => [r.subject, r.object]))].sort((a, b) => a - b);
  const points = layout(graph, objects, relations, 1000, 700);
  const edges = el("g", { class: "edges" }, view), nodes = el("g", { class: "nodes" }, view);
  const pairCount = {};
  graph.relations.forEach((relation, rank) => {
    if (!shown.has(rank)) return;
    const a = points.get(relation.subject), b = points.get(relation.object), colour = objectColour(relation.subject);
    const key = relation.subject + ">" + relation.object, nth = (pairCount[key] = (pairCount[key] || 0) + 1) - 1;
    const dx = b.x - a.x, dy = b.y - a.y, d = Math.max(Math.hypot(dx, dy), 1);
    const shrink = Math.min(22 / d, 0.45), start = { x: a.x + dx * shrink, y: a.y + dy * shrink };
    const end = { x: b.x - dx * shrink, y: b.y - dy * shrink };
    const bend = 0.12 + 0.2 * nth, control = { x: (a.x + b.x) / 2 - dy * bend, y: (a.y + b.y) / 2 + dx * bend };
    const group = el("g", { class: "edge", "data-relation": rank, "data-subject": relation.subject,
      "data-object": relation.object, tabindex: 0, role: "button",
      "aria-label": `relation ${rank + 1}: ${triplet(graph, relation)}, score ${relation.score.toPrecision(3)}` }, edges);
    el("path", { d: `M ${start.x} ${start.y} Q ${control.x} ${control.y} ${end.x} ${end.y}`, stroke: colour,
      "marker-end": "url(#arrow)" }, group);
    const label = el("text", { x: 0.25 * start.x + 0.5 * control.x + 0.25 * end.x,
      y: 0.25 * start.y + 0.5 * control.y + 0.25 * end.y, "text-anchor": "middle" }, group);
    label.textContent = relation.predicate_name;
  });
  for (const index of objects) {
    const p = points.get(index), colour = objectColour(index), object = graph.objects[index];
    const group = el("g", { class: "node", "data-object": index, tabindex: 0, role: "button",
      "aria-label": `object ${index}: ${object.label_name}` }, nodes);
    el("circle", { cx: p.x, cy: p.y, r: 20, fill: colour }, group);
    const number = el("text", { x: p.x, y: p.y + 6, "text-anchor": "middle", style: { "stroke-width": "0", fill: "#fff", "font-weight": "600" } }, group);
    number.textContent = index;
    const name = el("text", { x: p.x, y: p.y + 42, "text-anchor": "middle" }, group);
    name.textContent = object.label_name;
  }
}

function triplet(graph, relation) {
  return `${graph.objects[relation.subject].label_name} ${relation.predicate_name} ${graph.objects[relation.object].label_name}`;
}

function renderTable(graph) {
  const body = $("triplets").querySelector("tbody");
  body.replaceChildren();
  const sorted = graph.relations.map((r, rank) => ({ r, rank })).sort((a, b) => b.r.score - a.r.score);
  for (const { r, rank } of sorted) {
    const row = document.createElement("tr");
    row.dataset.relation = rank; row.dataset.subject = r.subject; row.dataset.object = r.object; row.tabIndex = 0;
    const cell = (text, className, colour) => {
      const td = document.createElement("td");
      if (colour) { const s = document.createElement("span"); s.className = "swatch"; s.style.background = colour; td.appendChild(s); }
      td.appendChild(document.createTextNode(text));
      if (className) td.className = className;
      row.appendChild(td);
    };
    cell(String(rank + 1));
    cell(`${r.subject} ${graph.objects[r.subject].label_name}`, "", objectColour(r.subject));
    cell(r.predicate_name);
    cell(`${r.object} ${graph.objects[r.object].label_name}`, "", objectColour(r.object));
    cell(r.score.toPrecision(3), "score");
    body.appendChild(row);
  }
}

// ---------------------------------------------------------------------------------------------- filtering
function visibleRelations() {
  const k = Number($("topk").value), threshold = Number($("threshold").value);
  return new Set(state.graph.relations.map((r, rank) => ({ r, rank })).filter(({ r }) => r.score >= threshold)
    .slice(0, k).map(({ rank }) => rank));
}

function applyFilters() {
  if (!state.graph) return;
  $("topk-value").textContent = $("topk").value;
  $("threshold-value").textContent = Number($("threshold").value).toPrecision(2);
  const shown = visibleRelations(), used = new Set();
  state.pinned = null;
  highlight(null);
  renderGraph(state.graph, shown); // laid out again over what is shown, so the graph always fills its view
  for (const rank of shown) { const r = state.graph.relations[rank]; used.add(r.subject); used.add(r.object); }
  document.querySelectorAll("[data-relation]").forEach((node) => node.classList.toggle("hidden", !shown.has(Number(node.dataset.relation))));
  document.querySelectorAll(".box, .node").forEach((node) => node.classList.toggle("hidden", !used.has(Number(node.dataset.object))));
  setStatus(`${shown.size} of ${state.graph.relations.length} relations shown, ${used.size} objects.`);
}

// ---------------------------------------------------------------------------------------------- highlighting
function highlight(target) {
  const root = document.querySelector("main");
  document.querySelectorAll(".hl").forEach((node) => node.classList.remove("hl"));
  if (!target) { root.classList.remove("dimmed"); return; }
  root.classList.add("dimmed");
  const objects = new Set();
  if (target.dataset.relation !== undefined) {
    document.querySelectorAll(`[data-relation="${target.dataset.relation}"]`).forEach((n) => n.classList.add("hl"));
    objects.add(target.dataset.subject); objects.add(target.dataset.object);
  } else {
    const object = target.dataset.object;
    objects.add(object);
    document.querySelectorAll(`[data-subject="${object}"], [data-relation][data-object="${object}"]`).forEach((n) => {
      n.classList.add("hl");
      objects.add(n.dataset.subject); objects.add(n.dataset.object); // and the objects at the other ends
    });
  }
  for (const object of objects) document.querySelectorAll(`.box[data-object="${object}"], .node[data-object="${object}"]`).forEach((n) => n.classList.add("hl"));
}

function itemOf(event) { return event.target.closest ? event.target.closest("[data-relation], .box, .node") : null; }

document.addEventListener("mouseover", (event) => { const item = itemOf(event); if (item && !state.pinned) highlight(item); });
document.addEventListener("mouseout", (event) => { if (itemOf(event) && !state.pinned) highlight(null); });
document.addEventListener("focusin", (event) => { const item = itemOf(event); if (!state.pinned) highlight(item); });
document.addEventListener("click", (event) => {
  const item = itemOf(event);
  if (!item) return;
  state.pinned = state.pinned === item ? null : item; // click pins the highlight; a second click releases it
  highlight(state.pinned || item);
});
document.addEventListener("keydown", (event) => {
  const item = itemOf(event);
  if (event.key === "Escape") { state.pinned = null; highlight(null); }
  if (item && (event.key === "Enter" || event.key === " ")) { event.preventDefault(); item.dispatchEvent(new MouseEvent("click", { bubbles: true })); }
});

// ---------------------------------------------------------------------------------------------- inputs
const drop = $("drop-zone");
$("file-input").addEventListener("change", (event) => { if (event.target.files.length) predict(event.target.files[0]); });
drop.addEventListener("keydown", (event) => { if (event.key === "Enter" || event.key === " ") { event.preventDefault(); $("file-input").click(); } });
drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault(); drop.classList.remove("over");
  if (event.dataTransfer.files.length) predict(event.dataTransfer.files[0]);
});
document.querySelectorAll("[data-example]").forEach((button) => button.addEventListener("click", () => loadExample(button.dataset.example)));
$("topk").addEventListener("input", applyFilters);
$("threshold").addEventListener("input", applyFilters);
$("download-json").addEventListener("click", () => download(new Blob([JSON.stringify(state.graph, null, 2)], { type: "application/json" }), stem() + ".json"));
$("download-png").addEventListener("click", downloadPng);
$("api-key").addEventListener("change", describeModel);
describeModel();
