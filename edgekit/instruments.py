"""Instruments around each step of a plan (TVM's PassInstrument): the step cache, provenance, timing and a dump of
every intermediate model are instruments, as are the fidelity check (evaluate.py) and the CLI's progress display.

For each step `pipeline.run` calls, in the order the instruments are given: `before_step`; `should_run` until one
returns a model (a cache hit: the pass does not run); then `after_step`, each receiving the previous one's result
and returning it or a replacement (provenance added, files moved into the cache)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal

from edgekit import __version__
from edgekit.digest import data_sha256, file_sha256
from edgekit.isa import resolve_isa
from edgekit.model import Format, Model
from edgekit.passes.base import Context, get_pass
from edgekit.schema import to_dict
from edgekit.scratch import owned_scratch
from edgekit.spec import TensorSpec

if TYPE_CHECKING:
    from edgekit.pipeline import PlannedStep

Origin = Literal["recipe", "inserted", "lowering"]
VERSIONED_LIBRARIES = ("torch", "torchao", "onnx", "onnxruntime", "onnxslim", "onnxscript", "onnxconverter-common",
                       "openvino", "nncf", "litert-torch", "ai-edge-litert", "ai-edge-quantizer", "tflite2onnx",
                       "executorch", "torch-pruning", "neural-compressor", "transformers", "tensorrt")


@dataclass
class StepRecord:
    """What happened in one step: for the progress display and the manifest."""

    pass_name: str
    origin: Origin
    seconds: float
    cached: bool
    cache_key: str | None
    details: dict[str, Any] = field(default_factory=dict)


class Instrument:
    """Hooks around each step; every one is optional (the defaults do nothing)."""

    def before_step(self, step: PlannedStep, model: Model, record: StepRecord) -> None:
        """Called before the step, with the record it will fill."""

    def should_run(self, step: PlannedStep, model: Model, record: StepRecord) -> Model | None:
        """A result that makes running the step unnecessary (a cache hit), or None."""
        return None

    def after_step(self, step: PlannedStep, before: Model, after: Model, record: StepRecord) -> Model | None:
        """Called after the step (run or not); may return a replacement for its result."""
        return None

    def finish(self) -> None:
        """Called once when the plan ends, also when a step failed: release what a step holds."""


def library_versions() -> dict[str, str]:
    found = {"edgekit": __version__}
    for name in VERSIONED_LIBRARIES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def cache_key(model: Model, step: PlannedStep, ctx: Context) -> str:
    """The step's identity: its input, pass, config and what the pass declares its output depends on."""
    chosen = get_pass(step.step.pass_name)
    calibration = ctx.calibration.content_hash() if chosen.uses_calibration and ctx.calibration else None
    evaluation = ctx.evaluation.content_hash() if chosen.uses_evaluation and ctx.evaluation else None
    isa = (ctx.target.instruction_set if ctx.target else resolve_isa("host")).name if chosen.uses_isa else None
    target = {name: getattr(ctx.target, name) for name in chosen.uses_target} if ctx.target else None
    return data_sha256({
        "input": model.content_hash, "pass": chosen.name, "version": chosen.version,
        "config": to_dict(step.step.config), "calibration": calibration, "evaluation": evaluation, "isa": isa,
        "target": target, "libraries": library_versions(), "inputs": [s.to_dict() for s in model.inputs],
    })


class Provenance(Instrument):
    """Appends {pass, version, origin, config} to the result's `passes` (a cached result has it already)."""

    def after_step(self, step: PlannedStep, before: Model, after: Model, record: StepRecord) -> Model | None:
        if record.cached:
            return None
        chosen = get_pass(step.step.pass_name)
        applied = {"pass": chosen.name, "version": chosen.version, "origin": step.origin,
                   "config": to_dict(step.step.config)}
        return after.derive(meta={"passes": [*before.meta.get("passes", []), applied]})


