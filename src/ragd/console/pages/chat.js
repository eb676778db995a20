// Chat: the user's conversations on the left, the open one on the right. Answers stream in
// token by token, then their citation markers become chips that open the cited passage.
import { all, api, events } from "../api.js";
import { ago, append, clear, dialog, explainError, field, flash, h, num } from "../dom.js";
import { collectionPicker } from "./search.js";

const MARKER = /\[(\d+)\]/g;
const HEADINGS = { refused: "Not found in your documents", failed: "The answer failed" };
// The parts a stored message or a failure does not have.
const NOTHING = { text: "", citations: [], attempts: [], skipped: [], sources: null };

export async function render(view, ctx) {
  const picker = collectionPicker();
  const page = {
    ctx,
    id: ctx.rest[0] || null, // the open conversation; null until the first answer of a new one
    items: [],
    stop: null, // aborts the answer being streamed
    list: h("ul", { class: "conversations", id: "conversations", "aria-label": "Conversations" }),
    thread: h("div", { class: "thread", id: "thread" }),
    question: h("textarea", { name: "question", rows: 3, required: true, placeholder: "Ask about your documents…" }),
  };
  view.append(h("h1", {}, "Chat"), h("div", { class: "cols" },
    h("aside", { class: "panel" },
      h("button", { type: "button", id: "new-conversation", onclick: () => startNew(page) }, "New conversation"),
      page.list),
    h("section", {}, page.thread, askForm(page, picker))));
  await Promise.all([picker.ready, refreshList(page), openConversation(page)]);
}

// -- conversations -----------------------------------------------------------------------

async function refreshList(page) {
  try {
    page.items = await all("/conversations", {}, 200);
  } catch (error) {
    clear(page.list, h("li", { class: "error" }, explainError(error)));
    return;
  }
  drawList(page);
}

function drawList(page) {
  clear(page.list, page.items.length
    ? page.items.map((conversation) => listItem(page, conversation))
    : h("li", { class: "muted" }, "No conversations yet."));
}

function listItem(page, conversation) {
  const current = conversation.id === page.id;
  const title = conversation.title || "Untitled";
  return h("li", { dataset: { conversationId: conversation.id } },
    h("a", {
      href: `#/chat/${encodeURIComponent(conversation.id)}`,
      class: current ? "active" : null,
      "aria-current": current ? "true" : null,
      title: `${title} · ${conversation.message_count} messages · ${ago(conversation.updated_at)}`,
    }, title),
    h("button", {
      type: "button", class: "icon", title: "Delete", "aria-label": `Delete conversation “${title}”`,
      onclick: () => remove(page, conversation),
    }, "×"));
}

async function remove(page, conversation) {
  if (!confirm(`Delete the conversation “${conversation.title || "Untitled"}”? This cannot be undone.`)) return;
  try {
    await api(`/conversations/${encodeURIComponent(conversation.id)}`, { method: "DELETE" });
  } catch (error) {
    flash(explainError(error), "error");
    return;
  }
  if (conversation.id === page.id) startNew(page);
  await refreshList(page);
}

async function openConversation(page) {
  if (!page.id) {
    showEmpty(page);
    return;
  }
  try {
    const conversation = await api(`/conversations/${encodeURIComponent(page.id)}`, { signal: page.ctx.signal });
    const messages = conversation.messages || [];
    if (messages.length) clear(page.thread, messages.map(storedMessage));
    else showEmpty(page);
  } catch (error) {
    if (page.ctx.signal.aborted) return;
    page.id = null; // a question sent now starts a new conversation
    clear(page.thread, h("p", { class: "error", role: "alert" }, explainError(error)));
  }
}

function showEmpty(page) {
  clear(page.thread, h("p", { class: "muted", id: "thread-empty" },
    "Ask a question about your documents. Answers cite their sources: a number opens the passage it stands for."));
}

// A fresh thread without a page load (the hash may already be #/chat, where go() would do nothing).
function startNew(page) {
  const stopped = page.stop;
  if (stopped) stopped();
  page.id = null;
  history.replaceState(null, "", "#/chat");
  showEmpty(page);
  drawList(page);
  if (stopped) refreshList(page); // the stopped question may have started a conversation
  page.question.focus();
}

// -- asking ------------------------------------------------------------------------------

function askForm(page, picker) {
  const send = h("button", { type: "submit", id: "chat-send" }, "Send");
  const form = h("form", { id: "chat-form", class: "panel" },
    field("Question", page.question, "Ctrl+Enter sends."),
    h("div", { class: "row" }, h("div", { class: "grow" }, picker.element), h("div", { class: "field" }, send)));
  page.question.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const question = page.question.value;
    if (send.disabled || !question.trim()) return;
    page.question.value = "";
    send.disabled = true;
    try {
      await ask(page, {
        question, stream: true, conversation_id: page.id || undefined, collection_ids: picker.selected(),
      });
    } finally {
      send.disabled = false;
    }
  });
  return form;
}

