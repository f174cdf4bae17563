// Plain JS for the page at "/": send one image to /predict and draw what comes back.
"use strict";

const $ = (id) => document.getElementById(id);

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

async function describeModel() {
  try {
    const res = await fetch("model");
    const info = await res.json();
    if (!res.ok) throw new Error(info.detail || res.statusText);
    const acc = info.metrics && info.metrics.test_acc;
    $("model").textContent =
      `${info.architecture} + ${info.attention} attention · ${info.parameters.toLocaleString()} ` +
      `parameters · input ${info.input_shape.join("×")} · ${info.classes.length} classes` +
      (typeof acc === "number" ? ` · test accuracy ${(100 * acc).toFixed(2)}%` : "");
  } catch (err) {
    $("model").textContent = `model: ${err.message}`;
  }
}

// The upload whose answer the page waits for: a newer one aborts it, so a slow answer to an
// earlier image can never be drawn over a later one.
let inFlight = null;

async function predict(file) {
  if (inFlight) inFlight.abort();
  const request = new AbortController();
  inFlight = request;
  setStatus(`classifying ${file.name}…`);
  $("top1").textContent = "";
  $("top").replaceChildren();
  $("attention").replaceChildren();
  if ($("preview").src.startsWith("blob:")) URL.revokeObjectURL($("preview").src);
  $("preview").src = URL.createObjectURL(file);
  $("stage").style.display = "block";
  $("cam-controls").hidden = true;
  // The last image's map must not sit over this one: shown again only when its own arrives.
  $("cam").style.display = "none";

  const form = new FormData();
  form.append("files", file, file.name);
  const headers = {};
  const token = $("token").value.trim();
  if (token) headers.Authorization = `Bearer ${token}`;
  let body;
  try {
    // No top_k: the server sends its default, at most the model's class count.
    const res = await fetch("predict?cam=true", {
      method: "POST", body: form, headers, signal: request.signal,
    });
    body = await res.json();
    if (!res.ok) throw new Error(`${res.status}: ${body.detail}`);
  } catch (err) {
    if (request.signal.aborted) return;  // a newer upload took over the page
    setStatus(`error: ${err.message}`, true);
    return;
  } finally {
    if (inFlight === request) inFlight = null;
  }
  if (request.signal.aborted) return;
  const result = body.predictions[0];
  showTop(result.top);
  showAttention(result.attention || {});
  if (result.cam) showCam(result.cam);
  setStatus(`done: ${file.name}`);
}

function showTop(top) {
  $("top1").textContent = top[0].label;
  const rows = top.map(({ label, probability }) => {
    const li = document.createElement("li");
    const name = document.createElement("span");
    name.textContent = label;
    name.className = "label";
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.style.width = `${Math.max(0.5, 100 * probability)}%`;
    const prob = document.createElement("span");
    prob.className = "prob";
    prob.textContent = `${(100 * probability).toFixed(1)}%`;
    li.append(name, bar, prob);
    return li;
  });
  $("top").replaceChildren(...rows);
}

function showAttention(modules) {
  const figures = Object.entries(modules).map(([name, weights]) => {
    const fig = document.createElement("figure");
    fig.className = "attention-chart";
    fig.dataset.module = name;
    const caption = document.createElement("figcaption");
    const channels = weights.channel || [];
    caption.textContent = `${name} · ${channels.length} channels` +
      (weights.spatial ? " · spatial map" : "");
    fig.append(caption);
    if (channels.length) {
      const value = document.createElement("div");
      value.className = "gate-value";
      fig.append(channelChart(channels, value), value);
    }
    if (weights.spatial) fig.append(spatialMap(weights.spatial));
    if (weights.sources) fig.append(sourcesDiagram(name, weights.sources));
    return fig;
  });
  $("attention").replaceChildren(...figures);
  if (!figures.length) $("attention").textContent = "this model has no attention modules";
}

