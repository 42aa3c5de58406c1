"""The reliability suite's budget (cases, runs, rounds) and its tally of what happened.

`EDGEKIT_RELIABILITY_SCALE` picks the budget: `small` (the default, for CI), `big`, or `key=value,…` over the small
one (`examples=500,soak_runs=5000`). When `EDGEKIT_RELIABILITY_FIGURES` names a file, the tally is written there as
JSON at the end of the session; benchmarks/reliability.py renders it into tests/reliability/README.md.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCALE_ENV = "EDGEKIT_RELIABILITY_SCALE"
FIGURES_ENV = "EDGEKIT_RELIABILITY_FIGURES"
# ok: the input worked; clean: a one-line EdgekitError; unclean: an EdgekitError whose message is not one clean line;
# traceback: any other exception; lost: user data gone or mixed; unsafe: written or read where it must not be
OUTCOMES = ("ok", "clean", "unclean", "traceback", "lost", "unsafe")
KEPT_DETAILS = 5  # messages kept per family and outcome (not ok)


@dataclass(frozen=True)
class Budget:
    """How much each check tries."""

    examples: int = 20  # hypothesis examples per property
    soak_threads: int = 8
    soak_runs: int = 1000  # runs per thread, per runtime
    soak_rss_mb: float = 64.0  # allowed RSS growth over a soak (after a warm-up)
    kill_rounds: int = 1  # chains of SIGKILLs through every step boundary; later rounds kill after a random delay
    race_rounds: int = 1  # pairs of concurrent compiles per output kind


PRESETS = {"small": Budget(), "big": Budget(examples=2000, soak_runs=50_000, kill_rounds=4, race_rounds=10)}


def parse_budget(text: str) -> Budget:
    """A preset name, or `key=value` pairs (comma-separated) over the small budget."""
    text = text.strip() or "small"
    if text in PRESETS:
        return PRESETS[text]
    fields = {f.name: f.type for f in dataclasses.fields(Budget)}
    values: dict[str, Any] = {}
    for pair in text.split(","):
        key, _, value = pair.partition("=")
        if key.strip() not in fields:
            raise ValueError(f"{SCALE_ENV}: unknown budget field {key!r} (known: {', '.join(fields)})")
        values[key.strip()] = float(value) if fields[key.strip()] == "float" else int(value)
    return dataclasses.replace(PRESETS["small"], **values)


BUDGET = parse_budget(os.environ.get(SCALE_ENV, "small"))


class Tally:
    """Counts of outcomes per case family, named figures per section, and each test's outcome."""

    def __init__(self) -> None:
        self.cases: dict[str, Counter[str]] = defaultdict(Counter)
        self.details: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
        self.sections: dict[str, dict[str, Any]] = defaultdict(dict)
        self.tests: dict[str, str] = {}

    def case(self, family: str, outcome: str, detail: str = "") -> None:
        assert outcome in OUTCOMES, outcome
        self.cases[family][outcome] += 1
        kept = self.details[family][outcome]
        if outcome != "ok" and len(kept) < KEPT_DETAILS and detail not in kept:
            kept.append(detail[:300])

    def put(self, section: str, name: str, value: Any) -> None:
        self.sections[section][name] = value

    def add(self, section: str, name: str, amount: int = 1) -> None:
        self.sections[section][name] = self.sections[section].get(name, 0) + amount

    def to_dict(self) -> dict[str, Any]:
        return {"budget": dataclasses.asdict(BUDGET),
                "cases": {family: {o: counts[o] for o in OUTCOMES} for family, counts in sorted(self.cases.items())},
                "details": {family: dict(kept) for family, kept in sorted(self.details.items()) if any(kept.values())},
                "sections": dict(self.sections), "tests": self.tests}

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2, default=str) + "\n")


TALLY = Tally()
