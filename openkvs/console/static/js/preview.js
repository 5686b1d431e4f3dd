// A record's preview by its content type, from its first bytes (a Range request) so that a huge record costs one
// small read. Record bytes are attacker-controlled: text is shown as text; HTML and SVG only as source, or rendered
// in a sandboxed frame (no scripts) from the API's own response, which carries `Content-Security-Policy: sandbox`.

import * as api from "./api.js";
import { button, toolbar } from "./layout.js";
import { formatBytes, h } from "./dom.js";

const FIRST_BYTES = 256 * 1024; // text, JSON and hex previews read at most this much
const MAX_PDF_BYTES = 32 * 1024 * 1024; // a PDF is shown whole, from memory: up to this size
const MAX_JSON_NODES = 5000; // a folded tree bigger than this is cut short (the page stays quick)

function baseType(contentType) {
  return (contentType || "").split(";")[0].trim().toLowerCase();
}

function isJson(type) {
  return type === "application/json" || type.endsWith("+json");
}

function isText(type) {
  return type.startsWith("text/") || isJson(type) || type.endsWith("+xml") ||
    ["application/xml", "application/javascript", "application/x-ndjson", "application/yaml", "application/x-yaml",
      "application/toml", "application/csv"].includes(type);
}

// The first bytes of a record, its content type and whether they are all of it.
async function firstBytes(storeId, key, size) {
  const path = `/key-value-stores/${api.seg(storeId)}/records/${api.seg(key)}`;
  const headers = size > 0 ? { Range: `bytes=0-${FIRST_BYTES - 1}` } : {};
  let response;
  try {
    response = await api.get(path, { raw: true, headers });
    const bytes = new Uint8Array(await response.arrayBuffer());
    return { bytes, contentType: response.headers.get("Content-Type") || "", complete: bytes.length >= size };
  } catch (error) {
    // A record stored compressed is sent as stored to a browser that accepts its encoding, and a range of a
    // compressed stream can't be decoded alone: read it whole when that's small.
    if (error instanceof api.ApiError || size > 8 * 1024 * 1024) throw error;
    response = await api.get(path, { raw: true });
    const bytes = new Uint8Array(await response.arrayBuffer());
    return { bytes: bytes.slice(0, FIRST_BYTES), contentType: response.headers.get("Content-Type") || "", complete: bytes.length <= FIRST_BYTES };
  }
}

// record: {key, size, recordPublicUrl}
export async function preview(storeId, record) {
  const { bytes, contentType, complete } = await firstBytes(storeId, record.key, record.size);
  const type = baseType(contentType);
  const signed = api.local(record.recordPublicUrl);
  const about = h("p", { class: "about" },
    h("strong", { text: record.key }), " · ", h("span", { class: "content-type", text: contentType || "no content type" }),
    " · ", formatBytes(record.size), complete ? "" : ` (showing the first ${formatBytes(bytes.length)})`);
  const body = h("div", { class: "preview-body" });
  const text = () => new TextDecoder("utf-8").decode(bytes);

  if (record.size === 0) {
    body.append(h("p", { text: "An empty record." }));
  } else if (type === "text/html" || type === "image/svg+xml" || type === "application/xhtml+xml") {
    const source = h("pre", { class: "source", text: text() });
    const frame = () => h("iframe", { sandbox: "", src: signed, title: `${record.key} rendered without scripts`, class: "rendered" });
    const views = h("div", {}, source);
    body.append(toolbar(
      button("Source", () => views.replaceChildren(source)),
      button(type === "image/svg+xml" ? "Image" : "Rendered (sandboxed, no scripts)", () =>
        views.replaceChildren(type === "image/svg+xml" ? h("img", { src: signed, alt: record.key, class: "image" }) : frame())),
    ), views);
  } else if (type.startsWith("image/")) {
    body.append(h("img", { src: signed, alt: record.key, class: "image" }));
  } else if (type === "application/pdf") {
    body.append(await pdf(storeId, record));
  } else if (isJson(type) && complete) {
    let value;
    try {
      value = JSON.parse(text());
    } catch (error) {
      body.append(h("p", { class: "notice error", text: `Not valid JSON: ${error.message}` }), h("pre", { class: "source", text: text() }));
    }
    if (value !== undefined) body.append(jsonTree(value));
  } else if (isText(type)) {
    body.append(h("pre", { class: "source", text: text() }));
  } else {
    body.append(hexDump(bytes.slice(0, 512)));
  }
  return h("div", { class: "preview", "data-key": record.key }, about, body);
}

// A PDF in the browser's own viewer: the API's response is sandboxed (no plugins, so no viewer), so the console
// fetches the bytes and frames them as a blob it labels application/pdf itself (what the record claims to be is not
// trusted to pick the renderer). Huge PDFs: only the download link.
async function pdf(storeId, record) {
  const download = h("a", { href: api.local(record.recordPublicUrl, { attachment: 1 }), download: record.key, text: "Download the PDF" });
  if (record.size > MAX_PDF_BYTES) return h("p", {}, `Too big to show here (${formatBytes(record.size)}). `, download);
  const response = await api.get(`/key-value-stores/${api.seg(storeId)}/records/${api.seg(record.key)}`, { raw: true });
  const blob = new Blob([await response.arrayBuffer()], { type: "application/pdf" });
  const src = URL.createObjectURL(blob);
  const frame = h("iframe", { src, title: `${record.key} (PDF)`, class: "rendered pdf", onload: () => URL.revokeObjectURL(src) });
  return h("div", {}, frame, h("p", {}, download));
}

// JSON as a tree of <details>: objects and arrays fold, the first two levels open.
function jsonTree(value) {
  let budget = MAX_JSON_NODES;
  const plural = (n, one) => `${n} ${one}${n === 1 ? "" : "s"}`;
  const node = (v, depth, label) => {
    if (--budget < 0) return h("li", {}, label, h("span", { class: "json-cut", text: "…" }));
    if (v === null || typeof v !== "object") {
      return h("li", {}, label, h("span", { class: `json-${v === null ? "null" : typeof v}`, text: JSON.stringify(v) }));
    }
    const array = Array.isArray(v);
    const entries = array ? v.map((x, i) => [i, x]) : Object.entries(v);
    const summary = array ? `[${plural(entries.length, "item")}]` : `{${plural(entries.length, "key")}}`;
    return h("li", {}, h("details", { open: depth < 2 }, h("summary", {}, label, summary),
      h("ul", {}, entries.map(([k, x]) =>
        node(x, depth + 1, h("span", { class: "json-key", text: array ? `${k}: ` : `${JSON.stringify(k)}: ` }))))));
  };
  return h("ul", { class: "json" }, node(value, 0, null));
}

function hexDump(bytes) {
  const lines = [];
  for (let offset = 0; offset < bytes.length; offset += 16) {
    const row = bytes.slice(offset, offset + 16);
    const hex = [...row].map((b) => b.toString(16).padStart(2, "0")).join(" ");
    const ascii = [...row].map((b) => (b >= 32 && b < 127 ? String.fromCharCode(b) : ".")).join("");
    lines.push(`${offset.toString(16).padStart(8, "0")}  ${hex.padEnd(47)}  ${ascii}`);
  }
  return h("pre", { class: "hex", text: lines.join("\n") });
}
