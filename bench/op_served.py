"""Python bytecodes per served record GET, by function: where a served GET's Python time goes, for a machine too busy
for timings (bench/cg_served.py counts instructions, all of them, without saying whose). ``openkvs serve`` (or the
bare app under uvicorn) runs with a tracer that counts each frame's bytecodes (``f_trace_opcodes``), switched on
(SIGUSR1) after 200 GETs of warm-up and read (SIGUSR2) after N more on one keep-alive connection, all to one key.
A bytecode is not an instruction (a C call inside one can cost thousands), but the table shows which Python code
runs how often. Arguments: N [bare] [tuned]; env TOP: rows shown.

    PYTHONPATH=$PWD .venv/bin/python -m bench.op_served 400
"""
import asyncio
import collections
import http.client
import os
import runpy
import signal
import subprocess
import sys
import tempfile
import time


def _traced(out: str, argv: list[str]) -> None:
    """Run module ``argv[0]`` (with ``argv`` as sys.argv) with the tracer; its table goes to ``out``."""
    counts: collections.Counter[tuple[str, int, str]] = collections.Counter()
    calls: collections.Counter[tuple[str, int, str]] = collections.Counter()

    def tracer(frame, event, arg):  # type: ignore[no-untyped-def]
        code = frame.f_code
        where = (code.co_filename, code.co_firstlineno, code.co_qualname)
        if event == "call":
            frame.f_trace_opcodes = True
            frame.f_trace_lines = False
            calls[where] += 1
        elif event == "opcode":
            counts[where] += 1
        return tracer

    def on(*_: object) -> None:
        counts.clear()
        calls.clear()
        sys.settrace(tracer)

    def dump(*_: object) -> None:
        sys.settrace(None)
        with open(out, "w") as f:
            for (path, line, name), n in counts.most_common():
                f.write(f"{n}\t{calls[(path, line, name)]}\t{name}\t{path}:{line}\n")

    signal.signal(signal.SIGUSR1, on)
    signal.signal(signal.SIGUSR2, dump)
    sys.argv = argv
    runpy.run_module(argv[0], run_name="__main__", alter_sys=True)


def main() -> None:
    from bench import harness as h
    from bench.cg_served import _setup

    n = int(sys.argv[1])
    out = tempfile.mkdtemp(prefix="okvs-op-")
    port = str(h.free_port())
    if "bare" in sys.argv[2:]:
        cmd = ["uvicorn", "bench.bare_app:app", "--port", port, "--log-level", "warning", "--no-server-header",
               "--no-proxy-headers", "--no-access-log", "--app-dir", os.getcwd()]
        path, headers = "/v2/key-value-stores/x/records/k0000", {}
    else:
        store, token = asyncio.run(_setup(os.path.join(out, "data")))
        cmd = ["openkvs", "serve", "--port", port, "--data-dir", os.path.join(out, "data")]
        if "tuned" in sys.argv[2:]:
            cmd += ["--rate-limits", "off", "--log-level", "warning"]
        else:  # as bench/harness.py runs the defaults: rate limits raised above the load
            cmd += ["--rate-limit-user-per-minute", "1000000000", "--rate-limit-store-per-second", "1000000000",
                    "--rate-limit-records-per-second", "1000000000"]
        path, headers = f"/v2/key-value-stores/{store}/records/k0000", {"Authorization": f"Bearer {token}"}
    table = os.path.join(out, "ops.tsv")
    proc = subprocess.Popen([sys.executable, "-m", "bench.op_served", "--traced", table, *cmd],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", int(port), timeout=60)
            conn.request("GET", path, headers=headers)
            conn.getresponse().read()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise
            time.sleep(0.3)

    def gets(count: int) -> None:
        for _ in range(count):
            conn.request("GET", path, headers=headers)
            r = conn.getresponse()
            r.read()
            assert r.status == 200, r.status

    gets(200)
    os.kill(proc.pid, signal.SIGUSR1)
    time.sleep(0.2)
    gets(n)
    os.kill(proc.pid, signal.SIGUSR2)
    while not os.path.exists(table):
        time.sleep(0.1)
    time.sleep(0.5)
    proc.terminate()
    proc.wait()
    rows = [line.rstrip("\n").split("\t") for line in open(table)]
    print(f"{sum(int(r[0]) for r in rows) / n:,.0f} bytecodes a GET ({n} GETs); {table}")
    print("bytecodes  calls  (a GET)")
    for ops, calls, name, where in rows[: int(os.environ.get("TOP", "30"))]:
        print(f"{int(ops) / n:9.1f} {int(calls) / n:6.2f}  {name}  {where.rsplit('site-packages/', 1)[-1]}")


if __name__ == "__main__":
    if sys.argv[1] == "--traced":
        _traced(sys.argv[2], sys.argv[3:])
    else:
        main()
