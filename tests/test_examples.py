"""Every example in examples/ is valid and runs: configs build, netlists parse, the user protocol trains."""

from pathlib import Path

import pytest

from aeqprop import session
from aeqprop.config import load_config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted(p for p in (ROOT / "examples").glob("*.toml") if not p.name.startswith(("wiring", "sweep")))


def test_there_is_an_example_for_every_backend_and_protocol():
    from aeqprop import registry

    names = set()
    for path in CONFIGS:
        cfg = load_config(path)
        names |= {cfg.substrate.backend or "instrument", cfg.protocol.name}
    assert set(registry.BUILTIN["backends"]) <= names
    assert set(registry.BUILTIN["protocols"]) <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_example_config_builds(path, monkeypatch):
    monkeypatch.chdir(ROOT)  # examples name their files relative to the repository
    cfg = load_config(path)
    if cfg.substrate.wiring is not None:
        from drivers.wiring import load_wiring

        wiring = load_wiring(cfg.substrate.wiring)  # the instruments are not running: check the map only
        assert wiring.n_inputs == 4 and wiring.n_outputs == 3
        return
    from aeqprop.catalog import CATALOG, locate
    from aeqprop.errors import DataError

    if cfg.dataset.name in CATALOG:  # a named dataset is used where it is installed (CIFAR-10: a big machine)
        try:
            locate(CATALOG[cfg.dataset.name], cfg.dataset.data_dir)
        except DataError as exc:
            pytest.skip(f"{path.name}: {exc}")
    built = session.build(cfg)
    try:
        assert built.trainer.steps_per_epoch() >= 1
        assert built.substrate.info.n_inputs == built.data.n_features
    finally:
        built.substrate.close()