// One bar per channel; the gates are sigmoids, so the axis is fixed to [0, 1]. Hovering a bar
// writes its channel and value into `readout`.
function channelChart(values, readout) {
  const canvas = document.createElement("canvas");
  canvas.className = "channel";
  const width = 280, height = 90, ratio = window.devicePixelRatio || 1;
  canvas.width = width * ratio;
  canvas.height = height * ratio;
  const ctx = canvas.getContext("2d");
  ctx.scale(ratio, ratio);
  ctx.fillStyle = "#eef1f6";
  ctx.fillRect(0, 0, width, height);
  const step = width / values.length;
  ctx.fillStyle = "#2f6fed";
  values.forEach((v, i) => {
    const h = Math.max(1, Math.min(1, Math.max(0, v)) * (height - 2));
    ctx.fillRect(i * step, height - h, Math.max(1, step - (step > 3 ? 1 : 0)), h);
  });
  canvas.addEventListener("mousemove", (e) => {
    const rect = canvas.getBoundingClientRect();
    const i = Math.min(values.length - 1,
      Math.max(0, Math.floor((e.clientX - rect.left) / rect.width * values.length)));
    readout.textContent = `channel ${i}: ${values[i].toFixed(3)}`;
  });
  canvas.addEventListener("mouseleave", () => { readout.textContent = ""; });
  return canvas;
}

// A bridge gate's sources: each layer that feeds it, with its share of the fused vector.
function sourcesDiagram(gate, shares) {
  const box = document.createElement("div");
  box.className = "sources";
  const rows = Object.entries(shares).map(([layer, share]) => {
    const row = document.createElement("div");
    row.className = "source";
    row.dataset.layer = layer;
    const name = document.createElement("span");
    name.textContent = layer;
    const bar = document.createElement("div");
    bar.className = "share";
    bar.style.width = `${Math.max(1, 100 * share)}%`;
    const pct = document.createElement("span");
    pct.textContent = `${(100 * share).toFixed(0)}%`;
    row.append(name, bar, pct);
    return row;
  });
  const arrow = document.createElement("div");
  arrow.className = "arrow";
  arrow.textContent = `↓ fused into the gate of ${gate}`;
  box.append(...rows, arrow);
  return box;
}

// A map as one canvas pixel per cell (the browser stretches it smoothly); `colour` turns a
// value in [0, 1] into [r, g, b, a].
function paintMap(canvas, rows, colour) {
  const h = rows.length, w = rows[0].length;
  canvas.width = w;
  canvas.height = h;
  const ctx = canvas.getContext("2d");
  const img = ctx.createImageData(w, h);
  rows.forEach((row, y) => row.forEach((v, x) => {
    img.data.set(colour(Math.min(1, Math.max(0, v))), 4 * (y * w + x));
  }));
  ctx.putImageData(img, 0, 0);
}

// Grad-CAM over the image: colour and alpha grow with the value, so where the model did not
// look stays see-through.
function showCam(rows) {
  paintMap($("cam"), rows, (c) => [255, Math.round(220 * (1 - c)), 0, Math.round(255 * c)]);
  $("cam-controls").hidden = false;
  applyCamControls();
}

function applyCamControls() {
  $("cam").style.display = $("cam-toggle").checked ? "block" : "none";
  $("cam").style.opacity = String($("cam-opacity").value / 100);
}

// CBAM's spatial gate as a heat map from blue (0) to yellow (1).
function spatialMap(rows) {
  const canvas = document.createElement("canvas");
  canvas.className = "spatial";
  paintMap(canvas, rows, (c) => {
    const v = Math.round(255 * c);
    return [v, v, 255 - v, 255];
  });
  return canvas;
}

$("cam-toggle").addEventListener("change", applyCamControls);
$("cam-opacity").addEventListener("input", applyCamControls);
$("file").addEventListener("change", (e) => {
  if (e.target.files.length) predict(e.target.files[0]);
});
const drop = $("drop");
drop.addEventListener("click", (e) => { if (e.target === drop) $("file").click(); });
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  if (e.dataTransfer.files.length) predict(e.dataTransfer.files[0]);
});
describeModel();
