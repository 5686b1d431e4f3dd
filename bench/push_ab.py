"""Dataset push over HTTP, this checkout against another, in turns (bench/datasets.py's push part alone): items/s
of batches of 1, 100 and 1,000 items, each against the same body PUT as one key-value store record on the same
server (issue 13's goal: the 1,000-item batch at >= 0.5 of the record). ``--other DIR``: a checkout served through
PYTHONPATH (``git archive main | tar -x -C DIR``).

    .venv/bin/python -m bench.push_ab --backend sqlite --other /tmp/main-src --rounds 2 --seconds 5
"""

from __future__ import annotations

import argparse
import os
import subprocess
from typing import Any

from bench import harness as h
from bench.datasets import push_rates


def _serve(kind: str, checkout: str | None, label: str) -> tuple[h.Server, str]:
    """A fresh server of ``checkout`` (None: this one) and a token of a new user on it."""
    backend = h.Backend(kind, f"push-ab-{label}")
    backend.drop()
    saved = dict(os.environ)
    if checkout:
        os.environ["PYTHONPATH"] = checkout
    try:
        srv = backend.start()
        cmd, env = backend.serve_cmd(0)
        storage = cmd[-2:]  # --data-dir DIR or --database-url URL (serve_cmd ends with them)
        out = subprocess.run([h.OPENKVS, "users", "create", "bench", *storage], env={**os.environ, **env},
                             capture_output=True, text=True, check=True)
        return srv, out.stdout.strip().splitlines()[-1]
    finally:
        os.environ.clear()
        os.environ.update(saved)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", default="sqlite", choices=("sqlite", "postgres"))
    p.add_argument("--other", help="another checkout of openkvs")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--seconds", type=float, default=5.0)
    args = p.parse_args()
    subjects: list[tuple[str, str | None]] = [("this", None)] + ([("other", args.other)] if args.other else [])
    for r in range(args.rounds):
        for label, checkout in subjects:
            srv, token = _serve(args.backend, checkout, label)
            try:
                rows: list[dict[str, Any]] = push_rates(srv, token, quick=True, seconds=args.seconds)
            finally:
                srv.stop()
            load = os.getloadavg()[0]
            print(f"round {r} {label:5s} load {load:5.1f} " + "  ".join(
                f"batch {x['batch']}: {x['items_s']} items/s vs {x['record_items_s']} = {x['ratio']:.3f}, CPU "
                f"{x['cpu_us_item']} vs {x['record_cpu_us_item']} us/item = {x['cpu_ratio']:.3f}" for x in rows
            ), flush=True)


if __name__ == "__main__":
    main()
