"""The command line itself: --version, a bare `prs`, help texts, one error prefix, and no torch import
on the paths that need none (they answer at once; torch takes seconds to import)."""

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

import prs
from prs import cli

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


def prs_command(*argv, cwd):
    return subprocess.run([sys.executable, "-m", "prs", *argv], cwd=cwd, env=ENV, capture_output=True, text=True,
                          timeout=120)


def test_version_prints_the_package_version(tmp_path):
    done = prs_command("--version", cwd=tmp_path)
    assert done.returncode == 0 and done.stdout == f"prs {prs.__version__}\n" and done.stderr == ""


def test_bare_prs_prints_the_usage_line_and_exits_2(tmp_path):
    done = prs_command(cwd=tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    usage, error = done.stderr.splitlines()
    assert usage.startswith("usage: prs ") and "{train,presets,data,reproduce,bench}" in usage
    assert error.startswith("prs: error: give a command: train, presets, data, reproduce, bench")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv", [["train"], ["train", "--config", "smoke", "--resume", "runs/x"]])
def test_train_errors_carry_one_prefix(argv, capsys):
    assert cli.main(argv) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("prs: error: ") and line.count("prs") == 1, line
    assert "--config" in line and "--resume" in line


def test_every_option_of_every_command_has_help_text():
    def parsers(parser, name):
        yield name, parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub_name, sub in action.choices.items():
                    yield from parsers(sub, f"{name} {sub_name}")

    for name, parser in parsers(cli.build_parser(), "prs"):
        for action in parser._actions:
            if action.option_strings and not isinstance(action, argparse._HelpAction):
                assert action.help, f"{name} {action.option_strings[0]} has no help text"


@pytest.mark.parametrize("argv", [["--help"], ["--version"], [], ["train"], ["tran"], ["bench", "--steps", "x"],
                                  ["train", "--config", "smoke", "--resume", "runs/x"]])
def test_help_version_and_flag_errors_do_not_import_torch(argv, tmp_path):
    """What keeps `prs --help` and these errors instant: torch (seconds to import) is never loaded."""
    code = ("import sys\nfrom prs import cli\ntry:\n    code = cli.main(sys.argv[1:])\nexcept SystemExit as e:\n"
            "    code = e.code\nassert 'torch' not in sys.modules, 'torch was imported'\nprint('exit', code)\n")
    done = subprocess.run([sys.executable, "-c", code, *argv], cwd=tmp_path, env=ENV, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] in ("exit 0", "exit 2"), done.stdout
