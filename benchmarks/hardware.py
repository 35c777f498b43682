"""Instrument cost of a training sample through the virtual lab.

For each protocol and each bus (pyvisa-py over TCP to the SCPI server, pyserial
over a pseudo-terminal to the board), trains ``--samples`` single-sample steps
of a Hopfield 4-5-3 network and reports per sample: round trips, bytes sent and
received, and the controller's own time (wall time minus the time blocked in
the transport, which includes the lab's simulation). The lab runs in its own
process (``aeqprop serve-sim``), as an instrument would, so its simulation does
not share the controller's interpreter. The floor is one round trip per phase:
free, beta1, homeostasis or beta2, update (4 per step).

    python benchmarks/hardware.py [--samples 200] [--layers 4,5,3]
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import subprocess
import sys
import time
import tomllib

import numpy as np

from drivers.hardware import InstrumentSubstrate
from drivers.wiring import lab_wiring_toml, parse_wiring
from protocols.aeqprop import Aeqprop
from protocols.eqprop import EqProp
from sim_backends.hopfield import HopfieldSubstrate

PHASES_PER_STEP = 4
PROTOCOLS = {
    "EqProp (centered)": lambda: EqProp(beta=0.5, lr=0.05),
    "Aeqprop (centered, native homeostasis)": lambda: Aeqprop(beta=1.0),
    "Aeqprop (centered, feedback homeostasis)": lambda: Aeqprop(beta=1.0, homeostasis="feedback"),
}
BUSES = {"pyvisa-py / TCP / SCPI": ("SCPI", "multichannel"), "pyserial / pty / board": ("board", "board")}
SEED = 3  # the lab's Hopfield network: HopfieldSubstrate(layers, seed=3, max_batch=1)


@contextlib.contextmanager
def lab_process(layers):
    """``aeqprop serve-sim`` in a child process; yields its addresses {"SCPI": ..., "board": ...}."""
    cmd = [
        sys.executable,
        "-m",
        "cli",
        "serve-sim",
        "--layers",
        ",".join(map(str, layers)),
        "--port",
        "0",
        "--seed",
        str(SEED),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        addresses = {}
        for line in proc.stdout:
            if "SCPI" in line or "board" in line:
                addresses["SCPI" if "SCPI" in line else "board"] = line.split()[-1]
            if line.startswith("Ctrl+C"):
                break
        yield addresses
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)
        proc.stdout.close()


def measure(layers, protocol, bus, profile, samples: int, seed: int = 0) -> dict:
    info = HopfieldSubstrate(layers, seed=SEED, max_batch=1).info
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, (samples, layers[0]))
    y = np.eye(layers[-1])[rng.integers(0, layers[-1], samples)]
    with lab_process(layers) as addresses:
        w = parse_wiring(tomllib.loads(lab_wiring_toml(info, addresses[bus], profile=profile)))
        with InstrumentSubstrate(w) as hw:
            proto = protocol()
            cal_trips = 0
            if getattr(proto, "calibrate_first", False):  # as a run does: calibrate once, before training
                rt = hw.round_trips
                proto.calibrate(hw, x[:1], y[:1])
                cal_trips = hw.round_trips - rt
            proto.step(hw, x[:1], y[:1])  # warm-up (imports, first connection)
            rt0, io0, (out0, in0) = hw.round_trips, hw.io_seconds, hw.bytes
            t0 = time.perf_counter()
            for i in range(samples):
                proto.step(hw, x[i : i + 1], y[i : i + 1])
            wall = time.perf_counter() - t0
            rt, io, (out1, in1) = hw.round_trips - rt0, hw.io_seconds - io0, hw.bytes
    return {
        "calibration_round_trips": cal_trips,
        "round_trips": rt / samples,
        "bytes": (out1 - out0 + in1 - in0) / samples,
        "controller_ms": (wall - io) / samples * 1e3,
        "wall_ms": wall / samples * 1e3,
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--layers", default="4,5,3")
    args = parser.parse_args(argv)
    layers = tuple(int(n) for n in args.layers.split(","))
    print(f"Command: python benchmarks/hardware.py --samples {args.samples} --layers {args.layers}\n")
    print(
        f"Hopfield {'-'.join(map(str, layers))} in the virtual lab; floor = {PHASES_PER_STEP} round trips "
        "per sample (one per phase)\n"
    )
    print(
        "| protocol | bus | round trips / sample | x floor | bytes / sample | controller ms / sample "
        "| wall ms / sample | calibration round trips (once per run) |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for pname, protocol in PROTOCOLS.items():
        for bname, (bus, profile) in BUSES.items():
            r = measure(layers, protocol, bus, profile, args.samples)
            print(
                f"| {pname} | {bname} | {r['round_trips']:.1f} | {r['round_trips'] / PHASES_PER_STEP:.2f} "
                f"| {r['bytes']:.0f} | {r['controller_ms']:.3f} | {r['wall_ms']:.3f} | {r['calibration_round_trips']} |"
            )
            sys.stdout.flush()


if __name__ == "__main__":
    main()
