// The web console in a real headless Firefox: Debian's firefox-esr, driven through Firefox's own WebDriver BiDi by
// puppeteer-core (no geckodriver, no downloaded browser). Run by tests/console/test_firefox.py, which starts the
// server, writes the files and WORK/spec.json, and checks what this leaves in WORK (downloads, screenshots,
// result.json) and on the server. Usage: node console.mjs walk|safety, with OPENKVS_URL, OPENKVS_TOKEN, FIREFOX
// and WORK set. Every wait is explicit and generous (a loaded machine): never a measure of speed.

import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { setTimeout as pause } from "node:timers/promises";

import puppeteer from "puppeteer-core";

const WAIT = 30_000;
const need = (name) => {
  if (!process.env[name]) throw new Error(`${name} is not set`);
  return process.env[name];
};
const BASE = need("OPENKVS_URL");
const TOKEN = need("OPENKVS_TOKEN");
const WORK = need("WORK");
const FIREFOX = need("FIREFOX");
const DOWNLOADS = path.join(WORK, "downloads");
const SHOTS = path.join(WORK, "screenshots");
const spec = JSON.parse(fs.readFileSync(path.join(WORK, "spec.json"), "utf8"));
const result = {};
const errors = []; // script errors of the console's pages, as the browser reports them (its console)
let sink = errors; // where they go: elsewhere while the test plants code of its own in the page
const step = (what) => console.log(`STEP ${what}`);

// Driving the page the way a user does, by what it shows (as tests/console/console.py does for Chromium).
class Console {
  constructor(page) {
    this.page = page;
  }

  // A function run in the page until it returns something truthy (its handle), or fail with `message`.
  async until(fn, message, ...args) {
    try {
      return await this.page.waitForFunction(fn, { timeout: WAIT, polling: 100 }, ...args);
    } catch (error) {
      throw new Error(`${message}: ${error.message}`);
    }
  }

  // A check made here (files on disk), until it holds.
  async poll(check, message) {
    const end = Date.now() + WAIT;
    for (;;) {
      const value = await check();
      if (value) return value;
      if (Date.now() > end) throw new Error(message());
      await pause(100);
    }
  }

  async find(css) {
    return (await this.until((css) => document.querySelector(css), `no ${css}`, css)).asElement();
  }

  async button(text, within = "body") {
    const found = await this.until((text, within) => [...document.querySelectorAll(`${within} button, ${within} a.button`)]
      .find((b) => b.textContent.trim() === text && b.getClientRects().length > 0 && !b.disabled), `no button ${text}`, text, within);
    return found.asElement();
  }

  async text(css = "body") {
    return (await this.find(css)).evaluate((e) => e.innerText);
  }

  async waitText(css, text) {
    await this.until((css, text) => document.querySelector(css)?.innerText.includes(text), `${text} not in ${css}`, css, text);
  }

  js(fn, ...args) {
    return this.page.evaluate(fn, ...args);
  }

  async shot(name) {
    await this.page.screenshot({ path: path.join(SHOTS, `${name}.png`) });
  }

  async signIn(token) {
    await this.page.goto(`${BASE}/`);
    await (await this.find("#token")).type(token);
    await (await this.button("Sign in")).click();
    await this.pageReady();
  }

  async pageReady() {
    await this.until(() => document.querySelector("main .page:not([aria-busy])"), "page not loaded");
  }

  async records() {
    await this.find("table.records");
    return this.js(() => [...document.querySelectorAll("table.records button.record-key")].map((e) => e.textContent));
  }

  async waitRecords(keys) {
    await this.until((want) => {
      const shown = [...document.querySelectorAll("table.records button.record-key")].map((e) => e.textContent);
      return document.querySelector("table.records") && JSON.stringify(shown) === want;
    }, `records are not ${keys}`, JSON.stringify(keys));
  }

  // Answer the open dialog: type `value` into its field, then confirm (or cancel).
  async answer(value, confirm = true) {
    const dialog = await this.find("dialog.ask[open]");
    if (value !== undefined) {
      const field = await dialog.$("input");
      await field.evaluate((f) => f.select());
      await field.type(value);
    }
    await (await dialog.$(confirm ? "button[type=submit]" : "button[type=button]")).click();
    await this.until(() => !document.querySelector("dialog.ask"), "dialog still open");
  }

