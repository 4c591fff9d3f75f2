// How to read the document, from /api/modes: the mode (with what it costs), the prompt (a preset or custom
// text), the PDF pages, and the size limit a file is checked against before it is sent.

import { apiJson } from "./api.js";
import { $, el } from "./dom.js";

let info = null; // /api/modes, once it has answered

/** Fills the fields from /api/modes; throws its ApiError when the service refuses. */
export async function loadOptions() {
  fillOptions(await apiJson("api/modes"));
}

export function optionsLoaded() {
  return info !== null;
}

/** The largest file the service takes, in bytes and as it says it (MB), or null when it names no limit. */
export function sizeLimit() {
  return info && typeof info.maxImageMb === "number" ? { bytes: info.maxImageMb * 1024 * 1024, mb: info.maxImageMb } : null;
}

function fillOptions(modes) {
  info = modes;
  const limit = sizeLimit();
  $("file-limit").textContent = limit ? `PDF, PNG, JPEG, WebP, BMP, TIFF or GIF, up to ${limit.mb} MB` : "";

  const mode = $("mode");
  mode.replaceChildren();
  for (const [name, spec] of Object.entries(modes.modes || {})) {
    mode.append(el("option", { value: name, text: `${spec.label || name} (${name})` }));
  }
  if (modes.defaultMode && modes.modes && modes.modes[modes.defaultMode]) mode.value = modes.defaultMode;
  mode.disabled = false;
  describeMode();

  const preset = $("preset");
  preset.replaceChildren();
  for (const prompt of modes.prompts || []) {
    preset.append(el("option", { value: prompt.prompt, text: prompt.name }));
  }
  preset.append(el("option", { value: "", text: "custom" }));
  preset.disabled = false;
  $("prompt").value = modes.defaultPrompt || "";
  matchPreset();
}

function describeMode() {
  const spec = info && info.modes[$("mode").value];
  $("mode-description").textContent = spec
    ? `${spec.description}${/[.!?]$/.test(spec.description) ? "" : "."} Up to ${spec.visionTokens} vision tokens a page; ${spec.speed}, ${spec.quality} quality.`
    : "";
}

/** The preset whose text the prompt holds, else "custom". */
function matchPreset() {
  const text = $("prompt").value;
  const preset = $("preset");
  const match = Array.from(preset.options).find((option) => option.value && option.value === text);
  preset.value = match ? match.value : "";
}

/** The pages field only applies to PDFs (and to files whose type the browser cannot tell). */
export function allowPages(allowed) {
  $("pages").disabled = !allowed;
}

/** The options as /api/ocr's form fields, after the file: an empty prompt or pages field is left out. */
export function appendOptions(form) {
  form.append("mode", $("mode").value);
  const prompt = $("prompt").value;
  if (prompt.trim()) form.append("prompt", prompt);
  const pages = $("pages").value.trim();
  if (pages && !$("pages").disabled) form.append("pages", pages);
}

export function wireOptions() {
  $("mode").addEventListener("change", describeMode);
  $("preset").addEventListener("change", () => {
    if ($("preset").value) $("prompt").value = $("preset").value;
  });
  $("prompt").addEventListener("input", matchPreset);
}
