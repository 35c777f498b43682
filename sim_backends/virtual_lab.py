"""The virtual lab: any simulated substrate behind real I/O.

:class:`LabModel` exposes the substrate's operations as channels (layout in
``CHANNELS``); :class:`ScpiServer` speaks the generic ``multichannel`` SCPI
profile on TCP (127.0.0.1 only), :class:`BoardServer` the board protocol on a
pseudo-terminal. Every value crosses the wire as ``repr(float)``, so training
through the lab reproduces training the substrate directly.

Writes to one channel group (inputs, nudging, knobs, programmed parameters) are
applied as one substrate call when a message ends or another group or an action
begins: inputs -> ``clamp``, nudge targets and strength -> ``nudge``, knobs ->
``set_knobs``, program -> ``set_parameters``. ``INIT`` / ``SETTLE`` -> ``relax``;
a pulse of d s on the hold line -> ``release(d / update_seconds)``; a non-zero
level on the hold line -> ``release(None)``; a non-zero level on the
homeostasis line -> ``homeostasis()``. Reading outputs, parameter readout or
gradient channels calls ``outputs``, ``parameters`` or ``energy_gradients``.

Faults (:class:`Faults`) are drawn per reply from a seeded generator: a delay,
a dropped reply, one garbled byte (always outside ASCII, so a reader can tell),
a disconnect before the message is acted on, a compliance trip (an error in the
queue), slow settling. A reply lost or garbled by a fault is replayed, not
re-executed, when the same message comes again (what real firmware does with
sequence numbers), so a retry never acts twice.
"""

from __future__ import annotations

import os
import select
import socket
import socketserver
import threading
import time
import tty

import numpy as np

from drivers.board import crc8, frame, unframe
from sim_backends.lab_model import CHANNELS, Faults, LabError, LabModel  # noqa: F401  (re-exported)


class _Front:
    """What both servers share: faults, byte counts, and (board only) the replay of a repeated request."""

    remembers = False  # a board answers a repeated request (same seq and text) from its last reply

    def __init__(self, model: LabModel, faults: Faults | None):
        self.model = model
        self.faults = faults or Faults()
        self.rng = np.random.default_rng(self.faults.seed)
        self.rng_more = np.random.default_rng([self.faults.seed, 1])  # the later faults: old seeds keep their draws
        self.bytes_received = 0
        self.messages = 0
        self.injected: dict[str, int] = {"drop": 0, "garble": 0, "disconnect": 0, "compliance_trip": 0,
                                         "late": 0, "reset": 0, "nan": 0}
        self._last: tuple[str, str | None] | None = None
        self.nan_now = False

    def respond(self, line: str, execute) -> str | None:
        """The reply to send (None: send nothing); raises ConnectionAbortedError to disconnect."""
        f, roll = self.faults, self.rng.random(4)
        more = self.rng_more.random(3) if (f.late or f.reset or f.nan) else np.ones(3)
        self.messages += 1
        if self.remembers and self._last is not None and self._last[0] == line:
            reply = self._last[1]  # a repeated request: the same reply, nothing done twice
        else:
            if roll[0] < f.disconnect:
                self.injected["disconnect"] += 1
                raise ConnectionAbortedError("injected disconnect")
            if more[1] < f.reset:
                self.injected["reset"] += 1
                self.reboot()
            self.nan_now = more[2] < f.nan
            with self.model.lock:
                reply = execute(line, roll[3] < f.compliance_trip)
            self._last = (line, reply)
        if f.delay:
            time.sleep(f.delay)
        if more[0] < f.late and reply is not None:
            self.injected["late"] += 1
            time.sleep(f.late_seconds)
        if roll[1] < f.drop and reply is not None:
            self.injected["drop"] += 1
            return None
        if roll[2] < f.garble and reply:
            self.injected["garble"] += 1
            k = int(self.rng.integers(len(reply)))
            return reply[:k] + chr(0x80 + int(self.rng.integers(0x7F))) + reply[k + 1:]
        return reply

    def reboot(self) -> None:
        """Power cycle: every DAC at 0 V, outputs off, the last reply forgotten."""
        with self.model.lock:
            self.model.safe()
        self._last = None

    def readings(self, values: list[float], overflow: str) -> str:
        """Readings as the wire carries them; a NaN fault replaces one by ``overflow``."""
        text = [repr(v) for v in values]
        if self.nan_now and text:
            self.injected["nan"] += 1
            text[int(self.rng_more.integers(len(text)))] = overflow
        return ",".join(text)

    def trip(self, model: LabModel, channel: int) -> None:
        self.injected["compliance_trip"] += 1
        model.outputs_on.discard(channel)
        model.errors.append(f'-9001,"Compliance tripped on channel {channel}; output switched off"')

    def settle(self) -> None:
        if self.faults.settle:
            time.sleep(self.faults.settle)


