// every write carries the header a cross-site page cannot send without a CORS preflight (edge/http/guard.py)
const WRITE_HEADERS = { "Content-Type": "application/json", "X-Cezsar-Request": "1" };
// cezsar web console: plain JS, no build step. Data: Server-Sent Events from api/stream (the same
// payloads the runtime publishes over ZeroMQ), MJPEG from api/video/<stream>, edits through
// api/actions (the runtime's ActionStore), "try" through api/try.
"use strict";

const SPAN = 120; // seconds of scores drawn in a sparkline
const $ = (sel) => document.querySelector(sel);
const el = (tag, attrs = {}, ...kids) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v; else if (k === "text") e.textContent = v; else e.setAttribute(k, v);
  }
  for (const k of kids) e.append(k);
  return e;
};

const state = {
  streams: [],
  actions: null, // the action set (api/actions form)
  history: {}, // stream -> [{time, scores, smoothed, background}]
  markers: {}, // stream -> [{time, action, phase}]
  latest: {}, // stream -> last scores payload
  open: {}, // "stream\u0000action" -> event payload
  events: [], // newest last
  zones: {}, // stream -> [{name, points: [[x, y], ...]}] (0..1 of the image)
  health: {}, // stream -> {state, reason, since} (edge/health.py)
  tryText: "",
  tryTimer: null,
  dirty: new Set(), // editor cards the user is changing
};

// ---------------------------------------------------------------- data in
function connect() {
  const es = new EventSource("api/stream");
  es.addEventListener("open", () => setConn(true));
  es.addEventListener("error", () => setConn(false));
  es.addEventListener("hello", (m) => hello(JSON.parse(m.data)));
  es.addEventListener("msg", (m) => onMessage(JSON.parse(m.data), true));
  es.addEventListener("actions", (m) => setActions(JSON.parse(m.data)));
}

function setConn(ok) {
  const c = $("#conn");
  c.textContent = ok ? "console: connected" : "console: disconnected";
  c.className = "pill " + (ok ? "ok" : "bad");
}

// per-stream health from the status (edge/health.py): live, connecting, stalled, down, ended, stopped
function setHealth(streams) {
  let live = 0, total = 0, worst = null;
  for (const [name, info] of Object.entries(streams)) {
    const h = info.health || { state: info.state };
    state.health[name] = h;
    total += 1;
    if (h.state === "live") live += 1; else if (!worst || h.state === "down") worst = { name, ...h };
    const pill = document.querySelector(`.view[data-stream="${CSS.escape(name)}"] .health`);
    if (pill) {
      pill.textContent = h.state + (h.state !== "live" && h.reason ? ": " + h.reason : "");
      pill.className = "pill health " + h.state;
      pill.dataset.state = h.state;
    }
  }
  const p = $("#streams-health");
  p.textContent = `${live}/${total} streams live` + (worst ? ` · ${worst.name} ${worst.state}` : "");
  p.className = "pill " + (live === total ? "ok" : worst && worst.state === "down" ? "bad" : "warn");
  drawOverlays();
}

function hello(h) {
  state.streams = h.streams;
  state.history = {};
  state.markers = {};
  state.events = [];
  state.open = {};
  for (const s of h.streams) { state.history[s] = h.history[s] || []; state.markers[s] = []; }
  state.zones = h.zones || {};
  const names = $("#stream-names");
  names.textContent = "";
  for (const s of h.streams) names.append(el("option", { value: s }));
  buildViews();
  for (const ev of h.events) onMessage(ev, false);
  if (h.status) onMessage(h.status, false);
  setActions(h.actions);
  renderEvents();
  drawAll();
}

function onMessage(p, live) {
  if (p.type === "scores") {
    const h = (state.history[p.stream] = state.history[p.stream] || []);
    h.push({ time: p.time, scores: p.scores, smoothed: p.smoothed, background: p.background });
    const horizon = p.time - 600;
    while (h.length && h[0].time < horizon) h.shift();
    state.latest[p.stream] = p;
    if (p.zones) state.zones[p.stream] = p.zones;
  } else if (p.type === "event") {
    const key = p.stream + "\u0000" + p.action;
    if (p.phase === "end") delete state.open[key]; else state.open[key] = p;
    if (p.phase !== "update") {
      (state.markers[p.stream] = state.markers[p.stream] || []).push({ time: p.time, action: p.action, phase: p.phase });
      const i = state.events.findIndex((e) => e.id === p.id);
      if (i >= 0) state.events[i] = p; else state.events.push(p);
      if (state.events.length > 200) state.events.shift();
      if (live) renderEvents();
    }
    drawOverlays();
  } else if (p.type === "status") {
    const s = p.streams || {};
    setHealth(s);
    const lat = p.latency_ms || {};
    $("#summary").textContent = `${p.backend} · ${Object.keys(s).length} stream(s) · events ${p.events ? p.events.total : 0}` +
      (lat.p50 != null ? ` · latency p50 ${lat.p50} ms` : "");
  }
}

