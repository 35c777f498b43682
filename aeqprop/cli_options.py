"""Option values several commands share, parsed: layer sizes, a release duration, a schedule.

Each raises a ConfigurationError naming the option and what to give instead.
"""

from typing import Any


def parse_hidden(hidden: str) -> tuple[int, ...]:
    """Layer sizes from ``--hidden 128,64`` (or ``--layers``), each at least 1."""
    from aeqprop.errors import ConfigurationError

    try:
        sizes = tuple(int(h) for h in hidden.split(",") if h.strip())
    except ValueError:
        raise ConfigurationError(
            f"--hidden {hidden!r}: give hidden layer sizes as integers, e.g. 256 or 128,64"
        ) from None
    if not sizes:
        raise ConfigurationError(f"--hidden {hidden!r}: give at least one layer size, e.g. 256 or 128,64")
    if any(h < 1 for h in sizes):
        raise ConfigurationError(f"--hidden {hidden!r}: layer sizes must be >= 1")
    return sizes


def parse_release(release: str) -> float | str:
    """Aeqprop's release: a duration (1.0 = one parameter update in simulation, s on hardware) or 'equilibrium'."""
    from aeqprop.errors import ConfigurationError

    if release in ("equilibrium", "joint"):
        return "equilibrium"
    try:
        return float(release)
    except ValueError:
        raise ConfigurationError(f"--release {release!r}: give a duration (e.g. 1.0) or 'equilibrium'") from None


def parse_schedule(text: str | None, what: str) -> dict[str, Any] | None:
    """A schedule option as the run config's table (see aeqprop.schedules), or None."""
    if text is None:
        return None
    from aeqprop.schedules import Schedule

    return Schedule.parse(text, what).model_dump(exclude_none=True)
