"""The in-process launcher: every model here, one after another, on one device."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hadis_profile.measure.job import ModelFailed, ModelJob, one_line
from hadis_profile.measure.launchers import Launcher, RunContext
from hadis_profile.measure.units import ModelWork


class InProcessLauncher(Launcher):
    """Load each model on ``device`` in turn and record its units as they finish.

    A model that fails (to load, or in a phase) is reported and skipped; the
    next model goes on.

    ``tools`` (the run's scorers, discriminator and extractors) are loaded once
    by the caller and shared by every model.
    """

    def __init__(self, device: str, tools: Any) -> None:
        self.device, self.tools = device, tools

    def run(self, works: Sequence[ModelWork], ctx: RunContext, recorder: Any) -> None:
        for work in works:
            if work.empty:
                continue
            recorder.begin(work)
            try:
                with ModelJob(work.spec, ctx.opts, self.device, self.tools, ctx.base_dir) as job:
                    job.run(work, ctx.prompts, recorder)
            except ModelFailed as e:  # one model's error does not cost the others
                recorder.failed(e.model, e.phase, e.detail)
            except Exception as e:  # raised while loading: nothing of it was measured
                recorder.failed(work.name, "loading", one_line(e))
