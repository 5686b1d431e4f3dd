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
  const options = new Options(dataset);
  const exports = exportPanel(dataset, options);
  page.replaceChildren(
    ...resources.header(kind, loaded, count(dataset), reload),
    itemsPanel(dataset, options, () => exports.update()),
    exports.element,
    sharePanel(kind, loaded, [linkField("Signed link to the items (valid 14 days)", dataset.itemsPublicUrl, "items")], reload));
}

// How the items are read, the API's own parameters: newest first (`desc`), `clean` (no hidden fields, those whose
// name starts with #, and no empty items), and a `view` of the dataset's schema. The table and the export links
// follow the same choice.
class Options {
  constructor(dataset) {
    this.views = (dataset.schema && dataset.schema.views) || {};
    this.desc = h("input", { type: "checkbox", name: "desc" });
    this.clean = h("input", { type: "checkbox", name: "clean" });
    const names = Object.keys(this.views);
    this.view = names.length
      ? h("select", { name: "view", "aria-label": "View" }, h("option", { value: "", text: "All fields" }),
        names.map((v) => h("option", { value: v, text: this.views[v].title || v })))
      : null;
    this.controls = [
      h("label", { class: "check" }, this.desc, " Newest first"),
      h("label", { class: "check", title: "Without hidden fields (#name) and empty items" }, this.clean, " Clean"),
      this.view,
    ];
  }

  // The query parameters of the choice (only those that differ from the API's defaults).
  query() {
    return {
      desc: this.desc.checked ? 1 : undefined,
      clean: this.clean.checked ? 1 : undefined,
      view: this.view && this.view.value ? this.view.value : undefined,
    };
  }

  onChange(handler) {
    for (const control of [this.desc, this.clean, this.view]) if (control) control.addEventListener("change", handler);
  }

  // The table's columns: the view's fields (or the dataset's, less what the view omits), then any other key the
  // page's items hold (a view may flatten or unwind), without hidden ones when clean.
  columns(fields, items) {
    const transformation = (this.view && this.view.value && this.views[this.view.value].transformation) || {};
    const list = (value) => (Array.isArray(value) ? value : typeof value === "string" ? value.split(",") : []);
    const omit = new Set(list(transformation.omit));
    const base = transformation.fields ? list(transformation.fields) : fields.filter((f) => !omit.has(f));
    const names = [...base];
    for (const item of items) {
      if (item && typeof item === "object" && !Array.isArray(item)) {
        for (const key of Object.keys(item)) if (!names.includes(key)) names.push(key);
      }
    }
    const hidden = this.clean.checked || transformation.clean || transformation.skipHidden;
    return hidden ? names.filter((n) => !n.startsWith("#")) : names;
  }
}

// A cell: a string as it is, anything else (numbers, booleans, null, objects, arrays) as compact JSON; a missing
// key stays empty.
function cellText(item, field) {
  if (!item || typeof item !== "object" || !Object.prototype.hasOwnProperty.call(item, field)) return "";
  const value = item[field];
  return typeof value === "string" ? value : JSON.stringify(value);
}

function itemsPanel(dataset, options, changed) {
  const holder = h("div", { class: "table-holder items-holder", tabindex: "0", role: "region", "aria-label": "Items" });
  const path = `${resources.resourcePath(kind, dataset.id)}/items`;

  // The API pages items by offset over the stored items: each page's next offset is its offset plus the stored
  // items it covered (X-Apify-Pagination-Count; clean may show fewer), until the total. Newest first, the offset
  // counts from the last item: # is the item's number in the dataset either way (1 the oldest).
  const pager = new Pager(
    async (offset) => {
      const from = offset || 0;
      const response = await api.request("GET", path, { raw: true, query: { format: "json", offset: from, limit: PAGE_SIZE, ...options.query() } });
      const covered = Number(response.headers.get("X-Apify-Pagination-Count"));
      const total = Number(response.headers.get("X-Apify-Pagination-Total"));
      return { items: await response.json(), offset: from, covered, total, desc: Boolean(options.query().desc) };
    },
    ({ items, offset, covered, total, desc }) => {
      const fields = options.columns(dataset.fields || [], items);
      const table = h("table", { class: "data items" },
        h("thead", {}, h("tr", {}, h("th", { scope: "col", class: "num", text: "#" }), fields.map((f) => h("th", { scope: "col", text: f })))),
        h("tbody", {}, items.length
          ? items.map((item, i) => h("tr", {},
            h("td", { class: "num", "data-label": "#", text: String(desc ? total - offset - i : offset + i + 1) }),
            fields.map((f) => h("td", { "data-label": f, class: "item-cell", text: cellText(item, f) }))))
          : h("tr", {}, h("td", { colspan: fields.length + 1, class: "empty", text: offset ? "No more items." : "No items yet." }))));
      holder.replaceChildren(table);
      const next = offset + covered;
      return covered > 0 && next < total ? next : null;
    });
  options.onChange(() => {
    changed();
    pager.show(0).catch((error) => holder.replaceChildren(h("p", { class: "notice error", text: error.message })));
  });
  pager.show(0).catch((error) => holder.replaceChildren(h("p", { class: "notice error", text: error.message })));
  return panel("Items", toolbar(options.controls), holder, pager.element);
}

// Export links: the dataset's signed items URL (itemsPublicUrl) on this origin, plus the format, the options shown
// and attachment=1, so the browser downloads the file itself and the token is never in a URL.
function exportPanel(dataset, options) {
  const links = FORMATS.map((format) => h("a", { class: "button", download: "", "data-format": format, text: format.toUpperCase() }));
  const update = () => {
    for (const link of links) {
      link.href = api.local(dataset.itemsPublicUrl, { format: link.dataset.format, ...options.query(), attachment: 1 });
    }
  };
  update();
  return {
    update,
    element: panel("Export", h("p", { text: "Download all the items in a format, read with the options above (a signed link, valid 14 days)." }), toolbar(links)),
  };
}

export default kind;
