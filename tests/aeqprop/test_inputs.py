"""A resume refuses changed inputs and reads them from where the run started."""

import numpy as np
import pytest

from aeqprop import session
from aeqprop.config import validate
from aeqprop.errors import ConfigurationError
from aeqprop.store import RunStore


def write_data(path, flip=False):
    from sklearn.datasets import load_iris

    x, y = load_iris(return_X_y=True)
    if flip:
        y = y.copy()
        y[::3] = (y[::3] + 1) % 3  # a third of the labels changed
    np.savetxt(path, np.column_stack([x, y]), delimiter=",", fmt="%.6g")


def cfg(runs):
    return validate(
        {
            "seed": 1,
            "runs": str(runs),
            "dataset": {"name": "data.csv"},
            "substrate": {"backend": "hopfield", "options": {"hidden": [6]}},
            "protocol": {"name": "aeqprop"},
            "schedule": {"epochs": 2, "batch_size": 8},
            "checkpoint": {"every": 2},
        }
    )


def interrupted_run(tmp_path, monkeypatch):
    start_dir = tmp_path / "start"
    start_dir.mkdir()
    write_data(start_dir / "data.csv")
    monkeypatch.chdir(start_dir)
    calls = {"n": 0}

    def stop(self):
        calls["n"] += 1
        return calls["n"] == 5

    monkeypatch.setattr(session.StopFlag, "__call__", stop)
    outcome = session.start(cfg(tmp_path / "runs"))
    monkeypatch.undo()
    assert outcome.status == "interrupted"
    return start_dir


def test_a_data_file_changed_between_kill_and_resume_is_refused_naming_it(tmp_path, monkeypatch):
    start_dir = interrupted_run(tmp_path, monkeypatch)
    write_data(start_dir / "data.csv", flip=True)
    store = RunStore(tmp_path / "runs", readonly=True)
    before = store.load_checkpoint(1)["global_step"], len(store.metrics(1, "events"))
    store.close()
    with pytest.raises(
        ConfigurationError,
        match=r"inputs changed.*dataset.name: .*data.csv changed since the run "
        r"started \(\d+ -> \d+ bytes, sha256 \w+ -> \w+\)",
    ):
        session.resume(str(tmp_path / "runs"), 1)
    store = RunStore(tmp_path / "runs", readonly=True)
    assert (store.load_checkpoint(1)["global_step"], len(store.metrics(1, "events"))) == before
    assert store.run(1)["status"] == "interrupted" and store.run(1)["owner"] is None  # lease given back
    (start_dir / "data.csv").unlink()
    with pytest.raises(ConfigurationError, match=r"dataset.name: .*data.csv is gone"):
        session.resume(str(tmp_path / "runs"), 1)


def test_resume_from_another_folder_reads_the_inputs_where_the_run_started(tmp_path, monkeypatch):
    interrupted_run(tmp_path, monkeypatch)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    write_data(elsewhere / "data.csv", flip=True)  # a different file of the same name here: not used
    monkeypatch.chdir(elsewhere)
    warnings = []
    import aeqprop.store

    real = aeqprop.store.versions
    monkeypatch.setattr(aeqprop.store, "versions", lambda: {**real(), "numpy": "0.0.1"})
    outcome = session.resume(str(tmp_path / "runs"), 1, on_warning=warnings.append)
    assert outcome.status == "completed"
    assert len(warnings) == 1 and f"numpy {np.__version__} -> 0.0.1" in warnings[0]
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path / "start")
    reference = session.start(cfg(tmp_path / "ref"))
    a = RunStore(tmp_path / "ref", readonly=True).load_checkpoint(reference.run_id)["parameters"]
    b = RunStore(tmp_path / "runs", readonly=True).load_checkpoint(1)["parameters"]
    assert all(a[n].tobytes() == b[n].tobytes() for n in a)
    kinds = [e["kind"] for e in RunStore(tmp_path / "runs", readonly=True).metrics(1, "events")]
    assert "warning" in kinds


def test_netlists_wiring_maps_and_protocol_files_are_inputs_too(tmp_path, monkeypatch):
    from aeqprop import inputs

    for name in ("c.cir", "w.toml", "p.py"):
        (tmp_path / name).write_text(f"content of {name}\n")
    monkeypatch.chdir(tmp_path)
    config = {
        "runs": "w.toml",
        "dataset": {"name": "iris"},
        "protocol": {"name": "p.py:MyRule"},
        "substrate": {"backend": "netlist", "wiring": "w.toml", "options": {"netlist": "c.cir", "eps": 0.1}},
    }
    rows = inputs.record(config)
    assert [(r["key"], r["bytes"]) for r in sorted(rows, key=lambda r: r["key"])] == [
        ("protocol.name", 16),
        ("substrate.options.netlist", 17),
        ("substrate.wiring", 18),
    ]  # runs is the output
    monkeypatch.chdir(tmp_path.parent)
    resolved = inputs.check(rows, config)
    assert resolved["protocol"]["name"] == f"{tmp_path / 'p.py'}:MyRule"
    assert resolved["substrate"]["options"]["netlist"] == str(tmp_path / "c.cir")
    assert config["substrate"]["options"]["netlist"] == "c.cir"  # the recorded config is left as given
    (tmp_path / "w.toml").write_text("changed\n")
    with pytest.raises(ConfigurationError, match=r"substrate.wiring: .*w.toml changed since the run started \(18 -> 8"):
        inputs.check(rows, config)
