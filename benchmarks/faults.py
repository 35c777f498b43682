"""Fault and safety cases injected into the virtual lab (SCPI over TCP, a board on a pty): which held.

Each row is one case of issue 11, run against the virtual lab or a board/SMU emulator. Columns:
values past a limit (source values the instrument received outside the wiring map's range), outputs
left on after the exit, duplicate actions (releases, relaxations or homeostasis runs beyond one per
step), lost steps (steps trained but not in the last checkpoint after a stop), tracebacks (an
exception other than the controller's own one-line errors). A case holds when all of these are zero
and the controller did what the case requires (the last column says what was seen).

Run: ``python benchmarks/faults.py``
"""

from __future__ import annotations

import dataclasses
import signal
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fault_kit import CASES, Row, case, make_sim, past_limit, record, signal_run, toy_data, train, wiring

from aeqprop.errors import AeqpropError, SafetyLimitError
from drivers.hardware import InstrumentSubstrate
from drivers.wiring import parse_wiring
from protocols.aeqprop import Aeqprop
from protocols.eqprop import EqProp
from sim_backends.virtual_lab import BoardServer, Faults, ScpiServer

# -- safety ---------------------------------------------------------------------------------------
for _bus, _server, _profile in (("SCPI", ScpiServer, "multichannel"), ("board", BoardServer, "board")):

    @case(1, "levels left at 4.9 V / -3.0 V, range +/-0.6 V", _bus)
    def _(row, server_cls=_server, profile=_profile):
        with server_cls(make_sim()) as lab:
            lab.model.levels["input"][:2] = [4.9, -3.0]
            log = record(lab)
            w = parse_wiring(wiring(lab.address, profile, inputs={"limits": {"range": [-0.6, 0.6], "max_step": 0.1}}))
            with InstrumentSubstrate(w) as hw:
                Aeqprop(beta=1.0).step(hw, np.full((1, 4), 0.5), np.eye(3)[[0]])
            row.update(past=past_limit(log, w), on=len(lab.model.outputs_on))
            row["ok"] = True
            row["seen"] = f"inputs at {lab.model.levels['input'][:2].tolist()} after close"


for _item, _sig in ((2, "SIGTERM"), (2, "SIGHUP"), (3, "SIGINT")):

    @case(_item, f"one {_sig} during an exchange", "SCPI")
    def _(row, sig=_sig):
        signal_run(row, getattr(signal, sig))


@case(4, "hold line on a second instrument; close", "SCPI+board")
def _(row):
    with ScpiServer(make_sim()) as lab, BoardServer(model=lab.model) as board:
        data = wiring(lab.address)
        data["instruments"]["holder"] = {"address": board.address, "profile": "board", "timeout": 2.0}
        data["hold"].update(instrument="holder", release="timed")
        with InstrumentSubstrate(parse_wiring(data)) as hw:
            hw.clamp(np.full((1, 4), 0.5))
            hw._queue(hw.roles["hold"], [1.0])  # stopped while released
            hw._flush()
            log = record(lab, board)
        hold = next(i for i, (k, line) in enumerate(log) if k == 1 and "9000=0.0" in line)
        other = next(i for i, (k, line) in enumerate(log) if k == 0 and "SOUR:VOLT" in line)
        row["on"] = len(lab.model.outputs_on)
        row["ok"] = hold < other
        row["seen"] = f"hold to 0 V at message {hold}, first other source at {other}"


@case(5, "release of 1e4 units (hold.max_seconds 10 s)", "SCPI")
def _(row):
    with ScpiServer(make_sim()) as lab:
        with InstrumentSubstrate(parse_wiring(wiring(lab.address))) as hw:
            before = lab.front.bytes_received
            try:
                hw.release(1e4)
            except SafetyLimitError:
                row["ok"] = lab.front.bytes_received == before
                row["seen"] = f"SafetyLimitError, {lab.front.bytes_received - before} bytes sent"
        row["on"] = len(lab.model.outputs_on)


@case(6, "compliance trip as a status bit", "2450 emulator")
def _(row):
    from drivers.scpi import ScpiInstrument
    from drivers.transport import Transport

    class Smu2450(Transport):
        """Answers like a 2450 whose current limit trips on the third level set."""

        def __init__(self):
            super().__init__("EMU::2450", timeout=0.1)
            self.sets, self.reply, self.on = 0, "", False

        def _open_raw(self):
            pass

        def _close_raw(self):
            pass

        def _send_raw(self, data):
            parts = data.decode().strip().split(";:")
            self.sets += any(p.startswith("SOUR:VOLT ") for p in parts)
            self.on = (self.on or "OUTP ON" in parts) and "OUTP OFF" not in parts
            answers = {
                "*LANG?": "SCPI",
                "SOUR:VOLT:ILIM:TRIP?": "1" if self.sets >= 3 else "0",
                "SYST:ERR?": '0,"No error;0;0 0"',
                "SOUR:VOLT?": "0.0",
                "MEAS:VOLT?": "0.1",
            }
            self.reply = ";".join(answers[p] for p in parts if p.endswith("?"))

        def _receive_raw(self):
            return self.reply.encode()

    smu = ScpiInstrument(Smu2450().open(), "keithley2450")
    smu.prepare()
    smu.output([1], True)
    try:
        for v in (0.1, 0.2, 0.3, 0.4):
            smu.set_voltage(1, v)
    except AeqpropError as exc:
        row["ok"] = "tripped" in str(exc)
        row["seen"] = f"stopped at set {smu.transport.sets}: {str(exc)[:50]}..."
    try:
        smu.output([1], False)  # sent and acted on; the trip bit is still reported
    except AeqpropError:
        pass
    row["on"] = int(smu.transport.on)


