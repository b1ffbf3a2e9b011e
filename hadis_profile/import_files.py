"""Reading the files ``hadis-profile import`` takes, each checked before anything is written.

Prompts (one per line), per-image confidences (prompt-major rows), router
features (CSV with a header), latencies (``--latency`` specs or a small YAML)
and per-configuration results measured elsewhere (HADIS's
``config_results_hybrid.csv`` layout). Each reader returns plain arrays or
dicts, or raises one :class:`~hadis_profile.errors.InputError` sentence naming
the file and line; each file is bounded (:mod:`hadis_profile.limits`). Row
``i`` of every per-prompt file is prompt ``i``. :mod:`hadis_profile.importer`
writes what these read into a run.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from hadis_profile.errors import HadisError, InputError, ParameterError
from hadis_profile.fileio import read_bytes
from hadis_profile.limits import (
    MAX_INPUT_FILE_BYTES,
    MAX_PROMPT_CHARS,
    MAX_PROMPT_FILE_BYTES,
    MAX_PROMPTS,
    check_file_size,
)
from hadis_profile.measurements import ExternalConfig


def _require_file(path: Path, what: str) -> Path:
    """``path`` if it is a file no larger than :data:`MAX_INPUT_FILE_BYTES`."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"The {what} {path} is a folder, not a file.")
    if not path.is_file():
        raise InputError(f"The {what} {path} does not exist.")
    check_file_size(path, MAX_INPUT_FILE_BYTES, f"the {what}")
    return path


def _read_csv_rows(path: Path, what: str, encoding: str = "utf-8", errors: str = "strict"):
    """All rows of a CSV file; an undecodable byte, a NUL or an oversized field is a sentence."""
    try:
        with open(path, newline="", encoding=encoding, errors=errors) as f:
            return list(csv.reader(f))
    except UnicodeDecodeError:
        raise InputError(f"The {what} {path} is not UTF-8.") from None
    except csv.Error as e:
        raise InputError(f"The {what} {path} is not a readable CSV file ({e}).") from None
    except OSError as e:
        raise InputError(f"Cannot read the {what} {path}: {e.strerror or e}.") from None


def read_prompts(path: Path, *, ascii_only: bool = False) -> list[str]:
    """One prompt per line; ``ascii_only`` drops undecodable bytes (the HADIS file's convention)."""
    path = _require_file(path, "prompts file")
    check_file_size(path, MAX_PROMPT_FILE_BYTES, "the prompts file")
    raw = read_bytes(path, "prompts file", MAX_PROMPT_FILE_BYTES)
    try:
        text = raw.decode("ascii", errors="ignore") if ascii_only else raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"The prompts file {path} is not UTF-8 (byte {e.start}).") from None
    # split("\n") rather than splitlines(): form feeds etc. inside a prompt stay in it.
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) > MAX_PROMPTS:
        raise InputError(
            f"The prompts file {path} has {len(lines):,} lines, more than the limit of "
            f"{MAX_PROMPTS:,} prompts."
        )
    for i, line in enumerate(lines):
        if not line.strip():
            raise InputError(f"The prompts file {path} has an empty prompt on line {i + 1}.")
        if len(line) > MAX_PROMPT_CHARS:
            raise InputError(
                f"Line {i + 1} of the prompts file {path} is {len(line):,} characters, more "
                f"than the limit of {MAX_PROMPT_CHARS:,} for one prompt."
            )
    if not lines:
        raise InputError(f"The prompts file {path} has no prompts.")
    return lines


