/* Frisky dashboard core: the live stream, hash routes, number formats, DOM and chart helpers.
   Pages (pages.js) register with Frisky.page(name, {render, poll}); render(tick) runs on
   every stream tick while the page is shown, poll() fetches what the stream does not carry,
   at most once per second. Every number shown that mirrors an API field carries
   data-field="<endpoint>.<path>" (plus data-item for list rows), data-value (the raw number)
   and data-fmt (the format), so a test can check the page against the API. */
"use strict";
const Frisky = (() => {
  const pages = {};
  const state = { tick: null, page: null, history: [], connected: false, lastTick: 0 };
  const HISTORY = 600;  // ticks kept for the charts built in the page (about 10 minutes)

  // ---- number formats -------------------------------------------------------------
  const sig = (x) => {
    const a = Math.abs(x);
    return a >= 100 ? x.toFixed(0) : a >= 10 ? x.toFixed(1) : x.toFixed(2);
  };
  const fmt = {
    count(n) { return n == null ? "–" : Math.round(n).toLocaleString("en-US"); },
    bytes(n) {
      if (n == null) return "–";
      const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
      let i = 0, v = Math.abs(n);
      while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
      return (n < 0 ? "-" : "") + (i === 0 ? Math.round(v) : sig(v)) + " " + units[i];
    },
    rate(n) { return n == null ? "–" : fmt.bytes(n) + "/s"; },
    seconds(s) {
      if (s == null) return "–";
      const a = Math.abs(s);
      if (a === 0) return "0 s";
      if (a < 1e-3) return sig(s * 1e6) + " µs";
      if (a < 1) return sig(s * 1e3) + " ms";
      if (a < 60) return sig(s) + " s";
      if (a < 3600) return Math.floor(a / 60) + " min " + String(Math.floor(a % 60)).padStart(2, "0") + " s";
      return Math.floor(a / 3600) + " h " + String(Math.floor((a % 3600) / 60)).padStart(2, "0") + " min";
    },
    // floored, so nothing unfinished reads "100 %"
    percent(x) { return x == null ? "–" : x < 0.1 ? Math.floor(x * 1000) / 10 + " %" : Math.floor(x * 100) + " %"; },
    clock(t) { return t == null ? "–" : new Date(t * 1000).toLocaleTimeString("en-GB"); },
  };

  // ---- DOM ------------------------------------------------------------------------
  function h(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v == null || v === false) continue;
      if (k === "class") e.className = v;
      else if (k === "style" && typeof v === "object") Object.assign(e.style, v);
      else e.setAttribute(k, v);
    }
    for (const k of kids.flat()) if (k != null) e.append(k instanceof Node ? k : String(k));
    return e;
  }
  /* A number that mirrors API field `field` ("workers.memory.spilled"), formatted by `kind`. */
  function num(field, value, kind = "count", item = null, tag = "span") {
    return h(tag, { "data-field": field, "data-item": item, "data-value": value == null ? "" : value,
                    "data-fmt": kind, class: "num" }, fmt[kind](value));
  }
  const $ = (id) => document.getElementById(id);
  function fill(id, ...kids) { $(id).replaceChildren(...kids.flat()); }

  // ---- colours --------------------------------------------------------------------
  const PALETTE = ["#2563eb", "#f59e0b", "#10b981", "#e11d48", "#8b5cf6", "#0891b2",
                   "#ea580c", "#65a30d", "#db2777", "#64748b"];
  const COMPONENTS = { compute: "#2563eb", network: "#f59e0b", disk: "#9333ea",
                       scheduler: "#10b981", other: "#9ca3af" };
  const colourOf = new Map();
  /* A stable colour per name (prefix, worker, span) for the life of the page. */
  function colour(name) {
    if (!colourOf.has(name)) colourOf.set(name, PALETTE[colourOf.size % PALETTE.length]);
    return colourOf.get(name);
  }
  function legend(id, items) {
    fill(id, items.map(([label, c, cls]) => h("span", {}, h("i", { class: cls, style: { background: c } }), label)));
  }
  /* A worker named by its name or address, as a person reads it: "worker 3" for a bare
     number, "10.0.0.5:40123" for tcp://10.0.0.5:40123, the last part of an ipc path. */
  function shortName(n) {
    n = String(n);
    const w = state.tick && state.tick.workers.workers.find((x) => x.address === n);
    if (w) n = String(w.name);
    if (/^\d+$/.test(n)) return "worker " + n;
    n = n.replace(/^[a-z]+:\/\//, "");
    return n.includes("/") ? n.slice(n.lastIndexOf("/") + 1) : n;
  }

  // ---- charts (uPlot) -------------------------------------------------------------
  const charts = {};
  /* Create or update the uPlot chart in element `id`; rebuilt when its series change. */
  function chart(id, series, data, opts = {}) {
    const el = $(id);
    const key = series.map((s) => s.label).join("\u0000");
    let c = charts[id];
    if (c && c._key !== key) { c.destroy(); c = null; }
    if (!c) {
      const width = Math.max(300, el.clientWidth || 600);
      c = new uPlot({
        width, height: opts.height || 240,
        cursor: { drag: { x: false, y: false } },
        scales: { x: { time: true }, y: { range: (u, lo, hi) => [0, hi > 0 ? hi * 1.08 : 1] } },
        axes: [{ stroke: "#6b7280", grid: { stroke: "#f1f2f4" } },
               { stroke: "#6b7280", grid: { stroke: "#f1f2f4" }, size: opts.ysize || 90,
                 label: opts.ylabel, labelSize: opts.ylabel ? 20 : 0, incrs: opts.incrs,
                 values: (u, vals) => vals.map(opts.yfmt || ((v) => v)) }],
        series: [{}, ...series.map((s) => Object.assign({ points: { show: false }, width: 1.5 }, s))],
        bands: opts.bands || [],
        legend: { live: true },
      }, data, el);
      c._key = key;
      charts[id] = c;
    } else {
      c.setData(data);
    }
    return c;
  }
  function resizeCharts() {
    for (const [id, c] of Object.entries(charts)) {
      const w = $(id).clientWidth;
      if (w > 0 && Math.abs(w - c.width) > 4) c.setSize({ width: w, height: c.height });
    }
  }
  window.addEventListener("resize", resizeCharts);

  /* Axis steps for byte scales: 1, 2, 4, ... 512 times each power of 1024. */
  const BYTE_INCRS = [];
  for (let k = 0; k < 6; k++) for (let m = 1; m < 1024; m *= 2) BYTE_INCRS.push(m * 1024 ** k);

  /* Stack series (arrays aligned on x) so each draws on top of the previous; returns the
     cumulative data and the uPlot bands that fill between neighbours. */
  function stacked(rows) {
    const acc = rows.length ? rows[0].map(() => 0) : [];
    const out = rows.map((r) => r.map((v, i) => (acc[i] += v || 0)));
    const bands = rows.slice(1).map((_, i) => ({ series: [i + 2, i + 1] }));
    return { data: out, bands };
  }

  // ---- routes, stream, polling ----------------------------------------------------
  function page(name, impl) { pages[name] = impl; }
  function route() {
    const name = (location.hash || "#status").slice(1);
    state.page = pages[name] ? name : "status";
    for (const s of document.querySelectorAll(".page")) s.classList.toggle("active", s.id === "page-" + state.page);
    for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.getAttribute("href") === "#" + state.page);
    document.body.dataset.page = state.page;
    if (state.tick) renderPage();
    requestAnimationFrame(resizeCharts);
    pollNow();
  }
  function renderPage() {
    const p = pages[state.page];
    if (p && p.render && state.tick) p.render(state.tick);
    document.body.dataset.rendered = String(state.tick.overview.now);
  }

  let polling = false, lastPoll = 0;
  /* Ask the shown page to fetch what the stream does not carry; never more than 1/s. */
  async function pollNow() {
    const p = pages[state.page];
    if (!p || !p.poll || polling || Date.now() - lastPoll < 950) return;
    polling = true; lastPoll = Date.now();
    try { await p.poll(); } catch (e) { console.warn("dashboard: fetch failed:", e.message); }
    finally { polling = false; }
  }
  setInterval(pollNow, 1000);
  /* Fetch now (a control changed), still never two fetches at once. */
  function refresh() { lastPoll = 0; pollNow(); }

  async function api(path) {
    const r = await fetch("/api/v1/" + path, { cache: "no-store" });
    if (!r.ok) throw new Error(path + ": HTTP " + r.status);
    return r.json();
  }

  function onTick(ev) {
    const tick = JSON.parse(ev.data);
    state.tick = tick;
    state.lastTick = Date.now();
    state.history.push({
      t: tick.overview.now,
      workers: Object.fromEntries(tick.workers.workers.map((w) => [w.name, w.memory.used])),
      net: tick.overview.network, disk: tick.overview.disk,
    });
    if (state.history.length > HISTORY) state.history.shift();
    setLive(true);
    renderPage();
  }
  function setLive(ok) {
    state.connected = ok;
    const e = $("live");
    e.className = "live " + (ok ? "ok" : "bad");
    if (!ok) e.textContent = "disconnected, retrying…";
  }
  setInterval(() => {  // the header says how fresh the numbers are
    if (!state.tick) return;
    const age = (Date.now() - state.lastTick) / 1000;
    if (state.connected) $("live").textContent = age < 2 ? "live" : "last update " + fmt.seconds(age) + " ago";
    if (age > 5) setLive(false);
  }, 500);

  function start() {
    const es = new EventSource("/api/v1/stream");
    es.addEventListener("tick", onTick);
    es.addEventListener("open", () => setLive(true));
    es.addEventListener("error", () => setLive(false));  // EventSource reconnects by itself
    window.addEventListener("hashchange", route);
    route();
  }

  return { fmt, h, num, $, fill, colour, COMPONENTS, legend, shortName, chart, stacked, page,
           api, refresh, state, start, BYTE_INCRS };
})();
