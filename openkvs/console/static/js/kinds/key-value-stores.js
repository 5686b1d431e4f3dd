// Key-value stores: the list of the user's stores and those shared with them, and a store's page (its records page
// by page, preview, upload, download, sharing). Whatever the token may not do, the API refuses, and the console
// shows the API's message: it keeps no copy of the access rules.

import * as api from "../api.js";
import { ask, clear, formatBytes, formatDate, h, notify } from "../dom.js";
import { Pager, button, dataTable, labelled, linkField, pageHeader, panel, toolbar } from "../layout.js";
import { preview } from "../preview.js";

const PATH = "key-value-stores";
const PAGE_SIZE = 50;
const UPLOADS_AT_ONCE = 3;
const GENERAL_ACCESS = ["FOLLOW_USER_SETTING", "RESTRICTED", "ANYONE_WITH_ID_CAN_READ", "ANYONE_WITH_NAME_CAN_READ"];
const KEY_CHAR = /[a-zA-Z0-9!\-_.'()]/;

const storePath = (id) => `/${PATH}/${api.seg(id)}`;
const recordPath = (id, key) => `${storePath(id)}/records/${api.seg(key)}`;
const storeLabel = (store) => store.name || `(unnamed ${store.id})`;

async function allStores(ownership) {
  const items = [];
  for (let offset = 0; ; offset += 1000) {
    const page = await api.get(`/${PATH}`, { query: { ownership, unnamed: 1, limit: 1000, offset } });
    items.push(...page.items);
    if (page.count < page.limit || items.length >= page.total) return items;
  }
}

async function list(page) {
  const [owned, shared] = await Promise.all([allStores("ownedByMe"), allStores("sharedWithMe")]);
  const stores = [...owned.map((s) => ({ ...s, shared: false })), ...shared.map((s) => ({ ...s, shared: true }))];
  const filter = h("input", { type: "search", placeholder: "Filter by name", "aria-label": "Filter stores by name" });
  const columns = [
    { label: "Name", value: (s) => storeLabel(s), cell: (s) => h("a", { href: `#/${PATH}/${encodeURIComponent(s.id)}`, class: "store-link", text: storeLabel(s) }) },
    { label: "ID", value: (s) => s.id, cell: (s) => h("code", { text: s.id }) },
    { label: "Owner", value: (s) => (s.shared ? s.username : ""), cell: (s) => (s.shared ? `${s.username} (shared with you)` : "you") },
    { label: "Size", value: (s) => s.stats.storageBytes, cell: (s) => formatBytes(s.stats.storageBytes), numeric: true },
    { label: "Modified", value: (s) => s.modifiedAt, cell: (s) => formatDate(s.modifiedAt) },
  ];
  const holder = h("div", { class: "table-holder" });
  const show = () => {
    const needle = filter.value.trim().toLowerCase();
    const rows = stores.filter((s) => storeLabel(s).toLowerCase().includes(needle));
    holder.replaceChildren(dataTable(columns, rows, { sortBy: 4, descending: true, empty: needle ? "No store matches." : "No stores yet: create one." }));
  };
  filter.addEventListener("input", show);
  show();
  clear(page,
    pageHeader("Key-value stores", `${owned.length} yours, ${shared.length} shared with you`,
      button("Create store", createStore, { kind: "primary" })),
    toolbar(filter), holder);
}

async function createStore() {
  const name = await ask("A name for the new store (letters, digits and '-').", { confirmLabel: "Create", field: { label: "Name" } });
  if (name === null) return;
  const store = await api.post(`/${PATH}`, { query: { name: name.trim() } });
  notify(`Store ${storeLabel(store)} is ready.`);
  location.hash = `#/${PATH}/${encodeURIComponent(store.id)}`;
}

async function detail(page, id) {
  const store = await api.get(storePath(id));
  // Only the owner may list grants: the API's answer tells whether the signed-in user owns the store.
  let grants = null;
  try {
    grants = await api.get(`${storePath(id)}/grants`);
  } catch (error) {
    if (error.status !== 403) throw error;
  }
  const owner = grants !== null;
  const canWrite = "urlSigningSecretKey" in store;
  const reload = () => detail(page, id);
  const role = owner ? "owner" : canWrite ? `shared with you by ${store.username}: read and write` : `shared with you by ${store.username}: read only`;
  clear(page,
    h("p", { class: "crumbs" }, h("a", { href: `#/${PATH}`, text: "Key-value stores" })),
    pageHeader(storeLabel(store), h("span", {}, h("code", { text: store.id }), ` · ${formatBytes(store.stats.storageBytes)} · modified ${formatDate(store.modifiedAt)} · ${role}`),
      owner && button("Rename", () => rename(store, reload)),
      owner && button("Delete store", () => deleteStore(store), { kind: "danger" })),
    recordsPanel(store, canWrite),
    sharePanel(store, owner, grants, reload));
}

async function rename(store, reload) {
  const name = await ask("The store's new name.", { confirmLabel: "Rename", field: { label: "Name", value: store.name || "" } });
  if (name === null) return;
  await api.put(storePath(store.id), { json: { name: name.trim() } });
  notify(`Renamed to ${name.trim()}.`);
  await reload();
}

async function deleteStore(store) {
  if (!(await ask(`Delete the store ${storeLabel(store)} and every record in it? This cannot be undone.`, { confirmLabel: "Delete store", danger: true }))) return;
  await api.del(storePath(store.id));
  notify(`Deleted the store ${storeLabel(store)}.`);
  location.hash = `#/${PATH}`;
}

function recordsPanel(store, canWrite) {
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
    await pager.reload();
  };

  const columns = [
    { label: "Key", cell: (r) => h("button", { type: "button", class: "link record-key", onclick: () => show(r) }, r.key) },
    { label: "Size", cell: (r) => formatBytes(r.size), numeric: true },
    { label: "Type", cell: (r) => h("span", { class: "content-type", "data-key": r.key, text: "…" }) },
    {
      label: "Actions",
      cell: (r) => h("span", { class: "row-actions" },
        h("a", { href: api.local(r.recordPublicUrl, { attachment: 1 }), download: r.key, class: "button", text: "Download" }),
        button("Copy link", () => copyLink(r)),
        canWrite && button("Delete", () => remove(r), { kind: "danger" })),
    },
  ];

  const pager = new Pager(async (start) => {
    const { prefix: p, collection: c } = filters();
    const keys = await api.get(`${storePath(store.id)}/keys`, { query: { limit: PAGE_SIZE, exclusiveStartKey: start, prefix: p, collection: c } });
    holder.replaceChildren(dataTable(columns, keys.items, { sortBy: -1, empty: p || c ? "No record matches." : "No records yet." }));
    holder.querySelector("table").classList.add("records");
    contentTypes(store.id, keys.items, holder);
    return { next: keys.isTruncated ? keys.nextExclusiveStartKey : null };
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
    canWrite && uploader(store, () => pager.reload()),
    holder, pager.element, previewHolder);
}

// The content types of a page of keys (the listing has none): one HEAD per key, a few at a time.
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
            contentType: job.file.type || "application/octet-stream",
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

function sharePanel(store, owner, grants, reload) {
  const links = [
    linkField("Signed link to the key list (valid 14 days)", store.keysPublicUrl, "keys"),
    linkField("Signed link to the ZIP of all records (valid 14 days)", store.recordsPublicUrl, "records"),
  ];
  if (!owner) return panel("Share", links);

  const access = h("select", { "aria-label": "General access", name: "generalAccess" },
    GENERAL_ACCESS.map((level) => h("option", { value: level, selected: level === store.generalAccess, text: level })));
  access.addEventListener("change", async () => {
    await api.put(storePath(store.id), { json: { generalAccess: access.value } });
    notify(`General access is now ${access.value}.`);
    await reload();
  });
  const rotate = button("New signing key", async () => {
    if (!(await ask("Give the store a new URL-signing key? Every signed link made before stops working.", { confirmLabel: "New key", danger: true }))) return;
    await api.post(`${storePath(store.id)}/signing-key`);
    notify("The store has a new signing key: links made before no longer work.");
    await reload();
  });

  const setGrant = async (username, level) => {
    await api.put(`${storePath(store.id)}/grants`, { json: { username, access: level } });
    notify(`${username} may now ${level === "WRITE" ? "read and write" : "read"} this store.`);
    await reload();
  };
  const grantRows = grants.items.map((g) => {
    const level = h("select", { "aria-label": `Access of ${g.username}` },
      ["READ", "WRITE"].map((l) => h("option", { value: l, selected: l === g.access, text: l })));
    level.addEventListener("change", () => setGrant(g.username, level.value));
    return { ...g, level };
  });
  const grantTable = dataTable([
    { label: "User", value: (g) => g.username, cell: (g) => g.username },
    { label: "Access", cell: (g) => g.level },
    {
      label: "",
      cell: (g) => button("Remove", async () => {
        if (!(await ask(`Take ${g.username}'s access away? The store gets a new signing key.`, { confirmLabel: "Remove", danger: true }))) return;
        await api.del(`${storePath(store.id)}/grants/${api.seg(g.username)}`);
        notify(`${g.username} no longer has access.`);
        await reload();
      }, { kind: "danger" }),
    },
  ], grantRows, { empty: "Not shared with anyone." });
  grantTable.classList.add("grants");

  const user = h("input", { type: "text", name: "username", "aria-label": "Username", placeholder: "username", required: true });
  const level = h("select", { "aria-label": "Access", name: "access" }, h("option", { value: "READ", text: "READ" }), h("option", { value: "WRITE", text: "WRITE" }));
  const form = h("form", { class: "toolbar grant-form" }, user, level, h("button", { type: "submit", text: "Share" }));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    setGrant(user.value.trim(), level.value);
  });

  return panel("Share", links,
    toolbar(labelled("General access", access), rotate),
    h("h3", { text: "Users this store is shared with" }), grantTable, form);
}

export default { path: PATH, title: "Key-value stores", list, detail };
