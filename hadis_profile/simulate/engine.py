"""The discrete-event simulation of one policy on a GPU cluster.

Model (p99 batch latency, the default, is resolve's own statistic: the
simulation checks the plan's promises against the numbers they were made with,
so any gap comes from the workload, not from a different service-time model):

* Each of ``gpus`` workers holds one model and serves FIFO batches: whatever is
  queued, up to the assignment's batch cap, with no batching delay. Queues are
  one per model (``dispatch="shared"``), or one per worker with each query sent
  to a uniformly random worker of its model (``"random"``, HADIS's load
  balancer). A batch of k queries lasts the profiled latency of the smallest
  profiled batch size >= k (``batch_time="ceil"``; ``"hadis-worker"`` is the
  authors' worker lookup, see :func:`batch_time_row`), plus ``batch_overhead_s``.
* Routing is per prompt, from the run's measurements: router score >= threshold
  goes straight to heavy; otherwise light, then heavy when the light model's
  measured confidence for that prompt is < the confidence threshold. The
  decision uses the assignment in force when the query is dispatched.
* Every ``tick_s`` the demand estimate is updated: ``demand="arrivals"`` is an
  EWMA of arrivals per tick (warm-started with the mean rate of the first
  re-plan interval, an operator's prior); ``"in-flight"`` is HADIS's controller,
  an EWMA (half-life 3 ticks, last 20 samples) of the queries in the system. At
  the first tick of every ``replan_s`` interval the policy decides again and
  workers are reassigned, keeping as many on their model as possible. A
  reassigned worker finishes its batch first, then serves nothing for ``switch_s``.
* A new routing applies to every query that has not started service: queued
  first-stage queries are routed again, oldest first. A query waiting for its
  escalation keeps its heavy model while that has GPUs; otherwise it goes to
  the new plan's most expensive model if that beats the light model that
  served it, else it completes with the light image.
* A query still waiting ``drop_factor x SLO`` after it arrived is dropped when
  it reaches the head of a queue (HADIS's rule; ``None`` never drops). With
  ``admission`` (HADIS's workers), a worker also drops a query whose time so far
  plus the batch's latency would exceed ``admission x SLO``.

The loop is event-driven (heapq for batch completions and switches; arrivals
from a sorted array; ticks by time), in plain Python lists for speed. It stops
with one sentence after :data:`~hadis_profile.limits.MAX_TICKS` ticks, so a
cluster that can never drain its queue (or a switch that lasts 10^300 s)
cannot loop for ever.
"""

from __future__ import annotations

import heapq
import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from hadis_profile.errors import HadisError
from hadis_profile.limits import MAX_TICKS
from hadis_profile.simulate.testbed import (
    EWMA_WINDOW,
    HALFLIFE_TICKS,
    Telemetry,
    batch_time_row,
    ewma_tail,
)

if TYPE_CHECKING:
    from hadis_profile.simulate.context import Assignment, Context
    from hadis_profile.simulate.policies import Policy

WAITING, SERVED, DROPPED = 0, 1, 2
IDLE, BATCH, SWITCHING, UNASSIGNED = 0, 1, 2, 3
DEMANDS = ("arrivals", "in-flight")
BATCH_TIMES = ("ceil", "hadis-worker")
DISPATCHES = ("shared", "random")


@dataclass
class PolicyRun:
    """Raw per-query outcome of one policy, plus its decisions over time."""

    policy: str
    arrival: np.ndarray  # seconds
    finish: np.ndarray  # seconds (served or dropped)
    status: np.ndarray  # SERVED / DROPPED
    model: np.ndarray  # final serving model index (-1: dropped)
    qkey: np.ndarray  # quality-row key (set-level values)
    prompt: np.ndarray
    escalated: np.ndarray  # bool: went light -> heavy
    busy_s: float
    switch_s: float
    switches: int
    ticks: list[tuple[float, float]]  # (time, demand estimate in qps)
    decisions: list[dict] = field(default_factory=list)
    wall_s: float = 0.0
    tick_models: list[list[int]] = field(default_factory=list)  # registrations per model
    tick_s: float = 1.0
    fid_accounting: str = "mix"  # how the HADIS authors would score its quality


