// mida annotator: worklist, slice viewer on mida's own rendered DICOMweb frames, box /
// polygon / brush / erase tools, saved through /api/annotations (see mida.api.annotations).
//
// Coordinates: everything drawn is kept in image pixels (x = column, y = row, the top-left
// corner of the top-left pixel at 0,0), whatever the zoom and pan. Masks are painted into one
// offscreen canvas per label and slice at image resolution and sent as "rle-slices".

const $ = (id) => document.getElementById(id);
const canvas = $("view");
const ctx = canvas.getContext("2d");
const me = document.body.dataset.user;

const state = {
  items: [], offset: 0, item: null, geo: null, k: 0, window: "",
  schemas: [], schema: null, label: null, tool: "box", brush: 4,
  view: { scale: 1, x: 0, y: 0 },
  images: new Map(),      // `${k}|${window}` -> HTMLImageElement
  masks: new Map(),       // label -> Map(k -> canvas)
  maskAnn: new Map(),     // label -> {uid, status, dirty}
  shapes: [],             // {label, kind, k, box | points, uid, status, dirty}
  draft: null,            // the shape or stroke being drawn
  undo: [], spaceDown: false, drag: null,
};

// ------------------------------------------------------------------ HTTP

async function api(path, options = {}) {
  const r = await fetch(path, {
    credentials: "same-origin", ...options,
    headers: { Accept: "application/json", ...(options.body ? { "Content-Type": "application/json" } : {}) },
  });
  if (r.status === 401) { location.href = "/login?next=/annotate"; throw new Error("signed out"); }
  const body = r.headers.get("content-type")?.includes("json") ? await r.json() : null;
  if (!r.ok) {
    const d = body?.detail;
    throw new Error(typeof d === "string" ? d : JSON.stringify(d ?? r.statusText));
  }
  return body;
}

const post = (path, body) => api(path, { method: "POST", body: JSON.stringify(body) });

function say(text, error = false) {
  const el = $("status");
  el.textContent = text;
  el.classList.toggle("error", error);
}

// ------------------------------------------------------------------ worklist

async function loadWorklist(more = false) {
  const page = await api(`/api/worklist?limit=50&offset=${more ? state.offset : 0}`);
  state.items = more ? state.items.concat(page.data) : page.data;
  state.offset = state.items.length;
  $("more").hidden = page.count < 50;
  const ul = $("worklist");
  ul.replaceChildren();
  state.items.forEach((it, i) => {
    const b = document.createElement("button");
    b.dataset.testid = `case-${i}`;
    b.dataset.series = it.SeriesInstanceUID;
    const what = `${it.Modality ?? "?"} · ${it.slices} slices`;
    const task = it.task ? `${it.task.name} #${it.case} (${it.step}, ${it.state})` : (it.SeriesDescription || "series");
    b.textContent = `${task} · ${what}`;
    b.title = `Series ${it.SeriesInstanceUID}`;
    b.setAttribute("aria-label", `Open ${task}, ${what}`);
    b.addEventListener("click", () => openCase(it, b));
    const li = document.createElement("li");
    li.append(b);
    ul.append(li);
  });
  if (!state.items.length) say("Nothing to annotate: no cases are assigned and no series are readable.");
}

async function loadSchemas() {
  state.schemas = (await api("/api/labels")).data;
  const sel = $("schema");
  sel.replaceChildren(...state.schemas.map((s) => new Option(s.ref, s.ref)));
  if (state.schemas.length) useSchema(state.schemas[state.schemas.length - 1].ref);
}

