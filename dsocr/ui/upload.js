// Choosing a document (the drop zone, or the file picker from a click or the keyboard) and reading it over
// /api/ocr/stream: queue position, the text as it is generated, pages done, then the result; cancellable.

import { ApiError, ocrStream } from "./api.js";
import { $, count, setState, showError } from "./dom.js";
import { loadHistory } from "./history.js";
import { allowPages, appendOptions, optionsLoaded, sizeLimit } from "./options.js";
import { showResult } from "./views.js";

let file = null;
let controller = null; // the reading in progress, which Cancel aborts
let streamed = new Map(); // page number → the text generated so far

function formatBytes(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KiB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

function looksLikePdf(chosen) {
  return chosen.type === "application/pdf" || /\.pdf$/i.test(chosen.name);
}

/** Read is possible with a file and the options loaded, and not while a reading runs. */
export function refreshRunButton() {
  $("run").disabled = !(file && optionsLoaded()) || Boolean(controller);
}

function chooseFile(chosen) {
  file = chosen || null;
  $("file-name").textContent = file ? `${file.name} · ${formatBytes(file.size)}` : "No file chosen";
  allowPages(!file || looksLikePdf(file) || !file.type.startsWith("image/"));
  showError(null);
  refreshRunButton();
}

function wireFilePicking() {
  const drop = $("drop");
  const input = $("file");
  input.addEventListener("change", () => chooseFile(input.files[0]));
  for (const name of ["dragenter", "dragover"]) {
    drop.addEventListener(name, (event) => {
      event.preventDefault();
      drop.classList.add("dragging");
    });
  }
  for (const name of ["dragleave", "dragend"]) {
    drop.addEventListener(name, () => drop.classList.remove("dragging"));
  }
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("dragging");
    const files = event.dataTransfer && event.dataTransfer.files;
    if (files && files.length) {
      try {
        input.files = files;
      } catch (_) {
        // read-only in old browsers: the chosen file is what is sent anyway
      }
      chooseFile(files[0]);
    }
  });
  // A drop beside the zone must not navigate away to the file.
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => event.preventDefault());
  // The label opens the picker on click; Enter and Space do it too when it has the focus.
  drop.tabIndex = 0;
  drop.setAttribute("role", "button");
  drop.setAttribute("aria-describedby", "file-name file-limit");
  drop.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      input.click();
    }
  });
}

// ---- following the stream ------------------------------------------------------------------------------------

function progressStatus(text) {
  $("progress-status").textContent = text;
}

function showStreamedText() {
  const many = streamed.size > 1;
  const text = Array.from(streamed.entries())
    .sort((a, b) => a[0] - b[0])
    .map(([page, body]) => (many ? `--- page ${page} ---\n${body}` : body))
    .join("\n\n");
  const stream = $("stream");
  stream.textContent = text;
  stream.scrollTop = stream.scrollHeight;
}

/** The events before the result: queued, started, delta (text), retry and replace (a page that looped is read
 * again: its streamed text starts over, or is replaced), progress (pages done). */
function onProgressEvent(event, data) {
  switch (event) {
    case "queued":
      progressStatus(data.position > 0 ? `Page ${data.page} queued: ${count(data.position, "page")} ahead` : `Page ${data.page} queued: next`);
      break;
    case "started":
      progressStatus(`Reading page ${data.page}${data.batchSize > 1 ? ` (in a batch of ${data.batchSize})` : ""}…`);
      break;
    case "delta":
      streamed.set(data.page, (streamed.get(data.page) || "") + data.text);
      showStreamedText();
      break;
    case "retry":
      streamed.set(data.page, "");
      showStreamedText();
      progressStatus(`Page ${data.page} looped: reading it again (attempt ${data.attempt})…`);
      break;
    case "replace":
      streamed.set(data.page, data.text);
      showStreamedText();
      break;
    case "progress":
      $("progress-bar").max = data.total || 1;
      $("progress-bar").value = data.done;
      progressStatus(`${data.done} of ${count(data.total, "page")} read`);
      break;
    default:
      break;
  }
}

function ocrForm() {
  const form = new FormData();
  form.append("image", file, file.name);
  appendOptions(form);
  return form;
}

async function readDocument(event) {
  event.preventDefault();
  if (!file || controller) return;
  showError(null);
  const limit = sizeLimit();
  if (limit && file.size > limit.bytes) {
    showError(new ApiError(413, `${file.name} is ${formatBytes(file.size)}, over the service's limit of ${limit.mb} MB.`));
    return;
  }
  const reading = new AbortController();
  controller = reading;
  streamed = new Map();
  $("stream").textContent = "";
  $("progress-bar").removeAttribute("value"); // indeterminate until the first progress event
  progressStatus(`Uploading ${file.name}…`);
  $("progress").hidden = false;
  $("cancel").hidden = false;
  refreshRunButton();
  setState("running");
  try {
    let finished = false;
    for await (const { event: name, data } of ocrStream(ocrForm(), reading.signal)) {
      if (name === "result") {
        finished = true;
        progressStatus("Done");
        showResult(data);
        loadHistory();
      } else if (name === "error") {
        finished = true;
        throw new ApiError(data.status, data.detail);
      } else {
        onProgressEvent(name, data);
      }
    }
    if (!finished) throw new ApiError(0, "The answer ended before its result (the connection was cut).");
    $("progress").hidden = true;
    setState("done");
  } catch (error) {
    if (reading.signal.aborted) {
      progressStatus("Cancelled");
      setState("cancelled");
    } else {
      showError(error instanceof ApiError ? error : new ApiError(0, `The service could not be reached: ${error.message}`));
      // What was streamed before the failure stays readable; otherwise there is no progress to show.
      $("progress").hidden = !$("stream").textContent;
      progressStatus("Stopped");
      setState("error");
    }
  } finally {
    controller = null;
    $("cancel").hidden = true;
    refreshRunButton();
  }
}

export function wireUpload() {
  wireFilePicking();
  $("ocr-form").addEventListener("submit", readDocument);
  $("cancel").addEventListener("click", () => controller && controller.abort());
}
