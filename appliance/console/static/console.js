// The console's script: fetch JSON from the appliance's API (session cookie + CSRF header),
// draw SVG charts, refresh while the page is visible. No framework, no build step, nothing
// loaded from elsewhere. Data reaches the page only through textContent and SVG attributes.
"use strict";

const SEVERITIES = ["informational", "low", "medium", "high", "critical"];
const SVG = "http://www.w3.org/2000/svg";
const body = document.body;
const ROLE = body.dataset.role || "viewer";
const RANK = { viewer: 0, operator: 1, admin: 2 };
const REFRESH_MS = Math.max(1, Number(body.dataset.refresh || 5)) * 1000;
const csrf = () => (document.querySelector('meta[name="csrf-token"]') || {}).content || "";

// ------------------------------------------------------------------------------- theme
(function theme() {
  const saved = localStorage.getItem("theme");
  if (saved) document.documentElement.dataset.theme = saved;
  const button = document.getElementById("theme");
  if (!button) return;
  button.addEventListener("click", () => {
    const dark = document.documentElement.dataset.theme
      ? document.documentElement.dataset.theme === "dark"
      : matchMedia("(prefers-color-scheme: dark)").matches;
    const next = dark ? "light" : "dark";
    document.documentElement.dataset.theme = next;
    localStorage.setItem("theme", next);
  });
})();

// ------------------------------------------------------------------------------- helpers
function showError(message) {
  const el = document.getElementById("error");
  if (!el) return;
  el.textContent = message || "";
  el.hidden = !message;
}

