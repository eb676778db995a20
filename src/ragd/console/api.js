// The public API as the console uses it. The access token lives only in this module's
// memory; the refresh token is an HttpOnly cookie the page cannot read, spent through
// /auth/session/refresh with the CSRF token from the ragd_csrf cookie.

const BASE = "/api/v1";
let access = null;
let renewAt = 0;
let pending = null;
const listeners = new Set();

export class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.details = details || [];
  }
}

export function onSignOut(listener) { listeners.add(listener); }

export function signedIn() { return access !== null; }

function remember(body) {
  access = body.access_token;
  // Renew a little before expiry, so a request never leaves with a token about to lapse.
  renewAt = Date.now() + Math.max(5, body.expires_in - 30) * 1000;
}

function forget() {
  const was = access !== null;
  access = null;
  renewAt = 0;
  if (was) for (const listener of listeners) listener();
}

function csrfToken() {
  for (const part of document.cookie.split(";")) {
    const [name, ...rest] = part.trim().split("=");
    if (name === "ragd_csrf") return rest.join("=");
  }
  return "";
}

async function errorOf(response) {
  let code = "http_" + response.status;
  let message = response.statusText || `HTTP ${response.status}`;
  let details = [];
  try {
    const body = await response.json();
    if (body && body.error) {
      code = body.error.code || code;
      message = body.error.message || message;
      details = body.error.details || [];
    }
  } catch { /* not JSON: keep the status line */ }
  return new ApiError(response.status, code, message, details);
}

// One rotation at a time: concurrent callers share it (a second rotation would spend the
// cookie the first one just replaced).
export function renew() {
  if (!pending) {
    // Without the CSRF cookie there is no session to renew (and nothing to ask the server).
    if (!csrfToken()) return Promise.resolve(false);
    pending = (async () => {
      const response = await fetch(`${BASE}/auth/session/refresh`, {
        method: "POST", credentials: "same-origin", headers: { "X-CSRF-Token": csrfToken() },
      });
      if (!response.ok) {
        forget();
        return false;
      }
      remember(await response.json());
      return true;
    })().finally(() => { pending = null; });
  }
  return pending;
}

export async function signIn(email, password) {
  const body = await post(`${BASE}/auth/session`, { email, password });
  remember(body);
}

export async function register(email, password, tenantName) {
  const body = await post(`${BASE}/auth/session/register`, { email, password, tenant_name: tenantName });
  remember(body);
}

export async function signOut() {
  try {
    if (access) await api("/auth/session", { method: "DELETE" });
  } finally {
    forget();
  }
}

export async function sessionOptions() {
  const response = await fetch(`${BASE}/auth/session/options`);
  if (!response.ok) throw await errorOf(response);
  return response.json();
}

async function post(url, json) {
  const response = await fetch(url, {
    method: "POST", credentials: "same-origin",
    headers: { "Content-Type": "application/json" }, body: JSON.stringify(json),
  });
  if (!response.ok) throw await errorOf(response);
  return response.json();
}

function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params || {})) {
    if (value === undefined || value === null || value === "") continue;
    for (const item of Array.isArray(value) ? value : [value]) search.append(key, item);
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

async function authorised() {
  if (access && Date.now() >= renewAt) await renew();
  if (!access) throw new ApiError(401, "not_authenticated", "Signed out: sign in again.");
  return access;
}

// Calls /api/v1<path> (or a root path such as /performance/memory) with the access token.
// JSON in, JSON out; ``raw`` returns the Response (streams, downloads).
export async function api(path, { method = "GET", body, params, raw = false, signal, headers = {} } = {}) {
  const url = (path.startsWith("/performance") || path.startsWith("/health") ? "" : BASE) + path + query(params);
  const send = async () => fetch(url, {
    method, signal, credentials: "same-origin",
    headers: {
      Authorization: `Bearer ${await authorised()}`,
      ...(body !== undefined ? { "Content-Type": "application/json" } : {}),
      ...headers,
    },
    body: body !== undefined ? JSON.stringify(body) : undefined,
  });
  let response = await send();
  if (response.status === 401 && (await renew())) response = await send();
  if (response.status === 401) forget();
  if (!response.ok) throw await errorOf(response);
  if (raw) return response;
  if (response.status === 204) return null;
  return response.json();
}

// Every page of a cursor-paginated list (bounded: at most ``max`` items).
export async function all(path, params = {}, max = 1000) {
  const items = [];
  let cursor = null;
  do {
    const page = await api(path, { params: { ...params, limit: 100, cursor } });
    items.push(...page.items);
    cursor = page.next_cursor;
  } while (cursor && items.length < max);
  return items;
}

// Uploads one file with progress: fetch cannot report upload progress, XMLHttpRequest can.
export async function upload(path, form, onProgress) {
  const attempt = async () => {
    const token = await authorised();
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open("POST", BASE + path);
      xhr.setRequestHeader("Authorization", `Bearer ${token}`);
      xhr.responseType = "json";
      xhr.upload.addEventListener("progress", (event) => {
        if (event.lengthComputable) onProgress(event.loaded / event.total);
      });
      xhr.addEventListener("load", () => resolve(xhr));
      xhr.addEventListener("error", () => reject(new ApiError(0, "network", "The upload failed: the server could not be reached.")));
      xhr.send(form);
    });
  };
  let xhr = await attempt();
  if (xhr.status === 401 && (await renew())) xhr = await attempt();
  const body = xhr.response;
  if (xhr.status >= 200 && xhr.status < 300) return body;
  const error = body && body.error ? body.error : {};
  throw new ApiError(xhr.status, error.code || `http_${xhr.status}`, error.message || `HTTP ${xhr.status}`, error.details);
}

// POSTs JSON and yields the server-sent events of the answer: {event, data}.
export async function* events(path, body, signal) {
  const response = await api(path, { method: "POST", body, raw: true, signal, headers: { Accept: "text/event-stream" } });
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (!data.length) continue;
      const text = data.join("\n");
      let parsed = text;
      try { parsed = JSON.parse(text); } catch { /* [DONE] and other plain data */ }
      yield { event, data: parsed };
    }
  }
}

// Saves a document's original file. The bytes become an octet-stream blob saved through a
// download link: whatever the file is (HTML with scripts included), it is never rendered.
export async function download(documentId, filename) {
  const response = await api(`/documents/${encodeURIComponent(documentId)}/content`, { raw: true });
  const blob = new Blob([await response.arrayBuffer()], { type: "application/octet-stream" });
  const url = URL.createObjectURL(blob);
  const link = document.createElement("a");
  link.href = url;
  link.download = filename || documentId;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}
