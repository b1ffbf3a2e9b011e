"""``run --devices 0,1,2,3``: one spawned worker process per local device.

* **Processes, spawned**: CUDA cannot be initialised in a forked child, and a
  process per device keeps one model's kernels from stealing another device's
  Python time. Each worker sees only its own GPU (``CUDA_VISIBLE_DEVICES`` is
  set per worker), and this parent process never touches CUDA, so every
  worker has its whole device. Workers ignore SIGINT (Ctrl-C reaches the whole
  process group); the parent decides, and stops them with SIGTERM.
* **One writer**: workers never open the store. Each finished unit (a latency
  point, a prompt's scored images) comes back through a ``multiprocessing``
  queue as plain data and the parent's recorder commits it at once, so a
  stopped or crashed worker loses only the unit it was on, and a rerun skips
  everything committed.
* **Work division**: by model, because a model's latency sweep must be
  measured on one device and loading a model twice would cost more than it
  saves. :func:`divide_work` is greedy longest-processing-time: models in
  decreasing estimated cost, each to the currently least-loaded worker. The
  estimate (:func:`estimate_costs`) is per-image cost x images still to
  generate (latency reps plus K per prompt left); per-image cost is the
  measured batch-1 latency when every model still to do has one on this
  hardware, else ``steps x height x width`` (doubled with classifier-free
  guidance). Models with nothing left are not assigned.
* **Failure**: a model that fails is reported (device, model, phase) and its
  worker goes on with its next model; a worker process that dies takes only
  its unfinished models with it. The run then ends with one sentence listing
  the failures, every committed unit kept.
"""

from __future__ import annotations

import contextlib
import os
import queue as queue_mod
import signal
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from hadis_profile.measure.devices import DeviceInfo
from hadis_profile.measure.job import ModelFailed, ModelJob, one_line
from hadis_profile.measure.launchers import Launcher, RunContext
from hadis_profile.measure.units import ModelWork, PromptRecord, stored_latency

#: Seconds a stopped worker gets to unwind before it is killed.
STOP_GRACE_S = 20.0
_POLL_S = 0.2


# --------------------------------------------------------------------------- work division


def divide_work(costs: Mapping[str, float], n_workers: int) -> list[list[str]]:
    """Greedy longest-processing-time split of models over ``n_workers``.

    Models in decreasing cost (ties: input order) each go to the least-loaded
    worker (ties: lowest index); within a share the input order is kept. Models
    costing 0 (nothing left) are left out, so shares may be empty.
    """
    if n_workers < 1:
        raise ValueError("n_workers must be at least 1")
    order = {name: i for i, name in enumerate(costs)}
    loads = [0.0] * n_workers
    shares: list[list[str]] = [[] for _ in range(n_workers)]
    for name in sorted(costs, key=lambda m: (-costs[m], order[m])):
        if costs[name] <= 0:
            continue
        j = min(range(n_workers), key=lambda w: (loads[w], w))
        shares[j].append(name)
        loads[j] += costs[name]
    return [sorted(share, key=order.__getitem__) for share in shares]


def estimate_costs(
    store: Any, works: Sequence[ModelWork], opts: Any, label: str
) -> dict[str, float]:
    """model -> estimated seconds-ish of work left (see the module docstring); 0 when done."""
    images: dict[str, float] = {}
    b1: dict[str, float | None] = {}
    for w in works:
        work = sum(w.batch_sizes) * (opts.warmup + opts.reps)
        work += len(w.prompt_ids) * opts.images_per_prompt + (3 if w.stages else 0)
        images[w.name] = float(work)
        point = stored_latency(store, w.name, label).get(1)
        b1[w.name] = None if point is None or point.infeasible else point.mean_s
    todo = [name for name, n in images.items() if n > 0]
    measured = bool(todo) and all(b1[name] for name in todo)
    costs: dict[str, float] = {}
    for w in works:
        spec = w.spec
        cfg = 2 if spec.guidance_scale > 1 else 1
        per_image = b1[w.name] if measured else spec.steps * spec.height * spec.width * cfg
        costs[w.name] = images[w.name] * float(per_image or 0.0)
    return costs


