"""Dataset: named input arrays with a leading sample axis, optional labels, and its checks."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from edgekit.errors import UserError
from edgekit.spec import TensorSpec


@dataclass(frozen=True)
class Dataset:
    """`arrays[name][i]` is the i-th feed of input `name` (a whole batch of the model's input).

    `synthetic` marks random data generated from specs; `origin` says where it came from.
    """

    arrays: dict[str, np.ndarray]
    labels: np.ndarray | None
    origin: str
    synthetic: bool = False

    def __len__(self) -> int:
        return len(next(iter(self.arrays.values())))

    def feeds(self, limit: int | None = None) -> Iterator[dict[str, np.ndarray]]:
        """One feed dict per sample, in order."""
        count = len(self) if limit is None else min(limit, len(self))
        for index in range(count):
            yield {name: np.asarray(array[index]) for name, array in self.arrays.items()}  # 0-d inputs stay arrays

    def head(self, count: int) -> Dataset:
        labels = None if self.labels is None else self.labels[:count]
        return Dataset({k: v[:count] for k, v in self.arrays.items()}, labels, self.origin, self.synthetic)

    def content_hash(self) -> str:
        digest = hashlib.sha256()
        for name in sorted(self.arrays):
            digest.update(name.encode())
            digest.update(str(self.arrays[name].shape).encode())
            digest.update(np.ascontiguousarray(self.arrays[name]).tobytes())
        return digest.hexdigest()

    def statistics(self) -> dict[str, dict]:
        """Per input: sample shape, dtype, min, max, mean, std — written into manifests."""
        stats = {}
        for name, array in self.arrays.items():
            values = array.astype(np.float64)
            stats[name] = {
                "samples": int(len(array)),
                "sample_shape": list(array.shape[1:]),
                "dtype": str(array.dtype),
                "min": float(values.min()),
                "max": float(values.max()),
                "mean": float(values.mean()),
                "std": float(values.std()),
            }
        return stats


def fit_to_specs(arrays: dict[str, np.ndarray], specs: tuple[TensorSpec, ...], origin: str) -> dict[str, np.ndarray]:
    """Arrange raw arrays as [samples, *input shape] and check them against the specs.

    An array with the input's rank is split along axis 0 into feeds of the input's batch size
    (1 when that dim is symbolic); one with one more dim already holds a feed per entry.
    Floats are cast to the input's float dtype and ints to its int dtype; other mismatches,
    wrong dims, NaN and inf are errors naming the input and both shapes.
    """
    names = [spec.name for spec in specs]
    missing = [name for name in names if name not in arrays]
    if missing:
        raise UserError(f"{origin}: no array for input(s) {', '.join(missing)}; it has {', '.join(arrays) or 'none'}")
    empty = [name for name in names if np.asarray(arrays[name]).ndim and not len(arrays[name])]
    if empty:
        raise UserError(f"{origin}: input(s) {', '.join(empty)} hold no samples")
    fitted: dict[str, np.ndarray] = {}
    for spec in specs:
        array = _cast(np.asarray(arrays[spec.name]), spec, origin)
        if array.ndim == 0 == len(spec.shape):  # one value for a 0-d input (a sample rate): one feed
            array = array.reshape(1)
        elif array.ndim == len(spec.shape):
            lead = spec.shape[0] if spec.shape and isinstance(spec.shape[0], int) else 1
            if len(array) % lead:
                raise UserError(f"{origin}: input '{spec.name}' has {len(array)} rows, not a multiple of batch {lead}")
            array = array.reshape(len(array) // lead, lead, *array.shape[1:])
        if array.ndim != len(spec.shape) + 1:
            raise UserError(
                f"{origin}: input '{spec.name}' has shape {list(array.shape)}, which does not fit "
                f"[{spec.shape_text()}] (with or without a leading sample axis)"
            )
        why = spec.mismatch(array.shape[1:], array.dtype)
        if why:
            raise UserError(f"{origin}: input '{spec.name}': {why}")
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            bad = int((~np.isfinite(array)).sum())
            raise UserError(f"{origin}: input '{spec.name}' holds {bad} NaN/inf value(s)")
        fitted[spec.name] = array
    counts = {name: len(array) for name, array in fitted.items()}
    if len(set(counts.values())) > 1:
        raise UserError(f"{origin}: inputs have different sample counts: {counts}")
    return fitted


def _cast(array: np.ndarray, spec: TensorSpec, origin: str) -> np.ndarray:
    want = np.dtype(spec.dtype)
    if array.dtype == want:
        return array
    if array.dtype.kind == want.kind or (array.dtype.kind in "iu" and want.kind in "iu"):
        return array.astype(want)
    raise UserError(f"{origin}: input '{spec.name}' is {array.dtype}, the model takes {want}")
