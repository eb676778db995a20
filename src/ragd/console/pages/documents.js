// Documents of a collection: drag-and-drop upload with per-file progress, then each
// document's stage and progress from the jobs API, live; retry, cancel, delete; the chunk
// viewer and the original file.
import { all, api, download, upload } from "../api.js";
import { badge, busy, bytes, clear, dialog, explainError, field, flash, h, table, when } from "../dom.js";

const PAGE_SIZE = 100;
const LIVE_MS = 1500;
const UPLOADS_AT_ONCE = 2;
const ACTIVE = new Set(["queued", "processing"]);

export async function render(view, ctx) {
  const collections = await all("/collections", {}, 500);
  if (!collections.length) {
    view.append(h("h1", {}, "Documents"), h("p", {}, "There is no collection yet. ",
      h("a", { href: "#/collections" }, "Create one"), " first, then come back to upload."));
    return;
  }
  const wanted = ctx.params.get("c");
  const collection = collections.find((c) => c.id === wanted) || collections[0];
  const page = new DocumentList(collection, ctx);
  view.append(
    h("h1", {}, "Documents"),
    h("div", { class: "row" },
      field("Collection", collectionPicker(collections, collection, ctx)),
      field("Status", page.statusPicker())),
    uploader(collection, () => page.load()),
    page.root,
  );
  await page.load();
  ctx.every(LIVE_MS, () => page.tick());
  const open = ctx.params.get("doc");
  if (open) openChunks(await api(`/documents/${encodeURIComponent(open)}`).catch(() => null));
}

function collectionPicker(collections, current, ctx) {
  const select = h("select", { name: "collection", id: "collection-picker" },
    collections.map((c) => h("option", { value: c.id, selected: c.id === current.id }, c.name)));
  select.addEventListener("change", () => ctx.go("documents", { c: select.value }));
  return select;
}

// -- upload ------------------------------------------------------------------------------

function uploader(collection, uploaded) {
  const input = h("input", { type: "file", multiple: true, name: "files", id: "file-input" });
  const list = h("ul", { class: "uploads", id: "uploads" });
  const zone = h("div", { class: "drop", id: "drop-zone" },
    h("p", {}, "Drop files here (PDF, DOCX, PPTX, HTML, Markdown, reStructuredText, text, CSV) or "),
    h("label", { class: "button" }, "choose files", input));
  input.hidden = true;
  const queue = [];
  let running = 0;
  const pump = () => {
    while (running < UPLOADS_AT_ONCE && queue.length) {
      const job = queue.shift();
      running += 1;
      job().finally(() => {
        running -= 1;
        uploaded();
        pump();
      });
    }
  };
  const add = (files) => {
    for (const file of files) {
      queue.push(uploadOne(file, collection, list));
    }
    pump();
  };
  input.addEventListener("change", () => {
    add([...input.files]);
    input.value = "";
  });
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    add([...event.dataTransfer.files]);
  });
  return h("section", { class: "panel" }, zone, list);
}

