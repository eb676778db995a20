// Platform operations: health, memory, models, LLM providers, startup and the optimisation
// report, refreshed every 5 s. Each section keeps its panel; only its body is redrawn, so a
// failing endpoint shows its error in its own panel and the others stay current.
import { api } from "../api.js";
import { ago, append, badge, busy, bytes, clear, explainError, flash, h, num, table, when } from "../dom.js";
import { barChart, clock, lineChart } from "../plot.js";

const REFRESH_MS = 5000;
const RECENT_EVENTS = 10;

const SECTIONS = [
  { id: "health", title: "Health", path: "/performance/health", draw: drawHealth },
  { id: "memory", title: "Memory", path: "/performance/memory", draw: drawMemory, actions: memoryActions },
  { id: "models", title: "Models", path: "/performance/models", draw: drawModels, actions: modelsActions },
  { id: "providers", title: "LLM providers", path: "/performance/llm-providers", draw: drawProviders },
  { id: "startup", title: "Startup", path: "/performance/startup-metrics", draw: drawStartup },
  { id: "report", title: "Optimization report", path: "/performance/optimization-report", draw: drawReport },
];

export async function render(view, ctx) {
  const bodies = new Map(SECTIONS.map((s) => [s.id, h("div", {}, h("p", { class: "muted" }, "Loading…"))]));
  const stamp = h("span", { class: "muted" });
  let refreshed = 0;

  const load = async () => {
    const results = await Promise.allSettled(SECTIONS.map((s) => api(s.path, { signal: ctx.signal })));
    if (ctx.signal.aborted) return;
    SECTIONS.forEach((section, i) => redraw(bodies.get(section.id), content(section, results[i], tools)));
    refreshed += 1;
    view.dataset.refreshed = String(refreshed);
    stamp.textContent = `updated ${clock(Date.now() / 1000)}`;
  };
  const refresh = serialised(load);
  const tools = { refresh };

  view.dataset.refreshed = "0";
  ctx.signal.addEventListener("abort", () => { delete view.dataset.refreshed; });
  append(view, [
    h("div", { class: "row" },
      h("h1", { class: "grow" }, "Operations"),
      stamp,
      h("button", { type: "button", class: "secondary", onclick: (e) => busy(e.currentTarget, refresh()) }, "Refresh now")),
    SECTIONS.map((s) => h("section", { class: "panel", id: s.id, "aria-labelledby": `${s.id}-title` },
      h("div", { class: "row" },
        h("h2", { class: "grow", id: `${s.id}-title` }, s.title),
        s.actions ? s.actions(tools) : null),
      bodies.get(s.id))),
  ]);
  ctx.every(REFRESH_MS, refresh);
  await refresh();
}

// A section's body from its endpoint's outcome: an error (of the request, or of data in a
// shape this page does not expect) stays inside that section.
function content(section, result, tools) {
  try {
    if (result.status === "rejected") throw result.reason;
    return section.draw(result.value, tools);
  } catch (error) {
    return h("p", { class: "error" }, `Could not load this section: ${explainError(error)}`);
  }
}

// One refresh at a time: a call made while one runs (a cleanup finishing mid-refresh) asks
// for one more run afterwards instead of starting a second one alongside.
function serialised(run) {
  let running = null;
  let again = false;
  const call = () => {
    if (running) {
      again = true;
      return running;
    }
    running = run().finally(() => {
      running = null;
      if (again) {
        again = false;
        call();
      }
    });
    return running;
  };
  return call;
}

// Replaces a section's body; a focused button (data-focus) keeps the focus across the
// redraw, so the 5 s refresh does not throw keyboard users out of a table.
function redraw(body, children) {
  const focused = body.contains(document.activeElement) ? document.activeElement.dataset.focus : null;
  clear(body, children);
  if (focused) {
    const again = body.querySelector(`[data-focus="${CSS.escape(focused)}"]`);
    if (again) again.focus();
  }
}

// Runs an action of a button: busy while it runs, the outcome flashed, then a refresh.
async function act(button, promise, describe, refresh) {
  try {
    flash(describe(await busy(button, promise)), "ok");
  } catch (error) {
    flash(explainError(error), "error");
  }
  await refresh();
}

// -- shared pieces --------------------------------------------------------------------------

