// repedge dashboard: merges the server's snapshot and deltas (Server-Sent Events) into
// one model and redraws at most RENDER_HZ times a second, however fast data arrives.
// Everything from MQTT is shown with textContent or as chart data on a canvas, never
// parsed as markup; the server's Content-Security-Policy also forbids inline script.
"use strict";

const RENDER_MS = 250; // at most 4 redraws a second
const LABELS = ["negative", "neutral", "positive", "other"];
const COLORS = { negative: "#d64541", neutral: "#8a8f98", positive: "#2f9e5b", other: "#6b6bd6" };
const PALETTE = ["#d64541", "#e0a030", "#6b6bd6", "#2a9fb0", "#b05cc0", "#5c8a2f", "#8a8f98"];

const model = {
  meta: {},
  nodes: new Map(),
  entities: new Map(),
  errorMinutes: new Map(),
  recentErrors: [],
};
const view = { selected: null, chosen: false, split: "all", cards: new Map(), rows: new Map() };
// Read by tests and benchmarks/dashboard_load.py: how often the page really redraws.
window.repedgeStats = { messages: 0, snapshots: 0, renders: 0, lastRender: 0, errors: 0 };

// -- small DOM helpers --------------------------------------------------------------------

function $(id) { return document.getElementById(id); }

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function setText(node, text) {
  const value = text === undefined || text === null ? "" : String(text);
  if (node.textContent !== value) node.textContent = value;
}

function fmt(value, digits = 1, unit = "") {
  return typeof value === "number" && Number.isFinite(value) ? value.toFixed(digits) + unit : "–";
}

function bytes(value) {
  if (typeof value !== "number" || !Number.isFinite(value)) return "–";
  return (value / 1048576).toFixed(1) + " MiB";
}

function clock(epochSeconds) {
  if (typeof epochSeconds !== "number") return "–";
  return new Date(epochSeconds * 1000).toLocaleTimeString([], { hour12: false });
}

function ago(epochSeconds) {
  if (typeof epochSeconds !== "number") return "";
  const s = Math.max(0, Date.now() / 1000 - epochSeconds);
  if (s < 90) return Math.round(s) + " s ago";
  if (s < 5400) return Math.round(s / 60) + " min ago";
  return (s / 3600).toFixed(1) + " h ago";
}

function minuteLabel(minute) {
  return new Date(minute * 60000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hour12: false });
}

// -- the model ----------------------------------------------------------------------------

function applySnapshot(data) {
  model.nodes = new Map(data.nodes.map((n) => [n.node_id, n]));
  model.entities = new Map();
  for (const e of data.entities) {
    model.entities.set(e.name, {
      minutes: new Map(Object.entries(e.minutes).map(([m, b]) => [Number(m), b])),
      recent: e.recent,
      total: e.total,
    });
  }
  model.errorMinutes = new Map(Object.entries(data.errors.minutes).map(([m, b]) => [Number(m), b]));
  model.recentErrors = data.errors.recent;
  window.repedgeStats.snapshots += 1;
}

function applyDelta(data) {
  for (const [id, node] of Object.entries(data.nodes)) {
    if (node === null) model.nodes.delete(id);
    else model.nodes.set(id, node);
  }
  for (const name of data.removed_entities) model.entities.delete(name);
  for (const [name, change] of Object.entries(data.entities)) {
    let entity = model.entities.get(name);
    if (!entity) {
      entity = { minutes: new Map(), recent: [], total: 0 };
      model.entities.set(name, entity);
    }
    for (const [m, bucket] of Object.entries(change.minutes)) entity.minutes.set(Number(m), bucket);
    entity.recent = entity.recent.concat(change.recent).slice(-(data.recent || 50));
    entity.total = change.total;
  }
  for (const [m, bucket] of Object.entries(data.errors.minutes)) model.errorMinutes.set(Number(m), bucket);
  model.recentErrors = model.recentErrors.concat(data.errors.recent).slice(-20);
}

function pruneOld(horizon) {
  for (const entity of model.entities.values()) {
    for (const m of entity.minutes.keys()) if (m <= horizon) entity.minutes.delete(m);
  }
  for (const m of model.errorMinutes.keys()) if (m <= horizon) model.errorMinutes.delete(m);
}

