"""Which switch form leaves its convolution? Train the hybrid under each form from the same weights.

    python benchmarks/switch_forms.py OUT.json --task local|relation [--forms a,b,...] [--data ROOT] [--runs ROOT]

Tasks (the decisions page's table):
* local: the `full` profile's recipe (gpu_fast) scaled down - hybrid_tiny, stages 3-4 switchable,
  the synthetic CIFAR-100, half of it, batch 32, half an epoch of warm-up, every layer switched at
  epoch 1 of 4;
* relation: the positive control (`synthetic-relation`) under the smoke recipe, 6 epochs, switch at 1.

For each form the row holds the final top-1 and, from the last history row, the collapse gap and the
per-layer mechanism diagnostics. With the never-switched CNN among the forms, each other form's dip
at the switch is also measured: the CNN's trained weights switched (no training after), against the
CNN itself. Appends to OUT.json, one row per form, so an interrupted sweep keeps what it finished.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

from prs import config, data, diagnostics, reparam, train

FORMS = {
    "cnn": {"schedule": {"name": "never"}},
    "sigmoid": {"switch": {"form": "sigmoid"}},
    "sigmoid_soft": {"switch": {"form": "sigmoid", "gate_logit": 4.0, "locality": 4.0}},
    "sigmoid_gatelr100": {"switch": {"form": "sigmoid", "gate_lr_scale": 100.0}},
    "sigmoid_qk10": {"switch": {"form": "sigmoid", "qk_lr_scale": 10.0}},
    "shared": {"switch": {"form": "sigmoid", "gate_logit": 0.0, "content_locality": 12.0, "query_init": "zero"}},
    "linear": {"switch": {"form": "linear"}},
    "linear_free": {"switch": {"form": "linear", "bounded_gate": False}},
    "linear_flat": {"switch": {"form": "linear", "content_locality": 0.0, "query_init": "zero"}},
    "linear_local": {"switch": {"form": "linear", "content_locality": 1.0, "query_init": "zero"}},
}

TASKS = {
    "local": {"preset": "gpu_fast", "dataset": "synthetic", "ratio": 0.5, "epochs": 4,
              "train": {"batch_size": 32, "warmup_epochs": 0.5}},
    "relation": {"preset": "smoke", "dataset": "synthetic-relation", "ratio": 1.0, "epochs": 6, "train": {}},
}


def make_config(task: str, form: str, data_root: str, run_root: str) -> config.Config:
    spec = TASKS[task]
    base = {"model": {"name": "hybrid_tiny", "switchable_stages": [3, 4]},
            "data": {"dataset": spec["dataset"], "root": data_root, "ratio": spec["ratio"]},
            "train": {"epochs": spec["epochs"], "device": "cpu", "eval_batch_size": 500, **spec["train"]},
            "schedule": {"name": "uniform", "epoch": 1}, "run": {"root": run_root}}
    return config.load(spec["preset"], config.merge(base, FORMS[form]))


def dip_at_switch(cnn_run: str, settings: dict) -> dict:
    """Switch every layer of the trained CNN (no training after) and compare with the CNN itself."""
    model, cfg = train.load_trained(cnn_run)
    _, test_loader, _ = data.build_loaders(cfg.data, 32, 500, torch.device("cpu"), 0)
    switched = copy.deepcopy(model)
    reparam.switch_to_attention(switched, reparam.switchable_layers(switched), **settings)
    gap = diagnostics.collapse_gap(switched, test_loader, torch.device("cpu"))
    return {"logit_change": gap["logit_change"], "top1_change": gap["top1_gap"], "agreement": gap["agreement"],
            "bound": reparam.switch_deviation_bound(**settings)}


def run_form(task: str, form: str, args) -> dict:
    cfg = make_config(task, form, args.data, args.runs)
    tick = time.perf_counter()
    results = train.train(cfg, progress=False, verbose=False)
    last = results["history"][-1]
    return {"task": task, "form": form, "settings": config.to_dict(cfg)["switch"], "run_dir": results["run_dir"],
            "commit": results["commit"], "final_top1": results["final"]["test_top1"],
            "seconds": time.perf_counter() - tick, "collapse": last.get("collapse"), "layers": last.get("mechanism")}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out")
    p.add_argument("--task", choices=sorted(TASKS), default="local")
    p.add_argument("--forms", default="cnn,sigmoid,linear", help=f"comma-separated, of: {', '.join(FORMS)}")
    p.add_argument("--data", default="data", help="data root")
    p.add_argument("--runs", default="runs/switch_forms", help="run root")
    args = p.parse_args()
    out = Path(args.out)
    rows = json.loads(out.read_text()) if out.exists() else []
    cnn_run = None
    for form in args.forms.split(","):
        row = run_form(args.task, form, args)
        if form == "cnn":
            cnn_run = row["run_dir"]
        elif cnn_run is not None:
            row["dip"] = dip_at_switch(cnn_run, {k: v for k, v in row["settings"].items() if not k.endswith("lr_scale")})
        rows.append(row)
        out.write_text(json.dumps(rows, indent=1))
        c, layers = row["collapse"] or {}, row["layers"] or []
        print(f"{args.task} {form:18s} top-1 {row['final_top1']:5.1f}  collapse gap {c.get('top1_gap', 0):+5.1f} "
              f"logit change {c.get('logit_change', 0):.4f} agreement {c.get('agreement', 1):.3f}  "
              f"gates {[round(r['gate'], 2) for r in layers]} q/k moved {[round(r['qk_moved'], 2) for r in layers]}  "
              f"dip {row.get('dip', {}).get('logit_change', '-')}  ({row['seconds']:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
