"""The console in a real headless Firefox: Debian's ``firefox-esr`` (``.ci/run`` installs it), driven through
Firefox's own WebDriver BiDi by ``puppeteer-core`` from npm (pinned in tests/console/firefox/package.json, installed
with ``npm ci`` from the committed lock file, and never a downloaded browser: puppeteer-core has none, and
``PUPPETEER_SKIP_DOWNLOAD`` is set). There is no geckodriver in Debian, so Selenium can't start Firefox here.

The browser steps are in tests/console/firefox/console.mjs (the same steps as test_walkthrough.py and
test_safety.py do in Chromium); this side starts the server, writes the files, and checks the bytes of what the
browser downloaded and what the server holds after. Without ``firefox-esr`` or Node.js the tests skip with the
reason, except in CI (env CI set), where that is a failure."""

from __future__ import annotations

import io
import json
import os
import secrets
import shutil
import signal
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Server, free_port, unavailable
from tests.console.console import IMG
from tests.console.test_safety import HTML, ODD_TYPE, SVG
from tests.console.test_walkthrough import png

pytestmark = pytest.mark.slow  # a browser run (Firefox and Node.js)

FIREFOX = "/usr/bin/firefox-esr"
JS_DIR = Path(__file__).parent / "firefox"


@pytest.fixture(scope="module")
def node() -> str:
    """Node.js with puppeteer-core installed in tests/console/firefox/node_modules (once), and Firefox there."""
    if not shutil.which(FIREFOX):
        unavailable("firefox-esr is not installed (apt-get install firefox-esr)")
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        unavailable("node and npm are not installed: the Firefox console tests drive Firefox with puppeteer-core")
    assert node is not None and npm is not None
    pinned = json.loads((JS_DIR / "package.json").read_text())["dependencies"]["puppeteer-core"]
    installed = JS_DIR / "node_modules" / "puppeteer-core" / "package.json"
    if not installed.is_file() or json.loads(installed.read_text())["version"] != pinned:
        env = {**os.environ, "PUPPETEER_SKIP_DOWNLOAD": "1"}
        out = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=JS_DIR, env=env, capture_output=True,
                             text=True, timeout=600)
        assert out.returncode == 0, f"npm ci failed:\n{out.stdout}\n{out.stderr}"
    return node