function minutesAxis() {
  const now = Math.floor((model.meta.now || Date.now() / 1000) / 60);
  const first = (model.meta.horizon_minute || now - 60) + 1;
  const out = [];
  for (let m = first; m <= now; m += 1) out.push(m);
  return out;
}

function sum(counts) {
  let total = 0;
  for (const v of Object.values(counts || {})) total += v;
  return total;
}

// -- rendering ----------------------------------------------------------------------------

function renderHeader() {
  const meta = model.meta;
  const broker = $("broker");
  setText(broker, (meta.broker || "broker") + (meta.broker_connected ? " connected" : " – " + (meta.broker_error || "not connected")));
  broker.className = "pill " + (meta.broker_connected ? "on" : "off");
  setText($("labels-total"), meta.labels_total ?? 0);
  setText($("errors-total"), meta.errors_total ?? 0);
  const lag = meta.lag_ms;
  setText($("lag"), typeof lag !== "number" ? "–" : Math.abs(lag) < 10000 ? fmt(lag, 0, " ms") : fmt(lag / 1000, 0, " s"));
  // Records stamped long ago (redelivered after an outage) or ahead (a wrong clock) are
  // counted here, never in the lag.
  const odd = [];
  if (meta.late_records) odd.push(`${meta.late_records} late`);
  if (meta.ahead_records) odd.push(`${meta.ahead_records} ahead`);
  setText($("late"), odd.length ? `(${odd.join(", ")})` : "");
  setText($("updated"), clock(meta.now));
  setText($("history"), meta.history_minutes ?? 60);
  setText($("recent-n"), meta.recent ?? 50);
  setText($("ignored"), `${meta.ignored ?? 0} messages ignored` + (meta.last_ignored ? ` (last: ${meta.last_ignored})` : ""));
  renderAlerts(meta.alerts || []);
}

// Open spike alerts, as a dashboard serve/collect publishes them on repedge/alerts/<entity>.
function renderAlerts(alerts) {
  const banner = $("alert-banner");
  banner.hidden = alerts.length === 0;
  banner.replaceChildren(...alerts.map((a) => {
    const since = (a.start || "").slice(5, 16).replace("T", " ");
    let evidence = "";
    if (typeof a.negative === "number" && typeof a.related === "number") {
      evidence = `: ${a.negative} of ${a.related} related tweets negative in the last 2 h`;
      if (typeof a.baseline_share === "number") evidence += ` (usually ${Math.round(a.baseline_share * 100)} %)`;
    }
    return el("span", "alert-item", `Negative spike for ${a.entity} since ${since} UTC${evidence}`);
  }));
}

const CARD_FIELDS = [
  ["since", "since"],
  ["model", "model"],
  ["sha256", "sha256"],
  ["rate", "tweets/s"],
  ["latency", "p50 / p99"],
  ["queue", "queue"],
  ["cpu", "CPU"],
  ["rss", "RSS"],
  ["temp", "temperature"],
  ["labels", "labels seen"],
  ["event", "provisioning"],
];

function makeCard() {
  const card = el("article", "node-card");
  const head = el("div", "head");
  head.append(el("span", "node-id"), el("span", "badge"));
  card.append(head);
  const dl = el("dl");
  const cells = {};
  for (const [key, title] of CARD_FIELDS) {
    const dt = el("dt", null, title);
    const dd = el("dd", "f-" + key);
    cells[key] = { dt, dd };
    dl.append(dt, dd);
  }
  card.append(dl);
  card.cells = cells;
  return card;
}

