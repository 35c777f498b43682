"""One connection to one instrument: pyvisa (any VISA resource) or pyserial (a port or URL).

A :class:`Transport` owns a lock, read and write timeouts in s, a minimum
interval between commands in s, a log of every message with its timestamp, and
bounded retries: after a timeout or a malformed reply it flushes the input,
closes and reopens the connection explicitly, and sends the same message again.
After the last retry it raises :class:`InstrumentError` naming the resource.
Ctrl+C during an exchange lets the exchange finish, then re-raises.

Faults and retries are reported to ``on_event(kind, message)``, a plain
callable (the run store subscribes to it). Kinds: ``"timeout"``, ``"garbled"``,
``"disconnect"``, ``"retry"``, ``"reopen"``, ``"failed"``.

The seam for tests and new buses is the four private hooks ``_open_raw``,
``_close_raw``, ``_send_raw`` and ``_receive_raw`` (plus ``_flush_raw``).
"""

from __future__ import annotations

import collections
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any

from aeqprop.errors import ConfigurationError, InstrumentError

EventHook = Callable[[str, str], None]
#: What ``signal.signal`` returns: the handler that was there (a callable, SIG_DFL, SIG_IGN or None).
Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


class ReplyTimeout(Exception):
    """No complete reply arrived within the read timeout."""


class Disconnected(Exception):
    """The connection was closed by the other end."""


class NoAnswer(InstrumentError):
    """The instrument gave no correct reply after every retry (it is off, unplugged or wedged)."""


class GarbledReply(ValueError):
    """A reply arrived but cannot be right (bad characters, checksum, count); retried."""


class StaleReply(GarbledReply):
    """A well-formed reply to an earlier request (a late reply after a retry): skipped, the next line read."""


class Unconfirmed(InstrumentError):
    """A message that must not be sent twice got no usable reply: it may or may not have been acted on.

    Raised by ``query(..., resend=False)`` after the link was recovered; the driver decides by readback.
    """


#: Late replies to earlier requests skipped while waiting for the one asked for.
MAX_STALE = 4


@dataclass(frozen=True)
class LogEntry:
    """One message: wall-clock time in s (``time.time()``), ``">"`` sent or ``"<"`` received, text."""

    t: float
    direction: str
    text: str


#: Signals held while an exchange is in flight (the ones a process gets in practice).
HELD_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


class _DeferInterrupt:
    """Hold SIGINT, SIGTERM and SIGHUP until the exchange in flight is finished (main thread only).

    A held signal is then passed to the handler that was there before (never raised here),
    so the run's own stop handler decides what it means. A second signal of the same kind
    during the exchange goes through to that handler at once.
    """

    def __init__(self) -> None:
        self.pending: list[tuple[int, FrameType | None]] = []
        self._previous: dict[int, Handler] = {}
        self._active = False

    def __enter__(self) -> _DeferInterrupt:
        self.pending = []
        self._previous = {}
        self._active = threading.current_thread() is threading.main_thread()
        if self._active:
            for sig in HELD_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        if any(s == signum for s, _ in self.pending):
            self._deliver(signum, frame)
            return
        self.pending.append((signum, frame))

    def _deliver(self, signum: int, frame: FrameType | None) -> None:
        previous = self._previous.get(signum)
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_IGN:
            return
        elif signum == signal.SIGINT:
            raise KeyboardInterrupt
        else:  # SIG_DFL for SIGTERM/SIGHUP: end the process as the default would
            raise SystemExit(128 + signum)

    def __exit__(self, *exc: object) -> None:
        if self._active:
            for sig, previous in self._previous.items():
                signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
            pending, self.pending = self.pending, []
            for signum, frame in pending:
                self._deliver(signum, frame)