# -- faults ---------------------------------------------------------------------------------------
@case(7, "board resets on reconnect, 1 % late replies", "board")
def _(row):
    with BoardServer(make_sim(), faults=Faults(reset=0.01, late=0.01, late_seconds=0.3, seed=3)) as board:
        try:
            with InstrumentSubstrate(parse_wiring(wiring(board.address, "board", timeout=0.2))) as hw:
                train(hw, EqProp(beta=0.5, lr=0.05), toy_data(n_train=150))
            row["seen"] = f"completed through {board.front.injected['reset']} resets"
        except AeqpropError as exc:
            row["ok"] = "reset since it was armed" in str(exc)
            row["seen"] = f"stopped after {board.front.injected['reset']} reset: ERR 8"
        row["on"] = len(board.model.outputs_on)


for _bus, _server, _profile in (("SCPI", ScpiServer, "multichannel"), ("board", BoardServer, "board")):

    @case(8, "5 % late replies, native Aeqprop, 20 samples", _bus)
    def _(row, server_cls=_server, profile=_profile):
        data = toy_data(n_train=20)
        direct = make_sim()
        train(direct, Aeqprop(beta=1.0), data)
        with server_cls(make_sim(), faults=Faults(late=0.05, late_seconds=0.3, seed=1)) as lab:
            with InstrumentSubstrate(parse_wiring(wiring(lab.address, profile, timeout=0.2))) as hw:
                train(hw, Aeqprop(beta=1.0), data)
                theta = hw.parameters()
            calls = lab.model.calls
            row["dup"] = sum(max(0, calls.count(a) - 20) for a in ("release", "homeostasis"))
            diff = max(float(np.max(np.abs(theta[n] - direct.parameters()[n]))) for n in theta)
            row["on"] = len(lab.model.outputs_on)
            row["ok"] = diff <= 1e-9
            row["seen"] = (
                f"{lab.front.injected['late']} late; {calls.count('release')} releases; |theta - direct| {diff:.1e}"
            )


@case(10, "serial device unplugged mid-run", "board")
def _(row):
    from drivers.board import BoardInstrument
    from drivers.transport import NoAnswer, open_transport

    board = BoardServer(make_sim())
    inst = BoardInstrument(open_transport(board.address, timeout=0.2, retries=2))
    inst.identify()
    board.stop()
    try:
        inst.identify()
    except NoAnswer:
        row["ok"], row["seen"] = True, "one InstrumentError naming the port"


for _bus, _server, _profile, _what in (
    ("board", BoardServer, "board", "'nan'"),
    ("SCPI", ScpiServer, "multichannel", "9.91e37"),
):

    @case(10, f"reading of {_what}", _bus)
    def _(row, server_cls=_server, profile=_profile):
        with server_cls(make_sim(), faults=Faults(nan=1.0, seed=0)) as lab:
            try:
                with InstrumentSubstrate(parse_wiring(wiring(lab.address, profile, timeout=0.2))) as hw:
                    hw.outputs()
            except AeqpropError as exc:
                row["ok"], row["seen"] = True, f"{type(exc).__name__}: {str(exc)[:40]}..."
            row["on"] = len(lab.model.outputs_on)


@case(10, "close against a dead instrument (timeout 2 s, 3 retries)", "SCPI")
def _(row):
    with ScpiServer(make_sim()) as lab:
        hw = InstrumentSubstrate(parse_wiring(wiring(lab.address)))
        lab.front.execute = lambda line, trip: time.sleep(10.0)
        t0 = time.perf_counter()
        try:
            hw.close()
        except AeqpropError:
            pass
        seconds = time.perf_counter() - t0
        row["ok"], row["seen"] = seconds < 10.0, f"close took {seconds:.1f} s"


@case(11, "native homeostasis on a board latching a whole SET", "board")
def _(row):
    x, y = np.full((1, 4), 0.5), np.eye(3)[[1]]
    direct = make_sim()
    Aeqprop(beta=1.0).step(direct, x, y)
    with BoardServer(make_sim()) as board:
        with InstrumentSubstrate(parse_wiring(wiring(board.address, "board"))) as hw:
            Aeqprop(beta=1.0).step(hw, x, y)
            theta = hw.parameters()
        runs = board.model.calls.count("homeostasis")
    diff = max(float(np.max(np.abs(theta[n] - direct.parameters()[n]))) for n in theta)
    row["ok"], row["seen"] = runs == 1 and diff <= 1e-9, f"{runs} homeostasis run; |theta - direct| {diff:.1e}"


