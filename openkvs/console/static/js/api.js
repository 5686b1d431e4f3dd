// The public /v2 API, as any client uses it: the token in an Authorization header (never in a URL), the API's own
// error message on failure, 429 waited out and retried, and a 401 (a revoked or wrong token) sends the user back
// to sign in.

const TOKEN_KEY = "openkvs.token";
const MAX_RETRIES = 5;

export class ApiError extends Error {
  constructor(status, type, message) {
    super(message);
    this.status = status;
    this.type = type;
  }
}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function signIn(value) {
  sessionStorage.setItem(TOKEN_KEY, value);
}

export function signOut() {
  sessionStorage.removeItem(TOKEN_KEY);
}

let unauthorized = () => {};
let waiting = () => {};

// main.js decides what a 401 does (back to sign-in) and how a wait for the rate limit is shown.
export function onUnauthorized(handler) { unauthorized = handler; }
export function onRateLimited(handler) { waiting = handler; }

export function url(path, query = {}) {
  const u = new URL("/v2" + path, location.origin);
  for (const [name, value] of Object.entries(query)) {
    if (value !== undefined && value !== null && value !== "") u.searchParams.set(name, String(value));
  }
  return u;
}

// "/v2/key-value-stores/ID/records/KEY" of a segment: keys may hold characters that encodeURIComponent keeps ("!'()"),
// all of which are fine in a path.
export const seg = encodeURIComponent;

function authHeaders(extra = {}) {
  const headers = { ...extra };
  const t = token();
  if (t) headers.Authorization = "Bearer " + t;
  return headers;
}

function retryAfter(headers) {
  const seconds = Number(headers.get ? headers.get("Retry-After") : headers);
  return Math.min(Number.isFinite(seconds) && seconds > 0 ? seconds : 1, 30);
}

async function errorOf(response) {
  let type = "error";
  let message = `${response.status} ${response.statusText}`.trim();
  try {
    const body = await response.json();
    if (body && body.error) {
      type = String(body.error.type || type);
      message = String(body.error.message || message);
    }
  } catch {
    // not the API's JSON (a proxy's page): the status line says enough
  }
  return new ApiError(response.status, type, message);
}

const sleep = (seconds) => new Promise((resolve) => setTimeout(resolve, seconds * 1000));

// A request; the answer's `data` (null for 204), or with `raw` the Response itself (for record bytes).
export async function request(method, path, { query, json, body, headers, raw = false, signal } = {}) {
  const init = { method, headers: authHeaders(headers), signal, cache: "no-store", referrerPolicy: "no-referrer" };
  if (json !== undefined) {
    init.body = JSON.stringify(json);
    init.headers["Content-Type"] = "application/json";
  } else if (body !== undefined) {
    init.body = body;
  }
  let response;
  for (let attempt = 0; ; attempt++) {
    response = await fetch(url(path, query), init);
    if (response.status !== 429 || attempt >= MAX_RETRIES) break;
    const seconds = retryAfter(response.headers);
    waiting(seconds);
    await sleep(seconds);
  }
  if (!response.ok) {
    const error = await errorOf(response);
    if (response.status === 401) unauthorized(error.message);
    throw error;
  }
  if (raw) return response;
  if (response.status === 204) return null;
  const parsed = await response.json();
  return parsed && "data" in parsed ? parsed.data : parsed;
}

export const get = (path, options) => request("GET", path, options);
export const post = (path, options) => request("POST", path, options);
export const put = (path, options) => request("PUT", path, options);
export const del = (path, options) => request("DELETE", path, options);

// An upload with progress (fetch reports none for request bodies): XMLHttpRequest, same headers and error handling.
export function upload(path, file, { contentType, onProgress } = {}) {
  const attempt = (tries) => new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("PUT", url(path));
    for (const [name, value] of Object.entries(authHeaders({ "Content-Type": contentType || "application/octet-stream" }))) {
      xhr.setRequestHeader(name, value);
    }
    xhr.upload.onprogress = (event) => onProgress && onProgress(event.loaded, event.lengthComputable ? event.total : file.size);
    xhr.onerror = () => reject(new ApiError(0, "network", "The upload failed: the server could not be reached."));
    xhr.onload = async () => {
      if (xhr.status === 429 && tries < MAX_RETRIES) {
        const seconds = retryAfter(xhr.getResponseHeader("Retry-After"));
        waiting(seconds);
        await sleep(seconds);
        attempt(tries + 1).then(resolve, reject);
        return;
      }
      if (xhr.status >= 200 && xhr.status < 300) {
        resolve();
        return;
      }
      const error = await errorOf(new Response(xhr.responseText, { status: xhr.status, statusText: xhr.statusText }));
      if (xhr.status === 401) unauthorized(error.message);
      reject(error);
    };
    xhr.send(file);
  });
  return attempt(0);
}

// A signed URL of the API (recordPublicUrl, recordsPublicUrl) as a path on this origin: the API's public base URL
// may name another host (a proxy), while the console's links, images and frames stay on its own origin.
export function local(absolute, extraQuery = {}) {
  const u = new URL(absolute, location.origin);
  for (const [name, value] of Object.entries(extraQuery)) {
    if (value !== undefined && value !== null && value !== "") u.searchParams.set(name, String(value));
  }
  return u.pathname + u.search;
}
