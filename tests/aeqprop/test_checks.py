"""The report that a completed run did not learn (chance level and the test split's sampling error),
and that some of its relaxations ended unsettled."""

from types import SimpleNamespace

import numpy as np

from aeqprop.checks import HealthPolicy, health, unsettled


def run(best: float) -> SimpleNamespace:
    return SimpleNamespace(best_test_accuracy=best, history=[])


def split(labels) -> SimpleNamespace:
    return SimpleNamespace(labels_test=np.asarray(labels))


def test_a_lucky_figure_on_a_small_split_is_not_learning():
    small = split([0, 1, 2, 0, 1, 2])  # majority 1/3; 2 standard errors at chance: 0.385
    assert health(run(0.50), small)  # 3 of 6 right: within chance's spread
    assert "of 6 test samples" in health(run(0.50), small)[0]
    assert not health(run(0.75), small)


def test_on_a_large_split_the_fixed_margin_decides():
    large = split(np.arange(3000) % 3)  # 2 standard errors at chance: 0.017 < the 0.02 margin
    assert health(run(1 / 3 + 0.019), large)
    assert not health(run(1 / 3 + 0.021), large)
    assert not health(run(1 / 3 + 0.019), large, HealthPolicy(margin=0.01, z=0.0))


def test_relaxations_at_the_sweep_cap_are_summed_over_epochs():
    history = [SimpleNamespace(epoch=e, unsettled_phases=n) for e, n in enumerate([0, 2, 0, 1, 1, 1, 1, 1], 1)]
    (message,) = unsettled(history)
    assert message.startswith("7 relaxations ended unsettled at the sweep cap (epochs 2, 4, 5, 6, 7, ...)")
    assert not unsettled(history[:1]) and not unsettled([])
