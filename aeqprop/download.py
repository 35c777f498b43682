"""``aeqprop data fetch``: download a named dataset from its official locations, checked by MD5.

A file is streamed to a temporary name beside its destination, hashed on the
way, and renamed into place only when its checksum matches the published one:
a failed or corrupt download leaves nothing behind. Mirrors are tried in order.
A file already present with the right checksum is not downloaded again.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aeqprop.catalog import USER_DIR, DatasetSpec, spec
from aeqprop.errors import DataError


@dataclass(frozen=True)
class FetchSettings:
    """How downloads behave: ``timeout`` per connection in s, ``chunk`` read size in bytes."""

    timeout: float = 60.0
    chunk: int = 1 << 20


def md5sum(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def target_dir(name: str, data_dir: str | Path | None = None) -> Path:
    """Where ``fetch`` puts a dataset: DATA_DIR/NAME, with DATA_DIR the one given, else $AEQPROP_DATA, else the user cache."""
    from aeqprop.catalog import ENV_VAR

    base = data_dir or os.environ.get(ENV_VAR) or USER_DIR
    return Path(base).expanduser() / name


def _download(url: str, dest: Path, md5: str, settings: FetchSettings) -> None:
    import urllib.request

    tmp = dest.with_name(dest.name + ".part")
    h = hashlib.md5(usedforsecurity=False)
    try:
        with urllib.request.urlopen(url, timeout=settings.timeout) as response, open(tmp, "wb") as out:
            while block := response.read(settings.chunk):
                h.update(block)
                out.write(block)
        if h.hexdigest() != md5:
            raise DataError(
                f"{url}: checksum mismatch (MD5 {h.hexdigest()}, expected {md5}); the download is corrupt "
                "or the mirror serves another file; nothing was kept"
            )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def fetch(
    name: str,
    data_dir: str | Path | None = None,
    mirrors: list[str] | None = None,
    dataset: DatasetSpec | None = None,
    settings: FetchSettings = FetchSettings(),
    on_file: Callable[[str, str], None] | None = None,
) -> Path:
    """Download ``name`` into :func:`target_dir`; return that folder.

    ``mirrors`` replace the spec's (base URLs ending in ``/``); ``dataset`` replaces
    the catalog's spec (tests); ``on_file(filename, status)`` reports each file
    ("present", "downloaded", "extracted").
    """
    ds = dataset or spec(name)
    folder = target_dir(ds.name, data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    report = on_file or (lambda f, s: None)
    for remote in ds.files:
        dest = folder / remote.filename
        if dest.is_file() and md5sum(dest, settings.chunk) == remote.md5:
            report(remote.filename, "present")
            continue
        errors = []
        for base in mirrors or ds.mirrors:
            url = base.rstrip("/") + "/" + remote.filename
            try:
                _download(url, dest, remote.md5, settings)
                break
            except DataError:
                raise
            except OSError as exc:  # URLError, HTTPError, timeouts, refused connections
                code = getattr(exc, "code", None)
                errors.append(f"{url}: " + (f"HTTP {code} " if code else "") + str(getattr(exc, "reason", exc)))
        else:
            raise DataError(f"could not download {remote.filename} of {ds.name}: " + "; ".join(errors))
        report(remote.filename, "downloaded")
    for member in ds.members:  # files taken out of a downloaded archive (EMNIST)
        out = folder / Path(member).name
        if out.is_file():
            continue
        archive = folder / ds.files[0].filename
        try:
            with zipfile.ZipFile(archive) as z, z.open(member) as src, open(out.with_suffix(".part"), "wb") as dst:
                while block := src.read(settings.chunk):
                    dst.write(block)
        except (KeyError, zipfile.BadZipFile) as exc:
            out.with_suffix(".part").unlink(missing_ok=True)
            raise DataError(f"{archive}: cannot extract {member} ({exc})") from None
        os.replace(out.with_suffix(".part"), out)
        report(out.name, "extracted")
    return folder
