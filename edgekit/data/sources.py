"""Load a Dataset from an .npz file, a folder of .npy files, or synthesize one from specs."""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path

import numpy as np

from edgekit.data.dataset import Dataset, fit_to_specs
from edgekit.data.specfile import is_described, load_described
from edgekit.errors import UserError
from edgekit.spec import TensorSpec

log = logging.getLogger("edgekit.data")
LABELS = "labels"
# tokenizer inputs whose only sensible synthetic value is a constant (ids out of range crash embeddings)
CONSTANT_INPUTS = {"attention_mask": 1, "token_type_ids": 0}


def load_data(path: str | Path, specs: tuple[TensorSpec, ...], tokenizer: str | Path | None = None) -> Dataset:
    """Read `path` (.npz, or a folder of `<input>.npy` [+ `labels.npy`]) and fit it to `specs`.

    `images:FOLDER`, `text:FILE` and data spec files (.yaml/.json) go to edgekit.data.specfile;
    text is tokenized with `tokenizer` (a Hugging Face folder) unless the spec names one.
    """
    if is_described(str(path)):
        return load_described(str(path), specs, tokenizer)
    path = Path(path)
    if not path.exists():
        raise UserError(f"data not found: {path}")
    if path.is_dir():
        arrays = {p.stem: _load_npy(p) for p in sorted(path.glob("*.npy"))}
        if not arrays:
            raise UserError(f"data folder {path} holds no .npy files")
    elif path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as archive:
                arrays = {key: archive[key] for key in archive.files}
        except (zipfile.BadZipFile, ValueError, OSError) as error:
            raise UserError(f"cannot read {path} as .npz: {error}") from None
    else:
        raise UserError(f"data {path}: expected an .npz file or a folder of .npy files")
    labels = arrays.pop(LABELS, None)
    fitted = fit_to_specs(arrays, specs, str(path))
    count = len(next(iter(fitted.values())))
    if labels is not None and len(labels) != count:
        raise UserError(f"{path}: {len(labels)} labels for {count} samples")
    return Dataset(fitted, labels, str(path))


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError) as error:
        raise UserError(f"cannot read {path} as .npy: {error}") from None


def synthetic_data(specs: tuple[TensorSpec, ...], samples: int, seed: int = 0,
                   sizes: dict[str, int] | None = None) -> Dataset:
    """Random feeds from the specs: normal floats, small non-negative ints, symbolic dims as `sizes` or 1."""
    log.warning("using %d synthetic random samples: calibration and accuracy on random data are unreliable", samples)
    rng = np.random.default_rng(seed)
    arrays = {}
    for spec in specs:
        shape = (samples, *spec.concrete_shape(sizes))
        dtype = np.dtype(spec.dtype)
        if spec.name in CONSTANT_INPUTS and dtype.kind in "iu":
            arrays[spec.name] = np.full(shape, CONSTANT_INPUTS[spec.name], dtype)
        elif dtype.kind == "f":
            arrays[spec.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind == "b":
            arrays[spec.name] = rng.integers(0, 2, shape).astype(dtype)
        else:
            arrays[spec.name] = rng.integers(0, 100, shape).astype(dtype)
    return Dataset(arrays, None, "synthetic", synthetic=True)