async function api(path, options = {}) {
  const opts = { credentials: "same-origin", headers: {}, ...options };
  if (opts.method && opts.method !== "GET") {
    opts.headers["X-CSRF-Token"] = csrf();
    if (opts.json !== undefined) {
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(opts.json);
    }
  }
  const response = await fetch(path, opts);
  if (response.status === 401) {
    location.href = "/login?next=" + encodeURIComponent(location.pathname + location.search);
    throw new Error("session ended");
  }
  let data = null;
  try { data = await response.json(); } catch (_) { data = null; }
  if (!response.ok) {
    const err = new Error((data && data.error) || response.status + " " + response.statusText);
    err.status = response.status;
    throw err;
  }
  return data;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

function svgEl(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

function epoch(t) {
  if (typeof t === "number") return t;
  const ms = Date.parse(t);
  return Number.isNaN(ms) ? null : ms / 1000;
}

function localTime(t, withDate = true) {
  const s = epoch(t);
  if (s === null || s === undefined) return "-";
  const d = new Date(s * 1000);
  return withDate ? d.toLocaleString() : d.toLocaleTimeString();
}

function fmtNumber(v, unit = "") {
  if (v === null || v === undefined || Number.isNaN(v)) return "-";
  const abs = Math.abs(v);
  if (unit === "B") {
    const units = ["B", "KB", "MB", "GB", "TB"];
    let i = 0; let x = v;
    while (Math.abs(x) >= 1000 && i < units.length - 1) { x /= 1000; i++; }
    return (i ? x.toFixed(1) : String(Math.round(x))) + " " + units[i];
  }
  let text;
  if (abs >= 1e6) text = (v / 1e6).toFixed(1) + "M";
  else if (abs >= 1e4) text = (v / 1e3).toFixed(1) + "k";
  else if (abs >= 100 || Number.isInteger(v)) text = String(Math.round(v));
  else text = v.toFixed(abs < 1 ? 2 : 1);
  return unit ? text + " " + unit : text;
}

function color(i) { return "var(--s" + (i % 6) + ")"; }
function sevColor(s) { return "var(--sev-" + s + ")"; }

function sevBadge(s) { return el("span", { class: "sev sev-" + s, text: s }); }

function fillTable(id, rows) {
  const tbody = document.querySelector("#" + id + " tbody");
  tbody.replaceChildren(...rows.map((cells) => {
    const tr = el("tr");
    for (const c of cells) tr.append(c instanceof Node ? el("td", {}, c) : el("td", { text: c }));
    return tr;
  }));
}

function legend(items) {
  return el("div", { class: "legend" },
    ...items.map(([name, col]) => {
      const i = el("i"); i.style.background = col;
      return el("span", {}, i, name);
    }));
}

// ------------------------------------------------------------------------------- charts
const W = 560, H = 200, PAD_L = 62, PAD_B = 22, PAD_T = 8, PAD_R = 8;

function axes(svg, maxY, unit, x0, x1, xFmt) {
  const plotH = H - PAD_T - PAD_B;
  for (let i = 0; i <= 4; i++) {
    const y = PAD_T + plotH - (plotH * i) / 4;
    svg.append(svgEl("line", { x1: PAD_L, x2: W - PAD_R, y1: y, y2: y, class: "axis" }));
    svg.append(svgEl("text", { x: PAD_L - 4, y: y + 4, "text-anchor": "end" },
      fmtNumber((maxY * i) / 4, unit)));
  }
  if (x0 !== undefined) {
    svg.append(svgEl("text", { x: PAD_L, y: H - 6 }, xFmt(x0)));
    svg.append(svgEl("text", { x: W - PAD_R, y: H - 6, "text-anchor": "end" }, xFmt(x1)));
  }
}

function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

// series: {name: [[epochSeconds, value], ...]}
function lineChart(target, series, unit) {
  const names = Object.keys(series);
  const svg = svgEl("svg", { viewBox: `0 0 ${W} ${H}`, role: "img" });
  let t0 = Infinity, t1 = -Infinity, maxY = 0;
  for (const n of names) for (const [t, v] of series[n]) {
    t0 = Math.min(t0, t); t1 = Math.max(t1, t); maxY = Math.max(maxY, v);
  }
  maxY = niceMax(maxY);
  if (!names.length || t0 === Infinity) {
    svg.append(svgEl("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, "waiting for data"));
    target.replaceChildren(svg);
    return;
  }
  if (t1 === t0) t1 = t0 + 1;
  axes(svg, maxY, unit, t0, t1, (t) => localTime(t, false));
  const plotW = W - PAD_L - PAD_R, plotH = H - PAD_T - PAD_B;
  names.forEach((n, i) => {
    const pts = series[n].map(([t, v]) =>
      `${(PAD_L + ((t - t0) / (t1 - t0)) * plotW).toFixed(1)},${(PAD_T + plotH - (v / maxY) * plotH).toFixed(1)}`);
    if (pts.length === 1) pts.push(pts[0]);
    svg.append(svgEl("polyline", {
      points: pts.join(" "), fill: "none", stroke: color(i), "stroke-width": 2,
      "data-series": n,
    }));
  });
  target.replaceChildren(svg, legend(names.map((n, i) => [n, color(i)])));
}

// buckets: [label...]; series: {name: [count per bucket]} stacked in the order given.
function stackedBars(target, labels, series, colorOf) {
  const names = Object.keys(series);
  const totals = labels.map((_, i) => names.reduce((a, n) => a + (series[n][i] || 0), 0));
  const maxY = niceMax(Math.max(0, ...totals));
  const svg = svgEl("svg", { viewBox: `0 0 ${W} ${H}`, role: "img" });
  axes(svg, maxY, "", labels[0], labels[labels.length - 1], (x) => x);
  const plotW = W - PAD_L - PAD_R, plotH = H - PAD_T - PAD_B;
  const bw = plotW / Math.max(1, labels.length);
  labels.forEach((label, i) => {
    let y = PAD_T + plotH;
    names.forEach((n) => {
      const v = series[n][i] || 0;
      if (!v) return;
      const h = (v / maxY) * plotH;
      y -= h;
      const r = svgEl("rect", {
        x: (PAD_L + i * bw + 1).toFixed(1), y: y.toFixed(1), width: Math.max(1, bw - 2).toFixed(1),
        height: h.toFixed(1), fill: colorOf(n), "data-series": n,
      });
      r.append(svgEl("title", {}, `${label} ${n}: ${v}`));
      svg.append(r);
    });
  });
  target.replaceChildren(svg, legend(names.map((n) => [n, colorOf(n)])));
}

// items: [{label, value}] as horizontal bars, largest first.
function topBars(target, items, unit, onClick) {
  const rowH = 20;
  const h = Math.max(rowH, items.length * rowH) + 4;
  const svg = svgEl("svg", { viewBox: `0 0 ${W} ${h}`, role: "img" });
  if (!items.length) {
    svg.append(svgEl("text", { x: 4, y: 14 }, "no data in this window"));
  }
  const maxV = Math.max(1, ...items.map((x) => x.value));
  const labelW = 190, valueW = 80;
  items.forEach((item, i) => {
    const y = i * rowH + 2;
    const g = svgEl("g", { class: "bar", "data-key": item.label });
    g.append(svgEl("text", { x: 0, y: y + 14 }, String(item.label).slice(0, 30)));
    g.append(svgEl("rect", {
      x: labelW, y: y + 3, height: rowH - 6, fill: color(0),
      width: Math.max(1, ((W - labelW - valueW) * item.value) / maxV).toFixed(1),
    }));
    g.append(svgEl("text", { x: W - 2, y: y + 14, "text-anchor": "end" }, fmtNumber(item.value, unit)));
    if (onClick) { g.style.cursor = "pointer"; g.addEventListener("click", () => onClick(item)); }
    svg.append(g);
  });
  target.replaceChildren(svg);
}

// ------------------------------------------------------------------------------- refresh
function every(fn) {
  let timer = null;
  const run = async () => {
    try { await fn(); showError(""); } catch (e) { showError(String(e.message || e)); }
  };
  const schedule = () => {
    clearInterval(timer);
    timer = null;
    if (document.visibilityState === "visible") timer = setInterval(run, REFRESH_MS);
  };
  document.addEventListener("visibilitychange", () => { if (document.visibilityState === "visible") run(); schedule(); });
  run();
  schedule();
}

function hideForRole() {
  document.querySelectorAll("[data-needs]").forEach((node) => {
    if (RANK[ROLE] < RANK[node.dataset.needs]) node.remove();
  });
}

// ------------------------------------------------------------------------------- pages
const HISTORY = 120; // points kept per live series (~10 min at 5 s)

function rateTracker() {
  const last = {};
  const series = {};
  return (now, counters) => {
    for (const [name, value] of Object.entries(counters)) {
      const prev = last[name];
      last[name] = [now, value];
      if (!prev || now <= prev[0]) continue;
      const rate = Math.max(0, (value - prev[1]) / (now - prev[0]));
      (series[name] = series[name] || []).push([now, rate]);
      if (series[name].length > HISTORY) series[name].shift();
    }
    return series;
  };
}

function card(label, value, id) {
  return el("div", { class: "card", id: id || "" }, el("div", { class: "v", text: value }), el("div", { class: "k", text: label }));
}

function devicesOf(events) {
  const by = {};
  for (const e of events) {
    const obs = (e.observer && (e.observer.ip || e.observer.hostname)) || (e.host && e.host.hostname) || "?";
    const d = by[obs] || (by[obs] = { count: 0, last: 0, host: "", module: "", skew: null });
    d.count++;
    const t = epoch(e["@timestamp"]);
    const seen = epoch((e.event && (e.event.created || e.event.ingested)) || e["@timestamp"]);
    if (seen && seen > d.last) {
      d.last = seen;
      d.host = (e.host && e.host.hostname) || "";
      d.module = (e.event && (e.event.dataset || e.event.module)) || "";
      d.skew = t && seen ? t - seen : null;
    }
  }
  return by;
}

// Denied traffic is what the firewall decoders (netfilter, Cisco ASA/PIX, FortiGate) mark
// event.type=denied. One aggregate per refresh over the last hour, read at most
// DENIED_SCAN stored events (the API's scan budget): a busy box gets a partial count, said
// as such, rather than a slow overview.
const DENIED_SCAN = 50000;
async function topDenied(now) {
  const q = new URLSearchParams({ field: "source.ip", "event.type": "denied", since: String(now - 3600), until: String(now), limit: "10", max_scan: String(DENIED_SCAN) });
  const target = document.getElementById("top-denied");
  const note = document.getElementById("top-denied-note");
  let agg;
  try {
    agg = await api("/api/v1/events/aggregate?" + q);
  } catch (e) {
    if (e.status !== 400) throw e;
    // Neither field known yet: no decoder has stored a deny since the start.
    topBars(target, [], "");
    note.textContent = "no denied traffic stored yet";
    return;
  }
  topBars(target, agg.buckets.map((b) => ({ label: b.value, value: b.count })), "",
    (item) => { location.href = "/search?filters=" + encodeURIComponent("event.type=denied source.ip=" + item.label); });
  note.className = agg.complete ? "note" : "note partial";
  note.textContent = scanNote(agg, `${fmtNumber(agg.matched)} denied events in the last hour`);
}

async function overviewPage() {
  const rates = rateTracker();
  const losses = rateTracker();
  const lastChange = {};
  every(async () => {
    const ov = await api("/api/v1/console/overview");
    const counters = {};
    for (const [name, s] of Object.entries(ov.sources)) {
      counters[name] = s.received;
      if (!lastChange[name] || lastChange[name][1] !== s.received) lastChange[name] = [ov.now, s.received];
    }
    lineChart(document.getElementById("rate-sources"), rates(ov.now, counters), "/s");
    const lossTotals = Object.fromEntries(Object.entries(ov.loss).filter(([k]) => !k.includes("{")));
    lineChart(document.getElementById("loss-trend"), losses(ov.now, lossTotals), "/s");
    const open = Object.values(ov.open_by_severity).reduce((a, b) => a + b, 0);
    document.getElementById("cards").replaceChildren(
      card("events stored", fmtNumber(ov.events_stored), "card-stored"),
      card("open incidents", String(open), "card-open"),
      ...SEVERITIES.filter((s) => ov.open_by_severity[s]).map((s) => card("open " + s, String(ov.open_by_severity[s]))),
    );
    const hours = [];
    for (let i = 0; i < 24; i++) {
      hours.push(new Date((ov.incidents_by_hour.first_hour + i * 3600) * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }));
    }
    stackedBars(document.getElementById("incidents-severity"), hours, ov.incidents_by_hour.series, sevColor);
    fillTable("open-incidents", ov.open_incidents.map((i) => [
      sevBadge(i.severity), el("a", { href: "/incidents/" + encodeURIComponent(i.id), text: i.title || i.id }),
      localTime(i.last_seen)]));
    fillTable("loss", Object.entries(ov.loss).filter(([k, v]) => v || !k.includes("{")).map(([k, v]) => [k, fmtNumber(v)]));
    fillTable("backlogs", ov.backlogs.map((b) => [b.queue, fmtNumber(b.items), b.state]));
    const silent = Object.keys(ov.sources).filter((n) => ov.now - lastChange[n][0] >= 60);
    document.getElementById("silent").replaceChildren(
      ...(silent.length ? silent.map((n) => el("li", { text: `${n}: nothing for ${Math.round(ov.now - lastChange[n][0])} s` }))
        : [el("li", { text: "none (watched since this page opened)" })]));
    // Per device rate, estimated from the newest 500 events: each device's share of them
    // over the time they span (received time), or over the last minute if they span more.
    const events = (await api("/api/v1/events?limit=500")).events;
    const received = events.map((e) => epoch(e.event && e.event.created)).filter((t) => t);
    const span = received.length > 1 ? Math.max(1, Math.min(60, ov.now - Math.min(...received))) : 60;
    const recent = events.filter((e) => epoch(e.event && e.event.created) >= ov.now - span);
    const devices = devicesOf(recent);
    topBars(document.getElementById("rate-devices"),
      Object.entries(devices).map(([k, d]) => ({ label: k, value: d.count / span })).sort((a, b) => b.value - a.value).slice(0, 10), "/s");
    await topDenied(ov.now);
    try {
      const talkers = await api("/api/v1/flows/top?by=source.ip&limit=10");
      topBars(document.getElementById("top-talkers"), talkers.top.map((t) => ({ label: t.key, value: t.bytes })), "B",
        (item) => { location.href = "/flows?ip=" + encodeURIComponent(item.label); });
      const ports = await api("/api/v1/flows/top?by=destination.port&limit=10");
      topBars(document.getElementById("top-ports"), ports.top.map((t) => ({ label: t.key, value: t.bytes })), "B");
    } catch (e) { /* flows may be off: the panels say "no data" */ }
  });
}

function sortable(table, getRows, render) {
  let key = null, dir = -1;
  table.querySelectorAll("th[data-key]").forEach((th) => th.addEventListener("click", () => {
    dir = key === th.dataset.key ? -dir : -1;
    key = th.dataset.key;
    render(sortRows(getRows()));
  }));
  const rank = (v) => (SEVERITIES.includes(v) ? SEVERITIES.indexOf(v) : v);
  function sortRows(rows) {
    if (!key) return rows;
    return [...rows].sort((a, b) => {
      const x = rank(a[key]), y = rank(b[key]);
      return (x > y ? 1 : x < y ? -1 : 0) * dir;
    });
  }
  return sortRows;
}

async function incidentsPage() {
  const form = document.getElementById("filters");
  const params = new URLSearchParams(location.search);
  try {
    const rules = (await api("/api/v1/rules")).loaded.sort((a, b) => String(a.title).localeCompare(String(b.title)));
    form.elements.rule.append(...rules.map((r) => el("option", { value: r.id, text: r.title || r.id })));
  } catch (e) { /* correlation off: the filter stays "any" */ }
  for (const [k, v] of params) if (form.elements[k]) form.elements[k].value = v;
  let rows = [];
  const render = (list) => fillTable("incident-list", list.map((i) => [
    sevBadge(i.severity), i.status,
    el("a", { href: "/incidents/" + encodeURIComponent(i.id), text: i.title || i.id, class: "incident-link" }),
    i.group_key, el("span", { class: "risk", text: i.risk_score === undefined || i.risk_score === null ? "-" : String(i.risk_score) }),
    String(i.hit_count), localTime(i.last_seen)]));
  const sortRows = sortable(document.getElementById("incident-list"), () => rows, render);
  const load = async () => {
    const q = new URLSearchParams();
    // The server sorts (so "risk score" brings the 500 riskiest, not a sort of the newest 500).
    for (const k of ["status", "severity", "rule", "sort"]) if (form.elements[k].value) q.set(k, form.elements[k].value);
    q.set("limit", "500");
    const data = await api("/api/v1/incidents?" + q);
    rows = data.incidents;
    render(sortRows(rows));
  };
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const q = new URLSearchParams(new FormData(form));
    history.replaceState(null, "", "?" + q);
    load().catch((e) => showError(e.message));
  });
  every(load);
}

function groupIp(doc) {
  const m = /(?:ip|address)=([0-9a-fA-F:.]+)/.exec(doc.group_key || "");
  return m ? m[1] : null;
}

// The risk score's reasons (what moved the score, what moved the severity) and its inputs.
function renderRisk(doc) {
  const risk = doc.risk || {};
  const inputs = risk.inputs || {};
  const pairs = [["score", doc.risk_score === undefined || doc.risk_score === null ? "not scored" : `${doc.risk_score} / 100`]];
  for (const r of risk.reasons || []) pairs.push(["score reason", r]);
  if (risk.severity_base && risk.severity_base !== doc.severity) pairs.push(["rule's severity", risk.severity_base]);
  for (const r of risk.severity_reasons || []) pairs.push(["severity reason", r]);
  if (inputs.vuln_match) pairs.push(["vulnerability match", inputs.vuln_match + (inputs.cves && inputs.cves.length ? ` (${inputs.cves.join(", ")})` : "")]);
  if (risk.unmatched_hits) pairs.push(["hits on targets not vulnerable", String(risk.unmatched_hits)]);
  document.getElementById("risk").replaceChildren(...pairs.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]));
}

