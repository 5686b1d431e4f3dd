"""Fixtures shared by the end-to-end tests: an openkvs server on a free port, on each backend. Shared and per-test
servers run in this process (tests/inprocess.py: the real app, its requests without a socket, plus a real socket)
unless a test needs an ``openkvs serve`` process (``pytest.mark.server_process``, or make_server/start_server)."""

from __future__ import annotations

import logging
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, settings

# No test may depend on an idle machine: Hypothesis's default 200 ms deadline per example and its "too slow" health
# check measure the machine, not the code. Tests that set their own settings keep them.
settings.register_profile("openkvs", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("openkvs")

# Two strengths of the property tests. "full": every example count as written (`make test-all`, so CI). "quick"
# (`make test`): a tenth of each, at least QUICK_EXAMPLES, and QUICK_EXAMPLES where a test sets none (Hypothesis's
# default is 100); every property still runs, on fewer cases. OPENKVS_TEST_EXAMPLES=quick|full chooses (the
# Makefile sets it); unset, the quick tier's -m "not slow" chooses quick and any other run full.
QUICK_EXAMPLES = 10
settings.register_profile("openkvs-quick", settings.get_profile("openkvs"), max_examples=QUICK_EXAMPLES)
_strength: list[str] = []  # "quick" or "full", once pytest_configure has chosen


def examples(full: int) -> int:
    """A property test's ``max_examples``: ``full`` in the whole suite, a tenth (at least QUICK_EXAMPLES) in the
    quick tier. Module level, so read when a test module is imported (after pytest_configure)."""
    if _strength == ["quick"]:
        return min(full, max(QUICK_EXAMPLES, full // 10))
    return full


def pytest_configure(config: pytest.Config) -> None:
    strength = os.environ.get("OPENKVS_TEST_EXAMPLES") or ("quick" if _selects_no_slow_test(config) else "full")
    if strength not in ("quick", "full"):
        raise pytest.UsageError(f"OPENKVS_TEST_EXAMPLES={strength!r}: quick or full")
    _strength[:] = [strength]
    settings.load_profile("openkvs-quick" if strength == "quick" else "openkvs")

IN_CI = bool(os.environ.get("CI"))
DATABASE_URL = os.environ.get("OPENKVS_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("OPENKVS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
# The S3 server of the "postgres+s3" and "sqlite+s3" backends: deploy/s3-swift.sh start (CI's .ci/run starts it)
S3_ENDPOINT = os.environ.get("OPENKVS_TEST_S3_ENDPOINT", "http://127.0.0.1:7480")
S3_BUCKET = os.environ.get("OPENKVS_TEST_S3_BUCKET", "openkvs-test")
S3_ENV = {
    "AWS_ACCESS_KEY_ID": os.environ.get("OPENKVS_TEST_S3_ACCESS_KEY", "test:tester"),
    "AWS_SECRET_ACCESS_KEY": os.environ.get("OPENKVS_TEST_S3_SECRET_KEY", "testing"),
    "AWS_REGION": os.environ.get("OPENKVS_TEST_S3_REGION", "us-east-1"),
}
_s3_checked: list[bool] = []
# One TLS context for the clients the tests make (``verify=TLS``): httpx loads certifi's CA bundle into a new context
# for every Client, about 20 ms of CPU, even for http:// URLs; the suite makes thousands of clients (a starting
# server was polled with a new one every 0.1 s: a tenth of the quick tier's CPU).
TLS = httpx.create_ssl_context()


# -- the two tiers: `make test` runs -m "not slow", `make test-all` everything ----------------------------------------


def _selects_no_slow_test(config: pytest.Config) -> bool:
    """Whether the -m expression leaves out every test marked ``slow``, whatever its other marks: false for every
    truth value of the other names in it while ``slow`` is true (``not slow`` yes; ``slow``, ``not slow or
    postgres`` and no -m at all no). An expression this cannot read counts as selecting slow tests."""
    import itertools
    import re

    from _pytest.mark.expression import Expression

    markexpr = config.getoption("markexpr", "") or ""
    if not markexpr.strip():
        return False
    names = sorted(set(re.findall(r"[\w.+-]+", markexpr)) - {"and", "or", "not", "slow", "True", "False", "None"})
    if len(names) > 10:
        return False
    try:
        expr = Expression.compile(markexpr)
        for values in itertools.product((False, True), repeat=len(names)):
            truth = {"slow": True, **dict(zip(names, values, strict=True))}
            if expr.evaluate(lambda name, /, truth=truth, **kw: truth.get(name, False)):  # type: ignore[misc]
                return False
    except Exception:
        return False
    return True


class _Module(pytest.Module):
    """A test module whose tests are all marked ``slow`` (``pytestmark``) yields none when -m leaves slow tests out,
    instead of yielding them to be deselected: some build their tests at collection (schemathesis generates every
    operation's cases then: a minute of CPU in each pytest process), which the quick tier need not pay for. One
    that says so in a plain ``pytestmark = ...`` line is not even imported (schemathesis, crawlee: ~0.7 s of CPU
    in each pytest process)."""

    def collect(self) -> Any:
        if _selects_no_slow_test(self.config) and _marked_slow_in_source(self.path):
            return []
        self.obj  # noqa: B018 (imports the module: its pytestmark becomes this node's marks)
        if self.get_closest_marker("slow") is not None and _selects_no_slow_test(self.config):
            return []
        return super().collect()


def _marked_slow_in_source(path: Path) -> bool:
    """Whether the module's source assigns ``pytestmark`` at its top level to ``pytest.mark.slow`` or to a list or
    tuple holding it (``pytest.mark.slow`` alone, not called)."""
    import ast

    try:
        tree = ast.parse(path.read_bytes(), str(path))
    except (OSError, SyntaxError, ValueError):
        return False  # the import says what is wrong
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets):
            marks = node.value.elts if isinstance(node.value, (ast.List, ast.Tuple)) else [node.value]
            return any(ast.unparse(m) == "pytest.mark.slow" for m in marks)
    return False


def pytest_pycollect_makemodule(module_path: Path, parent: pytest.Collector) -> pytest.Module | None:
    if module_path.name == "__init__.py":
        return None
    return _Module.from_parent(parent, path=module_path)


@pytest.fixture(autouse=True)
def _restore_environ() -> Iterator[None]:
    """Each test gets the process environment as the last one found it: ``openkvs serve`` run in process (click's
    CliRunner) writes every setting into os.environ for its workers, and a variable left there would be read by
    every later server and command in this process (it once moved in-process servers to another PostgreSQL schema
    than their users')."""
    saved = dict(os.environ)
    yield
    if os.environ != saved:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(autouse=True)
def _openkvs_logs_reach_caplog(monkeypatch: pytest.MonkeyPatch) -> None:
    """openkvs's loggers reach the root logger, where ``caplog`` listens: a server started in this process (uvicorn
    with ``openkvs.logs.log_config``) gives the ``openkvs`` logger its own handler and stops it propagating, and
    then which test file had run before in the same xdist worker decided whether a test saw a warning (CI failed
    so, and a test asserting that no warning was logged would have passed whatever happened)."""
    monkeypatch.setattr(logging.getLogger("openkvs"), "propagate", True)


def unavailable(reason: str) -> None:
    """Skip on a laptop without the service; in CI a missing service is a failure."""
    if IN_CI:
        pytest.fail(f"{reason} (CI is set, so this must not skip)")
    pytest.skip(reason)


def shared_redis_url() -> str:
    """The shared Redis's URL, once it answers a PING (else skip, or fail in CI)."""
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except redis.RedisError as exc:
        unavailable(f"Redis not reachable at {REDIS_URL} (set OPENKVS_TEST_REDIS_URL): {exc}")
    return REDIS_URL


def s3_env(prefix: str) -> dict[str, str]:
    """The settings (environment) of a server whose record bytes go to the test bucket under ``prefix``; the
    bucket is created the first time (skip, or fail in CI, if the S3 server does not answer)."""
    if not _s3_checked:
        from openkvs.storage.bucket.sigv4 import Credentials, Signer

        signer = Signer(Credentials(S3_ENV["AWS_ACCESS_KEY_ID"], S3_ENV["AWS_SECRET_ACCESS_KEY"]), S3_ENV["AWS_REGION"])
        host = httpx.URL(S3_ENDPOINT).netloc.decode()
        try:
            r = httpx.put(f"{S3_ENDPOINT}/{S3_BUCKET}", headers=signer.headers("PUT", host, f"/{S3_BUCKET}", {}),
                          timeout=10, verify=TLS)
        except httpx.TransportError as exc:
            unavailable(f"S3 not reachable at {S3_ENDPOINT} (deploy/s3-swift.sh start): {exc}")
        assert r.status_code < 300 or b"BucketAlreadyOwnedByYou" in r.content, r.text
        _s3_checked.append(True)
    # The in-process servers read the credentials from this process's environment; set on every call, since each
    # test gets the environment back as it was before it (_restore_environ).
    os.environ.update(S3_ENV)
    return {
        **S3_ENV,
        "OPENKVS_BLOB_STORE": f"s3://{S3_BUCKET}/{prefix}",
        "OPENKVS_S3_ENDPOINT": S3_ENDPOINT,
        "OPENKVS_S3_PATH_STYLE": "true",
    }


def s3_clear(prefix: str) -> None:
    """Delete every object under the test bucket's ``prefix`` (a test's leftovers: the bucket is shared)."""
    import asyncio

    from openkvs.storage.bucket.s3 import S3Bucket
    from openkvs.storage.bucket.sigv4 import Credentials

    async def go() -> None:
        creds = Credentials(S3_ENV["AWS_ACCESS_KEY_ID"], S3_ENV["AWS_SECRET_ACCESS_KEY"])
        b = S3Bucket(S3_BUCKET, endpoint=S3_ENDPOINT, region=S3_ENV["AWS_REGION"], credentials=creds, path_style=True)
        try:
            await b.delete([o.key async for o in b.list(prefix.rstrip("/") + "/")])
        finally:
            await b.aclose()

    try:
        asyncio.run(go())
    except Exception:  # best effort: the tmpfs of deploy/s3-swift.sh goes at its stop anyway
        pass


def postgres_reachable() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    """A running `openkvs serve` process."""

    url: str
    token: str
    data_dir: Path
    env: dict[str, str]
    args: list[str]
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    extra_tokens: dict[str, str] = field(default_factory=dict)

    def client(self, token: str | None = None, **kw: object) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token or self.token}"} if token != "" else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, verify=TLS, **kw)  # type: ignore[arg-type]

    def anon(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, verify=TLS)

    def socket_client(self, token: str | None = None, **kw: object) -> httpx.Client:
        """``client()`` over the server's real socket, also for a server in this process (whose ``client()`` has
        none): for a test that reads a response as it streams, or drops it halfway."""
        return Server.client(self, token, **kw)

    def cli(self, *args: str) -> str:
        """The command (``openkvs ARGS``) on this server's storage, its stdout; it must succeed. In this process
        (``cli_here``): what it prints is the same, and tests of the command line as a process start their own."""
        return self.cli_here(*args)

    def storage_args(self) -> list[str]:
        if "OPENKVS_DATABASE_URL" in self.env:
            return []
        return ["--data-dir", str(self.data_dir)]

    def cli_here(self, *args: str) -> str:
        """``cli``, run in this process (tests/clirun.py) with the server's settings and none of this process's
        others: the same command on the same storage without starting a Python process (a second or more of
        imports on a busy machine)."""
        out = self.cli_result(*args)
        assert out.returncode == 0, out.stdout + out.stderr
        return out.stdout

    def cli_result(self, *args: str) -> Any:
        """The command run as ``cli_here`` does, whatever its exit code: ``returncode``, ``stdout``, ``stderr``
        (an exception other than the command's own exit is raised, not returned)."""
        from tests.clirun import openkvs_here

        env = {k: v for k, v in self.env.items() if k.startswith("OPENKVS_")}
        return openkvs_here(*args, *self.storage_args(), env=env, keep=())

    def new_user(self, name: str) -> str:
        token = self.cli_here("users", "create", name).strip().splitlines()[-1]
        self.extra_tokens[name] = token
        return token

    def start(self) -> None:
        self.log_path = self.data_dir.parent / f"server-{secrets.token_hex(3)}.log"
        log = open(self.log_path, "wb")  # kept open for the process's life
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "openkvs", "serve", *self.args], env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        # Generous: on a loaded machine (load 25 on 2 cores) the imports alone took more than 30 s, and a server that
        # exits is reported at once below anyway.
        # Polled often at first, then every 0.1 s: a fixed 0.1 s between polls left each of the suite's server starts
        # (its imports alone are 0.35 s of CPU) idle for 0.05 s on average after it was ready.
        deadline = time.monotonic() + 180
        pause = 0.01
        with httpx.Client(timeout=1, verify=TLS) as probe:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"server exited: {self.log_path.read_text()}")
                try:
                    probe.get(self.url + "/v2/key-value-stores")
                    return
                except httpx.TransportError:
                    time.sleep(pause)
                    pause = min(pause * 1.5, 0.1)
        raise RuntimeError(f"server did not start: {self.log_path.read_text()}")

    def stop(self, kill: bool = False) -> None:
        if self.proc and self.proc.poll() is None:
            if kill:
                self.proc.kill()
            else:
                self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path else ""


