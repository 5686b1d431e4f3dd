// Request queues: the list of the user's queues and those shared with them (with their request counts), and a
// queue's page: its requests page by page (all, or only the pending ones), adding one by URL, deleting one, and
// sharing. Every stored string (URLs, unique keys, methods) is attacker-controlled: it goes in as text only.
// The queue object does not say whether a non-owner may write (no urlSigningSecretKey, unlike stores), so the
// add and delete controls are always there and the API's refusal is what a read-only user sees.

import * as api from "../api.js";
import { ask, formatDate, h, notify } from "../dom.js";
import { Pager, button, dataTable, panel, toolbar } from "../layout.js";
import * as resources from "../resources.js";
import { sharePanel } from "../sharing.js";

const PAGE_SIZE = 50;

const kind = { path: "request-queues", title: "Request queues", noun: "queue", list, detail };

const counts = (q) =>
  `${q.totalRequestCount} ${q.totalRequestCount === 1 ? "request" : "requests"}: ${q.pendingRequestCount} pending, ${q.handledRequestCount} handled`;

function list(page) {
  return resources.listPage(page, kind, [
    { label: "Total", value: (q) => q.totalRequestCount, cell: (q) => String(q.totalRequestCount), numeric: true },
    { label: "Handled", value: (q) => q.handledRequestCount, cell: (q) => String(q.handledRequestCount), numeric: true },
    { label: "Pending", value: (q) => q.pendingRequestCount, cell: (q) => String(q.pendingRequestCount), numeric: true },
  ]);
}

async function detail(page, id) {
  const loaded = await resources.load(kind, id);
  const reload = () => detail(page, id);
  page.replaceChildren(
    ...resources.header(kind, { ...loaded, canWrite: null }, counts(loaded.resource), reload),
    requestsPanel(loaded.resource, reload),
    sharePanel(kind, loaded, [], reload));
}

function requestsPanel(queue, reload) {
  const which = h("select", { "aria-label": "Which requests", name: "filter" },
    h("option", { value: "", text: "All requests" }),
    h("option", { value: "pending,locked", text: "Pending only" }));
  const holder = h("div", { class: "table-holder" });
  const path = `${resources.resourcePath(kind, queue.id)}/requests`;

  const remove = async (r) => {
    if (!(await ask(`Delete the request ${r.url}?`, { confirmLabel: "Delete", danger: true }))) return;
    await api.del(`${path}/${api.seg(r.id)}`);
    notify(`Deleted the request ${r.url}.`);
    await reload();
  };

  const columns = [
    { label: "URL", cell: (r) => h("span", { class: "request-url", text: r.url }) },
    { label: "Method", cell: (r) => r.method || "GET" },
    { label: "Unique key", cell: (r) => h("code", { class: "unique-key", text: r.uniqueKey }) },
    { label: "Handled at", cell: (r) => (r.handledAt ? formatDate(r.handledAt) : "pending") },
    { label: "Retries", cell: (r) => String(r.retryCount || 0), numeric: true },
    { label: "Actions", cell: (r) => button("Delete", () => remove(r), { kind: "danger" }) },
  ];

  // The API's cursor pages the listing: each answer's nextCursor is the next page's start.
  const pager = new Pager(
    (cursor) => api.get(path, { query: { limit: PAGE_SIZE, cursor, filter: which.value } }),
    (answer) => {
      holder.replaceChildren(dataTable(columns, answer.items, { sortBy: -1, empty: which.value ? "No pending requests." : "No requests yet." }));
      holder.querySelector("table").classList.add("requests");
      return answer.nextCursor || null;
    });
  which.addEventListener("change", () => pager.show(0));
  pager.show(0).catch((error) => holder.replaceChildren(h("p", { class: "notice error", text: error.message })));

  const url = h("input", { type: "url", name: "url", placeholder: "https://example.com/page", "aria-label": "URL of a new request", required: true });
  const add = h("form", { class: "toolbar add-request" }, url, h("button", { type: "submit", text: "Add request" }));
  add.addEventListener("submit", async (event) => {
    event.preventDefault();
    const value = url.value.trim();
    // The unique key is the URL, as the SDK's default makes it; the API answers whether it was already there.
    const answer = await api.post(path, { json: { url: value, uniqueKey: value } });
    notify(answer.wasAlreadyPresent ? `The queue already has ${value}.` : `Added ${value}.`);
    await reload();
  });

  return panel("Requests", toolbar(which), add, holder, pager.element);
}

export default kind;
