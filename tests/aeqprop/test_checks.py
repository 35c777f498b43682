"""The report that a completed run did not learn: chance level and the test split's sampling error."""

from types import SimpleNamespace

import numpy as np

from aeqprop.checks import HealthPolicy, health


def run(best: float) -> SimpleNamespace:
    return SimpleNamespace(best_test_accuracy=best)


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
