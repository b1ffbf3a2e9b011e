"""One writer per run folder: an exclusive lock held while ``run``, ``import`` or ``merge`` write.

SQLite keeps a store consistent under concurrent writers, but two ``run``
processes on one folder would both measure everything, timing latencies while
they compete for the device. So a writing command takes the run's lock first
and a second writer is refused at once, with one sentence naming the holder.

The lock is ``RUN/.writer.lock``:

* ``fcntl.flock`` on it is the lock itself. The kernel releases it when the
  holder exits, however it exits (SIGKILL, a crash), so a dead process never
  blocks anyone. Linux NFS clients map ``flock`` onto NFS byte-range locks, so
  it also holds between hosts sharing a folder over NFS (with ``lockd``/NFSv4).
* The file's content is a small JSON note (pid, host, start time, command)
  written by the holder, for the refusal message, and cleared on release. A
  note left behind means its writer died without releasing: on this host a
  dead PID is a stale note and is taken over (:attr:`RunLock.took_over`); a note
  from *another* host cannot be checked from here (that host's lock may not
  reach this one, e.g. NFS mounted ``nolock``), so it is reported, never
  broken: the user deletes the file once sure nothing writes.
* On a file system without ``flock`` (some FUSE mounts) only the note
  protects the folder; that is best effort and said so here, not silently.

The lock file is never deleted (deleting a lock file another process is about
to lock is how two holders happen); it stays as an empty hidden file. A
process may take the same folder's lock again while holding it (re-entrant),
e.g. ``run`` holding it while a helper opens the store for writing.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hadis_profile.errors import HadisError

__all__ = ["LOCK_NAME", "LockInfo", "RunLock", "RunLocked", "write_lock"]

#: The lock file inside a run folder (hidden: exports and listings skip it).
LOCK_NAME = ".writer.lock"
#: Largest note read back (a note is ~150 bytes; anything bigger is not ours).
_NOTE_MAX = 4096


class RunLocked(HadisError):
    """Another process holds the run folder's write lock (exit code 1)."""

    def __init__(self, message: str, holder: LockInfo | None) -> None:
        super().__init__(message)
        self.holder = holder


@dataclass(frozen=True)
class LockInfo:
    """Who holds (or held) a run's lock, as its note says."""

    pid: int
    host: str
    started: str
    command: str = ""
    pid_start: int | None = None  # the process's start time (Linux), against PID reuse

    def describe(self) -> str:
        what = f"{self.command}, " if self.command else ""
        return f"{what}PID {self.pid} on host {self.host}, since {self.started}"


def _host() -> str:
    return socket.gethostname() or "localhost"


