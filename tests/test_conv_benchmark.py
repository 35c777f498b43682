"""benchmarks/fashion_mnist_conv.py: a run split over invocations (--state, --stop-after) ends where one
uninterrupted run ends, to the bit (theta, the knobs, the best-validation theta, the curve); its
defaults are the conv example's settings; benchmarks/conv_fidelity.py reads its state files."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from aeqprop import catalog
from aeqprop.idx import write_idx

ROOT = Path(__file__).resolve().parents[1]


def conv_benchmark(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # its imports of baselines and fashion_mnist
    spec = importlib.util.spec_from_file_location(
        "aeqprop_conv_benchmark", ROOT / "benchmarks" / "fashion_mnist_conv.py"
    )
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # its dataclass looks itself up there
    spec.loader.exec_module(module)
    return module


def fake_fashion_mnist(folder: Path, n_train=160, n_test=32) -> None:
    """Fashion-MNIST's four files holding random images (what the tests compare is bits, not accuracy)."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for split, n in (("train", n_train), ("t10k", n_test)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        images = np.clip(rng.normal(labels[:, None, None] * 20 + 40, 30, (n, 28, 28)), 0, 255).astype(np.uint8)
        write_idx(folder / f"{split}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{split}-labels-idx1-ubyte.gz", labels)


def saved(path: Path) -> dict:
    with np.load(path) as f:
        return {n: f[n] for n in f.files}


@pytest.mark.parametrize("augment", ["none", "flip"])
def test_a_run_split_over_three_invocations_ends_as_one_run_does(tmp_path, monkeypatch, capsys, augment):
    """With flips, the flips' generator is saved with the run and put back."""
    monkeypatch.delenv(catalog.ENV_VAR, raising=False)
    fake_fashion_mnist(tmp_path / "data" / "fashion-mnist")
    bench = conv_benchmark(monkeypatch)
    settings = ["--epochs", "3", "--channels", "2", "4", "--data-dir", str(tmp_path / "data"), "--tol", "0.01"]
    settings += ["--augment", augment]

    bench.main([*settings, "--state", str(tmp_path / "one.npz")])
    whole = capsys.readouterr()
    split = [*settings, "--state", str(tmp_path / "split.npz"), "--stop-after", "1"]
    for epoch in (1, 2):
        bench.main(split)
        part = capsys.readouterr()
        assert part.out == "" and f"stopped after epoch {epoch}; rerun the same command to go on" in part.err
    bench.main(split)
    last = capsys.readouterr()
    assert "resumed from" in last.err and "after epoch 2" in last.err

    one, parts = saved(tmp_path / "one.npz"), saved(tmp_path / "split.npz")
    arrays = sorted(n for n in one if n != "meta")
    assert arrays == sorted(n for n in parts if n != "meta") and any(n.startswith("knobs.") for n in arrays)
    for name in arrays:
        assert np.array_equal(one[name], parts[name]), name
    meta, meta_split = (json.loads(str(m["meta"])) for m in (one, parts))
    assert meta["val"] == meta_split["val"] and meta["sweeps"] == meta_split["sweeps"] and len(meta["val"]) == 3
    assert meta["unsettled"] == meta_split["unsettled"] and len(meta["unsettled"]) == 3
    # the table's accuracies and sweeps agree (its timing columns may not)
    row = [line for line in whole.out.splitlines() if line.startswith("| conv")]
    row_split = [line for line in last.out.splitlines() if line.startswith("| conv")]
    assert len(row) == 1 and row[0].split("|")[3:6] == row_split[0].split("|")[3:6]
    assert row[0].split("|")[7:9] == row_split[0].split("|")[7:9]  # sweeps, relaxations cut off
    val = [line.split(" val ")[1].split()[0] for line in whole.err.splitlines() if " val " in line]
    val_split = [line.split(" val ")[1].split()[0] for line in (part.err + last.err).splitlines() if " val " in line]
    assert len(val) == 3 and val[1:] == val_split