def _routing(a: Assignment) -> tuple:
    return (a.mode, a.light, a.heavy, a.router_threshold, a.confidence_threshold, a.split)


class _Sim:
    """State of one run; methods are the event handlers."""

    def __init__(
        self,
        ctx: Context,
        policy: Policy,
        arrivals: list[float],
        prompts: list[int],
        *,
        replan_s: float,
        switch_s: float,
        drop_factor: float | None,
        ewma_alpha: float,
        initial_qps: float,
        tick_s: float,
        demand: str,
        admission: float | None,
        batch_overhead_s: float,
        batch_time: str,
        dispatch: str,
        seed: int,
    ) -> None:
        self.ctx, self.policy = ctx, policy
        self.arr, self.prompt = arrivals, prompts
        n, M, G = len(arrivals), len(ctx.models), ctx.gpus
        self.replan_s, self.switch_cost, self.tick_s = replan_s, switch_s, tick_s
        self.drop_limit = math.inf if drop_factor is None else drop_factor * ctx.slo_s
        self.admit = math.inf if admission is None else admission * ctx.slo_s
        self.no_admission = admission is None
        self.alpha, self.est = ewma_alpha, initial_qps
        self.in_flight_demand = demand == "in-flight"
        self.fin = [math.nan] * n
        self.status = bytearray(n)
        self.served = [-1] * n
        self.qkey = [-1] * n
        self.stage = bytearray(n)  # 0: first stage, 1: waiting for escalation
        self.esc = [None] * n  # (confidence threshold, heavy) of the plan it was dispatched under
        self.lightm = [-1] * n
        self.escalated = bytearray(n)
        self.random = dispatch == "random"
        # one uniform draw per query and stage: which worker serves it does not depend on
        # the order events happen in, and every policy sees the same draws
        self.u = np.random.default_rng(seed).random((n, 2)).tolist() if self.random else []
        # shared: one queue per model; random: one per worker, members[m] = workers on m
        self.queues: list[deque[int]] = [deque() for _ in range(G if self.random else M)]
        self.idle: list[list[int]] = [[] for _ in range(M)]
        self.members: list[list[int]] = [[] for _ in range(M)]
        # per worker: model (-1 none), state, model to switch to after its batch (-1 none),
        # version (a switch-done event for an older version is stale)
        self.w_model = [-1] * G
        self.w_state = [UNASSIGNED] * G
        self.w_next = [-1] * G
        self.w_ver = [0] * G
        self.heap: list = []
        self.seq = 0
        self.busy_s = self.switch_s = 0.0
        self.switches = 0
        self.scores = ctx.meas.router_scores
        self.scores = None if self.scores is None else self.scores.tolist()
        self.conf = [
            None
            if ctx.meas.models[m].confidence is None
            else ctx.meas.models[m].confidence.tolist()
            for m in ctx.models
        ]
        # batch duration by number taken (dur_est: without the per-batch overhead)
        self.dur_est = [batch_time_row(pts, batch_time) for pts in ctx.lat]
        self.dur = [[d + batch_overhead_s if k else 0.0 for k, d in enumerate(row)]
                    for row in self.dur_est]  # fmt: skip
        self.asg: Assignment | None = None
        self.rr: list[float] = []
        self.ticks: list[tuple[float, float]] = []
        self.decisions: list[dict] = []
        # HADIS's controller telemetry: queries in the system, registrations per model
        self.expire_after = self.drop_limit
        self.exp_ptr = self.served_live = self.expired = 0
        self.reg = [0] * M
        self.tick_models: list[list[int]] = []
        self.hist_total: list[float] = []
        self.hist_rate: list[list[float]] = [[0.0] for _ in range(M)]
        self.hist_queue: list[list[float]] = [[0.0] for _ in range(M)]
        self.h_alpha = 1.0 - 0.5 ** (1.0 / HALFLIFE_TICKS)
        # the controller's telemetry costs a little per tick; only its users pay for it
        self.track = self.in_flight_demand or bool(getattr(policy, "uses_telemetry", False))
        self.tel = Telemetry(tick_s, [0.0] * M, [0.0] * M)

    # ------------------------------------------------------------------ routing

    def dispatch(self, q: int, now: float, fresh: bool = False) -> None:
        """Route a not-yet-served query under the assignment in force."""
        a = self.asg
        self.stage[q] = 0
        if a.mode == "split":
            w = -1
            if self.random:  # HADIS's load balancer: a uniformly random worker of the plan
                ws = [w for m in a.split for w in self.members[m]]
                w = ws[int(self.u[q][0] * len(ws))]
                m = self.w_target(w)
            else:  # smooth weighted round robin: deterministic proportions
                rr, w = self.rr, a.weights
                best, bi = -math.inf, 0
                for k in range(len(w)):
                    rr[k] += w[k]
                    if rr[k] > best:
                        best, bi = rr[k], k
                rr[bi] -= 1.0
                m = a.split[bi]
            self.qkey[q] = self.ctx.single_qkey(m)
            self.esc[q] = None
            self.enqueue(m, q, now, fresh, w)
            return
        self.qkey[q] = a.qkey
        h = a.heavy
        if h is not None:
            p = self.prompt[q]
            rt = a.router_threshold
            if rt is not None and self.scores[p] >= rt:
                self.esc[q] = None
                if fresh:  # the router runs on the light model's worker (HADIS)
                    self.reg[a.light] += 1
                self.enqueue(h, q, now, fresh)
                return
            ct = a.confidence_threshold
            self.esc[q] = None if ct is None else (ct, h)
        else:
            self.esc[q] = None
        self.enqueue(a.light, q, now, fresh)

    def w_target(self, w: int) -> int:
        return self.w_next[w] if self.w_next[w] != -1 else self.w_model[w]

    def enqueue(self, m: int, q: int, now: float, fresh: bool = False, w: int = -1) -> None:
        if fresh:
            self.reg[m] += 1
        if self.random:
            if w < 0:
                mem = self.members[m]
                w = mem[int(self.u[q][self.stage[q]] * len(mem))]
            self.queues[w].append(q)
            if self.w_state[w] == IDLE:
                self.start(w, now)
            return
        self.queues[m].append(q)
        idle = self.idle[m]
        if idle:
            self.start(idle.pop(), now)

    def escalate(self, q: int, m_light: int, heavy: int, now: float, fresh: bool = False) -> None:
        """Send a light-served query on; if its heavy model has no GPUs now, re-route it."""
        self.stage[q] = 1
        self.lightm[q] = m_light
        self.escalated[q] = 1
        if self.asg.workers.get(heavy, 0) > 0:
            self.enqueue(heavy, q, now, fresh)
            return
        top = max(self.asg.workers)
        if top > m_light:
            self.enqueue(top, q, now, fresh)
        else:  # nothing better is running: keep the light image
            self.escalated[q] = 0
            self.complete(q, m_light, now)
            self.qkey[q] = self.ctx.single_qkey(m_light)

    def complete(self, q: int, m: int, now: float) -> None:
        self.fin[q] = now
        self.status[q] = SERVED
        self.served[q] = m
        if q >= self.exp_ptr:
            self.served_live += 1

    # ------------------------------------------------------------------ workers

    def start(self, w: int, now: float) -> None:
        """Worker ``w`` takes the next batch of its queue, or goes idle."""
        m = self.w_model[w]
        dq = self.queues[w] if self.random else self.queues[m]
        cap = self.asg.batch.get(m, 1)
        arr, limit = self.arr, self.drop_limit
        taken = []
        if self.no_admission:
            while dq and len(taken) < cap:
                q = dq.popleft()
                if now - arr[q] >= limit:
                    self.status[q] = DROPPED
                    self.fin[q] = now
                    continue
                taken.append(q)
        else:  # HADIS's worker: rounds of `cap` pops, dropping what would finish too late
            est, admit = self.dur_est[m], self.admit
            while dq and not taken:
                for _ in range(cap):
                    if not dq:
                        break
                    k = min(cap, len(taken) + len(dq))
                    q = dq.popleft()
                    waited = now - arr[q]
                    if waited >= limit or waited + est[k] > admit:
                        self.status[q] = DROPPED
                        self.fin[q] = now
                        continue
                    taken.append(q)
        if not taken:
            self.w_state[w] = IDLE
            if not self.random:
                self.idle[m].append(w)
            return
        d = self.dur[m]
        dur = d[len(taken)] if len(taken) < len(d) else d[-1]
        self.busy_s += dur
        self.w_state[w] = BATCH
        self.seq += 1
        heapq.heappush(self.heap, (now + dur, self.seq, 0, w, taken))

    def batch_done(self, w: int, taken: list[int], now: float) -> None:
        m = self.w_model[w]
        conf = self.conf[m]
        prompt, stage, esc = self.prompt, self.stage, self.esc
        for q in taken:
            e = esc[q]
            if e is not None and stage[q] == 0 and conf[prompt[q]] < e[0]:
                self.escalate(q, m, e[1], now, True)
            else:
                self.complete(q, m, now)
        nxt = self.w_next[w]
        if nxt != -1:
            self.w_next[w] = -1
            self.switch(w, nxt, now)
        else:
            self.start(w, now)

    def switch(self, w: int, m: int, now: float) -> None:
        """Load model ``m`` on worker ``w`` (-1: unassign); out for ``switch_s`` seconds."""
        self.w_ver[w] += 1
        self.w_model[w] = m
        if m < 0:
            self.w_state[w] = UNASSIGNED
            return
        self.switches += 1
        if self.switch_cost > 0:
            self.switch_s += self.switch_cost
            self.w_state[w] = SWITCHING
            self.seq += 1
            heapq.heappush(self.heap, (now + self.switch_cost, self.seq, 1, w, self.w_ver[w]))
        else:
            self.start(w, now)

    # ------------------------------------------------------------------ decisions

    def apply(self, a: Assignment, now: float, *, initial: bool = False) -> None:
        """Move to a new assignment: collect the queries to re-route, move workers, re-route.

        A new routing applies to every query that has not started: first-stage
        queries are routed again (oldest first); an escalation keeps its target
        while that model has GPUs. Workers stay on their model where possible.
        """
        old = self.asg
        self.asg = a
        self.rr = [0.0] * len(a.weights)
        G = self.ctx.gpus
        rerouted = old is not None and _routing(a) != _routing(old)
        # the model each worker will serve: keep as many as possible on theirs
        target = [self.w_target(w) for w in range(G)]
        want = dict(a.workers)
        new = [-1] * G
        for w in range(G):
            m = target[w]
            if m >= 0 and want.get(m, 0) > 0:
                want[m] -= 1
                new[w] = m
        deficit = [m for m in sorted(want) for _ in range(want[m])]
        for w in range(G):
            if new[w] == -1 and deficit:
                new[w] = deficit.pop(0)
        first: list[int] = []
        lost_esc: list[tuple[int, int]] = []
        for s, dq in enumerate(self.queues):
            m = target[s] if self.random else s
            lost = new[s] != m if self.random else a.workers.get(m, 0) == 0
            if not dq or not (rerouted or lost):
                continue
            kept: deque[int] = deque()
            for q in dq:
                if self.stage[q] == 0:
                    first.append(q)
                elif lost:
                    lost_esc.append((q, m))
                else:
                    kept.append(q)
            self.queues[s] = kept
        for w in range(G):
            m = new[w]
            if m == target[w]:
                continue
            if initial:
                self.w_model[w] = m
                continue
            state = self.w_state[w]
            if state == BATCH:  # finish the batch first
                self.w_next[w] = -1 if m == self.w_model[w] else m
                continue
            if state == IDLE and not self.random:
                self.idle[self.w_model[w]].remove(w)
            self.switch(w, m, now)
        self.members = [[] for _ in self.ctx.models]
        for w in range(G):
            if self.w_target(w) >= 0:
                self.members[self.w_target(w)].append(w)
        if initial:
            for w in range(G):
                if self.w_model[w] >= 0:
                    self.w_state[w] = IDLE
                    if not self.random:
                        self.idle[self.w_model[w]].append(w)
        for q in sorted(first):
            self.dispatch(q, now)
        for q, m in sorted(lost_esc):
            self.escalate(q, self.lightm[q], m, now)
        if (
            old is None
            or initial
            or (a.label, a.status, a.workers, a.batch)
            != (old.label, old.status, old.workers, old.batch)
        ):
            self.decisions.append(
                {
                    "time_s": now,
                    "estimated_qps": self.est,
                    "plan": a.label,
                    "status": a.status,
                    "row": a.row,
                    "r": a.r,
                    "d": a.d,
                    "gpus": {self.ctx.models[m]: n for m, n in sorted(a.workers.items())},
                    "batch": {self.ctx.models[m]: b for m, b in sorted(a.batch.items())},
                    "quality": dict(self.ctx.qrows[a.qkey]) if a.qkey >= 0 else {},
                }
            )

    # ------------------------------------------------------------------ control loop

    def backlog(self) -> list[int]:
        """Queries waiting per model."""
        if not self.random:
            return [len(dq) for dq in self.queues]
        out = [0] * len(self.ctx.models)
        for w, dq in enumerate(self.queues):
            if dq:
                out[self.w_target(w)] += len(dq)
        return out

    def tick(self, now: float, arrived: int, counted: int) -> None:
        """Update the demand estimate and the controller's telemetry at a tick."""
        self.tick_models.append(self.reg)
        if not self.track:
            self.reg = [0] * len(self.ctx.models)
            self.est = self.alpha * (arrived - counted) / self.tick_s + (1 - self.alpha) * self.est
            return
        arr, e, horizon = self.arr, self.exp_ptr, now - self.expire_after
        status = self.status
        while e < arrived and arr[e] < horizon:
            if status[e] != SERVED:
                self.expired += 1
            e += 1
        self.exp_ptr = e
        live = arrived - self.served_live - self.expired
        self.tel.in_flight = live
        if live > 0:  # the controller only updates its EWMAs while queries are in flight
            self.hist_total = [*self.hist_total, float(live)][-EWMA_WINDOW:]
            backlog = self.backlog()
            for m, (hr, hq) in enumerate(zip(self.hist_rate, self.hist_queue, strict=True)):
                hr.append(self.reg[m] / self.tick_s)
                hq.append(float(backlog[m]))
                if len(hr) > EWMA_WINDOW:
                    del hr[0], hq[0]
        self.reg = [0] * len(self.ctx.models)
        if self.in_flight_demand:
            if self.hist_total:
                self.est = ewma_tail(self.hist_total, self.h_alpha) / self.tick_s
        else:
            self.est = self.alpha * (arrived - counted) / self.tick_s + (1 - self.alpha) * self.est

    def telemetry(self) -> Telemetry:
        """The controller's per-model EWMAs as of the last tick (computed when a policy asks)."""
        a, tel = self.h_alpha, self.tel
        tel.model_rate = [ewma_tail(h, a) for h in self.hist_rate]
        tel.model_queue = [ewma_tail(h, a) for h in self.hist_queue]
        return tel

    def run(self) -> None:
        arr, n = self.arr, len(self.arr)
        self.apply(self.policy.plan(0.0, self.est, self.telemetry()), 0.0, initial=True)
        heap = self.heap
        next_tick, next_replan = self.tick_s, self.replan_s
        i = 0
        counted = 0
        while True:
            t_arr = arr[i] if i < n else math.inf
            if heap:
                t_ev = heap[0][0]
            elif i >= n:
                if not any(self.queues):
                    break
                self._strand(next_tick)
                if not heap:
                    break
                continue
            else:
                t_ev = math.inf
            t = t_arr if t_arr < t_ev else t_ev
            if next_tick <= t:
                now = next_tick
                self.tick(now, i, counted)
                counted = i
                self.ticks.append((now, self.est))
                if len(self.ticks) > MAX_TICKS:
                    raise HadisError(
                        f"The simulation of {self.policy.name} reached {MAX_TICKS:,} controller "
                        f"ticks ({now:,.6g} s) with queries still in the system, the limit of "
                        "one simulation: the cluster cannot drain this workload (add GPUs, "
                        "set a drop factor, or use a longer tick)."
                    )
                if now >= next_replan - 1e-9:
                    next_replan += self.replan_s
                    self.apply(self.policy.plan(now, self.est, self.telemetry()), now)
                else:
                    a = self.policy.tick(now, self.est, self.backlog(), self.asg)
                    if a is not None:
                        self.apply(a, now)
                next_tick += self.tick_s
                continue
            if t_ev <= t_arr:
                now, _, kind, w, data = heapq.heappop(heap)
                if kind == 0:
                    self.batch_done(w, data, now)
                elif data == self.w_ver[w]:
                    self.start(w, now)
            else:
                self.dispatch(i, t_arr, True)
                i += 1

    def _strand(self, now: float) -> None:
        """No event is left but queries wait: route them once more, then drop the rest."""
        waiting = sorted(q for dq in self.queues for q in dq)
        for dq in self.queues:
            dq.clear()
        for q in waiting:
            if self.stage[q] == 1:
                self.escalate(q, self.lightm[q], -1, now)
            else:
                self.dispatch(q, now)
        if not self.heap:
            for dq in self.queues:
                for q in dq:
                    self.status[q] = DROPPED
                    self.fin[q] = now
                dq.clear()


