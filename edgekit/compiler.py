"""The API's entry points: `plan` a compile, or `compile` — one recipe, or `auto` (the fastest candidate within a
tolerance). The CLI calls these; building one package is `build`, choosing among candidates `autoselect`."""

from __future__ import annotations

from pathlib import Path

from edgekit.autoselect import MIN_SPEEDUP, compile_auto
from edgekit.build import CompileResult, build_package, recipe_for
from edgekit.distributed import is_writer
from edgekit.errors import UserError
from edgekit.ingest import ingest
from edgekit.instruments import Instrument
from edgekit.metrics import Evaluation
from edgekit.passes.base import Progress
from edgekit.pipeline import Plan
from edgekit.pipeline import plan as make_plan
from edgekit.recipe import Recipe
from edgekit.spec import TensorSpec
from edgekit.target import load_target


def plan(source: str | Path, target: str | Path, recipe: str | Path | None = None,
         inputs: tuple[TensorSpec, ...] = (), trust_remote_code: bool = False, adapters: tuple[str | Path, ...] = ()) -> Plan:
    """The steps `compile` would run (conversions inserted), without running them."""
    if str(recipe) == "auto":
        raise UserError("--recipe auto compiles and measures every candidate recipe, so it has no single plan: "
                        "dry-run a candidate instead (see `edgekit recipes` and the target's `recipes:`)")
    chosen_recipe = recipe_for(load_target(target), recipe)
    return make_plan(ingest(source, inputs, trust_remote_code, adapters), chosen_recipe,
                     load_target(target).with_runtime(chosen_recipe.runtime))


def compile(source: str | Path, target: str | Path, output: str | Path, recipe: str | Path | Recipe | None = None,
            calib: str | Path | None = None, eval: str | Path | None = None,
            inputs: tuple[TensorSpec, ...] = (), cache_dir: Path | None = None, bench_runs: int = 50,
            threads: int | None = None, progress: Progress | None = None,
            instruments: tuple[Instrument, ...] = (), tolerance: Evaluation | None = None,
            trust_remote_code: bool = False, min_speedup: float = MIN_SPEEDUP,
            adapters: tuple[str | Path, ...] = ()) -> CompileResult | None:
    """Compile `source` for `target` into the package folder (or .zip) `output`.

    `recipe="auto"` compiles every candidate recipe the target offers and keeps the most precise within `tolerance`
    (default: each output judged by the metric its values call for, with that metric's default limits) unless a less
    precise one is faster beyond the noise and by `min_speedup`; any other recipe is judged by `tolerance` where
    given, else by its own `evaluate`. Nothing is left at `output` unless the chosen package passes. `trust_remote_code` lets
    a `.pt2` source run the code it carries (pickles, shape expressions, guard code): only for a file you trust;
    without it such an archive is refused before any of it runs. `adapters` (PEFT adapter folders, with a Hugging Face
    folder `source`) are merged into its weights, in that order, before anything else runs.

    Under `torchrun --nproc-per-node N` the processes train a distill step together; ranks besides 0 then
    return None and rank 0 writes the package (auto's candidates train nothing: rank 0 compiles them alone).
    """
    if str(recipe) == "auto":
        if not is_writer():
            return None
        return compile_auto(source, target, output, calib, eval, inputs, cache_dir, bench_runs, threads, progress,
                            instruments, tolerance, trust_remote_code=trust_remote_code, min_speedup=min_speedup,
                            adapters=adapters)
    return build_package(source, target, output, recipe, calib, eval, inputs, cache_dir, bench_runs, threads, progress,
                         instruments, tolerance, trust_remote_code, adapters)
