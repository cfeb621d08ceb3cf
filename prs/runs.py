"""The run directory: one per config, `<run.root>/<model>-<config hash>/`.

It holds config.yaml, results.json (a `RunRecord`, rewritten atomically after every epoch,
`finished` at the end), checkpoint.pt (+ checkpoint.prev.pt, the one before) and run.lock (held
by the one process that writes the directory). Running the same config again reuses a finished
run or resumes an unfinished one from its checkpoint (a damaged results.json is rebuilt from
it); nothing is silently overwritten: `force` starts over explicitly, and `Run.prepare`, the
first write (and, with `force`, the first deletion), comes only once the config, data, model and
checkpoint have been checked. A checkpoint resumes only the run it was stamped with (config,
image content, process count); a write that fails (a full disk) removes its partial file.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import json
import os
import shutil
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import yaml

from prs import config as config_mod
from prs.config import Config
from prs.errors import RunFailure, UserError

CHECKPOINT = "checkpoint.pt"
PREVIOUS = "checkpoint.prev.pt"
DAMAGED = "checkpoint.damaged.pt"
RESULTS = "results.json"
CONFIG = "config.yaml"
LOCK = "run.lock"  # held (fcntl.flock) by the one process that writes the directory; never deleted
# What a checkpoint must hold to resume a run (prs.engine.Parts.state_dict + FitState.checkpoint).
TRAINING_KEYS = ("model", "optimizer", "lr_scheduler", "scaler", "rng", "epoch", "step", "history",
                 "switch_events", "wall_time_s")


def run_dir_for(cfg: Config) -> Path:
    return Path(cfg.run.root) / f"{cfg.model.name}-{config_mod.config_hash(cfg)}"


def _write_failure(path: Path, e: BaseException) -> RunFailure:
    """One line for a failed write of `path` (its partial .tmp already removed)."""
    if isinstance(e, OSError) and e.errno == errno.ENOSPC or _disk_full(path.parent):
        reason = "the disk is full"
    else:
        reason = (e.strerror if isinstance(e, OSError) and e.strerror else str(e).splitlines()[0]) or type(e).__name__
    return RunFailure(f"cannot write {path} ({reason}); the partial file was removed and what was there before is "
                      f"kept: free space (or fix the folder) and rerun the same command to resume")


def _disk_full(folder: Path) -> bool:
    try:
        return shutil.disk_usage(folder).free < 1024 * 1024
    except OSError:
        return False


def write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """write(tmp) then rename tmp to `path`; on any failure the partial tmp is removed and a
    RunFailure names the file (torch.save reports a full disk as a RuntimeError, 'unexpected pos')."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:
        tmp.unlink(missing_ok=True)
        raise _write_failure(path, e) from None


def atomic_write_text(path: Path, text: str) -> None:
    write_atomically(path, lambda tmp: tmp.write_text(text))


@dataclass
class RunRecord:
    """results.json: what was run (config, model, data, schedule), what happened (switches, one
    history row per epoch, final accuracy, timings), and with what (commit, versions, device)."""

    config: dict
    config_hash: str
    run_dir: str
    model: dict  # name, family, parameters, switchable_layers
    data: dict  # prs.data.build_loaders' info: num_classes, sizes, train_indices_sha, ...
    schedule: dict
    switch_epochs: dict
    switch_events: list = field(default_factory=list)  # {"epoch", "layers"} per switch
    history: list = field(default_factory=list)  # one row per epoch (prs.engine.fit)
    final: dict | None = None  # test_top1, test_top5 after the last epoch
    wall_time_s: float = 0.0
    throughput_img_s: float | None = None
    commit: str = "unknown"
    versions: dict = field(default_factory=dict)
    device: str = ""
    world_size: int = 1
    finished: bool = False

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def update(self, state) -> RunRecord:
        """Take the history, switch events and training time of a fit (a prs.engine.FitState)."""
        self.history, self.switch_events, self.wall_time_s = state.history, state.switch_events, state.wall_time_s
        return self

    def finish(self) -> None:
        last = self.history[-1]
        self.final = {"test_top1": last["test_top1"], "test_top5": last["test_top5"]}
        images = sum(r["images_per_s"] * r["epoch_time_s"] for r in self.history)
        self.throughput_img_s = images / max(self.wall_time_s, 1e-9)
        self.finished = True


# ----------------------------------------------------------------------------- checkpoints


def save_checkpoint(run_dir: Path, state: dict) -> None:
    """Write to a temporary file, keep the last good checkpoint as .prev, then rename.

    A kill between the two renames leaves only .prev, which `checkpoint_to_resume` then uses.
    """
    tmp = run_dir / (CHECKPOINT + ".tmp")
    try:
        torch.save(state, tmp)
    except (OSError, RuntimeError) as e:
        tmp.unlink(missing_ok=True)
        raise _write_failure(run_dir / CHECKPOINT, e) from None
    current = run_dir / CHECKPOINT
    if current.exists():
        os.replace(current, run_dir / PREVIOUS)
    os.replace(tmp, current)


