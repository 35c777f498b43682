import tomllib
from pathlib import Path

import pytest

from aeqprop import registry
from aeqprop.config import load_config, parse_value
from aeqprop.errors import ConfigurationError

# run configs among the examples (wiring maps live there too): the files with a [protocol] table
EXAMPLES = [
    p
    for p in sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.toml"))
    if "protocol" in tomllib.loads(p.read_text())
]


def test_the_default_is_the_built_in_run():
    cfg = load_config()
    assert (cfg.dataset.name, cfg.dataset.test_fraction, cfg.seed) == ("digits", 0.2, 0)
    assert cfg.substrate.backend == "hopfield"
    assert cfg.substrate.options == {"hidden": [512], "eps": 0.1, "tol": 1e-3, "max_sweeps": 100, "dtype": "float32"}
    assert cfg.protocol.name == "aeqprop" and cfg.protocol.options["variant"] == "centered"
    assert (cfg.schedule.epochs, cfg.schedule.batch_size) == (30, 16)


def test_overrides_parse_toml_values_and_create_tables():
    cfg = load_config(
        overrides=[
            "schedule.epochs=5",
            "substrate.options.hidden=[32, 16]",
            "dataset.name=wine",
            "protocol.options.beta=0.5",
            "schedule.beta={ start = 1.0, end = 0.1 }",
        ]
    )
    assert cfg.schedule.epochs == 5
    assert cfg.substrate.options["hidden"] == [32, 16]
    assert cfg.substrate.options["eps"] == 0.1  # the rest of the table is kept
    assert cfg.dataset.name == "wine"
    assert cfg.protocol.options["beta"] == 0.5
    assert cfg.schedule.beta == {"start": 1.0, "end": 0.1}
    assert parse_value("true") is True and parse_value("1e-3") == 1e-3 and parse_value("equilibrium") == "equilibrium"


@pytest.mark.parametrize(
    "override, message",
    [
        ("schedule.epochs=0", "schedule.epochs: must be >= 1"),
        ("schedule.batch_size=-2", "schedule.batch_size: must be >= 1"),
        ("dataset.test_fraction=1.5", "dataset.test_fraction: must be < 1"),
        ("checkpoint.every=-1", "checkpoint.every: must be >= 0"),
        ("schedule.epoch=3", "schedule.epoch: unknown field; valid: epochs, batch_size, beta, lr, eps"),
        ("colour=3", "colour: unknown field; valid: seed, runs, dataset"),
        ("schedule.epochs=many", "schedule.epochs: input should be a valid integer"),
        ("substrate.options=3", "substrate.options: input should be a valid dictionary"),
        ("schedule.epochs", "--set 'schedule.epochs': write it as section.field=value"),
    ],
)
def test_malformed_fields_give_one_line_naming_the_field(override, message):
    with pytest.raises(ConfigurationError) as info:
        load_config(overrides=[override])
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith(message), text


def test_file_errors(tmp_path):
    with pytest.raises(ConfigurationError, match="does not exist"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[schedule\nepochs = 3\n")
    with pytest.raises(ConfigurationError, match="not valid TOML"):
        load_config(bad)
    two = tmp_path / "two.toml"
    two.write_text("[schedule]\nepochs = 0\nbatch_size = 0\n")
    with pytest.raises(ConfigurationError, match=r"^schedule.epochs: must be >= 1 \(and 1 more\)$"):
        load_config(two)


def test_file_values_and_overrides_on_top(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('seed = 4\n[dataset]\nname = "iris"\n[schedule]\nepochs = 3\n[nonideal]\nread_noise = 0.01\n')
    cfg = load_config(path, overrides=["schedule.epochs=7"])
    assert (cfg.seed, cfg.data_seed, cfg.dataset.name, cfg.schedule.epochs) == (4, 4, "iris", 7)
    assert cfg.nonideal == {"read_noise": 0.01}
    assert cfg.substrate.backend == "hopfield" and cfg.substrate.options == {}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_validates_and_names_registered_parts(path):
    cfg = load_config(path)
    if cfg.substrate.wiring is None:
        assert cfg.substrate.backend in registry.available("backends")
    assert cfg.protocol.name in registry.available("protocols")


def test_there_is_an_example_per_hopfield_protocol():
    names = {p.name for p in EXAMPLES}
    assert {"hopfield_aeqprop.toml", "hopfield_eqprop.toml", "hopfield_sgd_oracle.toml"} <= names
