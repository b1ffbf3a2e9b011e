"""``hadis-profile import``: the HADIS reference data set and generic files.

Truth comes from reading the source files here with plain Python / numpy, not
through the importer's readers.
"""

from __future__ import annotations

import csv
import hashlib
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from hadis_profile.cli import app
from hadis_profile.errors import HadisError, InputError, ParameterError, UsageError
from hadis_profile.importer import (
    HADIS_FID_METRIC,
    ImportSpec,
    ModelSource,
    hadis_reference_spec,
    import_hadis_reference,
    parse_latency_spec,
    read_latency_yaml,
    read_prompts,
    run_import,
)
from hadis_profile.measurements import ExternalConfig
from hadis_profile.store import DB_NAME, RunStore

HADIS_NAMES = ["sdxl-lightning", "sd3.5-large-turbo", "sd3.5-medium", "sd3.5-large"]


# --------------------------------------------------------------------------- real HADIS data


@pytest.fixture(scope="module")
def hadis_dir(shared_data: Path) -> Path:
    d = shared_data / "hadis-reference"
    if not d.is_dir():
        pytest.skip(f"HADIS reference data not available: {d} is absent")
    return d


@pytest.fixture(scope="module")
def hadis_run(hadis_dir: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "hadis-ref"
    import_hadis_reference(hadis_dir, out)
    return out


@pytest.fixture(scope="module")
def hadis(hadis_run: Path):
    with RunStore.open(hadis_run) as store:
        yield store, store.load_measurements()


def test_hadis_prompts_models_latency(hadis, hadis_dir: Path) -> None:
    store, m = hadis
    lines = hadis_dir.joinpath("prompts_imagenet1k_5k.txt").read_bytes().split(b"\n")
    assert m.n_prompts == 5000
    assert m.prompts[0] == lines[0].decode("ascii")
    assert m.prompts[4999] == lines[4999].decode("ascii", "ignore")
    assert m.ordered_models() == HADIS_NAMES
    assert [m.models[n].batch1_latency() for n in HADIS_NAMES] == [0.5, 1.3, 13.0, 27.0]
    assert [m.models[n].steps for n in HADIS_NAMES] == [2, 4, 50, 50]
    assert m.provenance["hardware"]["label"] == "l40s"
    assert m.provenance["source"] == "hadis-reference"
    shas = [hashlib.sha256(p.encode()).hexdigest() for p in m.prompts]
    assert m.provenance["prompt_set_hash"] == hashlib.sha256("\n".join(shas).encode()).hexdigest()
    with sqlite3.connect(store.root / DB_NAME) as db:
        assert db.execute("SELECT COUNT(*) FROM confidences").fetchone()[0] == 4 * 20000


def test_hadis_confidence_matches_the_files(hadis, hadis_dir: Path) -> None:
    _, m = hadis
    with open(hadis_dir / "confidence_scores" / "scores_model_0.txt") as f:
        first4 = [float(next(f).split()[1]) for _ in range(4)]
    assert m.models["sdxl-lightning"].confidence[0] == pytest.approx(sum(first4) / 4, rel=1e-12)
    for i, name in enumerate(HADIS_NAMES):
        raw = np.loadtxt(hadis_dir / "confidence_scores" / f"scores_model_{i}.txt")
        expected = raw[:, 1].reshape(5000, 4).mean(axis=1)
        np.testing.assert_allclose(m.models[name].confidence, expected, rtol=1e-12)


def test_hadis_router_scores_match_numpy(hadis, hadis_dir: Path) -> None:
    _, m = hadis
    with open(hadis_dir / "prompt_features.csv", newline="") as f:
        rows = list(csv.reader(f))
    x = np.array([[float(v) for v in r[1:]] for r in rows[1:]])
    z = (x - x.mean(axis=0)) / x.std(axis=0)  # population std
    expected = z @ np.array([0.85, 0.32, 0.72, 0.99, 0.76, 0.07, 0.78, 0.01])
    np.testing.assert_allclose(m.router_scores, expected, rtol=1e-12, atol=1e-12)
    assert m.router_spec["features"] == rows[0][1:]
    # HADIS's published weights (shared/data README and the paper).
    assert m.router_spec["weights"] == [0.85, 0.32, 0.72, 0.99, 0.76, 0.07, 0.78, 0.01]
    np.testing.assert_allclose(m.router_spec["std"], x.std(axis=0))
    assert [r[0] for r in rows[1:]] == m.prompts  # row i of the CSV is prompt i


def test_hadis_external_sweep(hadis, hadis_dir: Path) -> None:
    _, m = hadis
    assert len(m.external) == 726
    with open(hadis_dir / "config_results_hybrid.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for row, cfg in zip(rows, m.external, strict=True):
        assert cfg == ExternalConfig(
            HADIS_NAMES[int(row["light_model"])],
            HADIS_NAMES[int(row["heavy_model"])],
            float(row["router_ratio"]),
            float(row["disc_ratio"]),
            {HADIS_FID_METRIC: float(row["fid"])},
        )
    assert m.external[0] == ExternalConfig(
        "sdxl-lightning", "sd3.5-large-turbo", 0.0, 0.0, {HADIS_FID_METRIC: 29.75}
    )


def test_hadis_run_json_and_no_leftovers(hadis_run: Path) -> None:
    assert (hadis_run / "run.json").is_file()
    assert not [p for p in hadis_run.parent.iterdir() if p.name.startswith(".")]


def test_hadis_cli_import_refuses_overwrite_and_fresh_replaces(
    hadis_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "outputs" / "hadis-ref"
    runner = CliRunner()
    args = ["import", "hadis-reference", str(hadis_dir), "--out", str(out)]
    res = runner.invoke(app, [*args, "--latency", "sdxl-lightning=1:0.45,4:1.2", "--no-external"])
    assert res.exit_code == 0, res.output
    assert "5000" in res.output
    with RunStore.open(out) as store:
        lat = store.latency("sdxl-lightning")
        assert (lat[1].mean_s, lat[4].mean_s) == (0.45, 1.2)
        assert store.latency("sd3.5-large")[1].mean_s == 27.0
        assert store.external_configs() == []
    res = runner.invoke(app, args)
    assert isinstance(res.exception, UsageError)  # the library's ParameterError, naming the flag
    assert str(res.exception) == f"{out} already exists; use --fresh to replace it."
    res = runner.invoke(app, [*args, "--fresh"])
    assert res.exit_code == 0, res.output
    with RunStore.open(out) as store:
        assert store.latency("sdxl-lightning")[1].mean_s == 0.5
        assert len(store.external_configs()) == 726


# --------------------------------------------------------------------------- generic files


@pytest.fixture
def small(tmp_path: Path) -> dict:
    """A 3-prompt, 2-model, 2-image data set in the HADIS file layout."""
    d = tmp_path / "src"
    d.mkdir()
    prompts = ["a cat", "two dogs on a sofa", "a caf\u00e9 at night"]
    (d / "prompts.txt").write_bytes("\n".join(prompts).encode("utf-8") + b"\n")
    conf = {
        "light": np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.4, 0.6], [0.5, 0.5], [0.1, 0.9]]),
        "heavy": np.array([[0.2, 0.8], [0.3, 0.7], [0.2, 0.8], [0.1, 0.9], [0.2, 0.8], [0.0, 1.0]]),
    }
    for name, arr in conf.items():
        np.savetxt(d / f"{name}.txt", arr)
    feats = np.array([[2, 0], [5, 1], [4, 3]], dtype=float)
    with open(d / "features.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["prompt", "length", "objects"])
        for p, row in zip(prompts, feats, strict=True):
            w.writerow([p, *row])
    (d / "ext.csv").write_text(
        "light_model,heavy_model,router_ratio,disc_ratio,threshold,latency,fid\n"
        "0,1,0.0,0.5,0.5,1.5,25.0\n"
        "light,heavy,0.5,0.0,0.5,1.25,22.0\n"
    )
    (d / "lat.yaml").write_text("light: {1: 0.5, 8: 2.0}\nheavy: 2.0\n")
    return {"dir": d, "prompts": prompts, "conf": conf, "feats": feats}


def _spec(small: dict, **changes) -> ImportSpec:
    d = small["dir"]
    spec = ImportSpec(
        prompts_file=d / "prompts.txt",
        models=[
            ModelSource("light", {"repo": "l"}, 2, d / "light.txt"),
            ModelSource("heavy", {"repo": "h"}, 50, d / "heavy.txt"),
        ],
        features_file=d / "features.csv",
        router_weights=[1.0, 0.5],
        latencies=read_latency_yaml(d / "lat.yaml"),
        hardware_label="a100",
        external_file=d / "ext.csv",
        scorer="disc",
        images_per_prompt=2,
    )
    for k, v in changes.items():
        setattr(spec, k, v)
    return spec


def test_generic_import_round_trip(small: dict, tmp_path: Path) -> None:
    out = tmp_path / "runs" / "mine"
    summary = run_import(_spec(small), out)
    assert summary.run_id == "mine" and summary.external_rows == 2
    assert summary.external_latency_max_dev_s == pytest.approx(0.0)  # file matches the formula
    with RunStore.open(out) as store:
        m = store.load_measurements()
    assert m.prompts == small["prompts"]  # UTF-8 kept for generic files
    np.testing.assert_allclose(m.models["light"].confidence, [0.15, 0.65, 0.7])
    np.testing.assert_allclose(m.models["heavy"].confidence, [0.75, 0.85, 0.9])
    x = small["feats"]
    expected = ((x - x.mean(0)) / x.std(0)) @ [1.0, 0.5]
    np.testing.assert_allclose(m.router_scores, expected)
    assert m.models["light"].latency[8].mean_s == 2.0 and m.models["heavy"].latency[1].mean_s == 2.0
    assert m.external == [
        ExternalConfig("light", "heavy", 0.0, 0.5, {HADIS_FID_METRIC: 25.0}),
        ExternalConfig("light", "heavy", 0.5, 0.0, {HADIS_FID_METRIC: 22.0}),
    ]
    assert set(m.provenance["imported_from"]) == {
        "prompts.txt",
        "features.csv",
        "ext.csv",
        "light.txt",
        "heavy.txt",
    }


def _assert_nothing_written(out: Path) -> None:
    assert not out.exists()
    if out.parent.exists():
        assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda s, d: setattr(s, "prompts_file", d / "nope.txt"), r"nope\.txt does not exist"),
        (lambda s, d: np.savetxt(d / "light.txt", np.ones((5, 2)) / 2), r"light\.txt has 5 rows"),
        (
            lambda s, d: np.savetxt(d / "heavy.txt", np.full((6, 2), np.nan)),
            r"heavy\.txt has 6 NaN",
        ),
        (lambda s, d: np.savetxt(d / "heavy.txt", np.full((6, 2), 2.0)), r"outside \[0, 1\]"),
        (lambda s, d: np.savetxt(d / "heavy.txt", np.ones((6, 1))), r"heavy\.txt has 1 column"),
        (lambda s, d: (d / "light.txt").write_text("0.1 zero\n"), r"light\.txt is not a numeric"),
        (
            lambda s, d: (d / "features.csv").write_text("prompt,a\nx,1\ny,2\nz,3\n"),
            r"Row 2 of the prompt features file .* another prompt",
        ),
        (
            lambda s, d: (d / "features.csv").write_text("a,b\n1,1\n1,2\n1,3\n"),
            r"Prompt feature 'a' is constant",
        ),
        (lambda s, d: setattr(s, "router_weights", [1.0]), "1 router weights"),
        (
            lambda s, d: (d / "ext.csv").write_text(
                "light_model,heavy_model,disc_ratio,fid\n0,7,0,1\n"
            ),
            r"Line 2 of .*ext\.csv names model '7'",
        ),
        (
            lambda s, d: (d / "ext.csv").write_text(
                "light_model,heavy_model,disc_ratio,fid\n0,1,0,nan\n"
            ),
            r"Line 2 of .*ext\.csv has a NaN",
        ),
        (
            lambda s, d: (d / "ext.csv").write_text("light_model,heavy_model,fid\n0,1,3\n"),
            "lacks column",
        ),
        (lambda s, d: setattr(s, "latencies", {"ghost": {1: 1.0}}), "unknown model 'ghost'"),
        (lambda s, d: setattr(s, "external_metrics", {"fid": "fidelity:x"}), "Unknown metric"),
    ],
)
def test_bad_input_is_one_sentence_and_writes_nothing(small, tmp_path, change, match) -> None:
    spec = _spec(small)
    change(spec, small["dir"])
    out = tmp_path / "runs" / "bad"
    with pytest.raises(HadisError, match=match) as e:
        run_import(spec, out)
    assert "\n" not in str(e.value)
    _assert_nothing_written(out)


