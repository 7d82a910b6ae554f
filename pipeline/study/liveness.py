"""Who runs a trial, and whether that process is still alive (on this machine)."""

from __future__ import annotations

import os
import socket

from pipeline.core import env


def _start_ticks(pid: int) -> str:
    """The process's start time in clock ticks since boot (Linux), so a reused pid is not
    mistaken for the worker that died; empty where /proc is not available."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            # The command name (field 2) may hold spaces; fields after its ')' are fixed.
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def this_host() -> str:
    # Set in a Ray worker: its node stands for its host. Two Ray nodes on one machine are two
    # machines to `pipeline`, so a worker is judged by its process id only from its own node,
    # and by its heartbeats from anywhere else.
    return env.WORKER_HOST.get() or socket.gethostname()


def worker_id(pid: int | None = None) -> str:
    """``host:pid:start`` for this process (or ``pid`` on this host)."""
    pid = pid or os.getpid()
    return f"{this_host()}:{pid}:{_start_ticks(pid)}"


def is_dead_local_worker(worker: str) -> bool:
    """True only when ``worker`` ran on this host and that process is gone.

    A worker on another host cannot be checked from here: heartbeats (RDB storages) cover those.
    """
    try:
        host, pid_text, start = worker.rsplit(":", 2)
        pid = int(pid_text)
    except ValueError:
        return False
    if host != this_host():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, owned by someone else
    return bool(start) and _start_ticks(pid) != start
