"""The robustness study as a sweep (benchmarks/robustness.toml): its runs are the study's runs as
built by hand, and benchmarks/robustness.py prints them from the run store."""

import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from aeqprop.data import load_dataset
from aeqprop.sweep import expand
from aeqprop.sweep_exec import run_job
from aeqprop.sweep_store import create_sweep, jobs, open_store, record_run
from aeqprop.trainer import Trainer
from protocols.aeqprop import Aeqprop
from protocols.eqprop import EqProp
from sim_backends.hopfield import HopfieldSubstrate
from sim_backends.nonideal import NonidealSubstrate

ROOT = Path(__file__).resolve().parents[1]


def robustness_module():
    name = "aeqprop_robustness_benchmark"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / "robustness.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def by_hand(protocol: str, seed: int, device: dict, epochs: int) -> dict:
    """One run of the study as the study describes it, without a config: digits split with seed 0,
    Hopfield 64-64-10 (eps 0.1, tol 1e-3) with the run's seed behind the device seeded 1000 + seed,
    feedback Aeqprop calibrated on the first 16 training samples; reads counted on the device."""
    data = load_dataset("digits", seed=0)
    sub = NonidealSubstrate(
        HopfieldSubstrate((64, 64, 10), eps=0.1, tol=1e-3, seed=seed), {**device, "seed": 1000 + seed}
    )
    if protocol == "eqprop":
        rule = EqProp(beta=0.5, lr=0.1, variant="centered")
    else:
        rule = Aeqprop(
            beta=1.0,
            variant="centered",
            homeostasis="feedback",
            release=1.0,
            homeostasis_iterations=30,
            homeostasis_on_cap="hold",
        )
    counts = {"reads": 0}
    for name in ("parameters", "energy_gradients"):
        method = getattr(sub, name)
        setattr(sub, name, lambda _m=method: (counts.__setitem__("reads", counts["reads"] + 1), _m())[1])
    if isinstance(rule, Aeqprop):  # as a run does (aeqprop.session.calibrate)
        rule.calibrate(sub, data.x_train[:16], data.y_train[:16])
    before, steps = counts["reads"], []
    result = Trainer(sub, rule, data, epochs=epochs, batch_size=16, seed=seed).run(
        on_step=lambda e, k, r: steps.append(k)
    )
    return {"accuracy": result.final.test_accuracy, "reads": (counts["reads"] - before) / len(steps)}


@pytest.mark.slow
def test_the_sweep_trains_the_study_runs_bitwise_and_the_script_prints_them(tmp_path, capsys):
    rb = robustness_module()
    options = dict(native=False, epochs=1, seeds=1, layers=None, homeostasis_iterations=None, only="read_noise")
    raw = rb.configure(SimpleNamespace(**options))
    assert [p["label"] for p in raw["points"]] == [f"read noise: sigma {s}" for s in ("0.0001", "0.001", "0.01")]
    raw["points"] = raw["points"][1:2]  # sigma 1e-3: the calibration averages reads
    sweep = expand(raw, rb.HERE, str(tmp_path / "runs"))
    store = open_store(sweep.runs)
    sid = create_sweep(store, sweep)
    for job in jobs(store, sid):  # what each worker of the pool does
        record_run(store, job["id"], job["config"], run_job(job["config"]))
    store.close()

    spec, rows = rb.results(sweep.runs, sid)
    assert sorted(r["protocol"] for r in rows) == ["aeqprop", "eqprop"]
    for r in rows:
        assert (r["effect"], r["label"], r["seed"], r["error"]) == ("read noise", "sigma 0.001", 0, "")
        expected = by_hand(r["protocol"], 0, {"read_noise": 1e-3}, epochs=1)
        assert r["accuracy"] == expected["accuracy"] and r["reads"] == expected["reads"]
    aeq = next(r for r in rows if r["protocol"] == "aeqprop")
    assert aeq["reads"] > 15 and "averages" in aeq["calibration"]  # averaged reads, chosen by the calibration

    rb.main(["--sweep", str(sid), "--runs", sweep.runs, "--out", str(tmp_path / "robustness.png")])
    out = capsys.readouterr().out
    eq = next(r for r in rows if r["protocol"] == "eqprop")
    row = (
        f"| read noise | sigma 0.001 | {100 * eq['accuracy']:.1f} ± 0.0 | {eq['reads']:.0f} | "
        f"{100 * aeq['accuracy']:.1f} ± 0.0 | {aeq['reads']:.0f} | {100 * (aeq['accuracy'] - eq['accuracy']):+.1f} |"
    )
    assert "Digits, Hopfield 64-64-10, 1 epochs, batch 16, 1 seeds" in out and row in out
    assert (tmp_path / "robustness.png").stat().st_size > 0 and (tmp_path / "robustness.json").exists()
