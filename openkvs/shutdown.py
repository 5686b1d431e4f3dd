"""Running uvicorn with openkvs's shutdown: on SIGTERM (or SIGINT) the listening socket is closed at once (new
connections are refused), idle keep-alive connections are closed, and requests in progress (a ZIP download, an
upload) get ``--shutdown-timeout`` seconds to finish; then the process exits. A second SIGTERM exits at once.

uvicorn does the first part (``timeout_graceful_shutdown``) but forces an exit only on a second SIGINT, which is
not what systemd, Docker or Kubernetes send. With ``--workers`` > 1 the parent process passes SIGTERM on to each
worker, which shuts down as above; a second SIGTERM to the parent kills the workers. (Under systemd, use
``KillMode=mixed``, as deploy/openkvs.service does, so that only the parent gets the first SIGTERM.)
"""

from __future__ import annotations

import logging
import signal
from types import FrameType

import uvicorn
from uvicorn.supervisors.multiprocess import Multiprocess

log = logging.getLogger("openkvs")

_FORCING = (signal.SIGINT, signal.SIGTERM)


class Server(uvicorn.Server):
    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit and sig in _FORCING:
            self._captured_signals.append(sig)
            self.force_exit = True  # uvicorn stops waiting for open requests and exits now
            log.warning("second %s: exiting without waiting for open requests", signal.Signals(sig).name)
            return
        super().handle_exit(sig, frame)


class Supervisor(Multiprocess):
    def handle_term(self) -> None:
        super().handle_term()
        # The parent now waits for its workers (terminate_all, join_all): a second SIGTERM ends them.
        signal.signal(signal.SIGTERM, self._kill_workers)
        signal.signal(signal.SIGINT, self._kill_workers)

    handle_int = handle_term

    def _kill_workers(self, sig: int, frame: FrameType | None) -> None:
        log.warning("second %s: killing the workers", signal.Signals(sig).name)
        for process in self.processes:
            process.kill()


def run(config: uvicorn.Config) -> None:
    """What ``uvicorn.run`` does for openkvs's configurations (no reload), with the shutdown above."""
    try:
        if config.workers > 1:
            sock = config.bind_socket()
            Supervisor(config, sockets=[sock]).run()
        else:
            Server(config).run()
    except KeyboardInterrupt:  # pragma: no cover
        pass
