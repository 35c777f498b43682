"""A scripted transport for expected-exchange tests (the seam is Transport's raw hooks).

Each message sent takes the next (expected message, reply) pair; the reply must then be read before
the next message goes out. A test fails on a message out of script, a reply read that the script does
not give, a reply left unread, and (checked after every test by conftest.py) pairs left over.
"""

from __future__ import annotations

import weakref

from drivers.transport import Disconnected, ReplyTimeout, Transport

#: Every ScriptedTransport made during the current test (conftest.py checks them at teardown).
MADE: weakref.WeakSet = weakref.WeakSet()


class ScriptedTransport(Transport):
    """Replies from a list of (expected message, reply) pairs; a reply may be an exception to raise.

    ``None`` as the expected message accepts anything; ``None`` as the reply means the message has
    none (a write). Asserts each message equals the script.
    """

    def __init__(self, script, address="FAKE::1::INSTR", **options):
        options.setdefault("timeout", 0.01)
        super().__init__(address, **options)
        self.script = list(script)
        self.sent: list[str] = []
        self.opened = 0
        self.closed = 0
        self._pending: tuple[str, object] | None = None
        MADE.add(self)

    def _open_raw(self):
        self.opened += 1

    def _close_raw(self):
        self.closed += 1

    def _send_raw(self, data: bytes):
        message = data.decode().removesuffix("\n")
        self.sent.append(message)
        assert self._pending is None or self._pending[1] is None, (
            f"the reply {self._pending[1]!r} to {self._pending[0]!r} was never read"
        )
        assert self.script, f"unexpected message {message!r}: the script is finished"
        expected, reply = self.script.pop(0)
        assert expected is None or message == expected, f"sent {message!r}, expected {expected!r}"
        self._pending = (message, reply)

    def _receive_raw(self) -> bytes:
        assert self._pending is not None and self._pending[1] is not None, "read a reply that the script does not give"
        _, reply = self._pending
        self._pending = None
        if isinstance(reply, BaseException) or (isinstance(reply, type) and issubclass(reply, BaseException)):
            raise reply
        if callable(reply):
            reply = reply()
        return reply.encode("latin-1")

    def assert_finished(self) -> None:
        """Every pair was used and every reply read."""
        assert not self.script, f"{len(self.script)} expected exchange(s) left over, first {self.script[0]!r}"
        assert self._pending is None or self._pending[1] is None, (
            f"the reply {self._pending[1]!r} to {self._pending[0]!r} was never read"
        )


__all__ = ["ScriptedTransport", "ReplyTimeout", "Disconnected", "MADE"]