// Enrichment on the evidence events: asset, direction, threat intel and geo fields, each
// with its distinct values (how many evidence events carry each).
const CONTEXT_PREFIXES = ["source.asset.", "destination.asset.", "network.direction", "threat.indicator.", "threat.feed.name", "source.geo.", "destination.geo."];
function renderContext(events) {
  const seen = {};
  for (const e of events) {
    for (const [k, v] of Object.entries(flatten(e))) {
      if (v === null || v === undefined || v === "" || !CONTEXT_PREFIXES.some((p) => k.startsWith(p))) continue;
      const values = seen[k] || (seen[k] = {});
      values[v] = (values[v] || 0) + 1;
    }
  }
  const keys = Object.keys(seen).sort();
  const list = document.getElementById("context");
  if (!keys.length) {
    list.replaceChildren(el("dt", { text: "none" }), el("dd", { text: "no asset, intel or geo fields on the evidence" }));
    return;
  }
  list.replaceChildren(...keys.flatMap((k) => {
    const values = Object.entries(seen[k]).sort((a, b) => b[1] - a[1]).slice(0, 5);
    return [el("dt", { text: k }), el("dd", { "data-field": k, text: values.map(([v, n]) => (n > 1 ? `${v} (${n})` : v)).join(", ") })];
  }));
}