def read_confidences(
    path: Path, n_prompts: int, images_per_prompt: int | None = None, *, column: int = 1
) -> np.ndarray:
    """A prompt-major confidence file (rows = prompts x images) as [n_prompts, k].

    ``column`` picks the P(real) column of a softmax [generated, real] row.
    """
    path = _require_file(path, "confidence file")
    try:
        data = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except (ValueError, UnicodeDecodeError) as e:
        raise InputError(f"The confidence file {path} is not a numeric table ({e}).") from None
    except OSError as e:
        raise InputError(f"Cannot read the confidence file {path}: {e.strerror or e}.") from None
    rows = data.shape[0]
    if data.shape[1] <= column:
        raise InputError(
            f"The confidence file {path} has {data.shape[1]} column(s); column {column + 1} "
            "holds the confidence."
        )
    if images_per_prompt is not None and rows != n_prompts * images_per_prompt:
        raise InputError(
            f"The confidence file {path} has {rows} rows, expected {n_prompts} prompts x "
            f"{images_per_prompt} images = {n_prompts * images_per_prompt}."
        )
    if rows == 0 or rows % n_prompts:
        raise InputError(
            f"The confidence file {path} has {rows} rows, not a whole number of images for "
            f"each of the {n_prompts} prompts."
        )
    values = data[:, column]
    bad = ~np.isfinite(values)
    if bad.any():
        raise InputError(
            f"The confidence file {path} has {int(bad.sum())} NaN or infinite value(s), first "
            f"on line {int(np.flatnonzero(bad)[0]) + 1}."
        )
    outside = (values < 0) | (values > 1)
    if outside.any():
        raise InputError(
            f"The confidence file {path} has {int(outside.sum())} value(s) outside [0, 1], "
            f"first on line {int(np.flatnonzero(outside)[0]) + 1}."
        )
    return values.reshape(n_prompts, rows // n_prompts)


def read_prompt_features(
    path: Path, prompts: list[str], *, ascii_only: bool = False
) -> tuple[list[str], np.ndarray]:
    """(feature names, features [n_prompts, k]) from a CSV with a header row.

    An optional ``prompt`` column must match the prompts file row by row, which
    is how we know row i really is prompt i.
    """
    path = _require_file(path, "prompt features file")
    encoding, errors = ("ascii", "ignore") if ascii_only else ("utf-8", "strict")
    rows = _read_csv_rows(path, "prompt features file", encoding, errors)
    if not rows:
        raise InputError(f"The prompt features file {path} is empty.")
    header, body = rows[0], [r for r in rows[1:] if r]
    prompt_col = header.index("prompt") if "prompt" in header else None
    cols = [i for i in range(len(header)) if i != prompt_col]
    if not cols:
        raise InputError(f"The prompt features file {path} has no feature columns.")
    if len(body) != len(prompts):
        raise InputError(
            f"The prompt features file {path} has {len(body)} rows, expected one per prompt "
            f"({len(prompts)})."
        )
    feats = np.empty((len(body), len(cols)), dtype=np.float64)
    for i, row in enumerate(body):
        if len(row) != len(header):
            raise InputError(
                f"Row {i + 2} of the prompt features file {path} has {len(row)} fields, "
                f"expected {len(header)}."
            )
        if prompt_col is not None and row[prompt_col] != prompts[i]:
            raise InputError(
                f"Row {i + 2} of the prompt features file {path} is for another prompt than "
                f"line {i + 1} of the prompts file."
            )
        try:
            feats[i] = [float(row[c]) for c in cols]
        except ValueError:
            raise InputError(
                f"Row {i + 2} of the prompt features file {path} has a non-numeric feature."
            ) from None
    bad = ~np.isfinite(feats)
    if bad.any():
        r, c = (int(x) for x in np.argwhere(bad)[0])
        raise InputError(
            f"The prompt features file {path} has NaN or infinite values, first in row {r + 2} "
            f"column '{header[cols[c]]}'."
        )
    return [header[c] for c in cols], feats


def router_scores(
    features: np.ndarray, weights: list[float], names: list[str], *, source: str = ""
) -> tuple[np.ndarray, dict]:
    """HADIS's router: weights . z-normalised features (population std, ddof=0).

    Returns (scores [n], spec). The spec keeps mean and std so a serving stack
    can score an unseen prompt exactly as the profiled ones were scored.
    """
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (features.shape[1],):
        raise HadisError(
            f"{len(w)} router weights were given for {features.shape[1]} prompt features."
        )
    mean = features.mean(axis=0)
    std = features.std(axis=0, ddof=0)
    constant = np.flatnonzero(std == 0)
    if len(constant):
        raise HadisError(
            f"Prompt feature '{names[int(constant[0])]}' is constant over all prompts, so it "
            "cannot be z-normalised."
        )
    scores = ((features - mean) / std) @ w
    spec = {
        "kind": "linear-z",
        "features": list(names),
        "weights": w.tolist(),
        "mean": mean.tolist(),
        "std": std.tolist(),
        "ddof": 0,
        "source": source,
    }
    return scores, spec


_LATENCY_SYNTAX = "NAME=BATCH:SECONDS[,BATCH:SECONDS...] (or NAME=SECONDS for batch size 1)"


def _seconds(value: object, where: str) -> float:
    try:
        s = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InputError(f"{where}: '{value}' is not a number of seconds.") from None
    if not (math.isfinite(s) and s > 0):
        raise InputError(f"{where}: the latency {value} must be a positive number of seconds.")
    return s


def _batch(value: object, where: str) -> int:
    try:
        b = int(str(value))
    except ValueError:
        raise InputError(f"{where}: batch size '{value}' is not an integer.") from None
    if b < 1:
        raise InputError(f"{where}: batch size {b} must be at least 1.")
    return b


def parse_latency_spec(text: str) -> tuple[str, dict[int, float]]:
    """``sdxl-lightning=1:0.5,4:1.6`` -> ("sdxl-lightning", {1: 0.5, 4: 1.6}); seconds per batch."""
    name, sep, points = text.rpartition("=")
    name = name.strip()
    if not sep or not name or not points.strip():
        raise InputError(f"Latency spec '{text}' is malformed; expected {_LATENCY_SYNTAX}.")
    where = f"Latency spec '{text}'"
    out: dict[int, float] = {}
    for part in points.split(","):
        batch, colon, secs = part.strip().rpartition(":")
        b = _batch(batch, where) if colon else 1
        out[b] = _seconds(secs, where)
    return name, out


#: The batch sizes HADIS's testbed allows (config.ALLOWED_BATCH_SIZES in the authors' code).
HADIS_BATCH_SIZES = (1, 2, 4, 8, 16, 32)
_BATCH_LATENCY_SYNTAX = "'linear:FACTOR' or 'scale:BATCH=MULTIPLE[,BATCH=MULTIPLE...]'"


def batch_latencies(
    base_s: float, spec: str, batch_sizes: tuple[int, ...] = HADIS_BATCH_SIZES
) -> dict[int, float]:
    """Seconds per batch for each of ``batch_sizes``, from one batch-size-1 latency.

    Published numbers are often per image at batch size 1; a simulation with
    batching needs a rule for larger batches, and it has to be stated:

    * ``linear:F``: a batch of b > 1 costs ``b * base * F`` (HADIS's testbed uses
      ``linear:0.9``, config.py ``BATCH_DISCOUNT``); ``linear:1`` is no batching gain.
    * ``scale:2=2.21,4=4.47``: measured multiples of the batch-1 latency; a size
      above the largest listed one costs that size's per-image time (b * base *
      4.47 / 4 here), a size below it that is not listed is refused.
    """
    kind, _, args = spec.partition(":")
    kind = kind.strip()
    multiple: dict[int, float] = {1: 1.0}
    try:
        if kind == "linear":
            factor = float(args)
            if not (math.isfinite(factor) and factor > 0):
                raise ValueError
            multiple.update({b: b * factor for b in batch_sizes if b > 1})
        elif kind == "scale":
            for part in args.split(","):
                b_text, eq, m_text = part.partition("=")
                b, m = int(b_text), float(m_text)
                if not eq or b < 1 or not (math.isfinite(m) and m > 0):
                    raise ValueError
                multiple[b] = m
            top = max(multiple)
            per_image = multiple[top] / top
            for b in batch_sizes:
                if b > top:
                    multiple[b] = b * per_image
        else:
            raise ValueError
    except ValueError:
        raise ParameterError(
            "batch_latency", f"{{param}} must be {_BATCH_LATENCY_SYNTAX}, not '{spec}'."
        ) from None
    missing = [b for b in batch_sizes if b not in multiple]
    if missing:
        raise ParameterError(
            "batch_latency", f"{{param}} '{spec}' gives no multiple for batch size {missing[0]}."
        )
    if not (math.isfinite(base_s) and base_s > 0):
        raise ParameterError("base_s", f"{{param}} must be positive seconds, not {base_s!r}.")
    return {b: base_s * multiple[b] for b in batch_sizes}


def read_latency_yaml(path: Path) -> dict[str, dict[int, float]]:
    """A small YAML: ``model: {batch: seconds}`` (or ``model: seconds`` for batch size 1)."""
    from hadis_profile.yamlio import read_yaml_file

    path = _require_file(path, "latency file")
    doc = read_yaml_file(path, "latency file")  # bounded: size, depth, aliases
    if not isinstance(doc, dict):
        raise InputError(f"The latency file {path} must map model names to latencies.")
    out: dict[str, dict[int, float]] = {}
    for model, points in doc.items():
        where = f"Latency file {path}, model '{model}'"
        if isinstance(points, dict):
            out[str(model)] = {_batch(b, where): _seconds(s, where) for b, s in points.items()}
        else:
            out[str(model)] = {1: _seconds(points, where)}
    return out


def read_external_csv(
    path: Path, model_names: list[str], metrics: dict[str, str]
) -> tuple[list[ExternalConfig], list[tuple[str, str, float, float, float]]]:
    """Per-configuration results (HADIS's config_results_hybrid.csv layout).

    Columns light_model, heavy_model (index or name), router_ratio (0 if
    absent), disc_ratio (or threshold when there is no router_ratio: the
    discriminator-only sweep), plus the metric columns named in ``metrics``.
    Returns the configs and, when a ``latency`` column exists, (light, heavy, r,
    d, latency) rows so the caller can check them against the nominal formula.
    """
    path = _require_file(path, "external results file")
    table = _read_csv_rows(path, "external results file")
    columns = list(table[0]) if table else []
    if len(set(columns)) != len(columns):
        raise InputError(f"The external results file {path} repeats a column name.")
    body = [(i + 2, r) for i, r in enumerate(table[1:]) if r]
    short = next(((line, r) for line, r in body if len(r) != len(columns)), None)
    if short is not None:
        raise InputError(
            f"Line {short[0]} of {path} has {len(short[1])} fields, expected {len(columns)}."
        )
    rows = [dict(zip(columns, r, strict=True)) for _, r in body]
    has_r = "router_ratio" in columns
    d_col = "disc_ratio" if "disc_ratio" in columns else None
    if d_col is None and not has_r and "threshold" in columns:
        d_col = "threshold"
    needed = ["light_model", "heavy_model", *metrics]
    missing = [c for c in needed if c not in columns] + ([] if d_col else ["disc_ratio"])
    if missing:
        raise InputError(f"The external results file {path} lacks column(s) {', '.join(missing)}.")
    if not rows:
        raise InputError(f"The external results file {path} has no rows.")

    def model(value: str, line: int) -> str:
        v = value.strip()
        if v.isdigit() and int(v) < len(model_names):
            return model_names[int(v)]
        if v in model_names:
            return v
        raise InputError(
            f"Line {line} of {path} names model '{v}', which is neither an index below "
            f"{len(model_names)} nor one of the imported models."
        )

    def number(row: dict, col: str, line: int) -> float:
        try:
            x = float(row[col])
        except (TypeError, ValueError):
            raise InputError(f"Line {line} of {path} has a non-numeric '{col}'.") from None
        if not math.isfinite(x):
            raise InputError(f"Line {line} of {path} has a NaN or infinite '{col}'.")
        return x

    configs: list[ExternalConfig] = []
    latencies: list[tuple[str, str, float, float, float]] = []
    seen: set[tuple] = set()
    for i, row in enumerate(rows):
        line = i + 2
        light, heavy = model(row["light_model"], line), model(row["heavy_model"], line)
        if light == heavy:
            raise InputError(f"Line {line} of {path} pairs model '{light}' with itself.")
        r = number(row, "router_ratio", line) if has_r else 0.0
        d = number(row, d_col, line)  # type: ignore[arg-type]
        if not (0 <= r <= 1 and 0 <= d <= 1):
            raise InputError(f"Line {line} of {path} has a ratio outside [0, 1].")
        key = (light, heavy, round(r, 9), round(d, 9))
        if key in seen:
            raise InputError(f"Line {line} of {path} repeats configuration {key}.")
        seen.add(key)
        values = {metric: number(row, col, line) for col, metric in metrics.items()}
        configs.append(ExternalConfig(light, heavy, r, d, values))
        if "latency" in columns:
            latencies.append((light, heavy, r, d, number(row, "latency", line)))
    return configs, latencies


def nominal_latency(r: float, d: float, l_light: float, l_heavy: float) -> float:
    """HADIS's expected per-query latency for (r, d): see docs/architecture.md."""
    t = r + (1 - r) * d
    return (1 - t) * l_light + r * l_heavy + (1 - r) * d * (l_light + l_heavy)
