// The condvae page: pick a model and an image, paint what is observed, run a method through
// the JSON API (a job followed by server-sent events), and show completions, per-pixel
// uncertainty and where to look next. No framework and nothing fetched from elsewhere.
"use strict";

const $ = (id) => document.getElementById(id);
const S = { models: {}, methods: {}, info: null, C: 1, H: 28, W: 28, x: null, mask: null,
            job: null, events: null, condition: null, design: null, table: false, rows: [] };

async function api(path, options = {}) {
  const init = { headers: { "Content-Type": "application/json" }, ...options };
  if (init.body && typeof init.body !== "string") init.body = JSON.stringify(init.body);
  const response = await fetch(path, init);
  let data = null;
  try { data = await response.json(); } catch (e) { data = { detail: response.statusText }; }
  if (!response.ok) throw new Error(data.detail || `HTTP ${response.status}`);
  return data;
}

function say(text, error = false) {
  $("message").textContent = text;
  $("message").className = error ? "error" : "";
}

// ---- models, methods, options ----------------------------------------------------------
async function init() {
  const [models, methods] = await Promise.all([api("/api/models"), api("/api/methods")]);
  S.methods = methods;
  const select = $("model");
  for (const kind of ["image", "table"]) {
    const group = document.createElement("optgroup");
    group.label = kind === "image" ? "images" : "tables";
    for (const m of models.filter((m) => m.kind === kind)) {
      S.models[m.name] = m;
      group.appendChild(new Option(`${m.name} (${m.likelihood}, z ${m.latent_dim})`, m.name));
    }
    if (group.children.length) select.appendChild(group);
  }
  select.addEventListener("change", () => loadModel(select.value));
  const first = models.find((m) => m.name === "mnist-mlp-z2") || models[0];
  select.value = first.name;
  await loadModel(first.name);
}

async function loadModel(name) {
  const info = S.models[name];
  S.info = info;
  S.table = info.kind === "table";
  S.condition = S.design = null;
  $("results").hidden = $("heat-figure").hidden = true;
  $("ranking").innerHTML = "";
  $("model-info").textContent = `${info.dataset || ""} · data ${info.data_shape.join("×")} · ` +
    (info.partial_encoder ? "partial encoder bundled (ipa is fast)" : "no partial encoder: per-query methods only");
  $("image-tools").hidden = $("mask-tools").hidden = $("editor-box").hidden = S.table;
  $("table-box").hidden = !S.table;
  const method = $("method");
  method.innerHTML = "";
  for (const m of info.methods) method.appendChild(new Option(m, m));
  method.value = info.methods.includes("ipa") ? "ipa" : "auto";
  renderOptions();
  const examples = await api(`/api/models/${name}/examples`);
  $("examples-source").textContent = `examples: ${examples.source}`;
  if (S.table) {
    S.rows = examples.rows;
    const pick = $("row");
    pick.innerHTML = "";
    examples.rows.forEach((_, i) => pick.appendChild(new Option(`row ${i + 1}`, i)));
    buildTable(examples.rows[0]);
    return;
  }
  [S.C, S.H, S.W] = info.data_shape;
  for (const c of [$("editor"), $("overlay")]) { c.width = S.W; c.height = S.H; }
  const gallery = $("examples");
  gallery.innerHTML = "";
  examples.images.forEach((src, i) => {
    const img = document.createElement("img");
    img.src = src; img.alt = `example ${i}`; img.dataset.index = i;
    img.addEventListener("click", () => { choose(img); setImage(examples.x[i]); });
    gallery.appendChild(img);
  });
  choose(gallery.firstChild);
  setImage(examples.x[0]);
  preset("top");
}

function choose(img) {
  for (const other of $("examples").children) other.classList.toggle("chosen", other === img);
}

