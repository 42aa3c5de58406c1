"""A package's golden self-test: a few sample inputs and the outputs the package gave where it was built, kept in the
package (golden.npz, plain arrays, loaded without pickle) and run again where it is deployed (`edgekit verify`).

The outputs here may differ from the recorded ones by another CPU's kernels: a float package must stay within a
relative error widened to the float precision either side executed; an int-quantized package (whose integer kernels
round differently per instruction set) must keep every output's direction (cosine) as the build's fidelity check does.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgekit.errors import UserError
from edgekit.manifest import Golden
from edgekit.metrics import QUANTIZED_MIN_COSINE, compare, executed_tolerance
from edgekit.package import file_entries
from edgekit.spec import TensorSpec

if TYPE_CHECKING:
    from edgekit.runtime.session import Session

GOLDEN_FILE = "golden.npz"
GOLDEN_SAMPLES = 4
GOLDEN_FLOAT_TOLERANCE = 1e-3  # relative to the output's largest magnitude: fp32 kernels of two CPUs agree far closer


@dataclass(frozen=True, slots=True)
class GoldenResult:
    """The self-test run here: the worst output's figures and whether every output held its bound."""

    samples: int
    precision: str  # what the runtime computed in here
    recorded_precision: str
    criterion: str  # the bound, in words
    worst: dict[str, float]  # cosine_min and max_rel of the output that came closest to its bound
    worst_output: str
    ok: bool


def write_golden(root: Path, feeds: list[dict[str, np.ndarray]], outputs: list[list[np.ndarray]],
                 inputs: tuple[TensorSpec, ...], precision: str) -> Golden:
    """Store `feeds` and the package's `outputs` on them as `root/golden.npz`."""
    arrays = {}
    for sample, (feed, produced) in enumerate(zip(feeds, outputs)):
        arrays.update({f"s{sample}_in{i}": np.asarray(feed[spec.name]) for i, spec in enumerate(inputs)})
        arrays.update({f"s{sample}_out{k}": np.asarray(value) for k, value in enumerate(produced)})
    path = root / GOLDEN_FILE
    np.savez_compressed(path, **arrays)
    return Golden(file_entries(root, [path])[0], len(feeds), precision)


def run_golden(session: Session, golden: Golden, quantized: bool) -> GoldenResult:
    """Run the recorded inputs through `session` (the package opened here) and judge its outputs against the record."""
    root = session.package.root
    feeds, recorded = _read(root / golden.file.path, golden.samples, session)
    produced = [list(session.run(feed).values()) for feed in feeds]
    precision = session.execution_precision
    if quantized:
        criterion = f"cosine_min >= {QUANTIZED_MIN_COSINE} (int-quantized: integer kernels differ per CPU)"
    else:
        allowed = executed_tolerance(GOLDEN_FLOAT_TOLERANCE, golden.precision, precision)
        criterion = f"max_rel <= {allowed:g} (built in {golden.precision}, run in {precision})"
    margins = []
    for index, spec in enumerate(session.outputs):
        figures = compare([[sample[index]] for sample in recorded], [[sample[index]] for sample in produced])
        worst = {"cosine_min": figures["cosine_min"], "max_rel": figures["max_rel"]}
        margin = QUANTIZED_MIN_COSINE - figures["cosine_min"] if quantized else figures["max_rel"] - allowed
        margins.append((margin, spec.name, worst))
    margin, name, worst = max(margins, key=lambda item: item[0])
    return GoldenResult(golden.samples, precision, golden.precision, criterion, worst, name, margin <= 0)


def _read(path: Path, samples: int, session: Session) -> tuple[list[dict[str, np.ndarray]], list[list[np.ndarray]]]:
    try:
        with np.load(path, allow_pickle=False) as stored:
            feeds = [{spec.name: stored[f"s{s}_in{i}"] for i, spec in enumerate(session.inputs)} for s in range(samples)]
            outputs = [[stored[f"s{s}_out{k}"] for k in range(len(session.outputs))] for s in range(samples)]
    except (KeyError, ValueError, OSError, zipfile.BadZipFile) as error:
        raise UserError(f"package {session.package.name}: {path.name} holds no self-test samples "
                        f"for this model ({error})") from None
    return feeds, outputs
