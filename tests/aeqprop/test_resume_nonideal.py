"""Exact resume on an imperfect device: the checkpoint holds the true device state and its random streams."""

import numpy as np
import pytest

from aeqprop import session
from aeqprop.config import validate
from aeqprop.store import RunStore
from sim_backends.hopfield import HopfieldSubstrate
from sim_backends.nonideal import NonidealSubstrate

DEVICE = {"read_noise": 1e-3, "program_noise": 1e-3, "variability": 0.2, "drift": 1e-4, "levels": 4096, "seed": 5}


def config(runs, protocol="aeqprop", every=1, options=None):
    return validate(
        {
            "seed": 2,
            "runs": str(runs),
            "dataset": {"name": "iris"},
            "substrate": {"backend": "hopfield", "options": {"hidden": [12], "eps": 0.1, "tol": 1e-3}},
            "protocol": {"name": protocol, "options": options or {}},
            "schedule": {"epochs": 3, "batch_size": 8},
            "evaluation": {"every": 0},
            "checkpoint": {"every": every},
            "nonideal": DEVICE,
        }
    )


def final(runs, run_id=1):
    store = RunStore(runs, create=False)
    cp, epochs = store.load_checkpoint(run_id), store.metrics(run_id, "epoch_metrics")
    store.close()
    return cp, epochs


def stop_after(monkeypatch, n):
    calls = {"n": 0}

    def stop(self):
        calls["n"] += 1
        return calls["n"] == n

    monkeypatch.setattr(session.StopFlag, "__call__", stop)


@pytest.mark.parametrize(
    "protocol, options",
    [("aeqprop", {"homeostasis": "feedback"}), ("eqprop", {"lr": 0.05})],
    ids=["aeqprop-feedback", "eqprop"],
)
def test_stopped_and_resumed_run_on_a_noisy_device_is_bitwise_the_uninterrupted_one(
    tmp_path, monkeypatch, protocol, options
):
    ref = session.start(config(tmp_path / "a", protocol, options=options))
    assert ref.status == "completed"
    sparse = session.start(config(tmp_path / "c", protocol, every=0, options=options))
    stop_after(monkeypatch, 13)  # mid-epoch (iris: 15 steps per epoch)
    stopped = session.start(config(tmp_path / "b", protocol, options=options))
    assert stopped.status == "interrupted"
    monkeypatch.undo()
    assert session.resume(str(tmp_path / "b"), stopped.run_id).status == "completed"
    a, ea = final(tmp_path / "a")
    b, eb = final(tmp_path / "b")
    c, ec = final(tmp_path / "c")
    for n in a["parameters"]:
        assert a["parameters"][n].tobytes() == b["parameters"][n].tobytes(), n
        assert a["parameters"][n].tobytes() == c["parameters"][n].tobytes(), n  # checkpoint.every changes nothing
    assert a["random"] == b["random"] == c["random"]
    assert [e["test_accuracy"] for e in ea] == [e["test_accuracy"] for e in eb] == [e["test_accuracy"] for e in ec]
    assert [e["train_loss"] for e in ea] == [e["train_loss"] for e in eb]
    assert sparse.result.final.test_accuracy == ref.result.final.test_accuracy


def test_device_state_has_no_side_effect_and_restores_exactly():
    sub = NonidealSubstrate(HopfieldSubstrate((4, 6, 3), seed=1), DEVICE)
    before = {k: g.bit_generator.state for k, g in sub.rng.items()}
    state = sub.device_state()
    assert {k: g.bit_generator.state for k, g in sub.rng.items()} == before  # no draw from any stream
    for n, v in sub.inner.parameters().items():
        assert state["parameters"][n].tobytes() == v.tobytes()
    noisy = sub.parameters()  # the ordinary read is noisy and draws
    assert any(not np.array_equal(noisy[n], state["parameters"][n]) for n in noisy)
    assert {k: g.bit_generator.state for k, g in sub.rng.items()} != before
    other = NonidealSubstrate(HopfieldSubstrate((4, 6, 3), seed=9), DEVICE)
    other.restore_device_state(state)
    for n, v in other.inner.parameters().items():
        assert v.tobytes() == state["parameters"][n].tobytes(), n  # no gain, noise or levels applied again
    assert {k: g.bit_generator.state for k, g in other.rng.items()} == state["random"]


def tiny_moons(path):
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (40, 2))
    np.savetxt(path, np.column_stack([x, (x[:, 0] * x[:, 1] > 0).astype(int)]), delimiter=",", fmt="%.5f")
    return str(path)


@pytest.mark.parametrize("backend", ["resistive", "netlist"])
def test_stop_and_resume_on_the_other_simulated_backends_is_bitwise(tmp_path, monkeypatch, backend):
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    if backend == "resistive":
        substrate = {"backend": "resistive", "options": {"hidden": [6], "tol": 1e-6}}
        data, protocol = "iris", {"name": "eqprop", "options": {"beta": 0.2, "lr": 0.3}}
    else:
        substrate = {"backend": "netlist", "options": {"netlist": str(root / "examples" / "netlist_small.cir")}}
        data, protocol = tiny_moons(tmp_path / "moons.csv"), {"name": "aeqprop", "options": {"beta": 0.4}}

    def cfg(runs):
        return validate(
            {
                "seed": 3,
                "runs": str(runs),
                "dataset": {"name": data},
                "substrate": substrate,
                "protocol": protocol,
                "schedule": {"epochs": 2, "batch_size": 8},
                "evaluation": {"every": 0},
                "checkpoint": {"every": 0},
                "nonideal": {"read_noise": 1e-3},
            }
        )

    session.start(cfg(tmp_path / "a"))
    stop_after(monkeypatch, 3)  # mid-epoch, between two epoch-end checkpoints: the stop writes its own
    assert session.start(cfg(tmp_path / "b")).status == "interrupted"
    monkeypatch.undo()
    assert session.resume(str(tmp_path / "b"), 1).status == "completed"
    a, ea = final(tmp_path / "a")
    b, eb = final(tmp_path / "b")
    for n in a["parameters"]:
        assert a["parameters"][n].tobytes() == b["parameters"][n].tobytes(), n
    assert [e["test_accuracy"] for e in ea] == [e["test_accuracy"] for e in eb]
