// The Share panel of any kind: its signed links, and for the owner generalAccess, a new signing key and the users
// it is shared with (the grants API, the same under every kind's path).

import * as api from "./api.js";
import { ask, h, notify } from "./dom.js";
import { button, dataTable, labelled, panel, toolbar } from "./layout.js";
import { resourcePath } from "./resources.js";

const GENERAL_ACCESS = ["FOLLOW_USER_SETTING", "RESTRICTED", "ANYONE_WITH_ID_CAN_READ", "ANYONE_WITH_NAME_CAN_READ"];

// links: linkField()s the kind offers (the signed URLs its API returns).
export function sharePanel(kind, { resource, owner, grants }, links, reload) {
  if (!owner) return panel("Share", links);
  const path = resourcePath(kind, resource.id);

  const access = h("select", { "aria-label": "General access", name: "generalAccess" },
    GENERAL_ACCESS.map((level) => h("option", { value: level, selected: level === resource.generalAccess, text: level })));
  access.addEventListener("change", async () => {
    await api.put(path, { json: { generalAccess: access.value } });
    await reload();
    notify(`General access is now ${access.value}.`);
  });
  const rotate = button("New signing key", async () => {
    if (!(await ask(`Give the ${kind.noun} a new URL-signing key? Every signed link made before stops working.`, { confirmLabel: "New key", danger: true }))) return;
    await api.post(`${path}/signing-key`);
    await reload();
    notify(`The ${kind.noun} has a new signing key: links made before no longer work.`);
  });

  const setGrant = async (username, level) => {
    await api.put(`${path}/grants`, { json: { username, access: level } });
    await reload();
    notify(`${username} may now ${level === "WRITE" ? "read and write" : "read"} this ${kind.noun}.`);
  };
  const rows = grants.items.map((g) => {
    const level = h("select", { "aria-label": `Access of ${g.username}` },
      ["READ", "WRITE"].map((l) => h("option", { value: l, selected: l === g.access, text: l })));
    level.addEventListener("change", () => setGrant(g.username, level.value));
    return { ...g, level };
  });
  const table = dataTable([
    { label: "User", value: (g) => g.username, cell: (g) => g.username },
    { label: "Access", cell: (g) => g.level },
    {
      label: "",
      cell: (g) => button("Remove", async () => {
        if (!(await ask(`Take ${g.username}'s access away? The ${kind.noun} gets a new signing key.`, { confirmLabel: "Remove", danger: true }))) return;
        await api.del(`${path}/grants/${api.seg(g.username)}`);
        await reload();
        notify(`${g.username} no longer has access.`);
      }, { kind: "danger" }),
    },
  ], rows, { empty: "Not shared with anyone." });
  table.classList.add("grants");

  const user = h("input", { type: "text", name: "username", "aria-label": "Username", placeholder: "username", required: true });
  const level = h("select", { "aria-label": "Access", name: "access" }, ["READ", "WRITE"].map((l) => h("option", { value: l, text: l })));
  const form = h("form", { class: "toolbar grant-form" }, user, level, h("button", { type: "submit", text: "Share" }));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    setGrant(user.value.trim(), level.value);
  });

  return panel("Share", links,
    toolbar(labelled("General access", access), rotate),
    h("h3", { text: `Users this ${kind.noun} is shared with` }), table, form);
}
