// The API key: kept in this browser's local storage (for the page's life where storage is refused), and asked
// for in a dialog once, however many calls got a 401 meanwhile.

import { $ } from "./dom.js";

const KEY_STORAGE = "deepseek-ocr.apiKey";

let sessionKey = "";
let pendingPrompt = null; // the open dialog's promise, shared by every call that got a 401

export function storedKey() {
  try {
    return localStorage.getItem(KEY_STORAGE) || "";
  } catch (_) {
    return "";
  }
}

function storeKey(key) {
  try {
    localStorage.setItem(KEY_STORAGE, key);
  } catch (_) {
    // storage refused (private mode): the key lives as long as the page
  }
  sessionKey = key;
}

export function currentKey() {
  return storedKey() || sessionKey;
}

/** Asks for the key, saying `reason`; resolves to the key entered, or null when the dialog is cancelled. */
export function askForKey(reason) {
  if (pendingPrompt) return pendingPrompt;
  const dialog = $("key-dialog");
  const sentence = /[.!?]$/.test(reason) ? reason : `${reason}.`;
  $("key-reason").textContent = `${sentence} The key is kept in this browser's local storage.`;
  $("key-input").value = "";
  $("key-button").hidden = false;
  pendingPrompt = new Promise((resolve) => {
    const done = (key) => {
      $("key-form").removeEventListener("submit", onSubmit);
      $("key-dismiss").removeEventListener("click", onCancel);
      dialog.removeEventListener("cancel", onCancel);
      if (dialog.open) dialog.close();
      pendingPrompt = null;
      resolve(key);
    };
    const onSubmit = (event) => {
      event.preventDefault();
      const key = $("key-input").value.trim();
      if (!key) return;
      storeKey(key);
      done(key);
    };
    const onCancel = (event) => {
      event.preventDefault();
      done(null);
    };
    $("key-form").addEventListener("submit", onSubmit);
    $("key-dismiss").addEventListener("click", onCancel);
    dialog.addEventListener("cancel", onCancel);
    dialog.showModal();
    $("key-input").focus();
  });
  return pendingPrompt;
}
