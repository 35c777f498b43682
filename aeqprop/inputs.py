"""The files a run reads, fingerprinted so a resume can refuse changed inputs.

Any string in a run's config that names an existing file (the data file, a
netlist, a wiring map, a protocol file ``path.py:Class``) is an input. When a
run starts, each is recorded with its absolute path, SHA-256 and size; a
resume checks them again, refuses the run if one changed or is gone (naming
it), and reads every input from its absolute path, so a resume from another
working directory reads the same files.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aeqprop.errors import ConfigurationError

#: Config keys that are never inputs (the runs folder is where the run is written).
NOT_INPUTS = ("runs",)


def _walk(node: Any, prefix: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _walk(value, f"{prefix}{key}." if not isinstance(value, str) else f"{prefix}{key}")
    elif isinstance(node, str):
        yield prefix, node


def _split(key: str, value: str) -> tuple[str, str]:
    """(path part, suffix): a protocol file ``path.py:Class`` keeps ``:Class`` apart."""
    if key == "protocol.name" and ":" in value:
        path, _, cls = value.rpartition(":")
        return path, ":" + cls
    return value, ""


def sha256(path: Path) -> tuple[str, int]:
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def record(config: dict, cwd: Path | None = None) -> list[dict]:
    """One row per input file named in ``config`` (a run config as a dict), paths resolved against ``cwd``."""
    cwd = Path.cwd() if cwd is None else cwd
    rows = []
    for key, value in _walk(config):
        if key in NOT_INPUTS or not value or "\x00" in value:
            continue
        text, _suffix = _split(key, value)
        try:
            path = (cwd / text).resolve()
            if not path.is_file():
                continue
            digest, size = sha256(path)
        except (OSError, ValueError, RuntimeError):
            continue  # not a readable file: the part of the run that uses it names the problem
        rows.append({"key": key, "value": value, "path": str(path), "sha256": digest, "bytes": size})
    return rows


def check(recorded: list[dict], config: dict) -> dict:
    """Refuse a resume whose inputs changed; return the config with each input at its absolute path."""
    import copy

    config = copy.deepcopy(config)
    changed = []
    for item in recorded:
        path = Path(item["path"])
        try:
            digest, size = sha256(path)
        except OSError:
            changed.append(f"{item['key']}: {path} is gone")
            continue
        if digest != item["sha256"]:
            changed.append(
                f"{item['key']}: {path} changed since the run started "
                f"({item['bytes']} -> {size} bytes, sha256 {item['sha256'][:12]} -> {digest[:12]})"
            )
            continue
        node = config
        *parts, last = item["key"].split(".")
        for part in parts:
            node = node.get(part, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict) and node.get(last) == item["value"]:
            node[last] = str(path) + _split(item["key"], item["value"])[1]
    if changed:
        raise ConfigurationError(
            f"the run's inputs changed, so a resume would mix two runs: {'; '.join(changed)}; "
            "restore the file(s) or start a new run with `aeqprop train`"
        )
    return config
