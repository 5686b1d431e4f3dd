"""Progress of a transfer in bytes: on a terminal a live bar with rate and time left (rich), elsewhere (a log, a CI
job, a pipe) a plain line every few seconds and one at the end, so that logs stay readable."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import IO, Any


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


class Progress:
    """``advance(n)`` from any thread; ``close()`` once. ``quiet``: nothing at all."""

    def __init__(
        self,
        label: str,
        total: int | None,
        done: int = 0,
        *,
        stream: IO[str] | None = None,
        quiet: bool = False,
        every: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label, self.total, self.done = label, total, done
        self._stream = stream or sys.stderr
        self._quiet, self._every, self._clock = quiet, every, clock
        self._lock = threading.Lock()
        self._start = self._last = clock()
        self._first = done  # bytes there before this run: not counted in the rate
        self._bar: Any = None
        if not quiet and self._stream.isatty():
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                ProgressColumn,
                TextColumn,
                TimeRemainingColumn,
            )
            from rich.progress import (
                Progress as Bar,
            )
            from rich.text import Text

            class Speed(ProgressColumn):
                """The rate in the sizes' binary units (rich's TransferSpeedColumn says MB/s next to MiB)."""

                def render(self, task: Any) -> Text:
                    speed = f"{human(task.speed)}/s" if task.speed is not None else "?"
                    return Text(speed, style="progress.data.speed")

            self._bar = Bar(
                TextColumn("{task.description}"), BarColumn(), DownloadColumn(binary_units=True),
                Speed(), TimeRemainingColumn(), console=Console(file=self._stream), transient=False,
            )
            self._bar.start()
            self._task = self._bar.add_task(label, total=total, completed=done)

    def set_total(self, total: int | None, done: int = 0) -> None:
        with self._lock:
            self.total, self.done, self._first, self._start = total, done, done, self._clock()
            if self._bar is not None:
                self._bar.update(self._task, total=total, completed=done)

    def advance(self, n: int) -> None:
        with self._lock:
            self.done += n
            if self._bar is not None:
                self._bar.update(self._task, advance=n)
            elif not self._quiet and self._clock() - self._last >= self._every:
                self._last = self._clock()
                self._line()

    def _line(self, final: bool = False) -> None:
        elapsed = max(self._clock() - self._start, 1e-9)
        rate = (self.done - self._first) / elapsed
        parts = [self.label, human(self.done) + (f" of {human(self.total)}" if self.total is not None else "")]
        if self.total:
            parts.append(f"{100 * self.done / self.total:.0f}%")
        parts.append(f"{human(rate)}/s")
        if not final and self.total and rate > 0:
            parts.append(f"{(self.total - self.done) / rate:.0f} s left")
        print("  ".join(parts), file=self._stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
        elif not self._quiet:
            self._line(final=True)
