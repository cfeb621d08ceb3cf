"""The paper's claims: their sentences in the abstract's words (`PAPER_CLAIMS`), and the rules that
decide them (`claims.yaml`, package data, loaded and checked by `rules()`).

The abstract gives no numbers, so every number attributed to the paper in the book is "unknown".
The rules were written before any `full` result existed: for each claim the operational question,
the metric, the comparison, the minimum effect that counts, the statistical rule (with the seed
count it assumes) and what each outcome means. `rules_markdown()` renders them for the book's
decisions page (book/claims_rules.md, which tests/test_claims.py keeps equal to it), and
`claims_sha256()` is the hash the tests pin and the changelog of rules names.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import yaml

from prs.errors import UserError

PAPER_CLAIMS = {
    "01_data_scale": "The more convolution-like inductive bias is included in the model, the smaller the data "
                     "scale is required where the ViT-like model outperforms the ResNet performance.",
    "02_fourier": "Through Fourier analysis of feature maps ... we observe which inductive bias is advantageous "
                  "for each data scale.",
    "03_interpolation": "By adjusting the number of epochs the model stays in the convolution, we show that "
                        "reparameterization from convolution to self-attention interpolates the Fourier analysis "
                        "pattern between CNNs and ViTs.",
    "04_prs_cifar100": "PRS outperformed previous studies on the small-scale dataset, e.g., CIFAR-100.",
}

OUTCOMES = ("held", "did_not_hold", "inconclusive")
CLAIM_FIELDS = ("id", "notebook", "question", "metric", "comparison", "minimum_effect", "rule", "outcomes")
RULE_FIELDS = ("test", "seeds_assumed", "held", "did_not_hold")
FILE = "claims.yaml"


@dataclass(frozen=True)
class ClaimRule:
    """One claim as a test: what is measured, compared, how large an effect counts, how it is decided."""

    id: str
    notebook: str
    question: str
    metric: str
    comparison: str
    minimum_effect: float
    unit: str
    rule: dict
    outcomes: dict

    @property
    def seeds_assumed(self) -> int:
        return self.rule["seeds_assumed"]


@dataclass(frozen=True)
class Rules:
    confidence: float
    bootstrap_replicates: int
    min_seeds: int
    claims: dict[str, ClaimRule]  # by notebook
    negative_control: dict

    def claim(self, notebook: str) -> ClaimRule:
        return self.claims[notebook]


def claims_text() -> str:
    return resources.files("prs.experiments").joinpath(FILE).read_text()


def claims_sha256() -> str:
    return hashlib.sha256(claims_text().encode()).hexdigest()


def _fail(problem: str) -> UserError:
    return UserError(f"prs/experiments/{FILE}: {problem}; fix the file (and add a line to the changelog of rules)")


def _claim(entry) -> ClaimRule:
    if not isinstance(entry, dict):
        raise _fail(f"each claim must be a mapping, got {entry!r}")
    missing = [f for f in CLAIM_FIELDS if f not in entry]
    if missing:
        raise _fail(f"claim {entry.get('id', '?')} lacks {', '.join(missing)}")
    if entry["notebook"] not in PAPER_CLAIMS:
        raise _fail(f"claim {entry['id']}: notebook '{entry['notebook']}' is not one of {', '.join(PAPER_CLAIMS)}")
    effect = entry["minimum_effect"]
    if not (isinstance(effect, dict) and isinstance(effect.get("value"), (int, float)) and effect["value"] > 0
            and isinstance(effect.get("unit"), str)):
        raise _fail(f"claim {entry['id']}: minimum_effect must be {{value: a number > 0, unit: text}}, got {effect!r}")
    rule = entry["rule"]
    if not isinstance(rule, dict) or any(f not in rule for f in RULE_FIELDS):
        raise _fail(f"claim {entry['id']}: rule needs {', '.join(RULE_FIELDS)}")
    if not (isinstance(rule["seeds_assumed"], int) and rule["seeds_assumed"] >= 2):
        raise _fail(f"claim {entry['id']}: rule.seeds_assumed must be an integer >= 2")
    if not isinstance(entry["outcomes"], dict) or sorted(entry["outcomes"]) != sorted(OUTCOMES):
        raise _fail(f"claim {entry['id']}: outcomes must say what each of {', '.join(OUTCOMES)} means")
    return ClaimRule(entry["id"], entry["notebook"], entry["question"].strip(), entry["metric"].strip(),
                     entry["comparison"].strip(), float(effect["value"]), effect["unit"], dict(rule),
                     dict(entry["outcomes"]))


def parse_rules(text: str) -> Rules:
    """The rules from the text of a claims file, checked: every claim, field, outcome and threshold."""
    data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise _fail("the top level must be a mapping")
    for key in ("confidence", "bootstrap_replicates", "min_seeds", "claims", "negative_control"):
        if key not in data:
            raise _fail(f"missing '{key}'")
    if not 0.5 < data["confidence"] < 1:
        raise _fail(f"confidence must be in (0.5, 1), got {data['confidence']}")
    if not (isinstance(data["min_seeds"], int) and data["min_seeds"] >= 2):
        raise _fail("min_seeds must be an integer >= 2 (an interval needs two seeds)")
    if not (isinstance(data["bootstrap_replicates"], int) and data["bootstrap_replicates"] >= 100):
        raise _fail("bootstrap_replicates must be an integer >= 100")
    claims = {c.notebook: c for c in map(_claim, data["claims"] or [])}
    if sorted(claims) != sorted(PAPER_CLAIMS):
        raise _fail(f"needs exactly one claim per notebook: {', '.join(PAPER_CLAIMS)}")
    control = data["negative_control"]
    if not isinstance(control, dict) or "held" in control.get("expected", ["held"]):
        raise _fail("negative_control.expected must list the outcomes allowed, and never 'held'")
    return Rules(float(data["confidence"]), data["bootstrap_replicates"], data["min_seeds"], claims, control)


@lru_cache(maxsize=1)
def rules() -> Rules:
    """The package's rules (claims.yaml), parsed and checked once."""
    return parse_rules(claims_text())


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def rules_markdown() -> str:
    """The rules as the decisions page shows them (book/claims_rules.md holds exactly this text)."""
    r = rules()
    lines = [
        "<!-- generated by prs.experiments.claims.rules_markdown() from prs/experiments/claims.yaml; "
        "tests/test_claims.py checks that it is current -->",
        "",
        f"Rules file `prs/experiments/claims.yaml`, sha256 `{claims_sha256()}`. Every interval is two-sided at "
        f"{r.confidence:.0%}; bootstraps resample the seeds {r.bootstrap_replicates} times (seeded); with fewer "
        f"than {r.min_seeds} seeds in a cell a verdict is *inconclusive* (too few seeds).",
        "",
    ]
    for notebook, c in r.claims.items():
        lines += [f"**{notebook}** ({c.id}): {_cell(c.question)}", "",
                  "| | |", "|---|---|",
                  f"| metric | {_cell(c.metric)} |",
                  f"| comparison | {_cell(c.comparison)} |",
                  f"| minimum effect | {c.minimum_effect:g} {_cell(c.unit)} |",
                  f"| statistical rule | {_cell(c.rule['test'])}; {c.seeds_assumed} seeds assumed |"]
        for key in ("held", "did_not_hold", "not_testable"):
            if key in c.rule:
                lines.append(f"| rule: {key.replace('_', ' ')} | {_cell(c.rule[key])} |")
        for key in OUTCOMES:
            lines.append(f"| outcome *{key.replace('_', ' ')}* means | {_cell(c.outcomes[key])} |")
        lines.append("")
    control = r.negative_control
    lines += [f"**Negative control** ({control['notebook']}): {_cell(control['what'])} Allowed outcomes: "
              f"{', '.join(o.replace('_', ' ') for o in control['expected'])}.", ""]
    return "\n".join(lines)