function useSchema(ref) {
  state.schema = state.schemas.find((s) => s.ref === ref) ?? null;
  $("schema").value = ref;
  const box = $("labels");
  box.replaceChildren();
  const drawable = (state.schema?.labels ?? []).filter((l) => ["bbox", "polygon", "mask"].includes(l.type));
  for (const l of drawable) {
    const b = document.createElement("button");
    b.setAttribute("role", "radio");
    b.dataset.label = l.name;
    b.dataset.testid = `label-${l.name}`;
    b.setAttribute("aria-label", `Label ${l.name} (${l.type})${l.key ? `, key ${l.key}` : ""}`);
    const sw = document.createElement("span");
    sw.className = "swatch";
    sw.style.background = l.colour;
    b.append(sw, l.name);
    if (l.key) { const k = document.createElement("kbd"); k.textContent = l.key; b.append(k); }
    b.addEventListener("click", () => pickLabel(l.name));
    box.append(b);
  }
  pickLabel(drawable[0]?.name ?? null);
}

const labelOf = (name) => state.schema?.labels.find((l) => l.name === name);
const TOOL_FOR = { bbox: "box", polygon: "polygon", mask: "brush" };
const KIND_FOR = { box: "bbox", polygon: "polygon", brush: "mask", erase: "mask" };

function pickLabel(name) {
  state.label = name;
  for (const b of $("labels").children) b.setAttribute("aria-checked", String(b.dataset.label === name));
  const l = labelOf(name);
  if (l && KIND_FOR[state.tool] !== l.type) setTool(TOOL_FOR[l.type], false);
}

function setTool(tool, matchLabel = true) {
  state.tool = tool;
  state.draft = null;
  for (const b of document.querySelectorAll("[data-tool]")) b.setAttribute("aria-pressed", String(b.dataset.tool === tool));
  const want = KIND_FOR[tool];
  if (matchLabel && want && labelOf(state.label)?.type !== want) {
    const l = state.schema?.labels.find((x) => x.type === want);
    if (l) pickLabel(l.name);
  }
  draw();
}

// ------------------------------------------------------------------ opening a case

async function openCase(item, button) {
  for (const b of $("worklist").querySelectorAll("button")) b.setAttribute("aria-current", String(b === button));
  say("Opening…");
  const geo = await api(`/api/series/${encodeURIComponent(item.SeriesInstanceUID)}/geometry`);
  Object.assign(state, { item, geo, k: 0, images: new Map(), masks: new Map(), maskAnn: new Map(),
                         shapes: [], undo: [], draft: null });
  $("schema").disabled = Boolean(item.schema);
  if (item.schema && state.schemas.some((s) => s.ref === item.schema)) useSchema(item.schema);
  const slider = $("slice");
  slider.max = String(geo.shape[0] - 1);
  fit();
  await loadOwn();
  showSlice(Math.floor(geo.shape[0] / 2));
  canvas.focus();
  say(`Opened ${item.Modality ?? ""} series with ${geo.shape[0]} slices.`);
}

function sliceOf(sop, frame) {
  return state.geo.slices.findIndex(([u, , f]) => u === sop && (frame == null || f === frame));
}

async function loadOwn() {  // my latest annotations of this series, to continue editing
  const q = new URLSearchParams({ series: state.geo.series_uid, reader: me });
  if (state.item.task) q.set("task", state.item.task.id);
  for (const a of (await api(`/api/annotations?${q}`)).data) {
    if (a.schema !== state.schema?.ref) continue;
    if (a.kind === "mask" && a.has_mask) {
      const m = await api(`/api/annotations/${a.uid}/mask`);
      for (const [k, runs] of Object.entries(m.slices)) paintRuns(a.label, Number(k), runs);
      state.maskAnn.set(a.label, { uid: a.uid, status: a.status, dirty: false });
    } else if (a.kind === "bbox" || a.kind === "polygon") {
      const k = sliceOf(a.target.SOPInstanceUID, a.target.frame);
      if (k < 0) continue;
      state.shapes.push({ label: a.label, kind: a.kind, k, box: a.data.box, points: a.data.points,
                          uid: a.uid, status: a.status, dirty: false });
    }
  }
  listAnnotations();
}

// ------------------------------------------------------------------ viewing

