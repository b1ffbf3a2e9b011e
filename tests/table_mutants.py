"""Valid tables mutated one field at a time, and the properties every mutant must satisfy.

Used by ``tests/test_table_loader.py`` (a modest number of examples) and by
``benchmarks/fuzz_table.py`` (a long run). A mutant changes one thing (a value
replaced by another type, null, a negative, huge or tiny number, a wrong enum
or pattern, another subtree of the same table; a key deleted, added or renamed;
a list item duplicated, dropped or moved) and gets its hash recomputed, as an
attacker would. The properties:

* only :class:`HadisError` escapes from ``validate_document``, ``CascadeTable``,
  ``load_table`` and ``resolve``, with a one-line message ending in a period;
* ``validate_document`` and load + ``resolve`` accept exactly the same mutants,
  and so does loading the mutant's JSON text;
* the hand-written schema check and ``jsonschema`` on the shipped schema file
  give the same verdict;
* an accepted mutant resolves to plans whose ``to_dict()`` is strict JSON.

And for ``resolve()`` called with arbitrary argument values: a Plan, or a
:class:`ParameterError` naming one of the arguments, nothing else.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
from fractions import Fraction
from typing import Any

import numpy as np
from hypothesis import strategies as st

from hadis_profile.errors import HadisError, ParameterError
from hadis_profile.measurements import LatencyStats, Measurements, ModelMeasurements
from hadis_profile.pareto import compile_table
from hadis_profile.resolve import Plan, resolve
from hadis_profile.strict_json import parse_json
from hadis_profile.table import CascadeTable, _validator, payload_hash, validate_document
from hadis_profile.table_schema import check_structure

METRIC = "clip_score:test"
REQUESTS = (
    dict(qps=1.0, slo_s=30.0, gpus=4),
    dict(qps=40.0, slo_s=1.0, gpus=2, queue_delay_s=0.0),
    dict(qps=3.0, slo_s=10.0, gpus=8, overhead_s=0.5, batch_sizes=None),
)


def measurements(n: int = 24, models: int = 2) -> Measurements:
    """A small run: ``models`` models of rising cost with noisy quality, router and confidence."""
    rng = np.random.default_rng(1)
    hard = rng.random(n)
    spec = [("a", 0.5, 30, 8, 2), ("b", 2.0, 32, 3, 20), ("c", 4.0, 33, 2, 40)][:models]
    mods = {
        name: ModelMeasurements(
            name=name,
            latency={1: LatencyStats.constant(1, lat), 2: LatencyStats.constant(2, 1.7 * lat)},
            quality={METRIC: q0 - slope * hard + rng.normal(0, 0.5, n)},
            confidence=1 - hard + rng.normal(0, 0.2, n),
            steps=steps,
        )
        for name, lat, q0, slope, steps in spec
    }
    return Measurements(
        prompts=[f"p{i}" for i in range(n)],
        models=mods,
        router_scores=hard + rng.normal(0, 0.3, n),
        router_spec={"features": ["len"], "weights": [1.0], "mean": [3.0], "std": [1.5]},
        provenance={"run_id": "t", "hardware": {"label": "cpu", "device_name": "test"}},
    )


def rehash(doc: dict) -> dict:
    """What an attacker does after editing: recompute the payload's sha256."""
    if isinstance(doc, dict) and "payload" in doc:
        with contextlib.suppress(HadisError):
            doc["sha256"] = payload_hash(doc["payload"])
    return doc


@functools.lru_cache(maxsize=1)
def base_documents() -> tuple[str, ...]:
    """Valid tables (as JSON text) covering every optional part of the format."""
    plain = compile_table(measurements(12), grid=2)
    rich = compile_table(measurements(12, models=3), grid=2, pairs="all")
    payload = rich["payload"]
    prov = payload["provenance"]
    payload["router"]["overhead_s_per_query"] = 0.002
    prov["router"] = {"overhead_s_per_query": 0.003, "features": ["len"]}
    prov["discriminator"] = {"kind": "clip", "scorer_id": "conf:x"}
    prov["run"] = {"scorer_overhead_s_per_image": {"conf:x": 0.01, "other": None}}
    prov["hardware"] = {"label": "gpu", "device_name": "x", "driver": "1", "libraries": {}}
    prov["seeds"] = {"seed": 3}
    oom = {"batch_size": 4, "mean_s": None, "std_s": None, "p50_s": None, "p90_s": None}
    payload["models"]["c"]["latency"]["4"] = {**oom, "p99_s": None, "infeasible": True}
    docs = (plain, rehash(rich))
    for doc in docs:
        validate_document(doc)  # the bases themselves are valid
    return tuple(json.dumps(doc) for doc in docs)


# ------------------------------------------------------------------ strategies