function card(label, value) {
  return h("div", { class: "card" }, h("div", { class: "value" }, value), h("div", { class: "label" }, label));
}

const missing = (value) => value === null || value === undefined || value === "";

function dash(value) {
  return missing(value) ? h("span", { class: "muted" }, "–") : value;
}

function ms(value) {
  return missing(value) ? dash(value) : `${num(value, 0)} ms`;
}

function seconds(value, digits = 3) {
  return missing(value) ? dash(value) : `${num(value, digits)} s`;
}

function duration(total) {
  const s = Math.round(total);
  if (s < 90) return `${s} s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  if (s < 172800) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

function since(value) {
  return missing(value) ? dash(value) : h("span", { title: when(value) }, ago(value));
}

function humanise(key) {
  const text = key.replace(/_/g, " ");
  return text.charAt(0).toUpperCase() + text.slice(1);
}

// A value by the naming of its key (ragd's figures say their unit: *_at, *_bytes, *_seconds).
function plain(key, value) {
  if (missing(value)) return dash(value);
  if (typeof value === "object") return h("pre", {}, JSON.stringify(value, null, 2));
  if (typeof value !== "number") return String(value);
  if (key.endsWith("_at")) return when(value);
  if (key.endsWith("_bytes") || key === "bytes") return bytes(value);
  if (key.endsWith("_seconds")) return duration(value);
  return String(value);
}

// Any flat object as a definition list; nested values as indented JSON text.
function kv(object) {
  return h("dl", { class: "kv" }, Object.entries(object).map(([key, value]) => [h("dt", {}, humanise(key)), h("dd", {}, plain(key, value))]));
}

function cell(content, cls) {
  return h("td", cls ? { class: cls } : {}, content);
}

// A compact table whose headers align like their columns (right for numeric cells).
function grid(columns, rows, empty, id) {
  const element = table(columns, rows, { cls: "compact", empty });
  const first = element.tBodies[0].rows[0];
  if (first) {
    [...first.cells].forEach((td, i) => {
      if (td.classList.contains("num")) element.tHead.rows[0].cells[i].classList.add("num");
    });
  }
  if (id) element.id = id;
  return element;
}

// -- health -----------------------------------------------------------------------------------

function drawHealth(health) {
  const reasons = health.reasons || [];
  return [
    h("p", {}, badge(health.status), " ",
      [health.version && `version ${health.version}`,
        health.uptime_seconds != null && `up ${duration(health.uptime_seconds)}`,
        health.pid && `pid ${health.pid}`].filter(Boolean).join(" · ")),
    reasons.length
      ? h("ul", {}, reasons.map((r) => h("li", {}, badge(r.status), " ", h("code", {}, r.code),
        r.message ? ` ${r.message}` : null, r.subject ? h("span", { class: "muted" }, ` (${r.subject})`) : null)))
      : h("p", { class: "muted" }, "Every check passes."),
    grid(["Check", "Status", "Detail"],
      (health.checks || []).map((c) => [c.name, badge(c.status), dash(c.detail)]), "No checks."),
  ];
}

// -- memory -----------------------------------------------------------------------------------

function memoryActions({ refresh }) {
  const run = (emergency) => (event) => {
    const button = event.currentTarget;
    if (emergency && !confirm("Emergency cleanup unloads every model (each once its running calls finish) and "
      + "clears every cache; the next requests reload them. Run it now?")) return;
    act(button, api("/performance/memory/cleanup", { method: "POST", body: { emergency } }),
      (e) => `${humanise(e.level)} cleanup freed ${bytes(e.freed_bytes)} (RSS ${bytes(e.rss_before)} → ${bytes(e.rss_after)}).`,
      refresh);
  };
  return h("div", { class: "actions" },
    h("button", { type: "button", class: "secondary", onclick: run(false) }, "Soft cleanup"),
    h("button", { type: "button", class: "danger", onclick: run(true) }, "Emergency cleanup"));
}

function eventLabel(event) {
  return `${clock(event.at)} ${event.level} cleanup: ${event.reason} (freed ${bytes(event.freed_bytes)})`;
}

function drawMemory(memory) {
  const { soft_bytes: soft, emergency_bytes: emergency } = memory.thresholds;
  const history = memory.history || [];
  const events = memory.events || [];
  const sample = memory.sample;
  const plot = lineChart({
    points: history.map((s) => ({ x: s.at, y: s.rss })),
    label: "Resident memory (RSS) over time",
    xLabel: "time",
    yFormat: bytes,
    lines: [
      { y: soft, label: `soft limit ${bytes(soft)}`, cls: "soft" },
      { y: emergency, label: `emergency limit ${bytes(emergency)}`, cls: "emergency" },
    ],
    markers: events.map((e) => ({ x: e.at, label: eventLabel(e) })),
  });
  plot.setAttribute("id", "rss-plot");
  plot.setAttribute("data-points", String(history.length));
  return [
    h("div", { class: "cards" },
      card(sample && sample.percent != null ? `current RSS (${num(sample.percent, 1)} % of host)` : "current RSS",
        bytes(sample ? sample.rss : null)),
      card("soft limit: idle models unloaded, caches cleared", bytes(soft)),
      card("emergency limit: everything unloaded", bytes(emergency)),
      card("status", badge(memory.status))),
    plot,
    h("h3", {}, "Recent cleanups"),
    eventsTable(events.slice(-RECENT_EVENTS).reverse()),
    h("h3", {}, "Caches"),
    cachesTable(memory.caches || []),
  ];
}

function eventsTable(events) {
  return grid(["When", "Level", "Reason", "RSS before", "RSS after", "Freed", "Took", "Steps"],
    events.map((e) => h("tr", {},
      cell(since(e.at)), cell(badge(e.level)), cell(e.reason),
      cell(bytes(e.rss_before), "num"), cell(bytes(e.rss_after), "num"), cell(bytes(e.freed_bytes), "num"),
      cell(seconds(e.seconds), "num"),
      cell(h("small", {}, (e.actions || []).map(step).join(", "))))),
    "No cleanup has run since the server started.");
}

function step(action) {
  const freed = action.freed_bytes ? ` ${bytes(action.freed_bytes)}` : "";
  return `${action.action} ${action.target}${freed}${action.error ? ` (failed: ${action.error})` : ""}`;
}

function cachesTable(caches) {
  return grid(["Cache", "Entries", "Size", "Budget", "Hits", "Misses", "Hit rate", "Evictions"],
    caches.map((c) => h("tr", {},
      cell(c.name), cell(c.entries, "num"), cell(bytes(c.bytes), "num"), cell(bytes(c.max_bytes), "num"),
      cell(c.hits, "num"), cell(c.misses, "num"),
      cell(c.hit_rate == null ? dash(null) : `${num(c.hit_rate * 100, 1)} %`, "num"), cell(c.evictions, "num"))),
    "No caches.");
}

// -- models -----------------------------------------------------------------------------------

function unloaded(result) {
  const names = result.results.filter((r) => r.unloaded).map((r) => r.name);
  if (names.length) return `Unloaded ${names.join(", ")}: freed ${bytes(result.freed_bytes)}.`;
  if (!result.results.length) return "No model was loaded: nothing to unload.";
  return `Nothing unloaded: ${result.results.map((r) => `${r.name}: ${r.detail}`).join("; ")}.`;
}

function unload(button, names, refresh) {
  return act(button, api("/performance/models/cleanup", { method: "POST", body: names ? { names } : {} }), unloaded, refresh);
}

// The route without names unloads every model, not only idle ones.
function modelsActions({ refresh }) {
  return h("button", { type: "button", class: "danger", onclick: (event) => {
    const button = event.currentTarget;
    if (!confirm("Unload every loaded model? Each reloads on its next use, which makes that request slower.")) return;
    unload(button, null, refresh);
  } }, "Unload all models");
}

function drawModels(data, { refresh }) {
  const models = data.models || [];
  const rows = models.map((m) => h("tr", { dataset: { model: m.name } },
    cell(h("strong", {}, m.name)), cell(m.kind), cell(badge(m.state)),
    cell(seconds(m.load_seconds, 2), "num"), cell(bytes(m.rss_delta_bytes), "num"),
    cell(since(m.last_used_at)), cell(m.use_count, "num"),
    cell(m.last_error ? h("small", { class: "error" }, m.last_error) : dash(null)),
    cell(m.state === "loaded"
      ? h("button", { type: "button", class: "small secondary", dataset: { focus: `unload:${m.name}` },
        "aria-label": `Unload ${m.name}`, onclick: (e) => unload(e.currentTarget, [m.name], refresh) }, "Unload")
      : null)));
  const measured = models.filter((m) => m.rss_delta_bytes != null);
  return [
    grid(["Name", "Kind", "State", "Load time", "RSS delta", "Last used", "Uses", "Last error", ""], rows,
      "No model is registered.", "models-table"),
    h("h3", {}, "Memory added by each model when it loaded"),
    barChart({ items: measured.map((m) => ({ label: m.name, value: m.rss_delta_bytes })), label: "RSS delta per model", valueFormat: bytes }),
    h("h3", {}, "Configuration"),
    kv({ embedder: data.embedder ? [data.embedder.name, data.embedder.type, data.embedder.variant].filter(Boolean).join(" · ") : null,
      dimension: data.embedder ? data.embedder.dimension : null, reranker: data.reranker }),
  ];
}

// -- LLM providers ----------------------------------------------------------------------------

function errorsByKind(errors) {
  const entries = Object.entries(errors || {});
  return entries.length ? entries.map(([kind, count]) => `${kind} ${count}`).join(", ") : dash(null);
}

function breakerNote(breaker) {
  if (!breaker || !breaker.state || breaker.state === "closed") return null;
  const retry = breaker.retry_in_seconds != null ? `, retry in ${Math.ceil(breaker.retry_in_seconds)} s` : "";
  return h("div", {}, h("small", {}, "breaker ", badge(breaker.state), retry));
}

function lastError(error) {
  if (!error) return dash(null);
  return h("small", {}, h("span", { class: "error" }, `${error.kind}: ${error.message}`), " ", since(error.at));
}

function drawProviders(data) {
  return grid(["Name", "Type", "Model", "Status", "p50", "p95", "Calls", "Successes", "Errors", "Last error", "Last success"],
    (data.providers || []).map((p) => h("tr", { dataset: { provider: p.name } },
      cell(h("strong", {}, p.name)), cell(p.type), cell(h("code", {}, p.model)),
      cell([badge(p.status), breakerNote(p.breaker)]),
      cell(ms(p.latency_p50_ms), "num"), cell(ms(p.latency_p95_ms), "num"),
      cell(p.calls, "num"), cell(p.successes, "num"),
      cell(errorsByKind(p.errors)), cell(lastError(p.last_error)), cell(since(p.last_success_at)))),
    "No provider is configured.", "providers-table");
}

// -- startup ----------------------------------------------------------------------------------

function drawStartup(startup) {
  const phases = Object.entries(startup.phases || {});
  return [
    h("div", { class: "cards" },
      card("startup took", seconds(startup.total_seconds)),
      card(`up since ${when(startup.started_at)}`, duration(startup.uptime_seconds))),
    barChart({ items: phases.map(([name, s]) => ({ label: name, value: s })), label: "Seconds per startup phase",
      valueFormat: (s) => `${num(s, 3)} s` }),
  ];
}

// -- optimisation report ------------------------------------------------------------------------

const isFinding = (item) => item && typeof item === "object" && "severity" in item;

function finding(item) {
  const { severity, title, message, detail, evidence, id, ...rest } = item;
  const more = { ...(evidence || {}), ...rest };
  return h("li", { dataset: id ? { finding: id } : {} },
    badge(severity), " ", h("strong", {}, title || message || id || ""),
    detail ? h("div", {}, detail) : null,
    Object.keys(more).length ? kv(more) : null);
}

// Lists of {severity, ...} items become lists with badges; the other fields a definition list.
function drawReport(report) {
  const { status, generated_at: generated, ...rest } = report;
  const lists = Object.entries(rest).filter(([, value]) => Array.isArray(value) && value.every(isFinding));
  const listed = new Set(lists.map(([key]) => key));
  const other = Object.fromEntries(Object.entries(rest).filter(([key]) => !listed.has(key)));
  return [
    h("p", {}, status ? badge(status) : null, " ", generated ? `generated ${when(generated)}` : null),
    lists.map(([key, items]) => [
      h("h3", {}, humanise(key)),
      items.length ? h("ul", {}, items.map(finding)) : h("p", { class: "muted" }, "None: nothing to change."),
    ]),
    Object.keys(other).length ? kv(other) : null,
  ];
}
