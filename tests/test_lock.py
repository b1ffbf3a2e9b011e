"""One writer per run folder: the lock refuses a second writer, names the holder, and
a dead holder's lock is taken over (hadis_profile.store.lock)."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hadis_profile.store import DB_NAME, RunStore
from hadis_profile.store.lock import LOCK_NAME, RunLocked, write_lock

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}

HOLDER = textwrap.dedent(
    """
    import sys, time
    from hadis_profile.store.lock import write_lock
    write_lock(sys.argv[1], "run").acquire()
    print("held", flush=True)
    time.sleep(120)
    """
)


@pytest.fixture
def holder(tmp_path):
    """Start a process that holds a folder's lock (as a `run` would); yields (folder, process)."""
    procs = []

    def start(folder: Path) -> subprocess.Popen:
        folder.mkdir(parents=True, exist_ok=True)
        p = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(folder)],
            stdout=subprocess.PIPE,
            text=True,
            env=ENV,
        )
        procs.append(p)
        assert p.stdout.readline().strip() == "held"
        return p

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hadis_profile.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=ENV,
        timeout=300,
    )


def test_second_writer_is_refused_naming_the_holders_pid_and_host(tmp_path, holder):
    run = tmp_path / "run"
    p = holder(run)
    with pytest.raises(RunLocked) as e:
        write_lock(run, "import").acquire()
    msg = str(e.value)
    assert f"PID {p.pid} on host {socket.gethostname()}" in msg and "run, " in msg
    assert msg.count(".") >= 1 and "\n" not in msg
    assert e.value.holder is not None and e.value.holder.pid == p.pid


def test_a_killed_holder_is_taken_over_and_its_note_replaced(tmp_path, holder):
    run = tmp_path / "run"
    p = holder(run)
    os.kill(p.pid, signal.SIGKILL)  # no chance to release: the note stays behind
    p.wait()
    assert json.loads((run / LOCK_NAME).read_text())["pid"] == p.pid
    with write_lock(run, "run") as lock:
        assert lock.took_over is not None and lock.took_over.pid == p.pid
        assert json.loads((run / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert (run / LOCK_NAME).read_text() == ""  # released: the note is cleared


def test_a_note_from_another_host_is_reported_not_broken(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    note = {"pid": 4242, "host": "gpu-node-7", "started": "2025-01-01T00:00:00Z", "command": "run"}
    (run / LOCK_NAME).write_text(json.dumps(note))
    with pytest.raises(RunLocked, match=r"PID 4242 on host gpu-node-7.*cannot tell whether"):
        write_lock(run).acquire()
    assert json.loads((run / LOCK_NAME).read_text()) == note  # left as it was


def test_the_lock_is_reentrant_within_one_process_and_released_by_the_last(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    outer = write_lock(run, "run").acquire()
    with write_lock(run, "merge"):  # e.g. a helper opening the store for writing
        pass
    probe = subprocess.run(
        [sys.executable, "-c", HOLDER.replace("time.sleep(120)", ""), str(run)],
        capture_output=True,
        text=True,
        env=ENV,
    )
    assert probe.returncode == 1 and "RunLocked" in probe.stderr  # still held by `outer`
    outer.release()
    outer.release()  # twice is harmless
    with write_lock(run):
        pass


def test_without_flock_the_note_still_guards_live_writers(tmp_path, monkeypatch, holder):
    import fcntl

    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    run = tmp_path / "run"
    p = holder(run)
    monkeypatch.setattr(fcntl, "flock", no_flock)
    with pytest.raises(RunLocked, match=f"PID {p.pid}"):
        write_lock(run).acquire()
    p.kill()
    p.wait()
    with write_lock(run) as lock:  # the PID is gone: a stale note
        assert lock.took_over is not None and lock.took_over.pid == p.pid


def test_without_flock_a_reused_pid_is_told_apart_by_its_start_time(tmp_path, monkeypatch):
    import fcntl

    if not Path(f"/proc/{os.getppid()}/stat").exists():
        pytest.skip("needs /proc")
    monkeypatch.setattr(
        fcntl, "flock", lambda fd, op: (_ for _ in ()).throw(OSError(errno.ENOLCK, ""))
    )
    run = tmp_path / "run"
    run.mkdir()
    alive = {"pid": os.getppid(), "host": socket.gethostname(), "started": "x", "pid_start": 1}
    (run / LOCK_NAME).write_text(json.dumps(alive))  # a live PID, but not the note's process
    with write_lock(run) as lock:
        assert lock.took_over is not None and lock.took_over.pid == os.getppid()


def test_store_opened_for_writing_holds_the_lock_until_closed(tmp_path):
    run = tmp_path / "run"
    store = RunStore.create(run, write_lock="import")
    note = json.loads((run / LOCK_NAME).read_text())
    assert note["command"] == "import" and note["pid"] == os.getpid()
    store.close()
    assert (run / LOCK_NAME).read_text() == ""
    # read-only opens take no lock and leave the note alone
    with RunStore.open(run, readonly=True):
        assert (run / LOCK_NAME).read_text() == ""


def test_second_run_is_refused_before_it_creates_or_measures_anything(tmp_path, holder):
    out = tmp_path / "outputs" / "run"
    p = holder(out)
    prompts = tmp_path / "p.txt"
    prompts.write_text("a cat\na dog\n")
    proc = cli(
        "run", "--zoo", str(REPO / "model_zoo.yaml"), "--model", "sd-turbo", "--prompts",
        str(prompts), "--out", str(out), "--no-weights", "--skip-quality", "--no-router",
        "--batch-sizes", "1", "--device", "cpu", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.strip().count("\n") == 0
    assert f"PID {p.pid}" in proc.stderr and "being written by another" in proc.stderr
    assert not (out / DB_NAME).exists()  # nothing created, nothing measured


def test_import_refuses_to_replace_a_run_another_process_writes(tmp_path, holder):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a\nb\n")
    args = ["import", "files", "--prompts", str(prompts), "--model", "m1", "--model", "m2"]
    proc = cli(*args, "--out", "run", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    before = (tmp_path / "run" / DB_NAME).read_bytes()
    p = holder(tmp_path / "run")
    proc = cli(*args, "--out", "run", "--fresh", cwd=tmp_path)
    assert proc.returncode == 1 and f"PID {p.pid}" in proc.stderr, proc.stderr
    assert (tmp_path / "run" / DB_NAME).read_bytes() == before
    assert sorted(x.name for x in tmp_path.iterdir()) == ["p.txt", "run"]  # no temp left


def test_router_fit_writes_under_the_lock_and_its_dry_run_reads_beside_a_writer(tmp_path, holder):
    from hadis_profile.synthetic import write_synthetic_run

    run = tmp_path / "run"
    write_synthetic_run(run, n_prompts=40).close()
    p = holder(run)
    proc = cli("router", "fit", "--run", str(run), cwd=tmp_path)
    assert proc.returncode == 1 and f"PID {p.pid}" in proc.stderr, proc.stderr
    proc = cli("router", "fit", "--run", str(run), "--dry-run", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
