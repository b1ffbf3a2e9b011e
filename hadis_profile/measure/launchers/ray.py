"""``run --launcher ray``: the run's units on a Ray cluster, one worker actor per GPU.

* **One writer**: this process (the driver) plans the units the store lacks
  (:func:`~hadis_profile.measure.units.plan_units`: each model's latency sweep
  per hardware label, then its prompt chunks), hands them to workers, and
  commits every result through the run's recorder as it arrives, exactly as the
  local launchers do. Workers never open the store (SQLite wants one writer on
  local disk), so they need no shared filesystem: results come back as plain
  data (latency points with their raw samples, scores, confidences, feature
  vectors, PNG bytes with ``save_images``). Killing the driver loses only the
  units in flight; rerunning resumes from the store.
* **Workers**: an actor per GPU of the cluster (``num_gpus=1``; or per unit of a
  custom resource, whose workers run on the CPU and take the resource's name as
  their device name: how tests and CPU clusters stand in for GPU types). A
  worker (:mod:`.ray_worker`) loads the run's scorers once, then one model at a
  time, and keeps taking units of the model it holds until none remain, so a
  model is loaded once per worker, not once per unit. Results stream back unit
  by unit through a Ray generator.
* **Scheduling**: an idle worker takes, in order of preference, a unit of the
  model it holds, a latency sweep for its own label, a model no other worker
  holds, the model with the most units left. A model's prompt chunks wait for
  its sweep on the worker's label, because the sweep picks the generation batch
  (so the images are those an in-process run makes) and its out-of-memory point
  bounds it. Sweeps are never split: an out-of-memory point stops the batch
  from growing.
* **Several GPU types**: each worker reports its device; its hardware label
  comes from ``gpu`` (a label, or a ``DEVICE NAME=LABEL`` mapping) or is derived
  from the device name, and a label that would mix two device names is refused
  (:func:`~hadis_profile.measure.devices.worker_labels`). Every model is swept
  on every label; prompts are measured once, by whichever worker is free.
* **Failure**: a worker whose process or node dies is restarted by Ray
  (``max_restarts``); the driver puts what its unit had not yet returned back
  in the queue, and the restarted worker (or any other) takes it. A unit whose
  worker died under it :data:`UNIT_ATTEMPTS` times gives its model up, as does a
  model error (a failed load, a phase that raised): the model is reported and
  the others go on. A worker that cannot come back leaves its units to the
  others; with none left the run stops, everything returned so far committed.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from hadis_profile.errors import HadisError
from hadis_profile.measure.devices import DeviceInfo
from hadis_profile.measure.job import one_line
from hadis_profile.measure.launchers import Launcher, RunContext
from hadis_profile.measure.units import ModelWork, stored_latency

#: Times a unit may lose its worker before its model is given up.
UNIT_ATTEMPTS = 3
#: How often Ray restarts a worker whose process died.
ACTOR_RESTARTS = 4
#: Seconds to wait for workers to start before the run begins with those that did.
START_WAIT_S = 300.0
_POLL_S = 0.5


def ray_module() -> Any:
    """``import ray``, or one sentence saying how to install it."""
    try:
        import ray
    except ImportError:
        raise HadisError("The Ray launcher needs Ray: pip install 'hadis-profile[ray]'.") from None
    return ray


# --------------------------------------------------------------------------- the driver


@dataclass
class Worker:
    """The driver's view of one worker actor."""

    index: int
    resource: str
    handle: Any
    info: DeviceInfo | None = None
    host: str = ""
    libraries: dict = field(default_factory=dict)
    label: str = ""
    name: str = ""
    model: str | None = None  # the model it holds loaded
    state: str = "starting"  # starting, idle, busy, restarting, gone
    pending: Any = None  # the describe() call of a starting or restarting worker
    retry_at: float = 0.0  # when to ask a restarting worker again

    def take(self, described: dict) -> None:
        self.info = described["info"]
        self.host = described["host"]
        self.libraries = described["libraries"]
        self.model = None  # a (re)started process holds nothing


