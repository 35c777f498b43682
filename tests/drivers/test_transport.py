import os
import signal
import time

import pytest
from fakes import Disconnected, ReplyTimeout, ScriptedTransport

from aeqprop.errors import InstrumentError
from drivers.transport import GarbledReply, SerialTransport, open_transport


def test_a_reply_is_returned_and_every_message_is_logged_with_a_timestamp():
    t = ScriptedTransport([("*IDN?", "ACME,1")])
    t0 = time.time()
    assert t.open().query("*IDN?") == "ACME,1"
    assert [(e.direction, e.text) for e in t.log] == [(">", "*IDN?"), ("<", "ACME,1")]
    assert all(t0 <= e.t <= time.time() for e in t.log)
    assert (t.round_trips, t.bytes_out, t.bytes_in) == (1, 6, 7)


def test_a_timeout_is_retried_after_an_explicit_close_and_reopen_and_reported():
    events = []
    t = ScriptedTransport(
        [("X?", ReplyTimeout("late")), ("X?", Disconnected("reset")), ("X?", "7")],
        retries=2,
        on_event=lambda k, m: events.append(k),
    )
    assert t.open().query("X?", parse=float) == 7.0
    assert t.opened == 3 and t.closed == 2
    assert [k for k in events if k != "reopen"] == ["timeout", "retry", "disconnect", "retry"]
    assert events.count("reopen") == 2 and t.faults == 2


def test_after_the_last_retry_the_error_names_the_resource():
    events = []
    t = ScriptedTransport(
        [("X?", ReplyTimeout("late"))] * 3, address="ASRL7::INSTR", retries=2, on_event=lambda k, m: events.append(k)
    )
    with pytest.raises(InstrumentError, match=r"ASRL7::INSTR did not answer 'X\?' correctly after 3 attempts"):
        t.open().query("X?")
    assert events[-1] == "failed"


def test_a_garbled_reply_is_retried_but_an_error_reported_by_the_instrument_is_not():
    def parse(reply):
        if reply == "ERR":
            raise InstrumentError("the instrument says no")
        return float(reply)

    t = ScriptedTransport([("X?", "1.\x802"), ("X?", "1.2"), ("Y?", "ERR")])
    assert t.open().query("X?", parse=parse) == 1.2  # non-ASCII byte: garbled, retried
    with pytest.raises(InstrumentError, match="says no"):
        t.query("Y?", parse=parse)
    assert t.sent == ["X?", "X?", "Y?"]


def test_the_minimum_interval_between_commands_is_kept():
    t = ScriptedTransport([("A?", "1"), ("B?", "2"), ("C?", "3")], min_interval=0.03)
    t.open()
    t0 = time.perf_counter()
    for m in ("A?", "B?", "C?"):
        t.query(m)
    assert time.perf_counter() - t0 >= 0.06


def test_ctrl_c_during_io_finishes_the_exchange_then_stops():
    def slow_reply():
        os.kill(os.getpid(), signal.SIGINT)  # arrives while the reply is in flight
        time.sleep(0.02)
        return "done"

    t = ScriptedTransport([("LONG?", slow_reply)])
    before = signal.signal(signal.SIGINT, signal.default_int_handler)  # Python's own, whatever ran before
    try:
        with pytest.raises(KeyboardInterrupt):
            t.open().query("LONG?")
        assert [e.text for e in t.log] == ["LONG?", "done"]
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, before)


def test_serial_transport_over_a_pyserial_url_round_trips_and_flushes():
    t = open_transport("loop://", timeout=0.05, retries=0)
    assert isinstance(t, SerialTransport)
    assert t.query("PING") == "PING"  # the loop echoes
    t._send_raw(b"stale\n")
    t._flush_raw()
    with pytest.raises(InstrumentError, match="loop://"):
        t.query("Z?", parse=lambda r: (_ for _ in ()).throw(GarbledReply("no")))
    t.close()
    assert not t.is_open


def test_a_serial_port_opens_with_dtr_low_so_an_arduino_class_board_is_not_reset(monkeypatch):
    import serial

    states = []
    real_open = serial.Serial.open

    def spy(self):
        states.append((self.dtr, self.rts))
        real_open(self)

    monkeypatch.setattr(serial.Serial, "open", spy)
    from sim_backends.hopfield import HopfieldSubstrate
    from sim_backends.virtual_lab import BoardServer

    with BoardServer(HopfieldSubstrate((4, 5, 3), max_batch=1)) as board:
        t = open_transport(board.address, timeout=0.5)
        t.reopen()
        t.close()
    assert states == [(False, False), (False, False)]


def test_an_unplugged_serial_device_is_one_instrument_error_not_an_attribute_error():
    from drivers.board import BoardInstrument
    from drivers.transport import NoAnswer
    from sim_backends.hopfield import HopfieldSubstrate
    from sim_backends.virtual_lab import BoardServer

    board = BoardServer(HopfieldSubstrate((4, 5, 3), max_batch=1))
    inst = BoardInstrument(open_transport(board.address, timeout=0.2, retries=2))
    assert inst.identify().startswith("aeqprop-virtual-lab")
    board.stop()  # the cable is pulled: the device node goes away
    with pytest.raises(NoAnswer, match=r"did not answer .* after 3 attempts .*cannot open"):
        inst.identify()


def test_the_scripted_fake_fails_on_leftover_pairs_unread_replies_and_replies_it_was_not_given():
    t = ScriptedTransport([("A?", "1"), ("B?", "2")]).open()
    assert t.query("A?") == "1"
    with pytest.raises(AssertionError, match="1 expected exchange\\(s\\) left over"):
        t.assert_finished()
    t.script.clear()
    unread = ScriptedTransport([("W", "a reply nobody reads"), ("X", None)]).open()
    unread.write("W")
    with pytest.raises(AssertionError, match="was never read"):
        unread.write("X")
    unread._pending = None
    silent = ScriptedTransport([("W", None)]).open()
    silent.write("W")
    with pytest.raises(AssertionError, match="does not give"):
        silent._receive_raw()


def test_a_board_read_of_no_channel_is_an_empty_array_and_sends_nothing():
    from drivers.board import BoardInstrument

    t = ScriptedTransport([]).open()
    got = BoardInstrument(t).measure([])
    assert got.shape == (0,) and t.sent == []
