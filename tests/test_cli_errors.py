"""Bad input at every entry point: one line naming the field and what is allowed, exit code 2,
no traceback, nothing written (no run directory, no results, no benchmark record, no data)."""

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from prs import bench, cli, data, engine

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, tiny_config):
    """Input files and folders, outside the working directory the commands run in."""
    base = tmp_path_factory.mktemp("inputs")
    tiny = tiny_config({"run": {"root": "runs"}})  # relative: inside the working directory the test watches
    (base / "tiny.yaml").write_text(yaml.safe_dump(tiny))
    (base / "typo.yaml").write_text(yaml.safe_dump({**tiny, "trian": {"epochs": 3}}))
    (base / "list.yaml").write_text("- model\n- data\n")
    (base / "evil.yaml").write_text(f"model: !!python/object/apply:os.system ['touch {base / 'executed'}']\n")
    (base / "empty").mkdir()
    for split in ("train", "val"):
        (base / "no_classes" / split).mkdir(parents=True)
    (base / "not_synthetic" / "synthetic" / data.ARRAY_FOLDER).mkdir(parents=True)
    # Files that once gave tracebacks, hung or were silently misread (issue 13).
    (base / "twice.yaml").write_text(yaml.safe_dump(tiny) + "train:\n  epochs: 1\n")
    bomb = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    bomb += [f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 9) + "]" for i in range(8)]
    (base / "bomb.yaml").write_text("\n".join(bomb) + "\n")
    (base / "deep.yaml").write_text("model: " + "[" * 20000 + "]" * 20000 + "\n")
    (base / "binary.yaml").write_bytes(bytes(range(256)) * 8)
    (base / "utf16.yaml").write_bytes(yaml.safe_dump(tiny).encode("utf-16"))
    (base / "binrun").mkdir()
    (base / "binrun" / "config.yaml").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    (base / "brace.json").write_text("{")
    (base / "dict.json").write_text("{}")
    (base / "mine" / "html").mkdir(parents=True)
    (base / "mine" / "html" / "notes.txt").write_text("the user's own notes")
    return base


def snapshot(folder):
    return sorted((str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns) for p in Path(folder).rglob("*"))


