// The page at /: pick or drop a document, read it over /api/ocr/stream, show the result and the history.
// Plain JavaScript modules, no build step; this one starts the page and wires the others:
//   dom.js      element helpers, the page's state, the error box
//   keys.js     the API key: stored, asked for on a 401
//   api.js      the service's API: relative URLs, the key, errors with the service's detail, the OCR stream
//   options.js  mode, prompt and pages, from /api/modes
//   upload.js   the drop zone and file picker, reading a document and following its stream
//   views.js    the result: markdown (sanitized), raw text, figures, copy and download
//   regions.js  the page with its regions drawn over it
//   history.js  the results kept, reopened on a click

import { ApiError, fetchHealth } from "./api.js";
import { $, setState, showError } from "./dom.js";
import { loadHistory, wireHistory } from "./history.js";
import { askForKey, storedKey } from "./keys.js";
import { loadOptions, wireOptions } from "./options.js";
import { refreshRunButton, wireUpload } from "./upload.js";
import { wireViews } from "./views.js";

const HEALTH_RETRY_MS = 2000;

/** Shows /health on the status line; true once the service is ready, else it tries again in a while. */
async function watchHealth() {
  const line = $("health");
  const { ok, body } = await fetchHealth();
  $("demo-notice").hidden = !(body && body.demo === true);
  if (!body) {
    line.textContent = "service unreachable, retrying…";
    line.dataset.status = "down";
  } else if (ok) {
    const parts = [body.engine, body.family, body.device].filter(Boolean);
    line.textContent = `ready${parts.length ? " · " + parts.join(" · ") : ""}`;
    line.dataset.status = "ok";
    return true;
  } else {
    line.textContent = `${body.status || "unavailable"}${body.detail ? ": " + body.detail : ""}`;
    line.dataset.status = body.status || "down";
  }
  setTimeout(start, HEALTH_RETRY_MS);
  return false;
}

/** Once the service is ready: the options, then the history (both need the key where the service asks one). */
async function start() {
  if (!(await watchHealth())) return;
  try {
    await loadOptions();
  } catch (error) {
    showError(error);
    if (error instanceof ApiError && error.status === 503) setTimeout(start, HEALTH_RETRY_MS);
    return;
  }
  showError(null);
  refreshRunButton();
  loadHistory();
}

function wire() {
  wireOptions();
  wireUpload();
  wireViews();
  wireHistory();
  $("key-button").hidden = !storedKey();
  $("key-button").addEventListener("click", async () => {
    if (await askForKey("Enter the API key to use.")) start();
  });
  setState("idle");
  start();
}

wire();