def _channels(text: str) -> list[int]:
    """"(@1001:1004,2001)" or "1001-1004,2001" -> channel numbers."""
    text = text.strip().removeprefix("(@").removesuffix(")")
    out = []
    for part in text.replace("-", ":").split(","):
        a, _, b = part.partition(":")
        out.extend(range(int(a), int(b or a) + 1))
    return out


class ScpiFront(_Front):
    """The generic multichannel SCPI dialect (drivers.scpi profile "multichannel").

    Like an instrument: a message without a query gets no reply line; an error goes to the queue with
    its SCPI number (-113 undefined header, -222 data out of range, -224 illegal parameter value) and
    the rest of the message is skipped, its queries still answered so the reply keeps its shape.
    ``SYST:ACT:COUN?`` is the count of non-idempotent actions done (INIT, pulses, trigger edges), which
    the controller reads to tell whether a message whose reply was lost was acted on.
    """

    def execute(self, line: str, trip: bool) -> str | None:
        m, replies, failed, queries = self.model, [], False, 0
        for cmd in line.split(";"):
            cmd = cmd.strip().lstrip(":")
            head, _, arg = cmd.partition(" ")
            head = head.upper()
            queries += head.endswith("?")
            if failed:  # after an error only queries are answered, one answer each
                if head.endswith("?"):
                    replies.append(m.errors.pop(0) if head == "SYST:ERR?" and m.errors else
                                   '0,"No error"' if head == "SYST:ERR?" else "0")
                continue
            try:
                trip = self._command(head, arg, replies, trip)
            except (LabError, ValueError, IndexError) as exc:
                failed, m.pending = True, None
                m.errors.append((exc if isinstance(exc, LabError) else LabError(2, str(exc))).scpi())
        if not failed:
            try:
                m.flush()
            except LabError as exc:
                m.errors.append(exc.scpi())
        return ";".join(replies) if queries else None

    def _command(self, head: str, arg: str, replies: list[str], trip: bool) -> bool:
        m = self.model
        if head == "*IDN?":
            replies.append(f"aeqprop,virtual-lab,{m.sub.info.description.replace(',', ' ')},1")
        elif head == "*OPC?":
            replies.append("1")
        elif head == "*CLS":
            m.errors.clear()
        elif head == "*RST":
            m.safe()
        elif head == "SYST:ERR?":
            m.flush()
            replies.append(m.errors.pop(0) if m.errors else '0,"No error"')
        elif head == "SYST:ACT:COUN?":
            replies.append(str(m.actions))
        elif head in ("SOUR:VOLT", "SOUR:CURR:LIM", "SOUR:PULS"):
            value, _, chs = arg.partition(",")
            ch = _channels(chs)[0]
            if head == "SOUR:VOLT":
                m.set(ch, float(value))
                if trip:
                    self.trip(m, ch)
                    trip = False
            elif head == "SOUR:PULS":
                m.pulse(ch, float(value))
            else:
                if not float(value) > 0:
                    raise LabError(2, f"compliance {value} A must be > 0")
                m.compliance[ch] = float(value)
        elif head in ("SOUR:VOLT?", "MEAS:VOLT?"):
            replies.append(self.readings(m.read(_channels(arg), source=head[0] == "S"), "9.91e+37"))
        elif head == "OUTP":
            state, _, chs = arg.partition(",")
            if state.strip().upper() not in ("ON", "1", "OFF", "0"):
                raise LabError(2, f"OUTP takes ON or OFF, not {state!r}")
            m.output(_channels(chs), state.strip().upper() in ("ON", "1"))
        elif head == "INIT":
            m.relax()
            self.settle()
        else:
            raise LabError(3, f"undefined header {head!r}")
        return trip


