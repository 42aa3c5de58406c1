"""TensorSpec: a named tensor with a shape that may hold symbolic dims, and its parsing."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from edgekit.errors import UserError

Dim = int | str
DTYPES = ("float32", "float16", "float64", "int64", "int32", "int8", "uint8", "bool")


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """A tensor's name, shape (ints or symbolic names) and numpy dtype name."""

    name: str
    shape: tuple[Dim, ...]
    dtype: str = "float32"

    @property
    def is_static(self) -> bool:
        return all(isinstance(d, int) for d in self.shape)

    def shape_text(self) -> str:
        return "x".join(str(d) for d in self.shape) or "scalar"

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_dict(cls, data: dict) -> TensorSpec:
        return cls(data["name"], tuple(data["shape"]), data["dtype"])

    def concrete_shape(self, sizes: dict[str, int] | None = None, default: int = 1) -> tuple[int, ...]:
        """The shape with every symbolic dim replaced by `sizes[name]` or `default`."""
        sizes = sizes or {}
        return tuple(d if isinstance(d, int) else sizes.get(d, default) for d in self.shape)

    def mismatch(self, shape: tuple[int, ...], dtype: np.dtype) -> str | None:
        """Why an array of this shape/dtype does not fit the spec, or None if it does."""
        if dtype != self.dtype:  # numpy compares a dtype with its name in C (str(dtype) costs ~10 µs a call)
            return f"dtype {dtype} != {self.dtype}"
        if len(shape) != len(self.shape):
            return f"rank {len(shape)} != {len(self.shape)} (shape {list(shape)} vs [{self.shape_text()}])"
        for axis, (got, want) in enumerate(zip(shape, self.shape)):
            if isinstance(want, int) and got != want:
                return f"dim {axis} is {got}, expected {want} (shape {list(shape)} vs [{self.shape_text()}])"
        return None


_SPEC_RE = re.compile(r"^(?P<name>[^:]+):(?P<shape>[^:]*)(?::(?P<dtype>[a-z0-9]+))?$")


def parse_input_spec(text: str) -> TensorSpec:
    """Parse `name:1x3x32x32:float32`; dims may be names (`batchx3x32x32`, `batch x3x32x32`).

    Dims are split on `,` when the text has one (for names holding an `x`: `ids:batch,max_len:int64`).
    """
    match = _SPEC_RE.match(text.strip())
    if not match:
        raise UserError(f"--input '{text}': expected name:DIMS[:dtype], e.g. image:batchx3x32x32:float32")
    dtype = match["dtype"] or "float32"
    if dtype not in DTYPES:
        raise UserError(f"--input '{text}': unknown dtype '{dtype}' (one of {', '.join(DTYPES)})")
    dims: list[Dim] = []
    shape_text = match["shape"].replace(" ", "")
    separator = "," if "," in shape_text else "x"
    for part in shape_text.split(separator) if shape_text else []:
        if part.isdigit():
            dims.append(int(part))
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", part):
            dims.append(part)
        else:
            raise UserError(f"--input '{text}': dim '{part}' is neither a number nor a name")
    return TensorSpec(match["name"], tuple(dims), dtype)


def merge_specs(own: tuple[TensorSpec, ...], given: tuple[TensorSpec, ...], where: str) -> tuple[TensorSpec, ...]:
    """The model's own input specs with those given by name replacing them; unknown names are errors."""
    if not own:
        return given
    by_name = {spec.name: spec for spec in given}
    unknown = set(by_name) - {spec.name for spec in own}
    if unknown:
        names = ", ".join(spec.name for spec in own)
        raise UserError(f"{where}: --input names {', '.join(sorted(unknown))}, but the model's inputs are {names}")
    return tuple(by_name.get(spec.name, spec) for spec in own)
