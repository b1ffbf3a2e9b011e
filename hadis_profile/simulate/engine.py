"""The discrete-event simulation of one policy on a GPU cluster.

Model (p99 batch latency, the default, is resolve's own statistic: the
simulation checks the plan's promises against the numbers they were made with,
so any gap comes from the workload, not from a different service-time model):

* Each of ``gpus`` workers holds one model and serves FIFO batches from that
  model's queue: whatever is queued, up to the assignment's batch cap, with no
  batching delay. A batch of k queries lasts the profiled latency (the chosen
  statistic, p99 by default like resolve) of the smallest profiled batch size
  >= k, so service is deterministic.
* Routing is per prompt, from the run's measurements: router score >= threshold
  goes straight to heavy; otherwise light, then heavy when the light model's
  measured confidence for that prompt is < the confidence threshold. The
  decision uses the assignment in force when the query is dispatched.
* Demand is an EWMA of arrivals counted per 1 s tick, warm-started with the
  mean rate of the first re-plan interval (an operator's prior). At the first
  tick of every ``replan_s`` interval the policy decides again and workers are
  reassigned, keeping as many on their model as possible. A reassigned worker
  finishes its batch first, then serves nothing for ``switch_s``.
* A new routing applies to every query that has not started service: queued
  first-stage queries are routed again, oldest first. A query waiting for its
  escalation keeps its heavy model while that has GPUs; otherwise it goes to
  the new plan's most expensive model if that beats the light model that
  served it, else it completes with the light image.
* A query still waiting ``drop_factor x SLO`` after it arrived is dropped when
  it reaches the head of a queue (HADIS's rule; ``None`` never drops).

The loop is event-driven (heapq for batch completions and switches; arrivals
from a sorted array; ticks by time), in plain Python lists for speed.
"""

from __future__ import annotations

import heapq
import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from hadis_profile.simulate.policies import Assignment, Context, Policy

