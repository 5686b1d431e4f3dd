// What every kind of storage (key-value stores, datasets, request queues) has in the API, the same endpoints under
// its own path (/key-value-stores, /datasets, /request-queues): the list (ownedByMe and sharedWithMe), create by
// name, rename, delete, and the owner's sharing controls (sharing.js). A kind's page builds on these.

import * as api from "./api.js";
import { ask, clear, formatDate, h, notify } from "./dom.js";
import { button, dataTable, pageHeader, toolbar } from "./layout.js";

export const label = (resource) => resource.name || `(unnamed ${resource.id})`;
export const resourcePath = (kind, id) => `/${kind.path}/${api.seg(id)}`;
export const href = (kind, id) => `#/${kind.path}/${encodeURIComponent(id)}`;

async function all(kind, ownership) {
  const items = [];
  for (let offset = 0; ; offset += 1000) {
    const page = await api.get(`/${kind.path}`, { query: { ownership, unnamed: 1, limit: 1000, offset } });
    items.push(...page.items);
    if (page.count < page.limit || items.length >= page.total) return items;
  }
}

// The list page: the user's own and those shared with them, filtered by name, sorted by any column.
// `columns`: the kind's own, between the ID and the modified time (a size, a count).
export async function listPage(page, kind, columns = []) {
  const [owned, shared] = await Promise.all([all(kind, "ownedByMe"), all(kind, "sharedWithMe")]);
  const rows = [...owned.map((r) => ({ ...r, shared: false })), ...shared.map((r) => ({ ...r, shared: true }))];
  const filter = h("input", { type: "search", placeholder: "Filter by name", "aria-label": `Filter ${kind.title.toLowerCase()} by name` });
  const every = [
    { label: "Name", value: label, cell: (r) => h("a", { href: href(kind, r.id), class: "resource-link", text: label(r) }) },
    { label: "ID", value: (r) => r.id, cell: (r) => h("code", { text: r.id }) },
    { label: "Owner", value: (r) => (r.shared ? r.username : ""), cell: (r) => (r.shared ? `${r.username} (shared with you)` : "you") },
    ...columns,
    { label: "Modified", value: (r) => r.modifiedAt, cell: (r) => formatDate(r.modifiedAt) },
  ];
  const holder = h("div", { class: "table-holder" });
  const show = () => {
    const needle = filter.value.trim().toLowerCase();
    const matching = rows.filter((r) => label(r).toLowerCase().includes(needle));
    holder.replaceChildren(dataTable(every, matching, {
      sortBy: every.length - 1, descending: true, empty: needle ? "Nothing matches." : `No ${kind.noun}s yet: create one.`,
    }));
  };
  filter.addEventListener("input", show);
  show();
  clear(page,
    pageHeader(kind.title, `${owned.length} yours, ${shared.length} shared with you`,
      button(`Create ${kind.noun}`, () => create(kind), { kind: "primary" })),
    toolbar(filter), holder);
}

async function create(kind) {
  const name = await ask(`A name for the new ${kind.noun} (letters, digits and '-').`, { confirmLabel: "Create", field: { label: "Name" } });
  if (name === null) return;
  const created = await api.post(`/${kind.path}`, { query: { name: name.trim() } });
  notify(`The ${kind.noun} ${label(created)} is ready.`, "info", { moving: true });
  location.hash = href(kind, created.id);
}

// A detail page's head: the resource, whether the signed-in user owns it (only the owner may list its grants: the
// API's answer says so, the console keeps no rule of its own) and the grants, plus the header with the owner's
// rename and delete. `facts`: what the kind adds after the ID (size, counts).
export async function load(kind, id) {
  const resource = await api.get(resourcePath(kind, id));
  let grants = null;
  try {
    grants = await api.get(`${resourcePath(kind, id)}/grants`);
  } catch (error) {
    if (error.status !== 403) throw error;
  }
  return { resource, grants, owner: grants !== null, canWrite: "urlSigningSecretKey" in resource };
}

export function header(kind, { resource, owner, canWrite }, facts, reload) {
  // canWrite null: the kind's object does not tell (a queue has no urlSigningSecretKey), so the level is not shown.
  const level = canWrite === null ? "" : `: ${canWrite ? "read and write" : "read only"}`;
  const role = owner ? "owner" : `shared with you by ${resource.username}${level}`;
  return [
    h("p", { class: "crumbs" }, h("a", { href: `#/${kind.path}`, text: kind.title })),
    pageHeader(label(resource), h("span", {}, h("code", { text: resource.id }), ` · ${facts} · modified ${formatDate(resource.modifiedAt)} · ${role}`),
      owner && button("Rename", () => rename(kind, resource, reload)),
      owner && button(`Delete ${kind.noun}`, () => remove(kind, resource), { kind: "danger" })),
  ];
}

async function rename(kind, resource, reload) {
  const name = await ask(`The ${kind.noun}'s new name.`, { confirmLabel: "Rename", field: { label: "Name", value: resource.name || "" } });
  if (name === null) return;
  await api.put(resourcePath(kind, resource.id), { json: { name: name.trim() } });
  await reload();
  notify(`Renamed to ${name.trim()}.`);
}

async function remove(kind, resource) {
  const message = `Delete the ${kind.noun} ${label(resource)} and everything in it? This cannot be undone.`;
  if (!(await ask(message, { confirmLabel: `Delete ${kind.noun}`, danger: true }))) return;
  await api.del(resourcePath(kind, resource.id));
  notify(`Deleted the ${kind.noun} ${label(resource)}.`, "info", { moving: true });
  location.hash = `#/${kind.path}`;
}
