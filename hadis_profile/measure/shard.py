"""``hadis-profile run --devices 0,1,2,3``: one worker process per local device, one store.

The parent process does the one-time setup exactly as a single-device run does
(zoo validation, prompts, hardware record, router features, provenance, FID
reference, preflight of every checkpoint) and registers every model, so the
workers never rewrite setup; they only add latency points and images (plus
``--stages`` timings, read and written under one lock). Each worker opens its
own connection to the run store and commits one transaction per unit, exactly
as the single-process profiler does, so resume needs nothing new: a rerun
skips whatever any worker finished.

* **Processes, spawned**: CUDA cannot be initialised in a forked child, and a
  process per device keeps one model's kernels from stealing another device's
  Python time. Workers ignore SIGINT (Ctrl-C reaches the whole process group);
  the parent decides, and stops them with SIGTERM, which unwinds the open
  transaction (rolled back) before the worker exits.
* **Work division**: by model, because a model's latency sweep must be measured
  on one device and loading a model twice would cost more than it saves.
  :func:`divide_work` is greedy longest-processing-time: models in decreasing
  estimated cost, each to the currently least-loaded worker. The estimate
  (:func:`estimate_costs`) is per-image cost x images still to generate
  (latency reps plus K per prompt left); per-image cost is the measured batch-1
  latency when every model still to do has one on this hardware, else
  ``steps x height x width`` (doubled with classifier-free guidance). Models with
  nothing left are not assigned, so a finished run starts no worker.
* **Progress**: workers send small tuples through a ``multiprocessing`` queue; the
  parent draws one Rich bar per (device, model, phase) with an ETA.
* **Failure**: a worker's exception becomes one :class:`HadisError` sentence
  naming the device and the model; the other workers are stopped and every
  committed unit stays.
* **Hardware**: all devices must have the same name (one label covers every
  latency); ``--force`` records mixed devices under one label anyway.
"""

from __future__ import annotations

import contextlib
import os
import queue as queue_mod
import signal
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from hadis_profile.errors import HadisError, UsageError
from hadis_profile.measure.profiler import (
    DeviceInfo,
    ModelReport,
    QualityTools,
    RunOptions,
    RunReport,
    _cpu_name,
    _latency_todo,
    _profile_model,
    _stored_latency,
    detect_device,
)
from hadis_profile.progress import ProgressBoard

#: Seconds a stopped worker gets to unwind its transaction before it is killed.
STOP_GRACE_S = 20.0
_POLL_S = 0.2


# --------------------------------------------------------------------------- devices


def parse_devices(text: str) -> list[str]:
    """``0,1,2,3`` -> ``cuda:0..3``; ``cpu`` entries stay (``cpu,cpu``: two CPU workers).

    A GPU listed twice is refused: two workers timing on one device would each
    measure the other's load.
    """
    out: list[str] = []
    for raw in text.split(","):
        item = raw.strip().lower()
        if item == "cpu":
            out.append("cpu")
            continue
        index = item.removeprefix("cuda:")
        if not index.isdigit():
            raise UsageError(
                f"--devices '{text}' must list CUDA indices or 'cpu', comma-separated "
                "(e.g. 0,1,2,3)."
            )
        dev = f"cuda:{int(index)}"
        if dev in out:
            raise UsageError(f"--devices '{text}' lists {dev} twice.")
        out.append(dev)
    if not out:
        raise UsageError("--devices needs at least one device.")
    return out


