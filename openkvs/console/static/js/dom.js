// Building the page. Every stored string (names, keys, content types, record bytes) is attacker-controlled, so text
// goes in only as text nodes and attributes only through setAttribute: nothing here parses HTML.

export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") node.addEventListener(name.slice(2), value);
    else if (name === "text") node.textContent = String(value);
    else if (name === "value") node.value = String(value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  append(node, children);
  return node;
}

export function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function clear(node, ...children) {
  node.replaceChildren();
  return append(node, children);
}

export function formatBytes(n) {
  if (n === undefined || n === null) return "";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = Number(n);
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${units[unit]}`;
}

export function formatDate(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? String(iso) : date.toLocaleString();
}

// The status line at the top: what just happened, or what went wrong (the API's own message). A notice stays on its
// page until another replaces it, and goes when the user moves to another page (pageShown, on every route). An
// action that moves to another page itself (sign in, create, delete) passes `moving`: its notice is shown on the
// page it leads to, and goes at the move after that.
let carried = false;

export function notify(message, kind = "info", { moving = false } = {}) {
  const status = document.getElementById("status");
  clear(status, h("p", { class: `notice ${kind}`, text: message }));
  carried = moving;
}

export function pageShown() {
  if (carried) carried = false;
  else document.getElementById("status").replaceChildren();
}

// A modal dialog (keyboard: Escape cancels, the first control has focus). `field`: ask for a value too.
// Resolves to false / null when cancelled, else true or the value entered.
export function ask(message, { confirmLabel = "OK", danger = false, field } = {}) {
  return new Promise((resolve) => {
    const input = field ? h("input", { type: "text", value: field.value || "", "aria-label": field.label, required: true }) : null;
    const ok = h("button", { type: "submit", class: danger ? "danger" : "primary", text: confirmLabel });
    const cancel = h("button", { type: "button", text: "Cancel" });
    const form = h("form", { method: "dialog" }, h("p", { text: message }), input && h("label", {}, field.label, input),
      h("div", { class: "buttons" }, cancel, ok));
    const dialog = h("dialog", { class: "ask" }, form);
    let result = field ? null : false;
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      result = field ? input.value : true;
      dialog.close();
    });
    cancel.addEventListener("click", () => dialog.close());
    dialog.addEventListener("close", () => {
      dialog.remove();
      resolve(result);
    });
    document.body.append(dialog);
    dialog.showModal();
    (input || cancel).focus();
  });
}

// Copy to the clipboard; where the browser refuses (no permission), select the text so the user can copy it.
export async function copy(text, shownIn) {
  try {
    await navigator.clipboard.writeText(text);
    notify("Copied to the clipboard.");
  } catch {
    if (shownIn) {
      shownIn.focus();
      shownIn.select();
    }
    notify("The browser did not allow copying: the link is selected, copy it with Ctrl+C.");
  }
}