def _pid_start(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (Linux ``/proc``), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode("ascii", "replace")
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _alive(info: LockInfo) -> bool:
    """Whether the note's process (on this host) still runs, as far as this host can tell."""
    try:
        os.kill(info.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    except (OSError, OverflowError):
        return False
    if info.pid_start is not None:
        now = _pid_start(info.pid)
        if now is not None and now != info.pid_start:
            return False  # the PID was reused by another process
    return True


def _read_note(fd: int) -> LockInfo | None:
    try:
        raw = os.pread(fd, _NOTE_MAX, 0)
        doc = json.loads(raw.decode("utf-8")) if raw.strip() else None
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict):
        return None
    try:
        pid = int(doc["pid"])
        pid_start = doc.get("pid_start")
        return LockInfo(
            pid=pid,
            host=str(doc.get("host", "?")),
            started=str(doc.get("started", "?")),
            command=str(doc.get("command", "")),
            pid_start=int(pid_start) if pid_start is not None else None,
        )
    except (KeyError, TypeError, ValueError):
        return None


# Locks this process holds: real path -> (lock, depth). flock locks belong to an open
# file description, so a second open + flock in the same process would refuse itself.
_held: dict[str, list[Any]] = {}
_held_guard = threading.Lock()


class RunLock:
    """The write lock of one run folder; use :func:`write_lock` (a context manager).

    ``took_over`` is the note of a dead process whose stale lock this one replaced.
    """

    def __init__(self, root: str | os.PathLike, command: str = "") -> None:
        self.root = Path(root)
        self.path = self.root / LOCK_NAME
        self.command = command
        self.took_over: LockInfo | None = None
        self._fd: int | None = None
        self._key = ""

    # ------------------------------------------------------------------ public

    def acquire(self) -> RunLock:
        """Take the lock, or raise :class:`RunLocked` naming the holder. Never waits."""
        key = os.path.realpath(self.root)
        with _held_guard:
            if key in _held:  # this process already holds it: nest
                _held[key][1] += 1
                self._key = key
                self.took_over = _held[key][0].took_over
                return self
            self._acquire()
            self._key = key
            _held[key] = [self, 1]
        return self

    def release(self) -> None:
        """Give the lock back (clearing the note); safe to call twice."""
        if not self._key:
            return
        with _held_guard:
            key, self._key = self._key, ""
            entry = _held.get(key)
            if entry is None:
                return
            entry[1] -= 1
            if entry[1] == 0:
                del _held[key]
                entry[0]._close()

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    # ------------------------------------------------------------------ internals

    def _acquire(self) -> None:
        if not self.root.is_dir():
            raise HadisError(f"Cannot lock the run folder {self.root}: it does not exist.")
        for _ in range(10):  # retried only if the lock file is replaced under us
            fd = self._open()
            flocked = self._flock(fd)
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except OSError:
                same = False
            if not same:
                os.close(fd)
                continue
            try:
                self._check_note(fd, flocked)  # refusing leaves the holder's note as it is
            except BaseException:
                self._unlock(fd, clear=False)
                raise
            try:
                self._write_note(fd)
            except BaseException:
                self._unlock(fd, clear=True)
                raise
            self._fd = fd
            return
        raise HadisError(f"Cannot lock the run folder {self.root}: its lock file keeps changing.")

    def _open(self) -> int:
        from hadis_profile.fileio import os_error

        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise os_error(self.path, e, "create the lock file") from None

    def _flock(self, fd: int) -> bool:
        """True when the kernel lock is held, False when this file system has none."""
        import fcntl

        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError as e:
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                holder = _read_note(fd)
                os.close(fd)
                raise RunLocked(self._held_message(holder), holder) from None
            if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                return False  # no flock here: the note alone guards the folder
            os.close(fd)
            raise HadisError(f"Cannot lock the run folder {self.root}: {e.strerror}.") from None

    def _check_note(self, fd: int, flocked: bool) -> None:
        note = _read_note(fd)
        if note is None or (note.pid == os.getpid() and note.host == _host()):
            return
        if note.host != _host():
            raise RunLocked(
                f"The run folder {self.root} was being written by another hadis-profile process "
                f"({note.describe()}), and this host cannot tell whether it still runs; if "
                f"nothing writes there any more, delete {self.path} and retry.",
                note,
            )
        if not flocked and _alive(note):
            raise RunLocked(self._held_message(note), note)
        # Same host and the kernel lock was free: its writer is gone (a live PID here
        # is a reused one, or the writer released the lock but died before clearing).
        self.took_over = note

    def _write_note(self, fd: int) -> None:
        note = {
            "pid": os.getpid(),
            "pid_start": _pid_start(os.getpid()),
            "host": _host(),
            "started": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "command": self.command,
        }
        data = json.dumps(note, sort_keys=True).encode("utf-8") + b"\n"
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, data, 0)
            os.fsync(fd)
        except OSError as e:
            from hadis_profile.fileio import os_error

            raise os_error(self.path, e) from None

    def _held_message(self, holder: LockInfo | None) -> str:
        who = f" ({holder.describe()})" if holder is not None else ""
        return (
            f"The run folder {self.root} is being written by another hadis-profile "
            f"process{who}; wait for it to finish, or stop it, then retry."
        )

    @staticmethod
    def _unlock(fd: int, *, clear: bool) -> None:
        import fcntl

        if clear:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        with contextlib.suppress(OSError):
            os.close(fd)

    def _close(self) -> None:
        if self._fd is not None:
            self._unlock(self._fd, clear=True)
            self._fd = None


def write_lock(root: str | os.PathLike, command: str = "") -> RunLock:
    """The write lock of run folder ``root`` (which must exist), as a context manager.

    ``with write_lock(run, "import"):`` holds it for the block; ``command``
    names the writer in the message a second writer gets.
    """
    return RunLock(root, command)
