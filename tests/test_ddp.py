"""Multi-process training: `torchrun --nproc_per_node=2 -m prs train` with gloo on the CPU.

The claim checked: two processes with the same global batch compute what one process
computes (up to float rounding), including synchronised BatchNorm, a switch to attention
mid-run and the evaluation over the sharded test set; only rank 0 writes; a killed run
resumes exactly.
"""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from prs import data, distributed, runs

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "CI": "1",
       "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
RUN_FILES = ["checkpoint.prev.pt", "checkpoint.pt", "config.yaml", "results.json", "run.lock"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------- sharding


@pytest.mark.parametrize("n, batch, world", [(200, 32, 2), (103, 12, 3), (50, 8, 4)])
def test_rank_batches_make_up_the_single_process_batches(n, batch, world):
    """At every step the ranks' batches are disjoint and together are the one-process batch,
    with the same crops and flips: sharding loses or repeats no image."""
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8))
    ids = torch.arange(n)  # labels that name the image
    one = data.DeviceLoader(images, ids, batch, seed=5)
    ranks = [data.DeviceLoader(images, ids, batch // world, seed=5, rank=r, world_size=world) for r in range(world)]
    for epoch in (0, 3):
        for loader in (one, *ranks):
            loader.set_epoch(epoch)
        assert all(len(r) == len(one) for r in ranks)
        for (x, y), *parts in zip(one, *ranks):
            ys = torch.cat([py for _, py in parts])
            assert len(set(ys.tolist())) == len(ys) == len(y)  # disjoint, and the full batch
            order = torch.argsort(ys)
            assert torch.equal(ys[order], y.sort().values)
            assert torch.equal(torch.cat([px for px, _ in parts])[order], x[torch.argsort(y)])


# ----------------------------------------------------------------------------- BatchNorm across ranks


def _bn_worker(rank, port, out_dir):
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1),
                              nn.BatchNorm2d(2)).double()
        distributed.sync_batchnorm(model, torch.device("cpu"))
        x = torch.randn(10, 3, 6, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        y = model(x[rank * 4: rank * 4 + (4 if rank == 0 else 6)])  # unequal shards: 4 and 6 images
        (y.square().sum() * 1.7).backward()
        torch.save({"y": y.detach(), "grads": {k: p.grad for k, p in model.named_parameters()},
                    "state": model.state_dict(), "types": sorted({type(m).__name__ for m in model.modules()})},
                   Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_gloo_sync_batchnorm_equals_batchnorm_on_the_whole_batch(tmp_path):
    """In float64, two ranks holding 4 and 6 images give the outputs, summed gradients and
    running statistics of plain BatchNorm on all 10 (torch's SyncBatchNorm is CUDA-only)."""
    torch.multiprocessing.spawn(_bn_worker, args=(free_port(), str(tmp_path)), nprocs=2)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1),
                          nn.BatchNorm2d(2)).double()
    x = torch.randn(10, 3, 6, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y = model(x)
    (y.square().sum() * 1.7).backward()
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert "GlooSyncBatchNorm" in r0["types"] and "BatchNorm2d" not in r0["types"]
    torch.testing.assert_close(torch.cat([r0["y"], r1["y"]]), y.detach(), rtol=1e-12, atol=1e-12)
    for name, p in model.named_parameters():  # each rank's gradient is its part; DDP sums (then averages)
        torch.testing.assert_close(r0["grads"][name] + r1["grads"][name], p.grad, rtol=1e-10, atol=1e-12)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(r0["state"][key], value, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(r1["state"][key], value, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------- torchrun end to end


# BatchNorm and a switch in each epoch (the deepest layer from the start, the next at epoch 1).
# SGD with a small LR keeps float-rounding differences from growing; no Mixup or stochastic
# depth, whose draws are per rank by design.
DDP = {"train": {"epochs": 2, "eval_batch_size": 64, "optimizer": "sgd", "lr": 0.002, "weight_decay": 5.0e-4,
                 "warmup_epochs": 0.5},
       "schedule": {"name": "prs", "first": 1, "last": 0}}


@pytest.fixture(scope="module")
def setup(tiny_config, tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    path = root / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_config(DDP)))
    return root, path


def command(config_path, run_root, nproc):
    prs = ["-m", "prs", "train", "--config", str(config_path), "--set", f"run.root={run_root}"]
    if nproc == 1:
        return [sys.executable, *prs]
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--nnodes=1",
            "--master_addr=127.0.0.1", f"--master_port={free_port()}", *prs]


def run(config_path, run_root, nproc):
    done = subprocess.run(command(config_path, run_root, nproc), env=ENV, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    (run_dir,) = Path(run_root).iterdir()
    return run_dir, done.stdout


@pytest.fixture(scope="module")
def single(setup):
    root, path = setup
    return run(path, root / "single", 1)


@pytest.fixture(scope="module")
def ddp(setup):
    root, path = setup
    return run(path, root / "ddp", 2)


def results_of(run_dir):
    return json.loads((Path(run_dir) / "results.json").read_text())


@pytest.mark.slow
def test_two_processes_compute_what_one_does(single, ddp):
    (one_dir, _), (two_dir, _) = single, ddp
    assert one_dir.name == two_dir.name  # the process count is not part of the config
    one, two = results_of(one_dir), results_of(two_dir)
    assert (one["world_size"], two["world_size"]) == (1, 2)
    assert one["switch_events"] == two["switch_events"] == [{"epoch": 0, "layers": ["layer4.0.conv2"]},
                                                            {"epoch": 1, "layers": ["layer3.0.conv2"]}]
    test_images = one["data"]["test_size"]
    for a, b in zip(one["history"], two["history"], strict=True):
        assert a["lr"] == b["lr"] and a["attention_layers"] == b["attention_layers"]
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-5)
        assert b["train_top1"] == pytest.approx(a["train_top1"], abs=100 / 384 + 1e-9)  # one image at most
        for key in ("test_top1", "test_top5"):  # the whole test set, counted across ranks
            assert b[key] == pytest.approx(a[key], abs=100 / test_images + 1e-9)
    sa = runs.load_checkpoint(one_dir / "checkpoint.pt")["model"]
    sb = runs.load_checkpoint(two_dir / "checkpoint.pt")["model"]
    assert sa.keys() == sb.keys()  # plain BatchNorm keys: checkpoints move between 1 and N processes
    for key in sa:
        if not sa[key].is_floating_point():
            assert torch.equal(sa[key], sb[key]), key  # batch counts, attention flags
        elif "running" in key:
            torch.testing.assert_close(sb[key], sa[key], rtol=1e-3, atol=1e-4, msg=key)
        else:
            torch.testing.assert_close(sb[key], sa[key], rtol=1e-4, atol=2e-5, msg=key)


@pytest.mark.slow
def test_only_rank_0_writes_and_reports(ddp):
    run_dir, stdout = ddp
    assert sorted(p.name for p in run_dir.iterdir()) == RUN_FILES
    assert stdout.count(": top-1 ") == 1 and stdout.count("epoch 2/2") == 1


def children_of(pid):
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


@pytest.mark.slow
def test_killed_ddp_run_resumes_exactly(setup, ddp, tmp_path):
    """SIGKILL to the launcher and both workers after the first checkpoint, as a preempted
    machine would; the rerun resumes, switches the next layer on both ranks, and ends
    bit-identical to the uninterrupted two-process run."""
    _, path = setup
    root = tmp_path / "runs"
    proc = subprocess.Popen(command(path, root, 2), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not (list(root.glob("*/results.json")) and results_of(next(root.iterdir()))["history"]):
            assert proc.poll() is None, "the run ended before it could be killed"
            time.sleep(0.01)
        workers = children_of(proc.pid)
        assert len(workers) == 2
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=60)
    (run_dir,) = root.iterdir()
    assert len(results_of(run_dir)["history"]) == 1
    resumed_dir, stdout = run(path, root, 2)
    assert "resuming" in stdout and "after epoch 1" in stdout
    ref_dir, _ = ddp
    a, b = results_of(ref_dir), results_of(resumed_dir)
    keys = ("epoch", "train_loss", "train_top1", "test_top1", "test_top5", "lr", "attention_layers")
    assert [{k: r[k] for k in keys} for r in a["history"]] == [{k: r[k] for k in keys} for r in b["history"]]
    assert a["switch_events"] == b["switch_events"]
    sa = runs.load_checkpoint(ref_dir / "checkpoint.pt")
    sb = runs.load_checkpoint(resumed_dir / "checkpoint.pt")
    for part in ("model", "optimizer"):
        for key, value in sa[part].items() if part == "model" else enumerate(sa[part]["state"].values()):
            other = sb[part][key] if part == "model" else list(sb[part]["state"].values())[key]
            if isinstance(value, dict):
                assert all(torch.equal(value[k], other[k]) for k in value), (part, key)
            else:
                assert torch.equal(value, other), (part, key)


# ----------------------------------------------------------------------------- failures under torchrun (issue 13)


def prs_error_lines(text):
    return [line for line in text.splitlines() if line.startswith("prs: error:")]


def test_bad_input_under_torchrun_is_one_line_from_rank_0(setup, tmp_path):
    """Every rank refuses the input; only rank 0 says so (torchrun adds its own report after it)."""
    _, path = setup
    cmd = command(path, tmp_path / "runs", 2) + ["--set", "train.grad_clip=-1"]
    done = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    out = done.stdout + done.stderr
    assert done.returncode != 0
    (line,) = prs_error_lines(out)
    assert "train.grad_clip: must be > 0" in line
    assert not (tmp_path / "runs").exists()


def rank_of(pid):
    env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return int(next(e for e in env if e.startswith(b"RANK=")).split(b"=", 1)[1])


@pytest.mark.slow
def test_stopped_rank_ends_the_run_within_the_timeout_with_one_line(setup, tmp_path):
    """SIGSTOP one rank after the first checkpoint: the other times out after PRS_DDP_TIMEOUT_S
    (not torch's 30 minutes), says so in one line naming the kept checkpoint, and torchrun ends."""
    _, path = setup
    root = tmp_path / "runs"
    env = {**ENV, "PRS_DDP_TIMEOUT_S": "15"}
    proc = subprocess.Popen(command(path, root, 2), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    workers = []
    try:
        while not (list(root.glob("*/results.json")) and results_of(next(root.iterdir()))["history"]):
            assert proc.poll() is None, "the run ended before a rank could be stopped"
            time.sleep(0.01)
        workers = children_of(proc.pid)
        (stopped,) = [pid for pid in workers if rank_of(pid) == 1]
        os.kill(stopped, signal.SIGSTOP)
        tick = time.monotonic()
        out, _ = proc.communicate(timeout=240)
        waited = time.monotonic() - tick
    finally:
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.kill()
        proc.wait(timeout=60)
    assert proc.returncode != 0 and waited < 200, (waited, out[-3000:])
    (line,) = prs_error_lines(out)
    assert line.startswith("prs: error: rank 0: another process of this run died or stopped answering within 15 s")
    (run_dir,) = root.iterdir()
    assert str(run_dir) in line and results_of(run_dir)["history"]  # the checkpoint is kept


@pytest.mark.slow
def test_restarted_torchrun_refuses_while_orphaned_workers_still_train(setup, tmp_path):
    """SIGKILL to the torchrun launcher alone leaves its workers training; a second torchrun on the
    same run stops at once with one line naming the orphaned rank 0 (the run directory's lock)."""
    _, path = setup
    root = tmp_path / "runs"
    long_run = command(path, root, 2) + ["--set", "train.epochs=30"]  # still training when the second one starts
    first = subprocess.Popen(long_run, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers = []
    try:
        while not list(root.glob("*/results.json")):
            assert first.poll() is None, "the run ended before its launcher could be killed"
            time.sleep(0.01)
        workers = children_of(first.pid)
        (rank0,) = [pid for pid in workers if rank_of(pid) == 0]
        first.kill()
        first.wait(timeout=60)
        assert all(Path(f"/proc/{pid}").exists() for pid in workers), "the orphans were to keep running"
        second = subprocess.run(long_run, env=ENV, capture_output=True, text=True, timeout=300)
    finally:
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert second.returncode != 0
    (line,) = prs_error_lines(second.stdout + second.stderr)
    assert f"is being trained by pid {rank0} on {socket.gethostname()}" in line


@pytest.mark.slow
def test_ctrl_c_under_torchrun_is_one_line_from_rank_0(setup, tmp_path):
    """Ctrl-C in a terminal sends SIGINT to torchrun and its workers (one process group): rank 0
    alone says how to resume, and the checkpoint written so far is kept."""
    _, path = setup
    root = tmp_path / "runs"
    proc = subprocess.Popen(command(path, root, 2) + ["--set", "train.epochs=30"], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        while not (list(root.glob("*/results.json")) and results_of(next(root.iterdir()))["history"]):
            assert proc.poll() is None, "the run ended before it could be interrupted"
            time.sleep(0.01)
        os.killpg(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    lines = [line for line in out.splitlines() if line.startswith("prs: ")]
    assert lines == ["prs: interrupted; rerun the same command to resume from the last checkpoint"], out[-3000:]
    (run_dir,) = root.iterdir()
    assert runs.load_checkpoint(run_dir / runs.CHECKPOINT)["epoch"] >= 1
