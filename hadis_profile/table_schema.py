"""What a valid ``table.json`` is, checked in plain Python (stdlib only, fast to import).

Two parts, both run by the one table loader (:func:`hadis_profile.table.check_document`):

* :func:`check_structure` is ``schema/table.schema.json`` written out by hand:
  the same types, required fields, enums, ranges and patterns, with JSON Schema's
  own reading of them (``2.0`` is an integer, ``true`` is not a number, a pattern
  is searched with Python's ``re``, unknown properties are allowed). A test runs
  it and ``jsonschema`` on mutated tables and requires the same verdict, so the
  two cannot drift apart silently. It exists so that serving stacks can load a
  table without importing ``jsonschema``.
* :func:`check_rules` holds what JSON Schema cannot say: cross-field rules the
  resolver relies on (rows name profiled models, fractions agree with the loads,
  the quality metric has a direction) and the limits that bound the resolver's
  work and memory.

Every refusal is one sentence naming the JSON path, e.g.
``t.json does not match the table schema at payload.models.a.max_batch: found "8",
expected an integer >= 1 or null.``
"""

from __future__ import annotations

import re
from typing import Any, NoReturn

from hadis_profile.errors import HadisError
from hadis_profile.metrics import KNOWN_SCORERS, scorer_of
from hadis_profile.strict_json import describe, json_path

FORMAT = "hadis-profile/cascade-table"

FRACTION_EPS = 1e-12
"""Load/path fractions at or below this are zero (float residue of ``1 - x - y``, not traffic)."""

MIN_LATENCY_S = 1e-9
"""Smallest ``p99_s`` of a latency point: below a nanosecond is a unit error, and
``batch_size / p99_s`` (the throughput) would overflow."""

MAX_SECONDS = 1e6
"""Largest latency statistic or routing overhead, in seconds (about 11.6 days): more is a
unit error, and the bound keeps every sum and product the resolver forms finite."""

MAX_BATCH_SIZE = 2**20
"""Largest batch size a latency point may have."""

MAX_MODELS = 64
"""Most models in ``payload.models``."""

MAX_ROWS = 50_000
"""Most rows in ``payload.rows`` (a Pareto table has hundreds)."""

MAX_BATCH_SIZES = 64
"""Most distinct batch sizes over all models of a table."""

MAX_SHAPE_CELLS = 2**22
"""Bound on the resolver's largest arrays: distinct row shapes (models carrying load,
paths taken, overhead class) times the square of the usable batch sizes."""

_SCHEMA_VERSION = re.compile(r"^1\.[0-9]+$")
_CREATED_AT = re.compile(
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})$"
)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_METRIC_ID = re.compile(r"^[^:]+:.+$")
_BATCH_KEY = re.compile(r"^[1-9][0-9]*$")
_FRACTIONS = ("direct", "escalated", "light", "load_light", "load_heavy")
_SINGLE_FRACTIONS = {"direct": 0, "escalated": 0, "light": 1, "load_light": 1, "load_heavy": 0}
_ROW_FIELDS = (
    "light",
    "heavy",
    "kind",
    "r",
    "d",
    "router_threshold",
    "confidence_threshold",
    "fractions",
    "quality",
    "gpu_s_per_query",
    "latency_s",
    "on_front",
)
_PROVENANCE_FIELDS = (
    "run_id",
    "hardware",
    "zoo_hash",
    "prompt_set_hash",
    "n_prompts",
    "metrics",
    "quality_metric",
    "seeds",
    "grid",
    "pairs",
    "per_pair",
    "router",
    "discriminator",
)
_STATS = ("mean_s", "std_s", "p50_s", "p90_s")


class _Mismatch(Exception):
    def __init__(self, path: tuple, detail: str) -> None:
        self.path, self.detail = path, detail


def _fail(path: tuple, value: Any, expected: str) -> NoReturn:
    raise _Mismatch(path, f"found {describe(value)}, expected {expected}")


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_int(v: Any) -> bool:
    return (isinstance(v, int) and not isinstance(v, bool)) or (
        isinstance(v, float) and v.is_integer()
    )