class BoardFront(_Front):
    """The board protocol (docs/board-protocol.md): framing, replay of a repeated request, reset reporting."""

    remembers = True
    #: Commands a board answers before it is armed (after power-up, reset or watchdog): reads and safety.
    UNARMED = ("ID", "GET", "SRC", "SAFE", "ARM", "OUT OFF")

    def __init__(self, model: LabModel, faults: Faults | None):
        super().__init__(model, faults)
        self.armed = False

    def reboot(self) -> None:
        super().reboot()
        self.armed = False

    def execute(self, line: str, trip: bool) -> str:
        try:
            seq, body = unframe(line)
        except ValueError:
            head = line.partition(" ")[0]
            return frame(int(head) if head.isdigit() else 0, "ERR 1 bad CRC")
        m, payloads = self.model, []
        try:
            for cmd in body.split(";"):
                cmd = cmd.strip()
                name, _, arg = cmd.partition(" ")
                if not self.armed and not cmd.startswith(self.UNARMED):
                    raise LabError(8, "reset since armed; send ARM after restoring the levels")
                if name == "ID":
                    payloads.append(f"aeqprop-virtual-lab {m.sub.info.description}")
                elif name == "ARM":
                    self.armed = True
                    payloads.append("")
                elif name == "SET":
                    latched: dict[int, float] = {}  # the whole SET is latched at once: last value per channel
                    for pair in arg.split(","):
                        ch, eq, v = pair.partition("=")
                        if not eq:
                            raise LabError(2, f"bad SET pair {pair!r}")
                        latched[int(ch)] = float(v)
                    for ch, v in latched.items():  # every value checked before any is applied
                        m.check(ch, v)
                    for ch, v in latched.items():
                        m.set(ch, v)
                    if trip:
                        self.trip(m, int(arg.partition("=")[0]))
                        raise LabError(6, "compliance tripped")
                    payloads.append("")
                elif name in ("GET", "SRC"):
                    payloads.append(self.readings(m.read(_channels(arg), source=name == "SRC"), "nan"))
                elif name == "SETTLE":
                    m.relax()
                    self.settle()
                    payloads.append("")
                elif name == "PULSE":
                    ch, s, *level = arg.split()
                    m.pulse(int(ch), float(s), float(level[0]) if level else 1.0)
                    payloads.append("")
                elif name == "OUT":
                    state, _, chs = arg.partition(" ")
                    if state not in ("ON", "OFF"):
                        raise LabError(2, f"OUT takes ON or OFF, not {state!r}")
                    m.output(m.all_channels() if chs.strip() == "ALL" else _channels(chs), state == "ON")
                    payloads.append("")
                elif name == "LIM":
                    ch, _, v = arg.partition(" ")
                    group, _ = m.locate(int(ch))
                    if group in ("output", "readout", "gradient"):
                        raise LabError(4, f"channel {ch} is an ADC channel; LIM applies to source channels")
                    m.compliance[int(ch)] = float(v)
                    payloads.append("")
                elif name == "SAFE":
                    m.safe()
                    payloads.append("")
                else:
                    raise LabError(3, f"unknown command {name!r}")
            m.flush()
        except (LabError, ValueError) as exc:
            m.pending = None
            code = exc.code if isinstance(exc, LabError) else 2
            return frame(seq, f"ERR {code} {exc}".replace("*", "x").replace(";", ","))
        return frame(seq, ("OK " + ";".join(payloads)).rstrip())