async function ask(page, body) {
  const controller = new AbortController();
  const stop = () => controller.abort();
  page.ctx.signal.addEventListener("abort", stop, { once: true });
  page.stop = stop;
  const thread = page.thread;
  const empty = thread.querySelector("#thread-empty");
  if (empty) empty.remove();
  const box = h("div", { class: "msg assistant", dataset: { state: "streaming" }, "aria-live": "polite", "aria-busy": "true" },
    h("div", { class: "body" }));
  append(thread, [userMessage(body.question), box]);
  box.scrollIntoView({ block: "nearest" });
  const seen = { text: "", conversationId: page.id, ended: false };
  try {
    for await (const { event, data } of events("/chat", body, controller.signal)) receive(box, seen, event, data);
    if (!seen.ended) showAnswer(box, failure("The answer stream ended before the answer was complete.", seen.text));
  } catch (error) {
    if (!controller.signal.aborted) showAnswer(box, failure(explainError(error), seen.text));
  } finally {
    page.ctx.signal.removeEventListener("abort", stop);
    if (page.stop === stop) page.stop = null;
  }
  if (controller.signal.aborted) return; // the page or the thread was left: nothing to update
  if (seen.conversationId && seen.conversationId !== page.id) {
    page.id = seen.conversationId;
    // Not location.hash: that would render the page again and drop the streamed thread.
    history.replaceState(null, "", `#/chat/${encodeURIComponent(page.id)}`);
  }
  await refreshList(page);
}

function receive(box, seen, event, data) {
  if (event === "retrieval") {
    seen.conversationId = data.conversation_id || seen.conversationId;
  } else if (event === "token") {
    seen.text += data.text;
    box.querySelector(".body").textContent = seen.text;
  } else if (event === "done") {
    seen.ended = true;
    seen.conversationId = data.conversation_id || seen.conversationId;
    showAnswer(box, fromOut(data));
  } else if (event === "error") {
    seen.ended = true;
    const partial = data.partial ? fromOut(data.partial) : { ...NOTHING, text: seen.text };
    if (data.partial) seen.conversationId = data.partial.conversation_id || seen.conversationId;
    showAnswer(box, { ...partial, failure: data.message || "The answer failed." });
  }
  // ``citation`` events need nothing: ``done`` carries every citation again.
}

// -- answers -----------------------------------------------------------------------------

// An answer as this page shows it, from a ChatOut (``done``, an error's ``partial``)...
function fromOut(out) {
  return {
    text: out.answer, citations: out.citations || [], provider: out.provider, model: out.model,
    attempts: out.attempts || [], skipped: out.skipped || [], grounded: out.grounded,
    interrupted: out.interrupted || null, sources: sourcesOf(out.retrieval),
    totalMs: out.timings_ms ? out.timings_ms.total : undefined,
  };
}

// ...from a stored message (its details keep the citations, not the passages they quote)...
function fromStored(message) {
  const details = message.details || {};
  return {
    ...NOTHING, text: message.content, citations: details.citations || [], provider: details.provider,
    model: details.model, attempts: details.attempts || [], grounded: details.grounded,
    interrupted: details.interrupted || null,
  };
}

// ...or from a request that failed before any answer: what had streamed, and why it stopped.
function failure(message, text) {
  return { ...NOTHING, text, failure: message };
}

// The numbered blocks the model was given and each document's collection (for the link).
function sourcesOf(retrieval) {
  if (!retrieval) return null;
  return {
    blocks: new Map((retrieval.context || []).map((block) => [block.n, block])),
    collections: new Map((retrieval.results || retrieval.hits || []).map((hit) => [hit.document_id, hit.collection_id])),
  };
}

function stateOf(answer) {
  if (answer.failure || answer.interrupted) return "failed";
  // provider null: ragd asked no model, nothing relevant enough was found.
  if (answer.provider === null || (answer.grounded === false && !answer.citations.length)) return "refused";
  return "answered";
}

function showAnswer(box, answer) {
  const state = stateOf(answer);
  box.className = state === "answered" ? "msg assistant" : `msg assistant ${state}`;
  box.dataset.state = state;
  box.removeAttribute("aria-busy");
  const heading = state === "failed" && answer.text ? "The answer is incomplete" : HEADINGS[state];
  clear(box,
    heading ? h("h3", {}, heading) : null,
    state === "failed" ? h("p", { class: "error" }, answer.failure || answer.interrupted) : null,
    answer.text ? h("div", { class: "body" }, withChips(answer)) : null,
    metaLine(answer, state));
}