async function incidentPage() {
  hideForRole();
  const id = decodeURIComponent(location.pathname.split("/").pop());
  const load = async () => {
    const doc = await api("/api/v1/incidents/" + encodeURIComponent(id));
    document.getElementById("title").textContent = doc.title || doc.id;
    document.getElementById("facts").replaceChildren(
      card("severity", doc.severity), card("status", doc.status, "status"),
      card("hits", fmtNumber(doc.hit_count)), card("first seen", localTime(doc.first_seen)),
      card("last seen", localTime(doc.last_seen)), card("assignee", doc.assignee || "-"),
      card("risk score", doc.risk_score === undefined || doc.risk_score === null ? "-" : String(doc.risk_score), "risk-score"));
    renderRisk(doc);
    const why = document.getElementById("why");
    const rule = doc.rule || {};
    const pairs = [["rule", `${rule.title || ""} (${rule.id || "?"})`], ["level", rule.level || ""],
      ["tags", (rule.tags || []).join(", ")], ["group key", doc.group_key || ""],
      ["hits", String(doc.hit_count)], ["suppressed hits", String(doc.suppressed_count || 0)],
      ["window", `${localTime(doc.first_seen)} - ${localTime(doc.last_seen)}`],
      ["revision", String(doc.revision)]];
    // A correlation's condition and what met it (detail: value, condition, timespan; for a
    // boolean condition the rules that occurred and those absent).
    const detail = doc.detail || {};
    if (detail.condition !== undefined) {
      const cond = detail.condition;
      pairs.push(["condition", typeof cond === "string" ? cond : Object.entries(cond).map(([op, t]) => `${op} ${t}`).join(" and ")]);
      if (detail.value !== undefined) pairs.push(["value", String(detail.value)]);
      if (detail.occurred) pairs.push(["occurred", detail.occurred.join(", ") || "-"]);
      if (detail.absent && detail.absent.length) pairs.push(["absent", detail.absent.join(", ")]);
      if (detail.timespan !== undefined) pairs.push(["timespan", `${detail.timespan} s`]);
    }
    why.replaceChildren(...pairs.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]));
    const samples = (doc.evidence && doc.evidence.samples) || [];
    document.getElementById("evidence").replaceChildren(...samples.map((s) => el("li", { text: s })));
    const ids = (doc.evidence && doc.evidence.event_ids) || [];
    const hist = document.getElementById("history");
    hist.replaceChildren(...(doc.history || []).map((h) =>
      el("li", { text: `${localTime(h.at)} ${h.action}${h.by ? " by " + h.by : ""}${h.note ? ": " + h.note : ""}` })));
    // The evidence as a timeline: the event times of its stored events, per minute.
    if (ids.length) {
      const evs = (await api(`/api/v1/incidents/${encodeURIComponent(id)}/events`)).events;
      renderContext(evs);
      const times = evs.map((e) => epoch(e["@timestamp"])).filter((t) => t !== null);
      if (times.length) {
        const t0 = Math.min(...times), t1 = Math.max(...times) + 1;
        const n = Math.min(30, Math.ceil(t1 - t0)), step = (t1 - t0) / n;
        const counts = new Array(n).fill(0);
        for (const t of times) counts[Math.min(n - 1, Math.floor((t - t0) / step))]++;
        const labels = counts.map((_, i) => localTime(t0 + i * step, false));
        stackedBars(document.getElementById("timeline"), labels, { "evidence events": counts }, () => color(0));
      }
    } else {
      renderContext([]);
    }
    const delivery = await api(`/api/v1/console/incidents/${encodeURIComponent(id)}/delivery`);
    fillTable("delivery", delivery.deliveries.length
      ? delivery.deliveries.map((d) => [d.upstream, d.state, d.queued.map((q) => `r${q.revision} ${q.state}, ${q.attempts} attempts${q.last_error ? ": " + q.last_error : ""}`).join("; ") || "-"])
      : [["no upstream configured", "-", "-"]]);
    const ip = groupIp(doc);
    const related = document.getElementById("related");
    if (ip) {
      document.getElementById("flows-link").href = "/flows?ip=" + encodeURIComponent(ip);
      const all = (await api("/api/v1/incidents?limit=200")).incidents.filter((o) => o.id !== doc.id && (o.group_key || "").includes(ip));
      related.replaceChildren(...all.slice(0, 20).map((o) => el("li", {}, el("a", { href: "/incidents/" + encodeURIComponent(o.id), text: `${o.title} (${o.status})` }))));
    } else {
      related.replaceChildren(el("li", { text: "no address in the group key" }));
    }
  };
  const result = document.getElementById("action-result");
  document.querySelectorAll("[data-action]").forEach((button) => button.addEventListener("click", async () => {
    const action = button.dataset.action;
    const payload = action === "assign" ? { assignee: document.getElementById("assignee").value }
      : action === "comment" ? { text: document.getElementById("comment").value }
        : { note: document.getElementById("note").value };
    try {
      await api(`/api/v1/incidents/${encodeURIComponent(id)}/${action}`, { method: "POST", json: payload });
      result.textContent = action + ": done";
      await load();
    } catch (e) {
      result.textContent = action + ": " + (e.status === 404 || e.status === 405 ? "not available on this appliance" : e.message);
    }
  }));
  every(load);
}

