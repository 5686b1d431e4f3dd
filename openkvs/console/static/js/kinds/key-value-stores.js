// Key-value stores: the list of the user's stores and those shared with them, and a store's page (its records page
// by page, preview, upload, download, sharing). Whatever the token may not do, the API refuses, and the console
// shows the API's message: it keeps no copy of the access rules.

import * as api from "../api.js";
import { ask, formatBytes, h, notify } from "../dom.js";
import { Pager, button, dataTable, linkField, panel, toolbar } from "../layout.js";
import { preview } from "../preview.js";
import * as resources from "../resources.js";
import { sharePanel } from "../sharing.js";

const PAGE_SIZE = 50;
const UPLOADS_AT_ONCE = 3;
const KEY_CHAR = /[a-zA-Z0-9!\-_.'()]/;

const kind = { path: "key-value-stores", title: "Key-value stores", noun: "store", list, detail };
const recordPath = (id, key) => `${resources.resourcePath(kind, id)}/records/${api.seg(key)}`;

// stats.recordCount is openkvs's (exact, kept with every write); a server without it shows no count.
const records = (s) => s.stats.recordCount;
const countText = (s) => (records(s) === undefined ? "" : `${records(s)} ${records(s) === 1 ? "record" : "records"} · `);

function list(page) {
  return resources.listPage(page, kind, [
    { label: "Records", value: records, cell: (s) => (records(s) === undefined ? "" : String(records(s))), numeric: true },
    { label: "Size", value: (s) => s.stats.storageBytes, cell: (s) => formatBytes(s.stats.storageBytes), numeric: true },
  ]);
}

async function detail(page, id) {
  const loaded = await resources.load(kind, id);
  const store = loaded.resource;
  const reload = () => detail(page, id);
  const facts = (s) => countText(s) + formatBytes(s.stats.storageBytes);
  // After an upload or a delete: the store again, for the count and size in its header (the rest stays as it is).
  const refresh = async () => {
    const again = await api.get(resources.resourcePath(kind, id));
    const [, header] = resources.header(kind, { ...loaded, resource: again }, facts(again), reload);
    const shown = page.querySelector(".page-header");
    if (shown) shown.replaceWith(header);
  };
  page.replaceChildren(
    ...resources.header(kind, loaded, facts(store), reload),
    recordsPanel(store, loaded.canWrite, refresh),
    sharePanel(kind, loaded, [
      linkField("Signed link to the key list (valid 14 days)", store.keysPublicUrl, "keys"),
      linkField("Signed link to the ZIP of all records (valid 14 days)", store.recordsPublicUrl, "records"),
    ], reload));
}

function recordsPanel(store, canWrite, changed) {
  const collections = Object.keys((store.schema && store.schema.collections) || {});
  const prefix = h("input", { type: "search", placeholder: "Key prefix", "aria-label": "Key prefix", name: "prefix" });
  const collection = collections.length
    ? h("select", { "aria-label": "Collection", name: "collection" }, h("option", { value: "", text: "All records" }),
      collections.map((c) => h("option", { value: c, text: store.schema.collections[c].title || c })))
    : null;
  const zip = h("a", { class: "button", download: "", "data-link": "zip", text: "Download ZIP" });
  const holder = h("div", { class: "table-holder" });
  const previewHolder = h("div", { class: "preview-holder", "aria-live": "polite" });
  const filters = () => ({ prefix: prefix.value.trim(), collection: collection ? collection.value : "" });

  const updateZip = () => {
    const { prefix: p, collection: c } = filters();
    zip.href = api.local(store.recordsPublicUrl, { prefix: p, collection: c });
    zip.textContent = p || c ? "Download these records as ZIP" : "Download the store as ZIP";
  };

  const show = async (record) => {
    previewHolder.replaceChildren(h("p", { text: `Loading ${record.key}…` }));
    try {
      previewHolder.replaceChildren(await preview(store.id, record));
    } catch (error) {
      previewHolder.replaceChildren(h("p", { class: "notice error", text: error.message }));
    }
    previewHolder.scrollIntoView({ block: "nearest" });
  };

  const remove = async (record) => {
    if (!(await ask(`Delete the record ${record.key}?`, { confirmLabel: "Delete", danger: true }))) return;
    await api.del(recordPath(store.id, record.key));
    notify(`Deleted ${record.key}.`);
    previewHolder.replaceChildren();
    await Promise.all([pager.reload(), changed()]);
  };

  const columns = [
    { label: "Key", cell: (r) => h("button", { type: "button", class: "link record-key", onclick: () => show(r) }, r.key) },
    { label: "Size", cell: (r) => formatBytes(r.size), numeric: true },
    { label: "Type", cell: (r) => h("span", { class: "content-type", "data-key": r.key, text: r.contentType ?? "…" }) },
    {
      label: "Actions",
      cell: (r) => h("span", { class: "row-actions" },
        h("a", { href: api.local(r.recordPublicUrl, { attachment: 1 }), download: r.key, class: "button", text: "Download" }),
        button("Copy link", () => copyLink(r)),
        canWrite && button("Delete", () => remove(r), { kind: "danger" })),
    },
  ];

  const pager = new Pager(
    (start) => {
      const { prefix: p, collection: c } = filters();
      return api.get(`${resources.resourcePath(kind, store.id)}/keys`, { query: { limit: PAGE_SIZE, exclusiveStartKey: start, prefix: p, collection: c } });
    },
    (keys) => {
      const filtered = filters().prefix || filters().collection;
      holder.replaceChildren(dataTable(columns, keys.items, { sortBy: -1, empty: filtered ? "No record matches." : "No records yet." }));
      holder.querySelector("table").classList.add("records");
      contentTypes(store.id, keys.items.filter((r) => r.contentType === undefined), holder);
      return keys.isTruncated ? keys.nextExclusiveStartKey : null;
    });

  const copyLink = (record) => {
    previewHolder.replaceChildren(linkField(`Signed link to ${record.key} (works without a token)`, record.recordPublicUrl, "record"));
    previewHolder.querySelector("button").click();
  };

  let typing;
  const refilter = () => {
    updateZip();
    clearTimeout(typing);
    typing = setTimeout(() => pager.show(0), 250);
  };
  prefix.addEventListener("input", refilter);
  if (collection) collection.addEventListener("change", refilter);
  updateZip();
  pager.show(0).catch((error) => holder.replaceChildren(h("p", { class: "notice error", text: error.message })));

  return panel("Records",
    toolbar(prefix, collection, zip),
    canWrite && uploader(store, () => Promise.all([pager.reload(), changed()])),
    holder, pager.element, previewHolder);
}

// The content types of keys listed without one (openkvs lists each key's contentType; a server that does not):
// one HEAD per key, a few at a time.
async function contentTypes(storeId, items, holder) {
  const queue = [...items];
  const work = async () => {
    for (let record = queue.shift(); record; record = queue.shift()) {
      const cell = [...holder.querySelectorAll("span.content-type")].find((node) => node.dataset.key === record.key);
      try {
        const response = await api.request("HEAD", recordPath(storeId, record.key), { raw: true });
        if (cell) cell.textContent = response.headers.get("Content-Type") || "";
      } catch {
        if (cell) cell.textContent = "?";
      }
    }
  };
  await Promise.all(Array.from({ length: 4 }, work));
}

// A key from a file name: characters the key rule refuses become "-".
function keyOf(name) {
  return [...name].map((c) => (KEY_CHAR.test(c) ? c : "-")).join("").slice(0, 256) || "file";
}

// A text file's content type with its encoding named when its first bytes are UTF-8: without a charset, a browser
// opening the record by its link guesses one (windows-1252: "ü" shown as "Ã¼"). As `openkvs upload` does.
async function typeOf(file) {
  const type = file.type || "application/octet-stream";
  if (!/^text\//i.test(type) || /;\s*charset=/i.test(type)) return type;
  try {
    new TextDecoder("utf-8", { fatal: true }).decode(await file.slice(0, 65536).arrayBuffer(), { stream: file.size > 65536 });
    return `${type}; charset=utf-8`;
  } catch {
    return type;
  }
}

function uploader(store, done) {
  // The label is the control keyboard users reach (Enter or Space opens the file chooser), not the hidden input.
  const input = h("input", { type: "file", multiple: true, id: "upload-files", class: "visually-hidden", tabindex: "-1" });
  const list = h("ul", { class: "uploads" });
  const zone = h("div", { class: "drop-zone" },
    h("p", {}, "Drop files here, or ", h("label", { for: "upload-files", class: "button", tabindex: "0", text: "choose files" }),
      ". Each becomes a record named by the file (characters a key may not hold become -), with the file's content type."),
    input, list);

  const send = async (files) => {
    const jobs = [...files].map((file) => {
      const key = keyOf(file.name);
      const bar = h("progress", { max: file.size || 1, value: 0, "aria-label": `Upload of ${key}` });
      const state = h("span", { class: "state", text: "waiting" });
      const item = h("li", { "data-key": key }, h("span", { class: "name", text: key }), bar, state);
      list.append(item);
      return { file, key, bar, state, item };
    });
    let failed = 0;
    const work = async () => {
      for (let job = jobs.shift(); job; job = jobs.shift()) {
        job.state.textContent = "uploading";
        try {
          await api.upload(recordPath(store.id, job.key), job.file, {
            contentType: await typeOf(job.file),
            onProgress: (loaded) => { job.bar.value = loaded; },
          });
          job.bar.value = job.bar.max;
          job.state.textContent = "done";
          job.item.classList.add("done");
        } catch (error) {
          failed++;
          job.state.textContent = error.message;
          job.item.classList.add("failed");
        }
      }
    };
    await Promise.all(Array.from({ length: UPLOADS_AT_ONCE }, work));
    notify(failed ? `Uploads finished; ${failed} failed (see the list).` : "Uploads finished.", failed ? "error" : "info");
    await done();
  };

  input.addEventListener("change", () => {
    if (input.files.length) send(input.files).finally(() => { input.value = ""; });
  });
  zone.querySelector("label").addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      input.click();
    }
  });
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    if (event.dataTransfer.files.length) send(event.dataTransfer.files);
  });
  return zone;
}

export default kind;
