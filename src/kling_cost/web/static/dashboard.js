// The dashboard page: reads the read-only JSON API and draws with plotly.js (served locally).
// Amounts arrive as exact decimal strings; they become numbers only here, for drawing.
// Every amount comes with its unit ("units" or "credits"): each is shown beside its amounts,
// and amounts of different units are never added or drawn on the same axis.
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
  const text = (id, value) => { document.getElementById(id).textContent = value; };
  function unitsOf(rows) {
    const found = [...new Set(rows.map((r) => r.unit))];
    const rank = (u) => (UNIT_ORDER.indexOf(u) < 0 ? UNIT_ORDER.length : UNIT_ORDER.indexOf(u));
    return found.sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
  }
  function cell(tr, value, cls) {
    const td = document.createElement("td");
    td.textContent = value === null || value === undefined ? "" : String(value);
    if (cls) { td.className = cls; }
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
      layout[name] = { title: { text: title ? title + " (" + u + ")" : u }, rangemode: "tozero" };
      if (i > 0) {
        Object.assign(layout[name], { overlaying: horizontal ? "x" : "y", side: horizontal ? "top" : "right", showgrid: false });
      }
    });
    return layout;
  }
  const axisRef = (i) => (i === 0 ? "" : String(i + 1));

  function drawTotals(o) {
    const box = document.getElementById("totals");
    box.replaceChildren();
    if (o.totals.length === 0) {
      const p = document.createElement("p");
      p.className = "muted"; p.textContent = "no generations in this period";
      box.appendChild(p);
      return;
    }
    const fields = [["charged", "actual"], ["estimated", "estimate"], ["generations", "charges"],
      ["failed (refunded)", "refunded"], ["saved by the cache", "saved"]];
    o.totals.forEach((t) => {
      const row = document.createElement("div");
      row.className = "totals"; row.dataset.testid = "totals-" + t.unit; row.dataset.unit = t.unit;
      const head = document.createElement("div");
      head.className = "unit-head";
      head.innerHTML = "<span class='label'>unit</span><span class='value'></span>";
      head.lastChild.textContent = t.unit;
      row.appendChild(head);
      fields.forEach(([label, key]) => {
        const card = document.createElement("div");
        const l = document.createElement("span"); l.className = "label"; l.textContent = label;
        const v = document.createElement("span"); v.className = "value";
        const amount = document.createElement("span"); amount.className = "amount " + key;
        amount.textContent = String(t[key]);
        v.appendChild(amount);
        if (key !== "charges") {  // a count has no unit; every amount shows its own
          const u = document.createElement("span"); u.className = "unit"; u.textContent = " " + t.unit;
          v.appendChild(u);
        }
        card.append(l, v);
        row.appendChild(card);
      });
      box.appendChild(row);
    });
  }

  function drawOverview(o) {
    drawTotals(o);
    fill("budgets", o.budgets, (tr, b) => {
      tr.dataset.testid = "budget-" + b.scope + "-" + b.window;
      cell(tr, b.scope); cell(tr, b.window); cell(tr, b.window_key); cell(tr, b.unit, "unit");
      cell(tr, b.limit, "num limit"); cell(tr, b.used, "num used"); cell(tr, b.reserved, "num reserved");
      cell(tr, b.remaining, "num remaining"); cell(tr, b.percent === null ? "" : b.percent + "%", "num");
    });
    const gauges = document.getElementById("gauges");
    gauges.replaceChildren();
    const plots = o.budgets.map((b, i) => {
      const div = document.createElement("div");
      div.className = "gauge"; div.id = "gauge-" + i; div.dataset.unit = b.unit;
      gauges.appendChild(div);
      const used = num(b.used), held = num(b.reserved), limit = num(b.limit);
      const marks = b.marks.map(num);
      const next = marks.find((m) => m > used + held);
      return Plotly.newPlot(div, [{
        type: "indicator", mode: "gauge+number", value: used, number: { suffix: " " + b.unit },
        title: { text: b.scope + " · " + b.window + " · " + b.unit + "<br><span style='font-size:0.8em'>reserved " + b.reserved + ", remaining " + b.remaining + " " + b.unit + "</span>" },
        gauge: {
          axis: { range: [0, limit], tickvals: marks, ticktext: b.thresholds.map((t) => Math.round(Number(t) * 100) + "%") },
          bar: { color: "#4c78a8" },
          steps: [{ range: [used, Math.min(limit, used + held)], color: "#f5b971" }],
          threshold: next === undefined ? undefined : { line: { color: "#d62728", width: 3 }, value: next },
        },
      }], { margin: { t: 70, b: 10, l: 30, r: 30 } }, cfg);
    });
    plots.push(drawDaily(o.daily));
    return plots;
  }

  function drawDaily(d) {
    // One pair of stacked bars per unit, each unit on its own axis; the limit on its unit's axis.
    const units = d.units;
    const traces = [];
    const colours = [["#4c78a8", "#54a24b"], ["#e45756", "#b279a2"]];
    units.forEach((u, i) => {
      const rows = d.days.filter((r) => r.unit === u);
      const x = rows.map((r) => r.day);
      const [charged, saved] = colours[i % colours.length];
      const common = { x: x, yaxis: "y" + axisRef(i), offsetgroup: u, legendgroup: u };
      traces.push({ type: "bar", name: "charged (" + u + ")", y: rows.map((r) => num(r.actual)), marker: { color: charged }, ...common });
      traces.push({ type: "bar", name: "saved by cache (" + u + ")", y: rows.map((r) => num(r.saved)), marker: { color: saved }, base: rows.map((r) => num(r.actual)), ...common });
      if (d.limit !== null && d.unit === u) {
        traces.push({ type: "scatter", mode: "lines", name: "daily limit (" + u + ")", x: x, y: x.map(() => num(d.limit)), yaxis: "y" + axisRef(i), line: { color: "#d62728", dash: "dash" } });
      }
    });
    const layout = { barmode: "group", margin: { t: 20 }, legend: { orientation: "h" }, ...unitAxes(units, false, "") };
    return Plotly.newPlot("daily", traces, layout, cfg);
  }

  function drawBreakdown(id, dim, rep) {
    const units = unitsOf(rep.rows);
    const traces = units.map((u, i) => {
      const rows = rep.rows.filter((r) => r.unit === u).sort((a, b) => num(b.actual) - num(a.actual));
      return { type: "bar", orientation: "h", name: u, offsetgroup: u, xaxis: "x" + axisRef(i),
        x: rows.map((r) => num(r.actual)), y: rows.map((r) => (r[dim] === null ? "(none)" : String(r[dim]))),
        text: rows.map((r) => r.actual + " " + u), textposition: "auto", marker: { color: i === 0 ? "#72b7b2" : "#f58518" } };
    });
    // Each bar is labelled with its amount and unit, each value axis with its unit: no legend.
    const layout = { margin: { t: units.length > 1 ? 40 : 10, l: 140 }, yaxis: { autorange: "reversed" },
      barmode: "group", showlegend: false, ...unitAxes(units, true, "charged") };
    return Plotly.newPlot(id, traces, layout, cfg);
  }

  function drawDrift(rep) {
    fill("drift-table", rep.rows, (tr, r) => {
      cell(tr, r.model); cell(tr, r.mode); cell(tr, r.unit, "unit"); cell(tr, r.estimate, "num"); cell(tr, r.actual, "num");
      cell(tr, r.drift, "num"); cell(tr, r.drift_pct === null ? "" : r.drift_pct + "%", "num");
    });
    const units = unitsOf(rep.rows);
    const traces = [];
    units.forEach((u, i) => {
      const rows = rep.rows.filter((r) => r.unit === u);
      const labels = rows.map((r) => (r.model || "(none)") + " / " + (r.mode || "(none)") + (units.length > 1 ? " · " + u : ""));
      const axis = "y" + axisRef(i);
      traces.push({ type: "bar", name: "estimate (" + u + ")", x: labels, y: rows.map((r) => num(r.estimate)), yaxis: axis, offsetgroup: u + "-estimate", marker: { color: i === 0 ? "#9ecae9" : "#ffbf79" } });
      traces.push({ type: "bar", name: "actual (" + u + ")", x: labels, y: rows.map((r) => num(r.actual)), yaxis: axis, offsetgroup: u + "-actual", marker: { color: i === 0 ? "#4c78a8" : "#f58518" } });
    });
    return Plotly.newPlot("drift", traces, { barmode: "group", margin: { t: 20 }, legend: { orientation: "h" }, ...unitAxes(units, false, "") }, cfg);
  }

  function drawCharges(data) {
    fill("charges", data.charges, (tr, c) => {
      cell(tr, c.created_at.replace("T", " ").slice(0, 19));
      cell(tr, c.status, "status-" + c.status); cell(tr, c.model); cell(tr, c.mode); cell(tr, c.duration, "num");
      cell(tr, c.unit, "unit"); cell(tr, c.estimate, "num"); cell(tr, c.actual, "num"); cell(tr, c.prompt_preview); cell(tr, c.task_id);
    });
  }

  function drawAlerts(data) {
    fill("alerts", data.alerts, (tr, a) => {
      cell(tr, a.created_at.replace("T", " ").slice(0, 19)); cell(tr, a.scope); cell(tr, a.window + " " + a.window_key);
      cell(tr, a.kind); cell(tr, a.threshold);
      cell(tr, a.used + " + " + a.reserved + " / " + a.limit + (a.unit ? " " + a.unit : ""), "num level");
      cell(tr, a.cleared_at ? "cleared" : a.status); cell(tr, a.message);
    });
  }

  async function load() {
    const p = "?days=" + days + "&tz=" + encodeURIComponent(tz);
    try {
      const [o, m, md, pr, k, drift, charges, alerts] = await Promise.all([
        q("api/overview" + p), q("api/breakdown/model" + p), q("api/breakdown/mode" + p),
        q("api/breakdown/project" + p), q("api/breakdown/key" + p), q("api/drift" + p),
        q("api/charges?limit=50"), q("api/alerts?limit=100"),
      ]);
      const plots = drawOverview(o);
      plots.push(drawBreakdown("by-model", "model", m), drawBreakdown("by-mode", "mode", md),
        drawBreakdown("by-project", "project", pr), drawBreakdown("by-key", "key", k), drawDrift(drift));
      drawCharges(charges);
      drawAlerts(alerts);
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