  async openStore(name) {
    await this.js(() => { location.hash = "#/key-value-stores"; });
    const link = await this.until((name) => [...document.querySelectorAll("a.resource-link")].find((a) => a.textContent === name),
      `no store ${name}`, name);
    await link.asElement().click();
    await this.pageReady();
    await this.find("table.records");
  }

  async row(key) {
    const found = await this.until((key) => [...document.querySelectorAll("table.records tbody tr")]
      .find((tr) => tr.querySelector("button.record-key")?.textContent === key), `no record ${key}`, key);
    return found.asElement();
  }

  // A control of a record's row, by its text (a button or a link).
  async action(key, text) {
    const row = await this.row(key);
    const found = await row.evaluateHandle((tr, text) => [...tr.querySelectorAll("button, a")].find((b) => b.textContent === text), text);
    assert.ok(found.asElement(), `no ${text} for ${key}`);
    return found.asElement();
  }

  async preview(key) {
    await (await (await this.row(key)).$("button.record-key")).click();
    const found = await this.until((key) => [...document.querySelectorAll(".preview")].find((p) => p.dataset.key === key),
      `no preview of ${key}`, key);
    return found.asElement();
  }

  // The bytes of a finished download: Firefox writes NAME.part and renames it to NAME when it is complete.
  async downloaded(name) {
    const file = path.join(DOWNLOADS, name);
    await this.poll(() => fs.existsSync(file) && !fs.existsSync(`${file}.part`) && fs.statSync(file).size > 0,
      () => `${name} not downloaded: ${fs.readdirSync(DOWNLOADS)}`);
    return fs.readFileSync(file);
  }

  // How many times a planted script (spec.mark) ran in the page: 0, always.
  pwned() {
    return this.js(() => window.top.__pwned || 0);
  }
}

async function launch() {
  return puppeteer.launch({
    browser: "firefox",
    executablePath: FIREFOX,
    headless: true,
    defaultViewport: { width: 1280, height: 1000 },
    timeout: 60_000,
    protocolTimeout: 60_000,
    extraPrefsFirefox: {
      // Downloads go to WORK/downloads without asking (the profile is a new one each run).
      "browser.download.dir": DOWNLOADS,
      "browser.download.folderList": 2,
      "browser.download.useDownloadDir": true,
      "browser.download.start_downloads_in_tmp_dir": false,
      "browser.download.always_ask_before_handling_new_types": false,
      "browser.download.alwaysOpenPanel": false,
      "browser.download.manager.showWhenStarting": false,
    },
  });
}

