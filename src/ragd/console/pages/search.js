// Search playground: one query through the retrieval pipeline, each hit with what every
// stage (BM25, dense, fusion, reranker) made of it.
import { all, api } from "../api.js";
import { busy, clear, explainError, field, h, num, table } from "../dom.js";

const MODES = ["hybrid", "dense", "lexical"];
const EXPLAIN_COLUMNS = [
  "Lexical rank", "Lexical score", "Dense rank", "Dense score", "Fused score", "Rerank", "Found by", "Placed by",
];
// The server's refusal of rerank: true (no reranker configured), kept for the session so the
// checkbox stays off once the server has said so.
let rerankRefusal = null;

export async function render(view, ctx) {
  const results = h("div", { id: "search-results" });
  const picker = collectionPicker();
  view.append(h("h1", {}, "Search"), searchForm(ctx, picker, results), results);
  await picker.ready;
}

// A multi-select of the tenant's collections (none selected: all of them). Returned at once;
// ``ready`` settles when the options are in, and never rejects.
export function collectionPicker() {
  const select = h("select", { name: "collection_ids", multiple: true, size: 2 });
  const hint = h("small", {}, "None selected: all collections. Ctrl/⌘ picks several.");
  const ready = all("/collections", {}, 500).then((collections) => {
    select.append(...collections.map((c) => h("option", { value: c.id }, c.name)));
    select.size = Math.min(Math.max(collections.length, 2), 6);
    if (!collections.length) {
      select.disabled = true;
      hint.textContent = "There is no collection yet.";
    }
  }, (error) => {
    select.disabled = true;
    hint.textContent = `The collections could not be listed: ${explainError(error)}`;
  });
  return {
    element: h("label", { class: "field" }, h("span", {}, "Collections"), select, hint),
    ready,
    // The chosen ids, or undefined for all collections (the API's default).
    selected() {
      const ids = [...select.selectedOptions].map((option) => option.value);
      return ids.length ? ids : undefined;
    },
  };
}

function searchForm(ctx, picker, results) {
  const query = h("input", { type: "search", name: "query", required: true, autofocus: true, autocomplete: "off" });
  const mode = h("select", { name: "mode" }, MODES.map((m) => h("option", { value: m }, m)));
  const topK = h("input", { type: "number", name: "top_k", min: 1, max: 100, step: 1, value: 10, required: true });
  // The server's default reranks when a reranker is configured: left to it unless chosen.
  const rerank = h("select", { name: "rerank" },
    h("option", { value: "" }, "server default"), h("option", { value: "yes" }, "rerank"),
    h("option", { value: "no" }, "do not rerank"));
  const rerankNote = h("small", {}, "With the cross-encoder, where one is configured.");
  const filters = h("textarea", {
    name: "filters", rows: 2, spellcheck: "false", placeholder: '{"lang": "en", "year": {"gte": 2020}}',
  });
  const error = h("p", { class: "error", role: "alert", hidden: true });
  const submit = h("button", { type: "submit" }, "Search");
  const refuseRerank = (message) => {
    rerankRefusal = message;
    rerank.value = "";
    rerank.querySelector("option[value=yes]").disabled = true;
    rerankNote.textContent = "No reranker is configured on this server.";
  };
  if (rerankRefusal) refuseRerank(rerankRefusal);

  const form = h("form", { class: "panel", id: "search-form" },
    h("div", { class: "row" },
      h("div", { class: "grow" }, field("Query", query)),
      field("Mode", mode),
      field("Results", topK),
      field("Rerank", rerank, rerankNote)),
    h("div", { class: "row" },
      h("div", { class: "grow" }, picker.element),
      h("div", { class: "grow" }, field("Metadata filters (JSON, optional)", filters,
        "field → value, or operators eq, ne, in, nin, exists, gt, gte, lt, lte."))),
    error,
    h("div", { class: "actions" }, submit));

  const fail = (message) => {
    error.textContent = message;
    error.hidden = false;
  };
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.hidden = true;
    filters.removeAttribute("aria-invalid");
    let parsed;
    try {
      parsed = parseFilters(filters.value);
    } catch (invalid) {
      filters.setAttribute("aria-invalid", "true");
      fail(invalid.message);
      filters.focus();
      return;
    }
    const body = {
      query: query.value, mode: mode.value, top_k: Number(topK.value), collection_ids: picker.selected(),
      filters: parsed, rerank: rerank.value ? rerank.value === "yes" : undefined, explain: true,
    };
    try {
      const out = await busy(submit, api("/search", { method: "POST", body, signal: ctx.signal }));
      clear(results, summary(out), out.results.length
        ? out.results.map(hitCard)
        : h("p", { class: "muted" }, "No results: try another mode, fewer filters or more collections."));
    } catch (err) {
      if (ctx.signal.aborted) return;
      clear(results);
      if (body.rerank && refusesRerank(err)) {
        refuseRerank(err.message);
        fail(`Reranking is not available here: ${explainError(err)}`);
      } else fail(explainError(err));
    }
  });
  return form;
}