@case(11, "160+ knob channels in one exchange", "board")
def _(row):
    layers = (4, 20, 3)
    with BoardServer(make_sim(layers)) as board:
        log = record(board)
        with InstrumentSubstrate(parse_wiring(wiring(board.address, "board", layers=layers))) as hw:
            hw.set_knobs({n: v + 0.1 for n, v in hw.knobs().items()})
            hw.relax()
        longest = max(len(line) + 1 for _, line in log)
        row["ok"], row["seen"] = longest <= 4096, f"longest line {longest} bytes (163 knobs)"


@case(11, "replies with a lower-case CRC", "board")
def _(row):
    from drivers.board import unframe

    with BoardServer(make_sim()) as board:
        execute = board.front.execute

        def lower(line, trip):
            reply = execute(line, trip)
            head, _, crc = reply.rpartition("*")
            unframe(reply)
            return f"{head}*{crc.lower()}"

        board.front.execute = lower
        with InstrumentSubstrate(parse_wiring(wiring(board.address, "board", timeout=0.3))) as hw:
            Aeqprop(beta=1.0).step(hw, np.full((1, 4), 0.5), np.eye(3)[[0]])
            row["ok"], row["seen"] = hw.round_trips > 0, f"{hw.round_trips} round trips, 0 refused"


@case(12, "conformance of the reference board", "board")
def _(row):
    from drivers.conformance import conformance

    with BoardServer(make_sim()) as board:
        checks = conformance(board.address, timeout=1.0)
        row["on"] = len(board.model.outputs_on)
    passed = sum(c.passed for c in checks)
    row["ok"], row["seen"] = passed == len(checks), f"{passed} of {len(checks)} checks passed"


@case(13, "SCPI lab: no reply to a command, -222 / -113 / -224, NaN", "SCPI")
def _(row):
    import socket

    with ScpiServer(make_sim()) as lab, socket.create_connection(("127.0.0.1", lab.port), timeout=2) as s:
        f = s.makefile("rwb")
        got = []
        for line in (
            "SOUR:VOLT 0.5,(@1001)",
            "SOUR:VOLT 50.0,(@1001);:SYST:ERR?",
            "FROB;:SYST:ERR?",
            "SOUR:VOLT nan,(@1001);:SYST:ERR?",
            "SOUR:VOLT? (@1001)",
        ):
            f.write(line.encode() + b"\n")
            f.flush()
            if "?" in line:
                got.append(f.readline().decode().split(",")[0].strip())
        row["ok"] = got == ["-222", "-113", "-224", "0.5"]
        row["seen"] = f"replies {got}"


@case(9, "resume on an Aeqprop-only bench whose theta moved", "-")
def _(row):
    from aeqprop.session import check_restorable

    sim = make_sim()
    cp = {"parameters": {n: v + 0.01 for n, v in sim.parameters().items()}}
    sim.info = dataclasses.replace(sim.info, capabilities=frozenset({"aeqprop"}))  # no program channels
    try:
        check_restorable(sim, cp, "interrupted")
    except AeqpropError as exc:
        row["ok"], row["seen"] = "stays interrupted" in str(exc), "refused before the status changes"


@case(15, "drivers importing the simulations", "-")
def _(row):
    import ast

    found = [
        p.name
        for p in (Path(__file__).resolve().parents[1] / "drivers").glob("*.py")
        for node in ast.walk(ast.parse(p.read_text()))
        if isinstance(node, (ast.Import, ast.ImportFrom))
        and "sim_backends" in (getattr(node, "module", None) or " ".join(a.name for a in node.names))
    ]
    row["ok"], row["seen"] = not found, f"{len(found)} imports of sim_backends in drivers/"


def main() -> None:
    print("Command: python benchmarks/faults.py\n")
    print(
        "| item | case | bus | held | values past a limit | outputs left on | duplicate actions | lost steps "
        "| tracebacks | seen |"
    )
    print("|---:|---|---|---|---:|---:|---:|---:|---:|---|")
    rows = []
    for item, name, bus, fn in CASES:
        row = Row(item, name, bus)
        try:
            fn(row)
        except Exception as exc:  # anything but the controller's own errors is a traceback
            row["tb"], row["seen"] = 1, f"{type(exc).__name__}: {str(exc)[:60]}"
            row["ok"] = False
        held = row["ok"] and not (row["past"] or row["on"] or row["dup"] or row["lost"] or row["tb"])
        rows.append(held)
        print(
            f"| {item} | {name} | {bus} | {'yes' if held else 'NO'} | {row['past']} | {row['on']} | {row['dup']} "
            f"| {row['lost']} | {row['tb']} | {row['seen']} |"
        )
        sys.stdout.flush()
    print(f"\n{sum(rows)} of {len(rows)} cases held")


if __name__ == "__main__":
    main()