@dataclass
class _Flight:
    """A unit on a worker, and what of it has come back."""

    unit: ModelWork
    gen: Any
    sizes: set = field(default_factory=set)
    prompts: set = field(default_factory=set)
    stages: bool = False
    oom: bool = False
    failed: bool = False

    def rest(self) -> ModelWork | None:
        """What the unit still had to do when its worker was lost (None: nothing)."""
        u = self.unit
        sizes = () if self.oom else tuple(b for b in u.batch_sizes if b not in self.sizes)
        ids = tuple(i for i in u.prompt_ids if i not in self.prompts)
        stages = u.stages and not self.stages
        if not (sizes or ids or stages):
            return None
        return replace(u, batch_sizes=sizes, prompt_ids=ids, stages=stages)


def _is_sweep(u: ModelWork) -> bool:
    return bool(u.batch_sizes or u.stages)


def _unit_key(u: ModelWork) -> tuple:
    """What a retried unit is counted under: a sweep per label; a chunk by its first prompt
    left (a prompt that kills every worker it meets is given up after a few)."""
    return (u.name, u.label, "sweep") if _is_sweep(u) else (u.name, u.prompt_ids[:1])


class RayLauncher(Launcher):
    """Workers on a Ray cluster; see the module docstring.

    ``address``: None joins the local Ray instance or starts one (``auto`` and
    ``ray://host:port`` as :func:`ray.init` takes them); an already connected
    process (a test) keeps its connection. ``resources``: what each worker takes
    one of (default ``["GPU"]``). ``threads``: torch threads per worker.
    """

    def __init__(
        self,
        address: str | None = None,
        resources: Sequence[str] | None = None,
        threads: int | None = None,
    ) -> None:
        self.address = address
        self.resources = list(resources or ["GPU"])
        self.threads = threads
        self.workers: list[Worker] = []
        self._owned = False
        self._labeler: Callable[[Sequence[DeviceInfo]], list[str]] | None = None

    # ----------------------------------------------------------------- start and stop

    def start(
        self,
        ctx: RunContext,
        labeler: Callable[[Sequence[DeviceInfo]], list[str]],
        max_workers: int | None = None,
        log: Callable[[str], None] = lambda text: None,
    ) -> list[Worker]:
        """Connect, start one worker per resource unit (at most ``max_workers``), and label
        the workers that start (``labeler``: device records -> labels)."""
        ray = ray_module()
        if not ray.is_initialized():
            ray.init(address=self.address, log_to_driver=False)
            self._owned = True
        self._labeler = labeler
        have = ray.cluster_resources()
        slots = [(r, int(have.get(r, 0))) for r in self.resources]
        if not any(n for _, n in slots):
            listed = ", ".join(sorted(k for k in have if not k.startswith("node:"))) or "none"
            raise HadisError(
                f"The Ray cluster has no {' or '.join(self.resources)} to run workers on "
                f"(it has {listed})."
            )
        from hadis_profile.measure.launchers.ray_worker import RayWorker

        cls = ray.remote(RayWorker)
        budget = max_workers if max_workers is not None else sum(n for _, n in slots)
        for resource, n in slots:
            for _ in range(min(n, budget - len(self.workers))):
                options: dict[str, Any] = {"max_restarts": ACTOR_RESTARTS, "max_task_retries": 0}
                if resource == "GPU":
                    options["num_gpus"] = 1
                else:
                    options["resources"] = {resource: 1}
                handle = cls.options(**options).remote(ctx, resource, self.threads)
                w = Worker(len(self.workers), resource, handle)
                w.pending = handle.describe.remote()
                self.workers.append(w)
        log(f"Starting {len(self.workers)} Ray worker{'s' if len(self.workers) > 1 else ''}.")
        errors = self._await_start(ray)
        started = [w for w in self.workers if w.state == "idle"]
        if not started:
            raise HadisError(
                f"No Ray worker started: {errors[0] if errors else 'none was placed'}."
            )
        for text in errors:
            log(f"A Ray worker did not start ({text}); the others go on.")
        labels = labeler([w.info for w in started])  # type: ignore[misc]
        hosts = [w.host for w in started]
        for w, label in zip(started, labels, strict=True):
            w.label = label
            w.name = w.host if hosts.count(w.host) == 1 else f"{w.host}#{w.index}"
        return started

    def _await_start(self, ray: Any) -> list[str]:
        """Wait until every worker described itself or failed (at most START_WAIT_S once
        one has started); the errors of those that failed."""
        errors: list[str] = []
        deadline = None
        waiting = {w.pending: w for w in self.workers}
        while waiting:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _ = ray.wait(list(waiting), num_returns=1, timeout=timeout)
            if not ready:  # the rest are still not placed: go on without them
                for w in waiting.values():
                    ray.kill(w.handle, no_restart=True)
                    w.state, w.pending = "gone", None
                break
            w = waiting.pop(ready[0])
            try:
                w.take(ray.get(ready[0]))
                w.state = "idle"
                deadline = deadline or time.monotonic() + START_WAIT_S
            except Exception as e:
                errors.append(_cause(e))
                w.state = "gone"
            w.pending = None
        return errors

    def close(self) -> None:
        """Stop every worker (freeing its GPU) and leave a Ray instance this started.

        A worker Ray was restarting is asked once more after the kill: one whose
        restart outran the kill answers, and is killed again.
        """
        if not self.workers and not self._owned:
            return
        ray = ray_module()
        for w in self.workers:
            with contextlib.suppress(Exception):  # already dead
                ray.kill(w.handle, no_restart=True)
        for w in self.workers:
            if w.state == "restarting":
                with contextlib.suppress(Exception):  # dead, as it should be
                    ray.get(w.handle.describe.remote(), timeout=START_WAIT_S)
                    ray.kill(w.handle, no_restart=True)
            w.state, w.pending = "gone", None
        if self._owned:
            ray.shutdown()
            self._owned = False

    # ----------------------------------------------------------------- the run

    def run(self, works: Sequence[ModelWork], ctx: RunContext, recorder: Any) -> None:
        _Schedule(self, list(works), recorder).run()