async function walk(c) {
  const page = c.page;
  const name = spec.name;
  const files = Object.fromEntries(spec.files.map((f) => [f, fs.readFileSync(path.join(WORK, "files", f))]));

  step("sign in: the token lives in this tab's session storage, not in the URL");
  await c.signIn(TOKEN);
  assert.ok(page.url().includes("/console/") && !page.url().includes(TOKEN), page.url());
  assert.equal(await c.js(() => sessionStorage.getItem("openkvs.token")), TOKEN);
  await c.shot("stores");

  step("create a store");
  await (await c.button("Create store")).click();
  await c.answer(name);
  await c.pageReady();
  await c.waitText(".page-header h1", name);
  assert.deepEqual(await c.records(), []);

  step("upload three files at once through the file input");
  await (await c.find("#upload-files")).uploadFile(...spec.files.map((f) => path.join(WORK, "files", f)));
  await c.until(() => document.querySelectorAll(".uploads li.done").length === 3, "uploads did not finish");
  const bars = await c.js(() => [...document.querySelectorAll(".uploads progress")].map((p) => [p.value, p.max]));
  assert.ok(bars.length === 3 && bars.every(([value, max]) => value === max), JSON.stringify(bars));
  await c.waitRecords([...spec.files].sort());
  for (const [key, body] of Object.entries(files)) {
    assert.equal(await (await c.row(key)).$eval("td[data-label=Size]", (td) => td.innerText), `${body.length} B`);
  }
  await c.until(() => [...document.querySelectorAll("span.content-type")].find((s) => s.dataset.key === "shot.png")?.textContent === "image/png",
    "shot.png is not listed as image/png");
  const stored = await fetch(`${BASE}/v2/key-value-stores/~${name}/records/notes.txt`, { headers: { Authorization: `Bearer ${TOKEN}` } });
  assert.deepEqual(Buffer.from(await stored.arrayBuffer()), files["notes.txt"]);
  assert.match(stored.headers.get("content-type"), /^text\/plain/);
  await c.shot("store");

  step("previews: JSON as a folding tree, text as text, the image decoded by the browser");
  const tree = await c.preview("report.json");
  const treeText = await tree.$eval(".json", (e) => e.innerText);
  assert.ok(treeText.includes('"title": "Hello"') && treeText.includes('"deep": true'), treeText);
  await c.shot("preview-json");
  const notes = await c.preview("notes.txt");
  assert.equal(await notes.$eval("pre", (e) => e.textContent), files["notes.txt"].toString("utf8"));
  const shot = await c.preview("shot.png");
  await c.until((preview) => { const img = preview.querySelector("img"); return img.complete && img.naturalWidth === 7; },
    "image not shown", shot);
  assert.equal(await shot.$eval("img", (img) => img.naturalHeight), 5);
  await c.shot("preview-image");

  step("download one record: the browser's own download of the signed link");
  await (await c.action("notes.txt", "Download")).click();
  assert.deepEqual(await c.downloaded("notes.txt"), files["notes.txt"]);

  step("filter by prefix: the listing and the ZIP link follow it");
  const prefix = await c.find("input[name=prefix]");
  await prefix.type("no");
  await c.waitRecords(["notes.txt"]);
  await c.until(() => document.querySelector("a[data-link=zip]").href.includes("prefix=no"), "the ZIP link has no prefix");
  const filtered = await c.js(() => document.querySelector("a[data-link=zip]").href);
  // The link works without a token and holds only what the filter shows (the test reads the archive).
  const part = await fetch(filtered);
  assert.equal(part.status, 200);
  fs.writeFileSync(path.join(WORK, "filtered.zip"), Buffer.from(await part.arrayBuffer()));
  await prefix.evaluate((e) => e.select());
  await page.keyboard.press("Backspace");
  await c.waitRecords([...spec.files].sort());

  step("download the whole store as ZIP");
  await c.until(() => !document.querySelector("a[data-link=zip]").href.includes("prefix"), "the ZIP link still has a prefix");
  await (await c.find("a[data-link=zip]")).click();
  await c.downloaded(`${name}.zip`); // the test compares every record in it with the files

  step("copy a record's signed link, sign out and open it");
  await (await c.action("notes.txt", "Copy link")).click();
  const link = await (await c.find("input[data-link=record]")).evaluate((e) => e.value);
  assert.ok(link.includes("signature=") && !link.includes(TOKEN), link);
  // Firefox may refuse the clipboard to a headless page: then the link is selected for Ctrl+C. Either way it says so.
  await c.until(() => /Copied to the clipboard|the link is selected/.test(document.getElementById("status").innerText), "no word on the copy");
  result.copied = await c.text("#status");
  result.link = link;
  await (await c.button("Sign out")).click();
  await c.find("#token");
  assert.equal(await c.js(() => sessionStorage.getItem("openkvs.token")), null);
  await page.goto(link);
  await c.until(() => document.readyState === "complete" && document.body && !location.pathname.startsWith("/console"),
    "the signed link did not open");
  // The text as written: the console uploaded the UTF-8 file as text/plain; charset=utf-8, so the browser does not
  // guess the encoding (windows-1252 would show "Ã¼nÃ¯code").
  const shown = await c.js(() => ({ text: document.body.textContent, charset: document.characterSet }));
  result.linkCharset = shown.charset;
  assert.equal(shown.charset, "UTF-8");
  assert.equal(shown.text, new TextDecoder("utf-8").decode(files["notes.txt"]));
  await c.shot("signed-link");

  step("sign in again; delete a record (after a confirmation; cancelling keeps it)");
  await c.signIn(TOKEN);
  await c.openStore(name);
  await (await c.action("shot.png", "Delete")).click();
  await c.answer(undefined, false);
  assert.ok((await c.records()).includes("shot.png"));
  await (await c.action("shot.png", "Delete")).click();
  await c.answer();
  await c.waitRecords(["notes.txt", "report.json"]);

  step("a phone's screen: nothing wider than the screen, the main controls on it");
  await phone(c, "store-phone", ["#sign-out", ".page-header h1", "input[name=prefix]", "a[data-link=zip]",
    ".drop-zone label", "table.records button.record-key", "table.records a[download]"], ["Delete store", "Rename"]);

  step("delete the store");
  await (await c.button("Delete store")).click();
  await c.answer();
  await c.until(() => location.hash === "#/key-value-stores", "not back on the list of stores");
  await c.pageReady();
  assert.ok(!(await c.text("main")).includes(name));

  step("the token never was in a URL the page loaded or fetched");
  const urls = await c.js(() => performance.getEntriesByType("resource").map((e) => e.name).concat([location.href]));
  assert.ok(urls.length > 10, JSON.stringify(urls));
  assert.deepEqual(urls.filter((u) => u.includes(TOKEN)), []);

  step("sign out: the token is gone from the tab, the sign-in form is back");
  await (await c.button("Sign out")).click();
  await c.find("#token");
  assert.equal(await c.js(() => sessionStorage.getItem("openkvs.token")), null);
}

