"""Shared fixtures. Hardware tests are opt-in (see the --instrument option)."""

from __future__ import annotations

import signal

import numpy as np
import pytest

from sim_backends.hopfield import HopfieldSubstrate

#: The longest one wait of a subprocess test may take (s). Those tests wait for events (a checkpoint in
#: the store, a worker holding a job, the process ending), never for a fixed delay, so this only bounds
#: a hung process on a loaded machine: it is generous because a tight bound fails a slow CI run.
PATIENCE = 600.0

# A shell runs a background command (`cmd &` without job control: nohup, a CI runner's script)
# with SIGINT ignored, and Python then keeps it ignored, in this process and in every process
# a test starts. The tests that stop a run, a sweep or the virtual lab with SIGINT (Ctrl+C)
# need it delivered: put Python's own handler back (processes started from here then get the
# default disposition, and install the same handler themselves).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def make_interior_net(layers=(20, 30, 5), eps=1e-3, batch=8, seed=0, **options):
    """A small Hopfield net whose units mostly sit inside their boxes, settled to 1e-14.

    Returns (substrate, x, y). Weights are scaled down and hidden biases raised
    so that few units touch a bound and none sits within 1e-3 of switching,
    where the gradient of the loss is smooth.
    """
    options.setdefault("tol", 1e-14)
    options.setdefault("max_sweeps", 100_000)
    return interior(HopfieldSubstrate(layers, eps=eps, seed=seed + 1, **options), layers, batch, seed)


def interior(sub, layers, batch, seed):
    """Scale a layered substrate's weights down and raise its hidden biases (units inside their
    boxes), hold its knobs at theta, and draw a batch: (substrate, x, y)."""
    rng = np.random.default_rng(seed)
    sub.W[1] *= 0.5
    for l in range(2, sub.L + 1):
        sub.W[l] *= 0.4
    for l in range(1, sub.L):
        sub.b[l][:] = 0.3 + rng.normal(0, 0.1, layers[l])
    sub.b[sub.L][:] = rng.normal(0, 0.1, layers[-1])
    sub.set_knobs(sub.parameters())
    x = rng.uniform(0, 1, (batch, layers[0]))
    y = np.eye(layers[-1])[rng.integers(0, layers[-1], batch)]
    return sub, x, y


@pytest.fixture
def interior_net():
    """Factory fixture: ``interior_net(layers=..., eps=..., batch=..., seed=...)``."""
    return make_interior_net


def flat(d) -> np.ndarray:
    return np.concatenate([np.ravel(d[n]) for n in sorted(d)])


@pytest.fixture
def flatten():
    return flat


def rel_error(a, b) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.fixture
def rel():
    return rel_error


def pytest_addoption(parser):
    parser.addoption(
        "--instrument",
        action="append",
        default=[],
        metavar="ADDRESS",
        help="run the hardware tests against this instrument (VISA resource or serial port); repeatable",
    )


@pytest.fixture
def instrument_address(request):
    """The first --instrument ADDRESS; the test is skipped when none was given."""
    addresses = request.config.getoption("--instrument")
    if not addresses:
        pytest.skip("hardware test: give --instrument ADDRESS to run it")
    return addresses[0]
