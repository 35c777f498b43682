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
from dataclasses import dataclass

import numpy as np

from drivers.board import crc8, frame, unframe

#: First channel of each role; parameters are flattened tensor by tensor, row-major.
CHANNELS = {"input": 1001, "output": 2001, "beta": 3000, "target": 3001, "hold": 9000, "homeostasis": 9001,
            "knob": 100001, "readout": 200001, "program": 300001, "gradient": 400001}


@dataclass
class Faults:
    """Fault injection, probabilities per reply. Example: ``Faults(drop=0.01, garble=0.01, seed=1)``."""

    delay: float = 0.0  # s before each reply
    drop: float = 0.0
    garble: float = 0.0
    disconnect: float = 0.0
    compliance_trip: float = 0.0  # per message that sets a level
    settle: float = 0.0  # s that each relax (INIT / SETTLE) takes
    seed: int = 0


class LabError(Exception):
    def __init__(self, code: int, text: str):
        super().__init__(text)
        self.code, self.text = code, text


class LabModel:
    """Channels over a substrate (thread-safe). Sources: inputs, beta, targets, hold, homeostasis, knobs, program."""

    def __init__(self, substrate, update_seconds: float = 1.0):
        self.sub = substrate
        info = substrate.info
        self.update_seconds = float(update_seconds)
        self.names = list(info.parameter_shapes)
        self.shapes = dict(info.parameter_shapes)
        self.n_params = info.n_parameters
        c = CHANNELS
        self.groups = {
            "input": (c["input"], info.n_inputs), "output": (c["output"], info.n_outputs),
            "target": (c["target"], info.n_outputs), "beta": (c["beta"], 1), "hold": (c["hold"], 1),
            "homeostasis": (c["homeostasis"], 1), "knob": (c["knob"], self.n_params),
            "readout": (c["readout"], self.n_params), "program": (c["program"], self.n_params),
            "gradient": (c["gradient"], self.n_params),
        }
        self.levels = {g: np.zeros(n) for g, (_, n) in self.groups.items()}
        self.levels["knob"] = self._flat(substrate.knobs()) if "aeqprop" in info.capabilities else self.levels["knob"]
        self.outputs_on: set[int] = set()
        self.compliance: dict[int, float] = {}
        self.errors: list[str] = []
        self.lock = threading.RLock()
        self.pending: str | None = None
        self.calls: list[str] = []  # substrate operations, in order (for tests)

    # -- channel map ---------------------------------------------------------------
    def locate(self, ch: int) -> tuple[str, int]:
        for g, (first, n) in self.groups.items():
            if first <= ch < first + n:
                return g, ch - first
        raise LabError(4, f"no such channel {ch}")

    def _flat(self, d) -> np.ndarray:
        return np.concatenate([np.ravel(d[n]) for n in self.names]) if self.names else np.zeros(0)

    def _unflat(self, v: np.ndarray) -> dict[str, np.ndarray]:
        out, i = {}, 0
        for n in self.names:
            size = int(np.prod(self.shapes[n], dtype=int))
            out[n] = v[i:i + size].reshape(self.shapes[n]).copy()
            i += size
        return out

    # -- operations ----------------------------------------------------------------
    def set(self, ch: int, value: float) -> None:
        group, i = self.locate(ch)
        if group in ("output", "readout", "gradient"):
            raise LabError(4, f"channel {ch} ({group}) is a measurement channel")
        if group != self.pending:
            self.flush()
        self.levels[group][i] = value
        if group == "hold":
            if value != 0.0:
                self._call("release(None)", lambda: self.sub.release(None))
        elif group == "homeostasis":
            if value != 0.0:
                self._call("homeostasis", self.sub.homeostasis)
                self.levels["knob"] = self._flat(self.sub.knobs())
        else:
            self.pending = group

    def flush(self) -> None:
        """Apply the pending group of writes as one substrate call."""
        group, self.pending = self.pending, None
        lv = self.levels
        if group == "input":
            self._call("clamp", lambda: self.sub.clamp(lv["input"][None, :].copy()))
        elif group in ("target", "beta"):
            beta = float(lv["beta"][0])
            y = lv["target"][None, :].copy() if beta != 0.0 else None
            self._call("nudge", lambda: self.sub.nudge(beta, y))
        elif group == "knob":
            self._call("set_knobs", lambda: self.sub.set_knobs(self._unflat(lv["knob"])))
        elif group == "program":
            self._call("set_parameters", lambda: self.sub.set_parameters(self._unflat(lv["program"])))

    def _call(self, name: str, fn) -> None:
        self.calls.append(name)
        try:
            fn()
        except Exception as exc:  # the physics refused: report it like an instrument would
            raise LabError(5, f"{name} failed: {exc}") from exc

    def relax(self) -> None:
        self.flush()
        self._call("relax", self.sub.relax)

    def pulse(self, ch: int, seconds: float) -> None:
        group, _ = self.locate(ch)
        if group != "hold":
            raise LabError(4, f"channel {ch} cannot pulse (only the hold line, {CHANNELS['hold']})")
        if not seconds >= 0:
            raise LabError(5, f"pulse length {seconds} s must be >= 0")
        self.flush()
        self._call("release", lambda: self.sub.release(seconds / self.update_seconds))

    def read(self, channels: list[int], source: bool = False) -> list[float]:
        self.flush()
        cache: dict[str, np.ndarray] = {}
        out = []
        for ch in channels:
            group, i = self.locate(ch)
            if group not in cache:
                if group == "output" and not source:
                    self.calls.append("outputs")
                    cache[group] = self.sub.outputs()[0]
                elif group == "readout":
                    cache[group] = self._flat(self.sub.parameters())
                elif group == "gradient":
                    self.calls.append("energy_gradients")
                    cache[group] = self._flat(self.sub.energy_gradients())
                elif group == "knob" and "aeqprop" in self.sub.info.capabilities:
                    cache[group] = self._flat(self.sub.knobs())
                else:
                    cache[group] = self.levels[group]
            out.append(float(cache[group][i]))
        return out

    def output(self, channels: list[int], on: bool) -> None:
        for ch in channels:
            self.locate(ch)
            (self.outputs_on.add if on else self.outputs_on.discard)(ch)

    def safe(self) -> None:
        """Every output off; sources that do not touch the parameters to zero (inputs, nudging)."""
        self.pending = None
        for g in ("input", "target", "beta", "hold", "homeostasis"):
            self.levels[g][:] = 0.0
        self.outputs_on.clear()

    def all_channels(self) -> list[int]:
        return [first + i for first, n in self.groups.values() for i in range(n)]


