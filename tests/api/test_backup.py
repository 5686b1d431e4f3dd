"""``openkvs backup`` while a server writes, and ``openkvs restore`` (issue 17): the restored data dir is one moment
of the server's history, and every record has its bytes."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from tests.clirun import Ran, openkvs_here
from tests.conftest import Server

KEYS = [f"k{i}" for i in range(6)]
BIG = 70 * 1024  # over the inline limit (64 KiB): kept in a file, the part a plain copy gets wrong


def _body(key: str, version: int) -> bytes:
    """Says which write made it, and is big for half the keys (files) and small for the others (inline)."""
    head = f"{key}:{version}:".encode()
    size = BIG if int(key[1:]) % 2 else 100
    return (head * (size // len(head) + 1))[:size]


def _cli(server: Server, *args: str) -> Ran:
    """The command in this process (tests/clirun.py), with the server's settings: what it prints and returns."""
    return openkvs_here(*args, env={k: v for k, v in server.env.items() if k.startswith("OPENKVS_")})


def test_backup_under_writes_restores_one_consistent_moment(
    start_server: Callable[..., Server], tmp_path: Path
) -> None:
    s = start_server(tmp_path, "sqlite", "--rate-limits", "off")
    with s.client() as c:
        store_id = c.post("/v2/key-value-stores", params={"name": "busy"}).json()["data"]["id"]
    # One writer, one operation at a time: after operation n the store holds exactly states[n].
    states: list[dict[str, int]] = [{}]
    stop = threading.Event()
    failures: list[str] = []

    def write() -> None:
        version = 0
        with s.client() as c:
            while not stop.is_set():
                version += 1
                key = KEYS[version % len(KEYS)]
                state = dict(states[-1])
                if version % 5 == 0 and key in state:
                    r = c.delete(f"/v2/key-value-stores/{store_id}/records/{key}")
                    del state[key]
                else:
                    r = c.put(f"/v2/key-value-stores/{store_id}/records/{key}", content=_body(key, version))
                    state[key] = version
                if r.status_code not in (201, 204):
                    failures.append(f"{r.status_code} {r.text}")
                    return
                states.append(state)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        while len(states) < 30:  # writes are going on
            threading.Event().wait(0.05)
        dest = tmp_path / "backup"
        before = len(states)
        done = _cli(s, "backup", str(dest), "--data-dir", str(s.data_dir))
        after = len(states)
    finally:
        stop.set()
        writer.join()
    assert not failures, failures
    assert done.returncode == 0, done.stderr
    assert "verified" in done.stdout
    assert after > before  # the server kept writing while the backup ran

    restored = tmp_path / "restored"
    out = _cli(s, "restore", str(dest), "--data-dir", str(restored))
    assert out.returncode == 0, out.stderr
    s2 = start_server(tmp_path / "second", "sqlite", "--rate-limits", "off", "--data-dir", str(restored),
                      in_process=True)  # what the restored folder serves (the backup was made beside a process)
    with s2.client(s.token) as c:
        keys = c.get(f"/v2/key-value-stores/{store_id}/keys").json()["data"]["items"]
        found: dict[str, int] = {}
        for item in keys:
            body = c.get(f"/v2/key-value-stores/{store_id}/records/{item['key']}").content
            key, version, _ = body.split(b":", 2)
            assert key.decode() == item["key"]
            assert body == _body(item["key"], int(version)), "a record without its own bytes"
            assert item["size"] == len(body)
            found[item["key"]] = int(version)
    assert found in states, f"the backup {found} is no state the store was ever in"


def test_backup_refuses_a_target_with_files_and_postgres(start_server: Callable[..., Server], tmp_path: Path) -> None:
    s = start_server(tmp_path, "sqlite", "--rate-limits", "off", in_process=True)
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "x").write_text("x")
    r = _cli(s, "backup", str(occupied), "--data-dir", str(s.data_dir))
    assert r.returncode != 0 and "not an empty folder" in r.stderr
    r = _cli(s, "backup", str(tmp_path / "b"), "--database-url", "postgresql://127.0.0.1/x")
    assert r.returncode != 0 and "pg_dump" in r.stderr
    r = _cli(s, "restore", str(occupied), "--data-dir", str(tmp_path / "new"))
    assert r.returncode != 0 and "not a sound backup" in r.stderr
