"""The float model a package is compared with, layer by layer: the source replayed through the package's own faithful
steps (export, graph optimization, opset upgrade …) up to its first lossy one, through the step cache — the very graph
the quantizer took, so its tensor names are the package's. And the evaluation data to run both on."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from edgekit.data import Dataset, load_data
from edgekit.errors import UnsupportedOnTarget, UserError
from edgekit.instruments import Instrument
from edgekit.manifest import Manifest
from edgekit.model import Format, Model
from edgekit.passes.base import Context, Pass, Step, get_pass
from edgekit.schema import build

log = logging.getLogger("edgekit")
FAITHFUL = 1e-4  # a pass promising at most this relative error only changes the form (export, fusions), not the numbers


@dataclass(frozen=True, slots=True)
class Reference:
    """The float model and how it was made: the package's steps replayed, and how many came from the step cache."""

    model: Model
    lineage: tuple[Model, ...]  # the source and every step's result, in order (the first ONNX ones carry module names)
    steps: tuple[str, ...]
    cached: int
    lossy_step: str | None  # the package's first step that changes the numbers (the quantizer); None: none does


def check_source(source: Model, manifest: Manifest, source_text: str, package: str) -> None:
    """The package must have been built from this very source (same file and weights)."""
    built_from, given = manifest.provenance.get("source_hash"), source.meta.get("source_hash")
    if built_from and given and built_from != given:
        origin = manifest.provenance.get("source") or "another model"
        raise UserError(f"{package} was built from {origin} (sha256 {built_from[:12]}…), not from {source_text} "
                        f"(sha256 {given[:12]}…): diff compares a package with its own source")


def check_adapters(manifest: Manifest, adapters: tuple[str | Path, ...], package: str) -> None:
    """The PEFT adapters the package was compiled with (its provenance lists them) must be given, in the same order."""
    from edgekit.ingest.adapters import read_adapter

    recorded = [record if isinstance(record, dict) else {} for record in manifest.provenance.get("adapters") or ()]
    expected = [str(record.get("sha256")) for record in recorded]
    given = [read_adapter(folder).sha256 for folder in adapters]
    if given == expected:
        return
    got = f"sha256 {', '.join(f'{digest[:12]}…' for digest in given)}" if given else "none"
    if not expected:
        raise UserError(f"{package} was compiled without PEFT adapters: diff it without --adapter (given: {got})")
    wanted = ", ".join(f"sha256 {digest[:12]}… (from {record.get('path')})" for digest, record in zip(expected, recorded))
    raise UserError(f"{package} was compiled with PEFT adapter(s) {wanted} merged in that order: give the same with "
                    f"--adapter DIR (given: {got})")


def is_lossy(chosen: Pass) -> bool:
    """Whether a pass changes the numbers (a quantizer), not only the form (export, fusions)."""
    return chosen.tolerance is None or chosen.tolerance > FAITHFUL


def faithful_steps(manifest: Manifest) -> tuple[list[Step], str | None]:
    """The package's applied steps before its first lossy one, and that lossy step's pass name (None: none)."""
    steps = []
    for applied in manifest.recipe.get("applied", []):
        name = applied.get("pass", "")
        try:
            chosen = get_pass(name)
        except UserError:
            return steps, name
        if is_lossy(chosen):
            return steps, name
        if applied.get("version") != chosen.version:
            log.warning("diff: the package ran %s version %s, this edgekit has %s: the reference may differ from the "
                        "graph the package was made from", name, applied.get("version"), chosen.version)
        steps.append(Step(name, build(chosen.Config, applied.get("config") or {}, f"package step {name}")))
    return steps, None


def reference_model(source: Model, manifest: Manifest, work_dir: Path, cache_dir: Path | None) -> Reference:
    """`source` through the package's faithful steps (ONNX out), from the step cache where the compile left them."""
    from edgekit.pipeline import Plan, PlannedStep, run
    from edgekit.recipe import load_recipe

    steps, lossy = faithful_steps(manifest)
    planned, current = [], source.format
    for step in steps:
        chosen = get_pass(step.pass_name)
        if current not in chosen.accepts:
            raise UserError(f"the package's step {step.pass_name} does not take {current.value}: was it built from "
                            "another kind of source?")
        planned.append(PlannedStep(step, "inserted", current, chosen.produces, "replayed from the package's manifest"))
        current = chosen.produces
    target = _target(manifest)
    if target is None:
        raise UserError(f"the package's target {manifest.target.name} is unknown to this edgekit: cannot replay its steps")
    if current is not Format(manifest.format):
        raise UnsupportedOnTarget(f"the package's float steps end in {current.value}, not the package's "
                                  f"{manifest.format}: nothing to compare it with layer by layer")
    ctx = Context(work_dir, target, None, None, log)
    plan = Plan(source.format, target, load_recipe("fp32"), tuple(planned))
    kept = _Kept()
    model, records = run(plan, source, ctx, cache_dir, (kept,))
    return Reference(model, (source, *kept.models), tuple(step.pass_name for step in steps), sum(r.cached for r in records),
                     lossy)


class _Kept(Instrument):
    """Keeps each step's result (its files stay in the step cache, or the work folder, until the diff ends)."""

    def __init__(self) -> None:
        self.models: list[Model] = []

    def after_step(self, step, before: Model, after: Model, record) -> None:
        self.models.append(after)


class BeforeLossy(Instrument):
    """Keeps, as a compile runs, the float reference `reference_model` would replay: what the steps before the first
    lossy one made, and the model that step took (their files stay in the step cache, or the compile's work folder,
    until the compile ends)."""

    def __init__(self, source: Model) -> None:
        self.source = source
        self.made: list[Model] = []
        self.steps: list[str] = []
        self.cached = 0
        self.lossy: str | None = None
        self.taken: Model | None = None  # what the lossy step took

    def after_step(self, step, before: Model, after: Model, record) -> None:
        if self.lossy is not None:
            return
        chosen = get_pass(step.step.pass_name)
        if is_lossy(chosen):
            self.lossy, self.taken = chosen.name, before
            return
        self.made.append(after)
        self.steps.append(chosen.name)
        self.cached += record.cached

    def reference(self) -> Reference | None:
        """The float reference, or None when no step changed the numbers."""
        if self.taken is None:
            return None
        return Reference(self.taken, (self.source, *self.made), tuple(self.steps), self.cached, self.lossy)


def _target(manifest: Manifest):
    """The package's target, as this edgekit knows it (by name, else by the file it was read from); None: unknown."""
    from edgekit.target import load_target

    for name in (manifest.target.name, manifest.target.source):
        if not name:
            continue
        try:
            return load_target(name)
        except UserError:
            continue
    return None


def evaluation_data(given: str | Path | None, manifest: Manifest, model: Model, samples: int) -> Dataset:
    """The first `samples` of `given`, else of the evaluation data the package was measured on where it is readable."""
    recorded = manifest.data.get("evaluation_origin")
    chosen = given or recorded
    if not chosen or (given is None and (recorded == "synthetic" or not _readable(str(recorded)))):
        why = "it was measured on synthetic data" if recorded == "synthetic" else \
            f"its evaluation data ({recorded}) is not readable here" if recorded else "it records no evaluation data"
        raise UserError(f"give --eval DATA: {why}")
    return load_data(chosen, model.inputs, model.meta.get("tokenizer")).head(samples)


def _readable(origin: str) -> bool:
    """Whether the data a manifest recorded can be read again: a path (or the file of a `text:` / `images:` shorthand)."""
    kind, sep, rest = origin.partition(":")
    path = Path(rest if sep and kind in ("text", "images") else origin)
    return path.exists()
