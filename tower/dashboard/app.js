// Tower dashboard: plain script, no build step, no CDN. It reads the same HTTP API as everyone else,
// next to its own script (/api/dashboard/app.js -> /api/runs ...), and passes on the function key it was
// opened with (?code=) so it works in Azure behind function-level auth as it does under `tower serve`.
"use strict";

const KEY = new URLSearchParams(location.search).get("code");
const API = new URL("../", document.currentScript.src);  // <prefix>/dashboard/app.js -> <prefix>/
const REFRESH_MS = 2000;
const DAG_MAX_NODES = 120;       // more than this: the critical path and a focused neighbourhood only
const ROWS_SHOWN = 200;          // rows per table or Gantt group before "show all"
const BIG_RUN = 200;             // services: above this, succeeded ones hide and groups show their first rows by interest
const BIG_ROWS_SHOWN = 40;
const INTEREST = { failed: 0, running: 1, upstream_failed: 2, pending: 3, cancelled: 4, skipped: 5, succeeded: 6 };
const STATES = ["running", "pending", "succeeded", "failed", "upstream_failed", "cancelled", "skipped"];
const FINISHED = new Set(["succeeded", "failed", "upstream_failed", "cancelled", "skipped"]);

let timer = null;
const ui = {};  // view state that survives a refresh (tab, search, collapsed groups, focus)

// --- small helpers -----------------------------------------------------------------------------

function api(path, options) {
  const url = new URL(path, API);
  if (KEY) url.searchParams.set("code", KEY);
  return fetch(url, options).then(async (r) => {
    const body = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(body.error || `${r.status} ${r.statusText}`);
    return body;
  });
}

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

function svg(tag, attrs, ...children) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (v !== null && v !== undefined) el.setAttribute(k, v);
  }
  for (const c of children.flat()) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

const pill = (state) => h("span", { class: `pill s-${state} ${state}`, "data-state": state }, state.replace("_", " "));
const ts = (iso) => (iso ? new Date(iso) : null);

function dur(seconds) {
  if (seconds === null || seconds === undefined || isNaN(seconds)) return "–";
  seconds = Math.max(0, seconds);
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 10) return `${seconds.toFixed(1)} s`;
  if (seconds < 60) return `${+seconds.toFixed(1)} s`;
  const m = Math.floor(seconds / 60), s = Math.round(seconds % 60);
  if (m < 60) return `${m}m ${String(s).padStart(2, "0")}s`;
  const hr = Math.floor(m / 60);
  return `${hr}h ${String(m % 60).padStart(2, "0")}m`;
}

function due(iso) {
  const d = ts(iso);
  return h("div", { title: d.toISOString() }, d.toLocaleString(undefined, { weekday: "short", day: "numeric", month: "short", hour: "2-digit", minute: "2-digit" }),
    h("span", { class: "muted" }, ` · in ${dur((d - Date.now()) / 1000)}`));
}

