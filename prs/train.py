"""`train(cfg)`: one function for every model, schedule and dataset; and `load_trained(run_dir)`.

train = open the config's run directory (reuse a finished run; `prs.runs`) -> build the data,
model and optimizer from the config -> resume from the checkpoint if there is one -> `prs.engine.fit`,
saving a checkpoint and results.json after every epoch -> mark the results finished.

`torchrun --nproc_per_node=N -m prs train ...` trains with DistributedDataParallel
(`prs.distributed`): the global batch is split over the ranks, switches happen on every rank at
the same epoch, and only rank 0 writes. Stochastic depth and Mixup draw per rank.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from prs import config as config_mod
from prs import data, distributed, engine, env, lr_schedule, models, reparam, runs
from prs.config import Config
from prs.engine import TrainingDiverged  # noqa: F401  (raised by train; prs.cli reports it)
from prs.errors import UserError


def train(cfg: Config, *, force: bool = False, progress: bool | None = None, previous_checkpoint: bool = False,
          verbose: bool = True) -> dict:
    """Train (or resume, or reuse) the run for `cfg`; return its results (what results.json holds)."""
    rank, world = distributed.rank_and_world()
    say = print if verbose and rank == 0 else (lambda *a, **k: None)
    run = runs.Run(cfg, force, previous_checkpoint, say=say)
    finished = run.finished_results(say)
    if finished is not None:
        say(f"reusing finished run {run.dir} (--force to train it again)")
        return finished
    try:
        if rank == 0:
            run.lock()  # one writer: fail now, not after loading the data, if another process trains this run
        return _train(cfg, run, rank, world, say, progress)
    finally:
        run.release()


def _train(cfg: Config, run: runs.Run, rank: int, world: int, say, progress: bool | None) -> dict:
    device = env.pick_device(cfg.train.device)
    if world > 1:
        device = distributed.init(device)
    amp_dtype = env.autocast_dtype(cfg.train.precision, device)
    engine.seed_epoch(cfg.train.seed, -1)  # model initialisation
    train_loader, test_loader, data_info = _loaders(cfg, device, rank, world)
    parts, switches = _build(cfg, device, amp_dtype, data_info["num_classes"], world, len(train_loader))
    record = _record(cfg, run, parts.model, data_info, switches, device, world)
    state = _resume(run, record, parts, say)
    if state.epoch == 0 and cfg.model.init_from:
        _initialise_from(cfg, parts.model, say)
    if rank == 0:
        run.prepare()  # everything has been checked: only now is anything deleted or written
    parts.net = _wrap(parts.model, cfg, device, world, switches)

    def save(s: engine.FitState) -> None:
        run.save(record.update(s), {**parts.state_dict(), **s.checkpoint()})

    bar = engine.progress_bar(progress, (cfg.train.epochs - state.epoch) * len(train_loader), run.dir.name) \
        if rank == 0 else None
    try:
        engine.fit(parts, train_loader, test_loader, cfg.train, switches, state, rank=rank, say=say, bar=bar,
                   on_epoch_end=save if rank == 0 else None, where=run.dir)
    except RuntimeError as e:
        failure = distributed.peer_failure(e, rank, run.dir) if world > 1 else None
        if failure is None:
            raise
        raise failure from None
    if bar is not None:
        bar.close()
    record.update(state).finish()
    if rank == 0:
        run.write(record)
    distributed.barrier()  # every rank returns only once rank 0 has written the results
    return record.to_dict()


def load_trained(run_dir: str | Path, device: str = "cpu") -> tuple[nn.Module, Config]:
    """The trained model of a run (layers switched as they were), in eval mode, and its config."""
    cfg, results, checkpoint = runs.read_run(run_dir)
    model = build_model(cfg, results["data"]["num_classes"])
    model.load_state_dict(checkpoint["model"])
    return model.to(device).eval(), cfg


def build_model(cfg: Config, num_classes: int) -> nn.Module:
    """The registered model a config names (switchable stages only where the config sets them),
    with timm's ConViT attention swapped for its fused twin (same parameters and function)."""
    stages = {} if cfg.model.switchable_stages is None else {"switchable_stages": cfg.model.switchable_stages}
    model = models.create(cfg.model.name, num_classes=num_classes, drop_path=cfg.model.drop_path, **stages)
    return models.use_fused_attention(model)


def switch_settings(cfg: Config) -> dict:
    """The keyword arguments of reparam.switch_to_attention from a config's `switch` section."""
    sw = cfg.switch
    return {"form": sw.form, "gate_logit": sw.gate_logit, "locality": sw.locality,
            "content_locality": sw.content_locality, "query_init": sw.query_init, "bounded_gate": sw.bounded_gate}


# ----------------------------------------------------------------------------- the steps of train


