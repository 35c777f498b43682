"""Aeqprop's step clipping (protocols/step_clip.py): the release in two parts measures the step and
cuts a jump to the cap; a step within the cap is the plain release's step. The reference for each
step is the plain one-part release on a twin substrate."""

import math

import numpy as np
import pytest

from aeqprop.errors import ConfigurationError
from protocols.aeqprop import Aeqprop
from protocols.step_clip import SEEN, StepClip
from tests.protocols.test_aeqprop import NoPeeking


def steps(interior_net, typical=None, factor=2.0, release=1.0, seen=10):
    """The plain step and the clipped step of the same batch from the same theta, and the clip."""
    plain_sub, x, y = interior_net(eps=1e-3)
    clipped_sub, _, _ = interior_net(eps=1e-3)
    plain = Aeqprop(beta=0.1, release=release).step(plain_sub, x, y)
    protocol = Aeqprop(beta=0.1, release=release, step_clip=factor)
    if typical is not None:
        protocol.clip.typical, protocol.clip.seen = dict(typical), seen
    clipped = protocol.step(NoPeeking(clipped_sub), x, y)  # agnostic: only knobs, releases and reads
    return plain, clipped, protocol.clip


def per_unit(delta, release=1.0, nudge=0.1):
    return {n: float(np.linalg.norm(v)) / (release * nudge) for n, v in delta.items()}


def cosine(a, b):
    fa = np.concatenate([np.ravel(a[n]) for n in sorted(a)])
    fb = np.concatenate([np.ravel(b[n]) for n in sorted(b)])
    return float(fa @ fb / np.linalg.norm(fa) / np.linalg.norm(fb))


def test_a_step_within_the_cap_is_the_plain_release_s_step(interior_net, flatten, rel):
    plain, clipped, clip = steps(interior_net)  # first step: no typical length yet, nothing cut
    assert clipped.extra["step_clip_scale"] == 1.0
    # the second part starts from the state settled under the first part's theta: O(eps) apart
    assert rel(flatten(clipped.delta), flatten(plain.delta)) <= 2e-3
    assert clipped.extra["reads"] == plain.extra["reads"] + 1  # the read after the release's first part
    # the typical lengths start at the first step's, per unit of release and nudging
    for n, length in per_unit(plain.delta).items():
        assert clip.typical[n] == pytest.approx(length, rel=2e-3)


def test_a_jump_is_cut_to_the_cap_and_keeps_its_direction(interior_net):
    full, _, _ = steps(interior_net)
    lengths = per_unit(full.delta)
    typical = dict(lengths)
    typical["W2"] = lengths["W2"] / 4  # W2's step reads as 4 times its typical length: cut to 2 times
    plain, clipped, _ = steps(interior_net, typical, factor=2.0)
    assert clipped.extra["step_clip_scale"] == pytest.approx(0.5, rel=1e-9)
    assert per_unit(clipped.delta)["W2"] == pytest.approx(2 * typical["W2"], rel=1e-3)
    assert cosine(clipped.delta, plain.delta) > 1 - 1e-6  # one release moves every tensor: the same direction
    for n in plain.delta:
        assert np.linalg.norm(clipped.delta[n]) == pytest.approx(0.5 * np.linalg.norm(plain.delta[n]), rel=3e-3)


def test_a_step_is_never_cut_below_the_release_s_first_part(interior_net):
    full, _, _ = steps(interior_net)
    typical = {n: v * 1e-6 for n, v in per_unit(full.delta).items()}
    plain, clipped, clip = steps(interior_net, typical)
    assert clipped.extra["step_clip_scale"] == clip.probe == 0.1
    for n in plain.delta:
        assert np.allclose(clipped.delta[n], 0.1 * plain.delta[n], rtol=1e-9, atol=1e-15)  # the first part only


def test_a_shortened_release_schedule_is_not_read_as_a_jump(interior_net):
    """Lengths count per unit of release: the lr schedule's shorter release is no smaller step."""
    full, _, _ = steps(interior_net)
    plain, clipped, _ = steps(interior_net, per_unit(full.delta), release=0.25)
    assert clipped.extra["step_clip_scale"] == 1.0
    assert np.linalg.norm(clipped.delta["W1"]) == pytest.approx(0.25 * np.linalg.norm(full.delta["W1"]), rel=1e-3)


def test_the_typical_length_counts_a_jump_only_at_its_cap_and_survives_a_restore():
    clip = StepClip(2.0, memory=4, warmup=2)
    assert clip.scale({"W1": 100.0}) == 1.0  # warm-up: nothing cut
    clip.update({"W1": 1.0})
    clip.update({"W1": 3.0})  # warm-up steps count in full: mean 2
    assert clip.typical["W1"] == pytest.approx(2.0)
    assert clip.scale({"W1": 3.0}) == 1.0 and clip.scale({"W1": 8.0}) == pytest.approx(0.5)
    clip.update({"W1": 100.0})  # counted at the cap, 4: (2 * 2 + 4) / 3
    assert clip.typical["W1"] == pytest.approx(8 / 3)
    clip.update({"W1": math.nan})  # a broken read is not counted
    assert clip.typical["W1"] == pytest.approx(8 / 3) and clip.seen == 4
    again = StepClip(2.0, memory=4, warmup=2)
    again.restore(clip.state())
    assert (again.typical, again.seen) == (clip.typical, clip.seen)
    again.restore({"homeostasis_next_probe": 0.5})  # a step that carried no clip changes nothing
    assert again.typical == clip.typical and clip.state()[SEEN] == 4.0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"step_clip": 1.0}, "a number > 1"),
        ({"step_clip": math.inf}, "a number > 1"),
        ({"step_clip": 2.0, "step_clip_probe": 1.0}, "between 0 and 1"),
        ({"step_clip": 2.0, "release": "equilibrium"}, "give a release duration"),
    ],
)
def test_bad_clip_options_are_refused(options, message):
    with pytest.raises(ConfigurationError, match=message):
        Aeqprop(**options)


def test_a_release_longer_than_one_update_is_refused_before_anything_moves(interior_net):
    sub, x, y = interior_net(eps=1e-3)
    theta = sub.parameters()
    with pytest.raises(ConfigurationError, match="at most 1"):
        Aeqprop(beta=0.1, release=2.0, step_clip=2.0).step(sub, x, y)
    assert all(np.array_equal(v, theta[n]) for n, v in sub.parameters().items())
