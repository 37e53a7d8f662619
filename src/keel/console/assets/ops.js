// The operator console: polls /ops/state with the operator token and renders it.
// Every value reaches the page through textContent, never as HTML: organisation ids,
// check outputs and reasons are data, not markup.
"use strict";

const REFRESH_MS = 5000;
const HISTORY = 60;
const TOKEN_KEY = "keel-ops-token";
const samples = { ready: [], breaches: [], budget: {} };
const SVG = "http://www.w3.org/2000/svg";

function el(id) { return document.getElementById(id); }

function takeTokenFromFragment() {
  const match = /(?:^#|&)token=([^&]+)/.exec(window.location.hash);
  if (match) {
    sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(match[1]));
    window.history.replaceState(null, "", window.location.pathname + window.location.search);
  }
}

function cell(row, value, className) {
  const td = document.createElement("td");
  td.textContent = value === null || value === undefined ? "" : String(value);
  if (className) { td.className = className; }
  row.appendChild(td);
  return td;
}

function fill(id, items, columns) {
  const body = el(id);
  body.replaceChildren();
  for (const item of items || []) {
    const row = document.createElement("tr");
    for (const column of columns) { column(row, item); }
    body.appendChild(row);
  }
  if (!items || items.length === 0) {
    const row = document.createElement("tr");
    const td = cell(row, "none", "muted");
    td.colSpan = 8;
    body.appendChild(row);
  }
}

function badge(id, status) {
  const node = el(id);
  node.textContent = status;
  node.className = "badge " + status;
}

function plot(id, values) {
  const svg = el(id);
  svg.replaceChildren();
  if (values.length < 2) { return; }
  const top = Math.max(1, ...values);
  const step = 300 / (HISTORY - 1);
  const points = values.map((v, i) => `${(i * step).toFixed(1)},${(58 - (v / top) * 56).toFixed(1)}`);
  const line = document.createElementNS(SVG, "polyline");
  line.setAttribute("points", points.join(" "));
  svg.appendChild(line);
}

function remember(series, value) {
  series.push(value);
  if (series.length > HISTORY) { series.shift(); }
}

function percent(value, digits) {
  return value === null || value === undefined ? "-" : `${(value * 100).toFixed(digits)} %`;
}

// Burn rate per window as bars; the dashed line is 1 (the budget spent exactly over the period).
function bars(svg, windows) {
  svg.replaceChildren();
  const rates = windows.map((w) => (w.burn_rate === null ? 0 : w.burn_rate));
  const top = Math.max(2, ...rates);
  const width = 300 / windows.length;
  windows.forEach((w, i) => {
    const height = (rates[i] / top) * 70;
    const bar = document.createElementNS(SVG, "rect");
    bar.setAttribute("x", (i * width + 4).toFixed(1));
    bar.setAttribute("y", (78 - height).toFixed(1));
    bar.setAttribute("width", (width - 8).toFixed(1));
    bar.setAttribute("height", height.toFixed(1));
    bar.setAttribute("class", rates[i] > 1 ? "bar over" : "bar");
    bar.dataset.window = w.window;
    bar.dataset.burnRate = String(w.burn_rate);
    svg.appendChild(bar);
    const label = document.createElementNS(SVG, "text");
    label.setAttribute("x", (i * width + width / 2).toFixed(1));
    label.setAttribute("y", "92");
    label.setAttribute("text-anchor", "middle");
    label.textContent = w.window;
    svg.appendChild(label);
  });
  const one = document.createElementNS(SVG, "line");
  const y = (78 - (1 / top) * 70).toFixed(1);
  one.setAttribute("x1", "0"); one.setAttribute("x2", "300");
  one.setAttribute("y1", y); one.setAttribute("y2", y);
  one.setAttribute("class", "one");
  svg.appendChild(one);
}

function renderSlos(slos) {
  const box = el("slos");
  box.replaceChildren();
  for (const slo of slos || []) {
    const part = document.createElement("div");
    part.className = "slo";
    part.dataset.slo = slo.slo;
    const title = document.createElement("h3");
    title.textContent = `${slo.slo} (${slo.kind}, target ${slo.target} over ${slo.period})`;
    part.appendChild(title);
    const left = document.createElement("p");
    left.append("Error budget left: ");
    const value = document.createElement("strong");
    value.className = "budget";
    value.id = `budget-${slo.slo}`;
    value.dataset.value = String(slo.budget_remaining);
    value.textContent = percent(slo.budget_remaining, 1);
    left.appendChild(value);
    const firing = slo.alerts.filter((a) => a.firing).map((a) => a.alert);
    left.append(firing.length ? ` · firing: ${firing.join(", ")}` : " · no alert firing");
    part.appendChild(left);

    const table = document.createElement("table");
    const head = document.createElement("tr");
    for (const name of ["window", "requests", "bad", "error ratio", "burn rate"]) {
      const th = document.createElement("th");
      th.textContent = name;
      head.appendChild(th);
    }
    table.appendChild(head);
    const body = document.createElement("tbody");
    for (const w of slo.windows) {
      const row = document.createElement("tr");
      cell(row, w.window); cell(row, w.total); cell(row, w.total - w.good);
      cell(row, percent(w.error_ratio, 3));
      cell(row, w.burn_rate === null ? "-" : `${w.burn_rate.toFixed(2)}x`, w.burn_rate > 1 ? "fail" : "");
      body.appendChild(row);
    }
    table.appendChild(body);
    part.appendChild(table);

    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", "0 0 300 96");
    svg.setAttribute("class", "chart bars");
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", `${slo.slo} burn rate by window`);
    bars(svg, slo.windows);
    part.appendChild(svg);

    const series = samples.budget[slo.slo] || (samples.budget[slo.slo] = []);
    remember(series, slo.budget_remaining === null ? 1 : slo.budget_remaining);
    const trend = document.createElementNS(SVG, "svg");
    trend.setAttribute("viewBox", "0 0 300 60");
    trend.setAttribute("class", "chart");
    trend.id = `chart-budget-${slo.slo}`;
    part.appendChild(trend);
    box.appendChild(part);
    plot(trend.id, series.map((v) => Math.max(0, v)));
  }
}

