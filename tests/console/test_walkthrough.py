"""The console as a new user meets it, in a real headless Chromium against a real server on each backend: sign in,
create a store, upload three files, see them with their sizes, preview JSON, text and an image, download a record
and the ZIP (checking the bytes), filter by prefix, copy a signed link and open it signed out, delete a record
and the store, sign out. Screenshots of the main pages go to the test's temporary folder."""

from __future__ import annotations

import io
import json
import secrets
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium.webdriver.common.by import By

from tests.conftest import Server
from tests.console.console import Console


def png(width: int, height: int) -> bytes:
    """A real PNG (one red pixel row repeated), so the browser must decode it to show it."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def test_a_user_walks_through_the_console(shared_server: Server, browser: Any, tmp_path: Path) -> None:
    c = Console(browser, shared_server.url)
    name = "walk-" + secrets.token_hex(3)
    files = {
        "report.json": json.dumps({"title": "Hello", "items": [1, 2, 3], "nested": {"deep": True}}).encode(),
        "notes.txt": "first line\nsecond line, ünïcode\n".encode(),
        "shot.png": png(7, 5),
    }
    folder = tmp_path / "files"
    folder.mkdir()
    for file_name, body in files.items():
        (folder / file_name).write_bytes(body)

    # Sign in: the token lives in this tab's session storage, not in the URL.
    c.sign_in(shared_server.token)
    assert "/console/" in browser.current_url and shared_server.token not in browser.current_url
    assert c.js("return sessionStorage.getItem('openkvs.token')") == shared_server.token
    c.shot("stores")

    # Create a store.
    c.button("Create store").click()
    c.answer(name)
    c.page_ready()
    c.wait_text(".page-header h1", name)
    assert c.records() == []

    # Upload three files at once through the file input; each gets its progress row and ends "done".
    c.find("#upload-files").send_keys("\n".join(str(folder / n) for n in files))
    c.until(lambda d: len(c.all(".uploads li.done")) == 3, message="uploads did not finish")
    assert [e.get_attribute("value") for e in c.all(".uploads progress")] == [
        e.get_attribute("max") for e in c.all(".uploads progress")
    ]
    c.wait_records(sorted(files))
    sizes = {c.row(k).find_element(By.CSS_SELECTOR, "td[data-label=Size]").text for k in files}
    assert sizes == {f"{len(files['report.json'])} B", f"{len(files['notes.txt'])} B", f"{len(files['shot.png'])} B"}
    c.until(lambda d: c.row("shot.png").find_element(By.CSS_SELECTOR, ".content-type").text == "image/png")
    with shared_server.client() as api:  # stored as uploaded, with the file's content type
        got = api.get(f"/v2/key-value-stores/~{name}/records/notes.txt")
        assert got.content == files["notes.txt"] and got.headers["content-type"].startswith("text/plain")
    c.shot("store")

    # Previews: JSON as a folding tree, text as text, the image decoded by the browser.
    tree = c.preview("report.json").find_element(By.CSS_SELECTOR, ".json")
    assert '"title": "Hello"' in tree.text and '"deep": true' in tree.text
    c.shot("preview-json")
    assert c.preview("notes.txt").find_element(By.CSS_SELECTOR, "pre").text == "first line\nsecond line, ünïcode"
    img = c.preview("shot.png").find_element(By.CSS_SELECTOR, "img")
    c.until(lambda d: c.js("return arguments[0].complete && arguments[0].naturalWidth", img) == 7, message="image not shown")
    assert c.js("return arguments[0].naturalHeight", img) == 5

    # Download one record: the browser's own download of the signed link.
    c.click_in_row("notes.txt", By.LINK_TEXT, "Download")
    assert c.downloaded("notes.txt") == files["notes.txt"]

    # Filter by prefix: the listing and the ZIP link follow it.
    prefix = c.find("input[name=prefix]")
    prefix.send_keys("no")
    c.wait_records(["notes.txt"])
    zip_link = c.find("a[data-link=zip]")
    c.until(lambda d: "prefix=no" in zip_link.get_attribute("href"))
    with httpx.Client(timeout=30) as anon:  # the link works without a token, and holds only what the filter shows
        part = zipfile.ZipFile(io.BytesIO(anon.get(zip_link.get_attribute("href")).content))
        assert part.namelist() == ["notes.txt"]
    prefix.clear()
    prefix.send_keys(" ")  # clear() fires no input event; a blank prefix is no prefix
    c.wait_records(sorted(files))

    # Download the whole store as ZIP: the bytes are every record.
    c.until(lambda d: "prefix" not in zip_link.get_attribute("href"))
    zip_link.click()
    archive = zipfile.ZipFile(io.BytesIO(c.downloaded(f"{name}.zip")))
    assert {n: archive.read(n) for n in archive.namelist()} == files

    # Copy a record's signed link (opening it signed out: the next test).
    c.click_in_row("report.json", By.XPATH, ".//button[text()='Copy link']")
    link = c.find("input[data-link=record]").get_attribute("value")
    assert "signature=" in link and shared_server.token not in link

    # Delete a record (after a confirmation; cancelling keeps it).
    c.click_in_row("shot.png", By.XPATH, ".//button[text()='Delete']")
    c.answer(confirm=False)
    assert "shot.png" in c.records()
    c.click_in_row("shot.png", By.XPATH, ".//button[text()='Delete']")
    c.answer()
    c.wait_records(["notes.txt", "report.json"])

    # A phone's screen: the same page in one column, nothing wider than the screen.
    c.check_phone_width("store-phone")

    # Delete the store.
    c.button("Delete store").click()
    c.answer()
    c.page_ready()
    c.until(lambda d: d.current_url.endswith("#/key-value-stores"))
    assert name not in c.text("main")
    with shared_server.client() as api:
        assert api.get(f"/v2/key-value-stores/~{name}").status_code == 404

    # The token never was in a URL the page loaded or fetched (so in no log and no Referer either).
    urls = c.js("return performance.getEntriesByType('resource').map(e => e.name).concat([location.href])")
    assert len(urls) > 10 and not [u for u in urls if shared_server.token in u]

    # Sign out: the token is gone from the tab, the sign-in form is back.
    c.button("Sign out").click()
    c.find("#token")
    assert c.js("return sessionStorage.getItem('openkvs.token')") is None
    assert not c.find("#sign-out").is_displayed()  # hidden, whatever the stylesheet says of buttons


def test_a_signed_link_opens_signed_out(shared_server: Server, browser: Any) -> None:
    name = "link-" + secrets.token_hex(3)
    with shared_server.client() as api:
        api.post(f"/v2/key-value-stores?name={name}")
        api.put(f"/v2/key-value-stores/~{name}/records/greeting.txt", content=b"hello, link", headers={"content-type": "text/plain"})
    c = Console(browser, shared_server.url)
    c.sign_in(shared_server.token)
    c.open_store(name)
    c.click_in_row("greeting.txt", By.XPATH, ".//button[text()='Copy link']")
    link = c.find("input[data-link=record]").get_attribute("value")
    c.button("Sign out").click()
    c.find("#token")
    browser.get(link)
    c.until(lambda d: d.find_element(By.TAG_NAME, "body").text == "hello, link", message="signed link did not open")
    assert shared_server.token not in link


@pytest.mark.parametrize("bad", ["okvs_" + "x" * 40, "not a token"])
def test_a_wrong_token_is_refused_with_the_api_message(sqlite_server: Server, browser: Any, bad: str) -> None:
    c = Console(browser, sqlite_server.url)
    c.open()
    c.find("#token").send_keys(bad)
    c.button("Sign in").click()
    c.wait_text("[role=alert]", "Authentication token is not valid.")
    assert c.js("return sessionStorage.getItem('openkvs.token')") is None


# The smallest PDF a viewer draws: one page saying "Hello PDF".
PDF = b"""%PDF-1.4
1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj
2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj
3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 200 100]/Contents 4 0 R/Resources<</Font<</F1 5 0 R>>>>>>endobj
4 0 obj<</Length 44>>stream
BT /F1 24 Tf 20 40 Td (Hello PDF) Tj ET
endstream endobj
5 0 obj<</Type/Font/Subtype/Type1/BaseFont/Helvetica>>endobj
trailer<</Root 1 0 R>>
%%EOF"""


def test_previews_of_pdf_html_and_other_bytes(sqlite_server: Server, browser: Any) -> None:
    name = "kinds-" + secrets.token_hex(3)
    blob = bytes(range(256)) * 4
    with sqlite_server.client() as api:
        api.post(f"/v2/key-value-stores?name={name}")
        for key, body, kind in [("doc.pdf", PDF, "application/pdf"), ("blob.bin", blob, "application/octet-stream"),
                                ("big.txt", b"0123456789" * 100_000, "text/plain")]:
            api.put(f"/v2/key-value-stores/~{name}/records/{key}", content=body, headers={"content-type": kind}).raise_for_status()
    c = Console(browser, sqlite_server.url)
    c.sign_in(sqlite_server.token)
    c.open_store(name)
    frame = c.preview("doc.pdf").find_element(By.CSS_SELECTOR, "iframe.pdf")
    assert frame.get_attribute("src").startswith("blob:")
    c.shot("preview-pdf")
    # Other bytes: a hex dump of the first ones.
    hexdump = c.preview("blob.bin").find_element(By.CSS_SELECTOR, "pre.hex").text.splitlines()
    assert hexdump[0].startswith("00000000  00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f")
    assert len(hexdump) == 32  # 512 bytes shown of 1 KiB
    # A big text record: only its first 256 KiB are read (a Range request), and the preview says so.
    big = c.preview("big.txt")
    assert "showing the first 256.0 KiB" in big.find_element(By.CSS_SELECTOR, ".about").text
    assert len(c.js("return arguments[0].textContent", big.find_element(By.CSS_SELECTOR, "pre"))) == 256 * 1024


def test_records_page_by_page(sqlite_server: Server, browser: Any) -> None:
    name = "pages-" + secrets.token_hex(3)
    keys = [f"k{i:03d}" for i in range(120)]
    with sqlite_server.client() as api:
        api.post(f"/v2/key-value-stores?name={name}")
        for key in keys:
            api.put(f"/v2/key-value-stores/~{name}/records/{key}", content=key.encode()).raise_for_status()
    c = Console(browser, sqlite_server.url)
    c.sign_in(sqlite_server.token)
    c.open_store(name)
    c.wait_records(keys[:50])  # a page is 50 keys
    c.button("Next").click()
    c.wait_records(keys[50:100])
    c.button("Next").click()
    c.wait_records(keys[100:])
    assert not c.button("Previous").get_attribute("disabled")
    assert [b.get_attribute("disabled") for b in c.all(".pager button") if b.text == "Next"] == ["true"]
    c.button("Previous").click()
    c.wait_records(keys[50:100])
    c.button("First").click()
    c.wait_records(keys[:50])


def test_files_dropped_on_the_page_are_uploaded(sqlite_server: Server, browser: Any) -> None:
    name = "drop-" + secrets.token_hex(3)
    with sqlite_server.client() as api:
        api.post(f"/v2/key-value-stores?name={name}")
    c = Console(browser, sqlite_server.url)
    c.sign_in(sqlite_server.token)
    c.open_store(name)
    # What the browser hands the page when files are dropped on it: a drop event carrying them (WebDriver can't
    # drag from the desktop). A name with a space becomes a key with "-".
    c.js("""
        const files = new DataTransfer();
        files.items.add(new File(['{"dropped": 1}'], 'a.json', {type: 'application/json'}));
        files.items.add(new File(['plain'], 'my notes.txt', {type: 'text/plain'}));
        document.querySelector('.drop-zone').dispatchEvent(new DragEvent('drop', {dataTransfer: files, bubbles: true, cancelable: true}));
    """)
    c.wait_records(["a.json", "my-notes.txt"])
    with sqlite_server.client() as api:
        got = api.get(f"/v2/key-value-stores/~{name}/records/my-notes.txt")
        assert got.content == b"plain" and got.headers["content-type"].startswith("text/plain")
        assert api.get(f"/v2/key-value-stores/~{name}/records/a.json").json() == {"dropped": 1}
