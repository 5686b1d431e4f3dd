"""Instructions per record GET of a served process (``openkvs serve`` under callgrind), what bench/cg_get.py does
not count: the HTTP protocol (openkvs/server.py), the event loop, the access log's writes, the timers. One
keep-alive connection from this process; 200 GETs of warm-up, 200 with instrumentation on, then a dump
(``callgrind_control -d``), N more GETs and a second dump: that dump's total / N. Arguments: N [bare|bare-ours]
[tuned]; env SERVE_ARGS: more options for ``openkvs serve``; the defaults as bench/harness.py runs them (rate limits raised above the load) unless ``tuned``
(rate limits off, no access log). env KEYS: how many records the GETs go round (1: the storage's flush of
access counters every 2 s, which makes the kept store look-ups be read again, costs once per flush, not once per
key per flush: under callgrind a GET takes ~25 ms, so 100 keys made most GETs miss, which a served process at
full speed does not see). Prints the count a GET and leaves the dump for callgrind_annotate:

    PYTHONPATH=$PWD .venv/bin/python -m bench.cg_served 400          # then callgrind_annotate OUT.2
"""
import asyncio
import glob
import http.client
import os
import subprocess
import sys
import tempfile
import time

from bench import harness as h

KEYS = int(os.environ.get("KEYS", "1"))
N = int(sys.argv[1]) if len(sys.argv) > 1 else 400
WHAT = sys.argv[2] if len(sys.argv) > 2 and sys.argv[2].startswith("bare") else "openkvs"
TUNED = "tuned" in sys.argv[2:]


async def _setup(data_dir: str) -> tuple[str, str]:
    from openkvs import auth
    from openkvs.storage.sqlite import SQLiteStorage
    storage = SQLiteStorage(data_dir, background=False)
    await storage.open()
    user = await storage.create_user("bench")
    token = auth.new_token()
    await storage.add_token(user.id, auth.hash_token(token))
    store = await storage.create_store(user.id, "bench", None, auth.new_signing_key())
    for i in range(100):
        await storage.put_record(store.id, f"k{i:04d}", h.Body(b"r" * 1024), "application/octet-stream", None)
    await storage.aclose()
    return store.id, token


def main() -> None:
    out = tempfile.mkdtemp(prefix="okvs-cgs-")
    port = h.free_port()
    py = sys.executable
    if WHAT == "openkvs":
        store, token = asyncio.run(_setup(os.path.join(out, "data")))
        cmd = [py, "-m", "openkvs", "serve", "--port", str(port), "--data-dir", os.path.join(out, "data")]
        if TUNED:
            cmd += ["--rate-limits", "off", "--log-level", "warning"]
        else:
            cmd += ["--rate-limit-user-per-minute", "1000000000", "--rate-limit-store-per-second", "1000000000",
                    "--rate-limit-records-per-second", "1000000000"]
        cmd += os.environ.get("SERVE_ARGS", "").split()  # more of ``openkvs serve``'s options (last one wins)
        paths = [f"/v2/key-value-stores/{store}/records/k{i % KEYS:04d}" for i in range(100)]
        headers = {"Authorization": f"Bearer {token}"}
    else:
        cmd = [py, "-m", "uvicorn", "bench.bare_app:app", "--port", str(port), "--log-level", "warning",
               "--no-server-header", "--no-proxy-headers", "--no-access-log", "--app-dir", os.getcwd()]
        if WHAT == "bare-ours":
            cmd += ["--http", "openkvs.server:HttpProtocol"]
        paths = [f"/v2/key-value-stores/x/records/k{i:04d}" for i in range(100)]
        headers = {}
    cg = os.path.join(out, "cg.out")
    proc = subprocess.Popen(["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={cg}", *cmd],
                            stdout=subprocess.DEVNULL, stderr=open(os.path.join(out, "stderr"), "wb"))
    deadline = time.monotonic() + 300
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            conn.request("GET", paths[0], headers=headers)
            conn.getresponse().read()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise
            time.sleep(0.5)

    def gets(n: int) -> None:
        for i in range(n):
            conn.request("GET", paths[i % 100], headers=headers)
            r = conn.getresponse()
            r.read()
            assert r.status == 200, r.status

    gets(200)
    subprocess.run(["callgrind_control", "-i", "on", str(proc.pid)], capture_output=True, check=True)
    gets(200)
    subprocess.run(["callgrind_control", "-d", str(proc.pid)], capture_output=True, check=True)
    gets(N)
    subprocess.run(["callgrind_control", "-d", str(proc.pid)], capture_output=True, check=True)
    proc.terminate()
    proc.wait()
    dumps = sorted(glob.glob(cg + ".*"), key=lambda p: int(p.rsplit(".", 1)[1]))
    last = dumps[1] if len(dumps) > 1 else dumps[-1]
    total = 0
    with open(last) as f:
        for line in f:
            if line.startswith("summary:") or line.startswith("totals:"):
                total = int(line.split()[1])
    print(f"{WHAT}{' tuned' if TUNED else ''}: {total / N:,.0f} instructions a GET ({N} GETs); dump {last}")


if __name__ == "__main__":
    main()