// The page at 375 CSS pixels wide: the document no wider than the viewport (long values wrap, wide tables scroll in
// their box), and each control in `selectors` (and each button named in `buttons`) shown, inside the screen.
async function phone(c, shot, selectors, buttons) {
  await c.page.setViewport({ width: 375, height: 800 });
  try {
    await c.until(() => window.innerWidth === 375, "the viewport is not 375 pixels wide");
    await c.shot(shot);
    const widths = await c.js(() => {
      const root = document.documentElement;
      return { client: root.clientWidth, root: root.scrollWidth, body: document.body.scrollWidth };
    });
    assert.ok(widths.client <= 375 && widths.root <= widths.client && widths.body <= widths.client, JSON.stringify(widths));
    const offScreen = await c.js((selectors, buttons) => {
      const width = document.documentElement.clientWidth;
      const controls = [
        ...selectors.map((css) => [css, document.querySelector(css)]),
        ...buttons.map((text) => [text, [...document.querySelectorAll("button")].find((b) => b.textContent === text)]),
      ];
      return controls.filter(([, e]) => {
        if (!e) return true;
        const box = e.getBoundingClientRect();
        const style = getComputedStyle(e);
        return box.width < 1 || box.height < 1 || box.left < 0 || box.right > width + 0.5 || style.visibility !== "visible";
      }).map(([what]) => what);
    }, selectors, buttons);
    assert.deepEqual(offScreen, [], `not on a phone's screen: ${offScreen}`);
  } finally {
    await c.page.setViewport({ width: 1280, height: 1000 });
  }
}

