"""Running an unmodified Actor script (the `apify` SDK, Crawlee) against an openkvs server, and reading a dataset back
through every export format with each format's own reader: shared by test_sdk.py, test_sdk_datasets.py and
test_crawlee_crawler.py (the ``run_actor`` fixture in conftest.py)."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

    from tests.conftest import Server


def sdk_env(server: Server, default_store_id: str) -> dict[str, str]:
    """The environment of docs/sdk.md, on top of a clean copy of ours (no stray APIFY_/ACTOR_ settings)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("APIFY_", "ACTOR_", "CRAWLEE_"))}
    env.update(
        {
            "APIFY_IS_AT_HOME": "1",
            "APIFY_TOKEN": server.token,
            "APIFY_API_BASE_URL": server.url,
            "APIFY_API_PUBLIC_BASE_URL": server.url,
            "APIFY_DEFAULT_KEY_VALUE_STORE_ID": default_store_id,
            # At home, the SDK's charging manager reads pricing from these two instead of calling
            # GET /v2/actor-runs/{APIFY_ACTOR_RUN_ID}. The counts must be a non-empty object: "{}" reads as unset.
            "APIFY_ACTOR_PRICING_INFO": json.dumps({"pricingModel": "FREE"}),
            "APIFY_CHARGED_ACTOR_EVENT_COUNTS": json.dumps({"apify-actor-start": 0}),
        }
    )
    return env


@dataclass
class ActorRun:
    report: dict[str, Any]  # what the script printed on its last "REPORT {json}" line
    requests: list[str]  # the request lines of the server's access log ("GET /v2/... HTTP/1.1")


def run_actor(server: Server, tmp_path: Path, script: str, store_id: str, dataset_id: str | None = None,
              timeout: float = 180) -> ActorRun:
    """Run ``script`` as an Actor with docs/sdk.md's environment (default store ``store_id``, default dataset
    ``dataset_id``) in an empty working directory, which must stay without a local ``storage`` folder: the SDK
    must not fall back to local storage. The script must exit 0 and print a report."""
    env = sdk_env(server, store_id)
    if dataset_id is not None:
        env["APIFY_DEFAULT_DATASET_ID"] = dataset_id
    path = tmp_path / "main.py"
    path.write_text(script)
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    out = subprocess.run([sys.executable, str(path)], env=env, cwd=workdir, capture_output=True, text=True,
                         timeout=timeout)
    assert out.returncode == 0, f"stdout:\n{out.stdout}\nstderr:\n{out.stderr}\nserver log:\n{server.log()[-4000:]}"
    lines = [line for line in out.stdout.splitlines() if line.startswith("REPORT ")]
    assert lines, out.stdout + out.stderr
    assert "storage" not in [p.name for p in workdir.iterdir()]  # nothing written locally
    requests = [line.split('"')[1] for line in server.log().splitlines() if '"' in line and " HTTP/1.1" in line]
    return ActorRun(json.loads(lines[-1].removeprefix("REPORT ")), requests)


@dataclass
class Exports:
    """A dataset's items as each export format gives them, each parsed by its own reader."""

    json: list[dict[str, Any]]
    jsonl: list[dict[str, Any]]
    csv: list[dict[str, str]]  # csv.DictReader's rows (the BOM first is for Excel)
    xml: list[ET.Element]  # the root's children, one per item
    rss: list[ET.Element]  # the channel's <item>s
    html: str
    xlsx: list[list[Any]] | None  # the first sheet's rows by openpyxl (None without it: then only a ZIP is checked)


def read_exports(client: httpx.Client, dataset_id: str, **params: str) -> Exports:
    url = f"/v2/datasets/{dataset_id}/items"

    def get(fmt: str) -> bytes:
        r = client.get(url, params={**params, "format": fmt})
        assert r.status_code == 200, (fmt, r.text)
        return r.content

    channel = ET.fromstring(get("rss")).find("channel")
    assert channel is not None
    xlsx = get("xlsx")
    assert xlsx[:2] == b"PK"
    try:
        import openpyxl
    except ImportError:
        rows = None
    else:
        sheet = openpyxl.load_workbook(io.BytesIO(xlsx), read_only=True).worksheets[0]
        rows = [list(r) for r in sheet.iter_rows(values_only=True)]
    return Exports(
        json=json.loads(get("json")),
        jsonl=[json.loads(line) for line in get("jsonl").decode().splitlines()],
        csv=list(csv.DictReader(io.StringIO(get("csv").decode("utf-8-sig")))),
        xml=list(ET.fromstring(get("xml"))),
        rss=channel.findall("item"),
        html=get("html").decode(),
        xlsx=rows,
    )