function renderOptions() {
  const name = $("method").value;
  const spec = S.methods[name] || { options: [], doc: "" };
  $("method-doc").textContent = spec.doc;
  const box = $("options");
  box.innerHTML = "";
  for (const o of spec.options) {
    const label = document.createElement("label");
    label.textContent = o.name + " ";
    let input;
    if (o.type === "choice") {
      input = document.createElement("select");
      for (const c of o.choices) input.appendChild(new Option(String(c), JSON.stringify(c)));
      input.value = JSON.stringify(o.default);
    } else if (o.type === "bool") {
      input = document.createElement("input"); input.type = "checkbox"; input.checked = !!o.default;
    } else {
      input = document.createElement("input"); input.type = "number";
      input.step = o.type === "int" ? "1" : "any";
      input.placeholder = o.default === null ? "default" : String(o.default);
    }
    input.dataset.option = o.name; input.dataset.type = o.type;
    input.dataset.default = JSON.stringify(o.default);
    label.appendChild(input);
    box.appendChild(label);
  }
}

function chosenOptions() {
  const options = {};
  for (const input of $("options").querySelectorAll("[data-option]")) {
    const type = input.dataset.type, name = input.dataset.option;
    if (type === "bool") {
      if (input.checked !== JSON.parse(input.dataset.default)) options[name] = input.checked;
    } else if (type === "choice") {
      if (input.value !== input.dataset.default) options[name] = JSON.parse(input.value);
    } else if (input.value !== "") {
      options[name] = type === "int" ? parseInt(input.value, 10) : parseFloat(input.value);
    }
  }
  return options;
}

// ---- the image and its mask --------------------------------------------------------------
function setImage(nested) {
  const flat = nested.flat(2);
  S.x = Float32Array.from(flat);
  if (!S.mask || S.mask.length !== S.H * S.W) S.mask = new Uint8Array(S.H * S.W);
  S.design = null;
  draw();
}

function draw() {
  const { C, H, W } = S;
  const ctx = $("editor").getContext("2d");
  const image = ctx.createImageData(W, H);
  for (let i = 0; i < H * W; i++) {
    for (let c = 0; c < 3; c++) image.data[4 * i + c] = 255 * S.x[(C === 1 ? 0 : c) * H * W + i];
    image.data[4 * i + 3] = 255;
  }
  ctx.putImageData(image, 0, 0);
  const over = $("overlay").getContext("2d");
  const tint = over.createImageData(W, H);
  for (let i = 0; i < H * W; i++) {
    if (!S.mask[i]) { tint.data[4 * i] = 33; tint.data[4 * i + 1] = 84; tint.data[4 * i + 2] = 95; tint.data[4 * i + 3] = 200; }
  }
  over.putImageData(tint, 0, 0);
  if (S.design && S.design.candidates.length && S.design.candidates[0].box) {
    const [x0, y0, x1, y1] = S.design.candidates[0].box;
    over.fillStyle = "rgba(224,138,30,0.55)";
    over.fillRect(x0, y0, x1 - x0, y1 - y0);
  }
  const seen = S.mask.reduce((a, b) => a + b, 0);
  $("mask-count").textContent = `${seen} of ${H * W} pixels observed (${(100 * seen / (H * W)).toFixed(1)}%)`;
}

function paintAt(event) {
  const rect = $("overlay").getBoundingClientRect();
  const px = Math.floor((event.clientX - rect.left) / rect.width * S.W);
  const py = Math.floor((event.clientY - rect.top) / rect.height * S.H);
  const r = parseInt($("brush").value, 10);
  const tool = document.querySelector("input[name=tool]:checked").value;
  for (let y = py - r + 1; y < py + r; y++) {
    for (let x = px - r + 1; x < px + r; x++) {
      if (x < 0 || y < 0 || x >= S.W || y >= S.H || (x - px) ** 2 + (y - py) ** 2 > (r - 0.5) ** 2) continue;
      const i = y * S.W + x;
      if (tool === "hide") { S.mask[i] = 0; continue; }
      S.mask[i] = 1;
      if (tool === "ink" || tool === "erase") {
        for (let c = 0; c < S.C; c++) S.x[c * S.H * S.W + i] = tool === "ink" ? 1 : 0;
      }
    }
  }
  draw();
}