class StepCache(Instrument):
    """File-format results are stored under their cache key and reused; an in-memory (torch) result is keyed only,
    so the next step's key still names everything that made it. A pass that resumes long work (distillation) gets
    a checkpoint folder under the same key (`ctx.checkpoints`). `writes` false (a torchrun rank besides 0): keys
    only, nothing read, locked or written."""

    def __init__(self, root: Path, ctx: Context, writes: bool = True) -> None:
        self.root = root
        self.ctx = ctx
        self.writes = writes
        self._lock: IO[bytes] | None = None  # the running step's key, locked while this process computes it

    def before_step(self, step: PlannedStep, model: Model, record: StepRecord) -> None:
        record.cache_key = cache_key(model, step, self.ctx)

    def should_run(self, step: PlannedStep, model: Model, record: StepRecord) -> Model | None:
        """The cached result, read once this process holds the key's lock: a concurrent compile computing the same
        step is waited for, and its result used."""
        if not record.cache_key or not self.writes:
            return None
        self._lock = _lock_key(self.root / "locks" / record.cache_key)
        found = read_cache_entry(self.root / record.cache_key, self.ctx.logger)
        record.cached = found is not None
        return found

    def after_step(self, step: PlannedStep, before: Model, after: Model, record: StepRecord) -> Model | None:
        try:
            if record.cached or not record.cache_key:
                return None
            if after.format.in_memory:
                return after.derive(meta={"content_hash": record.cache_key})
            if not self.writes:
                return None
            return _to_cache(self.root / record.cache_key, after, self.ctx.logger)
        finally:
            self.finish()

    def finish(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing the file releases its lock (as the kernel does when a process dies)
            self._lock = None


def _lock_key(path: Path) -> IO[bytes]:
    """An open file holding an exclusive lock on `path` (flock; no lock where the OS has none)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "ab")
    try:
        import fcntl
    except ImportError:
        return handle
    fcntl.flock(handle, fcntl.LOCK_EX)
    return handle


class Timer(Instrument):
    """The step's wall time, pass and cache together."""

    def __init__(self) -> None:
        self._started = 0.0

    def before_step(self, step: PlannedStep, model: Model, record: StepRecord) -> None:
        self._started = time.perf_counter()

    def after_step(self, step: PlannedStep, before: Model, after: Model, record: StepRecord) -> Model | None:
        record.seconds = time.perf_counter() - self._started
        return None


class DumpSteps(Instrument):
    """Writes every step's result to `<folder>/<NN>-<pass>/`: its files and a model.json (format, specs, meta).
    A PyTorch module in memory is described, not pickled."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.count = 0

    def after_step(self, step: PlannedStep, before: Model, after: Model, record: StepRecord) -> Model | None:
        self.count += 1
        where = self.folder / f"{self.count:02d}-{step.step.pass_name}"
        where.mkdir(parents=True, exist_ok=True)
        for path in after.files:
            shutil.copy2(path, where / path.name)
        (where / "model.json").write_text(json.dumps(
            {**_model_record(after.derive(files=tuple(where / p.name for p in after.files)), where),
             "origin": step.origin, "cached": record.cached,
             **({"note": "a PyTorch module in memory: described, not written"} if after.format.in_memory else {})},
            indent=2, default=str))
        return None


def _model_record(model: Model, root: Path) -> dict:
    return {"format": model.format.value, "files": [p.relative_to(root).as_posix() for p in model.files],
            "inputs": [s.to_dict() for s in model.inputs], "outputs": [s.to_dict() for s in model.outputs],
            "meta": model.meta}


def _to_cache(entry: Path, model: Model, log: logging.Logger) -> Model:
    """Copy the step's files into the cache entry and return the model pointing there. The entry is written under a
    name of its own and renamed into place, so a concurrent writer of the same key cannot mix files with it: whoever
    renames first wins and the other uses that entry."""
    partial = owned_scratch(entry.parent, f"{entry.name}.partial-")
    try:
        moved = []
        for path in model.files:
            shutil.copy2(path, partial / path.name)
            moved.append(partial / path.name)
        cached = model.derive(files=tuple(entry / p.name for p in moved))
        record = {**_model_record(cached.derive(files=tuple(moved)), partial),
                  "sha256": {p.name: file_sha256(p) for p in moved}}
        (partial / "model.json").write_text(json.dumps(record))
        try:
            partial.rename(entry)
        except OSError:  # another writer's entry is there: equal content by key, so use it
            found = read_cache_entry(entry, log)
            if found is None:
                raise
            return found
        return cached
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def read_cache_entry(entry: Path, log: logging.Logger, mark_used: bool = True) -> Model | None:
    """The model a cache entry holds, after checking it: its files are plain names inside the entry, not links, with
    the sha256 recorded when it was written. A corrupt or tampered entry is removed (the step runs again); a good one
    is marked used now, unless `mark_used` is false (`edgekit cache prune` removes entries unused for long)."""
    record_path = entry / "model.json"
    if not record_path.is_file():
        return None
    try:
        record = json.loads(record_path.read_text())
        if "sha256" not in record:
            raise ValueError("it lists no file hashes (an older edgekit wrote it)")
        names, hashes = record["files"], record["sha256"]
        if Format(record["format"]).in_memory:
            raise ValueError(f"it claims format {record['format']}, which is never cached as files")
        files = tuple(entry / name for name in names)
        for name, path in zip(names, files):
            if Path(name).name != name or path.is_symlink() or not path.is_file():
                raise ValueError(f"file {name!r} is not a plain file of the entry")
            if file_sha256(path) != hashes[name]:
                raise ValueError(f"{name} does not match its sha256")
        model = Model(Format(record["format"]), tuple(TensorSpec.from_dict(s) for s in record["inputs"]),
                      tuple(TensorSpec.from_dict(s) for s in record["outputs"]), files=files, meta=record["meta"])
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as error:
        log.warning("step cache entry %s is corrupt (%s): removed, the step runs again", entry.name[:12], error)
        shutil.rmtree(entry, ignore_errors=True)
        return None
    if mark_used:
        os.utime(entry)
    return model
