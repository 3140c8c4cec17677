// idempipe dashboard: live updates (server-sent events), actions with confirmation,
// item details. Plain JavaScript, no build step. Renders the same markup as the server.
"use strict";

const BAR_ORDER = ["completed", "running", "failed", "dead", "unknown", "cancelled", "pending", "waiting"];

function esc(v) {
  return String(v ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}
function duration(secs) {
  const s = Math.max(0, Math.round(secs));
  if (s < 60) return s + "s";
  if (s < 3600) return Math.floor(s / 60) + "m" + String(s % 60).padStart(2, "0") + "s";
  return Math.floor(s / 3600) + "h" + String(Math.floor((s % 3600) / 60)).padStart(2, "0") + "m";
}
function time(ms) { return new Date(ms).toISOString().replace("T", " ").slice(0, 19); }
function count(s, st) { return s.counts[st] || 0; }

function toast(text) {
  const t = document.getElementById("toast");
  if (!t) return;
  t.textContent = text;
  t.classList.add("show");
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => t.classList.remove("show"), 6000);
}

// ---- run page -------------------------------------------------------------------

function stageRow(run, s, running) {
  const total = Math.max(1, s.total);
  const bar = BAR_ORDER.filter((st) => count(s, st) > 0)
    .map((st) => `<span class="s-${st}" style="width:${(count(s, st) * 100 / total).toFixed(2)}%"></span>`).join("");
  const extra = BAR_ORDER.slice(1).filter((st) => count(s, st) > 0).map((st) => ` · ${st} ${count(s, st)}`).join("");
  const failures = count(s, "failed") + count(s, "dead") + count(s, "unknown");
  // Pause and resume only while the run runs and the stage has work left.
  const open = running && ["pending", "running", "failed", "waiting"].some((x) => count(s, x) > 0);
  const st = esc(s.stage);
  const retry = failures > 0
    ? `<button data-action="retry" data-stage="${st}" data-confirm="Retry the failed and dead items of stage ${st} of run ${run}?">retry</button>` : "";
  return `<tr data-stage="${st}"><td>${st}</td>` +
    `<td><div class="bar" title="${count(s, "completed")} of ${s.total} completed">${bar}</div></td>` +
    `<td class="counts">${count(s, "completed")} / ${s.total}${extra}</td>` +
    `<td>${s.rate_per_second.toFixed(1)}/s</td><td>${s.eta_seconds == null ? "-" : duration(s.eta_seconds)}</td>` +
    `<td class="stage-actions">${retry}` +
    (open ? `<button data-action="pause" data-stage="${st}" data-confirm="Pause stage ${st}?">pause</button>` +
      `<button data-action="resume" data-stage="${st}" data-confirm="Resume stage ${st}?">resume</button>` : "") +
    `</td></tr>`;
}

function failureRow(g) {
  return `<tr><td>${esc(g.stage)}</td><td>${esc(g.kind)}</td><td>${g.http_status ?? ""}</td><td>${g.count}</td>` +
    `<td><a class="item-link" href="#" data-stage="${esc(g.stage)}" data-key="${esc(g.example_key)}">${esc(g.example_key)}</a></td>` +
    `<td class="message">${esc(g.example_message)}</td></tr>`;
}

function applyRun(main, data) {
  const v = data.view, r = v.run, id = r.id;
  const status = document.getElementById("run-status");
  status.textContent = r.status;
  status.className = "badge s-" + r.status;
  document.getElementById("run-paused").hidden = !r.paused;
  document.getElementById("progress").textContent = `${v.completed} / ${v.total}`;
  document.getElementById("run-finished").textContent = r.finished_at ? " · finished " + time(r.finished_at) : "";
  const running = r.status === "running";
  document.getElementById("stage-rows").innerHTML = v.stages.map((s) => stageRow(id, s, running)).join("");
  for (const b of document.querySelectorAll(".actions button[data-when=running]")) b.hidden = !running;
  // An "after" image that was not there yet (frame not enhanced) may be now.
  const after = document.getElementById("compare-after");
  if (after && after.dataset.missing && main.dataset.status !== r.status) showCompare(id);
  document.getElementById("failure-rows").innerHTML = data.failures.map(failureRow).join("");
  document.getElementById("no-failures").hidden = data.failures.length > 0;
  const thumb = document.getElementById("thumb");
  if (v.thumbnail && !thumb.querySelector("img")) {
    thumb.innerHTML = `<figure><img src="/api/runs/${id}/thumbnail?t=${Date.now()}" alt="thumbnail"><figcaption>thumbnail</figcaption></figure>`;
  }
  const player = document.getElementById("player");
  if (v.output && r.status === "completed" && !player.querySelector("video")) {
    player.innerHTML = `<figure><video controls preload="metadata" src="/api/runs/${id}/output"></video><figcaption>output</figcaption></figure>`;
  }
  main.dataset.status = r.status;
}