class Transport:
    """Base class: locking, pacing, logging, retries. Subclasses implement the raw hooks.

    Example: ``open_transport("TCPIP0::127.0.0.1::5025::SOCKET", timeout=1.0).query("*IDN?")``.
    """

    def __init__(
        self,
        address: str,
        *,
        timeout: float = 2.0,
        write_timeout: float | None = None,
        min_interval: float = 0.0,
        retries: int = 2,
        termination: str = "\n",
        on_event: EventHook | None = None,
        log_size: int = 100_000,
    ):
        if not (timeout > 0 and min_interval >= 0 and retries >= 0):
            raise ConfigurationError(f"{address}: need timeout > 0, min_interval >= 0 and retries >= 0")
        self.address = address
        self.timeout = float(timeout)
        self.write_timeout = float(write_timeout if write_timeout is not None else timeout)
        self.min_interval = float(min_interval)
        self.retries = int(retries)
        self.termination = termination
        self.on_event = on_event
        self.log: collections.deque[LogEntry] = collections.deque(maxlen=log_size)
        self.lock = threading.RLock()
        self.round_trips = 0
        self.bytes_out = 0
        self.bytes_in = 0
        self.io_seconds = 0.0  # time spent blocked in the raw hooks
        self.faults = 0
        self._last_send = 0.0
        self._open = False
        self._interrupt = _DeferInterrupt()

    # -- raw hooks (subclasses) ------------------------------------------------
    def _open_raw(self) -> None:
        raise NotImplementedError

    def _close_raw(self) -> None:
        raise NotImplementedError

    def _send_raw(self, data: bytes) -> None:
        raise NotImplementedError

    def _receive_raw(self) -> bytes:
        """One reply up to and without the termination; ReplyTimeout or Disconnected on failure."""
        raise NotImplementedError

    def _flush_raw(self) -> None:
        """Discard any input already received."""

    # -- public ------------------------------------------------------------------
    @property
    def is_open(self) -> bool:
        return self._open

    def open(self) -> Transport:
        with self.lock:
            if not self._open:
                try:
                    self._open_raw()
                except Exception as exc:
                    raise InstrumentError(f"cannot open {self.address}: {exc}; check the address and cabling") from exc
                self._open = True
        return self

    def close(self) -> None:
        with self.lock:
            if self._open:
                self._open = False
                try:
                    self._close_raw()
                except Exception:  # closing a broken link must not mask the reason it broke
                    pass

    def __enter__(self) -> Transport:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def reopen(self) -> None:
        """Close and open again explicitly (after a fault)."""
        with self.lock:
            self.close()
            self._event("reopen", f"{self.address}: connection closed and reopened")
            self.open()

    def write(self, message: str) -> None:
        """Send one message that has no reply (no retry: nothing confirms it arrived)."""
        with self.lock, self._interrupt:
            self.open()
            self._send(message)

    def query(self, message: str, parse: Callable[[str], Any] | None = None, resend: bool = True) -> Any:
        """Send ``message``, read one reply and return ``parse(reply)`` (the text if no parser).

        A timeout, disconnect or a parser raising ValueError counts as a fault:
        the input is flushed, the link closed and reopened, and the same message
        sent again, up to ``retries`` times. InstrumentError from the parser
        (an error the instrument reported) is not retried. A parser raising
        StaleReply (a late answer to an earlier request) makes the next line be read.
        ``resend=False`` (a message that acts, e.g. a pulse): after a fault the
        link is recovered and Unconfirmed raised instead of sending it again.
        """
        with self.lock, self._interrupt:
            self.open()
            for attempt in range(self.retries + 1):
                try:
                    if not self._open:  # the last reopen failed (unplugged): try again, as a fault if it fails
                        try:
                            self.open()
                        except InstrumentError as exc:
                            raise Disconnected(str(exc)) from exc
                    self._send(message)
                    reply = self._receive()
                    self.round_trips += 1
                    for _ in range(MAX_STALE):
                        try:
                            return parse(reply) if parse is not None else reply
                        except StaleReply as exc:
                            self._event("stale", f"{self.address}: skipped {exc}")
                            reply = self._receive()
                    return parse(reply) if parse is not None else reply
                except (ReplyTimeout, Disconnected, ValueError, OSError) as exc:
                    kind = {ReplyTimeout: "timeout", Disconnected: "disconnect"}.get(type(exc), "garbled")
                    if isinstance(exc, OSError):
                        kind = "disconnect"
                    self.faults += 1
                    self._event(kind, f"{self.address}: {kind} on {message[:60]!r}: {exc}")
                    if attempt == self.retries:
                        self._event("failed", f"{self.address}: gave up after {self.retries + 1} attempts")
                        raise NoAnswer(
                            f"{self.address} did not answer {message[:60]!r} correctly after "
                            f"{self.retries + 1} attempts (last: {kind}: {exc}); check that it is on, "
                            "connected and not in an error state, then resume the run"
                        ) from exc
                    self._recover()
                    if not resend:
                        raise Unconfirmed(
                            f"{self.address}: no usable reply to {message[:60]!r} ({kind}: {exc}), "
                            "which must not be sent twice"
                        ) from exc
                    self._event("retry", f"{self.address}: retry {attempt + 1}/{self.retries} of {message[:60]!r}")
            raise AssertionError("unreachable")

    # -- internals -------------------------------------------------------------------
    def _event(self, kind: str, message: str) -> None:
        if self.on_event is not None:
            self.on_event(kind, message)

    def _send(self, message: str) -> None:
        wait = self._last_send + self.min_interval - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        data = (message + self.termination).encode("ascii")
        t0 = time.perf_counter()
        try:
            self._send_raw(data)
        finally:
            self.io_seconds += time.perf_counter() - t0
        self._last_send = time.monotonic()
        self.bytes_out += len(data)
        self.log.append(LogEntry(time.time(), ">", message))

    def _receive(self) -> str:
        t0 = time.perf_counter()
        try:
            raw = self._receive_raw()
        finally:
            self.io_seconds += time.perf_counter() - t0
        self.bytes_in += len(raw) + len(self.termination)
        text = raw.decode("ascii", errors="replace")
        self.log.append(LogEntry(time.time(), "<", text))
        if "\ufffd" in text:
            raise GarbledReply(f"non-ASCII bytes in reply {text[:60]!r}")
        return text.rstrip("\r")

    def _recover(self) -> None:
        try:
            self._flush_raw()
        except Exception:
            pass
        try:
            self.reopen()
        except InstrumentError as exc:
            self._event("disconnect", str(exc))


# The buses (pyvisa, pyserial) live in drivers/buses.py; imported here so both names work.
from drivers.buses import SerialTransport, VisaTransport, open_transport  # noqa: E402,F401
