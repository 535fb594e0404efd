// fleetmon dashboard: the fleet, a node with its devices and history plots, the alert history.
// Reads the collector's JSON API (collector/api.py); plots with plotly.js served by the collector.
"use strict";

const TOKEN_KEY = "fleetmon-token";
const FLEET_EVERY_MS = 2000;   // an injected fault shows within a batch interval plus this
const NODE_EVERY_MS = 5000;
const RANGES = ["15m", "1h", "6h", "24h"];
const RANGE_SECONDS = {"15m": 900, "1h": 3600, "6h": 21600, "24h": 86400};
// Long ranges read many samples: their plots are redrawn less often than the rest of the page.
const PLOT_EVERY_S = {"15m": 5, "1h": 10, "6h": 60, "24h": 120};
const PLOTS = [  // per-GPU history on a node page: metric, title, unit, scale
  {metric: "gpu_temperature_celsius", title: "GPU temperature", unit: "°C", scale: 1},
  {metric: "gpu_power_watts", title: "GPU power", unit: "W", scale: 1},
  {metric: "gpu_utilization_ratio", title: "GPU utilisation", unit: "%", scale: 100},
  {metric: "gpu_memory_used_bytes", title: "GPU memory used", unit: "GiB", scale: 1 / 2 ** 30},
];