function renderCard(card, node) {
  setText(card.querySelector(".node-id"), node.node_id);
  card.dataset.nodeId = node.node_id; // dataset is an attribute value, never markup
  card.dataset.state = node.state;
  const badge = card.querySelector(".badge");
  setText(badge, node.state);
  badge.className = "badge " + (["online", "offline"].includes(node.state) ? node.state : "unknown");
  card.className = "node-card " + node.state;
  const t = node.telemetry || {};
  const m = node.model || {};
  const c = card.cells;
  const since = node.since !== null ? `${clock(node.since)} (${ago(node.since)})` : "–";
  setText(c.since.dd, since + (node.reason ? " · " + node.reason : ""));
  setText(c.model.dd, [m.name, m.version, m.variant].filter(Boolean).join(" ") || "–");
  setText(c.sha256.dd, m.sha256 ? m.sha256.slice(0, 12) : "–");
  setText(c.rate.dd, fmt(t.tweets_per_s, 1));
  setText(c.latency.dd, `${fmt(t.p50_ms, 1)} / ${fmt(t.p99_ms, 1)} ms`);
  setText(c.queue.dd, typeof t.queue_depth === "number" ? `${t.queue_depth}` + (typeof t.queue_size === "number" ? ` / ${t.queue_size}` : "") : "–");
  setText(c.cpu.dd, fmt(t.cpu_percent, 0, " %"));
  setText(c.rss.dd, bytes(t.rss_bytes));
  const hasTemp = typeof t.temperature_c === "number";
  c.temp.dt.hidden = c.temp.dd.hidden = !hasTemp;
  setText(c.temp.dd, fmt(t.temperature_c, 1, " °C"));
  setText(c.labels.dd, node.labels);
  const ev = node.last_event;
  setText(c.event.dd, ev ? [ev.event, ev.timestamp, ev.detail].filter(Boolean).join(" · ") : "–");
}

function renderNodes() {
  const box = $("nodes");
  for (const [id, card] of view.cards) {
    if (!model.nodes.has(id)) {
      card.remove();
      view.cards.delete(id);
    }
  }
  // Online nodes first, then by name: cards keep their places as data streams in.
  const ids = [...model.nodes.keys()].sort((a, b) => {
    const online = (id) => (model.nodes.get(id).state === "online" ? 0 : 1);
    return online(a) - online(b) || (a < b ? -1 : a > b ? 1 : 0);
  });
  ids.forEach((id, i) => {
    let card = view.cards.get(id);
    if (!card) {
      card = makeCard();
      view.cards.set(id, card);
    }
    if (box.children[i] !== card) box.insertBefore(card, box.children[i] || null);
    renderCard(card, model.nodes.get(id));
  });
  $("no-nodes").hidden = model.nodes.size > 0;
}

function entitySummary(entity, nowMinute) {
  // Shares are of the tweets not marked unrelated ("jaguar" the animal is not the brand);
  // the unrelated ones are counted apart.
  const hour = {};
  const last = entity.minutes.get(nowMinute) || { all: {} };
  let related = 0;
  let unrelated = 0;
  let all = 0;
  for (const bucket of entity.minutes.values()) {
    for (const [label, n] of Object.entries(bucket.all)) {
      hour[label] = (hour[label] || 0) + n - ((bucket.unrelated || {})[label] || 0);
    }
    all += sum(bucket.all);
    related += sum(bucket.related);
    unrelated += sum(bucket.unrelated);
  }
  return { hour, hourTotal: all, shareTotal: sum(hour), lastTotal: sum(last.all), related, unrelated };
}

function pct(part, total) {
  return total > 0 ? ((100 * part) / total).toFixed(0) + " %" : "–";
}