function applyCells(main, data) {
  const grid = document.getElementById("grid");
  if (data.reset || main.dataset.grid !== data.stage) {
    if (data.reset) grid.innerHTML = "";
    main.dataset.grid = data.stage;
    document.getElementById("grid-stage").textContent = data.stage;
  }
  const byKey = new Map();
  for (const c of grid.children) byKey.set(c.dataset.key, c);
  let added = false, refresh = null;
  for (const [key, status] of data.cells) {
    let c = byKey.get(key);
    if (!c) {
      c = document.createElement("div");
      c.dataset.key = key;
      grid.appendChild(c);
      byKey.set(key, c);
      added = true;
    }
    const selected = c.classList.contains("selected");
    c.className = "cell s-" + status + (selected ? " selected" : "");
    c.title = `${key}: ${status}`;
    if (selected && !data.reset) refresh = key;
  }
  if (added) {
    const sorted = [...grid.children].sort((a, b) => (a.dataset.key < b.dataset.key ? -1 : 1));
    grid.append(...sorted);
  }
  main.dataset.cells = String(grid.children.length);
  // The open item changed status: show its new attempts and frames.
  if (refresh !== null && !document.getElementById("detail").hidden) showItem(main, data.stage, refresh);
}

// ---- before / after ---------------------------------------------------------------

function showCompare(id) {
  const input = document.getElementById("compare-frame");
  const n = Math.max(0, Math.floor(Number(input.value) || 0));
  for (const side of ["before", "after"]) {
    const img = document.getElementById("compare-" + side);
    delete img.dataset.missing;
    document.getElementById(`compare-${side}-note`).textContent = `${side} (frame ${n})`;
    img.src = `/api/runs/${id}/compare/${n}/${side}.png?t=${Date.now()}`;
  }
}

function setupCompare() {
  const section = document.getElementById("compare");
  if (!section) return;
  const id = section.dataset.run;
  document.getElementById("compare-frame").addEventListener("change", () => showCompare(id));
  for (const side of ["before", "after"]) {
    const img = document.getElementById("compare-" + side);
    const missing = async () => {
      img.dataset.missing = "1";
      let why = "not available";
      try { why = (await (await fetch(img.src)).json()).message || why; } catch (_) { /* keep the default */ }
      document.getElementById(`compare-${side}-note`).textContent = `${side}: ${why}`;
    };
    img.addEventListener("error", missing);
    // It may have failed before this script ran.
    if (img.complete && img.naturalWidth === 0) missing();
  }
}

function live(main) {
  const id = main.dataset.run;
  const source = new EventSource(`/api/runs/${id}/events`);
  source.addEventListener("open", () => { main.dataset.live = "open"; });
  source.addEventListener("run", (e) => applyRun(main, JSON.parse(e.data)));
  source.addEventListener("cells", (e) => applyCells(main, JSON.parse(e.data)));
  source.addEventListener("error", (e) => {
    if (e.data) toast(JSON.parse(e.data).message);
    main.dataset.live = "reconnecting";
  });
}

function confirmDialog(text) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-text").textContent = text;
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.returnValue = "";
    dialog.showModal();
  });
}

function describe(action, r) {
  const scope = r.stage ? ` (stage ${r.stage})` : "";
  switch (action) {
    case "retry": return `${r.retried} item(s)${scope} in ${r.statuses.join("/")} made due again`;
    case "cancel": return `run cancelled: ${r.cancelled_items} item(s) cancelled`;
    default: return `run ${r.run}${scope} ${r.paused ? "paused" : "resumed"}`;
  }
}