def _object(v: Any, path: tuple, required: tuple = (), min_properties: int = 0) -> dict:
    if not isinstance(v, dict):
        _fail(path, v, "an object")
    for key in required:
        if key not in v:
            raise _Mismatch(path, f"the required field {key!r} is missing")
    if len(v) < min_properties:
        raise _Mismatch(path, "found an empty object, expected at least one entry")
    return v


def _array(v: Any, path: tuple, min_items: int = 0) -> list:
    if not isinstance(v, list):
        _fail(path, v, "an array")
    if len(v) < min_items:
        raise _Mismatch(path, "found an empty array, expected at least one item")
    return v


def _bound(minimum, maximum, exclusive_minimum) -> str:
    if exclusive_minimum is not None:
        return f" > {exclusive_minimum:g}"
    parts = []
    if minimum is not None:
        parts.append(f">= {minimum:g}")
    if maximum is not None:
        parts.append(f"<= {maximum:g}")
    return " " + " and ".join(parts) if parts else ""


def _number(
    v: Any,
    path: tuple,
    *,
    nullable: bool = False,
    integer: bool = False,
    minimum: float | None = None,
    maximum: float | None = None,
    exclusive_minimum: float | None = None,
) -> None:
    if v is None and nullable:
        return
    ok = _is_int(v) if integer else _is_num(v)
    if ok and (
        (minimum is None or v >= minimum)
        and (maximum is None or v <= maximum)
        and (exclusive_minimum is None or v > exclusive_minimum)
    ):
        return
    kind = "an integer" if integer else "a number"
    _fail(
        path,
        v,
        kind + _bound(minimum, maximum, exclusive_minimum) + (" or null" if nullable else ""),
    )


def _string(
    v: Any, path: tuple, *, nullable: bool = False, min_length: int = 0, pattern=None
) -> None:
    if v is None and nullable:
        return
    if not isinstance(v, str):
        _fail(path, v, "a string" + (" or null" if nullable else ""))
    if len(v) < min_length:
        _fail(path, v, "a non-empty string")
    if pattern is not None and not pattern.search(v):
        _fail(path, v, f"a string matching {pattern.pattern}")


def _boolean(v: Any, path: tuple) -> None:
    if not isinstance(v, bool):
        _fail(path, v, "true or false")


def _enum(v: Any, path: tuple, values: tuple[str, ...]) -> None:
    if not (isinstance(v, str) and v in values):
        _fail(path, v, "one of " + ", ".join(f'"{x}"' for x in values))


def _null_or_object(v: Any, path: tuple) -> dict:
    if v is None:
        return {}
    return _object(v, path)


# ---------------------------------------------------------------- structure


def check_structure(doc: Any, source: str) -> None:
    """Refuse ``doc`` unless it matches ``schema/table.schema.json`` (one sentence, JSON path)."""
    try:
        _document(doc)
    except _Mismatch as m:
        raise HadisError(
            f"{source} does not match the table schema at {json_path(m.path)}: {m.detail}."
        ) from None


def _document(doc: Any) -> None:
    top = ("format", "schema_version", "tool_version", "created_at", "sha256", "payload")
    _object(doc, (), top)
    if doc["format"] != FORMAT:
        _fail(("format",), doc["format"], f'"{FORMAT}"')
    _string(doc["schema_version"], ("schema_version",), pattern=_SCHEMA_VERSION)
    _string(doc["tool_version"], ("tool_version",), min_length=1)
    _string(doc["created_at"], ("created_at",), pattern=_CREATED_AT)
    _string(doc["sha256"], ("sha256",), pattern=_SHA256)
    payload = _object(doc["payload"], ("payload",), ("provenance", "models", "router", "rows"))
    _provenance(payload["provenance"], ("payload", "provenance"))
    models = _object(payload["models"], ("payload", "models"), min_properties=1)
    for name, model in models.items():
        _model(model, ("payload", "models", name))
    if payload["router"] is not None:
        _router(payload["router"], ("payload", "router"))
    rows = _array(payload["rows"], ("payload", "rows"), min_items=1)
    for i, row in enumerate(rows):
        _row(row, ("payload", "rows", i))