def test_a_saved_run_refuses_a_command_with_other_settings(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(catalog.ENV_VAR, raising=False)
    fake_fashion_mnist(tmp_path / "data" / "fashion-mnist", n_train=40, n_test=8)
    bench = conv_benchmark(monkeypatch)
    settings = ["--epochs", "2", "--channels", "2", "2", "--data-dir", str(tmp_path / "data"), "--tol", "0.05"]
    state = ["--state", str(tmp_path / "s.npz"), "--stop-after", "1"]
    bench.main([*settings, *state])
    with pytest.raises(SystemExit, match="was saved by a run with other settings"):
        bench.main([*settings, "--eps", "0.2", *state])


def test_the_benchmark_defaults_are_the_conv_example_s_settings(monkeypatch):
    """README's conv figure runs the benchmark on its defaults and says examples/fashion_mnist_conv.toml
    trains the same network: the two must not drift apart."""
    from aeqprop.config import load_config
    from aeqprop.schedules import Schedule

    defaults = conv_benchmark(monkeypatch).parser().parse_args([])
    cfg = load_config(ROOT / "examples" / "fashion_mnist_conv.toml")
    sub, proto = cfg.substrate.options, cfg.protocol.options
    assert cfg.dataset.name == "fashion-mnist" and cfg.substrate.backend == "conv" and cfg.protocol.name == "aeqprop"
    assert (sub["channels"], sub["hidden"], sub["kernel"], sub["pool"]) == (
        defaults.channels,
        defaults.hidden,
        defaults.kernel,
        defaults.pool,
    )
    assert (sub["pooling"], sub["cost"], sub["dtype"]) == (defaults.pooling, defaults.cost, defaults.dtype)
    assert (sub["eps"], sub["tol"], sub["max_sweeps"]) == (float(defaults.eps), defaults.tol, defaults.max_sweeps)
    assert (proto["variant"], proto["beta"], proto["homeostasis"], proto["release"]) == (
        "centered",
        defaults.beta,
        "native",
        1.0,
    )
    kind, _, end = defaults.lr_schedule.partition(":")
    assert (cfg.schedule.epochs, cfg.schedule.batch_size, cfg.seed) == (defaults.epochs, defaults.batch, defaults.seed)
    assert cfg.schedule.lr == {"kind": kind, "end": float(end)}
    beta = None if defaults.beta_schedule is None else Schedule.parse(defaults.beta_schedule)
    assert (None if cfg.schedule.beta is None else Schedule.parse(cfg.schedule.beta)) == beta
    assert (cfg.schedule.hold_step, cfg.schedule.augment) == (defaults.hold_step, defaults.augment)


def test_the_fidelity_script_reads_a_saved_run_and_its_small_nudge_follows_the_gradient(tmp_path, monkeypatch, capsys):
    """benchmarks/conv_fidelity.py rebuilds the saved run's network from its state file; on a young
    network (a convex energy) a small nudge's step lies along minus the oracle gradient."""
    monkeypatch.delenv(catalog.ENV_VAR, raising=False)
    fake_fashion_mnist(tmp_path / "data" / "fashion-mnist", n_train=40, n_test=8)
    bench = conv_benchmark(monkeypatch)
    data = ["--data-dir", str(tmp_path / "data")]
    young = ["--epochs", "2", "--channels", "2", "3", "--eps", "0.05"]  # one epoch at half the figure's rate
    bench.main([*young, *data, "--state", str(tmp_path / "s.npz"), "--stop-after", "1"])
    capsys.readouterr()
    spec = importlib.util.spec_from_file_location("aeqprop_conv_fidelity", ROOT / "benchmarks" / "conv_fidelity.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main([str(tmp_path / "s.npz"), "--betas", "0.5", "0.01", "--batches", "2", *data])
    out = capsys.readouterr().out
    assert "the theta after epoch 1 of a run with channels 2/3" in out
    rows = {line.split("|")[1].strip(): line.split("|")[2:5] for line in out.splitlines() if line.startswith("| 0.")}
    assert set(rows) == {"0.5", "0.01"}
    assert float(rows["0.01"][1]) > 0.95  # the lowest cosine of the two batches (float32, tol 1e-3)
    # and its length is the first-order step's, eps b |gradient|, within the settling's error: states
    # settled to 1e-3 against a nudge of 0.01 (0.87 measured; a step missing its b or eps is off 2x or more)
    assert 0.75 < float(rows["0.01"][2]) < 1.25


def test_the_settling_script_counts_the_steps_a_low_cap_cuts_off(tmp_path, monkeypatch, capsys):
    """benchmarks/conv_settling.py: at a cap of 2 sweeps every step has a relaxation cut off (a
    relaxation from the zero state takes more), at 1000 none does, on the same batches; from a saved
    run it rebuilds that run's network."""
    monkeypatch.delenv(catalog.ENV_VAR, raising=False)
    fake_fashion_mnist(tmp_path / "data" / "fashion-mnist", n_train=40, n_test=8)
    bench = conv_benchmark(monkeypatch)  # puts benchmarks/ on the path
    spec = importlib.util.spec_from_file_location("aeqprop_conv_settling", ROOT / "benchmarks" / "conv_settling.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    data = ["--data-dir", str(tmp_path / "data"), "--channels", "2", "3"]
    module.main([*data, "--steps", "6", "--caps", "2", "1000", "--val-size", "8"])
    out = capsys.readouterr().out
    rows = {line.split("|")[1].strip(): line.split("|")[2:6] for line in out.splitlines() if line[:3] in ("| 2", "| 1")}
    assert rows["2"][0].strip() == "100.0%" and rows["1000"][0].strip() == "0.0%"
    assert float(rows["2"][3]) == 6.0 and float(rows["1000"][3]) > 6.0  # sweeps per step: 3 phases of 2
    module.main([*data, "--steps", "2", "--caps", "1000", "--val-size", "8", "--augment", "flip"])
    assert "max_sweeps 1000" in capsys.readouterr().err
    with pytest.raises(SystemExit) as refused:  # Aeqprop's relaxations only: not silently ignored
        module.main([*data, "--rule", "oracle"])
    assert refused.value.code == 2 and "--rule oracle" in capsys.readouterr().err

    bench.main(
        [*data, "--channels", "3", "2", "--epochs", "2", "--state", str(tmp_path / "s.npz"), "--stop-after", "1"]
    )
    capsys.readouterr()
    module.main(
        ["--start", str(tmp_path / "s.npz"), "--steps", "3", "--caps", "1000", "--data-dir", str(tmp_path / "data")]
    )
    out = capsys.readouterr().out
    assert "1x28x28 -> 3x12x12 -> 2x4x4 -> 10" in out and "3 steps from the theta after epoch 1 of a saved run" in out
    assert "eps 0.1," in out  # the saved run's
    module.main(["--start", str(tmp_path / "s.npz"), "--steps", "1", "--caps", "1000", "--eps", "0.3", *data[:2]])
    assert "eps 0.3," in capsys.readouterr().out  # given here: replaces the saved run's
    with pytest.raises(SystemExit) as refused:  # a setting of the run beside --start: not silently dropped
        module.main(["--start", str(tmp_path / "s.npz"), "--channels", "4", "4", *data[:2]])
    assert refused.value.code == 2
    assert "--start takes the saved run's network and settings: drop --channels" in capsys.readouterr().err


def test_the_oracle_rule_steps_by_eps_b_times_the_true_gradient_and_keeps_old_saves_resumable(monkeypatch):
    """--rule oracle is the same run with the estimator taken out: its step is -eps b dL/dtheta per tensor.
    A save made before the option existed has no "rule" in its settings and still resumes."""
    from aeqprop.data import one_hot
    from aeqprop.errors import ConfigurationError

    bench = conv_benchmark(monkeypatch)
    args = bench.parser().parse_args(["--rule", "oracle", "--channels", "2", "3", "--eps", "W1=0.2,W=0.3,b=0.1"])
    shape = fashion_shaped(bench)
    sub = bench.build(args, shape, "float64")
    proto = bench.make_protocol(args, sub)
    assert proto.lr == {n: float(e) * 0.5 for n, e in sub.eps.items()} and proto.lr["W1"] == pytest.approx(0.1)
    rng = np.random.default_rng(1)
    x, y = rng.uniform(0, 1, (4, 784)), one_hot(np.arange(4) % 10, 10)
    before, grad = sub.parameters(), sub.true_gradient(x, y)
    proto.step(sub, x, y)
    after = sub.parameters()
    for name in ("W1", "W3"):
        np.testing.assert_allclose(after[name] - before[name], -proto.lr[name] * grad[name], rtol=1e-9, atol=1e-12)
    for extra in (["--beta-schedule", "step:0.5:0.5"], ["--beta-schedule", "step:0.5:0.5", "--hold-step"]):
        with pytest.raises(ConfigurationError, match="--rule oracle has no nudge"):
            bench.make_protocol(bench.parser().parse_args(["--rule", "oracle", *extra]), sub)
    assert "rule" not in json.loads(bench.fingerprint(bench.parser().parse_args([])))
    assert json.loads(bench.fingerprint(args))["rule"] == "oracle"


def test_a_looser_oracle_tolerance_trains_on_nearly_the_same_gradient_and_needs_the_oracle_rule(monkeypatch):
    """--oracle-tol loosens the oracle's settling and solve (a training oracle, not a checking one):
    its gradient stays within 1e-3 of the tight one but is not the tight one to the bit; a loose
    solve that fails is redone at the checking tolerances; Aeqprop refuses the option; a save made
    before it existed still resumes."""
    from aeqprop.data import one_hot
    from aeqprop.errors import ConfigurationError, RelaxationError

    bench = conv_benchmark(monkeypatch)
    common = ["--rule", "oracle", "--channels", "2", "3", "--eps", "0.3"]
    rng = np.random.default_rng(2)
    x, y = rng.uniform(0, 1, (4, 784)), one_hot(np.arange(4) % 10, 10)
    grads = {}
    for tol in (None, "1e-6"):
        args = bench.parser().parse_args(common + ([] if tol is None else ["--oracle-tol", tol]))
        sub = bench.build(args, fashion_shaped(bench), "float64")
        bench.make_protocol(args, sub)
        assert (sub.oracle_tol, sub.oracle_rtol) == ((1e-13, 1e-12) if tol is None else (1e-6, 1e-6))
        grads[tol] = np.concatenate([g.ravel() for _, g in sorted(sub.true_gradient(x, y).items())])
    tight, loose = grads[None], grads["1e-6"]
    assert 0 < np.linalg.norm(loose - tight) < 1e-3 * np.linalg.norm(tight)
    solve = type(sub)._solve  # a loose solve that fails is redone at the checking tolerances

    def fails_when_loose(self, *args):
        if self.oracle_rtol > 1e-12:
            raise RelaxationError("H not positive definite")
        return solve(self, *args)

    monkeypatch.setattr(type(sub), "_solve", fails_when_loose)
    redone = np.concatenate([g.ravel() for _, g in sorted(sub.true_gradient(x, y).items())])
    np.testing.assert_allclose(redone, tight, rtol=1e-9, atol=1e-15)
    assert sub.oracle_retries == 1 and (sub.oracle_tol, sub.oracle_rtol) == (1e-6, 1e-6)
    monkeypatch.setattr(type(sub), "_solve", lambda self, *a: (_ for _ in ()).throw(RelaxationError("H")))
    sub.oracle_tol, sub.oracle_rtol = 1e-13, 1e-12
    with pytest.raises(RelaxationError):  # at the checking tolerances a failure is the caller's
        sub.true_gradient(x, y)
    with pytest.raises(ConfigurationError, match="--oracle-tol sets the oracle's tolerance"):
        bench.make_protocol(bench.parser().parse_args(["--oracle-tol", "1e-6"]), sub)
    assert "oracle_tol" not in json.loads(bench.fingerprint(bench.parser().parse_args(["--rule", "oracle"])))


def fashion_shaped(bench):
    """A Dataset with Fashion-MNIST's shape (28x28 images, 10 classes): build() reads only that."""
    from aeqprop.data import Dataset

    x = np.zeros((10, 784))
    labels = np.arange(10)
    return Dataset("fashion-mnist", x, labels, x, labels, 10, shape=(1, 28, 28))


def test_the_units_script_counts_a_channel_switched_off_on_every_image(tmp_path, monkeypatch, capsys):
    """benchmarks/conv_units.py: a first-layer channel whose kernel and bias are all at -1 is below 0
    on every image (the inputs are >= 0), and is counted; the saved run's own theta has none."""
    monkeypatch.delenv(catalog.ENV_VAR, raising=False)
    fake_fashion_mnist(tmp_path / "data" / "fashion-mnist", n_train=40, n_test=8)
    bench = conv_benchmark(monkeypatch)
    data = ["--data-dir", str(tmp_path / "data")]
    bench.main([*data, "--channels", "3", "2", "--epochs", "1", "--state", str(tmp_path / "s.npz")])
    spec = importlib.util.spec_from_file_location("aeqprop_conv_units", ROOT / "benchmarks" / "conv_units.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    arrays = dict(saved(tmp_path / "s.npz"))
    arrays["theta.W1"] = arrays["theta.W1"].copy()
    arrays["theta.b1"] = arrays["theta.b1"].copy()
    arrays["theta.W1"][1], arrays["theta.b1"][1] = -1.0, -1.0
    np.savez(tmp_path / "off.npz", **arrays)
    capsys.readouterr()
    module.main([str(tmp_path / "s.npz"), str(tmp_path / "off.npz"), "--images", "8", *data])
    rows = [line.split("|") for line in capsys.readouterr().out.splitlines() if line.startswith("| ")][1:]
    first = {r[1].split()[0]: r[4].strip() for r in rows if r[3].strip() == "3x12x12"}
    assert first["s.npz"] == "0 of 3" and first["off.npz"] == "1 of 3"
    assert len(rows) == 4 and all(r[2].strip() == "1" for r in rows)  # two hidden layers each, one epoch


def test_the_release_script_s_parts_add_up_to_one_update_inside_the_stiffness_limit(tmp_path, monkeypatch, capsys):
    """benchmarks/conv_release.py: at a compliance far inside the stiffness limit the k parts move
    theta as the one update does (each part 1/k of the way: parts of 1/k of the remaining way would
    add up to 1 - (1 - 1/k)^k of it, 0.75 for 2 and 0.65 for 10); at the figure's eps the conv
    layers' split steps are longer than the one update's."""
    monkeypatch.delenv(catalog.ENV_VAR, raising=False)
    fake_fashion_mnist(tmp_path / "data" / "fashion-mnist", n_train=40, n_test=8)
    conv_benchmark(monkeypatch)  # puts benchmarks/ on the path
    spec = importlib.util.spec_from_file_location("aeqprop_conv_release", ROOT / "benchmarks" / "conv_release.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    data = ["--data-dir", str(tmp_path / "data"), "--channels", "2", "3", "--batches", "2", "--dtype", "float64"]

    def table(eps):
        module.main([*data, "--eps", eps, "--tol", "1e-8", "--parts", "2", "10"])
        out = capsys.readouterr().out
        rows = {
            tuple(c.strip() for c in line.split("|")[1:3]): [float(c) for c in line.split("|")[3:7]]
            for line in out.splitlines()
            if " parts |" in line
        }
        return rows, out

    rows, out = table("1e-6")  # W1 stiffness eps |lambda| about 0.002 here (1.02 at 1e-5, 10 parts)
    assert len(rows) == 14 and "2 training batches from the initial theta" in out
    for (parts, tensor), (mean, largest, _, lowest) in rows.items():
        assert 0.99 < mean and largest < 1.01 and lowest > 0.999, (parts, tensor)
    rows, out = table("0.1")
    assert rows[("2 parts", "W1")][0] > 1.1 and rows[("2 parts", "W2")][0] > 1.1


def test_the_backprop_benchmark_s_flips_leave_the_order_of_the_samples_as_it_is(tmp_path, monkeypatch, capsys):
    """benchmarks/conv_backprop.py --flip draws its flips from a generator of their own, as the
    Trainer does: every epoch sees the samples in the order of the run without flips."""
    fake_fashion_mnist(tmp_path / "data" / "fashion-mnist", n_train=40, n_test=8)
    monkeypatch.setenv(catalog.ENV_VAR, str(tmp_path / "data"))
    conv_benchmark(monkeypatch)  # puts benchmarks/ on the path
    spec = importlib.util.spec_from_file_location("aeqprop_conv_backprop", ROOT / "benchmarks" / "conv_backprop.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    seen: list[np.ndarray] = []
    monkeypatch.setattr(module.BackpropConv, "step", lambda self, x, y, lr: seen.append(y.argmax(axis=1)))
    common = ["--epochs", "3", "--channels", "2", "3", "--poolings", "max"]
    module.main(common)
    plain, seen[:] = list(seen), []
    module.main([*common, "--flip"])
    assert len(plain) == len(seen) >= 3 and all(np.array_equal(a, b) for a, b in zip(plain, seen))
    assert "random left-right flips" in capsys.readouterr().out


def test_the_eval_width_script_times_each_width_on_the_same_images_to_the_same_accuracy(tmp_path, monkeypatch, capsys):
    """benchmarks/conv_eval_width.py: one row per width, the first at ratio 1.00, the same accuracy
    in every row (each sample settles to the same tolerance), from the initial or a saved theta."""
    monkeypatch.delenv(catalog.ENV_VAR, raising=False)
    fake_fashion_mnist(tmp_path / "data" / "fashion-mnist", n_train=40, n_test=8)
    bench = conv_benchmark(monkeypatch)  # puts benchmarks/ on the path
    data = ["--data-dir", str(tmp_path / "data")]
    bench.main([*data, "--channels", "2", "3", "--epochs", "1", "--state", str(tmp_path / "s.npz")])
    spec = importlib.util.spec_from_file_location("aeqprop_conv_eval_width", ROOT / "benchmarks" / "conv_eval_width.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    capsys.readouterr()
    module.main([*data, "--start", str(tmp_path / "s.npz"), "--widths", "3", "1", "2000", "--images", "7"])
    out = capsys.readouterr().out
    rows = [
        [c.strip() for c in line.split("|")[1:5]] for line in out.splitlines() if line.startswith("| ") and "%" in line
    ]
    assert [r[0] for r in rows] == ["3", "1", "2000"] and rows[0][2] == "1.00"
    assert len({r[3] for r in rows}) == 1 and "7 validation images from the theta after epoch 1 of a saved run" in out
    with pytest.raises(SystemExit):
        module.main([*data, "--widths", "0"])