class _Schedule:
    """One run's units on the launcher's workers (see the module docstring)."""

    def __init__(self, launcher: RayLauncher, units: list[ModelWork], recorder: Any) -> None:
        self.ray = ray_module()
        self.launcher, self.recorder = launcher, recorder
        self.pending = [u for u in units if not u.empty]
        self.flights: dict[int, _Flight] = {}
        self.attempts: dict[tuple, int] = {}
        self.failed: set[str] = set()
        self.known: dict[tuple[str, str], dict] = {}
        self.labels = sorted({w.label for w in launcher.workers if w.state == "idle"})
        self._recorders = {label: recorder.for_label(label) for label in self.labels}
        self._nodes: dict[str, Any] = {}
        progress = recorder.progress
        for name in dict.fromkeys(u.name for u in self.pending):  # one bar per model and phase
            mine = [u for u in self.pending if u.name == name]
            recorder.begin(
                ModelWork(
                    mine[0].spec,
                    tuple(b for u in mine for b in u.batch_sizes),
                    tuple(i for u in mine for i in u.prompt_ids),
                )
            )
        for w in launcher.workers:
            if w.state == "idle" and w.host not in self._nodes:
                self._nodes[w.host] = progress.task(f"node {w.host}: units", None)

    @property
    def workers(self) -> list[Worker]:
        return self.launcher.workers

    def run(self) -> None:
        ray = self.ray
        while self.pending or self.flights:
            self._dispatch()
            now = time.monotonic()
            restarting = [w for w in self.workers if w.state == "restarting"]
            for w in restarting:
                if w.pending is None and now >= w.retry_at:
                    w.pending = w.handle.describe.remote()
            waiting = {f.gen: i for i, f in self.flights.items()}
            waiting.update({w.pending: w.index for w in restarting if w.pending is not None})
            if not waiting:
                if restarting:  # a worker Ray is bringing back may take what is left
                    time.sleep(_POLL_S)
                    continue
                self._strand()  # nothing runs and nothing can: no worker fits what is left
                return
            ready, _ = ray.wait(list(waiting), num_returns=1, timeout=_POLL_S)
            for ref in ready:
                w = self.workers[waiting[ref]]
                if w.state == "restarting":
                    self._restarted(w)
                else:
                    self._step(w)

    # ----------------------------------------------------------------- choosing

    def _eligible(self, u: ModelWork, w: Worker) -> bool:
        if u.name in self.failed:
            return False
        if _is_sweep(u):
            return u.label == w.label
        # A chunk waits for its model's sweep on this worker's label (the generation batch).
        return not any(
            _is_sweep(v) and v.name == u.name and v.label == w.label
            for v in [*self.pending, *(f.unit for f in self.flights.values())]
        )

    def _dispatch(self) -> None:
        for w in self.workers:
            if w.state != "idle" or not self.pending:
                continue
            held = [x.model for x in self.workers if x is not w and x.state == "busy"]
            left: dict[str, int] = {}
            for u in self.pending:
                left[u.name] = left.get(u.name, 0) + u.units
            options = [(i, u) for i, u in enumerate(self.pending) if self._eligible(u, w)]
            if not options:
                continue
            i, u = min(
                options,
                key=lambda o: (
                    o[1].name != w.model,
                    not _is_sweep(o[1]),
                    held.count(o[1].name),
                    -left[o[1].name],
                    o[0],
                ),
            )
            del self.pending[i]
            self._send(w, u)

    def _send(self, w: Worker, u: ModelWork) -> None:
        store = self.recorder.store
        if _is_sweep(u):
            u = replace(u, latency=stored_latency(store, u.name, w.label))
        else:  # one latency snapshot per (model, label): every chunk picks the same batch
            key = (u.name, w.label)
            if key not in self.known:
                self.known[key] = stored_latency(store, u.name, w.label)
            u = replace(u, latency=self.known[key], label=w.label)
        self.flights[w.index] = _Flight(u, w.handle.run.remote(u))
        w.state, w.model = "busy", u.name

    # ----------------------------------------------------------------- results

    def _step(self, w: Worker) -> None:
        """Take the next event of ``w``'s unit (or its end, or its worker's loss)."""
        flight = self.flights[w.index]
        try:
            ref = next(flight.gen)
        except StopIteration:
            del self.flights[w.index]
            w.state = "idle"
            return
        try:
            event = self.ray.get(ref)
        except _lost_errors(self.ray) as e:
            self._lost(w, flight, f"its process or node died: {type(e).__name__}")
            return
        except Exception as e:  # the generator itself broke: the unit's model fails
            event = ("failed", flight.unit.name, "profiling", _cause(e))
        self._handle(w, flight, event)

    def _handle(self, w: Worker, flight: _Flight, event: tuple) -> None:
        kind, rec = event[0], self._recorders[w.label]
        if kind == "loaded":
            rec.loaded(*event[1:])
        elif kind == "latency":
            point = event[2]
            rec.latency(event[1], point)
            flight.sizes.add(point.stats.batch_size)
            flight.oom = flight.oom or point.infeasible
            self._tick(w)
        elif kind == "samples":
            rec.samples(*event[1:])
        elif kind == "stages":
            rec.stages(*event[1:])
            flight.stages = True
        elif kind == "prompt":
            rec.prompt(event[1])
            flight.prompts.add(event[1].prompt_id)
            self._tick(w)
        elif kind == "log":
            rec.log(f"{w.name}: {event[1]}")
        elif kind == "failed":
            model, phase, detail = event[1:]
            flight.failed = True
            w.model = None  # the worker unloads a model that failed
            self._fail(model, phase, detail, w.name)

    def _tick(self, w: Worker) -> None:
        self.recorder.progress.advance(self._nodes.get(w.host))

    def _fail(self, model: str, phase: str, detail: str, where: str) -> None:
        """Give ``model`` up: reported once, its units left in the queue dropped."""
        if model in self.failed:
            return
        self.failed.add(model)
        self.pending = [u for u in self.pending if u.name != model]
        self.recorder.failed(model, phase, detail, where=where)

    def _lost(self, w: Worker, flight: _Flight, why: str) -> None:
        """``w``'s process died under a unit: requeue the rest and wait for Ray's restart."""
        del self.flights[w.index]
        rest = flight.rest()
        self.recorder.log(
            f"Ray worker {w.name} was lost ({why}); Ray restarts it, and "
            + ("its unfinished units go back in the queue." if rest else "nothing was lost.")
        )
        if rest is not None and rest.name not in self.failed:
            key = _unit_key(flight.unit)
            self.attempts[key] = self.attempts.get(key, 0) + 1
            if self.attempts[key] >= UNIT_ATTEMPTS:
                self._fail(
                    rest.name,
                    "profiling",
                    f"its Ray worker died {UNIT_ATTEMPTS} times while measuring it",
                    w.name,
                )
            else:
                self.pending.insert(
                    0, replace(rest, label=flight.unit.label if _is_sweep(rest) else None)
                )
        w.state, w.model = "restarting", None
        w.pending = w.handle.describe.remote()

    def _restarted(self, w: Worker) -> None:
        ref, w.pending = w.pending, None
        try:
            w.take(self.ray.get(ref))
        except _unavailable(self.ray):  # still restarting: ask again soon
            w.retry_at = time.monotonic() + _POLL_S
            return
        except Exception as e:
            w.state = "gone"
            self.recorder.log(f"Ray worker {w.name} is gone ({_cause(e)}); the others go on.")
            return
        try:
            label = self.launcher._labeler([w.info])[0]  # type: ignore[misc]
        except HadisError:  # its device would share a label with another kind
            label = ""
        if label not in self._recorders:  # restarted on a kind of device this run has no plan for
            self.ray.kill(w.handle, no_restart=True)
            w.state = "gone"
            self.recorder.log(f"Ray worker {w.name} came back on a {w.info.name}; it is left out.")
            return
        w.label, w.state = label, "idle"
        if w.host not in self._nodes:
            self._nodes[w.host] = self.recorder.progress.task(f"node {w.host}: units", None)

    def _strand(self) -> None:
        """Units no live worker can take: their models are reported as failed."""
        live = sorted({w.label for w in self.workers if w.state != "gone"})
        for u in list(self.pending):
            if not live:
                why = "no Ray worker is left"
            elif _is_sweep(u):
                why = f"no live Ray worker has hardware label '{u.label}'"
            else:
                why = "no live Ray worker can take its prompts"
            self._fail(u.name, "scheduling", why, "")
        self.pending.clear()