function toEpochInput(value) {
  if (!value) return null;
  const ms = new Date(value).getTime();
  return Number.isNaN(ms) ? null : String(ms / 1000);
}

function flatten(obj, prefix = "", out = {}) {
  for (const [k, v] of Object.entries(obj || {})) {
    const key = prefix ? prefix + "." + k : k;
    if (v && typeof v === "object" && !Array.isArray(v)) flatten(v, key, out);
    else out[key] = Array.isArray(v) ? v.join(",") : v;
  }
  return out;
}

function download(name, type, text) {
  const a = el("a", { href: URL.createObjectURL(new Blob([text], { type })), download: name });
  document.body.append(a);
  a.click();
  a.remove();
}

function csvCell(v) {
  const s = v === null || v === undefined ? "" : String(v);
  // A leading = + - @ would be a formula to a spreadsheet: quote it as text.
  const safe = /^[=+\-@\t\r]/.test(s) ? "'" + s : s;
  return /[",\n\r]/.test(safe) ? '"' + safe.replace(/"/g, '""') + '"' : safe;
}

const TOP_FIELDS = ["observer.ip", "host.hostname", "event.module", "event.dataset", "source.ip", "user.name", "event.action", "log.level"];

// About 60 bars over the range, on a round interval (the API allows at most 2000 buckets).
function histogramInterval(span) {
  const steps = [1, 5, 10, 30, 60, 300, 600, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 7 * 86400, 30 * 86400];
  return steps.find((s) => span / s <= 60) || Math.ceil(span / 60);
}

// What an aggregation answer covered: a scan budget reached is said, never hidden.
function scanNote(answer, text) {
  if (answer.complete) return text;
  return (text ? text + "; " : "") + `partial: the scan budget ran out (${fmtNumber(answer.scanned)} stored events read), older events are not counted`;
}

async function searchPage() {
  const form = document.getElementById("search-form");
  const params = new URLSearchParams(location.search);
  for (const [k, v] of params) if (form.elements[k]) form.elements[k].value = v;
  let events = [];
  let latest = 0; // a slower earlier search must not overwrite a later one's results
  const run = async () => {
    const mine = ++latest;
    const q = new URLSearchParams();
    for (const name of ["q", "source.ip", "observer.ip", "host.hostname", "event.module", "limit"]) {
      if (form.elements[name].value) q.set(name, form.elements[name].value);
    }
    for (const name of ["since", "until"]) {
      const v = toEpochInput(form.elements[name].value);
      if (v) q.set(name, v);
    }
    for (const pair of form.elements.filters.value.split(/\s+/)) {
      const at = pair.indexOf("=");
      if (at > 0) q.set(pair.slice(0, at), pair.slice(at + 1));
    }
    const what = q.get("q") ? ` matching "${q.get("q")}"` : "";
    const data = await api("/api/v1/events?" + q);
    if (mine !== latest) return;
    events = data.events;
    document.getElementById("result-count").textContent = `(${events.length} events${what}${data.next_cursor ? ", more exist" : ""})`;
    fillTable("results", events.map((e) => [
      localTime(e["@timestamp"]), (e.observer && e.observer.ip) || (e.host && e.host.hostname) || "",
      (e.event && e.event.module) || "", el("span", { class: "msg", text: e.message || (e.event && e.event.original) || "" })]));
    // The histogram and the top values come from the server's aggregations over the whole
    // range (not only this page of results), each bounded by the API's scan budget.
    const agg = new URLSearchParams(q);
    agg.delete("limit");
    const now = Date.now() / 1000;
    const until = Number(agg.get("until") || now);
    // No From: the last 24 h, or back to the oldest match when that is older (a device's
    // clock or an imported file can put events far back). The oldest listed event is that
    // when the list holds every match; else one coarse pass (days, ~5 years) finds it.
    const listed = events.map((e) => epoch(e["@timestamp"])).filter((t) => t !== null);
    let since = Number(agg.get("since") || Math.min(until - 86400, ...listed.map(Math.floor)));
    if (!agg.get("since") && data.next_cursor) {
      const coarse = new URLSearchParams(agg);
      coarse.set("since", String(until - 1999 * 86400));
      coarse.set("until", String(until));
      coarse.set("interval", "86400");
      const days = await api("/api/v1/events/histogram?" + coarse);
      const first = days.buckets.find((b) => b.count);
      if (first) since = Math.min(since, epoch(first.start));
    }
    agg.set("since", String(since));
    agg.set("until", String(until));
    agg.set("interval", String(histogramInterval(until - since)));
    const hist = await api("/api/v1/events/histogram?" + agg);
    if (mine !== latest) return;
    const chart = document.getElementById("histogram");
    if (hist.matched) {
      const labels = hist.buckets.map((b) => localTime(b.start, until - since > 86400));
      stackedBars(chart, labels, { events: hist.buckets.map((b) => b.count) }, () => color(0));
    } else {
      chart.replaceChildren(el("p", { text: "no events in this range" }));
    }
    const note = document.getElementById("histogram-note");
    note.className = hist.complete ? "note" : "note partial";
    note.textContent = scanNote(hist, `${fmtNumber(hist.matched)} events from ${localTime(hist.since)} to ${localTime(hist.until)}, ${fmtNumber(hist.interval, "s")} per bar`);
    agg.delete("interval");
    agg.set("limit", "5");
    const answers = await Promise.all(TOP_FIELDS.map(async (f) => {
      const one = new URLSearchParams(agg);
      one.set("field", f);
      try { return await api("/api/v1/events/aggregate?" + one); } catch (e) {
        if (e.status === 400) return null; // a field no stored event has yet
        throw e;
      }
    }));
    if (mine !== latest) return;
    const panel = document.getElementById("top-values");
    const partial = answers.find((a) => a && !a.complete);
    panel.replaceChildren(
      ...(partial ? [el("p", { class: "partial", id: "top-values-note", text: scanNote(partial, "") })] : []),
      ...answers.map((a) => {
        if (!a || !a.buckets.length) return el("span");
        return el("div", { class: "field", "data-field": a.field }, el("h3", { text: a.field }),
          el("ul", {}, ...a.buckets.map((b) => el("li", { text: `${b.value} (${fmtNumber(b.count)})` })),
            ...(a.other ? [el("li", { class: "other", text: `others (${fmtNumber(a.other)})` })] : [])));
      }));
  };
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    run().catch((e) => showError(e.message));
  });
  document.getElementById("export-json").addEventListener("click", () =>
    download("events.json", "application/json", JSON.stringify(events, null, 1)));
  document.getElementById("export-csv").addEventListener("click", () => {
    const flat = events.map((e) => flatten(e));
    const cols = [...new Set(flat.flatMap((e) => Object.keys(e)))].sort();
    const lines = [cols.map(csvCell).join(",")].concat(flat.map((e) => cols.map((c) => csvCell(e[c])).join(",")));
    download("events.csv", "text/csv", lines.join("\r\n") + "\r\n");
  });
  run().catch((e) => showError(e.message));
}

