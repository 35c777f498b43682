import numpy as np
import pytest

from aeqprop.checks import health
from aeqprop.data import load_dataset
from aeqprop.errors import ConfigurationError
from aeqprop.trainer import Position, Trainer, evaluate
from protocols.aeqprop import Aeqprop
from protocols.continual import ContinualEqProp
from protocols.eqprop import EqProp
from sim_backends.hopfield import HopfieldSubstrate


@pytest.fixture(scope="module")
def iris():
    return load_dataset("iris", seed=0)


def test_aeqprop_training_beats_chance_by_far_and_is_reproducible():
    wine = load_dataset("wine", seed=0)

    def run():
        sub = HopfieldSubstrate((13, 16, 3), eps=0.1, seed=0, tol=1e-3)
        before = evaluate(sub, wine.x_test, wine.labels_test)[1]
        result = Trainer(sub, Aeqprop(beta=1.0), wine, epochs=15, batch_size=8, seed=0).run()
        return before, result, sub.parameters()

    before, result, theta = run()
    assert before < 0.5
    assert result.final.test_accuracy >= 0.94
    assert result.history[-1].train_loss < result.history[0].train_loss
    _, again, theta2 = run()
    assert again.final.test_accuracy == result.final.test_accuracy
    assert all(np.array_equal(theta[n], theta2[n]) for n in theta)


def test_trainer_checks_before_the_first_step(iris):
    sub = HopfieldSubstrate((4, 8, 3), max_batch=4)
    with pytest.raises(ConfigurationError, match="wider than the substrate takes"):
        Trainer(sub, EqProp(), iris, epochs=1, batch_size=8)
    with pytest.raises(ConfigurationError, match="3 outputs"):
        Trainer(HopfieldSubstrate((4, 8, 3)), EqProp(), load_dataset("wine"), epochs=1, batch_size=4)
    with pytest.raises(ConfigurationError, match="epochs=0"):
        Trainer(HopfieldSubstrate((4, 8, 3)), EqProp(), iris, epochs=0, batch_size=4)


class OnlyRelaxes:
    """A substrate without the "eqprop" capability."""

    def __init__(self):
        self.info = HopfieldSubstrate((4, 8, 3)).info.__class__(
            n_inputs=4, n_outputs=3, parameter_shapes={}, parameter_bounds={}, capabilities=frozenset()
        )


def test_protocol_needing_a_missing_capability_is_refused(iris):
    with pytest.raises(ConfigurationError, match=r"needs capabilities \['eqprop'\]"):
        Trainer(OnlyRelaxes(), EqProp(), iris, epochs=1, batch_size=4)


def test_gradient_fidelity_is_measured_without_changing_the_run():
    wine = load_dataset("wine", seed=0)

    def run(fidelity_every):
        sub = HopfieldSubstrate((13, 16, 3), eps=0.1, seed=0, tol=1e-8)
        cosines = {}
        Trainer(
            sub, EqProp(beta=0.01, lr=0.1), wine, epochs=1, batch_size=8, seed=0, fidelity_every=fidelity_every
        ).run(on_step=lambda e, k, r: cosines.__setitem__(k, r.extra.get("fidelity_cosine")))
        return sub.parameters(), cosines

    theta, cosines = run(3)
    measured = {k: c for k, c in cosines.items() if c is not None}
    assert sorted(measured) == [k for k in range(len(cosines)) if (k + 1) % 3 == 0]
    assert min(measured.values()) > 0.99  # small-beta centered EqProp follows the gradient
    bare, _ = run(0)
    assert all(np.array_equal(theta[n], bare[n]) for n in theta)
    with pytest.raises(ConfigurationError, match="fidelity needs the oracle"):
        Trainer(OnlyRelaxes(), EqProp(), wine, epochs=1, batch_size=4, fidelity_every=2)


def test_relaxations_ending_at_the_sweep_cap_are_counted_and_reported():
    """A phase cut off at max_sweeps is counted per epoch (and per step in the store's extras);
    a completed run with any gets a warning. Counted independently: every relaxation of a
    one-sweep cap at a tolerance no single sweep meets."""
    wine = load_dataset("wine", seed=0)
    steps = []

    def run(**settings):
        sub = HopfieldSubstrate((13, 16, 3), eps=0.1, seed=0, **settings)
        trainer = Trainer(sub, Aeqprop(beta=1.0), wine, epochs=1, batch_size=8, seed=0)
        return trainer, trainer.run(on_step=lambda e, k, report: steps.append(report))

    trainer, capped = run(tol=1e-12, max_sweeps=1)
    n = trainer.steps_per_epoch()
    assert capped.final.unsettled_phases == 3 * n  # free, beta1, beta2 of every step
    assert all(r.unsettled == ["free", "beta1", "beta2"] and r.extra["unsettled_phases"] == 3 for r in steps)
    warnings = health(capped, wine)
    assert any(f"{3 * n} relaxations ended unsettled at the sweep cap (epochs 1)" in w for w in warnings)
    steps.clear()
    _, settled = run(tol=1e-3)
    assert settled.final.unsettled_phases == 0 and not any(r.unsettled for r in steps)
    assert not any("unsettled" in w for w in health(settled, wine))


def test_continual_eqprop_one_sweep_relaxations_are_not_unsettled_phases():
    """Continual EqProp relaxes one sweep at a time on purpose: its nudged phase counts as
    unsettled only if the whole phase ends unconverged."""
    wine = load_dataset("wine", seed=0)
    sub = HopfieldSubstrate((13, 16, 3), eps=0.1, seed=0, tol=1e-3)
    reports = []
    Trainer(sub, ContinualEqProp(), wine, epochs=1, batch_size=8, seed=0).run(
        on_step=lambda e, k, report: reports.append(report)
    )
    converged = [r.extra["nudged_converged"] == 1.0 for r in reports]
    assert any(converged)
    assert all(("nudged" in r.unsettled) != ok for r, ok in zip(reports, converged, strict=True))