function renderEntities() {
  const tbody = $("entities").querySelector("tbody");
  const nowMinute = Math.floor((model.meta.now || Date.now() / 1000) / 60);
  // A fixed order (by name, "sentiment" last) keeps rows still while counts stream in.
  const names = [...model.entities.keys()].sort((a, b) =>
    (a === "sentiment") - (b === "sentiment") || (a < b ? -1 : a > b ? 1 : 0));
  if (!view.chosen || !model.entities.has(view.selected)) {
    // Until the user picks one (a click), the detail follows the busiest entity.
    const total = (n) => model.entities.get(n).total;
    const busiest = names.reduce((best, n) => (best === null || total(n) > total(best) ? n : best), null);
    const current = model.entities.has(view.selected) ? total(view.selected) : -1;
    // A clear lead only, so near-equal entities do not swap the charts back and forth.
    if (current < 0 || (busiest !== null && total(busiest) > current * 1.2 + 5)) view.selected = busiest;
  }
  for (const [name, row] of view.rows) {
    if (!model.entities.has(name)) {
      row.remove();
      view.rows.delete(name);
    }
  }
  names.forEach((name, index) => {
    let row = view.rows.get(name);
    if (!row) {
      row = el("tr", "entity-row");
      for (let i = 0; i < 7; i += 1) row.append(el("td", i > 0 && i < 6 ? "num" : null));
      row.addEventListener("click", () => {
        view.selected = name;
        view.chosen = true;
        scheduleRender(true);
      });
      view.rows.set(name, row);
    }
    if (tbody.children[index] !== row) tbody.insertBefore(row, tbody.children[index] || null);
    const s = entitySummary(model.entities.get(name), nowMinute);
    const cells = row.children;
    setText(cells[0], name);
    setText(cells[1], s.hourTotal);
    setText(cells[2], s.lastTotal);
    setText(cells[3], pct(s.hour.negative || 0, s.shareTotal));
    setText(cells[4], pct(s.hour.neutral || 0, s.shareTotal));
    setText(cells[5], pct(s.hour.positive || 0, s.shareTotal));
    setText(cells[6], s.related + s.unrelated > 0 ? `${s.related} / ${s.unrelated}` : "–");
    row.dataset.entity = name;
    row.classList.toggle("selected", name === view.selected);
  });
  renderEntityDetail();
}

let countsChart = null;
let shareChart = null;
let errorsChart = null;

function makeChart(canvasId, type, stacked, yTitle) {
  if (typeof Chart === "undefined") return null; // the page still works without charts
  return new Chart($(canvasId), {
    type,
    data: { labels: [], datasets: [] },
    options: {
      animation: false,
      responsive: true,
      maintainAspectRatio: false,
      interaction: { mode: "index", intersect: false },
      plugins: { legend: { position: "bottom", labels: { boxWidth: 12 } } },
      scales: {
        x: { stacked, ticks: { maxTicksLimit: 12, autoSkip: true } },
        // Counts are whole numbers; shares are not.
        y: { stacked, beginAtZero: true, title: { display: true, text: yTitle }, ticks: { precision: yTitle === "%" ? undefined : 0 } },
      },
      elements: { point: { radius: 2 } }, // one-minute histories still show
    },
  });
}

function setSeries(chart, labels, series) {
  if (!chart) return;
  chart.data.labels = labels;
  const same = chart.data.datasets.length === series.length &&
    chart.data.datasets.every((d, i) => d.label === series[i].label);
  if (same) {
    // Same series: new numbers in the same objects keeps what the user toggled in the legend.
    series.forEach((s, i) => { chart.data.datasets[i].data = s.data; });
  } else {
    chart.data.datasets = series.map(({ label, data, color, fill }) => ({
      label, data, backgroundColor: color, borderColor: color, borderWidth: fill ? 0 : 2, fill: false,
    }));
  }
  chart.update("none");
}

function renderEntityDetail() {
  const detail = $("entity-detail");
  const entity = view.selected ? model.entities.get(view.selected) : null;
  detail.hidden = !entity;
  if (!entity) return;
  setText($("entity-name"), view.selected);
  setText($("entity-total"), `${entity.total} labelled since the dashboard started`);
  const s = entitySummary(entity, -1);
  const hasSplit = s.related + s.unrelated > 0;
  $("split").hidden = !hasSplit;
  const split = hasSplit ? view.split : "all";
  for (const b of $("split").querySelectorAll("button")) b.classList.toggle("on", b.dataset.split === split);
  setText($("split-summary"), hasSplit ? `last hour: ${s.related} related, ${s.unrelated} unrelated` : "");

  const axis = minutesAxis();
  const labels = axis.map(minuteLabel);
  const present = LABELS.filter((l) => l !== "other" || axis.some((m) => (entity.minutes.get(m)?.[split] || {}).other));
  const counts = present.map((label) => ({
    label, color: COLORS[label], fill: true,
    data: axis.map((m) => (entity.minutes.get(m)?.[split] || {})[label] || 0),
  }));
  const shares = present.map((label) => ({
    label, color: COLORS[label],
    data: axis.map((m) => {
      const b = entity.minutes.get(m)?.[split] || {};
      const total = sum(b);
      return total > 0 ? (100 * (b[label] || 0)) / total : null;
    }),
  }));
  countsChart = countsChart || makeChart("counts-chart", "bar", true, "tweets");
  shareChart = shareChart || makeChart("share-chart", "line", false, "%");
  setSeries(countsChart, labels, counts);
  setSeries(shareChart, labels, shares);
  if (shareChart) shareChart.options.scales.y.max = 100;

  const tbody = $("recent").querySelector("tbody");
  const rows = entity.recent
    .filter((r) => split === "all" || (split === "related") === (r.related === true))
    .slice()
    .reverse()
    .map((r) => {
      const tr = el("tr");
      const sc = r.scores || {};
      const rel = r.related === null || r.related === undefined ? "–" : (r.related ? "yes" : "no") + (typeof r.related_score === "number" ? ` (${r.related_score.toFixed(2)})` : "");
      const cells = [
        [clock(r.at)], [r.id], [r.label, "label-" + r.label],
        [fmt(sc.negative, 2), "num"], [fmt(sc.neutral, 2), "num"], [fmt(sc.positive, 2), "num"],
        [rel], [r.node_id], [fmt(r.latency_ms, 1), "num"],
      ];
      for (const [text, cls] of cells) tr.append(el("td", cls || null, text));
      return tr;
    });
  tbody.replaceChildren(...rows);
}

