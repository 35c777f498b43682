"""Expected-exchange tests: the exact messages each profile sends (PyMeasure style)."""

from pathlib import Path

import numpy as np
import pytest
from fakes import ReplyTimeout, ScriptedTransport

from aeqprop.errors import ConfigurationError, InstrumentError
from drivers.scpi import Overload, ScpiInstrument, channel_list, split_reply
from drivers.transport import VisaTransport

SIM = Path(__file__).resolve().parents[2] / "examples" / "sim-instruments.yaml"
OK_2450 = '0,"No error;0;0 0"'


def inst(profile, script):
    return ScpiInstrument(ScriptedTransport(script).open(), profile)


def test_channel_lists_compress_runs_and_replies_split_outside_quotes():
    assert channel_list([1, 2, 3, 7, 9, 10]) == "1:3,7,9,10"
    assert split_reply('1;0.5,0.25;0,"No error;0;0 0"') == ["1", "0.5,0.25", '0,"No error;0;0 0"']


def test_keithley2450_messages():
    trip = "SOUR:VOLT:ILIM:TRIP?"
    k = inst(
        "keithley2450",
        [
            ("*LANG?", "SCPI"),
            ("*RST;:*CLS;:SOUR:FUNC VOLT;:OUTP:SMOD HIMP;:SYST:ERR?", OK_2450),
            (f"SOUR:VOLT 0.5;:{trip};:SYST:ERR?", "0;" + OK_2450),
            (f"SOUR:VOLT:ILIM 0.001;:{trip};:SYST:ERR?", "0;" + OK_2450),
            (f"OUTP ON;:{trip};:SYST:ERR?", "0;" + OK_2450),
            ("MEAS:VOLT?", "1.25E-01"),
            ("MEAS:CURR?", "-3E-06"),
            (f"SOUR:VOLT 0.75;:{trip};:SYST:ERR?", "1;" + OK_2450),  # the limit tripped: a status bit, no error
        ],
    )
    k.prepare()
    k.set_voltage(1, 0.5)
    k.set_compliance(1, 1e-3)
    k.output([1], True)
    assert k.measure([1])[0] == 0.125
    assert k.measure([1], "current")[0] == -3e-6
    with pytest.raises(InstrumentError, match=r"channel\(s\) 1 tripped their current compliance"):
        k.set_voltage(1, 0.75)
    with pytest.raises(ConfigurationError, match="no channel 2"):
        k.set_voltage(2, 0.1)
    assert k.transport.script == []


def test_a_keithley2450_in_another_command_set_is_refused_before_anything_is_set():
    k = inst("keithley2450", [("*LANG?", "TSP")])
    with pytest.raises(InstrumentError, match="speaks 'TSP', not SCPI"):
        k.prepare()
    assert k.transport.sent == ["*LANG?"]


def test_keysight_b2900_sets_up_both_channels_and_chains_the_measurement_and_trip_states_in_one_message():
    trips = "SENS1:CURR:PROT:TRIP?;:SENS2:CURR:PROT:TRIP?"
    b = inst(
        "keysight-b2900",
        [
            (
                "*RST;:*CLS;:SOUR1:FUNC:MODE VOLT;:SOUR2:FUNC:MODE VOLT;:OUTP1:OFF:MODE HIZ;:OUTP2:OFF:MODE HIZ;"
                ":OUTP1:ON:AUTO OFF;:OUTP2:ON:AUTO OFF;:SYST:ERR?",
                '+0,"No error"',
            ),
            (
                f"SOUR1:VOLT 0.1;:SOUR2:VOLT -0.2;:{trips};:MEAS:VOLT? (@1,2);:SYST:ERR?",
                '+0;+0;+0.1,-0.2;+0,"No error"',
            ),
            (f"OUTP1 OFF;:OUTP2 OFF;:{trips};:SYST:ERR?", '+0;+0;+0,"No error"'),
            (f"SENS2:CURR:PROT 0.01;:{trips};:SYST:ERR?", '+0;+1;+0,"No error"'),
        ],
    )
    b.prepare()
    assert b.exchange(sets=[(1, 0.1), (2, -0.2)], reads=[1, 2]).tolist() == [0.1, -0.2]
    b.output([1, 2], False)
    with pytest.raises(InstrumentError, match=r"channel\(s\) 2 tripped"):
        b.set_compliance(2, 0.01)


def test_multichannel_keeps_full_float_precision_and_triggers_before_reading():
    v = 0.1 + 0.2  # 0.30000000000000004 must cross the wire unchanged
    m = inst(
        "multichannel",
        [
            ("*CLS;:SYST:ACT:COUN?;:SYST:ERR?", '0;0,"No error"'),
            ("SYST:ACT:COUN?", "0"),
            (
                f"SOUR:VOLT {v!r},(@1001);:SOUR:VOLT 1e-17,(@1002);:INIT;:*OPC?;:SYST:ACT:COUN?;:MEAS:VOLT? (@2001:2003);"
                ":SYST:ERR?",
                f'1;1;{v!r},-1.0,2.5e-09;0,"No error"',
            ),
            ("SOUR:PULS 0.5,(@9000);:SYST:ACT:COUN?;:SYST:ERR?", '2;0,"No error"'),
        ],
    )
    m.prepare()
    got = m.exchange(sets=[(1001, v), (1002, 1e-17)], trigger=True, reads=[2001, 2002, 2003])
    assert got.tolist() == [v, -1.0, 2.5e-9]
    m.pulse(9000, 0.5)
    assert m.actions == 2


