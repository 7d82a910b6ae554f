"""Ctrl-C and SIGTERM take one path: both raise KeyboardInterrupt in the main thread, so a search,
a coordinator or a server stops the same clean way whichever it was sent (and says which)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def interrupt_on_signals() -> Iterator[dict]:
    """Within the block, SIGINT and SIGTERM raise KeyboardInterrupt; the dict it yields gets the
    signal's number under "signal". Outside the main thread (a threaded host's worker) signals
    cannot be handled, and the block runs as it is."""
    received: dict = {}
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handler(signum, frame):
        received["signal"] = signum
        raise KeyboardInterrupt

    previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    try:
        yield received
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
