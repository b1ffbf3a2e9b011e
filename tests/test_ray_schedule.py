"""The Ray launcher's scheduling, against scripted workers (no Ray, no models: milliseconds).

A fake ``ray`` module stands in for the cluster: each worker runs a unit by
turning it into the events a real worker would stream back (a latency point per
batch size, a record per prompt), or dies on a chosen prompt. What is checked
is the driver's bookkeeping: which worker gets which unit, that a model's prompt
chunks wait for its latency sweep on the worker's label, that a dead worker's
unfinished units go back in the queue and nothing is recorded twice, and that a
unit killing every worker it meets is given up.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from hadis_profile.errors import HadisError
from hadis_profile.measure.devices import DeviceInfo
from hadis_profile.measure.launchers import ray as R
from hadis_profile.measure.units import ModelWork, PromptRecord
from hadis_profile.measurements import LatencyStats


class ActorError(Exception):
    pass


class Unavailable(ActorError):
    pass


class Ref:
    def __init__(self, value=None, error=None):
        self.value, self.error = value, error


class Gen:
    def __init__(self, refs):
        self.refs = list(refs)

    def __next__(self):
        if not self.refs:
            raise StopIteration
        return self.refs.pop(0)


class FakeRay:
    """Just what the launcher calls: wait (first ready, in order), get, kill."""

    exceptions = SimpleNamespace(RayActorError=ActorError, ActorUnavailableError=Unavailable)

    def __init__(self):
        self.killed = []

    def wait(self, items, num_returns=1, timeout=None):
        return items[:1], items[1:]

    def get(self, ref):
        if ref.error is not None:
            raise ref.error
        return ref.value

    def kill(self, handle, no_restart=True):
        self.killed.append(handle.name)


class Worker:
    """A scripted worker: ``die_on(model, prompt, label)`` says when its process dies."""

    def __init__(self, name, label, die_on=lambda *a: False, log=None):
        self.name, self.label, self.die_on, self.log = name, label, die_on, log
        self.run = SimpleNamespace(remote=self._run)
        self.describe = SimpleNamespace(remote=self._describe)

    def _describe(self):
        info = DeviceInfo("cpu", f"device {self.label}", None, self.label)
        return Ref({"info": info, "host": self.name, "libraries": {}})

    def _run(self, u):
        self.log.append(
            (self.name, u.name, u.label, u.batch_sizes, u.prompt_ids, sorted(u.latency))
        )
        refs = []
        for b in u.batch_sizes:
            stats = LatencyStats(b, 0.1 * b, 0.0, 0.1 * b, 0.1 * b, 0.1 * b, reps=3)
            refs.append(Ref(("latency", u.name, SimpleNamespace(stats=stats, infeasible=False))))
        for i in u.prompt_ids:
            if self.die_on(u.name, i, self.label):
                refs.append(Ref(error=ActorError("the worker died")))
                return Gen(refs)
            refs.append(Ref(("prompt", PromptRecord(u.name, i, [i]))))
        return Gen(refs)


class Store:
    """Latency as the recorder stored it (what chunks are dispatched with)."""

    def __init__(self):
        self.points = {}

    def latency(self, model, label):
        got = {b: s for (m, lab, b), s in self.points.items() if m == model and lab == label}
        if not got:
            raise HadisError("no latency on this label")
        return got


class Recorder:
    """Records what would be committed, and checks it is committed once."""

    def __init__(self, store, label="", log=None):
        self.store, self.label = store, label
        self.log_ = (
            log if log is not None else {"latency": [], "prompt": [], "failed": [], "text": []}
        )
        self.progress = SimpleNamespace(task=lambda *a: None, advance=lambda *a: None)

    def for_label(self, label):
        return Recorder(self.store, label, self.log_)

    def begin(self, work, where=""):
        pass

    def loaded(self, *a):
        pass

    def latency(self, model, point):
        key = (model, self.label, point.stats.batch_size)
        assert key not in self.store.points, f"{key} recorded twice"
        self.store.points[key] = point.stats
        self.log_["latency"].append(key)

    def prompt(self, record):
        key = (record.model, record.prompt_id)
        assert key not in self.log_["prompt"], f"{key} recorded twice"
        self.log_["prompt"].append(key)

    def failed(self, model, phase, detail, where=""):
        self.log_["failed"].append((model, phase, detail))

    def log(self, text):
        self.log_["text"].append(text)


def _spec(name):
    return SimpleNamespace(name=name)


def _units(models, labels, n_prompts, chunk):
    out = []
    for m in models:
        for label in labels:
            out.append(ModelWork(_spec(m), (1, 2), (), False, {}, label))
        for start in range(0, n_prompts, chunk):
            out.append(
                ModelWork(_spec(m), prompt_ids=tuple(range(start, min(n_prompts, start + chunk))))
            )
    return out


def _launch(monkeypatch, workers, units):
    fake = FakeRay()
    monkeypatch.setattr(R, "ray_module", lambda: fake)
    launcher = R.RayLauncher()
    launcher._labeler = lambda infos: [i.default_label for i in infos]
    for i, h in enumerate(workers):
        w = R.Worker(i, "GPU", h, state="idle", label=h.label, name=h.name, host=h.name)
        launcher.workers.append(w)
    recorder = Recorder(Store())
    launcher.run(units, None, recorder)
    return recorder.log_, fake


def test_chunks_wait_for_their_sweep_and_workers_keep_their_model(monkeypatch):
    log = []
    workers = [Worker("w0", "gpu", log=log), Worker("w1", "gpu", log=log)]
    got, _ = _launch(monkeypatch, workers, _units(["a", "b"], ["gpu"], 6, 2))
    assert sorted(got["prompt"]) == [(m, i) for m in "ab" for i in range(6)]
    assert sorted(got["latency"]) == [(m, "gpu", b) for m in "ab" for b in (1, 2)]
    assert got["failed"] == []
    for m in "ab":  # no chunk of a model is sent before its sweep on that label
        calls = [c for c in log if c[1] == m]
        assert calls[0][3] == (1, 2)
        assert all(c[2] == "gpu" for c in calls)  # chunks carry the label they were run on
    # each worker took one model's sweep, then stayed on that model while it had units
    assert [(c[0], c[1]) for c in log[:2]] == [("w0", "a"), ("w1", "b")]
    for name in ("w0", "w1"):
        models = [c[1] for c in log if c[0] == name]
        assert models == sorted(models, key=models.index)  # one switch at most, never back


def test_a_second_worker_waits_for_the_sweep_that_picks_the_generation_batch(monkeypatch):
    log = []
    workers = [Worker("w0", "gpu", log=log), Worker("w1", "gpu", log=log)]
    got, _ = _launch(monkeypatch, workers, _units(["a"], ["gpu"], 6, 1))
    assert sorted(got["prompt"]) == [("a", i) for i in range(6)]
    chunks = [c for c in log if c[4]]
    # every chunk went out with the whole sweep known (the batch it generates at), on both
    assert {c[0] for c in chunks} == {"w0", "w1"}
    assert all(c[5] == [1, 2] for c in chunks)


def test_each_label_sweeps_every_model_and_prompts_are_made_once(monkeypatch):
    log = []
    workers = [Worker("h", "h100", log=log), Worker("a", "a100", log=log)]
    got, _ = _launch(monkeypatch, workers, _units(["m1", "m2"], ["h100", "a100"], 4, 1))
    assert sorted(got["latency"]) == [
        (m, lab, b) for m in ("m1", "m2") for lab in ("a100", "h100") for b in (1, 2)
    ]
    for name, label in (("h", "h100"), ("a", "a100")):  # sweeps only on their own label
        assert all(c[2] == label for c in log if c[0] == name and c[3])
    assert sorted(got["prompt"]) == [(m, i) for m in ("m1", "m2") for i in range(4)]


def test_a_dead_workers_units_are_requeued_and_nothing_is_recorded_twice(monkeypatch):
    log, died = [], []

    def once(model, prompt, label):  # w0's process dies on its first meeting with b/3
        if (model, prompt) == ("b", 3) and not died:
            died.append(1)
            return True
        return False

    workers = [Worker("w0", "gpu", once, log=log), Worker("w1", "gpu", log=log)]
    units = _units(["a", "b"], ["gpu"], 6, 3)
    units = [u for u in units if u.name == "b"] + [u for u in units if u.name == "a"]
    got, _ = _launch(monkeypatch, workers, units)
    assert died and got["failed"] == []
    assert sorted(got["prompt"]) == [(m, i) for m in "ab" for i in range(6)]
    assert any("was lost" in t and "go back in the queue" in t for t in got["text"])
    # the rest of the lost chunk (b/3's chunk, from prompt 3 on) went out again, whole
    retried = [c for c in log if c[1] == "b" and c[4] and c[4][0] == 3]
    assert len(retried) == 2 and retried[1][4] == (3, 4, 5)


def test_a_prompt_that_kills_every_worker_gives_its_model_up(monkeypatch):
    log = []

    def poison(model, prompt, label):
        return (model, prompt) == ("b", 4)

    workers = [Worker("w0", "gpu", poison, log=log), Worker("w1", "gpu", poison, log=log)]
    got, _ = _launch(monkeypatch, workers, _units(["a", "b"], ["gpu"], 6, 2))
    assert got["failed"] == [
        ("b", "profiling", f"its Ray worker died {R.UNIT_ATTEMPTS} times while measuring it")
    ]
    assert len([c for c in log if c[1] == "b" and c[4][:1] == (4,)]) == R.UNIT_ATTEMPTS
    assert sorted(p for p in got["prompt"] if p[0] == "a") == [("a", i) for i in range(6)]
    assert ("b", 4) not in got["prompt"]


def test_units_no_live_worker_can_take_fail_their_model(monkeypatch):
    log = []
    units = _units(["a"], ["gpu"], 2, 2) + _units(["b"], ["tpu"], 2, 2)
    got, _ = _launch(monkeypatch, [Worker("w0", "gpu", log=log)], units)
    assert got["failed"] == [("b", "scheduling", "no live Ray worker has hardware label 'tpu'")]
    # b's prompts need no sweep on this worker's label: they are made; its tpu sweep is not
    assert sorted(got["prompt"]) == [("a", 0), ("a", 1), ("b", 0), ("b", 1)]
    assert not [k for k in got["latency"] if k[1] == "tpu"]


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            SimpleNamespace(
                error_msg="The actor died because of an error raised in its creation task\n"
                "Traceback (most recent call last):\n  File x\n"
                "hadis_profile.errors.HadisError: CLIP checkpoint 'c' is missing."
            ),
            "CLIP checkpoint 'c' is missing",
        ),
        (
            SimpleNamespace(error_msg="boom\nTraceback:\nRuntimeError: CUDA error: device lost"),
            "RuntimeError: CUDA error: device lost",
        ),
        (SimpleNamespace(cause=ValueError("bad value")), "ValueError: bad value"),
    ],
)
def test_a_worker_error_is_one_line(error, expected):
    assert R._cause(error) == expected


def test_without_ray_installed_the_launcher_says_how_to_get_it(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets when it is absent
    with pytest.raises(HadisError, match=r"needs Ray: pip install 'hadis-profile\[ray\]'"):
        R.RayLauncher().start(None, lambda infos: [])
