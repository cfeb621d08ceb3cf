"""The CPU smoke run: `prs train` with the smoke preset on synthetic data, switching mid-run."""

import dataclasses
import json
import math

import pytest
import torch

from prs import cli, config, engine, lr_schedule, reparam, runs, train
from prs.errors import UserError


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, synthetic_root):
    root = tmp_path_factory.mktemp("smoke")
    argv = ["train", "--config", "smoke", "--set", f"data.root={synthetic_root}", "--set", f"run.root={root / 'runs'}"]
    assert cli.main(argv) == 0
    (run_dir,) = (root / "runs").iterdir()
    return run_dir, json.loads((run_dir / "results.json").read_text())


@pytest.mark.slow
def test_smoke_learns_well_above_chance(smoke_run):
    _, results = smoke_run
    assert results["finished"]
    assert results["data"]["num_classes"] == 100
    assert results["final"]["test_top1"] > 5.0, "chance is 1%; the smoke run must clear 5x chance"
    assert results["history"][-1]["train_loss"] < results["history"][0]["train_loss"]


@pytest.mark.slow
def test_smoke_switches_mid_run_deepest_first(smoke_run):
    _, results = smoke_run
    layers = results["model"]["switchable_layers"]
    assert results["switch_epochs"] == {layers[0]: 4, layers[1]: 3, layers[2]: 2}
    events = results["switch_events"]
    assert [e["epoch"] for e in events] == [2, 3, 4]
    assert [e["layers"] for e in events] == [[layers[2]], [layers[1]], [layers[0]]]
    assert [row["attention_layers"] for row in results["history"]] == [0, 0, 1, 2, 3]


@pytest.mark.slow
def test_results_carry_provenance(smoke_run):
    run_dir, results = smoke_run
    for key in ("config", "config_hash", "commit", "versions", "device", "wall_time_s", "throughput_img_s"):
        assert results[key] not in (None, ""), key
    assert results["config"]["schedule"] == {"name": "prs", "first": 4, "last": 2}
    assert {"torch", "timm", "torchvision", "prs"} <= set(results["versions"])
    assert (run_dir / "checkpoint.pt").exists() and (run_dir / "config.yaml").exists()
    assert len(results["history"]) == 5 and all(r["images_per_s"] > 0 for r in results["history"])
    # results.json is a RunRecord, field for field, in the order runs before the record existed wrote it
    assert list(results) == [f.name for f in dataclasses.fields(runs.RunRecord)]
    assert list(results["history"][0]) == ["epoch", "train_loss", "train_top1", "images", "test_top1", "test_top5",
                                           "lr", "epoch_time_s", "images_per_s", "attention_layers",
                                           "mean_attention_distance_px"]


def test_fit_hooks_add_fields_to_each_row_before_the_epoch_is_kept(tiny_config):
    """fit's per-epoch hooks run after evaluation and before on_epoch_end (the checkpoint)."""
    cfg = config.from_dict(tiny_config({"train": {"epochs": 2}, "schedule": {"name": "uniform", "epoch": 1}}))
    device = torch.device("cpu")
    engine.seed_epoch(cfg.train.seed, -1)
    train_loader, test_loader, info = train._loaders(cfg, device, rank=0, world=1)
    parts, switches = train._build(cfg, device, None, info["num_classes"], 1, len(train_loader))
    kept = []
    state = engine.fit(parts, train_loader, test_loader, cfg.train, switches, engine.FitState(), say=lambda *a: None,
                       hooks=[lambda model, row: row.update(switched=len(reparam.attention_layers(model)))],
                       on_epoch_end=lambda s: kept.append((s.epoch, dict(s.history[-1]))))
    assert [row["switched"] for row in state.history] == [0, 2] and state.epoch == 2
    assert [(epoch, row["switched"]) for epoch, row in kept] == [(1, 0), (2, 2)]
    assert state.switch_events == [{"epoch": 1, "layers": list(switches.epochs)}]


