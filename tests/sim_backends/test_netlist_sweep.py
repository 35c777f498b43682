"""The coloured sweeps of the netlist substrate: against the exact solver, energy descent, stalls."""

import numpy as np
import pytest
import scipy.sparse as sp

import sim_backends.netlist as netlist
from sim_backends.netlist import NetlistSubstrate, layered_netlist
from sim_backends.netlist_kkt import energy, rows
from sim_backends.netlist_solve import feasible_start
from sim_backends.netlist_spice import KINDS, random_layered_circuit
from sim_backends.netlist_sweep import SweepSettings, sweep
from sim_backends.resistive import ResistiveSubstrate
from tests.sim_backends.test_netlist import kcl_check, random_circuit


@pytest.fixture
def exact_calls(monkeypatch):
    """Counts the exact solver's calls from the substrate."""
    calls = []

    def spy(*args, **kwargs):
        calls.append(args[3].shape[0])
        return solve(*args, **kwargs)

    solve = netlist.solve
    monkeypatch.setattr(netlist, "solve", spy)
    return calls


def voltages(sub):
    return np.array(list(sub.node_voltages().values()))


@pytest.mark.parametrize("kind", KINDS)
def test_sweeps_alone_settle_layered_circuits_as_the_exact_solver_does(kind, exact_calls):
    for seed in range(6):
        sub = NetlistSubstrate(text=random_layered_circuit(seed, kind).ours, g_max=1.0, g_min=0.0)
        sub.clamp(np.zeros((1, 0)))
        assert sub.relax().converged
        assert not exact_calls  # the sweeps settled it
        kcl_check(sub)
        swept = voltages(sub)
        sub.clamp(np.zeros((1, 0)))
        sub._relax(1e-13, 1000, exact=True)
        assert np.max(np.abs(swept - voltages(sub))) <= 1e-10
        exact_calls.clear()


def test_a_batch_through_a_layered_network_with_nudging_is_swept_and_warm_started(exact_calls):
    res = ResistiveSubstrate(layers=(6, 12, 4), seed=2, gain=3.0)
    sub = NetlistSubstrate(text=layered_netlist(res), g_max=1.0)
    rng = np.random.default_rng(2)
    x, y = rng.uniform(0, 1, (5, 6)), rng.uniform(-0.5, 0.5, (5, 4))
    sub.clamp(x)
    cold = sub.relax().sweeps
    sub.nudge(0.5, y)
    warm = sub.relax().sweeps
    assert not exact_calls and warm < cold  # the nudged phase starts from the free one
    kcl_check(sub, 0.5, y)
    swept = voltages(sub)
    sub._relax(1e-13, 1000, exact=True)
    assert np.max(np.abs(swept - voltages(sub))) <= 1e-10


# b pushes current into c through the ideal diode D1: each end, swept alone, stops at the other's
# bound, so the sweeps stick at V_b = V_c = 0 V; the solution is 2.5 V on both
STUCK = "V1 a 0 5\nR1 a b 1k train\nD1 b c\nR2 c 0 1k\n.output c\n"


def test_sweeps_stuck_at_a_point_that_is_no_solution_end_exact(exact_calls):
    sub = NetlistSubstrate(text=STUCK)
    sub.clamp(np.zeros((1, 0)))
    g = sub._conductances()
    bt = sub._batch(g, 0.0)
    sw = sweep(sub.colouring, bt, g, feasible_start(sub.st, bt, sub._z), 1e-12, sub._top, sub.r_nodes)
    assert sw.stalled and not sw.ok[0]
    assert sub.relax().converged and exact_calls == [1]
    v = sub.node_voltages()
    assert abs(v["b"][0] - 2.5) <= 1e-12 and abs(v["c"][0] - 2.5) <= 1e-12
    kcl_check(sub)


def test_slow_sweeps_hand_the_samples_over_and_every_report_is_checked(exact_calls):
    # random non-layered circuits: strongly coupled free nodes, floating sources, diodes between free nodes
    handed = 0
    for seed in range(6):
        sub = NetlistSubstrate(text=random_circuit(seed), g_max=2.0)
        x = np.random.default_rng(seed).uniform(-1, 1, (4, 2))
        sub.clamp(x)
        assert sub.relax().converged
        kcl_check(sub)
        handed += sum(exact_calls)
        exact_calls.clear()
    assert handed > 0


def test_every_sweep_lowers_the_co_content():
    for seed, kind in enumerate(("shockley", "mixed")):
        sub = NetlistSubstrate(text=random_layered_circuit(seed + 3, kind).ours, g_max=1.0, g_min=0.0)
        sub.clamp(np.zeros((1, 0)))
        g = sub._conductances()
        bt = sub._batch(g, 0.0)
        hbase = sub.st.base_hessian(g, 0.0)
        z = feasible_start(sub.st, bt, sub._z)
        f = [float(energy(sub.st, bt, hbase, z)[0])]
        one = SweepSettings(max_sweeps=1)
        for _ in range(8):
            z = sweep(sub.colouring, bt, g, z, 0.0, sub._top, sub.r_nodes, one).z
            f.append(float(energy(sub.st, bt, hbase, z)[0]))
        assert all(b <= a + 1e-12 * abs(a) for a, b in zip(f, f[1:]))
        assert f[-1] < f[0]


def test_the_colouring_separates_every_element_and_finds_the_layers():
    sub = NetlistSubstrate(text=random_circuit(4), g_max=2.0)
    colour, st = sub.colouring.colour, sub.st
    for A in (st.Ar, st.Ax, st.Ad):  # no element joins two free groups of one colour
        A = sp.csr_matrix(A)
        for r in range(A.shape[0]):
            groups = A.indices[A.indptr[r] : A.indptr[r + 1]]
            assert len(set(colour[groups].tolist())) == len(groups)
    res = ResistiveSubstrate(layers=(3, 7, 6, 2), seed=0)
    layered = NetlistSubstrate(text=layered_netlist(res), g_max=1.0)
    assert len(layered.colouring.classes) == 2  # odd and even layers
    sizes = sorted(len(c.nodes) for c in layered.colouring.classes)
    assert sizes == sorted([7 + 2, 6])


def test_the_input_drive_equals_the_resistor_currents_into_each_group():
    sub = NetlistSubstrate(text=random_circuit(5), g_max=2.0)
    x = np.random.default_rng(5).uniform(-1, 1, (3, 2))
    sub.clamp(x)
    g = sub._conductances()
    direct = rows(sub.st.Ar.T @ sp.diags(g) @ sub.st.inc, sub._off)
    assert np.allclose(sub.drive.c(g, x), direct, rtol=1e-13, atol=1e-15)