function uploadOne(file, collection, list) {
  const bar = h("div");
  const meter = h("div", { class: "progress", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": 100 }, bar);
  const state = h("span", { class: "muted" }, "waiting");
  const item = h("li", { dataset: { file: file.name } }, h("span", {}, file.name, h("span", { class: "muted" }, ` · ${bytes(file.size)}`)), meter, state);
  list.prepend(item);
  const show = (fraction) => {
    const percent = Math.round(fraction * 100);
    bar.style.width = `${percent}%`;
    meter.setAttribute("aria-valuenow", String(percent));
  };
  return async () => {
    state.textContent = "uploading";
    const form = new FormData();
    form.append("collection_id", collection.id);
    form.append("file", file, file.name);
    try {
      const accepted = await upload("/documents", form, show);
      show(1);
      meter.classList.add("done");
      item.dataset.documentId = accepted.document_id;
      state.textContent = accepted.duplicate ? "already uploaded (same content)" : "uploaded";
    } catch (error) {
      meter.classList.add("failed");
      item.dataset.failed = "true";
      state.textContent = explainError(error);
      state.className = "error";
    }
  };
}

// -- the list --------------------------------------------------------------------------

class DocumentList {
  constructor(collection, ctx) {
    this.collection = collection;
    this.ctx = ctx;
    this.status = "";
    this.cursors = [null];
    this.documents = [];
    this.jobs = new Map();
    this.rows = new Map();
    this.body = h("div", { id: "documents" });
    this.pager = h("div", { class: "pager" });
    this.root = h("section", {}, this.body, this.pager);
    this.loading = false;
  }

  statusPicker() {
    const select = h("select", { name: "status" },
      ["", "queued", "processing", "ready", "failed", "cancelled"].map((s) => h("option", { value: s }, s || "all")));
    select.addEventListener("change", () => {
      this.status = select.value;
      this.cursors = [null];
      this.load();
    });
    return select;
  }

  async load() {
    if (this.loading) {
      // An upload finished while a load was in flight: load again once it is done, or the
      // new document would wait for a change that never comes.
      this.again = true;
      return;
    }
    this.loading = true;
    this.again = false;
    try {
      const cursor = this.cursors[this.cursors.length - 1];
      const page = await api("/documents", {
        params: { collection_id: this.collection.id, status: this.status, limit: PAGE_SIZE, cursor },
        signal: this.ctx.signal,
      });
      this.documents = page.items;
      this.next = page.next_cursor;
      await this.loadJobs();
      this.draw();
    } catch (error) {
      if (error.name !== "AbortError") clear(this.body, h("p", { class: "error" }, explainError(error)));
    } finally {
      this.loading = false;
    }
    if (this.again) await this.load();
  }

  // The stage and progress of documents still on their way.
  async loadJobs() {
    const active = this.documents.filter((d) => ACTIVE.has(d.status) && d.job_id);
    const jobs = await Promise.all(active.map((d) => api(`/jobs/${d.job_id}`, { signal: this.ctx.signal }).catch(() => null)));
    this.jobs = new Map(jobs.filter(Boolean).map((job) => [job.document_id, job]));
  }

  async tick() {
    if (this.documents.some((d) => ACTIVE.has(d.status))) await this.load();
  }

  draw() {
    const rows = this.documents.map((d) => this.row(d));
    clear(this.body, table(["Title", "Format", "Status", "Progress", "Size", "Chunks", "Updated", ""], rows,
      { empty: this.status ? `No ${this.status} documents.` : "No documents yet: drop files above." }));
    this.body.dataset.count = String(this.documents.length);
    const page = this.cursors.length;
    clear(this.pager,
      h("button", { type: "button", class: "small secondary", disabled: page === 1, onclick: () => { this.cursors.pop(); this.load(); } }, "Previous"),
      h("span", { class: "muted" }, `page ${page}`),
      h("button", { type: "button", class: "small secondary", disabled: !this.next, onclick: () => { this.cursors.push(this.next); this.load(); } }, "Next"));
  }

  row(doc) {
    const job = this.jobs.get(doc.id);
    return h("tr", { dataset: { documentId: doc.id, status: doc.status } },
      h("td", {}, h("div", {}, doc.title),
        doc.filename && doc.filename !== doc.title ? h("div", { class: "muted" }, doc.filename) : null),
      h("td", {}, doc.format || "–"),
      h("td", {}, badge(doc.status), doc.error ? h("div", { class: "error" }, doc.error) : null,
        doc.warnings.length ? h("div", { class: "muted", title: doc.warnings.join("\n") }, `${doc.warnings.length} warning${doc.warnings.length > 1 ? "s" : ""}`) : null),
      h("td", {}, progress(doc, job)),
      h("td", { class: "num" }, bytes(doc.size_bytes)),
      h("td", { class: "num" }, doc.chunk_count),
      h("td", {}, when(doc.updated_at)),
      h("td", {}, this.actions(doc, job)));
  }

  actions(doc, job) {
    const act = (label, cls, fn) => h("button", { type: "button", class: `small ${cls}`, onclick: (event) => fn(event.currentTarget) }, label);
    return h("div", { class: "actions" },
      doc.chunk_count ? act("Chunks", "secondary", () => openChunks(doc)) : null,
      act("Download", "secondary", (button) => busy(button, download(doc.id, doc.filename || doc.title)).catch((e) => flash(explainError(e), "error"))),
      (doc.status === "failed" || doc.status === "cancelled") && doc.job_id
        ? act("Retry", "secondary", (button) => this.jobAction(button, doc.job_id, "retry")) : null,
      ACTIVE.has(doc.status) && doc.job_id && !(job && job.cancel_requested)
        ? act("Cancel", "danger", (button) => this.jobAction(button, doc.job_id, "cancel")) : null,
      act("Delete", "danger", (button) => this.remove(button, doc)));
  }

  async jobAction(button, jobId, action) {
    try {
      await busy(button, api(`/jobs/${jobId}/${action}`, { method: "POST" }));
      flash(action === "retry" ? "Queued again." : "Cancelling.", "ok");
      await this.load();
    } catch (error) {
      flash(explainError(error), "error");
    }
  }

  async remove(button, doc) {
    if (!confirm(`Delete “${doc.title}”?`)) return;
    try {
      await busy(button, api(`/documents/${doc.id}`, { method: "DELETE" }));
      await this.load();
    } catch (error) {
      flash(explainError(error), "error");
    }
  }
}

function progress(doc, job) {
  if (!ACTIVE.has(doc.status)) {
    return doc.status === "ready" && doc.ready_at ? h("span", { class: "muted" }, `ready ${when(doc.ready_at)}`) : "–";
  }
  if (!job) return h("span", { class: "muted" }, doc.status);
  const fraction = job.progress.total ? job.progress.done / job.progress.total : 0;
  const bar = h("div");
  bar.style.width = `${Math.round(fraction * 100)}%`;
  const where = job.status === "queued"
    ? (job.queue_position === null ? "queued" : `queued (${job.queue_position} ahead)`)
    : `${job.stage || "starting"}${job.progress.total ? ` ${job.progress.done}/${job.progress.total}` : ""}`;
  return h("div", { class: "stage", dataset: { stage: job.stage || job.status } },
    h("div", { class: "muted" }, where, job.attempts > 1 ? ` · attempt ${job.attempts}/${job.max_attempts}` : ""),
    h("div", { class: "progress" }, bar));
}

// -- chunks ------------------------------------------------------------------------------

function openChunks(doc) {
  if (!doc) return;
  dialog(doc.title, () => {
    const list = h("div", { id: "chunk-list" });
    const more = h("button", { type: "button", class: "secondary", hidden: true }, "Load more");
    let cursor = null;
    const load = async () => {
      try {
        const page = await api(`/documents/${doc.id}/chunks`, { params: { limit: 50, cursor } });
        list.append(...page.items.map(chunkView));
        cursor = page.next_cursor;
        more.hidden = !cursor;
      } catch (error) {
        list.append(h("p", { class: "error" }, explainError(error)));
      }
    };
    more.addEventListener("click", () => busy(more, load()));
    load();
    return h("div", {},
      h("dl", { class: "kv" },
        h("dt", {}, "File"), h("dd", {}, doc.filename || "–", ` · ${doc.format || doc.content_type} · ${bytes(doc.size_bytes)}`),
        h("dt", {}, "Version"), h("dd", {}, `${doc.version}${doc.pages ? ` · ${doc.pages} pages` : ""} · ${doc.chunk_count} chunks · ${doc.token_count} tokens`),
        doc.keywords.length ? [h("dt", {}, "Keywords"), h("dd", {}, keywords(doc.keywords))] : null,
        doc.warnings.length ? [h("dt", {}, "Warnings"), h("dd", {}, h("ul", {}, doc.warnings.map((w) => h("li", {}, w))))] : null),
      list, more);
  }, { wide: true });
}

function chunkView(chunk) {
  const pages = chunk.page === null ? null : chunk.page_end && chunk.page_end !== chunk.page ? `pages ${chunk.page}–${chunk.page_end}` : `page ${chunk.page}`;
  return h("article", { class: "chunk", dataset: { chunkId: chunk.id } },
    h("div", { class: "meta" },
      h("span", {}, `#${chunk.ordinal}`),
      chunk.heading_path.length ? h("span", { class: "heading" }, chunk.heading_path.join(" › ")) : null,
      pages ? h("span", {}, pages) : null,
      h("span", {}, `${chunk.token_count} tokens`)),
    chunk.keywords.length ? keywords(chunk.keywords) : null,
    h("div", { class: "text" }, chunk.text));
}

function keywords(items) {
  return h("div", { class: "keywords" }, items.map((k) => h("span", { title: k.score !== undefined ? `score ${Number(k.score).toFixed(3)}` : null }, k.keyword ?? k)));
}
