"""The book's notebooks, one `NotebookSpec` each: its name, the paper's claim it tests, the grid of
runs its parameters make, and the verdict that closes it.

A notebook is this spec, its entries in the profiles (`prs/profiles/*.yaml`, the smoke one being
its parameters cell) and `notebooks/<name>.ipynb`, listed in `_toc.yml`; tests/test_notebooks.py
checks that they agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

from prs.errors import UserError
from prs.experiments import verdicts
from prs.experiments.claims import PAPER_CLAIMS
from prs.experiments.grids import Trial, data_scale_trials, interpolation_trials, prs_trials


@dataclass(frozen=True)
class NotebookSpec:
    name: str  # notebooks/<name>.ipynb; its parameters are the profiles' notebooks.<name>
    claim: str  # the paper's claim it tests, in the abstract's words
    trials: Callable[[Mapping], list[Trial]]  # parameters -> the runs it trains (prs reproduce --force deletes them)
    verdict: Callable[..., verdicts.Verdict]  # what its last cell calls to say whether the claim held


SPECS = (
    NotebookSpec("01_data_scale", PAPER_CLAIMS["01_data_scale"], data_scale_trials, verdicts.data_scale_verdict),
    # the Fourier notebook analyses the data-scale runs
    NotebookSpec("02_fourier", PAPER_CLAIMS["02_fourier"], data_scale_trials, verdicts.fourier_verdict),
    NotebookSpec("03_interpolation", PAPER_CLAIMS["03_interpolation"], interpolation_trials,
                 verdicts.interpolation_verdict),
    NotebookSpec("04_prs_cifar100", PAPER_CLAIMS["04_prs_cifar100"], prs_trials, verdicts.prs_verdict),
)
NOTEBOOKS = tuple(s.name for s in SPECS)


def check_notebook(notebook: str) -> str:
    if notebook not in NOTEBOOKS:
        raise UserError(f"notebook '{notebook}' does not exist; choose one of {', '.join(NOTEBOOKS)}")
    return notebook


def spec(notebook: str) -> NotebookSpec:
    return SPECS[NOTEBOOKS.index(check_notebook(notebook))]


def notebook_trials(notebook: str, params: Mapping) -> list[Trial]:
    return spec(notebook).trials(params)
