"""The convolutional Hopfield substrate: its layer maps against their definitions, the oracle
against finite differences, EqProp's gradcheck, and every protocol run on it unchanged."""

import numpy as np
import pytest

from aeqprop.errors import ConfigurationError
from aeqprop.oracle import compare, finite_difference
from aeqprop.substrate import AeqpropSubstrate, EqPropSubstrate
from protocols.aeqprop import Aeqprop
from protocols.continual import ContinualEqProp
from protocols.eqprop import EqProp
from sim_backends.conv import ConvHopfieldSubstrate
from sim_backends.conv_ops import Conv, MaxConv


def test_conv_map_is_correlation_then_average_pooling_with_its_adjoint_and_gradient():
    rng = np.random.default_rng(0)
    c = Conv((2, 7, 9), channels=3, kernel=3, pool=1)
    a, K = rng.normal(size=(2, 2, 7, 9)), rng.normal(size=c.weight_shape)
    z = c.forward(a, K)
    direct = np.zeros((2, 3, 5, 7))
    for o in range(3):
        for i in range(5):
            for j in range(7):
                direct[:, o, i, j] = np.sum(a[:, :, i : i + 3, j : j + 3] * K[o], axis=(1, 2, 3))
    assert np.allclose(z, direct, atol=1e-12)
    pooled = Conv((2, 8, 10), channels=3, kernel=3, pool=2)
    a8 = rng.normal(size=(2, 2, 8, 10))
    full = Conv((2, 8, 10), channels=3, kernel=3, pool=1).forward(a8, K)
    assert np.allclose(pooled.forward(a8, K), full.reshape(2, 3, 3, 2, 4, 2).mean(axis=(3, 5)), atol=1e-12)
    cc = rng.normal(size=(2, *pooled.out_shape))
    assert np.sum(pooled.forward(a8, K) * cc) == pytest.approx(np.sum(a8 * pooled.adjoint(cc, K)), rel=1e-12)
    g, h = pooled.gradient(a8, cc), 1e-6
    e = np.zeros_like(K)
    e[2, 1, 0, 2] = h
    fd = (np.sum(pooled.forward(a8, K + e) * cc) - np.sum(pooled.forward(a8, K - e) * cc)) / (2 * h)
    assert g[2, 1, 0, 2] == pytest.approx(fd, rel=1e-7)


def valid_correlation(a, K):
    """The "valid" correlation of ``a`` (B, C_in, H, W) with ``K`` (C_out, C_in, k, k), loop by loop."""
    k = K.shape[-1]
    n = a.shape[-1] - k + 1
    out = np.zeros((a.shape[0], K.shape[0], n, n))
    for o in range(K.shape[0]):
        for i in range(n):
            for j in range(n):
                out[:, o, i, j] = np.sum(a[:, :, i : i + k, j : j + k] * K[o], axis=(1, 2, 3))
    return out


