"""Named end-to-end scenarios; ``hadis-e1`` re-creates HADIS's end-to-end experiment.

E1 (the paper's Figure 7, ``run_E1.sh`` in qizhengyang98/HADIS) runs six systems
on 16 L40S workers against the Azure Functions trace scaled to 1-6.4 qps, with
a 60 s SLO. The testbed replays it ten times compressed (latencies and SLO x
0.1): ``maf_1to64qps.txt`` is that compressed trace, so we replay it with
arrival times x10 and everything else in the paper's units. The latency model is
the testbed's: the published batch-1 latencies, a batch of b > 1 costing
``b * base * 0.9``, plus 0.1 s of discriminator per batch.

Blocks (each a full :func:`~hadis_profile.simulate.run.simulate` call):

* ``authors``: the authors' six systems (``authors.AUTHORS_POLICIES``) under
  their testbed's rules: a 10 s controller tick (one second of the compressed
  clock), demand = the queries in flight, workers that drop a query they cannot
  finish within 1.5x SLO (1.0x for Clipper-Heavy), per-worker queues fed by a
  random load balancer, the worker's batch-time lookup.
* ``authors-arrival-demand``: the same, with demand = arrivals per tick (how the
  paper describes its estimator, not what the controller counts).
* ``ours``: our eight policies with our engine defaults on the same workload.
"""

from __future__ import annotations

import csv
import math
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

from hadis_profile.errors import HadisError, ParameterError
from hadis_profile.simulate.accounting import AuthorsAccounting, MixCurves, authors_accounting
from hadis_profile.simulate.authors import AUTHORS_POLICIES
from hadis_profile.simulate.policies import POLICIES
from hadis_profile.simulate.run import SimConfig, SimulationResult, simulate

SCENARIOS = ("hadis-e1",)
E1_TRACE = Path("traces") / "maf_1to64qps.txt"
E1_REFERENCE = Path("hadis-reference")
E1_BATCH_LATENCY = "linear:0.9"
E1_SUPERLINEAR = "scale:2=2.21,4=4.47"  # SD3.5 Large measured on an L40S (config.py)
E1_TIME_SCALE = 10.0  # the testbed's PROFILE_DRIVEN_TIME_SCALE is 0.1
E1_GPUS = 16
E1_SLO_S = 60.0
E1_REPLAN_S = 50.0
E1_DISCRIMINATOR_S = 0.1
E1_ADMISSION = 1.5
E1_BLOCKS = ("authors", "authors-arrival-demand", "ours")
#: the paper's abstract: "improves response quality by up to 35% while reducing
#: latency violation rates by 2.7-45x compared to state-of-the-art model serving systems"
PAPER_CLAIMS = {"violation_reduction_x": (2.7, 45.0), "quality_gain": 0.35}
#: system -> (the authors' variant, our policy)
E1_SYSTEMS = {
    "Clipper-Light": ("clipper-light-fit", "clipper-light"),
    "Clipper-Heavy": ("clipper-heavy-fit", "clipper-heavy"),
    "INFaaS-Acc": ("infaas-acc", "infaas"),
    "Proteus": ("proteus-milp", "proteus"),
    "DiffServe": ("diffserve-fixed", "diffserve"),
    "HADIS": ("hadis-milp", "hadis"),
}


def e1_config(block: str) -> SimConfig:
    """The SimConfig of one E1 block, in paper units (seconds)."""
    ours = SimConfig(
        gpus=E1_GPUS,
        slo_s=E1_SLO_S,
        replan_s=E1_REPLAN_S,
        batch_overhead_s=E1_DISCRIMINATOR_S,
        window_s=E1_REPLAN_S,
    )
    if block == "ours":
        return ours
    authors = replace(
        ours,
        tick_s=E1_TIME_SCALE,  # the controller ticks once per compressed second
        demand="in-flight",
        admission=E1_ADMISSION,
        batch_time="hadis-worker",
        dispatch="random",
        planner_clock=1 / E1_TIME_SCALE,
    )
    if block == "authors":
        return authors
    if block == "authors-arrival-demand":
        return replace(authors, demand="arrivals", ewma_alpha=1 - 0.5 ** (1 / 3))
    raise ParameterError(
        "blocks", f"{{param}} names '{block}'; choose from {', '.join(E1_BLOCKS)}."
    )