function preset(kind) {
  const { H, W } = S;
  const m = new Uint8Array(H * W);
  let seed = parseInt($("seed").value, 10) || 0;
  const random = () => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed / 2147483648; };
  for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) {
    const i = y * W + x;
    if (kind === "top") m[i] = y < H / 2;
    else if (kind === "left") m[i] = x < W / 2;
    else if (kind === "box") m[i] = !(y >= H / 4 && y < 3 * H / 4 && x >= W / 4 && x < 3 * W / 4);
    else if (kind === "random") m[i] = random() < parseFloat($("fraction").value);
    else if (kind === "all") m[i] = 1;
  }
  if (kind === "strokes") {
    for (let s = 0; s < 4; s++) {
      let x = random() * W, y = random() * H;
      for (let t = 0; t < 12; t++) {
        x = Math.min(W - 1, Math.max(0, x + (random() - 0.5) * W / 4));
        y = Math.min(H - 1, Math.max(0, y + (random() - 0.5) * H / 4));
        for (let dy = -1; dy <= 1; dy++) for (let dx = -1; dx <= 1; dx++) {
          const xx = Math.round(x) + dx, yy = Math.round(y) + dy;
          if (xx >= 0 && yy >= 0 && xx < W && yy < H) m[yy * W + xx] = 1;
        }
      }
    }
  }
  S.mask = m;
  S.design = null;
  draw();
}

async function upload(file) {
  if (!file) return;
  const dataUrl = await new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(new Error("the file could not be read"));
    reader.readAsDataURL(file);
  });
  try {
    const answer = await api(`/api/models/${S.info.name}/image`, { method: "POST", body: { image: dataUrl } });
    choose(null);
    setImage(answer.x);
    say(answer.notes.length ? answer.notes.join("; ") : `${file.name} loaded`);
  } catch (e) { say(e.message, true); }
}

// ---- tables --------------------------------------------------------------------------------
function buildTable(row) {
  const body = $("features").querySelector("tbody");
  body.innerHTML = "";
  S.info.columns.forEach((column, j) => {
    const tr = document.createElement("tr");
    const observed = j < Math.ceil(S.info.columns.length / 2) && row[j] !== null;
    tr.innerHTML = `<td><input type="checkbox" ${observed ? "checked" : ""}></td><td>${column.name}` +
      ` <span class="small">${column.kind}</span></td><td><input type="number" step="any"></td><td></td><td></td><td></td>`;
    tr.querySelector("input[type=number]").value = row[j] === null ? "" : Number(row[j].toPrecision(6));
    body.appendChild(tr);
  });
}

function tableEvidence() {
  const x = [], mask = [];
  for (const tr of $("features").querySelectorAll("tbody tr")) {
    const value = tr.querySelector("input[type=number]").value;
    const observed = tr.querySelector("input[type=checkbox]").checked;
    x.push(value === "" ? null : parseFloat(value));
    mask.push(observed ? 1 : 0);
  }
  return { x, mask };
}

// ---- requests and jobs ---------------------------------------------------------------------
function evidence() {
  const base = { model: S.info.name, seed: parseInt($("seed").value, 10) || 0 };
  if (S.table) return { ...base, ...tableEvidence() };
  const { C, H, W } = S;
  const x = [], mask = [];
  for (let c = 0; c < C; c++) {
    const plane = [];
    for (let y = 0; y < H; y++) plane.push(Array.from(S.x.subarray(c * H * W + y * W, c * H * W + (y + 1) * W)));
    x.push(plane);
  }
  for (let y = 0; y < H; y++) mask.push(Array.from(S.mask.subarray(y * W, (y + 1) * W)));
  return { ...base, x, mask };
}

function busy(on) {
  $("run").disabled = $("design").disabled = on;
  $("cancel").disabled = !on;
  $("progress-box").hidden = !on;
}