def run(node: str, mode: str, server: Server, work: Path, spec: dict[str, Any]) -> dict[str, Any]:
    """console.mjs MODE against ``server``, its files in ``work``; what it found (work/result.json)."""
    (work / "spec.json").write_text(json.dumps(spec))
    (work / "tmp").mkdir()
    env = {**os.environ, "OPENKVS_URL": server.url, "OPENKVS_TOKEN": server.token, "WORK": str(work),
           "FIREFOX": FIREFOX, "TMPDIR": str(work / "tmp")}  # the browser's throwaway profile goes in work/tmp
    # In a process group of its own, so that should it hang, the browser it started ends with it.
    proc = subprocess.Popen([node, "console.mjs", mode], cwd=JS_DIR, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
    (work / "node.log").write_text(stdout + stderr)
    assert proc.returncode == 0, f"stdout:\n{stdout}\nstderr:\n{stderr[-6000:]}\nserver log:\n{server.log()[-3000:]}"
    assert f"{mode.upper()} OK" in stdout
    result: dict[str, Any] = json.loads((work / "result.json").read_text())
    assert result["browser"].lower().startswith("firefox/"), result["browser"]
    assert result["pageErrors"] == []  # no script error in the console's own code, in Firefox
    return result


def screenshots(work: Path) -> list[str]:
    shots = sorted((work / "screenshots").glob("*.png"))
    assert all(p.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") and p.stat().st_size > 1000 for p in shots)
    return sorted(p.stem for p in shots)


def test_a_user_walks_through_the_console_in_firefox(sqlite_server: Server, node: str, tmp_path: Path) -> None:
    """Sign in, create a store, upload three files, see their sizes, preview JSON, text and an image, download a
    record and the ZIP, filter by prefix, copy a signed link and open it signed out, delete a record, check a
    phone's screen, delete the store, sign out (console.mjs walk)."""
    name = "fox-" + secrets.token_hex(3)
    files = {
        "report.json": json.dumps({"title": "Hello", "items": [1, 2, 3], "nested": {"deep": True}}).encode(),
        "notes.txt": "first line\nsecond line, ünïcode\n".encode(),
        "shot.png": png(7, 5),
    }
    (tmp_path / "files").mkdir()
    for file_name, body in files.items():
        (tmp_path / "files" / file_name).write_bytes(body)

    result = run(node, "walk", sqlite_server, tmp_path, {"name": name, "files": list(files)})

    # What Firefox downloaded: the record, and the whole store as ZIP (every record, byte for byte).
    downloads = tmp_path / "downloads"
    assert (downloads / "notes.txt").read_bytes() == files["notes.txt"]
    archive = zipfile.ZipFile(downloads / f"{name}.zip")
    assert {n: archive.read(n) for n in archive.namelist()} == files
    assert archive.testzip() is None
    # The ZIP link while filtered by prefix: only what the filter showed.
    filtered = zipfile.ZipFile(io.BytesIO((tmp_path / "filtered.zip").read_bytes()))
    assert filtered.namelist() == ["notes.txt"] and filtered.read("notes.txt") == files["notes.txt"]
    # The signed link holds no token; the store is gone, and so is what the link gave.
    assert "signature=" in result["link"] and sqlite_server.token not in result["link"]
    with sqlite_server.client() as api:
        assert api.get(f"/v2/key-value-stores/~{name}").status_code == 404
    with sqlite_server.anon() as anon:
        assert anon.get(result["link"]).status_code == 404
    assert screenshots(tmp_path) == sorted(
        ["stores", "store", "preview-json", "preview-image", "signed-link", "store-phone"])


def test_stored_markup_runs_nothing_and_the_csp_holds_in_firefox(sqlite_server: Server, node: str, tmp_path: Path) -> None:
    """Stored HTML and SVG with scripts, previewed, run none (a marker stays unset); markup in a content type, a
    JSON record and a fake PDF stays text; an inline script, an inline style and a request to another origin are
    refused by the console's Content-Security-Policy, and Firefox reports each (console.mjs safety)."""
    name = "foxsafe-" + secrets.token_hex(3)
    with sqlite_server.client() as api:
        api.post(f"/v2/key-value-stores?name={name}").raise_for_status()
        base = f"/v2/key-value-stores/~{name}/records"
        for key, body, kind in [
            ("page.html", HTML, "text/html; charset=utf-8"),
            ("drawing.svg", SVG, "image/svg+xml"),
            ("odd", IMG, ODD_TYPE),
            ("data.json", json.dumps({IMG: IMG}), "application/json"),
            ("fake.pdf", HTML, "application/pdf"),
        ]:
            api.put(f"{base}/{key}", content=body.encode(), headers={"content-type": kind}).raise_for_status()
    other = f"http://127.0.0.1:{free_port()}/"  # another origin (another port): the page may not reach it
    spec = {"name": name, "html": HTML, "svg": SVG, "img": IMG, "oddType": ODD_TYPE, "otherOrigin": other}

    result = run(node, "safety", sqlite_server, tmp_path, spec)

    directives = sorted(v["directive"] for v in result["csp"]["violations"])
    assert any(d.startswith("script-src") for d in directives) and any(d.startswith("style-src") for d in directives)
    assert "connect-src" in directives
    reported = result["cspConsole"]  # and in the browser's console, each with the directive that refused it
    assert any("script-src" in e for e in reported) and any("style-src" in e for e in reported)
    assert any("connect-src" in e for e in reported)
    assert screenshots(tmp_path) == ["html-sandboxed", "svg-image"]
