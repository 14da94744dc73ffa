// cezsar console: the history (edge/http/history.py): search the past by a sentence, review stored
// events (filters, pages, thumbnails, clip, the scores around each), and a backtest in every card of
// the action editor before Save. Plain JS, loaded after console.js; it adds its own panels.
"use strict";
(() => {
  const mk = (tag, attrs = {}, ...kids) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "class") e.className = v; else if (k === "text") e.textContent = v; else e.setAttribute(k, v);
    }
    for (const k of kids) e.append(k);
    return e;
  };
  const q = (s, root = document) => root.querySelector(s);
  const when = (t) => (t == null ? "-" : new Date(t * 1000).toLocaleString());
  const clock = (t) => (t == null ? "-" : new Date(t * 1000).toLocaleTimeString());
  const thumb = (id, alt) => (id == null ? mk("div", { class: "h-nothumb", text: "no picture" })
    : mk("img", { class: "h-thumb", src: "/api/history/thumbnails/" + id, alt }));
  const media = (v) => (typeof v !== "string" || !v ? null : /^(https?:)?\//.test(v) ? v : "/media/" + v.replace(/^\.?\/*/, ""));
  const R = { page: 1, pages: 1, filled: false };

  async function api(url, opts) {
    let r, j;
    try { r = await fetch(url, opts); } catch (e) { return { ok: false, error: "the runtime did not answer (" + e + ")" }; }
    try { j = await r.json(); } catch (e) { j = { ok: false, error: `HTTP ${r.status}` }; }
    if (!r.ok) j.ok = false;
    return j;
  }

  function spark(canvas, pts, threshold, markers) {
    const w = (canvas.width = canvas.clientWidth || 300), h = (canvas.height = canvas.clientHeight || 50);
    const g = canvas.getContext("2d");
    g.clearRect(0, 0, w, h);
    const vals = pts.map((p) => p[1]).filter((v) => v != null);
    if (!vals.length) return;
    let lo = Math.min(...vals, threshold ?? Infinity) - 0.02, hi = Math.max(...vals, threshold ?? -Infinity) + 0.02;
    const t0 = pts[0][0], t1 = pts[pts.length - 1][0] || t0 + 1;
    const X = (t) => ((t - t0) / (t1 - t0 || 1)) * w, Y = (v) => h - 2 - ((v - lo) / (hi - lo || 1)) * (h - 4);
    if (threshold != null) {
      g.strokeStyle = "#e64980"; g.setLineDash([5, 3]); g.beginPath(); g.moveTo(0, Y(threshold)); g.lineTo(w, Y(threshold)); g.stroke(); g.setLineDash([]);
    }
    for (const [a, b] of markers || []) { g.fillStyle = "rgba(47,158,68,.25)"; g.fillRect(X(a), 0, Math.max(2, X(b) - X(a)), h); }
    g.strokeStyle = "#1c7ed6"; g.lineWidth = 2; g.beginPath();
    let first = true;
    for (const [t, v] of pts) { if (v == null) { first = true; continue; } first ? g.moveTo(X(t), Y(v)) : g.lineTo(X(t), Y(v)); first = false; }
    g.stroke();
  }

  // ------------------------------------------------------------------ search
  async function search(e) {
    e.preventDefault();
    const text = q("#search-text").value.trim(), since = q("#search-since").value;
    const box = q("#search-results");
    q("#search-error").textContent = "";
    if (!text) return;
    box.textContent = "searching…";
    const r = await api(`/api/search?q=${encodeURIComponent(text)}&since=${encodeURIComponent(since)}&limit=12`);
    box.textContent = "";
    if (!r.ok) { q("#search-error").textContent = r.error; return; }
    q("#search-summary").textContent = `${r.moments.length} moment(s) in ${r.windows} windows (${r.seconds} s)`;
    r.moments.forEach((m, i) => {
      const card = mk("div", { class: "h-moment", "data-rank": String(i + 1), "data-stream": m.stream, tabindex: "0" },
        thumb(m.thumbnail, `${m.stream} at ${clock(m.peak)}`),
        mk("div", { text: `${i + 1}. ${m.stream}${m.zone ? "@" + m.zone : ""} · ${clock(m.start)}–${clock(m.end)}` }),
        mk("div", { class: "num", text: `score ${m.score.toFixed(3)}` }));
      card.addEventListener("click", () => openMoment(m));
      box.append(card);
    });
  }

  function openMoment(m) {
    const box = q("#moment");
    box.textContent = "";
    box.append(mk("h3", { text: `${m.stream}${m.zone ? "@" + m.zone : ""}: ${when(m.start)} – ${clock(m.end)}` }),
      thumb(m.thumbnail, "moment"), mk("div", { text: `score ${m.score.toFixed(3)} over ${m.windows} window(s)` }));
    const ev = m.event;
    if (ev) {
      box.append(mk("div", { text: `event: ${ev.action}` }));
      for (const [label, v] of [["clip", ev.clip], ["snapshot", ev.snapshot]]) {
        const href = media(v);
        if (href) box.append(mk("a", { href, target: "_blank", rel: "noopener", class: "h-" + label, text: label }), " ");
      }
    }
    if (m.file) box.append(mk("div", { class: "h-file", text: `${m.file} at ${m.capture[0].toFixed(1)}–${m.capture[1].toFixed(1)} s` }));
    box.hidden = false;
  }

  // ------------------------------------------------------------------ review
  function params() {
    const p = new URLSearchParams({ page: String(R.page), per_page: "20" });
    for (const k of ["stream", "action", "since", "until"]) {
      let v = q("#review-" + k).value;
      if (v && (k === "since" || k === "until") && /T/.test(v)) v = String(new Date(v).getTime() / 1000);
      if (v) p.set(k, v);
    }
    return p;
  }

  function fill(sel, values) {
    const keep = sel.value;
    sel.textContent = "";
    sel.append(mk("option", { value: "", text: "all" }));
    for (const v of values) sel.append(mk("option", { value: v, text: v }));
    sel.value = values.includes(keep) ? keep : "";
  }

  async function review() {
    const r = await api("/api/history/events?" + params());
    q("#review-error").textContent = r.ok ? "" : r.error;
    if (!r.ok) return;
    R.pages = r.pages;
    fill(q("#review-stream"), r.streams);
    fill(q("#review-action"), r.actions);
    q("#review-page").textContent = `page ${r.page} of ${r.pages} · ${r.total} event(s)`;
    q("#review-prev").disabled = r.page <= 1;
    q("#review-next").disabled = r.page >= r.pages;
    const ul = q("#review-list");
    ul.textContent = "";
    for (const ev of r.events) {
      const dur = ev.end != null ? `${(ev.end - ev.start).toFixed(1)} s` : "open";
      const li = mk("li", { class: "h-event", "data-id": ev.id }, thumb(ev.thumbnail, ev.action),
        mk("span", { text: `${when(ev.time_start)} · ${ev.stream}${ev.zone ? "@" + ev.zone : ""} · ${ev.action} · ${dur} · peak ${ev.peak.toFixed(3)}` + (ev.reason ? ` (${ev.reason})` : "") }));
      for (const [label, v] of [["snapshot", ev.snapshot], ["clip", ev.clip]]) {
        const href = media(v);
        if (href) li.append(" · ", mk("a", { href, target: "_blank", rel: "noopener", text: label }));
      }
      li.addEventListener("click", (e) => { if (e.target.tagName !== "A") detail(ev.id); });
      ul.append(li);
    }
  }

  async function detail(id) {
    const box = q("#review-detail");
    const r = await api("/api/history/events/" + encodeURIComponent(id));
    box.textContent = "";
    if (!r.ok) { box.append(mk("div", { class: "error", text: r.error })); return; }
    const ev = r.event;
    box.append(mk("h3", { text: `${ev.action} on ${ev.stream}: ${when(ev.time_start)}` }), thumb(ev.thumbnail, "event"));
    const clip = media(ev.clip);
    if (clip) box.append(mk("video", { class: "h-clip", src: clip, controls: "", preload: "metadata" }));
    box.append(mk("div", { text: `peak ${ev.peak.toFixed(3)} · ${ev.windows} windows · model ${(ev.model_id ?? "-")} · actions v${ev.actions_version ?? "-"}` }));
    const canvas = mk("canvas", { class: "h-spark", "data-points": String(r.scores.length) });
    box.append(mk("div", { text: "scores around the event" }), canvas);
    box.append(mk("ul", {}, ...r.phases.map((p) => mk("li", { text: `${p.phase} ${clock(p.time)} score ${p.score.toFixed(3)}` }))));
    spark(canvas, r.scores, null, [[ev.time_start, ev.time_end ?? ev.time_start]]);
  }

  // ------------------------------------------------------------------ backtest in the editor
  function fields(card) {
    const out = { name: q("input[name=name]", card).value.trim(),
      descriptions: q("textarea[name=descriptions]", card).value.split("\n").map((s) => s.trim()).filter(Boolean) };
    for (const inp of card.querySelectorAll(".grid input")) {
      const v = inp.value.trim();
      if (!v) continue;
      out[inp.name] = inp.name === "streams" ? v.split(",").map((s) => s.trim()).filter(Boolean) : Number(v);
    }
    return out;
  }

  async function backtest(card, res) {
    const hours = Number(q(".bt-hours", card).value);
    res.textContent = "backtesting…";
    // a write from the browser: JSON with the console's request header (edge/http/guard.py)
    const r = await api("/api/history/backtest", { method: "POST", headers: { "Content-Type": "application/json", "X-Cezsar-Request": "1" },
      body: JSON.stringify({ action: fields(card), replaces: card.dataset.name || null, hours }) });
    res.textContent = "";
    if (!r.ok) { res.append(mk("div", { class: "error bt-error", text: r.error })); return; }
    const name = Object.keys(r.count)[0];
    res.append(mk("div", { class: "bt-summary", text: `over the last ${hours} hours: ${r.count[name]} event${r.count[name] === 1 ? "" : "s"} (${r.windows} windows)` }));
    if (r.note) res.append(mk("div", { class: "bt-note", text: r.note }));
    const s = r.sparkline, e = s.edges;
    const canvas = mk("canvas", { class: "bt-spark" });
    res.append(canvas);
    const pts = s.max[name].map((v, i) => [(e[i] + e[i + 1]) / 2, v]);
    const own = fields(card).threshold, dflt = Number((q("input[name=threshold]", card).placeholder || "").replace(/[^0-9.eE+-]/g, ""));
    const thr = own ?? (Number.isFinite(dflt) ? dflt : null);
    spark(canvas, pts, thr, r.events.map((x) => [x.time_start, x.time_end]));
    res.append(mk("ul", { class: "bt-events" }, ...r.events.slice(0, 50).map((x) =>
      mk("li", { text: `${when(x.time_start)} · ${x.stream} · ${x.duration.toFixed(1)} s · peak ${x.peak.toFixed(3)}` }))));
  }

  function decorate(card) {
    if (card.querySelector(".bt")) return;
    const hours = mk("select", { class: "bt-hours" }, ...[1, 6, 24, 168].map((h) => mk("option", { value: String(h), text: `last ${h} h` })));
    hours.value = "24";
    const run = mk("button", { type: "button", class: "bt-run", text: "Backtest" });
    const res = mk("div", { class: "bt-result" });
    run.addEventListener("click", () => backtest(card, res));
    const buttons = card.querySelector(".buttons");
    card.insertBefore(mk("div", { class: "bt" }, hours, run, res), buttons);
  }

  // ------------------------------------------------------------------ panels
  function build() {
    const main = q("main");
    const since = mk("select", { id: "search-since" }, ...[["1h", "last hour"], ["24h", "last 24 h"], ["7d", "last 7 days"], ["", "all"]]
      .map(([v, t]) => mk("option", { value: v, text: t })));
    since.value = "24h";
    const form = mk("form", { id: "search-form" }, mk("input", { id: "search-text", type: "text", maxlength: "500", placeholder: "a sentence, e.g. a person falls" }), since, mk("button", { type: "submit", text: "Search" }));
    form.addEventListener("submit", search);
    main.append(mk("section", { id: "search-panel" }, mk("h2", { text: "Search the past" }), form,
      mk("div", { id: "search-error", class: "error" }), mk("div", { id: "search-summary" }), mk("div", { id: "search-results" }),
      mk("div", { id: "moment", hidden: "" })));
    const filt = mk("form", { id: "review-filters" },
      mk("label", { text: "stream" }, mk("select", { id: "review-stream" })), mk("label", { text: "action" }, mk("select", { id: "review-action" })),
      mk("label", { text: "since" }, mk("input", { id: "review-since", type: "datetime-local" })),
      mk("label", { text: "until" }, mk("input", { id: "review-until", type: "datetime-local" })), mk("button", { type: "submit", text: "Apply" }));
    filt.addEventListener("submit", (e) => { e.preventDefault(); R.page = 1; review(); });
    const prev = mk("button", { id: "review-prev", type: "button", text: "‹ newer" }), next = mk("button", { id: "review-next", type: "button", text: "older ›" });
    prev.addEventListener("click", () => { R.page = Math.max(1, R.page - 1); review(); });
    next.addEventListener("click", () => { R.page = Math.min(R.pages, R.page + 1); review(); });
    main.append(mk("section", { id: "review-panel" }, mk("h2", { text: "Review (history)" }), filt, mk("div", { id: "review-error", class: "error" }),
      mk("ul", { id: "review-list" }), mk("div", { class: "pager" }, prev, mk("span", { id: "review-page" }), next), mk("div", { id: "review-detail" })));
    const actions = q("#actions");
    if (actions) {
      new MutationObserver(() => actions.querySelectorAll(".action").forEach(decorate)).observe(actions, { childList: true });
      actions.querySelectorAll(".action").forEach(decorate);
    }
    review();
    setInterval(() => { if (R.page === 1 && !q("#review-detail").childElementCount) review(); }, 5000);
  }

  build();
})();