function fit() {
  const r = canvas.getBoundingClientRect();
  canvas.width = Math.max(1, Math.round(r.width));
  canvas.height = Math.max(1, Math.round(r.height));
  if (!state.geo) return;
  const [, rows, cols] = state.geo.shape;
  const s = Math.min(canvas.width / cols, canvas.height / rows) * 0.95;
  state.view = { scale: s, x: (canvas.width - cols * s) / 2, y: (canvas.height - rows * s) / 2 };
}

function frameUrl(k) {
  const [sop, , frame] = state.geo.slices[k];
  const p = new URLSearchParams({ accept: "image/png" });
  if (state.window) p.set("window", state.window);
  return `/dicomweb/studies/${state.geo.study_uid}/series/${state.geo.series_uid}` +
         `/instances/${sop}/frames/${frame}/rendered?${p}`;
}

function image(k) {
  const key = `${k}|${state.window}`;
  let img = state.images.get(key);
  if (!img) {
    img = new Image();
    img.onload = () => { if (state.k === k) draw(); };
    img.onerror = () => say(`Slice ${k + 1} could not be loaded.`, true);
    img.src = frameUrl(k);
    state.images.set(key, img);
  }
  return img;
}

function showSlice(k) {
  if (!state.geo) return;
  const n = state.geo.shape[0];
  state.k = Math.max(0, Math.min(n - 1, k));
  state.draft = null;
  $("slice").value = String(state.k);
  const label = $("slice-index");
  label.textContent = `Slice ${state.k + 1} / ${n}`;
  label.dataset.index = String(state.k);
  draw();
}

function zoom(factor, cx = canvas.width / 2, cy = canvas.height / 2) {
  const v = state.view;
  const s = Math.max(0.05, Math.min(80, v.scale * factor));
  v.x = cx - (cx - v.x) * (s / v.scale);
  v.y = cy - (cy - v.y) * (s / v.scale);
  v.scale = s;
  draw();
}

function draw() {
  const v = state.view;
  canvas.dataset.scale = String(v.scale);
  canvas.dataset.offsetX = String(v.x);
  canvas.dataset.offsetY = String(v.y);
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  if (!state.geo) return;
  ctx.setTransform(v.scale, 0, 0, v.scale, v.x, v.y);
  ctx.imageSmoothingEnabled = false;
  const img = image(state.k);
  if (img.complete && img.naturalWidth) ctx.drawImage(img, 0, 0, state.geo.shape[2], state.geo.shape[1]);
  ctx.globalAlpha = 0.45;
  for (const byK of state.masks.values()) { const c = byK.get(state.k); if (c) ctx.drawImage(c, 0, 0); }
  ctx.globalAlpha = 1;
  ctx.lineWidth = 1.5 / v.scale;
  for (const sh of state.shapes) if (sh.k === state.k) outline(sh);
  if (state.draft?.kind) outline(state.draft, true);
}

function outline(sh, open = false) {
  ctx.strokeStyle = labelOf(sh.label)?.colour ?? "#ff0";
  ctx.beginPath();
  if (sh.kind === "bbox") {
    const [x0, y0, x1, y1] = sh.box;
    ctx.rect(x0, y0, x1 - x0, y1 - y0);
  } else {
    sh.points.forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
    if (!open) ctx.closePath();
  }
  ctx.stroke();
}

// ------------------------------------------------------------------ drawing

function toImage(e) {
  const r = canvas.getBoundingClientRect();
  const v = state.view;
  return [(e.clientX - r.left - v.x) / v.scale, (e.clientY - r.top - v.y) / v.scale];
}

function clamp([x, y]) {
  const [, rows, cols] = state.geo.shape;
  return [Math.max(0, Math.min(cols, x)), Math.max(0, Math.min(rows, y))];
}

const round = (p) => p.map((c) => Math.round(c * 100) / 100);

function maskCanvas(label, k) {
  if (!state.masks.has(label)) state.masks.set(label, new Map());
  const byK = state.masks.get(label);
  if (!byK.has(k)) {
    const c = document.createElement("canvas");
    [c.height, c.width] = state.geo.shape.slice(1);
    byK.set(k, c);
  }
  return byK.get(k);
}

