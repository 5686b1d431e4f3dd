// What every kind of storage shares: a page header with actions, a sortable table, a filter box, a pager over
// the API's pages, panels of a detail page, and a link field with a copy button. A page per kind (see kinds/)
// only says which columns and actions it has.

import { copy, h } from "./dom.js";

export function pageHeader(title, subtitle, ...actions) {
  return h("div", { class: "page-header" },
    h("div", {}, h("h1", { text: title }), subtitle && h("p", { class: "subtitle" }, subtitle)),
    h("div", { class: "actions" }, actions));
}

export function panel(title, ...children) {
  return h("section", { class: "panel" }, h("h2", { text: title }), children);
}

export function toolbar(...children) {
  return h("div", { class: "toolbar" }, children);
}

export function labelled(label, control) {
  return h("label", { class: "field" }, h("span", { text: label }), control);
}

export function button(label, onclick, { kind, title } = {}) {
  return h("button", { type: "button", class: kind, title, onclick }, label);
}

// columns: [{label, value(row) -> sortable value, cell(row) -> Node|string, numeric}]; sorting by a column header.
export function dataTable(columns, rows, { sortBy = 0, descending = false, empty = "Nothing here." } = {}) {
  const table = h("table", { class: "data" });
  let by = sortBy;
  let desc = descending;
  const render = () => {
    const column = columns[by];
    const sorted = column && column.value ? [...rows].sort((a, b) => compare(column.value(a), column.value(b))) : rows;
    if (desc) sorted.reverse();
    const head = h("tr", {}, columns.map((c, i) => {
      const sort = i === by ? (desc ? "descending" : "ascending") : "none";
      const label = c.value
        ? h("button", { type: "button", class: "sort", onclick: () => { desc = i === by ? !desc : false; by = i; render(); } }, c.label)
        : c.label;
      return h("th", { scope: "col", "aria-sort": c.value ? sort : null, class: c.numeric ? "num" : null }, label);
    }));
    const body = sorted.length
      ? sorted.map((row) => h("tr", {}, columns.map((c) => h("td", { class: c.numeric ? "num" : null, "data-label": c.label }, c.cell(row)))))
      : [h("tr", {}, h("td", { colspan: columns.length, class: "empty", text: empty }))];
    table.replaceChildren(h("thead", {}, head), h("tbody", {}, body));
  };
  render();
  return table;
}

function compare(a, b) {
  if (a === b) return 0;
  if (a === null || a === undefined) return 1;
  if (b === null || b === undefined) return -1;
  if (typeof a === "string" && typeof b === "string") return a.localeCompare(b, undefined, { sensitivity: "base" }) || (a < b ? -1 : 1);
  return a < b ? -1 : 1;
}

// The API's pages by a start key (exclusiveStartKey and the like): first / previous / next, keeping the keys of the
// pages seen, so that a page costs one request however big the whole list is. fetch(start) asks the API;
// render(answer) puts the page on screen and returns the next page's start key (null on the last page). Only the
// latest request is rendered: a slow answer to an older filter never replaces a newer one.
export class Pager {
  constructor(fetch, render) {
    this.fetch = fetch;
    this.render = render;
    this.starts = [null];
    this.latest = 0;
    this.element = h("nav", { class: "pager", "aria-label": "Pages" });
  }

  async show(index) {
    const mine = ++this.latest;
    const answer = await this.fetch(this.starts[index]);
    if (mine !== this.latest) return;
    this.starts.length = index + 1;
    const next = this.render(answer);
    performance.mark("openkvs:page-shown"); // when a page of the list is on screen (bench/console_page.py)
    this.element.replaceChildren(
      h("button", { type: "button", disabled: index === 0, onclick: () => this.show(0) }, "First"),
      h("button", { type: "button", disabled: index === 0, onclick: () => this.show(index - 1) }, "Previous"),
      h("span", { text: `Page ${index + 1}` }),
      h("button", { type: "button", disabled: !next, onclick: () => { this.starts[index + 1] = next; this.show(index + 1); } }, "Next"),
    );
  }

  reload() {
    return this.show(this.starts.length - 1);
  }
}

// A signed link shown in full (readonly, selectable) with a Copy button.
export function linkField(label, value, name) {
  const input = h("input", { type: "text", readonly: true, value, "aria-label": label, "data-link": name, class: "link" });
  return h("div", { class: "link-field" }, h("span", { text: label }), input, button("Copy", () => copy(value, input)));
}