async function start(kind) {
  const request = evidence();
  if (kind === "condition") {
    Object.assign(request, { method: $("method").value, options: chosenOptions(),
      n: parseInt($("n").value, 10) || 8, display: $("display").value });
  } else {
    request.method = S.info.methods.includes("ipa") ? "ipa" : $("method").value;
  }
  say(kind === "condition" ? `fitting ${request.method}…` : "scoring where to look next…");
  busy(true);
  $("progress").removeAttribute("value");
  $("progress-text").textContent = "queued";
  try {
    const job = await api("/api/jobs", { method: "POST", body: { kind, request } });
    S.job = job.id;
    await follow(job.id, kind);
  } catch (e) { say(e.message, true); busy(false); }
}

function follow(id, kind) {
  return new Promise((resolve) => {
    const events = new EventSource(`/api/jobs/${id}/events`);
    S.events = events;
    events.onmessage = async (message) => {
      const job = JSON.parse(message.data);
      if (job.total) {
        $("progress").value = job.fraction;
        $("progress-text").textContent = `${job.phase} ${job.done}/${job.total} · ${job.seconds.toFixed(1)} s`;
      } else {
        $("progress-text").textContent = `${job.state} · ${job.seconds.toFixed(1)} s`;
      }
      if (!["done", "failed", "cancelled"].includes(job.state)) return;
      events.close();
      busy(false);
      S.job = null;
      if (job.state !== "done") { say(job.error || job.state, true); resolve(); return; }
      try {
        const full = await api(`/api/jobs/${id}`);
        if (kind === "condition") showCondition(full.result); else showDesign(full.result);
      } catch (e) { say(e.message, true); }
      resolve();
    };
    events.onerror = () => { events.close(); busy(false); say("the connection to the server was lost", true); resolve(); };
  });
}

async function cancel() {
  if (!S.job) return;
  try { await api(`/api/jobs/${S.job}`, { method: "DELETE" }); } catch (e) { say(e.message, true); }
}

// ---- results -------------------------------------------------------------------------------
function fmt(v) { return v === null || v === undefined ? "" : Math.abs(v) >= 100 ? v.toFixed(1) : v.toPrecision(3); }

function showCondition(r) {
  S.condition = r;
  const d = r.diagnostics;
  const parts = [`${r.method}`, r.c_elbo === null ? "no C-ELBO (no density)" : `C-ELBO ${r.c_elbo.toFixed(2)} nats`,
    `fit ${d.seconds.toFixed(2)} s`];
  if (d.chosen) parts.push(`auto chose ${d.chosen}${d.reason ? " (" + d.reason + ")" : ""}`);
  $("summary").textContent = parts.join(" · ") + (r.notes.length ? " · " + r.notes.join("; ") : "");
  say(`${r.method}: done`);
  if (S.table) { showTable(r); return; }
  $("results").hidden = false;
  for (const id of ["mean", "std"]) $(id).parentElement.hidden = false;
  $("mean").src = r.mean;
  $("std").src = r.std;
  $("std-caption").textContent = `standard deviation (0 → ${fmt(r.std_max)})`;
  const gallery = $("completions");
  gallery.innerHTML = "";
  r.completions.forEach((src, i) => {
    const img = document.createElement("img"); img.src = src; img.alt = `completion ${i}`; img.className = "completion";
    gallery.appendChild(img);
  });
}

function showTable(r) {
  $("results").hidden = false;
  for (const id of ["mean", "std"]) $(id).parentElement.hidden = true;
  const gallery = $("completions");
  gallery.innerHTML = `<table><tr>${r.columns.map((c) => `<th>${c}</th>`).join("")}</tr>` +
    r.completions.map((row) => `<tr>${row.map((v) => `<td>${fmt(v)}</td>`).join("")}</tr>`).join("") + "</table>";
  $("features").querySelectorAll("tbody tr").forEach((tr, j) => {
    const cells = tr.querySelectorAll("td");
    cells[3].textContent = r.mask[j] ? "observed" : `${fmt(r.mean[j])} ± ${fmt(r.std[j])}`;
    cells[4].textContent = r.mask[j] ? "" : `${fmt(r.interval90[0][j])} … ${fmt(r.interval90[1][j])}`;
  });
}