@dataclass
class ScenarioResult:
    """Every block's simulation, the authors' accounting of each run, and the claims check."""

    name: str
    settings: dict
    blocks: dict[str, SimulationResult]
    accounting: dict[str, dict[str, AuthorsAccounting]]
    claims: dict[str, dict] = field(default_factory=dict)


def read_mix_curves(path: Path, n_models: int) -> MixCurves:
    """parse_logs.py's FID tables from the discriminator-only sweep (config_results.csv)."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        by_pair: dict[tuple[int, int], list[tuple[float, float]]] = {}
        for r in rows:
            key = (int(r["light_model"]), int(r["heavy_model"]))
            by_pair.setdefault(key, []).append((float(r["threshold"]), float(r["fid"])))
    except (OSError, KeyError, ValueError) as e:
        raise HadisError(f"Cannot read the discriminator-only sweep {path}: {e}.") from None
    pairs = {k: [v for _, v in sorted(pts)] for k, pts in by_pair.items()}
    if not pairs or any(len(v) != 11 for v in pairs.values()):
        raise HadisError(f"The sweep {path} must give 11 thresholds (0, 0.1, ..., 1) per pair.")
    single = {m: pairs[(m, m + 1)][0] for m in range(n_models - 1) if (m, m + 1) in pairs}
    if (n_models - 2, n_models - 1) in pairs:
        single[n_models - 1] = pairs[(n_models - 2, n_models - 1)][-1]
    if len(single) != n_models:
        raise HadisError(f"The sweep {path} lacks an adjacent pair of the {n_models} models.")
    return MixCurves.from_sweep(single, pairs)


def hadis_e1(
    data: str | Path,
    *,
    batch_latency: str = E1_BATCH_LATENCY,
    limit: int | None = None,
    blocks: tuple[str, ...] = ("authors", "ours"),
    seed: int = 0,
) -> ScenarioResult:
    """Run E1 on the reference data in ``data`` (the folder holding hadis-reference/, traces/).

    ``limit`` keeps the first N queries of the trace (a short CI run); ``seed``
    draws the random load balancer's choices (the authors' blocks);
    ``batch_latency`` replaces the testbed's batch model (see
    :func:`hadis_profile.importer.batch_latencies`), e.g. the super-linear
    :data:`E1_SUPERLINEAR` sensitivity check.
    """
    from hadis_profile.importer import import_hadis_reference
    from hadis_profile.pareto import compile_table
    from hadis_profile.simulate.workload import load_trace
    from hadis_profile.store import RunStore
    from hadis_profile.table import CascadeTable

    data = Path(data)
    for need in (data / E1_REFERENCE, data / E1_TRACE):
        if not need.exists():
            raise ParameterError("data", f"{{param}} {data} has no {need.relative_to(data)}.")
    configs = {b: replace(e1_config(b), seed=seed) for b in blocks}  # an unknown block first
    tmp = Path(tempfile.mkdtemp(prefix="hadis-e1-"))
    try:
        import_hadis_reference(data / E1_REFERENCE, tmp / "run", batch_latency=batch_latency)
        with RunStore.open(tmp / "run", readonly=True) as store:
            meas = store.load_measurements()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    # the authors' table: each adjacent pair's own Pareto front of their FID sweep
    table = CascadeTable.from_document(
        compile_table(meas, nominal=True, pairs="adjacent", per_pair=True)
    )
    workload = load_trace(data / E1_TRACE, limit=limit).time_scaled(E1_TIME_SCALE)
    curves = read_mix_curves(data / E1_REFERENCE / "config_results.csv", len(meas.models))
    metric = table.quality_metric
    worst = max(r["quality"][metric] for r in table.rows if r["quality"].get(metric) is not None)
    results, accounting = {}, {}
    for block, config in configs.items():
        names = AUTHORS_POLICIES if block.startswith("authors") else POLICIES
        res = simulate(table, meas, workload, list(names), config)
        results[block] = res
        accounting[block] = {
            run.policy: authors_accounting(
                run,
                slo_s=config.slo_s,
                expire_after_s=(config.drop_factor or math.inf) * config.slo_s,
                quality_metric=metric,
                worst_quality=worst,
                curves=curves,
                row_s=E1_TIME_SCALE,  # one second of the testbed's compressed clock
            )
            for run in res.runs
        }
    result = ScenarioResult(
        name="hadis-e1",
        settings={
            "data": str(data),
            "trace": str(E1_TRACE),
            "time_scale": E1_TIME_SCALE,
            "queries": len(workload),
            "limit": limit,
            "seed": seed,
            "batch_latency": batch_latency,
            "discriminator_s_per_batch": E1_DISCRIMINATOR_S,
            "gpus": E1_GPUS,
            "slo_s": E1_SLO_S,
            "replan_s": E1_REPLAN_S,
            "table_rows": len(table.rows),
            "paper_claims": PAPER_CLAIMS,
        },
        blocks=results,
        accounting=accounting,
    )
    result.claims = {block: claims(result, block) for block in results}
    return result


def claims(result: ScenarioResult, block: str) -> dict:
    """HADIS against each baseline: violation-ratio reduction (x-fold) and quality gain.

    Both accountings: ours (per query) and the authors' (per 50 s point, smoothed).
    The quality gain is (baseline - HADIS) / baseline for a lower-is-better metric;
    its peak is the largest gain at any one point of the authors' figure.
    """
    res = result.blocks[block]
    col = 0 if block.startswith("authors") else 1
    by_name = {s.policy: s for s in res.summaries}
    acc = result.accounting[block]
    metric = res.quality_metric
    sign = 1.0 if not res.higher_is_better[metric] else -1.0
    hadis = E1_SYSTEMS["HADIS"][col]
    if hadis not in by_name:
        return {}

    def fold(base: float, h: float) -> float | None:
        if h == 0:
            return None if base == 0 else math.inf
        return base / h

    def gain(base: float | None, h: float | None) -> float | None:
        if base is None or h is None or base == 0:
            return None
        return sign * (base - h) / abs(base)

    def peak(base: list[float], h: list[float]) -> float | None:
        """The largest gain at one point of the figure's (smoothed) quality curves."""
        n = min(len(base), len(h))
        gains = [gain(base[i], h[i]) for i in range(n)]
        return max((g for g in gains if g is not None), default=None)

    out: dict = {"hadis": hadis, "baselines": {}}
    h_s, h_a = by_name[hadis], acc[hadis]
    for system, pair in E1_SYSTEMS.items():
        name = pair[col]
        if system == "HADIS" or name not in by_name:
            continue
        s, a = by_name[name], acc[name]
        out["baselines"][system] = {
            "policy": name,
            "violation_reduction_x": fold(s.violation_ratio, h_s.violation_ratio),
            "violation_reduction_x_authors": fold(a.violation_ratio, h_a.violation_ratio),
            "quality_gain": gain(s.quality[metric], h_s.quality[metric]),
            "quality_gain_authors": gain(a.quality, h_a.quality),
            "peak_quality_gain_authors": peak(a.quality_curve, h_a.quality_curve),
        }
    gains = [v["quality_gain"] for v in out["baselines"].values() if v["quality_gain"] is not None]
    gains_a = [
        v["quality_gain_authors"]
        for v in out["baselines"].values()
        if v["quality_gain_authors"] is not None
    ]
    peaks = [
        v["peak_quality_gain_authors"]
        for v in out["baselines"].values()
        if v["peak_quality_gain_authors"] is not None
    ]
    out["best_quality_gain"] = max(gains, default=None)
    out["best_quality_gain_authors"] = max(gains_a, default=None)
    out["peak_quality_gain_authors"] = max(peaks, default=None)
    return out
