"""The sweep file, its expansion into runs, its records, and the loop that retries lost workers."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import BrokenExecutor, Executor, Future
from pathlib import Path

import numpy as np
import pytest

from aeqprop.errors import ConfigurationError
from aeqprop.sweep import expand, load_sweep
from aeqprop.sweep_exec import SweepSettings, run_job, run_jobs
from aeqprop.sweep_store import (
    create_sweep,
    jobs,
    open_store,
    record_run,
    run_digest,
    summarize,
)

ROOT = Path(__file__).resolve().parents[2]
TINY = {
    "dataset": {"name": "iris"},
    "substrate": {"backend": "hopfield", "options": {"hidden": [8], "tol": 1e-3}},
    "protocol": {"name": "eqprop", "options": {"lr": 0.1}},
    "schedule": {"epochs": 2, "batch_size": 8},
}


def test_grid_points_and_seeds_expand_into_every_combination(tmp_path):
    (tmp_path / "base.toml").write_text('[schedule]\nepochs = 7\n[protocol]\nname = "eqprop"\noptions = { lr = 0.1 }\n')
    raw = {
        "base": "base.toml",
        "seeds": [3, 4],
        "config": {"schedule": {"batch_size": 4}},
        "grid": {"substrate.options.eps": [0.05, 0.1], "protocol": {"options": {"beta": [0.1, 0.2, 0.3]}}},
        "points": [
            {"label": "centered", "protocol.options.variant": "centered"},
            {"protocol": {"options": {"variant": "positive"}}},
        ],
    }
    sweep = expand(raw, tmp_path, runs=str(tmp_path / "runs"))
    assert len(sweep.jobs) == 2 * 2 * 3 * 2
    combos = {
        (
            j.config["protocol"]["options"]["variant"],
            j.config["substrate"]["options"]["eps"],
            j.config["protocol"]["options"]["beta"],
            j.seed,
        )
        for j in sweep.jobs
    }
    assert len(combos) == 24
    for j in sweep.jobs:
        assert j.config["seed"] == j.seed and j.config["runs"] == str(tmp_path / "runs")
        assert j.config["schedule"] == {**j.config["schedule"], "epochs": 7, "batch_size": 4}  # base, then [config]
        assert j.config["protocol"]["options"]["lr"] == 0.1  # overrides merge into the base's table
    labels = {j.label for j in sweep.jobs}
    assert "centered, eps=0.05, beta=0.1" in labels and len(labels) == 12
    assert "variant=positive, eps=0.05, beta=0.1" in labels
    assert sweep.axes == ["protocol.options.beta", "protocol.options.variant", "substrate.options.eps"]


def test_labelled_grid_tables_and_fields_that_follow_the_seed():
    raw = {
        "config": {**TINY, "nonideal": {}},
        "seeds": [0, 4],
        "seed_offsets": {"nonideal.seed": 1000, "dataset": {"seed": 0}},
        "grid": {
            "protocol": [
                {"label": "EqProp", "name": "eqprop", "options": {"lr": 0.1}},
                {"name": "eqprop", "options": {"lr": 0.2}},
            ]
        },
        "points": [{"label": "ideal"}, {"label": "noisy", "nonideal.read_noise": 1e-3}],
    }
    sweep = expand(raw)
    assert [(j.label, j.seed) for j in sweep.jobs][:4] == [
        ("ideal, protocol=EqProp", 0),
        ("ideal, protocol=EqProp", 4),
        ("ideal, protocol={'name': 'eqprop', 'options': {'lr': 0.2}}", 0),
        ("ideal, protocol={'name': 'eqprop', 'options': {'lr': 0.2}}", 4),
    ]
    for j in sweep.jobs:
        assert j.config["protocol"] == {"name": "eqprop", "options": {"lr": 0.1 if "EqProp" in j.label else 0.2}}
        assert j.config["nonideal"]["seed"] == 1000 + j.seed and j.config["dataset"]["seed"] == j.seed
        assert j.config["nonideal"].get("read_noise") == (1e-3 if j.label.startswith("noisy") else None)
    assert "label" not in json.dumps([j.overrides for j in sweep.jobs])
    for bad in (0.5, True, "1000"):
        with pytest.raises(ConfigurationError, match=r"seed_offsets.nonideal.seed = .*: give an integer offset"):
            expand({**raw, "seed_offsets": {"nonideal.seed": bad}})


def test_random_draws_follow_their_seed_and_bounds():
    raw = {
        "config": TINY,
        "random": {
            "count": 50,
            "seed": 7,
            "protocol.options.beta": {"log_uniform": [0.01, 1.0]},
            "schedule": {"batch_size": {"integers": [2, 4]}},
            "protocol.options.variant": {"choice": ["centered", "positive"]},
        },
    }
    a, b = expand(raw), expand(raw)
    assert [j.overrides for j in a.jobs] == [j.overrides for j in b.jobs]
    betas = np.array([j.overrides["protocol.options.beta"] for j in a.jobs])
    assert betas.min() >= 0.01 and betas.max() <= 1.0 and np.log10(betas).std() > 0.3  # spread over decades
    assert {j.overrides["schedule.batch_size"] for j in a.jobs} == {2, 3, 4}
    assert {j.overrides["protocol.options.variant"] for j in a.jobs} == {"centered", "positive"}
    other = expand({**raw, "random": {**raw["random"], "seed": 8}})
    assert [j.overrides for j in other.jobs] != [j.overrides for j in a.jobs]


@pytest.mark.parametrize(
    "raw, fragment",
    [
        ({"grids": {}}, "sweep grids: extra inputs are not permitted; valid: name, base"),
        ({"grid": {"schedule.epochs": 3}}, "grid.schedule.epochs: give a non-empty list"),
        (
            {"grid": {"schedule.epochs": [2, 0]}},
            "sweep point 'schedule.epochs=0', seed 0: schedule.epochs: must be >= 1",
        ),
        (
            {"random": {"count": 2, "protocol.options.beta": {"uniform": [0, 1], "choice": [1]}}},
            "random.protocol.options.beta: give exactly one of",
        ),
        ({"random": {"count": 2}}, "random: give at least one axis"),
        ({"seeds": [1, 1]}, "a seed is listed twice"),
        ({"seeds": []}, "sweep seeds: list should have at least 1 item"),
        ({"base": "missing.toml"}, "missing.toml does not exist"),
    ],
)
def test_a_bad_sweep_file_fails_with_one_line_before_anything_runs(tmp_path, raw, fragment):
    with pytest.raises(ConfigurationError) as err:
        expand({"config": TINY, **raw}, tmp_path)
    assert fragment in str(err.value) and "\n" not in str(err.value)


class Scripted(Executor):
    """An executor that answers each submission from a script: per job seed, a list of outcomes
    (an exception to raise, or None for a real run in this process)."""

    def __init__(self, script, log):
        self.script, self.log = script, log

    def submit(self, fn, config, *args):
        future = Future()
        outcome = self.script.get(config["seed"], []).pop(0) if self.script.get(config["seed"]) else None
        self.log.append(config["seed"])
        if outcome is None:
            future.set_result(fn(config, *args))
        else:
            future.set_exception(outcome)
        return future


def _sweep_store(tmp_path, seeds):
    sweep = expand({"config": TINY, "seeds": seeds}, runs=str(tmp_path / "runs"))
    store = open_store(sweep.runs)
    return store, create_sweep(store, sweep)


def test_a_lost_worker_has_its_run_submitted_again_and_recorded_once(tmp_path):
    store, sid = _sweep_store(tmp_path, [0, 1, 2])
    log, made = [], []
    script = {1: [BrokenExecutor("killed"), RuntimeError("KilledWorker")], 2: [BrokenExecutor("x")] * 5}

    def make():
        made.append(Scripted(script, log))
        return made[-1]

    report = run_jobs(store, jobs(store, sid), make, SweepSettings(retries=3))
    rows = jobs(store, sid)
    assert [r["attempts"] for r in rows] == [1, 1, 1]  # every job recorded once
    assert [r["status"] for r in rows] == ["completed", "completed", "failed"]
    assert "lost after 3 retries" in rows[2]["error"]
    assert sorted(log) == [0, 1, 1, 1, 2, 2, 2, 2] and report.resubmitted == 5
    assert len(made) == 1 + 4  # a broken pool is replaced; another failure is not a broken pool
    assert report.recorded == {"completed": 2, "failed": 1}


def test_records_written_by_the_sweep_equal_a_run_trained_alone(tmp_path, monkeypatch):
    import tempfile

    from aeqprop import session
    from aeqprop.config import validate
    from aeqprop.store import RunStore

    store, sid = _sweep_store(tmp_path, [5])
    job = jobs(store, sid)[0]
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    rec = run_job(job["config"])
    assert rec.status == "completed" and not list(scratch.iterdir())  # the worker's scratch store is gone
    run_id = record_run(store, job["id"], job["config"], rec)
    alone = session.start(validate({**job["config"], "runs": str(tmp_path / "alone")}))
    other = RunStore(tmp_path / "alone")
    assert run_digest(store, run_id) == run_digest(other, alone.run_id)
    assert len(store.metrics(run_id, "step_metrics")) == len(other.metrics(alone.run_id, "step_metrics")) > 10
    row = store.run(run_id)
    assert row["config"] == job["config"] and row["status"] == "completed"
    assert [e["kind"] for e in store.metrics(run_id, "events")] == ["closed"]
    assert store._query("SELECT sweep_job FROM runs WHERE id = ?", (run_id,))[0]["sweep_job"] == job["id"]


def test_a_run_that_fails_is_recorded_failed_with_its_error(tmp_path):
    store, sid = _sweep_store(tmp_path, [0])
    job = jobs(store, sid)[0]
    bad = {**job["config"], "protocol": {"name": "eqprop", "options": {"lr": 0.1, "beta": 2.0}}}
    rec = run_job(bad)
    assert rec.status == "failed" and "beta" in rec.error
    record_run(store, job["id"], bad, rec)
    row = jobs(store, sid)[0]
    assert row["status"] == "failed" and "beta" in row["error"]


def test_summary_ranks_points_by_mean_accuracy_over_seeds():
    rows = [
        {"point": p, "label": f"p{p}", "overrides": {}, "status": s, "test_accuracy": a, "seconds": 1.0}
        for p, s, a in [
            (0, "completed", 0.5),
            (0, "completed", 0.7),
            (1, "completed", 0.9),
            (1, "failed", None),
            (2, None, None),
            (2, "completed", 0.8),
            (2, "completed", 0.6),
            (2, "completed", 0.95),
        ]
    ]
    points = summarize(rows)
    assert [p.point for p in points] == [1, 2, 0]
    assert points[0].best and not any(p.best for p in points[1:])
    assert points[1].mean == pytest.approx(np.mean([0.8, 0.6, 0.95])) and points[1].std == pytest.approx(
        np.std([0.8, 0.6, 0.95])
    )
    assert (points[0].completed, points[0].jobs, points[1].jobs) == (1, 2, 4)


def test_summary_ranks_by_validation_accuracy_where_every_point_has_one():
    """The test split chooses nothing: with a validation figure on every point, it decides the ranking."""
    rows = [
        {
            "point": p,
            "label": f"p{p}",
            "overrides": {},
            "status": "completed",
            "test_accuracy": t,
            "val_accuracy": v,
            "seconds": 1.0,
        }
        for p, t, v in [(0, 0.9, 0.70), (0, 0.9, 0.72), (1, 0.8, 0.85), (1, 0.8, 0.83)]
    ]
    points = summarize(rows)
    assert [p.point for p in points] == [1, 0] and points[0].best
    assert points[0].validation == pytest.approx(0.84) and points[1].validation == pytest.approx(0.71)
    rows[-1]["val_accuracy"] = None  # a point without one: back to test accuracy, for every point
    points = summarize(rows)
    assert [p.point for p in points] == [0, 1] and np.isnan(points[1].validation)


def test_a_run_with_a_validation_split_records_it_per_epoch(tmp_path):
    from aeqprop import session
    from aeqprop.config import validate
    from aeqprop.store import RunStore

    outcome = session.start(validate({**TINY, "runs": str(tmp_path), "dataset": {"name": "iris", "validation": 0.2}}))
    assert outcome.status == "completed"
    store = RunStore(str(tmp_path), readonly=True)
    rows = store.metrics(outcome.run_id, "validation")
    epochs = store.metrics(outcome.run_id, "epoch_metrics")
    assert [r["epoch"] for r in rows] == [e["epoch"] for e in epochs] == [1, 2]
    assert all(0.0 <= r["val_accuracy"] <= 1.0 and r["val_loss"] >= 0.0 for r in rows)
    assert rows[-1]["val_accuracy"] == pytest.approx(outcome.result.final.val_accuracy)


def test_the_cli_and_the_sweep_modules_never_import_dask():
    code = (
        "import sys, cli, aeqprop.cli_sweep, aeqprop.sweep, aeqprop.sweep_exec, aeqprop.sweep_store, aeqprop.sweep_views; "
        "assert 'distributed' not in sys.modules and 'dask' not in sys.modules, 'dask imported'"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_load_sweep_takes_the_runs_folder_from_the_file_then_the_base(tmp_path):
    (tmp_path / "base.toml").write_text('runs = "base-runs"\n')
    (tmp_path / "s.toml").write_text('runs = "out"\nbase = "base.toml"\nseeds = [0]\n[config]\ndataset.name = "iris"\n')
    sweep = load_sweep(tmp_path / "s.toml")
    assert sweep.runs == "out" and sweep.name == "s" and len(sweep.jobs) == 1
    (tmp_path / "s.toml").write_text('base = "base.toml"\n')
    assert load_sweep(tmp_path / "s.toml").runs == "base-runs" and load_sweep(tmp_path / "s.toml", "x").runs == "x"
    assert json.dumps(sweep.spec)  # recorded as JSON


@pytest.mark.parametrize(
    "path", sorted(ROOT.glob("examples/sweep*.toml")) + sorted(ROOT.glob("benchmarks/*.toml")), ids=lambda p: p.name
)
def test_every_shipped_sweep_file_expands_into_valid_runs(path):
    from aeqprop.sweep_exec import check_names

    sweep = load_sweep(path)
    check_names(sweep)
    assert (
        len(sweep.jobs)
        == {
            "sweep_aeqprop.toml": 48,
            "learning_rules.toml": 18,
            "robustness.toml": 26 * 2 * 3,
            "robustness_native.toml": 2 * 3,
        }[path.name]
    )
    assert len({json.dumps(j.config, sort_keys=True) for j in sweep.jobs}) == len(sweep.jobs)  # no run twice


def test_a_protocol_option_a_point_gets_wrong_is_refused_before_any_run(tmp_path):
    from aeqprop.sweep_exec import check_names

    raw = {
        "config": {**TINY, "protocol": {"name": "aeqprop"}},
        "grid": {"protocol.options.variant": ["centered", "positve"]},
    }
    with pytest.raises(ConfigurationError, match="sweep point 'variant=positve': unknown aeqprop variant 'positve'"):
        check_names(expand(raw))
    with pytest.raises(ConfigurationError, match="sweep point 'base': protocol.options: unknown option.*lrr"):
        check_names(expand({"config": {**TINY, "protocol": {"name": "eqprop", "options": {"lrr": 1}}}}))


def test_a_sweep_on_instruments_runs_only_one_run_at_a_time():
    from aeqprop.sweep_exec import check_instruments

    configs = [
        j.config for j in expand({"config": {**TINY, "substrate": {"wiring": "bench.toml"}}, "seeds": [0, 1]}).jobs
    ]
    with pytest.raises(ConfigurationError, match="run it with --workers 1"):
        check_instruments(configs, one_at_a_time=False)
    check_instruments(configs, one_at_a_time=True)
    check_instruments([j.config for j in expand({"config": TINY, "seeds": [0, 1]}).jobs], one_at_a_time=False)
