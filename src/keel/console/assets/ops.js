// The operator console: polls /ops/state with the operator token and renders it.
// Every value reaches the page through textContent, never as HTML: organisation ids,
// check outputs and reasons are data, not markup.
"use strict";

const REFRESH_MS = 5000;
const HISTORY = 60;
const TOKEN_KEY = "keel-ops-token";
const samples = { ready: [], breaches: [] };

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
  const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
  line.setAttribute("points", points.join(" "));
  svg.appendChild(line);
}

function remember(series, value) {
  series.push(value);
  if (series.length > HISTORY) { series.shift(); }
}

function render(state) {
  const service = state.service || {};
  el("service").textContent =
    `${service.service_id} ${service.version} · release ${service.release_id} · ${service.git_sha}`;
  el("updated").textContent = `updated ${state.generated_at}`;
  const errors = Object.entries(state.errors || {}).map(([k, v]) => `${k}: ${v}`);
  el("errors").textContent = errors.length ? "Not read: " + errors.join("; ") : "";

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