function showDesign(r) {
  S.design = r;
  const top = r.candidates.slice(0, 5);
  const most = Math.max(...r.candidates.map((c) => c.eig), 1e-12);
  $("results").hidden = false;
  $("ranking").innerHTML = `<h3>Where to look next (${r.score}, completions by ${r.method})</h3><ol>` +
    top.map((c) => `<li>${c.name}: ${c.eig.toFixed(4)} nats <span class="bar" style="width:${(120 * c.eig / most).toFixed(0)}px"></span></li>`).join("") + "</ol>";
  if (S.table) {
    $("features").querySelectorAll("tbody tr").forEach((tr, j) => {
      const c = r.candidates.find((c) => c.index === j);
      tr.querySelectorAll("td")[5].innerHTML = c ? `${c.eig.toFixed(3)} <span class="bar" style="width:${(60 * c.eig / most).toFixed(0)}px"></span>` : "";
    });
  } else {
    $("heat-figure").hidden = false;
    $("heat").src = r.heat;
    $("heat-caption").textContent = `expected information gain (0 → ${fmt(r.eig_max)} nats); best: ${r.candidates[0].name}`;
    draw();
  }
  say(`best next glimpse: ${r.candidates[0].name}`);
}

async function download() {
  const images = [];
  const add = (src, label) => { if (src) images.push({ src, label }); };
  if (!S.table) {
    const canvas = document.createElement("canvas");
    canvas.width = S.W; canvas.height = S.H;
    const ctx = canvas.getContext("2d");
    ctx.drawImage($("editor"), 0, 0); ctx.drawImage($("overlay"), 0, 0);
    add(canvas.toDataURL(), "evidence");
  }
  if (S.condition && !S.table) {
    add(S.condition.mean, "mean"); add(S.condition.std, "sd");
    S.condition.completions.forEach((src, i) => add(src, `#${i + 1}`));
  }
  if (S.design && S.design.heat) add(S.design.heat, "EIG");
  const size = 112, pad = 18;
  const out = document.createElement("canvas");
  out.width = images.length * (size + 6); out.height = size + pad;
  const ctx = out.getContext("2d");
  ctx.fillStyle = "white"; ctx.fillRect(0, 0, out.width, out.height);
  ctx.imageSmoothingEnabled = false;
  ctx.fillStyle = "black"; ctx.font = "12px sans-serif";
  for (const [i, item] of images.entries()) {
    const img = new Image();
    await new Promise((resolve) => { img.onload = resolve; img.src = item.src; });
    ctx.drawImage(img, i * (size + 6), pad, size, size);
    ctx.fillText(item.label, i * (size + 6) + 2, 13);
  }
  const link = document.createElement("a");
  link.download = `condvae-${S.info.name}-${S.condition ? S.condition.method : "design"}.png`;
  link.href = out.toDataURL("image/png");
  link.click();
}

// ---- wiring --------------------------------------------------------------------------------
function wire() {
  $("method").addEventListener("change", renderOptions);
  $("row").addEventListener("change", () => buildTable(S.rows[parseInt($("row").value, 10)]));
  $("run").addEventListener("click", () => start("condition"));
  $("design").addEventListener("click", () => start("design"));
  $("cancel").addEventListener("click", cancel);
  $("download").addEventListener("click", download);
  $("upload").addEventListener("change", (e) => upload(e.target.files[0]));
  $("draw-new").addEventListener("click", () => { choose(null); setImage(new Array(S.C * S.H * S.W).fill(0)); preset("none"); });
  $("brush").addEventListener("input", () => { $("brush-value").textContent = $("brush").value; });
  for (const button of document.querySelectorAll("[data-preset]")) button.addEventListener("click", () => preset(button.dataset.preset));
  const overlay = $("overlay");
  overlay.addEventListener("pointerdown", (e) => { overlay.setPointerCapture(e.pointerId); S.painting = true; paintAt(e); });
  overlay.addEventListener("pointermove", (e) => { if (S.painting) paintAt(e); });
  for (const end of ["pointerup", "pointercancel"]) overlay.addEventListener(end, () => { S.painting = false; });
}

wire();
init().catch((e) => say(e.message, true));
