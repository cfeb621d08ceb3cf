"""Runs that survive: SIGKILL and resume, damaged checkpoints, divergence, reuse and --force.

Every comparison here is exact (torch.equal, ==): on one CPU thread the engine is
deterministic, and a run resumed from an epoch checkpoint must retrace the uninterrupted one
(the engine reseeds every epoch from (seed, epoch)). Subprocess runs and in-process runs are
compared only among themselves.
"""

import json
import os
import pickle
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from prs import cli, config, data, engine, runs, train

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "CI": "1",
       "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
# Per-epoch fields that must match exactly; timings may not.
STABLE = ("epoch", "train_loss", "train_top1", "test_top1", "test_top5", "lr", "attention_layers")


# Mixup/CutMix, label smoothing and stochastic depth on, so that every RNG matters.
EVERY_RNG = {"model": {"drop_path": 0.1}, "data": {"augment": {"mixup": 0.8, "cutmix": 1.0, "label_smoothing": 0.1}},
             "train": {"eval_batch_size": 200, "lr": 0.005, "warmup_epochs": 0.5}}


def every_rng_config(tiny_config, epochs):
    """The shared tiny config (switches at epochs 2 and 1, PRS order) with every RNG in use."""
    return tiny_config(config.merge(EVERY_RNG, {"train": {"epochs": epochs}}))


def results_of(run_dir):
    return json.loads((Path(run_dir) / runs.RESULTS).read_text())


