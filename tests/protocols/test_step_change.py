"""A step's parameter change, computed when read, is the change that step made."""

import numpy as np

from protocols.aeqprop import Aeqprop
from protocols.base import Difference, step_change
from protocols.eqprop import EqProp
from sim_backends.hopfield import HopfieldSubstrate


def test_the_change_read_after_later_steps_is_the_change_of_its_own_step():
    rng = np.random.default_rng(0)
    x, y = rng.uniform(0, 1, (8, 6)), np.eye(3)[rng.integers(0, 3, 8)]
    for protocol in (Aeqprop(beta=1.0), EqProp(beta=0.5, lr=0.1)):
        sub = HopfieldSubstrate((6, 9, 3), eps=0.1, seed=1, tol=1e-10)
        before = {n: v.copy() for n, v in sub.parameters().items()}
        first = protocol.step(sub, x, y).delta
        after = {n: v.copy() for n, v in sub.parameters().items()}
        assert isinstance(first, Difference)  # the Hopfield network hands out read-only snapshots
        protocol.step(sub, x, y)  # moves theta again
        assert sorted(first) == sorted(before) and len(first) == 4
        for n in before:
            assert np.array_equal(first[n], after[n] - before[n])
            assert np.abs(first[n]).max() > 0


def test_writable_arrays_are_subtracted_at_once():
    a, b = {"w": np.ones(3)}, {"w": np.zeros(3)}
    d = step_change(a, b)
    a["w"][:] = 5.0  # a substrate that writes its arrays in place: the change was taken before
    assert isinstance(d, dict) and np.array_equal(d["w"], np.ones(3))