def test_existing_run_needs_fresh_and_features_need_weights(small, tmp_path) -> None:
    out = tmp_path / "runs" / "twice"
    run_import(_spec(small), out)
    with pytest.raises(ParameterError, match="already exists; use fresh to replace it") as e:
        run_import(_spec(small), out)
    assert e.value.param == "fresh" and e.value.exit_code == 2
    spec = _spec(small)
    spec.router_weights = None
    with pytest.raises(ParameterError, match="without router_weights") as e:
        run_import(spec, tmp_path / "runs" / "no-weights")
    _assert_nothing_written(tmp_path / "runs" / "no-weights")


def test_failure_while_writing_leaves_no_run(small, tmp_path, monkeypatch) -> None:
    def boom(self, configs):
        raise HadisError("Simulated failure while writing.")

    monkeypatch.setattr(RunStore, "put_external_configs", boom)
    out = tmp_path / "runs" / "half"
    with pytest.raises(HadisError, match="Simulated"):
        run_import(_spec(small), out)
    _assert_nothing_written(out)


def test_failed_fresh_import_keeps_the_old_run(small, tmp_path, monkeypatch) -> None:
    out = tmp_path / "runs" / "keep"
    run_import(_spec(small), out)
    np.savetxt(small["dir"] / "light.txt", np.ones((4, 2)) / 2)  # now the wrong row count
    with pytest.raises(HadisError, match="has 4 rows"):
        run_import(_spec(small), out, fresh=True)
    with RunStore.open(out) as store:
        np.testing.assert_allclose(
            store.load_measurements().models["light"].confidence, [0.15, 0.65, 0.7]
        )
    assert [p.name for p in out.parent.iterdir()] == ["keep"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("sdxl-lightning=1:0.5", ("sdxl-lightning", {1: 0.5})),
        ("m=1:0.5,4:1.6", ("m", {1: 0.5, 4: 1.6})),
        ("m=0.7", ("m", {1: 0.7})),
    ],
)
def test_parse_latency_spec(text, expected) -> None:
    assert parse_latency_spec(text) == expected


