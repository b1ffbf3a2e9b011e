"""File I/O every module shares: atomic writes, canonical JSON, hashes, readable read errors.

"Nothing is lost" means a reader (or a crash) sees either the old file or the
new one, never half of either: each write fills a temporary file in the same
folder, fsyncs it and renames it into place. The final file gets the usual
umask-derived mode (``mkstemp`` alone would leave it private, 0600, which
breaks a serving stack that reads ``table.json`` as another user).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hadis_profile.errors import HadisError


def canonical_json(obj: Any) -> str:
    """Sorted keys, compact separators, no NaN: the serialisation hashes are taken over."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``: the one digest every content hash in a run or table uses."""
    return hashlib.sha256(data).hexdigest()


def sha256_text(text: str) -> str:
    """Hex sha256 of ``text`` encoded as UTF-8."""
    return sha256_bytes(text.encode("utf-8"))


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in chunks (checkpoints are gigabytes)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write_via(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """Let ``write`` fill a temporary file next to ``path``, then rename it into place."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _default_mode())
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` atomically (see the module docstring)."""
    atomic_write_via(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """UTF-8 text through :func:`atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode("utf-8"))


def read_bytes(path: str | os.PathLike, what: str, *, max_bytes: int | None = None) -> bytes:
    """A whole input file; a missing, unreadable or (past ``max_bytes``) oversized one is
    one sentence naming ``what``. The bound is enforced while reading, so a device file
    or a file that grows cannot make the read unbounded."""
    p = Path(path)
    try:
        if max_bytes is None:
            return p.read_bytes()
        with open(p, "rb") as f:
            data = f.read(max_bytes + 1)
    except FileNotFoundError:
        raise HadisError(f"{what[:1].upper()}{what[1:]} {p} does not exist.") from None
    except OSError as e:
        raise HadisError(f"Cannot read {what} {p}: {e.strerror}.") from None
    if len(data) > max_bytes:
        raise HadisError(
            f"{what[:1].upper()}{what[1:]} {p} is larger than {max_bytes:,} bytes, "
            f"the most a {what} may be."
        )
    return data
