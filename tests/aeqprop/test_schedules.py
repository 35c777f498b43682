"""Schedules: factor values at given steps, and the trainer hook setting beta, lr and release."""

import math

import numpy as np
import pytest

from aeqprop.data import Dataset
from aeqprop.errors import ConfigurationError
from aeqprop.schedules import Schedule, ScheduleHook
from aeqprop.trainer import Trainer
from protocols.aeqprop import Aeqprop
from protocols.eqprop import EqProp
from sim_backends.hopfield import HopfieldSubstrate


@pytest.mark.parametrize(
    "spec, step, expected",
    [
        ("constant", 70, 1.0),
        ("step", 49, 1.0),
        ("step", 50, 0.1),
        ("step", 75, 0.01),
        ("step:0.2,0.4:0.5", 40, 0.25),
        ("cosine", 50, 0.5),
        ("cosine:0.2", 50, 0.6),
        ("cosine", 25, 0.5 * (1 + math.cos(math.pi / 4))),
        ("exponential", 50, 0.1),
        ("exponential:0.25", 50, 0.5),
    ],
)
def test_factor_at_step(spec, step, expected):
    assert Schedule.parse(spec).factor(step, 100) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    "spec, fragment",
    [
        ("linear", "kind"),
        ("step:0.8,0.2", "increasing"),
        ("exponential:0", "> 0"),
        ("cosine:a", "float"),
        ("step:0.5:-1", "gamma"),
    ],
)
def test_bad_schedules_are_one_line_configuration_errors(spec, fragment):
    with pytest.raises(ConfigurationError, match=fragment) as info:
        Schedule.parse(spec, "lr schedule")
    assert "\n" not in str(info.value) and "lr schedule" in str(info.value)


@pytest.mark.parametrize("spec", ["constant", "step", "step:0.3,0.6:1.7", "cosine:2.5", "cosine", "exponential:3"])
def test_largest_is_the_largest_factor_over_the_run(spec):
    sched = Schedule.parse(spec)
    assert sched.largest() == pytest.approx(max(sched.factor(k, 100) for k in range(101)), rel=1e-12)


@pytest.mark.parametrize(
    "make, spec, refused",
    [
        (lambda b: Aeqprop(beta=b), "step:0.5:3", True),  # centered: -b/2 reaches -1.5
        (lambda b: Aeqprop(beta=b), "step:0.5:1.9", False),
        (lambda b: Aeqprop(beta=b), "cosine:2.5", True),
        (lambda b: Aeqprop(beta=b), "exponential:1.5", False),
        (lambda b: EqProp(beta=b / 2, lr=0.1, variant="random-sign"), "step:0.5,0.75:2", True),  # -b reaches -2
        (lambda b: EqProp(beta=b / 2, lr=0.1, variant="positive"), "step:0.5,0.75:10", False),  # never below 0
    ],
)
def test_a_beta_schedule_that_would_stop_the_run_midway_is_refused_before_it(make, spec, refused):
    """The refusal agrees with the protocol's own check at the schedule's largest beta, and the check
    draws nothing from a random-sign protocol's generator."""
    protocol = make(1.0)
    state = protocol.rng.bit_generator.state if hasattr(protocol, "rng") else None
    if refused:
        with pytest.raises(ConfigurationError, match=r"under the beta schedule .* destroys the minimum"):
            ScheduleHook(protocol, beta=spec)
        with pytest.raises(ConfigurationError, match="destroys the minimum"):
            make(Schedule.parse(spec).largest())
    else:
        ScheduleHook(protocol, beta=spec)
        make(Schedule.parse(spec).largest())
    if state is not None:
        assert protocol.rng.bit_generator.state == state


def test_hook_scales_lr_per_tensor_and_beta():
    protocol = EqProp(beta=0.5, lr={"W": 0.2, "b": 0.1})
    hook = ScheduleHook(protocol, lr="cosine", beta="step:0.5:0.5")
    hook(1, 0, 50, 100)
    assert protocol.lr == pytest.approx({"W": 0.1, "b": 0.05})
    assert protocol.beta == pytest.approx(0.25)
    hook(1, 0, 0, 100)
    assert protocol.beta == pytest.approx(0.5) and protocol.lr["W"] == pytest.approx(0.2)


def test_aeqprop_learning_rate_scales_through_the_release():
    protocol = Aeqprop(beta=1.0, release=0.8)
    ScheduleHook(protocol, lr="exponential:0.25")(1, 0, 50, 100)
    assert protocol.release == pytest.approx(0.4)
    with pytest.raises(ConfigurationError, match="joint equilibrium"):
        ScheduleHook(Aeqprop(release="equilibrium"), lr="cosine")
    with pytest.raises(ConfigurationError, match="stay > 0"):
        ScheduleHook(Aeqprop(), beta="cosine")


