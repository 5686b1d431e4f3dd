"""Instructions per record write at the storage level: N put_record of 100 bytes (each key written twice: new, then
an overwrite) and N/2 delete_record, SQLite (in this process, so its engine counts too) or PostgreSQL (PG=1: only
the client side counts). Run under callgrind with instrumentation off; it is on for those operations only:

    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=/dev/null \\
        .venv/bin/python bench/cg_put.py 200        # read "Collected"; PYTHONPATH=TREE measures TREE's openkvs
"""

import asyncio
import os
import secrets
import subprocess
import sys
import tempfile

sys.path.insert(0, os.getcwd())

import openkvs
from bench.harness import Body
from openkvs.storage.base import Storage

N = int(sys.argv[1])
PG_URL = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


async def main() -> None:
    schema = "bench_cgp_" + secrets.token_hex(4)
    if os.environ.get("PG"):
        from openkvs.storage.postgres import PostgresStorage

        st: Storage = PostgresStorage(PG_URL, namespace=schema)
    else:
        from openkvs.storage.sqlite import SQLiteStorage

        st = SQLiteStorage(tempfile.mkdtemp(prefix="okvs-cgp-"), background=False)
    await st.open()
    user = await st.create_user("u")
    store = await st.create_store(user.id, "b", None, "k" * 32)
    for i in range(50):
        await st.put_record(store.id, f"warm-{i}", Body(b"x" * 100), "text/plain", None)
    subprocess.run(["callgrind_control", "-i", "on", str(os.getpid())], capture_output=True)
    for i in range(N):
        await st.put_record(store.id, f"k-{i // 2}", Body(b"x" * 100), "text/plain", None)
    for i in range(N // 2):
        await st.delete_record(store.id, f"k-{i}")
    subprocess.run(["callgrind_control", "-i", "off", str(os.getpid())], capture_output=True)
    found = await st.get_store(store.id)
    print(openkvs.__file__, "records:", getattr(found.stats, "record_count", "-") if found else None, flush=True)
    await st.aclose()
    if os.environ.get("PG"):
        await PostgresStorage(PG_URL, namespace=schema).drop()
    os._exit(0)


asyncio.run(main())
