"""python -m bench [records] [download] [nodes] [ratelimits] [transfer] [exports] [queues] [bucket] [datasets] [--quick] [--backends sqlite,postgres] [--fresh]"""

from __future__ import annotations

import argparse
import shutil
import sys
import time

from bench import harness as h

NAMES = ("records", "download", "nodes", "ratelimits", "accesslog", "transfer", "exports", "queues", "bucket", "datasets")


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("names", nargs="*", help=f"benchmarks to run: {', '.join(NAMES)} (default: all)")
    p.add_argument("--quick", action="store_true", help="smaller data and shorter runs (a few minutes in all)")
    p.add_argument("--backends", default="sqlite,postgres", help="comma-separated: sqlite,postgres")
    p.add_argument("--fresh", action="store_true", help="rebuild the SQLite data sets in bench/.data/")
    p.add_argument("--keep-postgres", action="store_true", help="keep the bench_* PostgreSQL schemas afterwards")
    args = p.parse_args()
    names = args.names or list(NAMES)
    for n in names:
        if n not in NAMES:
            p.error(f"unknown benchmark {n!r} (choose from {', '.join(NAMES)})")
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    for b in backends:
        if b not in ("sqlite", "postgres"):
            p.error(f"unknown backend {b!r}")
    if args.fresh:
        shutil.rmtree(h.DATA, ignore_errors=True)
    t0 = time.monotonic()
    try:
        for name in names:
            h.log(f"== {name} ({'quick' if args.quick else 'full'}; backends {','.join(backends)})")
            module = __import__(f"bench.{name}", fromlist=["run"])
            module.run(backends, args.quick)
    finally:
        if "postgres" in backends and not args.keep_postgres:
            h.drop_postgres_datasets()
    h.log(f"done in {time.monotonic() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
