"""SPICE conventions of the netlist reader: names, numbers, models, includes, refusals with their line."""

import numpy as np
import pytest

from aeqprop.errors import ConfigurationError
from sim_backends.netlist import NetlistSubstrate
from sim_backends.netlist_parse import VT_TNOM, number, parse


@pytest.mark.parametrize(
    "text,value",
    [
        ("1k", 1e3),
        ("2.2MEG", 2.2e6),
        ("1M", 1e-3),
        ("1mil", 25.4e-6),
        ("10u", 1e-5),
        ("3n", 3e-9),
        ("4p", 4e-12),
        ("5f", 5e-15),
        ("6a", 6e-18),
        ("1t", 1e12),
        ("2G", 2e9),
        ("10kohm", 1e4),
        ("5V", 5.0),
        ("1e-3", 1e-3),
        (".5", 0.5),
        ("-2.5e2k", -2.5e5),
    ],
)
def test_spice_scale_factors(text, value):
    assert number(text, "here") == pytest.approx(value, rel=1e-15)


def test_vt_is_the_thermal_voltage_at_27_celsius():
    assert VT_TNOM == pytest.approx(0.0258649, abs=1e-7)
    c = parse("t\nV1 a 0 1\nR1 a b 1k train\nD1 b 0 exp\n.output b\n")
    assert c.of("D")[0].diode == {"IS": 1e-12, "N": 1.0, "VT": VT_TNOM}


def test_names_fold_case_and_a_title_comments_and_continuations_are_read_as_spice_does():
    text = """My Circuit Title
* a comment line
V1 IN 0 DC 2   $ a trailing comment
R1 in Mid
+ 1k train     ; continued from the line above
R2 MID 0 1K
D1 mid GND DMOD 2
.MODEL dmod d (IS=1e-15
+ N=1.5 CJO=2p TT=1n)
.op
.output Mid
.END
R9 x y 1
"""
    c = parse(text)
    assert c.nodes == ["0", "in", "mid"] and c.outputs == ["mid"]
    r1 = c.of("R")[0]
    assert r1.value == 1e-3 and r1.trainable and r1.line == 4
    assert c.of("D")[0].diode == {"IS": 2e-15, "N": 1.5, "VT": VT_TNOM}  # area 2 doubles IS
    assert len(c.elements) == 4  # nothing after .end


def test_a_first_line_that_reads_as_an_element_is_an_element():
    assert len(parse("V1 a 0 x0\nR1 a 0 1 train\n.output a\n").elements) == 2


def test_include_reads_a_file_relative_to_the_netlist(tmp_path):
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "models.lib").write_text(".model dx D (IS=3e-14 N=1.2)\nR2 b 0 2k\n")
    (tmp_path / "top.cir").write_text(
        "top\nV1 a 0 x0\nR1 a b 1k train\nD1 b 0 DX\n.include lib/models.lib\n.output b\n"
    )
    sub = NetlistSubstrate(netlist=tmp_path / "top.cir")
    assert sub.circuit.of("D")[0].diode["IS"] == 3e-14 and len(sub.circuit.of("R")) == 2


def test_an_ideal_model_by_name_and_the_legacy_inline_model():
    text = "t\nV1 a 0 x0\nR1 a b 1 train\nD1 0 b ideal\nD2 b 0 exp IS=1e-9 N=2\nR2 b 0 1\n.output b\n"
    sub = NetlistSubstrate(text=text)
    sub.clamp(np.array([[-1.0], [1.0]]))
    v = sub.outputs()[:, 0]
    assert v[0] == pytest.approx(0.0, abs=1e-12)  # the ideal diode holds V(b) >= 0
    assert 0.0 < v[1] < 0.5


GOOD = "V1 a 0 x0\nR1 a b 1 train\nR2 b 0 2\n.output b\n"


@pytest.mark.parametrize(
    "text,line,reason",
    [
        (GOOD + "C1 b 0 1u\n", 5, "unsupported element 'C1'"),
        (GOOD + "I1 b 0 1m\n", 5, "unsupported element 'I1'"),
        (GOOD + ".tran 1n 1u\n", 5, "unsupported card '.tran'"),
        (GOOD + ".param r=1k\n", 5, "unsupported card '.param'"),
        (GOOD + "r2 b a 5\n", 5, "already defined"),
        (GOOD + "D1 b 0 nomodel\n", 5, "unknown diode model 'nomodel'"),
        (GOOD + "D1 b 0 dz\n.model dz D (IS=1e-14 BV=5.1)\n", 6, "BV"),
        (GOOD + "D1 b 0 dz\n.model dz D (IS=1e-14 RS=10)\n", 6, "RS"),
        (GOOD + ".model q1 NPN (BF=100)\n", 5, "only diodes"),
        (GOOD + "V2 c 0 SIN(0 1 1k)\nR3 c 0 1\n", 5, "takes one DC value"),
        (GOOD + "+ 1k\n", 4, "output node '1k'"),  # the continuation extends the .output line
        (GOOD + "R3 a b 1e999 train\n", 5, "'1e999' is too large for a number"),  # not an open circuit
        (GOOD + "R3 a b 1e400meg\n", 5, "too large for a number"),
        (GOOD + "D1 b 0 dz\n.model dz D (IS=1e-14 N=1e309)\n", 6, "too large for a number"),
    ],
)
def test_unsupported_input_is_refused_with_its_line(text, line, reason):
    with pytest.raises(ConfigurationError) as err:
        parse(text)
    message = str(err.value)
    assert f"line {line}:" in message and reason in message
    assert "\n" not in message


@pytest.mark.parametrize("encoding, byte", [("latin-1", "0xe9"), ("utf-16", "0xff")])
def test_a_netlist_that_is_not_utf8_is_refused_with_the_byte(tmp_path, encoding, byte):
    path = tmp_path / "n.cir"
    path.write_bytes("* r\u00e9seau\nV1 a 0 x0\nR1 a o 1 train\nR2 o 0 1\n.output o\n".encode(encoding))
    with pytest.raises(ConfigurationError, match=rf"n.cir: not UTF-8 text \(byte {byte} at offset \d+\)"):
        NetlistSubstrate(netlist=str(path))


def test_an_input_gain_that_is_not_a_number_names_its_line():
    with pytest.raises(ConfigurationError, match=r"line 2: 'e' is not a number"):
        parse("* t\nV1 a 0 e*x0\nR1 a o 1 train\nR2 o 0 1\n.output o\n")