WAITING, SERVED, DROPPED = 0, 1, 2
IDLE, BATCH, SWITCHING, UNASSIGNED = 0, 1, 2, 3
TICK_S = 1.0


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
    ticks: list[tuple[float, float]]  # (time, EWMA qps)
    decisions: list[dict] = field(default_factory=list)
    wall_s: float = 0.0


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
    ) -> None:
        self.ctx, self.policy = ctx, policy
        self.arr, self.prompt = arrivals, prompts
        n, M, G = len(arrivals), len(ctx.models), ctx.gpus
        self.replan_s, self.switch_cost = replan_s, switch_s
        self.drop_limit = math.inf if drop_factor is None else drop_factor * ctx.slo_s
        self.alpha, self.est = ewma_alpha, initial_qps
        self.fin = [math.nan] * n
        self.status = bytearray(n)
        self.served = [-1] * n
        self.qkey = [-1] * n
        self.stage = bytearray(n)  # 0: first stage, 1: waiting for escalation
        self.esc = [None] * n  # (confidence threshold, heavy) of the plan it was dispatched under
        self.lightm = [-1] * n
        self.escalated = bytearray(n)
        self.queues: list[deque[int]] = [deque() for _ in range(M)]
        self.idle: list[list[int]] = [[] for _ in range(M)]
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
        # batch duration by number taken: latency of the smallest profiled size >= k
        self.dur: list[list[float]] = []
        for pts in ctx.lat:
            top = max(pts)
            sizes = sorted(pts)
            row = [0.0] * (top + 1)
            for k in range(1, top + 1):
                row[k] = pts[next(b for b in sizes if b >= k)]
            self.dur.append(row)
        self.asg: Assignment | None = None
        self.rr: list[float] = []
        self.ticks: list[tuple[float, float]] = []
        self.decisions: list[dict] = []

    # ------------------------------------------------------------------ routing

    def dispatch(self, q: int, now: float) -> None:
        """Route a not-yet-served query under the assignment in force."""
        a = self.asg
        self.stage[q] = 0
        if a.mode == "split":
            # smooth weighted round robin: deterministic proportions
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
            self.enqueue(m, q, now)
            return
        self.qkey[q] = a.qkey
        h = a.heavy
        if h is not None:
            p = self.prompt[q]
            rt = a.router_threshold
            if rt is not None and self.scores[p] >= rt:
                self.esc[q] = None
                self.enqueue(h, q, now)
                return
            ct = a.confidence_threshold
            self.esc[q] = None if ct is None else (ct, h)
        else:
            self.esc[q] = None
        self.enqueue(a.light, q, now)

    def enqueue(self, m: int, q: int, now: float) -> None:
        self.queues[m].append(q)
        idle = self.idle[m]
        if idle:
            self.start(idle.pop(), now)

    def escalate(self, q: int, m_light: int, heavy: int, now: float) -> None:
        """Send a light-served query on; if its heavy model has no GPUs now, re-route it."""
        self.stage[q] = 1
        self.lightm[q] = m_light
        self.escalated[q] = 1
        if self.asg.workers.get(heavy, 0) > 0:
            self.enqueue(heavy, q, now)
            return
        top = max(self.asg.workers)
        if top > m_light:
            self.enqueue(top, q, now)
        else:  # nothing better is running: keep the light image
            self.escalated[q] = 0
            self.complete(q, m_light, now)
            self.qkey[q] = self.ctx.single_qkey(m_light)

    def complete(self, q: int, m: int, now: float) -> None:
        self.fin[q] = now
        self.status[q] = SERVED
        self.served[q] = m

    # ------------------------------------------------------------------ workers

    def start(self, w: int, now: float) -> None:
        """Worker ``w`` takes the next batch of its model's queue, or goes idle."""
        m = self.w_model[w]
        dq = self.queues[m]
        cap = self.asg.batch.get(m, 1)
        arr, limit = self.arr, self.drop_limit
        taken = []
        while dq and len(taken) < cap:
            q = dq.popleft()
            if now - arr[q] >= limit:
                self.status[q] = DROPPED
                self.fin[q] = now
                continue
            taken.append(q)
        if not taken:
            self.w_state[w] = IDLE
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
                self.escalate(q, m, e[1], now)
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
        """Move to a new assignment: queued queries first, then the workers.

        A new routing applies to every query that has not started: first-stage
        queries are routed again (oldest first); an escalation keeps its target
        while that model has GPUs. Workers stay on their model where possible.
        """
        old = self.asg
        self.asg = a
        self.rr = [0.0] * len(a.weights)
        G = self.ctx.gpus
        rerouted = old is not None and _routing(a) != _routing(old)
        first: list[int] = []
        lost_esc: list[tuple[int, int]] = []
        for m, dq in enumerate(self.queues):
            lost = a.workers.get(m, 0) == 0
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
            self.queues[m] = kept
        want = dict(a.workers)
        keep = [False] * G
        for w in range(G):
            m = self.w_next[w] if self.w_next[w] != -1 else self.w_model[w]
            if m >= 0 and want.get(m, 0) > 0:
                want[m] -= 1
                keep[w] = True
        deficit = [m for m in sorted(want) for _ in range(want[m])]
        for w in range(G):
            if keep[w]:
                continue
            m = deficit.pop(0) if deficit else -1
            if initial:
                self.w_model[w] = m
                continue
            state = self.w_state[w]
            if state == BATCH:  # finish the batch first
                self.w_next[w] = -1 if m == self.w_model[w] else m
                continue
            if state == IDLE:
                self.idle[self.w_model[w]].remove(w)
            self.switch(w, m, now)
        if initial:
            for w in range(G):
                if self.w_model[w] >= 0:
                    self.w_state[w] = IDLE
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
                }
            )

    # ------------------------------------------------------------------ loop

    def run(self) -> None:
        arr, n = self.arr, len(self.arr)
        self.apply(self.policy.plan(0.0, self.est), 0.0, initial=True)
        heap = self.heap
        next_tick, next_replan = TICK_S, self.replan_s
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
                self.est = self.alpha * (i - counted) / TICK_S + (1 - self.alpha) * self.est
                counted = i
                self.ticks.append((now, self.est))
                if now >= next_replan - 1e-9:
                    next_replan += self.replan_s
                    self.apply(self.policy.plan(now, self.est), now)
                else:
                    backlog = [len(dq) for dq in self.queues]
                    a = self.policy.tick(now, self.est, backlog, self.asg)
                    if a is not None:
                        self.apply(a, now)
                next_tick += TICK_S
                continue
            if t_ev <= t_arr:
                now, _, kind, w, data = heapq.heappop(heap)
                if kind == 0:
                    self.batch_done(w, data, now)
                elif data == self.w_ver[w]:
                    self.start(w, now)
            else:
                self.dispatch(i, t_arr)
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
) -> PolicyRun:
    """Simulate ``policy`` on the arrivals (sorted seconds) and mapped prompt indices."""
    t0 = time.perf_counter()
    if initial_qps is None:
        horizon = min(replan_s, float(arrivals[-1])) if len(arrivals) else replan_s
        initial_qps = float(np.count_nonzero(arrivals < horizon)) / max(horizon, 1e-9)
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
    )