class _Front:
    """What both servers share: faults, replay of faulted replies, byte counts."""

    def __init__(self, model: LabModel, faults: Faults | None):
        self.model = model
        self.faults = faults or Faults()
        self.rng = np.random.default_rng(self.faults.seed)
        self.bytes_received = 0
        self.messages = 0
        self.injected: dict[str, int] = {"drop": 0, "garble": 0, "disconnect": 0, "compliance_trip": 0}
        self._replay: tuple[str, str] | None = None

    def respond(self, line: str, execute) -> str | None:
        """The reply to send (None: send nothing); raises ConnectionAbortedError to disconnect."""
        f, roll = self.faults, self.rng.random(4)
        self.messages += 1
        if self._replay is not None and self._replay[0] == line:
            reply = self._replay[1]
        else:
            self._replay = None
            if roll[0] < f.disconnect:
                self.injected["disconnect"] += 1
                raise ConnectionAbortedError("injected disconnect")
            with self.model.lock:
                reply = execute(line, roll[3] < f.compliance_trip)
        if f.delay:
            time.sleep(f.delay)
        if roll[1] < f.drop:
            self.injected["drop"] += 1
            self._replay = (line, reply)
            return None
        if roll[2] < f.garble and reply:
            self.injected["garble"] += 1
            self._replay = (line, reply)
            k = int(self.rng.integers(len(reply)))
            return reply[:k] + chr(0x80 + int(self.rng.integers(0x7F))) + reply[k + 1:]
        return reply

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
    """The generic multichannel SCPI dialect (drivers.scpi profile "multichannel")."""

    def execute(self, line: str, trip: bool) -> str:
        m, replies, failed = self.model, [], False
        for cmd in line.split(";"):
            cmd = cmd.strip().lstrip(":")
            head, _, arg = cmd.partition(" ")
            head = head.upper()
            if failed:  # after an error only queries are answered, one answer each
                if head.endswith("?"):
                    replies.append(m.errors.pop(0) if head == "SYST:ERR?" and m.errors else
                                   '0,"No error"' if head == "SYST:ERR?" else "0")
                continue
            try:
                trip = self._command(head, arg, replies, trip)
            except (LabError, ValueError, IndexError) as exc:
                failed, m.pending = True, None
                code = exc.code if isinstance(exc, LabError) else 2
                m.errors.append(f'-{100 + code},"{str(exc).replace(chr(34), chr(39))}"')
        if not failed:
            m.flush()
        return ";".join(replies)

    def _command(self, head: str, arg: str, replies: list[str], trip: bool) -> bool:
        m = self.model
        if head == "*IDN?":
            replies.append(f"aeqprop,virtual-lab,{m.sub.info.description.replace(',', ' ')},1")
        elif head == "*OPC?":
            replies.append("1")
        elif head in ("*CLS", "*RST"):
            m.errors.clear()
        elif head == "SYST:ERR?":
            m.flush()
            replies.append(m.errors.pop(0) if m.errors else '0,"No error"')
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
                m.compliance[ch] = float(value)
        elif head in ("SOUR:VOLT?", "MEAS:VOLT?"):
            replies.append(",".join(repr(v) for v in m.read(_channels(arg), source=head[0] == "S")))
        elif head == "OUTP":
            state, _, chs = arg.partition(",")
            m.output(_channels(chs), state.strip().upper() in ("ON", "1"))
        elif head == "INIT":
            m.relax()
            self.settle()
        else:
            raise LabError(3, f"undefined header {head!r}")
        return trip


