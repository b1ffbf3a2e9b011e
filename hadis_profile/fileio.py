"""File I/O every module shares: atomic writes, canonical JSON, hashes, readable errors.

"Nothing is lost" means a reader (or a crash) sees either the old file or the
new one, never half of either: each write fills a temporary file in the same
folder, fsyncs it and renames it into place. The final file gets the usual
umask-derived mode (``mkstemp`` alone would leave it private, 0600, which
breaks a serving stack that reads ``table.json`` as another user).

A command that writes several files (``export``, ``simulate --out``) builds
them in a temporary folder and moves them into place only once all of them
exist (:func:`atomic_dir`), so a failure leaves the target as it was.

Every ``OSError`` of a write or a read (a full disk, a folder where a file
should be, no permission) becomes one sentence naming the path
(:func:`os_error`): an :class:`~hadis_profile.errors.InputError` when the path
the user gave is the problem, a :class:`~hadis_profile.errors.HadisError` when
the environment is.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from hadis_profile.errors import HadisError, InputError


def canonical_json(obj: Any) -> str:
    """Sorted keys, compact separators, no NaN: the serialisation hashes are taken over."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def jsonable(obj: Any) -> Any:
    """Plain JSON values from whatever a producer holds: dataclasses and dicts become
    objects, tuples and numpy arrays lists, numpy scalars numbers, paths strings, and
    NaN or infinity None (strict JSON has neither; a table must never hold one)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):  # numpy scalar or array
        return jsonable(obj.tolist())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    return obj


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


def _default_mode(bits: int = 0o666) -> int:
    umask = os.umask(0)
    os.umask(umask)
    return bits & ~umask


# --------------------------------------------------------------------------- OS errors


def _file_in_the_way(path: Path) -> Path | None:
    """The nearest ancestor of ``path`` that exists and is not a folder, if any."""
    for parent in path.parents:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None


def os_error(path: str | os.PathLike, error: OSError, doing: str = "write") -> HadisError:
    """One sentence for ``error`` while ``doing`` something to ``path`` (to raise ``from None``).

    The path the user gave being wrong (a folder where a file goes, a file in
    the middle of the path, a name too long) is an :class:`InputError`; the
    environment refusing (full disk, permissions, read-only file system) is a
    :class:`HadisError`.
    """
    p = Path(path)
    code = error.errno
    if code == errno.EISDIR:
        return InputError(f"Cannot {doing} {p}: it is a folder; give a file name.")
    if code in (errno.ENOTDIR, errno.EEXIST):
        blocker = _file_in_the_way(p) if code == errno.ENOTDIR else p
        where = f"{blocker} is a file" if blocker is not None else "a part of it is a file"
        return InputError(f"Cannot {doing} {p}: {where}, not a folder.")
    if code == errno.ENAMETOOLONG:
        return InputError(f"Cannot {doing} {p}: the name is too long.")
    # a full disk, no permission, a read-only file system...: the OS's own words
    reason = (error.strerror or str(error) or type(error).__name__).rstrip(".")
    return HadisError(f"Cannot {doing} {p}: {reason}.")


def check_output_file(path: str | os.PathLike) -> None:
    """Refuse an output path no file can be written to, before the work that fills it.

    Cheap checks only (a folder where the file goes, a file where a folder
    should be, an unwritable folder); the write itself still reports anything else.
    """
    p = Path(path)
    if p.is_dir():
        raise InputError(f"Cannot write {p}: it is a folder; give a file name.")
    _check_folder_usable(p.parent, p)


def check_output_dir(path: str | os.PathLike) -> None:
    """Like :func:`check_output_file`, for a folder of outputs (it may exist)."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise InputError(f"Cannot write into {p}: it is a file; give a folder.")
    _check_folder_usable(p if p.is_dir() else p.parent, p)


def _check_folder_usable(folder: Path, target: Path) -> None:
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise InputError(f"Cannot write {target}: {existing} is a file, not a folder.")
    if existing.is_dir() and not os.access(existing, os.W_OK | os.X_OK):
        raise HadisError(f"Cannot write {target}: the folder {existing} is not writable.")


# --------------------------------------------------------------------------- atomic writes