@pytest.mark.parametrize(
    "text", ["sdxl-lightning", "=1:0.5", "m=", "m=1:", "m=x:0.5", "m=0:0.5", "m=1:-2", "m=1:nan"]
)
def test_malformed_latency_spec_is_refused(text) -> None:
    with pytest.raises(HadisError, match="Latency spec") as e:
        parse_latency_spec(text)
    assert "\n" not in str(e.value)


def test_malformed_latency_yaml_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "lat.yaml"
    p.write_text("m: {1: fast}\n")
    with pytest.raises(HadisError, match="'fast' is not a number"):
        read_latency_yaml(p)
    p.write_text("- a list\n")
    with pytest.raises(HadisError, match="must map model names"):
        read_latency_yaml(p)


def test_ascii_prompts_drop_undecodable_bytes(tmp_path: Path) -> None:
    p = tmp_path / "p.txt"
    p.write_bytes(b"l'oreal paris m\xc3\xa9tal\r\nplain\n")
    assert read_prompts(p, ascii_only=True) == ["l'oreal paris mtal", "plain"]
    assert read_prompts(p) == ["l'oreal paris m\u00e9tal", "plain"]
    p.write_bytes(b"a\n\nb\n")
    with pytest.raises(HadisError, match="empty prompt on line 2"):
        read_prompts(p)