def make_server(
    tmp_path: Path, backend: str, *extra: str, env_extra: dict[str, str] | None = None, in_process: bool = False,
    clock: Callable[[], float] | None = None,
) -> Server:
    """A started server with a user 'alice' (its token: ``server.token``): an ``openkvs serve`` subprocess, or with
    ``in_process`` the app in this process (tests/inprocess.py: same interface, no process start or CLI
    subprocess, requests from ``client()`` without a socket). ``clock`` (in process only): the rate limiter's time,
    a clock the test moves (tests/ratelimit/helpers.py FakeClock), so that what a burst gets through does not
    depend on how fast the machine answers."""
    if clock is not None and not in_process:
        raise ValueError("a rate-limit clock can only be given to a server in this process")
    port = free_port()
    data_dir = tmp_path / "data"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for k in list(env):
        if k.startswith("OPENKVS_") and not k.startswith("OPENKVS_TEST_"):
            del env[k]
    if backend in ("postgres", "postgres+s3"):
        if not postgres_reachable():
            unavailable("PostgreSQL is not reachable on 127.0.0.1:5432")
        from tests import pgschemas

        env["OPENKVS_DATABASE_URL"] = DATABASE_URL
        env["OPENKVS_DATABASE_SCHEMA"] = pgschemas.blocking(lambda: pgschemas.take(DATABASE_URL))
        if backend == "postgres+s3":  # a prefix of its own: the schema may have served an earlier test
            env.update(s3_env("p_" + secrets.token_hex(6)))
    if backend == "sqlite+s3":
        env.update(s3_env("l_" + secrets.token_hex(6)))
    env.update(env_extra or {})
    args = ["--port", str(port), *(["--data-dir", str(data_dir)] if backend.startswith("sqlite") else []), *extra]
    if in_process:
        from tests.inprocess import InProcessServer

        server: Server = InProcessServer(f"http://127.0.0.1:{port}", "", data_dir, env, args)
        server.rate_limit_clock = clock  # type: ignore[attr-defined]
    else:
        server = Server(f"http://127.0.0.1:{port}", "", data_dir, env, args)
    server.cli_here("migrate")  # only serve and migrate create a database
    server.token = server.new_user("alice")
    server.start()
    return server