def _loaders(cfg: Config, device: torch.device, rank: int, world: int):
    t = cfg.train
    if t.batch_size % world:
        raise UserError(f"train.batch_size: {t.batch_size} is not divisible by the {world} processes")
    try:
        return data.build_loaders(cfg.data, t.batch_size // world, t.eval_batch_size, device, t.seed, rank=rank,
                                  world_size=world, channels_last=t.channels_last)
    except OSError as e:  # e.g. data.root is a file, or not writable for the synthetic set
        raise UserError(f"data.root: cannot read the data under '{data.data_root(cfg.data.root)}' "
                        f"({e.strerror or e}); point data.root at a data folder") from None


def _build(cfg: Config, device, amp_dtype, num_classes: int, world: int,
           steps_per_epoch: int) -> tuple[engine.Parts, engine.Switches]:
    t = cfg.train
    model = build_model(cfg, num_classes).to(device)
    if world > 1:
        model = distributed.sync_batchnorm(model, device)  # before the optimizer; the parameters stay the same
    if t.channels_last:
        model = model.to(memory_format=torch.channels_last)
    layers = reparam.switchable_layers(model)
    if cfg.schedule.name != "never" and not layers:
        raise UserError(f"schedule '{cfg.schedule.name}': model '{cfg.model.name}' has no switchable layers; "
                        f"use a hybrid model ({', '.join(models.names('hybrid'))}) or schedule 'never'")
    switches = engine.Switches(cfg.schedule.switch_epochs(layers), switch_settings(cfg))
    optimizer = engine.build_optimizer(model, t, cfg.switch.gate_lr_scale, cfg.switch.qk_lr_scale)
    criterion, mixup = engine.build_criterion(cfg.data.augment, num_classes)
    parts = engine.Parts(model=model, net=model, optimizer=optimizer,
                         lr_scheduler=lr_schedule.build_lr_scheduler(optimizer, t, steps_per_epoch,
                                                                     switch_epochs=switches.epochs.values()),
                         scaler=torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16),
                         criterion=criterion, mixup=mixup, amp_dtype=amp_dtype, device=device)
    return parts, switches


def _record(cfg: Config, run: runs.Run, model: nn.Module, data_info: dict, switches: engine.Switches,
            device: torch.device, world: int) -> runs.RunRecord:
    layers = list(switches.epochs)
    return runs.RunRecord(
        config=config_mod.to_dict(cfg), config_hash=config_mod.config_hash(cfg), run_dir=str(run.dir),
        model={"name": cfg.model.name, "family": models.family(cfg.model.name),
               "parameters": sum(p.numel() for p in model.parameters()), "switchable_layers": layers},
        data=data_info, schedule=cfg.schedule.to_dict(), switch_epochs=switches.epochs, commit=env.git_commit(),
        versions=env.versions(), device=env.device_name(device), world_size=world)


def _initialise_from(cfg: Config, model: nn.Module, say) -> None:
    """Load the final weights of the finished run `model.init_from` (same model, same run.root)."""
    source = Path(cfg.run.root) / cfg.model.init_from
    results_path = source / runs.RESULTS
    try:
        finished = json.loads(results_path.read_text()).get("finished")
    except (OSError, ValueError):
        finished = False
    if not finished:
        raise UserError(f"model.init_from: '{source}' is not a finished run; train it first (it is its own config)")
    source_cfg, _, checkpoint = runs.read_run(source)
    if (source_cfg.model.name, source_cfg.model.switchable_stages) != (cfg.model.name, cfg.model.switchable_stages):
        raise UserError(f"model.init_from: '{source}' trained {source_cfg.model.name} (stages "
                        f"{source_cfg.model.switchable_stages}), not {cfg.model.name} (stages {cfg.model.switchable_stages})")
    model.load_state_dict(checkpoint["model"])
    say(f"initialised from the final weights of {source}")


def _resume(run: runs.Run, record: runs.RunRecord, parts: engine.Parts, say) -> engine.FitState:
    """Where to start: the checkpoint's state loaded into `parts`, or a fresh start."""
    found = run.checkpoint(record, say)
    if found is None:
        return engine.FitState()
    checkpoint, path = found
    try:
        parts.load_state_dict(checkpoint)
    except (KeyError, RuntimeError, ValueError) as e:
        raise UserError(f"checkpoint {path} does not fit this run's model or optimizer "
                        f"({type(e).__name__}); rerun with --force to start over") from None
    state = engine.FitState.from_checkpoint(checkpoint)
    say(f"resuming {run.dir} after epoch {state.epoch} from {path.name}")
    return state


def _wrap(model: nn.Module, cfg: Config, device, world: int, switches: engine.Switches) -> nn.Module:
    """What runs the batches: DDP around the model on several processes, compiled on request."""
    net = model
    if world > 1:  # the set of used parameters changes at a switch
        net = distributed.wrap(model, device, find_unused_parameters=bool(switches.epochs))
    if cfg.train.compile:
        net = engine.compile_for_switches(net, switches.events)
    return net
