"""Flags that answer one question (which kind STORE is, what a grant allows) given together are a usage error
naming both, exit status 2, before anything is read or sent: click let the last of them win silently
(``export --queue X --dataset`` exported a dataset, ``grants add --write --read`` granted read)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.clirun import openkvs_here

NOWHERE = ["--url", "http://127.0.0.1:9", "--token", "okvs_x", "-q"]  # (never reached: the usage error comes first)


@pytest.mark.parametrize(("args", "first", "second"), [
    (["export", "--queue", "~q", "--dataset", "out", *NOWHERE], "--queue", "--dataset"),
    (["export", "~q", "out", "--dataset", "--queue", *NOWHERE], "--dataset", "--queue"),
    (["grants", "add", "~s", "bob", "--kvs", "--queue", "--data-dir", "data"], "--kvs", "--queue"),
    (["grants", "add", "~s", "bob", "--write", "--read", "--data-dir", "data"], "--write", "--read"),
    (["grants", "list", "~s", "--dataset", "--kvs", "--data-dir", "data"], "--dataset", "--kvs"),
    (["grants", "remove", "~s", "bob", "--queue", "--dataset", "--data-dir", "data"], "--queue", "--dataset"),
])
def test_two_flags_of_one_choice_are_a_usage_error(tmp_path: Path, args: list[str], first: str, second: str) -> None:
    out = openkvs_here(*args, cwd=tmp_path)
    assert out.returncode == 2, out.stdout + out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("Error:")]
    assert errors == [f"Error: {first} and {second} cannot be given together: give one of them."], out.stderr
    assert out.stdout == "" and list(tmp_path.iterdir()) == []  # nothing exported, no database made


def test_one_flag_given_twice_is_that_flag(tmp_path: Path) -> None:
    out = openkvs_here("export", "--dataset", "~d", "out", "--dataset", *NOWHERE, cwd=tmp_path)
    assert out.returncode == 1 and out.stderr.startswith("Error: dataset ~d: cannot connect"), out.stderr