def test_hadis_preset_latency_overrides(tmp_path: Path) -> None:
    spec = hadis_reference_spec(tmp_path, latencies={"0": {4: 1.6}, "sd3.5-large": {1: 30.0}})
    assert spec.latencies["sdxl-lightning"] == {1: 0.5, 4: 1.6}
    assert spec.latencies["sd3.5-large"] == {1: 30.0}
    assert [m.name for m in spec.models] == HADIS_NAMES
    with pytest.raises(HadisError, match="unknown model 'sdxl'"):
        hadis_reference_spec(tmp_path, latencies={"sdxl": {1: 1.0}})
    with pytest.raises(HadisError, match="does not exist"):
        hadis_reference_spec(tmp_path / "missing")


def test_generic_cli(small: dict, tmp_path: Path) -> None:
    d = small["dir"]
    out = tmp_path / "runs" / "cli"
    res = CliRunner().invoke(
        app,
        [
            "import", "files", "--out", str(out), "--prompts", str(d / "prompts.txt"),
            "--model", f"light={d / 'light.txt'}", "--model", f"heavy={d / 'heavy.txt'}",
            "--features", str(d / "features.csv"), "--weights", "1,0.5",
            "--latency", "light=1:0.5", "--latency", "heavy=2.0", "--hardware", "a100",
            "--external", str(d / "ext.csv"),
        ],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    with RunStore.open(out) as store:
        m = store.load_measurements()
    assert m.ordered_models() == ["light", "heavy"] and len(m.external) == 2
    res = CliRunner().invoke(
        app, ["import", "files", "--out", str(tmp_path / "x"), "--prompts", str(d / "prompts.txt"),
              "--model", "light", "--latency", "light=1:zero"],
    )  # fmt: skip
    # CliRunner bypasses main(), so the InputError (exit 2 there) surfaces as the exception.
    assert res.exit_code != 0 and isinstance(res.exception, InputError)
    assert "Latency spec 'light=1:zero'" in str(res.exception)
    base = ["import", "files", "--out", str(tmp_path / "y"), "--prompts", str(d / "prompts.txt")]
    for extra, message in (
        (["--model", "light", "--features", str(d / "features.csv")],
         "Prompt features were given without --weights."),
        (["--model", "=x.txt"], "--model '=x.txt' is malformed; expected NAME[=CONFIDENCE_FILE]."),
        (["--model", "light", "--external-metric", "fid"],
         "--external-metric 'fid' is malformed; expected COLUMN=METRIC_ID."),
    ):  # fmt: skip
        res = CliRunner().invoke(app, [*base, *extra])
        assert isinstance(res.exception, UsageError) and str(res.exception) == message
    assert not (tmp_path / "y").exists()
