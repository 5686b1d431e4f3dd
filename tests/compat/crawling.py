"""What the crawler tests share: the Actor's environment (docs/sdk.md's), starting the crawler Actor
(crawl_actor.py) as a process and reading its report, and what a user checks afterwards: the items of the
``crawl-results`` dataset by page, and the queue's counters."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from tests.conftest import Server

ACTOR = Path(__file__).with_name("crawl_actor.py")


def actor_env(server: Server, worker: str, **crawl: str) -> dict[str, str]:
    """docs/sdk.md's environment (no run ID: each crawler then sends a random clientKey of its own), and the
    crawl's settings (see crawl_actor.py). The default storages' IDs name nothing yet: the SDK creates them."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("APIFY_", "ACTOR_", "CRAWLEE_")) and k.lower() not in ("http_proxy", "https_proxy",
                                                                                    "all_proxy")}
    env.update({
        "APIFY_IS_AT_HOME": "1",
        "APIFY_TOKEN": server.token,
        "APIFY_API_BASE_URL": server.url,
        "APIFY_API_PUBLIC_BASE_URL": server.url,
        "ACTOR_DEFAULT_KEY_VALUE_STORE_ID": f"kvs{worker}".ljust(17, "0")[:17],
        "ACTOR_DEFAULT_REQUEST_QUEUE_ID": f"rq{worker}".ljust(17, "0")[:17],
        "ACTOR_DEFAULT_DATASET_ID": f"ds{worker}".ljust(17, "0")[:17],
        "APIFY_ACTOR_PRICING_INFO": json.dumps({"pricingModel": "FREE"}),
        "APIFY_CHARGED_ACTOR_EVENT_COUNTS": json.dumps({"apify-actor-start": 0}),
        "NO_PROXY": "127.0.0.1,localhost",
        "CRAWL_WORKER": worker,
        **crawl,
    })
    if level := os.environ.get("OPENKVS_TEST_CRAWL_LOG_LEVEL"):  # diagnostics: e.g. DEBUG, to see why a crawl hangs
        env["CRAWLEE_LOG_LEVEL"] = level
    return env


class Crawler(subprocess.Popen[str]):
    """A crawler process whose output goes to the file ``output`` (not a pipe: it outlives a crawl that hangs, for
    the post-mortem, beside the server's log in the test's temporary directory)."""

    output: Path


def start_crawler(server: Server, tmp_path: Path, worker: str, **crawl: str) -> Crawler:
    workdir = tmp_path / f"cwd-{worker}"  # empty: the SDK must not fall back to local storage
    workdir.mkdir()
    output = tmp_path / f"crawler-{worker}.log"
    with open(output, "w") as out:
        proc = Crawler([sys.executable, str(ACTOR)], env=actor_env(server, worker, **crawl), cwd=workdir,
                       stdout=out, stderr=subprocess.STDOUT, text=True)
    proc.output = output
    return proc


def finish(proc: Crawler, server: Server, timeout: float = 400) -> dict[str, Any]:
    output = proc.output
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()  # a hung crawler: its output and the server's log stay in the test's directory
        proc.wait()
        raise AssertionError(f"crawler timed out after {timeout} s (output: {output}, server log: "
                             f"{server.log_path})\n{output.read_text()[-3000:]}") from None
    out = output.read_text()
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out[-6000:]}\nserver log:\n{server.log()[-3000:]}"
    done = [line for line in out.splitlines() if line.startswith("DONE ")]
    assert done, out[-6000:]
    return json.loads(done[-1].removeprefix("DONE "))  # type: ignore[no-any-return]


def finish_all(procs: list[Crawler], server: Server, timeout: float = 400) -> list[dict[str, Any]]:
    """``finish`` of each; when one fails, the others are killed too (no crawler outlives its test)."""
    try:
        return [finish(p, server, timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def results(c: httpx.Client) -> list[dict[str, Any]]:
    """Every item of the ``crawl-results`` dataset, page after page of the items endpoint."""
    dataset = c.get("/v2/datasets/~crawl-results")
    assert dataset.status_code == 200, dataset.text
    url = f"/v2/datasets/{dataset.json()['data']['id']}/items"
    items: list[dict[str, Any]] = []
    while True:
        page = c.get(url, params={"offset": len(items), "limit": 1000})
        assert page.status_code == 200, page.text
        items += page.json()
        if len(items) >= int(page.headers["x-apify-pagination-total"]):
            return items


def handled_pages(c: httpx.Client) -> dict[str, list[str]]:
    """The workers that pushed an item for each page (by the page's number), from the dataset."""
    found: dict[str, list[str]] = {}
    for item in results(c):
        found.setdefault(item["url"].rstrip("/").rsplit("/", 1)[-1], []).append(item["worker"])
    return found


def queue_counts(c: httpx.Client, queue_id: str) -> tuple[int, int, int]:
    q = c.get(f"/v2/request-queues/{queue_id}").json()["data"]
    return q["totalRequestCount"], q["handledRequestCount"], q["pendingRequestCount"]
