"""docs/sdk.md as a newcomer follows it: its environment block pasted into a shell, then "A first Actor" (the input
curl, and actor.py run with the SDK), against a live server: the Actor prints what the doc's comments say."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.cli.test_readme_blocks import bash, live

SDK = (Path(__file__).parent.parent.parent / "docs" / "sdk.md").read_text()


def block(after: str, lang: str) -> str:
    m = re.compile(rf"```{lang}\n(.*?)```", re.S).search(SDK, SDK.index(after))
    assert m is not None, after
    return m.group(1)


def test_the_sdk_doc_first_actor_runs_as_written(server: Any, tmp_path: Path) -> None:
    pytest.importorskip("apify")
    actor = block("## A first Actor", "python")
    (tmp_path / "actor.py").write_text(actor)
    run = block("## A first Actor", "sh")
    # the SDK is already in the test venv, whose python is first on bash()'s PATH (as after activating .venv)
    install = ".venv/bin/pip install 'apify>=4,<5'\n"
    assert install in run
    run = run.replace(install, "").replace(".venv/bin/python", "python")
    out = bash(live(block("## Environment", "sh"), server) + live(run, server), server, tmp_path)
    # curl's answer has no newline of its own: the Actor's first line follows it on the same line
    assert out.startswith("{}")
    lines = out.removeprefix("{}").splitlines()
    expected = [re.search(r"# (\S.*?)( \(first run\))?$", line).group(1)  # type: ignore[union-attr]
                for line in actor.splitlines() if line.strip().startswith("print(")]
    assert lines[-len(expected):] == expected
    with server.client() as c:
        kvs = c.get("/v2/key-value-stores/~my-actor").json()["data"]
        assert c.get(f"/v2/key-value-stores/{kvs['id']}/records/OUTPUT").json() == {"greeting": "hello openkvs"}
        assert c.get("/v2/datasets/~my-actor").json()["data"]["itemCount"] == 2
