"""Progress for long work, one look for every command: Rich bars on a terminal, plain lines
in a log.

``ProgressBoard`` holds several counters (one per model and phase, per device,
per node); ``bar`` is the single-bar shorthand. Without a console both are
silent, so library callers and tests get no output.

On a terminal the board is a live Rich display with an ETA per bar. When the
console is not a terminal (a batch job's log file, a pipe), a live display
would show nothing until the end, so the board prints a plain line every
``interval_s`` seconds instead: units done of the total, the rate, the ETA,
and every counter that moved since the last line, then a last line when the
work ends. Rich is imported only when bars are drawn.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

#: Seconds between two plain progress lines (a log shows progress while the work runs).
PLAIN_INTERVAL_S = 30.0


@dataclass
class _Counter:
    description: str
    total: int | None  # None: a count without an end (units done on a node)
    done: int = 0
    shown: int = 0  # ``done`` when the last plain line was printed


def clock_text(seconds: float) -> str:
    """``75`` -> ``1m15s``; ``3725`` -> ``1h02m05s`` (the plain lines' durations)."""
    s = max(0, round(seconds))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    if h:
        return f"{h}h{m:02d}m{s:02d}s"
    return f"{m}m{s:02d}s" if m else f"{s}s"


class ProgressBoard:
    """A context manager of named counters: ``task()``, ``advance()``, ``log()``.

    ``interval_s`` and ``clock`` set the plain lines' pace (see the module
    docstring); a terminal console gets Rich bars instead.
    """

    def __init__(
        self,
        console: Any | None,
        *,
        transient: bool = False,
        interval_s: float = PLAIN_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.console = console
        self.transient = transient
        self.interval_s = float(interval_s)
        self._clock = clock
        self._p: Any = None
        self._plain = False
        self._counters: dict[int, _Counter] = {}
        self._t0 = self._last = 0.0
        self._printed = False

    def __enter__(self) -> ProgressBoard:
        if self.console is None:
            return self
        if not getattr(self.console, "is_terminal", False):
            self._plain = True
            self._t0 = self._last = self._clock()
            return self
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._p = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
            transient=self.transient,
        )
        self._p.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._p is not None:
            self._p.__exit__(*exc)
        elif self._plain and self._counters and (self._printed or not self.transient):
            self._line(final=True)

    def task(self, description: str, total: int | None) -> int | None:
        """A new counter; ``total`` None counts without an end (it adds to no ETA)."""
        if self._p is not None:
            return self._p.add_task(description, total=total)
        if not self._plain:
            return None
        key = len(self._counters)
        self._counters[key] = _Counter(description, None if total is None else int(total))
        return key

    def advance(self, task: int | None, n: int = 1) -> None:
        if task is None:
            return
        if self._p is not None:
            self._p.advance(task, n)
        elif self._plain and task in self._counters:
            self._counters[task].done += n
            if self._clock() - self._last >= self.interval_s:
                self._line()

    def log(self, text: str) -> None:
        if self._p is not None:
            self._p.console.print(text, highlight=False, soft_wrap=True)
        elif self._plain:
            self.console.print(text, highlight=False, soft_wrap=True, markup=False)

    # ----------------------------------------------------------------- plain lines

    def summary(self) -> str:
        """``done/total units (pct), rate, ETA``: the counters with a total, together."""
        bounded = [c for c in self._counters.values() if c.total is not None]
        done = sum(c.done for c in bounded)
        total = sum(c.total or 0 for c in bounded)
        elapsed = self._clock() - self._t0
        if not bounded:
            done = sum(c.done for c in self._counters.values())
        text = f"{done}/{total} units" if bounded else f"{done} units"
        if total:
            text += f" ({100 * done / total:.0f}%)"
        text += f" in {clock_text(elapsed)}"
        if done and elapsed > 0:
            rate = done / elapsed
            text += f", {rate:.3g}/s" if rate >= 0.1 else f", {60 * rate:.3g}/min"
            if total > done:
                text += f", ETA {clock_text((total - done) / rate)}"
        return text

    def _line(self, final: bool = False) -> None:
        moved = [c for c in self._counters.values() if c.done != c.shown or final]
        parts = []
        for c in moved:
            of = f"/{c.total}" if c.total is not None else ""
            parts.append(f"{c.description} {c.done}{of}")
            c.shown = c.done
        head = "done" if final else "progress"
        text = f"{head}: {self.summary()}"
        if parts:
            text += " | " + "; ".join(parts)
        self.console.print(text, highlight=False, soft_wrap=True, markup=False)
        self._last = self._clock()
        self._printed = True


@contextlib.contextmanager
def bar(console: Any | None, description: str, total: int) -> Iterator[Callable[..., None]]:
    """One transient bar; yields ``advance(n=1)``."""
    with ProgressBoard(None if total == 0 else console, transient=True) as board:
        task = board.task(description, total)
        yield lambda n=1: board.advance(task, n)