function render(state) {
  const service = state.service || {};
  el("service").textContent =
    `${service.service_id} ${service.version} · release ${service.release_id} · ${service.git_sha}`;
  el("updated").textContent = `updated ${state.generated_at}`;
  const errors = Object.entries(state.errors || {}).map(([k, v]) => `${k}: ${v}`);
  el("errors").textContent = errors.length ? "Not read: " + errors.join("; ") : "";

  renderSlos(state.slos);

  const readiness = state.readiness || { status: "unknown", checks: [] };
  badge("status", readiness.status);
  badge("readiness-status", readiness.status);
  fill("readiness", readiness.checks, [
    (r, c) => cell(r, c.name), (r, c) => cell(r, c.component_type),
    (r, c) => cell(r, c.status, c.status), (r, c) => cell(r, c.output),
  ]);

  const jobs = state.jobs || { queues: [], dead: null };
  el("dead-jobs").textContent = jobs.dead === null ? "?" : String(jobs.dead);
  el("dead-jobs").dataset.value = jobs.dead === null ? "" : String(jobs.dead);
  fill("queues", jobs.queues, [
    (r, q) => cell(r, q.queue), (r, q) => cell(r, q.depth.ready || 0),
    (r, q) => cell(r, q.depth.running || 0), (r, q) => cell(r, q.depth.retrying || 0),
    (r, q) => cell(r, q.depth.dead || 0), (r, q) => cell(r, q.oldest_ready_age_seconds),
  ]);
  remember(samples.ready, (jobs.queues || []).reduce((n, q) => n + (q.depth.ready || 0), 0));
  plot("chart-ready", samples.ready);

  fill("breakers", state.breakers, [
    (r, b) => cell(r, b.name), (r, b) => cell(r, b.state, b.state),
    (r, b) => cell(r, b.changed_at), (r, b) => cell(r, b.reason),
  ]);
  fill("breaches", state.breaches, [
    (r, b) => cell(r, b.limit), (r, b) => cell(r, b.org_id),
    (r, b) => cell(r, b.breaches), (r, b) => cell(r, b.last_at),
  ]);
  remember(samples.breaches, (state.breaches || []).reduce((n, b) => n + b.breaches, 0));
  plot("chart-breaches", samples.breaches);
  fill("noisy", state.noisy, [
    (r, f) => cell(r, f.org_id), (r, f) => cell(r, f.reason), (r, f) => cell(r, f.value),
    (r, f) => cell(r, f.threshold), (r, f) => cell(r, f.flagged_at),
  ]);
  fill("deployments", state.deployments, [
    (r, d) => cell(r, d.id), (r, d) => cell(r, d.environment), (r, d) => cell(r, d.version),
    (r, d) => cell(r, d.strategy), (r, d) => cell(r, d.state),
    (r, d) => cell(r, `${d.approvals.length}/${d.required_approvals}`),
  ]);
}

function showLogin(message) {
  el("console").hidden = true;
  el("login").hidden = false;
  el("login-error").textContent = message || "";
  badge("status", "locked");
}

async function refresh() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (!token) {
    if (el("login").hidden) { showLogin(""); }  // keep a refusal's message on screen
    return;
  }
  let answer;
  try {
    answer = await fetch("/ops/state", {
      headers: { Authorization: "Bearer " + token, Accept: "application/json" },
      cache: "no-store",
    });
  } catch (error) {
    el("errors").textContent = "Keel did not answer: " + error;
    badge("status", "unreachable");
    return;
  }
  if (answer.status === 401) {
    sessionStorage.removeItem(TOKEN_KEY);
    showLogin("That token was refused.");
    return;
  }
  if (!answer.ok) {
    el("errors").textContent = `Keel answered ${answer.status}`;
    return;
  }
  el("login").hidden = true;
  el("console").hidden = false;
  render(await answer.json());
  document.body.dataset.loaded = "true";
}

document.addEventListener("DOMContentLoaded", () => {
  takeTokenFromFragment();
  el("login").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, el("token").value);
    el("token").value = "";
    refresh();
  });
  refresh();
  window.setInterval(refresh, REFRESH_MS);
});
