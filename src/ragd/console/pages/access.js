// Access: the caller's API keys and, for tenant admins, the tenant's users.
import { api } from "../api.js";
import { ago, append, badge, busy, clear, explainError, field, flash, h, table, when } from "../dom.js";

const USERS_PAGE = 200; // the route's largest page
const USERS_MAX = 2000;
const ROLES = ["member", "admin"];

export async function render(view, ctx) {
  const sections = [keysSection(ctx), ctx.me.role === "admin" ? usersSection(ctx) : usersNote(ctx)];
  append(view, [h("h1", {}, "Access"), sections.map((s) => s.element)]);
  await Promise.all(sections.map((s) => s.refresh && s.refresh()));
}

function panel(id, title, ...children) {
  return h("section", { class: "panel", id, "aria-labelledby": `${id}-title` }, h("h2", { id: `${id}-title` }, title), children);
}

// Fills ``into`` with what ``build`` returns; a failure is written there instead.
async function fill(into, build, signal) {
  try {
    clear(into, await build());
  } catch (error) {
    if (!signal.aborted) clear(into, h("p", { class: "error" }, explainError(error)));
  }
}

// Runs a row's action: the control disabled meanwhile, the outcome flashed, then the list
// reloaded (after a failure too, so a control such as a role select shows the real value).
async function perform(control, promise, success, changed) {
  try {
    await busy(control, promise);
    flash(success, "ok");
  } catch (error) {
    flash(explainError(error), "error");
  }
  await changed();
}

// A form whose submission calls ``send``; its error stays next to it until the next try.
function form(id, fields, submitLabel, send) {
  const submit = h("button", { type: "submit" }, submitLabel);
  const problem = h("p", { class: "error", id: `${id}-error`, role: "alert" });
  const element = h("form", { id, class: "row" }, fields.map((f) => h("div", { class: "grow" }, f)),
    h("div", { class: "field" }, submit));
  element.addEventListener("submit", async (event) => {
    event.preventDefault();
    problem.textContent = "";
    try {
      await busy(submit, send());
      element.reset();
    } catch (error) {
      problem.textContent = explainError(error);
    }
  });
  return [element, problem];
}

// -- API keys ---------------------------------------------------------------------------------

function keysSection(ctx) {
  const list = h("div");
  // The new key lives only in this element: no variable, no storage. Leaving the page
  // empties it (the view is cleared too; this also covers a leave while it is shown).
  const reveal = h("div", { "aria-live": "polite" });
  ctx.signal.addEventListener("abort", () => reveal.replaceChildren());
  const refresh = () => fill(list, async () => keysTable(await api("/auth/api-keys", { signal: ctx.signal }), refresh), ctx.signal);
  const name = h("input", { type: "text", name: "name", required: true, maxlength: 100, autocomplete: "off" });
  const expires = h("input", { type: "date", name: "expires", min: today() });
  const create = form("key-form",
    [field("Name", name), field("Expires on (optional)", expires, "Valid until the end of that day; empty: it does not expire.")],
    "Create key",
    async () => {
      const body = { name: name.value };
      if (expires.value) body.expires_at = endOfDay(expires.value);
      showKey(reveal, await api("/auth/api-keys", { method: "POST", body }));
      await refresh();
    });
  return {
    refresh,
    element: panel("api-keys", "API keys",
      h("p", { class: "muted" }, `A key acts as you (${ctx.me.email}, ${ctx.me.role} in ${ctx.me.tenant.name}). `
        + "Send it in the X-API-Key header, or as a bearer token."),
      create, reveal, list),
  };
}

const pad = (n) => String(n).padStart(2, "0");

function today() {
  const now = new Date();
  return `${now.getFullYear()}-${pad(now.getMonth() + 1)}-${pad(now.getDate())}`;
}

// A date input's "YYYY-MM-DD" as the last second of that day, local time, in UTC ISO form.
function endOfDay(date) {
  return new Date(`${date}T23:59:59`).toISOString();
}

function showKey(slot, created) {
  const code = h("code", {}, created.key);
  const copy = h("button", { type: "button", class: "small", onclick: () => copyKey(code) }, "Copy");
  clear(slot,
    h("p", {}, h("strong", {}, `Key “${created.name}” created.`),
      " Copy it now: it will not be shown again (ragd keeps only a hash of it)."),
    h("div", { class: "secret", id: "new-key" }, code, copy,
      h("button", { type: "button", class: "small secondary", onclick: () => slot.replaceChildren() }, "Done")));
  copy.focus();
}

async function copyKey(code) {
  try {
    // Missing outside secure contexts (plain http other than localhost), hence the fallback.
    await navigator.clipboard.writeText(code.textContent);
    flash("Copied to the clipboard.", "ok");
  } catch {
    window.getSelection().selectAllChildren(code);
    flash("Copying is not available here: the key is selected, copy it with Ctrl+C (⌘C).");
  }
}

function keyStatus(key) {
  if (key.revoked) return "revoked";
  if (key.expires_at && new Date(key.expires_at) <= new Date()) return "expired";
  return "active";
}