// ---------------------------------------------------------------- live view + overlay
// An MJPEG response never ends: started while the page loads, it would keep the page "loading" for good
// (the tab's spinner, and automation that waits for the navigation). The live views start after load.
function afterLoad(fn) {
  if (document.readyState === "complete") setTimeout(fn, 0);
  else window.addEventListener("load", () => setTimeout(fn, 0), { once: true });
}

function buildViews() {
  const views = $("#views");
  views.textContent = "";
  for (const s of state.streams) {
    const img = el("img", { alt: `live view of ${s}`, "data-stream": s });
    const overlay = el("canvas", { class: "overlay", "data-stream": s });
    img.addEventListener("load", drawOverlays);
    afterLoad(() => { img.src = "api/video/" + encodeURIComponent(s); });
    const label = el("div", { class: "label" }, el("span", { text: s }), " ", el("span", { class: "pill health", text: "connecting" }));
    views.append(el("div", { class: "view", "data-stream": s }, label, el("div", { class: "frame" }, img, overlay)));
  }
}

function drawOverlays() {
  for (const c of document.querySelectorAll("canvas.overlay")) {
    const s = c.dataset.stream;
    const w = (c.width = c.clientWidth), h = (c.height = c.clientHeight);
    const g = c.getContext("2d");
    g.clearRect(0, 0, w, h);
    // where the picture is inside the box (object-fit: contain letterboxes it)
    const img = c.parentElement.querySelector("img");
    const nw = img.naturalWidth || w, nh = img.naturalHeight || h, k = Math.min(w / nw, h / nh);
    const ox = (w - nw * k) / 2, oy = (h - nh * k) / 2, iw = nw * k, ih = nh * k;
    for (const z of state.zones[s] || []) {
      const pts = z.points || [];
      if (pts.length < 2) continue;
      g.strokeStyle = "rgba(255,210,0,.9)"; g.lineWidth = 2; g.beginPath();
      pts.forEach(([x, y], i) => (i ? g.lineTo(ox + x * iw, oy + y * ih) : g.moveTo(ox + x * iw, oy + y * ih)));
      g.closePath(); g.stroke();
      if (z.name) { g.fillStyle = "rgba(255,210,0,.9)"; g.font = "12px sans-serif"; g.fillText(z.name, ox + pts[0][0] * iw + 3, oy + pts[0][1] * ih + 13); }
    }
    const hs = state.health[s];
    if (hs && hs.state !== "live") { // a camera that is not delivering says so where its picture would be
      g.fillStyle = "rgba(0,0,0,.55)"; g.fillRect(0, 0, w, 26);
      g.fillStyle = hs.state === "down" ? "#ff8787" : "#ffd43b"; g.font = "bold 14px sans-serif";
      g.fillText(`${hs.state}${hs.reason ? ": " + hs.reason : ""}`.slice(0, 90), 8, 18);
    }
    let y = oy + 6;
    for (const ev of Object.values(state.open)) {
      if (ev.stream !== s) continue;
      const text = `${ev.action}  ${ev.score.toFixed(3)}`;
      g.font = "bold 14px sans-serif";
      const tw = g.measureText(text).width;
      g.fillStyle = "rgba(201,42,42,.85)"; g.fillRect(ox + 6, y, tw + 10, 20);
      g.fillStyle = "#fff"; g.fillText(text, ox + 11, y + 15);
      y += 24;
    }
  }
}

// ---------------------------------------------------------------- sparklines
function params(a) { return a; } // effective values: threshold, hysteresis, ...