def assert_same_state(a, b, where="state"):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_same_state(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_state(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def assert_same_run(run_a, run_b):
    """Same metrics every epoch, same switches, and bit-identical final weights, optimizer,
    LR-scheduler and RNG states."""
    ra, rb = results_of(run_a), results_of(run_b)
    assert ra["finished"] and rb["finished"]
    assert [{k: r[k] for k in STABLE} for r in ra["history"]] == [{k: r[k] for k in STABLE} for r in rb["history"]]
    assert ra["final"] == rb["final"] and ra["switch_events"] == rb["switch_events"]
    ca = runs.load_checkpoint(Path(run_a) / runs.CHECKPOINT)
    cb = runs.load_checkpoint(Path(run_b) / runs.CHECKPOINT)
    for part in ("model", "optimizer", "lr_scheduler", "rng", "epoch", "step", "switch_events"):
        assert_same_state(ca[part], cb[part], part)


# ----------------------------------------------------------------------------- SIGKILL and resume


@pytest.fixture(scope="module")
def cli_setup(tiny_config, tmp_path_factory):
    """A 4-epoch config file and its uninterrupted run, both through `python -m prs train`."""
    root = tmp_path_factory.mktemp("kill")
    path = root / "tiny.yaml"
    path.write_text(yaml.safe_dump(every_rng_config(tiny_config, epochs=4)))
    tick = time.monotonic()
    reference = run_cli(path, root / "reference")
    return path, reference, time.monotonic() - tick


def start(config_path, run_root):
    cmd = [sys.executable, "-m", "prs", "train", "--config", str(config_path), "--set", f"run.root={run_root}"]
    return subprocess.Popen(cmd, env=ENV, cwd=run_root.parent, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def run_cli(config_path, run_root):
    proc = start(config_path, run_root)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    (run_dir,) = run_root.iterdir()
    return run_dir


def epochs_done(run_root):
    """Epochs in the last results.json written (0 before the first one)."""
    try:
        (run_dir,) = run_root.iterdir()
        return len(results_of(run_dir)["history"])
    except (ValueError, OSError):  # no run directory yet, or no results.json yet
        return 0


def kill_when(proc, run_root, epochs=None, after_s=0.0):
    """SIGKILL `proc` `after_s` seconds after `epochs` epochs are on disk (or after its start)."""
    while epochs is not None and epochs_done(run_root) < epochs:
        assert proc.poll() is None, "the run ended before the moment chosen to kill it"
        time.sleep(0.01)
    time.sleep(after_s)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it was killed"


@pytest.mark.slow
def test_kill_around_the_switches_then_resume_is_exact(cli_setup, tmp_path):
    """Killed right after the checkpoint before the first switch, then mid-epoch in the epoch
    that starts with the second switch (the checkpoint still has that layer as a conv)."""
    config_path, reference, ref_seconds = cli_setup
    root = tmp_path / "runs"
    epoch_s = max(r["epoch_time_s"] for r in results_of(reference)["history"])
    kill_when(start(config_path, root), root, epochs=1)
    assert epochs_done(root) == 1  # it was killed before its next checkpoint
    kill_when(start(config_path, root), root, epochs=2, after_s=random.Random(2).uniform(0.2, 0.6) * epoch_s)
    assert epochs_done(root) == 2
    run_dir = run_cli(config_path, root)
    assert_same_run(reference, run_dir)


@pytest.mark.slow
def test_kill_at_random_moments_then_resume_is_exact(cli_setup, tmp_path):
    """Killed early (before any checkpoint, or in the first epoch), then at a random point
    of a random later epoch."""
    config_path, reference, ref_seconds = cli_setup
    root = tmp_path / "runs"
    rng = random.Random(1)
    epoch_s = max(r["epoch_time_s"] for r in results_of(reference)["history"])
    kill_when(start(config_path, root), root, after_s=rng.uniform(0.1, 0.3) * ref_seconds)
    epoch = rng.choice([1, 2])
    kill_when(start(config_path, root), root, epochs=epoch, after_s=rng.uniform(0.0, 1.0) * epoch_s)
    assert epochs_done(root) >= epoch  # the rerun has a checkpoint to resume from
    run_dir = run_cli(config_path, root)
    assert_same_run(reference, run_dir)


# ----------------------------------------------------------------------------- in-process runs


@pytest.fixture(scope="module")
def inproc(tiny_config, tmp_path_factory):
    """One thread (as the subprocesses), a 3-epoch config, its uninterrupted run and a run
    interrupted at the start of its third epoch (checkpoint after epoch 2, .prev after 1)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("inproc")
    path = root / "tiny3.yaml"
    path.write_text(yaml.safe_dump(every_rng_config(tiny_config, epochs=3)))
    cfg = config.load(path, {"run": {"root": str(root / "reference")}})
    reference = Path(train.train(cfg, verbose=False)["run_dir"])
    with pytest.MonkeyPatch.context() as mp:
        interrupt_at_epoch(mp, 2)
        with pytest.raises(KeyboardInterrupt):
            train.train(config.load(path, {"run": {"root": str(root / "interrupted")}}), verbose=False)
    (interrupted,) = (root / "interrupted").iterdir()
    try:
        yield path, reference, interrupted
    finally:
        torch.set_num_threads(threads)


def interrupt_at_epoch(monkeypatch, epoch, exc=KeyboardInterrupt):
    """Make engine.train_epoch raise `exc` when it is called for the given (0-based) epoch."""
    real, calls = engine.train_epoch, []

    def patched(model, loader, *args, **kwargs):
        if loader.epoch == epoch:
            raise exc()
        calls.append(loader.epoch)
        return real(model, loader, *args, **kwargs)

    monkeypatch.setattr(engine, "train_epoch", patched)
    return calls


def copy_run(run_dir, root):
    """A copy of a run directory under a new run.root (not hashed: the same run)."""
    target = Path(root) / Path(run_dir).name
    shutil.copytree(run_dir, target)
    return target


def cli_train(config_path, run_root, *extra):
    return cli.main(["train", "--config", str(config_path), "--set", f"run.root={run_root}", *extra])


def files_of(run_dir):
    """What a run directory holds, but its lock file (whose content names the last process that held it)."""
    return {p.name: p.read_bytes() for p in sorted(Path(run_dir).iterdir()) if p.name != runs.LOCK}


def one_line_error(capsys):
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("prs: error: ") and "Traceback" not in err, err
    return lines[0]


def test_interrupted_run_keeps_two_checkpoints(inproc):
    _, _, interrupted = inproc
    assert runs.load_checkpoint(interrupted / runs.CHECKPOINT)["epoch"] == 2
    assert runs.load_checkpoint(interrupted / runs.PREVIOUS)["epoch"] == 1
    results = results_of(interrupted)
    assert not results["finished"] and len(results["history"]) == 2


@pytest.mark.parametrize("damage", ["truncated", "garbage", "code"])
def test_damaged_checkpoint_names_the_file_then_previous_checkpoint_resumes(inproc, tmp_path, capsys, damage):
    config_path, reference, interrupted = inproc
    run_dir = copy_run(interrupted, tmp_path)
    ckpt = run_dir / runs.CHECKPOINT
    marker = tmp_path / "executed"
    if damage == "truncated":
        ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    elif damage == "garbage":
        ckpt.write_bytes(os.urandom(4096))
    else:  # a pickle that would run a command if unpickled with weights_only=False
        class Evil:
            def __reduce__(self):
                return os.system, (f"touch {marker}",)
        ckpt.write_bytes(pickle.dumps({"model": Evil()}, protocol=2))
    before = files_of(run_dir)
    assert cli_train(config_path, tmp_path) == 2
    line = one_line_error(capsys)
    assert str(ckpt) in line and "--previous-checkpoint" in line and str(run_dir / runs.PREVIOUS) in line
    assert files_of(run_dir) == before and not marker.exists()  # nothing touched, nothing executed
    if damage != "truncated":
        return
    assert cli_train(config_path, tmp_path, "--previous-checkpoint") == 0
    assert "after epoch 1 from checkpoint.prev.pt" in capsys.readouterr().out
    assert_same_run(reference, run_dir)
    # The damaged file is set aside, never rotated into checkpoint.prev.pt.
    assert (run_dir / "checkpoint.damaged.pt").read_bytes() == before[runs.CHECKPOINT]
    assert runs.load_checkpoint(run_dir / runs.PREVIOUS)["epoch"] == 2


def test_previous_checkpoint_flag_needs_one(inproc, tmp_path, capsys):
    config_path, _, interrupted = inproc
    run_dir = copy_run(interrupted, tmp_path)
    (run_dir / runs.PREVIOUS).unlink()
    before = files_of(run_dir)
    assert cli_train(config_path, tmp_path, "--previous-checkpoint") == 2
    assert str(run_dir / runs.PREVIOUS) in one_line_error(capsys)
    assert files_of(run_dir) == before


def test_kill_between_the_checkpoint_renames_resumes_from_previous(inproc, tmp_path):
    """save_checkpoint renames checkpoint.pt to .prev, then the new file into place; a kill
    in between leaves .prev (and a finished .tmp) only."""
    config_path, reference, interrupted = inproc
    run_dir = copy_run(interrupted, tmp_path)
    os.replace(run_dir / runs.CHECKPOINT, run_dir / runs.PREVIOUS)
    (run_dir / (runs.CHECKPOINT + ".tmp")).write_bytes(b"the next epoch's checkpoint, maybe unfinished")
    assert cli_train(config_path, tmp_path) == 0
    assert_same_run(reference, run_dir)


def test_nan_loss_stops_with_exit_1_and_keeps_the_last_good_checkpoint(inproc, tmp_path, capsys, monkeypatch):
    config_path, _, interrupted = inproc
    run_dir = copy_run(interrupted, tmp_path)
    before = files_of(run_dir)
    real = engine.train_epoch

    def nan_loss(*args, **kwargs):
        metrics, step = real(*args, **kwargs)
        return {**metrics, "train_loss": float("nan")}, step

    monkeypatch.setattr(engine, "train_epoch", nan_loss)
    assert cli_train(config_path, tmp_path) == 1
    line = one_line_error(capsys)
    assert "loss became nan in epoch 3" in line and "after epoch 2" in line and str(run_dir) in line
    after = files_of(run_dir)
    for name in (runs.CHECKPOINT, runs.PREVIOUS, runs.RESULTS):
        assert after[name] == before[name], name


def test_nan_weights_with_a_finite_loss_are_caught_too(inproc, tmp_path, capsys, monkeypatch):
    config_path, _, interrupted = inproc
    run_dir = copy_run(interrupted, tmp_path)
    before = files_of(run_dir)
    real = engine.train_epoch

    def poison_last_step(model, *args, **kwargs):
        out = real(model, *args, **kwargs)
        with torch.no_grad():
            next(model.parameters())[0].fill_(float("nan"))
        return out

    monkeypatch.setattr(engine, "train_epoch", poison_last_step)
    assert cli_train(config_path, tmp_path) == 1
    assert "a weight became NaN or infinite in epoch 3" in one_line_error(capsys)
    assert files_of(run_dir)[runs.CHECKPOINT] == before[runs.CHECKPOINT]


def test_real_divergence_in_the_first_epoch(inproc, tmp_path, capsys):
    config_path, _, _ = inproc
    assert cli_train(config_path, tmp_path, "--set", "train.lr=1.0e+30") == 1
    line = one_line_error(capsys)
    assert "in epoch 1" in line and "no checkpoint was written" in line
    (run_dir,) = tmp_path.iterdir()
    assert not (run_dir / runs.CHECKPOINT).exists() and not (run_dir / runs.PREVIOUS).exists()


def test_finished_run_is_reused_not_retrained(inproc, monkeypatch, capsys):
    config_path, reference, _ = inproc
    before = files_of(reference)
    interrupt_at_epoch(monkeypatch, 0, exc=AssertionError)  # any training at all fails the test
    assert cli_train(config_path, reference.parent) == 0
    assert "reusing finished run" in capsys.readouterr().out
    assert files_of(reference) == before


def test_force_starts_over_but_only_after_the_input_checks(inproc, tmp_path, capsys, monkeypatch):
    config_path, reference, _ = inproc
    run_dir = copy_run(reference, tmp_path)
    before = files_of(run_dir)
    # Bad input with --force: a data root whose CIFAR folder is not the synthetic set.
    bad_root = tmp_path / "bad_data"
    (bad_root / "synthetic" / data.ARRAY_FOLDER).mkdir(parents=True)
    assert cli_train(config_path, tmp_path, "--force", "--set", f"data.root={bad_root}") == 2
    assert "is not a prs dataset" in one_line_error(capsys)
    assert files_of(run_dir) == before  # the finished run survived the failed --force
    assert cli_train(config_path, tmp_path, "--force", "--previous-checkpoint") == 2
    one_line_error(capsys)
    # A good --force starts from scratch: stopped in its first epoch, nothing of the old run is left.
    interrupt_at_epoch(monkeypatch, 0)
    assert cli_train(config_path, tmp_path, "--force") == 130
    assert sorted(p.name for p in run_dir.iterdir()) == ["config.yaml", runs.LOCK]


def test_resume_a_moved_run_directory(inproc, tmp_path, capsys, monkeypatch):
    """--resume RUN_DIR uses the directory where it is now (e.g. copied to Google Drive),
    not the run.root written in its config.yaml."""
    _, reference, interrupted = inproc
    moved = copy_run(interrupted, tmp_path / "drive")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    original = files_of(interrupted)
    assert cli.main(["train", "--resume", str(moved)]) == 0
    assert f"resuming {moved} after epoch 2" in capsys.readouterr().out
    assert_same_run(reference, moved)
    assert files_of(interrupted) == original and not any(elsewhere.iterdir())


@pytest.mark.parametrize("argv, message", [
    (["--resume", "{missing}"], "not a run directory"),
    (["--resume", "{run}", "--config", "smoke"], "not both"),
    (["--resume", "{run}", "--force"], "give one of them"),
    (["--resume", "{run}", "--set", "train.lr=0.1"], "holds another config"),
    (["--resume", "{run}", "--set", "run.root=/tmp"], "run.* is fixed by RUN_DIR"),
    (["--resume", "{run}", "--set", "train.lr=-1.0"], "train.lr"),
])
def test_resume_bad_input(inproc, tmp_path, capsys, argv, message):
    _, _, interrupted = inproc
    run_dir = copy_run(interrupted, tmp_path)
    before = files_of(run_dir)
    argv = [a.format(run=run_dir, missing=tmp_path / "nope") for a in argv]
    assert cli.main(["train", *argv]) == 2
    assert message in one_line_error(capsys)
    assert files_of(run_dir) == before and sorted(p.name for p in tmp_path.iterdir()) == [run_dir.name]


def test_checkpoint_of_other_training_images_is_refused(inproc, tmp_path, capsys):
    """Resuming on another data set (here: another synthetic set) would silently mix two
    trainings; the training subset's hash in the checkpoint says so."""
    config_path, _, interrupted = inproc
    run_dir = copy_run(interrupted, tmp_path)
    other = tmp_path / "other_data"
    data.write_synthetic_cifar100(other / "synthetic", train_per_class=5, test_per_class=2)
    before = files_of(run_dir)
    assert cli_train(config_path, tmp_path, "--set", f"data.root={other}") == 2
    line = one_line_error(capsys)
    assert str(run_dir / runs.CHECKPOINT) in line and "other training images" in line
    assert files_of(run_dir) == before


# ----------------------------------------------------------------------------- nothing lost (issue 13)


@pytest.mark.parametrize("content", ["", '{"config": {"mod', "[]", "null", '{"finished": true, "history": []}'])
def test_damaged_results_json_resumes_from_the_checkpoint(inproc, tmp_path, capsys, content):
    """A truncated, empty, non-mapping or falsely 'finished' results.json is rebuilt from the
    checkpoint (never 'rerun with --force', which would delete two good checkpoints)."""
    config_path, reference, interrupted = inproc
    run_dir = copy_run(interrupted, tmp_path)
    (run_dir / runs.RESULTS).write_text(content)
    assert cli_train(config_path, tmp_path) == 0
    out = capsys.readouterr().out
    assert f"{run_dir / runs.RESULTS} " in out and "rebuilt by training from its checkpoint" in out
    assert "resuming" in out and "after epoch 2" in out
    assert_same_run(reference, run_dir)


def test_damaged_results_json_of_a_finished_run_is_rebuilt_without_training(inproc, tmp_path, monkeypatch):
    _, reference, _ = inproc
    run_dir = copy_run(reference, tmp_path)
    before = files_of(run_dir)
    (run_dir / runs.RESULTS).write_text(before[runs.RESULTS].decode()[:100])
    interrupt_at_epoch(monkeypatch, 0, exc=AssertionError)  # any training at all fails the test
    monkeypatch.setattr(engine, "evaluate", lambda *a, **k: pytest.fail("evaluated again"))
    config_path = Path(str(inproc[0]))
    assert cli_train(config_path, tmp_path) == 0
    after = json.loads(files_of(run_dir)[runs.RESULTS])
    original = json.loads(before[runs.RESULTS])
    original["config"]["run"]["root"] = str(tmp_path)  # the copy's place
    assert after == {**original, "run_dir": str(run_dir)}  # every number and the history, as they were


@pytest.mark.parametrize("content, problem", [
    (torch.zeros(3), "holds a Tensor, not a mapping"),
    ({"model": {}}, "no 'optimizer', 'lr_scheduler'"),
    ([1, 2], "holds a list"),
])
def test_checkpoint_that_is_no_checkpoint_is_one_line(inproc, tmp_path, capsys, content, problem):
    config_path, _, interrupted = inproc
    run_dir = copy_run(interrupted, tmp_path)
    torch.save(content, run_dir / runs.CHECKPOINT)
    before = files_of(run_dir)
    assert cli_train(config_path, tmp_path) == 2
    line = one_line_error(capsys)
    assert problem in line and "the previous good checkpoint" in line and "--previous-checkpoint" in line
    assert files_of(run_dir) == before


def test_both_checkpoints_damaged_says_so(inproc, tmp_path, capsys):
    config_path, _, interrupted = inproc
    run_dir = copy_run(interrupted, tmp_path)
    for name in (runs.CHECKPOINT, runs.PREVIOUS):
        path = run_dir / name
        path.write_bytes(path.read_bytes()[:1000])
    before = files_of(run_dir)
    assert cli_train(config_path, tmp_path) == 2
    line = one_line_error(capsys)
    assert "damaged as well" in line and "previous good" not in line and "--previous-checkpoint" not in line
    assert files_of(run_dir) == before
    assert cli_train(config_path, tmp_path, "--previous-checkpoint") == 2
    assert "checkpoint.prev.pt is corrupt" in one_line_error(capsys)
    assert files_of(run_dir) == before


def test_previous_checkpoint_never_overwrites_a_set_aside_checkpoint(inproc, tmp_path, capsys):
    config_path, reference, interrupted = inproc
    run_dir = copy_run(interrupted, tmp_path)
    (run_dir / runs.DAMAGED).write_bytes(b"set aside by an earlier --previous-checkpoint")
    ckpt = run_dir / runs.CHECKPOINT
    ckpt.write_bytes(ckpt.read_bytes()[:500])
    damaged = ckpt.read_bytes()
    assert cli_train(config_path, tmp_path, "--previous-checkpoint") == 0
    assert (run_dir / runs.DAMAGED).read_bytes() == b"set aside by an earlier --previous-checkpoint"
    assert (run_dir / "checkpoint.damaged.2.pt").read_bytes() == damaged
    assert_same_run(reference, run_dir)


def restamp(path, **fields):
    state = torch.load(path, weights_only=True)
    torch.save({**state, **fields}, path)


def test_resume_with_another_number_of_processes_is_refused(inproc, tmp_path, capsys):
    """Per-rank Mixup and stochastic depth make a run's numbers depend on its world size: a
    checkpoint of a 2-process run does not resume in one process (it would mix two runs)."""
    config_path, _, interrupted = inproc
    run_dir = copy_run(interrupted, tmp_path)
    restamp(run_dir / runs.CHECKPOINT, world_size=2)
    before = files_of(run_dir)
    assert cli_train(config_path, tmp_path) == 2
    line = one_line_error(capsys)
    assert "written by 2 process(es), this run has 1" in line and "--nproc_per_node=2" in line
    assert files_of(run_dir) == before


def test_resume_on_another_device_or_thread_count_says_so(inproc, tmp_path, capsys):
    config_path, _, interrupted = inproc
    run_dir = copy_run(interrupted, tmp_path)
    restamp(run_dir / runs.CHECKPOINT, device="cpu (x86_64, 7 threads)")
    assert cli_train(config_path, tmp_path) == 0
    out = capsys.readouterr().out
    assert "note: checkpoint.pt was trained on cpu (x86_64, 7 threads), this process runs on cpu (" in out


def test_moved_finished_run_reports_where_it_is_now(inproc, tmp_path, capsys):
    """A finished run copied elsewhere (e.g. to Google Drive) is reused from there, and its results
    name the new place, which the Fourier analysis then loads the model from."""
    config_path, reference, _ = inproc
    moved = copy_run(reference, tmp_path / "drive")
    cfg = config.load(config_path, {"run": {"root": str(tmp_path / "drive")}})
    results = train.train(cfg, verbose=False)
    assert results["run_dir"] == str(moved)
    model, _ = train.load_trained(results["run_dir"])
    assert_same_state(model.state_dict(), runs.load_checkpoint(reference / runs.CHECKPOINT)["model"])
    assert cli_train(config_path, tmp_path / "drive") == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith(f"{moved}: top-1")


# ----------------------------------------------------------------------------- one writer, full disks


def wait_for(predicate, proc, what, timeout=120):
    tick = time.monotonic()
    while not predicate():
        assert proc.poll() is None, f"the run ended before {what}: {proc.communicate()[0]}"
        assert time.monotonic() - tick < timeout, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_two_processes_on_one_run_directory_one_writer(cli_setup, tmp_path):
    """A second process on the same config fails at once, naming the first (pid, host); once the
    first is killed (SIGKILL: no clean-up runs), the lock is free and the run resumes exactly."""
    config_path, reference, _ = cli_setup
    root = tmp_path / "runs"
    first = start(config_path, root)
    wait_for(lambda: epochs_done(root) >= 1, first, "its first checkpoint")
    second = start(config_path, root)
    out, _ = second.communicate(timeout=120)
    lines = out.strip().splitlines()
    assert second.returncode == 1 and len(lines) == 1 and "Traceback" not in out, out
    assert f"is being trained by pid {first.pid} on {socket.gethostname()}" in lines[0]
    assert first.poll() is None, "the second process disturbed the first"
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=60)
    run_dir = run_cli(config_path, root)
    assert_same_run(reference, run_dir)


def test_failed_checkpoint_write_removes_its_partial_file(inproc, tmp_path, capsys, monkeypatch):
    """torch.save reports a full disk as RuntimeError('... unexpected pos ...'), after writing part of the file."""
    config_path, _, interrupted = inproc
    run_dir = copy_run(interrupted, tmp_path)
    before = files_of(run_dir)

    def full_disk(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"half a checkpoint")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 1234 vs 1200")

    monkeypatch.setattr(torch, "save", full_disk)
    assert cli_train(config_path, tmp_path) == 1
    line = one_line_error(capsys)
    assert f"cannot write {run_dir / runs.CHECKPOINT}" in line and "rerun the same command to resume" in line
    after = files_of(run_dir)
    assert runs.CHECKPOINT + ".tmp" not in after
    for name in (runs.CHECKPOINT, runs.PREVIOUS, runs.RESULTS):
        assert after[name] == before[name]


@pytest.fixture
def small_disk(tmp_path):
    """small_disk(size_bytes) -> a fresh tmpfs of that size (root only); skipped, saying why, where
    it cannot be mounted (the monkeypatched test above runs everywhere)."""
    mounted = []

    def mount(size_bytes):
        folder = tmp_path / "small_disk"
        folder.mkdir()
        if os.geteuid() != 0:
            pytest.skip("disk-full test: needs root to mount a small tmpfs (the monkeypatched test still runs)")
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_bytes // 1024}k", "tmpfs", str(folder)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"disk-full test: cannot mount a tmpfs here ({done.stderr.strip()})")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_disk_full_during_a_checkpoint_write_is_one_line_and_leaves_no_partial_file(inproc, small_disk, capsys):
    config_path, _, interrupted = inproc
    used = sum(p.stat().st_size for p in interrupted.iterdir())
    disk = small_disk(used + (interrupted / runs.CHECKPOINT).stat().st_size // 2)  # no room for a third checkpoint
    run_dir = copy_run(interrupted, disk)
    before = files_of(run_dir)
    assert cli_train(config_path, disk) == 1
    line = one_line_error(capsys)
    assert f"cannot write {run_dir / runs.CHECKPOINT} (the disk is full)" in line
    after = files_of(run_dir)
    assert sorted(after) == sorted(before)  # no .tmp left to keep the disk full
    for name in (runs.CHECKPOINT, runs.PREVIOUS, runs.RESULTS):
        assert after[name] == before[name]


def test_a_file_system_without_locks_is_said_and_training_goes_on(inproc, tmp_path, capsys, monkeypatch):
    """Some network mounts refuse flock (ENOLCK): the run trains, and says that it could not lock."""
    import errno
    import fcntl

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    config_path, reference, interrupted = inproc
    run_dir = copy_run(interrupted, tmp_path)
    monkeypatch.setattr(fcntl, "flock", no_locks)
    assert cli_train(config_path, tmp_path) == 0
    out = capsys.readouterr().out
    assert out.count(f"note: cannot lock {run_dir / runs.LOCK} on this file system (No locks available)") == 1
    assert_same_run(reference, run_dir)
