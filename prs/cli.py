"""`prs` command line: train, presets, data, reproduce, bench.

Every flag of every command is defined here; the commands are plain functions of `prs.train`,
`prs.data`, `prs.reproduce` and `prs.bench`, whose errors name these flags. Bad input ends in
one line on stderr (`prs: error: ...`) and exit code 2, with nothing written.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

import prs
from prs.errors import RunFailure, UserError


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own usage errors: one line, exit 2
        self.exit(2, f"{self.prog}: error: {message}\n")


@contextlib.contextmanager
def _remove_if_left_empty(folder: Path | None):
    """On bad input, remove `folder` if this command created it and left it empty (torchvision
    creates the data root before it finds out that there is no network)."""
    existed = folder is None or folder.exists()
    try:
        yield
    except UserError:
        if not existed and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
        raise


def _train(args) -> int:
    # the flags are checked before torch is imported (seconds), so that these errors come at once
    if args.resume_dir and args.config:
        raise UserError("give --config or --resume RUN_DIR, not both (a run directory has its own config)")
    if not args.resume_dir and not args.config:
        raise UserError("give --config FILE.yaml (or a preset name) or --resume RUN_DIR")
    from prs import config, data, train

    if args.resume_dir:
        cfg = _resume_config(args.resume_dir, args.set, args.force)
    else:
        cfg = config.load(args.config, config.parse_set(args.set))
    with _remove_if_left_empty(data.data_root(cfg.data.root) if cfg.data.download else None):
        results = train.train(cfg, force=args.force, progress=args.progress,
                              previous_checkpoint=args.previous_checkpoint)
    if int(os.environ.get("RANK", 0)) == 0:
        print(f"{results['run_dir']}: top-1 {results['final']['test_top1']:.2f}%  "
              f"top-5 {results['final']['test_top5']:.2f}%")
    return 0


def _resume_config(resume_dir: str, assignments: list[str], force: bool):
    """The config of the run in `resume_dir`, wherever that directory now lives.

    Its run.root becomes the directory's parent (a run folder may have been moved, e.g. to
    Google Drive); --set may change only what the config hash ignores (data.root, ...), since
    anything else would be another run.
    """
    from prs import config, runs

    run_dir = Path(resume_dir)
    if force:
        raise UserError("--resume continues a run and --force starts it over: give one of them")
    if not (run_dir / "config.yaml").is_file():
        raise UserError(f"--resume: '{run_dir}' is not a run directory (no config.yaml in it)")
    overrides = config.parse_set(assignments)
    if "run" in overrides:
        raise UserError("--resume: run.* is fixed by RUN_DIR; do not --set it")
    cfg = config.load(run_dir / "config.yaml", overrides)
    cfg.run.root = str(run_dir.parent)
    if runs.run_dir_for(cfg).name != run_dir.name:
        raise UserError(f"--resume: '{run_dir}' holds another config than the one asked for (its config now hashes "
                        f"to {runs.run_dir_for(cfg).name}); --set may only change {', '.join(config.NOT_HASHED)}")
    return cfg


def _presets(args) -> int:
    from prs import config

    print("\n".join(config.preset_names()))
    return 0


def _data(args) -> int:
    from prs import data

    if args.data_command == "synth":
        # Where `data.dataset: synthetic` with `data.root: ROOT` reads it.
        target = data.data_root(args.root) / "synthetic"
        try:
            path = data.write_synthetic_cifar100(target, seed=args.seed)
        except OSError as e:
            raise UserError(f"--root: cannot write {target} ({e.strerror or e}); choose a writable folder") from None
        print(f"wrote synthetic CIFAR-100-format data to {path}")
    elif args.data_command == "download":
        root = data.data_root(args.root)
        with _remove_if_left_empty(root):
            data.load_datasets("cifar100", args.root, download=True)
        print(f"CIFAR-100 is in {root}")
    return 0


def _reproduce(args) -> int:
    from prs import reproduce

    return reproduce.reproduce(args.profile, args.only, args.force, args.output, args.cwd, args.set,
                               build=not args.no_book, book_only=args.book_only)


def _bench(args) -> int:
    from prs import bench

    record = bench.bench(args.model, args.dataset, args.root, args.batch_size, args.steps, args.warmup, args.rounds,
                         args.device, args.switched, args.compile, args.output or None)
    print(bench.format_record(record))
    return 0


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="prs", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"prs {prs.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("train", help="train one model (resumes or reuses a run of the same config)")
    p.add_argument("--config", help="YAML file or preset name (see `prs presets`)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.epochs=10 (repeatable)")
    p.add_argument("--resume", dest="resume_dir", metavar="RUN_DIR",
                   help="resume the run in RUN_DIR with its own config (same-config runs resume anyway)")
    p.add_argument("--previous-checkpoint", action="store_true",
                   help="resume from checkpoint.prev.pt (when checkpoint.pt is damaged; it is kept as "
                        "checkpoint.damaged.pt)")
    p.add_argument("--force", action="store_true", help="delete this config's run directory and start over")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar (default: on in a terminal, off in CI and notebooks run by papermill)")
    p.set_defaults(func=_train)

    p = sub.add_parser("presets", help="list the packaged config presets")
    p.set_defaults(func=_presets)

    p = sub.add_parser("data", help="dataset helpers")
    dsub = p.add_subparsers(dest="data_command", required=True, parser_class=_Parser)
    s = dsub.add_parser("synth", help="write the synthetic CIFAR-100-format dataset to ROOT/synthetic, "
                                      "where data.dataset=synthetic reads it")
    s.add_argument("--root", default=None, help="data root (default $PRS_DATA or ./data)")
    s.add_argument("--seed", type=_non_negative_int, default=0,
                   help="seed of the generated images (default: 0)")
    s = dsub.add_parser("download", help="download CIFAR-100 (needs the network)")
    s.add_argument("--root", default=None, help="data root (default $PRS_DATA or ./data)")
    p.set_defaults(func=_data)

    p = sub.add_parser("reproduce", help="execute the notebooks under a profile, then build the book",
                       description="Execute the book's notebooks under a profile with papermill, then build the book.")
    p.add_argument("--profile", default="smoke", help="smoke (CPU, minutes), colab (one T4) or full (GPU recipe)")
    p.add_argument("--only", action="append", default=[], metavar="NAME",
                   help="execute only this notebook, e.g. 01_data_scale (repeatable)")
    p.add_argument("--force", action="store_true",
                   help="delete the runs of the selected notebooks first and train them again")
    p.add_argument("--output", default=None, metavar="DIR", help="build folder (default: <cwd>/_build)")
    p.add_argument("--cwd", default=".", metavar="DIR",
                   help="repository root: notebooks run here, and relative run and data paths start here "
                        "unless $PRS_ROOT names another folder (default: .)")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="override a notebook parameter for this command, e.g. --set epochs=1 (YAML value)")
    p.add_argument("--no-book", action="store_true", help="execute the notebooks but do not build the book")
    p.add_argument("--book-only", action="store_true",
                   help="do not execute anything: build the book from the executed copies already there")
    p.set_defaults(func=_reproduce)

    p = sub.add_parser("bench", help="engine vs the usual PyTorch loop, images/s (appends to benchmarks/)")
    p.add_argument("--model", default="resnet18", help="a registered model, e.g. resnet18, hybrid_resnet18, "
                   "deit_tiny (default: resnet18)")
    p.add_argument("--dataset", default="synthetic", help="cifar100 or synthetic (default)")
    p.add_argument("--root", default=None, help="data root (default $PRS_DATA or ./data)")
    p.add_argument("--batch-size", type=int, default=256, help="images per step, both loops (default: 256)")
    p.add_argument("--steps", type=int, default=50, help="timed training steps per round (default: 50)")
    p.add_argument("--warmup", type=int, default=10,
                   help="untimed steps before each timed round (compilation, allocator, autotuning; default: 10)")
    p.add_argument("--rounds", type=int, default=3,
                   help="rounds per loop, the two loops alternating; the record keeps every round's rate and "
                        "reports the median (default: 3)")
    p.add_argument("--device", default="auto", help="auto (CUDA when visible), cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--switched", action="store_true", help="hybrids: switch every layer to attention first")
    p.add_argument("--compile", action="store_true", help="torch.compile the engine's model")
    p.add_argument("--output", default="benchmarks/results.json", help="JSON list to append to ('' for none)")
    p.set_defaults(func=_bench)
    return parser


def _commands(parser: argparse.ArgumentParser) -> list[str]:
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return list(sub.choices)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:  # a bare `prs`: the usage line, then what is missing
        print(parser.format_usage(), end="", file=sys.stderr)
        print(f"prs: error: give a command: {', '.join(_commands(parser))} (prs --help says what each does)",
              file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    # Under torchrun every rank checks the same input and is interrupted together: rank 0 speaks for
    # them; a RunFailure (a dead peer, a full disk) is said by whichever rank met it.
    rank = int(os.environ.get("RANK", 0))
    try:
        return args.func(args)
    except UserError as e:
        if rank == 0:
            print(f"prs: error: {' '.join(str(e).split())}", file=sys.stderr)  # always one line
        return 2
    except RuntimeError as e:
        from prs.engine import TrainingDiverged

        if not isinstance(e, (TrainingDiverged, RunFailure)):
            raise
        if rank == 0 or isinstance(e, RunFailure):
            print(f"prs: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if rank == 0:
            print("prs: interrupted; rerun the same command to resume from the last checkpoint", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