function buildScores() {
  const box = $("#scores");
  box.textContent = "";
  if (!state.actions) return;
  for (const s of state.streams) {
    box.append(el("div", { class: "stream-title", text: s }));
    for (const a of state.actions.actions.filter((x, i) => applies(state.actions.explicit[i] || {}, s))) {
      const canvas = el("canvas", { "data-stream": s, "data-action": a.name, "data-points": "0" });
      box.append(el("div", { class: "row", "data-stream": s, "data-action": a.name },
        el("span", { class: "name", title: a.descriptions.join("\n"), text: a.name }), canvas,
        el("span", { class: "value", text: "-" })));
    }
  }
  drawAll();
}

function drawAll() {
  const now = Date.now() / 1000;
  // the x axis: the last SPAN seconds, or less while the history is shorter (points fill the width)
  let first = now;
  for (const h of Object.values(state.history)) if (h.length) first = Math.min(first, h[0].time);
  const span = Math.max(20, Math.min(SPAN, now - first + 2));
  for (const row of document.querySelectorAll("#scores .row")) {
    const s = row.dataset.stream, name = row.dataset.action;
    const a = state.actions && state.actions.actions.find((x) => x.name === name);
    if (!a) continue;
    const canvas = row.querySelector("canvas");
    const pts = (state.history[s] || []).filter((p) => p.time >= now - span && p.smoothed && name in p.smoothed);
    canvas.dataset.points = String(pts.length);
    const last = pts.length ? pts[pts.length - 1] : null;
    row.querySelector(".value").textContent = last ? last.smoothed[name].toFixed(3) : "-";
    row.classList.toggle("active", (s + "\u0000" + name) in state.open);
    spark(canvas, pts, a, name, now, span, state.markers[s] || []);
  }
}

function spark(canvas, pts, a, name, now, span, markers) {
  const w = (canvas.width = canvas.clientWidth || 300), h = (canvas.height = canvas.clientHeight || 40);
  const g = canvas.getContext("2d");
  g.clearRect(0, 0, w, h);
  const p = params(a), lo0 = p.threshold - p.hysteresis;
  let lo = Math.min(-0.05, lo0 - 0.02), hi = Math.max(0.05, p.threshold + 0.02);
  for (const q of pts) { lo = Math.min(lo, q.scores[name] ?? lo, q.smoothed[name]); hi = Math.max(hi, q.scores[name] ?? hi, q.smoothed[name]); }
  const X = (t) => ((t - (now - span)) / span) * w;
  const Y = (v) => h - 2 - ((v - lo) / (hi - lo || 1)) * (h - 4);
  // hysteresis band: between the end level and the threshold
  g.fillStyle = "rgba(230,73,128,.15)"; g.fillRect(0, Y(p.threshold), w, Y(lo0) - Y(p.threshold));
  // background level: score 0 = as close to the action as to the best background description
  g.strokeStyle = "#aaa"; g.setLineDash([2, 3]); g.beginPath(); g.moveTo(0, Y(0)); g.lineTo(w, Y(0)); g.stroke();
  g.strokeStyle = "#e64980"; g.setLineDash([5, 3]); g.beginPath(); g.moveTo(0, Y(p.threshold)); g.lineTo(w, Y(p.threshold)); g.stroke();
  g.setLineDash([]);
  for (const m of markers) {
    if (m.action !== name || m.time < now - span) continue;
    g.strokeStyle = m.phase === "start" ? "#2f9e44" : "#343a40"; g.lineWidth = 2;
    g.beginPath(); g.moveTo(X(m.time), 0); g.lineTo(X(m.time), h); g.stroke();
  }
  g.lineWidth = 1;
  const line = (key, color) => {
    g.strokeStyle = color; g.beginPath();
    pts.forEach((q, i) => { const v = key === "s" ? q.smoothed[name] : q.scores[name]; if (v == null) return; i ? g.lineTo(X(q.time), Y(v)) : g.moveTo(X(q.time), Y(v)); });
    g.stroke();
  };
  line("r", "rgba(28,126,214,.35)");
  g.lineWidth = 2; line("s", "#1c7ed6"); g.lineWidth = 1;
}

// an action is scored on a stream when it names no streams or names this one, and (with a zone) when the
// stream has that zone: the same rule as the runtime's (edge/actions.py applies, edge/runtime/zoneplan.py)
function applies(explicit, stream) {
  if (explicit.streams && explicit.streams.length && !explicit.streams.includes(stream)) return false;
  if (explicit.zone) return (state.zones[stream] || []).some((z) => z.name === explicit.zone);
  return true;
}