def test_compiled_model_keeps_compiling_through_every_switch(monkeypatch):
    """Each switch is a new graph for dynamo; past its default limit (8) it would silently run eagerly."""
    import torch._dynamo
    from torch import nn

    from prs.reparam import ReparamConv2d
    from prs.engine import compile_for_switches

    monkeypatch.setattr(torch._dynamo.config, "recompile_limit", 8)
    torch._dynamo.reset()
    graphs = []

    def counting_backend(graph_module, example_inputs):
        graphs.append(graph_module)
        return graph_module.forward

    layers = nn.Sequential(*[ReparamConv2d(2, 2) for _ in range(10)])
    net = compile_for_switches(layers, switch_events=len(layers), backend=counting_backend)
    x = torch.randn(1, 2, 4, 4)
    outputs = [net(x)]
    for layer in layers:
        layer.switch_to_attention()
        outputs.append(net(x))
    torch._dynamo.reset()
    assert len(graphs) == len(layers) + 1, "a layer configuration ran without being compiled"
    for out in outputs[1:]:  # the switch keeps the function: every graph computes the same thing
        torch.testing.assert_close(out, outputs[0], atol=2e-6, rtol=1e-5)


def test_learning_rate_restarts_at_each_switch_epoch():
    """train.lr_restart_at_switch: warm-up again at every switch epoch, then a new cosine to zero."""
    t = config.load(None, {"train": {"epochs": 10, "lr": 0.1, "warmup_epochs": 1, "lr_restart_at_switch": True,
                                     "restart_warmup_epochs": 1}}).train
    net = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD([{"params": [net.weight]}, {"params": [net.bias], "lr_scale": 10.0}], lr=t.lr)
    sched = lr_schedule.build_lr_scheduler(opt, t, steps_per_epoch=10, switch_epochs=[None, 4, 4, 7])
    lrs = []
    for step in range(100):
        sched.step_update(step)
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs[0] == pytest.approx(1e-4) and lrs[10] == pytest.approx(0.1)  # warm-up, then the peak
    assert lrs[39] == pytest.approx(0.05 * (1 + math.cos(math.pi * 29 / 90)))  # one cosine to the end, cut off
    assert lrs[40] == pytest.approx(1e-4) and lrs[50] == pytest.approx(0.1)  # restart at 4
    assert lrs[70] == pytest.approx(1e-4) and lrs[80] == pytest.approx(0.1) and lrs[99] < 1e-3  # restart at 7
    assert opt.param_groups[1]["lr"] == pytest.approx(10 * lrs[-1])  # lr_scale is honoured
    assert sched.state_dict() == {}  # a function of the step: a resumed run needs no state
    plain = lr_schedule.build_lr_scheduler(opt, dataclasses.replace(t, lr_restart_at_switch=False), 10, [4])
    assert not isinstance(plain, lr_schedule.RestartingCosine)


def test_init_from_starts_from_the_final_weights_of_a_finished_run(tiny_config, tmp_path, monkeypatch):
    """T-CNN as published: a CNN trained for its schedule, then switched whole and fine-tuned."""
    root = {"run": {"root": str(tmp_path)}, "train": {"epochs": 1}}
    source = config.from_dict(tiny_config({**root, "schedule": {"name": "never"}}))
    finetune = config.from_dict(tiny_config({**root, "schedule": {"name": "from_start"},
                                             "model": {"init_from": runs.run_dir_for(source).name}}))
    with pytest.raises(UserError, match="not a finished run"):
        train.train(finetune, verbose=False)
    train.train(source, verbose=False)
    _, _, checkpoint = runs.read_run(runs.run_dir_for(source))
    seen = {}
    original_fit = engine.fit

    def fit(parts, *args, **kwargs):
        seen.update({k: v.clone() for k, v in parts.model.state_dict().items()})
        return original_fit(parts, *args, **kwargs)

    monkeypatch.setattr(engine, "fit", fit)
    results = train.train(finetune, verbose=False)
    assert seen and all(torch.equal(seen[k], v) for k, v in checkpoint["model"].items())
    assert results["switch_events"][0]["epoch"] == 0 and results["config"]["model"]["init_from"]
    other = config.from_dict(tiny_config({**root, "schedule": {"name": "from_start"},
                                          "model": {"name": "hybrid_tiny", "switchable_stages": [4],
                                                            "init_from": runs.run_dir_for(source).name}}))
    with pytest.raises(UserError, match="stages"):
        train.train(other, verbose=False)
