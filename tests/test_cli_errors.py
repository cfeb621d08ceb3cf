"""Bad input at every entry point: one line naming the field and what is allowed, exit code 2,
no traceback, nothing written (no run directory, no results, no benchmark record, no data)."""

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
    code = run_main([a.replace("{base}", str(inputs)).replace("{data}", str(tiny_data_root)) for a in argv])
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