function zoneNames() {
  const out = new Set();
  for (const zs of Object.values(state.zones)) for (const z of zs) out.add(z.name);
  return [...out].sort();
}

// ---------------------------------------------------------------- action editor
const NUMS = ["threshold", "hysteresis", "min_duration", "cooldown"];

function setActions(st) {
  const changed = JSON.stringify(st) !== JSON.stringify(state.actions);
  state.actions = st;
  $("#actions-file").textContent = st.file ? `(${st.file}, version ${st.version})` : "";
  $("#file-error").textContent = st.file_error ? "actions file: " + st.file_error : "";
  if (!changed) return;
  buildScores();
  renderEditor();
}

function renderEditor() {
  const box = $("#actions");
  const keep = {};
  for (const card of box.querySelectorAll(".action")) if (state.dirty.has(card.dataset.key)) keep[card.dataset.key] = card;
  box.textContent = "";
  const st = state.actions;
  st.actions.forEach((a, i) => {
    const key = "a:" + a.name;
    box.append(keep[key] || card(a, st.explicit[i] || {}, key));
    delete keep[key];
  });
  for (const c of Object.values(keep)) box.append(c); // new, unsaved cards stay
}

function card(a, explicit, key, draft) {
  const isNew = !a;
  a = a || { name: (draft && draft.name) || "", descriptions: (draft && draft.descriptions) || [] };
  const d = (state.actions && state.actions.defaults) || {};
  const c = el("div", { class: "action", "data-key": key, "data-name": a.name });
  const name = el("input", { type: "text", name: "name", value: a.name, placeholder: "name" });
  const descs = el("textarea", { name: "descriptions", placeholder: "one description per line" });
  descs.value = a.descriptions.join("\n");
  const grid = el("div", { class: "grid" });
  for (const k of NUMS) {
    const inp = el("input", { type: "number", step: "any", name: k, placeholder: `default ${d[k] ?? ""}` });
    if (explicit[k] != null) inp.value = explicit[k];
    grid.append(el("label", { text: k.replace("_", " ") }, inp));
  }
  const streams = el("input", { type: "text", name: "streams", placeholder: "all streams", list: "stream-names" });
  streams.value = (explicit.streams || []).join(", ");
  grid.append(el("label", { text: "streams (comma-separated)" }, streams));
  const zone = el("select", { name: "zone" }, el("option", { value: "", text: "whole picture" }));
  for (const z of zoneNames()) zone.append(el("option", { value: z, text: "zone " + z }));
  if (explicit.zone && !zoneNames().includes(explicit.zone)) zone.append(el("option", { value: explicit.zone, text: "zone " + explicit.zone + " (unknown)" }));
  zone.value = explicit.zone || "";
  grid.append(el("label", { text: "zone" }, zone));
  const err = el("div", { class: "error card-error" });
  const save = el("button", { type: "button", class: "save", text: isNew ? "Add" : "Save" });
  const remove = el("button", { type: "button", class: "remove", text: isNew ? "Cancel" : "Remove" });
  c.append(el("label", { text: "name" }, name), el("label", { text: "descriptions" }, descs), grid, err, el("div", { class: "buttons" }, remove, save));
  c.addEventListener("input", () => state.dirty.add(key));
  save.addEventListener("click", async () => {
    const fields = { name: name.value.trim(), descriptions: descs.value.split("\n").map((s) => s.trim()).filter(Boolean) };
    for (const inp of grid.querySelectorAll("input, select")) {
      const v = inp.value.trim();
      if (inp.name === "streams") { if (v) fields.streams = v.split(",").map((s) => s.trim()).filter(Boolean); else if (!isNew) fields.streams = null; continue; }
      if (inp.name === "zone") { if (v) fields.zone = v; else if (!isNew) fields.zone = null; continue; }
      if (v === "") { if (!isNew) fields[inp.name] = null; } else fields[inp.name] = Number(v);
    }
    const req = isNew ? { op: "add", action: fields } : { op: "update", name: a.name, fields };
    if (await send(req, err, key) && isNew) c.remove();
  });
  remove.addEventListener("click", async () => {
    if (isNew) { state.dirty.delete(key); c.remove(); return; }
    await send({ op: "remove", name: a.name }, err, key);
  });
  return c;
}

