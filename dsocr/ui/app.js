// The page at /: pick or drop a document, read it over /api/ocr/stream, show the result and the history.
// Plain JavaScript, no build step. Every URL is relative (the page may live under a proxy's path prefix);
// artifact URLs in answers are used exactly as the service gives them. Model output is untrusted: markdown is
// rendered by marked and sanitized by DOMPurify before it reaches the document, everything else goes in as text.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const KEY_STORAGE = "deepseek-ocr.apiKey";
  const HEALTH_RETRY_MS = 2000;
  const HISTORY_LIMIT = 30;

  const state = {
    file: null,
    modes: null,
    maxBytes: null,
    result: null,
    pageIndex: 0,
    controller: null,
    keyPrompt: null, // the pending "enter your key" dialog, shared by every call that got a 401
  };

  class ApiError extends Error {
    constructor(status, detail) {
      super(detail);
      this.status = status;
      this.detail = detail;
    }
  }

  // ---- small helpers -------------------------------------------------------------------------------------

  function el(tag, props = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(props)) {
      if (name === "className") node.className = value;
      else if (name === "text") node.textContent = value;
      else if (name === "dataset") Object.assign(node.dataset, value);
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value);
    }
    for (const child of children) node.append(child);
    return node;
  }

  function setState(name) {
    document.body.dataset.state = name;
  }

  function formatBytes(bytes) {
    if (bytes < 1024) return `${bytes} B`;
    if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KiB`;
    return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
  }

  function stem(fileName) {
    const base = (fileName || "result").split(/[\\/]/).pop();
    const dot = base.lastIndexOf(".");
    return (dot > 0 ? base.slice(0, dot) : base) || "result";
  }

  function hue(label) {
    let hash = 0;
    for (const char of label) hash = (hash * 31 + char.codePointAt(0)) % 360;
    return hash;
  }

  // ---- errors --------------------------------------------------------------------------------------------

  function showError(error) {
    const box = $("error");
    if (!error) {
      box.hidden = true;
      box.textContent = "";
      return;
    }
    box.replaceChildren();
    if (error instanceof ApiError && error.status) {
      box.append(el("strong", { text: `Error ${error.status}: ` }));
    }
    box.append(el("span", { className: "error-detail", text: error.detail || error.message || String(error) }));
    box.hidden = false;
  }

  async function errorDetail(response) {
    try {
      const body = await response.json();
      if (typeof body.detail === "string") return body.detail;
      if (body.detail !== undefined) return JSON.stringify(body.detail);
    } catch (_) {
      // not JSON: fall through
    }
    return response.statusText || `HTTP ${response.status}`;
  }

  // ---- API keys ------------------------------------------------------------------------------------------

  function storedKey() {
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

  let sessionKey = "";

  function currentKey() {
    return storedKey() || sessionKey;
  }

  /** Asks for the key once, however many calls got a 401 meanwhile; resolves to the key or null. */
  function askForKey(reason) {
    if (state.keyPrompt) return state.keyPrompt;
    const dialog = $("key-dialog");
    const sentence = /[.!?]$/.test(reason) ? reason : `${reason}.`;
    $("key-reason").textContent = `${sentence} The key is kept in this browser's local storage.`;
    $("key-input").value = "";
    $("key-button").hidden = false;
    state.keyPrompt = new Promise((resolve) => {
      const done = (key) => {
        $("key-form").removeEventListener("submit", onSubmit);
        $("key-dismiss").removeEventListener("click", onCancel);
        dialog.removeEventListener("cancel", onCancel);
        if (dialog.open) dialog.close();
        state.keyPrompt = null;
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
    return state.keyPrompt;
  }

  /** fetch with the stored key; a 401 asks for a key and tries again with it (cancelled: the 401 is thrown). */
  async function api(path, options = {}) {
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

  async function apiJson(path, options) {
    const response = await api(path, options);
    if (!response.ok) throw new ApiError(response.status, await errorDetail(response));
    return response.json();
  }

  // ---- health, modes, prompts ----------------------------------------------------------------------------

  async function watchHealth() {
    const line = $("health");
    let body = null;
    let ok = false;
    try {
      const response = await fetch("health", { cache: "no-store" });
      body = await response.json();
      ok = response.ok;
    } catch (_) {
      body = null;
    }
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

  function fillModes(info) {
    state.modes = info;
    state.maxBytes = typeof info.maxImageMb === "number" ? info.maxImageMb * 1024 * 1024 : null;
    $("file-limit").textContent = state.maxBytes ? `PDF, PNG, JPEG, WebP, BMP, TIFF or GIF, up to ${info.maxImageMb} MB` : "";

    const mode = $("mode");
    mode.replaceChildren();
    for (const [name, spec] of Object.entries(info.modes || {})) {
      mode.append(el("option", { value: name, text: `${spec.label || name} (${name})` }));
    }
    if (info.defaultMode && info.modes && info.modes[info.defaultMode]) mode.value = info.defaultMode;
    mode.disabled = false;
    describeMode();

    const preset = $("preset");
    preset.replaceChildren();
    for (const prompt of info.prompts || []) {
      preset.append(el("option", { value: prompt.prompt, text: prompt.name }));
    }
    preset.append(el("option", { value: "", text: "custom" }));
    preset.disabled = false;
    $("prompt").value = info.defaultPrompt || "";
    matchPreset();
    updateRunButton();
  }

  function describeMode() {
    const spec = state.modes && state.modes.modes[$("mode").value];
    $("mode-description").textContent = spec
      ? `${spec.description}${/[.!?]$/.test(spec.description) ? "" : "."} Up to ${spec.visionTokens} vision tokens a page; ${spec.speed}, ${spec.quality} quality.`
      : "";
  }

  function matchPreset() {
    const text = $("prompt").value;
    const preset = $("preset");
    const match = Array.from(preset.options).find((option) => option.value && option.value === text);
    preset.value = match ? match.value : "";
  }

  async function loadModes() {
    try {
      fillModes(await apiJson("api/modes"));
      showError(null);
      return true;
    } catch (error) {
      showError(error);
      if (error instanceof ApiError && error.status === 503) setTimeout(start, HEALTH_RETRY_MS);
      return false;
    }
  }

  async function start() {
    if (!(await watchHealth())) return;
    if (await loadModes()) loadHistory();
  }

  // ---- picking a file ------------------------------------------------------------------------------------

  function looksLikePdf(file) {
    return file.type === "application/pdf" || /\.pdf$/i.test(file.name);
  }

  function chooseFile(file) {
    state.file = file || null;
    const name = $("file-name");
    if (!file) {
      name.textContent = "No file chosen";
    } else {
      name.textContent = `${file.name} · ${formatBytes(file.size)}`;
    }
    const pdf = !file || looksLikePdf(file) || !file.type.startsWith("image/");
    $("pages").disabled = !pdf;
    showError(null);
    updateRunButton();
  }

  function updateRunButton() {
    $("run").disabled = !(state.file && state.modes) || Boolean(state.controller);
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
          // read-only in old browsers: state.file is what is sent anyway
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

  // ---- reading a document over /api/ocr/stream -----------------------------------------------------------

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

  const live = { pages: new Map() };

  function progressStatus(text) {
    $("progress-status").textContent = text;
  }

  function showStreamText() {
    const many = live.pages.size > 1;
    const text = Array.from(live.pages.entries())
      .sort((a, b) => a[0] - b[0])
      .map(([page, body]) => (many ? `--- page ${page} ---\n${body}` : body))
      .join("\n\n");
    const stream = $("stream");
    stream.textContent = text;
    stream.scrollTop = stream.scrollHeight;
  }

  function onEvent(event, data) {
    switch (event) {
      case "queued":
        progressStatus(
          data.position > 0
            ? `Page ${data.page} queued: ${data.position} page${data.position === 1 ? "" : "s"} ahead`
            : `Page ${data.page} queued: next`,
        );
        break;
      case "started":
        progressStatus(`Reading page ${data.page}${data.batchSize > 1 ? ` (in a batch of ${data.batchSize})` : ""}…`);
        break;
      case "delta":
        live.pages.set(data.page, (live.pages.get(data.page) || "") + data.text);
        showStreamText();
        break;
      case "progress":
        $("progress-bar").max = data.total || 1;
        $("progress-bar").value = data.done;
        progressStatus(`${data.done} of ${data.total} page${data.total === 1 ? "" : "s"} read`);
        break;
      default:
        break;
    }
  }

  function ocrForm() {
    const form = new FormData();
    form.append("image", state.file, state.file.name);
    form.append("mode", $("mode").value);
    const prompt = $("prompt").value;
    if (prompt.trim()) form.append("prompt", prompt);
    const pages = $("pages").value.trim();
    if (pages && !$("pages").disabled) form.append("pages", pages);
    return form;
  }

  async function runOcr(event) {
    event.preventDefault();
    if (!state.file || state.controller) return;
    showError(null);
    if (state.maxBytes && state.file.size > state.maxBytes) {
      showError(new ApiError(413, `${state.file.name} is ${formatBytes(state.file.size)}, over the service's limit of ${state.modes.maxImageMb} MB.`));
      return;
    }
    const controller = new AbortController();
    state.controller = controller;
    live.pages = new Map();
    $("stream").textContent = "";
    $("progress-bar").removeAttribute("value"); // indeterminate until the first progress event
    progressStatus(`Uploading ${state.file.name}…`);
    $("progress").hidden = false;
    $("cancel").hidden = false;
    updateRunButton();
    setState("running");
    try {
      const response = await api("api/ocr/stream", { method: "POST", body: ocrForm(), signal: controller.signal });
      if (!response.ok) throw new ApiError(response.status, await errorDetail(response));
      let finished = false;
      for await (const { event: name, data } of readEvents(response.body)) {
        let payload;
        try {
          payload = JSON.parse(data);
        } catch (_) {
          continue;
        }
        if (name === "result") {
          finished = true;
          progressStatus("Done");
          showResult(payload);
          loadHistory();
        } else if (name === "error") {
          finished = true;
          throw new ApiError(payload.status, payload.detail);
        } else {
          onEvent(name, payload);
        }
      }
      if (!finished) throw new ApiError(0, "The answer ended before its result (the connection was cut).");
      $("progress").hidden = true;
      setState("done");
    } catch (error) {
      if (controller.signal.aborted) {
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
      state.controller = null;
      $("cancel").hidden = true;
      updateRunButton();
    }
  }

  // ---- the result ----------------------------------------------------------------------------------------

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

  function showResult(result) {
    state.result = result;
    state.pageIndex = 0;
    const pages = result.pages && result.pages.length ? result.pages : [];
    const many = pages.length > 1;

    const seconds = (result.durationMs / 1000).toFixed(1);
    const summary = [
      result.fileName,
      `${pages.length} page${pages.length === 1 ? "" : "s"}`,
      `mode ${result.mode}`,
      `${seconds} s`,
    ];
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

    const picker = $("page-picker");
    picker.replaceChildren();
    picker.hidden = !many;
    pages.forEach((page, index) => {
      picker.append(el("button", {
        type: "button", className: "small page-button", "aria-pressed": String(index === 0),
        dataset: { index }, text: `Page ${page.page}`, onclick: () => showPage(index),
      }));
    });
    showPage(0);

    $("result").hidden = false;
    $("result").dataset.runId = result.runId || "";
    $("result").dataset.historyId = result.historyId || "";
    document.querySelectorAll("#history-list button").forEach((button) => {
      button.setAttribute("aria-current", String(button.dataset.id === result.historyId));
    });
  }

  function regionTexts(page) {
    // Layout items are the grounding tags in order; regions are one per box of them, each with its tag's text.
    const texts = [];
    let next = 0;
    for (const item of page.layout ? page.layout.items : []) {
      const region = page.regions[next];
      texts.push(region ? region.text : "");
      next += item.boxes.length;
    }
    return texts;
  }

  function highlight(index, on) {
    document.querySelectorAll(`#panel-page [data-item="${index}"]`).forEach((node) => node.classList.toggle("active", on));
  }

  function showPage(index) {
    const result = state.result;
    const page = result.pages[index];
    state.pageIndex = index;
    document.querySelectorAll("#page-picker button").forEach((button) => {
      button.setAttribute("aria-pressed", String(Number(button.dataset.index) === index));
    });

    const sheet = $("sheet");
    sheet.replaceChildren();
    const items = page.layout ? page.layout.items : [];
    const source = page.imageData || page.annotatedImageUrl;
    if (source) {
      sheet.append(el("img", { src: source, alt: `Page ${page.page} as the model saw it` }));
    } else {
      sheet.append(el("p", { className: "hint", text: "No page preview (DEEPSEEK_OCR_PAGE_PREVIEWS is off)." }));
    }
    // Boxes over the preview (the annotated image already has them drawn, so none over it), larger ones first
    // so that a box inside another (a figure in a paragraph) stays on top and can be hovered.
    const texts = regionTexts(page);
    const list = $("regions");
    list.replaceChildren();
    if (page.imageData) {
      const area = ([x1, y1, x2, y2]) => (x2 - x1) * (y2 - y1);
      const drawn = items.flatMap((item, itemIndex) => item.boxes.map((box) => ({ item, itemIndex, box })));
      drawn.sort((a, b) => area(b.box.normalized) - area(a.box.normalized));
      for (const { item, itemIndex, box } of drawn) {
        const [x1, y1, x2, y2] = box.normalized;
        const node = el("div", { className: "box", dataset: { item: itemIndex, box: box.index }, "aria-hidden": "true" },
          el("span", { className: "box-label", text: item.label }));
        node.style.setProperty("--hue", String(hue(item.label)));
        node.style.left = `${x1 * 100}%`;
        node.style.top = `${y1 * 100}%`;
        node.style.width = `${(x2 - x1) * 100}%`;
        node.style.height = `${(y2 - y1) * 100}%`;
        node.addEventListener("mouseenter", () => {
          highlight(itemIndex, true);
          const entry = list.querySelector(`[data-item="${itemIndex}"]`);
          if (entry) entry.scrollIntoView({ block: "nearest" });
        });
        node.addEventListener("mouseleave", () => highlight(itemIndex, false));
        sheet.append(node);
      }
    }
    items.forEach((item, itemIndex) => {
      const color = String(hue(item.label));
      const entry = el("li", { className: "region", tabindex: "0", dataset: { item: itemIndex, id: item.id } },
        el("span", { className: "chip", text: item.label }),
        el("span", { className: "region-text", text: texts[itemIndex] || "(no text)" }));
      entry.style.setProperty("--hue", color);
      for (const [name, on] of [["mouseenter", true], ["mouseleave", false], ["focus", true], ["blur", false]]) {
        entry.addEventListener(name, () => highlight(itemIndex, on));
      }
      list.append(entry);
    });
    if (!items.length) {
      list.append(el("li", { className: "hint", text: "No regions: the model wrote no grounding tags (ask with <|grounding|>)." }));
    }
    $("sheet-caption").textContent =
      `Page ${page.page} · ${page.imageWidth}×${page.imageHeight} px · ${items.length} region${items.length === 1 ? "" : "s"}`;
  }

  // ---- tabs, copy and download ---------------------------------------------------------------------------

  function selectTab(tab, focus) {
    const tabs = Array.from(document.querySelectorAll('[role="tab"]'));
    for (const other of tabs) {
      const selected = other === tab;
      other.setAttribute("aria-selected", String(selected));
      other.tabIndex = selected ? 0 : -1;
      $(other.getAttribute("aria-controls")).hidden = !selected;
    }
    if (focus) tab.focus();
  }

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

  async function copyMarkdown() {
    const text = state.result ? state.result.text : "";
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
    if (!state.result) return;
    const blob = new Blob([state.result.text], { type: "text/markdown;charset=utf-8" });
    const url = URL.createObjectURL(blob);
    const link = el("a", { href: url, download: `${stem(state.result.fileName)}.md` });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  }

  // ---- history -------------------------------------------------------------------------------------------

  async function loadHistory() {
    let items;
    try {
      items = (await apiJson(`api/history?limit=${HISTORY_LIMIT}`)).items;
    } catch (error) {
      $("history-empty").textContent = `History unavailable: ${error.detail || error.message}`;
      $("history-empty").hidden = false;
      return;
    }
    const list = $("history-list");
    list.replaceChildren();
    for (const item of items) {
      const when = new Date(item.createdAt);
      const meta = [
        `${item.pages} page${item.pages === 1 ? "" : "s"}`,
        item.mode,
        isNaN(when) ? item.createdAt : when.toLocaleString(),
      ].join(" · ");
      const current = Boolean(state.result && state.result.historyId === item.id);
      list.append(el("li", {},
        el("button", { type: "button", className: "history-item", dataset: { id: item.id }, "aria-current": String(current),
          onclick: () => openHistory(item.id) },
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
      if (error.status === 404) loadHistory();
    }
  }

  // ---- start ---------------------------------------------------------------------------------------------

  function wire() {
    wireFilePicking();
    wireTabs();
    $("ocr-form").addEventListener("submit", runOcr);
    $("cancel").addEventListener("click", () => state.controller && state.controller.abort());
    $("mode").addEventListener("change", describeMode);
    $("preset").addEventListener("change", () => {
      if ($("preset").value) $("prompt").value = $("preset").value;
    });
    $("prompt").addEventListener("input", matchPreset);
    $("copy").addEventListener("click", copyMarkdown);
    $("download").addEventListener("click", downloadMarkdown);
    $("history-refresh").addEventListener("click", loadHistory);
    $("key-button").hidden = !storedKey();
    $("key-button").addEventListener("click", async () => {
      if (await askForKey("Enter the API key to use.")) start();
    });
    // Links in rendered markdown open apart from the page.
    window.DOMPurify.addHook("afterSanitizeAttributes", (node) => {
      if (node.tagName === "A" && node.getAttribute("href")) {
        node.setAttribute("target", "_blank");
        node.setAttribute("rel", "noopener noreferrer");
      }
    });
    setState("idle");
    start();
  }

  wire();
})();
