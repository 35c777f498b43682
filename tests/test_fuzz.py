"""No traceback for any input: seeded fuzz of the command line (benchmarks/fuzz.py prints the full table)
and property-based checks of the config reader with Hypothesis."""

import importlib.util
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aeqprop.config import RunConfig, load_config
from aeqprop.errors import ConfigurationError

ROOT = Path(__file__).resolve().parents[1]


def fuzz_module():
    import sys

    name = "aeqprop_fuzz_benchmark"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / "fuzz.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up
        spec.loader.exec_module(module)
    return sys.modules[name]


FAILURES = ("traceback", "silent", "refused valid", "lost or mixed")


@pytest.mark.slow
def test_generated_cli_inputs_are_refused_in_one_line_or_run_and_no_data_is_lost():
    fuzz = fuzz_module()
    table = fuzz.run(160, seed=13, categories=("flags", "set", "toml", "store", "views"))
    examples = table.pop("_examples")
    tried = sum(c["tried"] for c in table.values())
    assert tried == 160
    for category, counts in table.items():
        assert counts["tried"] > 0, category
        assert counts["clean"] > 0, category  # the generator reaches the refusals
    assert sum(c["ran"] for c in table.values()) > 10  # and the legitimate runs
    assert {v: sum(c[v] for c in table.values()) for v in FAILURES} == dict.fromkeys(FAILURES, 0), examples


@pytest.mark.slow
def test_netlist_inputs_end_in_one_line_through_the_cli():
    """Netlist parsing belongs to the netlist backend; here only the CLI's promise: whatever the file, one line."""
    fuzz = fuzz_module()
    table = fuzz.run(30, seed=5, categories=("netlist",))
    examples = table.pop("_examples")
    assert table["netlist"]["tried"] == 30
    for line in examples.get("traceback", []):
        assert "-> error: internal error (" in line, line  # the CLI's one line, not an escaped traceback


def _one_line_config_error(call):
    try:
        result = call()
    except ConfigurationError as exc:
        assert "\n" not in str(exc) and str(exc), repr(exc)
        return
    assert isinstance(result, RunConfig)


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(st.binary(max_size=300), st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass"))))
def test_any_config_file_is_a_config_or_one_configuration_error(tmp_path, data):
    path = tmp_path / "run.toml"
    path.write_bytes(data)
    _one_line_config_error(lambda: load_config(path))


KEYS = st.sampled_from(
    [
        "seed",
        "runs",
        "schedule.epochs",
        "schedule.batch_size",
        "dataset.test_fraction",
        "dataset.seed",
        "substrate.options.hidden",
        "substrate.options.layers",
        "nonideal.seed",
        "nonideal.read_noise",
        "evaluation.every",
        "checkpoint.every",
        "schedule",
        "dataset.name.x",
    ]
)
VALUES = st.one_of(
    st.integers(),
    st.floats(),
    st.booleans(),
    st.text(max_size=20),
    st.lists(st.one_of(st.integers(), st.floats(), st.booleans()), max_size=3),
).map(repr)


@settings(max_examples=200, deadline=None, database=None)
@given(
    assignments=st.lists(
        st.one_of(st.tuples(KEYS, VALUES).map(lambda kv: f"{kv[0]}={kv[1]}"), st.text(max_size=30)), max_size=3
    )
)
def test_any_set_override_is_a_config_or_one_configuration_error(assignments):
    _one_line_config_error(lambda: load_config(overrides=assignments))
