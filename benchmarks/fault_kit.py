"""The kit of ``benchmarks/faults.py``: a small simulated network and data, the virtual lab's command
log and the wiring map's limits it is checked against, a case's row and the registry of cases, and the
signal run that the SIGINT, SIGTERM and SIGHUP cases share."""

from __future__ import annotations

import os
import re
import tempfile
import time
import tomllib
from pathlib import Path

import numpy as np

from aeqprop.data import Dataset
from aeqprop.trainer import Trainer
from drivers.wiring import lab_wiring_toml
from sim_backends.hopfield import HopfieldSubstrate
from sim_backends.virtual_lab import ScpiServer

SCPI_SET = re.compile(r"SOUR:VOLT ([^,;]+),\(@(\d+)\)")
BOARD_SET = re.compile(r"(\d+)=([^,;*]+)")


def make_sim(layers=(4, 5, 3)):
    return HopfieldSubstrate(layers, eps=0.1, seed=3, max_batch=1)


def toy_data(n_train=6, n_test=2):
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (n_train + n_test, 4))
    labels = rng.integers(0, 3, n_train + n_test)
    return Dataset("toy", x[:n_train], labels[:n_train], x[n_train:], labels[n_train:], 3)


def record(*servers) -> list[tuple[int, str]]:
    log: list[tuple[int, str]] = []
    for k, server in enumerate(servers):
        execute = server.front.execute

        def wrapped(line, trip, k=k, execute=execute):
            log.append((k, line))
            return execute(line, trip)

        server.front.execute = wrapped
    return log


def wiring(address, profile="multichannel", layers=(4, 5, 3), timeout=2.0, **edits):
    data = tomllib.loads(lab_wiring_toml(make_sim(layers).info, address, profile=profile, timeout=timeout))
    for key, value in edits.items():
        data[key].update(value)
    return data


def past_limit(log, w) -> int:
    """Source values received outside the wiring map's range of their channel."""
    ranges = {}
    for role, group, count in w.groups():
        if group.limits is not None:
            for ch in group.resolve(count, role):
                ranges[ch] = group.limits.range
    bad = 0
    for _, line in log:
        pairs = [(int(c), v) for v, c in SCPI_SET.findall(line)] + [
            (int(c), v)
            for cmd in line.split(";")
            if cmd.strip().split(" ")[-2:-1] == [] or "SET" in cmd
            for c, v in BOARD_SET.findall(cmd.partition("SET")[2])
        ]
        for ch, v in pairs:
            lo, hi = ranges.get(ch, (-np.inf, np.inf))
            bad += not (lo <= float(v) <= hi)
    return bad


class Row(dict):
    def __init__(self, item, case, bus):
        super().__init__(item=item, case=case, bus=bus, past=0, on=0, dup=0, lost=0, tb=0, ok=False, seen="")


def case(item, name, bus):
    def wrap(fn):
        CASES.append((item, name, bus, fn))
        return fn

    return wrap


CASES: list = []


def train(hw, protocol, data):
    Trainer(hw, protocol, data, epochs=1, batch_size=1, seed=0).run()


def signal_run(row, sig):
    """Train over the virtual lab through a session and deliver ``sig`` in the 60th exchange; the row
    records whether the run stopped interrupted, checkpointed, with its outputs switched off."""
    from aeqprop import session
    from aeqprop.config import load_config
    from aeqprop.store import RunStore

    sim = dict(layers=(4, 5, 3), eps=0.1, seed=0, tol=1e-3, max_sweeps=100, max_batch=1)
    with tempfile.TemporaryDirectory() as tmp, ScpiServer(HopfieldSubstrate(**sim)) as lab:
        path = Path(tmp) / "lab.toml"
        path.write_text(lab_wiring_toml(HopfieldSubstrate(**sim).info, lab.address))
        count, execute, lines = [0], lab.front.execute, []

        def hook(line, trip):
            lines.append(line)
            count[0] += 1
            if count[0] == 60:
                os.kill(os.getpid(), sig)
                time.sleep(0.05)
            return execute(line, trip)

        lab.front.execute = hook
        fields = {
            "substrate.backend": "instrument",
            "substrate.wiring": str(path),
            "checkpoint.every": 5,
            "dataset.name": "iris",
            "protocol.name": "eqprop",
            "schedule.epochs": 1,
            "schedule.batch_size": 1,
            "runs": str(Path(tmp) / "runs"),
            "evaluation.every": 1000,
        }
        outcome = session.start(load_config(None, fields=fields))
        store = RunStore(str(Path(tmp) / "runs"), create=False)
        cp = store.load_checkpoint(outcome.run_id)
        events = store.metrics(outcome.run_id, "events")
        store.close()
        steps = len(outcome.result.history) if hasattr(outcome.result, "history") else None
        row["on"] = len(lab.model.outputs_on)
        at_once = any("stopped at once" in (e["message"] or "") for e in events)
        off = any(line.startswith("OUTP OFF") for line in lines[60:])
        row["lost"] = 0 if cp is not None and not at_once else 1
        row["ok"] = outcome.status == "interrupted" and off and not at_once
        row["seen"] = (
            f"{outcome.status}, checkpoint at step {cp['global_step'] if cp else None}, "
            f"OUTP OFF {'sent' if off else 'not sent'}" + (f", {steps} steps" if steps else "")
        )
