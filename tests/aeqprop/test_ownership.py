"""One owner per run: a lease in the store, judged stale when its process is gone."""

import os
import socket
import subprocess
import sys
import time

import pytest

from aeqprop import ownership, views
from aeqprop.store import RunStore, StoreError


def dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_live_owner_is_refused_a_gone_one_is_taken_over(tmp_path):
    store = RunStore(tmp_path)
    rid = store.create_run({}, 0, "iris", "hopfield", "aeqprop")
    other = RunStore(tmp_path)
    with pytest.raises(StoreError, match=rf"run {rid} is being trained by process {os.getpid()} on .*kill -INT"):
        other.acquire(rid)
    assert views.status(other.run(rid)) == "running"
    pid = dead_pid()
    other.db.execute("UPDATE leases SET pid = ? WHERE run_id = ?", (pid, rid))  # as if its owner was killed
    row = other.run(rid)
    assert row["owner"] is None and views.status(row) == "killed"
    previous = other.acquire(rid)
    assert previous["pid"] == pid
    store.event(rid, "note", "events do not renew the lease")
    with pytest.raises(StoreError, match="was taken over by another process"):
        store.log_eval(rid, 1, 1, 0.1, 0.5)  # the old owner's next metric write stops it
    other.release(rid)
    assert other._leases(rid) == []


def test_staleness_by_process_start_time_and_by_heartbeat_on_another_host():
    mine = {**ownership.me(), "heartbeat": time.time()}
    assert ownership.is_live(mine)
    assert not ownership.is_live({**mine, "pid_start": "1"})  # same pid, another process (pid reused)
    assert not ownership.is_live({**mine, "pid": dead_pid()})
    away = {**mine, "host": socket.gethostname() + "-elsewhere"}
    assert ownership.is_live(away)
    assert not ownership.is_live({**away, "heartbeat": time.time() - ownership.POLICY.stale_after - 1})