async function safety(c) {
  const page = c.page;
  step("sign in, open the store of planted markup");
  await c.signIn(TOKEN);
  await c.openStore(spec.name);

  step("a content type with markup: text in the listing and in the preview");
  await c.until((want) => [...document.querySelectorAll("span.content-type")].find((s) => s.dataset.key === "odd")?.textContent === want,
    "odd's content type is not listed as text", spec.oddType);
  const odd = await c.preview("odd");
  assert.equal(await odd.$eval(".content-type", (e) => e.textContent), spec.oddType);
  assert.equal(await odd.$eval("pre", (e) => e.textContent), spec.img);

  step("JSON keys and values with markup: text in the tree");
  const data = await c.preview("data.json");
  assert.ok((await data.evaluate((e) => e.innerText)).includes(`"${spec.img}": "${spec.img}"`));

  step("HTML: its source as text; rendered, in a sandboxed frame where no script runs");
  const html = await c.preview("page.html");
  assert.equal(await html.$eval("pre.source", (e) => e.textContent), spec.html);
  await (await c.button("Rendered (sandboxed, no scripts)")).click();
  const frameElement = await c.find(".preview iframe");
  assert.equal(await frameElement.evaluate((f) => f.getAttribute("sandbox")), "");
  const frame = await frameElement.contentFrame();
  await frame.waitForFunction(() => document.body && document.body.textContent.includes("rendered page"), { timeout: WAIT, polling: 100 });
  assert.equal(await frame.evaluate(() => document.body.getAttribute("data-pwned")), null);
  await c.shot("html-sandboxed");

  step("SVG: source as text, and as an image (an <img> runs no script)");
  const svg = await c.preview("drawing.svg");
  assert.equal(await svg.$eval("pre.source", (e) => e.textContent), spec.svg);
  await (await c.button("Image")).click();
  await c.until(() => { const img = document.querySelector(".preview img"); return img && img.complete && img.naturalWidth === 10; },
    "svg not shown");
  await c.shot("svg-image");

  step("a 'PDF' that is HTML: framed as a blob the console typed as PDF");
  // What runs in that frame is Firefox's own PDF viewer, which reports bytes it cannot read as a page error
  // ("uncaught exception: Object"), sometimes only steps later: not the console's. Its errors are kept apart
  // until the frame is gone (another preview replaces it).
  const viewer = [];
  sink = viewer;
  const fake = await c.preview("fake.pdf");
  const pdf = await fake.$("iframe.pdf");
  assert.match(await pdf.evaluate((f) => f.src), /^blob:/);
  const pdfFrame = await pdf.contentFrame();
  const detached = new Promise((resolve) => page.on("framedetached", (f) => { if (f === pdfFrame) resolve(); }));
  await c.preview("data.json");
  let timer;
  const late = new Promise((_, reject) => { timer = setTimeout(() => reject(new Error("the PDF frame is still there")), WAIT); });
  await Promise.race([detached, late]).finally(() => clearTimeout(timer));
  sink = errors;
  result.pdfViewerErrors = viewer;

  step("no planted script ran");
  assert.equal(await c.pwned(), 0);
  assert.equal(await c.js(() => document.querySelectorAll("img[src=x]").length), 0);
  assert.equal(await page.title(), "openkvs console");

  step("the Content-Security-Policy is enforced: inline script and style, another origin, all refused and reported");
  const other = spec.otherOrigin;
  const planted = [];
  sink = planted; // the errors of what this step plants are the test's, not the console's
  await c.js((other) => {
    window.__violations = [];
    document.addEventListener("securitypolicyviolation", (e) => {
      window.__violations.push({ directive: e.effectiveDirective, blocked: e.blockedURI, disposition: e.disposition });
    });
    const script = document.createElement("script");
    script.textContent = "window.__inline = 1";
    document.head.append(script);
    const style = document.createElement("style");
    style.textContent = "body { background-color: rgb(1, 2, 3) !important; }";
    document.head.append(style);
    window.__fetched = fetch(other).then(() => "answered", () => "refused");
  }, other);
  await c.until(() => window.__violations.length >= 3, "fewer than 3 violations reported");
  const fetched = await c.js(() => window.__fetched);
  const seen = await c.js(() => ({
    violations: window.__violations, inline: window.__inline, background: getComputedStyle(document.body).backgroundColor,
  }));
  result.csp = seen;
  assert.equal(fetched, "refused");
  assert.equal(seen.inline, undefined);
  assert.notEqual(seen.background, "rgb(1, 2, 3)");
  const directives = seen.violations.map((v) => v.directive).sort();
  assert.ok(directives.some((d) => d.startsWith("script-src")), JSON.stringify(seen.violations));
  assert.ok(directives.some((d) => d.startsWith("style-src")), JSON.stringify(seen.violations));
  assert.ok(seen.violations.some((v) => v.directive === "connect-src" && v.blocked.startsWith(other)), JSON.stringify(seen.violations));
  assert.ok(seen.violations.every((v) => v.disposition === "enforce"), JSON.stringify(seen.violations));
  assert.equal(await c.pwned(), 0);
  // Firefox says so in the page's console too, an error for each refusal.
  const csp = () => [...new Set(planted.filter((e) => e.includes("Content-Security-Policy")))];
  await c.poll(() => csp().length >= 3, () => `the console reported ${planted}`);
  result.cspConsole = csp();
}

const mode = process.argv[2];
const modes = { walk, safety };
if (!modes[mode]) throw new Error(`usage: node console.mjs ${Object.keys(modes).join("|")}`);
fs.mkdirSync(DOWNLOADS, { recursive: true });
fs.mkdirSync(SHOTS, { recursive: true });
const browser = await launch();
try {
  result.browser = await browser.version();
  const page = await browser.newPage();
  // Script errors of the console's own pages (a record opened by its link may get the browser's own warnings).
  page.on("pageerror", (error) => {
    console.log(`PAGE ERROR ${page.url()}: ${error.stack}`);
    if (new URL(page.url()).pathname.startsWith("/console/")) sink.push(String(error));
  });
  await modes[mode](new Console(page));
  result.pageErrors = errors;
  fs.writeFileSync(path.join(WORK, "result.json"), JSON.stringify(result, null, 1));
  console.log(`${mode.toUpperCase()} OK`);
} finally {
  await browser.close();
}