def test_trainer_applies_the_schedule_at_every_step():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (40, 6))
    labels = rng.integers(0, 3, 40)
    data = Dataset("random", x[:30], labels[:30], x[30:], labels[30:], n_classes=3)
    protocol = EqProp(beta=0.5, lr=0.1)
    hook = ScheduleHook(protocol, lr="step:0.5:0.1")
    seen = []

    def before_step(*position):
        hook(*position)
        seen.append(protocol.lr)

    sub = HopfieldSubstrate((6, 8, 3), tol=1e-3)
    Trainer(sub, protocol, data, epochs=2, batch_size=10, before_step=before_step).run()
    assert seen == pytest.approx([0.1, 0.1, 0.1, 0.01, 0.01, 0.01])


def test_eps_schedule_scales_the_substrate_compliance():
    sub = HopfieldSubstrate((6, 8, 3), eps={"W": 0.2, "b": 0.1})
    hook = ScheduleHook(Aeqprop(), substrate=sub, eps={"kind": "cosine"})
    hook(1, 3, 50, 100)
    assert sub.eps == pytest.approx({"W1": 0.1, "b1": 0.05, "W2": 0.1, "b2": 0.05})
    with pytest.raises(ConfigurationError, match="compliance eps"):
        ScheduleHook(Aeqprop(), substrate=object(), eps="cosine")


def _aeqprop_update(beta: float, eps: float, hold: bool, step: int) -> np.ndarray:
    """Theta's move over one Aeqprop step at global step ``step`` of 100 under a beta step schedule."""
    rng = np.random.default_rng(3)
    sub = HopfieldSubstrate((6, 8, 3), eps=eps, tol=1e-10, max_sweeps=2000, seed=1)
    x, y = rng.uniform(0, 1, (10, 6)), np.eye(3)[rng.integers(0, 3, 10)]
    protocol = Aeqprop(beta=beta)
    ScheduleHook(protocol, beta="step:0.5:0.5", substrate=sub, hold_step=hold)(1, 0, step, 100)
    before = sub.parameters()
    protocol.step(sub, x, y)
    return np.concatenate([(sub.parameters()[n] - before[n]).ravel() for n in sorted(before)])


def test_hold_step_keeps_the_aeqprop_step_under_a_beta_schedule():
    """Past the milestone b halves. Held, eps doubles and the move matches the move at the initial b
    to first order in b (cosine > 0.999, same length within 2 %); not held, it is half as long."""
    early = _aeqprop_update(0.02, 0.1, True, 10)
    held = _aeqprop_update(0.02, 0.1, True, 60)
    plain = _aeqprop_update(0.02, 0.1, False, 60)
    assert held @ early / np.linalg.norm(held) / np.linalg.norm(early) > 0.999
    assert np.linalg.norm(held) / np.linalg.norm(early) == pytest.approx(1.0, abs=0.02)
    assert np.linalg.norm(plain) / np.linalg.norm(early) == pytest.approx(0.5, abs=0.02)


def test_hold_step_refusals_are_one_line():
    sub = HopfieldSubstrate((6, 8, 3))
    with pytest.raises(ConfigurationError, match="give a beta schedule"):
        ScheduleHook(Aeqprop(), substrate=sub, hold_step=True)
    with pytest.raises(ConfigurationError, match="only Aeqprop"):
        ScheduleHook(EqProp(beta=0.5, lr=0.1), beta="step", substrate=sub, hold_step=True)
    with pytest.raises(ConfigurationError, match="hold_step needs a simulated substrate"):
        ScheduleHook(Aeqprop(), beta="step", substrate=object(), hold_step=True)


def test_a_run_config_holds_the_step_with_schedule_hold_step():
    from aeqprop.config import load_config
    from aeqprop.parts import schedule_hook

    sub = HopfieldSubstrate((6, 8, 3), eps=0.1)
    cfg = load_config(overrides=['schedule.beta={kind = "step", gamma = 0.5}', "schedule.hold_step=true"])
    hook = schedule_hook(cfg, Aeqprop(beta=0.5), sub)
    assert hook is not None
    hook(1, 0, 50, 100)
    assert sub.eps["W1"] == pytest.approx(0.2)
    with pytest.raises(ConfigurationError, match="give a beta schedule"):
        schedule_hook(load_config(overrides=["schedule.hold_step=true"]), Aeqprop(), sub)