def _usable_cpus() -> int:
    with contextlib.suppress(AttributeError, OSError):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def worker_threads(devices: Sequence[str], threads: int | None) -> int:
    """torch intra-op threads per worker: the cores shared out, unless ``--threads`` says."""
    return max(1, int(threads)) if threads else max(1, _usable_cpus() // len(devices))


def device_infos(devices: Sequence[str], threads: int | None = None) -> list[DeviceInfo]:
    """What each worker will run on; CUDA indices are checked against what torch sees."""
    import torch

    cuda = [d for d in devices if d.startswith("cuda")]
    if cuda:
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise HadisError(f"--devices names {', '.join(cuda)} but torch sees no CUDA device.")
        bad = [d for d in cuda if int(d.split(":")[1]) >= count]
        if bad:
            raise HadisError(
                f"--devices names {', '.join(bad)} but torch sees only {count} CUDA "
                f"device{'s' if count > 1 else ''} (indices 0-{count - 1})."
            )
    n = worker_threads(devices, threads)
    cpu = DeviceInfo("cpu", f"{_cpu_name()}, {n} torch thread{'s' if n > 1 else ''}", None, "cpu")
    return [cpu if d == "cpu" else detect_device(d) for d in devices]


def common_device(infos: Sequence[DeviceInfo], force: bool) -> DeviceInfo:
    """The one device record for the run; devices of different models are refused.

    Every latency is filed under one hardware label, so mixing, say, an A100
    and an H100 would make the table describe neither (``--force`` overrides).
    """
    names = list(dict.fromkeys(i.name for i in infos))
    if len(names) > 1:
        if not force:
            raise HadisError(
                f"--devices mixes {' and '.join(names)}, but one run records one kind of "
                "device; list devices of one model, or pass --force to record them together."
            )
        return DeviceInfo(infos[0].device, " + ".join(names), infos[0].driver, "mixed")
    return infos[0]


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


def _todo(
    store: Any, spec: Any, opts: RunOptions, label: str, n: int
) -> tuple[list[int], int, int]:
    """(latency batch sizes left, latency points done, prompts done) for one model."""
    lat_todo, lat_done = (
        _latency_todo(store, spec.name, label, opts.batch_sizes) if opts.latency else ([], 0)
    )
    done = len(store.done_prompts(spec.name, opts.images_per_prompt)) if opts.quality else n
    return lat_todo, lat_done, done


def estimate_costs(
    store: Any, zoo: Any, opts: RunOptions, label: str, n_prompts: int
) -> dict[str, float]:
    """model -> estimated seconds-ish of work left (see the module docstring); 0 when done."""
    images: dict[str, float] = {}
    b1: dict[str, float | None] = {}
    for spec in zoo:
        lat_todo, _, done = _todo(store, spec, opts, label, n_prompts)
        work = sum(lat_todo) * (opts.warmup + opts.reps) + (n_prompts - done) * (
            opts.images_per_prompt
        )
        images[spec.name] = float(work + (3 if opts.stages else 0))
        point = _stored_latency(store, spec.name, label).get(1)
        b1[spec.name] = None if point is None or point.infeasible else point.mean_s
    todo = [name for name, w in images.items() if w > 0]
    measured = bool(todo) and all(b1[name] for name in todo)
    costs: dict[str, float] = {}
    for spec in zoo:
        cfg = 2 if spec.guidance_scale > 1 else 1
        per_image = b1[spec.name] if measured else spec.steps * spec.height * spec.width * cfg
        costs[spec.name] = images[spec.name] * float(per_image or 0.0)
    return costs


# --------------------------------------------------------------------------- the parent


def profile_sharded(
    store: Any,
    zoo: Any,
    opts: RunOptions,
    label: str,
    infos: Sequence[DeviceInfo],
    base_dir: Path,
    prompts: list[str],
    report: RunReport,
    console: Any | None,
) -> list[ModelReport]:
    """Register the models, split them over one spawned worker per device, wait, report."""
    import multiprocessing as mp

    for spec in zoo:
        if store.upsert_model(spec.name, **spec.store_record()) and console is not None:
            console.print(
                f"{spec.name}: the spec changed since the last run; its old records are gone."
            )
    n = len(prompts)
    for spec in zoo:
        _, lat_done, done = _todo(store, spec, opts, label, n)
        report.units_skipped += lat_done + (done if opts.quality else 0)
    shares = divide_work(estimate_costs(store, zoo, opts, label, n), len(infos))
    threads = worker_threads([i.device for i in infos], opts.threads)
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs: dict[int, Any] = {}
    results: dict[str, tuple[float | None, list[str]]] = {}
    finished = False
    with _sigterm_interrupts():
        try:
            for w, (info, share) in enumerate(zip(infos, shares, strict=True)):
                if not share:
                    continue
                specs = [zoo.get(name) for name in share]
                args = (w, info, specs, opts, label, base_dir, prompts, threads, q)
                proc = ctx.Process(target=_worker, args=args, name=f"hadis-worker-{w}", daemon=True)
                proc.start()
                procs[w] = proc
            with ProgressBoard(console) as progress:
                _supervise(procs, infos, q, progress, report, results)
            finished = True
        finally:
            _stop(list(procs.values()), wait=finished)
            q.close()
    out = []
    for spec in zoo:
        load_s, warnings = results.get(spec.name, (None, []))
        m = ModelReport(
            spec.name,
            spec.steps,
            prompts_total=n if opts.quality else 0,
            load_s=load_s,
            warnings=list(warnings),
        )
        m.latency = _stored_latency(store, spec.name, label)
        m.prompts_done = (
            len(store.done_prompts(spec.name, opts.images_per_prompt)) if opts.quality else 0
        )
        out.append(m)
    return out


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


def _supervise(
    procs: dict[int, Any],
    infos: Sequence[DeviceInfo],
    q: Any,
    progress: ProgressBoard,
    report: RunReport,
    results: dict[str, tuple[float | None, list[str]]],
) -> None:
    """Relay the workers' messages until all are done; the first failure raises."""
    bars: dict[tuple[int, int], int | None] = {}
    current: dict[int, str | None] = dict.fromkeys(procs)
    finished: set[int] = set()
    devices = [i.device for i in infos]
    names = [d if devices.count(d) == 1 else f"{d}#{w}" for w, d in enumerate(devices)]

    def handle(msg: tuple) -> None:
        kind, w = msg[0], msg[1]
        dev = names[w]
        if kind == "model":
            current[w] = msg[2]
        elif kind == "task":
            bars[(w, msg[2])] = progress.task(f"{dev} {msg[3]}", msg[4])
        elif kind == "advance":
            progress.advance(bars.get((w, msg[2])), msg[3])
        elif kind == "log":
            progress.log(f"{dev}: {msg[2]}")
        elif kind == "result":
            results[msg[2]] = (msg[3], msg[4])
            report.units_done += msg[5]
        elif kind == "done":
            finished.add(w)
        elif kind == "error":
            raise HadisError(_failure(dev, msg[2] or current[w], msg[3]))

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
            if w not in finished:
                raise HadisError(
                    _failure(names[w], current[w], f"the process exited with code {p.exitcode}")
                )


def _failure(device: str, model: str | None, detail: str) -> str:
    where = f"while profiling {model}" if model else "before its first model"
    detail = " ".join(detail.split()).rstrip(".")
    return (
        f"The worker on {device} failed {where}: {detail}; the other workers were "
        "stopped and every finished unit is saved, so rerunning the same command resumes."
    )


def _stop(procs: list[Any], wait: bool = False) -> None:
    """SIGTERM the live workers, give them time to roll back, then kill what is left.

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
    """Raised in a worker by SIGTERM, so ``store.transaction`` rolls back on the way out."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise _Terminated


class _QueueProgress:
    """The worker's stand-in for a ``ProgressBoard``: the parent draws the bars."""

    def __init__(self, q: Any, worker: int) -> None:
        self.q, self.worker, self._n = q, worker, 0

    def task(self, description: str, total: int) -> int:
        self._n += 1
        self.q.put(("task", self.worker, self._n, description, total))
        return self._n

    def advance(self, task: int | None, n: int = 1) -> None:
        self.q.put(("advance", self.worker, task, n))

    def log(self, text: str) -> None:
        self.q.put(("log", self.worker, text))


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    if not isinstance(e, HadisError):
        text = f"{type(e).__name__}: {text}" if text else type(e).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _worker(
    w: int,
    info: DeviceInfo,
    specs: list[Any],
    opts: RunOptions,
    label: str,
    base_dir: Path,
    prompts: list[str],
    threads: int,
    q: Any,
) -> None:
    """Profile ``specs`` on ``info.device``; every outcome is reported through ``q``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _on_sigterm)
    model: str | None = None
    try:
        from hadis_profile.measure.pipelines import configure_hub

        configure_hub(opts.online)
        import torch

        from hadis_profile.measure.profiler import build_quality_tools
        from hadis_profile.store import RunStore

        torch.set_num_threads(threads)
        if info.device.startswith("cuda"):
            torch.cuda.set_device(torch.device(info.device))
        tools = (
            build_quality_tools(opts, info.device) if opts.quality else QualityTools([], None, [])
        )
        progress = _QueueProgress(q, w)
        with RunStore.open(opts.out) as store:
            for spec in specs:
                model = spec.name
                q.put(("model", w, model))
                mine = RunReport(Path(opts.out), label, info.device, info.name, [])
                m = _profile_model(
                    store,
                    spec,
                    opts,
                    tools,
                    info,
                    label,
                    base_dir,
                    prompts,
                    mine,
                    progress,
                    register=False,
                )
                q.put(("result", w, model, m.load_s, m.warnings, mine.units_done))
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # nothing left to roll back
        q.put(("done", w))
    except _Terminated:
        q.cancel_join_thread()  # the parent stopped reading; do not block on exit
    except BaseException as e:
        q.put(("error", w, model, _one_line(e)))
        raise SystemExit(1) from None
