// The dashboard page: reads the read-only JSON API and draws with plotly.js (served locally).
// Amounts arrive as exact decimal strings ("67.500"). They are shown for people by trimming the
// string (fmt: "67.5", "20", "0.125"), never through a float; they become numbers only for
// drawing bar lengths and axes. Every amount comes with its unit ("units" or "credits"): each
// is shown beside its amounts, and amounts of different units are never added or drawn on the
// same axis.
"use strict";
(function () {
  const body = document.body;
  const refresh = Number(body.dataset.refresh) * 1000;
  const tz = body.dataset.tz;
  const days = Number(body.dataset.days);
  const cfg = { displayModeBar: false, responsive: true };
  const UNIT_ORDER = ["units", "credits"];
  const q = (path) => fetch(path, { credentials: "same-origin" }).then((r) => {
    if (!r.ok) { throw new Error(path + ": HTTP " + r.status); }
    return r.json();
  });
  const num = (s) => (s === null || s === undefined ? 0 : Number(s));
  // An exact decimal string without its trailing zeros: "20.000" -> "20", "0.125" stays.
  function fmt(s) {
    if (s === null || s === undefined || s === "") { return ""; }
    let t = String(s);
    if (t.indexOf(".") >= 0) { t = t.replace(/0+$/, "").replace(/\.$/, ""); }
    return t === "-0" ? "0" : t;
  }
  // An amount with its unit, singular for exactly one ("1 unit", "0.5 units"), as the CLI says it.
  const amt = (s, unit) => {
    const text = fmt(s);
    return text + " " + (text === "1" && unit.endsWith("s") ? unit.slice(0, -1) : unit);
  };
  const pct = (s) => (s === null || s === undefined ? "" : fmt(s) + "%");
  // A threshold ratio ("0.8") as a percentage ("80%"): shift the decimal point of the string.
  function ratioPct(s) {
    const [whole, frac = ""] = String(s).split(".");
    const digits = (frac + "00").slice(0, 2);
    const rest = frac.slice(2);
    return fmt(String(Number(whole + digits)) + (rest ? "." + rest : "")) + "%";
  }
  const text = (id, value) => { document.getElementById(id).textContent = value; };
  function el(tag, cls, content) {
    const e = document.createElement(tag);
    if (cls) { e.className = cls; }
    if (content !== undefined) { e.textContent = content; }
    return e;
  }
  function unitsOf(rows) {
    const found = [...new Set(rows.map((r) => r.unit))];
    const rank = (u) => (UNIT_ORDER.indexOf(u) < 0 ? UNIT_ORDER.length : UNIT_ORDER.indexOf(u));
    return found.sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
  }
  function cell(tr, value, cls) {
    const td = el("td", cls, value === null || value === undefined ? "" : String(value));
    tr.appendChild(td);
    return td;
  }
  function fill(id, rows, build) {
    const tbody = document.querySelector("#" + id + " tbody");
    tbody.replaceChildren();
    rows.forEach((row) => { const tr = document.createElement("tr"); build(tr, row); tbody.appendChild(tr); });
  }
  // The value axes of a chart: one per unit (the second on the opposite side), titled by unit.
  function unitAxes(units, horizontal, title) {
    const layout = {};
    const axis = horizontal ? "xaxis" : "yaxis";
    units.forEach((u, i) => {
      const name = i === 0 ? axis : axis + (i + 1);
      layout[name] = { title: { text: title ? title + " (" + u + ")" : u }, rangemode: "tozero", automargin: true };
      if (i > 0) {
        Object.assign(layout[name], { overlaying: horizontal ? "x" : "y", side: horizontal ? "top" : "right",
          showgrid: false, tickmode: "auto" });
      }
    });
    return layout;
  }
  const axisRef = (i) => (i === 0 ? "" : String(i + 1));
  // A chart with nothing to draw says so, instead of showing empty axes.
  function noData(id, message) {
    const div = document.getElementById(id);
    div.dataset.empty = "1";
    return Plotly.newPlot(div, [], {
      xaxis: { visible: false }, yaxis: { visible: false }, margin: { t: 10, b: 10, l: 10, r: 10 },
      annotations: [{ text: message, showarrow: false, xref: "paper", yref: "paper", x: 0.5, y: 0.5,
        font: { size: 15, color: "#777" } }],
    }, cfg);
  }
  const plotted = (id) => { document.getElementById(id).dataset.empty = "0"; };
  const legendOnTop = { orientation: "h", x: 0, y: 1.02, xanchor: "left", yanchor: "bottom" };

  // -- at a glance --------------------------------------------------------------------------
  function drawSpend(g) {
    const box = document.getElementById("spend");
    box.replaceChildren();
    g.spend.forEach((s) => {
      const row = el("div", "spend");
      row.dataset.testid = "spend-" + s.unit; row.dataset.unit = s.unit;
      const big = el("div", "big");
      big.append(el("span", "amount today", fmt(s.today)), el("span", "unit", " " + s.unit));
      const change = num(s.change);
      const arrow = change > 0 ? "▲ +" : change < 0 ? "▼ " : "";
      const delta = change === 0 ? "same as yesterday"
        : arrow + amt(s.change, s.unit) + (s.change_pct === null ? "" : " (" + (change > 0 ? "+" : "") + pct(s.change_pct) + ")");
      const cls = change > 0 ? "up" : change < 0 ? "down" : "same";
      const then = el("div", "muted");
      then.append("all of yesterday ", el("span", "amount yesterday", fmt(s.yesterday)), " " + s.unit,
        " · " + s.today_charges + " generation" + (s.today_charges === 1 ? "" : "s") + " today");
      row.append(big, el("div", "change " + cls, delta), then);
      box.appendChild(row);
    });
  }

  function drawClosest(g) {
    const box = document.getElementById("closest");
    box.replaceChildren();
    const b = g.closest_budget;
    if (b === null) {
      box.appendChild(el("p", "muted", "no budget yet: kling-cost budget set SCOPE AMOUNT --window day"));
      return;
    }
    box.dataset.unit = b.unit;
    const share = num(b.percent);
    const big = el("div", "big" + (share >= 100 ? " over" : share >= 80 ? " near" : ""));
    big.append(el("span", "percent", pct(b.percent)), " of its limit");
    const what = el("div", "what", b.scope + " · " + b.window + " budget (" + b.window_key + ")");
    const bar = el("div", "meter");
    const usedW = Math.min(100, (num(b.used) * 100) / num(b.limit));
    const heldW = Math.max(0, Math.min(100 - usedW, (num(b.reserved) * 100) / num(b.limit)));
    const used = el("div", "used"); used.style.width = usedW + "%";
    const held = el("div", "held"); held.style.width = heldW + "%";
    bar.append(used, held);
    const detail = el("div", "muted detail", fmt(b.used) + " used + " + fmt(b.reserved) + " reserved of " +
      amt(b.limit, b.unit) + " · " + amt(b.remaining, b.unit) + " left");
    box.append(big, what, bar, detail);
  }

  function drawTopPrompts(g) {
    fill("top-prompts", g.top_prompts, (tr, p) => {
      tr.dataset.unit = p.unit;
      const prompt = cell(tr, p.prompt_preview || "(" + p.prompt_hash.slice(0, 12) + ")", "prompt");
      prompt.title = "prompt hash " + p.prompt_hash;
      cell(tr, p.models.join(", ") || "(none)");
      cell(tr, amt(p.actual, p.unit), "num charged");
      cell(tr, p.charges, "num");
    });
    document.getElementById("top-prompts").hidden = g.top_prompts.length === 0;
    document.getElementById("top-prompts-empty").hidden = g.top_prompts.length !== 0;
  }

  // -- the period ---------------------------------------------------------------------------
  function drawTotals(o) {
    const box = document.getElementById("totals");
    box.replaceChildren();
    if (o.totals.length === 0) {
      box.appendChild(el("p", "muted", "no generations in this period"));
      return;
    }
    const fields = [["charged", "actual"], ["estimated", "estimate"], ["generations", "charges"],
      ["failed (refunded)", "refunded"], ["saved by the cache", "saved"]];
    o.totals.forEach((t) => {
      const row = el("div", "totals");
      row.dataset.testid = "totals-" + t.unit; row.dataset.unit = t.unit;
      const head = el("div", "unit-head");
      head.append(el("span", "label", "unit"), el("span", "value", t.unit));
      row.appendChild(head);
      fields.forEach(([label, key]) => {
        const card = el("div");
        const v = el("span", "value");
        v.appendChild(el("span", "amount " + key, key === "charges" ? String(t[key]) : fmt(t[key])));
        if (key !== "charges") {  // a count has no unit; every amount shows its own
          v.appendChild(el("span", "unit", " " + t.unit));
        }
        card.append(el("span", "label", label), v);
        row.appendChild(card);
      });
      box.appendChild(row);
    });
  }

  function drawGauge(div, b) {
    const used = num(b.used), held = num(b.reserved), limit = num(b.limit);
    const marks = b.marks.map(num);
    const next = marks.find((m) => m > used + held);
    return Plotly.newPlot(div, [{
      type: "indicator", mode: "gauge", value: used,
      title: { text: b.scope + " · " + b.window + " · " + b.unit + "<br><span style='font-size:0.8em'>reserved " +
        amt(b.reserved, b.unit) + ", remaining " + amt(b.remaining, b.unit) + "</span>" },
      gauge: {
        axis: { range: [0, limit], tickvals: marks, ticktext: b.thresholds.map(ratioPct) },
        bar: { color: "#4c78a8" },
        steps: [{ range: [used, Math.min(limit, used + held)], color: "#f5b971" }],
        threshold: next === undefined ? undefined : { line: { color: "#d62728", width: 3 }, value: next },
      },
    }], {
      // room on both sides for the end labels ("100%"), and the exact amount under the arc
      margin: { t: 75, b: 10, l: 50, r: 50 },
      annotations: [{ text: amt(b.used, b.unit), showarrow: false, xref: "paper", yref: "paper", x: 0.5, y: 0,
        yanchor: "bottom", font: { size: 26 } }],
    }, cfg);
  }

  function drawOverview(o, bill) {
    drawTotals(o);
    fill("budgets", o.budgets, (tr, b) => {
      tr.dataset.testid = "budget-" + b.scope + "-" + b.window;
      cell(tr, b.scope); cell(tr, b.window); cell(tr, b.window_key); cell(tr, b.unit, "unit");
      cell(tr, fmt(b.limit), "num limit"); cell(tr, fmt(b.used), "num used"); cell(tr, fmt(b.reserved), "num reserved");
      cell(tr, fmt(b.remaining), "num remaining"); cell(tr, pct(b.percent), "num percent");
    });
    const gauges = document.getElementById("gauges");
    gauges.replaceChildren();
    const plots = o.budgets.map((b, i) => {
      const div = el("div", "gauge");
      div.id = "gauge-" + i; div.dataset.unit = b.unit;
      gauges.appendChild(div);
      return drawGauge(div, b);
    });
    plots.push(drawDaily(o.daily, bill));
    return plots;
  }

  // The day after a "YYYY-MM-DD" day, as a date string (calendar arithmetic, no time zone).
  function nextDay(day) {
    const [y, m, dd] = day.split("-").map(Number);
    return new Date(Date.UTC(y, m - 1, dd + 1)).toISOString().slice(0, 10);
  }
  // The projection of the daily chart's budget (its scope's day budget, in its unit), if any.
  function dailyProjection(d, bill) {
    if (!bill || d.unit === null) { return null; }
    const found = bill.forecast.projections.find((p) => p.scope === d.scope && p.window === "day" &&
      p.unit === d.unit && p.points.length > 0);
    return found === undefined ? null : found;
  }

  function drawDaily(d, bill) {
    // One pair of stacked bars per unit, each unit on its own axis, each bar across its local day;
    // the limit on its unit's axis, and the projection of the day budget (dashed) from now to the
    // window's end.
    const units = d.units;
    const anything = d.days.some((r) => num(r.actual) !== 0 || num(r.saved) !== 0);
    if (!anything && d.limit === null) { return noData("daily", "no usage in the last " + days + " days"); }
    plotted("daily");
    const traces = [];
    const colours = [["#4c78a8", "#54a24b"], ["#e45756", "#b279a2"]];
    units.forEach((u, i) => {
      const rows = d.days.filter((r) => r.unit === u);
      const x = rows.map((r) => r.day);
      const [charged, saved] = colours[i % colours.length];
      const common = { x: x, yaxis: "y" + axisRef(i), offsetgroup: u, legendgroup: u,
        xperiod: 86400000, xperiodalignment: "middle" };
      traces.push({ type: "bar", name: "charged (" + u + ")", y: rows.map((r) => num(r.actual)), marker: { color: charged },
        customdata: rows.map((r) => amt(r.actual, u)), hovertemplate: "%{x|%Y-%m-%d}: charged %{customdata}<extra></extra>", ...common });
      traces.push({ type: "bar", name: "saved by cache (" + u + ")", y: rows.map((r) => num(r.saved)), marker: { color: saved },
        base: rows.map((r) => num(r.actual)), customdata: rows.map((r) => amt(r.saved, u)),
        hovertemplate: "%{x|%Y-%m-%d}: saved %{customdata}<extra></extra>", ...common });
      if (d.limit !== null && d.unit === u) {
        const span = x.length === 0 ? [] : [x[0], nextDay(x[x.length - 1])];
        traces.push({ type: "scatter", mode: "lines", name: "daily limit " + amt(d.limit, u), x: span, y: span.map(() => num(d.limit)),
          yaxis: "y" + axisRef(i), line: { color: "#d62728", dash: "dot" }, hovertemplate: "limit " + amt(d.limit, u) + "<extra></extra>" });
        const p = dailyProjection(d, bill);
        if (p !== null) {
          traces.push({ type: "scatter", mode: "lines+markers", name: "projected " + amt(p.projected, u) + " by " +
            shortTime(p.horizon_local), x: p.points.map((pt) => pt.local), y: p.points.map((pt) => num(pt.value)),
            yaxis: "y" + axisRef(i), line: { color: "#ff7f0e", dash: "dash", width: 2 }, marker: { size: 6 },
            customdata: p.points.map((pt) => amt(pt.value, u)), meta: "projection",
            hovertemplate: "%{x|%Y-%m-%d %H:%M}: projected %{customdata} used or reserved<extra></extra>" });
        }
      }
    });
    const layout = { barmode: "group", margin: { t: 40, b: 60 }, legend: legendOnTop,
      xaxis: { type: "date", automargin: true }, ...unitAxes(units, false, "") };
    return Plotly.newPlot("daily", traces, layout, cfg);
  }

  function drawBreakdown(id, dim, rep) {
    if (rep.rows.length === 0) { return noData(id, "no data in the last " + days + " days"); }
    plotted(id);
    const units = unitsOf(rep.rows);
    const traces = units.map((u, i) => {
      const rows = rep.rows.filter((r) => r.unit === u).sort((a, b) => num(b.actual) - num(a.actual));
      return { type: "bar", orientation: "h", name: u, offsetgroup: u, xaxis: "x" + axisRef(i),
        x: rows.map((r) => num(r.actual)), y: rows.map((r) => (r[dim] === null ? "(none)" : String(r[dim]))),
        text: rows.map((r) => amt(r.actual, u)), textposition: "outside", textangle: 0, cliponaxis: false,
        hovertemplate: "%{y}: %{text}<extra></extra>",
        marker: { color: i === 0 ? "#72b7b2" : "#f58518" } };
    });
    // Each bar is labelled with its amount and unit, each value axis with its unit: no legend.
    const layout = { margin: { t: units.length > 1 ? 40 : 10, l: 10, r: 90 }, yaxis: { autorange: "reversed", automargin: true },
      barmode: "group", showlegend: false, ...unitAxes(units, true, "charged") };
    return Plotly.newPlot(id, traces, layout, cfg);
  }

  function drawDrift(rep) {
    fill("drift-table", rep.rows, (tr, r) => {
      cell(tr, r.model); cell(tr, r.mode); cell(tr, r.unit, "unit"); cell(tr, fmt(r.estimate), "num"); cell(tr, fmt(r.actual), "num");
      cell(tr, fmt(r.drift), "num"); cell(tr, pct(r.drift_pct), "num");
    });
    if (rep.rows.length === 0) { return noData("drift", "no data in the last " + days + " days"); }
    plotted("drift");
    const units = unitsOf(rep.rows);
    const traces = [];
    units.forEach((u, i) => {
      const rows = rep.rows.filter((r) => r.unit === u);
      const labels = rows.map((r) => (r.model || "(none)") + " / " + (r.mode || "(none)") + (units.length > 1 ? " · " + u : ""));
      const axis = "y" + axisRef(i);
      traces.push({ type: "bar", name: "estimate (" + u + ")", x: labels, y: rows.map((r) => num(r.estimate)), yaxis: axis,
        customdata: rows.map((r) => amt(r.estimate, u)), hovertemplate: "%{x}: estimated %{customdata}<extra></extra>",
        offsetgroup: u + "-estimate", marker: { color: i === 0 ? "#9ecae9" : "#ffbf79" } });
      traces.push({ type: "bar", name: "actual (" + u + ")", x: labels, y: rows.map((r) => num(r.actual)), yaxis: axis,
        customdata: rows.map((r) => amt(r.actual, u)), hovertemplate: "%{x}: charged %{customdata}<extra></extra>",
        offsetgroup: u + "-actual", marker: { color: i === 0 ? "#4c78a8" : "#f58518" } });
    });
    return Plotly.newPlot("drift", traces, { barmode: "group", margin: { t: 40 }, legend: legendOnTop,
      xaxis: { automargin: true }, ...unitAxes(units, false, "") }, cfg);
  }

  function drawCharges(data) {
    fill("charges", data.charges, (tr, c) => {
      cell(tr, c.created_at.replace("T", " ").slice(0, 19));
      cell(tr, c.status, "status-" + c.status); cell(tr, c.model); cell(tr, c.mode);
      cell(tr, c.duration === null ? "" : c.duration + " s", "num");
      cell(tr, c.unit, "unit"); cell(tr, fmt(c.estimate), "num estimate"); cell(tr, fmt(c.actual), "num actual");
      cell(tr, c.prompt_preview); cell(tr, c.task_id);
    });
  }

  function drawAlerts(data) {
    fill("alerts", data.alerts, (tr, a) => {
      cell(tr, a.created_at.replace("T", " ").slice(0, 19)); cell(tr, a.scope); cell(tr, a.window + " " + a.window_key);
      cell(tr, a.kind); cell(tr, a.threshold === null || a.threshold === undefined ? "" : ratioPct(a.threshold));
      cell(tr, fmt(a.used) + " + " + fmt(a.reserved) + " / " + fmt(a.limit) + (a.unit ? " " + a.unit : ""), "num level");
      cell(tr, a.cleared_at ? "cleared" : a.status); cell(tr, a.message);
    });
  }

  // -- virtual keys -------------------------------------------------------------------------
  // One line per budget of the key's own scope, in a cell: "day: 12.5 units".
  function lines(td, items) {
    items.forEach(([window, build]) => {
      const line = el("div", "line");
      line.dataset.window = window;
      build(line);
      td.appendChild(line);
    });
  }
  const when = (iso) => (iso === null ? "never" : iso.replace("T", " ").slice(0, 19));
  // A budget's current window and its time zone: "day 2026-06-15, Europe/Paris"; "lifetime" has neither.
  const windowOf = (b) => (b.window === "lifetime" ? "lifetime" : b.window + " " + b.window_key + ", " + b.tz);

  function drawKeys(data) {
    fill("keys", data.keys, (tr, k) => {
      tr.dataset.testid = "key-" + k.name; tr.dataset.state = k.state; tr.dataset.unit = k.unit;
      cell(tr, k.name, "name");
      cell(tr, k.state, "state state-" + k.state);
      cell(tr, k.scopes.join(", "), "scopes");
      const spend = cell(tr, "", "num spend");
      lines(spend, k.spend.map((s) => [s.unit, (line) => {
        line.append(el("span", "amount", fmt(s.all_time)), " " + s.unit);
      }]));
      lines(cell(tr, "", "window-spend"), k.budgets.map((b) => [b.window, (line) => {
        line.append(b.window + ": ", el("span", "amount", fmt(b.used)), " " + b.unit);
      }]));
      const left = cell(tr, k.budgets.length === 0 ? "no budget of its own" : "", "left");
      lines(left, k.budgets.map((b) => [b.window, (line) => {
        line.append(el("span", "amount", fmt(b.remaining)), " of " + amt(b.limit, b.unit),
          el("span", "muted detail", windowOf(b)));
      }]));
      const h = k.headroom;
      const room = cell(tr, h === null ? "no limit" : "", "headroom");
      if (h !== null) {
        room.append(el("span", "amount", fmt(h.remaining)), " " + h.unit,
          el("span", "muted detail", h.scope + " " + windowOf(h)));
      }
      cell(tr, String(k.open_tasks) + (k.concurrency === null ? "" : " / " + k.concurrency), "num open");
      cell(tr, when(k.last_used_at), "used");
    });
    document.getElementById("keys").hidden = data.keys.length === 0;
    document.getElementById("keys-empty").hidden = data.keys.length !== 0;
  }

  // -- the bill -----------------------------------------------------------------------------
  // A wall time of the dashboard's zone ("2026-06-15T22:00:00") for people: "2026-06-15 22:00".
  const shortTime = (local) => (local === null || local === undefined ? "" : local.replace("T", " ").slice(0, 16));
  // Text that plotly draws (tick labels, bar text) reads a few HTML tags: escape what it would parse.
  const plain = (s) => String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");

  function drawForecast(bill) {
    const rows = bill.forecast.projections;
    fill("forecast", rows, (tr, p) => {
      tr.dataset.testid = "forecast-" + p.scope + "-" + p.window; tr.dataset.unit = p.unit;
      if (p.over) { tr.className = "over"; }
      cell(tr, p.scope); cell(tr, p.window === "lifetime" ? "lifetime (next 7 days)" : p.window + " " + p.window_key);
      cell(tr, p.unit, "unit"); cell(tr, fmt(p.limit), "num limit"); cell(tr, fmt(p.level), "num level");
      cell(tr, p.rate_per_hour === null ? "" : fmt(p.rate_per_hour), "num rate");
      cell(tr, p.projected === null ? "" : fmt(p.projected), "num projected");
      cell(tr, p.projected === null ? "" : p.runs_out_at === null ? "not this window" : shortTime(p.runs_out_local), "runs-out");
      cell(tr, p.reason === null ? (p.over ? "over the limit by the end" : "") : p.reason, "reason");
    });
    document.getElementById("forecast").hidden = rows.length === 0;
    document.getElementById("forecast-empty").hidden = rows.length !== 0;
    text("forecast-rule", bill.forecast.rule);
  }

  const PACK_COLOURS = { online: "#54a24b", toBeOnline: "#4c78a8", expired: "#bab0ac", runOut: "#f58518" };

  function drawPacks(bill) {
    const snap = bill.packs;
    document.getElementById("packs-empty").hidden = snap !== null;
    document.getElementById("packs").hidden = snap === null;
    document.getElementById("packs-note").hidden = snap === null;
    if (snap === null) {
      fill("packs", [], () => {});
      return noData("packs-chart", "no packs snapshot yet: kling-cost packs");
    }
    text("packs-note", "As Kling listed them at " + shortTime(snap.taken_local) + " (" + bill.tz + "); " + snap.note +
      ". At risk: what a pack will still hold when it expires at the burn rate of its type over the last 7 days.");
    fill("packs", snap.packs, (tr, k) => {
      tr.dataset.testid = "pack-" + k.id; tr.dataset.status = k.status;
      cell(tr, k.name, "name"); cell(tr, k.pack_type, "type"); cell(tr, k.status, "status pack-" + k.status);
      const left = cell(tr, "", "num remaining");
      left.append(el("span", "amount", fmt(k.remaining)), " of " + amt(k.total, "units"));
      if (num(k.charged_recently) > 0) {
        left.appendChild(el("span", "muted detail", "the ledger charged " + amt(k.charged_recently, "units") +
          " of this type in the last 12 h, which this may not show yet"));
      }
      cell(tr, shortTime(k.start_local) + " → " + shortTime(k.end_local), "life");
      cell(tr, k.days_left === null ? "" : fmt(k.days_left), "num days");
      cell(tr, fmt(k.units_at_risk), "num at-risk");
      cell(tr, k.usd_left === null ? "" : "$" + fmt(k.usd_left), "num usd");
    });
    const shown = snap.packs.filter((k) => k.span_ms !== null);
    if (shown.length === 0) { return noData("packs-chart", "no pack with an expiry"); }
    plotted("packs-chart");
    const ys = shown.map((_, i) => i);
    const label = (k) => plain(k.name) + " · " + k.pack_type;
    const note = (k) => (num(k.units_at_risk) > 0 ? amt(k.units_at_risk, "units") + " at risk"
      : k.status === "expired" ? amt(k.units_lost, "units") + " lost" : fmt(k.remaining) + " left, none at risk");
    const traces = Object.keys(PACK_COLOURS).concat(["unknown"]).map((status) => {
      const mine = shown.map((k, i) => [k, i]).filter(([k]) => (PACK_COLOURS[k.status] ? k.status : "unknown") === status);
      return { type: "bar", orientation: "h", name: status, base: mine.map(([k]) => k.start_local),
        x: mine.map(([k]) => k.span_ms), y: mine.map(([, i]) => i), marker: { color: PACK_COLOURS[status] || "#999" },
        text: mine.map(([k]) => plain(note(k))), textposition: "inside", insidetextanchor: "end",
        customdata: mine.map(([k]) => [plain(k.name), shortTime(k.start_local), shortTime(k.end_local), plain(note(k))]),
        hovertemplate: "%{customdata[0]}<br>%{customdata[1]} → %{customdata[2]}<br>%{customdata[3]}<extra>" + status + "</extra>" };
    }).filter((t) => t.y.length > 0);
    const layout = { barmode: "overlay", margin: { t: 30, b: 40, l: 10, r: 20 }, legend: legendOnTop,
      height: Math.max(220, 90 + 40 * shown.length),
      xaxis: { type: "date", automargin: true },
      yaxis: { tickvals: ys, ticktext: shown.map(label), autorange: "reversed", automargin: true },
      shapes: [{ type: "line", xref: "x", yref: "paper", x0: bill.now_local, x1: bill.now_local, y0: 0, y1: 1,
        line: { color: "#d62728", width: 2, dash: "dot" } }],
      annotations: [{ text: "now", xref: "x", yref: "paper", x: bill.now_local, y: 1, yanchor: "bottom",
        showarrow: false, font: { color: "#d62728" } }] };
    document.getElementById("packs-chart").style.height = layout.height + "px";
    return Plotly.newPlot("packs-chart", traces, layout, cfg);
  }

  const CATEGORY_NAMES = { matched: "matched", amount_differs: "amount differs", unknown_to_ledger: "charged by Kling, unknown to the ledger",
    not_billed: "in the ledger, not billed", other_unit: "in credits (not compared)" };

  function drawReconciliation(bill) {
    const run = bill.reconciliation;
    const box = document.getElementById("recon-summary");
    box.replaceChildren();
    document.getElementById("recon-empty").hidden = run !== null;
    document.getElementById("recon-diffs").hidden = run === null || run.differences.length === 0;
    if (run === null) { fill("recon-diffs", [], () => {}); return; }
    box.dataset.status = run.status;
    const head = el("div", "recon-head");
    head.append(el("span", "status recon-" + run.status, run.clean ? "agrees with Kling's bill" : "differs from Kling's bill"),
      " · run " + when(run.started_at) + " UTC · period " + when(run.since) + " → " + when(run.until) + " UTC" +
      (run.summary.source ? " · from " + run.summary.source : "") + (run.fixed ? " · " + run.fixed + " late charge(s) recorded" : ""));
    const counts = el("div", "counts");
    Object.keys(CATEGORY_NAMES).forEach((c) => {
      if (run.counts[c] === undefined) { return; }
      const item = el("span", "count");
      item.dataset.category = c;
      item.append(el("b", null, String(run.counts[c])), " " + CATEGORY_NAMES[c]);
      counts.appendChild(item);
    });
    box.append(head, counts);
    const byPack = run.summary.by_pack || {};
    Object.keys(byPack).sort().forEach((pack) => {
      const sides = byPack[pack];
      box.appendChild(el("div", "muted totals-line", pack + ": ledger " + amt(sides.ledger, "units") + ", Kling " + amt(sides.kling, "units")));
    });
    (run.summary.problems || []).forEach((line) => box.appendChild(el("div", "error", line)));
    if (run.summary.note) { box.appendChild(el("div", "muted", run.summary.note)); }
    if (run.differences_total > run.differences.length) {
      box.appendChild(el("div", "muted", "showing the first " + run.differences.length + " of " + run.differences_total +
        " differences: kling-cost reconcile --json lists them all"));
    }
    fill("recon-diffs", run.differences, (tr, d) => {
      tr.dataset.category = d.category;
      cell(tr, CATEGORY_NAMES[d.category] || d.category, "category"); cell(tr, d.task_id, "task");
      cell(tr, d.pack_type, "pack"); cell(tr, d.ledger === null ? "—" : fmt(d.ledger), "num ledger");
      cell(tr, d.kling === null ? "—" : fmt(d.kling), "num kling"); cell(tr, d.unit, "unit"); cell(tr, d.day, "day");
      cell(tr, d.api_key_name, "key"); cell(tr, d.model, "model");
    });
  }

  async function load() {
    const p = "?days=" + days + "&tz=" + encodeURIComponent(tz);
    try {
      const [g, o, m, md, pr, k, drift, charges, alerts, keys, bill] = await Promise.all([
        q("api/glance" + p), q("api/overview" + p), q("api/breakdown/model" + p), q("api/breakdown/mode" + p),
        q("api/breakdown/project" + p), q("api/breakdown/key" + p), q("api/drift" + p),
        q("api/charges?limit=50"), q("api/alerts?limit=100"), q("api/keys"),
        q("api/bill?tz=" + encodeURIComponent(tz)),
      ]);
      drawSpend(g); drawClosest(g); drawTopPrompts(g);
      const plots = drawOverview(o, bill);
      drawForecast(bill);
      plots.push(drawPacks(bill));
      drawReconciliation(bill);
      plots.push(drawBreakdown("by-model", "model", m), drawBreakdown("by-mode", "mode", md),
        drawBreakdown("by-project", "project", pr), drawBreakdown("by-key", "key", k), drawDrift(drift));
      drawCharges(charges);
      drawAlerts(alerts);
      drawKeys(keys);
      await Promise.all(plots);
      text("updated", "updated " + o.generated_at.replace("T", " ").slice(0, 19) + " UTC");
      document.getElementById("error").hidden = true;
      body.dataset.rendered = String(Number(body.dataset.rendered) + 1);
    } catch (err) {
      const e = document.getElementById("error");
      e.textContent = String(err); e.hidden = false;
    }
  }
  load();
  setInterval(load, refresh);
})();