def run_policy(
    ctx: Context,
    policy: Policy,
    arrivals: np.ndarray,
    prompts: np.ndarray,
    *,
    replan_s: float = 50.0,
    switch_s: float = 0.0,
    drop_factor: float | None = 2.0,
    ewma_alpha: float = 0.2,
    initial_qps: float | None = None,
    tick_s: float = 1.0,
    demand: str = "arrivals",
    admission: float | None = None,
    batch_overhead_s: float = 0.0,
    batch_time: str = "ceil",
    dispatch: str = "shared",
    seed: int = 0,
) -> PolicyRun:
    """Simulate ``policy`` on the arrivals (sorted seconds) and mapped prompt indices.

    ``admission`` is a multiple of the SLO (HADIS's workers: 1.5); the policy's
    own ``admission_factor``, when set, replaces it (HADIS's Clipper-Heavy: 1.0).
    """
    t0 = time.perf_counter()
    if demand == "in-flight":
        initial_qps = 0.0  # HADIS's controller starts from no demand
    elif initial_qps is None:
        horizon = min(replan_s, float(arrivals[-1])) if len(arrivals) else replan_s
        initial_qps = float(np.count_nonzero(arrivals < horizon)) / max(horizon, 1e-9)
    own = getattr(policy, "admission_factor", None)
    if admission is not None and own is not None:
        admission = own
    sim = _Sim(
        ctx,
        policy,
        arrivals.tolist(),
        prompts.tolist(),
        replan_s=replan_s,
        switch_s=switch_s,
        drop_factor=drop_factor,
        ewma_alpha=ewma_alpha,
        initial_qps=initial_qps,
        tick_s=tick_s,
        demand=demand,
        admission=admission,
        batch_overhead_s=batch_overhead_s,
        batch_time=batch_time,
        dispatch=dispatch,
        seed=seed,
    )
    sim.run()
    return PolicyRun(
        policy=policy.name,
        arrival=np.asarray(arrivals, dtype=np.float64),
        finish=np.asarray(sim.fin, dtype=np.float64),
        status=np.frombuffer(bytes(sim.status), dtype=np.uint8).copy(),
        model=np.asarray(sim.served, dtype=np.int64),
        qkey=np.asarray(sim.qkey, dtype=np.int64),
        prompt=np.asarray(prompts, dtype=np.int64),
        escalated=np.frombuffer(bytes(sim.escalated), dtype=np.uint8).astype(bool),
        busy_s=sim.busy_s,
        switch_s=sim.switch_s,
        switches=sim.switches,
        ticks=sim.ticks,
        decisions=sim.decisions,
        wall_s=time.perf_counter() - t0,
        tick_models=sim.tick_models,
        tick_s=tick_s,
    )
