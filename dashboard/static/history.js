// repedge dashboard, "Reputation over time": the persisted history (GET /api/history),
// brands side by side. A range picker (1 h, 24 h, 7 d, 30 d, custom), one line per chosen
// brand for the negative share and for the volume, a table of the range's totals, and a
// CSV export of exactly what is shown; a click on a point lists the tweets behind it (GET
// /api/history/tweets, from the nodes' kept texts). Shares are of the tweets not marked unrelated; the
// unrelated count is shown next to them. Strings from MQTT only ever reach the page
// through textContent, attribute values and canvas text.
"use strict";

(() => {
  const REFRESH_MS = 10000; // the history moves by the minute; no need to poll faster
  const LINE_COLORS = ["#d64541", "#2a7fd4", "#e0a030", "#2f9e5b", "#b05cc0", "#2a9fb0",
    "#8a5a2b", "#6b6bd6", "#c2417a", "#5c8a2f"];
  const hist = { range: "24h", from: null, to: null, step: "", chosen: null, data: null, timer: null };
  window.repedgeHistory = { loads: 0, errors: 0, last: null }; // read by tests

  const $ = (id) => document.getElementById(id);
  const text = (node, value) => { node.textContent = value === null || value === undefined ? "" : String(value); };

  function query() {
    const params = new URLSearchParams();
    if (hist.range === "custom" && hist.from !== null && hist.to !== null) {
      params.set("from", String(hist.from));
      params.set("to", String(hist.to));
    } else {
      params.set("range", hist.range === "custom" ? "24h" : hist.range);
    }
    if (hist.step) params.set("step", hist.step);
    if (hist.chosen !== null) params.set("entities", hist.chosen.join(","));
    return params.toString();
  }

  function bucketLabel(t, step) {
    const d = new Date(t * 1000);
    const pad = (n) => String(n).padStart(2, "0");
    const day = `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
    if (step >= 86400) return day;
    const time = `${pad(d.getHours())}:${pad(d.getMinutes())}`;
    return step >= 3600 || hist.range !== "1h" ? `${day.slice(5)} ${time}` : time;
  }

  function stamp(t) {
    return new Date(t * 1000).toLocaleString([], { hour12: false });
  }

  let shareChart = null;
  let volumeChart = null;

  function lineChart(canvasId, yTitle, percent) {
    if (typeof Chart === "undefined") return null;
    return new Chart($(canvasId), {
      type: "line",
      data: { labels: [], datasets: [] },
      options: {
        animation: false,
        responsive: true,
        maintainAspectRatio: false,
        spanGaps: false, // a bucket with no related tweet has no share: a gap, not a zero
        interaction: { mode: "nearest", intersect: false },
        plugins: { legend: { position: "bottom", labels: { boxWidth: 12 } } },
        scales: {
          x: { ticks: { maxTicksLimit: 10, autoSkip: true, maxRotation: 0 } },
          // grace: the busiest point sits below the top edge, where a click still counts
          y: { beginAtZero: true, max: percent ? 100 : undefined, grace: percent ? 0 : "10%", title: { display: true, text: yTitle },
            ticks: { precision: percent ? undefined : 0 } },
        },
        elements: { point: { radius: 0, hitRadius: 6 }, line: { borderWidth: 2, tension: 0.15 } },
        onClick: (_event, elements, chart) => showTweets(chart, elements),
      },
    });
  }

  function volumes(columns, i) {
    return columns.negative[i] + columns.neutral[i] + columns.positive[i] + columns.other[i];
  }

  function renderCharts(data) {
    const series = data.series;
    const labels = series.t.map((t) => bucketLabel(t, series.step));
    const share = [];
    const volume = [];
    data.chosen.forEach((name, k) => {
      const columns = series.entities[name];
      if (!columns) return;
      const color = LINE_COLORS[k % LINE_COLORS.length];
      share.push({
        label: name, borderColor: color, backgroundColor: color,
        data: series.t.map((_, i) => {
          const n = volumes(columns, i);
          return n > 0 ? (100 * columns.negative[i]) / n : null;
        }),
      });
      volume.push({ label: name, borderColor: color, backgroundColor: color,
        data: series.t.map((_, i) => volumes(columns, i)) });
    });
    shareChart = shareChart || lineChart("hist-share-chart", "% negative", true);
    volumeChart = volumeChart || lineChart("hist-volume-chart", "tweets", false);
    for (const [chart, sets] of [[shareChart, share], [volumeChart, volume]]) {
      if (!chart) continue;
      chart.data.labels = labels;
      chart.data.datasets = sets;
      chart.update("none");
    }
  }

  function renderTable(data) {
    const rows = data.chosen.map((name) => {
      const t = data.totals[name] || {};
      const shared = (t.negative || 0) + (t.neutral || 0) + (t.positive || 0) + (t.other || 0);
      const pct = (n) => (shared > 0 ? ((100 * (n || 0)) / shared).toFixed(0) + " %" : "–");
      const row = document.createElement("tr");
      row.dataset.entity = name;
      for (const [value, cls] of [[name, null], [shared, "num"], [pct(t.negative), "num"],
        [pct(t.neutral), "num"], [pct(t.positive), "num"], [t.unrelated || 0, "num"]]) {
        const cell = document.createElement("td");
        if (cls) cell.className = cls;
        text(cell, value);
        row.append(cell);
      }
      return row;
    });
    $("hist-table").querySelector("tbody").replaceChildren(...rows);
    $("hist-empty").hidden = data.chosen.length > 0;
  }

  function renderBrands(data) {
    // Every entity the store knows, busiest first; ticked: the ones on the charts.
    const box = $("hist-brands");
    const names = Object.keys(data.known);
    const chosen = new Set(data.chosen);
    const chips = names.slice(0, 60).map((name) => {
      const label = document.createElement("label");
      label.className = "chip";
      const input = document.createElement("input");
      input.type = "checkbox";
      input.checked = chosen.has(name);
      input.dataset.entity = name;
      input.addEventListener("change", () => {
        const ticked = [...box.querySelectorAll("input:checked")].map((i) => i.dataset.entity);
        hist.chosen = ticked;
        load();
      });
      label.append(input, document.createTextNode(" " + name));
      return label;
    });
    box.replaceChildren(...chips);
  }

  function renderNote(data) {
    const span = `${stamp(data.from)} – ${stamp(data.to)}`;
    const step = { 60: "per minute", 3600: "per hour", 86400: "per day" }[data.series.step];
    const anchored = data.anchor === "latest" ? " (nothing newer recorded: the range ends at the latest data)" : "";
    text($("hist-note"), `${span}, ${step}${anchored}; stored in ${data.db}`);
    $("hist-csv").href = "/api/history.csv?" + query();
  }

  async function load() {
    const stats = window.repedgeHistory;
    try {
      const reply = await fetch("/api/history?" + query());
      const data = await reply.json();
      if (!reply.ok) throw new Error(data.error || reply.statusText);
      hist.data = data;
      renderNote(data);
      renderBrands(data);
      renderTable(data);
      renderCharts(data);
      text($("hist-error"), "");
      stats.loads += 1;
      stats.last = { range: data.range, chosen: data.chosen, step: data.series.step, anchor: data.anchor };
    } catch (err) {
      stats.errors += 1;
      text($("hist-error"), "history unavailable: " + err.message);
    }
  }

  async function showTweets(chart, elements) {
    // A point is one brand's bucket: list the tweets behind it where texts are kept.
    if (!elements.length || !hist.data) return;
    const { datasetIndex, index } = elements[0];
    const name = chart.data.datasets[datasetIndex].label;
    const series = hist.data.series;
    const start = series.t[index];
    const params = new URLSearchParams({ entity: name, from: String(start), to: String(start + series.step) });
    const box = $("hist-tweets");
    box.hidden = false;
    text($("hist-tweets-title"), `${name}, ${stamp(start)} (${bucketLabel(start, series.step)})`);
    const list = $("hist-tweets-list");
    try {
      const reply = await fetch("/api/history/tweets?" + params.toString());
      const data = await reply.json();
      if (!reply.ok) throw new Error(data.error || reply.statusText);
      // Texts come from the nodes (already made inert by the server) and only ever reach
      // the page as textContent.
      const items = data.tweets.map((t) => {
        const item = document.createElement("li");
        item.className = "tweet";
        const when = typeof t.at === "number" ? new Date(t.at * 1000).toLocaleTimeString([], { hour12: false }) : "";
        text(item, `${when} ${t.label || ""}${t.related_score !== null && t.related_score < 0.5 ? " (unrelated)" : ""}: ${t.text || ""}`);
        return item;
      });
      const summary = [];
      if (data.total > data.tweets.length) summary.push(`${data.tweets.length} of ${data.total} shown`);
      if (data.note) summary.push(data.note);
      if (summary.length) {
        const item = document.createElement("li");
        item.className = "muted";
        text(item, summary.join("; "));
        items.push(item);
      }
      list.replaceChildren(...items);
    } catch (err) {
      const item = document.createElement("li");
      item.className = "muted";
      text(item, err.message);
      list.replaceChildren(item);
    }
  }

  function pickRange(range) {
    hist.range = range;
    for (const b of document.querySelectorAll("#hist-ranges button")) b.classList.toggle("on", b.dataset.range === range);
    $("hist-custom").hidden = range !== "custom";
    if (range !== "custom") load();
  }

  document.addEventListener("DOMContentLoaded", () => {
    if (!$("hist-section")) return;
    for (const b of document.querySelectorAll("#hist-ranges button")) {
      b.addEventListener("click", () => pickRange(b.dataset.range));
    }
    $("hist-apply").addEventListener("click", () => {
      const from = Date.parse($("hist-from").value) / 1000;
      const to = Date.parse($("hist-to").value) / 1000;
      if (!(from < to)) {
        text($("hist-error"), "custom range: pick a start before the end");
        return;
      }
      hist.from = Math.floor(from);
      hist.to = Math.ceil(to);
      load();
    });
    $("hist-step").addEventListener("change", () => {
      hist.step = $("hist-step").value; // "" = auto: the finest bucket the range fits
      load();
    });
    $("hist-all").addEventListener("click", () => {
      hist.chosen = null; // the busiest of the range again
      load();
    });
    load();
    hist.timer = setInterval(load, REFRESH_MS);
  });
})();
