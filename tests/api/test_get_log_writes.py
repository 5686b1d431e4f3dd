"""The access log's batches reach standard output in writes of whole lines of at most PIPE_BUF bytes (several
workers writing to one pipe never interleave inside a line), all of the text in order, partial writes resumed."""

from __future__ import annotations

import io
import os
import random

import pytest

from openkvs import observe


class _Stdout(io.StringIO):
    def fileno(self) -> int:
        return 99


@pytest.mark.parametrize("partial", [False, True])
def test_a_batch_goes_out_in_whole_lines_of_at_most_pipe_buf(monkeypatch: pytest.MonkeyPatch, partial: bool) -> None:
    rng = random.Random(7)
    lengths = [rng.choice([1, 80, 130, 700, observe.PIPE_BUF - 1, observe.PIPE_BUF, 3 * observe.PIPE_BUF])
               for _ in range(300)]
    lines = [("é" if n % 2 else "x") * n + "\n" for n in lengths]
    text = "".join(lines)
    writes: list[bytes] = []

    def write(fd: int, data: object) -> int:
        assert fd == 99
        chunk = bytes(data)  # type: ignore[call-overload]
        if partial and len(chunk) > 1 and rng.random() < 0.3:
            chunk = chunk[: rng.randrange(1, len(chunk))]
        writes.append(chunk)
        return len(chunk)

    monkeypatch.setattr(os, "write", write)
    monkeypatch.setattr(observe.sys, "stdout", _Stdout())
    observe._write_stdout(text)
    data = text.encode()
    assert b"".join(writes) == data
    assert all(0 < len(w) <= observe.PIPE_BUF for w in writes)
    if not partial:  # each write ends a line, but where one line alone is longer than PIPE_BUF
        offset = 0
        for w in writes:
            offset += len(w)
            line_start = data.rfind(b"\n", 0, offset - len(w)) + 1
            line_end = data.find(b"\n", offset - len(w)) + 1
            assert w.endswith(b"\n") or line_end - line_start > observe.PIPE_BUF
