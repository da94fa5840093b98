// The signed-in user (sessionStorage, per tab) and calls to the api with its token.

const KEY = "roomlog.session";

export function currentSession() {
  const raw = sessionStorage.getItem(KEY);
  if (!raw) return null;
  const session = JSON.parse(raw);
  if (Date.parse(session.expires_at) < Date.now()) { sessionStorage.removeItem(KEY); return null; }
  return session;
}

export function requireSession() {
  const session = currentSession();
  if (!session) location.replace(`/web/index.html?${new URLSearchParams({ next: location.pathname + location.search })}`);
  return session;
}

/** Where to go after signing in: `?next=` when it is a page of this site, else the lobby. */
export function afterSignIn() {
  const next = new URLSearchParams(location.search).get("next") ?? "";
  return /^\/web\/[A-Za-z0-9_.-]+\.html(\?[^#]*)?$/.test(next) && !next.startsWith("/web/index.html") ? next : "/web/lobby.html";
}

export function signOut() {
  sessionStorage.removeItem(KEY);
  location.replace("/web/index.html");
}

export class ApiError extends Error {
  constructor(status, code, message) {
    super(`${code}: ${message}`);
    Object.assign(this, { status, code, detail: message });
  }
}

/** fetch() an api path; JSON in and out; errors become ApiError with the api's code. */
export async function api(path, { method = "GET", body, token } = {}) {
  const headers = { "Content-Type": "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = data.error ?? {};
    throw new ApiError(response.status, error.code ?? "http_error", error.message ?? response.statusText);
  }
  return data;
}

export async function devLogin(name) {
  const session = await api("/v1/dev/login", { method: "POST", body: { name } });
  sessionStorage.setItem(KEY, JSON.stringify(session));
  return session;
}

export function signalingUrl() {
  return `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/v1/rtc`;
}

/** This gateway's socket URL, then any others from `?gateways=ws://a/v1/rtc,ws://b/v1/rtc`
 * (the SDK tries the next one when a gateway goes away). */
export function signalingUrls() {
  const extra = (new URLSearchParams(location.search).get("gateways") ?? "").split(",").map((u) => u.trim())
    .filter((u) => /^wss?:\/\//.test(u));
  return [...new Set(extra.length ? extra : [signalingUrl()])];
}

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(node.dataset, v);
    else node.setAttribute(k, v);
  }
  node.append(...children);
  return node;
}
