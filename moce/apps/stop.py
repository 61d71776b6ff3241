"""Ending a run honestly on a signal: the work in flight finished, what was not reached reported."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
"""Signals that end a run honestly: in-flight images finished, the report written, exit 128 + signal."""


class StopRequest:
    """A request to end a run early, made by a signal: the images in flight are finished and
    written, every file not reached is reported as ``not_processed``, and the run says so.

    A second signal stops the process at once (temporaries are removed at the next start)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._signals: tuple[int, ...] = ()  # the signals routed here now (see on_signals)

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def __call__(self, signum: int, frame: object = None) -> None:
        if self.signum is not None:
            os.write(2, b"moce: second signal; stopping at once\n")
            os._exit(128 + signum)
        self.signum = signum

    @contextmanager
    def on_signals(self, signals: tuple[int, ...] = STOP_SIGNALS) -> Iterator[StopRequest]:
        """Route ``signals`` here while the block runs (main thread only; elsewhere nothing changes)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {s: signal.signal(s, self) for s in signals}
        self._signals = signals
        try:
            yield self
        finally:
            self._signals = ()
            for s, handler in previous.items():
                signal.signal(s, handler)

    def reclaim(self) -> None:
        """Route the signals here again after a library took them (``ray.init`` sets its own SIGTERM
        handler, which exits at once); nothing happens outside :meth:`on_signals`."""
        for s in self._signals:
            signal.signal(s, self)