function keysTable(keys, changed) {
  const grid = table(["Name", "Prefix", "Created", "Expires", "Status", ""], keys.map((key) => {
    const verb = key.revoked ? "Delete" : "Revoke";
    return h("tr", { dataset: { keyId: key.id } },
      h("td", {}, key.name),
      h("td", {}, h("code", {}, key.prefix)),
      h("td", {}, when(key.created_at)),
      h("td", {}, key.expires_at ? when(key.expires_at) : h("span", { class: "muted" }, "never")),
      h("td", {}, badge(keyStatus(key))),
      h("td", {}, h("button", {
        type: "button", class: "small danger", "aria-label": `${verb} the key ${key.name}`,
        onclick: (event) => revokeKey(event.currentTarget, key, changed),
      }, verb)));
  }), { cls: "compact", empty: "No API keys yet." });
  grid.id = "keys-table";
  return grid;
}

function revokeKey(button, key, changed) {
  if (!confirm(`Revoke the key “${key.name}” (${key.prefix}…)? Requests using it fail from the next one on.`)) return;
  perform(button, api(`/auth/api-keys/${encodeURIComponent(key.id)}`, { method: "DELETE" }), `Key “${key.name}” revoked.`, changed);
}

// -- users (tenant admins) ----------------------------------------------------------------------

function usersNote(ctx) {
  return {
    refresh: null,
    element: panel("users", "Users", h("p", { class: "muted" },
      `Managing the users of ${ctx.me.tenant.name} needs the admin role: ask an admin of your tenant.`)),
  };
}

function usersSection(ctx) {
  const list = h("div");
  const refresh = () => fill(list, async () => usersTable(await allUsers(ctx.signal), ctx, refresh), ctx.signal);
  const email = h("input", { type: "email", name: "email", required: true, maxlength: 320, autocomplete: "off" });
  const password = h("input", { type: "password", name: "password", required: true, maxlength: 256, autocomplete: "new-password" });
  const role = h("select", { name: "role" }, ROLES.map((r) => h("option", { value: r }, r)));
  const create = form("user-form", [field("Email", email), field("Password", password), field("Role", role)], "Add user",
    async () => {
      const user = await api("/tenant/users", { method: "POST", body: { email: email.value, password: password.value, role: role.value } });
      flash(`${user.email} added as ${user.role}.`, "ok");
      await refresh();
    });
  return {
    refresh,
    element: panel("users", "Users",
      h("p", { class: "muted" }, `The users of ${ctx.me.tenant.name}. A change of role or activity ends that user's `
        + "sessions at once; deactivating also revokes their API keys."),
      create, list),
  };
}

async function allUsers(signal) {
  const users = [];
  for (let offset = 0; offset < USERS_MAX; offset += USERS_PAGE) {
    const page = await api("/tenant/users", { params: { limit: USERS_PAGE, offset }, signal });
    users.push(...page);
    if (page.length < USERS_PAGE) break;
  }
  return users;
}

function usersTable(users, ctx, changed) {
  const grid = table(["Email", "Role", "Status", "Created", "Last sign-in", ""],
    users.map((user) => userRow(user, ctx, changed)), { cls: "compact", empty: "No users." });
  grid.id = "users-table";
  return grid;
}

// Changes to one's own account end one's own session: say so before.
function confirmed(user, ctx, question) {
  const own = user.id === ctx.me.id ? " This is your own account: you will be signed out." : "";
  return confirm(`${question}${own}`);
}

function userRow(user, ctx, changed) {
  const self = user.id === ctx.me.id;
  const update = (control, body, success) => perform(control,
    api(`/tenant/users/${encodeURIComponent(user.id)}`, { method: "PATCH", body }), success, changed);
  const role = h("select", { "aria-label": `Role of ${user.email}` }, ROLES.map((r) => h("option", { value: r }, r)));
  role.value = user.role;
  role.addEventListener("change", () => {
    if (self && !confirmed(user, ctx, `Make yourself ${role.value}?`)) {
      role.value = user.role;
      return;
    }
    update(role, { role: role.value }, `${user.email} is now ${role.value}.`);
  });
  const toggle = h("button", { type: "button", class: "small secondary", onclick: (event) => {
    const button = event.currentTarget;
    if (user.is_active && !confirmed(user, ctx, `Deactivate ${user.email}? Their sessions end and their API keys are revoked.`)) return;
    update(button, { is_active: !user.is_active }, `${user.email} ${user.is_active ? "deactivated" : "activated"}.`);
  } }, user.is_active ? "Deactivate" : "Activate");
  const remove = h("button", { type: "button", class: "small danger", "aria-label": `Delete ${user.email}`, onclick: (event) => {
    const button = event.currentTarget;
    if (!confirmed(user, ctx, `Delete ${user.email}? This cannot be undone.`)) return;
    perform(button, api(`/tenant/users/${encodeURIComponent(user.id)}`, { method: "DELETE" }), `${user.email} deleted.`, changed);
  } }, "Delete");
  return h("tr", { dataset: { userId: user.id } },
    h("td", {}, user.email, self ? h("span", { class: "muted" }, " (you)") : null,
      user.is_superuser ? [" ", badge("platform admin")] : null),
    h("td", {}, role),
    h("td", {}, badge(user.is_active ? "active" : "inactive")),
    h("td", {}, when(user.created_at)),
    h("td", {}, user.last_login_at ? h("span", { title: when(user.last_login_at) }, ago(user.last_login_at)) : h("span", { class: "muted" }, "never")),
    h("td", {}, h("div", { class: "actions" }, toggle, remove)));
}
