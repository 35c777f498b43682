"""A scripted transport for expected-exchange tests (the seam is Transport's raw hooks)."""

from __future__ import annotations

from drivers.transport import Disconnected, ReplyTimeout, Transport


class ScriptedTransport(Transport):
    """Replies from a list of (expected message, reply) pairs; a reply may be an exception to raise.

    ``None`` as the expected message accepts anything. Asserts each message equals the script.
    """

    def __init__(self, script, address="FAKE::1::INSTR", **options):
        options.setdefault("timeout", 0.01)
        super().__init__(address, **options)
        self.script = list(script)
        self.sent: list[str] = []
        self.opened = 0
        self.closed = 0

    def _open_raw(self):
        self.opened += 1

    def _close_raw(self):
        self.closed += 1

    def _send_raw(self, data: bytes):
        message = data.decode().removesuffix("\n")
        self.sent.append(message)
        assert self.script, f"unexpected message {message!r}: the script is finished"
        expected, _ = self.script[0]
        assert expected is None or message == expected, f"sent {message!r}, expected {expected!r}"

    def _receive_raw(self) -> bytes:
        _, reply = self.script.pop(0)
        if isinstance(reply, BaseException) or (isinstance(reply, type) and issubclass(reply, BaseException)):
            raise reply
        if callable(reply):
            reply = reply()
        return reply.encode("latin-1")


__all__ = ["ScriptedTransport", "ReplyTimeout", "Disconnected"]