class BoardFront(_Front):
    """The board protocol (docs/board-protocol.md)."""

    def execute(self, line: str, trip: bool) -> str:
        try:
            seq, body = unframe(line)
        except ValueError:
            head = line.partition(" ")[0]
            return frame(int(head) if head.isdigit() else 0, "ERR 1 bad CRC")
        m, payloads = self.model, []
        try:
            for cmd in body.split(";"):
                name, _, arg = cmd.strip().partition(" ")
                if name == "ID":
                    payloads.append(f"aeqprop-virtual-lab {m.sub.info.description}")
                elif name == "SET":
                    for pair in arg.split(","):
                        ch, _, v = pair.partition("=")
                        m.set(int(ch), float(v))
                    if trip:
                        self.trip(m, int(arg.partition("=")[0]))
                        raise LabError(6, "compliance tripped")
                    payloads.append("")
                elif name in ("GET", "SRC"):
                    payloads.append(",".join(repr(v) for v in m.read(_channels(arg), source=name == "SRC")))
                elif name == "SETTLE":
                    m.relax()
                    self.settle()
                    payloads.append("")
                elif name == "PULSE":
                    ch, _, s = arg.partition(" ")
                    m.pulse(int(ch), float(s))
                    payloads.append("")
                elif name == "OUT":
                    state, _, chs = arg.partition(" ")
                    m.output(m.all_channels() if chs.strip() == "ALL" else _channels(chs), state == "ON")
                    payloads.append("")
                elif name == "LIM":
                    ch, _, v = arg.partition(" ")
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
