// The dashboard page: reads the read-only JSON API and draws with plotly.js (served locally).
// Amounts arrive as exact decimal strings; they become numbers only here, for drawing.
"use strict";
(function () {
  const body = document.body;
  const refresh = Number(body.dataset.refresh) * 1000;
  const tz = body.dataset.tz;
  const days = Number(body.dataset.days);
  const cfg = { displayModeBar: false, responsive: true };
  const q = (path) => fetch(path, { credentials: "same-origin" }).then((r) => {
    if (!r.ok) { throw new Error(path + ": HTTP " + r.status); }
    return r.json();
  });
  const num = (s) => (s === null || s === undefined ? 0 : Number(s));
  const text = (id, value) => { document.getElementById(id).textContent = value; };
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

  function drawOverview(o) {
    text("total-actual", o.totals.actual);
    text("total-estimate", o.totals.estimate);
    text("total-charges", o.totals.charges);
    text("total-refunded", o.totals.refunded);
    text("total-saved", o.totals.saved);
    fill("budgets", o.budgets, (tr, b) => {
      tr.dataset.testid = "budget-" + b.scope + "-" + b.window;
      cell(tr, b.scope); cell(tr, b.window); cell(tr, b.window_key);
      cell(tr, b.limit, "num limit"); cell(tr, b.used, "num used"); cell(tr, b.reserved, "num reserved");
      cell(tr, b.remaining, "num remaining"); cell(tr, b.percent === null ? "" : b.percent + "%", "num");
    });
    const gauges = document.getElementById("gauges");
    gauges.replaceChildren();
    const plots = o.budgets.map((b, i) => {
      const div = document.createElement("div");
      div.className = "gauge"; div.id = "gauge-" + i;
      gauges.appendChild(div);
      const used = num(b.used), held = num(b.reserved), limit = num(b.limit);
      const marks = b.marks.map(num);
      const next = marks.find((m) => m > used + held);
      return Plotly.newPlot(div, [{
        type: "indicator", mode: "gauge+number", value: used,
        title: { text: b.scope + " · " + b.window + "<br><span style='font-size:0.8em'>reserved " + b.reserved + ", remaining " + b.remaining + "</span>" },
        gauge: {
          axis: { range: [0, limit], tickvals: marks, ticktext: b.thresholds.map((t) => Math.round(Number(t) * 100) + "%") },
          bar: { color: "#4c78a8" },
          steps: [{ range: [used, Math.min(limit, used + held)], color: "#f5b971" }],
          threshold: next === undefined ? undefined : { line: { color: "#d62728", width: 3 }, value: next },
        },
      }], { margin: { t: 70, b: 10, l: 30, r: 30 } }, cfg);
    });
    const d = o.daily;
    const x = d.days.map((r) => r.day);
    const traces = [
      { type: "bar", name: "charged", x: x, y: d.days.map((r) => num(r.actual)), marker: { color: "#4c78a8" } },
      { type: "bar", name: "saved by cache", x: x, y: d.days.map((r) => num(r.saved)), marker: { color: "#54a24b" } },
    ];
    if (d.limit !== null) {
      traces.push({ type: "scatter", mode: "lines", name: "daily limit", x: x, y: x.map(() => num(d.limit)), line: { color: "#d62728", dash: "dash" } });
    }
    plots.push(Plotly.newPlot("daily", traces, { barmode: "stack", margin: { t: 20 }, legend: { orientation: "h" } }, cfg));
    return plots;
  }

  function drawBreakdown(id, dim, rep) {
    const rows = rep.rows.slice().sort((a, b) => num(b.actual) - num(a.actual));
    const labels = rows.map((r) => (r[dim] === null ? "(none)" : String(r[dim])));
    return Plotly.newPlot(id, [{ type: "bar", orientation: "h", x: rows.map((r) => num(r.actual)), y: labels,
      text: rows.map((r) => r.actual), textposition: "auto", marker: { color: "#72b7b2" } }],
      { margin: { t: 10, l: 140 }, yaxis: { autorange: "reversed" } }, cfg);
  }

  function drawDrift(rep) {
    fill("drift-table", rep.rows, (tr, r) => {
      cell(tr, r.model); cell(tr, r.mode); cell(tr, r.estimate, "num"); cell(tr, r.actual, "num");
      cell(tr, r.drift, "num"); cell(tr, r.drift_pct === null ? "" : r.drift_pct + "%", "num");
    });
    const labels = rep.rows.map((r) => (r.model || "(none)") + " / " + (r.mode || "(none)"));
    return Plotly.newPlot("drift", [
      { type: "bar", name: "estimate", x: labels, y: rep.rows.map((r) => num(r.estimate)), marker: { color: "#9ecae9" } },
      { type: "bar", name: "actual", x: labels, y: rep.rows.map((r) => num(r.actual)), marker: { color: "#4c78a8" } },
    ], { barmode: "group", margin: { t: 20 }, legend: { orientation: "h" } }, cfg);
  }

  function drawCharges(data) {
    fill("charges", data.charges, (tr, c) => {
      cell(tr, c.created_at.replace("T", " ").slice(0, 19));
      cell(tr, c.status, "status-" + c.status); cell(tr, c.model); cell(tr, c.mode); cell(tr, c.duration, "num");
      cell(tr, c.estimate, "num"); cell(tr, c.actual, "num"); cell(tr, c.prompt_preview); cell(tr, c.task_id);
    });
  }

  function drawAlerts(data) {
    fill("alerts", data.alerts, (tr, a) => {
      cell(tr, a.created_at.replace("T", " ").slice(0, 19)); cell(tr, a.scope); cell(tr, a.window + " " + a.window_key);
      cell(tr, a.kind); cell(tr, a.threshold); cell(tr, a.cleared_at ? "cleared" : a.status); cell(tr, a.message);
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
