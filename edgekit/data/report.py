"""The data report: checks on calibration and evaluation data before use, logged and kept in the manifest.

NaN/inf and shape mismatches are errors when data loads (edgekit.data.dataset); this reports the
rest: sample counts, duplicates, inputs that never change, value ranges, and evaluation samples
that are also calibration samples.
"""

from __future__ import annotations

import hashlib
import logging

import numpy as np

from edgekit.data.dataset import Dataset

MIN_CALIBRATION = 32  # fewer samples give unstable activation ranges
log = logging.getLogger("edgekit.data")


def sample_hashes(data: Dataset) -> list[str]:
    """One hash per sample over every input's values (labels left out)."""
    hashes = []
    for index in range(len(data)):
        digest = hashlib.sha256()
        for name in sorted(data.arrays):
            digest.update(name.encode())
            digest.update(np.ascontiguousarray(data.arrays[name][index]).tobytes())
        hashes.append(digest.hexdigest())
    return hashes


def describe(data: Dataset, role: str, warnings: list[str]) -> tuple[dict, list[str]]:
    """Checks of one dataset; appends a line per problem to `warnings`."""
    hashes = sample_hashes(data)
    duplicates = len(hashes) - len(set(hashes))
    constant = [name for name, array in data.arrays.items() if len(array) > 1 and bool((array == array[:1]).all())]
    ranges = {name: [float(array.min()), float(array.max())] for name, array in data.arrays.items()}
    if role == "calibration" and len(data) < MIN_CALIBRATION:
        warnings.append(f"calibration has {len(data)} samples (< {MIN_CALIBRATION}): activation ranges may be unstable")
    if duplicates:
        warnings.append(f"{role} data has {duplicates} duplicate sample(s) of {len(data)}")
    for name in constant:
        if data.arrays[name].dtype.kind == "f":
            warnings.append(f"{role} input '{name}' is the same in every sample: it says nothing about other inputs")
    if data.synthetic:
        warnings.append(f"{role} data is synthetic random data: calibration ranges and accuracy on it are unreliable")
    summary = {"origin": data.origin, "samples": len(data), "synthetic": data.synthetic, "labelled": data.labels is not None,
               "duplicates": duplicates, "constant_inputs": constant, "ranges": ranges}
    return summary, hashes


def data_report(calibration: Dataset | None, evaluation: Dataset | None) -> dict:
    """The report as plain data; each warning is also logged."""
    warnings: list[str] = []
    report: dict = {}
    seen: dict[str, list[str]] = {}
    for role, data in (("calibration", calibration), ("evaluation", evaluation)):
        if data is not None:
            report[role], seen[role] = describe(data, role, warnings)
    if calibration is not None and evaluation is not None:
        if evaluation is calibration:
            report["overlap"] = {"samples": len(evaluation), "fraction": 1.0, "same_data": True}
            warnings.append("evaluation uses the calibration data: give --eval with held-out samples for an honest accuracy")
        else:
            calibrated = set(seen["calibration"])
            shared = sum(1 for h in seen["evaluation"] if h in calibrated)
            report["overlap"] = {"samples": shared, "fraction": shared / max(len(evaluation), 1), "same_data": False}
            if shared:
                warnings.append(f"{shared} of {len(evaluation)} evaluation samples are also calibration samples")
    for line in warnings:
        log.warning("data: %s", line)
    report["warnings"] = warnings
    return report
