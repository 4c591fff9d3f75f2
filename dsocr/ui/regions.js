// The "Page & regions" tab: the page as the model saw it, its grounding boxes drawn over it, and the list of
// regions with their text; hovering or focusing one highlights the other.

import { $, count, el } from "./dom.js";

let pages = [];

/** A stable colour per label (title, text, table, ...), as a hue. */
function hue(label) {
  let hash = 0;
  for (const char of label) hash = (hash * 31 + char.codePointAt(0)) % 360;
  return hash;
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

/** A new result's pages: one picker button per page (shown for two or more), and the first page. */
export function showPages(resultPages) {
  pages = resultPages;
  const picker = $("page-picker");
  picker.replaceChildren();
  picker.hidden = pages.length < 2;
  pages.forEach((page, index) => {
    picker.append(el("button", {
      type: "button", className: "small page-button", "aria-pressed": String(index === 0),
      dataset: { index }, text: `Page ${page.page}`, onclick: () => showPage(index),
    }));
  });
  showPage(0);
}

function showPage(index) {
  const page = pages[index];
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
    const entry = el("li", { className: "region", tabindex: "0", dataset: { item: itemIndex, id: item.id } },
      el("span", { className: "chip", text: item.label }),
      el("span", { className: "region-text", text: texts[itemIndex] || "(no text)" }));
    entry.style.setProperty("--hue", String(hue(item.label)));
    for (const [name, on] of [["mouseenter", true], ["mouseleave", false], ["focus", true], ["blur", false]]) {
      entry.addEventListener(name, () => highlight(itemIndex, on));
    }
    list.append(entry);
  });
  if (!items.length) {
    list.append(el("li", { className: "hint", text: "No regions: the model wrote no grounding tags (ask with <|grounding|>)." }));
  }
  $("sheet-caption").textContent = `Page ${page.page} · ${page.imageWidth}×${page.imageHeight} px · ${count(items.length, "region")}`;
}
