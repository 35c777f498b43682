"""Who trains a run: one owner at a time, recorded as a lease in the run store.

A lease names the process (host, pid and the process's start time, so a
reused pid is not mistaken for the owner) and carries a heartbeat, the time of
the owner's last write. A lease is *live* when its process still runs (same
host) or its heartbeat is recent (another host sharing the folder); otherwise
the owner is gone (killed, crashed, machine restarted) and a resume may take
the run over.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from dataclasses import dataclass


@dataclass(frozen=True)
class LeasePolicy:
    """How ownership of a run is judged.

    stale_after: s without a heartbeat after which the owner on *another host*
        counts as gone (on this host the process table decides at once).
    """

    stale_after: float = 3600.0


POLICY = LeasePolicy()


def process_start(pid: int) -> str | None:
    """The start time of process ``pid`` in clock ticks since boot (Linux /proc), or None if unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read().decode(errors="replace")
    except OSError:
        return None
    fields = text.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else None


def me() -> dict:
    """The lease fields of this process, with a fresh token."""
    pid = os.getpid()
    return {"token": uuid.uuid4().hex, "host": socket.gethostname(), "pid": pid, "pid_start": process_start(pid)}


def is_live(lease: dict, now: float | None = None, policy: LeasePolicy = POLICY) -> bool:
    """True while the lease's process may still be training the run."""
    now = time.time() if now is None else now
    if lease.get("host") != socket.gethostname():
        return now - (lease.get("heartbeat") or 0.0) < policy.stale_after
    pid = lease.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process with that pid: alive
        pass
    start = process_start(pid)
    if start is not None and lease.get("pid_start") is not None and start != lease["pid_start"]:
        return False  # the pid was reused by another process
    if _zombie(pid):
        return False
    return True


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().decode(errors="replace").rpartition(")")[2].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def describe(lease: dict, now: float | None = None) -> str:
    """``process 1234 on host, last seen 3 s ago`` for messages."""
    now = time.time() if now is None else now
    ago = max(0.0, now - (lease.get("heartbeat") or now))
    return f"process {lease.get('pid')} on {lease.get('host')}, last seen {ago:.0f} s ago"