def atomic_write_via(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """Let ``write`` fill a temporary file next to ``path``, then rename it into place.

    An ``OSError`` (from ``write`` too) becomes :func:`os_error`'s sentence naming ``path``.
    """
    p = Path(path)
    if p.is_dir():
        raise InputError(f"Cannot write {p}: it is a folder; give a file name.")
    tmp: str | None = None
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
        os.close(fd)
        write(Path(tmp))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _default_mode())
        os.replace(tmp, p)
    except BaseException as e:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        if isinstance(e, OSError):
            raise os_error(p, e) from None
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` atomically (see the module docstring)."""
    atomic_write_via(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """UTF-8 text through :func:`atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder; when the block succeeds, its files land in ``target``.

    A new ``target`` appears at once (one rename of the whole folder). An
    existing one keeps its other files; each file the block wrote replaces the
    one of that name (a sub-folder replaces the sub-folder), all after every
    file is complete. If the block raises, ``target`` is left exactly as it was
    and the temporary folder is removed. Files inside may be written with plain
    writes: the temporary folder is private until the end.
    """
    t = Path(target)
    if t.exists() and not t.is_dir():
        raise InputError(f"Cannot write into {t}: it is a file; give a folder.")
    try:
        if t.is_dir():  # build inside: same file system, only t's permission needed
            tmp = Path(tempfile.mkdtemp(prefix=".hadis-tmp-", dir=t))
        else:
            t.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{t.name}.tmp-", dir=t.parent))
    except OSError as e:
        raise os_error(t, e, "create the folder") from None
    try:
        yield tmp
        _fsync_tree(tmp)
        os.chmod(tmp, _default_mode(0o777))
        if tmp.parent == t:
            _merge_into(tmp, t)
        else:
            try:
                os.rename(tmp, t)
            except OSError:
                if not t.is_dir():  # anything but "someone created it meanwhile"
                    raise
                _merge_into(tmp, t)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError):
            raise os_error(t, e, "write into") from None
        if type(e) in (HadisError, InputError) and str(tmp) in str(e):
            # a write inside the block failed: name the folder the user asked for
            raise type(e)(str(e).replace(str(tmp), str(t))) from None
        raise


def _fsync_tree(root: Path) -> None:
    """Flush every file under ``root`` to disk before it is renamed into view."""
    for folder, _, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(folder, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def _merge_into(tmp: Path, target: Path) -> None:
    """Move every entry of ``tmp`` into ``target`` (replacing same-named ones), drop ``tmp``."""
    old = tmp / ".replaced"
    for entry in sorted(tmp.iterdir()):
        if entry == old:
            continue
        dest = target / entry.name
        if entry.is_dir() and dest.is_dir():
            old.mkdir(exist_ok=True)
            dest.rename(old / entry.name)  # out of the way, removed below
        os.replace(entry, dest)
    shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------- reading


def size_text(n: int) -> str:
    """A byte count as people read it: ``1,000 bytes``, ``32 MiB``, ``1.5 GiB``."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20)):
        if n >= scale:
            return f"{n / scale:,.4g} {unit}"
    return f"{n:,} bytes"


def read_bytes(path: str | os.PathLike, what: str, limit: int | None = None) -> bytes:
    """A whole input file; a missing or unreadable one is an :class:`InputError` naming ``what``.

    With ``limit``, more than ``limit`` bytes is refused after reading ``limit + 1``:
    a size check by ``stat`` alone would let ``/dev/zero`` or an endless pipe through.
    """
    p = Path(path)
    try:
        with open(p, "rb") as f:
            data = f.read() if limit is None else f.read(limit + 1)
        if limit is not None and len(data) > limit:
            raise InputError(
                f"{what[:1].upper()}{what[1:]} {p} is larger than the limit of {size_text(limit)}."
            )
        return data
    except FileNotFoundError:
        raise InputError(f"{what[:1].upper()}{what[1:]} {p} does not exist.") from None
    except IsADirectoryError:
        raise InputError(f"{what[:1].upper()}{what[1:]} {p} is a folder, not a file.") from None
    except OSError as e:
        raise InputError(f"Cannot read {what} {p}: {e.strerror or e}.") from None