def visible_device(device: str) -> str | None:
    """``CUDA_VISIBLE_DEVICES`` for a worker on ``device`` (``cuda:N`` counts among the
    devices this process may see), or None for the CPU."""
    if not device.startswith("cuda"):
        return None
    index = int(device.partition(":")[2] or 0)
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None or not visible.strip():
        return str(index)
    ids = [v.strip() for v in visible.split(",") if v.strip()]
    return ids[index] if index < len(ids) else str(index)


# --------------------------------------------------------------------------- the parent


class LocalProcessLauncher(Launcher):
    """One spawned worker per entry of ``infos``; see the module docstring."""

    def __init__(self, infos: Sequence[DeviceInfo], threads: int) -> None:
        self.infos, self.threads = list(infos), threads

    def run(self, works: Sequence[ModelWork], ctx: RunContext, recorder: Any) -> None:
        import multiprocessing as mp

        costs = estimate_costs(recorder.store, works, ctx.opts, recorder.label)
        shares = divide_work(costs, len(self.infos))
        by_name = {w.name: w for w in works}
        mp_ctx = mp.get_context("spawn")
        q = mp_ctx.Queue()
        procs: dict[int, Any] = {}
        finished = False
        with _sigterm_interrupts():
            try:
                for w, (info, share) in enumerate(zip(self.infos, shares, strict=True)):
                    if not share:
                        continue
                    mine = [by_name[name] for name in share]
                    args = (w, info.device, mine, ctx, self.threads, q)
                    proc = mp_ctx.Process(
                        target=_worker, args=args, name=f"hadis-worker-{w}", daemon=True
                    )
                    with _cuda_visible(visible_device(info.device)):
                        proc.start()  # the child copies the environment at start
                    procs[w] = proc
                _supervise(procs, self.infos, q, recorder, dict(enumerate(shares)))
                finished = True
            finally:
                _stop(list(procs.values()), wait=finished)
                q.close()


@contextlib.contextmanager
def _cuda_visible(value: str | None) -> Iterator[None]:
    """Set ``CUDA_VISIBLE_DEVICES`` while a worker starts, then put it back."""
    if value is None:
        yield
        return
    old = os.environ.get("CUDA_VISIBLE_DEVICES")
    os.environ["CUDA_VISIBLE_DEVICES"] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = old


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """While workers run, SIGTERM on the parent (a job scheduler's stop) acts like
    Ctrl-C, so the workers are stopped instead of orphaned on their devices."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def worker_names(infos: Sequence[DeviceInfo]) -> list[str]:
    """How progress lines name each worker: its device, with ``#w`` where devices repeat."""
    devices = [i.device for i in infos]
    return [d if devices.count(d) == 1 else f"{d}#{w}" for w, d in enumerate(devices)]


def _supervise(
    procs: dict[int, Any],
    infos: Sequence[DeviceInfo],
    q: Any,
    recorder: Any,
    shares: dict[int, list[str]],
) -> None:
    """Record the workers' results until every worker is done or gone.

    A model that fails in a worker is reported and the worker goes on with its
    next model; a worker process that dies takes only its current and remaining
    models with it (reported as failed), and the others go on.
    """
    current: dict[int, str | None] = dict.fromkeys(procs)
    started: dict[int, set[str]] = {w: set() for w in procs}
    finished: set[int] = set()
    names = worker_names(infos)

    def handle(msg: tuple) -> None:
        kind, w = msg[0], msg[1]
        if kind == "begin":
            current[w] = msg[2].name
            started[w].add(msg[2].name)
            recorder.begin(msg[2], where=names[w])
        elif kind == "loaded":
            recorder.loaded(msg[2], msg[3], msg[4])
        elif kind == "latency":
            recorder.latency(msg[2], msg[3])
        elif kind == "samples":
            recorder.samples(msg[2], msg[3], msg[4])
        elif kind == "stages":
            recorder.stages(msg[2], msg[3])
        elif kind == "prompt":
            recorder.prompt(msg[2])
        elif kind == "log":
            recorder.log(f"{names[w]}: {msg[2]}")
        elif kind == "failed":
            recorder.failed(msg[2], msg[3], msg[4], where=names[w])
        elif kind == "done":
            finished.add(w)
        elif kind == "error":  # the worker itself could not start (its scorers, say)
            lost = [m for m in shares[w] if m not in started[w]] or [None]
            for model in lost:
                recorder.failed(model or "(no model)", "worker start-up", msg[3], names[w])
            finished.add(w)

    while len(finished) < len(procs):
        try:
            handle(q.get(timeout=_POLL_S))
            continue
        except queue_mod.Empty:
            pass
        for w, p in procs.items():
            if w in finished or p.exitcode is None:
                continue
            with contextlib.suppress(queue_mod.Empty):  # its last words may still be in the pipe
                while True:
                    handle(q.get(timeout=_POLL_S))
            if w not in finished:  # died without a word: its unfinished models are lost
                detail = f"the worker process exited with code {p.exitcode}"
                for model in [m for m in shares[w] if m not in started[w] or m == current[w]]:
                    recorder.failed(model, "profiling", detail, names[w])
                finished.add(w)