// A bearer token comes in the URL fragment (/#token=...: never sent or logged by browsers) and
// stays in this tab's session storage.
(function takeToken() {
  const m = location.hash.match(/[#&?]token=([^&]+)/);
  if (m) {
    sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname + "#/");
  }
})();

async function api(path) {
  const headers = {};
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = "Bearer " + token;
  const resp = await fetch(path, {headers});
  const body = await resp.json().catch(() => ({}));
  if (!resp.ok) throw new Error(`${path}: HTTP ${resp.status} ${body.error || resp.statusText}`);
  return body;
}

const esc = s => String(s ?? "").replace(/[&<>"']/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
const clock = t => t ? new Date(t * 1000).toLocaleTimeString() : "";
const stamp = t => t ? new Date(t * 1000).toLocaleString() : "";
function ago(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const s = Math.max(0, Math.round(seconds));
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.round(s / 60)}m`;
  return `${Math.floor(s / 3600)}h${String(Math.round((s % 3600) / 60)).padStart(2, "0")}m`;
}
const nodeLink = n => `<a href="#/node/${encodeURIComponent(n)}">${esc(n)}</a>`;
const badge = h => `<span class="badge ${esc(h)}">${esc(h)}</span>`;
// "nvidia" + "NVIDIA H100 ..." reads as the model alone; "amd" + "MI300X" as both.
const model = m => esc((m.model && m.vendor && m.model.toLowerCase().startsWith(m.vendor.toLowerCase()) ? m.model
  : [m.vendor, m.model].filter(Boolean).join(" ")) || "no accelerators");
// Where an alert is, beyond its node: its other identifying labels.
const HIDDEN = new Set(["alertname", "severity", "node", "cluster", "rack", "pod", "zone", "uuid", "vendor", "model", "xid_name", "xid_action"]);
const where = a => Object.entries(a.labels).filter(([k]) => !HIDDEN.has(k)).map(([k, v]) => `${esc(k)}=${esc(v)}`).join(" ");
const forText = a => a.for === null || a.for === undefined ? "" : ago(a.for);
const table = (head, rows, empty) => rows.length
  ? `<table><thead><tr>${head.map(h => `<th${h.endsWith("#") ? ' class="num"' : ""}>${esc(h.replace(/#$/, ""))}</th>`).join("")}</tr></thead><tbody>${rows.join("")}</tbody></table>`
  : `<div class="empty">${esc(empty)}</div>`;

function setStatus(text, error) {
  const s = document.getElementById("status");
  s.textContent = text;
  s.className = "status" + (error ? " error" : "");
}

// --- the fleet --------------------------------------------------------------------------------
function fleetSkeleton() {
  return `<div id="banner"></div><div class="tiles" id="tiles"></div>
    <h2>Accelerators by vendor and model</h2><div id="models"></div>
    <h2>Alerts</h2><div id="alerts"></div>
    <h2>Nodes</h2><div class="nodes" id="nodes"></div>
    <h2>Recent hardware events</h2><div id="events"></div>`;
}

function alertGroups(alerts) {
  const groups = new Map();
  for (const a of alerts) {
    const g = groups.get(a.name) || {name: a.name, severity: a.severity, firing: 0, pending: 0, nodes: new Set(), action: a.action, summary: a.summary, since: Infinity, fires_at: null};
    g[a.state] += 1;
    if (a.node) g.nodes.add(a.node);
    g.since = Math.min(g.since, a.state === "firing" ? a.fired_at : a.active_at);
    if (a.state === "pending" && a.fires_at && (!g.fires_at || a.fires_at < g.fires_at)) g.fires_at = a.fires_at;
    groups.set(a.name, g);
  }
  const order = {critical: 0, warning: 1};
  return [...groups.values()].sort((x, y) => (y.firing > 0) - (x.firing > 0) || (order[x.severity] ?? 2) - (order[y.severity] ?? 2) || x.name.localeCompare(y.name));
}

async function refreshFleet(now) {
  const [s, nodes, alerts, events] = await Promise.all([api("/api/v1/summary"), api("/api/v1/nodes"), api("/api/v1/alerts"), api("/api/v1/events?limit=15")]);
  const h = s.health;
  document.getElementById("banner").innerHTML = typeof Plotly === "undefined"
    ? '<div class="banner">Charts are unavailable: the collector cannot serve plotly.js (pip install \'fleetmon[collector]\').</div>' : "";
  document.getElementById("tiles").innerHTML = [
    ["nodes up", `${s.nodes_up} / ${s.nodes_total}`, ""], ["healthy", h.healthy, "healthy"], ["degraded", h.degraded, "degraded"],
    ["failed", h.failed, "failed"], ["samples/s", s.samples_per_second, ""],
    ["firing alerts", alerts.filter(a => a.state === "firing").length, "firing"], ["pending", alerts.filter(a => a.state === "pending").length, "pending"],
  ].map(([k, v, c]) => `<div class="tile">${esc(k)}<b class="${c}">${esc(v)}</b></div>`).join("");
  document.getElementById("models").innerHTML = table(["vendor and model", "accelerators up#", "nodes healthy#", "degraded#", "failed#"],
    s.models.map(m => `<tr><td>${model(m)}</td><td class="num">${m.total ? `${m.up} / ${m.total}` : "–"}</td>
      <td class="num healthy">${m.nodes.healthy}</td><td class="num degraded">${m.nodes.degraded}</td><td class="num failed">${m.nodes.failed}</td></tr>`),
    "no node has reported yet");
  document.getElementById("alerts").innerHTML = table(["alert", "severity", "firing#", "pending#", "nodes", "since", "summary", "action"],
    alertGroups(alerts).map(g => `<tr data-alert="${esc(g.name)}"><td><b>${esc(g.name)}</b></td><td class="${esc(g.severity)}">${esc(g.severity)}</td>
      <td class="num firing">${g.firing || ""}</td><td class="num pending">${g.pending || ""}${g.fires_at ? ` <span class="muted">fires in ${ago(g.fires_at - now)}</span>` : ""}</td>
      <td>${[...g.nodes].sort().slice(0, 8).map(nodeLink).join(", ")}${g.nodes.size > 8 ? ` +${g.nodes.size - 8}` : ""}</td>
      <td>${ago(now - g.since)}</td><td>${esc(g.summary)}</td><td class="action">${esc(g.action)}</td></tr>`),
    "no alert is pending or firing");
  const order = {failed: 0, degraded: 1, healthy: 2};
  document.getElementById("nodes").innerHTML = nodes.slice().sort((a, b) => order[a.health] - order[b.health] || a.node.localeCompare(b.node))
    .map(n => `<a class="node" href="#/node/${encodeURIComponent(n.node)}" data-node="${esc(n.node)}" data-health="${esc(n.health)}">
      <span class="name">${esc(n.node)}</span> ${badge(n.health)}
      <div class="muted">${n.accelerators.map(m => `${m.up}/${m.total} ${model(m)}`).join(", ") || "no accelerators"}</div>
      <div class="why">${esc(n.reasons.slice(0, 2).join("; ")) || `last batch ${ago(n.last_batch_age)} ago`}</div></a>`).join("")
    || '<div class="empty">no node has connected yet</div>';
  document.getElementById("events").innerHTML = table(["time", "node", "kind", "severity", "message", "action"],
    events.map(e => `<tr><td>${clock(e.time)}</td><td>${nodeLink(e.node)}</td><td>${esc(e.kind)}</td><td class="${esc(e.severity)}">${esc(e.severity)}</td>
      <td>${esc(e.message)}</td><td class="action">${esc(e.action)}</td></tr>`), "no hardware event in the last hour");
}

// --- one node ---------------------------------------------------------------------------------
let range = RANGES[0];
let plottedAt = 0;

function nodeSkeleton(node) {
  return `<h1>${esc(node)} <span id="health"></span></h1><div id="reasons"></div><div class="tiles" id="facts"></div>
    <h2>Devices</h2><div id="devices"></div>
    <h2>Active alerts</h2><div id="node-alerts"></div>
    <h2>History <span class="ranges">${RANGES.map(r => `<button data-range="${r}">${r}</button>`).join(" ")}</span></h2>
    <div class="plots">${PLOTS.map(p => `<div class="plot" id="plot-${p.metric}"></div>`).join("")}</div>
    <h2>Alert history</h2><div id="node-history"></div>`;
}

function selector(metric, node) {
  return `${metric}{node="${node.replace(/\\/g, "\\\\").replace(/"/g, '\\"')}"}`;
}

async function plot(spec, node) {
  const step = Math.max(1, Math.round(RANGE_SECONDS[range] / 400));
  const rows = await api(`/api/v1/query?selector=${encodeURIComponent(selector(spec.metric, node))}&since=${range}&step=${step}s`);
  const div = document.getElementById("plot-" + spec.metric);
  if (!div) return;
  rows.sort((a, b) => Number(a.labels.gpu) - Number(b.labels.gpu));
  const traces = rows.map(r => ({
    type: "scatter", mode: "lines", name: `GPU ${r.labels.gpu ?? ""}`,
    x: r.values.map(v => new Date(v[0] * 1000)), y: r.values.map(v => typeof v[1] === "number" ? v[1] * spec.scale : null),
    hovertemplate: `%{y:.1f} ${spec.unit}<extra>GPU ${esc(r.labels.gpu ?? "")}</extra>`,
  }));
  const layout = {
    title: {text: `${spec.title} (${spec.unit})`, font: {size: 14}, x: 0.02}, margin: {l: 50, r: 10, t: 34, b: 32},
    xaxis: {type: "date"}, yaxis: {rangemode: spec.unit === "°C" ? "normal" : "tozero"}, showlegend: traces.length > 1,
    legend: {orientation: "h", x: 1, xanchor: "right", y: 1.02, yanchor: "bottom"}, uirevision: range, paper_bgcolor: "#fff", plot_bgcolor: "#fff",
    annotations: traces.length ? [] : [{text: "no data in this range", showarrow: false, xref: "paper", yref: "paper", x: 0.5, y: 0.5}],
  };
  if (typeof Plotly !== "undefined") Plotly.react(div, traces, layout, {displaylogo: false, responsive: true});
}

// A node that streams to another collector (it moved, or was never here): this collector knows
// nothing live of it, but its history plots still come from the shared TSDB (query.url).
function elsewhere(node) {
  document.getElementById("health").innerHTML = badge("elsewhere").replace(">elsewhere<", ">not here<");
  document.getElementById("reasons").innerHTML = `<div class="muted">${esc(node)} does not stream to this collector: ` +
    "its state and alerts are on the collector it streams to; the history below comes from the shared TSDB " +
    "when the collector has a query API (query.url)</div>";
  for (const id of ["facts", "devices", "node-alerts", "node-history"]) document.getElementById(id).innerHTML = "";
}

async function refreshNode(now, node) {
  const [n, history] = await Promise.all([
    api(`/api/v1/nodes/${encodeURIComponent(node)}`).catch(err => { if (/HTTP 404/.test(err.message)) return null; throw err; }),
    api(`/api/v1/alerts/transitions?node=${encodeURIComponent(node)}&limit=50`)]);
  if (n === null) {
    elsewhere(node);
    if (now - plottedAt >= PLOT_EVERY_S[range] - 0.5) {
      plottedAt = now;
      await Promise.all(PLOTS.map(p => plot(p, node)));
    }
    return;
  }
  document.getElementById("health").innerHTML = badge(n.health);
  document.getElementById("reasons").innerHTML = n.reasons.length ? `<div class="${esc(n.health)}">${n.reasons.map(esc).join("; ")}</div>` : "";
  document.getElementById("facts").innerHTML = [
    ["state", n.up ? "streaming" : n.connected ? "silent" : "disconnected"], ["last batch", n.last_batch_age === null ? "–" : `${ago(n.last_batch_age)} ago`],
    ["agent", n.agent_version || "–"], ["clock skew", `${n.clock_skew} s`],
    ["where", Object.entries(n.labels).filter(([k]) => ["cluster", "pod", "rack", "zone"].includes(k)).map(([k, v]) => `${k}=${v}`).join(" ") || "–"],
    ["plugins", n.plugins.map(p => p.name + (p.enabled ? "" : " (off)")).join(", ") || "–"],
  ].map(([k, v]) => `<div class="tile">${esc(k)}<b style="font-size:15px">${esc(v)}</b></div>`).join("");
  document.getElementById("devices").innerHTML = table(["GPU", "vendor and model", "UUID", "state", "last sample"],
    n.devices.map(d => `<tr data-gpu="${esc(d.gpu)}"><td>${esc(d.gpu)}</td><td>${model(d)}</td><td class="muted">${esc(d.uuid)}</td>
      <td>${d.up ? badge("healthy").replace(">healthy<", ">up<") : badge("failed").replace(">failed<", ">down<")}</td><td>${ago(now - d.last_sample)} ago</td></tr>`),
    "no accelerator reported (gpu_up)");
  document.getElementById("node-alerts").innerHTML = table(["state", "severity", "alert", "where", "for", "since", "summary", "action"],
    n.active_alerts.map(a => `<tr><td class="${a.state}">${a.state}</td><td class="${esc(a.severity)}">${esc(a.severity)}</td><td><b>${esc(a.name)}</b></td>
      <td>${where(a)}</td><td>${forText(a)}</td><td>${ago(now - (a.state === "firing" ? a.fired_at : a.active_at))}</td><td>${esc(a.summary)}</td><td class="action">${esc(a.action)}</td></tr>`),
    "no alert is pending or firing on this node");
  document.getElementById("node-history").innerHTML = historyTable(history.slice().reverse(), false);
  if (now - plottedAt >= PLOT_EVERY_S[range] - 0.5) {
    plottedAt = now;
    await Promise.all(PLOTS.map(p => plot(p, node)));
  }
}

// --- alert history ----------------------------------------------------------------------------
function historyTable(rows, withNode) {
  return table(["time", "became", ...(withNode ? ["node"] : []), "alert", "severity", "where", "summary", "action"],
    rows.map(t => `<tr><td class="time">${stamp(t.time)}</td><td class="${t.state}">${t.state}</td>${withNode ? `<td>${t.node ? nodeLink(t.node) : ""}</td>` : ""}
      <td><b>${esc(t.name)}</b></td><td class="${esc(t.severity)}">${esc(t.severity)}</td><td>${where(t)}</td><td>${esc(t.summary)}</td><td class="action">${esc(t.action)}</td></tr>`),
    "no alert changed state since the collector started");
}

async function refreshAlerts() {
  const [history, events] = await Promise.all([api("/api/v1/alerts/transitions?limit=200"), api("/api/v1/events?since=24h&limit=100")]);
  document.getElementById("history").innerHTML = historyTable(history.slice().reverse(), true);
  document.getElementById("alert-events").innerHTML = table(["time", "node", "kind", "severity", "message", "action"],
    events.map(e => `<tr><td class="time">${stamp(e.time)}</td><td>${nodeLink(e.node)}</td><td>${esc(e.kind)}</td><td class="${esc(e.severity)}">${esc(e.severity)}</td>
      <td>${esc(e.message)}</td><td class="action">${esc(e.action)}</td></tr>`), "no hardware event in the last 24 hours");
}

// --- routing ----------------------------------------------------------------------------------
let generation = 0;

function route() {
  const h = location.hash || "#/";
  if (h.startsWith("#/node/")) return {page: "node", node: decodeURIComponent(h.slice(7))};
  if (h.startsWith("#/alerts")) return {page: "alerts"};
  return {page: "fleet"};
}

function show() {
  const gen = ++generation;
  const r = route();
  const view = document.getElementById("view");
  document.querySelectorAll("[data-nav]").forEach(a => a.classList.toggle("active", a.dataset.nav === r.page));
  let refresh, every;
  if (r.page === "node") {
    view.innerHTML = nodeSkeleton(r.node);
    plottedAt = 0;
    document.title = `${r.node} · fleetmon`;
    view.querySelectorAll("[data-range]").forEach(b => {
      b.classList.toggle("active", b.dataset.range === range);
      b.onclick = () => { range = b.dataset.range; show(); };
    });
    refresh = now => refreshNode(now, r.node);
    every = NODE_EVERY_MS;
  } else if (r.page === "alerts") {
    view.innerHTML = '<h1>Alert history</h1><div id="history"></div><h2>Hardware events</h2><div id="alert-events"></div>';
    document.title = "alert history · fleetmon";
    refresh = refreshAlerts;
    every = NODE_EVERY_MS;
  } else {
    view.innerHTML = fleetSkeleton();
    document.title = "fleetmon";
    refresh = refreshFleet;
    every = FLEET_EVERY_MS;
  }
  (async function loop() {
    if (gen !== generation) return;
    try {
      await refresh(Date.now() / 1000);
      if (gen === generation) setStatus("updated " + new Date().toLocaleTimeString());
    } catch (err) {
      if (gen === generation) setStatus(err.message, true);
    }
    if (gen === generation) setTimeout(loop, every);
  })();
}

window.addEventListener("hashchange", show);
show();
