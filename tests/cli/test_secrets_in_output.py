"""A password in a configured URL (--database-url, --redis-url, --blob-store) never reaches output: a command's
error on an unreachable or refusing database, serve's banner, the server's log. The URL is still named, with
``***`` for its password (openkvs/config.py ``redacted``), so that the user sees which one was meant."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.clirun import Ran, openkvs_here
from tests.conftest import free_port, postgres_reachable

PASSWORD = "Pw-" + secrets.token_hex(8)


def openkvs(*args: str) -> Ran | subprocess.CompletedProcess[str]:
    """The command with no OPENKVS_ or AWS_ variable set; in this process (tests/clirun.py) but for ``serve``, which
    keeps a process (one that started by mistake would serve in the test run)."""
    if args[0] != "serve":
        return openkvs_here(*args, unset=("OPENKVS_", "AWS_"), keep=())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENKVS_", "AWS_"))}
    return subprocess.run([sys.executable, "-m", "openkvs", *args], capture_output=True, text=True, env=env,
                          timeout=120)


@pytest.mark.parametrize("command", [["users", "list"], ["migrate"], ["serve"], ["check"]])
@pytest.mark.parametrize("url", [
    "postgresql://bob:{password}@127.0.0.1:{port}/x",  # nothing listens there
    "postgresql://bob@127.0.0.1:{port}/x?password={password}",  # libpq's other way to give it
    "mysql://bob:{password}@db.internal/x",  # not PostgreSQL's
])
def test_a_failing_database_url_is_named_without_its_password(command: list[str], url: str, tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    url = url.format(password=PASSWORD, port=free_port())
    out = openkvs(*command, "--database-url", url, *(["--port", str(free_port())] if command == ["serve"] else []))
    assert out.returncode == 1, out.stdout + out.stderr
    assert PASSWORD not in out.stdout + out.stderr + caplog.text  # (what it logged, run in this process)
    if command in (["users", "list"], ["migrate"]):  # (serve and check say "cannot connect to PostgreSQL")
        assert url.replace(PASSWORD, "***") in out.stderr, out.stderr


def test_a_database_that_refuses_is_named_without_the_password(caplog: pytest.LogCaptureFixture) -> None:
    if not postgres_reachable():
        pytest.skip("no PostgreSQL on 127.0.0.1:5432")
    url = f"postgresql://postgres:{PASSWORD}@127.0.0.1:5432/openkvs_no_such_database"
    out = openkvs("users", "list", "--database-url", url)
    assert out.returncode == 1, out.stdout + out.stderr
    assert PASSWORD not in out.stdout + out.stderr + caplog.text
    assert "postgresql://postgres:***@127.0.0.1:5432/openkvs_no_such_database" in out.stderr, out.stderr


def test_serve_shows_no_password_in_its_banner_or_log(tmp_path: Path) -> None:
    """A bucket URL and a Redis URL with credentials, neither reachable: the server starts (it serves what does not
    need them), its banner names the bucket, its log says the bucket can't be used; no password anywhere."""
    port, closed = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENKVS_", "AWS_"))}
    env.update(AWS_ACCESS_KEY_ID="AKIDEXAMPLE", AWS_SECRET_ACCESS_KEY="not-this-one", PYTHONUNBUFFERED="1")
    log = tmp_path / "server.log"
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "openkvs", "serve", "--port", str(port), "--data-dir", str(tmp_path / "data"),
             "--blob-store", f"s3://AKIDEXAMPLE:{PASSWORD}@bucket/prefix", "--s3-endpoint", f"http://127.0.0.1:{closed}",
             "--redis-url", f"redis://:{PASSWORD}@127.0.0.1:{closed}/0"],
            stdout=subprocess.PIPE, stderr=err, text=True, env=env,
        )
        try:
            assert proc.stdout is not None
            first = proc.stdout.readline()
            deadline = time.monotonic() + 60  # generous: the check of the bucket is what is waited for
            while "can't be used now" not in log.read_text() and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            proc.terminate()
            rest, _ = proc.communicate(timeout=60)
    output = first + rest + log.read_text()
    assert "bytes above 65536 in s3://AKIDEXAMPLE:***@bucket/prefix" in first, first
    assert "the bucket s3://AKIDEXAMPLE:***@bucket/prefix can't be used now" in output, output
    assert PASSWORD not in output


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql://bob:p@ss/w@db:5432/x", "postgresql://bob:***@db:5432/x"),  # an unescaped "@": up to the last
    ("postgresql://bob@db/x?sslmode=require&password=pw", "postgresql://bob@db/x?sslmode=require&password=***"),
    ("redis://:pw@[::1]:6379/0", "redis://:***@[::1]:6379/0"),
    ("postgresql://bob@db/x", "postgresql://bob@db/x"),  # nothing to hide: as given
    # a "?" or "#" in an unescaped password: libpq takes it up to the "@", the redaction must too
    ("postgresql://u:p?x#y@host/db", "postgresql://u:***@host/db"),
    ("postgresql://u:secret#1@host/db?sslmode=require", "postgresql://u:***@host/db?sslmode=require"),
    ("redis://:a?b@cache:6379/0", "redis://:***@cache:6379/0"),
])
def test_redacted(url: str, shown: str) -> None:
    from openkvs.redact import redacted

    assert redacted(url) == shown


@pytest.mark.parametrize("mark", ["?", "#"])
def test_a_password_with_a_question_mark_or_hash_is_kept_out_of_a_message(mark: str) -> None:
    """A driver quoting the password alone (not the whole URL) in its message: replaced all the same."""
    from openkvs.redact import without_secrets

    password = f"Pw{mark}{PASSWORD}"
    url = f"postgresql://bob:{password}@db.internal/x"
    text = without_secrets(f"PostgreSQL at {url}: password authentication failed ({password!r})", url)
    assert PASSWORD not in text and "postgresql://bob:***@db.internal/x" in text, text


def test_a_redis_url_of_another_scheme_is_refused_before_the_server_starts(tmp_path: Path) -> None:
    """It was taken, the banner and the first user's token printed, and the worker then failed with a traceback."""
    data = tmp_path / "data"
    out = openkvs("serve", "--port", str(free_port()), "--data-dir", str(data),
                  "--redis-url", f"http://:{PASSWORD}@cache.internal:6379/0")
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stderr.strip().splitlines()[-1].endswith("--redis-url' (env var: 'OPENKVS_REDIS_URL'): expected "
                                                        "redis://, rediss:// or unix://"), out.stderr
    assert PASSWORD not in out.stdout + out.stderr and "okvs_" not in out.stdout and not data.exists()


@pytest.mark.parametrize("command", [["download", "~shots"], ["export", "~shots", "out"]])
def test_a_client_url_with_a_password_is_named_without_it(command: list[str], tmp_path: Path, no_backoff: list[float],
                                                          caplog: pytest.LogCaptureFixture) -> None:
    """--url with credentials (a server behind a proxy with basic auth) and nothing answering there."""
    url = f"http://bob:{PASSWORD}@127.0.0.1:{free_port()}"
    out = openkvs_here(*command, "--url", url, "--token", "okvs_x", "-q", cwd=tmp_path, unset=("OPENKVS_", "APIFY_"),
                       keep=())
    assert out.returncode == 1, out.stdout + out.stderr
    assert f"cannot connect to {url.replace(PASSWORD, '***')} (" in out.stderr, out.stderr
    assert PASSWORD not in out.stdout + out.stderr + caplog.text
