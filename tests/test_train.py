"""The CPU smoke run: `prs train` with the smoke preset on synthetic data, switching mid-run."""

import json

import pytest

from prs import cli


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("smoke")
    argv = ["train", "--config", "smoke", "--set", f"data.root={root / 'data'}", "--set", f"run.root={root / 'runs'}"]
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


def test_compiled_model_keeps_compiling_through_every_switch(monkeypatch):
    """Each switch is a new graph for dynamo; past its default limit (8) it would silently run eagerly."""
    import torch
    import torch._dynamo
    from torch import nn

    from prs.reparam import ReparamConv2d
    from prs.train import compile_for_switches

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