def _lost_errors(ray: Any) -> tuple:
    """The errors that mean a worker (or the node holding its result) went away."""
    ex = ray.exceptions
    return (ex.RayActorError, *(getattr(ex, n) for n in ("ObjectLostError",) if hasattr(ex, n)))


def _unavailable(ray: Any) -> Any:
    """Ray's "restarting, try again" error (older Rays queue such calls instead)."""
    return getattr(ray.exceptions, "ActorUnavailableError", ())


def _cause(e: BaseException) -> str:
    """A Ray error as one line: the worker's own exception where there is one (a worker
    whose start-up raised only sends its traceback as text: its last line)."""
    cause = getattr(e, "cause", None)
    if isinstance(cause, BaseException):
        return one_line(cause)
    lines = [x for x in str(getattr(e, "error_msg", None) or e).splitlines() if x.strip()]
    last = re.match(r"^([\w.]*(?:Error|Exception)): (.+)$", lines[-1].strip()) if lines else None
    if last is not None:
        name = last.group(1).rsplit(".", 1)[-1]
        ours = name in ("HadisError", "InputError", "ParameterError")
        text = last.group(2) if ours else f"{name}: {last.group(2)}"
    else:
        text = f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__
    text = text.rstrip(".")
    return text if len(text) <= 300 else text[:297] + "..."
