"""Narrowing in the command line: a capability is used only on a substrate that has it."""

import numpy as np
from typer.testing import CliRunner

import cli
from aeqprop import registry
from sim_backends.hopfield import HopfieldSubstrate


class NoOracle:
    """A substrate without the capability "oracle" (no loss, no true_gradient), as a bench would be."""

    def __init__(self, layers=(4, 5, 3), seed=0, **options):
        self.inner = HopfieldSubstrate(layers, seed=seed)
        self.info = self.inner.info
        self.closed = False

    def clamp(self, x: np.ndarray) -> None:
        self.inner.clamp(x)

    def nudge(self, beta, y=None):
        self.inner.nudge(beta, y)

    def relax(self):
        return self.inner.relax()

    def outputs(self):
        return self.inner.outputs()

    def parameters(self):
        return self.inner.parameters()

    def close(self):
        self.closed = True


def test_gradcheck_on_a_backend_without_an_oracle_is_one_line(monkeypatch):
    real = registry.load
    monkeypatch.setattr(registry, "load", lambda kind, name: NoOracle if name == "bench" else real(kind, name))
    result = CliRunner().invoke(cli.app, ["gradcheck", "--backend", "bench", "--layers", "4,5,3"])
    assert result.exit_code == 2
    lines = [l for l in result.output.splitlines() if l.strip()]
    assert lines == [
        "error: backend bench has no oracle gradient (capability 'oracle'); gradcheck compares against it"
    ], result.output
