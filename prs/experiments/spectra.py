"""Fourier curves of trained runs (`prs.fourier`), averaged over the runs of a group (e.g. over seeds)."""

from __future__ import annotations

import copy
from typing import Mapping, Sequence

from prs.experiments.tables import results_table


def average_curves(curves_list: Sequence[Mapping]) -> dict:
    """Element-wise mean of `prs.fourier.fourier_curves` outputs of the same architecture (e.g. over seeds)."""
    if not curves_list:
        raise ValueError("average_curves: no curves")
    first = curves_list[0]
    if any(c["names"] != first["names"] or c["sizes"] != first["sizes"] for c in curves_list):
        raise ValueError("average_curves: curves come from different architectures")
    n = len(curves_list)
    out = copy.deepcopy(dict(first))
    out["delta_f"] = [[sum(c["delta_f"][b][i] for c in curves_list) / n for i in range(len(first["delta_f"][b]))]
                      for b in range(len(first["delta_f"]))]
    out["high_freq"] = [sum(c["high_freq"][b] for c in curves_list) / n for b in range(len(first["high_freq"]))]
    return out


def high_freq_summary(curves: Mapping) -> float:
    """One number per model: ΔF at the highest frequency, averaged over all analysed blocks.

    Higher (less negative) = the feature maps keep more high-frequency amplitude (high-pass);
    self-attention, a low-pass filter in Park & Kim's reading, pulls it down.
    """
    return sum(curves["high_freq"]) / len(curves["high_freq"])


def fourier_by_group(results: Sequence[Mapping], images, by: Sequence[str] = ("label",)) -> dict[tuple, dict]:
    """Fourier curves of each run's trained model on `images`, averaged over the runs of a group."""
    import torch

    from prs.fourier import fourier_curves
    from prs.train import load_trained

    device = "cuda" if torch.cuda.is_available() else "cpu"
    grouped: dict[tuple, list[dict]] = {}
    for r in results:
        row = results_table([r])[0]
        model, _ = load_trained(r["run_dir"], device=device)
        grouped.setdefault(tuple(row[k] for k in by), []).append(fourier_curves(model, images))
    return {key: average_curves(curves) for key, curves in grouped.items()}


COMMON_FREQUENCY = 0.5  # units of pi: a bin of every map whose side is a multiple of 4 (claims.yaml, claim 2)


def delta_f_at(curves: Mapping, frequency: float = COMMON_FREQUENCY) -> list[float | None]:
    """ΔF of every block at one normalised frequency (linear between a block's bins), None for a
    block whose map is too small to resolve it (its highest bin lies below `frequency`)."""
    import numpy as np

    out = []
    for freqs, values in zip(curves["freqs"], curves["delta_f"]):
        out.append(None if freqs[-1] < frequency - 1e-9 else float(np.interp(frequency, freqs, values)))
    return out


def summary_at(curves: Mapping, frequency: float = COMMON_FREQUENCY) -> float:
    """One number per model: the mean over blocks of ΔF at the common frequency `frequency`.

    Unlike `high_freq_summary` (each block's own highest bin: 0.94π on a 32x32 map, 0.5π on 4x4),
    every block is read at the same frequency; blocks too small to resolve it are left out.
    """
    values = [v for v in delta_f_at(curves, frequency) if v is not None]
    if not values:
        raise ValueError(f"summary_at: no block resolves the normalised frequency {frequency}")
    return sum(values) / len(values)


def fourier_summary_rows(curves_by_group: Mapping[tuple, Mapping], fields: Sequence[str] = ("label", "ratio", "seed"),
                         frequency: float = COMMON_FREQUENCY) -> list[dict]:
    """Rows {fields..., "summary"} from `fourier_by_group(..., by=fields)`: one per run when the
    fields include the seed, as the verdicts' intervals over seeds need."""
    return [{**dict(zip(fields, key)), "summary": summary_at(curves, frequency)}
            for key, curves in curves_by_group.items()]