def _in_process(request: pytest.FixtureRequest) -> bool:
    return request.node.get_closest_marker("server_process") is None


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    """The event loop of async tests: asyncio, as the server runs. anyio's own fixture adds trio whenever trio is
    installed (selenium brings it), and the storage backends are asyncio-only."""
    return "asyncio"


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def server(request: pytest.FixtureRequest, tmp_path: Path, backend: str) -> Iterator[Server]:
    """A server with rate limits off (tests of limits start their own) and a user 'alice' (server.token); in this
    process unless the module is marked ``server_process`` (see below)."""
    s = make_server(tmp_path, backend, "--rate-limits", "off", in_process=_in_process(request))
    yield s
    s.stop()
    if backend.startswith("postgres"):
        _release_schema(s.env["OPENKVS_DATABASE_SCHEMA"])
    if backend.endswith("+s3"):
        s3_clear(s3_prefix(s))


def s3_prefix(s: Server) -> str:
    """The prefix of a server's objects in the test bucket."""
    return s.env["OPENKVS_BLOB_STORE"].split("/", 3)[3]


def _release_schema(schema: str) -> None:
    """A test is done with a server's schema (its servers stopped): emptied for a later test if tests/pgschemas.py
    made it and the test left its tables as they were made, else dropped."""
    from tests import pgschemas

    pgschemas.blocking(lambda: pgschemas.give_back(DATABASE_URL, schema))


