// The service's API as the page calls it. Every URL is relative to the page (which may live under a proxy's path
// prefix, e.g. /ocr/), so that the prefix is kept; artifact URLs in answers are used exactly as the service gives
// them. A 401 asks for the API key and tries again; any other refusal is an ApiError carrying the service's
// status and detail.

import { askForKey, currentKey } from "./keys.js";

export class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status; // 0: no HTTP answer (the connection failed or was cut)
    this.detail = detail;
  }
}

/** The service's `detail` of an error answer, else its status text. */
export async function errorDetail(response) {
  try {
    const body = await response.json();
    if (typeof body.detail === "string") return body.detail;
    if (body.detail !== undefined) return JSON.stringify(body.detail);
  } catch (_) {
    // not JSON: fall through
  }
  return response.statusText || `HTTP ${response.status}`;
}

/** fetch with the stored key; a 401 asks for a key and tries again with it (cancelled: the 401 is thrown). */
export async function api(path, options = {}) {
  for (;;) {
    const key = currentKey();
    const headers = { ...(options.headers || {}) };
    if (key) headers.Authorization = `Bearer ${key}`;
    const response = await fetch(path, { ...options, headers });
    if (response.status !== 401) return response;
    const detail = await errorDetail(response);
    const entered = await askForKey(detail);
    if (!entered) throw new ApiError(401, detail);
  }
}

export async function apiJson(path, options) {
  const response = await api(path, options);
  if (!response.ok) throw new ApiError(response.status, await errorDetail(response));
  return response.json();
}

/** /health, which needs no key: {ok, body}, body null when the service cannot be reached or answers no JSON. */
export async function fetchHealth() {
  try {
    const response = await fetch("health", { cache: "no-store" });
    return { ok: response.ok, body: await response.json() };
  } catch (_) {
    return { ok: false, body: null };
  }
}

/** Server-sent events from a fetch body: yields {event, data}; comment lines (keep-alives) are skipped. */
async function* readEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let name = "";
  let data = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    const lines = buffer.split(/\r\n|\r|\n/);
    buffer = lines.pop();
    for (const line of lines) {
      if (line === "") {
        if (data.length) yield { event: name || "message", data: data.join("\n") };
        name = "";
        data = [];
      } else if (line.startsWith(":")) {
        continue;
      } else {
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let value = colon < 0 ? "" : line.slice(colon + 1);
        if (value.startsWith(" ")) value = value.slice(1);
        if (field === "event") name = value;
        else if (field === "data") data.push(value);
      }
    }
  }
}

/** POST /api/ocr/stream: yields its events as {event, data} with the data parsed (an event that is not JSON is
 * skipped); a refused upload throws its ApiError before any event. */
export async function* ocrStream(form, signal) {
  const response = await api("api/ocr/stream", { method: "POST", body: form, signal });
  if (!response.ok) throw new ApiError(response.status, await errorDetail(response));
  for await (const { event, data } of readEvents(response.body)) {
    let payload;
    try {
      payload = JSON.parse(data);
    } catch (_) {
      continue;
    }
    yield { event, data: payload };
  }
}
