// The result, in four tabs: the markdown (rendered by marked, sanitized by DOMPurify: model output is untrusted),
// the raw text, the page with its regions (regions.js), and the figure crops; with copy and download of the
// markdown. marked and DOMPurify are the vendored scripts that index.html runs before this module.

import { $, count, el } from "./dom.js";
import { showPages } from "./regions.js";

let shown = null; // the result on screen

export function currentResult() {
  return shown;
}

function renderMarkdown(text) {
  const html = window.marked.parse(text || "", { gfm: true, async: false });
  // SANITIZE_NAMED_PROPS: model output may not take the page's own element ids (the key dialog, the panels).
  return window.DOMPurify.sanitize(html, {
    USE_PROFILES: { html: true }, RETURN_DOM_FRAGMENT: true, SANITIZE_NAMED_PROPS: true,
  });
}

function figureUrls(result, page) {
  // Only the run's own figure crops, as the service writes them (its root path, then /api/runs/<runId>/...):
  // model output could name any URL in a markdown image, or run into the service's link.
  const marker = `/api/runs/${result.runId}/`;
  const ownUrl = /^(?:\/[\w.-]+)*\/api\/runs\/[0-9a-f]{32}\/[\w\/.-]+$/;
  const urls = [];
  for (const match of (page.text || "").matchAll(/!\[[^\]]*\]\(\s*<?([^)\s>]+)>?\s*\)/g)) {
    const url = match[1];
    if (ownUrl.test(url) && url.includes(marker) && !url.includes("..") && !urls.includes(url)) urls.push(url);
  }
  return urls;
}

/** Shows an /api/ocr answer (streamed, or reopened from the history) in every tab. */
export function showResult(result) {
  shown = result;
  const pages = result.pages && result.pages.length ? result.pages : [];
  const many = pages.length > 1;

  const summary = [result.fileName, count(pages.length, "page"), `mode ${result.mode}`, `${(result.durationMs / 1000).toFixed(1)} s`];
  if (result.finishReason === "length") summary.push("stopped at the token cap");
  $("summary").textContent = summary.join(" · ");

  const markdown = $("panel-markdown");
  markdown.replaceChildren();
  const raw = $("panel-raw");
  raw.replaceChildren();
  const figures = $("panel-figures");
  figures.replaceChildren();
  let figureCount = 0;
  pages.forEach((page, index) => {
    const heading = () => el("h3", { className: "page-heading", text: `Page ${page.page}` });
    const section = el("section", { className: "md-page", dataset: { page: page.page, index } });
    if (many) section.append(heading());
    const body = el("div", { className: "markdown" });
    body.append(renderMarkdown(page.text));
    if (!page.text) body.append(el("p", { className: "hint", text: "(no text)" }));
    section.append(body);
    markdown.append(section);

    const rawSection = el("section", { className: "raw-page", dataset: { page: page.page, index } });
    if (many) rawSection.append(heading());
    rawSection.append(el("pre", { className: "raw", text: page.rawText || "" }));
    raw.append(rawSection);

    figureUrls(result, page).forEach((url, n) => {
      figureCount += 1;
      const alt = `Figure ${n + 1} of page ${page.page}`;
      figures.append(
        el("figure", { className: "figure" },
          el("a", { href: url, target: "_blank", rel: "noopener noreferrer" }, el("img", { src: url, alt, loading: "lazy" })),
          el("figcaption", { text: alt })),
      );
    });
  });
  if (!figureCount) figures.append(el("p", { className: "hint", text: "No figures: the model marked no image regions." }));

  showPages(pages);

  $("result").hidden = false;
  $("result").dataset.runId = result.runId || "";
  $("result").dataset.historyId = result.historyId || "";
  document.querySelectorAll("#history-list button").forEach((button) => {
    button.setAttribute("aria-current", String(button.dataset.id === result.historyId));
  });
}

// ---- tabs, copy and download -----------------------------------------------------------------------------------

function selectTab(tab, focus) {
  for (const other of document.querySelectorAll('[role="tab"]')) {
    const selected = other === tab;
    other.setAttribute("aria-selected", String(selected));
    other.tabIndex = selected ? 0 : -1;
    $(other.getAttribute("aria-controls")).hidden = !selected;
  }
  if (focus) tab.focus();
}

/** Tabs as the ARIA pattern has them: a click, or the arrow keys, Home and End once one has the focus. */
function wireTabs() {
  const tabs = Array.from(document.querySelectorAll('[role="tab"]'));
  tabs.forEach((tab, index) => {
    tab.addEventListener("click", () => selectTab(tab, false));
    tab.addEventListener("keydown", (event) => {
      const moves = { ArrowRight: index + 1, ArrowLeft: index - 1, Home: 0, End: tabs.length - 1 };
      if (!(event.key in moves)) return;
      event.preventDefault();
      selectTab(tabs[(moves[event.key] + tabs.length) % tabs.length], true);
    });
  });
}

function stem(fileName) {
  const base = (fileName || "result").split(/[\\/]/).pop();
  const dot = base.lastIndexOf(".");
  return (dot > 0 ? base.slice(0, dot) : base) || "result";
}

async function copyMarkdown() {
  const text = shown ? shown.text : "";
  let copied = false;
  try {
    await navigator.clipboard.writeText(text);
    copied = true;
  } catch (_) {
    // no clipboard API (plain http on another host): the old way
    const area = el("textarea", { readonly: "", className: "visually-hidden" });
    area.value = text;
    document.body.append(area);
    area.select();
    try {
      copied = document.execCommand("copy");
    } catch (__) {
      copied = false;
    }
    area.remove();
  }
  $("copy-status").textContent = copied ? "Copied" : "Copying is not allowed here";
}

function downloadMarkdown() {
  if (!shown) return;
  const blob = new Blob([shown.text], { type: "text/markdown;charset=utf-8" });
  const url = URL.createObjectURL(blob);
  const link = el("a", { href: url, download: `${stem(shown.fileName)}.md` });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

export function wireViews() {
  wireTabs();
  $("copy").addEventListener("click", copyMarkdown);
  $("download").addEventListener("click", downloadMarkdown);
  // Links in rendered markdown open apart from the page.
  window.DOMPurify.addHook("afterSanitizeAttributes", (node) => {
    if (node.tagName === "A" && node.getAttribute("href")) {
      node.setAttribute("target", "_blank");
      node.setAttribute("rel", "noopener noreferrer");
    }
  });
}