function userMessage(text) {
  return h("div", { class: "msg user" }, h("div", { class: "body" }, text));
}

function storedMessage(message) {
  if (message.role === "user") return userMessage(message.content);
  if (message.role !== "assistant") return null;
  const box = h("div", { class: "msg assistant" });
  showAnswer(box, fromStored(message));
  return box;
}

// The answer text with each [n] that names one of its citations turned into a chip; every
// other part, a marker without a citation included, stays text.
function withChips(answer) {
  const cited = new Map(answer.citations.map((citation) => [citation.n, citation]));
  const parts = [];
  let from = 0;
  for (const match of answer.text.matchAll(MARKER)) {
    const citation = cited.get(Number(match[1]));
    if (!citation) continue;
    parts.push(answer.text.slice(from, match.index), chip(citation, answer.sources));
    from = match.index + match[0].length;
  }
  parts.push(answer.text.slice(from));
  return parts.filter((part) => part !== "");
}

function chip(citation, sources) {
  return h("button", {
    type: "button", class: "chip", dataset: { n: String(citation.n) }, title: sourceTitle(citation),
    onclick: () => showCitation(citation, sources),
  }, String(citation.n));
}

function sourceTitle(citation) {
  return citation.page === null || citation.page === undefined ? citation.title : `${citation.title}, page ${citation.page}`;
}

function metaLine(answer, state) {
  const parts = [];
  if (answer.provider) parts.push(answer.model ? `${answer.provider} · ${answer.model}` : answer.provider);
  if (answer.attempts.length) parts.push(`attempts: ${answer.attempts.map(attemptText).join(", ")}`);
  if (answer.skipped.length) parts.push(`skipped: ${answer.skipped.map((s) => `${s.provider} (${s.reason})`).join(", ")}`);
  if (state === "answered" || answer.citations.length) {
    parts.push(`${answer.citations.length} citation${answer.citations.length === 1 ? "" : "s"}`);
  }
  if (answer.totalMs !== undefined) parts.push(`${num(answer.totalMs, 0)} ms`);
  return parts.length ? h("div", { class: "meta" }, parts.map((part) => h("span", {}, part))) : null;
}

function attemptText(attempt) {
  return `${attempt.provider} ${attempt.ok ? "ok" : attempt.error_kind || "failed"} in ${num(attempt.seconds, 2)} s`;
}

// -- the cited passage -------------------------------------------------------------------

function showCitation(citation, sources) {
  const block = sources && sources.blocks.get(citation.n);
  const passage = block && block.chunk_id === citation.chunk_id ? block.text : null;
  const collectionId = sources ? sources.collections.get(citation.document_id) : undefined;
  dialog(sourceTitle(citation), (close) => h("div", { class: "citation", dataset: { n: String(citation.n) } },
    passage === null
      ? [h("p", { class: "muted" }, "The quoted passage:"), h("div", { class: "text" }, h("mark", {}, citation.quote))]
      : highlighted(passage, citation.quote),
    documentLink(citation.document_id, collectionId, close)));
}

// The passage with the quote marked where it is found (as given, else with any whitespace
// matching any whitespace); a quote not found is shown, marked, above the passage.
function highlighted(text, quote) {
  const span = locate(text, quote);
  if (!span) return [h("p", {}, h("mark", {}, quote)), h("div", { class: "text" }, text)];
  const [start, end] = span;
  return h("div", { class: "text" }, text.slice(0, start), h("mark", {}, text.slice(start, end)), text.slice(end));
}

function locate(text, quote) {
  const words = (quote || "").trim().split(/\s+/).filter(Boolean);
  if (!words.length) return null;
  const exact = text.indexOf(quote);
  if (exact >= 0) return [exact, exact + quote.length];
  const loose = new RegExp(words.map(escapeRegExp).join("\\s+")).exec(text);
  return loose ? [loose.index, loose.index + loose[0].length] : null;
}

function escapeRegExp(text) {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

// A link to the document in the documents page; a stored answer does not know the
// collection, so the document is asked for it.
function documentLink(documentId, collectionId, close) {
  const line = h("p", {});
  const link = (c) => append(line, [h("a", {
    href: `#/documents?${new URLSearchParams({ c, doc: documentId })}`, onclick: close,
  }, "Open the document")]);
  if (collectionId) link(collectionId);
  else {
    api(`/documents/${encodeURIComponent(documentId)}`).then((doc) => link(doc.collection_id), (error) => append(line, [
      h("span", { class: "muted" }, error.status === 404 ? "The document no longer exists." : explainError(error)),
    ]));
  }
  return line;
}