@pytest.mark.parametrize("kernel, pool, side", [(3, 2, 8), (4, 2, 9), (5, 3, 10), (3, 1, 6)])
def test_pooled_kernel_map_equals_conv_then_pooling_with_exact_adjoint_and_gradient(kernel, pool, side):
    """The stride-p correlation with the pooled kernel against a direct conv and a reshape-mean
    pooling; its adjoint against <A a, c> = <a, A^T c>; its kernel gradient entry by entry (c . A(a)
    is linear in K, so each entry is c . A(a) at a unit kernel)."""
    rng = np.random.default_rng(kernel + pool)
    c = Conv((2, side, side), channels=3, kernel=kernel, pool=pool)
    assert c.valid
    a, K = rng.normal(size=(2, 2, side, side)), rng.normal(size=c.weight_shape)
    n = side - kernel + 1
    direct = valid_correlation(a, K)
    pooled = direct.reshape(2, 3, n // pool, pool, n // pool, pool).mean(axis=(3, 5))
    assert np.allclose(c.forward(a, K), pooled, atol=1e-12)
    cc = rng.normal(size=(2, *c.out_shape))
    assert np.sum(c.forward(a, K) * cc) == pytest.approx(np.sum(a * c.adjoint(cc, K)), rel=1e-12)
    g = c.gradient(a, cc)
    exact = np.zeros_like(K)
    for idx in np.ndindex(K.shape):
        unit = np.zeros_like(K)
        unit[idx] = 1.0
        exact[idx] = np.sum(c.forward(a, unit) * cc)
    assert np.allclose(g, exact, atol=1e-11)


@pytest.mark.parametrize("kernel, pool, side", [(3, 2, 8), (5, 2, 12), (3, 3, 8)])
def test_max_pooling_map_against_a_direct_loop_with_its_adjoint_and_routed_gradient(kernel, pool, side):
    """The max-pooled correlation against a direct conv and a block-by-block max; its route is the
    argmax of each block; at that route the map is linear: <A a, c> = <a, A^T c>, A(a) at the route
    is A(a), and the kernel gradient is c . A(a) at unit kernels entry by entry."""
    rng = np.random.default_rng(kernel * pool)
    m = MaxConv((2, side, side), channels=3, kernel=kernel, pool=pool)
    a, K = rng.normal(size=(2, 2, side, side)), rng.normal(size=m.weight_shape)
    n = side - kernel + 1
    direct = valid_correlation(a, K)
    blocks = direct.reshape(2, 3, n // pool, pool, n // pool, pool).transpose(0, 1, 2, 4, 3, 5)
    blocks = blocks.reshape(2, 3, n // pool, n // pool, pool * pool)
    assert np.allclose(m.forward(a, K), blocks.max(axis=-1), atol=1e-12)
    route = m.route(a, K)
    assert np.array_equal(route, blocks.argmax(axis=-1))
    assert np.array_equal(m.forward(a, K, route), m.forward(a, K))
    cc, v = rng.normal(size=(2, *m.out_shape)), rng.normal(size=a.shape)
    assert np.sum(m.forward(v, K, route) * cc) == pytest.approx(np.sum(v * m.adjoint(cc, K, route)), rel=1e-12)
    g = m.gradient(a, cc, route)
    for idx in [(0, 0, 0, 0), (2, 1, kernel - 1, 1), (1, 0, 1, kernel - 1)]:
        unit = np.zeros_like(K)
        unit[idx] = 1.0
        assert g[idx] == pytest.approx(np.sum(m.forward(a, unit, route) * cc), rel=1e-10, abs=1e-12)
    with pytest.raises(ValueError, match="needs the route"):
        m.adjoint(cc, K)


def small_net(cost="squared", seed=0, two=False, **kw):
    """1x10x10 -> 3x4x4 (3x3 conv, 2x2 pool) -> 5 -> 3, or with ``two`` 1x14x14 -> 3x6x6 -> 4x2x2
    -> 5 -> 3; weights scaled down and hidden biases raised so that units sit inside their boxes."""
    kw.setdefault("tol", 1e-14)
    kw.setdefault("max_sweeps", 100_000)
    side, channels = (14, (3, 4)) if two else (10, (3,))
    sub = ConvHopfieldSubstrate(
        (side * side, 5, 3),
        input_shape=(1, side, side),
        channels=channels,
        kernel=3,
        pool=2,
        cost=cost,
        seed=seed,
        init_gain=0.8,
        **kw,
    )
    rng = np.random.default_rng(seed)
    for l in range(1, sub.L + 1):
        sub.W[l] *= 0.6 if l == 1 else 0.3
        top = l == sub.L
        sub.b[l][:] = rng.normal(0, 0.1, sub.b[l].shape) + (0.0 if top else 0.4)
    sub.set_knobs(sub.parameters())
    x = rng.uniform(0, 1, (4, sub.info.n_inputs))
    y = np.eye(3)[rng.integers(0, 3, 4)]
    return sub, x, y


def test_satisfies_the_contract_and_describes_its_layers():
    sub, _, _ = small_net()
    assert isinstance(sub, EqPropSubstrate) and isinstance(sub, AeqpropSubstrate)
    assert sub.info.parameter_shapes == {
        "W1": (3, 1, 3, 3),
        "b1": (3,),
        "W2": (48, 5),
        "b2": (5,),
        "W3": (5, 3),
        "b3": (3,),
    }
    assert sub.info.description == "conv Hopfield network 1x10x10 -> 3x4x4 -> 5 -> 3"


@pytest.mark.parametrize("pooling", ["average", "max", pytest.param(("average", "max"), id="average-max")])
@pytest.mark.parametrize("cost", ["squared", "cross-entropy"])
def test_oracle_agrees_with_finite_differences(cost, pooling, flatten, rel):
    sub, x, y = small_net(cost, two=pooling != "average", pooling=pooling)
    grad = sub.true_gradient(x, y)
    fd, _ = finite_difference(sub, x, y, h=1e-6)
    assert rel(flatten(grad), flatten(fd)) <= 1e-6
    assert np.linalg.norm(fd["W1"]) > 1e-4  # the conv kernel is reached


def settle_sweep_by_sweep(sub, x, y, sweeps):
    """Clamp x, nudge toward y at beta 0.4, take ``sweeps`` single sweeps checking that F never
    rises (and falls overall), then settle fully."""
    sub.clamp(x)
    sub.nudge(0.4, y)
    sub.max_sweeps = 1
    energies = [sub.energy()]
    for _ in range(sweeps):
        sub.relax()
        energies.append(sub.energy())
    assert np.all(np.diff(energies) <= 1e-12) and energies[-1] < energies[1]
    sub.max_sweeps = 100_000
    sub.relax()


def test_settled_state_is_each_layers_minimiser_and_energy_never_rises():
    sub, x, y = small_net()
    settle_sweep_by_sweep(sub, x, y, 30)
    s, W, b, m = sub.state(), sub.W, sub.b, sub.maps
    s1 = np.clip(m[1].forward(s[0], W[1]) + b[1][None, :, None, None] + m[2].adjoint(s[2], W[2]), 0, 1)
    assert np.allclose(s[1], s1, atol=1e-12)
    assert np.allclose(s[3], np.clip((s[2] @ W[3] + b[3] + 0.4 * y) / 1.4, -1, 2), atol=1e-12)


@pytest.mark.parametrize("pooling", ["average", "max", pytest.param(("max", "average"), id="max-average")])
@pytest.mark.parametrize("cost", ["squared", "cross-entropy"])
def test_gradcheck_centered_eqprop_at_beta_1e_3(cost, pooling):
    sub, x, y = small_net(cost, two=True, pooling=pooling)
    g_hat, _, _ = EqProp(beta=1e-3).estimate(sub, x, y)
    fid = compare(g_hat, sub.true_gradient(x, y))["all"]
    assert fid.rel_error <= 1e-3 and fid.cosine > 0.999999


def test_aeqprop_native_and_feedback_and_continual_run_unchanged(flatten, rel):
    sub, x, y = small_net(eps=0.01)
    theta = sub.parameters()
    g_hat, _, _ = EqProp(beta=0.05).estimate(sub, x, y)  # Aeqprop centered at b nudges by -b/2, +b/2
    expected = {n: -0.01 * 0.1 * g_hat[n] for n in g_hat}
    native = Aeqprop(beta=0.1).step(sub, x, y).delta
    sub.set_parameters(theta)
    sub.set_knobs(theta)
    feedback = (
        Aeqprop(beta=0.1, homeostasis="feedback", homeostasis_rtol=1e-9, homeostasis_iterations=200)
        .step(sub, x, y)
        .delta
    )
    assert rel(flatten(native), flatten(expected)) <= 1e-9
    assert rel(flatten(feedback), flatten(expected)) <= 1e-4
    sub.set_parameters(theta)
    grad = sub.true_gradient(x, y)
    continual = ContinualEqProp(beta=0.05, lr=1e-4).step(sub, x, y).delta  # lr 1e-3 runs away here
    assert compare(continual, {n: -grad[n] for n in grad})["all"].cosine > 0.999


def test_bad_shapes_are_refused():
    with pytest.raises(ConfigurationError, match="input_shape"):
        ConvHopfieldSubstrate((50, 3))
    with pytest.raises(ConfigurationError, match="does not fit"):
        ConvHopfieldSubstrate((100, 3), input_shape=(1, 10, 10), channels=(2, 2, 2), kernel=3, pool=2)
    with pytest.raises(ConfigurationError, match="C \\* H \\* W = 100"):
        ConvHopfieldSubstrate((100, 3), input_shape=(1, 9, 9))


def test_a_run_config_builds_it_on_an_image_dataset(tmp_path, monkeypatch):
    """The dataset's image shape reaches the substrate; the run trains and evaluates its validation split."""
    from aeqprop import catalog
    from aeqprop.config import validate
    from aeqprop.idx import write_idx
    from aeqprop.session import build

    monkeypatch.delenv(catalog.ENV_VAR, raising=False)
    rng = np.random.default_rng(0)
    folder = tmp_path / "fashion-mnist"
    folder.mkdir()
    for prefix, n in (("train", 60), ("t10k", 20)):
        labels = np.arange(n) % 3
        images = (
            rng.uniform(0, 60, (n, 28, 28)) + 150 * (labels[:, None, None] == np.arange(28)[None, :, None] % 3)
        ).astype(np.uint8)
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels.astype(np.uint8))
    config = validate(
        {
            "runs": str(tmp_path / "runs"),
            "dataset": {"name": "fashion-mnist", "data_dir": str(tmp_path)},
            "substrate": {
                "backend": "conv",
                "options": {"hidden": [], "channels": [2], "kernel": 5, "pool": 4, "cost": "cross-entropy", "eps": 0.1},
            },
            "protocol": {"name": "aeqprop", "options": {"beta": 0.5}},
            "schedule": {"epochs": 2, "batch_size": 10},
        }
    )
    built = build(config)
    assert built.substrate.shapes[:2] == [(1, 28, 28), (2, 6, 6)]
    assert len(built.data.x_train) == 54 and len(built.data.x_val) == 6 and len(built.data.x_test) == 20
    result = built.trainer.run()
    assert 0.0 <= result.final.val_accuracy <= 1.0
    assert result.final.train_loss < result.history[0].train_loss  # it learns the stripes


@pytest.mark.parametrize(
    "example, shape, description, max_pooled",
    [
        (
            "cifar10_conv_gpu.toml",
            (3, 32, 32),
            "conv Hopfield network 3x32x32 -> 64x14x14 -> 128x5x5 -> 10, softmax readout",
            [False, False],
        ),
        (
            "fashion_mnist_conv.toml",
            (1, 28, 28),
            "conv Hopfield network 1x28x28 -> 32x12x12 -> 64x4x4 -> 10, softmax readout",
            [True, False],
        ),
    ],
)
def test_the_conv_examples_build_the_networks_they_describe(example, shape, description, max_pooled):
    """Not trained here (CIFAR-10's is sized for a large machine; Fashion-MNIST's is README's figure,
    an hour on one core), but their substrate options are checked."""
    from pathlib import Path

    from aeqprop.config import load_config
    from aeqprop.parts import build_with

    cfg = load_config(Path(__file__).resolve().parents[2] / "examples" / example)
    options = dict(cfg.substrate.options)
    hidden = options.pop("hidden")
    n = int(np.prod(shape))
    sub = build_with(ConvHopfieldSubstrate, options, {"layers": (n, *hidden, 10), "input_shape": shape}, "x")
    assert sub.info.description == description
    assert [isinstance(sub.maps[l], MaxConv) for l in (1, 2)] == max_pooled


def settle(sub, x, y, beta):
    """The state after clamping x and relaxing under nudging beta (free phase first, as a step does)."""
    sub.clamp(x)
    sub.nudge(0.0)
    sub.relax()
    if beta:
        sub.nudge(beta, y)
        sub.relax()
    return sub.state()


@pytest.mark.parametrize("pooling", ["average", "max"])
@pytest.mark.parametrize("cost", ["squared", "cross-entropy"])
def test_accelerated_and_float32_sweeps_reach_the_plain_float64_fixed_point(cost, pooling):
    """Heavy-ball sweeps (with the free phase's rho and the warm start of centered nudging; under the
    readout's force too) and float32 compute settle where plain float64 block coordinate descent
    does, to the tolerance; the accelerated relaxation takes fewer sweeps."""
    nets = {
        name: small_net(cost, two=True, pooling=pooling, **options)[0]
        for name, options in (
            ("plain", {"acceleration": False, "tol": 1e-9}),
            ("fast", {"tol": 1e-9}),
            ("f32", {"dtype": "float32", "tol": 1e-6}),
        )
    }
    _, x, y = small_net(cost, two=True, pooling=pooling)
    for beta in (0.0, -0.5, 0.5):
        plain, fast, f32 = (settle(nets[n], x, y, beta) for n in ("plain", "fast", "f32"))
        for l in range(1, len(plain)):
            assert np.max(np.abs(fast[l] - plain[l])) <= 1e-7
            assert f32[l].dtype == np.float32
            assert np.max(np.abs(f32[l] - plain[l])) <= 1e-5
    # max pooling's routes change along the way (its sweeps are not one linear contraction): on this
    # small net the heavy ball gains little (squared) or nothing (readout); it must not cost much
    assert nets["fast"].total_sweeps < (0.85 if pooling == "average" else 1.1) * nets["plain"].total_sweeps


def test_accelerated_relaxation_never_raises_the_energy_above_its_start_and_ends_at_the_plain_energy():
    sub, x, y = small_net(tol=1e-10)
    plain, _, _ = small_net(tol=1e-10, acceleration=False)
    for s in (sub, plain):
        s.clamp(x)
        s.nudge(0.0)
        s.relax()
        s.nudge(0.5, y)
    start = sub.energy()
    sub.relax()
    plain.relax()
    assert sub.energy() <= start and sub.energy() == pytest.approx(plain.energy(), abs=1e-9)


def test_float32_steps_like_float64_and_its_oracle_is_float64(flatten, rel):
    sub64, x, y = small_net(eps=0.01, tol=1e-8)
    sub32, _, _ = small_net(eps=0.01, tol=1e-6, dtype="float32")
    assert sub32.parameters()["W1"].dtype == np.float32
    g32, g64 = sub32.true_gradient(x, y), sub64.true_gradient(x, y)
    assert g32["W1"].dtype == np.float64
    assert rel(flatten(g32), flatten(g64)) <= 1e-5  # the parameters rounded to float32
    d64 = Aeqprop(beta=0.1).step(sub64, x, y).delta
    d32 = Aeqprop(beta=0.1).step(sub32, x, y).delta
    assert rel(flatten(d32), flatten(d64)) <= 1e-2  # a step of 1e-3 theta, resolved in float32
    with pytest.raises(ConfigurationError, match="dtype='float16': valid: float64, float32"):
        ConvHopfieldSubstrate((100, 3), input_shape=(1, 10, 10), channels=(2,), kernel=3, dtype="float16")


def test_max_pooling_sweeps_never_raise_the_energy_and_settle_at_each_layers_routed_minimiser():
    """With max pooling a layer's coupling to the layer above is concave in it: the sweep at the
    current route minimises a quadratic upper bound of F (majorize-minimize), so F never rises;
    at the end each layer is its clipped minimiser at the equilibrium's routes."""
    sub, x, y = small_net(two=True, pooling="max", acceleration=False)
    settle_sweep_by_sweep(sub, x, y, 40)
    s, W, b, m = sub.state(), sub.W, sub.b, sub.maps
    r1, r2 = m[1].route(s[0], W[1]), m[2].route(s[1], W[2])
    assert np.any(r2 != 0)  # the routes are not all the first entry
    s1 = np.clip(m[1].forward(s[0], W[1]) + b[1][None, :, None, None] + m[2].adjoint(s[2], W[2], r2), 0, 1)
    s2 = np.clip(m[2].forward(s[1], W[2]) + b[2][None, :, None, None] + m[3].adjoint(s[3], W[3]), 0, 1)
    assert np.allclose(s[1], s1, atol=1e-12) and np.allclose(s[2], s2, atol=1e-12)
    assert np.array_equal(m[1].forward(s[0], W[1], r1), m[1].forward(s[0], W[1]))
    with pytest.raises(ConfigurationError, match="pooling=.min.: valid: average, max, or a list"):
        ConvHopfieldSubstrate((100, 3), input_shape=(1, 10, 10), channels=(2,), kernel=3, pooling="min")


@pytest.mark.parametrize("seed", [0, 4])  # seeds where some of layer 2's routes differ between the two states
def test_a_warm_started_max_pooling_phase_routes_its_first_sweep_at_the_free_state(seed):
    """Centered nudging starts the second phase from the free equilibrium: its first sweep takes
    layer 2's routes at that state (the bound of F it minimises touches F there), not the routes
    left from the first phase's state."""
    sub, x, y = small_net(two=True, pooling="max", seed=seed)
    sub.clamp(x)
    sub.relax()
    free = sub.state()
    sub.nudge(-0.9, y)
    sub.relax()
    m, W, b = sub.maps, sub.W, sub.b
    route = m[2].route(free[1], W[2])
    assert np.any(route != m[2].route(sub.state()[1], W[2]))  # the first phase moved some routes
    sub.nudge(0.9, y)
    sub.max_sweeps = 1
    sub.relax()
    s1 = np.clip(m[1].forward(free[0], W[1]) + b[1][None, :, None, None] + m[2].adjoint(free[2], W[2], route), 0, 1)
    assert np.allclose(sub._s[1], s1, rtol=0, atol=1e-12)


def test_under_a_strong_readout_the_nudged_relaxation_descends_and_settles(monkeypatch):
    """A readout of +-1 weights (kappa = beta |W_r|^2 / 2 about 4 at beta 0.5): the top layer's
    update, the lower of the plain one and a safe step (sim_backends.readout.lower_of_two), lowers
    F every sweep and settles; the plain fixed-point iteration alone never settles there."""
    import sim_backends.conv_relax as relax

    def nudged(max_sweeps):
        sub, x, y = small_net("cross-entropy", max_sweeps=max_sweeps)
        sub.set_parameters({"W3": np.random.default_rng(1).choice([-1.0, 1.0], size=(5, 3))})
        sub.clamp(x)
        sub.nudge(0.5, y)
        return sub

    sub = nudged(1)
    energies = [sub.energy()]
    for _ in range(200):
        sub.relax()
        energies.append(sub.energy())
    assert np.all(np.diff(energies) <= 1e-12)
    assert nudged(5000).relax().converged
    monkeypatch.setattr(relax, "readout_step", lambda beta, w: 1.0)
    assert not nudged(5000).relax().converged


def test_held_out_data_is_relaxed_in_batches_of_eval_batch_capped_by_max_batch_to_the_same_result():
    """evaluate clamps held-out data eval_batch samples at a time (the conv default 16), never more
    than max_batch; at a tight tolerance the loss and accuracy do not depend on the width."""
    from aeqprop.substrate import SubstrateInfo
    from aeqprop.trainer import evaluate

    rng = np.random.default_rng(4)
    x, labels = rng.uniform(0, 1, (37, 100)), rng.integers(0, 3, 37)
    results = {}
    for kw, widths in (
        ({}, [16, 16, 5]),
        ({"eval_batch": 10}, [10, 10, 10, 7]),
        ({"eval_batch": 10, "max_batch": 8}, [8, 8, 8, 8, 5]),
        ({"eval_batch": None, "max_batch": None}, [37]),
    ):
        sub, _, _ = small_net(**kw)
        seen = []
        clamp = sub.clamp
        sub.clamp = lambda xb, clamp=clamp, seen=seen: (seen.append(len(xb)), clamp(xb))[1]
        results[str(kw)] = evaluate(sub, x, labels)
        assert seen == widths, kw
    first = next(iter(results.values()))
    for loss, accuracy in results.values():
        assert loss == pytest.approx(first[0], rel=1e-9) and accuracy == first[1]
    with pytest.raises(ConfigurationError, match="eval_batch=0: must be >= 1"):
        SubstrateInfo(1, 1, {}, {}, eval_batch=0)