def _stop(procs: list[Any], wait: bool = False) -> None:
    """SIGTERM the live workers, give them time to exit, then kill what is left.

    ``wait``: they all reported done, so let them exit on their own first.
    """
    deadline = time.monotonic() + STOP_GRACE_S
    for p in procs:
        if wait:
            p.join(max(0.0, deadline - time.monotonic()))
        if p.is_alive():
            p.terminate()
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()
            p.join()


# --------------------------------------------------------------------------- the worker


class _Terminated(BaseException):
    """Raised in a worker by SIGTERM, so it unwinds (and frees its device) on the way out."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise _Terminated


class _QueueSink:
    """The worker's :class:`~hadis_profile.measure.job.Sink`: every result goes to the parent."""

    def __init__(self, q: Any, worker: int) -> None:
        self.q, self.w = q, worker

    def begin(self, work: ModelWork) -> None:
        self.q.put(("begin", self.w, work))

    def loaded(self, model: str, load_s: float, notes: list[str]) -> None:
        self.q.put(("loaded", self.w, model, load_s, notes))

    def latency(self, model: str, point: Any) -> None:
        self.q.put(("latency", self.w, model, point))

    def samples(self, model: str, batch_size: int, seconds: list[float]) -> None:
        self.q.put(("samples", self.w, model, batch_size, seconds))

    def stages(self, model: str, stages: dict[str, float]) -> None:
        self.q.put(("stages", self.w, model, stages))

    def prompt(self, record: PromptRecord) -> None:
        self.q.put(("prompt", self.w, record))

    def log(self, text: str) -> None:
        self.q.put(("log", self.w, text))


def _worker(
    w: int, device: str, works: list[ModelWork], ctx: RunContext, threads: int, q: Any
) -> None:
    """Measure ``works`` on ``device``; every outcome is reported through ``q``.

    A model's failure is reported and the next model goes on; only an error
    before the first model (the scorers cannot load, say) ends the worker.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        from hadis_profile.measure.pipelines import configure_hub

        configure_hub(ctx.opts.online)
        import torch

        from hadis_profile.measure.quality import QualityTools, build_quality_tools

        torch.set_num_threads(threads)
        if device.startswith("cuda"):
            device = "cuda:0"  # CUDA_VISIBLE_DEVICES shows this worker its own GPU only
            torch.cuda.set_device(torch.device(device))
        opts = ctx.opts
        tools = build_quality_tools(opts, device) if opts.quality else QualityTools([], None, [])
    except _Terminated:
        q.cancel_join_thread()
        return
    except BaseException as e:
        q.put(("error", w, None, one_line(e)))
        raise SystemExit(1) from None
    sink = _QueueSink(q, w)
    try:
        for work in works:
            sink.begin(work)
            try:
                with ModelJob(work.spec, opts, device, tools, ctx.base_dir) as job:
                    job.run(work, ctx.prompts, sink)
            except ModelFailed as e:
                q.put(("failed", w, e.model, e.phase, e.detail))
            except Exception as e:  # raised while loading
                q.put(("failed", w, work.name, "loading", one_line(e)))
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # nothing left to unwind
        q.put(("done", w))
    except _Terminated:
        q.cancel_join_thread()  # the parent stopped reading; do not block on exit
