"""What runs on each worker of ``run --launcher ray``: the actor, its device, its results.

A :class:`RayWorker` is one Ray actor holding one GPU (or one unit of a custom
resource). It loads the run's quality tools once, then one model at a time
(a :class:`~hadis_profile.measure.job.ModelJob` kept loaded while units of that
model keep coming), and streams each finished unit back as a plain event
tuple through a Ray generator, so the driver commits a prompt's images while
the next prompt is generated. The job runs in a thread of the actor that
feeds a queue the generator drains: the job calls its sink, the generator
yields.

Events: ``("loaded", model, load_s, notes)``, ``("latency", model, point)``,
``("samples", model, batch, seconds)``, ``("stages", model, stages)``,
``("prompt", record)``, ``("log", text)`` and ``("failed", model, phase,
detail)``, the last for an error of the model (the worker itself goes on).
"""

from __future__ import annotations

import os
import queue
import socket
import threading
from typing import Any

from hadis_profile.errors import HadisError
from hadis_profile.measure.devices import DeviceInfo, cpu_info, library_versions, slug
from hadis_profile.measure.job import ModelFailed, ModelJob, one_line
from hadis_profile.measure.launchers import RunContext
from hadis_profile.measure.units import ModelWork


def describe_device(resource: str, threads: int) -> DeviceInfo:
    """The device of a worker holding one ``resource``: its GPU, or for a custom
    resource the CPU, named after the resource (a stand-in for a GPU type)."""
    if resource == "GPU":
        import torch

        from hadis_profile.measure.devices import detect_device

        if not torch.cuda.is_available():
            raise HadisError("Ray gave this worker a GPU but torch sees no CUDA device.")
        return detect_device("cuda")  # Ray shows each worker its own GPU only
    cpu = cpu_info(threads)
    details = {**cpu.details, "ray_resource": resource, "cpu_name": cpu.name}
    return DeviceInfo("cpu", resource, None, slug(resource), details)


_END = ("end",)


class _EventSink:
    """The worker's :class:`~hadis_profile.measure.job.Sink`: each result is an event on a
    queue that the unit's generator yields to the driver."""

    def __init__(self, q: queue.Queue, fresh: bool) -> None:
        self.q, self.fresh = q, fresh

    def begin(self, work: ModelWork) -> None:
        pass

    def loaded(self, model: str, load_s: float, notes: list[str]) -> None:
        if self.fresh:  # once per load, not once per unit of a model kept loaded
            self.q.put(("loaded", model, load_s, notes))
            self.fresh = False

    def latency(self, model: str, point: Any) -> None:
        self.q.put(("latency", model, point))

    def samples(self, model: str, batch_size: int, seconds: list[float]) -> None:
        self.q.put(("samples", model, batch_size, seconds))

    def stages(self, model: str, stages: dict[str, float]) -> None:
        self.q.put(("stages", model, stages))

    def prompt(self, record: Any) -> None:
        self.q.put(("prompt", record))

    def log(self, text: str) -> None:
        self.q.put(("log", text))


class RayWorker:
    """One worker actor: a device, the run's quality tools, and at most one model loaded."""

    def __init__(self, ctx: RunContext, resource: str, threads: int | None) -> None:
        from hadis_profile.measure.pipelines import configure_hub

        configure_hub(ctx.opts.online)
        import torch

        from hadis_profile.measure.quality import QualityTools, build_quality_tools

        self.ctx = ctx
        self.threads = max(1, int(threads or 1))
        torch.set_num_threads(self.threads)
        self.info = describe_device(resource, self.threads)
        opts = ctx.opts
        self.tools = (
            build_quality_tools(opts, self.info.device)
            if opts.quality
            else QualityTools([], None, [])
        )
        self.job: ModelJob | None = None

    def describe(self) -> dict:
        import ray

        return {
            "info": self.info,
            "host": socket.gethostname(),
            "node_ip": ray.util.get_node_ip_address(),
            "pid": os.getpid(),
            "libraries": library_versions(),
        }

    def run(self, work: ModelWork) -> Any:
        """Measure ``work``, yielding each finished unit's event as it comes (a Ray
        generator: the driver commits one while the next is measured)."""
        q: queue.Queue = queue.Queue()
        thread = threading.Thread(target=self._measure, args=(work, q), daemon=True)
        thread.start()
        while (event := q.get()) is not _END:
            yield event
        thread.join()

    def _measure(self, work: ModelWork, q: queue.Queue) -> None:
        import torch

        torch.set_num_threads(self.threads)  # per thread, for some torch builds
        try:
            fresh = self.job is None or self.job.name != work.name
            if fresh:
                self._unload()
                job = ModelJob(
                    work.spec, self.ctx.opts, self.info.device, self.tools, self.ctx.base_dir
                )
                try:
                    job.__enter__()
                except Exception as e:
                    q.put(("failed", work.name, "loading", one_line(e)))
                    return
                self.job = job
            self.job.run(work, self.ctx.prompts, _EventSink(q, fresh))  # type: ignore[union-attr]
        except ModelFailed as e:
            q.put(("failed", e.model, e.phase, e.detail))
            self._unload()
        except BaseException as e:  # reported to the driver, never lost
            q.put(("failed", work.name, "profiling", one_line(e)))
            self._unload()
        finally:
            q.put(_END)

    def _unload(self) -> None:
        if self.job is not None:
            job, self.job = self.job, None
            job.__exit__(None, None, None)