@pytest.mark.parametrize(
    "counted,then",
    [
        ("8", ("SYST:ACT:COUN?;:SYST:ERR?", '8;0,"No error"')),  # acted on: only its replies are asked again
        ("7", ("SOUR:PULS 0.5,(@9000);:SYST:ACT:COUN?;:SYST:ERR?", '8;0,"No error"')),  # not acted on: sent again
    ],
)
def test_a_pulse_whose_reply_is_lost_is_never_run_twice(counted, then):
    m = inst(
        "multichannel",
        [
            ("SYST:ACT:COUN?", "7"),
            ("SOUR:PULS 0.5,(@9000);:SYST:ACT:COUN?;:SYST:ERR?", ReplyTimeout("late")),
            ("SYST:ACT:COUN?", counted),
            then,
        ],
    )
    m.pulse(9000, 0.5)
    assert m.transport.script == [] and m.actions == 8


def test_without_an_action_counter_a_lost_pulse_stops_instead_of_pulsing_twice():
    import dataclasses

    from drivers.scpi import PROFILES

    profile = dataclasses.replace(PROFILES["multichannel"], action_count=None)
    m = ScpiInstrument(ScriptedTransport([("SOUR:PULS 0.5,(@9000);:SYST:ERR?", ReplyTimeout("late"))]).open(), profile)
    with pytest.raises(InstrumentError, match="no action counter"):
        m.pulse(9000, 0.5)
    assert m.transport.sent == ["SOUR:PULS 0.5,(@9000);:SYST:ERR?"]


def test_the_overflow_value_is_refused_as_data_and_not_retried():
    m = inst("multichannel", [("MEAS:VOLT? (@1:3)", "0.1,9.91E37,0.3")])
    with pytest.raises(Overload, match="reading 2 of 3 is 9.91e\\+37, the overflow value"):
        m.measure([1, 2, 3])
    assert m.transport.faults == 0


def test_an_error_in_the_queue_after_a_set_raises_with_the_instruments_words():
    m = inst(
        "multichannel",
        [
            ("SOUR:VOLT 5.0,(@1001);:SYST:ACT:COUN?;:SYST:ERR?", '0;-9001,"Compliance tripped on channel 1001"'),
            ("SYST:ERR?", '-222,"Data out of range"'),
            ("SYST:ERR?", '0,"No error"'),
        ],
    )
    with pytest.raises(InstrumentError, match=r"error -9001 \(Compliance tripped on channel 1001\).*then error -222"):
        m.set_voltage(1001, 5.0)


def test_a_reply_with_the_wrong_count_of_numbers_is_retried():
    m = ScpiInstrument(
        ScriptedTransport([("MEAS:VOLT? (@1:3)", "0.1,0.2"), ("MEAS:VOLT? (@1:3)", "0.1,0.2,0.3")], retries=1).open(),
        "multichannel",
    )
    assert m.measure([1, 2, 3]).tolist() == [0.1, 0.2, 0.3]
    assert m.transport.faults == 1


@pytest.mark.parametrize(
    "address,profile,identity",
    [
        ("USB0::0x05E6::0x2450::SIM0001::INSTR", "keithley2450", "KEITHLEY INSTRUMENTS,MODEL 2450"),
        ("TCPIP0::192.0.2.10::inst0::INSTR", "keysight-b2900", "Keysight Technologies,B2902B"),
    ],
)
def test_static_dialogues_through_pyvisa_sim(address, profile, identity):
    t = VisaTransport(address, backend=f"{SIM}@sim", timeout=0.5, retries=0)
    with t:
        smu = ScpiInstrument(t, profile)
        assert smu.identify().startswith(identity)
        smu.prepare()
        assert smu.errors() == []
        if profile == "keithley2450":
            smu.set_voltage(1, 0.5)
            smu.set_compliance(1, 1e-3)
            assert smu.measure([1]).tolist() == [0.125]
            assert smu.source_levels([1]).tolist() == [0.0]
            with pytest.raises(InstrumentError, match="error -222"):
                smu.set_voltage(1, 30.0)
        else:
            got = smu.exchange(sets=[(1, 0.1), (2, -0.2)], reads=[1, 2])
            assert np.array_equal(got, [0.1, -0.2])


def test_a_profile_whose_set_up_repeats_per_channel_but_lists_none_is_refused_before_anything_is_sent():
    import dataclasses

    from drivers.scpi_profiles import PROFILES

    profile = dataclasses.replace(PROFILES["keysight-b2900"], channels=None, language=None)
    k = ScpiInstrument(ScriptedTransport([]).open(), profile)
    with pytest.raises(ConfigurationError, match=r"SOUR\{ch\}:FUNC:MODE VOLT.*list its channels"):
        k.prepare()
    assert k.transport.sent == []


def test_a_visa_resource_that_is_not_message_based_is_refused_at_open():
    class Register:  # e.g. a PXI or VXI register-based resource: no write_raw / read_raw
        closed = False

        def close(self):
            self.closed = True

    class Manager:
        def open_resource(self, address, **options):
            self.resource = Register()
            return self.resource

    t = VisaTransport("PXI0::1::INSTR", timeout=0.5, retries=0)
    t._rm = Manager()
    with pytest.raises(InstrumentError, match="cannot open PXI0::1::INSTR: a Register, not a message-based resource"):
        t.open()
    assert t._rm.resource.closed and not t.is_open
