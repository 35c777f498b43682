"""The netlist substrate against ngspice's DC operating point (skipped where ngspice is missing)."""

import numpy as np
import pytest

import sim_backends.netlist as netlist
from sim_backends.netlist import NetlistSubstrate
from sim_backends.netlist_spice import (
    KINDS,
    TIGHT,
    compare,
    ngspice_available,
    ngspice_op,
    random_circuit,
    random_layered_circuit,
)

needs_ngspice = pytest.mark.skipif(
    ngspice_available() is None,
    reason="ngspice is not installed (Debian package ngspice; .ci/run installs it when it can)",
)


@needs_ngspice
@pytest.mark.parametrize("kind", KINDS)
def test_random_circuits_agree_with_ngspice_within_the_derived_tolerance(kind):
    worst = 0.0
    for seed in range(10):
        diff, tol = compare(random_circuit(seed, kind))
        assert diff <= tol, f"{kind} circuit {seed}: {diff:.2e} V off ngspice, tolerance {tol:.2e} V"
        worst = max(worst, diff / tol)
    if kind in ("ideal", "mixed"):
        assert worst > 1e-3  # the sharp-diode model difference shows: the tolerance is not vacuous


@needs_ngspice
@pytest.mark.parametrize("kind", KINDS)
def test_circuits_the_sweeps_settle_alone_agree_with_ngspice(kind, monkeypatch):
    exact = []
    solve = netlist.solve
    monkeypatch.setattr(netlist, "solve", lambda *a, **k: exact.append(1) or solve(*a, **k))
    worst = 0.0
    for seed in range(6):
        diff, tol = compare(random_layered_circuit(seed, kind))
        assert diff <= tol, f"{kind} layered circuit {seed}: {diff:.2e} V off ngspice, tolerance {tol:.2e} V"
        worst = max(worst, diff / tol)
    assert not exact  # no sample needed the exact solver
    if kind in ("ideal", "mixed"):
        assert worst > 1e-3


LED = "led\nV1 a 0 5\nR1 a b 200 train\nD1 b 0 dled\n.model DLED D (IS=1e-25 N=2)\n.output b\n"


def led_voltage():
    sub = NetlistSubstrate(text=LED)
    sub.clamp(np.zeros((1, 0)))
    report = sub.relax()
    assert report.converged
    return float(sub.node_voltages()["b"][0])


def test_a_small_is_diode_conducts_as_spice_computes_it():
    # IS = 1e-25 A, N = 2 (an LED-like diode) behind 200 ohm from 5 V: ngspice-39 gives 2.745773895556 V
    # (11.3 mA); an exponential cut off at 40 N VT gave 5.00 V and 1.4 uA
    assert abs(led_voltage() - 2.745773895556309) <= 1e-9


@needs_ngspice
def test_a_small_is_diode_against_ngspice():
    ref = ngspice_op(LED.replace(".output b\n", "").replace(" train", ""), *TIGHT)
    assert abs(led_voltage() - ref["b"]) <= 1e-10
