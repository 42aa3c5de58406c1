"""The manifest's layers section: at build time, the float model the compile made before its first lossy step (kept
as its steps ran, so nothing is replayed) and the package just written, compared layer by layer on the first few
evaluation samples, as `edgekit diff` compares them."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from edgekit.data import Dataset
from edgekit.errors import gist
from edgekit.layers.gap import BACKENDS, compare_layers
from edgekit.layers.reference import BeforeLossy
from edgekit.manifest import LayersRecord
from edgekit.model import Format

log = logging.getLogger("edgekit")
BUILD_SAMPLES = 8  # enough to rank the layers; a small part of the compile's time


def layers_at_build(kept: BeforeLossy, root: Path, evaluation: Dataset, work_dir: Path
                    ) -> tuple[LayersRecord | None, str | None]:
    """(the layers record, None); (None, why) where they could not be measured, which never fails the compile; (None,
    None) where there is nothing to measure: no step changed the numbers, or diff does not read the package's format."""
    from edgekit.package import read_package

    opened = read_package(root)
    reference = kept.reference()
    if reference is None or opened.manifest.format not in BACKENDS:
        return None, None
    if reference.model.format is not Format(opened.manifest.format):
        return _skipped(f"{reference.lossy_step} takes {reference.model.format.value}, not the package's "
                        f"{opened.manifest.format}: there is no float graph of its format to compare with")
    started = time.perf_counter()
    try:
        diff = compare_layers(reference, opened, evaluation.head(BUILD_SAMPLES), work_dir,
                              str(kept.source.meta.get("source")), str(root))
    except Exception as error:  # an optional measurement of a graph from anyone: any failure only leaves it out
        return _skipped(gist(error) or type(error).__name__)
    log.info("layers: %d outputs compared on %d samples in %.1f s", len(diff.layers), diff.samples,
             time.perf_counter() - started)
    return diff.record(), None


def _skipped(why: str) -> tuple[None, str]:
    log.info("layers: not measured (%s)", why)
    return None, why