async function flowsPage() {
  const form = document.getElementById("flow-form");
  const params = new URLSearchParams(location.search);
  for (const [k, v] of params) if (form.elements[k]) form.elements[k].value = v;
  const drill = (item) => { form.elements.ip.value = item.label; load().catch((e) => showError(e.message)); };
  const portHistory = {};
  const load = async () => {
    const since = String(Date.now() / 1000 - Number(form.elements.window.value));
    const top = async (by) => (await api(`/api/v1/flows/top?by=${by}&limit=10&since=${since}`)).top.map((t) => ({ label: t.key, value: t.bytes }));
    topBars(document.getElementById("flow-talkers"), await top("source.ip"), "B", drill);
    topBars(document.getElementById("flow-dests"), await top("destination.ip"), "B", drill);
    topBars(document.getElementById("flow-convs"), await top("conversation"), "B");
    const ports = await top("destination.port");
    topBars(document.getElementById("flow-ports"), ports, "B");
    // Ports over time: the last 12 five-minute windows, one query each (bounded).
    const now = Math.floor(Date.now() / 1000 / 300) * 300;
    const series = {};
    for (const p of ports.slice(0, 5)) series[p.label] = [];
    for (let i = 11; i >= 0; i--) {
      const s = now - i * 300;
      const key = String(s);
      if (!portHistory[key] || i === 0) {
        portHistory[key] = (await api(`/api/v1/flows/top?by=destination.port&limit=50&since=${s}&until=${s + 300}`)).top;
      }
      for (const p of Object.keys(series)) {
        const hit = portHistory[key].find((t) => t.key === p);
        series[p].push([s, hit ? hit.bytes / 300 : 0]);
      }
    }
    lineChart(document.getElementById("flow-ports-time"), series, "B/s");
    const ip = form.elements.ip.value.trim();
    if (ip) {
      const flows = (await api(`/api/v1/flows?ip=${encodeURIComponent(ip)}&limit=100&since=${since}`)).flows;
      fillTable("flow-list", flows.map((f) => [localTime((f.event && f.event.start) || f["@timestamp"]),
        `${(f.source || {}).ip || ""}:${(f.source || {}).port || ""}`, `${(f.destination || {}).ip || ""}:${(f.destination || {}).port || ""}`,
        (f.network || {}).transport || "", fmtNumber((f.network || {}).bytes || 0, "B")]));
    }
  };
  form.addEventListener("submit", (ev) => { ev.preventDefault(); load().catch((e) => showError(e.message)); });
  every(load);
}

