"""The book's experiments as data: profile parameters -> grids of configs -> runs -> tables -> verdicts.

Every notebook is a thin narrative over these functions, all importable from `prs.experiments`:

1. `notebook_params(notebook, globals())` collects the notebook's papermill parameters (their
   names and smoke defaults live in `prs/profiles/smoke.yaml`; `profiles`);
2. `notebook_trials(notebook, params)` turns them into `Trial`s (a key saying what varies, and a
   validated `Config`) through the notebook's spec (`specs`: name, claim, trials, verdict);
   `prs reproduce --force` uses the same function to know which runs to redo;
3. `run_grid(trials)` trains each config with `prs.train.train` (finished runs are reused,
   unfinished ones resume from their checkpoint), so a notebook that shares configs with an
   earlier one (e.g. the Fourier notebook and the data-scale notebook) trains nothing new (`grids`);
4. `results_table`, `summarize`, `markdown_table` make the tables (mean ± sample std over seeds;
   `tables`), `fourier_by_group` the spectra of trained runs (`spectra`);
5. one `*_verdict` function per paper claim decides it by the pre-registered rules of
   `claims.yaml` (`claims`): held, did not hold or inconclusive, with its numbers (`verdicts`,
   statistics in `stats`); `run_label` says what a run may be called, from what ran (`labels`);
6. `show`, `provenance`, `keep_runs_on_drive` and the per-notebook tables (the mechanism
   diagnostics of switched runs included) are in `notebook`;
   `set_up` (`runtime`) is the first cell's: Colab or not, GPU, profile, Drive, installed commit.

Nothing here knows numbers from the paper: only its abstract is available (see `PAPER_CLAIMS`).
"""

from prs.experiments.claims import PAPER_CLAIMS, claims_sha256, rules, rules_markdown
from prs.experiments.grids import (Trial, data_scale_trials, describe, interpolation_trials, is_finished, is_hybrid,
                                   make_config, negative_control_trials, prs_trials, run_dir, run_grid, split_control,
                                   switch_label, switch_schedule, unique_trials)
from prs.experiments.labels import RunLabel, run_label
from prs.experiments.notebook import (MECHANISM_COLUMNS, PRS_COLUMNS, control_verdict, crossover_rows, data_percent,
                                      interpolation_seed_values, interpolation_summary, keep_runs_on_drive,
                                      mechanism_by_label, mechanism_rows, provenance, prs_rows, show, vit_like)
from prs.experiments.profiles import (ROOT_VARIABLE, check_parameters, is_smoke, needs_gpu, notebook_parameters,
                                      notebook_params, parameter_names, profile_names, project_root, read_profile,
                                      resolve_roots, training_plan)
from prs.experiments.runtime import Runtime, set_up
from prs.experiments.spectra import (COMMON_FREQUENCY, average_curves, delta_f_at, fourier_by_group,
                                     fourier_summary_rows, high_freq_summary, summary_at)
from prs.experiments.specs import NOTEBOOKS, SPECS, NotebookSpec, check_notebook, notebook_trials, spec
from prs.experiments.tables import (format_mean_std, markdown_table, mean_std, pivot_markdown, results_table,
                                    summarize)
from prs.experiments.verdicts import (Verdict, crossover_ratio, crossover_text, data_scale_verdict, fourier_verdict,
                                      interpolation_positions, interpolation_verdict, negative_control_verdict,
                                      prs_verdict)

__all__ = [
    "MECHANISM_COLUMNS", "mechanism_by_label", "mechanism_rows",
    "COMMON_FREQUENCY", "RunLabel", "control_verdict", "interpolation_seed_values", "claims_sha256", "delta_f_at",
    "fourier_summary_rows", "negative_control_trials", "negative_control_verdict", "rules", "rules_markdown",
    "run_label", "split_control", "summary_at",
    "NOTEBOOKS", "PAPER_CLAIMS", "PRS_COLUMNS", "ROOT_VARIABLE", "Runtime", "SPECS", "NotebookSpec", "Trial",
    "Verdict", "average_curves", "check_parameters", "needs_gpu", "project_root", "resolve_roots", "set_up",
    "check_notebook", "crossover_ratio", "crossover_rows", "crossover_text", "data_percent", "data_scale_trials",
    "data_scale_verdict", "describe", "format_mean_std", "fourier_by_group", "fourier_verdict", "high_freq_summary",
    "interpolation_positions", "interpolation_summary", "interpolation_trials", "interpolation_verdict", "is_finished",
    "is_hybrid", "is_smoke", "keep_runs_on_drive", "make_config", "markdown_table", "mean_std", "mechanism_by_label",
    "mechanism_rows", "notebook_parameters",
    "notebook_params", "notebook_trials", "parameter_names", "pivot_markdown", "profile_names", "provenance",
    "prs_rows", "prs_trials", "prs_verdict", "read_profile", "results_table", "run_dir", "run_grid", "show", "spec",
    "summarize", "switch_label", "switch_schedule", "training_plan", "unique_trials", "vit_like",
]
