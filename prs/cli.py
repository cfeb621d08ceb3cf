"""`prs` command line: train, data, reproduce, bench.

Bad input ends in one line on stderr (`prs: error: ...`) and exit code 2, with nothing written.
"""

from __future__ import annotations

import argparse
import sys

from prs.errors import UserError


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own usage errors: one line, exit 2
        self.exit(2, f"{self.prog}: error: {message}\n")


def _train(args) -> int:
    from prs import config, train

    if args.resume_dir:
        cfg = config.load(f"{args.resume_dir}/config.yaml", config.parse_set(args.set))
    elif args.config:
        cfg = config.load(args.config, config.parse_set(args.set))
    else:
        raise UserError("prs train: give --config FILE.yaml (or a preset name) or --resume RUN_DIR")
    results = train.train(cfg, force=args.force, progress=args.progress, previous_checkpoint=args.previous_checkpoint)
    print(f"{results['run_dir']}: top-1 {results['final']['test_top1']:.2f}%  top-5 {results['final']['test_top5']:.2f}%")
    return 0


def _data(args) -> int:
    from prs import data

    if args.data_command == "synth":
        path = data.write_synthetic_cifar100(args.root, seed=args.seed)
        print(f"wrote synthetic CIFAR-100-format data to {path}")
    elif args.data_command == "download":
        data.load_datasets("cifar100", args.root, download=True)
        print(f"CIFAR-100 is in {data.data_root(args.root)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="prs", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("train", help="train one model (resumes or reuses a run of the same config)")
    p.add_argument("--config", help="YAML file or preset name (see `prs presets`)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.epochs=10 (repeatable)")
    p.add_argument("--resume", dest="resume_dir", metavar="RUN_DIR",
                   help="resume the run in RUN_DIR with its own config (same-config runs resume anyway)")
    p.add_argument("--previous-checkpoint", action="store_true",
                   help="resume from checkpoint.prev.pt (when checkpoint.pt is damaged)")
    p.add_argument("--force", action="store_true", help="delete this config's run directory and start over")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar (default: on in a terminal, off in CI and notebooks run by papermill)")
    p.set_defaults(func=_train)

    p = sub.add_parser("presets", help="list the packaged config presets")
    p.set_defaults(func=lambda a: print("\n".join(__import__("prs.config").config.preset_names())) or 0)

    p = sub.add_parser("data", help="dataset helpers")
    dsub = p.add_subparsers(dest="data_command", required=True, parser_class=_Parser)
    s = dsub.add_parser("synth", help="write the synthetic CIFAR-100-format dataset")
    s.add_argument("--root", required=True)
    s.add_argument("--seed", type=int, default=0)
    s = dsub.add_parser("download", help="download CIFAR-100 (needs the network)")
    s.add_argument("--root", default=None, help="data root (default $PRS_DATA or ./data)")
    p.set_defaults(func=_data)

    for module in ("reproduce", "bench"):
        try:
            mod = __import__(f"prs.{module}", fromlist=["add_parser"])
        except ModuleNotFoundError as e:
            if e.name != f"prs.{module}":
                raise
            continue
        mod.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UserError as e:
        print(f"prs: error: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:
        from prs.train import TrainingDiverged

        if not isinstance(e, TrainingDiverged):
            raise
        print(f"prs: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("prs: interrupted; rerun the same command to resume from the last checkpoint", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
