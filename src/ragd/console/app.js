// The console shell: session start-up, navigation, and one page at a time.
import { api, onSignOut, renew, signOut, signedIn } from "./api.js";
import { clear, explainError, flash, h } from "./dom.js";

const PAGES = {
  signin: { title: "Sign in", load: () => import("./pages/signin.js"), open: true },
  collections: { title: "Collections", load: () => import("./pages/collections.js") },
  documents: { title: "Documents", load: () => import("./pages/documents.js") },
  search: { title: "Search", load: () => import("./pages/search.js") },
  chat: { title: "Chat", load: () => import("./pages/chat.js") },
  access: { title: "Access", load: () => import("./pages/access.js") },
  ops: { title: "Operations", load: () => import("./pages/ops.js"), superuser: true },
};
const NAV = ["collections", "documents", "search", "chat", "access", "ops"];

const state = { me: null, leave: null };

function parse() {
  const hash = location.hash.replace(/^#\/?/, "");
  const [path, search = ""] = hash.split("?");
  const [name, ...rest] = path.split("/");
  return { name: name || "collections", rest, params: new URLSearchParams(search) };
}

export function go(name, params = {}) {
  const search = new URLSearchParams(params).toString();
  location.hash = `#/${name}${search ? `?${search}` : ""}`;
}

function renderNav(current) {
  const nav = document.getElementById("nav");
  const who = document.getElementById("who");
  if (!state.me) {
    clear(nav);
    clear(who);
    return;
  }
  clear(nav, NAV.filter((name) => !PAGES[name].superuser || state.me.is_superuser).map((name) => h(
    "a", { href: `#/${name}`, class: name === current ? "active" : "", "aria-current": name === current ? "page" : null },
    PAGES[name].title,
  )));
  clear(who,
    h("span", { class: "muted", title: `tenant ${state.me.tenant.id}` }, `${state.me.email} · ${state.me.tenant.name} · ${state.me.role}`),
    h("button", { type: "button", class: "link", id: "sign-out", onclick: async () => {
      await signOut().catch(() => {});
      state.me = null;
      go("signin");
    } }, "Sign out"),
  );
}

async function loadMe() {
  state.me = await api("/auth/me");
  return state.me;
}

async function show() {
  const route = parse();
  let page = PAGES[route.name] ? route.name : "collections";
  if (!signedIn() && !PAGES[page].open) page = "signin";
  if (signedIn() && page === "signin") page = "collections";
  if (signedIn() && !state.me) await loadMe().catch(() => null);
  if (PAGES[page].superuser && !(state.me && state.me.is_superuser)) page = "collections";
  if (state.leave) state.leave();
  const timers = [];
  const controller = new AbortController();
  state.leave = () => {
    timers.forEach(clearInterval);
    controller.abort();
  };
  document.title = `${PAGES[page].title} · ragd`;
  renderNav(page);
  const view = document.getElementById("view");
  view.dataset.page = page;
  view.setAttribute("aria-busy", "true");
  clear(view, h("p", { class: "muted" }, "Loading…"));
  const ctx = {
    me: state.me,
    rest: route.rest,
    params: route.params,
    signal: controller.signal,
    go,
    every(ms, fn) { timers.push(setInterval(fn, ms)); },
    async signedIn() {
      await loadMe();
      go("collections");
    },
  };
  try {
    const module = await PAGES[page].load();
    if (controller.signal.aborted) return;
    clear(view);
    await module.render(view, ctx);
  } catch (error) {
    if (controller.signal.aborted || error.name === "AbortError") return;
    clear(view, h("p", { class: "error" }, explainError(error)));
  } finally {
    if (!controller.signal.aborted) view.setAttribute("aria-busy", "false");
  }
}

onSignOut(() => {
  state.me = null;
  flash("Your session ended: sign in again.", "error");
  go("signin");
});

async function start() {
  // A reload loses the access token (it only ever lived in memory); the session cookie,
  // if there is one, gives a new one.
  await renew().catch(() => false);
  if (signedIn()) await loadMe().catch(() => null);
  window.addEventListener("hashchange", show);
  await show();
}

start();
