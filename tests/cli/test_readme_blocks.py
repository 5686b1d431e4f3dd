"""The README's shell and Python blocks, run as a newcomer would (in the order written, in one folder) against a
live server: every command in them works as shown."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

README = (Path(__file__).parent.parent.parent / "README.md").read_text()


def block(after: str, lang: str) -> str:
    start = README.index(after)
    m = re.compile(rf"```{lang}\n(.*?)```", re.S).search(README, start)
    assert m is not None, after
    return m.group(1)


def live(text: str, server: Any) -> str:
    return text.replace("okvs_...", server.token).replace("http://127.0.0.1:8000", server.url)


def bash(script: str, server: Any, cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENKVS_", "APIFY_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"  # as after source .venv/bin/activate
    out = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=cwd, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def test_the_readme_blocks_run_as_written(server: Any, tmp_path: Path) -> None:
    curl = live(block("## Try it with curl", "sh"), server)
    resume = live(block("**`curl -C -` alone is not safe**", "sh"), server)
    transfer = live(block("## Transfer files with the command line", "sh"), server)
    out = bash(curl + resume + transfer, server, tmp_path)
    assert '{"title": "hello"}' in out and '"key":"img-home"' in out.replace(" ", "")
    assert (tmp_path / "shots.zip").exists() and (tmp_path / "storage" / "key_value_stores" / "shots").is_dir()
    with server.client() as c:
        png = c.get("/v2/key-value-stores/~shots/records/img-home")
        assert png.content == b"\x89PNG\r\n\x1a\n" and png.headers["content-type"] == "image/png"
        assert c.get("/v2/key-value-stores/~shots/records/s-home.png").status_code == 200


def test_the_readme_python_example_prints_what_it_says(server: Any, tmp_path: Path) -> None:
    pytest.importorskip("apify_client")
    code = live(block("## Use it from Python", "python"), server)
    (tmp_path / "try.py").write_text(code)
    out = subprocess.run([sys.executable, "try.py"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    expected = [re.search(r"# (.*)$", line).group(1) for line in code.splitlines() if line.startswith("print(")]
    assert lines[:2] == expected[:2]  # the third is a URL with a fresh signature
    assert lines[2].startswith(server.url) and "signature=" in lines[2]