TRAIN = ["train", "--config", "{base}/tiny.yaml"]
# (argv, substrings the one error line must contain: the field, and the allowed values or the fix)
CASES = {
    "unknown model": (TRAIN + ["--set", "model.name=resnet_huge"], ["model.name", "resnet_huge", "hybrid_tiny"]),
    "unknown schedule": (TRAIN + ["--set", "schedule={name: sometimes}"], ["schedule.name", "prs", "uniform"]),
    "schedule params": (TRAIN + ["--set", "schedule={name: prs, first: 2}"], ["schedule 'prs'", "missing: last"]),
    "unknown dataset": (TRAIN + ["--set", "data.dataset=cifar10"], ["data.dataset", "'cifar100', 'synthetic'"]),
    "ratio zero": (TRAIN + ["--set", "data.ratio=0"], ["data.ratio", "(0, 1]"]),
    "ratio above one": (TRAIN + ["--set", "data.ratio=1.5"], ["data.ratio", "(0, 1]"]),
    "switch beyond run": (TRAIN + ["--set", "schedule={name: uniform, epoch: 9}"], ["schedule.epoch", "0..2"]),
    "zero epochs": (TRAIN + ["--set", "train.epochs=0"], ["train.epochs", "> 0"]),
    "negative epochs": (TRAIN + ["--set", "train.epochs=-2"], ["train.epochs", "> 0"]),
    "zero batch": (TRAIN + ["--set", "train.batch_size=0"], ["train.batch_size", "> 0"]),
    "batch above data": (TRAIN + ["--set", "train.batch_size=4096"],
                         ["400 images", "batch of 4096", "zero batches", "lower train.batch_size", "data.ratio"]),
    "int field given text": (TRAIN + ["--set", "train.epochs=ten"], ["train.epochs", "expected int"]),
    "nan lr": (TRAIN + ["--set", "train.lr=.nan"], ["train.lr", "finite"]),
    "unknown choice": (TRAIN + ["--set", "train.optimizer=adam"], ["train.optimizer", "adamw, sgd"]),
    "typo in --set": (TRAIN + ["--set", "train.lerning_rate=0.1"], ["train.lerning_rate", "allowed keys", "lr"]),
    "typo in file": (["train", "--config", "{base}/typo.yaml"], ["'trian'", "allowed keys", "train"]),
    "yaml not a mapping": (["train", "--config", "{base}/list.yaml"], ["{base}/list.yaml", "must be a mapping"]),
    "yaml with code": (["train", "--config", "{base}/evil.yaml"], ["{base}/evil.yaml", "not valid YAML"]),
    "missing file": (["train", "--config", "{base}/nope.yaml"], ["{base}/nope.yaml", "does not exist"]),
    "unknown preset": (["train", "--config", "smok"], ["'smok'", "presets", "smoke"]),
    "no config": (["train"], ["--config", "--resume"]),
    "bad --set": (TRAIN + ["--set", "train.epochs"], ["--set 'train.epochs'", "key=value"]),
    "missing dataset": (TRAIN + ["--set", "data.dataset=cifar100", "--set", "data.root={base}/empty"],
                        ["CIFAR-100 not found", "{base}/empty", "prs data download", "data.download=true"]),
    "no network": (TRAIN + ["--set", "data.dataset=cifar100", "--set", "data.download=true", "--set", "data.root=dl"],
                   ["could not download CIFAR-100", "check the network"]),
    "data root is a file": (TRAIN + ["--set", "data.root={base}/tiny.yaml"], ["data.root"]),
    "folder without classes": (TRAIN + ["--set", "data.dataset=imagefolder:{base}/no_classes",
                                        "--set", "data.loader=torchvision"], ["{base}/no_classes/train", "<class>"]),
    "folder, device loader": (TRAIN + ["--set", "data.dataset=imagefolder:{base}/no_classes"],
                              ["data.loader", "torchvision"]),
    "not the synthetic set": (TRAIN + ["--set", "data.root={base}/not_synthetic"], ["is not a prs dataset"]),
    "bf16 on cpu": (TRAIN + ["--set", "train.precision=bf16"], ["train.precision", "fp32 or auto"]),
    "cuda without gpu": (TRAIN + ["--set", "train.device=cuda:7"], ["train.device"]),
    "cnn with a schedule": (TRAIN + ["--set", "model.name=resnet_tiny", "--set", "model.switchable_stages=null"],
                            ["no switchable layers", "never"]),
    "bad stages": (TRAIN + ["--set", "model.switchable_stages=[5]"], ["model.switchable_stages", "1, 2, 3, 4"]),
    "unknown flag": (TRAIN + ["--epochs", "3"], ["unrecognized arguments: --epochs"]),
    "negative grad clip": (TRAIN + ["--set", "train.grad_clip=-1"], ["train.grad_clip", "must be > 0", "-1.0"]),
    "negative gamma": (TRAIN + ["--set", "train.gamma=-1"], ["train.gamma", "in (0, 1]"]),
    "negative momentum": (TRAIN + ["--set", "train.momentum=-1"], ["train.momentum", "in [0, 1)"]),
    "negative seed": (TRAIN + ["--set", "train.seed=-1"], ["train.seed", "in [0, 4294967295]"]),
    "seed above 2**64": (TRAIN + ["--set", f"train.seed={2**64 + 1}"], ["train.seed", "in [0, 4294967295]"]),
    "drop path 2": (TRAIN + ["--set", "model.drop_path=2.0"], ["model.drop_path", "in [0, 1)"]),
    "meta device": (TRAIN + ["--set", "train.device=meta"], ["train.device", "'meta'", "cpu"]),
    "mps where absent": (TRAIN + ["--set", "train.device=mps"], ["train.device", "MPS", "cpu or auto"]),
    "two train blocks": (["train", "--config", "{base}/twice.yaml"], ["key 'train' is given twice"]),
    "alias bomb": (["train", "--config", "{base}/bomb.yaml"], ["{base}/bomb.yaml", "aliases are expanded"]),
    "list 20000 deep": (["train", "--config", "{base}/deep.yaml"], ["{base}/deep.yaml", "nested more than 32"]),
    "binary config": (["train", "--config", "{base}/binary.yaml"], ["{base}/binary.yaml", "not UTF-8 text"]),
    "utf-16 config": (["train", "--config", "{base}/utf16.yaml"], ["{base}/utf16.yaml", "UTF-16"]),
    "binary config under --resume": (["train", "--resume", "{base}/binrun"], ["config.yaml", "not UTF-8 text"]),
    "bench output holds {": (["bench", "--model", "resnet_tiny", "--device", "cpu", "--output", "{base}/brace.json"],
                             ["--output", "brace.json", "not a JSON list"]),
    "bench output holds {}": (["bench", "--model", "resnet_tiny", "--device", "cpu", "--output", "{base}/dict.json"],
                              ["--output", "dict.json", "holds a JSON dict"]),
    "reproduce over the user's html": (["reproduce", "--book-only", "--cwd", "{repo}", "--output", "{base}/mine"],
                                       ["--output", "{base}/mine/html", "was not made by prs reproduce"]),
    "unknown command": (["tran"], ["invalid choice: 'tran'", "train"]),
    "synth negative seed": (["data", "synth", "--root", "out", "--seed", "-1"], ["--seed", ">= 0"]),
    "synth over other data": (["data", "synth", "--root", "{base}/not_synthetic"], ["not the dataset asked for"]),
    "download, no network": (["data", "download", "--root", "dl"], ["could not download CIFAR-100", "dl"]),
    "bench unknown model": (["bench", "--model", "nope", "--device", "cpu"], ["--model", "nope", "resnet_tiny"]),
    "bench zero steps": (["bench", "--model", "resnet_tiny", "--steps", "0", "--device", "cpu"], ["--steps", "> 0"]),
    "bench bad int": (["bench", "--batch-size", "big"], ["--batch-size", "invalid int value"]),
    "bench unknown dataset": (["bench", "--dataset", "nonsense"], ["--dataset", "nonsense", "'cifar100', 'synthetic'"]),
    "bench unknown device": (["bench", "--device", "nonsense"], ["--device", "'nonsense' is not a device", "cpu"]),
    "bench batch above data": (["bench", "--model", "resnet_tiny", "--root", "{data}", "--batch-size", "4096",
                                "--device", "cpu"], ["--batch-size", "batch of 4096", "zero batches"]),
    "bench missing dataset": (["bench", "--model", "resnet_tiny", "--dataset", "cifar100", "--root", "{base}/empty",
                               "--device", "cpu", "--steps", "1", "--warmup", "0", "--rounds", "1"],
                              ["CIFAR-100 not found", "prs data download"]),
    "bench cuda without gpu": (["bench", "--model", "resnet_tiny", "--device", "cuda:7"], ["--device", "cuda:7"]),
    "unknown profile": (["reproduce", "--profile", "ful", "--no-book"], ["profile 'ful'", "smoke"]),
    "unknown notebook": (["reproduce", "--only", "nope", "--no-book"], ["notebook 'nope'"]),
    "unknown parameter": (["reproduce", "--set", "epoch=1", "--no-book"], ["--set epoch", "parameters:"]),
    "reproduce bad --set": (["reproduce", "--set", "epochs", "--no-book"], ["--set 'epochs'", "NAME=VALUE"]),
    "profile via --set": (["reproduce", "--set", "profile=full", "--no-book"], ["--profile"]),
}