async function sourcesPage() {
  const rates = rateTracker();
  const lastChange = {};
  every(async () => {
    const ov = await api("/api/v1/console/overview");
    const counters = {};
    for (const [n, s] of Object.entries(ov.sources)) {
      counters[n] = s.received;
      if (!lastChange[n] || lastChange[n][1] !== s.received) lastChange[n] = [ov.now, s.received];
    }
    const series = rates(ov.now, counters);
    fillTable("source-list", Object.entries(ov.sources).map(([n, s]) => {
      const pts = series[n] || [];
      return [n, fmtNumber(s.received), pts.length ? fmtNumber(pts[pts.length - 1][1]) : "-", fmtNumber(s.dropped), localTime(lastChange[n][0])];
    }));
    const devices = devicesOf((await api("/api/v1/events?limit=1000")).events);
    fillTable("device-list", Object.entries(devices).sort((a, b) => b[1].last - a[1].last).map(([k, d]) => [
      k, d.host, d.module, fmtNumber(d.count), localTime(d.last), d.skew === null ? "-" : fmtNumber(d.skew, "s")]));
  });
}

async function rulesPage() {
  let rows = [];
  let sortRows = (x) => x;
  const tester = (r) => {
    const button = el("button", { type: "button", class: "rule-test", "data-rule": r.id, text: "Test" });
    button.addEventListener("click", async () => {
      const panel = document.getElementById("rule-test");
      panel.hidden = false;
      document.getElementById("rule-test-title").textContent = "Test: " + (r.title || r.id);
      document.getElementById("rule-test-summary").textContent = "running over the newest 1000 events...";
      try {
        const t = await api(`/api/v1/rules/${encodeURIComponent(r.id)}/test?limit=1000`);
        const raised = t.alerts.filter((a) => !a.suppressed);
        document.getElementById("rule-test-summary").textContent =
          `matched ${t.matched} of the newest ${t.events} events; would raise ${raised.length} alert(s)` +
          (raised.length < t.alerts.length ? ` (${t.alerts.length - raised.length} more within the cooldown, counted on those)` : "");
        fillTable("rule-test-alerts", raised.map((a) => [a.group_key, String(a.count), localTime(a.first_seen), localTime(a.last_seen)]));
        document.getElementById("rule-test-events").replaceChildren(...t.matched_events.map((e) => el("li", { text: `${localTime(e["@timestamp"])} ${e.message}` })));
      } catch (e) { document.getElementById("rule-test-summary").textContent = e.message; }
      panel.scrollIntoView();
    });
    return button;
  };
  const toggle = (r) => {
    const button = el("button", { type: "button", class: "rule-toggle", "data-rule": r.id, text: r.enabled ? "Disable" : "Enable" });
    button.addEventListener("click", async () => {
      try {
        await api(`/api/v1/rules/${encodeURIComponent(r.id)}/${r.enabled ? "disable" : "enable"}`, { method: "POST", json: {} });
        await load();
      } catch (e) { showError(e.message); }
    });
    return button;
  };
  const render = (list) => fillTable("rule-list", list.map((r) => [r.id, r.title || "", r.level || "",
    fmtNumber(r.hits), fmtNumber(r.alerts), fmtNumber(r.incidents),
    r.incidents ? Math.round(r.fp_share * 100) + "%" : "-", r.last_fired ? localTime(r.last_fired) : "never",
    RANK[ROLE] >= RANK.operator ? el("span", {}, (r.enabled ? "yes " : "no "), toggle(r)) : (r.enabled ? "yes" : "no"),
    tester(r)]));
  sortRows = sortable(document.getElementById("rule-list"), () => rows, render);
  const load = async () => {
    const data = await api("/api/v1/rules");
    const outcomes = (await api("/api/v1/console/rule-outcomes")).rules;
    rows = data.loaded.map((r) => {
      const o = outcomes[r.id] || { incidents: 0, false_positives: 0 };
      return { ...r, incidents: o.incidents, fp_share: o.incidents ? o.false_positives / o.incidents : 0 };
    });
    render(sortRows(rows));
    document.getElementById("rule-failures").replaceChildren(...data.failed.map((f) => el("li", { text: `${f.path || ""}: ${f.reason || f.error || JSON.stringify(f)}` })));
  };
  every(load);
}

async function auditPage() {
  every(async () => {
    const people = await api("/api/v1/users");
    fillTable("user-list", people.users.map((x) => [x.name, x.role, localTime(x.created), String(x.sessions), x.last_seen ? localTime(x.last_seen) : "-"]));
    const data = await api("/api/v1/audit?limit=200");
    fillTable("audit-list", data.entries.map((a) => [localTime(a.ts), a.actor, a.remote, a.action, a.target, a.detail]));
  });
}

const PAGES = {
  overview: overviewPage, incidents: incidentsPage, incident: incidentPage, search: searchPage,
  flows: flowsPage, sources: sourcesPage, rules: rulesPage, audit: auditPage,
};
if (PAGES[body.dataset.page]) PAGES[body.dataset.page]();
