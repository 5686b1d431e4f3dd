"""What keeps the console safe: stored strings are attacker-controlled, so a record, a content type or a schema
title that holds markup or a script shows as text and runs nothing (checked in the real browser: a marker each
script would set stays unset); HTML and SVG render only without scripts; every console file carries the strict
Content-Security-Policy."""

from __future__ import annotations

import json
import re
import secrets
from typing import Any

from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from openkvs import console
from tests.conftest import Server
from tests.console.console import IMG, MARK, Console

HTML = f"<script>{MARK}</script><script>document.body.setAttribute('data-pwned','1')</script>{IMG}<b>rendered page</b>"
SVG = (f'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10" onload="{MARK}">'
       f'<script>{MARK}</script><rect width="10" height="10" fill="blue"/></svg>')
ODD_TYPE = f'text/plain; name="{IMG}"'


def test_stored_markup_and_scripts_run_nothing(sqlite_server: Server, browser: Any) -> None:
    name = "xss-" + secrets.token_hex(3)
    store_schema = {"actorKeyValueStoreSchemaVersion": 1, "collections": {
        "pages": {"title": IMG, "keyPrefix": "page"},
    }}
    with sqlite_server.client() as api:
        api.post(f"/v2/key-value-stores?name={name}", json={"schema": store_schema}).raise_for_status()
        base = f"/v2/key-value-stores/~{name}/records"
        for key, body, kind in [
            ("page.html", HTML, "text/html; charset=utf-8"),
            ("drawing.svg", SVG, "image/svg+xml"),
            ("odd", IMG, ODD_TYPE),
            ("data.json", json.dumps({IMG: IMG}), "application/json"),
            ("fake.pdf", HTML, "application/pdf"),  # HTML that claims to be a PDF: framed as a PDF, never as HTML
        ]:
            api.put(f"{base}/{key}", content=body.encode(), headers={"content-type": kind}).raise_for_status()
    c = Console(browser, sqlite_server.url)
    c.sign_in(sqlite_server.token)
    c.open_store(name)

    # A content type with markup: text in the listing and in the preview.
    c.until(lambda d: c.row("odd").find_element(By.CSS_SELECTOR, ".content-type").text == ODD_TYPE)
    odd = c.preview("odd")
    assert odd.find_element(By.CSS_SELECTOR, ".content-type").text == ODD_TYPE
    assert odd.find_element(By.CSS_SELECTOR, "pre").text == IMG

    # JSON keys and values with markup: text in the tree.
    assert f'"{IMG}": "{IMG}"' in c.preview("data.json").text

    # HTML: its source as text; rendered, it is in a sandboxed frame where no script runs.
    page = c.preview("page.html")
    assert page.find_element(By.CSS_SELECTOR, "pre.source").text == HTML
    c.button("Rendered (sandboxed, no scripts)").click()
    frame = c.find(".preview iframe")
    assert frame.get_attribute("sandbox") == ""
    browser.switch_to.frame(frame)
    try:
        c.wait_text("body", "rendered page")
        assert c.find("body").get_attribute("data-pwned") is None
    finally:
        browser.switch_to.default_content()
    c.shot("html-sandboxed")

    # SVG: source as text, and as an image (an <img> runs no script).
    svg = c.preview("drawing.svg")
    assert svg.find_element(By.CSS_SELECTOR, "pre.source").text == SVG
    c.button("Image").click()
    img = c.find(".preview img")
    c.until(lambda d: c.js("return arguments[0].complete && arguments[0].naturalWidth", img) == 10, message="svg not shown")

    # A "PDF" that is HTML: the browser's PDF viewer gets it (a blob the console typed), no HTML page runs.
    fake = c.preview("fake.pdf").find_element(By.CSS_SELECTOR, "iframe.pdf")
    assert fake.get_attribute("src").startswith("blob:")
    browser.switch_to.frame(fake)
    try:
        assert "rendered page" not in c.find("body").text and c.find("body").get_attribute("data-pwned") is None
    finally:
        browser.switch_to.default_content()

    # The schema's collection title (markup) is an option's text; the collection filter lists only its keys.
    collection = Select(c.find("select[name=collection]"))
    assert [o.text for o in collection.options] == ["All records", IMG]
    collection.select_by_value("pages")
    c.wait_records(["page.html"])

    assert c.js("return window.__pwned") is None
    assert not c.all("img[src=x]")
    assert browser.title == "openkvs console"


def test_every_console_file_has_the_strict_headers(sqlite_server: Server) -> None:
    assert {"index.html", "js/main.js", "js/api.js", "console.css"} <= set(console.FILES)
    with sqlite_server.anon() as anon:
        for name in console.FILES:
            r = anon.get(f"/console/{name}")
            assert r.status_code == 200, name
            csp = r.headers["content-security-policy"]
            assert "script-src 'self'" in csp and "default-src 'none'" in csp and "'unsafe-inline'" not in csp
            assert "frame-ancestors 'none'" in csp
            assert r.headers["x-content-type-options"] == "nosniff"
            assert r.headers["referrer-policy"] == "no-referrer"
            assert r.headers["cache-control"] == "no-cache" and r.headers["etag"]
            again = anon.get(f"/console/{name}", headers={"If-None-Match": r.headers["etag"]})
            assert again.status_code == 304 and again.content == b""
        index = anon.get("/console/")
        assert index.headers["content-type"] == "text/html; charset=utf-8"
        # No inline script or style anywhere (the CSP would block it): every script is a file of this origin.
        assert re.findall(r"<script[^>]*>", index.text) == ['<script type="module" src="js/main.js">']
        assert "style=" not in index.text and "<style" not in index.text
        for path in ("/", "/console"):
            r = anon.get(path)
            assert r.status_code == 302 and r.headers["location"] == "/console/"
        missing = anon.get("/console/../openkvs/app.py")
        assert missing.status_code == 404
        assert anon.get("/console/nope.js").json()["error"]["type"] == "page-not-found"