def checkpoint_to_resume(run_dir: Path, previous: bool = False) -> Path | None:
    """checkpoint.pt, or checkpoint.prev.pt when asked for or when it is the only one (a kill
    between the renames of `save_checkpoint`), or None for a fresh start."""
    current, prev = run_dir / CHECKPOINT, run_dir / PREVIOUS
    if previous:
        if not prev.exists():
            raise UserError(f"--previous-checkpoint: {prev} does not exist")
        return prev
    if current.exists():
        return current
    return prev if prev.exists() else None


def _read_checkpoint(path: Path, required: tuple[str, ...]) -> tuple[dict | None, str]:
    """(the checkpoint, "") or (None, what is wrong with it)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure to read means the same thing to the user
        return None, f"is corrupt or truncated ({type(e).__name__})"
    if not isinstance(state, dict):
        return None, f"is not a prs checkpoint (it holds a {type(state).__name__}, not a mapping)"
    missing = [k for k in required if k not in state]
    if missing:
        return None, f"is not a complete prs checkpoint (no {', '.join(repr(k) for k in missing)})"
    return state, ""


def load_checkpoint(path: Path, required: tuple[str, ...] = TRAINING_KEYS) -> dict:
    """The checkpoint at `path` (tensors and plain data only: weights_only); a UserError names a
    damaged one and says whether checkpoint.prev.pt can stand in for it."""
    state, problem = _read_checkpoint(path, required)
    if state is not None:
        return state
    prev = path.with_name(PREVIOUS)
    if prev == path or not prev.exists():
        hint = "; move the run directory away (or rerun with --force) to start over"
    elif _read_checkpoint(prev, required)[0] is not None:
        hint = f"; the previous good checkpoint {prev} is kept: rerun with --previous-checkpoint to use it"
    else:
        hint = (f"; {prev.name} is damaged as well, so no checkpoint can resume this run: move the run directory "
                "away (or rerun with --force) to start over")
    raise UserError(f"checkpoint {path} {problem}{hint}") from None


def free_name(folder: Path, stem: str, suffix: str) -> Path:
    """folder/stem+suffix, or stem.2+suffix, stem.3+suffix, ...: the first that does not exist."""
    path, n = folder / f"{stem}{suffix}", 2
    while path.exists():
        path, n = folder / f"{stem}.{n}{suffix}", n + 1
    return path


def _read_results(path: Path) -> dict | None:
    """results.json as a mapping, or None if it is not one (truncated, empty, [], null)."""
    try:
        results = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return results if isinstance(results, dict) else None


def _is_complete(results: dict, cfg: Config) -> bool:
    """Does a results.json that says `finished` hold a whole run of this config?"""
    final, history = results.get("final"), results.get("history")
    return (results.get("config_hash") == config_mod.config_hash(cfg) and isinstance(history, list)
            and len(history) == cfg.train.epochs and isinstance(final, dict)
            and all(isinstance(final.get(k), (int, float)) for k in ("test_top1", "test_top5")))


# ----------------------------------------------------------------------------- the run


class Run:
    """The run directory of one config, and what training may do with it: reuse, resume, start over.

    One process writes it: `lock` (at the start, when the directory exists) or `prepare` (when
    it creates it) takes `run.lock` with fcntl.flock, which the kernel releases when the process
    ends, however it ends; a second process gets a RunFailure naming the first (pid and host).
    """

    def __init__(self, cfg: Config, force: bool = False, previous_checkpoint: bool = False, say: Callable = print):
        if force and previous_checkpoint:
            raise UserError("--force starts over and --previous-checkpoint resumes: give one of them")
        self.cfg, self.force, self.previous_checkpoint, self.say = cfg, force, previous_checkpoint, say
        self.dir = run_dir_for(cfg)
        self._lock_fd: int | None = None
        self._unlockable = False  # the file system refused flock (said once)
        self._seen: dict | None = None  # the files as they were when the checkpoint was chosen

    # -- one writer

    def lock(self, create: bool = False) -> None:
        """Take run.lock (creating it only if `create`); a RunFailure if another process holds it."""
        if self._lock_fd is not None or self._unlockable:
            return
        path = self.dir / LOCK
        try:
            fd = os.open(path, os.O_RDWR | (os.O_CREAT if create else 0), 0o644)
        except FileNotFoundError:
            return  # no run directory (or one from before locks): prepare() takes it
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise RunFailure(f"{self.dir} is being trained by {holder} (it holds {LOCK}); a run directory has one "
                             "writer: wait for it to finish, or stop it (its last checkpoint is kept) and rerun "
                             "to resume") from None
        except OSError as e:  # a file system without locks (some network mounts): say so, and go on
            os.close(fd)
            self._unlockable = True
            self.say(f"note: cannot lock {path} on this file system ({e.strerror or e}); make sure no other "
                     "process trains this run")
            return
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
        self._lock_fd = fd

    def release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the last descriptor drops the flock
            self._lock_fd = None

    def _files_now(self) -> dict:
        out = {}
        for name in (CHECKPOINT, PREVIOUS, RESULTS):
            try:
                st = (self.dir / name).stat()
                out[name] = (st.st_mtime_ns, st.st_size)
            except FileNotFoundError:
                out[name] = None
        return out

    # -- reading

    def finished_results(self, say: Callable = print) -> dict | None:
        """The results of this config's finished run, to reuse as they are; None: train (again).

        A results.json that is damaged (truncated, empty, not a mapping) or that says finished
        without holding the whole run is not trusted: the run resumes from its checkpoint, which
        rewrites it (a finished run's checkpoint just rewrites it)."""
        path = self.dir / RESULTS
        if self.force or not path.exists():
            return None
        existing = _read_results(path)
        if existing is None or (existing.get("finished") and not _is_complete(existing, self.cfg)):
            what = "is damaged" if existing is None else "says finished but does not hold the whole run"
            source = ("its checkpoint" if checkpoint_to_resume(self.dir) is not None
                      else "the start (there is no checkpoint)")
            say(f"{path} {what}: it is rebuilt by training from {source}")
            return None
        if not existing.get("finished"):
            return None
        return {**existing, "run_dir": str(self.dir)}  # where the run is now, if it was moved

    def checkpoint(self, record: RunRecord, say: Callable = print) -> tuple[dict, Path] | None:
        """The checkpoint to resume from and its path, or None for a fresh start. A checkpoint
        resumes only the run it was written for: same config, same training and test images
        (by content), same number of processes."""
        self._seen = self._files_now()
        path = None if self.force else checkpoint_to_resume(self.dir, self.previous_checkpoint)
        if path is None:
            return None
        state = load_checkpoint(path)
        now = stamp(record)
        for key in ("config_hash", "train_indices_sha", "data_sha"):
            then = state.get(key, now[key])  # checkpoints from before a stamp existed are not refused for it
            if then != now[key]:
                what = {"config_hash": "another config",
                        "train_indices_sha": "other training images (a different data set or root)",
                        "data_sha": "other training images or test images (their pixels or labels differ)"}[key]
                raise UserError(f"checkpoint {path} was written for {what} ({key} {then}, now {now[key]}); point "
                                "data.root at the data it was trained on, or set run.tag to train a separate run "
                                "(--force would delete this one)")
        then = state.get("world_size", now["world_size"])
        if then != now["world_size"]:
            raise UserError(f"checkpoint {path} was written by {then} process(es), this run has {now['world_size']}: "
                            f"per-rank Mixup and stochastic depth make the numbers depend on it; resume with "
                            f"{then} (torchrun --nproc_per_node={then}), or set run.tag to train a separate run")
        then = state.get("device", now["device"])
        if then != now["device"]:
            say(f"note: {path.name} was trained on {then}, this process runs on {now['device']}: sums may round "
                "differently, so the resumed run may differ from an uninterrupted one in the last bits")
        return state, path

    # -- writing

    def prepare(self) -> None:
        """Create (or, with force, empty) the directory, take its lock, write config.yaml: the first write."""
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            self.lock(create=True)
            if self._seen is not None and self._files_now() != self._seen:
                raise RunFailure(f"another process wrote {self.dir} while this one was starting; rerun the same "
                                 "command to resume from its checkpoint")
            if self.force:
                for child in self.dir.iterdir():
                    if child.name != LOCK:
                        shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
            if self.previous_checkpoint and (self.dir / CHECKPOINT).exists():
                # Set the damaged checkpoint aside (never deleted, never overwritten) so that it
                # never becomes checkpoint.prev.pt.
                os.replace(self.dir / CHECKPOINT, free_name(self.dir, DAMAGED.removesuffix(".pt"), ".pt"))
            text = yaml.safe_dump(config_mod.to_dict(self.cfg), sort_keys=False)
            atomic_write_text(self.dir / CONFIG, text)
        except OSError as e:
            raise UserError(f"run.root: cannot write the run directory {self.dir} ({e.strerror or e}); "
                            "set run.root to a writable folder") from None

    def save(self, record: RunRecord, checkpoint: dict) -> None:
        """After an epoch: the checkpoint (stamped with what it belongs to), then results.json."""
        save_checkpoint(self.dir, {**stamp(record), **checkpoint})
        self.write(record)

    def write(self, record: RunRecord) -> None:
        atomic_write_text(self.dir / RESULTS, json.dumps(record.to_dict(), indent=1))


def stamp(record: RunRecord) -> dict:
    """What a checkpoint records of the run it belongs to, and `Run.checkpoint` compares."""
    return {"config_hash": record.config_hash, "train_indices_sha": record.data["train_indices_sha"],
            "data_sha": record.data.get("data_sha"), "world_size": record.world_size, "device": record.device}


def read_run(run_dir: str | Path) -> tuple[Config, dict, dict]:
    """A run directory's config, results and last checkpoint (for analysis)."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG).exists():
        raise UserError(f"{run_dir} is not a run directory (no {CONFIG})")
    cfg = config_mod.from_dict(config_mod.read_yaml(run_dir / CONFIG))
    results = _read_results(run_dir / RESULTS)
    if results is None:
        raise UserError(f"{run_dir / RESULTS} is missing or damaged; rerun `prs train --resume {run_dir}` to rebuild it")
    return cfg, results, load_checkpoint(run_dir / CHECKPOINT, required=("model",))