async function act(main, button) {
  const action = button.dataset.action, stage = button.dataset.stage || "";
  if (!(await confirmDialog(button.dataset.confirm || `${action}?`))) return;
  const url = `/api/runs/${main.dataset.run}/${action}` + (stage ? `?stage=${encodeURIComponent(stage)}` : "");
  try {
    const res = await fetch(url, { method: "POST", headers: { "X-Idempipe-Action": "1" } });
    const body = await res.json();
    toast(res.ok ? describe(action, body) : `${action} refused: ${body.message}`);
  } catch (err) {
    toast(`${action} failed: ${err}`);
  }
}

async function showItem(main, stage, key) {
  const id = main.dataset.run;
  const detail = document.getElementById("detail");
  for (const c of document.querySelectorAll(".cell.selected")) c.classList.remove("selected");
  const cell = [...document.getElementById("grid").children].find((c) => c.dataset.key === key);
  if (cell) cell.classList.add("selected");
  const path = key.split("/").map(encodeURIComponent).join("/");
  const res = await fetch(`/api/runs/${id}/items/${encodeURIComponent(stage)}/${path}/attempts`);
  const body = await res.json();
  if (!res.ok) { toast(body.message); return; }
  const item = body.item;
  const rows = body.attempts.map((a) => `<tr><td>${a.attempt}</td><td>${esc(a.outcome)}</td><td>${esc(a.worker)}</td>` +
    `<td>${time(a.started_at)}</td><td>${((a.ended_at - a.started_at) / 1000).toFixed(2)}s</td>` +
    `<td class="message">${a.error ? esc(a.error.message ?? JSON.stringify(a.error)) : ""}${a.error && a.error.status ? " (HTTP " + a.error.status + ")" : ""}</td></tr>`).join("");
  const frames = stage === "frame" ? `<div class="frames">` +
    ["original", "enhanced"].map((f) => `<figure><img alt="${f}" src="/api/runs/${id}/frames/${encodeURIComponent(key)}/${f}.png?t=${Date.now()}" ` +
      `onerror="this.replaceWith(Object.assign(document.createElement('p'),{className:'muted',textContent:'${f}: file not available'}))">` +
      `<figcaption>${f}</figcaption></figure>`).join("") + `</div>` : "";
  detail.innerHTML = `<h2>${esc(stage)} ${esc(key)} <span class="badge s-${item.status}">${item.status}</span></h2>` +
    `<p>${item.attempts} attempt(s)${item.last_error ? "; last error:" : ""}</p>` +
    (item.last_error ? `<pre>${esc(JSON.stringify(item.last_error, null, 2))}</pre>` : "") +
    `<table><thead><tr><th>#</th><th>outcome</th><th>worker</th><th>started</th><th>took</th><th>error</th></tr></thead><tbody>${rows}</tbody></table>` +
    frames;
  detail.hidden = false;
}

function runPage(main) {
  document.addEventListener("click", (e) => {
    const button = e.target.closest("button[data-action]");
    if (button) { act(main, button); return; }
    const cell = e.target.closest("#grid .cell");
    if (cell) { showItem(main, main.dataset.grid, cell.dataset.key); return; }
    const link = e.target.closest("a.item-link");
    if (link) { e.preventDefault(); showItem(main, link.dataset.stage, link.dataset.key); }
  });
  setupCompare();
  live(main);
}

// ---- runs page ------------------------------------------------------------------

function runsPage(tbody) {
  setInterval(async () => {
    const res = await fetch("/api/runs");
    if (!res.ok) return;
    const runs = await res.json();
    tbody.innerHTML = runs.map((r) => `<tr><td><a href="/runs/${r.id}">${r.id}</a></td><td>${esc(r.pipeline)}</td>` +
      `<td><span class="badge s-${r.activity || r.status}">${r.activity || r.status}</span>${r.paused ? " (paused)" : ""}</td>` +
      `<td><progress max="${Math.max(1, r.total)}" value="${r.completed}"></progress> ${r.completed} / ${r.total}</td>` +
      `<td class="path">${esc(r.input)}</td><td>${time(r.created_at)}</td><td>${r.finished_at ? time(r.finished_at) : ""}</td></tr>`).join("");
  }, 3000);
}

document.addEventListener("DOMContentLoaded", () => {
  const main = document.getElementById("run");
  if (main) runPage(main);
  const rows = document.getElementById("run-rows");
  if (rows) runsPage(rows);
});