function refusesRerank(error) {
  return error.status === 422 && (error.code === "reranker_not_configured" || /rerank/i.test(error.message || ""));
}

// The filters textarea as the API's object, undefined when empty; throws with a message a
// person can act on when it is not a JSON object.
function parseFilters(text) {
  if (!text.trim()) return undefined;
  let value;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new Error(`The metadata filters are not valid JSON: ${error.message}`);
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw new Error('The metadata filters must be a JSON object, such as {"lang": "en"}.');
  }
  return value;
}

function summary(out) {
  const timings = Object.entries(out.timings_ms || {});
  const total = out.timings_ms && out.timings_ms.total;
  const parts = [
    `${out.results.length} result${out.results.length === 1 ? "" : "s"}`,
    `mode ${out.mode}`,
    `fusion ${out.fusion}`,
    out.reranked ? "reranked" : "not reranked",
    total !== undefined ? `${num(total, 1)} ms` : null,
  ];
  return [
    h("p", { class: "muted", id: "search-summary", title: timings.map(([stage, ms]) => `${stage} ${num(ms, 1)} ms`).join(", ") },
      parts.filter(Boolean).join(" · ")),
    out.query_truncated
      ? h("p", { class: "warning" }, `The query is longer than the embedder reads${out.query_tokens ? ` (${out.query_tokens} tokens)` : ""}: `
        + "the dense stage used only its beginning.")
      : null,
  ];
}

function pages(hit) {
  if (hit.page === null || hit.page === undefined) return null;
  return hit.page_end && hit.page_end !== hit.page ? `pages ${hit.page}–${hit.page_end}` : `page ${hit.page}`;
}

function hitCard(hit, index) {
  const where = [hit.heading_path.join(" › "), pages(hit), `score ${num(hit.score, 4)}`].filter(Boolean);
  return h("article", { class: "hit", dataset: { chunkId: hit.chunk_id, documentId: hit.document_id } },
    h("h3", {}, h("span", { class: "muted" }, `#${index + 1} `), hit.title),
    h("div", { class: "meta" }, where.map((part) => h("span", {}, part))),
    h("div", { class: "text" }, hit.text),
    hit.keywords.length
      ? h("div", { class: "keywords" }, hit.keywords.map((k) => h("span", { title: k.score !== undefined ? `score ${num(k.score)}` : null }, k.keyword ?? String(k))))
      : null,
    hit.explain ? explainTable(hit.explain) : null);
}

function explainTable(explain) {
  const stage = (found, key) => (found ? num(found[key], 4) : "–");
  const rerank = explain.rerank || {};
  return table(EXPLAIN_COLUMNS, [[
    stage(explain.lexical, "rank"), stage(explain.lexical, "score"),
    stage(explain.dense, "rank"), stage(explain.dense, "score"),
    explain.fused ? `${num(explain.fused.score, 4)} (${explain.fused.method})` : "–",
    "skipped" in rerank
      ? h("span", { class: "muted" }, `skipped: ${rerank.skipped}`)
      : `#${rerank.rank} · ${num(rerank.score, 4)}`,
    explain.found_by ?? "–",
    explain.placed_by ?? "–",
  ]], { cls: "compact explain" });
}