_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.sampled_from([8, 2**20, 2**20 + 1, -(2**31), 10**29, -(10**29)]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(
        [0.0, -0.0, 0.5, 1.0, 1.5, 2.0, -0.5, 1e-10, 1e-9, 1e6, 1e6 + 1, 1e308, -1e308, 5e-324]
    ),
    st.sampled_from(
        [
            "",
            "single",
            "cascade",
            "bogus",
            "grid",
            "exact",
            "all",
            "adjacent",
            "1.0",
            "1.7",
            "2.0",
            "0.9",
            "1.0\n",
            "a",
            "b",
            "c",
            METRIC,
            "fid:x",
            "nocolon",
            "hadis-profile/cascade-table",
            "2026-01-01T00:00:00Z",
            "2026-01-01",
            "8",
            "0" * 64,
            "conf:x",
            "\ud800",
        ]
    ),
    st.text(max_size=4),
)
_VALUES = st.one_of(
    _SCALARS,
    st.lists(_SCALARS, max_size=2),
    st.dictionaries(st.sampled_from(["a", "x", "1", "label", "mode"]), _SCALARS, max_size=2),
)
_KEYS = st.sampled_from(
    ["x", "a", "b", "d", "1", "3", "8", "01", "light", "kind", "payload", METRIC, "fid:x", ""]
)


def _paths(value: Any, path: tuple = ()) -> list[tuple]:
    out = [path]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*path, i))
    return out


def _get(doc: Any, path: tuple) -> Any:
    for part in path:
        doc = doc[part]
    return doc


@st.composite
def mutants(draw) -> tuple[dict, str]:
    """(mutated document with its hash recomputed, what was done)."""
    doc = json.loads(draw(st.sampled_from(base_documents())))
    paths = _paths(doc)
    path = draw(st.sampled_from(paths[1:]))
    parent, key = _get(doc, path[:-1]), path[-1]
    kind = draw(
        st.sampled_from(["replace", "replace", "subtree", "delete", "add", "rename", "list"])
    )
    if kind == "replace":
        parent[key] = draw(_VALUES)
    elif kind == "subtree":
        parent[key] = copy.deepcopy(_get(doc, draw(st.sampled_from(paths[1:]))))
    elif kind == "delete":
        del parent[key]
    elif kind == "add" and isinstance(parent[key], dict):
        parent[key][draw(_KEYS)] = draw(_VALUES)
    elif kind == "rename" and isinstance(parent, dict):
        parent[draw(_KEYS)] = parent.pop(key)
    elif kind == "list" and isinstance(parent, list):
        how = draw(st.sampled_from(["duplicate", "move", "drop"]))
        item = parent[key]
        if how == "duplicate":
            parent.insert(key, copy.deepcopy(item))
        elif how == "move":
            parent.insert(draw(st.integers(0, len(parent) - 1)), parent.pop(key))
        else:
            parent.pop(key)
    else:
        parent[key] = draw(_VALUES)
        kind = "replace"
    if path != ("sha256",):
        rehash(doc)
    return doc, f"{kind} at {path}"


# ------------------------------------------------------------------ properties


def outcome(f) -> bool:
    """True when ``f`` accepts, False when it refuses with one HadisError sentence."""
    try:
        f()
    except HadisError as e:
        msg = str(e)
        assert msg.endswith(".") and "\n" not in msg and "Traceback" not in msg, msg
        return False
    return True


def _load_and_resolve(doc: dict) -> None:
    table = CascadeTable.from_document(doc, "mutant.json")
    for req in REQUESTS:
        plan = resolve(table, **req)
        json.dumps(plan.to_dict(), allow_nan=False)
        assert plan.feasible or plan.reason


def check_mutant(doc: Any, what: str = "") -> bool:
    """Assert every property above on one document; returns whether it is accepted."""
    hand = outcome(lambda: check_structure(copy.deepcopy(doc), "mutant.json"))
    assert hand == _validator().is_valid(doc), f"hand-written schema vs jsonschema: {what}"
    load = outcome(lambda: _load_and_resolve(copy.deepcopy(doc)))
    valid = outcome(lambda: validate_document(copy.deepcopy(doc), "mutant.json"))
    assert load == valid, f"load+resolve {load} vs validate {valid}: {what}"
    text = outcome(lambda: CascadeTable(parse_json(json.dumps(doc).encode(), "m.json")))
    assert text == load, f"from text {text} vs in memory {load}: {what}"
    assert not load or hand, what  # nothing the schema refuses is ever accepted
    return load


# ------------------------------------------------------------- resolve arguments

_ANY = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(),
    st.text(max_size=5),
    st.lists(st.one_of(st.integers(-3, 40), st.floats(), st.none()), max_size=4),
    st.sampled_from([Fraction(1, 3), complex(1, 1), b"1", {"a": 1}, (1, 2), range(3), object()]),
    st.floats(min_value=0.001, max_value=100),
    st.integers(0, 70),
)
_ARGUMENTS = (
    "qps",
    "slo_s",
    "gpus",
    "reserved_gpus",
    "headroom",
    "batch_sizes",
    "queue_delay_s",
    "overhead_s",
)


def resolve_arguments() -> st.SearchStrategy[dict]:
    """Any subset of resolve()'s keyword arguments, each any value (mostly wrong ones)."""
    return st.fixed_dictionaries({}, optional={k: _ANY for k in _ARGUMENTS})


def check_resolve_arguments(kwargs: dict) -> None:
    """``resolve`` on the rich base table with ``kwargs`` over a valid request."""
    req = dict(qps=1.0, slo_s=10.0, gpus=4) | kwargs
    table = CascadeTable(json.loads(base_documents()[1]))
    try:
        plan = resolve(table, **req)
    except ParameterError as e:
        assert e.param in req
        msg = str(e)
        assert msg.endswith(".") and "\n" not in msg, msg
        return
    assert isinstance(plan, Plan)
    json.dumps(plan.to_dict(), allow_nan=False)
