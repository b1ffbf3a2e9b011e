"""hadis-profile discriminator: the HADIS-style learned head, proxies, plug-ins, CLI.

"Real" images are drawn here (smooth sky gradients with a sun and a ground
band); "generated" ones come from the tiny zoo via ``run --save-images``. The
encoder is the tiny random-weight CLIP of the tiny zoo, so the numbers mean
nothing beyond "the pipeline learns a separable problem".
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("transformers")
pytest.importorskip("safetensors")
PIL_Image = pytest.importorskip("PIL.Image")

from measure_helpers import tiny_zoo  # noqa: E402

from hadis_profile import discriminator as D  # noqa: E402
from hadis_profile.errors import HadisError  # noqa: E402
from hadis_profile.fileio import sha256_file  # noqa: E402
from hadis_profile.measure import discriminator as MD  # noqa: E402
from hadis_profile.measure import discriminator_run as DR  # noqa: E402
from hadis_profile.measure import encoder as E  # noqa: E402
from hadis_profile.measure import profiler as P  # noqa: E402
from hadis_profile.measure.pipelines import content_hash  # noqa: E402
from hadis_profile.pareto import choose_confidence_scorer, measurements_for  # noqa: E402
from hadis_profile.store import RunStore  # noqa: E402

MODELS = ["tiny-sd1-light", "tiny-sd1-heavy"]
PROMPTS = [f"a photo of a {a} {b}" for a in ("red", "blue", "old") for b in ("cat", "house")]
K = 2  # images per prompt -> 2 models x 6 prompts x 2 = 24 generated images
N_REAL = 24


def draw_sky(rng: np.random.Generator, size: int = 64) -> np.ndarray:
    """A smooth 'real' image: vertical blue gradient, a sun disc, a dark ground band."""
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1)
    top = rng.uniform([10, 60, 150], [80, 140, 255])
    bottom = rng.uniform([150, 190, 220], [210, 235, 255])
    img = top * (1 - yy[..., None]) + bottom * yy[..., None]
    cx, cy, r = rng.uniform(0.2, 0.8), rng.uniform(0.15, 0.5), rng.uniform(0.06, 0.15)
    img[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = rng.uniform([230, 200, 60], [255, 240, 140])
    img[yy > rng.uniform(0.7, 0.9)] = rng.uniform([20, 60, 20], [70, 120, 60])
    return img.round().clip(0, 255).astype(np.uint8)


def write_real(folder: Path, n: int, seed: int = 1, corrupt: int = 0) -> Path:
    """n drawn images (png, jpg, webp; some in a subfolder) plus ``corrupt`` broken files."""
    rng = np.random.default_rng(seed)
    (folder / "sub").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        ext = ("png", "jpg", "webp")[i % 3]
        where = folder / "sub" if i % 4 == 0 else folder
        PIL_Image.fromarray(draw_sky(rng)).save(where / f"real_{i:03d}.{ext}")
    for i in range(corrupt):
        (folder / f"broken_{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (folder / "notes.txt").write_text("not an image")
    return folder


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny run with saved images (and the profiler's CLIP confidences) + a real set."""
    tz = tiny_zoo()
    root = tmp_path_factory.mktemp("disc")
    prompts = root / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    opts = P.RunOptions(
        zoo=tz.zoo_path,
        prompts=prompts,
        out=root / "run",
        models=MODELS,
        images_per_prompt=K,
        batch_sizes=(1,),
        warmup=0,
        reps=1,
        gen_batch=12,
        device="cpu",
        scorers=[f"clip_score:{tz.clip_path}"],
        discriminator="clip",
        save_images=True,
        router=False,
    )
    P.run_profile(opts)
    real = write_real(root / "real", N_REAL, corrupt=1)
    return {"tz": tz, "root": root, "run": root / "run", "real": real, "prompts": prompts}