function paint(from, to) {
  const c = maskCanvas(state.label, state.k).getContext("2d");
  c.globalCompositeOperation = state.tool === "erase" ? "destination-out" : "source-over";
  c.strokeStyle = labelOf(state.label).colour;
  c.lineWidth = state.brush;
  c.lineCap = c.lineJoin = "round";
  c.beginPath();
  c.moveTo(...from);
  c.lineTo(to[0] + 0.01, to[1]);  // a zero-length line paints no dot
  c.stroke();
  const m = state.maskAnn.get(state.label) ?? { uid: null, status: null };
  state.maskAnn.set(state.label, { ...m, dirty: true });
}

function harden(c) {  // show exactly what is saved: a pixel is in the mask or not
  const g = c.getContext("2d");
  const img = g.getImageData(0, 0, c.width, c.height);
  const a = img.data;
  for (let i = 3; i < a.length; i += 4) a[i] = a[i] >= 128 ? 255 : 0;
  g.putImageData(img, 0, 0);
}

function paintRuns(label, k, runs) {
  const c = maskCanvas(label, k);
  const g = c.getContext("2d");
  const data = g.createImageData(c.width, c.height);
  const hex = labelOf(label)?.colour ?? "#ffff00";
  const rgb = [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
  let p = 0;
  runs.forEach((n, i) => {
    if (i % 2) for (let j = p; j < p + n; j++) data.data.set([...rgb, 255], j * 4);
    p += n;
  });
  g.putImageData(data, 0, 0);
}

function encodeMask(label) {  // rle-slices: per slice, runs of 0s and 1s, starting with 0s
  const slices = {};
  for (const [k, c] of state.masks.get(label) ?? []) {
    const a = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
    const runs = [];
    let on = false, n = 0, any = false;
    for (let i = 3; i < a.length; i += 4) {
      const px = a[i] >= 128;
      if (px !== on) { runs.push(n); n = 0; on = px; }
      n++;
      any ||= px;
    }
    runs.push(n);
    if (any) slices[k] = runs;
  }
  return { encoding: "rle-slices", shape: state.geo.shape, slices };
}

canvas.addEventListener("pointerdown", (e) => {
  if (!state.geo) return;
  canvas.focus();
  canvas.setPointerCapture(e.pointerId);
  if (e.button === 1 || state.tool === "pan" || state.spaceDown) {
    state.drag = { pan: true, x: e.clientX, y: e.clientY };
    canvas.classList.add("panning");
    e.preventDefault();
    return;
  }
  if (e.button !== 0 || !state.label) return;
  const p = clamp(toImage(e));
  if (state.tool === "box") {
    state.draft = { kind: "bbox", label: state.label, k: state.k, start: p, box: [...p, ...p] };
  } else if (state.tool === "polygon") {
    const d = state.draft?.kind === "polygon" ? state.draft : { kind: "polygon", label: state.label, k: state.k, points: [] };
    const last = d.points[d.points.length - 1];
    if (!last || Math.hypot(last[0] - p[0], last[1] - p[1]) * state.view.scale > 3) d.points.push(round(p));
    state.draft = d;
  } else {
    const c = maskCanvas(state.label, state.k);
    const before = c.getContext("2d").getImageData(0, 0, c.width, c.height);
    const prev = state.maskAnn.get(state.label);
    state.undo.push({ stroke: true, label: state.label, k: state.k, before, dirty: prev?.dirty ?? false });
    state.drag = { stroke: true, last: p };
    paint(p, p);
  }
  draw();
});

canvas.addEventListener("pointermove", (e) => {
  const d = state.drag;
  if (d?.pan) {
    state.view.x += e.clientX - d.x;
    state.view.y += e.clientY - d.y;
    d.x = e.clientX;
    d.y = e.clientY;
    draw();
  } else if (d?.stroke) {
    const p = clamp(toImage(e));
    paint(d.last, p);
    d.last = p;
    draw();
  } else if (state.draft?.kind === "bbox" && state.draft.start) {
    const [x0, y0] = state.draft.start;
    const [x1, y1] = clamp(toImage(e));
    state.draft.box = [Math.min(x0, x1), Math.min(y0, y1), Math.max(x0, x1), Math.max(y0, y1)];
    draw();
  }
});

canvas.addEventListener("pointerup", () => {
  canvas.classList.remove("panning");
  if (state.drag?.stroke) harden(maskCanvas(state.label, state.k));
  state.drag = null;
  const d = state.draft;
  if (d?.kind === "bbox") {
    state.draft = null;
    if (d.box[2] - d.box[0] >= 1 && d.box[3] - d.box[1] >= 1) {
      addShape({ label: d.label, kind: "bbox", k: d.k, box: round(d.box) });
    }
  }
  draw();
});

canvas.addEventListener("dblclick", () => closePolygon());

function closePolygon() {
  const d = state.draft;
  if (d?.kind !== "polygon") return;
  state.draft = null;
  if (d.points.length >= 3) addShape({ label: d.label, kind: "polygon", k: d.k, points: d.points });
  else say("A polygon needs at least 3 points.", true);
  draw();
}

function addShape(sh) {
  const shape = { ...sh, uid: null, status: null, dirty: true };
  state.shapes.push(shape);
  state.undo.push({ shape });
  listAnnotations();
}

function undo() {
  const u = state.undo.pop();
  if (!u) return say("Nothing to undo.");
  if (u.stroke) {
    maskCanvas(u.label, u.k).getContext("2d").putImageData(u.before, 0, 0);
    const m = state.maskAnn.get(u.label);
    if (m) m.dirty = u.dirty || state.undo.some((x) => x.stroke && x.label === u.label);
  } else if (u.shape.uid) {
    say("That shape is already saved; it stays (edit it by saving a new one).");
  } else {
    state.shapes.splice(state.shapes.indexOf(u.shape), 1);
  }
  listAnnotations();
  draw();
}

canvas.addEventListener("wheel", (e) => {
  e.preventDefault();
  if (e.ctrlKey) {
    const r = canvas.getBoundingClientRect();
    zoom(e.deltaY < 0 ? 1.15 : 1 / 1.15, e.clientX - r.left, e.clientY - r.top);
  } else {
    showSlice(state.k + Math.sign(e.deltaY));
  }
}, { passive: false });

window.addEventListener("resize", () => { fit(); draw(); });

window.addEventListener("keydown", (e) => {
  const t = e.target;
  if (t instanceof HTMLSelectElement || (t instanceof HTMLInputElement && t.type !== "range")) return;
  const n = state.geo?.shape[0] ?? 1;
  const step = { ArrowUp: 1, ArrowRight: 1, ArrowDown: -1, ArrowLeft: -1,
                 PageUp: Math.max(1, Math.round(n / 10)), PageDown: -Math.max(1, Math.round(n / 10)) }[e.key];
  if (step && t instanceof HTMLInputElement) return;  // a focused slider steps by itself
  if (step) { showSlice(state.k + step); e.preventDefault(); return; }
  if ((e.ctrlKey || e.metaKey) && e.key.toLowerCase() === "z") { undo(); e.preventDefault(); return; }
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  if (e.key === " ") { state.spaceDown = true; e.preventDefault(); return; }
  if (e.key === "+" || e.key === "=") return zoom(1.25);
  if (e.key === "-") return zoom(1 / 1.25);
  if (e.key === "Enter") return closePolygon();
  if (e.key === "Escape") { state.draft = null; return draw(); }
  if (e.key === "[" || e.key === "]") {
    state.brush = Math.max(1, Math.min(40, state.brush + (e.key === "]" ? 1 : -1)));
    $("brush-size").value = String(state.brush);
    return;
  }
  const l = state.schema?.labels.find((x) => x.key === e.key && ["bbox", "polygon", "mask"].includes(x.type));
  if (l) pickLabel(l.name);
});

window.addEventListener("keyup", (e) => { if (e.key === " ") state.spaceDown = false; });

// ------------------------------------------------------------------ saving

function targetOf(k, level) {
  const t = { StudyInstanceUID: state.geo.study_uid, SeriesInstanceUID: state.geo.series_uid };
  if (level === "series") return t;
  const [sop, , frame] = state.geo.slices[k];
  const multiframe = state.geo.slices.filter(([u]) => u === sop).length > 1;
  return { ...t, SOPInstanceUID: sop, ...(multiframe ? { frame } : {}) };
}

async function saveOne(rec, status, content, create) {
  if (rec.uid) {
    // untouched annotations change only to be submitted (a draft never un-submits one)
    if (!rec.dirty && !(status === "submitted" && rec.status === "draft")) return false;
    const v = await post(`/api/annotations/${rec.uid}/revisions`, rec.dirty ? { ...content, status } : { status });
    Object.assign(rec, { status: v.status, dirty: false });
    return true;
  }
  if (!create) return false;
  const v = await post("/api/annotations", { schema: state.schema.ref, status,
                                             task: state.item.task?.id ?? null, ...create, ...content });
  Object.assign(rec, { uid: v.uid, status: v.status, dirty: false });
  return true;
}

async function save(status) {
  if (!state.geo || !state.schema) return say("Open a case first.", true);
  say(status === "submitted" ? "Submitting…" : "Saving…");
  let done = 0;
  const errors = [];
  for (const [label, rec] of state.maskAnn) {
    const mask = rec.dirty ? encodeMask(label) : null;
    const empty = mask && !Object.keys(mask.slices).length;
    try {
      if (await saveOne(rec, status, mask ? { mask } : {},
                        empty ? null : { label, target: targetOf(0, "series"), data: {} })) done++;
    } catch (err) { errors.push(`${label}: ${err.message}`); }
  }
  for (const sh of state.shapes) {
    const data = sh.kind === "bbox" ? { box: sh.box } : { points: sh.points };
    try {
      if (await saveOne(sh, status, { data }, { label: sh.label, target: targetOf(sh.k, "instance") })) done++;
    } catch (err) { errors.push(`${sh.label}: ${err.message}`); }
  }
  state.undo = state.undo.filter((u) => u.stroke);
  listAnnotations();
  if (errors.length) return say(`Saved ${done}; failed: ${errors.join("; ")}`, true);
  say(done ? `${status === "submitted" ? "Submitted" : "Saved as draft"}: ${done} annotation${done > 1 ? "s" : ""}.`
           : "Nothing to save.");
}

function listAnnotations() {
  const ul = $("annotations");
  ul.replaceChildren();
  const rows = [...[...state.maskAnn].map(([label, m]) => ({ label, kind: "mask", ...m })), ...state.shapes];
  for (const a of rows) {
    const li = document.createElement("li");
    li.className = "annotation";
    const where = a.k != null ? ` · slice ${a.k + 1}` : "";
    li.textContent = `${a.label} (${a.kind})${where} · ${a.dirty ? "unsaved" : a.status}`;
    ul.append(li);
  }
}

// ------------------------------------------------------------------ wiring

for (const b of document.querySelectorAll("[data-tool]")) b.addEventListener("click", () => setTool(b.dataset.tool));
$("slice").addEventListener("input", (e) => showSlice(Number(e.target.value)));
$("window").addEventListener("change", (e) => { state.window = e.target.value; draw(); });
$("brush-size").addEventListener("input", (e) => { state.brush = Number(e.target.value); });
$("schema").addEventListener("change", (e) => useSchema(e.target.value));
$("undo").addEventListener("click", undo);
$("save").addEventListener("click", () => save("draft"));
$("submit").addEventListener("click", () => save("submitted"));
$("more").addEventListener("click", () => loadWorklist(true));

fit();
draw();
Promise.all([loadSchemas(), loadWorklist()])
  .then(() => { document.body.dataset.ready = "true"; })
  .catch((err) => say(`Could not load: ${err.message}`, true));