# Config fields that stand behind `prs bench`'s flags or that bench does not have.
BENCH_FIELDS = ("train.device", "data.dataset", "data.root", "train.batch_size", "data.ratio", "model.name")


def run_main(argv):
    try:
        return cli.main(argv)
    except SystemExit as e:  # argparse's own errors
        return e.code


def offline(*_, **__):
    raise urllib.error.URLError("[Errno -2] Name or service not known")


def refuse(*_, **__):
    raise AssertionError("bad input got as far as training, benchmarking or running notebooks")


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_exit_2_and_writes_nothing(name, inputs, tiny_data_root, tmp_path, monkeypatch,
                                                         capsys):
    argv, expected = CASES[name]
    if name.startswith(("unknown profile", "unknown notebook", "unknown parameter", "reproduce", "profile")):
        reproduce = pytest.importorskip("prs.reproduce", reason="prs reproduce is not written yet")
        monkeypatch.setattr(reproduce, "execute", refuse)
        monkeypatch.setattr(reproduce, "build_book", refuse)
    monkeypatch.setattr(engine, "train_epoch", refuse)
    monkeypatch.setattr(bench, "append_record", refuse)
    # No network, whatever the machine has: torchvision's download fails as it does offline.
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    monkeypatch.chdir(tmp_path)  # relative run, data and benchmark paths land here
    before = snapshot(inputs), snapshot(tiny_data_root)
    code = run_main([a.replace("{base}", str(inputs)).replace("{data}", str(tiny_data_root)).replace("{repo}", str(REPO))
                     for a in argv])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(("prs: error: ", "prs train: error: ", "prs data synth: error: ", "prs bench: error: ",
                                "prs reproduce: error: ")), lines[0]
    for part in expected:
        assert part.replace("{base}", str(inputs)) in lines[0], (part, lines[0])
    if argv[0] == "bench":  # the user typed flags: the error names them, not the config fields behind them
        assert not [field for field in BENCH_FIELDS if field in lines[0]], lines[0]
    assert list(tmp_path.iterdir()) == [], "bad input wrote something"
    assert (snapshot(inputs), snapshot(tiny_data_root)) == before and not (inputs / "executed").exists()


