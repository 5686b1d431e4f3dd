// Datasets: the list of the user's datasets and those shared with them (with their item counts), and a dataset's
// page: its items page by page as a table whose columns are the dataset's `fields`, export links in every format,
// and sharing. Every stored key and value is attacker-controlled: cells are text only (nested values as compact
// JSON text), never parsed as HTML.

import * as api from "../api.js";
import { h } from "../dom.js";
import { Pager, linkField, panel, toolbar } from "../layout.js";
import * as resources from "../resources.js";
import { sharePanel } from "../sharing.js";

const PAGE_SIZE = 50;
const FORMATS = ["json", "jsonl", "csv", "html", "xlsx", "xml", "rss"];

const kind = { path: "datasets", title: "Datasets", noun: "dataset", list, detail };

const count = (d) => `${d.itemCount} ${d.itemCount === 1 ? "item" : "items"}`;

function list(page) {
  return resources.listPage(page, kind, [
    { label: "Items", value: (d) => d.itemCount, cell: (d) => String(d.itemCount), numeric: true },
  ]);
}

async function detail(page, id) {
  const loaded = await resources.load(kind, id);
  const reload = () => detail(page, id);
  const dataset = loaded.resource;
  page.replaceChildren(
    ...resources.header(kind, loaded, count(dataset), reload),
    itemsPanel(dataset),
    exportPanel(dataset),
    sharePanel(kind, loaded, [linkField("Signed link to the items (valid 14 days)", dataset.itemsPublicUrl, "items")], reload));
}

// A cell: a string as it is, anything else (numbers, booleans, null, objects, arrays) as compact JSON; a missing
// key stays empty.
function cellText(item, field) {
  if (!Object.prototype.hasOwnProperty.call(item, field)) return "";
  const value = item[field];
  return typeof value === "string" ? value : JSON.stringify(value);
}

function itemsPanel(dataset) {
  const holder = h("div", { class: "table-holder" });
  const path = `${resources.resourcePath(kind, dataset.id)}/items`;
  const fields = dataset.fields || [];

  // The API pages items by offset: each page's next start is offset + the items it held, until itemCount.
  const pager = new Pager(
    (offset) => api.get(path, { query: { format: "json", offset: offset || 0, limit: PAGE_SIZE } }).then((items) => ({ items, offset: offset || 0 })),
    ({ items, offset }) => {
      const table = h("table", { class: "data items" },
        h("thead", {}, h("tr", {}, h("th", { scope: "col", class: "num", text: "#" }), fields.map((f) => h("th", { scope: "col", text: f })))),
        h("tbody", {}, items.length
          ? items.map((item, i) => h("tr", {},
            h("td", { class: "num", "data-label": "#", text: String(offset + i + 1) }),
            fields.map((f) => h("td", { "data-label": f, class: "item-cell", text: cellText(item, f) }))))
          : h("tr", {}, h("td", { colspan: fields.length + 1, class: "empty", text: "No items yet." }))));
      holder.replaceChildren(table);
      const next = offset + items.length;
      return items.length === PAGE_SIZE && next < dataset.itemCount ? next : null;
    });
  pager.show(0).catch((error) => holder.replaceChildren(h("p", { class: "notice error", text: error.message })));
  return panel("Items", holder, pager.element);
}

// Export links: the dataset's signed items URL (itemsPublicUrl) on this origin, plus the format and attachment=1,
// so the browser downloads the file itself and the token is never in a URL.
function exportPanel(dataset) {
  const links = FORMATS.map((format) => h("a", {
    class: "button", download: "", "data-format": format,
    href: api.local(dataset.itemsPublicUrl, { format, attachment: 1 }), text: format.toUpperCase(),
  }));
  return panel("Export", h("p", { text: "Download all the items in a format (a signed link, valid 14 days)." }), toolbar(links));
}

export default kind;
