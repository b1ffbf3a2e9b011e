"""How a run's model jobs are executed: side by side, each behind one small interface.

A launcher takes the run's :class:`~hadis_profile.measure.units.ModelWork` list
and gets each model's units measured by a :class:`~hadis_profile.measure.job.ModelJob`
somewhere, handing every finished unit to the run's
:class:`~hadis_profile.measure.recorder.Recorder` in this process (the only
writer of the store). The launchers differ only in *where* jobs run:

* :mod:`.inprocess`: here, one model after another (``run``);
* :mod:`.local`: one spawned worker process per local device (``run --devices``);
* :mod:`.ray`: one actor per GPU of a Ray cluster, fed unit by unit
  (``run --launcher ray``; its actors are :mod:`.ray_worker`).

Launchers never decide what to measure (the store and :func:`plan_work` /
:func:`plan_units` do) nor how (the job does), so a new one (another cluster
scheduler) is one module more.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hadis_profile.measure.units import ModelWork


@dataclass
class RunContext:
    """What every job of a run needs besides its own work: settings, prompts, zoo folder."""

    opts: Any  # options.RunOptions
    prompts: list[str]
    base_dir: Path


class Launcher(ABC):
    """Runs model jobs somewhere and feeds their results to the recorder."""

    @abstractmethod
    def run(self, works: Sequence[ModelWork], ctx: RunContext, recorder: Any) -> None:
        """Measure every non-empty work; returns when all are recorded (or raises)."""