async function send(req, errBox, key) {
  errBox.textContent = "";
  $("#edit-error").textContent = "";
  let reply;
  try {
    const r = await fetch("api/actions", { method: "POST", headers: WRITE_HEADERS, body: JSON.stringify(req) });
    reply = await r.json();
  } catch (e) {
    reply = { ok: false, error: "the runtime did not answer (" + e + ")" };
  }
  if (!reply.ok) {
    errBox.textContent = reply.error;
    $("#edit-error").textContent = reply.error;
    return false;
  }
  state.dirty.delete(key); // this card is saved: the next render shows the set as the runtime holds it
  setActions(reply.state);
  return true;
}

// ---------------------------------------------------------------- try a description
async function tryNow() {
  const text = state.tryText;
  if (!text) return;
  let reply;
  try {
    const r = await fetch("api/try", { method: "POST", headers: WRITE_HEADERS, body: JSON.stringify({ text }) });
    reply = await r.json();
  } catch (e) {
    reply = { ok: false, error: String(e) };
  }
  if (text !== state.tryText) return;
  $("#try-error").textContent = reply.ok ? "" : reply.error;
  const t = $("#try-result");
  t.textContent = "";
  if (!reply.ok) return;
  if (!Object.keys(reply.streams).length) { $("#try-error").textContent = "no window scored yet"; return; }
  const add = el("button", { type: "button", class: "add-as-action", text: "Add as action" });
  add.addEventListener("click", () => addCard({ name: reply.text.replace(/[^A-Za-z0-9 _.:-]+/g, " ").trim().slice(0, 64), descriptions: [reply.text] }));
  t.append(el("tr", {}, el("td", { colspan: "3" }, add)));
  t.append(el("tr", {}, el("th", { text: "stream" }), el("th", { text: "description / action" }), el("th", { text: "score" })));
  for (const [s, r] of Object.entries(reply.streams)) {
    t.append(el("tr", { class: "tried", "data-stream": s }, el("td", { text: s }), el("td", { text: "“" + reply.text + "”" }),
      el("td", { class: "num try-score", text: r.score.toFixed(3) })));
    const latest = state.latest[s];
    if (!latest) continue;
    for (const [name, v] of Object.entries(latest.scores)) {
      t.append(el("tr", {}, el("td", { text: "" }), el("td", { text: name }), el("td", { class: "num", text: v.toFixed(3) })));
    }
  }
}

$("#try-form").addEventListener("submit", (e) => {
  e.preventDefault();
  state.tryText = $("#try-text").value.trim();
  clearInterval(state.tryTimer);
  if (state.tryText) { tryNow(); state.tryTimer = setInterval(tryNow, 1000); } // live: the newest windows
});

function addCard(draft) {
  const key = "new:" + Date.now();
  state.dirty.add(key);
  const c = card(null, {}, key, draft);
  $("#actions").append(c);
  c.scrollIntoView({ block: "nearest" });
  return c;
}

$("#add-action").addEventListener("click", () => addCard(null));

// ---------------------------------------------------------------- events list
function mediaLinks(ev) {
  const out = [];
  const add = (label, v) => {
    if (typeof v !== "string" || !v) return;
    const href = /^(https?:)?\//.test(v) ? v : "/media/" + v.replace(/^\.?\/*/, "");
    out.push(el("a", { href, target: "_blank", rel: "noopener", text: label }));
  };
  add("snapshot", ev.snapshot);
  add("clip", ev.clip);
  const m = ev.media;
  if (m && typeof m === "object") for (const [k, v] of Object.entries(m)) add(k, typeof v === "object" && v ? v.url || v.path : v);
  return out;
}

function renderEvents() {
  const ul = $("#events");
  ul.textContent = "";
  for (const ev of [...state.events].reverse()) {
    const open = ev.phase !== "end";
    const when = new Date(ev.time * 1000).toLocaleTimeString();
    const li = el("li", { class: open ? "open" : "", "data-id": ev.id },
      `${when} · ${ev.stream} · ${ev.action} · ${open ? "open" : (ev.duration ?? 0).toFixed(1) + " s"} · peak ${ev.peak.toFixed(3)}` + (ev.reason ? ` (${ev.reason})` : ""));
    for (const a of mediaLinks(ev)) li.append(" · ", a);
    ul.append(li);
  }
}

setInterval(drawAll, 500);
window.addEventListener("resize", () => { drawAll(); drawOverlays(); });
connect();
