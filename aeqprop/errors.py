"""The error hierarchy. Each message says what was wrong and what to change.

The CLI prints an ``AeqpropError`` as one line and exits non-zero.
"""

from __future__ import annotations


class AeqpropError(Exception):
    """Base of every error the controller raises on purpose."""


class ConfigurationError(AeqpropError, ValueError):
    """A run description, option or data file is invalid (caught before any I/O)."""


class DataError(ConfigurationError):
    """A dataset is unusable: unknown name, NaN entries, wrong shapes."""


class SafetyLimitError(AeqpropError):
    """A value would pass an instrument channel's limit; nothing was sent."""


class InstrumentError(AeqpropError):
    """An instrument did not answer, answered wrongly, or reported an error."""


class RelaxationError(AeqpropError):
    """A substrate failed to settle (non-finite state, homeostasis not reached)."""


class StiffnessError(RelaxationError):
    """The nudged phase of Aeqprop ran away: the coupling compliance eps is too large.

    Attributes
    ----------
    eps:
        The compliance in force, per tensor.
    eps_max:
        The largest stable compliance estimated from the observed growth, or None.
    """

    def __init__(self, message: str, eps: dict | float | None = None, eps_max: float | None = None):
        super().__init__(message)
        self.eps = eps
        self.eps_max = eps_max