def test_a_checkpoint_s_running_sums_resume_with_or_without_the_unsettled_count():
    """Checkpoints written before the unsettled count (three running sums) still resume; one with
    the count goes on from it."""
    iris = load_dataset("iris", seed=0)
    sub = HopfieldSubstrate((4, 8, 3), seed=0)
    trainer = Trainer(sub, EqProp(), iris, epochs=1, batch_size=8, seed=0)
    order = np.random.default_rng(0).permutation(len(iris.x_train))
    record = trainer.run_epoch(1, start=Position(1, 2, 2, order, (1.0, 4.0, 30.0)))
    assert record is not None and record.unsettled_phases == 0

    capped = Trainer(
        HopfieldSubstrate((4, 8, 3), seed=0, tol=1e-12, max_sweeps=1), EqProp(), iris, epochs=1, batch_size=8
    )
    record = capped.run_epoch(1, start=Position(1, 2, 2, order, (1.0, 4.0, 30.0, 5.0)))
    assert record is not None  # the checkpoint's 5, then 3 phases of each step left in the epoch
    assert record.unsettled_phases == 5 + 3 * (capped.steps_per_epoch() - 2)


def _iris_as_images():
    """Iris's 4 features read as 1x2x2 images, so that a left-right mirror swaps features 0/1 and 2/3."""
    from dataclasses import replace

    return replace(load_dataset("iris", seed=0), shape=(1, 2, 2))


def test_flip_half_mirrors_about_half_of_the_images_left_right_and_leaves_the_input_alone():
    from aeqprop.augment import flip_half

    x = np.random.default_rng(0).normal(size=(400, 2 * 3 * 5))
    kept = x.copy()
    out = flip_half(x, (2, 3, 5), np.random.default_rng(1))
    assert np.array_equal(x, kept)
    img, orig = out.reshape(400, 2, 3, 5), x.reshape(400, 2, 3, 5)
    mirrored = np.array([np.array_equal(img[i], orig[i, :, :, ::-1]) for i in range(400)])
    same = np.array([np.array_equal(img[i], orig[i]) for i in range(400)])
    assert np.all(mirrored ^ same)  # each image is one or the other, never both (random rows are not symmetric)
    assert 160 <= mirrored.sum() <= 240  # 1/2, within 4 standard deviations


class Recording(EqProp):
    def __init__(self):
        super().__init__()
        self.seen = []

    def step(self, substrate, x, y):
        self.seen.append(np.array(x))
        return super().step(substrate, x, y)


def test_augmented_training_sees_mirrored_batches_in_the_same_order_and_resumes_to_the_same_bits():
    data = _iris_as_images()
    plain, flipped = Recording(), Recording()
    Trainer(HopfieldSubstrate((4, 8, 3), seed=0), plain, data, epochs=1, batch_size=8, seed=3).run()
    whole = HopfieldSubstrate((4, 8, 3), seed=0)
    Trainer(whole, flipped, data, epochs=2, batch_size=8, seed=3, augment="flip").run()
    n = len(plain.seen)
    mirror = [a[:, [1, 0, 3, 2]] for a in plain.seen]
    kinds = [
        [np.array_equal(f[i], a[i]) or np.array_equal(f[i], m[i]) for i in range(len(a))]
        for f, a, m in zip(flipped.seen[:n], plain.seen, mirror)
    ]
    assert all(all(k) for k in kinds)  # the same samples in the same order, each as is or mirrored
    changed = sum(int(np.sum(np.any(f != a, axis=1))) for f, a in zip(flipped.seen[:n], plain.seen))
    assert 0.3 * len(data.x_train) < changed < 0.7 * len(data.x_train)

    # stopped after 5 steps of epoch 2 and resumed in a fresh trainer: the same parameters
    sub = HopfieldSubstrate((4, 8, 3), seed=0)
    first = Trainer(sub, EqProp(), data, epochs=2, batch_size=8, seed=3, augment="flip")
    first.run_epoch(1)
    saved = {}
    stops = iter(range(10**6))
    first.run_epoch(
        2,
        hooks={
            "should_stop": lambda: next(stops) == 4,
            "on_checkpoint": lambda pos: saved.update(pos=pos, rng=first.random_states(), theta=sub.parameters()),
        },
    )
    again = HopfieldSubstrate((4, 8, 3), seed=0)
    again.set_parameters(saved["theta"])
    second = Trainer(again, EqProp(), data, epochs=2, batch_size=8, seed=3, augment="flip")
    second.set_random_states(saved["rng"])
    second.run_epoch(2, start=saved["pos"])
    for name, value in whole.parameters().items():
        assert np.array_equal(value, again.parameters()[name]), name


def test_augmentation_is_refused_on_data_without_an_image_shape_and_by_the_config(iris):
    with pytest.raises(ConfigurationError, match="needs image data"):
        Trainer(HopfieldSubstrate((4, 8, 3)), EqProp(), iris, epochs=1, batch_size=4, augment="flip")
    with pytest.raises(ConfigurationError, match="must be one of none, flip"):
        Trainer(HopfieldSubstrate((4, 8, 3)), EqProp(), _iris_as_images(), epochs=1, batch_size=4, augment="crop")
    from aeqprop.config import validate

    with pytest.raises(ConfigurationError, match="augment"):
        validate({"schedule": {"augment": "crop"}})
