/* The dashboard's five pages. Each renders from the stream tick {overview, workers, prefixes,
   clients}; Status, Timeline and Memory & Transfers also poll one endpoint each (≤ 1/s). */
"use strict";
(() => {
  const { fmt, h, num, fill, colour, legend, shortName, COMPONENTS } = Frisky;
  const STATES = ["memory", "released", "erred", "processing", "queued", "waiting"];
  const STATE_COLOUR = { memory: "var(--memory)", released: "var(--released)", erred: "var(--erred)",
                         processing: "var(--processing)", queued: "var(--queued)", waiting: "var(--waiting)" };
  const MEM = [["managed", "var(--managed)"], ["unmanaged", "var(--unmanaged)"]];

  function card(label, value, sub, cls) {
    return h("div", { class: "card " + (cls || "") }, h("div", { class: "k" }, label),
             h("div", { class: "v" }, value), sub ? h("div", { class: "s" }, sub) : null);
  }
  const empty = (text) => h("div", { class: "empty" }, text);
  const byName = (a, b) => String(a.name).localeCompare(String(b.name), "en", { numeric: true });

  // ---- Status ---------------------------------------------------------------------
  function statusCards(o) {
    const w = o.workers, t = o.tasks, m = o.memory;
    fill("status-cards",
      card("Workers", num("overview.workers.total", w.total),
           [num("overview.workers.busy", w.busy), " busy · ", num("overview.workers.idle", w.idle), " idle · ",
            h("span", { style: { color: w.paused ? "var(--bad)" : null } }, num("overview.workers.paused", w.paused), " paused")]),
      card("Waiting", num("overview.tasks.waiting", t.waiting)),
      card("Queued", num("overview.tasks.queued", t.queued)),
      card("Processing", num("overview.tasks.processing", t.processing)),
      card("In memory", num("overview.tasks.memory", t.memory)),
      card("Erred", num("overview.tasks.erred", t.erred), null, t.erred ? "bad" : ""),
      card("Done", num("overview.tasks.done", t.done),
           ["of ", num("overview.tasks.total_submitted", t.total_submitted), " submitted"]),
      card("Memory", num("overview.memory.used", m.used, "bytes"),
           ["of ", num("overview.memory.limit", m.limit, "bytes"), " · peak ", num("overview.memory.peak", m.peak, "bytes")]),
      card("Spilled", num("overview.spilled_bytes", o.spilled_bytes, "bytes"),
           [num("overview.unspilled_bytes", o.unspilled_bytes, "bytes"), " read back"]),
      card("Network in", num("overview.network.recv_bytes", o.network.recv_bytes, "bytes"),
           [num("overview.network.sent_bytes", o.network.sent_bytes, "bytes"), " sent"]),
      card("Running for", num("overview.wall_seconds", o.wall_seconds, "seconds"),
           ["since ", fmt.clock(o.started)]),
      card("Spans", num("overview.spans_total", o.spans_total), "recorded cluster-wide"));
  }

  function progress(prefixes) {
    legend("progress-legend", STATES.map((s) => [s, STATE_COLOUR[s]]));
    if (!prefixes.length) return fill("progress", empty("No tasks yet."));
    fill("progress", prefixes.map((p) => {
      const total = STATES.reduce((a, s) => a + (p[s] || 0), 0) || 1;
      const segs = STATES.filter((s) => s !== "waiting" && p[s]).map((s) =>
        h("span", { style: { width: (100 * p[s] / total) + "%", background: STATE_COLOUR[s] },
                    title: `${s}: ${fmt.count(p[s])}` }));
      const detail = STATES.filter((s) => p[s]).map((s) =>
        h("span", {}, s + " ", h("b", {}, num("prefixes." + s, p[s], "count", p.prefix)), "  "));
      return h("div", { class: "prow", "data-prefix": p.prefix },
        h("div", { class: "name", title: p.prefix, style: { color: colour(p.prefix) } }, p.prefix),
        h("div", { class: "bar" }, segs),
        h("div", { class: "count" }, num("prefixes.done", p.done, "count", p.prefix), " done · ",
          num("prefixes.compute_seconds", p.compute_seconds, "seconds", p.prefix)),
        h("div", { class: "detail" }, detail,
          p.errors ? h("span", { style: { color: "var(--bad)" } }, "errors ",
                       h("b", {}, num("prefixes.errors", p.errors, "count", p.prefix))) : null,
          h("span", {}, " · produced ", num("prefixes.bytes", p.bytes, "bytes", p.prefix))));
    }));
  }

  /* One bar per worker, scaled to its memory limit, with the spill and pause lines. */
  function workerMemory(workers) {
    legend("memory-legend", [["managed", "var(--managed)"], ["unmanaged", "var(--unmanaged)"],
      ["spill threshold", "var(--warn)", "line"], ["pause threshold", "var(--bad)", "line"]]);
    if (!workers.length) return fill("worker-memory", empty("No workers connected."));
    const top = Math.max(1, ...workers.map((w) => w.memory.limit || w.memory.used || 0));
    fill("worker-memory", workers.slice().sort(byName).map((w) => {
      const m = w.memory, scale = m.limit || top;
      const pct = (v) => Math.min(100, 100 * (v || 0) / scale) + "%";
      const marks = [["spill_at", "var(--warn)"], ["pause_at", "var(--bad)"]].filter(([k]) => m[k])
        .map(([k, c]) => h("span", { class: "mark", style: { left: pct(m[k]), background: c },
                                      title: `${k.replace("_at", "")} at ${fmt.bytes(m[k])}` }));
      return h("div", { class: "prow", "data-worker": w.name },
        h("div", { class: "name", title: w.name }, shortName(w.name)),
        h("div", { class: "bar", style: { background: "#f3f4f6" } },
          MEM.map(([k, c]) => h("span", { style: { width: pct(m[k]), background: c }, title: `${k}: ${fmt.bytes(m[k])}` })),
          marks),
        h("div", { class: "count" }, num("workers.memory.used", m.used, "bytes", w.name), " / ",
          num("workers.memory.limit", m.limit, "bytes", w.name)),
        m.spilled || w.status === "paused" ? h("div", { class: "detail" },
          m.spilled ? ["spilled ", h("b", { style: { color: "var(--spill)" } },
                                     num("workers.memory.spilled", m.spilled, "bytes", w.name)), "  "] : null,
          w.status === "paused" ? h("span", { class: "badge paused" }, "paused") : null) : null);
    }));
  }

  function outliers(list) {
    Frisky.$("outliers-panel").style.display = list && list.length ? "" : "none";
    if (!list || !list.length) return;
    fill("outliers", h("table", {}, h("tr", {}, h("th", {}, "Worker"), h("th", {}, "Metric"),
      h("th", { class: "n" }, "Value"), h("th", { class: "n" }, "Median"), h("th", {}, "Note")),
      list.map((o) => {
        const f = /seconds/.test(o.metric) ? fmt.seconds : /rss|spill|bytes|memory/.test(o.metric) ? fmt.bytes
          : (v) => (v == null ? "–" : v.toPrecision(3));
        return h("tr", {}, h("td", {}, shortName(o.worker)), h("td", {}, o.metric.replaceAll("_", " ")),
          h("td", { class: "n" }, f(o.value)), h("td", { class: "n" }, f(o.median)), h("td", {}, o.note));
      })));
  }

  /* The task stream: one lane per worker thread, time on x, one bar per task. */
  function drawTaskStream(data, workers) {
    const cv = Frisky.$("task-stream"), dpr = window.devicePixelRatio || 1;
    // the last minute, or less while the run is younger (a short run fills the width)
    const now = data.now, first = Math.min(now, ...data.tasks.map((t) => t.start));
    const span = [10, 20, 30, 60].find((s) => s >= now - first) || 60, t0 = now - span;
    const lanes = [];  // [{worker, end}]
    const laneOf = new Map();
    for (const w of workers.slice().sort(byName)) {
      laneOf.set(w.name, []);
      for (let i = 0; i < Math.max(1, w.nthreads || 1); i++) laneOf.get(w.name).push(lanes.push({ worker: w.name, end: -Infinity }) - 1);
    }
    const tasks = data.tasks.filter((t) => (t.stop == null ? now : t.stop) >= t0).sort((a, b) => a.start - b.start);
    const bars = [];
    for (const t of tasks) {
      if (!laneOf.has(t.worker)) laneOf.set(t.worker, [lanes.push({ worker: t.worker, end: -Infinity }) - 1]);
      const own = laneOf.get(t.worker);
      let li = own.find((i) => lanes[i].end <= t.start);
      if (li === undefined) li = own.reduce((a, i) => (lanes[i].end < lanes[a].end ? i : a), own[0]);
      const stop = t.stop == null ? now : t.stop;
      lanes[li].end = stop;
      bars.push([li, t, stop]);
    }
    const rowH = lanes.length > 24 ? 8 : 18, left = 130, axis = 20;
    const cssW = cv.clientWidth || 800, cssH = Math.max(60, lanes.length * rowH + axis + 4);
    cv.style.height = cssH + "px";
    cv.width = cssW * dpr; cv.height = cssH * dpr;
    const g = cv.getContext("2d");
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, cssW, cssH);
    const x = (t) => left + (cssW - left - 8) * (t - t0) / span;
    g.font = "12px system-ui, sans-serif"; g.textBaseline = "middle";
    lanes.forEach((l, i) => {  // lane backgrounds and worker labels
      g.fillStyle = i % 2 ? "#fafafa" : "#f4f5f7";
      g.fillRect(left, i * rowH, cssW - left - 8, rowH);
      if (laneOf.get(l.worker)[0] === i) {
        g.fillStyle = "#374151";
        g.fillText(shortName(l.worker).slice(-18), 4, i * rowH + rowH / 2);
      }
    });
    const seen = new Set();
    for (const [li, t, stop] of bars) {
      const x0 = Math.max(left, x(t.start)), x1 = Math.max(x0 + 1, x(stop));
      g.fillStyle = t.state === "erred" ? "#dc2626" : colour(t.prefix);
      g.fillRect(x0, li * rowH + 2, x1 - x0, rowH - 4);
      seen.add(t.prefix);
    }
    const y = lanes.length * rowH + 4;  // time axis: seconds before now
    g.fillStyle = "#6b7280"; g.textBaseline = "top";
    for (let s = 0; s <= span; s += span / 6) {
      const xs = x(now - s);
      g.fillRect(xs, y - 3, 1, 4);
      g.textAlign = s === 0 ? "right" : "center";
      g.fillText(s === 0 ? "now" : `-${+s.toFixed(1)} s`, xs, y + 2);
    }
    g.textAlign = "left";
    if (!tasks.length) { g.textBaseline = "middle"; g.fillText("No tasks in the last minute.", left + 10, (lanes.length * rowH) / 2); }
    Frisky.$("stream-window").textContent = `last ${span} s`;
    cv.dataset.bars = String(bars.length);
    legend("stream-legend", [...seen].sort().map((p) => [p, colour(p)]).concat([["erred", "#dc2626"]]));
  }

  Frisky.page("status", {
    render(t) {
      statusCards(t.overview);
      progress(t.prefixes.prefixes);
      workerMemory(t.workers.workers);
      outliers(t.overview.outliers);
    },
    async poll() {
      const d = await Frisky.api("tasks?since=60");
      drawTaskStream(d, Frisky.state.tick ? Frisky.state.tick.workers.workers : []);
    },
  });

  // ---- Workers --------------------------------------------------------------------
  const WORKER_COLS = [
    ["Worker", null], ["Threads", "n"], ["Status", null], ["Processing", "n"], ["In memory", "n"],
    ["Memory used / limit", null], ["Spilled", "n"], ["RSS", "n"], ["Network in / out", "n"], ["Disk read / written", "n"],
    ["CPU", "n"], ["Executing", null], ["Seen", "n"]];

  function executing(list) {
    if (!list || !list.length) return "–";
    const counts = {};
    for (const e of list) counts[e.prefix] = (counts[e.prefix] || 0) + 1;
    const oldest = Math.max(...list.map((e) => e.age || 0));
    return Object.entries(counts).map(([p, n]) => `${p}${n > 1 ? " ×" + n : ""}`).join(", ") +
           ` · ${fmt.seconds(oldest)}`;
  }

  Frisky.page("workers", {
    render(t) {
      const now = t.workers.now, ws = t.workers.workers.slice().sort(byName);
      const head = h("tr", {}, WORKER_COLS.map(([n, c]) => h("th", { class: c }, n)));
      const rows = ws.map((w) => {
        const m = w.memory, it = w.name, pct = (v) => Math.min(100, 100 * (v || 0) / (m.limit || 1)) + "%";
        const f = (path, v, kind) => h("td", { class: "n" }, num("workers." + path, v, kind, it));
        return h("tr", { "data-worker": w.name },
          h("td", { title: w.address }, shortName(w.name),
            h("div", { class: "sub" }, w.host, " · pid ", w.pid)),
          f("nthreads", w.nthreads), h("td", {}, h("span", { class: "badge " + w.status }, w.status)),
          f("processing", w.processing), f("in_memory", w.in_memory),
          h("td", {}, h("span", { class: "minibar" },
              MEM.map(([k, c]) => h("span", { style: { width: pct(m[k]), background: c } })),
              m.spill_at ? h("span", { class: "mark", style: { left: pct(m.spill_at), background: "var(--warn)" } }) : null,
              m.pause_at ? h("span", { class: "mark", style: { left: pct(m.pause_at), background: "var(--bad)" } }) : null),
            num("workers.memory.used", m.used, "bytes", it), " / ", num("workers.memory.limit", m.limit, "bytes", it),
            h("div", { class: "sub" }, "managed ", num("workers.memory.managed", m.managed, "bytes", it),
              " · unmanaged ", num("workers.memory.unmanaged", m.unmanaged, "bytes", it))),
          f("memory.spilled", m.spilled, "bytes"), f("memory.rss", m.rss, "bytes"),
          h("td", { class: "n" }, num("workers.network.recv_bytes", w.network.recv_bytes, "bytes", it), " / ",
            num("workers.network.sent_bytes", w.network.sent_bytes, "bytes", it)),
          h("td", { class: "n" }, num("workers.disk.read_bytes", w.disk.read_bytes, "bytes", it), " / ",
            num("workers.disk.written_bytes", w.disk.written_bytes, "bytes", it)),
          f("cpu_seconds", w.cpu_seconds, "seconds"), h("td", { class: "wrap" }, executing(w.executing)),
          h("td", { class: "n" }, w.last_seen ? fmt.seconds(Math.max(0, now - w.last_seen)) + " ago" : "–"));
      });
      fill("workers-table", head, rows.length ? rows : h("tr", {}, h("td", { colspan: WORKER_COLS.length }, empty("No workers connected."))));
    },
  });

  // ---- Timeline -------------------------------------------------------------------
  function syncOptions(id, names) {
    const sel = Frisky.$(id), have = new Set([...sel.options].map((o) => o.value));
    for (const n of names) if (!have.has(n)) sel.append(h("option", { value: n }, shortName(n)));
  }
  const xs = (d, n) => Array.from({ length: n }, (_, i) => d.t0 + i * (d.step || 1));
  const perSec = (v) => fmt.seconds(v) + "/s";
  const busy = (v) => (v >= 10 ? v.toFixed(0) : v >= 1 ? v.toFixed(1) : v.toFixed(2));

  function totalsRow(id, names, series, colours) {
    fill(id, h("span", { class: "k" }, "In this window:"), names.map((n) => h("span", {},
      h("b", { style: { color: colours[n] } }, n), " ", fmt.seconds(series[n].reduce((a, v) => a + (v || 0), 0)))));
  }

  Frisky.page("timeline", {
    render(t) {
      const tot = t.overview.components.totals;
      fill("tl-overview-totals", h("span", { class: "k" }, "Last minute, whole cluster:"),
        Object.keys(COMPONENTS).map((c) => h("span", {}, h("b", { style: { color: COMPONENTS[c] } }, c), " ",
          num("overview.components.totals." + c, tot[c], "seconds"))));
      syncOptions("tl-prefix", t.prefixes.prefixes.map((p) => p.prefix));
      syncOptions("tl-worker", t.workers.workers.map((w) => w.name));
    },
    async poll() {
      const q = new URLSearchParams({ since: Frisky.$("tl-since").value });
      if (Frisky.$("tl-prefix").value) q.set("prefix", Frisky.$("tl-prefix").value);
      if (Frisky.$("tl-worker").value) q.set("worker", Frisky.$("tl-worker").value);
      const [comp, det] = await Promise.all([Frisky.api("timeline?view=component&" + q), Frisky.api("timeline?view=detailed&" + q)]);
      const cnames = Object.keys(COMPONENTS).filter((n) => comp.series[n]);
      const n = cnames.length ? comp.series[cnames[0]].length : 0;
      const st = Frisky.stacked(cnames.map((c) => comp.series[c]));
      Frisky.chart("tl-component", cnames.map((c, i) => ({
        label: c, stroke: COMPONENTS[c], fill: COMPONENTS[c] + "55", width: 1.5,
        value: (u, v, si, idx) => (idx == null ? "–" : perSec(comp.series[c][idx] || 0)),
        _i: i })), [xs(comp, n), ...st.data], { bands: st.bands, yfmt: busy, ylabel: "busy threads", ysize: 50, height: 260 });
      totalsRow("tl-component-totals", cnames, comp.series, COMPONENTS);

      const sums = Object.entries(det.series).map(([k, v]) => [k, v.reduce((a, x) => a + (x || 0), 0)]);
      const names = sums.sort((a, b) => b[1] - a[1]).slice(0, 8).map(([k]) => k).sort();
      const dn = names.length ? det.series[names[0]].length : 0;
      const cols = Object.fromEntries(names.map((k) => [k, colour("span:" + k)]));
      Frisky.chart("tl-detailed", names.map((k) => ({ label: k, stroke: cols[k], width: 1.5,
        value: (u, v) => (v == null ? "–" : perSec(v)) })), [xs(det, dn), ...names.map((k) => det.series[k])],
        { yfmt: busy, ylabel: "busy threads", ysize: 50, height: 260 });
      totalsRow("tl-detailed-totals", names, det.series, cols);
    },
  });
  for (const id of ["tl-since", "tl-prefix", "tl-worker"]) {
    Frisky.$(id).addEventListener("change", () => Frisky.refresh());
  }

  // ---- Memory & Transfers ---------------------------------------------------------
  function memoryCards(o, tr) {
    const m = o.memory;
    const cards = [
      card("Memory used", num("overview.memory.used", m.used, "bytes"), ["limit ", num("overview.memory.limit", m.limit, "bytes")]),
      card("Peak", num("overview.memory.peak", m.peak, "bytes")),
      card("Managed", num("overview.memory.managed", m.managed, "bytes"), "values held by workers"),
      card("Unmanaged", num("overview.memory.unmanaged", m.unmanaged, "bytes"), "interpreter, libraries, leaks"),
      card("Spilled now", num("overview.memory.spilled", m.spilled, "bytes"),
           [num("overview.spilled_bytes", o.spilled_bytes, "bytes"), " written in total"]),
      card("In transit", num("overview.memory.in_transit", m.in_transit, "bytes"),
           ["receive pool ", num("overview.memory.recv_pool", m.recv_pool, "bytes")]),
      card("Network", num("overview.network.recv_bytes", o.network.recv_bytes, "bytes"),
           ["received · ", num("overview.network.sent_bytes", o.network.sent_bytes, "bytes"), " sent"]),
      card("Disk", num("overview.disk.written_bytes", o.disk.written_bytes, "bytes"),
           ["written · ", num("overview.disk.read_bytes", o.disk.read_bytes, "bytes"), " read"]),
    ];
    if (tr) cards.push(card("Transfers", num("transfers.totals.count", tr.totals.count),
      [num("transfers.totals.bytes", tr.totals.bytes, "bytes"), " in ", num("transfers.totals.seconds", tr.totals.seconds, "seconds")]));
    fill("memory-cards", cards);
  }

  function memoryCharts(hist) {
    const names = [...new Set(hist.flatMap((r) => Object.keys(r.workers)))].sort((a, b) => a.localeCompare(b, "en", { numeric: true }));
    const t = hist.map((r) => r.t);
    Frisky.chart("mem-workers", names.map((n) => ({ label: shortName(n), stroke: colour("worker:" + n), width: 1.5,
      value: (u, v) => (v == null ? "–" : fmt.bytes(v)) })),
      [t, ...names.map((n) => hist.map((r) => (r.workers[n] == null ? null : r.workers[n])))],
      { yfmt: fmt.bytes, incrs: Frisky.BYTE_INCRS });
    const rate = (get) => hist.map((r, i) => {
      if (i === 0) return null;
      const dt = r.t - hist[i - 1].t;
      return dt > 0 ? Math.max(0, (get(r) - get(hist[i - 1])) / dt) : null;
    });
    const io = [["network in", "#f59e0b", (r) => r.net.recv_bytes], ["network out", "#b45309", (r) => r.net.sent_bytes],
                ["disk write", "#9333ea", (r) => r.disk.written_bytes], ["disk read", "#c084fc", (r) => r.disk.read_bytes]];
    Frisky.chart("mem-io", io.map(([l, c]) => ({ label: l, stroke: c, width: 1.5, value: (u, v) => (v == null ? "–" : fmt.rate(v)) })),
      [t, ...io.map(([, , g]) => rate(g))], { yfmt: fmt.rate, incrs: Frisky.BYTE_INCRS, ysize: 100 });
  }

  function transferTables(tr) {
    const head = (cols) => h("tr", {}, cols.map(([n, c]) => h("th", { class: c }, n)));
    fill("transfers-flight", head([["Key"], ["From"], ["To"], ["Size", "n"], ["Age", "n"]]),
      tr.in_flight.length ? tr.in_flight.map((x) => h("tr", {}, h("td", { class: "key", title: x.key }, x.key),
        h("td", {}, shortName(x.from)), h("td", {}, shortName(x.to)), h("td", { class: "n" }, fmt.bytes(x.bytes)),
        h("td", { class: "n" }, fmt.seconds(x.age)))) : h("tr", {}, h("td", { colspan: 5 }, empty("Nothing moving right now."))));
    fill("transfers-slowest", head([["Key"], ["From"], ["To"], ["Size", "n"], ["Took", "n"], ["Bandwidth", "n"]]),
      tr.slowest.length ? tr.slowest.map((x) => h("tr", {}, h("td", { class: "key", title: x.key }, x.key),
        h("td", {}, shortName(x.from)), h("td", {}, shortName(x.to)), h("td", { class: "n" }, fmt.bytes(x.bytes)),
        h("td", { class: "n" }, fmt.seconds(x.seconds)), h("td", { class: "n" }, fmt.rate(x.bandwidth))))
        : h("tr", {}, h("td", { colspan: 6 }, empty("No transfers between workers yet."))));
  }

  let lastTransfers = null;
  Frisky.page("memory", {
    render(t) {
      memoryCards(t.overview, lastTransfers);
      memoryCharts(Frisky.state.history);
    },
    async poll() {
      lastTransfers = await Frisky.api("transfers");
      transferTables(lastTransfers);
      if (Frisky.state.tick) memoryCards(Frisky.state.tick.overview, lastTransfers);
    },
  });

  // ---- Clients --------------------------------------------------------------------
  function bar(label, field, done, totalField, total, item, colour) {
    const pct = total ? Math.min(100, (100 * done) / total) : 0;
    return h("div", { class: "prow" }, h("div", { class: "name" }, label),
      h("div", { class: "bar" }, h("span", { style: { width: pct + "%", background: colour } })),
      h("div", { class: "count" }, num(field, done, "count", item), " of ", num(totalField, total, "count", item), " · ", fmt.percent(total ? done / total : 0)));
  }

  Frisky.page("clients", {
    render(t) {
      const now = t.clients.now;
      // connected clients first, then those gone, most recent first
      const cs = t.clients.clients.slice().sort((a, b) => (b.connected - a.connected) || (b.since - a.since));
      if (!cs.length) return fill("clients", h("div", { class: "panel" }, empty("No clients connected.")));
      fill("clients", cs.map((c) => {
        const g = c.graph, state = c.connected ? c.activity : "disconnected";
        const detail = c.connected ? c.detail : "";
        return h("div", { class: "client" + (c.connected ? "" : " gone"), "data-client": c.id },
          h("div", { class: "head" }, h("span", { class: "title" }, c.name || "client"), h("span", { class: "id" }, "#" + c.id),
            h("span", { class: "badge " + state }, state),
            h("span", { class: "since" }, c.since ? `${state} for ${fmt.seconds(Math.max(0, now - c.since))}` : "")),
          detail ? h("div", { class: "what" }, detail) : null,
          g ? [bar("Graph built", "clients.graph.built", g.built, "clients.graph.total", g.total, c.id, "var(--accent)"),
               bar("Uploaded", "clients.graph.uploaded", g.uploaded, "clients.graph.total", g.total, c.id, "#0891b2")] : null,
          c.tasks_total || g ? bar("Tasks done", "clients.tasks_done", c.tasks_done, "clients.tasks_total", c.tasks_total, c.id, "var(--ok)")
            : h("div", { class: "what empty" }, "No tasks submitted yet."),
          c.waiting_on ? h("div", { class: "what" }, "waiting on ", num("clients.waiting_on", c.waiting_on, "count", c.id), " results") : null);
      }));
    },
  });

  Frisky.start();
})();
