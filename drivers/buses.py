"""The two buses behind :class:`drivers.transport.Transport`: a VISA resource (pyvisa) and a serial port (pyserial)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Protocol

from aeqprop.errors import ConfigurationError
from drivers.transport import Disconnected, ReplyTimeout, Transport

if TYPE_CHECKING:
    from pyvisa import ResourceManager
    from pyvisa.resources import MessageBasedResource


class SerialPort(Protocol):
    """What :class:`SerialTransport` uses of a pyserial port (``serial.Serial`` and its URL handlers)."""

    timeout: float | None

    @property
    def in_waiting(self) -> int: ...
    def write(self, data: bytes) -> int | None: ...
    def read(self, size: int = 1) -> bytes: ...
    def reset_input_buffer(self) -> None: ...
    def close(self) -> None: ...


class VisaTransport(Transport):
    """A VISA resource through pyvisa; ``backend`` "@py" (pyvisa-py) by default, "file.yaml@sim" for pyvisa-sim."""

    def __init__(self, address: str, backend: str = "@py", **options: Any):
        super().__init__(address, **options)
        self.backend = backend
        self._rm: ResourceManager | None = None
        self._res: MessageBasedResource | None = None

    def _open_raw(self) -> None:
        import pyvisa
        from pyvisa.resources import MessageBasedResource

        if self._rm is None:
            self._rm = pyvisa.ResourceManager(self.backend)
        res = self._rm.open_resource(
            self.address,
            read_termination=self.termination,
            write_termination="",
            timeout=int(self.timeout * 1000),
        )
        if not isinstance(res, MessageBasedResource):
            res.close()
            raise ConfigurationError(f"a {type(res).__name__}, not a message-based resource (SOCKET, INSTR, ASRL)")
        self._res = res

    def _resource(self) -> MessageBasedResource:
        """The open resource; a closed one is a :class:`Disconnected` link (the retry reopens it)."""
        if self._res is None:
            raise Disconnected(f"{self.address} is not open")
        return self._res

    def _close_raw(self) -> None:
        res, self._res = self._res, None
        if res is not None:
            res.close()

    def close(self) -> None:
        super().close()
        if self._rm is not None and not self._open:
            try:
                self._rm.close()
            except Exception:
                pass
            self._rm = None

    def reopen(self) -> None:
        with self.lock:
            self._open = False
            try:
                self._close_raw()
            except Exception:
                pass
            self._event("reopen", f"{self.address}: connection closed and reopened")
            self.open()

    def _send_raw(self, data: bytes) -> None:
        import pyvisa

        try:
            self._resource().write_raw(data)
        except pyvisa.errors.VisaIOError as exc:
            raise Disconnected(str(exc)) from exc

    def _receive_raw(self) -> bytes:
        import pyvisa

        try:
            raw = self._resource().read_raw()
        except pyvisa.errors.VisaIOError as exc:
            if exc.error_code == pyvisa.constants.StatusCode.error_timeout:
                raise ReplyTimeout(f"no reply within {self.timeout} s") from exc
            raise Disconnected(str(exc)) from exc
        term = self.termination.encode()
        if not raw.endswith(term):
            raise Disconnected("reply ended without its termination")
        return raw[: -len(term)]

    def _flush_raw(self) -> None:
        """Device clear (``viClear``): the instrument drops its output queue and any reply in flight.

        Not on a raw socket: the reopen that follows is a new connection, which drops both, and
        pyvisa-py's clear of a socket the instrument has closed never returns.
        """
        if self._res is not None and not self.address.upper().endswith("::SOCKET"):
            import pyvisa

            try:
                self._res.clear()
            except (NotImplementedError, pyvisa.errors.VisaIOError):  # backends without viClear: the reopen does
                pass


class SerialTransport(Transport):
    """A serial port or pyserial URL (``/dev/ttyUSB0``, ``COM3``, ``socket://host:port``, ``loop://``)."""

    def __init__(self, address: str, baudrate: int = 115200, **options: Any):
        super().__init__(address, **options)
        self.baudrate = int(baudrate)
        self._port: SerialPort | None = None
        self._buffer = bytearray()

    def _open_raw(self) -> None:
        import serial

        port = serial.serial_for_url(
            self.address,
            baudrate=self.baudrate,
            timeout=self.timeout,
            write_timeout=self.write_timeout,
            do_not_open=True,
        )
        port.dtr = False  # pyserial raises DTR on open, which resets Arduino-class boards: keep it low
        port.rts = False
        port.open()
        self._port = port
        self._buffer.clear()

    def _close_raw(self) -> None:
        port, self._port = self._port, None
        if port is not None:
            port.close()

    def _send_raw(self, data: bytes) -> None:
        import serial

        try:
            self._open_port().write(data)
        except serial.SerialException as exc:
            raise Disconnected(str(exc)) from exc

    def _receive_raw(self) -> bytes:
        """Chunks of what is waiting until the termination. (pyserial's ``read_until`` reads one byte per
        call: 5.3 ms for a 400-byte line on a pty, against 0.18 ms for one chunked read.)"""
        import serial

        term = self.termination.encode()
        deadline = time.monotonic() + self.timeout
        while True:
            i = self._buffer.find(term)
            if i >= 0:
                line = bytes(self._buffer[:i])
                del self._buffer[: i + len(term)]
                return line
            left = deadline - time.monotonic()
            if left <= 0:
                raise ReplyTimeout(f"no complete reply within {self.timeout} s")
            port = self._open_port()
            port.timeout = left
            try:
                chunk = port.read(max(1, port.in_waiting))
            except serial.SerialException as exc:
                raise Disconnected(str(exc)) from exc
            self._buffer += chunk

    def _open_port(self) -> SerialPort:
        """The open port; a closed one is a :class:`Disconnected` link (the retry reopens it)."""
        if self._port is None:
            raise Disconnected(f"{self.address} is not open")
        return self._port

    def _flush_raw(self) -> None:
        self._buffer.clear()
        if self._port is not None:
            self._port.reset_input_buffer()


def open_transport(address: str, *, kind: str | None = None, **options: Any) -> Transport:
    """A transport for ``address``: VISA if it looks like a VISA resource ("...::..."), else serial.

    ``kind`` forces "visa" or "serial". Options: timeout, write_timeout,
    min_interval, retries, termination, on_event; ``backend`` (visa) or
    ``baudrate`` (serial). The transport is opened before it is returned.
    """
    kind = kind or ("visa" if "::" in address else "serial")
    if kind == "visa":
        transport: Transport = VisaTransport(address, **options)
    elif kind == "serial":
        options.pop("backend", None)
        transport = SerialTransport(address, **options)
    else:
        raise ConfigurationError(f"unknown transport kind {kind!r}; valid: visa, serial")
    return transport.open()