@pytest.mark.parametrize("argv, field", [
    (["train", "--config", "smoke", "--set", "model.name=resnet_huge"], "model.name"),
    (["data", "synth", "--seed", "x"], "--seed"),
])
def test_the_real_command_exits_2_without_traceback(argv, field, tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-m", "prs", *argv], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1 and field in done.stderr and "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_there_are_at_least_twenty_cases():
    assert len(CASES) >= 20


# ----------------------------------------------------------------------------- image folders (issue 13)


def image_folder(base, classes, per_class=4, corrupt=None):
    """base/{train,val}/<class>/<n>.png, 32x32 random images; `corrupt` names a file to fill with junk."""
    from PIL import Image
    import numpy as np

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in range(classes):
            folder = base / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    if corrupt:
        (base / corrupt).write_bytes(b"not a png at all" * 10)
    return base


def folder_config(tmp_path, root, workers):
    cfg = {"model": {"name": "resnet_tiny"}, "schedule": {"name": "never"},
           "data": {"dataset": f"imagefolder:{root}", "loader": "torchvision", "num_workers": workers},
           "train": {"epochs": 1, "batch_size": 4, "eval_batch_size": 4, "device": "cpu"},
           "run": {"root": str(tmp_path / "runs")}}
    path = tmp_path / "folder.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_fewer_than_five_classes_train_and_report_top5_over_all_classes(tmp_path, capsys):
    root = image_folder(tmp_path / "three", classes=3)
    assert cli.main(["train", "--config", str(folder_config(tmp_path, root, 0))]) == 0
    (run_dir,) = (tmp_path / "runs").iterdir()
    results = json.loads((run_dir / "results.json").read_text())
    assert results["data"]["num_classes"] == 3 and results["finished"]
    assert results["final"]["test_top5"] == 100.0  # top-5 of 3 classes: all of them


@pytest.mark.parametrize("workers", [0, 1])
def test_corrupt_image_is_one_line_naming_the_file(tmp_path, capsys, workers):
    root = image_folder(tmp_path / "folder", classes=2, corrupt="train/class1/2.png")
    assert cli.main(["train", "--config", str(folder_config(tmp_path, root, workers))]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert f"image {root / 'train' / 'class1' / '2.png'} cannot be read" in lines[0] and "replace" in lines[0]


def test_reproduce_replaces_only_the_book_folders_it_made(tmp_path):
    from prs import reproduce

    src = tmp_path / "out" / "book_src"
    reproduce.stage_book(REPO, tmp_path / "out" / "executed", src, lambda _: None)
    assert (src / reproduce.BUILT_MARKER).is_file()
    (src / "stale.txt").write_text("left by the last build")
    reproduce.stage_book(REPO, tmp_path / "out" / "executed", src, lambda _: None)  # ours: replaced
    assert not (src / "stale.txt").exists()
    (src / reproduce.BUILT_MARKER).unlink()
    (src / "_toc.yml").write_text("someone else's book\n")
    with pytest.raises(cli.UserError, match="was not made by prs reproduce"):
        reproduce.check_output(REPO, tmp_path / "out")
    with pytest.raises(cli.UserError, match="not made by prs reproduce"):
        reproduce.stage_book(REPO, tmp_path / "out" / "executed", src, lambda _: None)
    assert (src / "_toc.yml").read_text() == "someone else's book\n"