def _provenance(prov: Any, path: tuple) -> None:
    _object(prov, path, _PROVENANCE_FIELDS)
    for key in ("run_id", "zoo_hash", "prompt_set_hash"):
        _string(prov[key], (*path, key), nullable=True)
    if prov["hardware"] is not None:
        hw = _object(prov["hardware"], (*path, "hardware"), ("label",))
        _string(hw["label"], (*path, "hardware", "label"))
        for key in ("device_name", "driver"):
            if key in hw:
                _string(hw[key], (*path, "hardware", key), nullable=True)
        if "libraries" in hw:
            _null_or_object(hw["libraries"], (*path, "hardware", "libraries"))
    _number(prov["n_prompts"], (*path, "n_prompts"), integer=True, minimum=1)
    metrics = _object(prov["metrics"], (*path, "metrics"), min_properties=1)
    for mid, spec in metrics.items():
        where = (*path, "metrics", mid)
        _object(spec, where, ("higher_is_better", "set_level"))
        _boolean(spec["higher_is_better"], (*where, "higher_is_better"))
        _boolean(spec["set_level"], (*where, "set_level"))
    _string(prov["quality_metric"], (*path, "quality_metric"), pattern=_METRIC_ID)
    _null_or_object(prov["seeds"], (*path, "seeds"))
    grid = _object(prov["grid"], (*path, "grid"), ("mode",))
    _enum(grid["mode"], (*path, "grid", "mode"), ("grid", "exact"))
    if "steps" in grid:
        _number(grid["steps"], (*path, "grid", "steps"), integer=True, minimum=1, nullable=True)
    if "nominal" in grid:
        _boolean(grid["nominal"], (*path, "grid", "nominal"))
    _enum(prov["pairs"], (*path, "pairs"), ("adjacent", "all"))
    _boolean(prov["per_pair"], (*path, "per_pair"))
    router = _null_or_object(prov["router"], (*path, "router"))
    _overhead(router, (*path, "router"))
    disc = _null_or_object(prov["discriminator"], (*path, "discriminator"))
    if "scorer_id" in disc:
        _string(disc["scorer_id"], (*path, "discriminator", "scorer_id"))
    if "run" in prov:
        run = _null_or_object(prov["run"], (*path, "run"))
        if "scorer_overhead_s_per_image" in run:
            where = (*path, "run", "scorer_overhead_s_per_image")
            for sid, v in _null_or_object(run["scorer_overhead_s_per_image"], where).items():
                _number(v, (*where, sid), minimum=0, maximum=MAX_SECONDS, nullable=True)


def _overhead(spec: dict, path: tuple) -> None:
    if "overhead_s_per_query" in spec:
        where = (*path, "overhead_s_per_query")
        _number(spec["overhead_s_per_query"], where, minimum=0, maximum=MAX_SECONDS, nullable=True)


def _model(model: Any, path: tuple) -> None:
    _object(model, path, ("order", "steps", "latency", "max_batch", "peak_mem_bytes"))
    _number(model["order"], (*path, "order"), integer=True, minimum=0)
    _number(model["steps"], (*path, "steps"), integer=True, minimum=1, nullable=True)
    latency = _object(model["latency"], (*path, "latency"), min_properties=1)
    for key, point in latency.items():
        where = (*path, "latency", key)
        if not _BATCH_KEY.search(key):
            raise _Mismatch(where, "a batch size key must be a positive whole number")
        _latency_point(point, where)
    _number(model["max_batch"], (*path, "max_batch"), integer=True, minimum=1, nullable=True)
    where = (*path, "peak_mem_bytes")
    _number(model["peak_mem_bytes"], where, integer=True, minimum=0, nullable=True)