@pytest.fixture(scope="module")
def trained(world, tmp_path_factory):
    out = tmp_path_factory.mktemp("head")
    res = DR.train_discriminator(
        world["real"],
        world["run"],
        encoder=str(world["tz"].clip_path),
        val_fraction=0.25,
        batch_size=16,
        seed=0,
        out=out / "head.safetensors",
        feature_cache=out / "cache",
    )
    return res


def copy_run(world: dict, dest: Path) -> Path:
    shutil.copytree(world["run"], dest)
    return dest


def cli(capsys, *args: str) -> tuple[int, str, str]:
    """``hadis-profile ARGS`` in-process through ``main()`` (errors become one line)."""
    from hadis_profile import cli as C

    old = sys.argv
    sys.argv = ["hadis-profile", *map(str, args)]
    try:
        C.main()
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    finally:
        sys.argv = old
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code: int, err: str, expect: int = 1) -> str:
    assert code == expect, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error:")
    return lines[0]


# --------------------------------------------------------------------------- pure helpers


def test_roc_auc_equals_brute_force_pair_counting():
    rng = np.random.default_rng(0)
    for _ in range(300):
        n = int(rng.integers(2, 40))
        y = rng.integers(0, 2, n)
        y[:2] = (1, 0)
        s = rng.integers(0, 6, n).astype(float)  # many ties
        if rng.random() < 0.5:
            s = s + rng.normal(0, 1e-3, n) * (rng.random(n) < 0.5)
        pos, neg = s[y == 1], s[y == 0]
        brute = np.mean([(p > q) + 0.5 * (p == q) for p in pos for q in neg])
        assert D.roc_auc(y, s) == pytest.approx(brute, abs=1e-12)
    assert D.roc_auc([1, 1, 0, 0], [0.9, 0.8, 0.1, 0.2]) == 1.0
    assert D.roc_auc([1, 1, 0, 0], [0.1, 0.2, 0.9, 0.8]) == 0.0
    assert D.roc_auc([1, 0], [0.5, 0.5]) == 0.5
    with pytest.raises(ValueError):
        D.roc_auc([1, 1], [0.1, 0.2])


def test_stratified_split_is_seeded_and_keeps_both_classes():
    y = np.r_[np.ones(10, int), np.zeros(31, int)]
    tr, va = D.stratified_split(y, 0.2, seed=3)
    assert set(tr).isdisjoint(va) and len(tr) + len(va) == len(y)
    assert (y[va] == 1).sum() == 2 and (y[va] == 0).sum() == 6
    tr2, va2 = D.stratified_split(y, 0.2, seed=3)
    assert np.array_equal(va, va2) and np.array_equal(tr, tr2)
    assert not np.array_equal(va, D.stratified_split(y, 0.2, seed=4)[1])
    tr, va = D.stratified_split(np.array([1, 1, 0, 0]), 0.01, seed=0)  # at least one each side
    assert sorted(np.array([1, 1, 0, 0])[va]) == [0, 1] and len(tr) == 2


