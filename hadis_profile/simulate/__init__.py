"""Replay a workload against a cascade table on a simulated GPU cluster.

Before a table and its resolver are deployed, check their promises (quality,
SLO, load, GPUs) under a realistic bursty workload, and compare the hybrid
cascade with simpler policies on the same workload and GPUs. Modules:
``workload`` (traces, Poisson ramps), ``policies`` (what each policy deploys),
``authors`` (the HADIS authors' E1 variants of each system), ``testbed`` (their
controller's and workers' mechanics), ``engine`` (the discrete-event
simulation), ``run`` (orchestration, summaries), ``accounting`` (the authors'
E1 metrics), ``scenarios`` (E1 end to end) and ``output`` (Rich table, CSVs,
figure; Rich/matplotlib imported lazily).
"""

from __future__ import annotations

from hadis_profile.simulate.authors import AUTHORS_POLICIES
from hadis_profile.simulate.policies import POLICIES
from hadis_profile.simulate.run import (
    ALL_POLICIES,
    PolicySummary,
    SimConfig,
    SimulationResult,
    simulate,
)
from hadis_profile.simulate.workload import Workload, load_trace, parse_rate, poisson_workload

__all__ = [
    "ALL_POLICIES",
    "AUTHORS_POLICIES",
    "POLICIES",
    "PolicySummary",
    "SimConfig",
    "SimulationResult",
    "Workload",
    "load_trace",
    "parse_rate",
    "poisson_workload",
    "simulate",
]
