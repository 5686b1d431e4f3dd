// The console's shell: sign-in, the navigation between kinds, and routing by the URL's fragment
// (#/key-value-stores, #/key-value-stores/ID): the server serves one page, the fragment never leaves the browser.

import * as api from "./api.js";
import { clear, h, notify, pageShown } from "./dom.js";
import { KINDS } from "./kinds/index.js";

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const signOutButton = document.getElementById("sign-out");

function showSignIn(message) {
  nav.replaceChildren();
  signOutButton.hidden = true;
  const input = h("input", { id: "token", type: "password", autocomplete: "off", required: true, spellcheck: "false" });
  const form = h("form", { class: "sign-in", "aria-labelledby": "sign-in-title" },
    h("h1", { id: "sign-in-title", text: "Sign in" }),
    h("p", { text: "Use an API token of this server (make run prints one; openkvs tokens create NAME makes more). " +
      "It is kept in this tab only, until you sign out or close the tab." }),
    h("label", { for: "token", text: "API token" }), input,
    h("button", { type: "submit", class: "primary", text: "Sign in" }),
    message && h("p", { class: "notice error", role: "alert", text: message }));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    api.signIn(input.value.trim());
    try {
      await api.get("/key-value-stores", { query: { limit: 1 } }); // a 401 comes back here through onUnauthorized
    } catch (error) {
      if (error.status !== 401) showSignIn(error.message);
      return;
    }
    notify("Signed in.", "info", { moving: true });
    if (!location.hash || location.hash === "#/") location.hash = "#/" + KINDS[0].path;
    else route();
  });
  clear(main, form);
  input.focus();
}

function signOut(message) {
  api.signOut();
  document.getElementById("status").replaceChildren();
  showSignIn(message);
}

api.onUnauthorized((message) => signOut(`${message} Sign in again.`));
api.onRateLimited((seconds) => notify(`The server's rate limit was reached: retrying in ${seconds} s.`));
signOutButton.addEventListener("click", () => {
  signOut();
  notify("Signed out.");
});

function showNav(current) {
  nav.replaceChildren(...KINDS.map((kind) =>
    h("a", { href: "#/" + kind.path, "aria-current": kind === current ? "page" : null, text: kind.title })));
  signOutButton.hidden = false;
}

let routing = 0;

async function route() {
  if (!api.token()) {
    showSignIn();
    return;
  }
  const [path, id] = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  const kind = KINDS.find((k) => k.path === path);
  if (!kind) {
    location.replace("#/" + KINDS[0].path);
    return;
  }
  showNav(kind);
  pageShown();
  const mine = ++routing;
  const page = h("div", { class: "page", "aria-busy": "true" }, h("p", { text: "Loading…" }));
  clear(main, page);
  try {
    await (id ? kind.detail(page, id) : kind.list(page));
  } catch (error) {
    if (mine !== routing || error.status === 401) return;
    clear(page, h("p", { class: "notice error", role: "alert", text: error.message || String(error) }));
  } finally {
    page.removeAttribute("aria-busy");
  }
}

window.addEventListener("hashchange", route);
window.addEventListener("unhandledrejection", (event) => {
  const error = event.reason;
  if (error && error.status === 401) return;
  notify(error && error.message ? error.message : String(error), "error");
});
route();