def _latency_point(point: Any, path: tuple) -> None:
    _object(point, path, ("batch_size", *_STATS, "p99_s", "infeasible"))
    where = (*path, "batch_size")
    _number(point["batch_size"], where, integer=True, minimum=1, maximum=MAX_BATCH_SIZE)
    for key in _STATS:
        _number(point[key], (*path, key), minimum=0, maximum=MAX_SECONDS, nullable=True)
    where = (*path, "p99_s")
    _number(point["p99_s"], where, minimum=MIN_LATENCY_S, maximum=MAX_SECONDS, nullable=True)
    _boolean(point["infeasible"], (*path, "infeasible"))
    if "peak_mem_bytes" in point:
        where = (*path, "peak_mem_bytes")
        _number(point["peak_mem_bytes"], where, integer=True, minimum=0, nullable=True)
    for key in ("warmup", "reps"):
        if key in point:
            _number(point[key], (*path, key), integer=True, minimum=0)


def _router(router: Any, path: tuple) -> None:
    _object(router, path, ("features", "weights", "mean", "std"))
    for i, v in enumerate(_array(router["features"], (*path, "features"), 1)):
        _string(v, (*path, "features", i))
    for key in ("weights", "mean", "std"):
        for i, v in enumerate(_array(router[key], (*path, key), 1)):
            _number(v, (*path, key, i), minimum=0 if key == "std" else None)
    _overhead(router, path)


def _row(row: Any, path: tuple) -> None:
    _object(row, path, _ROW_FIELDS)
    _string(row["light"], (*path, "light"), min_length=1)
    _string(row["heavy"], (*path, "heavy"), min_length=1, nullable=True)
    _enum(row["kind"], (*path, "kind"), ("single", "cascade"))
    single = row["kind"] == "single"
    for key in ("r", "d"):
        _number(row[key], (*path, key), minimum=0, maximum=1)
    for key in ("router_threshold", "confidence_threshold"):
        _number(row[key], (*path, key), nullable=True)
    fractions = _object(row["fractions"], (*path, "fractions"), _FRACTIONS)
    for key in _FRACTIONS:
        _number(fractions[key], (*path, "fractions", key), minimum=0, maximum=1)
    quality = _object(row["quality"], (*path, "quality"), min_properties=1)
    for mid, v in quality.items():
        _number(v, (*path, "quality", mid), nullable=True)
    for key in ("gpu_s_per_query", "latency_s"):
        _number(row[key], (*path, key), exclusive_minimum=0)
    _boolean(row["on_front"], (*path, "on_front"))
    if not single:
        if row["heavy"] is None:
            _fail((*path, "heavy"), None, 'a model name in a "cascade" row')
        return
    if row["heavy"] is not None:
        _fail((*path, "heavy"), row["heavy"], 'null in a "single" row')
    for key in ("r", "d"):
        if row[key] != 0:
            _fail((*path, key), row[key], '0 in a "single" row')
    for key in ("router_threshold", "confidence_threshold"):
        if row[key] is not None:
            _fail((*path, key), row[key], 'null in a "single" row')
    for key, want in _SINGLE_FRACTIONS.items():
        if fractions[key] != want:
            _fail((*path, "fractions", key), fractions[key], f'{want} in a "single" row')


# -------------------------------------------------------------------- rules


def check_rules(doc: dict, source: str) -> None:
    """Cross-field rules and size limits of a structurally valid table (one sentence each)."""
    payload = doc["payload"]
    prov, models, rows = payload["provenance"], payload["models"], payload["rows"]
    if len(models) > MAX_MODELS:
        raise HadisError(
            f"{source} profiles {len(models)} models; at most {MAX_MODELS} are accepted."
        )
    if len(rows) > MAX_ROWS:
        raise HadisError(f"{source} has {len(rows):,} rows; at most {MAX_ROWS:,} are accepted.")
    metric = prov["quality_metric"]
    if metric not in prov["metrics"]:
        raise HadisError(
            f"{source}: the quality metric {describe(metric)} is not among "
            "payload.provenance.metrics."
        )
    known = KNOWN_SCORERS.get(scorer_of(metric))
    if known is not None and prov["metrics"][metric]["higher_is_better"] != known.higher_is_better:
        direction = "higher" if known.higher_is_better else "lower"
        raise HadisError(
            f"{source}: payload.provenance.metrics says the wrong direction for {describe(metric)} "
            f"({known.scorer}: {direction} is better)."
        )
    sizes = _batch_sizes(models, source)
    singles: set[str] = set()
    shapes: set[tuple] = set()
    previous = None
    for i, row in enumerate(rows):
        shapes.add(_row_rules(row, i, models, metric, singles, source))
        if previous is not None and row["gpu_s_per_query"] < previous:
            raise HadisError(f"{source}: rows are not sorted by gpu_s_per_query (row {i}).")
        previous = row["gpu_s_per_query"]
    used = {name for shape in shapes for name in shape[:2] if name is not None}
    k = len({b for name in used for b in sizes[name]})
    if len(shapes) * k * k > MAX_SHAPE_CELLS:
        raise HadisError(
            f"{source} is too large to resolve: {len(shapes):,} distinct row shapes times "
            f"{k} usable batch sizes squared exceeds {MAX_SHAPE_CELLS:,}."
        )


