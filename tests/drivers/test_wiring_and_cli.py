import tomllib
from pathlib import Path

import numpy as np
import pytest

from aeqprop.errors import ConfigurationError
from drivers.board import crc8, frame, unframe
from drivers.cli_support import (
    build_substrate,
    check_wiring,
    list_instruments,
    probe,
    protocol_betas,
)
from drivers.wiring import load_wiring, parse_wiring
from sim_backends.hopfield import HopfieldSubstrate
from sim_backends.virtual_lab import BoardServer, ScpiServer

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def lab_map():
    return tomllib.loads((EXAMPLES / "wiring-virtual-lab.toml").read_text())


def test_the_example_maps_validate_with_the_capabilities_they_wire():
    assert load_wiring(EXAMPLES / "wiring-virtual-lab.toml").capabilities() == {"eqprop", "aeqprop", "homeostasis"}
    assert load_wiring(EXAMPLES / "wiring-smu-bench.toml").capabilities() == {"aeqprop"}


@pytest.mark.parametrize(
    "edit,message",
    [
        (
            lambda d: d["inputs"].update(channels=[1001, 1002], first=None) or d["inputs"].pop("first"),
            "inputs wires 2 channels but needs 4",
        ),
        (lambda d: d["parameters"]["b1"]["knob"].update(first=1001), "channel 1001 of lab is wired twice"),
        (lambda d: d["inputs"].pop("limits"), "inputs is a source and needs limits"),
        (lambda d: d["inputs"].update(limits={"range": [1.0, -1.0]}), "need finite low < high"),
        (lambda d: d["instruments"]["lab"].update(profile="hp3478"), "instruments.lab.profile"),
        (lambda d: d["outputs"].update(instrument="dmm"), "names instrument 'dmm'"),
    ],
)
def test_a_bad_map_fails_in_one_line_naming_the_problem(edit, message):
    data = lab_map()
    edit(data)
    with pytest.raises(ConfigurationError, match=message):
        parse_wiring(data)


def test_check_reports_values_of_the_run_past_a_limit_without_opening_anything():
    path = EXAMPLES / "wiring-smu-bench.toml"
    lines = check_wiring(
        path, betas=protocol_betas("aeqprop", {"beta": 1.0, "variant": "optimistic"}), x=np.array([[0.0, 1.0]])
    )
    assert "nudge.strength: the run sends 0 .. 1 within [0.0, 1.0]" in lines
    with pytest.raises(ConfigurationError, match=r"nudge.strength: the run sends -0.5 .. 0.5, outside"):
        check_wiring(path, betas=[-0.5, 0.0, 0.5])
    with pytest.raises(ConfigurationError, match=r"inputs: the run sends 0 .. 1.5, outside the range \[-0.6, 0.6\]"):
        check_wiring(path, betas=[0.0, 0.5], x=np.array([[0.0, 3.0]]))
    with pytest.raises(ConfigurationError, match="needs \\['eqprop'\\]"):
        check_wiring(path, capabilities=["eqprop"])


def test_crc8_is_crc8_smbus_and_frames_round_trip():
    assert crc8(b"123456789") == 0xF4
    line = frame(12, "GET 2001-2003")
    assert line == f"12 GET 2001-2003*{crc8(b'12 GET 2001-2003'):02X}"
    assert unframe(line) == (12, "GET 2001-2003")
    with pytest.raises(ValueError):
        unframe(line[:-1] + ("0" if line[-1] != "0" else "1"))


def test_probe_identifies_reads_back_a_level_and_changes_nothing():
    sim = HopfieldSubstrate((4, 5, 3), max_batch=1)
    with ScpiServer(sim) as lab, BoardServer(model=lab.model) as board:
        report = probe(lab.address, timeout=1.0)
        assert report["identity"].startswith("aeqprop,virtual-lab")
        assert report["profile"] == "multichannel" and report["errors"] == []
        assert report["safe_read"] == (1001, 0.0)
        b = probe(board.address, timeout=1.0)
        assert b["profile"] == "board" and b["identity"].startswith("aeqprop-virtual-lab")
        assert lab.model.calls == [] and lab.model.outputs_on == set()


def test_build_substrate_opens_the_map_and_close_switches_outputs_off():
    sim = HopfieldSubstrate((4, 5, 3), max_batch=1)
    with ScpiServer(sim) as lab:
        data = lab_map()
        data["instruments"]["lab"]["address"] = lab.address
        with build_substrate(parse_wiring(data)) as hw:
            assert hw.info.max_batch == 1 and len(lab.model.outputs_on) == 4 + 3 + 1 + 2 + 2 * 43
            assert np.array_equal(hw.parameters()["W1"], sim.parameters()["W1"])
        assert lab.model.outputs_on == set()


def test_list_instruments_returns_visa_and_serial_lists():
    found = list_instruments()
    assert set(found) == {"visa", "serial"} and all(isinstance(v, list) for v in found.values())


def test_drivers_never_import_the_simulations():
    import ast

    for path in (Path(__file__).resolve().parents[2] / "drivers").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            assert not any(n.startswith("sim_backends") for n in names), f"{path.name} imports {names}"


def test_check_with_a_config_refuses_protocol_options_that_no_protocol_takes(tmp_path):
    from typer.testing import CliRunner

    from cli import app

    cfg = tmp_path / "run.toml"
    cfg.write_text('[dataset]\nname = "iris"\n[protocol]\nname = "aeqprop"\noptions = { beta = 0.5, betta = 1.0 }\n')
    result = CliRunner().invoke(
        app, ["instruments", "check", str(EXAMPLES / "wiring-virtual-lab.toml"), "--config", str(cfg)]
    )
    assert result.exit_code != 0
    assert "protocol.options: unknown option(s) betta" in result.output


def test_bench_limits_must_lie_inside_the_profiles_device_range():
    data = tomllib.loads((EXAMPLES / "wiring-smu-bench.toml").read_text())
    name = data["inputs"]["instrument"]
    assert data["instruments"][name]["profile"] in ("keithley2450", "keysight-b2900")
    data["inputs"]["limits"]["range"] = [-300.0, 0.5]
    with pytest.raises(
        ConfigurationError,
        match=r"inputs limits \[-300.0, 0.5\] V exceed the .*source range "
        r"\[-210.0, 210.0\] V",
    ):
        parse_wiring(data)
