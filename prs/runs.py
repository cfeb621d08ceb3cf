"""The run directory: one per config, `<run.root>/<model>-<config hash>/`.

It holds config.yaml, results.json (a `RunRecord`, rewritten atomically after every epoch,
`finished` at the end) and checkpoint.pt (+ checkpoint.prev.pt, the one before). Running the
same config again reuses a finished run or resumes an unfinished one from its checkpoint;
nothing is silently overwritten: `force` starts over explicitly, and `Run.prepare`, the first
write (and, with `force`, the first deletion), comes only once the config, data, model and
checkpoint have been checked.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml

from prs import config as config_mod
from prs.config import Config
from prs.errors import UserError

CHECKPOINT = "checkpoint.pt"
PREVIOUS = "checkpoint.prev.pt"
DAMAGED = "checkpoint.damaged.pt"
RESULTS = "results.json"
CONFIG = "config.yaml"


def run_dir_for(cfg: Config) -> Path:
    return Path(cfg.run.root) / f"{cfg.model.name}-{config_mod.config_hash(cfg)}"


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


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
    torch.save(state, tmp)
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


def load_checkpoint(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure to read means the same thing to the user
        prev = path.with_name(PREVIOUS)
        hint = (f"; the previous good checkpoint {prev} is kept: rerun with --previous-checkpoint to use it"
                if prev.exists() and prev != path else "; delete the run directory to start over")
        raise UserError(f"checkpoint {path} is corrupt or truncated ({type(e).__name__}){hint}") from None


# ----------------------------------------------------------------------------- the run


class Run:
    """The run directory of one config, and what training may do with it: reuse, resume, start over."""

    def __init__(self, cfg: Config, force: bool = False, previous_checkpoint: bool = False):
        if force and previous_checkpoint:
            raise UserError("--force starts over and --previous-checkpoint resumes: give one of them")
        self.cfg, self.force, self.previous_checkpoint = cfg, force, previous_checkpoint
        self.dir = run_dir_for(cfg)

    def finished_results(self) -> dict | None:
        """The results of this config's finished run, to reuse as they are; None: train (again)."""
        path = self.dir / RESULTS
        if self.force or not path.exists():
            return None
        try:
            existing = json.loads(path.read_text())
        except ValueError:
            raise UserError(f"{path} is not valid JSON; rerun with --force to start this run over") from None
        return existing if existing.get("finished") else None

    def checkpoint(self, record: RunRecord) -> tuple[dict, Path] | None:
        """The checkpoint to resume from and its path, or None for a fresh start. A checkpoint
        resumes only the run it was written for, on the same training images."""
        path = None if self.force else checkpoint_to_resume(self.dir, self.previous_checkpoint)
        if path is None:
            return None
        state = load_checkpoint(path)
        expected = {"config_hash": record.config_hash, "train_indices_sha": record.data["train_indices_sha"]}
        for key, now in expected.items():
            then = state.get(key, now)
            if then != now:
                what = ("another config" if key == "config_hash"
                        else "other training images (a different data set or root)")
                raise UserError(f"checkpoint {path} was written for {what} ({key} {then}, now {now}); point "
                                "data.root at the data it was trained on, or rerun with --force to start over")
        return state, path

    def prepare(self) -> None:
        """Create (or, with force, recreate) the directory and write config.yaml: the first write."""
        try:
            if self.force and self.dir.exists():
                shutil.rmtree(self.dir)
            self.dir.mkdir(parents=True, exist_ok=True)
            if self.previous_checkpoint and (self.dir / CHECKPOINT).exists():
                # Set the damaged checkpoint aside (not deleted) so that it never becomes checkpoint.prev.pt.
                os.replace(self.dir / CHECKPOINT, self.dir / DAMAGED)
            text = yaml.safe_dump(config_mod.to_dict(self.cfg), sort_keys=False)
            atomic_write_text(self.dir / CONFIG, text)
        except OSError as e:
            raise UserError(f"run.root: cannot write the run directory {self.dir} ({e.strerror or e}); "
                            "set run.root to a writable folder") from None

    def save(self, record: RunRecord, checkpoint: dict) -> None:
        """After an epoch: the checkpoint (stamped with what it belongs to), then results.json."""
        stamp = {"config_hash": record.config_hash, "train_indices_sha": record.data["train_indices_sha"]}
        save_checkpoint(self.dir, {**stamp, **checkpoint})
        self.write(record)

    def write(self, record: RunRecord) -> None:
        atomic_write_text(self.dir / RESULTS, json.dumps(record.to_dict(), indent=1))


def read_run(run_dir: str | Path) -> tuple[Config, dict, dict]:
    """A run directory's config, results and last checkpoint (for analysis)."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG).exists():
        raise UserError(f"{run_dir} is not a run directory (no {CONFIG})")
    cfg = config_mod.from_dict(yaml.safe_load((run_dir / CONFIG).read_text()))
    results = json.loads((run_dir / RESULTS).read_text())
    return cfg, results, load_checkpoint(run_dir / CHECKPOINT)
