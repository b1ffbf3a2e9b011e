"""Rich progress bars with ETA for long work, one look for every command.

``ProgressBoard`` holds several bars (one per model and phase, or per device);
``bar`` is the single-bar shorthand. Both are no-ops without a console, so
library callers and tests get silence, and Rich is imported only when shown.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any


class ProgressBoard:
    """A context manager of named progress bars: ``task()``, ``advance()``, ``log()``."""

    def __init__(self, console: Any | None, *, transient: bool = False) -> None:
        self.console = console
        self.transient = transient
        self._p: Any = None

    def __enter__(self) -> ProgressBoard:
        if self.console is not None:
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

    def task(self, description: str, total: int) -> int | None:
        return None if self._p is None else self._p.add_task(description, total=total)

    def advance(self, task: int | None, n: int = 1) -> None:
        if self._p is not None and task is not None:
            self._p.advance(task, n)

    def log(self, text: str) -> None:
        if self._p is not None:
            self._p.console.print(text, highlight=False, soft_wrap=True)


@contextlib.contextmanager
def bar(console: Any | None, description: str, total: int) -> Iterator[Callable[..., None]]:
    """One transient bar; yields ``advance(n=1)``."""
    with ProgressBoard(None if total == 0 else console, transient=True) as board:
        task = board.task(description, total)
        yield lambda n=1: board.advance(task, n)
