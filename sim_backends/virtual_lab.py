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
from collections.abc import Callable
from typing import Any

from aeqprop.errors import ConfigurationError
from aeqprop.substrate import Substrate
from drivers.board import crc8
from sim_backends.lab_fronts import BoardFront, ScpiFront
from sim_backends.lab_model import CHANNELS, Faults, LabError, LabModel  # noqa: F401  (re-exported)


def lab_model(substrate: Substrate | None, model: LabModel | None) -> LabModel:
    """``model`` if given, else a new one over ``substrate``: a server fronts one or the other."""
    if model is not None:
        return model
    if substrate is None:
        raise ConfigurationError("a virtual lab needs a substrate or a LabModel to front")
    return LabModel(substrate)


class ScpiServer:
    """The SCPI front on TCP, bound to 127.0.0.1. Example: ``with ScpiServer(sub) as lab: lab.address``."""

    def __init__(
        self,
        substrate: Substrate | None = None,
        port: int = 0,
        faults: Faults | None = None,
        model: LabModel | None = None,
    ) -> None:
        self.model = lab_model(substrate, model)
        self.front = ScpiFront(self.model, faults)
        front = self.front
        clients: set[socket.socket] = set()
        self._clients = clients

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
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

    def __enter__(self) -> ScpiServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class BoardServer:
    """The board front on a pseudo-terminal; ``address`` is the terminal's path for pyserial."""

    def __init__(
        self, substrate: Substrate | None = None, faults: Faults | None = None, model: LabModel | None = None
    ) -> None:
        self.model = lab_model(substrate, model)
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

    def __enter__(self) -> BoardServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(
    backend: str = "hopfield",
    options: dict[str, Any] | None = None,
    port: int = 5025,
    serial: bool = True,
    faults: Faults | None = None,
    wiring_out: str | None = None,
    echo: Callable[[str], object] = print,
) -> None:
    """Run the virtual lab until Ctrl+C (``aeqprop serve-sim``): SCPI on 127.0.0.1:port, a board on a pty.

    Prints the addresses and, if ``wiring_out`` is given, writes a wiring map for them.
    """
    from aeqprop import registry
    from aeqprop.parts import as_substrate
    from drivers.wiring import lab_wiring_toml

    substrate = as_substrate(registry.load("backends", backend)(**(options or {})), f"backend {backend!r}")
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
