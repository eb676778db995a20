// Collections: create, rename, delete; document counts by status.
import { all, api } from "../api.js";
import { badge, busy, clear, explainError, field, flash, h, table, when } from "../dom.js";

const STATUSES = ["ready", "processing", "queued", "failed", "cancelled"];

export async function render(view, ctx) {
  const list = h("div", { id: "collections" });
  view.append(h("h1", {}, "Collections"), createForm(ctx, () => refresh(list, ctx)), list);
  await refresh(list, ctx);
}

function createForm(ctx, changed) {
  const name = h("input", { type: "text", name: "name", required: true, maxlength: 200 });
  const description = h("input", { type: "text", name: "description", maxlength: 2000 });
  const submit = h("button", { type: "submit" }, "Create collection");
  const form = h("form", { class: "panel row", id: "collection-form" },
    h("div", { class: "grow" }, field("Name", name)),
    h("div", { class: "grow" }, field("Description (optional)", description)),
    h("div", { class: "field" }, submit));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const created = await busy(submit, api("/collections", {
        method: "POST", body: { name: name.value, description: description.value || null },
      }));
      form.reset();
      flash(`Collection “${created.name}” created.`, "ok");
      await changed();
    } catch (error) {
      flash(explainError(error), "error");
    }
  });
  return form;
}

async function refresh(list, ctx) {
  const collections = await all("/collections", {}, 500);
  // Counts by status come with each collection's detail: fetched together, shown as they come.
  const details = await Promise.all(collections.map((c) => api(`/collections/${c.id}`, { signal: ctx.signal }).catch(() => null)));
  const rows = collections.map((collection, i) => row(collection, details[i], () => refresh(list, ctx), ctx));
  clear(list, table(["Name", "Documents", "By status", "Chunks", "Embedder", "Created", ""], rows,
    { empty: "No collections yet: create one above, then upload documents into it." }));
}

function row(collection, detail, changed, ctx) {
  const counts = detail ? detail.documents_by_status : {};
  const statuses = STATUSES.filter((s) => counts[s]).map((s) => h("span", {}, badge(s), ` ${counts[s]} `));
  return h("tr", { dataset: { collectionId: collection.id } },
    h("td", {}, h("a", { href: `#/documents?c=${encodeURIComponent(collection.id)}` }, collection.name),
      collection.description ? h("div", { class: "muted" }, collection.description) : null),
    h("td", { class: "num" }, collection.document_count),
    h("td", {}, statuses.length ? statuses : h("span", { class: "muted" }, "–")),
    h("td", { class: "num" }, detail ? detail.chunk_count : "–"),
    h("td", {}, collection.embedder || h("span", { class: "muted" }, "not yet")),
    h("td", {}, when(collection.created_at)),
    h("td", {}, h("div", { class: "actions" },
      h("button", { type: "button", class: "small secondary", onclick: () => ctx.go("documents", { c: collection.id }) }, "Documents"),
      h("button", { type: "button", class: "small secondary", onclick: () => rename(collection, changed) }, "Rename"),
      h("button", { type: "button", class: "small danger", onclick: () => remove(collection, changed) }, "Delete"))));
}

async function rename(collection, changed) {
  const name = prompt("New name", collection.name);
  if (name === null || name.trim() === "" || name === collection.name) return;
  try {
    await api(`/collections/${collection.id}`, { method: "PATCH", body: { name } });
    flash("Renamed.", "ok");
    await changed();
  } catch (error) {
    flash(explainError(error), "error");
  }
}

async function remove(collection, changed) {
  if (!confirm(`Delete “${collection.name}” and its ${collection.document_count} documents? This cannot be undone.`)) return;
  try {
    const result = await api(`/collections/${collection.id}`, { method: "DELETE" });
    flash(result && result.status === "deleting" ? "Deleting in the background." : "Deleted.", "ok");
    await changed();
  } catch (error) {
    flash(explainError(error), "error");
  }
}
