// The history: the last results kept for this key (/api/history), newest first; one reopens in the result views.

import { apiJson } from "./api.js";
import { $, count, el, setState, showError } from "./dom.js";
import { currentResult, showResult } from "./views.js";

const HISTORY_LIMIT = 30;

export async function loadHistory() {
  let items;
  try {
    items = (await apiJson(`api/history?limit=${HISTORY_LIMIT}`)).items;
  } catch (error) {
    $("history-empty").textContent = `History unavailable: ${error.detail || error.message}`;
    $("history-empty").hidden = false;
    return;
  }
  const shown = currentResult();
  const list = $("history-list");
  list.replaceChildren();
  for (const item of items) {
    const when = new Date(item.createdAt);
    const meta = [count(item.pages, "page"), item.mode, isNaN(when) ? item.createdAt : when.toLocaleString()].join(" · ");
    list.append(el("li", {},
      el("button", { type: "button", className: "history-item", dataset: { id: item.id },
        "aria-current": String(Boolean(shown && shown.historyId === item.id)), onclick: () => openHistory(item.id) },
        el("span", { className: "history-name", text: item.fileName }),
        el("span", { className: "history-meta", text: meta }))));
  }
  $("history-empty").textContent = "No results yet.";
  $("history-empty").hidden = items.length > 0;
}

async function openHistory(id) {
  showError(null);
  try {
    showResult(await apiJson(`api/history/${encodeURIComponent(id)}`));
    setState("done");
  } catch (error) {
    showError(error);
    if (error.status === 404) loadHistory(); // gone meanwhile (swept, or deleted): the list catches up
  }
}

export function wireHistory() {
  $("history-refresh").addEventListener("click", loadHistory);
}