def pytest_sessionfinish(session: pytest.Session) -> None:
    from tests import pgschemas

    pgschemas.drop_all(DATABASE_URL)


# -- shared servers for the end-to-end API suite (tests/api) ---------------------------------------------------------
# Starting a server costs about a second; tests that don't interfere (each uses its own store names) share one per
# module and backend. They run in this process (make_server's in_process) unless the module is marked
# ``pytestmark = pytest.mark.server_process`` (it needs a process: to kill, restart, or read its whole log).



def _stop_and_clean(s: Server, backend: str) -> None:
    s.stop()
    if backend.startswith("postgres"):
        _release_schema(s.env["OPENKVS_DATABASE_SCHEMA"])
    if backend.endswith("+s3"):
        s3_clear(s3_prefix(s))


@pytest.fixture(scope="module", params=["sqlite", "postgres", "postgres+s3", "sqlite+s3"])
def shared_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A module-scoped server per backend (rate limits off, user 'alice' = server.token, user 'bob' =
    server.extra_tokens['bob']). Tests must use their own store names."""
    s = make_server(
        tmp_path_factory.mktemp(f"srv-{request.param}"), request.param, "--rate-limits", "off",
        in_process=_in_process(request),
    )
    s.backend = request.param  # type: ignore[attr-defined]
    s.new_user("bob")
    yield s
    _stop_and_clean(s, request.param)


@pytest.fixture(scope="module")
def sqlite_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A module-scoped SQLite server, for tests of the HTTP layer alone (backend-independent behaviour)."""
    s = make_server(tmp_path_factory.mktemp("srv-sqlite"), "sqlite", "--rate-limits", "off", in_process=_in_process(request))
    s.backend = "sqlite"  # type: ignore[attr-defined]
    s.new_user("bob")
    yield s
    _stop_and_clean(s, "sqlite")



_started: list[tuple[Server, str]] = []  # by start_server, in order


@pytest.fixture(scope="session")
def start_server() -> Iterator[Callable[..., Server]]:
    """``start_server(tmp_path, backend, *flags)``: make_server for tests that need their own flags (test modules
    can't import conftest). Every server it starts is stopped (and its PostgreSQL schema dropped) when the test
    module that started it ends (``_stop_module_servers``), not at the end of the whole run."""

    def start(tmp_path: Path, backend: str, *flags: str, **kw: Any) -> Server:
        s = make_server(tmp_path, backend, *flags, **kw)
        _started.append((s, backend))
        return s

    yield start
    _stop_started(0)


@pytest.fixture(scope="module", autouse=True)
def _stop_module_servers() -> Iterator[None]:
    """A module's servers from start_server stop with it: a run would otherwise keep every server of every module
    running (processes, memory, background tasks) until its end."""
    mark = len(_started)
    yield
    _stop_started(mark)


def _stop_started(mark: int) -> None:
    while len(_started) > mark:
        s, backend = _started.pop()
        _stop_and_clean(s, backend)