def _batch_sizes(models: dict, source: str) -> dict[str, set[int]]:
    """Per model, the batch sizes a plan may use; checks keys against ``batch_size``."""
    usable: dict[str, set[int]] = {}
    every: set[int] = set()
    for name, model in models.items():
        sizes = usable[name] = set()
        max_batch = model["max_batch"]
        for key, point in model["latency"].items():
            b = int(point["batch_size"])
            if key != str(b):
                path = json_path(("payload", "models", name, "latency", key, "batch_size"))
                raise HadisError(f"{source}: {path} is {b}, not its key {describe(key)}.")
            every.add(b)
            usable_point = not point["infeasible"] and point["p99_s"] is not None
            if usable_point and (max_batch is None or b <= max_batch):
                sizes.add(b)
    if len(every) > MAX_BATCH_SIZES:
        raise HadisError(
            f"{source} profiles {len(every)} distinct batch sizes; "
            f"at most {MAX_BATCH_SIZES} are accepted."
        )
    return usable


def _row_rules(
    row: dict, i: int, models: dict, metric: str, singles: set[str], source: str
) -> tuple:
    """One row's rules; returns its shape (what the resolver's arrays are sized by)."""
    light, heavy = row["light"], row["heavy"]
    for name in (light, heavy):
        if name is not None and name not in models:
            raise HadisError(
                f"{source}: row {i} names model {describe(name)}, which has no profile."
            )
    if metric not in row["quality"]:
        raise HadisError(
            f"{source}: row {i} has no value for the quality metric {describe(metric)}."
        )
    if heavy is None:
        if light in singles:
            raise HadisError(
                f"{source} has 2 single-model rows for {describe(light)}, expected at most 1."
            )
        singles.add(light)
        return (light, None, True, False, False, 0)
    if row["quality"][metric] is None:
        raise HadisError(f"{source}: cascade row {i} has a null {describe(metric)}.")
    if light == heavy:
        raise HadisError(f"{source}: row {i} uses model {describe(light)} as light and heavy.")
    if models[light]["order"] >= models[heavy]["order"]:
        raise HadisError(
            f"{source}: row {i} cascades {describe(light)} into {describe(heavy)}, "
            "which is not more expensive."
        )
    fr = {k: (v if v > FRACTION_EPS else 0) for k, v in row["fractions"].items() if k in _FRACTIONS}
    p_light, p_direct, p_esc = fr["light"] > 0, fr["direct"] > 0, fr["escalated"] > 0
    f_l, f_h = fr["load_light"] > 0, fr["load_heavy"] > 0
    if f_l != (p_light or p_esc) or f_h != (p_direct or p_esc):
        raise HadisError(
            f"{source}: row {i} has inconsistent fractions: a model carries load "
            "exactly when a path through it occurs."
        )
    if not (f_l or f_h):
        raise HadisError(f"{source}: row {i} sends no load to any model.")
    overhead_class = 1 + (row["r"] > 0) + 2 * (row["d"] > 0)
    return (
        light if f_l else None,
        heavy if f_h else None,
        p_light,
        p_direct,
        p_esc,
        overhead_class,
    )