function renderErrors() {
  const axis = minutesAxis();
  const reasons = new Set();
  for (const m of axis) for (const r of Object.keys(model.errorMinutes.get(m) || {})) reasons.add(r);
  const series = [...reasons].sort().map((reason, i) => ({
    label: reason, color: PALETTE[i % PALETTE.length], fill: true,
    data: axis.map((m) => (model.errorMinutes.get(m) || {})[reason] || 0),
  }));
  errorsChart = errorsChart || makeChart("errors-chart", "bar", true, "errors");
  setSeries(errorsChart, axis.map(minuteLabel), series);
  const rows = model.recentErrors.slice().reverse().map((e) => {
    const tr = el("tr");
    for (const text of [clock(e.at), e.reason, e.id ?? "–", e.node_id ?? "–", e.detail ?? ""]) tr.append(el("td", null, text));
    return tr;
  });
  $("errors").querySelector("tbody").replaceChildren(...rows);
}

function render() {
  const stats = window.repedgeStats;
  try {
    pruneOld(model.meta.horizon_minute ?? -Infinity);
    renderHeader();
    renderNodes();
    renderEntities();
    renderErrors();
  } catch (err) {
    stats.errors += 1; // a bad record must not stop the page; the next update retries
    console.error(err);
  }
  stats.renders += 1;
  stats.lastRender = Date.now();
}

// -- batching -----------------------------------------------------------------------------

let pending = false;
let lastRender = 0;

function scheduleRender(now = false) {
  if (pending) return;
  pending = true;
  const wait = now ? 0 : Math.max(0, RENDER_MS - (Date.now() - lastRender));
  setTimeout(() => {
    requestAnimationFrame(() => {
      pending = false;
      lastRender = Date.now();
      render();
    });
  }, wait);
}

function connect() {
  const source = new EventSource("/events");
  source.addEventListener("snapshot", (ev) => {
    const data = JSON.parse(ev.data);
    model.meta = data;
    applySnapshot(data);
    window.repedgeStats.messages += 1;
    scheduleRender();
  });
  source.addEventListener("delta", (ev) => {
    const data = JSON.parse(ev.data);
    model.meta = data;
    applyDelta(data);
    window.repedgeStats.messages += 1;
    scheduleRender();
  });
  source.onerror = () => {
    // EventSource reconnects by itself and the server starts it with a fresh snapshot.
    model.meta = { ...model.meta, broker_connected: false, broker_error: "dashboard unreachable" };
    scheduleRender();
  };
}

document.addEventListener("DOMContentLoaded", () => {
  for (const b of document.querySelectorAll("#split button")) {
    b.addEventListener("click", () => {
      view.split = b.dataset.split;
      scheduleRender(true);
    });
  }
  setInterval(() => scheduleRender(), 5000); // keeps "… ago" current when nothing arrives
  connect();
});