class ScpiServer:
    """The SCPI front on TCP, bound to 127.0.0.1. Example: ``with ScpiServer(sub) as lab: lab.address``."""

    def __init__(self, substrate=None, port: int = 0, faults: Faults | None = None, model: LabModel | None = None):
        self.model = model or LabModel(substrate)
        self.front = ScpiFront(self.model, faults)
        front, clients = self.front, set()
        self._clients = clients

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                clients.add(self.connection)
                try:
                    for raw in self.rfile:
                        front.bytes_received += len(raw)
                        try:
                            reply = front.respond(raw.decode("ascii", errors="replace").rstrip("\r\n"), front.execute)
                        except ConnectionAbortedError:
                            return
                        if reply is not None:
                            self.wfile.write(reply.encode("latin-1") + b"\n")
                except OSError:
                    pass
                finally:
                    clients.discard(self.connection)

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", int(port)), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.address = f"TCPIP0::127.0.0.1::{self.port}::SOCKET"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        for conn in list(self._clients):
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> "ScpiServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class BoardServer:
    """The board front on a pseudo-terminal; ``address`` is the terminal's path for pyserial."""

    def __init__(self, substrate=None, faults: Faults | None = None, model: LabModel | None = None):
        self.model = model or LabModel(substrate)
        self.front = BoardFront(self.model, faults)
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        self.address = os.ttyname(self._slave)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        buffer = bytearray()
        while not self._stop.is_set():
            ready, _, _ = select.select([self._master], [], [], 0.05)
            if not ready:
                continue
            try:
                chunk = os.read(self._master, 4096)
            except OSError:
                continue
            self.front.bytes_received += len(chunk)
            buffer += chunk
            while b"\n" in buffer:
                raw, _, rest = bytes(buffer).partition(b"\n")
                buffer[:] = rest
                try:
                    reply = self.front.respond(raw.decode("ascii", errors="replace").rstrip("\r"), self.front.execute)
                except ConnectionAbortedError:  # a serial line cannot hang up: stay silent instead
                    reply = None
                if reply is not None:
                    os.write(self._master, reply.encode("latin-1") + b"\n")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for fd in (self._master, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> "BoardServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def serve(backend: str = "hopfield", options: dict | None = None, port: int = 5025, serial: bool = True,
          faults: Faults | None = None, wiring_out: str | None = None, echo=print) -> None:
    """Run the virtual lab until Ctrl+C (``aeqprop serve-sim``): SCPI on 127.0.0.1:port, a board on a pty.

    Prints the addresses and, if ``wiring_out`` is given, writes a wiring map for them.
    """
    from aeqprop import registry
    from drivers.wiring import lab_wiring_toml

    substrate = registry.load("backends", backend)(**(options or {}))
    model = LabModel(substrate)
    tcp = ScpiServer(model=model, port=port, faults=faults)
    board = BoardServer(model=model, faults=faults) if serial else None
    try:
        echo(f"virtual lab: {substrate.info.description}")
        echo(f"  SCPI (profile multichannel): {tcp.address}")
        if board is not None:
            echo(f"  board (profile board):       {board.address}")
        if wiring_out:
            with open(wiring_out, "w") as fh:
                fh.write(lab_wiring_toml(substrate.info, tcp.address))
            echo(f"  wiring map written to {wiring_out}")
        echo("Ctrl+C stops it.")
        while True:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        tcp.stop()
        if board is not None:
            board.stop()


__all__ = ["CHANNELS", "Faults", "LabModel", "ScpiServer", "BoardServer", "serve", "crc8"]