function when(iso) {
  const d = ts(iso);
  if (!d) return "–";
  const ago = (Date.now() - d) / 1000;
  const rel = ago >= 0 ? `${dur(ago)} ago` : `in ${dur(-ago)}`;
  return h("span", { title: d.toISOString() }, d.toLocaleString(undefined, { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit" }), h("span", { class: "muted" }, ` · ${rel}`));
}

const ordinal = (n) => n + (n % 100 >= 11 && n % 100 <= 13 ? "th" : ({ 1: "st", 2: "nd", 3: "rd" }[n % 10] || "th"));
const runLink = (id) => h("a", { href: `#/run/${encodeURIComponent(id)}`, class: "mono" }, id);

function setLive(on) {
  const el = document.getElementById("refresh");
  el.className = on ? "refresh live" : "refresh";
  el.textContent = on ? "live" : "";
}

function schedule(fn) {
  clearTimeout(timer);
  timer = setTimeout(fn, REFRESH_MS);
}

function render(node) {
  // a refresh redraws the page: keep the scroll position and the text box being typed in
  const main = document.getElementById("main");
  const y = window.scrollY;
  const active = document.activeElement;
  const typing = active && active.tagName === "INPUT" && active.type === "search" ? active.placeholder : null;
  const at = typing ? active.selectionStart : 0;
  main.replaceChildren(node);
  window.scrollTo(0, y);
  const again = typing && main.querySelector(`input[placeholder="${typing}"]`);
  if (again) { again.focus(); again.setSelectionRange(at, at); }
}

function failure(err) {
  return h("div", { class: "banner err" }, String(err.message || err));
}

// --- routing -----------------------------------------------------------------------------------

function route() {
  clearTimeout(timer);
  setLive(false);
  const [, page, arg] = (location.hash || "#/runs").split("/");
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("on", a.dataset.page === (page === "run" ? "runs" : page === "pipeline" ? "pipelines" : page));
  const name = arg ? decodeURIComponent(arg) : null;
  if (page === "run" && name) return runPage(name, true);
  if (page === "pipelines") return pipelinesPage();
  if (page === "pipeline" && name) return pipelinePage(name);
  return runsPage();
}
window.addEventListener("hashchange", () => { for (const k of Object.keys(ui)) delete ui[k]; route(); });

// --- runs --------------------------------------------------------------------------------------

function runsOf(body) { return Array.isArray(body) ? body : body.runs || []; }  // a list, or the runs index's page

function failedCount(run) {
  const c = run.counts || {};
  return (c.failed || 0) + (c.upstream_failed || 0);
}

function runDuration(run) {
  const s = ts(run.started), f = ts(run.finished);
  if (!s) return null;
  return ((f || new Date()) - s) / 1000;
}

async function runsPage() {
  const filters = ui.runFilters || (ui.runFilters = { pipeline: "", status: "" });
  let runs, pipelines;
  try {
    const q = new URLSearchParams({ limit: String(ui.runLimit || 50) });
    if (filters.pipeline) q.set("pipeline", filters.pipeline);
    if (filters.status) q.set("status", filters.status);
    [runs, pipelines] = await Promise.all([api(`runs?${q}`).then(runsOf), api("pipelines").then((b) => b.pipelines).catch(() => [])]);
  } catch (err) { return render(failure(err)); }
  // a runs API that ignores a filter still shows only what was asked for
  runs = runs.filter((r) => (!filters.pipeline || r.pipeline === filters.pipeline) && (!filters.status || r.status === filters.status));
  const names = [...new Set([...pipelines.map((p) => p.name), ...runs.map((r) => r.pipeline)])].sort();
  const pick = (key, options, label) => h("select", { "data-filter": key, onchange: (e) => { filters[key] = e.target.value; runsPage(); } },
    h("option", { value: "" }, label), options.map((o) => h("option", { value: o, selected: filters[key] === o }, o)));
  const live = runs.some((r) => !FINISHED.has(r.status));
  render(h("div", {},
    h("div", { class: "panel-head" }, h("h1", {}, "Runs"), h("span", { class: "grow" }),
      pick("pipeline", names, "All pipelines"), pick("status", ["running", "succeeded", "failed", "cancelled"], "Any status")),
    h("div", { class: "panel flush" }, runs.length === 0 ? h("p", { class: "muted", style: "padding:18px", id: "no-runs" }, filters.pipeline || filters.status ? "No runs match these filters." : "No runs yet. Start one from a pipeline's page, with `tower run PIPELINE`, or POST /api/runs/PIPELINE.") :
      h("table", { id: "runs" },
        h("thead", {}, h("tr", {}, h("th", {}, "Run"), h("th", {}, "Pipeline"), h("th", {}, "Trigger"), h("th", {}, "Status"),
          h("th", {}, "Started"), h("th", { class: "num" }, "Duration"), h("th", { class: "num" }, "Failed"))),
        h("tbody", {}, runs.map((r) => h("tr", { "data-run": r.run_id },
          h("td", {}, runLink(r.run_id), r.repair_of ? h("span", { class: "tag", style: "margin-left:8px", title: `repair of ${r.repair_of}` }, "repair") : null,
            r.repaired_by ? h("span", { class: "tag", style: "margin-left:8px", title: `repaired by ${r.repaired_by}` }, "repaired") : null),
          h("td", {}, r.pipeline), h("td", { class: "muted" }, r.trigger || "–"),
          h("td", {}, pill(r.status)), h("td", {}, when(r.started)), h("td", { class: "num" }, dur(runDuration(r))),
          h("td", { class: "num" }, r.counts && Object.keys(r.counts).length ? (failedCount(r) ? h("b", { style: "color:var(--failed)" }, failedCount(r)) : "0") : "–")))))),
    runs.length >= (ui.runLimit || 50) && (ui.runLimit || 50) < 1000 ? h("button", { class: "link", id: "more-runs", onclick: () => { ui.runLimit = (ui.runLimit || 50) + 50; runsPage(); } }, "show older runs") : null));
  setLive(live);
  if (live) schedule(runsPage);
}

// --- pipelines ---------------------------------------------------------------------------------

async function pipelinesPage() {
  let pipelines, runs;
  try {
    [pipelines, runs] = await Promise.all([api("pipelines").then((b) => b.pipelines), api("runs?limit=200").then(runsOf).catch(() => [])]);
  } catch (err) { return render(failure(err)); }
  const last = {};
  for (const r of runs) if (!last[r.pipeline]) last[r.pipeline] = r;  // newest first
  render(h("div", {},
    h("div", { class: "panel-head" }, h("h1", {}, "Pipelines")),
    h("div", { class: "cards", id: "pipelines" }, pipelines.map((p) => h("div", { class: "card", "data-pipeline": p.name },
      h("h3", {}, h("a", { href: `#/pipeline/${encodeURIComponent(p.name)}` }, p.name)),
      h("dl", {},
        h("dt", {}, "Schedule"), h("dd", {}, p.schedule ? [h("code", {}, p.schedule.cron), " ", h("span", { class: "muted" }, p.schedule.timezone)] : h("span", { class: "muted" }, "none")),
        h("dt", {}, "Next due"), h("dd", {}, p.next_due.length ? p.next_due.map(due) : "–"),
        h("dt", {}, "Events"), h("dd", {}, p.on_event.length ? p.on_event.map((e) => h("span", { class: "tag" }, e)) : "–"),
        h("dt", {}, "Services"), h("dd", {}, `${p.services} on `, p.platforms.map((x) => h("span", { class: "tag" }, x))),
        h("dt", {}, "Last run"), h("dd", {}, last[p.name] ? [pill(last[p.name].status), " ", h("a", { href: `#/run/${encodeURIComponent(last[p.name].run_id)}` }, when(last[p.name].started))] : "never")))))));
}

async function pipelinePage(name) {
  let p;
  try { p = await api(`pipelines/${encodeURIComponent(name)}`); } catch (err) { return render(failure(err)); }
  const crit = new Set(p.critical_path);
  const services = Object.fromEntries(Object.entries(p.services).map(([n, s]) => [n, { ...s, status: "pending" }]));
  const graph = { services, critical_path: p.critical_path };
  const start = async () => {
    if (!confirm(`Start a run of ${p.name} now (${Object.keys(p.services).length} services)?`)) return;
    try {
      const body = await api(`runs/${encodeURIComponent(p.name)}`, { method: "POST", headers: { "Content-Type": "application/json" }, body: "{}" });
      location.hash = `#/run/${encodeURIComponent(body.run_id)}`;
    } catch (err) { alert(`start failed: ${err.message}`); }
  };
  render(h("div", {},
    h("div", { class: "panel" },
      h("div", { class: "runhead" }, h("h1", {}, p.name), h("div", { class: "actions" }, h("button", { class: "primary", id: "start", onclick: start }, "Run now"))),
      h("div", { class: "facts" },
        fact("Services", Object.keys(p.services).length),
        fact("Predicted makespan", dur(p.predicted_makespan)),
        fact("Critical path", dur(p.critical_path_seconds), `${p.critical_path.length} services`),
        fact("Lower bound", dur(p.lower_bound)),
        fact("Schedule", p.schedule ? p.schedule.cron : "none", p.schedule ? p.schedule.timezone : ""),
        fact("Next due", p.next_due.length ? due(p.next_due[0]) : "–"))),
    h("div", { class: "panel" }, h("h2", {}, "Critical path"), chain(p.critical_path, services)),
    h("div", { class: "panel flush" }, h("table", { id: "platforms" },
      h("thead", {}, h("tr", {}, h("th", {}, "Platform"), h("th", { class: "num" }, "Services"), h("th", { class: "num" }, "Slots"),
        h("th", { class: "num" }, "Work"), h("th", { class: "num" }, "Work per slot"))),
      h("tbody", {}, p.platforms.map((x) => h("tr", { "data-platform": x.platform },
        h("td", {}, x.platform), h("td", { class: "num" }, x.services), h("td", { class: "num" }, x.limit || "no limit"),
        h("td", { class: "num" }, dur(x.work)), h("td", { class: "num" }, x.work_per_slot === null ? "–" : dur(x.work_per_slot))))))),
    h("div", { class: "panel" },
      h("div", { class: "panel-head" }, h("h2", {}, "Graph"), h("span", { class: "grow" }),
        h("input", { type: "search", id: "search", placeholder: "find a service", oninput: (e) => { ui.search = e.target.value; rerenderDag(graph); } })),
      dagView(graph, crit))));
}

function fact(k, v, small) {
  return h("div", { class: "fact" }, h("div", { class: "k" }, k), h("div", { class: "v" }, v, small ? [" ", h("small", {}, small)] : null));
}

function chain(names, services) {
  const out = [];
  names.forEach((n, i) => {
    if (i) out.push(h("span", { class: "arrow" }, "→"));
    const s = services[n] || {};
    out.push(h("span", { class: `step s-${s.status || "pending"}` }, h("span", { class: `pill s-${s.status || "pending"}`, style: "padding:0 4px 0 0;background:none" }, ""), n, h("span", { class: "muted" }, ` ${dur(s.expected)}`)));
  });
  return h("div", { class: "chain" }, out);
}

// --- one run -----------------------------------------------------------------------------------

async function loadRun(id) {
  const enc = encodeURIComponent(id);
  const [run, view] = await Promise.all([
    api(`runs/${enc}`).catch((err) => ({ error: err })),
    api(`runs/${enc}/board`).catch(() => null),
  ]);
  if (run.error && !view) throw run.error;
  const merged = { ...(view || {}), ...(run.error ? {} : run) };
  // per service: the board's view (platform, deps, expected, url) with the run API's record on top
  const services = {};
  const names = Object.keys((view && view.services) || run.services || {});
  for (const n of names) {  // the run API's null fields (a running run's compact status has few) do not erase the ledger's
    const own = Object.entries((run.services || {})[n] || {}).filter(([, v]) => v !== null && v !== undefined);
    services[n] = { ...((view && view.services[n]) || {}), ...Object.fromEntries(own) };
  }
  merged.services = services;
  merged.board = view ? view.board : null;
  merged.critical_path = view ? view.critical_path : [];
  merged.platforms = view ? view.platforms : {};
  merged.eta = run.eta || (view && view.eta);
  return merged;
}

async function runPage(id, first) {
  let run;
  try { run = await loadRun(id); } catch (err) { return render(failure(err)); }
  const running = !FINISHED.has(run.status) && run.status !== "succeeded";
  render(runView(run, running));
  setLive(running);
  if (running) schedule(() => runPage(id, false));
}

function counts(run) {
  const c = {};
  for (const s of Object.values(run.services)) c[s.status] = (c[s.status] || 0) + 1;
  return c;
}

function runView(run, running) {
  const c = counts(run);
  const total = Object.keys(run.services).length;
  const done = total - (c.pending || 0) - (c.running || 0);
  const started = ts(run.started), finished = ts(run.finished);
  const elapsed = started ? ((finished || new Date()) - started) / 1000 : null;
  const actions = [];
  if (running) actions.push(h("button", { class: "danger", id: "cancel", onclick: () => act(run, "cancel") }, "Cancel run"));
  else if (c.failed || c.upstream_failed || c.cancelled) actions.push(h("button", { class: run.repaired_by ? "" : "primary", id: "repair", onclick: () => act(run, "repair") }, run.repaired_by ? "Repair again" : "Repair run"));
  const banners = [];
  if (run.at_risk) banners.push(h("div", { class: "banner risk", id: "at-risk" }, `At risk: predicted to end ${run.eta ? new Date(run.eta).toLocaleTimeString() : "late"}, after its deadline ${run.deadline ? new Date(run.deadline).toLocaleTimeString() : ""}`));
  if (run.cancel_requested && running) banners.push(h("div", { class: "banner info" }, "Cancelling: nothing new starts; running services are being stopped."));
  if (run.repair_of) banners.push(h("div", { class: "banner info" }, "Repair of ", runLink(run.repair_of)));
  if (run.repaired_by) banners.push(h("div", { class: "banner info" }, "Repaired by ", runLink(run.repaired_by)));
  const facts = [
    fact("Services", `${done}/${total}`, "done"),
    fact(running ? "Elapsed" : "Duration", dur(elapsed)),
  ];
  if (running && run.eta) {
    const left = (ts(run.eta) - new Date()) / 1000;
    facts.push(fact("ETA", h("span", { id: "eta" }, new Date(run.eta).toLocaleTimeString()), left >= 1 ? `in ${dur(left)}` : "any moment"));
  }
  if (run.deadline) {
    const slack = ((ts(run.deadline) - (ts(run.eta) || finished || new Date())) / 1000);
    facts.push(fact("Deadline", new Date(run.deadline).toLocaleTimeString(), slack >= 0 ? `${dur(slack)} slack` : `${dur(-slack)} late`));
  }
  facts.push(fact("Started", started ? started.toLocaleTimeString() : "–", run.trigger || ""));
  return h("div", { id: "run", "data-status": run.status },
    banners,
    h("div", { class: "panel" },
      h("div", { class: "runhead" },
        h("div", {}, h("div", { style: "display:flex;gap:12px;align-items:center" }, h("h1", {}, run.pipeline || "run"), pill(run.status)),
          h("div", { class: "id" }, run.run_id)),
        h("div", { class: "actions" }, actions)),
      h("div", { class: "facts" }, facts),
      h("div", { class: "bar" }, STATES.filter((s) => c[s]).map((s) => h("span", { class: `s-${s}`, style: `flex:${c[s]}`, title: `${c[s]} ${s}` }))),
      h("div", { class: "legend" }, STATES.filter((s) => c[s]).map((s) => h("span", { class: `s-${s}` }, h("i"), `${c[s]} ${s.replace("_", " ")}`))),
      run.summary ? h("pre", { class: "mono", style: "white-space:pre-wrap;color:#c92a2a;margin:14px 0 0" }, run.summary) : null),
    running && run.board ? boardView(run) : null,
    failuresView(run),
    h("div", { class: "panel" }, tabs(run)));
}

function failuresView(run) {
  const failed = Object.entries(run.services).filter(([, s]) => s.status === "failed");
  if (!failed.length) return null;
  const held = Object.values(run.services).filter((s) => s.status === "upstream_failed").length;
  return h("div", { class: "panel", id: "failures" },
    h("div", { class: "panel-head" }, h("h2", {}, `Failed · ${failed.length}`), h("span", { class: "grow" }),
      held ? h("span", { class: "muted" }, `${held} held back downstream`) : null),
    h("table", {}, h("tbody", {}, failed.slice(0, 20).map(([n, s]) => h("tr", { "data-failed": n },
      h("td", { style: "width:220px;font-weight:600" }, n), h("td", { class: "muted", style: "width:120px" }, s.platform || ""),
      h("td", { class: "num", style: "width:110px" }, `${s.attempts || 1} attempt${(s.attempts || 1) > 1 ? "s" : ""}`),
      h("td", { style: "width:190px" }, remote(s)), h("td", { class: "err" }, s.error || ""))))),
    failed.length > 20 ? h("p", { class: "muted" }, `and ${failed.length - 20} more: search the services below`) : null);
}

async function act(run, what) {
  const again = what === "repair" && !!run.repaired_by;
  const question = what === "cancel"
    ? `Cancel run ${run.run_id}? Services not started are cancelled, running ones are stopped.`
    : again ? `Run ${run.run_id} was already repaired by ${run.repaired_by}. Repair it once more?`
    : `Repair run ${run.run_id}? A new run starts with its failed, held back and cancelled services.`;
  if (!confirm(question)) return;
  try {
    const body = await api(`runs/${encodeURIComponent(run.run_id)}/${what}`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(again ? { again: true } : {}) });
    if (what === "repair" && body.run_id) location.hash = `#/run/${encodeURIComponent(body.run_id)}`;
    else runPage(run.run_id, false);
  } catch (err) { alert(`${what} failed: ${err.message}`); }
}

// --- the board ---------------------------------------------------------------------------------

function boardView(run) {
  const b = run.board;
  const place = (why) => { const m = /(\d+)(?:st|nd|rd|th) in queue/.exec(why); return m ? +m[1] : 1e9; };
  const waiting = Object.entries(b.waiting).sort((x, y) => place(x[1]) - place(y[1]));  // next to start first
  const q = (ui.waitSearch || "").toLowerCase();
  const shown = waiting.filter(([n, why]) => !q || n.toLowerCase().includes(q) || why.toLowerCase().includes(q));
  return h("div", { class: "panel", id: "board" },
    h("div", { class: "panel-head" }, h("h2", {}, "Board"), h("span", { class: "grow" }),
      h("span", { class: "muted" }, `${b.runways.reduce((a, r) => a + r.busy, 0)} running · ${waiting.length} waiting`)),
    b.runways.map((r) => runway(r, run)),
    waiting.length ? h("div", { style: "margin-top:14px" },
      h("div", { class: "panel-head" }, h("h2", {}, "Why they wait"), h("span", { class: "grow" }),
        h("input", { type: "search", placeholder: "filter waiting services", value: ui.waitSearch || "", oninput: (e) => { ui.waitSearch = e.target.value; render(runView(run, true)); } })),
      h("ul", { class: "waiting", id: "waiting" }, shown.slice(0, ui.waitAll ? shown.length : 40).map(([n, why]) =>
        h("li", { "data-service": n }, h("span", { class: "svc" }, n), h("span", { class: `why${why.startsWith("no slot") ? " slot-wait" : ""}` }, why)))),
      shown.length > 40 && !ui.waitAll ? h("button", { class: "link", onclick: () => { ui.waitAll = true; render(runView(run, true)); } }, `show all ${shown.length}`) : null) : null);
}

function runway(r, run) {
  const limit = r.limit;
  const slots = [];
  const SHOW = 12;
  for (const s of r.running.slice(0, SHOW)) {
    const frac = s.expected ? Math.min(1, (s.elapsed || 0) / s.expected) : 0;
    const over = s.expected && s.elapsed > s.expected;
    slots.push(h("div", { class: "slot", "data-running": s.service, title: s.service },
      h("div", { class: "n" }, s.service),
      h("div", { class: "p" }, h("span", { style: `width:${Math.round(frac * 100)}%` })),
      h("div", { class: `t${over ? " over" : ""}` }, `${dur(s.elapsed)} of ~${dur(s.expected)}`)));
  }
  if (r.running.length > SHOW) slots.push(h("span", { class: "more" }, `+${r.running.length - SHOW} more running`));
  if (limit !== null && limit !== undefined && limit > r.busy) {
    const free = limit - r.busy;
    const boxes = Math.min(free, 4, Math.max(SHOW - r.running.length, 0));
    for (let i = 0; i < boxes; i++) slots.push(h("div", { class: "slot free" }, "free"));
    if (free > boxes) slots.push(h("span", { class: "more" }, `${boxes ? "+" : ""}${free - boxes} free`));
  }
  const queue = r.queue.slice(0, 8).map((n, i) => h("span", { class: "qchip", "data-queued": n, title: run.board.waiting[n] || "" }, h("b", {}, ordinal(i + 1)), n));
  if (r.queue.length > 8) queue.push(h("span", { class: "more" }, `+${r.queue.length - 8} queued`));
  const full = limit && r.busy >= limit;
  return h("div", { class: "runway", "data-platform": r.platform },
    h("div", { class: "who" }, r.platform,
      h("span", { class: "slots" }, limit ? `${r.busy}/${limit} slots busy` : `${r.busy} running · no limit`),
      limit ? h("div", { class: `meter${full ? " full" : ""}` }, h("span", { style: `width:${Math.round(100 * r.busy / limit)}%` })) : null),
    h("div", { class: "lane" }, slots.length ? slots : h("span", { class: "muted" }, "idle"),
      queue.length ? [h("span", { class: "queue-sep" }, "⟵"), h("span", { class: "muted", style: "font-size:12px" }, "queue"), queue] : null,
      r.blocked ? h("span", { class: "more" }, `· ${r.blocked} waiting on dependencies`) : null));
}

// --- tabs: services, timeline, graph -----------------------------------------------------------

function tabs(run) {
  const tab = ui.tab || "services";
  const pick = (t) => () => { ui.tab = t; render(runView(run, !FINISHED.has(run.status) && run.status !== "succeeded")); };
  const body = tab === "timeline" ? gantt(run) : tab === "graph" ? dagView(run, new Set(run.critical_path)) : servicesTable(run);
  return h("div", {},
    h("div", { class: "tabs" },
      h("button", { class: tab === "services" ? "on" : "", onclick: pick("services"), "data-tab": "services" }, "Services"),
      h("button", { class: tab === "timeline" ? "on" : "", onclick: pick("timeline"), "data-tab": "timeline" }, "Timeline"),
      h("button", { class: tab === "graph" ? "on" : "", onclick: pick("graph"), "data-tab": "graph" }, "Graph")),
    filterBar(run),
    body);
}

function filterBar(run) {
  const rerender = () => render(runView(run, !FINISHED.has(run.status) && run.status !== "succeeded"));
  return h("div", { class: "toolbar" },
    h("input", { type: "search", placeholder: "search services, platforms, errors", value: ui.search || "", id: "search",
      oninput: (e) => { ui.search = e.target.value; rerender(); } }),
    h("label", { class: "check" }, h("input", { type: "checkbox", id: "hide-succeeded", checked: hideSucceeded(run), onchange: (e) => { ui.hideSucceeded = e.target.checked; rerender(); } }), "hide succeeded"),
    h("span", { class: "muted" }, run.critical_path.length ? ["critical path: ", h("b", {}, `${run.critical_path.length}`), " services (bold)"] : null));
}

function hideSucceeded(run) {
  return ui.hideSucceeded === undefined ? Object.keys(run.services).length > BIG_RUN : ui.hideSucceeded;
}

function visible(run) {
  const q = (ui.search || "").toLowerCase();
  const hide = hideSucceeded(run);
  return Object.entries(run.services).filter(([n, s]) =>
    (!hide || s.status !== "succeeded") &&
    (!q || n.toLowerCase().includes(q) || (s.platform || "").toLowerCase().includes(q) || (s.error || "").toLowerCase().includes(q) || s.status.includes(q)));
}

function byPlatform(entries) {
  const groups = new Map();
  for (const e of entries) {
    const p = e[1].platform || "services";
    if (!groups.has(p)) groups.set(p, []);
    groups.get(p).push(e);
  }
  return groups;
}

function remote(s) {
  if (s.url && /^https?:\/\//i.test(s.url)) return h("a", { href: s.url, target: "_blank", rel: "noopener" }, s.remote_id ? `run ${s.remote_id}` : "open");
  if (s.remote_id) return h("code", { title: "remote id (a Snowflake query id, a Databricks run id)" }, s.remote_id);
  return h("span", { class: "muted" }, "–");
}

function serviceDuration(s) {
  const a = ts(s.started);
  if (!a) return null;
  return ((ts(s.finished) || new Date()) - a) / 1000;
}

function servicesTable(run) {
  const crit = new Set(run.critical_path);
  const board = run.board || { waiting: {} };
  const rows = [];
  for (const [platform, entries] of byPlatform(visible(run))) {
    const key = `svc:${platform}`;
    const collapsed = ui[key] ?? false;
    const c = {};
    for (const [, s] of entries) c[s.status] = (c[s.status] || 0) + 1;
    rows.push(h("tr", { class: "group", "data-group": platform, onclick: () => { ui[key] = !collapsed; render(runView(run, !FINISHED.has(run.status) && run.status !== "succeeded")); } },
      h("td", { colspan: 7 }, collapsed ? "▸ " : "▾ ", platform, h("span", { class: "muted", style: "font-weight:400" }, `  ${entries.length} · ${Object.entries(c).map(([k, v]) => `${v} ${k.replace("_", " ")}`).join(", ")}`))));
    if (collapsed) continue;
    const all = ui[`all:${platform}`];
    const big = Object.keys(run.services).length > BIG_RUN;
    const limit = big ? BIG_ROWS_SHOWN : ROWS_SHOWN;
    if (big) entries.sort((a, b) => INTEREST[a[1].status] - INTEREST[b[1].status]);  // failures and running first
    for (const [n, s] of all ? entries : entries.slice(0, limit)) {
      const expected = s.expected;
      const took = serviceDuration(s);
      rows.push(h("tr", { "data-service": n, "data-state": s.status },
        h("td", {}, h("span", { style: crit.has(n) ? "font-weight:650" : "" }, n), crit.has(n) ? h("span", { class: "tag", style: "margin-left:6px" }, "critical") : null),
        h("td", {}, pill(s.status)),
        h("td", { class: "num" }, s.attempts || "–"),
        h("td", { class: "num" }, took === null ? "–" : dur(took), expected ? h("span", { class: "muted" }, ` / ~${dur(expected)}`) : null),
        h("td", {}, s.started ? when(s.started) : h("span", { class: "muted" }, board.waiting[n] || "–")),
        h("td", {}, remote(s)),
        h("td", { class: "err" }, s.error || "")));
    }
    if (!all && entries.length > limit) rows.push(h("tr", {}, h("td", { colspan: 7 }, h("button", { class: "link", onclick: () => { ui[`all:${platform}`] = true; render(runView(run, !FINISHED.has(run.status))); } }, `show all ${entries.length} on ${platform}`))));
  }
  return h("table", { id: "services" },
    h("thead", {}, h("tr", {}, h("th", {}, "Service"), h("th", {}, "State"), h("th", { class: "num" }, "Attempts"), h("th", { class: "num" }, "Took / expected"),
      h("th", {}, "Started · or why it waits"), h("th", {}, "Remote run"), h("th", {}, "Error"))),
    h("tbody", {}, rows));
}

function niceStep(raw) {
  const steps = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400];
  return steps.find((x) => x >= raw) || 86400 * Math.ceil(raw / 86400);
}

function gantt(run) {
  const entries = visible(run);
  const start = ts(run.started) || new Date();
  let end = ts(run.finished) || new Date();
  for (const [, s] of entries) {
    const a = ts(s.started);
    if (a) end = new Date(Math.max(end, ts(s.finished) || new Date(), +a + (s.expected || 0) * 1000));
  }
  if (run.eta && !run.finished) end = new Date(Math.max(end, ts(run.eta)));
  const span = Math.max((end - start) / 1000, 1);
  const pct = (d) => `${(100 * (((d - start) / 1000) / span)).toFixed(3)}%`;
  const width = (sec) => `${Math.max(0.25, 100 * sec / span).toFixed(3)}%`;
  const crit = new Set(run.critical_path);
  const ticks = [];
  const step = niceStep(span / 6);
  for (let t = 0; t <= span; t += step) ticks.push(h("span", { style: `left:${(100 * t / span).toFixed(3)}%` }, t ? `+${dur(t)}` : "start"));
  const out = [h("div", { class: "axis" }, h("span", {}, ""), h("div", { class: "ticks" }, ticks))];
  const nowMark = !run.finished ? h("div", { class: "now", style: `left:${pct(new Date())}`, title: "now" }) : null;
  for (const [platform, rows] of byPlatform(entries)) {
    const key = `gantt:${platform}`;
    const collapsed = ui[key] ?? false;
    out.push(h("div", { class: "grp", "data-group": platform, onclick: () => { ui[key] = !collapsed; render(runView(run, !FINISHED.has(run.status) && run.status !== "succeeded")); } },
      h("span", {}, collapsed ? "▸ " : "▾ ", platform, h("span", { class: "muted", style: "font-weight:400" }, `  ${rows.length}`)), h("span", {})));
    if (collapsed) continue;
    const sorted = rows.slice().sort((a, b) => (ts(a[1].started) || Infinity) - (ts(b[1].started) || Infinity));
    const limit = Object.keys(run.services).length > BIG_RUN ? BIG_ROWS_SHOWN : ROWS_SHOWN;
    for (const [n, s] of ui[`gall:${platform}`] ? sorted : sorted.slice(0, limit)) {
      const a = ts(s.started);
      const bars = [];
      if (a) {
        bars.push(h("div", { class: "exp", style: `left:${pct(a)};width:${width(s.expected || 0)}`, title: `expected ${dur(s.expected)}` }));
        bars.push(h("div", { class: `act s-${s.status}`, style: `left:${pct(a)};width:${width(serviceDuration(s))}`, title: `${n}: ${s.status}, ${dur(serviceDuration(s))} (expected ${dur(s.expected)})` }));
      }
      const why = a ? null : (run.board && run.board.waiting[n]) || s.error || s.status.replace("_", " ");
      out.push(h("div", { class: "row", "data-service": n },
        h("div", { class: `name${crit.has(n) ? " crit" : ""}`, title: n }, n),
        h("div", { class: "track" }, bars, why ? h("span", { class: "why" }, why) : null, nowMark ? nowMark.cloneNode() : null)));
    }
    if (!ui[`gall:${platform}`] && sorted.length > limit) out.push(h("button", { class: "link", onclick: () => { ui[`gall:${platform}`] = true; render(runView(run, !run.finished)); } }, `show all ${sorted.length}`));
  }
  return h("div", { class: "gantt", id: "gantt" }, out,
    h("div", { class: "legend" }, h("span", {}, h("i", { style: "background:none;border:1px dashed #adb5bd" }), "expected"), h("span", { class: "s-succeeded" }, h("i"), "actual"), nowMark ? h("span", {}, h("i", { style: "background:#fa5252" }), "now") : null));
}

// --- the DAG: layered, up to DAG_MAX_NODES; beyond, the critical path and a focus neighbourhood --

function dagView(run, crit) {
  const all = run.services;
  const names = Object.keys(all);
  let chosen = names, note = null;
  if (names.length > DAG_MAX_NODES) {
    const focus = ui.focus && all[ui.focus] ? [ui.focus] : (run.critical_path.length ? run.critical_path : names.slice(0, 1));
    const keep = new Set(focus);
    const dependents = {};
    for (const n of names) for (const d of all[n].deps || []) (dependents[d] = dependents[d] || []).push(n);
    for (const n of focus) {
      for (const d of all[n].deps || []) if (keep.size < DAG_MAX_NODES) keep.add(d);
      for (const d of dependents[n] || []) if (keep.size < DAG_MAX_NODES) keep.add(d);
    }
    chosen = names.filter((n) => keep.has(n));
    note = h("p", { class: "muted", id: "dag-note" }, `${names.length} services: showing `, ui.focus ? [h("b", {}, ui.focus), " and its neighbours"] : "the critical path and its neighbours",
      ` (${chosen.length}). Click a service to focus it`, ui.focus ? [" · ", h("button", { class: "link", onclick: () => { ui.focus = null; rerenderDag(run); } }, "back to the critical path")] : ".");
  }
  const q = (ui.search || "").toLowerCase();
  if (q && q !== ui.searched && names.length > DAG_MAX_NODES) {  // a new search focuses its first match
    ui.searched = q;
    const hit = names.find((n) => n.toLowerCase() === q) || names.find((n) => n.toLowerCase().includes(q));
    if (hit && hit !== ui.focus) { ui.focus = hit; return dagView(run, crit); }
  }
  return h("div", { id: "dag-wrap" }, note, h("div", { class: "dag", id: "dag" }, layout(chosen, all, crit, run)));
}

function rerenderDag(run) {
  if (run.run_id) render(runView(run, !FINISHED.has(run.status) && run.status !== "succeeded"));
  else document.getElementById("dag-wrap").replaceWith(dagView(run, new Set(run.critical_path)));
}

function layout(names, all, crit, run) {
  const inSet = new Set(names);
  const level = {};
  const depth = (n, seen = new Set()) => {
    if (level[n] !== undefined) return level[n];
    if (seen.has(n)) return 0;
    seen.add(n);
    const deps = (all[n].deps || []).filter((d) => inSet.has(d));
    return (level[n] = deps.length ? 1 + Math.max(...deps.map((d) => depth(d, seen))) : 0);
  };
  names.forEach((n) => depth(n));
  // An edge that skips layers runs through a waypoint in each layer it crosses, ordered with the
  // nodes, so it passes between them instead of under them.
  const layers = [];
  const parents = {};
  const chains = [];  // [from, to, [waypoint ids]]
  const put = (id, at) => (layers[at] = layers[at] || []).push(id);
  for (const n of names) put(n, level[n]);
  for (const n of names) {
    parents[n] = [];
    for (const d of all[n].deps || []) {
      if (!inSet.has(d)) continue;
      const via = [];
      let prev = d;
      for (let at = level[d] + 1; at < level[n]; at++) {
        const id = `\u0000${d}>${n}@${at}`;
        parents[id] = [prev];
        put(id, at);
        via.push(id);
        prev = id;
      }
      parents[n].push(prev);
      chains.push([d, n, via]);
    }
  }
  const pos = {};
  const W = 168, H = 30, GX = 64, GY = 12, PAD = 16, WAY = 10;
  const isWay = (id) => id.startsWith("\u0000");
  let height = 0;
  layers.forEach((layer, i) => {
    if (i > 0) {  // order by the mean position of each node's parents: fewer crossings
      const bary = (n) => { const ps = parents[n].filter((d) => pos[d]); return ps.length ? ps.reduce((a, d) => a + pos[d].y, 0) / ps.length : 1e9; };
      const keys = new Map(layer.map((n) => [n, bary(n)]));
      layer.sort((a, b) => keys.get(a) - keys.get(b));
    }
    let y = PAD;
    for (const n of layer) {
      pos[n] = { x: PAD + i * (W + GX), y };
      y += (isWay(n) ? WAY : H) + GY;
    }
    height = Math.max(height, y - GY + PAD);
  });
  const width = PAD * 2 + layers.length * (W + GX) - GX;
  const edges = [], nodes = [];
  const critEdge = new Set();
  for (let i = 1; i < run.critical_path.length; i++) critEdge.add(`${run.critical_path[i - 1]}>${run.critical_path[i]}`);
  const curve = (x1, y1, x2, y2) => { const mx = (x1 + x2) / 2; return `C${mx},${y1} ${mx},${y2} ${x2},${y2}`; };
  for (const [d, n, via] of chains) {
    let x = pos[d].x + W, y = pos[d].y + H / 2;
    let path = `M${x},${y}`;
    for (const id of via) {
      const wy = pos[id].y + WAY / 2;
      path += ` ${curve(x, y, pos[id].x, wy)} L${pos[id].x + W},${wy}`;
      x = pos[id].x + W; y = wy;
    }
    path += ` ${curve(x, y, pos[n].x, pos[n].y + H / 2)}`;
    edges.push(svg("path", { class: `edge${critEdge.has(`${d}>${n}`) ? " crit" : ""}`, d: path }));
  }
  for (const n of names) {
    const s = all[n];
    const label = n.length > 21 ? n.slice(0, 20) + "…" : n;
    nodes.push(svg("g", { class: `node s-${s.status || "pending"}${crit.has(n) ? " crit" : ""}`, transform: `translate(${pos[n].x},${pos[n].y})`, "data-node": n, "data-state": s.status || "pending",
      onclick: () => { if (Object.keys(all).length > DAG_MAX_NODES) { ui.focus = n; rerenderDag(run); } } },
      svg("title", {}, `${n} · ${s.status || "pending"} · ${s.platform || ""}${s.error ? "\n" + s.error : ""}`),
      svg("rect", { width: W, height: H, rx: 6 }),
      svg("circle", { class: "dot", cx: 13, cy: H / 2, r: 4.5 }),
      svg("text", { x: 25, y: H / 2 + 4, "font-weight": crit.has(n) ? 650 : 400 }, label)));
  }
  return svg("svg", { width, height, viewBox: `0 0 ${width} ${height}` }, edges, nodes);
}

route();