def test_importing_the_module_does_not_import_torch():
    code = (
        "import sys, hadis_profile.discriminator, hadis_profile.cli; print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_choosing_the_confidence_scorer(tmp_path):
    from hadis_profile.synthetic import write_synthetic_run

    store = write_synthetic_run(tmp_path / "syn", n_prompts=6)
    try:
        (first,) = store.confidence_scorers()

        def choose(requested=None):
            latest = (store.provenance.get("discriminator") or {}).get("scorer_id")
            return choose_confidence_scorer(
                store.confidence_scorers(), latest=latest, requested=requested
            )

        assert choose() == first
        light = next(iter(store.models()))
        k = store.image_ids(light).shape[1]
        store.put_confidences_bulk(light, np.full((6, k), 0.5), scorer="confidence:hadis-head:a")
        store.put_confidences_bulk(light, np.full((6, k), 0.4), scorer="confidence:hadis-head:b")
        with pytest.raises(HadisError, match="several scorers"):
            choose()
        with pytest.raises(HadisError, match="several scorers"):  # the store never guesses
            store.load_measurements()
        with pytest.raises(HadisError, match="matches several of"):
            choose("confidence:hadis-head")
        assert choose("confidence:hadis-head:b") == "confidence:hadis-head:b"
        spec = {"kind": "learned", "scorer_id": "confidence:hadis-head:a"}
        DR.record_discriminator(store, spec)
        assert choose() == "confidence:hadis-head:a"
        assert measurements_for(store).provenance["discriminator"] == spec
        prov = store.provenance
        assert D.discriminator_for_table(prov, "confidence:hadis-head:a") == spec
        assert D.discriminator_for_table(prov, first) == {"scorer_id": first}
    finally:
        store.close()


# --------------------------------------------------------------------------- training


def test_training_beats_chance_and_records_its_data(world, trained):
    m = trained.metadata["metrics"]
    assert m["val_accuracy"] >= 0.8 and m["val_auc"] >= 0.9, m
    assert m["n_val"] == {"real": 6, "generated": 6} and m["n_train"] == {
        "real": 18,
        "generated": 18,
    }
    meta = trained.metadata
    assert meta["encoder"] == str(world["tz"].clip_path.resolve())
    assert meta["dim"] == 16 and meta["architecture"].startswith("Linear(16, 256)")
    reals = sorted(p for p in world["real"].rglob("real_*"))
    assert meta["data"]["real_sha256"] == D.set_hash(sha256_file(p) for p in reals)
    assert meta["data"]["n_real"] == N_REAL and meta["data"]["n_generated"] == 24
    assert meta["data"]["unreadable_skipped"] == 1  # broken_0.png: skipped, counted
    assert [p.name for p, _ in trained.unreadable] == ["broken_0.png"]
    assert meta["data"]["generated_models"] == sorted(MODELS)
    assert meta["hyperparameters"]["seed"] == 0 and meta["hyperparameters"]["epochs"] == 20
    head = MD.load_head(trained.head_path)
    assert head.sha256 == trained.head_sha256 == sha256_file(trained.head_path)
    assert trained.scorer_id == f"confidence:hadis-head:{head.sha256[:12]}"
    assert head.metadata == meta
    side = json.loads(trained.metadata_path.read_text())
    assert side["head_sha256"] == head.sha256 and side["metrics"] == m


def test_training_is_deterministic_and_hits_the_feature_cache(world, trained, tmp_path):
    assert trained.encoded == N_REAL + 24 and trained.cache_hits == 0
    cache = trained.cache_path.parent
    again = DR.train_discriminator(
        world["real"],
        world["run"],
        encoder=str(world["tz"].clip_path),
        val_fraction=0.25,
        batch_size=16,
        seed=0,
        out=tmp_path / "again.safetensors",
        feature_cache=cache,
    )
    assert again.cache_hits == N_REAL + 24 and again.encoded == 0
    assert again.head_path.read_bytes() == trained.head_path.read_bytes()
    assert again.metadata["metrics"] == trained.metadata["metrics"]
    other = DR.train_discriminator(
        world["real"],
        world["run"],
        encoder=str(world["tz"].clip_path),
        val_fraction=0.25,
        batch_size=16,
        seed=1,
        out=tmp_path / "seed1.pt",  # torch.save format
        feature_cache=cache,
    )
    assert other.encoded == 0 and other.head_sha256 != trained.head_sha256
    assert MD.load_head(other.head_path).metadata["hyperparameters"]["seed"] == 1


def test_confidence_is_p_real_in_unit_interval(world, trained):
    disc = MD.LearnedDiscriminator(trained.head_path, encoder=str(world["tz"].clip_path))
    assert disc.scorer_id == trained.scorer_id
    rng = np.random.default_rng(99)
    real = [PIL_Image.fromarray(draw_sky(rng)) for _ in range(4)]
    fake = sorted(world["run"].glob("images/*/*.png"))[:4]
    fake_t = (
        torch.stack(
            [torch.from_numpy(np.array(PIL_Image.open(p))).permute(2, 0, 1) for p in fake]
        ).float()
        / 255
    )  # NCHW floats, as the profiler passes them
    c_real = disc.confidence(real, ["x"] * 4)
    c_fake = disc.confidence(fake_t, ["x"] * 4)
    for c in (c_real, c_fake):
        assert c.shape == (4,) and np.all((c >= 0) & (c <= 1))
    assert c_real.min() > c_fake.max()
    feats = disc.encoder.encode(real)
    logits = torch.nn.Sequential(torch.nn.Linear(16, 256), torch.nn.ReLU(), torch.nn.Linear(256, 2))
    logits.load_state_dict(disc.head.state)
    want = torch.softmax(logits(torch.from_numpy(feats)), 1)[:, 1].detach().numpy()
    assert np.allclose(c_real, want, atol=1e-6)
    with pytest.raises(HadisError, match="2 images but 1 prompts"):
        disc.confidence(real[:2], ["x"])


# --------------------------------------------------------------------------- scoring + pareto


def test_score_cli_writes_one_confidence_per_image_and_pareto_records_it(
    world, trained, tmp_path, capsys
):
    run = copy_run(world, tmp_path / "run")
    code, out, err = cli(
        capsys,
        "discriminator",
        "score",
        "--run",
        run,
        "--head",
        trained.head_path,
        "--device",
        "cpu",
        "--batch-size",
        "7",
    )
    assert code == 0, err
    assert f"Scored 24 images under {trained.scorer_id}" in out
    with RunStore.open(run) as store:
        rows = store._db.execute(
            "SELECT COUNT(*), COUNT(DISTINCT image_id), MIN(value), MAX(value) FROM confidences "
            "WHERE scorer=?",
            (trained.scorer_id,),
        ).fetchone()
        assert rows[0] == rows[1] == 24 and 0 <= rows[2] <= rows[3] <= 1
        assert store.provenance["discriminator"]["scorer_id"] == trained.scorer_id
        latest = store.provenance["discriminator"]["scorer_id"]
        assert choose_confidence_scorer(store.confidence_scorers(), latest=latest) == (
            trained.scorer_id
        )  # the latest of two
        meas = store.load_measurements(confidence_scorer=trained.scorer_id)
        assert meas.models["tiny-sd1-light"].confidence.shape == (len(PROMPTS),)
    code, out, _ = cli(
        capsys,
        "discriminator",
        "score",
        "--run",
        run,
        "--head",
        trained.head_path,
        "--device",
        "cpu",
    )
    assert code == 0 and "Scored 0 images" in out and "(24 were already scored)" in out

    code, out, err = cli(capsys, "pareto", "--run", run, "-o", tmp_path / "t.json")
    assert code == 0, err
    prov = json.loads((tmp_path / "t.json").read_text())["payload"]["provenance"]
    disc = prov["discriminator"]
    assert disc["kind"] == "learned" and disc["scorer_id"] == trained.scorer_id
    assert disc["head"]["sha256"] == trained.head_sha256
    assert disc["encoder"] == trained.metadata["encoder"]
    assert disc["metrics"]["val_auc"] == trained.metadata["metrics"]["val_auc"]

    # the profiler's CLIP confidence is still selectable, and the table says so
    clip_id = f"clip_confidence:clip@{content_hash(world['tz'].clip_path)[:12]}"
    code, _, err = cli(
        capsys, "pareto", "--run", run, "-o", tmp_path / "c.json", "--confidence", "clip_conf"
    )
    assert code == 0, err
    prov = json.loads((tmp_path / "c.json").read_text())["payload"]["provenance"]
    assert prov["discriminator"] == {"scorer_id": clip_id}
    x = tmp_path / "x.json"
    code, _, err = cli(capsys, "pareto", "--run", run, "-o", x, "--confidence", "zz")
    line = one_line_error(code, err, expect=2)  # a bad argument value: exit 2, naming its flag
    assert "--confidence 'zz' is not among the run's confidence scorers" in line


def test_proxy_and_plugin_kinds(world, tmp_path, capsys, monkeypatch):
    run = copy_run(world, tmp_path / "run")
    tz = world["tz"]
    pick = f"pick:{tz.pickscore_path},{tz.pickscore_path}"
    code, out, err = cli(
        capsys,
        "discriminator",
        "score",
        "--run",
        run,
        "--kind",
        pick,
        "--device",
        "cpu",
        "-m",
        "tiny-sd1-light",
    )
    assert code == 0, err
    pick = f"pickscore@{content_hash(tz.pickscore_path)[:12]}"  # portable: name + content hash
    assert f"Scored 12 images under pick_confidence:{pick}" in out
    (tmp_path / "my_disc_plugin.py").write_text(
        "def brightness(images, prompts):\n"
        "    return [float(im.float().mean()) / 255 for im in images]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    code, out, err = cli(
        capsys, "discriminator", "score", "--run", run, "--kind", "my_disc_plugin:brightness"
    )
    assert code == 0, err
    with RunStore.open(run) as store:
        rows = store._db.execute(
            "SELECT i.path, c.value FROM confidences c JOIN images i ON i.id = c.image_id "
            "WHERE c.scorer='my_disc_plugin:brightness'"
        ).fetchall()
        assert len(rows) == 24
        path, value = rows[0]
        assert value == pytest.approx(np.asarray(PIL_Image.open(run / path)).mean() / 255)
        n_pick = store._db.execute(
            "SELECT COUNT(*), MIN(value) >= 0, MAX(value) <= 1 FROM confidences "
            "WHERE scorer LIKE 'pick_confidence:%'"
        ).fetchone()
        assert n_pick == (12, 1, 1)
        kinds = {s["kind"] for s in store.provenance["discriminators"].values()}
        assert kinds == {"pick", "plugin"}


def test_profiler_records_learned_confidences_directly(world, trained, tmp_path):
    tz = world["tz"]
    opts = P.RunOptions(
        zoo=tz.zoo_path,
        prompts=world["prompts"],
        out=tmp_path / "run",
        models=["tiny-sd1-light"],
        limit=2,
        images_per_prompt=K,
        batch_sizes=(1,),
        warmup=0,
        reps=1,
        device="cpu",
        scorers=[f"clip_score:{tz.clip_path}"],
        discriminator=f"learned:{trained.head_path}",
        router=False,
    )
    P.run_profile(opts)
    with RunStore.open(opts.out) as store:
        assert store.provenance["discriminator"]["scorer_id"] == trained.scorer_id
        direct = store.load_measurements().models["tiny-sd1-light"].confidence
    # the same images, scored from the saved PNGs of the first run
    disc = MD.LearnedDiscriminator(trained.head_path)
    with RunStore.open(world["run"]) as store:
        ims = [im for im in DR.run_images(store, ["tiny-sd1-light"]) if im.prompt_id < 2]
    ims.sort(key=lambda im: (im.prompt_id, im.seed_index))
    conf = disc.confidence([PIL_Image.open(im.path) for im in ims], ["x"] * len(ims))
    assert np.allclose(direct, conf.reshape(2, K).mean(axis=1), atol=1e-5)


# --------------------------------------------------------------------------- bad input


def test_bad_real_folders_are_one_sentence(world, tmp_path, capsys, monkeypatch):
    base = ["discriminator", "train", "--run", world["run"], "--encoder", world["tz"].clip_path]
    base += ["--device", "cpu"]
    code, _, err = cli(capsys, *base, "--real", tmp_path / "nope")
    assert "does not exist" in one_line_error(code, err)
    (tmp_path / "file.png").write_bytes(b"x")
    code, _, err = cli(capsys, *base, "--real", tmp_path / "file.png")
    assert "is not a folder" in one_line_error(code, err)
    one = write_real(tmp_path / "one", 1)
    code, _, err = cli(capsys, *base, "--real", one)
    assert "holds 1 readable image;" in one_line_error(code, err)
    # 3 files, 2 of them corrupt: after skipping, too few remain
    bad = write_real(tmp_path / "bad", 1, corrupt=2)
    code, _, err = cli(capsys, *base, "--real", bad)
    assert "holds 1 readable image;" in one_line_error(code, err)
    code, _, err = cli(capsys, *base, "--real", world["real"], "--val-fraction", "1.5")
    assert "--val-fraction" in one_line_error(code, err, expect=2)
    code, _, err = cli(capsys, *base, "--real", world["real"], "-m", "nope")
    assert "Model 'nope' is not in the run" in one_line_error(code, err)

    def denied(path):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(E.os, "listdir", denied)  # root ignores chmod, so simulate it
    code, _, err = cli(capsys, *base, "--real", world["real"])
    assert "Cannot read the real image folder" in one_line_error(code, err)


def test_run_without_saved_images_is_one_sentence(world, tmp_path, capsys):
    from hadis_profile.synthetic import write_synthetic_run

    write_synthetic_run(tmp_path / "syn", n_prompts=6).close()
    code, _, err = cli(
        capsys, "discriminator", "train", "--real", world["real"], "--run", tmp_path / "syn"
    )
    assert "has no saved images" in one_line_error(code, err)
    code, _, err = cli(
        capsys, "discriminator", "score", "--run", tmp_path / "syn", "--kind", "clip"
    )
    assert "has no saved images" in one_line_error(code, err)


def test_bad_heads_and_encoders_are_one_sentence(world, trained, tmp_path, capsys):
    run = world["run"]
    score = ["discriminator", "score", "--run", run, "--device", "cpu"]
    code, _, err = cli(
        capsys, *score, "--head", trained.head_path, "--encoder", world["tz"].pickscore_path
    )
    line = one_line_error(code, err)
    assert "was trained on encoder" in line and "differs" in line
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(np.random.default_rng(0).bytes(300))
    code, _, err = cli(capsys, *score, "--head", junk)
    assert "is not a hadis-profile discriminator head" in one_line_error(code, err)
    code, _, err = cli(capsys, *score, "--head", tmp_path / "missing.safetensors")
    assert "does not exist" in one_line_error(code, err, expect=2)  # a file it names: 2
    code, _, err = cli(capsys, *score)  # learned without a head
    assert "--head" in one_line_error(code, err, expect=2)
    code, _, err = cli(capsys, *score, "--kind", "clip", "--head", trained.head_path)
    assert "--head goes with the learned kind" in one_line_error(code, err, expect=2)


def test_corrupt_generated_image_is_counted_after_scoring_the_rest(
    world, trained, tmp_path, capsys
):
    run = copy_run(world, tmp_path / "run")
    victim = sorted(run.glob("images/*/*.png"))[3]
    victim.write_bytes(b"garbage")
    code, _, err = cli(
        capsys,
        "discriminator",
        "score",
        "--run",
        run,
        "--head",
        trained.head_path,
        "--device",
        "cpu",
    )
    line = one_line_error(code, err)
    assert "1 of 24 saved images could not be read" in line and victim.name in line
    with RunStore.open(run) as store:
        n = store._db.execute(
            "SELECT COUNT(*) FROM confidences WHERE scorer=?", (trained.scorer_id,)
        ).fetchone()[0]
    assert n == 23


def test_cli_error_in_a_subprocess_has_no_traceback(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "hadis_profile.cli",
            "discriminator",
            "train",
            "--real",
            str(tmp_path / "none"),
            "--run",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr + proc.stdout
    assert len(proc.stderr.strip().splitlines()) == 1 and "does not exist" in proc.stderr
