// What every module of the page shares: finding and building elements, the page's state, counted words, and the
// error box. Model output reaches the document only as text (textContent) or through views.js's sanitizer.

export const $ = (id) => document.getElementById(id);

/** An element with its properties: className, text (as text, never HTML), dataset, on<event> handlers, attributes. */
export function el(tag, props = {}, ...children) {
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

/** idle, running, done, cancelled or error: on <body data-state>, for the style sheet and the tests. */
export function setState(name) {
  document.body.dataset.state = name;
}

/** "1 page", "2 pages". */
export function count(number, noun) {
  return `${number} ${noun}${number === 1 ? "" : "s"}`;
}

/** Shows an error (with its HTTP status when it has one: an ApiError) in the alert box; null hides the box. */
export function showError(error) {
  const box = $("error");
  if (!error) {
    box.hidden = true;
    box.textContent = "";
    return;
  }
  box.replaceChildren();
  if (error.status) box.append(el("strong", { text: `Error ${error.status}: ` }));
  box.append(el("span", { className: "error-detail", text: error.detail || error.message || String(error) }));
  box.hidden = false;
}
